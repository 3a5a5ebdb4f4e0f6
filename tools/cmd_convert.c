/* kdseg convert: a dataset in another layout (BraTS 2018-21, BraTS 2023, MSD, nnU-Net). */
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg convert --dataset DIR --to LAYOUT --out DIR [--layout L]\n"
            "                     [--channels LIST]\n\n"
            "Writes the dataset again in another layout, with the same case names: images\n"
            "unchanged (voxels, datatype, geometry), labels translated to the target's values.\n\n"
            "  --to LAYOUT       brats2018 (= brats2019..2021: CASE/CASE_t1.nii.gz, labels 1 core,\n"
            "                    2 edema, 4 enhancing), brats2023 (CASE/CASE-t1n.nii.gz, 1, 2, 3),\n"
            "                    msd (Decathlon Task01: imagesTr/CASE.nii.gz 4-D FLAIR,T1w,T1gd,\n"
            "                    T2w, labels 1 edema, 2 core, 3 enhancing, dataset.json) or nnunet\n"
            "                    (nnU-Net v2 raw: imagesTr/CASE_0000..0003.nii.gz = T1, T1ce, T2,\n"
            "                    FLAIR, labelsTr/, region-based dataset.json as nnU-Net's BraTS\n"
            "                    conversion writes it)\n"
            "  --out DIR         the new dataset; must not exist (or be empty). Written under a\n"
            "                    temporary name and renamed when whole\n"
            "  --layout L        the source's layout (default auto: detected)\n"
            "  --channels LIST   an nnU-Net source without dataset.json: the modality of each\n"
            "                    channel file (e.g. t1,t1ce,t2,flair)\n\n"
            "Cases without labels, and those of an imagesTs/ folder, go to imagesTs/.\n\n"
            "examples:\n"
            "  kdseg convert --dataset BraTS2021_Training --to nnunet --out Dataset137_BraTS2021\n"
            "  kdseg convert --dataset Dataset137_BraTS2021 --to brats2023 --out brats23\n");
}

static void progress(void *user, int done, int total, const char *name) {
    (void)user;
    (void)name;
    if (done < total && (done % 10 == 0 || kd_log_is_tty())) kd_log_progress("%d/%d cases", done, total);
}

static int run(int argc, char **argv) {
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    kd_convert_opts co;
    memset(&co, 0, sizeof co);
    co.progress = progress;
    const char *src = NULL, *out = NULL, *v;
    for (int i = 1; i < argc; i++) {
        kd_status s = KD_OK;
        if (kd_cli_opt(argc, argv, &i, "--dataset", &v)) src = v;
        else if (kd_cli_opt(argc, argv, &i, "--out", &v)) out = v;
        else if (kd_cli_opt(argc, argv, &i, "--channels", &v)) o.channels = v;
        else if (kd_cli_opt(argc, argv, &i, "--layout", &v)) s = kd_layout_parse(v, &o.layout);
        else if (kd_cli_opt(argc, argv, &i, "--to", &v)) {
            s = kd_layout_parse(v, &co.to);
            if (!s && co.to == KD_LAYOUT_AUTO) {
                fprintf(stderr, "kdseg convert: --to expects brats2018, brats2023, msd or nnunet\n");
                return 2;
            }
        } else return kd_cli_unknown("convert", argv[i]);
        if (s) return kd_cli_error("convert", s);
        if (!v) return kd_cli_unknown("convert", argv[i]);
    }
    if (!src || !out || co.to == KD_LAYOUT_AUTO) {
        fprintf(stderr, "kdseg convert: --dataset DIR, --to LAYOUT and --out DIR are required\n");
        return 2;
    }
    kd_dataset *ds = NULL;
    kd_status s = kd_dataset_open(src, &o, &ds);
    if (!s) s = kd_dataset_convert(ds, out, &co);
    if (!s) {
        int n = kd_dataset_count(ds), lab = kd_dataset_labeled_count(ds);
        printf("converted %d case%s (%d labeled) from %s (%s) to %s (%s)\n", n, n == 1 ? "" : "s", lab, src,
               kd_layout_name(kd_dataset_layout(ds)), out, kd_layout_name(co.to));
    }
    kd_dataset_free(ds);
    return s ? kd_cli_error("convert", s) : 0;
}

const kd_command kd_cmd_convert = {"convert", "write a dataset in another layout (BraTS, MSD, nnU-Net)", run,
                                   help};
