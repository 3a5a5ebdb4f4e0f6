/* kdseg phantom: write a synthetic cohort in a real dataset layout. */
#include <string.h>
#include <time.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg phantom --out DIR [--cases N] [--size N|D,H,W] [--seed S] [--no-labels]\n"
            "                     [--layout brats2018|brats2023|msd|nnunet] [--first I]\n\n"
            "Writes N synthetic brain-tumour cases: four int16 modalities (t1, t1ce, t2, flair)\n"
            "with labels (BraTS 2018-21: 1 necrosis/non-enhancing core, 2 edema, 4 enhancing;\n"
            "BraTS 2023: 1, 2, 3; MSD and nnU-Net: 1 edema, 2 non-enhancing, 3 enhancing), 1 mm\n"
            "spacing, LPS affine, gzip NIfTI-1. Deterministic in the seed and the case number.\n\n"
            "  --out DIR        cohort folder (created)\n"
            "  --cases N        number of cases (default 8)\n"
            "  --size N|D,H,W   grid: one number for a cube, or D,H,W (default 96)\n"
            "  --seed S         random seed (default 1)\n"
            "  --no-labels      write no label files (unlabeled cases)\n"
            "  --layout L       brats2018 (default; also brats2019..brats2021, the same\n"
            "                   files), brats2023, msd or nnunet\n"
            "  --first I        number the cases from I (to extend a cohort; default 0)\n\n"
            "examples:\n"
            "  kdseg phantom --out cohort --cases 4 --size 48\n"
            "  kdseg phantom --out cohort --cases 2 --first 4 --size 48 --no-labels\n"
            "  kdseg phantom --out cohort-nnunet --cases 2 --size 48,56,40 --layout nnunet\n");
}

static int run(int argc, char **argv) {
    kd_phantom_opts o;
    memset(&o, 0, sizeof o);
    o.cases = 8;
    o.size[0] = o.size[1] = o.size[2] = 96;
    o.seed = 1;
    o.layout = KD_LAYOUT_BRATS2018;
    const char *out = NULL, *v;
    for (int i = 1; i < argc; i++) {
        int seed;
        if (kd_cli_opt(argc, argv, &i, "--out", &v)) {
            if (!v) return kd_cli_unknown("phantom", argv[i]);
            out = v;
        } else if (kd_cli_opt(argc, argv, &i, "--cases", &v)) {
            if (kd_cli_int("phantom", "--cases", v, 1, 100000, &o.cases)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--first", &v)) {
            if (kd_cli_int("phantom", "--first", v, 0, 1000000, &o.first_index)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--size", &v)) {
            if (kd_cli_dims3("phantom", "--size", v, 16, 1024, o.size)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--seed", &v)) {
            if (kd_cli_int("phantom", "--seed", v, 0, 2147483647, &seed)) return 2;
            o.seed = (uint64_t)seed;
        } else if (kd_cli_opt(argc, argv, &i, "--layout", &v)) {
            kd_status s = kd_layout_parse(v, &o.layout);
            if (s || o.layout == KD_LAYOUT_AUTO) {
                fprintf(stderr, "kdseg phantom: --layout expects brats2018, brats2023, msd or nnunet\n");
                return 2;
            }
        } else if (kd_cli_flag(argv, i, "--no-labels") ||
                   kd_cli_old_flag("phantom", argv, i, "--unlabeled", "--no-labels")) {
            o.unlabeled = 1;
        } else {
            return kd_cli_unknown("phantom", argv[i]);
        }
    }
    if (!out) {
        fprintf(stderr, "kdseg phantom: --out DIR is required\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kd_status s = kd_phantom_write_cohort(out, &o);
    if (s) return kd_cli_error("phantom", s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    printf("wrote %d %s%s cases of %dx%dx%d to %s in %.2f s (%.3f s per case)\n", o.cases,
           o.unlabeled ? "unlabeled " : "", kd_layout_name(o.layout), o.size[0], o.size[1],
           o.size[2], out, sec, sec / o.cases);
    return 0;
}

const kd_command kd_cmd_phantom = {"phantom", "write a synthetic brain-tumour cohort", run, help};
