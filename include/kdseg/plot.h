/* kdseg: small PNG charts (training curves, per-case Dice box plots) drawn on an
 * RGB canvas with a built-in 5x7 font; written with the PNG writer of the data layer. */
#ifndef KDSEG_PLOT_H
#define KDSEG_PLOT_H

#include <stdint.h>

#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_canvas {
    int w, h;
    uint8_t *rgb; /* h rows of w pixels, 3 bytes each */
} kd_canvas;

kd_status kd_canvas_create(int w, int h, kd_canvas *c); /* white */
void kd_canvas_free(kd_canvas *c); /* its pixels (the struct is the caller's) */
void kd_canvas_pixel(kd_canvas *c, int x, int y, uint32_t rgb); /* clipped to the canvas */
void kd_canvas_line(kd_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb);
void kd_canvas_rect(kd_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, int fill); /* outline or filled */
/* Text with the 5x7 font (letters drawn upper-case), scale >= 1; returns the width. */
int kd_canvas_text(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale);
kd_status kd_canvas_write(const kd_canvas *c, const char *path); /* as an RGB PNG */

typedef struct kd_series {
    const char *name;
    const double *x, *y; /* NaN y values are skipped */
    int n;
    uint32_t rgb;
} kd_series;

/* Line chart with axes, ticks and a legend into a panel of c. */
void kd_plot_lines(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const kd_series *s, int ns, int log_y);

/* Box plots: for each group g (e.g. a region) one box per series k (e.g. a model)
 * over values[g * nseries + k][0 .. counts[g * nseries + k]): median, quartiles,
 * whiskers at 1.5 IQR, outliers as dots. */
void kd_plot_boxes(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const char *const *groups, int ngroups, const char *const *series,
                   int nseries, const double *const *values, const int *counts, double ymin,
                   double ymax);

/* A palette of distinguishable colours. */
uint32_t kd_plot_colour(int i);

#ifdef __cplusplus
}
#endif
#endif
