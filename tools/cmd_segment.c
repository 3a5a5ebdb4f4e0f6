/* kdseg segment: label maps for cases, from one model or an ensemble. */
#include <stdio.h>

#include "cli.h"
#include "segment_args.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg segment --checkpoint A.kds [--checkpoint B.kds ...]\n"
            "                     (--case PATH | --dataset DIR) --out DIR [options]\n\n"
            "Writes OUT/CASE.nii.gz, a uint8 BraTS label map on the case's original grid and\n"
            "header (on an nnU-Net dataset: its own label values, named as nnU-Net names its\n"
            "predictions). Several --checkpoint are an ensemble: probabilities are averaged.\n\n"
            "  --checkpoint FILE     a trained model (kdseg train's OUT/best.kds); repeat for an\n"
            "                        ensemble (--model is the old spelling)\n"
            "  --case PATH           one case: a BraTS case folder, an MSD image or an nnU-Net\n"
            "                        channel file (as kdseg inspect --case)\n"
            "  --dataset DIR         every case of a dataset folder\n"
            "  --out DIR             the output folder (created)\n"
            "  --tta none|4|8        test-time flips: none, the paper's four (identity, flip x,\n"
            "                        flip y, both) or all eight mirrorings (default none)\n"
            "  --tile D,H,W|whole    sliding windows of this size; default: windows of the\n"
            "                        training patch stored in the checkpoints (the largest of an\n"
            "                        ensemble's), as nnU-Net infers; 'whole': the whole volume\n"
            "                        in one pass when the device has the memory\n"
            "  --overlap X           window overlap (default 0.5), Gaussian-weighted blending\n"
            "  --batch N             up to N windows and flips per forward pass, as device\n"
            "                        memory allows (default 1; results agree to ~1e-7)\n"
            "  --labels auto|2019|2023|msd  label values written (default auto: 2023 for a\n"
            "                        BraTS 2023 dataset, an nnU-Net dataset's own, else 2019)\n"
            "  --threshold X         region threshold (default 0.5)\n"
            "post-processing (default: the model's recipe, see kdseg train --help; a model\n"
            "without one: --brain-mask 0 --largest-component 0 --min-component 0.1 --et-min 32):\n"
            "  --brain-mask 0|1      no tumour where every modality is 0 (outside the brain)\n"
            "  --largest-component 0|1  keep only the largest tumour component\n"
            "  --min-component F     drop tumour components under F of the tumour (0 off)\n"
            "  --et-min N            ET of at most N voxels becomes core (-1 off)\n"
            "  --probabilities [u8|f32]  also write OUT/CASE_prob.nii.gz: a 4-D map whose\n"
            "                        volumes are p(WT), p(TC), p(ET) in that order (the\n"
            "                        header's intent_name and descrip say so); u8 (default):\n"
            "                        round(255 p) with scl_slope 1/255, so readers that apply\n"
            "                        the scaling (nibabel, ITK) get p in [0, 1]; f32: p itself\n"
            "  --png                 also write OUT/CASE.png: the case's modalities on three\n"
            "                        planes through the tumour's largest extent, the predicted\n"
            "                        regions in colour, plane and slice numbers, a legend\n"
            "  --member-out DIR      once per --checkpoint, in order: also write each model's own\n"
            "                        label map to its DIR, from the ensemble's passes\n"
            "  --layout L, --modalities LIST, --channels LIST   as for kdseg train\n\n"
            "examples:\n"
            "  kdseg segment --checkpoint run1/best.kds --case BraTS2021_Training/KDPhantom_000 \\\n"
            "      --out seg --png\n"
            "  kdseg segment --checkpoint run1/best.kds --checkpoint phantom-run/best.kds \\\n"
            "      --dataset BraTS2021_Training --out seg-ensemble --tta 4 --probabilities f32\n");
}

static int run(int argc, char **argv) {
    kd_segment_args a;
    int r = kd_segment_args_parse("segment", argc, argv, &a);
    if (r) return r;
    if (!a.seg.out || (!a.seg.case_dir == !a.seg.dataset) || a.seg.e.nmodels == 0) {
        fprintf(stderr, "kdseg segment: --checkpoint, one of --case/--dataset, and --out are required\n");
        return 2;
    }
    kd_device *dev = kd_cli_open_device("segment");
    if (!dev) return 1;
    kd_cli_install_stop_handler();
    kd_status s = kd_segment(dev, &a.seg);
    kd_device_free(dev);
    return s ? kd_cli_error("segment", s) : 0;
}

const kd_command kd_cmd_segment = {"segment", "segment cases with a model or an ensemble", run,
                                   help};
