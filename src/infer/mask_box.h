/* Shared by the metrics (metrics.c) and the lesion-wise scores (lesion.c); not public. */
#ifndef KD_INFER_MASK_BOX_H
#define KD_INFER_MASK_BOX_H
#include <stdint.h>

/* The bounding box [lo, hi] (inclusive, per axis z, y, x) of the voxels set in a or b on a
 * (d, h, w) grid; 0 when neither mask has a voxel. */
int kd_union_bbox(const uint8_t *a, const uint8_t *b, int d, int h, int w, int lo[3], int hi[3]);

#endif
