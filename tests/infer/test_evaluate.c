/* Evaluation end to end: label maps written with libnifti into tiny reference and
 * prediction folders, scored by kd_evaluate, written as CSV; label map reading errors. */
#include <nifti/nifti2_io.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kdtest.h"

/* NIfTI grid (nx, ny, nz) = (W, H, D) */
enum { NX = 10, NY = 8, NZ = 6, NV = NX * NY * NZ };
#define VOX(x, y, z) (((size_t)(z)*NY + (y)) * NX + (x))

/* Writes a label map (nz, ny, nx) as `datatype` (uint8, int16 or float32) with pixdim
 * (px, py, pz) and scl_slope. Returns 0 on success. */
static int write_map(const char *path, const uint8_t *lab, int nx, int ny, int nz,
                     const double pix[3], int datatype, const float *fvals, double slope) {
    int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 1);
    if (!nim) return 1;
    nim->dx = nim->pixdim[1] = pix[0];
    nim->dy = nim->pixdim[2] = pix[1];
    nim->dz = nim->pixdim[3] = pix[2];
    nim->scl_slope = slope;
    size_t n = (size_t)nx * ny * nz;
    for (size_t i = 0; i < n; i++) {
        if (datatype == DT_UINT8)
            ((uint8_t *)nim->data)[i] = lab[i];
        else if (datatype == DT_INT16)
            ((int16_t *)nim->data)[i] = lab[i];
        else
            ((float *)nim->data)[i] = fvals ? fvals[i] : lab[i];
    }
    if (nifti_set_filenames(nim, path, 0, 1)) {
        nifti_image_free(nim);
        return 1;
    }
    nifti_image_write(nim);
    nifti_image_free(nim);
    return access(path, R_OK) != 0;
}

static const double pix_x2[3] = {2.0, 1.0, 1.0}; /* spacing x 2 mm: (sz, sy, sx) = (1, 1, 2) */

static char *pathf(char *buf, size_t n, const char *a, const char *b, const char *c) {
    snprintf(buf, n, "%s/%s%s", a, b, c);
    return buf;
}

/* A reference in the BraTS 2019 layout with two cases and predictions for both:
 *  caseA: a 2-1-4 tumour, predicted exactly;
 *  caseB: one label-4 voxel at x=1, predicted at x=4: every region 3 voxels * 2 mm apart. */
static int make_cohort(const char *root, const char *sep, uint8_t et) {
    char p[1024], q[1024];
    static uint8_t a[NV], b[NV], bp[NV];
    memset(a, 0, NV), memset(b, 0, NV), memset(bp, 0, NV);
    for (int z = 1; z < 5; z++)
        for (int y = 1; y < 7; y++)
            for (int x = 2; x < 8; x++)
                a[VOX(x, y, z)] = 2;
    for (int z = 2; z < 4; z++)
        for (int y = 3; y < 5; y++)
            for (int x = 3; x < 6; x++)
                a[VOX(x, y, z)] = x == 3 ? 1 : et;
    b[VOX(1, 3, 2)] = et;
    bp[VOX(4, 3, 2)] = et;
    snprintf(p, sizeof p, "%s/ref", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/pred", root);
    mkdir(p, 0755);
    const char *names[2] = {"caseA", "caseB"};
    const uint8_t *maps[2] = {a, b}, *preds[2] = {a, bp};
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/ref/%s", root, names[c]);
        mkdir(p, 0755);
        snprintf(q, sizeof q, "%s/%s%sseg.nii.gz", p, names[c], sep);
        if (write_map(q, maps[c], NX, NY, NZ, pix_x2, DT_UINT8, NULL, 0)) return 1;
        snprintf(q, sizeof q, "%s/pred/%s.nii.gz", root, names[c]);
        if (write_map(q, preds[c], NX, NY, NZ, pix_x2, DT_UINT8, NULL, 0)) return 1;
    }
    return 0;
}

static int check_case_b(const kd_eval_case *c) {
    for (int r = 0; r < 3; r++) {
        const kd_metrics *m = &c->region[r];
        KD_CHECK(m->dice == 0 && fabs(m->hd95 - 6.0) < 1e-12, "caseB %s: dice %g hd95 %g (6 mm)",
                 kd_region_name(r), m->dice, m->hd95);
        KD_CHECK(m->vol_pred == 1 && m->vol_ref == 1 && fabs(m->vol_ref_mm3 - 2.0) < 1e-12,
                 "caseB volumes %lld %lld %g", (long long)m->vol_pred, (long long)m->vol_ref,
                 m->vol_ref_mm3);
    }
    return 0;
}

/* Catches: cases not paired by name, spacing from the wrong header field or axis (3
 * voxels along x at 2 mm is 6 mm, along z it would be 3), CSV rows or columns wrong. */
static int evaluate_brats2019(void) {
    const char *root = kd_test_tmpdir();
    KD_CHECK(make_cohort(root, "_", 4) == 0, "writing the cohort");
    char ref[1024], pred[1024], csv[1024];
    kd_eval_options o;
    kd_eval_options_default(&o);
    o.ref = pathf(ref, sizeof ref, root, "/ref", "");
    o.pred_dir = pathf(pred, sizeof pred, root, "/pred", "");
    kd_eval_result *r = NULL;
    KD_CHECK_OK(kd_evaluate(&o, &r));
    KD_CHECK(r->n_cases == 2 && !strcmp(r->cases[0].name, "caseA") &&
                 !strcmp(r->cases[1].name, "caseB"),
             "cases %d", r->n_cases);
    for (int g = 0; g < 3; g++) {
        const kd_metrics *m = &r->cases[0].region[g];
        KD_CHECK(m->dice == 1 && m->hd95 == 0 && m->vol_pred > 0, "caseA %s dice %g hd %g",
                 kd_region_name(g), m->dice, m->hd95);
    }
    KD_CHECK(r->cases[0].region[0].vol_ref == 4 * 6 * 6 && r->cases[0].region[1].vol_ref == 12 &&
                 r->cases[0].region[2].vol_ref == 8,
             "caseA region volumes %lld %lld %lld", (long long)r->cases[0].region[0].vol_ref,
             (long long)r->cases[0].region[1].vol_ref, (long long)r->cases[0].region[2].vol_ref);
    if (check_case_b(&r->cases[1])) return 1;
    KD_CHECK_OK(kd_eval_write_csv(r, pathf(csv, sizeof csv, root, "/out.csv", "")));
    FILE *f = fopen(csv, "r");
    KD_CHECK(f != NULL, "csv written");
    char line[4096];
    KD_CHECK(fgets(line, sizeof line, f) && !strncmp(line, "case,status,Dice_WT,HD95_WT,", 28),
             "header: %s", line);
    KD_CHECK(strstr(line, ",VolRef_mm3_ET\n") != NULL, "header ends with ET volume: %s", line);
    KD_CHECK(fgets(line, sizeof line, f) && !strncmp(line, "caseA,ok,1,0,1,1,", 17), "row A: %s",
             line);
    KD_CHECK(fgets(line, sizeof line, f) && !strncmp(line, "caseB,ok,0,6,0,", 15), "row B: %s",
             line);
    /* WT block of caseB: volumes 1 and 1 voxels, 2 and 2 mm^3 */
    KD_CHECK(strstr(line, ",1,1,2,2,") != NULL, "row B volumes: %s", line);
    KD_CHECK(!fgets(line, sizeof line, f), "two rows only");
    fclose(f);
    kd_eval_print_table(r, stderr);
    kd_eval_result_free(r);
    return 0;
}

/* Catches: a missing or mismatched prediction scored silently, an error that does not
 * name the case, --allow-missing not scoring it as empty. */
static int evaluate_missing(void) {
    const char *root = kd_test_tmpdir();
    KD_CHECK(make_cohort(root, "_", 4) == 0, "writing the cohort");
    char ref[1024], pred[1024], p[1024];
    kd_eval_options o;
    kd_eval_options_default(&o);
    o.ref = pathf(ref, sizeof ref, root, "/ref", "");
    o.pred_dir = pathf(pred, sizeof pred, root, "/pred", "");
    KD_CHECK(remove(pathf(p, sizeof p, pred, "/caseB", ".nii.gz")) == 0, "remove");
    kd_eval_result *r = NULL;
    kd_status s = kd_evaluate(&o, &r);
    KD_CHECK(s == KD_ERR_IO && r == NULL, "missing prediction gave %s", kd_status_string(s));
    KD_CHECK(strstr(kd_last_error(), "caseB") != NULL, "names the case: %s", kd_last_error());
    o.allow_missing = 1;
    o.empty_hd95 = 100;
    KD_CHECK_OK(kd_evaluate(&o, &r));
    KD_CHECK(r->n_cases == 2 && r->cases[1].status == KD_EVAL_MISSING, "status");
    for (int g = 0; g < 3; g++)
        KD_CHECK(r->cases[1].region[g].dice == 0 && r->cases[1].region[g].hd95 == 100 &&
                     r->cases[1].region[g].vol_pred == 0,
                 "missing scored as empty");
    kd_eval_result_free(r);
    /* a prediction on another grid */
    static uint8_t small[4 * 4 * 4];
    KD_CHECK(write_map(p, small, 4, 4, 4, pix_x2, DT_UINT8, NULL, 0) == 0, "write");
    o.allow_missing = 0;
    s = kd_evaluate(&o, &r);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "caseB"), "mismatch: %s %s",
             kd_status_string(s), kd_last_error());
    o.allow_missing = 1;
    KD_CHECK_OK(kd_evaluate(&o, &r));
    KD_CHECK(r->cases[1].status == KD_EVAL_MISMATCH, "mismatch status");
    kd_eval_result_free(r);
    return 0;
}

/* Catches: the BraTS 2023 layout (CASE-seg, label 3) not found or its ET lost, a folder
 * of CASE.nii.gz not accepted as a reference, bad label values accepted. */
static int evaluate_2023_and_folder(void) {
    const char *root = kd_test_tmpdir();
    KD_CHECK(make_cohort(root, "-", 3) == 0, "writing the cohort");
    char ref[1024], pred[1024], p[1024];
    kd_eval_options o;
    kd_eval_options_default(&o);
    o.ref = pathf(ref, sizeof ref, root, "/ref", "");
    o.pred_dir = pathf(pred, sizeof pred, root, "/pred", "");
    kd_eval_result *r = NULL;
    KD_CHECK_OK(kd_evaluate(&o, &r));
    KD_CHECK(r->n_cases == 2 && r->cases[0].region[KD_REGION_ET].vol_ref == 8, "2023 ET volume");
    if (check_case_b(&r->cases[1])) return 1;
    kd_eval_result_free(r);
    /* forcing 2019 on 2023 files: label 3 is not a 2019 label */
    o.labels = KD_LABELS_2019;
    kd_status s = kd_evaluate(&o, &r);
    KD_CHECK(s == KD_ERR_FORMAT && strstr(kd_last_error(), "label 3"), "%s", kd_last_error());
    /* the prediction folder as a reference folder of CASE.nii.gz: perfect scores */
    o.labels = KD_LABELS_AUTO;
    o.ref = pred;
    KD_CHECK_OK(kd_evaluate(&o, &r));
    KD_CHECK(r->n_cases == 2 && r->cases[1].region[0].dice == 1, "folder reference");
    kd_eval_result_free(r);
    /* no cases at all */
    o.ref = pathf(p, sizeof p, root, "/empty", "");
    mkdir(p, 0755);
    KD_CHECK(kd_evaluate(&o, &r) == KD_ERR_IO && strstr(kd_last_error(), "no reference cases"),
             "empty reference: %s", kd_last_error());
    return 0;
}

/* Catches: label maps of other datatypes misread, scaling ignored, non-integer or
 * out-of-range labels accepted, non-NIfTI files crashing, the axis order of spacing. */
static int label_map_read(void) {
    const char *root = kd_test_tmpdir();
    char p[1024];
    static uint8_t lab[NV];
    for (int i = 0; i < NV; i++)
        lab[i] = (uint8_t)(i % 3);
    kd_label_map *m = NULL;
    KD_CHECK(write_map(pathf(p, sizeof p, root, "/i16.nii.gz", ""), lab, NX, NY, NZ, pix_x2,
                       DT_INT16, NULL, 1.0) == 0,
             "write");
    KD_CHECK_OK(kd_label_map_read(p, &m));
    KD_CHECK(m->w == NX && m->h == NY && m->d == NZ, "grid %d %d %d", m->d, m->h, m->w);
    KD_CHECK(m->spacing[0] == 1.0 && m->spacing[2] == 2.0, "spacing (sz,sy,sx) %g %g %g",
             m->spacing[0], m->spacing[1], m->spacing[2]);
    KD_CHECK(!memcmp(m->labels, lab, NV), "int16 values");
    kd_label_map_free(m);
    /* float32 stored as v/2 with slope 2 */
    static float half[NV];
    for (int i = 0; i < NV; i++)
        half[i] = lab[i] * 0.5f;
    KD_CHECK(write_map(pathf(p, sizeof p, root, "/f32.nii", ""), lab, NX, NY, NZ, pix_x2,
                       DT_FLOAT32, half, 2.0) == 0,
             "write");
    KD_CHECK_OK(kd_label_map_read(p, &m));
    KD_CHECK(!memcmp(m->labels, lab, NV), "scaled float values");
    kd_label_map_free(m);
    half[17] = 0.75f; /* 1.5 after scaling */
    KD_CHECK(write_map(p, lab, NX, NY, NZ, pix_x2, DT_FLOAT32, half, 2.0) == 0, "write");
    KD_CHECK(kd_label_map_read(p, &m) == KD_ERR_FORMAT && m == NULL, "non-integer label");
    KD_CHECK(strstr(kd_last_error(), "f32.nii") && strstr(kd_last_error(), "1.5"), "%s",
             kd_last_error());
    half[17] = -1;
    KD_CHECK(write_map(p, lab, NX, NY, NZ, pix_x2, DT_FLOAT32, half, 2.0) == 0, "write");
    KD_CHECK(kd_label_map_read(p, &m) == KD_ERR_FORMAT, "negative label");
    FILE *f = fopen(pathf(p, sizeof p, root, "/junk.nii.gz", ""), "w");
    fputs("this is not a nifti file at all, not even gzip, but long enough to read a header "
          "from it if one tried very hard to misread it as one, which we should not do. "
          "padding padding padding padding padding padding padding padding padding padding",
          f);
    fclose(f);
    KD_CHECK(kd_label_map_read(p, &m) == KD_ERR_FORMAT && strstr(kd_last_error(), "junk"),
             "junk: %s", kd_last_error());
    KD_CHECK(kd_label_map_read(pathf(p, sizeof p, root, "/none.nii.gz", ""), &m) == KD_ERR_IO,
             "missing file");
    return 0;
}

/* Runs a shell command, returns its exit status (-1 if it did not exit). */
static int sh(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int file_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static int file_has(const char *path, const char *text) {
    static char buf[65536];
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, text) != NULL;
}

/* Catches: the command not wired to the library (exit codes, the CSV, the table), the
 * missing-case error not reaching the user, options not parsed. */
static int evaluate_cli(void) {
    const char *exe = getenv("KDSEG_EXE");
    if (!exe) {
        fprintf(stderr, "KDSEG_EXE not set\n");
        return KD_TEST_SKIP;
    }
    const char *root = kd_test_tmpdir();
    KD_CHECK(make_cohort(root, "_", 4) == 0, "writing the cohort");
    char cmd[4096], out[1024], csv[1024];
    pathf(out, sizeof out, root, "/out.txt", "");
    pathf(csv, sizeof csv, root, "/m.csv", "");
    snprintf(cmd, sizeof cmd, "'%s' evaluate --pred '%s/pred' --ref '%s/ref' --csv '%s' >'%s' 2>&1",
             exe, root, root, csv, out);
    KD_CHECK(sh(cmd) == 0, "evaluate failed");
    KD_CHECK(file_lines(csv) == 3, "csv lines %d", file_lines(csv));
    KD_CHECK(file_has(out, "2 cases") && file_has(out, "HD95         ET      3.0000"),
             "table on stdout");
    char p[1024];
    KD_CHECK(remove(pathf(p, sizeof p, root, "/pred/caseB", ".nii.gz")) == 0, "remove");
    KD_CHECK(sh(cmd) == 1, "missing prediction must fail");
    KD_CHECK(file_has(out, "caseB") && file_has(out, "no prediction"), "error names the case");
    snprintf(cmd, sizeof cmd,
             "'%s' evaluate --pred '%s/pred' --ref '%s/ref' --allow-missing --empty-hd95 50 "
             "--csv '%s' >'%s' 2>&1",
             exe, root, root, csv, out);
    KD_CHECK(sh(cmd) == 0, "--allow-missing");
    KD_CHECK(file_has(csv, "caseB,missing,0,50,0,1,0,1,0,2"), "missing row in the csv");
    snprintf(cmd, sizeof cmd,
             "'%s' evaluate --pred '%s/pred' --ref '%s/ref' --labels 2020 >'%s' 2>&1", exe, root,
             root, out);
    KD_CHECK(sh(cmd) == 2 && file_has(out, "2020"), "bad --labels");
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"evaluate_brats2019", evaluate_brats2019},
        {"evaluate_missing", evaluate_missing},
        {"evaluate_2023_and_folder", evaluate_2023_and_folder},
        {"label_map_read", label_map_read},
        {"evaluate_cli", evaluate_cli},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
