/* Whole-volume and sliding-window inference, test-time flips, ensembles. */
#include "kdseg/infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kd_infer_opts_default(kd_infer_opts *o) {
    memset(o, 0, sizeof *o);
    o->tta = 0;
    o->overlap = 0.5f;
}

void kd_gaussian_weights(const int t[3], float *w) {
    double s[3];
    for (int a = 0; a < 3; a++) s[a] = t[a] / 8.0;
    float mx = 0;
    for (int z = 0; z < t[0]; z++)
        for (int y = 0; y < t[1]; y++)
            for (int x = 0; x < t[2]; x++) {
                double dz = z - (t[0] - 1) / 2.0, dy = y - (t[1] - 1) / 2.0,
                       dx = x - (t[2] - 1) / 2.0;
                double v = exp(-0.5 * (dz * dz / (s[0] * s[0]) + dy * dy / (s[1] * s[1]) +
                                       dx * dx / (s[2] * s[2])));
                size_t i = ((size_t)z * t[1] + y) * t[2] + x;
                w[i] = (float)v;
                if (w[i] > mx) mx = w[i];
            }
    size_t n = (size_t)t[0] * t[1] * t[2];
    float floor = 1e-3f;
    for (size_t i = 0; i < n; i++) {
        w[i] /= mx;
        if (w[i] < floor) w[i] = floor;
    }
}

/* Copy window [o, o+t) of a (C, D, H, W) volume, flipped along the axes in mask
 * (bit 0 W, bit 1 H, bit 2 D), into dst (C, t0, t1, t2). */
static void take_window(const float *src, int C, const int dims[3], const int o[3],
                        const int t[3], int flip, float *dst) {
    for (int c = 0; c < C; c++)
        for (int z = 0; z < t[0]; z++)
            for (int y = 0; y < t[1]; y++)
                for (int x = 0; x < t[2]; x++) {
                    int sz = flip & 4 ? t[0] - 1 - z : z, sy = flip & 2 ? t[1] - 1 - y : y,
                        sx = flip & 1 ? t[2] - 1 - x : x;
                    dst[(((size_t)c * t[0] + z) * t[1] + y) * t[2] + x] =
                        src[(((size_t)c * dims[0] + o[0] + sz) * dims[1] + o[1] + sy) * dims[2] +
                            o[2] + sx];
                }
}

/* acc[c, o + v] += weight[v] * p[c, flip(v)]; wsum[o + v] += weight[v] (once per pass set) */
static void put_window(float *acc, int K, const int dims[3], const int o[3], const int t[3],
                       int flip, const float *p, const float *wt, float scale) {
    for (int c = 0; c < K; c++)
        for (int z = 0; z < t[0]; z++)
            for (int y = 0; y < t[1]; y++)
                for (int x = 0; x < t[2]; x++) {
                    int sz = flip & 4 ? t[0] - 1 - z : z, sy = flip & 2 ? t[1] - 1 - y : y,
                        sx = flip & 1 ? t[2] - 1 - x : x;
                    size_t v = ((size_t)z * t[1] + y) * t[2] + x;
                    float pv = p[(((size_t)c * t[0] + sz) * t[1] + sy) * t[2] + sx];
                    acc[(((size_t)c * dims[0] + o[0] + z) * dims[1] + o[1] + y) * dims[2] + o[2] +
                        x] += scale * (wt ? wt[v] : 1.0f) * pv;
                }
}

/* Window start positions along one axis, evenly spaced as nnU-Net does. */
static int positions(int size, int tile, float overlap, int *pos, int max) {
    if (tile >= size) {
        pos[0] = 0;
        return 1;
    }
    double step = tile * (1.0 - overlap);
    int n = (int)ceil((size - tile) / step) + 1;
    if (n > max) n = max;
    for (int i = 0; i < n; i++)
        pos[i] = n == 1 ? 0 : (int)llround((double)i * (size - tile) / (double)(n - 1));
    return n;
}

static kd_status plan_bytes(kd_model *m, int C, const int t[3], size_t *b) {
    size_t peak = 0;
    kd_status s = kd_model_plan(m, kd_shape5(1, C, t[0], t[1], t[2]), 0, &peak);
    *b = peak + (size_t)C * t[0] * t[1] * t[2] * sizeof(float);
    return s;
}

kd_status kd_infer_volume(kd_model *const *models, int nmodels, const float *image, int C, int D,
                          int H, int W, const kd_infer_opts *opt, float *probs,
                          kd_infer_stats *st) {
    kd_infer_opts o;
    if (opt) o = *opt;
    else kd_infer_opts_default(&o);
    kd_infer_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    double t0 = now_s();
    if (nmodels < 1) return kd_fail(KD_ERR_INVALID_ARG, "inference needs at least one model");
    int K = kd_model_out_channels(models[0]), div = 1;
    for (int i = 0; i < nmodels; i++) {
        if (kd_model_out_channels(models[i]) != K || kd_model_in_channels(models[i]) != C)
            return kd_fail(KD_ERR_SHAPE,
                           "ensemble: model %d (%s) takes %d channels and gives %d; the image has "
                           "%d and model 0 gives %d",
                           i, kd_model_spec(models[i]), kd_model_in_channels(models[i]),
                           kd_model_out_channels(models[i]), C, K);
        int d = kd_model_divisor(models[i]);
        if (d > div) div = d;
    }
    int dims[3] = {D, H, W};
    for (int a = 0; a < 3; a++)
        if (dims[a] % div)
            return kd_fail(KD_ERR_SHAPE, "volume %dx%dx%d: sizes must be multiples of %d", D, H, W,
                           div);
    int nflip = o.tta >= 8 ? 8 : o.tta >= 4 ? 4 : 1;
    static const int flips4[4] = {0, 1, 2, 3};
    kd_device *dev = kd_model_device(models[0]);
    size_t budget = o.mem_budget;
    if (!budget) {
        size_t lim = kd_device_global_mem(dev);
        const char *e = getenv("KDSEG_MEM_LIMIT");
        if (e && *e) {
            double v = atof(e);
            char u = e[strlen(e) - 1];
            if (u == 'G' || u == 'g') v *= 1073741824.0;
            else if (u == 'M' || u == 'm') v *= 1048576.0;
            if (v > 0) lim = (size_t)v;
        }
        budget = lim / 10 * 8;
    }
    /* tile: the whole volume when it fits, else the largest cube that does */
    int t[3] = {D, H, W};
    if (o.tile[0] > 0) {
        for (int a = 0; a < 3; a++) {
            t[a] = o.tile[a] < dims[a] ? o.tile[a] : dims[a];
            if (t[a] % div)
                return kd_fail(KD_ERR_INVALID_ARG, "tile %dx%dx%d: sizes must be multiples of %d",
                               o.tile[0], o.tile[1], o.tile[2], div);
        }
    } else {
        size_t need = 0;
        kd_status s = KD_OK;
        for (int i = 0; i < nmodels && !s; i++) {
            size_t b;
            s = plan_bytes(models[i], C, t, &b);
            if (b > need) need = b;
        }
        if (s) return s;
        if (need > budget || o.force_tiles) {
            int side = 128;
            for (; side > div; side -= div) {
                int tt[3] = {side < D ? side : D, side < H ? side : H, side < W ? side : W};
                size_t worst = 0;
                for (int i = 0; i < nmodels; i++) {
                    size_t b;
                    plan_bytes(models[i], C, tt, &b);
                    if (b > worst) worst = b;
                }
                if (worst <= budget && (!o.force_tiles || side < D || side < H || side < W)) break;
            }
            for (int a = 0; a < 3; a++) t[a] = side < dims[a] ? side : dims[a];
            /* tiles must be multiples of the divisor */
            for (int a = 0; a < 3; a++) t[a] -= t[a] % div;
        }
    }
    int px[3][256], np[3];
    for (int a = 0; a < 3; a++) np[a] = positions(dims[a], t[a], o.overlap, px[a], 256);
    int tiled = np[0] * np[1] * np[2] > 1;
    size_t tv = (size_t)t[0] * t[1] * t[2], nv = (size_t)D * H * W;
    float *win = malloc(tv * C * sizeof(float)), *pout = malloc(tv * K * sizeof(float));
    float *wt = tiled ? malloc(tv * sizeof(float)) : NULL;
    float *wsum = tiled ? calloc(nv, sizeof(float)) : NULL;
    kd_tensor *x = NULL;
    kd_status s = KD_OK;
    if (!win || !pout || (tiled && (!wt || !wsum))) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "inference buffers for tile %dx%dx%d", t[0], t[1], t[2]);
        goto done;
    }
    if (tiled) kd_gaussian_weights(t, wt);
    memset(probs, 0, nv * K * sizeof(float));
    if ((s = kd_tensor_create(dev, kd_shape5(1, C, t[0], t[1], t[2]), &x))) goto done;
    kd_device_mem_reset_peak(dev);
    int total = np[0] * np[1] * np[2], done_w = 0;
    float scale = 1.0f / (float)(nflip * nmodels);
    for (int iz = 0; iz < np[0]; iz++)
        for (int iy = 0; iy < np[1]; iy++)
            for (int ix = 0; ix < np[2]; ix++) {
                int off[3] = {px[0][iz], px[1][iy], px[2][ix]};
                for (int f = 0; f < nflip; f++) {
                    int flip = nflip == 4 ? flips4[f] : f;
                    take_window(image, C, dims, off, t, flip, win);
                    if ((s = kd_tensor_upload(x, win))) goto done;
                    for (int mi = 0; mi < nmodels; mi++) {
                        kd_tensor *y = NULL;
                        if ((s = kd_model_forward(models[mi], x, 0, &y))) goto done;
                        s = kd_tensor_download(y, pout);
                        kd_model_release(models[mi]);
                        if (s) goto done;
                        put_window(probs, K, dims, off, t, flip, pout, wt, scale);
                        st->passes++;
                    }
                }
                if (tiled)
                    for (int z = 0; z < t[0]; z++)
                        for (int y = 0; y < t[1]; y++)
                            for (int xx = 0; xx < t[2]; xx++)
                                wsum[((size_t)(off[0] + z) * H + off[1] + y) * W + off[2] + xx] +=
                                    wt[((size_t)z * t[1] + y) * t[2] + xx];
                done_w++;
                if (o.progress && tiled && kd_log_is_tty())
                    fprintf(stderr, "\r  windows %d/%d", done_w, total);
            }
    if (o.progress && tiled && kd_log_is_tty()) fprintf(stderr, "\n");
    if (tiled)
        for (int c = 0; c < K; c++)
            for (size_t v = 0; v < nv; v++) probs[(size_t)c * nv + v] /= wsum[v];
    st->windows = total;
    memcpy(st->tile, t, sizeof t);
    st->peak_device = kd_device_mem_peak(dev);
done:
    st->seconds = now_s() - t0;
    kd_tensor_free(x);
    free(win);
    free(pout);
    free(wt);
    free(wsum);
    return s;
}
