/* The per-device tuning table of the direct conv kernels' launch parameters (conv_tune.c):
 * the parameters, entries, lookup order and table file are public (kdseg/tune.h); here the
 * launch side, which speaks of a conv's geometry. */
#ifndef KD_CONV_TUNE_H
#define KD_CONV_TUNE_H

#include <stdio.h>

#include "conv_internal.h"
#include "kdseg/tune.h"

/* Parameters for a direct conv pass: kd_conv_tune_force's if set, else the table's, with
 * the KDSEG_CONV_* environment on top. src (may be NULL) receives kd_conv_tune_source's
 * description. Recorded as the last launch's (kd_conv_tune_last). */
void kd_conv_tune_get(kd_device *dev, const kd_conv_geom *g, kd_conv_pass pass,
                      kd_conv_tune *out, char *src, size_t nsrc);
/* The same lookup without recording it as the last launch's (the memory plan). */
void kd_conv_tune_lookup(kd_device *dev, const kd_conv_geom *g, kd_conv_pass pass,
                         kd_conv_tune *out);
/* One conv kernel launch for the trace (kd_conv_tune_trace_begin). */
void kd_conv_tune_trace_add(const char *kernel, int dim, const size_t *gws, const size_t *lws);

#endif
