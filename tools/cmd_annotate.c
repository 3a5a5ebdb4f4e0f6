/* kdseg annotate: the teacher ensemble labels the unlabeled cases. */
#include "cli.h"
#include "segment_args.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg annotate --teacher T1.kds [--teacher T2.kds ...] --dataset DIR\n"
            "                      --out ANN_DIR [--soft] [--tta none|4|8] [--all] [options]\n\n"
            "Inference of every teacher over the whole case (sliding windows of the training\n"
            "patch unless --tile says otherwise; with flips), region probabilities\n"
            "averaged, written per unlabeled case on its original grid as ANN_DIR/CASE.nii.gz:\n"
            "a hard label map in the dataset's convention (the paper's way), or with --soft\n"
            "uint8-quantised WT/TC/ET probabilities (4-D). ANN_DIR then serves as\n"
            "--annotations for kdseg train / distill. Resumable: cases already written are\n"
            "skipped. With several teachers, ANN_DIR/agreement.csv holds the mean pairwise\n"
            "Dice between teachers per case (low agreement = untrustworthy pseudo-labels).\n"
            "--all also annotates labeled cases. Other options as kdseg segment.\n\n"
            "  --teacher FILE        a teacher's checkpoint (also --checkpoint; --model is the\n"
            "                        old spelling); repeat for the ensemble\n\n"
            "examples:\n"
            "  kdseg annotate --teacher run1/best.kds --teacher phantom-run/best.kds \\\n"
            "      --dataset unlabeled --out ann\n"
            "  kdseg annotate --teacher run1/best.kds --dataset unlabeled --out ann-soft --soft --tta 4\n");
}

static int run(int argc, char **argv) {
    kd_segment_args a;
    int r = kd_segment_args_parse("annotate", argc, argv, &a);
    if (r) return r;
    if (!a.ann.out || !a.ann.dataset || a.ann.e.nmodels == 0) {
        fprintf(stderr, "kdseg annotate: --teacher, --dataset and --out are required\n");
        return 2;
    }
    kd_device *dev = kd_cli_open_device("annotate");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    kd_status s = kd_annotate(dev, &a.ann, NULL);
    kd_device_free(dev);
    return s ? kd_cli_error("annotate", s) : 0;
}

const kd_command kd_cmd_annotate = {"annotate", "annotate unlabeled cases with a teacher ensemble",
                                    run, help};
