/* Writes the fuzzer's seed corpus with the data layer's own writer: small volumes of
 * every datatype the reader accepts, NIfTI-1 and -2, .nii and .nii.gz, 3-D and 4-D,
 * with and without scaling. Usage: gen_seeds FOLDER */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/data.h"

static const struct {
    int code;
    const char *name;
    int size;
} dts[] = {{KD_DT_UINT8, "u8", 1},    {KD_DT_INT8, "i8", 1},    {KD_DT_INT16, "i16", 2},
           {KD_DT_UINT16, "u16", 2},  {KD_DT_INT32, "i32", 4},  {KD_DT_UINT32, "u32", 4},
           {KD_DT_FLOAT32, "f32", 4}, {KD_DT_FLOAT64, "f64", 8}};

static void fill(unsigned char *buf, int code, int n) {
    for (int i = 0; i < n; i++) {
        int v = (i * 7) % 5; /* 0..4: valid labels too */
        switch (code) {
        case KD_DT_UINT8: case KD_DT_INT8: buf[i] = (unsigned char)v; break;
        case KD_DT_INT16: case KD_DT_UINT16: { short s = (short)v; memcpy(buf + 2 * i, &s, 2); break; }
        case KD_DT_INT32: case KD_DT_UINT32: { int s = v; memcpy(buf + 4 * i, &s, 4); break; }
        case KD_DT_FLOAT32: { float s = (float)v * 0.5f; memcpy(buf + 4 * i, &s, 4); break; }
        default: { double s = v * 0.25; memcpy(buf + 8 * i, &s, 8); break; }
        }
    }
}

/* PATH.z: 'Z' and the bytes of PATH, which fuzz_nifti gzips itself (see there). */
static int add_z_copy(const char *path) {
    char zpath[1100];
    snprintf(zpath, sizeof zpath, "%s.z", path);
    FILE *in = fopen(path, "rb"), *out = fopen(zpath, "wb");
    int ok = in && out && fputc('Z', out) != EOF;
    int c;
    while (ok && (c = fgetc(in)) != EOF) ok = fputc(c, out) != EOF;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    if (!ok) fprintf(stderr, "gen_seeds: cannot write %s\n", zpath);
    return !ok;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds FOLDER\n");
        return 2;
    }
    const int nx = 3, ny = 4, nz = 2;
    int written = 0;
    for (int version = 1; version <= 2; version++)
        for (int nt = 1; nt <= 3; nt += 2)
            for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
                for (int gz = 0; gz < 2; gz++) {
                    const double sp[3] = {1.0, 1.5, 2.0};
                    kd_volume *g = NULL;
                    if (kd_volume_create_geometry(nx, ny, nz, sp, NULL, &g)) {
                        fprintf(stderr, "gen_seeds: %s\n", kd_last_error());
                        return 1;
                    }
                    int n = nx * ny * nz * nt;
                    unsigned char *buf = calloc((size_t)n, 8);
                    fill(buf, dts[d].code, n);
                    kd_nifti_write_opts o = {version, d % 3 == 1 ? 2.0 : 0.0, d % 3 == 1 ? -1.0 : 0.0};
                    char path[1024];
                    snprintf(path, sizeof path, "%s/v%d_t%d_%s%s", argv[1], version, nt,
                             dts[d].name, gz ? ".nii.gz" : ".nii");
                    kd_status s = kd_nifti_write(path, g, nt, dts[d].code, buf, &o);
                    free(buf);
                    kd_volume_free(g);
                    if (s) {
                        fprintf(stderr, "gen_seeds: %s\n", kd_last_error());
                        return 1;
                    }
                    written++;
                    if (!gz && add_z_copy(path)) return 1;
                }
    printf("gen_seeds: %d files in %s\n", written, argv[1]);
    return 0;
}
