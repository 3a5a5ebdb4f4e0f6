/* The training-curve PNG from train.csv. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/plot.h"
#include "kd_internal.h"

/* Grows *p to cap doubles; 0 (with *p untouched) when out of memory. */
static int grow(double **p, int cap) {
    double *q = realloc(*p, (size_t)cap * sizeof *q);
    if (!q) return 0;
    *p = q;
    return 1;
}

kd_status kd_plot_training(const char *csv_path, const char *png_path) {
    FILE *f = fopen(csv_path, "r");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot read", csv_path);
    int cap = 1024, n = 0;
    double *x = malloc(cap * sizeof *x), *loss = malloc(cap * sizeof *loss);
    double *d[3] = {malloc(cap * sizeof(double)), malloc(cap * sizeof(double)),
                    malloc(cap * sizeof(double))};
    char line[1024];
    kd_status s = KD_OK;
    if (!fgets(line, sizeof line, f)) n = 0;
    while (x && loss && d[0] && d[1] && d[2] && fgets(line, sizeof line, f)) {
        if (n == cap) {
            cap *= 2;
            /* on failure the old arrays stay owned (and are freed below) */
            int ok = grow(&x, cap) && grow(&loss, cap);
            for (int k = 0; k < 3; k++) ok = ok && grow(&d[k], cap);
            if (!ok) {
                s = kd_fail(KD_ERR_OUT_OF_MEMORY, "plot: %d rows of %s", cap, csv_path);
                break;
            }
        }
        char *fld[16];
        int nf = 0;
        for (char *p = line; nf < 16;) {
            fld[nf++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
        if (nf < 9) continue;
        x[n] = atof(fld[0]);
        loss[n] = atof(fld[2]);
        for (int k = 0; k < 3; k++) d[k][n] = (fld[6 + k][0] && fld[6 + k][0] != '\n') ? atof(fld[6 + k]) : NAN;
        n++;
    }
    fclose(f);
    if (!s && (!x || !loss || !d[0] || !d[1] || !d[2])) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "plot");
    if (!s) s = kd_plot_training_curves(png_path, x, loss, (const double *const *)d, n);
    free(x);
    free(loss);
    for (int k = 0; k < 3; k++) free(d[k]);
    return s;
}
