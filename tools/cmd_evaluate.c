/* kdseg evaluate: BraTS metrics of a folder of predicted label maps against references. */
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg evaluate --pred DIR --dataset DIR [--csv OUT.csv]\n"
            "                      [--labels auto|2019|2023|msd] [--allow-missing]\n"
            "                      [--empty-hd95 MM] [--lesion-wise [--challenge NAME]\n"
            "                      [--lesion-dilation N] [--lesion-min-mm3 V]]\n\n"
            "Pairs every reference case with the prediction DIR/CASE.nii.gz and computes, per\n"
            "region (WT, TC, ET): Dice, HD95 (mm), sensitivity, specificity and volumes, as the\n"
            "BraTS evaluation does. Prints mean, std, median, 25th and 75th percentile per\n"
            "metric and region; --csv writes one row per case.\n\n"
            "  --pred DIR        the predictions, DIR/CASE.nii.gz (kdseg segment's --out)\n"
            "  --dataset DIR     the references: a BraTS dataset (CASE/CASE_seg.nii.gz or\n"
            "                    CASE/CASE-seg.nii.gz), a Decathlon folder (labelsTr/), an\n"
            "                    nnU-Net dataset (labelsTr/) or labels folder (labelsTs/), or a\n"
            "                    folder of CASE.nii.gz label maps\n"
            "  --labels auto|2019|2023|msd  label convention of predictions and references;\n"
            "                    auto (default): references by layout (an nnU-Net dataset's by\n"
            "                    its dataset.json, which then reads its predictions too),\n"
            "                    predictions by their values (4: 2019, 3: 2023)\n"
            "  --allow-missing   score a missing or mismatched prediction as empty instead of\n"
            "                    failing\n"
            "  --empty-hd95 MM   HD95 when exactly one of prediction and reference is empty\n"
            "                    (default 374, as BraTS 2023)\n"
            "  --lesion-wise     also the BraTS 2023+ lesion-wise Dice and HD95 per region, as\n"
            "                    the challenge's evaluation computes them: GT lesions are\n"
            "                    26-connected components, joined where their dilations touch;\n"
            "                    each is matched with the predicted components within its\n"
            "                    dilation; lesions of at most the volume threshold are left\n"
            "                    out; each unmatched predicted component counts as Dice 0,\n"
            "                    HD95 374 (HD95 here: surface elements weighted by area, the\n"
            "                    larger of the two directed 95th percentiles)\n"
            "  --challenge NAME  the challenge's parameters: gli, ssa, ped (dilation 3,\n"
            "                    50 mm^3; default), men (1, 50 mm^3), met (1, 2 mm^3)\n"
            "  --lesion-dilation N, --lesion-min-mm3 V   set them one by one\n\n"
            "examples:\n"
            "  kdseg evaluate --pred seg-ensemble --dataset BraTS2021_Training --csv metrics.csv\n"
            "  kdseg evaluate --pred seg-ensemble --dataset BraTS2021_Training --lesion-wise\n\n"
            "HD95: surfaces are the masks minus their 6-neighbour erosion; exact Euclidean\n"
            "distances with the header's voxel spacing, both directions pooled, 95th percentile\n"
            "(linear). Both empty: Dice 1, HD95 0; one empty: Dice 0, HD95 --empty-hd95.\n");
}

static int run(int argc, char **argv) {
    kd_eval_options o;
    kd_eval_options_default(&o);
    const char *csv = NULL, *val;
    for (int i = 1; i < argc; i++) {
        if (kd_cli_opt(argc, argv, &i, "--pred", &val))
            o.pred_dir = val;
        else if (kd_cli_opt(argc, argv, &i, "--dataset", &val) ||
                 kd_cli_old_opt("evaluate", argc, argv, &i, "--ref", "--dataset", &val))
            o.ref = val;
        else if (kd_cli_opt(argc, argv, &i, "--csv", &val))
            csv = val;
        else if (kd_cli_opt(argc, argv, &i, "--labels", &val)) {
            kd_status s = kd_label_convention_parse(val, &o.labels);
            if (s) return kd_cli_error("evaluate", s);
        } else if (kd_cli_opt(argc, argv, &i, "--empty-hd95", &val)) {
            if (kd_cli_float("evaluate", "--empty-hd95", val, 0, 1e6, &o.empty_hd95)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--challenge", &val)) {
            kd_status s = kd_lesion_options_preset(val, &o.lesion);
            if (s) return kd_cli_error("evaluate", s);
            o.lesion_wise = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--lesion-dilation", &val)) {
            if (kd_cli_int("evaluate", "--lesion-dilation", val, 0, 64, &o.lesion.dilation))
                return 2;
            o.lesion_wise = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--lesion-min-mm3", &val)) {
            if (kd_cli_float("evaluate", "--lesion-min-mm3", val, 0, 1e9, &o.lesion.min_volume_mm3))
                return 2;
            o.lesion_wise = 1;
        } else if (kd_cli_flag(argv, i, "--lesion-wise"))
            o.lesion_wise = 1;
        else if (kd_cli_flag(argv, i, "--allow-missing"))
            o.allow_missing = 1;
        else
            return kd_cli_unknown("evaluate", argv[i]);
    }
    if (!o.pred_dir || !o.ref || (csv && !*csv)) {
        fprintf(stderr, "kdseg evaluate: --pred DIR and --dataset DIR are required\n");
        return 2;
    }
    kd_eval_result *r = NULL;
    kd_status s = kd_evaluate(&o, &r);
    if (s) return kd_cli_error("evaluate", s);
    int missing = 0;
    for (int i = 0; i < r->n_cases; i++)
        missing += r->cases[i].status != KD_EVAL_OK;
    printf("%d cases%s", r->n_cases, missing ? "" : "\n");
    if (missing) printf(", %d without a usable prediction (scored as empty)\n", missing);
    kd_eval_print_table(r, stdout);
    if (csv && (s = kd_eval_write_csv(r, csv))) {
        kd_eval_result_free(r);
        return kd_cli_error("evaluate", s);
    }
    if (csv) printf("per-case metrics: %s\n", csv);
    kd_eval_result_free(r);
    return 0;
}

const kd_command kd_cmd_evaluate = {"evaluate", "BraTS metrics of predictions against references",
                                    run, help};
