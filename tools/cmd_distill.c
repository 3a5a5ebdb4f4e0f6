/* kdseg distill: the student learns from labeled cases plus the teacher ensemble's
 * annotations (offline, the paper) or its live predictions (online). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "train_args.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg distill --dataset LABELED --out DIR [--unlabeled DIR]\n"
            "                     (--annotations ANN_DIR | --online --teacher T.kds ...) [options]\n\n"
            "Offline (the paper): the student trains on the labeled cases plus the unlabeled\n"
            "cases labeled by ANN_DIR (from kdseg annotate).\n"
            "Online: no files in between; the device scheduler runs the teacher ensemble on\n"
            "each augmented unlabeled patch and the student learns from the ensemble's soft\n"
            "probabilities on that same patch, mixed with labeled patches.\n\n"
            "  --unlabeled DIR       the unlabeled pool (default: the unlabeled cases of --dataset)\n"
            "  --pseudo-ratio X      share of steps drawn from pseudo-labeled/unlabeled cases\n"
            "                        (default 0.5)\n"
            "  --pseudo-weight W     weight of the loss on those steps (default 1)\n"
            "  --min-agreement X     offline: use only annotated cases whose teachers agree\n"
            "                        (mean pairwise Dice in ANN_DIR/agreement.csv) >= X\n"
            "  --pseudo-loss L       offline: loss on annotated cases (default paper)\n"
            "  --online              online distillation (needs --teacher)\n"
            "  --teacher T.kds       a teacher checkpoint (repeat for an ensemble)\n"
            "  --distill-loss L      online: loss against the soft targets: bce (default), mse,\n"
            "                        paper\n\n");
    kd_train_args_help(f);
    fprintf(f,
            "\nexamples:\n"
            "  kdseg distill --dataset BraTS2021_Training --unlabeled unlabeled --annotations ann \\\n"
            "      --out student --arch resunet:widths=8,16,32 --patch 32 --steps 30\n"
            "  kdseg distill --dataset BraTS2021_Training --unlabeled unlabeled --online \\\n"
            "      --teacher run1/best.kds --teacher phantom-run/best.kds --out student-online \\\n"
            "      --arch resunet:widths=8,16,32 --patch 32 --steps 20\n");
}

static int run(int argc, char **argv) {
    kd_train_args a;
    if (kd_train_args_init("distill", argc, argv, &a)) return 2;
    kd_distill_opts d;
    kd_distill_opts_default(&d);
    const char *teachers[KD_ENSEMBLE_MAX];
    int online = 0, r;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((r = kd_train_args_parse_one("distill", argc, argv, &i, &a)) == 1) continue;
        if (r == 2) return 2;
        kd_status s = KD_OK;
        if (kd_cli_opt(argc, argv, &i, "--unlabeled", &v)) d.unlabeled = v;
        else if (kd_cli_opt(argc, argv, &i, "--teacher", &v)) {
            if (!v || d.nteachers == KD_ENSEMBLE_MAX) return kd_cli_unknown("distill", "--teacher");
            teachers[d.nteachers++] = v;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-loss", &v)) s = kd_loss_parse(v ? v : "", &d.pseudo_loss);
        else if (kd_cli_opt(argc, argv, &i, "--distill-loss", &v)) s = kd_loss_parse(v ? v : "", &d.distill_loss);
        else if (kd_cli_opt(argc, argv, &i, "--pseudo-ratio", &v)) {
            if (kd_cli_float("distill", "--pseudo-ratio", v, 0, 1, &d.pseudo_ratio)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-weight", &v) ||
                   kd_cli_opt(argc, argv, &i, "--distill-weight", &v)) {
            if (kd_cli_float("distill", "--pseudo-weight", v, 0, 100, &d.pseudo_weight)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--min-agreement", &v)) {
            if (kd_cli_float("distill", "--min-agreement", v, 0, 1, &d.min_agreement)) return 2;
        } else if (kd_cli_flag(argv, i, "--online")) online = 1;
        else return kd_cli_unknown("distill", argv[i]);
        if (s) return kd_cli_error("distill", s);
    }
    kd_train_args_finish(&a);
    if (!a.o.out || (!a.o.data && !a.synthetic && !a.o.resume) || (a.o.data && a.synthetic)) {
        fprintf(stderr, "kdseg distill: --out and one of --dataset and --synthetic (or --resume) are "
                        "required\n");
        return 2;
    }
    if (online ? d.nteachers == 0 : !a.o.annotations) {
        fprintf(stderr, "kdseg distill: offline needs --annotations ANN_DIR; --online needs "
                        "--teacher\n");
        return 2;
    }
    d.train = a.o;
    d.annotations = online ? NULL : a.o.annotations;
    d.train.annotations = NULL;
    d.teachers = teachers;
    if (!online) d.nteachers = 0;
    kd_device *dev = kd_cli_open_device("distill");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    kd_status st = kd_distill(dev, &d, NULL);
    kd_device_free(dev);
    return st ? kd_cli_error("distill", st) : 0;
}

const kd_command kd_cmd_distill = {"distill", "train the student from labeled + teacher-labeled cases",
                                   run, help};
