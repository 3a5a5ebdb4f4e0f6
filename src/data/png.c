/* A small PNG writer (zlib only) and the slice montage used by `kdseg inspect` and
 * the segmentation overlays. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data_internal.h"

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int chunk(FILE *f, const char *type, const unsigned char *data, uint32_t len) {
    unsigned char h[8];
    be32(h, len);
    memcpy(h + 4, type, 4);
    uLong crc = crc32(0, Z_NULL, 0);
    crc = crc32(crc, (const Bytef *)type, 4);
    if (len) crc = crc32(crc, data, len);
    unsigned char c[4];
    be32(c, (uint32_t)crc);
    return fwrite(h, 1, 8, f) == 8 && (!len || fwrite(data, 1, len, f) == len) &&
           fwrite(c, 1, 4, f) == 4;
}

kd_status kd_png_write(const char *path, int width, int height, int channels,
                       const uint8_t *pixels) {
    if (!path || !pixels || width < 1 || height < 1 || width > 1 << 15 || height > 1 << 15 ||
        (channels != 1 && channels != 3 && channels != 4))
        return kd_fail(KD_ERR_INVALID_ARG, "%s: PNG %dx%d with %d channels", path ? path : "?",
                       width, height, channels);
    size_t stride = (size_t)width * channels, raw_len = (stride + 1) * height;
    unsigned char *raw = malloc(raw_len);
    uLongf zlen = compressBound((uLong)raw_len);
    unsigned char *z = malloc(zlen);
    if (!raw || !z) {
        free(raw);
        free(z);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: PNG buffers", path);
    }
    for (int y = 0; y < height; y++) {
        raw[y * (stride + 1)] = 0; /* filter: none */
        memcpy(raw + y * (stride + 1) + 1, pixels + y * stride, stride);
    }
    int zr = compress2(z, &zlen, raw, (uLong)raw_len, 6);
    free(raw);
    if (zr != Z_OK) {
        free(z);
        return kd_fail(KD_ERR_INTERNAL, "%s: zlib compress failed (%d)", path, zr);
    }
    unsigned char ihdr[13];
    be32(ihdr, (uint32_t)width);
    be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;
    ihdr[9] = channels == 1 ? 0 : channels == 3 ? 2 : 6;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    char tmp[4200];
    kd_status st = kd_tmp_name(path, tmp, sizeof tmp);
    if (st) {
        free(z);
        return st;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(z);
        return kd_fail(KD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int ok = fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) &&
             chunk(f, "IDAT", z, (uint32_t)zlen) && chunk(f, "IEND", NULL, 0);
    free(z);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return KD_OK;
}

/* ------------------------------------------------------------ montage -- */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* 0.5 and 99.5 percentiles of the nonzero voxels (a strided sample). */
static void window(const float *v, size_t n, float *lo, float *hi) {
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += v[i] != 0;
    *lo = 0;
    *hi = 1;
    if (!cnt) return;
    size_t stride = cnt > 200000 ? cnt / 200000 : 1, k = 0, m = 0;
    float *s = malloc((cnt / stride + 1) * sizeof(float));
    if (!s) return;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0 && k++ % stride == 0) s[m++] = v[i];
    qsort(s, m, sizeof(float), cmp_float);
    *lo = s[(size_t)(0.005 * (m - 1))];
    *hi = s[(size_t)(0.995 * (m - 1))];
    if (!(*hi > *lo)) *hi = *lo + 1;
    free(s);
}

kd_status kd_png_write_montage(const char *path, const float *image, int channels, int d, int h,
                               int w, const float *regions, const int centre[3]) {
    if (!image || channels < 1 || d < 1 || h < 1 || w < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: montage of %d channels %dx%dx%d", path ? path : "?",
                       channels, d, h, w);
    const size_t n = (size_t)d * h * w;
    int c[3] = {d / 2, h / 2, w / 2};
    if (centre) {
        for (int a = 0; a < 3; a++)
            c[a] = centre[a];
    } else if (regions) {
        double s[3] = {0, 0, 0}, cnt = 0;
        size_t i = 0;
        for (int z = 0; z < d; z++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++, i++)
                    if (regions[i] > 0.5f) {
                        s[0] += z;
                        s[1] += y;
                        s[2] += x;
                        cnt++;
                    }
        if (cnt)
            for (int a = 0; a < 3; a++)
                c[a] = (int)(s[a] / cnt + 0.5);
    }
    const int dims[3] = {d, h, w};
    for (int a = 0; a < 3; a++)
        c[a] = c[a] < 0 ? 0 : c[a] >= dims[a] ? dims[a] - 1 : c[a];
    const int gap = 2;
    int cw = w > h ? w : h, ch = h > d ? h : d;
    int W = channels * (cw + gap) + gap, H = 3 * (ch + gap) + gap;
    uint8_t *px = calloc((size_t)W * H * 3, 1);
    if (!px) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: montage %dx%d", path, W, H);
    for (int k = 0; k < channels; k++) {
        const float *v = image + k * n;
        float lo, hi;
        window(v, n, &lo, &hi);
        for (int view = 0; view < 3; view++) {
            /* axial: rows y, cols x; coronal: rows z (superior up), cols x;
               sagittal: rows z (superior up), cols y. */
            int rows = view == 0 ? h : d, cols = view == 2 ? h : w;
            int ox = gap + k * (cw + gap) + (cw - cols) / 2;
            int oy = gap + view * (ch + gap) + (ch - rows) / 2;
            for (int r = 0; r < rows; r++)
                for (int q = 0; q < cols; q++) {
                    int z, y, x;
                    if (view == 0) {
                        z = c[0];
                        y = r;
                        x = q;
                    } else if (view == 1) {
                        z = d - 1 - r;
                        y = c[1];
                        x = q;
                    } else {
                        z = d - 1 - r;
                        y = q;
                        x = c[2];
                    }
                    size_t i = ((size_t)z * h + y) * w + x;
                    float g = (v[i] - lo) / (hi - lo);
                    g = v[i] == 0 ? 0 : g < 0 ? 0 : g > 1 ? 1 : g; /* background black */
                    float rgb[3] = {g * 255, g * 255, g * 255};
                    if (regions) {
                        const float *col = NULL;
                        static const float et[3] = {255, 255, 0}, tc[3] = {255, 0, 0},
                                           wt[3] = {0, 255, 0};
                        if (regions[2 * n + i] > 0.5f)
                            col = et;
                        else if (regions[n + i] > 0.5f)
                            col = tc;
                        else if (regions[i] > 0.5f)
                            col = wt;
                        if (col)
                            for (int j = 0; j < 3; j++)
                                rgb[j] = 0.55f * rgb[j] + 0.45f * col[j];
                    }
                    uint8_t *o = px + ((size_t)(oy + r) * W + ox + q) * 3;
                    for (int j = 0; j < 3; j++)
                        o[j] = (uint8_t)lrintf(rgb[j]);
                }
        }
    }
    kd_status s = kd_png_write(path, W, H, 3, px);
    free(px);
    return s;
}
