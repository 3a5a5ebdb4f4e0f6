/* NIfTI-1/2 volumes: reading any common datatype into float32, writing on a source
 * grid. libnifti parses the header into its nifti_image (qform/sform); the raw header
 * is checked here first (so absurd sizes are refused before anything is allocated)
 * and the voxels are read here with zlib, checking every count and the gzip CRC,
 * because libnifti prints to stderr and returns void where it can fail. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti/nifti2_io.h>

#include "data_internal.h"

#define KD_FTYPE_NIFTI1_1 1
#define KD_FTYPE_NIFTI2_1 4

/* libnifti keeps global options; its calls are serialised. */
static pthread_mutex_t g_nifti_lock = PTHREAD_MUTEX_INITIALIZER;

static void nifti_quiet(void) {
    static int done;
    if (!done) {
        nifti_set_debug_level(0);
        done = 1;
    }
}

/* ------------------------------------------------------------ raw header -- */

typedef struct raw_hdr {
    int version, swapped;
    int64_t dim[8];
    int datatype, bitpix;
    int64_t vox_offset;
    double scl_slope, scl_inter; /* as stored (NaN kept) */
} raw_hdr;

static void swap_bytes(void *p, int n) {
    unsigned char *b = p;
    for (int i = 0; i < n / 2; i++) {
        unsigned char t = b[i];
        b[i] = b[n - 1 - i];
        b[n - 1 - i] = t;
    }
}

static int32_t rd_i32(const unsigned char *b, int sw) {
    int32_t v;
    memcpy(&v, b, 4);
    if (sw) swap_bytes(&v, 4);
    return v;
}
static int16_t rd_i16(const unsigned char *b, int sw) {
    int16_t v;
    memcpy(&v, b, 2);
    if (sw) swap_bytes(&v, 2);
    return v;
}
static int64_t rd_i64(const unsigned char *b, int sw) {
    int64_t v;
    memcpy(&v, b, 8);
    if (sw) swap_bytes(&v, 8);
    return v;
}
static float rd_f32(const unsigned char *b, int sw) {
    float v;
    memcpy(&v, b, 4);
    if (sw) swap_bytes(&v, 4);
    return v;
}

static int dt_bytes(int dt) {
    switch (dt) {
    case KD_DT_UINT8:
    case KD_DT_INT8:
        return 1;
    case KD_DT_INT16:
    case KD_DT_UINT16:
        return 2;
    case KD_DT_INT32:
    case KD_DT_UINT32:
    case KD_DT_FLOAT32:
        return 4;
    case KD_DT_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Parses and checks the first bytes of the file. n: bytes available. */
static kd_status parse_raw(const char *path, const unsigned char *b, int n, raw_hdr *h) {
    memset(h, 0, sizeof *h);
    if (n < 4) return kd_fail(KD_ERR_FORMAT, "%s: not a NIfTI file (only %d bytes)", path, n);
    int32_t sz = rd_i32(b, 0);
    if (sz == 348 || sz == 540)
        h->swapped = 0;
    else if (rd_i32(b, 1) == 348 || rd_i32(b, 1) == 540)
        h->swapped = 1;
    else
        return kd_fail(KD_ERR_FORMAT,
                       "%s: not a NIfTI file (header size field %d, expected 348 or 540)", path,
                       sz);
    int sw = h->swapped;
    h->version = rd_i32(b, sw) == 348 ? 1 : 2;
    int need = h->version == 1 ? 348 : 540;
    if (n < need)
        return kd_fail(KD_ERR_FORMAT, "%s: truncated NIfTI-%d header (%d of %d bytes)", path,
                       h->version, n, need);
    if (h->version == 1) {
        const unsigned char *m = b + 344;
        if (!memcmp(m, "ni1", 4))
            return kd_fail(KD_ERR_UNSUPPORTED,
                           "%s: two-file NIfTI (.hdr/.img) is not supported; convert to .nii",
                           path);
        if (memcmp(m, "n+1", 4))
            return kd_fail(KD_ERR_FORMAT, "%s: not a NIfTI-1 file (bad magic at byte 344)", path);
        for (int i = 0; i < 8; i++)
            h->dim[i] = rd_i16(b + 40 + 2 * i, sw);
        h->datatype = rd_i16(b + 70, sw);
        h->bitpix = rd_i16(b + 72, sw);
        float off = rd_f32(b + 108, sw);
        if (!(off >= 0 && off < 1e9))
            return kd_fail(KD_ERR_FORMAT, "%s: bad vox_offset %g", path, (double)off);
        h->vox_offset = (int64_t)off;
        if (h->vox_offset < 352) h->vox_offset = 352;
        h->scl_slope = rd_f32(b + 112, sw);
        h->scl_inter = rd_f32(b + 116, sw);
    } else {
        const unsigned char *m = b + 4;
        if (!memcmp(m, "ni2", 4))
            return kd_fail(KD_ERR_UNSUPPORTED,
                           "%s: two-file NIfTI-2 (.hdr/.img) is not supported; convert to .nii",
                           path);
        if (memcmp(m, "n+2\0\r\n\032\n", 8))
            return kd_fail(KD_ERR_FORMAT, "%s: not a NIfTI-2 file (bad magic at byte 4)", path);
        h->datatype = rd_i16(b + 12, sw);
        h->bitpix = rd_i16(b + 14, sw);
        for (int i = 0; i < 8; i++)
            h->dim[i] = rd_i64(b + 16 + 8 * i, sw);
        h->vox_offset = rd_i64(b + 168, sw);
        if (h->vox_offset < 0 || h->vox_offset > 1000000000)
            return kd_fail(KD_ERR_FORMAT, "%s: bad vox_offset %lld", path,
                           (long long)h->vox_offset);
        if (h->vox_offset < 544) h->vox_offset = 544;
        double d;
        int64_t t = rd_i64(b + 176, sw);
        memcpy(&d, &t, 8);
        h->scl_slope = d;
        t = rd_i64(b + 184, sw);
        memcpy(&d, &t, 8);
        h->scl_inter = d;
    }
    int64_t nd = h->dim[0];
    if (nd < 1 || nd > 7)
        return kd_fail(KD_ERR_FORMAT, "%s: bad number of dimensions dim[0]=%lld", path,
                       (long long)nd);
    if (nd < 3)
        return kd_fail(KD_ERR_UNSUPPORTED, "%s: a %lld-D image; kdseg reads 3-D and 4-D volumes",
                       path, (long long)nd);
    for (int i = 1; i <= 7; i++) {
        if (i > nd) h->dim[i] = 1;
        if (h->dim[i] < 1)
            return kd_fail(KD_ERR_FORMAT, "%s: dimension %d is %lld", path, i,
                           (long long)h->dim[i]);
    }
    for (int i = 1; i <= 3; i++)
        if (h->dim[i] > KD_NIFTI_MAX_DIM)
            return kd_fail(KD_ERR_FORMAT,
                           "%s: absurd header size: dimension %d is %lld (limit %d); refusing to "
                           "allocate",
                           path, i, (long long)h->dim[i], KD_NIFTI_MAX_DIM);
    if (h->dim[4] > KD_NIFTI_MAX_T)
        return kd_fail(KD_ERR_FORMAT, "%s: absurd header size: 4th dimension %lld (limit %d)", path,
                       (long long)h->dim[4], KD_NIFTI_MAX_T);
    for (int i = 5; i <= 7; i++)
        if (h->dim[i] != 1)
            return kd_fail(KD_ERR_UNSUPPORTED,
                           "%s: %lld-D volumes are not supported (dim[%d]=%lld)", path,
                           (long long)nd, i, (long long)h->dim[i]);
    int64_t nvox = h->dim[1] * h->dim[2] * h->dim[3] * h->dim[4];
    if (nvox > KD_NIFTI_MAX_VOXELS)
        return kd_fail(KD_ERR_FORMAT, "%s: absurd header size: %lld voxels (limit %lld)", path,
                       (long long)nvox, (long long)KD_NIFTI_MAX_VOXELS);
    int nb = dt_bytes(h->datatype);
    if (!nb)
        return kd_fail(KD_ERR_UNSUPPORTED, "%s: unsupported datatype %d (%s)", path, h->datatype,
                       nifti_datatype_string(h->datatype));
    if (h->bitpix != 8 * nb)
        kd_log(KD_LOG_WARN, "%s: bitpix %d disagrees with datatype %s; using the datatype", path,
               h->bitpix, nifti_datatype_string(h->datatype));
    return KD_OK;
}

/* ------------------------------------------------------------ info ---- */

static char orient_char(int code) {
    switch (code) {
    case NIFTI_L2R:
        return 'R';
    case NIFTI_R2L:
        return 'L';
    case NIFTI_P2A:
        return 'A';
    case NIFTI_A2P:
        return 'P';
    case NIFTI_I2S:
        return 'S';
    case NIFTI_S2I:
        return 'I';
    default:
        return '?';
    }
}

static void fill_info(kd_volume *v, nifti_image *nim, int version) {
    kd_nifti_info *in = &v->info;
    memset(in, 0, sizeof *in);
    in->version = version;
    in->ndim = nim->dim[0];
    in->datatype = nim->datatype;
    in->datatype_name = nifti_datatype_string(nim->datatype);
    for (int i = 0; i < 4; i++)
        in->pixdim[i] = nim->pixdim[i + 1];
    in->scl_slope = nim->scl_slope;
    in->scl_inter = nim->scl_inter;
    in->qform_code = nim->qform_code;
    in->sform_code = nim->sform_code;
    nifti_dmat44 m;
    if (nim->sform_code > 0)
        m = nim->sto_xyz;
    else if (nim->qform_code > 0)
        m = nim->qto_xyz;
    else {
        memset(&m, 0, sizeof m);
        for (int i = 0; i < 3; i++)
            m.m[i][i] = nim->pixdim[i + 1] > 0 ? nim->pixdim[i + 1] : 1;
        m.m[3][3] = 1;
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            in->affine[r][c] = m.m[r][c];
    int ic, jc, kc;
    nifti_dmat44_to_orientation(m, &ic, &jc, &kc);
    in->orient[0] = orient_char(ic);
    in->orient[1] = orient_char(jc);
    in->orient[2] = orient_char(kc);
    in->orient[3] = 0;
    snprintf(in->descrip, sizeof in->descrip, "%.79s", nim->descrip);
    v->nx = (int)nim->nx;
    v->ny = (int)nim->ny;
    v->nz = (int)nim->nz;
    v->nt = (int)(nim->dim[0] >= 4 ? nim->nt : 1);
}

void kd_volume_free(kd_volume *v) {
    if (!v) return;
    if (v->hdr) {
        pthread_mutex_lock(&g_nifti_lock);
        nifti_image_free(v->hdr);
        pthread_mutex_unlock(&g_nifti_lock);
    }
    free(v->data);
    free(v->path);
    free(v);
}

static kd_status wrap_nim(nifti_image *nim, int version, const char *path, kd_volume **out) {
    kd_volume *v = calloc(1, sizeof *v);
    if (!v || (path && !(v->path = strdup(path)))) {
        free(v);
        pthread_mutex_lock(&g_nifti_lock);
        nifti_image_free(nim);
        pthread_mutex_unlock(&g_nifti_lock);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "volume header");
    }
    /* Extensions and file names are not carried into written files. */
    nim->data = NULL;
    v->hdr = nim;
    fill_info(v, nim, version);
    *out = v;
    return KD_OK;
}

/* ------------------------------------------------------------ reading -- */

static kd_status gz_fail(const char *path, gzFile f, const char *what) {
    int err = 0;
    const char *msg = gzerror(f, &err);
    if (err == Z_BUF_ERROR || err == Z_OK)
        return kd_fail(KD_ERR_FORMAT, "%s: truncated file (%s: unexpected end of data)", path,
                       what);
    if (err == Z_ERRNO)
        return kd_fail(KD_ERR_IO, "%s: read error (%s): %s", path, what, strerror(errno));
    /* zlib's message starts with the path; do not repeat it. */
    size_t pl = strlen(path);
    if (msg && !strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2)) msg += pl + 2;
    return kd_fail(KD_ERR_FORMAT, "%s: corrupt gzip data (%s): %s", path, what,
                   msg ? msg : "zlib error");
}

/* Converts n raw values to float (swapping, scaling); counts non-finite values. */
static int64_t convert(const unsigned char *raw, int64_t n, int dt, int sw, int scale, double slope,
                       double inter, float *dst) {
    int nb = dt_bytes(dt);
    int64_t bad = 0;
    unsigned char tmp[8];
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = raw + i * nb;
        if (sw) {
            memcpy(tmp, p, nb);
            swap_bytes(tmp, nb);
            p = tmp;
        }
        double v;
        switch (dt) {
        case KD_DT_UINT8:
            v = p[0];
            break;
        case KD_DT_INT8:
            v = (int8_t)p[0];
            break;
        case KD_DT_INT16: {
            int16_t x;
            memcpy(&x, p, 2);
            v = x;
            break;
        }
        case KD_DT_UINT16: {
            uint16_t x;
            memcpy(&x, p, 2);
            v = x;
            break;
        }
        case KD_DT_INT32: {
            int32_t x;
            memcpy(&x, p, 4);
            v = x;
            break;
        }
        case KD_DT_UINT32: {
            uint32_t x;
            memcpy(&x, p, 4);
            v = x;
            break;
        }
        case KD_DT_FLOAT32: {
            float x;
            memcpy(&x, p, 4);
            v = x;
            break;
        }
        default: {
            double x;
            memcpy(&x, p, 8);
            v = x;
            break;
        }
        }
        if (scale) v = v * slope + inter;
        float f = (float)v;
        if (!isfinite(f)) bad++;
        dst[i] = f;
    }
    return bad;
}

static kd_status read_volume(const char *path, int with_data, kd_volume **out) {
    *out = NULL;
    if (!path || !*path) return kd_fail(KD_ERR_INVALID_ARG, "NIfTI read: empty path");
    struct stat st;
    if (stat(path, &st) != 0)
        return kd_fail(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return kd_fail(KD_ERR_IO, "%s: is a folder, not a NIfTI file", path);
    gzFile f = gzopen(path, "rb");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(f, 1 << 17);
    unsigned char hb[540];
    int n = gzread(f, hb, sizeof hb);
    if (n < 0) {
        kd_status s = gz_fail(path, f, "header");
        gzclose(f);
        return s;
    }
    raw_hdr rh;
    kd_status s = parse_raw(path, hb, n, &rh);
    if (s) {
        gzclose(f);
        return s;
    }
    int compressed = !gzdirect(f);
    int64_t nvox = rh.dim[1] * rh.dim[2] * rh.dim[3] * rh.dim[4];
    int nb = dt_bytes(rh.datatype);
    int64_t nbytes = nvox * nb;
    /* deflate cannot expand more than about 1032:1: a compressed file whose header puts
     * its voxels (vox_offset, with any extensions before it, plus the voxels) further than
     * that is refused before anything is allocated. libnifti allocates each extension's
     * declared size, bounded only by vox_offset: an unbounded offset let a 111-byte .gz
     * ask it for 144 MiB (tests/fuzz/regress/gz_ext_esize_151M_n2.nii.gz). */
    if (compressed && rh.vox_offset + nbytes > 1032 * (int64_t)st.st_size + (1 << 20)) {
        gzclose(f);
        return kd_fail(KD_ERR_FORMAT,
                       "%s: the header claims %lld bytes (voxel offset %lld + %lld bytes of "
                       "voxels) but the compressed file has only %lld bytes: truncated or "
                       "hostile",
                       path, (long long)(rh.vox_offset + nbytes), (long long)rh.vox_offset,
                       (long long)nbytes, (long long)st.st_size);
    }
    if (!compressed && (int64_t)st.st_size < rh.vox_offset + nbytes) {
        gzclose(f);
        return kd_fail(KD_ERR_FORMAT,
                       "%s: truncated file: %lld bytes, header needs %lld (offset %lld + %lld x "
                       "%lld x %lld x %lld voxels of %d bytes)",
                       path, (long long)st.st_size, (long long)(rh.vox_offset + nbytes),
                       (long long)rh.vox_offset, (long long)rh.dim[1], (long long)rh.dim[2],
                       (long long)rh.dim[3], (long long)rh.dim[4], nb);
    }

    pthread_mutex_lock(&g_nifti_lock);
    nifti_quiet();
    nifti_image *nim = nifti_image_read(path, 0);
    pthread_mutex_unlock(&g_nifti_lock);
    if (!nim) {
        gzclose(f);
        return kd_fail(KD_ERR_FORMAT, "%s: libnifti could not parse the header", path);
    }
    if (nim->nvox != nvox || nim->datatype != rh.datatype) {
        gzclose(f);
        pthread_mutex_lock(&g_nifti_lock);
        nifti_image_free(nim);
        pthread_mutex_unlock(&g_nifti_lock);
        return kd_fail(KD_ERR_FORMAT, "%s: inconsistent header", path);
    }
    kd_volume *v = NULL;
    s = wrap_nim(nim, rh.version, path, &v);
    if (s) {
        gzclose(f);
        return s;
    }
    v->info.file_bytes = st.st_size;
    v->info.scl_slope = rh.scl_slope;
    v->info.scl_inter = rh.scl_inter;
    if (!with_data) {
        gzclose(f);
        *out = v;
        return KD_OK;
    }

    v->data = malloc((size_t)nvox * sizeof(float));
    const size_t chunk_vox = (1 << 20) / 8;
    unsigned char *buf = malloc(chunk_vox * 8 > 65536 ? chunk_vox * 8 : 65536);
    if (!v->data || !buf) {
        free(buf);
        gzclose(f);
        kd_volume_free(v);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s: %lld voxels", path, (long long)nvox);
    }
    /* Skip to the voxels (vox_offset may lie inside the 540 bytes read for the header). */
    if (gzrewind(f) != 0) {
        s = gz_fail(path, f, "rewind");
        goto fail;
    }
    int64_t pos = 0;
    while (pos < rh.vox_offset) {
        int want = (int)((rh.vox_offset - pos) < 65536 ? rh.vox_offset - pos : 65536);
        int r = gzread(f, buf, want);
        if (r <= 0) {
            s = r < 0 ? gz_fail(path, f, "header extensions")
                      : kd_fail(KD_ERR_FORMAT,
                                "%s: truncated file: ends at byte %lld, before "
                                "the voxel data at %lld",
                                path, (long long)pos, (long long)rh.vox_offset);
            goto fail;
        }
        pos += r;
    }
    int scale = isfinite(rh.scl_slope) && rh.scl_slope != 0;
    double slope = rh.scl_slope, inter = scale && isfinite(rh.scl_inter) ? rh.scl_inter : 0;
    int64_t bad = 0, done = 0, first_bad = -1;
    while (done < nvox) {
        int64_t k = nvox - done < (int64_t)chunk_vox ? nvox - done : (int64_t)chunk_vox;
        int want = (int)(k * nb);
        int r = gzread(f, buf, want);
        if (r < 0) {
            s = gz_fail(path, f, "voxel data");
            goto fail;
        }
        if (r != want) {
            int err = 0;
            gzerror(f, &err);
            if (err != Z_OK && err != Z_BUF_ERROR) {
                s = gz_fail(path, f, "voxel data");
                goto fail;
            }
            s = kd_fail(KD_ERR_FORMAT, "%s: truncated file: %lld of %lld bytes of voxel data (%s)",
                        path, (long long)(done * nb + (r > 0 ? r : 0)), (long long)nbytes,
                        compressed ? "gzip stream ends early" : "file ends early");
            goto fail;
        }
        int64_t b = convert(buf, k, rh.datatype, rh.swapped, scale, slope, inter, v->data + done);
        if (b && first_bad < 0)
            for (int64_t i = 0; i < k; i++)
                if (!isfinite(v->data[done + i])) {
                    first_bad = done + i;
                    break;
                }
        bad += b;
        done += k;
    }
    /* Read to the end so that zlib checks the gzip trailer (CRC and length). */
    for (;;) {
        int r = gzread(f, buf, 65536);
        if (r < 0) {
            s = gz_fail(path, f, "gzip trailer");
            goto fail;
        }
        if (r == 0) break;
    }
    int err = 0;
    gzerror(f, &err);
    if (err != Z_OK) {
        s = gz_fail(path, f, "gzip trailer");
        goto fail;
    }
    free(buf);
    buf = NULL;
    if (gzclose(f) != Z_OK) {
        kd_volume_free(v);
        return kd_fail(KD_ERR_FORMAT, "%s: gzip stream error at close", path);
    }
    if (bad) {
        int64_t plane = (int64_t)v->nx * v->ny, vol = plane * v->nz;
        int64_t t = first_bad / vol, r = first_bad % vol;
        kd_status e = kd_fail(
            KD_ERR_NUMERIC, "%s: %lld NaN/Inf voxels (first at i=%lld j=%lld k=%lld t=%lld)", path,
            (long long)bad, (long long)(r % v->nx), (long long)((r / v->nx) % v->ny),
            (long long)(r / plane), (long long)t);
        kd_volume_free(v);
        return e;
    }
    *out = v;
    return KD_OK;
fail:
    free(buf);
    gzclose(f);
    kd_volume_free(v);
    return s;
}

kd_status kd_nifti_read(const char *path, kd_volume **out) { return read_volume(path, 1, out); }

kd_status kd_nifti_read_header(const char *path, kd_volume **out) {
    return read_volume(path, 0, out);
}

/* ----------------------------------------------------------- geometry -- */

kd_status kd_volume_create_geometry(int nx, int ny, int nz, const double spacing[3],
                                    const double affine[4][4], kd_volume **out) {
    *out = NULL;
    if (nx < 1 || ny < 1 || nz < 1 || nx > KD_NIFTI_MAX_DIM || ny > KD_NIFTI_MAX_DIM ||
        nz > KD_NIFTI_MAX_DIM)
        return kd_fail(KD_ERR_INVALID_ARG, "volume geometry %dx%dx%d out of range", nx, ny, nz);
    double sp[3] = {1, 1, 1};
    if (spacing)
        for (int i = 0; i < 3; i++) {
            if (!(spacing[i] > 0)) return kd_fail(KD_ERR_INVALID_ARG, "spacing must be > 0");
            sp[i] = spacing[i];
        }
    nifti_dmat44 m;
    memset(&m, 0, sizeof m);
    if (affine) {
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                m.m[r][c] = affine[r][c];
    } else {
        /* LPS as BraTS (i -> left, j -> posterior, k -> superior), centred at 0. */
        m.m[0][0] = -sp[0];
        m.m[1][1] = -sp[1];
        m.m[2][2] = sp[2];
        m.m[0][3] = sp[0] * (nx - 1) / 2.0;
        m.m[1][3] = sp[1] * (ny - 1) / 2.0;
        m.m[2][3] = -sp[2] * (nz - 1) / 2.0;
        m.m[3][3] = 1;
    }
    int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
    pthread_mutex_lock(&g_nifti_lock);
    nifti_quiet();
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 0);
    if (nim) {
        for (int i = 0; i < 3; i++)
            nim->pixdim[i + 1] = sp[i];
        nim->dx = sp[0];
        nim->dy = sp[1];
        nim->dz = sp[2];
        double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
        nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
        nim->quatern_b = qb;
        nim->quatern_c = qc;
        nim->quatern_d = qd;
        nim->qoffset_x = qx;
        nim->qoffset_y = qy;
        nim->qoffset_z = qz;
        nim->qfac = qfac;
        nim->qto_xyz = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, sp[0], sp[1], sp[2], qfac);
        nim->qto_ijk = nifti_dmat44_inverse(nim->qto_xyz);
        nim->sto_xyz = m;
        nim->sto_ijk = nifti_dmat44_inverse(m);
        nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
        nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
        nim->xyz_units = NIFTI_UNITS_MM;
        nim->time_units = NIFTI_UNITS_SEC;
        nim->nifti_type = KD_FTYPE_NIFTI1_1;
    }
    pthread_mutex_unlock(&g_nifti_lock);
    if (!nim) return kd_fail(KD_ERR_OUT_OF_MEMORY, "volume geometry");
    return wrap_nim(nim, 1, NULL, out);
}

kd_status kd_volume_copy_header(const kd_volume *v, kd_volume **out) {
    *out = NULL;
    pthread_mutex_lock(&g_nifti_lock);
    nifti_image *nim = nifti_copy_nim_info(v->hdr);
    pthread_mutex_unlock(&g_nifti_lock);
    if (!nim) return kd_fail(KD_ERR_OUT_OF_MEMORY, "copying a NIfTI header");
    kd_status s = wrap_nim(nim, v->info.version, v->path, out);
    if (!s) (*out)->info.file_bytes = v->info.file_bytes;
    return s;
}

double kd_volume_affine_diff(const kd_volume *a, const kd_volume *b) {
    double m = 0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            double d = fabs(a->info.affine[r][c] - b->info.affine[r][c]);
            if (d > m) m = d;
        }
    return m;
}

/* The header of a volume as the bytes of a single-file NIfTI, with the given dims,
 * datatype and scaling. len: 348 or 540. */
static kd_status make_header(const kd_volume *geom, int version, int nt, int dt, double slope,
                             double inter, const kd_nifti_meta *meta, unsigned char *buf,
                             int *len) {
    pthread_mutex_lock(&g_nifti_lock);
    nifti_image *nim = nifti_copy_nim_info(geom->hdr);
    int ok = nim != NULL;
    if (ok) {
        int nbyper = 0, swapsize = 0;
        nifti_datatype_sizes(dt, &nbyper, &swapsize);
        nim->dim[0] = nt > 1 ? 4 : 3;
        nim->dim[1] = geom->nx;
        nim->dim[2] = geom->ny;
        nim->dim[3] = geom->nz;
        nim->dim[4] = nt;
        for (int i = 5; i < 8; i++)
            nim->dim[i] = 1;
        if (nt > 1 && !(nim->pixdim[4] > 0)) nim->pixdim[4] = 1;
        for (int i = nt > 1 ? 5 : 4; i < 8; i++)
            nim->pixdim[i] = 0;
        nifti_update_dims_from_array(nim);
        /* which drops trailing axes of size 1: a 1x1x1 volume would be written 1-D and
         * read back as "a 1-D image"; a volume is 3-D (4-D with volumes) whatever its size */
        nim->ndim = nim->dim[0] = nt > 1 ? 4 : 3;
        nim->datatype = dt;
        nim->nbyper = nbyper;
        nim->swapsize = swapsize;
        nim->scl_slope = slope;
        nim->scl_inter = inter;
        nim->cal_min = nim->cal_max = 0;
        nim->intent_code = meta ? meta->intent_code : 0;
        snprintf(nim->intent_name, sizeof nim->intent_name, "%s",
                 meta && meta->intent_name ? meta->intent_name : "");
        snprintf(nim->descrip, sizeof nim->descrip, "%s",
                 meta && meta->descrip ? meta->descrip : "kdseg");
        nim->aux_file[0] = 0;
        nim->nifti_type = version == 2 ? KD_FTYPE_NIFTI2_1 : KD_FTYPE_NIFTI1_1;
        nim->iname_offset = version == 2 ? 544 : 352;
        if (version == 2) {
            nifti_2_header h;
            ok = nifti_convert_nim2n2hdr(nim, &h) == 0;
            h.vox_offset = 544;
            memcpy(h.magic, "n+2\0\r\n\032\n", 8);
            memcpy(buf, &h, sizeof h);
            *len = (int)sizeof h;
        } else {
            nifti_1_header h;
            ok = nifti_convert_nim2n1hdr(nim, &h) == 0;
            h.vox_offset = 352;
            memcpy(h.magic, "n+1", 4);
            memcpy(buf, &h, sizeof h);
            *len = (int)sizeof h;
        }
        nifti_image_free(nim);
    }
    pthread_mutex_unlock(&g_nifti_lock);
    if (!ok) return kd_fail(KD_ERR_INTERNAL, "could not build a NIfTI-%d header", version);
    return KD_OK;
}

kd_status kd_volume_header_bytes(const kd_volume *v, unsigned char *buf, int *len) {
    return make_header(v, v->info.version == 2 ? 2 : 1, v->nt, v->info.datatype, v->info.scl_slope,
                       v->info.scl_inter, NULL, buf, len);
}

kd_status kd_volume_from_header_bytes(const unsigned char *buf, int len, const char *path,
                                      kd_volume **out) {
    *out = NULL;
    raw_hdr rh;
    kd_status s = parse_raw(path ? path : "(cached header)", buf, len, &rh);
    if (s) return s;
    pthread_mutex_lock(&g_nifti_lock);
    nifti_quiet();
    nifti_image *nim = NULL;
    if (rh.version == 1 && !rh.swapped) {
        nifti_1_header h;
        memcpy(&h, buf, sizeof h);
        nim = nifti_convert_n1hdr2nim(h, path);
    } else if (rh.version == 2 && !rh.swapped) {
        nifti_2_header h;
        memcpy(&h, buf, sizeof h);
        nim = nifti_convert_n2hdr2nim(h, path);
    }
    pthread_mutex_unlock(&g_nifti_lock);
    if (!nim) return kd_fail(KD_ERR_FORMAT, "%s: cached NIfTI header unreadable", path);
    return wrap_nim(nim, rh.version, path, out);
}

/* ------------------------------------------------------------ writing -- */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

kd_status kd_nifti_write(const char *path, const kd_volume *geom, int nt, int datatype,
                         const void *data, const kd_nifti_write_opts *opts) {
    return kd_nifti_write_meta(path, geom, nt, datatype, data, opts, NULL);
}

kd_status kd_nifti_write_meta(const char *path, const kd_volume *geom, int nt, int datatype,
                              const void *data, const kd_nifti_write_opts *opts,
                              const kd_nifti_meta *meta) {
    if (!path || !geom || !data || nt < 1 || nt > KD_NIFTI_MAX_T)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: NIfTI write: bad arguments (nt %d)",
                       path ? path : "(null)", nt);
    int nb = dt_bytes(datatype);
    if (!nb) return kd_fail(KD_ERR_UNSUPPORTED, "%s: cannot write datatype %d", path, datatype);
    int version = opts && opts->version ? opts->version : (geom->info.version == 2 ? 2 : 1);
    if (version != 1 && version != 2)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: NIfTI version %d", path, version);
    unsigned char hdr[544];
    int len = 0;
    kd_status s = make_header(geom, version, nt, datatype, opts ? opts->scl_slope : 0,
                              opts ? opts->scl_inter : 0, meta, hdr, &len);
    if (s) return kd_fail_context(s, "%s", path);
    memset(hdr + len, 0, 4); /* no extensions */
    len += 4;

    char tmp[KD_PATH_MAX];
    if ((s = kd_tmp_name(path, tmp, sizeof tmp))) return s;
    gzFile f = gzopen(kd_output_target(tmp), ends_with(path, ".gz") ? "wb6" : "wbT");
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    int ok = gzwrite(f, hdr, (unsigned)len) == len;
    size_t total = (size_t)geom->nx * geom->ny * geom->nz * nt * nb;
    const unsigned char *p = data;
    for (size_t off = 0; ok && off < total;) {
        unsigned k = (unsigned)(total - off < (1u << 24) ? total - off : (1u << 24));
        ok = gzwrite(f, p + off, k) == (int)k;
        off += k;
    }
    /* why a write failed, copied before gzclose frees the stream and gzerror's string
     * with it. For a system error zlib's string is "TMP: strerror" (ENOSPC, EIO): the
     * reason is its last part. */
    char why[256] = "";
    if (!ok) {
        int err = 0, e = errno;
        const char *msg = gzerror(f, &err), *colon = msg ? strrchr(msg, ':') : NULL;
        if (err == Z_ERRNO && colon && colon[1] == ' ') snprintf(why, sizeof why, "%s", colon + 2);
        else if (err == Z_ERRNO) snprintf(why, sizeof why, "%s", strerror(e));
        else snprintf(why, sizeof why, "%s", msg && *msg ? msg : "gzip error");
    }
    errno = 0;
    int cl = gzclose(f);
    if (ok && cl != Z_OK)
        snprintf(why, sizeof why, "%s", cl == Z_ERRNO && errno ? strerror(errno) : "gzip close failed");
    if (!ok || cl != Z_OK) {
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "%s: write failed: %s", path, why);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_fail(KD_ERR_IO, "%s: cannot rename the temporary file: %s", path, strerror(e));
    }
    return KD_OK;
}
