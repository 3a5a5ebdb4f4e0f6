/* kdseg demo: the paper's experiment on a built-in synthetic cohort (kd_experiment_run):
 * teachers of three architectures are trained on a few labeled cases, their ensemble
 * annotates an unlabeled pool, and a student trained on labeled + annotated cases is
 * compared with the same student trained on the labeled cases only, with every teacher
 * and with the ensemble, on held-out test cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg demo [--quick | --long] [--online] [--out DIR] [--seed S]\n"
            "       kdseg demo --labeled DIR --unlabeled DIR [--unlabeled DIR...] --test DIR\n"
            "                  [--modalities LIST] [--val-cases N] [--recipe NAME] [options below]\n"
            "       kdseg demo --study [study options]   (kdseg study --help)\n\n"
            "The paper's experiment on a built-in synthetic cohort, or on your cases:\n"
            "  1. generate labeled, unlabeled and test phantom cases (or read yours; by\n"
            "     default 2 labeled, 24 unlabeled, 24 test cases of 64^3; teachers and\n"
            "     students 2000 steps, every model keeps its last checkpoint, 80%% of the\n"
            "     distilled student's steps from annotated cases);\n"
            "  2. train three heterogeneous teachers (unet3d, cascade, resnext-se);\n"
            "  3. annotate the unlabeled cases with the teacher ensemble;\n"
            "  4. train the ResUNet student on the labeled cases only (baseline) and distil a\n"
            "     second student on labeled + ensemble-annotated cases, each three times with\n"
            "     different seeds (--student-runs; offline; with --online\n"
            "     also one distilled online through the device scheduler), and an oracle\n"
            "     student the same way on the unlabeled cases' hidden true labels: the most\n"
            "     distillation could gain from those cases;\n"
            "  5. segment the test cases with every teacher, the ensemble and the students,\n"
            "     and evaluate them;\n"
            "  6. print the paper's table (Dice and HD95 per region, mean ± std), write\n"
            "     results.csv, results.md, dice_boxplot.png and example.png into DIR.\n\n"
            "  --quick      a smaller run (used by the tests; about 1 minute here)\n"
            "  --long       twice the steps of the default (teachers and students 4000)\n"
            "  --out DIR    output folder (default kdseg-demo)\n"
            "  --seed S     cohort and training seed (default 1)\n\n"
            "your cases (any supported layout; the same stages, table and plots):\n"
            "  --labeled DIR     labeled training cases (the last --val-cases held out to\n"
            "                    choose each model's best checkpoint)\n"
            "  --unlabeled DIR   unlabeled cases (repeat for more folders, up to 8); labels\n"
            "                    they have are hidden from training and score the ensemble's\n"
            "                    annotations (and, when every case has them, teach an oracle\n"
            "                    student)\n"
            "  --test DIR        labeled test cases (no case may be in two sets)\n"
            "  --modalities LIST e.g. t1ce,flair: the channels every model takes (default\n"
            "                    t1,t1ce,t2,flair)\n"
            "  --val-cases N     labeled cases held out for validation (default 0: every\n"
            "                    model keeps its last checkpoint; --quick: 2)\n"
            "  --recipe NAME     every model's training recipe: real (the default on your\n"
            "                    cases: 64^3 patches, 600 steps, class-balanced tumour centres,\n"
            "                    nnU-Net's augmentation, no tumour outside the brain; kdseg\n"
            "                    train --help) or phantom (the demo's own settings, the default\n"
            "                    on phantoms); the options below override it\n\n"
            "the experiment's sizes (defaults: the default or --quick run's):\n"
            "  --labeled N --unlabeled N --test N   phantom cases in each set (a number: a\n"
            "                     count; anything else: a folder, as above)\n"
            "  --size N           phantom volume N^3 voxels   --patch N  training patch N^3\n"
            "  --teacher-steps N --student-steps N  training steps of each teacher / student\n"
            "  --student-runs N   train the baseline and the distilled student N times (run\n"
            "                     k > 1 with seed 100 + k - 1) and compare each test case's\n"
            "                     Dice averaged over the runs (default 3; 1 on your cases\n"
            "                     and with --quick)\n"
            "  --jobs N           models trained at once, each on its own queue of the device\n"
            "                     (default 2, 1 on your cases; 1: one after another; the\n"
            "                     models are the same)\n"
            "  --pseudo-ratio X   share of the distilled student's steps on annotated cases\n"
            "  --pseudo-weight W  weight of the loss on those steps\n"
            "  --min-agreement X  distil only from annotated cases whose teachers agree >= X\n"
            "  --student-loss L   every student's loss (baseline, distilled, oracle): paper\n"
            "                     (Dice + BCE with background voxels weighed 0.01; the\n"
            "                     default) or dicebce (Dice + BCE); teachers keep the paper's\n\n"
            "examples:\n"
            "  kdseg demo --quick --out demo-quick\n"
            "  kdseg demo --quick --online --labeled 3 --unlabeled 3 --test 2 --teacher-steps 20 \\\n"
            "      --student-steps 20 --out demo-tiny\n");
}

/* 1 when v is a count (digits only), not a folder. */
static int is_count(const char *v) {
    if (!v || !*v) return 0;
    for (const char *p = v; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

static int run(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (kd_cli_flag(argv, i, "--study")) {
            /* the study's own options: kdseg study, with --study taken out */
            for (int j = i; j + 1 < argc; j++) argv[j] = argv[j + 1];
            return kd_cmd_study.run(argc - 1, argv);
        }
    kd_experiment_opts c;
    kd_experiment_opts_default(&c);
    int quick = 0, lng = 0, n, val_given = 0, runs_given = 0, jobs_given = 0;
    for (int i = 1; i < argc; i++) { /* presets first: the size options below override them */
        quick |= kd_cli_flag(argv, i, "--quick");
        lng |= kd_cli_flag(argv, i, "--long");
    }
    if (quick && lng) {
        fprintf(stderr, "kdseg demo: --quick and --long exclude each other\n");
        return 2;
    }
    if (quick) kd_experiment_opts_quick(&c);
    if (lng) c.teacher_steps *= 2, c.student_steps *= 2;
    /* the recipe next (the user's cases: the real one), then the options below over it */
    const char *recipe = NULL;
    int user_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (kd_cli_opt(argc, argv, &i, "--recipe", &v)) recipe = v ? v : "";
        else if ((kd_cli_opt(argc, argv, &i, "--labeled", &v) || kd_cli_opt(argc, argv, &i, "--test", &v) ||
                  kd_cli_opt(argc, argv, &i, "--unlabeled", &v)) && v && !is_count(v))
            user_given = 1;
    }
    if (!recipe && user_given) recipe = "real";
    if (recipe && strcmp(recipe, "phantom")) {
        long ts = c.teacher_steps, ss = c.student_steps;
        if (kd_experiment_opts_recipe(&c, recipe)) return kd_cli_error("demo", KD_ERR_INVALID_ARG);
        if (quick || lng) c.teacher_steps = ts, c.student_steps = ss; /* the preset's budget */
    }
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (kd_cli_flag(argv, i, "--quick") || kd_cli_flag(argv, i, "--long")) continue;
        else if (kd_cli_opt(argc, argv, &i, "--recipe", &v)) continue;
        else if (kd_cli_flag(argv, i, "--online")) c.online = 1;
        else if (kd_cli_opt(argc, argv, &i, "--labeled", &v)) {
            if (v && !is_count(v)) c.labeled_dir = v;
            else if (kd_cli_int("demo", "--labeled", v, 1, 10000, &c.labeled)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--unlabeled", &v)) {
            if (v && !is_count(v)) {
                if (c.nunlabeled_dirs == KD_EXPERIMENT_MAX_DIRS) {
                    fprintf(stderr, "kdseg demo: at most %d --unlabeled folders\n", KD_EXPERIMENT_MAX_DIRS);
                    return 2;
                }
                c.unlabeled_dirs[c.nunlabeled_dirs++] = v;
            } else if (kd_cli_int("demo", "--unlabeled", v, 1, 10000, &c.unlabeled)) {
                return 2;
            }
        } else if (kd_cli_opt(argc, argv, &i, "--test", &v)) {
            if (v && !is_count(v)) c.test_dir = v;
            else if (kd_cli_int("demo", "--test", v, 1, 10000, &c.test)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--modalities", &v) && v) {
            c.modalities = v;
        } else if (kd_cli_opt(argc, argv, &i, "--val-cases", &v)) {
            if (kd_cli_int("demo", "--val-cases", v, 0, 10000, &c.val_cases)) return 2;
            val_given = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--size", &v)) {
            if (kd_cli_int("demo", "--size", v, 16, 512, &c.size)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_int("demo", "--patch", v, 8, 512, &c.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--teacher-steps", &v)) {
            if (kd_cli_int("demo", "--teacher-steps", v, 1, 10000000, &n)) return 2;
            c.teacher_steps = n;
        } else if (kd_cli_opt(argc, argv, &i, "--student-runs", &v)) {
            if (kd_cli_int("demo", "--student-runs", v, 1, KD_EXPERIMENT_MAX_RUNS, &n)) return 2;
            c.student_runs = n, runs_given = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--jobs", &v)) {
            if (kd_cli_int("demo", "--jobs", v, 1, KD_EXPERIMENT_MAX_JOBS, &c.jobs)) return 2;
            jobs_given = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--student-steps", &v)) {
            if (kd_cli_int("demo", "--student-steps", v, 1, 10000000, &n)) return 2;
            c.student_steps = n;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-ratio", &v)) {
            if (kd_cli_float("demo", "--pseudo-ratio", v, 0, 1, &c.pseudo_ratio)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-weight", &v)) {
            if (kd_cli_float("demo", "--pseudo-weight", v, 0, 100, &c.pseudo_weight)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--min-agreement", &v)) {
            if (kd_cli_float("demo", "--min-agreement", v, 0, 1, &c.min_agreement)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--student-loss", &v)) {
            if (kd_loss_parse(v ? v : "", &c.student_loss)) {
                fprintf(stderr, "kdseg demo: --student-loss: %s\n", kd_last_error());
                return 2;
            }
        } else if (kd_cli_opt(argc, argv, &i, "--out", &v) && v) {
            c.out = v;
        } else if (kd_cli_opt(argc, argv, &i, "--seed", &v) && v) {
            if (kd_cli_int("demo", "--seed", v, 0, 1000000, &n)) return 2;
            c.seed = (uint64_t)n;
        } else {
            return kd_cli_unknown("demo", argv[i]);
        }
    }
    int user = c.labeled_dir || c.test_dir || c.nunlabeled_dirs;
    if (user && (!c.labeled_dir || !c.test_dir || !c.nunlabeled_dirs)) {
        fprintf(stderr, "kdseg demo: your cases need --labeled DIR, --unlabeled DIR and --test DIR\n");
        return 2;
    }
    if (user && !val_given) c.val_cases = 0;
    if (user && !runs_given) c.student_runs = 1; /* a real-data student: minutes of CPU each */
    if (user && !jobs_given) c.jobs = 1; /* real-data models: the memory of one at a time */
    if (!user && c.patch > c.size) {
        fprintf(stderr, "kdseg demo: --patch %d is larger than the volume (--size %d)\n", c.patch, c.size);
        return 2;
    }
    setenv("KDSEG_PROFILE", "quiet", 0); /* the scheduler's busy fraction (before the device opens) */
    kd_device *dev = kd_cli_open_device("demo");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    c.progress = kd_cli_progress;
    c.stop = &kd_cli_stop;
    kd_experiment_result *r = NULL;
    kd_status s = kd_experiment_run(dev, &c, &r);
    if (!s) {
        kd_experiment_print(r, stdout);
        printf("wrote %s/results.md, results.csv, dice_boxplot.png, example.png (%.0f s in all)\n", c.out,
               r->seconds);
    }
    kd_experiment_result_free(r);
    kd_device_free(dev);
    return s ? kd_cli_error("demo", s) : 0;
}

const kd_command kd_cmd_demo = {"demo", "run the paper's distillation experiment on phantoms", run, help};
