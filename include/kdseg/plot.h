/* kdseg: small PNG charts (training curves, per-case Dice box plots) drawn on an
 * RGB canvas with a built-in 5x7 font; written with the PNG writer of the data layer. */
#ifndef KDSEG_PLOT_H
#define KDSEG_PLOT_H

#include <stdint.h>

#include "kdseg/data.h"
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

/* Text rotated a quarter turn anticlockwise (read bottom to top), starting at (x, y),
 * its baseline column at x; returns the height. */
int kd_canvas_text_up(kd_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale);
/* Width in pixels of s at scale. */
int kd_canvas_text_width(const char *s, int scale);

typedef struct kd_series {
    const char *name;
    const double *x, *y; /* NaN y values are skipped */
    int n;
    uint32_t rgb;
    int markers; /* also a dot at each point (sparse series such as validation) */
} kd_series;

/* A chart's labels and scale. */
typedef struct kd_chart {
    const char *title, *xlabel, *ylabel;
    int log_y;         /* log10 y axis: ticks at 1, 2, 5 x 10^k, "(log scale)" on the label */
    double ymin, ymax; /* fixed y range when ymax > ymin, else from the data */
    double xmin, xmax; /* fixed x range when xmax > xmin, else from the data */
} kd_chart;

/* "Nice" ticks (1, 2 or 5 x 10^k apart, at most max_ticks + 1) covering [lo, hi]:
 * writes them to ticks (room for 16), returns their count; the axis runs from the
 * first to the last. */
int kd_plot_nice_ticks(double lo, double hi, int max_ticks, double *ticks);

/* Ticks of a log10 axis over [lo, hi] (lo > 0): 1, 2, 5 x 10^k when the range spans
 * few decades, else powers of ten; returns their count (room for 16). */
int kd_plot_log_ticks(double lo, double hi, double *ticks);

/* Trailing moving average of y over `window` points (NaN skipped): out[i] = mean of the
 * finite y[max(0, i-window+1) .. i]; NaN where there are none. */
void kd_moving_average(const double *y, int n, int window, double *out);

/* Line chart with a title, axis titles, round ticks and a legend, into a panel of c. */
void kd_plot_chart(kd_canvas *c, int x0, int y0, int w, int h, const kd_chart *chart,
                   const kd_series *s, int ns);

/* kd_plot_chart with a title only. */
void kd_plot_lines(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const kd_series *s, int ns, int log_y);

/* Training curves (train.png): left, the training loss per step (raw, and its moving
 * average over about a 25th of the steps) on a log axis; right, the validation Dice per
 * region (WT, TC, ET) at the steps where it was measured (NaN elsewhere).
 * step, loss, dice[0..2]: n values each. */
kd_status kd_plot_training_curves(const char *png_path, const double *step, const double *loss,
                                  const double *const dice[3], int n);

/* Box plots: for each group g (e.g. a region) one box per series k (e.g. a model)
 * over values[g * nseries + k][0 .. counts[g * nseries + k]): median, quartiles,
 * whiskers at 1.5 IQR, outliers as dots. */
void kd_plot_boxes(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                   const char *const *groups, int ngroups, const char *const *series,
                   int nseries, const double *const *values, const int *counts, double ymin,
                   double ymax);
/* kd_plot_boxes with a y-axis title. */
void kd_plot_boxes_labeled(kd_canvas *c, int x0, int y0, int w, int h, const char *title,
                           const char *ylabel, const char *const *groups, int ngroups,
                           const char *const *series, int nseries, const double *const *values,
                           const int *counts, double ymin, double ymax);

/* ---- segmentation overlays ---- */

/* Overlay colours of the nested regions: edema (WT outside TC) green, tumour core (TC
 * outside ET) red, enhancing tumour yellow. */
#define KD_OVERLAY_WT 0x00ff00u
#define KD_OVERLAY_TC 0xff0000u
#define KD_OVERLAY_ET 0xffff00u

/* A legend of the overlay colours at (x, y), one line per region; returns its height. */
int kd_plot_region_legend(kd_canvas *c, int x, int y, int scale);

/* Slices (z, y, x) a reader should see: per plane, the slice with the most tumour (WT
 * of regions (3, D, H, W) > 0.5), i.e. through the tumour's largest extent in that
 * plane; without tumour (or regions NULL), the centre of the bounding box of the
 * nonzero image voxels (the brain; the grid's centre when there are none). Returns 1
 * when the slices go through tumour. image: (C, D, H, W). */
int kd_overlay_slices(const float *image, int channels, int d, int h, int w,
                      const float *regions, int slice[3]);

typedef struct kd_overlay_info {
    const char *case_name;            /* the title */
    const char *what;                 /* e.g. "prediction", "reference labels"; may be NULL */
    const char *const *channel_names; /* one per channel (e.g. "FLAIR"), or NULL */
    int offset[3];   /* added to a slice index for its label (preprocessed -> file grid) */
    int extent[3];   /* slices of the file's grid per axis (D, H, W); 0: the array's */
    const char *name_store[16]; /* storage that kd_overlay_info_for_case points into */
} kd_overlay_info;

/* The info of a loaded case of ds: its name, its modalities' names, and slice numbers
 * in the grid of its files (the crop and padding undone). `what` is borrowed. */
void kd_overlay_info_for_case(kd_overlay_info *info, const kd_dataset *ds, const kd_case *c,
                              const char *what);

/* The overlay picture: a title (case, what), one column per channel (windowed to the
 * 0.5-99.5 percentile of its nonzero voxels), rows axial, coronal, sagittal through
 * kd_overlay_slices, each panel labelled with its plane and slice ("AXIAL 78/155",
 * 1-based in the file's grid), the regions blended in their colours, and their legend
 * (regions NULL: no overlay, no legend).
 * Small volumes are enlarged by an integer factor. Into a new canvas (free it). */
kd_status kd_plot_overlay(kd_canvas *c, const float *image, int channels, int d, int h, int w,
                          const float *regions, const kd_overlay_info *info);

/* kd_plot_overlay written to a PNG file. */
kd_status kd_plot_overlay_write(const char *path, const float *image, int channels, int d, int h,
                                int w, const float *regions, const kd_overlay_info *info);

/* A palette of distinguishable colours. */
uint32_t kd_plot_colour(int i);

#ifdef __cplusplus
}
#endif
#endif
