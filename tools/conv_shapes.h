/* The conv layer shapes of the student ResUNet and the teachers, and the buffers to run
 * one of them: shared by `kdseg bench ops` (timing) and `kdseg tune` (tuning). */
#ifndef KD_CONV_SHAPES_H
#define KD_CONV_SHAPES_H

#include "ops/conv_internal.h"

/* A conv layer at a patch of edge P: spatial size P >> level. */
typedef struct kd_conv_row {
    const char *name;
    int level, ci, co, k, s, p, bias;
} kd_conv_row;

/* Rows starting "T " are the teachers' shapes, the others the student's. */
extern const kd_conv_row kd_conv_rows[];
extern const int kd_conv_nrows;
int kd_conv_row_is_teacher(const kd_conv_row *r);

/* Tensors of one layer: x, w, b, y, and the gradients dy, dx, dw, db. */
typedef struct kd_conv_bufs {
    kd_conv_params p;
    kd_tensor *x, *w, *b, *y, *dy, *dx, *dw, *db;
} kd_conv_bufs;

/* Create the tensors of row r at input edge `edge` and its geometry *g (has_bias 0).
 * seed 0: constant small values (x 0.5, w 0.01, b 0.1, dy 0.25; the benchmark); else
 * pseudo-random values in [-1, 1) from the seed (checks that compare outputs). */
kd_status kd_conv_bufs_make(kd_device *dev, const kd_conv_row *r, int edge, unsigned seed,
                            kd_conv_bufs *c, kd_conv_geom *g);
void kd_conv_bufs_free(kd_conv_bufs *c);
/* One pass through the public ops (the chooser or a forced implementation decides). */
kd_status kd_conv_bufs_run(kd_conv_bufs *c, kd_conv_pass pass);
/* The tensor a pass writes: y, dx or dw (dw is accumulated: zero it first to compare). */
kd_tensor *kd_conv_bufs_out(kd_conv_bufs *c, kd_conv_pass pass);

#endif
