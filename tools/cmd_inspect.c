/* kdseg inspect: headers, preprocessing and labels of one case; optional PNG montage. */
#include <string.h>
#include <time.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f, "usage: kdseg inspect --case PATH [--png [FILE.png]] [--layout L]\n"
               "                     [--modalities LIST] [--channels LIST] [--annotations DIR] [--model M.kds]\n\n"
               "PATH is a BraTS case folder (CASE/CASE_t1.nii.gz or CASE/CASE-t1n.nii.gz), an\n"
               "MSD image file (imagesTr/NAME.nii.gz, labels from ../labelsTr) or a channel file\n"
               "of an nnU-Net case (imagesTr/NAME_0000.nii.gz, labels from ../labelsTr). Prints per\n"
               "modality the file's dims, spacing, orientation, datatype, qform/sform, intensity\n"
               "range; the crop box, padding and z-score statistics of the preprocessing; and\n"
               "the region volumes (WT, TC, ET) when the case has labels.\n\n"
               "  --png [FILE.png]   also write axial, coronal and sagittal slices through the\n"
               "                     tumour (or the centre) of every modality with the label\n"
               "                     overlay, to FILE.png (default CASE.png here), as segment\n"
               "                     --png draws predictions\n"
               "  --layout L         auto|brats2018|brats2023|msd|nnunet (default auto)\n"
               "  --channels LIST    nnU-Net without dataset.json: modality of each channel file\n"
               "  --modalities LIST  subset and order, e.g. t1ce,flair\n"
               "  --annotations DIR  labels for an unlabeled case (DIR/CASE.nii.gz)\n"
               "  --model M.kds      compare the case with what the model was trained on (its\n"
               "                     checkpoint's domain record: kind, layout, modalities,\n"
               "                     voxel size, brain volume, intensity percentiles) and say\n"
               "                     whether kdseg segment would warn; the modalities default\n"
               "                     to the model's\n\n"
               "examples:\n"
               "  kdseg inspect --case cohort/KDPhantom_000 --png\n"
               "  kdseg inspect --case cohort-nnunet/imagesTr/KDPH_001_0000.nii.gz --png case1.png\n");
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static kd_status print_headers(const kd_dataset *ds) {
    for (int ch = 0; ch < kd_dataset_channels(ds); ch++) {
        int vol = 0;
        const char *path = kd_dataset_case_image(ds, 0, ch, &vol);
        kd_volume *v;
        kd_status s = kd_nifti_read_header(path, &v);
        if (s) return s;
        const kd_nifti_info *in = &v->info;
        printf("%-6s %s", kd_modality_name(kd_dataset_modality(ds, ch)), path);
        if (v->nt > 1) printf(" [volume %d of %d]", vol, v->nt);
        printf("\n       NIfTI-%d %s, dims %d x %d x %d%s, spacing %.3g x %.3g x %.3g mm, "
               "orientation %s\n",
               in->version, in->datatype_name, v->nx, v->ny, v->nz, v->nt > 1 ? " x T" : "",
               in->pixdim[0], in->pixdim[1], in->pixdim[2], in->orient);
        printf("       qform_code %d, sform_code %d, scl_slope %g, scl_inter %g, %lld bytes\n",
               in->qform_code, in->sform_code, in->scl_slope, in->scl_inter,
               (long long)in->file_bytes);
        if (ch == 0)
            for (int r = 0; r < 3; r++)
                printf("       affine [%8.3f %8.3f %8.3f %9.3f]\n", in->affine[r][0],
                       in->affine[r][1], in->affine[r][2], in->affine[r][3]);
        kd_volume_free(v);
    }
    return KD_OK;
}

static void print_case(const kd_dataset *ds, const kd_case *c, double sec) {
    printf("loaded and preprocessed in %.2f s%s\n", sec, c->from_cache ? " (from cache)" : "");
    printf("original grid (D,H,W) %d x %d x %d\n", c->orig[0], c->orig[1], c->orig[2]);
    printf("crop box (D,H,W) [%d,%d) x [%d,%d) x [%d,%d) = %d x %d x %d (k,j,i of the file)\n",
           c->crop_lo[0], c->crop_hi[0], c->crop_lo[1], c->crop_hi[1], c->crop_lo[2], c->crop_hi[2],
           c->crop_hi[0] - c->crop_lo[0], c->crop_hi[1] - c->crop_lo[1],
           c->crop_hi[2] - c->crop_lo[2]);
    printf("preprocessed grid %d x %d x %d (multiple of 16), crop starts at %d,%d,%d\n", c->d, c->h,
           c->w, c->pad_lo[0], c->pad_lo[1], c->pad_lo[2]);
    printf("%-6s %12s %12s %12s %12s %12s\n", "", "min", "max", "nonzero", "mean", "std");
    for (int ch = 0; ch < c->channels; ch++)
        printf("%-6s %12.4g %12.4g %12lld %12.4g %12.4g\n",
               kd_modality_name(kd_dataset_modality(ds, ch)), c->raw_min[ch], c->raw_max[ch],
               (long long)c->nonzero[ch], c->mean[ch], c->std[ch]);
    if (!c->target) {
        printf("labels: none (unlabeled)\n");
        return;
    }
    printf("labels: %s (%s)\n", kd_dataset_case_label(ds, 0),
           c->labeled == 2 ? "annotation" : "own label file");
    const double *px = c->geom->info.pixdim;
    double ml = px[0] * px[1] * px[2] / 1000.0;
    size_t n = (size_t)c->d * c->h * c->w;
    static const char *rn[3] = {"WT", "TC", "ET"};
    for (int r = 0; r < 3; r++) {
        size_t k = 0;
        double soft = 0;
        for (size_t i = 0; i < n; i++) {
            k += c->target[r * n + i] > 0.5f;
            soft += c->target[r * n + i];
        }
        printf("  %s %9zu voxels  %8.2f mL  (soft sum %.0f)\n", rn[r], k, k * ml, soft);
    }
    if (c->tumour_hi[0] > c->tumour_lo[0])
        printf("  tumour bbox on the preprocessed grid [%d,%d) x [%d,%d) x [%d,%d)\n",
               c->tumour_lo[0], c->tumour_hi[0], c->tumour_lo[1], c->tumour_hi[1], c->tumour_lo[2],
               c->tumour_hi[2]);
}

/* The model's domain record beside the case's, and the verdict segment would give. */
static kd_status print_domain(const char *model, const kd_ckpt_meta *m, const kd_dataset *ds, const kd_case *c) {
    const kd_domain *md = &m->domain;
    kd_domain cd;
    kd_status s = kd_case_domain(ds, c, &cd);
    if (s) return s;
    printf("domain: %s (recipe %s) against this case\n", model, m->recipe[0] ? m->recipe : "none");
    if (!md->cases) {
        printf("  the checkpoint records no training domain (written before domain records)\n");
        return KD_OK;
    }
    printf("  %-22s %-24s %s\n", "", "trained on", "this case");
    printf("  %-22s %-24s %s\n", "kind", md->kind, cd.kind);
    printf("  %-22s %-24s %s\n", "layout", md->layout, cd.layout);
    printf("  %-22s %-24s %s\n", "modalities", md->modalities, cd.modalities);
    char a[64], b[64];
    snprintf(a, sizeof a, "%d", md->cases);
    printf("  %-22s %-24s %s\n", "cases", a, "1");
    snprintf(a, sizeof a, "%.3gx%.3gx%.3g", md->spacing[0], md->spacing[1], md->spacing[2]);
    snprintf(b, sizeof b, "%.3gx%.3gx%.3g", cd.spacing[0], cd.spacing[1], cd.spacing[2]);
    printf("  %-22s %-24s %s\n", "voxel (mm)", a, b);
    snprintf(a, sizeof a, "%.0f-%.0f", md->brain_ml[0], md->brain_ml[1]);
    snprintf(b, sizeof b, "%.0f", cd.brain_ml[0]);
    printf("  %-22s %-24s %s\n", "brain (mL)", a, b);
    for (int ch = 0; ch < cd.channels && ch < md->channels; ch++) {
        char k[64];
        snprintf(k, sizeof k, "%s p1/p50/p99", kd_modality_name(kd_dataset_modality(ds, ch)));
        snprintf(a, sizeof a, "%.2f / %.2f / %.2f", md->p01[ch], md->p50[ch], md->p99[ch]);
        snprintf(b, sizeof b, "%.2f / %.2f / %.2f", cd.p01[ch], cd.p50[ch], cd.p99[ch]);
        printf("  %-22s %-24s %s\n", k, a, b);
    }
    char why[768];
    if (kd_domain_compare(md, &cd, why, sizeof why))
        printf("  far from the training data: %s (kdseg segment warns)\n", why);
    else
        printf("  within what the model was trained on\n");
    return KD_OK;
}

static int run(int argc, char **argv) {
    const char *path = NULL, *png = NULL, *model = NULL, *v;
    int png_here = 0;
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    for (int i = 1; i < argc; i++) {
        if (kd_cli_flag(argv, i, "--png")) {
            /* a file name may follow: the next argument, when it is no option */
            png_here = 1;
            if (i + 1 < argc && argv[i + 1][0] != '-' && strlen(argv[i + 1]) > 4 &&
                !strcmp(argv[i + 1] + strlen(argv[i + 1]) - 4, ".png"))
                png = argv[++i];
        } else if (!strncmp(argv[i], "--png=", 6)) {
            png_here = 1;
            png = argv[i] + 6;
        } else if (kd_cli_opt(argc, argv, &i, "--case", &v)) {
            if (!v) return kd_cli_unknown("inspect", "--case");
            path = v;
        } else if (kd_cli_opt(argc, argv, &i, "--layout", &v)) {
            kd_status s = kd_layout_parse(v, &o.layout);
            if (s) return kd_cli_error("inspect", s);
        } else if (kd_cli_opt(argc, argv, &i, "--modalities", &v)) {
            o.modalities = v;
        } else if (kd_cli_opt(argc, argv, &i, "--channels", &v)) {
            o.channels = v;
        } else if (kd_cli_opt(argc, argv, &i, "--annotations", &v)) {
            o.annotations = v;
        } else if (kd_cli_opt(argc, argv, &i, "--model", &v)) {
            if (!v) return kd_cli_unknown("inspect", "--model");
            model = v;
        } else if (argv[i][0] != '-' && !path) {
            kd_cli_note_renamed("inspect", "CASE without --case", "--case CASE");
            path = argv[i];
        } else {
            return kd_cli_unknown("inspect", argv[i]);
        }
    }
    if (!path) {
        fprintf(stderr, "kdseg inspect: --case PATH (a case folder or file) is required\n");
        return 2;
    }
    kd_ckpt_meta meta;
    kd_status s = model ? kd_checkpoint_read_meta(model, &meta) : KD_OK;
    if (s) return kd_cli_error("inspect", s);
    if (model && !o.modalities && meta.domain.modalities[0]) o.modalities = meta.domain.modalities;
    kd_dataset *ds = NULL;
    kd_case *c = NULL;
    s = kd_dataset_open_case(path, &o, &ds);
    if (!s) {
        printf("case %s, layout %s, %s\n", kd_dataset_case_name(ds, 0),
               kd_layout_name(kd_dataset_layout(ds)),
               kd_dataset_case_labeled(ds, 0) ? "labeled" : "unlabeled");
        s = print_headers(ds);
    }
    double t0 = now();
    if (!s) s = kd_case_load(ds, 0, &c);
    if (!s) print_case(ds, c, now() - t0);
    if (!s && model) s = print_domain(model, &meta, ds, c);
    char here[300];
    if (!s && png_here && !png) {
        snprintf(here, sizeof here, "%s.png", kd_dataset_case_name(ds, 0));
        png = here;
    }
    if (!s && png) {
        kd_overlay_info info;
        kd_overlay_info_for_case(&info, ds, c, c->target ? "reference labels" : "unlabeled");
        s = kd_plot_overlay_write(png, c->image, c->channels, c->d, c->h, c->w, c->target, &info);
        if (!s) printf("wrote %s\n", png);
    }
    kd_case_free(c);
    kd_dataset_free(ds);
    return s ? kd_cli_error("inspect", s) : 0;
}

const kd_command kd_cmd_inspect = {"inspect", "print a case's headers, preprocessing and labels",
                                   run, help};
