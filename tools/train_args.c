/* Training options of kdseg train and distill. */
#include "train_args.h"

#include <string.h>

#include "cli.h"
#include "kdseg/recipe.h"

void kd_train_args_default(kd_train_args *a) {
    kd_train_opts_default(&a->o);
    kd_train_opts_recipe(&a->o, kd_recipe_default()->name); /* a built-in recipe: cannot fail */
    a->o.progress = kd_cli_progress;
    a->o.stop = &kd_cli_stop;
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

void kd_train_args_finish(kd_train_args *a) { a->o.synthetic_cases = a->synthetic ? a->cases : 0; }

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
    kd_train_opts *o = &a->o;
    const char *v;
    int r = 0, n = 0;
    double x = 0;
    kd_status s = KD_OK;
    if (kd_cli_opt(argc, argv, i, "--recipe", &v)) {
        return 1; /* applied by kd_train_args_init, before the other options */
    } else if (kd_cli_opt(argc, argv, i, "--data", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--data");
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
    } else if (kd_cli_opt(argc, argv, i, "--model", &v)) {
        if (!v) return kd_cli_unknown(cmd, "--model");
        o->model = v;
    } else if (kd_cli_opt(argc, argv, i, "--layout", &v)) {
        s = kd_layout_parse(v ? v : "", &o->layout);
    } else if (kd_cli_opt(argc, argv, i, "--optim", &v)) {
        if (v && !strcmp(v, "sgd")) o->optim.kind = KD_OPT_SGD;
        else if (v && !strcmp(v, "adam")) o->optim.kind = KD_OPT_ADAM;
        else s = kd_fail(KD_ERR_INVALID_ARG, "--optim must be adam or sgd, got '%s'", v ? v : "");
    } else if (kd_cli_opt(argc, argv, i, "--schedule", &v)) {
        s = kd_schedule_parse(v ? v : "", &o->schedule);
    } else if (kd_cli_opt(argc, argv, i, "--loss", &v)) {
        s = kd_loss_parse(v ? v : "", &o->loss);
    } else if (kd_cli_opt(argc, argv, i, "--aug", &v)) {
        s = kd_augment_opts_parse(v ? v : "", &o->sampler.aug);
        if (s) s = kd_fail_context(s, "--aug");
    } else if (kd_cli_opt(argc, argv, i, "--cases", &v)) {
        r = kd_cli_int(cmd, "--cases", v, 2, 10000, &a->cases);
    } else if (kd_cli_opt(argc, argv, i, "--val-cases", &v)) {
        r = kd_cli_int(cmd, "--val-cases", v, 0, 10000, &o->val_cases);
    } else if (kd_cli_opt(argc, argv, i, "--batch", &v)) {
        r = kd_cli_int(cmd, "--batch", v, 1, 64, &o->sampler.batch);
    } else if (kd_cli_opt(argc, argv, i, "--steps", &v)) {
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
        r = kd_cli_dims3(cmd, "--patch", v, 8, 512, o->sampler.patch);
    } else if (kd_cli_opt(argc, argv, i, "--seed", &v)) {
        r = kd_cli_int(cmd, "--seed", v, 0, 2147483647, &n);
        o->seed = (uint64_t)n;
    } else if (kd_cli_flag(argv, *i, "--synthetic")) {
        a->synthetic = 1;
    } else if (kd_cli_flag(argv, *i, "--resume")) {
        o->resume = 1;
    } else if (kd_cli_flag(argv, *i, "--quiet")) {
        o->progress = NULL;
    } else {
        return 0;
    }
    if (s) {
        kd_cli_error(cmd, s);
        return 2;
    }
    return r ? 2 : 1;
}
