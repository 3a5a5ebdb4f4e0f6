/* kdseg train: train a model on a dataset folder or a generated phantom cohort. */
#include <stdio.h>

#include "cli.h"
#include "train_args.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg train (--dataset DIR | --synthetic) --out DIR [options]\n"
            "       kdseg train --out DIR --resume [options]\n\n"
            "Trains a model on patches, validating on held-out cases, keeping last.kds and\n"
            "best.kds checkpoints, a CSV log of every step (train.csv) and a PNG of the curves.\n"
            "Ctrl-C saves last.kds and stops; --resume continues exactly. A folder that holds\n"
            "an earlier run's checkpoints is refused unless --resume or --overwrite.\n\n");
    kd_train_args_help(f);
    fprintf(f,
            "\nexamples:\n"
            "  kdseg train --dataset BraTS2021_Training --out run1 --arch resunet:widths=8,16,32 \\\n"
            "      --patch 32 --steps 30\n"
            "  kdseg train --out run1 --resume --steps 60\n"
            "  kdseg train --synthetic --cases 4 --size 48 --out phantom-run --patch 32 --steps 20\n");
}

static int run(int argc, char **argv) {
    kd_train_args a;
    if (kd_train_args_init("train", argc, argv, &a)) return 2;
    for (int i = 1; i < argc; i++) {
        int r = kd_train_args_parse_one("train", argc, argv, &i, &a);
        if (r == 0) return kd_cli_unknown("train", argv[i]);
        if (r == 2) return 2;
    }
    kd_train_args_finish(&a);
    if (!a.o.out) {
        fprintf(stderr, "kdseg train: --out DIR is required\n");
        return 2;
    }
    if (a.o.data && a.synthetic) {
        fprintf(stderr, "kdseg train: give one of --dataset DIR and --synthetic, not both\n");
        return 2;
    }
    if (!a.o.data && !a.synthetic && !a.o.resume) {
        fprintf(stderr, "kdseg train: give --dataset DIR or --synthetic (or --resume)\n");
        return 2;
    }
    kd_device *dev = kd_cli_open_device("train");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    kd_status st = kd_train(dev, &a.o, NULL);
    kd_device_free(dev);
    return st ? kd_cli_error("train", st) : 0;
}

const kd_command kd_cmd_train = {"train", "train a model (student or teacher) on patches", run,
                                 help};
