/* kdseg train: train a model on a dataset folder or a generated phantom cohort. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "train_common.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg train (--data DIR | --synthetic) --out DIR [options]\n\n"
            "Trains a model on patches, validating on held-out cases, keeping last.kds and\n"
            "best.kds checkpoints, a CSV log of every step (train.csv) and a PNG of the curves.\n\n"
            "data:\n"
            "  --data DIR            dataset folder (BraTS 2018-21, 2023+ or MSD Task01 layout)\n"
            "  --layout L            auto|brats2018|brats2023|msd (default auto)\n"
            "  --annotations DIR     labels for unlabeled cases (e.g. from kdseg annotate)\n"
            "  --modalities LIST     e.g. t1ce,flair (default t1,t1ce,t2,flair)\n"
            "  --synthetic           generate a phantom cohort into OUT/phantom and train on it\n"
            "  --cases N             phantom cases (default 8)     --size D,H,W (default 64)\n"
            "  --val-cases N         labeled cases held out for validation (default 1)\n"
            "model and optimisation:\n"
            "  --model SPEC          model spec (default resunet; see kdseg models)\n"
            "  --patch P|D,H,W       patch size (default 64)      --batch B (default 1)\n"
            "  --steps N             total steps (default 200)    --lr X (default 1e-4)\n"
            "  --optim adam|sgd      AMSGrad Adam (default) or Nesterov SGD   --wd X (1e-6)\n"
            "  --schedule S          step|poly|cosine|const (default step: x0.5 every\n"
            "                        --step-every N steps, default 16000)   --warmup N\n"
            "  --loss paper|bce|mse  (default paper: Dice + weighted BCE)\n"
            "  --aug default|none    augmentation (default)     --fg-fraction X (0)\n"
            "  --seed S              every random choice (default 1)\n"
            "  --val-every N         validate every N steps (default 50)\n"
            "  --ckpt-every N        save last.kds every N steps (default 50)\n"
            "  --resume              continue from OUT/last.kds exactly\n"
            "  --threads N           background loader threads (default 1; 0: none)\n");
}

typedef struct train_args {
    const char *data, *layout, *annotations, *modalities, *out, *model, *optim, *schedule, *loss,
        *aug;
    int synthetic, cases, size[3], val_cases, patch[3], batch, steps, warmup, step_every,
        val_every, ckpt_every, resume, threads;
    double lr, wd, fg;
    long seed;
} train_args;

static int parse(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->layout = "auto";
    a->model = "resunet";
    a->optim = "adam";
    a->schedule = "step";
    a->loss = "paper";
    a->aug = "default";
    a->cases = 8;
    a->size[0] = a->size[1] = a->size[2] = 64;
    a->val_cases = 1;
    a->patch[0] = a->patch[1] = a->patch[2] = 64;
    a->batch = 1;
    a->steps = 200;
    a->step_every = 16000;
    a->val_every = 50;
    a->ckpt_every = 50;
    a->threads = 1;
    a->lr = 1e-4;
    a->wd = 1e-6;
    a->seed = 1;
    const char *v;
    for (int i = 1; i < argc; i++) {
        int r = 0;
#define STR(name, field) else if (kd_cli_opt(argc, argv, &i, name, &v)) { if (!v) return kd_cli_unknown("train", name); a->field = v; }
#define INT(name, field, lo, hi) else if (kd_cli_opt(argc, argv, &i, name, &v)) r = kd_cli_int("train", name, v, lo, hi, &a->field);
#define DBL(name, field, lo, hi) else if (kd_cli_opt(argc, argv, &i, name, &v)) r = kd_cli_float("train", name, v, lo, hi, &a->field);
        if (0) {}
        STR("--data", data) STR("--layout", layout) STR("--annotations", annotations)
        STR("--modalities", modalities) STR("--out", out) STR("--model", model)
        STR("--optim", optim) STR("--schedule", schedule) STR("--loss", loss) STR("--aug", aug)
        INT("--cases", cases, 2, 10000) INT("--val-cases", val_cases, 0, 10000)
        INT("--batch", batch, 1, 64) INT("--steps", steps, 1, 100000000)
        INT("--warmup", warmup, 0, 100000000) INT("--step-every", step_every, 1, 100000000)
        INT("--val-every", val_every, 0, 100000000) INT("--ckpt-every", ckpt_every, 0, 100000000)
        INT("--threads", threads, 0, 16)
        DBL("--lr", lr, 1e-9, 10) DBL("--wd", wd, 0, 1) DBL("--fg-fraction", fg, 0, 1)
        else if (kd_cli_opt(argc, argv, &i, "--size", &v)) r = kd_cli_dims3("train", "--size", v, 16, 512, a->size);
        else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) r = kd_cli_dims3("train", "--patch", v, 8, 512, a->patch);
        else if (kd_cli_opt(argc, argv, &i, "--seed", &v)) {
            int s32;
            r = kd_cli_int("train", "--seed", v, 0, 2147483647, &s32);
            a->seed = s32;
        } else if (kd_cli_flag(argv, i, "--synthetic")) a->synthetic = 1;
        else if (kd_cli_flag(argv, i, "--resume")) a->resume = 1;
        else return kd_cli_unknown("train", argv[i]);
#undef STR
#undef INT
#undef DBL
        if (r) return r;
    }
    if (!a->out) {
        fprintf(stderr, "kdseg train: --out DIR is required\n");
        return 2;
    }
    if (!a->data == !a->synthetic) {
        fprintf(stderr, "kdseg train: give exactly one of --data DIR and --synthetic\n");
        return 2;
    }
    return 0;
}

static int run(int argc, char **argv) {
    train_args a;
    int r = parse(argc, argv, &a);
    if (r) return r;
    kd_status s = KD_OK;
    kd_train_config tc;
    memset(&tc, 0, sizeof tc);
    kd_optim_config oc;
    kd_optim_defaults(&oc);
    kd_schedule_defaults(&tc.sched);
    kd_loss_kind lk;
    if ((s = kd_loss_parse(a.loss, &lk)) || (s = kd_schedule_parse(a.schedule, &tc.sched)))
        return kd_cli_error("train", s);
    if (!strcmp(a.optim, "sgd")) oc.kind = KD_OPT_SGD;
    else if (strcmp(a.optim, "adam")) return kd_cli_unknown("train", a.optim);
    oc.lr = (float)a.lr;
    oc.weight_decay = (float)a.wd;
    tc.sched.step_every = a.step_every;
    tc.sched.warmup = a.warmup;
    tc.sched.total_steps = a.steps;
    mkdir(a.out, 0755);
    char dir[4096];
    const char *data = a.data;
    if (a.synthetic) {
        snprintf(dir, sizeof dir, "%s/phantom", a.out);
        struct stat st;
        if (stat(dir, &st) != 0) {
            kd_phantom_opts po;
            memset(&po, 0, sizeof po);
            po.cases = a.cases;
            memcpy(po.size, a.size, sizeof po.size);
            po.seed = (uint64_t)a.seed;
            po.layout = KD_LAYOUT_BRATS2018;
            kd_log(KD_LOG_WARN, "generating %d phantom cases of %dx%dx%d in %s", a.cases, a.size[0],
                   a.size[1], a.size[2], dir);
            if ((s = kd_phantom_write_cohort(dir, &po))) return kd_cli_error("train", s);
        }
        data = dir;
    }
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    if ((s = kd_layout_parse(a.layout, &dopts.layout))) return kd_cli_error("train", s);
    dopts.annotations = a.annotations;
    dopts.modalities = a.modalities;
    kd_dataset *ds = NULL;
    kd_device *dev = NULL;
    kd_model *m = NULL;
    kd_optim *o = NULL;
    kd_sampler *smp = NULL;
    kd_batch_source bs;
    memset(&bs, 0, sizeof bs);
    kd_val_set vs = {0};
    int *lab = NULL;
    if ((s = kd_dataset_open(data, &dopts, &ds))) goto done;
    int nl = 0;
    lab = malloc(sizeof(int) * (size_t)(kd_dataset_count(ds) + 1));
    for (int i = 0; i < kd_dataset_count(ds); i++)
        if (kd_dataset_case_labeled(ds, i)) lab[nl++] = i;
    if (nl - a.val_cases < 1) {
        s = kd_fail(KD_ERR_INVALID_ARG, "%s: %d labeled cases; need more than --val-cases %d", data,
                    nl, a.val_cases);
        goto done;
    }
    if (!(dev = kd_cli_open_device("train"))) {
        r = 1;
        goto done;
    }
    long start = 0;
    char path[4096], meta[8192];
    snprintf(path, sizeof path, "%s/last.kds", a.out);
    if (a.resume) {
        if ((s = kd_checkpoint_load(path, dev, &m, &oc, &o, meta, sizeof meta))) goto done;
        char v[64];
        kd_meta_get(meta, "step", v, sizeof v);
        start = atol(v);
        kd_meta_get(meta, "best_dice", v, sizeof v);
        tc.best_so_far = v[0] ? atof(v) : -1;
        kd_log(KD_LOG_WARN, "resuming %s at step %ld", kd_model_spec(m), start);
    } else {
        tc.best_so_far = -1;
        if ((s = kd_model_create(dev, a.model, (uint64_t)a.seed, &m)) ||
            (s = kd_optim_create(m, &oc, &o)))
            goto done;
    }
    for (int k = 0; k < 3; k++)
        if (a.patch[k] % kd_model_divisor(m)) {
            s = kd_fail(KD_ERR_INVALID_ARG, "--patch %dx%dx%d: sizes must be multiples of %d for %s",
                        a.patch[0], a.patch[1], a.patch[2], kd_model_divisor(m), kd_model_arch(m));
            goto done;
        }
    kd_sampler_opts so;
    kd_sampler_opts_default(&so);
    so.batch = a.batch;
    memcpy(so.patch, a.patch, sizeof so.patch);
    so.seed = (uint64_t)a.seed;
    so.fg_fraction = (float)a.fg;
    if (!strcmp(a.aug, "none")) kd_augment_opts_none(&so.aug);
    if ((s = kd_sampler_create(&so, &smp)) || (s = kd_sampler_add(smp, ds, lab, nl - a.val_cases)))
        goto done;
    if ((s = kd_val_set_load(&vs, ds, lab + nl - a.val_cases, a.val_cases))) goto done;
    bs.kind_a = lk;
    if ((s = kd_batch_source_init(&bs, smp, NULL, 0, (uint64_t)a.seed, start, a.threads))) goto done;
    kd_install_stop_handler();
    tc.batch = a.batch;
    memcpy(tc.patch, a.patch, sizeof tc.patch);
    tc.steps = a.steps;
    tc.lr = (float)a.lr;
    tc.seed = (uint64_t)a.seed;
    tc.val_every = a.val_cases > 0 ? a.val_every : 0;
    tc.ckpt_every = a.ckpt_every;
    tc.out_dir = a.out;
    tc.progress = 1;
    tc.stop = &kd_stop_flag;
    char extra[512];
    snprintf(extra, sizeof extra, "data=%s\nloss=%s\noptim=%s\npatch=%d,%d,%d\nbatch=%d\n", data,
             a.loss, a.optim, a.patch[0], a.patch[1], a.patch[2], a.batch);
    tc.meta_extra = extra;
    size_t plan = 0;
    kd_model_plan(m, kd_shape5(a.batch, kd_model_in_channels(m), a.patch[0], a.patch[1], a.patch[2]),
                  1, &plan);
    printf("training %s (%zu parameters) on %s, %d labeled cases (%d held out), patch %dx%dx%d, "
           "batch %d, steps %ld..%d\nplanned activation memory %.1f MiB (+ %.1f MiB parameters, "
           "gradients and optimizer state)\n",
           kd_model_spec(m), kd_model_param_count(m), kd_device_name(dev), nl, a.val_cases,
           a.patch[0], a.patch[1], a.patch[2], a.batch, start, a.steps, plan / 1048576.0,
           5.0 * kd_model_param_bytes(m) / 1048576.0);
    kd_train_result res;
    s = kd_train_run(m, o, &tc, start, kd_batch_from_source, &bs, a.val_cases ? kd_validate : NULL,
                     &vs, &res);
    if (!s || s == KD_ERR_INTERRUPTED) {
        printf("%ld steps in %.1f s (%.3f steps/s), loss %.4f -> %.4f, best validation Dice %.4f, "
               "peak device memory %.1f MiB\n",
               res.steps_done, res.seconds, res.steps_per_s, (double)res.first_loss,
               (double)res.last_loss, res.best_dice, res.peak_device_bytes / 1048576.0);
        char csv[4096], png[4096];
        snprintf(csv, sizeof csv, "%s/train.csv", a.out);
        snprintf(png, sizeof png, "%s/train.png", a.out);
        kd_status ps = kd_plot_training(csv, png);
        if (ps) kd_log(KD_LOG_WARN, "plot: %s", kd_last_error());
        else printf("wrote %s/last.kds, %s, %s\n", a.out, csv, png);
    }
done:
    if (s) r = kd_cli_error("train", s);
    kd_batch_source_free(&bs);
    kd_val_set_free(&vs);
    kd_sampler_free(smp);
    kd_optim_free(o);
    kd_model_free(m);
    kd_device_free(dev);
    kd_dataset_free(ds);
    free(lab);
    return r;
}

const kd_command kd_cmd_train = {"train", "train a model (student or teacher) on patches", run,
                                 help};
