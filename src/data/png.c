/* A small PNG writer (zlib only); the charts and overlays drawn for it are in
 * src/infer/plot.c. */
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
    char tmp[KD_PATH_MAX];
    kd_status ts = kd_tmp_name(path, tmp, sizeof tmp);
    if (ts) {
        free(z);
        return ts;
    }
    FILE *f = fopen(kd_output_target(tmp), "wb");
    if (!f) {
        free(z);
        return kd_fail(KD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int ok = fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) &&
             chunk(f, "IDAT", z, (uint32_t)zlen) && chunk(f, "IEND", NULL, 0);
    int e = ok ? 0 : errno;
    free(z);
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
    if (!ok) {
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return KD_OK;
}
