/* TEMPORARY stand-ins for branch rel's kdseg/fs.h (see fs_shim.h). */
#include "fs_shim.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tmpfiles.h"

kd_status kd_path_printf(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n) {
        if (n) out[0] = 0;
        return kd_fail(KD_ERR_INVALID_ARG, "path too long (%d characters; at most %zu)", k, n - 1);
    }
    return KD_OK;
}

kd_status kd_path_join(char *out, size_t n, const char *dir, const char *name) {
    return kd_path_printf(out, n, "%s/%s", dir, name);
}

kd_status kd_mkdirs(const char *dir) {
    char tmp[KD_PATH_MAX];
    kd_status s = kd_path_printf(tmp, sizeof tmp, "%s", dir);
    if (s) return s;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) break;
            *p = '/';
        }
    if (mkdir(dir, 0755) && errno != EEXIST)
        return kd_fail(KD_ERR_IO, "%s: cannot create the output folder: %s", dir, strerror(errno));
    return KD_OK;
}

const char *kd_output_target(const char *path) { return path; }

struct kd_outdir {
    char path[KD_PATH_MAX];
};

kd_status kd_outdir_open(const char *dir, const char *longest, kd_outdir **out) {
    (void)longest;
    *out = NULL;
    kd_outdir *o = calloc(1, sizeof *o);
    if (!o) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", dir);
    kd_status s = kd_path_printf(o->path, sizeof o->path, "%s", dir);
    if (!s) s = kd_mkdirs(dir);
    if (s) {
        free(o);
        return s;
    }
    kd_tmp_sweep(dir, KD_TMP_STALE_SECONDS); /* left by killed runs */
    *out = o;
    return KD_OK;
}

const char *kd_outdir_path(const kd_outdir *o) { return o->path; }

void kd_outdir_close(kd_outdir *o) { free(o); }
