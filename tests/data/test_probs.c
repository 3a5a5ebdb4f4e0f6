/* `segment --probabilities`: the file states its channel order and scaling in the
 * header (intent, intent_name, descrip, scl_slope), and readers that apply the scaling
 * get the probabilities back. */
#include <nifti/nifti2_io.h>
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

enum { NX = 6, NY = 5, NZ = 4 };

static int check_file(const char *path, int quantised, const float *p) {
    nifti_image *nim = nifti_image_read(path, 0);
    KD_CHECK(nim != NULL, "%s unreadable", path);
    int ok = nim->dim[0] == 4 && nim->dim[4] == 3 && nim->intent_code == NIFTI_INTENT_ESTIMATE &&
             !strcmp(nim->intent_name, "p WT,TC,ET") &&
             strstr(nim->descrip, "p(WT),p(TC),p(ET)") != NULL &&
             strstr(nim->descrip, quantised ? "1/255" : "float32") != NULL &&
             nim->datatype == (quantised ? DT_UINT8 : DT_FLOAT32) &&
             (quantised ? fabs(nim->scl_slope - 1.0 / 255.0) < 1e-9 : nim->scl_slope == 0);
    fprintf(stderr, "%s: dims %d/%d intent %d '%s' descrip '%s' slope %g\n", path,
            (int)nim->dim[0], (int)nim->dim[4], nim->intent_code, nim->intent_name, nim->descrip, nim->scl_slope);
    nifti_image_free(nim);
    KD_CHECK(ok, "header of %s does not state the channels and scaling", path);
    kd_volume *v = NULL;
    KD_CHECK_OK(kd_nifti_read(path, &v));
    double err = 0;
    for (size_t i = 0; i < 3 * (size_t)NX * NY * NZ; i++)
        err = fmax(err, fabs(v->data[i] - p[i]));
    kd_volume_free(v);
    KD_CHECK(err <= (quantised ? 0.5 / 255 + 1e-6 : 0), "read back within %g", err);
    return 0;
}

static int probs_header(void) {
    const double sp[3] = {1, 1, 1};
    kd_case c;
    memset(&c, 0, sizeof c);
    KD_CHECK_OK(kd_volume_create_geometry(NX, NY, NZ, sp, NULL, &c.geom));
    c.orig[0] = NZ, c.orig[1] = NY, c.orig[2] = NX;
    size_t n = 3 * (size_t)NX * NY * NZ;
    float *p = malloc(n * sizeof(float));
    KD_CHECK(p != NULL, "memory");
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 37) % 101) / 100.0f; /* the 3 volumes differ */
    char path[1024];
    snprintf(path, sizeof path, "%s/u8_prob.nii.gz", kd_test_tmpdir());
    KD_CHECK_OK(kd_case_write_probs(&c, path, p, 1));
    if (check_file(path, 1, p)) return 1;
    snprintf(path, sizeof path, "%s/f32_prob.nii.gz", kd_test_tmpdir());
    KD_CHECK_OK(kd_case_write_probs(&c, path, p, 0));
    if (check_file(path, 0, p)) return 1;
    free(p);
    kd_volume_free(c.geom);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {{"probs_header", probs_header}};
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
