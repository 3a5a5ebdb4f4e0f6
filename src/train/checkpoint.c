/* Checkpoints: self-describing, CRC-checked, written atomically. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "kdseg/fs.h"
#include "kdseg/train.h"

#define MAGIC "KDSEGCKP"

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static int put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 1;
}

static int put32(buf *b, uint32_t v) { return put(b, &v, 4); }

typedef struct entry {
    char name[128];
    int ndim, dims[5];
    size_t numel;
    float *data;
} entry;

static void free_entries(entry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].data);
    free(e);
}

static kd_status download_flat(kd_tensor *t, size_t off, size_t n, float *dst) {
    kd_tensor *v = NULL;
    kd_status s = kd_tensor_view(t, off, kd_shape5(1, (int)n, 1, 1, 1), &v);
    if (!s) s = kd_tensor_download_ndhwc(v, dst);
    kd_tensor_free(v);
    return s;
}

kd_status kd_checkpoint_save(const char *path, kd_model *m, kd_optim *o, const char *meta) {
    int np = kd_model_param_tensors(m), ns = kd_model_state_tensors(m);
    int no = o ? kd_optim_state_count(o) : 0;
    int n = np + ns + no;
    entry *e = calloc((size_t)n, sizeof *e);
    buf b = {0};
    kd_status s = KD_OK;
    if (!e) return kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s", path);
    size_t soff = 0;
    for (int i = 0; i < n && !s; i++) {
        entry *x = &e[i];
        if (i < np) {
            snprintf(x->name, sizeof x->name, "param/%s", kd_model_param_name(m, i));
            x->numel = kd_model_param_shape(m, i, &x->ndim, x->dims);
        } else if (i < np + ns) {
            snprintf(x->name, sizeof x->name, "state/%s", kd_model_state_name(m, i - np));
            x->numel = kd_model_state_numel(m, i - np);
            x->ndim = 1;
            x->dims[0] = (int)x->numel;
        } else {
            snprintf(x->name, sizeof x->name, "optim/%s", kd_optim_state_name(o, i - np - ns));
            x->numel = kd_model_param_count(m);
            x->ndim = 1;
            x->dims[0] = (int)x->numel;
        }
        x->data = malloc(x->numel * sizeof(float));
        if (!x->data) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s", path);
            break;
        }
        if (i < np) s = kd_model_param_get(m, i, x->data);
        else if (i < np + ns) {
            s = download_flat(kd_model_state(m), soff, x->numel, x->data);
            soff += x->numel;
        } else
            s = kd_tensor_download_ndhwc(kd_optim_state_tensor(o, i - np - ns), x->data);
    }
    if (s) goto done;
    const char *mt = meta ? meta : "";
    char head[1024];
    snprintf(head, sizeof head, "spec=%s\n", kd_model_spec(m));
    uint32_t mlen = (uint32_t)(strlen(head) + strlen(mt));
    int ok = put(&b, MAGIC, 8) && put32(&b, KD_CHECKPOINT_VERSION) && put32(&b, mlen) &&
             put(&b, head, strlen(head)) && put(&b, mt, strlen(mt)) && put32(&b, (uint32_t)n);
    uint64_t off = 0;
    for (int i = 0; i < n && ok; i++) {
        uint32_t len = (uint32_t)strlen(e[i].name);
        ok = put32(&b, len) && put(&b, e[i].name, len) && put32(&b, (uint32_t)e[i].ndim);
        for (int d = 0; d < e[i].ndim && ok; d++) ok = put32(&b, (uint32_t)e[i].dims[d]);
        ok = ok && put(&b, &off, 8);
        off += e[i].numel;
    }
    for (int i = 0; i < n && ok; i++) ok = put(&b, e[i].data, e[i].numel * sizeof(float));
    uint32_t crc = ok ? (uint32_t)crc32(0L, b.p, (uInt)b.n) : 0;
    ok = ok && put32(&b, crc);
    if (!ok) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s: serialising", path);
        goto done;
    }
    char tmp[KD_PATH_MAX];
    if ((s = kd_path_printf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()))) goto done;
    FILE *f = fopen(kd_output_target(tmp), "wb");
    if (!f) {
        s = kd_fail(KD_ERR_IO, "checkpoint %s: cannot write %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    ok = fwrite(b.p, 1, b.n, f) == b.n;
    int err = ok ? 0 : errno; /* the first failure's reason */
    if (ok && fflush(f) != 0) ok = 0, err = errno;
    if (ok && fsync(fileno(f)) != 0) ok = 0, err = errno;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
    if (!ok) {
        s = kd_fail(KD_ERR_IO, "checkpoint %s: write failed (%s); the previous file is kept", path,
                    strerror(err));
        remove(tmp);
    }
done:
    free(b.p);
    free_entries(e, n);
    return s;
}

/* The metadata lines that fit in out[n], whole: a line cut in two would read as a wrong
 * value (patch=16,1 for patch=16,16,16); a line left out reads as absent. */
static void copy_lines(char *out, size_t n, const char *text, const char *path) {
    size_t u = 0;
    int dropped = 0;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) + 1 : strlen(p);
        if (u + len < n) {
            memcpy(out + u, p, len);
            u += len;
        } else {
            dropped++;
        }
        p += len;
    }
    out[u] = 0;
    if (dropped)
        kd_log(KD_LOG_DEBUG, "checkpoint %s: %d metadata line(s) longer than the reader's %zu bytes "
               "left out", path, dropped, n);
}

int kd_meta_get(const char *meta, const char *key, char *val, size_t n) {
    size_t kl = strlen(key);
    for (const char *p = meta; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > kl && !strncmp(p, key, kl) && p[kl] == '=') {
            size_t vl = len - kl - 1;
            if (vl >= n) break; /* cut, it would be another value: absent */
            memcpy(val, p + kl + 1, vl);
            val[vl] = 0;
            return 1;
        }
        p = eol ? eol + 1 : NULL;
    }
    if (n) val[0] = 0;
    return 0;
}

static int get32(const unsigned char **p, const unsigned char *end, uint32_t *v) {
    if (end - *p < 4) return 0;
    memcpy(v, *p, 4);
    *p += 4;
    return 1;
}

kd_status kd_checkpoint_load(const char *path, kd_device *dev, kd_model **m_out,
                             const kd_optim_config *oc, kd_optim **o_out, char *meta,
                             size_t meta_n) {
    *m_out = NULL;
    if (o_out) *o_out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "checkpoint %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    size_t size = (size_t)st.st_size;
    if (size < 24) {
        fclose(f);
        return kd_fail(KD_ERR_FORMAT, "checkpoint %s: too short (%zu bytes)", path, size);
    }
    unsigned char *data = malloc(size);
    if (!data) {
        fclose(f);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s: %zu bytes", path, size);
    }
    size_t got = fread(data, 1, size, f);
    fclose(f);
    kd_status s = KD_OK;
    kd_model *m = NULL;
    kd_optim *o = NULL;
    char *mtext = NULL;
    if (got != size) {
        s = kd_fail(KD_ERR_IO, "checkpoint %s: short read", path);
        goto done;
    }
    if (memcmp(data, MAGIC, 8)) {
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: not a kdseg checkpoint (bad magic)", path);
        goto done;
    }
    uint32_t ver, crc;
    memcpy(&ver, data + 8, 4);
    if (ver != KD_CHECKPOINT_VERSION) {
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: format version %u, this kdseg reads version %d",
                    path, ver, KD_CHECKPOINT_VERSION);
        goto done;
    }
    memcpy(&crc, data + size - 4, 4);
    if ((uint32_t)crc32(0L, data, (uInt)(size - 4)) != crc) {
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: CRC mismatch (file corrupt or truncated)", path);
        goto done;
    }
    const unsigned char *p = data + 12, *end = data + size - 4;
    uint32_t mlen, n;
    if (!get32(&p, end, &mlen) || mlen > (size_t)(end - p)) goto bad;
    mtext = calloc(mlen + 1, 1);
    if (!mtext) goto bad;
    memcpy(mtext, p, mlen);
    p += mlen;
    char spec[512];
    if (!kd_meta_get(mtext, "spec", spec, sizeof spec)) goto bad;
    if ((s = kd_model_create(dev, spec, 0, &m))) goto done;
    if (o_out) {
        kd_optim_config def;
        kd_optim_defaults(&def);
        if ((s = kd_optim_create(m, oc ? oc : &def, &o))) goto done;
    }
    if (!get32(&p, end, &n) || n > 100000) goto bad;
    const unsigned char *tab = p;
    /* first pass: skip the table to find where data starts */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len, nd, dim;
        if (!get32(&p, end, &len) || len > 127 || (size_t)(end - p) < len) goto bad;
        p += len;
        if (!get32(&p, end, &nd) || nd > 5) goto bad;
        for (uint32_t d = 0; d < nd; d++)
            if (!get32(&p, end, &dim)) goto bad;
        if (end - p < 8) goto bad;
        p += 8;
    }
    const unsigned char *dstart = p;
    size_t nfloats = (size_t)(end - dstart) / 4;
    int found = 0;
    size_t soff = 0;
    p = tab;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = 0, nd = 0, dims[5] = {1, 1, 1, 1, 1};
        char name[128];
        uint64_t off;
        get32(&p, end, &len);
        memcpy(name, p, len);
        name[len] = 0;
        p += len;
        get32(&p, end, &nd);
        size_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            get32(&p, end, &dims[d]);
            numel *= dims[d];
        }
        memcpy(&off, p, 8);
        p += 8;
        if (off > nfloats || numel > nfloats - off) goto bad;
        float *src = malloc(numel * sizeof(float) + 4);
        if (!src) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s", path);
            goto done;
        }
        memcpy(src, dstart + off * 4, numel * 4);
        if (!strncmp(name, "param/", 6)) {
            int k = kd_model_param_find(m, name + 6);
            if (k < 0 || kd_model_param_shape(m, k, NULL, NULL) != numel) {
                free(src);
                s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: parameter %s does not fit %s", path,
                            name + 6, spec);
                goto done;
            }
            s = kd_model_param_set(m, k, src);
            found++;
        } else if (!strncmp(name, "state/", 6) && kd_model_state(m)) {
            kd_tensor *v = NULL;
            s = kd_tensor_view(kd_model_state(m), soff, kd_shape5(1, (int)numel, 1, 1, 1), &v);
            if (!s) s = kd_tensor_upload_ndhwc(v, src);
            kd_tensor_free(v);
            soff += numel;
        } else if (!strncmp(name, "optim/", 6) && o) {
            for (int k = 0; k < kd_optim_state_count(o); k++)
                if (!strcmp(kd_optim_state_name(o, k), name + 6)) {
                    if (numel != kd_model_param_count(m)) {
                        free(src);
                        goto bad;
                    }
                    s = kd_tensor_upload_ndhwc(kd_optim_state_tensor(o, k), src);
                }
        }
        free(src);
        if (s) goto done;
    }
    if (found != kd_model_param_tensors(m)) {
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: %d of %d parameters present", path, found,
                    kd_model_param_tensors(m));
        goto done;
    }
    if (o) {
        char v[64];
        if (kd_meta_get(mtext, "step", v, sizeof v)) kd_optim_set_steps(o, atol(v));
    }
    if (meta && meta_n) copy_lines(meta, meta_n, mtext, path);
    goto done;
bad:
    s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: malformed header or tensor table", path);
done:
    free(data);
    free(mtext);
    if (s) {
        kd_optim_free(o);
        kd_model_free(m);
    } else {
        *m_out = m;
        if (o_out) *o_out = o;
    }
    return s;
}
