/* The named-tensor file format of the golden files. */
#include "kdseg/fs.h"
#include "kdseg/tensorfile.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "KDGOLD01"

void kd_tensorfile_free(kd_tensorfile *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->t);
    free(f);
}

static int rd32(FILE *f, uint32_t *v) { return fread(v, 4, 1, f) == 1; }

kd_status kd_tensorfile_read(const char *path, kd_tensorfile **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    size_t left = (size_t)st.st_size;
    char magic[8];
    uint32_t count;
    kd_tensorfile *tf = calloc(1, sizeof *tf);
    kd_status s = KD_OK;
    if (!tf) {
        fclose(f);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
    }
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, MAGIC, 8)) {
        s = kd_fail(KD_ERR_FORMAT, "%s: not a kdseg tensor file (magic KDGOLD01 missing)", path);
        goto out;
    }
    if (!rd32(f, &count) || count > left / 12) {
        s = kd_fail(KD_ERR_FORMAT, "%s: bad tensor count", path);
        goto out;
    }
    tf->t = calloc(count ? count : 1, sizeof *tf->t);
    if (!tf->t) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: %u tensors", path, count);
        goto out;
    }
    left -= 12;
    for (uint32_t i = 0; i < count; i++) {
        kd_named_tensor *t = &tf->t[tf->n];
        uint32_t len, nd;
        if (!rd32(f, &len) || len == 0 || len > 4096 || len > left) goto trunc;
        t->name = calloc(len + 1, 1);
        if (!t->name || fread(t->name, 1, len, f) != len) goto trunc;
        tf->n++;
        if (!rd32(f, &nd) || nd > 8) {
            s = kd_fail(KD_ERR_FORMAT, "%s: tensor '%s' has a bad rank", path, t->name);
            goto out;
        }
        t->ndim = (int)nd;
        t->numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint32_t v;
            if (!rd32(f, &v)) goto trunc;
            t->dims[d] = (int)v;
            t->numel *= v;
            if (t->numel > left / 4) {
                s = kd_fail(KD_ERR_FORMAT, "%s: tensor '%s' is larger than the file", path,
                            t->name);
                goto out;
            }
        }
        t->data = malloc(t->numel * 4 + 4);
        if (!t->data) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: tensor '%s'", path, t->name);
            goto out;
        }
        if (fread(t->data, 4, t->numel, f) != t->numel) goto trunc;
        left -= t->numel * 4;
    }
    fclose(f);
    *out = tf;
    return KD_OK;
trunc:
    s = kd_fail(KD_ERR_FORMAT, "%s: truncated", path);
out:
    fclose(f);
    kd_tensorfile_free(tf);
    return s;
}

const kd_named_tensor *kd_tensorfile_find(const kd_tensorfile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

kd_status kd_tensorfile_write(const char *path, const kd_named_tensor *t, int n) {
    char tmp[KD_PATH_MAX];
    kd_status ts = kd_tmp_name(path, tmp, sizeof tmp);
    if (ts) return ts;
    FILE *f = fopen(kd_output_target(tmp), "wb");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    uint32_t c = (uint32_t)n;
    int ok = fwrite(MAGIC, 1, 8, f) == 8 && fwrite(&c, 4, 1, f) == 1;
    for (int i = 0; i < n && ok; i++) {
        uint32_t len = (uint32_t)strlen(t[i].name), nd = (uint32_t)t[i].ndim;
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(t[i].name, 1, len, f) == len &&
             fwrite(&nd, 4, 1, f) == 1;
        for (int d = 0; d < t[i].ndim && ok; d++) {
            uint32_t v = (uint32_t)t[i].dims[d];
            ok = fwrite(&v, 4, 1, f) == 1;
        }
        ok = ok && fwrite(t[i].data, 4, t[i].numel, f) == t[i].numel;
    }
    int e = ok ? 0 : errno; /* the first failure's reason */
    if (ok && fflush(f) != 0) ok = 0, e = errno;
    if (ok && fsync(fileno(f)) != 0) ok = 0, e = errno;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) {
        remove(tmp);
        return kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return KD_OK;
}

kd_status kd_model_load_state_dict(kd_model *m, const kd_tensorfile *tf, const char *prefix,
                                   const char *source) {
    kd_status s = KD_OK;
    for (int i = 0; !s && i < kd_model_param_tensors(m); i++) {
        char nm[256];
        if (snprintf(nm, sizeof nm, "%s%s", prefix ? prefix : "", kd_model_param_name(m, i)) >= (int)sizeof nm) {
            s = kd_fail(KD_ERR_INVALID_ARG, "prefix '%s': too long for a tensor name", prefix);
            break;
        }
        const kd_named_tensor *t = kd_tensorfile_find(tf, nm);
        int nd, dims[5];
        size_t numel = kd_model_param_shape(m, i, &nd, dims);
        int same = t && t->ndim == nd;
        for (int d = 0; same && d < nd; d++) same = t->dims[d] == dims[d];
        if (!same)
            s = kd_fail(KD_ERR_FORMAT, "%s: %s %s (the model %s needs %zu values)", source, nm,
                        t ? "has another shape" : "is missing", kd_model_spec(m), numel);
        else
            s = kd_model_param_set(m, i, t->data);
    }
    return s;
}
