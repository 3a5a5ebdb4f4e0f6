/* Batches, validation and stop handling shared by train, distill and demo. */
#include "train_common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile int kd_stop_flag = 0;

static void on_signal(int sig) {
    if (kd_stop_flag && sig == SIGINT) _exit(130);
    kd_stop_flag = 1;
}

void kd_install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int kd_batch_source_uses_b(const kd_batch_source *bs, long step) {
    if (!bs->b || bs->ratio_b <= 0) return 0;
    if (!bs->a || bs->ratio_b >= 1) return 1;
    return (int)(mix(bs->seed * 7919u + (uint64_t)step) % 1000) < (int)(bs->ratio_b * 1000);
}

kd_status kd_batch_source_init(kd_batch_source *bs, kd_sampler *a, kd_sampler *b, float ratio_b,
                               uint64_t seed, long first_step, int threads) {
    kd_batch_source keep = *bs;
    memset(bs, 0, sizeof *bs);
    bs->a = a;
    bs->b = b;
    bs->ratio_b = ratio_b;
    bs->seed = seed;
    bs->kind_a = keep.kind_a;
    bs->kind_b = keep.kind_b;
    bs->weight_a = keep.weight_a > 0 ? keep.weight_a : 1.0f;
    bs->weight_b = keep.weight_b > 0 ? keep.weight_b : 1.0f;
    kd_sampler *any = a ? a : b;
    size_t ni = kd_sampler_image_floats(any), nt = kd_sampler_target_floats(any);
    bs->img = malloc(ni * sizeof(float));
    bs->tgt = malloc(nt * sizeof(float));
    if (!bs->img || !bs->tgt) return kd_fail(KD_ERR_OUT_OF_MEMORY, "batch staging buffers");
    /* one sampler: a background loader prepares the next batches */
    if (threads > 0 && !(a && b)) {
        kd_status s = kd_loader_create(any, first_step, threads, 2, a ? &bs->la : &bs->lb);
        if (s) return s;
    }
    return KD_OK;
}

void kd_batch_source_free(kd_batch_source *bs) {
    kd_loader_free(bs->la);
    kd_loader_free(bs->lb);
    free(bs->img);
    free(bs->tgt);
    memset(bs, 0, sizeof *bs);
}

kd_status kd_batch_from_source(void *ctx, long step, kd_tensor *x, kd_tensor *t,
                               kd_loss_kind *kind, float *weight) {
    kd_batch_source *bs = ctx;
    int use_b = kd_batch_source_uses_b(bs, step);
    kd_sampler *s = use_b ? bs->b : bs->a;
    kd_loader *l = use_b ? bs->lb : bs->la;
    kd_status st;
    if (l) {
        int64_t got = -1;
        st = kd_loader_next(l, &got, bs->img, bs->tgt);
        if (!st && got != step)
            st = kd_fail(KD_ERR_INTERNAL, "loader delivered step %lld for step %ld", (long long)got,
                         step);
    } else {
        st = kd_sampler_batch(s, step, bs->img, bs->tgt, NULL);
    }
    if (!st) st = kd_tensor_upload(x, bs->img);
    if (!st) st = kd_tensor_upload(t, bs->tgt);
    *kind = use_b ? bs->kind_b : bs->kind_a;
    *weight = use_b ? bs->weight_b : bs->weight_a;
    return st;
}

kd_status kd_val_set_load(kd_val_set *v, const kd_dataset *ds, const int *idx, int n) {
    memset(v->tile, 0, sizeof v->tile);
    v->cases = calloc((size_t)(n > 0 ? n : 1), sizeof *v->cases);
    v->n = 0;
    if (!v->cases) return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation set");
    for (int i = 0; i < n; i++) {
        kd_status s = kd_case_load(ds, idx[i], &v->cases[v->n]);
        if (s) return s;
        if (!v->cases[v->n]->target) {
            kd_case_free(v->cases[v->n]);
            return kd_fail(KD_ERR_INVALID_ARG, "validation case %s has no labels",
                           kd_dataset_case_name(ds, idx[i]));
        }
        v->n++;
    }
    return KD_OK;
}

void kd_val_set_free(kd_val_set *v) {
    for (int i = 0; i < v->n; i++) kd_case_free(v->cases[i]);
    free(v->cases);
    v->cases = NULL;
    v->n = 0;
}

kd_status kd_validate(void *ctx, kd_model *m, double dice[3]) {
    kd_val_set *v = ctx;
    dice[0] = dice[1] = dice[2] = 0;
    for (int i = 0; i < v->n; i++) {
        kd_case *c = v->cases[i];
        size_t nv = (size_t)c->d * c->h * c->w;
        float *p = malloc(3 * nv * sizeof(float));
        if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation");
        kd_infer_opts io;
        kd_infer_opts_default(&io);
        if (v->tile[0] > 0) {
            memcpy(io.tile, v->tile, sizeof io.tile);
            io.force_tiles = 1;
        }
        kd_status s = kd_infer_volume(&m, 1, c->image, c->channels, c->d, c->h, c->w, &io, p, NULL);
        if (s) {
            free(p);
            return s;
        }
        for (int r = 0; r < 3; r++) {
            double inter = 0, sp = 0, sg = 0;
            for (size_t k = 0; k < nv; k++) {
                int a = p[r * nv + k] > 0.5f, b = c->target[r * nv + k] > 0.5f;
                inter += a && b;
                sp += a;
                sg += b;
            }
            dice[r] += sp + sg > 0 ? 2 * inter / (sp + sg) : 1.0;
        }
        free(p);
    }
    for (int r = 0; r < 3; r++) dice[r] /= v->n > 0 ? v->n : 1;
    return KD_OK;
}

/* ---- command-line training sessions ------------------------------------------------- */

#include <sys/stat.h>

#include "cli.h"
#include "kdseg/recipe.h"

/* The recipe's training defaults into a. */
static void apply_recipe(kd_train_args *a, const kd_recipe *r) {
    a->recipe = r->name;
    memcpy(a->patch, r->patch, sizeof a->patch);
    a->batch = r->batch;
    a->steps = (int)r->steps;
    a->lr = r->lr;
    a->wd = r->wd;
    a->optim = r->optim;
    a->schedule = r->schedule;
    a->warmup = (int)r->warmup;
    a->step_every = (int)r->step_every;
    a->loss = r->loss;
    a->aug = r->aug;
    a->fg = r->fg_fraction;
    a->rnd = r->random_fraction;
    a->class_balance = r->class_balance;
    a->margin = r->margin;
    a->val_cases = r->val_cases;
    a->val_every = r->val_every;
}

void kd_train_args_default(kd_train_args *a) {
    memset(a, 0, sizeof *a);
    a->layout = "auto";
    a->model = "resunet";
    a->cases = 8;
    a->size[0] = a->size[1] = a->size[2] = 64;
    a->ckpt_every = 50;
    a->threads = 1;
    a->seed = 1;
    apply_recipe(a, kd_recipe_default());
}

int kd_train_args_init(const char *cmd, int argc, char **argv, kd_train_args *a) {
    kd_train_args_default(a);
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!kd_cli_opt(argc, argv, &i, "--recipe", &v)) continue;
        const kd_recipe *r = v ? kd_recipe_find(v) : NULL;
        if (!r) {
            fprintf(stderr, "kdseg %s: --recipe: %s\n", cmd, v ? kd_last_error() : "a name is missing");
            return 2;
        }
        apply_recipe(a, r);
    }
    return 0;
}

void kd_train_args_help(FILE *f) {
    fprintf(f,
            "data:\n"
            "  --data DIR            dataset folder (BraTS 2018-21, 2023+ or MSD Task01 layout)\n"
            "  --layout L            auto|brats2018|brats2023|msd (default auto)\n"
            "  --annotations DIR     labels for unlabeled cases (e.g. from kdseg annotate)\n"
            "  --modalities LIST     e.g. t1ce,flair (default t1,t1ce,t2,flair)\n"
            "  --synthetic           generate a phantom cohort into OUT/phantom and train on it\n"
            "  --cases N             phantom cases (default 8)     --size D,H,W (default 64)\n"
            "  --val-cases N         labeled cases held out for validation (recipe)\n"
            "recipe (the defaults marked 'recipe', listed below):\n"
            "  --recipe NAME         real (default: real scans) or phantom (the demo's)\n"
            "model and optimisation:\n"
            "  --model SPEC          model spec (default resunet; see kdseg models)\n"
            "  --patch P|D,H,W       patch size (recipe)          --batch B (recipe)\n"
            "  --steps N             total steps (recipe)         --lr X (recipe)\n"
            "  --optim adam|sgd      AMSGrad Adam or Nesterov SGD (recipe)   --wd X (recipe)\n"
            "  --schedule S          step|poly|cosine|const (recipe; step: x0.5 every\n"
            "                        --step-every N steps)        --warmup N (recipe)\n"
            "  --loss L              paper (Dice + BCE, background x0.01), dicebce (Dice + BCE),\n"
            "                        bce, mse (recipe)\n"
            "  --aug SPEC            augmentation: real|phantom|none[:key=value...], e.g.\n"
            "                        real:elastic=0.2 (recipe)\n"
            "  --fg-fraction X       share of patches centred on a tumour voxel (recipe)\n"
            "  --random-fraction X   share centred anywhere in the brain's box (recipe)\n"
            "  --class-balance 0|1   tumour centres: region first (edema, core, enhancing)\n"
            "  --margin N            other centres in the tumour box + N voxels (recipe)\n"
            "  --seed S              every random choice (default 1)\n"
            "  --val-every N         validate every N steps (recipe)\n"
            "  --ckpt-every N        save last.kds every N steps (default 50)\n"
            "  --resume              continue from OUT/last.kds exactly\n"
            "  --threads N           background loader threads (default 1; 0: none)\n"
            "  --quiet               no progress output\n\n");
    for (int i = 0; i < kd_recipe_count(); i++) {
        const kd_recipe *r = kd_recipe_at(i);
        fprintf(f,
                "recipe %s%s: %s\n  --patch %d,%d,%d --batch %d --steps %ld --lr %g --wd %g --optim %s "
                "--schedule %s --warmup %ld --step-every %ld --loss %s --aug %s --fg-fraction %.3g "
                "--random-fraction %.3g --class-balance %d --margin %d --val-cases %d --val-every %d\n",
                r->name, r == kd_recipe_default() ? " (default)" : "", r->about, r->patch[0],
                r->patch[1], r->patch[2], r->batch, r->steps, r->lr, r->wd, r->optim, r->schedule,
                r->warmup, r->step_every, r->loss, r->aug, (double)r->fg_fraction,
                (double)r->random_fraction, r->class_balance, r->margin, r->val_cases, r->val_every);
    }
}

int kd_train_args_parse_one(const char *cmd, int argc, char **argv, int *i, kd_train_args *a) {
    const char *v;
    int r = 0;
#define STR(name, field)                                              \
    else if (kd_cli_opt(argc, argv, i, name, &v)) {                   \
        if (!v) return kd_cli_unknown(cmd, name);                     \
        a->field = v;                                                 \
    }
#define INT(name, field, lo, hi) \
    else if (kd_cli_opt(argc, argv, i, name, &v)) r = kd_cli_int(cmd, name, v, lo, hi, &a->field);
#define DBL(name, field, lo, hi) \
    else if (kd_cli_opt(argc, argv, i, name, &v)) r = kd_cli_float(cmd, name, v, lo, hi, &a->field);
    if (kd_cli_opt(argc, argv, i, "--recipe", &v)) return 1; /* applied by kd_train_args_init */
    if (0) {
    }
    STR("--data", data) STR("--layout", layout) STR("--annotations", annotations)
    STR("--modalities", modalities) STR("--out", out) STR("--model", model)
    STR("--optim", optim) STR("--schedule", schedule) STR("--loss", loss) STR("--aug", aug)
    INT("--cases", cases, 2, 10000) INT("--val-cases", val_cases, 0, 10000)
    INT("--batch", batch, 1, 64) INT("--steps", steps, 1, 100000000)
    INT("--warmup", warmup, 0, 100000000) INT("--step-every", step_every, 1, 100000000)
    INT("--val-every", val_every, 0, 100000000) INT("--ckpt-every", ckpt_every, 0, 100000000)
    INT("--threads", threads, 0, 16) INT("--margin", margin, 0, 1000)
    INT("--class-balance", class_balance, 0, 1)
    DBL("--lr", lr, 1e-9, 10) DBL("--wd", wd, 0, 1) DBL("--fg-fraction", fg, 0, 1)
    DBL("--random-fraction", rnd, 0, 1)
    else if (kd_cli_opt(argc, argv, i, "--size", &v)) r = kd_cli_dims3(cmd, "--size", v, 16, 512, a->size);
    else if (kd_cli_opt(argc, argv, i, "--patch", &v)) r = kd_cli_dims3(cmd, "--patch", v, 8, 512, a->patch);
    else if (kd_cli_opt(argc, argv, i, "--seed", &v)) {
        int s32 = 0;
        r = kd_cli_int(cmd, "--seed", v, 0, 2147483647, &s32);
        a->seed = s32;
    } else if (kd_cli_flag(argv, *i, "--synthetic")) a->synthetic = 1;
    else if (kd_cli_flag(argv, *i, "--resume")) a->resume = 1;
    else if (kd_cli_flag(argv, *i, "--quiet")) a->quiet = 1;
    else return 0;
#undef STR
#undef INT
#undef DBL
    return r ? 2 : 1;
}

kd_status kd_train_session_open(const char *cmd, const kd_train_args *a, kd_train_session *s) {
    memset(s, 0, sizeof *s);
    s->a = *a;
    kd_status st;
    memset(&s->tc, 0, sizeof s->tc);
    kd_optim_defaults(&s->oc);
    kd_schedule_defaults(&s->tc.sched);
    if ((st = kd_loss_parse(a->loss, &s->loss)) || (st = kd_schedule_parse(a->schedule, &s->tc.sched)))
        return st;
    if (!strcmp(a->optim, "sgd")) s->oc.kind = KD_OPT_SGD;
    else if (strcmp(a->optim, "adam"))
        return kd_fail(KD_ERR_INVALID_ARG, "--optim must be adam or sgd, got '%s'", a->optim);
    kd_augment_opts aug;
    if ((st = kd_augment_opts_parse(a->aug, &aug))) return kd_fail_context(st, "--aug");
    s->oc.lr = (float)a->lr;
    s->oc.weight_decay = (float)a->wd;
    s->tc.sched.step_every = a->step_every;
    s->tc.sched.warmup = a->warmup;
    s->tc.sched.total_steps = a->steps;
    /* one writer per output folder; the longest name it gets: a phantom case file */
    if ((st = kd_outdir_open(a->out, a->synthetic ? "phantom/KDPhantom_00000/KDPhantom_00000_flair.nii.gz"
                                                  : "train.png", &s->outdir)))
        return st;
    const char *data = a->data;
    if (a->synthetic) {
        if ((st = kd_path_join(s->phantom, sizeof s->phantom, a->out, "phantom"))) return st;
        kd_phantom_opts po;
        memset(&po, 0, sizeof po);
        po.cases = a->cases;
        memcpy(po.size, a->size, sizeof po.size);
        po.seed = (uint64_t)a->seed;
        po.layout = KD_LAYOUT_BRATS2018;
        struct stat sb;
        if (stat(s->phantom, &sb) == 0) {
            /* a cohort of an earlier run: only a whole one of the same shape will do */
            if ((st = kd_phantom_check_cohort(s->phantom, &po))) return st;
        } else {
            if (!a->quiet)
                kd_log_progress("generating %d phantom cases of %dx%dx%d in %s", a->cases,
                                a->size[0], a->size[1], a->size[2], s->phantom);
            if ((st = kd_phantom_write_cohort(s->phantom, &po))) return st;
        }
        data = s->phantom;
    }
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    if ((st = kd_layout_parse(a->layout, &dopts.layout))) return st;
    dopts.annotations = a->annotations;
    dopts.modalities = a->modalities;
    if ((st = kd_dataset_open(data, &dopts, &s->ds))) return st;
    s->lab = malloc(sizeof(int) * (size_t)(kd_dataset_count(s->ds) + 1));
    s->pseudo = malloc(sizeof(int) * (size_t)(kd_dataset_count(s->ds) + 1));
    if (!s->lab || !s->pseudo) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case list");
    for (int i = 0; i < kd_dataset_count(s->ds); i++) {
        int l = kd_dataset_case_labeled(s->ds, i);
        if (l == 1) s->lab[s->nlab++] = i;
        else if (l == 2) s->pseudo[s->npseudo++] = i;
    }
    if (s->nlab - a->val_cases < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: %d labeled cases; need more than --val-cases %d",
                       data, s->nlab, a->val_cases);
    /* the held-out cases are the last val_cases labeled ones; none may be trained on */
    const int *val = s->lab + s->nlab - a->val_cases;
    if ((st = kd_dataset_check_disjoint(s->ds, val, a->val_cases, "validation", s->ds, s->lab,
                                        s->nlab - a->val_cases, "training")) ||
        (st = kd_dataset_check_disjoint(s->ds, val, a->val_cases, "validation", s->ds, s->pseudo,
                                        s->npseudo, "annotated training")))
        return st;
    if (!(s->dev = kd_cli_open_device(cmd))) return kd_fail(KD_ERR_NO_DEVICE, "%s", kd_last_error());
    char path[KD_PATH_MAX], meta[8192];
    if ((st = kd_path_join(path, sizeof path, a->out, "last.kds"))) return st;
    s->tc.best_so_far = -1;
    if (a->resume) {
        if (stat(path, &(struct stat){0}) != 0 && errno == ENOENT)
            return kd_fail(KD_ERR_IO, "%s: nothing to resume: no checkpoint yet (%s does not exist; "
                           "run without --resume to start)", a->out, path);
        if ((st = kd_checkpoint_load(path, s->dev, &s->m, &s->oc, &s->o, meta, sizeof meta))) return st;
        char v[64];
        kd_meta_get(meta, "step", v, sizeof v);
        s->start = atol(v);
        kd_meta_get(meta, "best_dice", v, sizeof v);
        s->tc.best_so_far = v[0] ? atof(v) : -1;
        if (!a->quiet) kd_log_progress("resuming %s at step %ld", kd_model_spec(s->m), s->start);
    } else if ((st = kd_model_create(s->dev, a->model, (uint64_t)a->seed, &s->m)) ||
               (st = kd_optim_create(s->m, &s->oc, &s->o))) {
        return st;
    }
    for (int k = 0; k < 3; k++)
        if (a->patch[k] % kd_model_divisor(s->m))
            return kd_fail(KD_ERR_INVALID_ARG, "--patch %dx%dx%d: sizes must be multiples of %d for %s",
                           a->patch[0], a->patch[1], a->patch[2], kd_model_divisor(s->m),
                           kd_model_arch(s->m));
    kd_sampler_opts_default(&s->so);
    s->so.batch = a->batch;
    memcpy(s->so.patch, a->patch, sizeof s->so.patch);
    s->so.seed = (uint64_t)a->seed;
    s->so.fg_fraction = (float)a->fg;
    s->so.random_fraction = (float)a->rnd;
    s->so.class_balance = a->class_balance;
    s->so.margin = a->margin;
    s->so.aug = aug;
    if ((st = kd_sampler_create(&s->so, &s->smp)) ||
        (st = kd_sampler_add(s->smp, s->ds, s->lab, s->nlab - a->val_cases)))
        return st;
    if ((st = kd_val_set_load(&s->vs, s->ds, s->lab + s->nlab - a->val_cases, a->val_cases))) return st;
    memcpy(s->vs.tile, a->patch, sizeof s->vs.tile);
    kd_train_config *tc = &s->tc;
    tc->batch = a->batch;
    memcpy(tc->patch, a->patch, sizeof tc->patch);
    tc->steps = a->steps;
    tc->lr = (float)a->lr;
    tc->seed = (uint64_t)a->seed;
    tc->val_every = a->val_cases > 0 ? a->val_every : 0;
    tc->ckpt_every = a->ckpt_every;
    tc->out_dir = a->out;
    tc->progress = !a->quiet;
    tc->stop = &kd_stop_flag;
    /* the data path last: a reader with a small buffer loses whole lines from the end */
    if (asprintf(&s->extra, "loss=%s\noptim=%s\npatch=%d,%d,%d\nbatch=%d\nrecipe=%s\ndata=%s\n", a->loss,
                 a->optim, a->patch[0], a->patch[1], a->patch[2], a->batch, a->recipe, data) < 0) {
        s->extra = NULL;
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint metadata");
    }
    tc->meta_extra = s->extra;
    kd_install_stop_handler();
    return KD_OK;
}

void kd_train_session_close(kd_train_session *s) {
    kd_val_set_free(&s->vs);
    kd_sampler_free(s->smp);
    kd_optim_free(s->o);
    kd_model_free(s->m);
    kd_device_free(s->dev);
    kd_dataset_free(s->ds);
    free(s->lab);
    free(s->pseudo);
    free(s->extra);
    kd_outdir_close(s->outdir);
    memset(s, 0, sizeof *s);
}

kd_status kd_train_session_run(kd_train_session *s, kd_batch_source *bs) {
    const kd_train_args *a = &s->a;
    size_t plan = 0;
    kd_model_plan(s->m, kd_shape5(a->batch, kd_model_in_channels(s->m), a->patch[0], a->patch[1], a->patch[2]),
                  1, &plan);
    if (!a->quiet)
        printf("training %s (%zu parameters) on %s, %d labeled cases (%d held out), patch "
               "%dx%dx%d, batch %d, steps %ld..%d\nplanned activation memory %.1f MiB (+ %.1f MiB "
               "parameters, gradients and optimizer state)\n",
               kd_model_spec(s->m), kd_model_param_count(s->m), kd_device_name(s->dev), s->nlab,
               a->val_cases, a->patch[0], a->patch[1], a->patch[2], a->batch, s->start, a->steps,
               plan / 1048576.0, 5.0 * kd_model_param_bytes(s->m) / 1048576.0);
    kd_train_result res;
    kd_status st = kd_train_run(s->m, s->o, &s->tc, s->start, kd_batch_from_source, bs,
                                a->val_cases ? kd_validate : NULL, &s->vs, &res);
    if (!st || st == KD_ERR_INTERRUPTED) {
        char best[64] = "none (no validation yet)";
        if (res.best_dice >= 0) snprintf(best, sizeof best, "%.4f", res.best_dice);
        if (!a->quiet)
            printf("%ld steps in %.1f s (%.3f steps/s), loss %.4f -> %.4f, best validation Dice "
                   "%s, peak device memory %.1f MiB\n",
                   res.steps_done, res.seconds, res.steps_per_s, (double)res.first_loss,
                   (double)res.last_loss, best, res.peak_device_bytes / 1048576.0);
        char csv[KD_PATH_MAX], png[KD_PATH_MAX];
        kd_status ps = kd_path_join(csv, sizeof csv, a->out, "train.csv");
        if (!ps) ps = kd_path_join(png, sizeof png, a->out, "train.png");
        if (!ps) ps = kd_plot_training(csv, png);
        if (ps) kd_log(KD_LOG_WARN, "plot: %s", kd_last_error());
        else if (!a->quiet) printf("wrote %s/last.kds, %s, %s\n", a->out, csv, png);
    }
    return st;
}
