/* kdseg train: train a model on a dataset folder or a generated phantom cohort. */
#include <stdio.h>

#include "cli.h"
#include "train_args.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg train (--data DIR | --synthetic) --out DIR [options]\n\n"
            "Trains a model on patches, validating on held-out cases, keeping last.kds and\n"
            "best.kds checkpoints, a CSV log of every step (train.csv) and a PNG of the curves.\n"
            "Ctrl-C saves last.kds and stops; --resume continues exactly.\n\n");
    kd_train_args_help(f);
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
    if (!a.o.data == !a.synthetic) {
        fprintf(stderr, "kdseg train: give exactly one of --data DIR and --synthetic\n");
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
