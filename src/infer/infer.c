/* Whole-volume and sliding-window inference, test-time flips, ensembles, resident on the
 * device: the image goes up once, every window is cut (with its flip and zero padding at
 * the borders), run through the models (several windows and flips per forward pass where
 * memory allows), blended with Gaussian weights into per-voxel accumulators and
 * normalised there; one download brings back the probabilities or the label map. The
 * host only walks the windows. The ops are in src/ops/window.c, their C references, the
 * former host path, in src/ops/ref/ref_window.c. */
#include "kdseg/infer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../ops/ops.h"

#define KD_INFER_MAX_POS 256 /* window positions per axis */

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
    for (int a = 0; a < 3; a++)
        s[a] = t[a] / 8.0;
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

/* Window start positions along one axis, evenly spaced as nnU-Net does. A tile longer
 * than the axis (padded up to the divisor) starts at 0. */
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

/* ---- the plan: tile, windows, batch, memory ----------------------------------------- */

typedef struct infer_plan {
    int dims[3], C, K, div;
    int t[3];                           /* tile (D, H, W), multiples of div */
    int np[3], px[3][KD_INFER_MAX_POS]; /* window starts per axis */
    int tiled, nflip, nwin, passes;     /* passes: windows x flips */
    int batch;                          /* windows/flips per forward pass */
    int nacc;                           /* accumulators: 1, or one per model */
    size_t budget;                      /* device bytes available to the call */
} infer_plan;

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* Device bytes the call may use: 80% of the device limit (KDSEG_MEM_LIMIT or the global
 * memory) less what is already in use (the models' parameters), or o->mem_budget. */
static size_t mem_budget(kd_device *dev, const kd_infer_opts *o) {
    if (o->mem_budget) return o->mem_budget;
    size_t lim = kd_device_global_mem(dev);
    const char *e = getenv("KDSEG_MEM_LIMIT");
    if (e && *e) {
        double v = atof(e);
        char u = e[strlen(e) - 1];
        if (u == 'G' || u == 'g')
            v *= 1073741824.0;
        else if (u == 'M' || u == 'm')
            v *= 1048576.0;
        if (v > 0) lim = (size_t)v;
    }
    size_t b = lim / 10 * 8, used = kd_device_mem_current(dev);
    return b > used ? b - used : 0;
}

/* Device bytes held for the whole call: the image, the accumulators, and when tiled the
 * weight sum and the Gaussian weights of one tile. */
static size_t resident_bytes(const infer_plan *p, const int t[3], int tiled) {
    size_t nv = (size_t)p->dims[0] * p->dims[1] * p->dims[2], tv = (size_t)t[0] * t[1] * t[2];
    size_t f = ((size_t)p->C + (size_t)p->nacc * p->K) * nv + (tiled ? nv + tv : 0);
    return f * sizeof(float);
}

/* Bytes of a forward pass over `batch` windows of tile t: the worst model's activation
 * plan and the window batch itself. */
static kd_status pass_bytes(kd_model *const *models, int nmodels, const infer_plan *p,
                            const int t[3], int batch, size_t *out) {
    size_t worst = 0;
    for (int i = 0; i < nmodels; i++) {
        size_t b = 0;
        kd_status s = kd_model_plan(models[i], kd_shape5(batch, p->C, t[0], t[1], t[2]), 0, &b);
        if (s) return s;
        if (b > worst) worst = b;
    }
    *out = worst + (size_t)batch * p->C * t[0] * t[1] * t[2] * sizeof(float);
    return KD_OK;
}

static kd_status choose_tile(kd_model *const *models, int nmodels, const kd_infer_opts *o,
                             infer_plan *p) {
    const int *dims = p->dims, div = p->div;
    for (int a = 0; a < 3; a++)
        p->t[a] = round_up(dims[a], div);
    if (o->tile[0] > 0) {
        for (int a = 0; a < 3; a++) {
            if (o->tile[a] < p->t[a]) p->t[a] = o->tile[a];
            if (p->t[a] % div)
                return kd_fail(KD_ERR_INVALID_ARG, "tile %dx%dx%d: sizes must be multiples of %d",
                               o->tile[0], o->tile[1], o->tile[2], div);
        }
        return KD_OK;
    }
    size_t need;
    kd_status s = pass_bytes(models, nmodels, p, p->t, 1, &need);
    if (s) return s;
    if (need + resident_bytes(p, p->t, 0) <= p->budget && !o->force_tiles) return KD_OK;
    /* the largest cube (clipped to the padded volume) that fits */
    int side = 128, tt[3];
    for (; side > div; side -= div) {
        for (int a = 0; a < 3; a++)
            tt[a] = side < round_up(dims[a], div) ? side : round_up(dims[a], div);
        if ((s = pass_bytes(models, nmodels, p, tt, 1, &need))) return s;
        int smaller = side < dims[0] || side < dims[1] || side < dims[2];
        if (need + resident_bytes(p, tt, 1) <= p->budget && (!o->force_tiles || smaller)) break;
    }
    for (int a = 0; a < 3; a++)
        p->t[a] = side < round_up(dims[a], div) ? side : round_up(dims[a], div);
    return KD_OK;
}

/* The most passes per forward that fit, up to o->batch (0: 1); 1 when even two do not fit.
 * Batching is not the default: on this CPU it gains nothing (docs/PERFORMANCE.md), and a
 * batch is a new conv shape, for which the conv chooser may pick another implementation
 * whose sums round differently (1e-7), so results would move against batch 1. */
static kd_status choose_batch(kd_model *const *models, int nmodels, const kd_infer_opts *o,
                              infer_plan *p) {
    int cap = o->batch > 1 ? o->batch : 1;
    if (cap > p->passes) cap = p->passes;
    size_t fixed = resident_bytes(p, p->t, p->tiled);
    for (p->batch = cap; p->batch > 1; p->batch--) {
        size_t need;
        kd_status s = pass_bytes(models, nmodels, p, p->t, p->batch, &need);
        if (s) return s;
        if (fixed + need <= p->budget) break;
    }
    return KD_OK;
}

static kd_status make_plan(kd_model *const *models, int nmodels, int C, int D, int H, int W,
                           const kd_infer_opts *o, int members, infer_plan *p) {
    memset(p, 0, sizeof *p);
    if (nmodels < 1) return kd_fail(KD_ERR_INVALID_ARG, "inference needs at least one model");
    if (D < 1 || H < 1 || W < 1)
        return kd_fail(KD_ERR_SHAPE, "volume %dx%dx%d: sizes must be positive", D, H, W);
    p->K = kd_model_out_channels(models[0]);
    p->C = C;
    p->div = 1;
    for (int i = 0; i < nmodels; i++) {
        if (kd_model_out_channels(models[i]) != p->K || kd_model_in_channels(models[i]) != C)
            return kd_fail(KD_ERR_SHAPE,
                           "ensemble: model %d (%s) takes %d channels and gives %d; the image has "
                           "%d and model 0 gives %d",
                           i, kd_model_spec(models[i]), kd_model_in_channels(models[i]),
                           kd_model_out_channels(models[i]), C, p->K);
        if (kd_model_device(models[i]) != kd_model_device(models[0]))
            return kd_fail(KD_ERR_INVALID_ARG, "ensemble: model %d (%s) is on another device", i,
                           kd_model_spec(models[i]));
        int d = kd_model_divisor(models[i]);
        if (d > p->div) p->div = d;
    }
    p->dims[0] = D, p->dims[1] = H, p->dims[2] = W;
    p->nflip = o->tta >= 8 ? 8 : o->tta >= 4 ? 4 : 1;
    p->nacc = members ? nmodels : 1;
    p->budget = mem_budget(kd_model_device(models[0]), o);
    kd_status s = choose_tile(models, nmodels, o, p);
    if (s) return s;
    for (int a = 0; a < 3; a++)
        p->np[a] = positions(p->dims[a], p->t[a], o->overlap, p->px[a], KD_INFER_MAX_POS);
    p->nwin = p->np[0] * p->np[1] * p->np[2];
    p->tiled = p->nwin > 1;
    p->passes = p->nwin * p->nflip;
    return choose_batch(models, nmodels, o, p);
}

/* Window start and flip of pass i: windows in z, y, x order, the flips of each window in
 * turn (0: none, then the bits W, H, D as kd_infer_opts.tta says). */
static void pass_at(const infer_plan *p, int i, int off[3], int *flip) {
    int w = i / p->nflip;
    *flip = i % p->nflip;
    off[2] = p->px[2][w % p->np[2]];
    off[1] = p->px[1][w / p->np[2] % p->np[1]];
    off[0] = p->px[0][w / (p->np[2] * p->np[1])];
}

/* ---- the run ----------------------------------------------------------------------- */

typedef enum { OUT_PROBS, OUT_LABELS } out_kind;

typedef struct infer_out {
    out_kind kind;
    float *probs;    /* OUT_PROBS: nacc x (K, D, H, W) */
    uint8_t *labels; /* OUT_LABELS: (D, H, W) */
    float threshold; /* OUT_LABELS */
    int et_label;
} infer_out;

typedef struct infer_dev {
    kd_tensor *img, *x, *w, *wsum, **acc, *lab;
    int nacc;
} infer_dev;

static void dev_free(infer_dev *b) {
    kd_tensor_free(b->img);
    kd_tensor_free(b->x);
    kd_tensor_free(b->w);
    kd_tensor_free(b->wsum);
    kd_tensor_free(b->lab);
    for (int i = 0; b->acc && i < b->nacc; i++)
        kd_tensor_free(b->acc[i]);
    free(b->acc);
    memset(b, 0, sizeof *b);
}

/* The image up, the accumulators zeroed, the tile's weights. */
static kd_status dev_setup(kd_device *dev, const infer_plan *p, const float *image, infer_dev *b) {
    const int D = p->dims[0], H = p->dims[1], W = p->dims[2], *t = p->t;
    kd_status s;
    b->nacc = p->nacc;
    if (!(b->acc = calloc((size_t)p->nacc, sizeof *b->acc)))
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "inference: accumulator list");
    if ((s = kd_tensor_create(dev, kd_shape5(p->C, 1, D, H, W), &b->img)) ||
        (s = kd_tensor_upload_ndhwc(b->img, image)))
        return s;
    for (int i = 0; i < p->nacc; i++)
        if ((s = kd_tensor_zeros(dev, kd_shape5(p->K, 1, D, H, W), &b->acc[i]))) return s;
    if (p->tiled) {
        size_t tv = (size_t)t[0] * t[1] * t[2];
        float *wt = malloc(tv * sizeof(float));
        if (!wt)
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "Gaussian weights of a %dx%dx%d tile", t[0], t[1],
                           t[2]);
        kd_gaussian_weights(t, wt);
        s = kd_tensor_create(dev, kd_shape5(1, 1, t[0], t[1], t[2]), &b->w);
        if (!s) s = kd_tensor_upload_ndhwc(b->w, wt);
        free(wt);
        if (!s) s = kd_tensor_zeros(dev, kd_shape5(1, 1, D, H, W), &b->wsum);
        if (s) return s;
    }
    return kd_tensor_create(dev, kd_shape5(p->batch, p->C, t[0], t[1], t[2]), &b->x);
}

/* Passes [first, first + n) through every model, accumulated. */
static kd_status run_group(kd_model *const *models, int nmodels, const infer_plan *p, infer_dev *b,
                           int first, int n, float scale) {
    kd_tensor *xv = b->x;
    kd_status s = KD_OK;
    if (n < p->batch && (s = kd_tensor_view_batch(b->x, 0, n, &xv))) return s;
    int off[3], flip;
    for (int j = 0; j < n && !s; j++) {
        pass_at(p, first + j, off, &flip);
        s = kd_window_cut(b->img, off, flip, xv, j);
    }
    for (int m = 0; m < nmodels && !s; m++) {
        kd_tensor *y = NULL;
        if ((s = kd_model_forward(models[m], xv, 0, &y))) break;
        for (int j = 0; j < n && !s; j++) {
            pass_at(p, first + j, off, &flip);
            /* each window's weights enter the weight sum once, with its first pass */
            kd_tensor *ws = p->tiled && flip == 0 && m == 0 ? b->wsum : NULL;
            s = kd_window_accumulate(y, j, off, flip, b->w, scale, b->acc[p->nacc > 1 ? m : 0], ws);
        }
        kd_model_release(models[m]); /* the queue is in order: the accumulation comes first */
    }
    if (xv != b->x) kd_tensor_free(xv);
    return s;
}

static kd_status download(kd_device *dev, const infer_plan *p, infer_dev *b, const infer_out *out) {
    size_t nv = (size_t)p->dims[0] * p->dims[1] * p->dims[2];
    kd_status s = KD_OK;
    if (out->kind == OUT_PROBS) {
        for (int i = 0; i < p->nacc && !s; i++)
            s = kd_tensor_download_ndhwc(b->acc[i], out->probs + (size_t)i * p->K * nv);
        return s;
    }
    size_t n4 = (nv + 3) / 4;
    float *tmp = malloc(n4 * sizeof(float));
    if (!tmp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "label map of %zu voxels", nv);
    if (!(s = kd_tensor_create(dev, kd_shape5(1, 1, 1, 1, (int)n4), &b->lab)) &&
        !(s = kd_window_labels(b->acc[0], out->threshold, out->et_label, b->lab)) &&
        !(s = kd_tensor_download_ndhwc(b->lab, tmp))) {
        memcpy(out->labels, tmp, nv); /* bytes, packed 4 per element */
        for (size_t i = 0; i < nv; i++)
            if (out->labels[i] == 255) {
                s = kd_fail(KD_ERR_NUMERIC,
                            "inference: a region probability at voxel %zu is not "
                            "finite",
                            i);
                break;
            }
    }
    free(tmp);
    return s;
}

static kd_status infer_run(kd_model *const *models, int nmodels, int members, const float *image,
                           int C, int D, int H, int W, const kd_infer_opts *opt,
                           const infer_out *out, kd_infer_stats *st) {
    kd_infer_opts o;
    if (opt)
        o = *opt;
    else
        kd_infer_opts_default(&o);
    kd_infer_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    double t0 = now_s();
    infer_plan *p = malloc(sizeof *p);
    if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "inference plan");
    infer_dev b;
    memset(&b, 0, sizeof b);
    kd_status s = make_plan(models, nmodels, C, D, H, W, &o, members, p);
    kd_device *dev = nmodels > 0 ? kd_model_device(models[0]) : NULL;
    if (s) goto done;
    kd_device_mem_reset_peak(dev);
    if ((s = dev_setup(dev, p, image, &b))) goto done;
    float scale = 1.0f / (float)(p->nflip * (members ? 1 : nmodels));
    int progress = o.progress && p->tiled && kd_log_is_tty();
    for (int i = 0; i < p->passes && !s; i += p->batch) {
        int n = p->passes - i < p->batch ? p->passes - i : p->batch;
        s = run_group(models, nmodels, p, &b, i, n, scale);
        st->forwards += nmodels;
        if (!s && progress && !(s = kd_device_finish(dev)))
            fprintf(stderr, "\r  windows %d/%d", (i + n) / p->nflip, p->nwin);
    }
    if (progress) fprintf(stderr, "\n");
    for (int i = 0; i < p->nacc && p->tiled && !s; i++)
        s = kd_window_normalize(b.acc[i], b.wsum);
    if (!s) s = download(dev, p, &b, out);
    if (s) goto done;
    st->windows = p->nwin;
    st->passes = p->passes * nmodels;
    st->batch = p->batch;
    memcpy(st->tile, p->t, sizeof p->t);
    st->peak_device = kd_device_mem_peak(dev);
done:
    dev_free(&b);
    free(p);
    st->seconds = now_s() - t0;
    return s;
}

kd_status kd_infer_volume(kd_model *const *models, int nmodels, const float *image, int C, int D,
                          int H, int W, const kd_infer_opts *o, float *probs, kd_infer_stats *st) {
    infer_out out = {OUT_PROBS, probs, NULL, 0, 0};
    return infer_run(models, nmodels, 0, image, C, D, H, W, o, &out, st);
}

kd_status kd_infer_volume_members(kd_model *const *models, int nmodels, const float *image, int C,
                                  int D, int H, int W, const kd_infer_opts *o, float *probs,
                                  kd_infer_stats *st) {
    infer_out out = {OUT_PROBS, probs, NULL, 0, 0};
    return infer_run(models, nmodels, 1, image, C, D, H, W, o, &out, st);
}

kd_status kd_infer_volume_labels(kd_model *const *models, int nmodels, const float *image, int C,
                                 int D, int H, int W, const kd_infer_opts *o, float threshold,
                                 int et_label, uint8_t *labels, kd_infer_stats *st) {
    if (!isfinite(threshold))
        return kd_fail(KD_ERR_INVALID_ARG, "inference labels: threshold %g", threshold);
    if (et_label < 1 || et_label > 254)
        return kd_fail(KD_ERR_INVALID_ARG, "inference labels: ET label %d not in 1..254", et_label);
    if (nmodels > 0 && kd_model_out_channels(models[0]) != 3)
        return kd_fail(KD_ERR_SHAPE, "labels need 3 region outputs (WT, TC, ET); %s gives %d",
                       kd_model_spec(models[0]), kd_model_out_channels(models[0]));
    infer_out out = {OUT_LABELS, NULL, labels, threshold, et_label};
    return infer_run(models, nmodels, 0, image, C, D, H, W, o, &out, st);
}
