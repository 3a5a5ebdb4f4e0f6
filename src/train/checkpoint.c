/* Checkpoints: self-describing, CRC-checked, written atomically. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
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

/* ---- metadata: the one place that knows its keys ------------------------------------ */

typedef enum { MF_LONG, MF_U64, MF_DOUBLE, MF_INTS, MF_DOUBLES, MF_STR } meta_type;

typedef struct meta_field {
    const char *key;
    meta_type type;
    size_t off, size; /* of the field in kd_ckpt_meta */
    int count;        /* MF_INTS, MF_DOUBLES: values, written "a,b,c" */
} meta_field;

#define MF(key, type, field, count) \
    {key, type, offsetof(kd_ckpt_meta, field), sizeof(((kd_ckpt_meta *)0)->field), count}

/* In the order they are written. Keys of older kdseg versions: all of these (each file
 * had a subset) plus imported_from, which is ignored. */
static const meta_field meta_fields[] = {
    MF("spec", MF_STR, spec, 1),
    MF("step", MF_LONG, step, 1),
    MF("seed", MF_U64, seed, 1),
    MF("best_dice", MF_DOUBLE, best_dice, 1),
    MF("lr", MF_DOUBLE, lr, 1),
    MF("steps", MF_LONG, steps, 1),
    MF("mode", MF_STR, mode, 1),
    MF("data", MF_STR, data, 1),
    MF("loss", MF_STR, loss, 1),
    MF("optim", MF_STR, optim, 1),
    MF("patch", MF_INTS, patch, 3),
    MF("batch", MF_INTS, batch, 1),
    MF("recipe", MF_STR, recipe, 1),
    MF("domain_kind", MF_STR, domain.kind, 1),
    MF("domain_layout", MF_STR, domain.layout, 1),
    MF("domain_modalities", MF_STR, domain.modalities, 1),
    MF("domain_cases", MF_INTS, domain.cases, 1),
    MF("domain_channels", MF_INTS, domain.channels, 1),
    MF("domain_spacing", MF_DOUBLES, domain.spacing, 3),
    MF("domain_brain_ml", MF_DOUBLES, domain.brain_ml, 2),
    MF("domain_p01", MF_DOUBLES, domain.p01, KD_DOMAIN_CHANNELS),
    MF("domain_p50", MF_DOUBLES, domain.p50, KD_DOMAIN_CHANNELS),
    MF("domain_p99", MF_DOUBLES, domain.p99, KD_DOMAIN_CHANNELS),
    MF("ema", MF_DOUBLE, ema, 1),
};
#define META_FIELDS ((int)(sizeof meta_fields / sizeof meta_fields[0]))

void kd_ckpt_meta_init(kd_ckpt_meta *meta) {
    memset(meta, 0, sizeof *meta);
    meta->best_dice = -1;
    meta->ema = -1;
}

/* Appends to t (cap bytes, n used); 0 when it does not fit. */
static int appendf(char *t, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int appendf(char *t, size_t cap, size_t *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= cap - *n) return 0;
    *n += (size_t)k;
    return 1;
}

/* The metadata block into t (cap bytes): every field, "key=value\n", the spec from the
 * model. */
static kd_status meta_format(const char *path, const kd_ckpt_meta *meta, const char *spec, char *t,
                             size_t cap) {
    size_t n = 0;
    int ok = 1;
    t[0] = 0;
    for (int i = 0; i < META_FIELDS && ok; i++) {
        const meta_field *f = &meta_fields[i];
        const char *p = (const char *)meta + f->off;
        ok = appendf(t, cap, &n, "%s=", f->key);
        switch (f->type) {
        case MF_LONG: {
            long v;
            memcpy(&v, p, sizeof v);
            ok = ok && appendf(t, cap, &n, "%ld", v);
            break;
        }
        case MF_U64: {
            uint64_t v;
            memcpy(&v, p, sizeof v);
            ok = ok && appendf(t, cap, &n, "%" PRIu64, v);
            break;
        }
        case MF_DOUBLE: { /* %.17g: the value reads back exactly */
            double v;
            memcpy(&v, p, sizeof v);
            ok = ok && appendf(t, cap, &n, "%.17g", v);
            break;
        }
        case MF_INTS:
            for (int k = 0; k < f->count; k++) {
                int v;
                memcpy(&v, p + k * sizeof v, sizeof v);
                ok = ok && appendf(t, cap, &n, k ? ",%d" : "%d", v);
            }
            break;
        case MF_DOUBLES: /* %.9g: enough for statistics, short lines */
            for (int k = 0; k < f->count; k++) {
                double v;
                memcpy(&v, p + k * sizeof v, sizeof v);
                ok = ok && appendf(t, cap, &n, k ? ",%.9g" : "%.9g", v);
            }
            break;
        case MF_STR: {
            const char *v = f->off == offsetof(kd_ckpt_meta, spec) ? spec : p;
            if (strchr(v, '\n'))
                return kd_fail(KD_ERR_INVALID_ARG, "checkpoint %s: metadata %s holds a newline", path,
                               f->key);
            ok = ok && appendf(t, cap, &n, "%.*s", (int)f->size - 1, v);
            break;
        }
        }
        ok = ok && appendf(t, cap, &n, "\n");
    }
    return ok ? KD_OK : kd_fail(KD_ERR_INTERNAL, "checkpoint %s: metadata longer than %zu bytes", path, cap);
}

/* One value into its field; 0 when it does not parse. */
static int meta_set(const meta_field *f, kd_ckpt_meta *meta, const char *v, size_t len) {
    char buf[2048], *end = NULL;
    if (len >= sizeof buf) return 0;
    memcpy(buf, v, len);
    buf[len] = 0;
    char *p = (char *)meta + f->off;
    errno = 0;
    switch (f->type) {
    case MF_LONG: {
        long v = strtol(buf, &end, 10);
        memcpy(p, &v, sizeof v);
        break;
    }
    case MF_U64: {
        uint64_t v = strtoull(buf, &end, 10);
        memcpy(p, &v, sizeof v);
        break;
    }
    case MF_DOUBLE: {
        double v = strtod(buf, &end);
        memcpy(p, &v, sizeof v);
        break;
    }
    case MF_INTS: {
        const char *q = buf;
        for (int k = 0; k < f->count; k++) {
            long x = strtol(q, &end, 10);
            if (end == q || x < INT32_MIN || x > INT32_MAX || (k + 1 < f->count && *end != ',')) return 0;
            int v = (int)x;
            memcpy(p + k * sizeof v, &v, sizeof v);
            q = end + (k + 1 < f->count);
        }
        break;
    }
    case MF_DOUBLES: {
        const char *q = buf;
        for (int k = 0; k < f->count; k++) {
            double x = strtod(q, &end);
            if (end == q || (k + 1 < f->count && *end != ',')) return 0;
            memcpy(p + k * sizeof x, &x, sizeof x);
            q = end + (k + 1 < f->count);
        }
        break;
    }
    case MF_STR:
        if (len >= f->size) return 0;
        memcpy(p, buf, len + 1);
        return 1;
    }
    return end && end != buf && !*end && !errno;
}

/* The metadata block into meta (starting from kd_ckpt_meta_init). */
static kd_status meta_parse(const char *path, const char *text, kd_ckpt_meta *meta) {
    kd_ckpt_meta_init(meta);
    for (const char *l = text; l && *l;) {
        const char *eol = strchr(l, '\n'), *eq = strchr(l, '=');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        if (eq && eq < l + len)
            for (int i = 0; i < META_FIELDS; i++) {
                const meta_field *f = &meta_fields[i];
                if ((size_t)(eq - l) != strlen(f->key) || strncmp(l, f->key, (size_t)(eq - l))) continue;
                if (!meta_set(f, meta, eq + 1, len - (size_t)(eq - l) - 1))
                    return kd_fail(KD_ERR_FORMAT, "checkpoint %s: metadata '%.*s' is not a valid %s",
                                   path, (int)len, l, f->key);
                break;
            }
        l = eol ? eol + 1 : NULL;
    }
    if (!meta->spec[0]) return kd_fail(KD_ERR_FORMAT, "checkpoint %s: no model spec in the metadata", path);
    return KD_OK;
}

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

kd_status kd_checkpoint_save(const char *path, kd_model *m, kd_optim *o, const kd_ckpt_meta *meta) {
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
    kd_ckpt_meta none;
    if (!meta) kd_ckpt_meta_init(&none);
    char mt[2 * sizeof(kd_ckpt_meta) + 1024];
    if ((s = meta_format(path, meta ? meta : &none, kd_model_spec(m), mt, sizeof mt))) goto done;
    uint32_t mlen = (uint32_t)strlen(mt);
    int ok = put(&b, MAGIC, 8) && put32(&b, KD_CHECKPOINT_VERSION) && put32(&b, mlen) &&
             put(&b, mt, mlen) && put32(&b, (uint32_t)n);
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
    if ((s = kd_tmp_name(path, tmp, sizeof tmp))) goto done;
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

static int get32(const unsigned char **p, const unsigned char *end, uint32_t *v) {
    if (end - *p < 4) return 0;
    memcpy(v, *p, 4);
    *p += 4;
    return 1;
}

/* The whole file, its magic, version and CRC checked; *text the metadata block
 * (NUL-terminated, owned by the caller) and *body what follows it (inside *data, which
 * ends with the 4-byte CRC). */
static kd_status read_checked(const char *path, unsigned char **data, size_t *size, char **text,
                              const unsigned char **body) {
    *data = NULL;
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "checkpoint %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return kd_fail(KD_ERR_IO, "checkpoint %s: cannot stat: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    if (n < 24) {
        fclose(f);
        return kd_fail(KD_ERR_FORMAT, "checkpoint %s: too short (%zu bytes)", path, n);
    }
    unsigned char *d = malloc(n);
    if (!d) {
        fclose(f);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s: %zu bytes", path, n);
    }
    size_t got = fread(d, 1, n, f);
    fclose(f);
    kd_status s = KD_OK;
    uint32_t ver, crc, mlen = 0;
    const unsigned char *p = d + 12, *end = d + n - 4;
    memcpy(&ver, d + 8, 4);
    memcpy(&crc, d + n - 4, 4);
    if (got != n)
        s = kd_fail(KD_ERR_IO, "checkpoint %s: short read", path);
    else if (memcmp(d, MAGIC, 8))
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: not a kdseg checkpoint (bad magic)", path);
    else if (ver != KD_CHECKPOINT_VERSION)
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: format version %u, this kdseg reads version %d",
                    path, ver, KD_CHECKPOINT_VERSION);
    else if ((uint32_t)crc32(0L, d, (uInt)(n - 4)) != crc)
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: CRC mismatch (file corrupt or truncated)", path);
    else if (!get32(&p, end, &mlen) || mlen > (size_t)(end - p))
        s = kd_fail(KD_ERR_FORMAT, "checkpoint %s: malformed header", path);
    else if (!(*text = calloc(mlen + 1, 1)))
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s: metadata", path);
    if (!s) {
        memcpy(*text, p, mlen);
        *body = p + mlen;
    }
    if (s) free(d);
    else {
        *data = d;
        *size = n;
    }
    return s;
}

kd_status kd_checkpoint_read_meta(const char *path, kd_ckpt_meta *meta) {
    unsigned char *data;
    size_t size;
    char *text;
    const unsigned char *body;
    kd_status s = read_checked(path, &data, &size, &text, &body);
    if (!s) s = meta_parse(path, text, meta);
    free(text);
    free(data);
    return s;
}

kd_status kd_checkpoint_load(const char *path, kd_device *dev, kd_model **m_out,
                             const kd_optim_config *oc, kd_optim **o_out, kd_ckpt_meta *meta_out) {
    *m_out = NULL;
    if (o_out) *o_out = NULL;
    unsigned char *data = NULL;
    size_t size = 0;
    char *mtext = NULL;
    const unsigned char *p = NULL;
    kd_model *m = NULL;
    kd_optim *o = NULL;
    kd_ckpt_meta meta;
    kd_status s = read_checked(path, &data, &size, &mtext, &p);
    if (s) return s;
    const unsigned char *end = data + size - 4;
    uint32_t n;
    if ((s = meta_parse(path, mtext, &meta))) goto done;
    const char *spec = meta.spec;
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
    int found = 0, found_ema = 0;
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
                    found_ema |= kd_optim_state_tensor(o, k) == kd_optim_ema(o);
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
    if (o) kd_optim_set_steps(o, meta.step);
    /* a weight average asked for that the file does not hold starts from its parameters */
    if (o && kd_optim_ema(o) && !found_ema && (s = kd_optim_ema_restart(o))) goto done;
    if (meta_out) *meta_out = meta;
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
