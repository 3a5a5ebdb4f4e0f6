/* The preprocessed-case cache: one binary file per case with the preprocessed image
 * (float16, or float32 when asked), the region targets as uint8 (t*255, exact for hard
 * labels and for uint8 annotations), the crop/pad/statistics and the source header.
 * The entry records each source file's path, size and mtime; any change, a different
 * modality selection or a bad CRC makes it a miss and the case is preprocessed again. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cache_internal.h"
#include "data_internal.h"
#include "dataset_internal.h"

#define KD_CACHE_MAGIC "KDSEGPC1"

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *x, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *t = realloc(b->p, cap);
        if (!t) {
            b->oom = 1;
            return;
        }
        b->p = t;
        b->cap = cap;
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
static void put_i32(wbuf *b, int32_t v) { put(b, &v, 4); }
static void put_i64(wbuf *b, int64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    put(b, &n, 4);
    put(b, s, n);
}

typedef struct rbuf {
    const unsigned char *p;
    size_t n, off;
    int bad;
} rbuf;

static void get(rbuf *b, void *x, size_t n) {
    if (b->bad || b->off + n > b->n) {
        b->bad = 1;
        memset(x, 0, n);
        return;
    }
    memcpy(x, b->p + b->off, n);
    b->off += n;
}
static int32_t get_i32(rbuf *b) {
    int32_t v;
    get(b, &v, 4);
    return v;
}
static int64_t get_i64(rbuf *b) {
    int64_t v;
    get(b, &v, 8);
    return v;
}
/* Source files of a case: the distinct image files, then the label. */
static int case_sources(const kd_dataset *ds, int i, const char **src) {
    const kd_ds_case *dc = &ds->cases[i];
    int n = 0;
    for (int ch = 0; ch < ds->nch; ch++) {
        int dup = 0;
        for (int k = 0; k < n; k++)
            dup |= !strcmp(src[k], dc->images[ch]);
        if (!dup) src[n++] = dc->images[ch];
    }
    if (dc->label) src[n++] = dc->label;
    return n;
}

static kd_status cache_path(const kd_dataset *ds, int i, char *out, size_t n) {
    const char *src[KD_MAX_MODALITIES + 1];
    int ns = case_sources(ds, i, src);
    uLong h = crc32(0, Z_NULL, 0);
    for (int k = 0; k < ns; k++)
        h = crc32(h, (const Bytef *)src[k], (uInt)strlen(src[k]) + 1);
    for (int ch = 0; ch < ds->nch; ch++) {
        int32_t m = ds->mod[ch];
        h = crc32(h, (const Bytef *)&m, 4);
    }
    return kd_path_printf(out, n, "%s/%s-%08lx%s.kdc", ds->cache_dir, ds->cases[i].name,
                          (unsigned long)h, ds->cache_f32 ? "-f32" : "");
}

/* Everything that identifies the entry: sources with size+mtime, selection, format. */
static int put_key(wbuf *b, const kd_dataset *ds, int i) {
    const char *src[KD_MAX_MODALITIES + 1];
    int ns = case_sources(ds, i, src);
    put(b, KD_CACHE_MAGIC, 8);
    put_i32(b, ns);
    for (int k = 0; k < ns; k++) {
        int64_t size, mtime;
        if (kd_data_stat(src[k], &size, &mtime)) return -1;
        put_str(b, src[k]);
        put_i64(b, size);
        put_i64(b, mtime);
    }
    put_str(b, ds->cases[i].name);
    put_i32(b, ds->nch);
    for (int ch = 0; ch < ds->nch; ch++)
        put_i32(b, ds->mod[ch]);
    put_i32(b, ds->cache_f32);
    put_i32(b, ds->cases[i].labeled);
    put(b, ds->labels.regions, sizeof ds->labels.regions); /* an edited dataset.json */
    return 0;
}

kd_status kd_cache_store(const kd_dataset *ds, int i, const kd_case *c) {
    wbuf b = {0};
    if (put_key(&b, ds, i)) {
        free(b.p);
        return kd_fail(KD_ERR_IO, "case %s: a source file vanished", c->name);
    }
    int32_t ints[] = {c->d, c->h, c->w};
    put(&b, ints, sizeof ints);
    put(&b, c->orig, sizeof c->orig);
    put(&b, c->crop_lo, sizeof c->crop_lo);
    put(&b, c->crop_hi, sizeof c->crop_hi);
    put(&b, c->pad_lo, sizeof c->pad_lo);
    put(&b, c->mean, sizeof c->mean);
    put(&b, c->std, sizeof c->std);
    put(&b, c->raw_min, sizeof c->raw_min);
    put(&b, c->raw_max, sizeof c->raw_max);
    put(&b, c->nonzero, sizeof c->nonzero);
    unsigned char hdr[544];
    int hlen = 0;
    kd_status s = kd_volume_header_bytes(c->geom, hdr, &hlen);
    if (s) {
        free(b.p);
        return s;
    }
    put_i32(&b, hlen);
    put(&b, hdr, hlen);
    put_str(&b, c->geom->path ? c->geom->path : "");
    put_i64(&b, c->geom->info.file_bytes);
    put_i32(&b, c->target != NULL);
    size_t n = (size_t)c->d * c->h * c->w, ni = n * c->channels;
    if (ds->cache_f32)
        put(&b, c->image, ni * sizeof(float));
    else {
        uint16_t tmp[4096];
        for (size_t o = 0; o < ni; o += 4096) {
            size_t k = ni - o < 4096 ? ni - o : 4096;
            for (size_t j = 0; j < k; j++)
                tmp[j] = kd_f32_to_f16(c->image[o + j]);
            put(&b, tmp, k * 2);
        }
    }
    if (c->target) {
        unsigned char tmp[4096];
        for (size_t o = 0; o < 3 * n; o += 4096) {
            size_t k = 3 * n - o < 4096 ? 3 * n - o : 4096;
            for (size_t j = 0; j < k; j++)
                tmp[j] = (unsigned char)lrintf(c->target[o + j] * 255.0f);
            put(&b, tmp, k);
        }
    }
    uint32_t crc = (uint32_t)crc32(crc32(0, Z_NULL, 0), b.p, (uInt)b.n);
    put(&b, &crc, 4);
    if (b.oom) {
        free(b.p);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: cache entry", c->name);
    }
    char path[KD_PATH_MAX], tmp[KD_PATH_MAX];
    kd_status ps = cache_path(ds, i, path, sizeof path);
    if (!ps) ps = kd_tmp_name(path, tmp, sizeof tmp);
    if (ps) {
        free(b.p);
        return ps;
    }
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n, e = ok ? 0 : errno;
    if (f && fclose(f) != 0 && ok) ok = 0, e = errno;
    free(b.p);
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) {
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "%s: cannot write cache entry: %s", path, strerror(e));
    }
    return KD_OK;
}

kd_status kd_cache_load(const kd_dataset *ds, int i, kd_case **out) {
    *out = NULL;
    char path[KD_PATH_MAX];
    if (cache_path(ds, i, path, sizeof path)) return KD_OK; /* no entry can have that name */
    FILE *f = fopen(path, "rb");
    if (!f) return KD_OK;
    unsigned char *data = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len > 12 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc(len)) &&
        fread(data, 1, len, f) != (size_t)len) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (!data) return KD_OK;
    kd_case *c = NULL;
    kd_volume *geom = NULL;
    uint32_t crc;
    memcpy(&crc, data + len - 4, 4);
    if (crc != (uint32_t)crc32(crc32(0, Z_NULL, 0), data, (uInt)(len - 4))) {
        kd_log(KD_LOG_WARN, "%s: corrupt cache entry (CRC); preprocessing again", path);
        goto miss;
    }
    wbuf key = {0};
    if (put_key(&key, ds, i) || key.oom || key.n > (size_t)len - 4 || memcmp(key.p, data, key.n)) {
        free(key.p);
        kd_log(KD_LOG_DEBUG, "%s: stale cache entry", path);
        goto miss;
    }
    rbuf b = {data, (size_t)len - 4, key.n, 0};
    free(key.p);
    c = calloc(1, sizeof *c);
    if (!c) goto miss;
    snprintf(c->name, sizeof c->name, "%s", ds->cases[i].name);
    c->channels = ds->nch;
    c->labeled = ds->cases[i].labeled;
    c->from_cache = 1;
    c->d = get_i32(&b);
    c->h = get_i32(&b);
    c->w = get_i32(&b);
    get(&b, c->orig, sizeof c->orig);
    get(&b, c->crop_lo, sizeof c->crop_lo);
    get(&b, c->crop_hi, sizeof c->crop_hi);
    get(&b, c->pad_lo, sizeof c->pad_lo);
    get(&b, c->mean, sizeof c->mean);
    get(&b, c->std, sizeof c->std);
    get(&b, c->raw_min, sizeof c->raw_min);
    get(&b, c->raw_max, sizeof c->raw_max);
    get(&b, c->nonzero, sizeof c->nonzero);
    int hlen = get_i32(&b);
    unsigned char hdr[544];
    if (b.bad || hlen < 348 || hlen > 544) goto miss;
    get(&b, hdr, hlen);
    uint32_t plen;
    get(&b, &plen, 4);
    if (b.bad || plen >= KD_PATH_MAX || b.off + plen > b.n) goto miss;
    char gpath[KD_PATH_MAX];
    memcpy(gpath, b.p + b.off, plen);
    gpath[plen] = 0;
    b.off += plen;
    int64_t fbytes = get_i64(&b);
    int has_target = get_i32(&b);
    if (b.bad || c->d < 1 || c->h < 1 || c->w < 1 || c->d > KD_NIFTI_MAX_DIM ||
        c->h > KD_NIFTI_MAX_DIM || c->w > KD_NIFTI_MAX_DIM)
        goto miss;
    size_t n = (size_t)c->d * c->h * c->w, ni = n * c->channels;
    size_t need = ni * (ds->cache_f32 ? 4 : 2) + (has_target ? 3 * n : 0);
    if (b.off + need != b.n) goto miss;
    if (kd_volume_from_header_bytes(hdr, hlen, gpath, &geom)) goto miss;
    geom->info.file_bytes = fbytes;
    c->geom = geom;
    geom = NULL;
    c->image = malloc(ni * sizeof(float));
    if (has_target) c->target = malloc(3 * n * sizeof(float));
    if (!c->image || (has_target && !c->target)) goto miss;
    const unsigned char *p = b.p + b.off;
    if (ds->cache_f32)
        memcpy(c->image, p, ni * sizeof(float));
    else
        for (size_t j = 0; j < ni; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            c->image[j] = kd_f16_to_f32(h);
        }
    p += ni * (ds->cache_f32 ? 4 : 2);
    if (has_target)
        for (size_t j = 0; j < 3 * n; j++)
            c->target[j] = p[j] / 255.0f;
    free(data);
    kd_case_tumour_bbox(c);
    *out = c;
    return KD_OK;
miss:
    free(data);
    kd_volume_free(geom);
    kd_case_free(c);
    return KD_OK;
}
