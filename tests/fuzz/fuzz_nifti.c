/* libFuzzer target: kd_nifti_read and kd_nifti_read_header on arbitrary bytes.
 *
 * The input is written to a file, because the reader takes a path as users' files
 * do: an input starting with the gzip magic as is, to .nii.gz (corrupt streams,
 * trailers); an input starting with 'Z' (never a valid header: sizeof_hdr would be
 * wrong) has the rest gzip-compressed here, to .nii.gz, so that mutated headers also
 * reach the compressed path; anything else to .nii. Any crash, ASan or
 * UBSan report, leak or allocation above -malloc_limit_mb (tests/fuzz/run_fuzz.sh sets
 * it from what -max_len bytes can justify) fails the run. On success, the volume
 * must be consistent with the file: catches a reader that accepts a header whose
 * voxel count the file cannot hold, or returns non-finite voxels. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "kdseg/data.h"

/* Largest expansion ratio of deflate (zlib's technical note: 1032:1). */
#define DEFLATE_MAX_RATIO 1032

static char g_path[2][128];

static void fail(const char *what, const kd_volume *v, size_t size) {
    fprintf(stderr, "fuzz_nifti: %s (dims %d %d %d %d, %zu input bytes)\n", what, v->nx, v->ny,
            v->nz, v->nt, size);
    abort();
}

static void check(const kd_volume *v, size_t size, int gz, int with_data) {
    if (v->nx < 1 || v->ny < 1 || v->nz < 1 || v->nt < 1) fail("non-positive dimension", v, size);
    double nvox = (double)v->nx * v->ny * v->nz * v->nt;
    double bound = gz ? (double)size * DEFLATE_MAX_RATIO : (double)size;
    /* every voxel takes at least one byte of (uncompressed) file */
    if (with_data && nvox > bound) fail("more voxels than the file can hold", v, size);
    if (!with_data) {
        if (v->data) fail("header-only read returned data", v, size);
        return;
    }
    if (!v->data) fail("no data", v, size);
    for (size_t i = 0; i < (size_t)nvox; i++)
        if (!isfinite(v->data[i])) fail("non-finite voxel accepted", v, size);
}

/* gzip-compresses in[0..n) into a malloc'd buffer; NULL on failure. */
static unsigned char *gzip_bytes(const uint8_t *in, size_t n, size_t *out_n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    unsigned char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int r = deflate(&z, Z_FINISH);
    *out_n = cap - z.avail_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0][0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_path[0], sizeof g_path[0], "%s/kdfuzz-%d.nii", tmp ? tmp : "/tmp", (int)getpid());
        snprintf(g_path[1], sizeof g_path[1], "%s.gz", g_path[0]);
    }
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    unsigned char *packed = NULL;
    const uint8_t *bytes = data;
    size_t nbytes = size;
    int zmode = size >= 1 && data[0] == 'Z';
    if (zmode) {
        packed = gzip_bytes(data + 1, size - 1, &nbytes);
        if (!packed) return 0;
        bytes = packed;
        gz = 1;
    }
    const char *path = g_path[gz];
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(packed);
        return 0;
    }
    size_t w = fwrite(bytes, 1, nbytes, f);
    fclose(f);
    free(packed);
    if (w != nbytes) return 0;
    /* in 'Z' mode the uncompressed bytes are known: bound the voxels by them */
    if (zmode) size = size - 1;
    for (int with_data = 0; with_data < 2; with_data++) {
        kd_volume *v = NULL;
        kd_status s = with_data ? kd_nifti_read(path, &v) : kd_nifti_read_header(path, &v);
        if (s == KD_OK) {
            if (!v) abort();
            check(v, size, gz && !zmode, with_data);
        } else if (v) {
            fprintf(stderr, "fuzz_nifti: failed read left a volume\n");
            abort();
        }
        kd_volume_free(v);
    }
    unlink(path);
    return 0;
}
