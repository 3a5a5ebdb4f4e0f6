/* Training options of kdseg train and distill. */
#include "train_args.h"

#include <string.h>

#include "cli.h"
#include "kdseg/recipe.h"

void kd_train_args_default(kd_train_args *a) {
    memset(a, 0, sizeof *a);
    kd_train_opts_default(&a->o);
    kd_train_opts_recipe(&a->o, kd_recipe_default()->name); /* a built-in recipe: cannot fail */
    a->o.progress = kd_cli_quiet ? NULL : kd_cli_progress; /* -q, --quiet (kdseg.c) */
    a->o.stop = &kd_cli_stop;
    a->o.dist = kd_cli_dist; /* the job's ranks share the batch */
    a->synthetic = 0;
    a->cases = 8;
}

int kd_train_args_init(const char *cmd, int argc, char **argv, kd_train_args *a) {
    kd_train_args_default(a);
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!kd_cli_opt(argc, argv, &i, "--recipe", &v)) continue;
        kd_status s = v ? kd_train_opts_recipe(&a->o, v) : kd_fail(KD_ERR_INVALID_ARG, "a name is missing");
        if (s) {
            fprintf(stderr, "kdseg %s: --recipe: %s\n", cmd, kd_last_error());
            return 2;
        }
    }
    return 0;
}

void kd_train_args_finish(kd_train_args *a) {
    kd_train_opts *o = &a->o;
    o->synthetic_cases = a->synthetic ? a->cases : 0;
    char path[4096];
    kd_ckpt_meta m;
    /* a missing or unreadable checkpoint: kd_train says so */
    if (!o->resume || !o->out || kd_path_join(path, sizeof path, o->out, "last.kds") ||
        kd_checkpoint_read_meta(path, &m)) {
        kd_clear_error();
        return;
    }
    if (!a->given_patch && m.patch[0] > 0 && m.patch[1] > 0 && m.patch[2] > 0)
        memcpy(o->sampler.patch, m.patch, sizeof m.patch);
    if (!a->given_batch && m.batch > 0) o->sampler.batch = m.batch;
    if (!a->given_steps && m.steps > 0) o->steps = m.steps;
    if (!a->given_lr && m.lr > 0) o->optim.lr = (float)m.lr;
    if (!a->given_seed && m.seed > 0) o->seed = m.seed;
    if (!a->given_loss && m.loss[0] && kd_loss_parse(m.loss, &o->loss)) kd_clear_error();
    if (!a->given_optim && !strcmp(m.optim, "sgd")) o->optim.kind = KD_OPT_SGD;
    if (!a->given_optim && !strcmp(m.optim, "adam")) o->optim.kind = KD_OPT_ADAM;
}

void kd_train_args_help(FILE *f) {
    fprintf(f,
            "data:\n"
            "  --dataset DIR         dataset folder (BraTS 2018-21, 2023+, MSD Task01 or nnU-Net\n"
            "                        v2 raw layout; --data is the old spelling)\n"
            "  --layout L            auto|brats2018|brats2023|msd|nnunet (default auto)\n"
            "  --channels LIST       nnU-Net without dataset.json: the modality of each channel\n"
            "                        file _0000, _0001, ... (e.g. t1,t1ce,t2,flair)\n"
            "  --annotations DIR     labels for unlabeled cases (e.g. from kdseg annotate)\n"
            "  --modalities LIST     e.g. t1ce,flair (default t1,t1ce,t2,flair)\n"
            "  --synthetic           generate a phantom cohort into OUT/phantom and train on it\n"
            "  --cases N             phantom cases (default 8)     --size N|D,H,W (default 64)\n"
            "  --val-cases N         labeled cases held out for validation (recipe)\n"
            "recipe (the defaults marked 'recipe', listed below):\n"
            "  --recipe NAME         real (default: real scans) or phantom (the demo's)\n"
            "model and optimisation:\n"
            "  --arch SPEC           architecture spec (default resunet; see kdseg models;\n"
            "                        --model is the old spelling)\n"
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
            "  --resume              continue from OUT/last.kds exactly (its model; its data\n"
            "                        unless given: another model or data is refused)\n"
            "  --overwrite           OUT holds an earlier run: start again, keeping its\n"
            "                        last.kds, best.kds, train.csv, train.png as *.bak (without\n"
            "                        --resume or --overwrite such a folder is refused)\n"
            "  --threads N           background loader threads (default 1; 0: none)\n"
            "  -q, --quiet           no progress output\n\n");
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
    kd_train_opts *o = &a->o;
    const char *v;
    int r = 0, n = 0;
    double x = 0;
    kd_status s = KD_OK;
    if (kd_cli_opt(argc, argv, i, "--recipe", &v)) {
        return 1; /* applied by kd_train_args_init, before the other options */
    } else if (kd_cli_opt(argc, argv, i, "--dataset", &v) ||
               kd_cli_old_opt(cmd, argc, argv, i, "--data", "--dataset", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--dataset");
        o->data = v;
    } else if (kd_cli_opt(argc, argv, i, "--out", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--out");
        o->out = v;
    } else if (kd_cli_opt(argc, argv, i, "--annotations", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--annotations");
        o->annotations = v;
    } else if (kd_cli_opt(argc, argv, i, "--modalities", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--modalities");
        o->modalities = v;
    } else if (kd_cli_opt(argc, argv, i, "--channels", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--channels");
        o->channels = v;
    } else if (kd_cli_opt(argc, argv, i, "--arch", &v) ||
               kd_cli_old_opt(cmd, argc, argv, i, "--model", "--arch", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--arch");
        o->model = v;
    } else if (kd_cli_opt(argc, argv, i, "--layout", &v)) {
        s = kd_layout_parse(v ? v : "", &o->layout);
    } else if (kd_cli_opt(argc, argv, i, "--optim", &v)) {
        a->given_optim = 1;
        if (v && !strcmp(v, "sgd")) o->optim.kind = KD_OPT_SGD;
        else if (v && !strcmp(v, "adam")) o->optim.kind = KD_OPT_ADAM;
        else s = kd_fail(KD_ERR_INVALID_ARG, "--optim must be adam or sgd, got '%s'", v ? v : "");
    } else if (kd_cli_opt(argc, argv, i, "--schedule", &v)) {
        s = kd_schedule_parse(v ? v : "", &o->schedule);
    } else if (kd_cli_opt(argc, argv, i, "--loss", &v)) {
        a->given_loss = 1;
        s = kd_loss_parse(v ? v : "", &o->loss);
    } else if (kd_cli_opt(argc, argv, i, "--aug", &v)) {
        s = kd_augment_opts_parse(v ? v : "", &o->sampler.aug);
        if (s) s = kd_fail_context(s, "--aug");
    } else if (kd_cli_opt(argc, argv, i, "--cases", &v)) {
        r = kd_cli_int(cmd, "--cases", v, 2, 10000, &a->cases);
    } else if (kd_cli_opt(argc, argv, i, "--val-cases", &v)) {
        r = kd_cli_int(cmd, "--val-cases", v, 0, 10000, &o->val_cases);
    } else if (kd_cli_opt(argc, argv, i, "--batch", &v)) {
        a->given_batch = 1;
        r = kd_cli_int(cmd, "--batch", v, 1, 64, &o->sampler.batch);
    } else if (kd_cli_opt(argc, argv, i, "--steps", &v)) {
        a->given_steps = 1;
        r = kd_cli_int(cmd, "--steps", v, 1, 100000000, &n);
        o->steps = n;
    } else if (kd_cli_opt(argc, argv, i, "--warmup", &v)) {
        r = kd_cli_int(cmd, "--warmup", v, 0, 100000000, &n);
        o->schedule.warmup = n;
    } else if (kd_cli_opt(argc, argv, i, "--step-every", &v)) {
        r = kd_cli_int(cmd, "--step-every", v, 1, 100000000, &n);
        o->schedule.step_every = n;
    } else if (kd_cli_opt(argc, argv, i, "--val-every", &v)) {
        r = kd_cli_int(cmd, "--val-every", v, 0, 100000000, &n);
        o->val_every = n;
    } else if (kd_cli_opt(argc, argv, i, "--ckpt-every", &v)) {
        r = kd_cli_int(cmd, "--ckpt-every", v, 0, 100000000, &n);
        o->ckpt_every = n;
    } else if (kd_cli_opt(argc, argv, i, "--threads", &v)) {
        r = kd_cli_int(cmd, "--threads", v, 0, 16, &o->threads);
    } else if (kd_cli_opt(argc, argv, i, "--margin", &v)) {
        r = kd_cli_int(cmd, "--margin", v, 0, 1000, &o->sampler.margin);
    } else if (kd_cli_opt(argc, argv, i, "--lr", &v)) {
        a->given_lr = 1;
        r = kd_cli_float(cmd, "--lr", v, 1e-9, 10, &x);
        o->optim.lr = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--wd", &v)) {
        r = kd_cli_float(cmd, "--wd", v, 0, 1, &x);
        o->optim.weight_decay = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--fg-fraction", &v)) {
        r = kd_cli_float(cmd, "--fg-fraction", v, 0, 1, &x);
        o->sampler.fg_fraction = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--random-fraction", &v)) {
        r = kd_cli_float(cmd, "--random-fraction", v, 0, 1, &x);
        o->sampler.random_fraction = (float)x;
    } else if (kd_cli_opt(argc, argv, i, "--class-balance", &v)) {
        r = kd_cli_int(cmd, "--class-balance", v, 0, 1, &o->sampler.class_balance);
    } else if (kd_cli_opt(argc, argv, i, "--size", &v)) {
        r = kd_cli_dims3(cmd, "--size", v, 16, 512, o->synthetic_size);
    } else if (kd_cli_opt(argc, argv, i, "--patch", &v)) {
        a->given_patch = 1;
        r = kd_cli_dims3(cmd, "--patch", v, 8, 512, o->sampler.patch);
    } else if (kd_cli_opt(argc, argv, i, "--seed", &v)) {
        a->given_seed = 1;
        r = kd_cli_int(cmd, "--seed", v, 0, 2147483647, &n);
        o->seed = (uint64_t)n;
    } else if (kd_cli_flag(argv, *i, "--synthetic")) {
        a->synthetic = 1;
    } else if (kd_cli_flag(argv, *i, "--resume")) {
        o->resume = 1;
    } else if (kd_cli_flag(argv, *i, "--overwrite")) {
        o->overwrite = 1;
    } else {
        return 0;
    }
    return kd_cli_parsed(cmd, s, r);
}
