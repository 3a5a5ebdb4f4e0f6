/* kdseg study (also kdseg demo --study): the paper's data-amount study on phantom
 * cohorts (kd_study_run): the student's test Dice against the number of training
 * cases, labeled only and labeled + ensemble-annotated, over several seeds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg study [--quick] [--out DIR] [--labeled-sizes LIST] [--base N]\n"
            "                   [--pool-sizes LIST] [--seeds LIST] [options]\n"
            "       (also kdseg demo --study ...)\n\n"
            "The paper's question, the student's performance against the amount of training\n"
            "data, on phantom cohorts. Per seed (a new cohort each):\n"
            "  1. train the teachers on BASE labeled cases and annotate the unlabeled pool with\n"
            "     their ensemble (scored against the pool's hidden truth);\n"
            "  2. train the student on labeled cases only, at each of --labeled-sizes;\n"
            "  3. distil the student on BASE labeled + each of --pool-sizes annotated cases;\n"
            "  4. score every student, teacher and the ensemble on the test cases.\n"
            "Writes DIR/study.csv (one row per model and seed), study.md (mean ± standard\n"
            "error over the seeds, and what it says) and study.png (test Dice against training\n"
            "cases: one line per kind of label with error bars, the ensemble and the teachers\n"
            "as reference lines). Every model trains as in the demo (2000 steps, the paper's\n"
            "loss, two models at a time); the default takes about 30 minutes on 2 CPU cores.\n"
            "Run again into the same folder, a stopped study continues where it stopped.\n\n"
            "  --quick               a tiny study (the tests'; seconds)\n"
            "  --out DIR             output folder (default kdseg-study)\n"
            "  --labeled-sizes LIST  labeled training cases of the labeled-only student\n"
            "                        (default 2,4,8,16)\n"
            "  --base N              labeled training cases of the teachers and the distilled\n"
            "                        students (default 2: the smallest size)\n"
            "  --pool-sizes LIST     annotated cases added to BASE (default 0,6,14)\n"
            "  --seeds LIST          seeds, one cohort each (default 1,2,3)\n"
            "  --test N              test cases per seed (default 16)\n"
            "  --size N --patch N    phantom grid and training patch (default 64, 32)\n"
            "  --teacher-steps N --student-steps N   training steps (default 2000 each)\n"
            "  --pseudo-ratio X      share of the distilled student's steps on annotated cases\n"
            "                        (default 0.8)\n"
            "  --val-cases N         labeled cases held out for validation besides the sizes\n"
            "                        (default 0: every model keeps its last checkpoint)\n"
            "  --jobs N              models trained at once, each on its own queue of the\n"
            "                        device (default 2; the same scores with any N)\n\n"
            "examples:\n"
            "  kdseg study --quick --out study-quick\n"
            "  kdseg demo --study --quick --seeds 4 --labeled-sizes 1,3 --out study-tiny\n");
}

/* "a,b,c" into out[0..max): returns the count, or -1 after printing an error. */
static int int_list(const char *opt, const char *v, int lo, int hi, int *out, int max) {
    int n = 0;
    const char *p = v;
    while (p && *p) {
        char buf[32];
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == max || len == 0 || len >= sizeof buf) {
            fprintf(stderr, "kdseg study: %s '%s': expected up to %d numbers separated by commas\n", opt, v, max);
            return -1;
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        if (kd_cli_int("study", opt, buf, lo, hi, &out[n])) return -1;
        n++;
        p = comma ? comma + 1 : NULL;
    }
    if (!n) fprintf(stderr, "kdseg study: %s needs at least one number\n", opt);
    return n ? n : -1;
}

static int run(int argc, char **argv) {
    kd_study_opts o;
    kd_study_opts_default(&o);
    for (int i = 1; i < argc; i++)
        if (kd_cli_flag(argv, i, "--quick")) kd_study_opts_quick(&o);
    for (int i = 1; i < argc; i++) {
        const char *v;
        int n, seeds[KD_STUDY_MAX_SEEDS];
        if (kd_cli_flag(argv, i, "--quick")) continue;
        else if (kd_cli_opt(argc, argv, &i, "--out", &v) && v) o.exp.out = v;
        else if (kd_cli_opt(argc, argv, &i, "--labeled-sizes", &v)) {
            if ((o.nlabeled = int_list("--labeled-sizes", v, 1, 999, o.labeled, KD_STUDY_MAX_SIZES)) < 0) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pool-sizes", &v)) {
            if ((o.npool = int_list("--pool-sizes", v, 0, 1000, o.pool, KD_STUDY_MAX_SIZES)) < 0) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--seeds", &v)) {
            if ((o.nseeds = int_list("--seeds", v, 0, 1000000, seeds, KD_STUDY_MAX_SEEDS)) < 0) return 2;
            for (int k = 0; k < o.nseeds; k++) o.seeds[k] = (uint64_t)seeds[k];
        } else if (kd_cli_opt(argc, argv, &i, "--base", &v)) {
            if (kd_cli_int("study", "--base", v, 1, 999, &o.base)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--test", &v)) {
            if (kd_cli_int("study", "--test", v, 1, 1000, &o.exp.test)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--size", &v)) {
            if (kd_cli_int("study", "--size", v, 16, 512, &o.exp.size)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_int("study", "--patch", v, 8, 512, &o.exp.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--teacher-steps", &v)) {
            if (kd_cli_int("study", "--teacher-steps", v, 1, 10000000, &n)) return 2;
            o.exp.teacher_steps = n;
        } else if (kd_cli_opt(argc, argv, &i, "--student-steps", &v)) {
            if (kd_cli_int("study", "--student-steps", v, 1, 10000000, &n)) return 2;
            o.exp.student_steps = n;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-ratio", &v)) {
            if (kd_cli_float("study", "--pseudo-ratio", v, 0, 1, &o.exp.pseudo_ratio)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--val-cases", &v)) {
            if (kd_cli_int("study", "--val-cases", v, 0, 100, &o.exp.val_cases)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--jobs", &v)) {
            if (kd_cli_int("study", "--jobs", v, 1, KD_EXPERIMENT_MAX_JOBS, &o.exp.jobs)) return 2;
        } else {
            return kd_cli_unknown("study", argv[i]);
        }
    }
    if (o.exp.patch > o.exp.size) {
        fprintf(stderr, "kdseg study: --patch %d is larger than the volume (--size %d)\n", o.exp.patch,
                o.exp.size);
        return 2;
    }
    kd_device *dev = kd_cli_open_device("study");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    o.exp.progress = kd_cli_progress;
    o.exp.stop = &kd_cli_stop;
    kd_study_result *r = NULL;
    kd_status s = kd_study_run(dev, &o, &r);
    if (!s) {
        kd_study_print(r, stdout);
        printf("wrote %s/study.csv, study.md, study.png (%.0f s in all)\n", o.exp.out, r->seconds);
    }
    kd_study_result_free(r);
    kd_device_free(dev);
    return s ? kd_cli_error("study", s) : 0;
}

const kd_command kd_cmd_study = {"study", "the data-amount study: student Dice against training cases", run,
                                 help};
