/* 5-D float32 device tensors stored channels-last. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_dry.h"
#include "tensor_impl.h"

size_t kd_shape_numel(kd_shape s) {
    return (size_t)s.n * (size_t)s.c * (size_t)s.d * (size_t)s.h * (size_t)s.w;
}

int kd_shape_equal(kd_shape a, kd_shape b) {
    return a.n == b.n && a.c == b.c && a.d == b.d && a.h == b.h && a.w == b.w;
}

char *kd_shape_str(kd_shape s, char *buf, size_t n) {
    snprintf(buf, n, "(N=%d, C=%d, D=%d, H=%d, W=%d)", s.n, s.c, s.d, s.h, s.w);
    return buf;
}

static kd_status check_shape(kd_shape s) {
    char b[96];
    if (s.n <= 0 || s.c <= 0 || s.d <= 0 || s.h <= 0 || s.w <= 0)
        return kd_fail(KD_ERR_SHAPE, "tensor shape %s has a non-positive dimension",
                       kd_shape_str(s, b, sizeof b));
    if (kd_shape_numel(s) > (size_t)1 << 31)
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "tensor shape %s has more than 2^31 elements",
                       kd_shape_str(s, b, sizeof b));
    return KD_OK;
}

kd_status kd_tensor_create(kd_device *dev, kd_shape s, kd_tensor **out) {
    *out = NULL;
    kd_status st = check_shape(s);
    if (st) return st;
    kd_tensor *t = calloc(1, sizeof *t);
    if (!t) return kd_fail(KD_ERR_OUT_OF_MEMORY, "tensor");
    t->dev = dev;
    t->shape = s;
    t->bytes = kd_shape_numel(s) * sizeof(float);
    t->owns = 1;
    st = kd_rt_alloc(dev, t->bytes, &t->mem);
    if (st) {
        char b[96];
        free(t);
        return kd_fail_context(st, "tensor %s", kd_shape_str(s, b, sizeof b));
    }
    *out = t;
    return KD_OK;
}

kd_status kd_tensor_create_dry(kd_device *dev, kd_shape s, kd_tensor **out) {
    *out = NULL;
    /* no 2^31-element limit: a plan may ask what a shape too large to run would need */
    char b[96];
    if (s.n <= 0 || s.c <= 0 || s.d <= 0 || s.h <= 0 || s.w <= 0)
        return kd_fail(KD_ERR_SHAPE, "tensor shape %s has a non-positive dimension",
                       kd_shape_str(s, b, sizeof b));
    kd_tensor *t = calloc(1, sizeof *t);
    if (!t) return kd_fail(KD_ERR_OUT_OF_MEMORY, "tensor");
    t->dev = dev;
    t->shape = s;
    *out = t; /* mem NULL, owns 0: nothing to release */
    return KD_OK;
}

kd_status kd_tensor_zeros(kd_device *dev, kd_shape s, kd_tensor **out) {
    kd_status st = kd_tensor_create(dev, s, out);
    if (!st) st = kd_tensor_fill(*out, 0.0f);
    if (st) {
        kd_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

void kd_tensor_free(kd_tensor *t) {
    if (!t) return;
    if (t->owns) kd_rt_release(t->dev, t->mem, t->bytes);
    free(t);
}

kd_shape kd_tensor_shape(const kd_tensor *t) { return t->shape; }
size_t kd_tensor_numel(const kd_tensor *t) { return kd_shape_numel(t->shape); }
kd_device *kd_tensor_device(const kd_tensor *t) { return t->dev; }

void kd_ncdhw_to_ndhwc(const float *src, float *dst, kd_shape s) {
    size_t sp = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.c; c++) {
            const float *a = src + ((size_t)n * s.c + c) * sp;
            float *b = dst + (size_t)n * s.c * sp + c;
            for (size_t v = 0; v < sp; v++) b[v * s.c] = a[v];
        }
}

void kd_ndhwc_to_ncdhw(const float *src, float *dst, kd_shape s) {
    size_t sp = (size_t)s.d * s.h * s.w;
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.c; c++) {
            const float *a = src + (size_t)n * s.c * sp + c;
            float *b = dst + ((size_t)n * s.c + c) * sp;
            for (size_t v = 0; v < sp; v++) b[v] = a[v * s.c];
        }
}

kd_status kd_tensor_upload_ndhwc(kd_tensor *t, const float *src) {
    kd_status st = kd_rt_write(t->dev, t->mem, t->off * sizeof(float),
                               kd_tensor_numel(t) * sizeof(float), src);
    char b[96];
    return st ? kd_fail_context(st, "uploading tensor %s", kd_shape_str(t->shape, b, sizeof b)) : KD_OK;
}

kd_status kd_tensor_download_ndhwc(const kd_tensor *t, float *dst) {
    kd_status st = kd_rt_read(t->dev, t->mem, t->off * sizeof(float),
                              kd_tensor_numel(t) * sizeof(float), dst);
    char b[96];
    return st ? kd_fail_context(st, "downloading tensor %s", kd_shape_str(t->shape, b, sizeof b))
              : KD_OK;
}

kd_status kd_tensor_upload_ndhwc_async(kd_tensor *t, const float *src) {
    return kd_rt_write_async(t->dev, t->mem, t->off * sizeof(float),
                             kd_tensor_numel(t) * sizeof(float), src);
}

kd_status kd_tensor_download_ndhwc_async(const kd_tensor *t, float *dst, kd_event **ev) {
    return kd_rt_read_async(t->dev, t->mem, t->off * sizeof(float),
                            kd_tensor_numel(t) * sizeof(float), dst, ev);
}

kd_status kd_tensor_upload(kd_tensor *t, const float *ncdhw) {
    if (t->shape.c == 1) return kd_tensor_upload_ndhwc(t, ncdhw);
    float *tmp = malloc(kd_tensor_numel(t) * sizeof(float));
    if (!tmp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "host staging buffer for upload");
    kd_ncdhw_to_ndhwc(ncdhw, tmp, t->shape);
    kd_status s = kd_tensor_upload_ndhwc(t, tmp);
    free(tmp);
    return s;
}

kd_status kd_tensor_download(const kd_tensor *t, float *ncdhw) {
    if (t->shape.c == 1) return kd_tensor_download_ndhwc(t, ncdhw);
    float *tmp = malloc(kd_tensor_numel(t) * sizeof(float));
    if (!tmp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "host staging buffer for download");
    kd_status s = kd_tensor_download_ndhwc(t, tmp);
    if (!s) kd_ndhwc_to_ncdhw(tmp, ncdhw, t->shape);
    free(tmp);
    return s;
}

kd_status kd_tensor_fill(kd_tensor *t, float v) {
    kd_status st = kd_rt_fill(t->dev, t->mem, t->off * sizeof(float),
                              kd_tensor_numel(t) * sizeof(float), v);
    char b[96];
    return st ? kd_fail_context(st, "filling tensor %s", kd_shape_str(t->shape, b, sizeof b)) : KD_OK;
}

kd_status kd_tensor_copy(kd_tensor *dst, const kd_tensor *src) {
    if (kd_tensor_numel(dst) != kd_tensor_numel(src)) {
        char a[96], b[96];
        return kd_fail(KD_ERR_SHAPE, "copy from %s into %s", kd_shape_str(src->shape, a, 96),
                       kd_shape_str(dst->shape, b, 96));
    }
    return kd_rt_copy(dst->dev, src->mem, src->off * sizeof(float), dst->mem,
                      dst->off * sizeof(float), kd_tensor_numel(src) * sizeof(float));
}

static kd_status make_view(kd_tensor *t, size_t off, kd_shape s, kd_tensor **out) {
    kd_tensor *v = calloc(1, sizeof *v);
    if (!v) return kd_fail(KD_ERR_OUT_OF_MEMORY, "tensor view");
    v->dev = t->dev;
    v->shape = s;
    v->mem = t->mem;
    v->off = t->off + off;
    v->owns = 0;
    *out = v;
    return KD_OK;
}

kd_status kd_tensor_view_batch(kd_tensor *t, int i, int count, kd_tensor **out) {
    *out = NULL;
    if (i < 0 || count <= 0 || i + count > t->shape.n)
        return kd_fail(KD_ERR_SHAPE, "batch view [%d, %d) of a tensor with N=%d", i, i + count,
                       t->shape.n);
    kd_shape s = t->shape;
    s.n = count;
    return make_view(t, (size_t)i * kd_shape_numel(s) / (size_t)count, s, out);
}

kd_status kd_tensor_view(kd_tensor *t, size_t offset, kd_shape s, kd_tensor **out) {
    *out = NULL;
    kd_status st = check_shape(s);
    if (st) return st;
    if (offset + kd_shape_numel(s) > kd_tensor_numel(t)) {
        char a[96];
        return kd_fail(KD_ERR_SHAPE, "view of %zu elements at %zu past the end of %s",
                       kd_shape_numel(s), offset, kd_shape_str(t->shape, a, sizeof a));
    }
    return make_view(t, offset, s, out);
}
