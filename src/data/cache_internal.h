/* The preprocessed-case cache (cache.c). */
#ifndef KD_CACHE_INTERNAL_H
#define KD_CACHE_INTERNAL_H

#include "kdseg/data.h"

/* A valid cache entry of case i into *out; *out stays NULL (and KD_OK) on a miss:
 * absent, corrupt, or its source files changed (size or mtime). */
kd_status kd_cache_load(const kd_dataset *ds, int i, kd_case **out);
/* Writes the entry (temporary file + rename). */
kd_status kd_cache_store(const kd_dataset *ds, int i, const kd_case *c);
/* Recomputes c->tumour_lo/hi from c->target. */
void kd_case_tumour_bbox(kd_case *c);

#endif
