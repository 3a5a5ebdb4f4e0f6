/* Private helpers shared by the files of src/data/. */
#ifndef KD_DATA_INTERNAL_H
#define KD_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kdseg/data.h"
#include "kdseg/fs.h" /* kd_mkdirs, kd_tmp_name for the writers */

int kd_data_is_dir(const char *path);
int kd_data_is_file(const char *path);
/* Size and mtime (ns) of a file; nonzero on failure. */
int kd_data_stat(const char *path, int64_t *size, int64_t *mtime_ns);

/* The libnifti header of a volume as raw NIfTI-1/2 bytes (for the case cache) and back. */
kd_status kd_volume_header_bytes(const kd_volume *v, unsigned char *buf, int *len);
kd_status kd_volume_from_header_bytes(const unsigned char *buf, int len, const char *path,
                                      kd_volume **out);
/* Copy of a volume's header (no data). */
kd_status kd_volume_copy_header(const kd_volume *v, kd_volume **out);
/* Largest |a-b| over the affines (mm). */
double kd_volume_affine_diff(const kd_volume *a, const kd_volume *b);

/* float <-> IEEE half (round to nearest even). */
uint16_t kd_f32_to_f16(float f);
float kd_f16_to_f32(uint16_t h);

#endif
