/* TEMPORARY: the path and output-folder calls of branch rel's kdseg/fs.h (issue 22), with
 * the same signatures, until rel lands on main; then this file and fs_shim.c go and
 * src/kd includes "kdseg/fs.h". */
#ifndef KD_FS_SHIM_H
#define KD_FS_SHIM_H

#include <stddef.h>

#include "kdseg/status.h"

#define KD_PATH_MAX 4096

kd_status kd_path_printf(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
kd_status kd_path_join(char *out, size_t n, const char *dir, const char *name);
kd_status kd_mkdirs(const char *dir);
const char *kd_output_target(const char *path);

typedef struct kd_outdir kd_outdir;
kd_status kd_outdir_open(const char *dir, const char *longest, kd_outdir **out);
const char *kd_outdir_path(const kd_outdir *o);
void kd_outdir_close(kd_outdir *o);

#endif
