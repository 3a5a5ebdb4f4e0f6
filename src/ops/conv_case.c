/* The conv layer shapes of the student and the teachers as runnable cases (kdseg/tune.h):
 * shared by `kdseg bench ops` (timing) and `kdseg tune` (tuning). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"
#include "kdseg/rng.h"

/* The student ResUNet (widths 16, 32, 64, 128): encoder 3x3x3 convs per level, the input
 * and output convs, the 2x2x2 stride-2 down convs, and the decoder's 1x1x1 convs (2C -> C
 * after the skip concatenation at level i, and C_{i+1} -> C_i at level i+1 before upsampling).
 * Rows starting "T " are the teachers' shapes; every row times the forward with a bias. */
static const kd_conv_layer layers[] = {
    {"input 4->16 k3", 0, 4, 16, 3, 1, 1, 1},
    {"conv 16 k3", 0, 16, 16, 3, 1, 1, 1},
    {"conv 32 k3", 1, 32, 32, 3, 1, 1, 1},
    {"conv 64 k3", 2, 64, 64, 3, 1, 1, 1},
    {"conv 128 k3", 3, 128, 128, 3, 1, 1, 1},
    {"down 16->32 k2s2", 0, 16, 32, 2, 2, 0, 1},
    {"down 32->64 k2s2", 1, 32, 64, 2, 2, 0, 1},
    {"down 64->128 k2s2", 2, 64, 128, 2, 2, 0, 1},
    {"dec 32->16 k1 (2C->C)", 0, 32, 16, 1, 1, 0, 1},
    {"dec 64->32 k1 (2C->C)", 1, 64, 32, 1, 1, 0, 1},
    {"dec 128->64 k1 (2C->C)", 2, 128, 64, 1, 1, 0, 1},
    {"dec 32->16 k1 (up)", 1, 32, 16, 1, 1, 0, 1},
    {"dec 64->32 k1 (up)", 2, 64, 32, 1, 1, 0, 1},
    {"dec 128->64 k1 (up)", 3, 128, 64, 1, 1, 0, 1},
    {"output 16->3 k3", 0, 16, 3, 3, 1, 1, 1},
    /* the teachers' plain conv shapes the student does not have (unet3d at widths
     * 16..128: channel-doubling encoder convs, 2C->C 3x3x3 decoder convs after the skip
     * concatenation, the 1x1x1 head; cascade: the second net sees the image plus WT) */
    {"T unet3d 16->32 k3", 1, 16, 32, 3, 1, 1, 1},
    {"T unet3d 32->64 k3", 2, 32, 64, 3, 1, 1, 1},
    {"T unet3d 64->128 k3", 3, 64, 128, 3, 1, 1, 1},
    {"T unet3d dec 32->16 k3", 0, 32, 16, 3, 1, 1, 1},
    {"T unet3d dec 64->32 k3", 1, 64, 32, 3, 1, 1, 1},
    {"T unet3d dec 128->64 k3", 2, 128, 64, 3, 1, 1, 1},
    {"T unet3d head 16->3 k1", 0, 16, 3, 1, 1, 0, 1},
    {"T cascade 5->16 k3", 0, 5, 16, 3, 1, 1, 1},
    /* the demo's models at width 8 (unet3d and cascade teachers widths 8,16,32, the
     * student resunet 8,16,32,64): their full-resolution 8-channel convs */
    {"T w8 input 4->8 k3", 0, 4, 8, 3, 1, 1, 1},
    {"T w8 conv 8 k3", 0, 8, 8, 3, 1, 1, 1},
    {"T w8 unet3d 8->16 k3", 1, 8, 16, 3, 1, 1, 1},
    {"T w8 down 8->16 k2s2", 0, 8, 16, 2, 2, 0, 1},
    {"T w8 dec 16->8 k1 (2C->C)", 0, 16, 8, 1, 1, 0, 1},
    {"T w8 output 8->3 k3", 0, 8, 3, 3, 1, 1, 1},
    {"T w8 head 8->3 k1", 0, 8, 3, 1, 1, 0, 1},
};

const kd_conv_layer *kd_conv_layers(int *n) {
    *n = (int)(sizeof layers / sizeof layers[0]);
    return layers;
}

int kd_conv_layer_is_teacher(const kd_conv_layer *l) { return !strncmp(l->name, "T ", 2); }

struct kd_conv_case {
    kd_conv_params p;
    kd_conv_geom g; /* has_bias 0 */
    int bias;
    kd_tensor *x, *w, *b, *y, *dy, *dx, *dw;
};

kd_status kd_conv_case_run(kd_conv_case *c, kd_conv_pass pass) {
    switch (pass) {
    case KD_PASS_FWD:
        return kd_conv3d_forward(&c->p, c->x, c->w, c->bias ? c->b : NULL, c->y);
    case KD_PASS_BWD_DATA:
        return kd_conv3d_backward_input(&c->p, c->dy, c->w, c->dx);
    default:
        return kd_conv3d_backward_weight(&c->p, c->x, c->dy, c->dw, NULL);
    }
}

static kd_tensor *out_of(const kd_conv_case *c, kd_conv_pass pass) {
    return pass == KD_PASS_FWD ? c->y : pass == KD_PASS_BWD_DATA ? c->dx : c->dw;
}

void kd_conv_case_key(const kd_conv_case *c, kd_conv_pass pass, char *out, size_t n) {
    kd_conv_geom g = c->g;
    g.has_bias = pass == KD_PASS_FWD && c->bias; /* as the ops key it */
    kd_conv_key(&g, pass, out, n);
}

double kd_conv_case_flops(const kd_conv_case *c) { return kd_conv_flops(&c->g); }
int kd_conv_case_out_edge(const kd_conv_case *c) { return c->g.ow; }
size_t kd_conv_case_out_numel(const kd_conv_case *c, kd_conv_pass pass) {
    return kd_tensor_numel(out_of(c, pass));
}
kd_status kd_conv_case_out_zero(kd_conv_case *c, kd_conv_pass pass) {
    return kd_tensor_fill(out_of(c, pass), 0.0f);
}
kd_status kd_conv_case_out_read(kd_conv_case *c, kd_conv_pass pass, float *host) {
    return kd_tensor_download_ndhwc(out_of(c, pass), host);
}

void kd_conv_case_free(kd_conv_case *c) {
    if (!c) return;
    kd_tensor *all[] = {c->x, c->w, c->b, c->y, c->dy, c->dx, c->dw};
    for (int i = 0; i < 7; i++)
        kd_tensor_free(all[i]);
    free(c);
}

/* Pseudo-random values in [-1, 1) (splitmix64), uploaded. */
static kd_status fill_random(kd_tensor *t, uint64_t *st) {
    size_t n = kd_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    if (!h) return kd_fail(KD_ERR_OUT_OF_MEMORY, "conv case: %zu floats of test data", n);
    for (size_t i = 0; i < n; i++) h[i] = (float)(kd_splitmix64(st) >> 40) / 8388608.0f - 1.0f;
    kd_status s = kd_tensor_upload_ndhwc(t, h);
    free(h);
    return s;
}

kd_status kd_conv_case_create(kd_device *dev, const kd_conv_layer *l, int edge, unsigned seed,
                              kd_conv_case **out) {
    *out = NULL;
    if (!dev || !l) return kd_fail(KD_ERR_INVALID_ARG, "conv case: NULL device or layer");
    int o = kd_conv_out_size(edge, l->k, l->s, l->p);
    if (o < 1)
        return kd_fail(KD_ERR_SHAPE, "conv case %s: edge %d is smaller than the kernel %d",
                       l->name, edge, l->k);
    kd_conv_case *c = calloc(1, sizeof *c);
    if (!c) return kd_fail(KD_ERR_OUT_OF_MEMORY, "conv case");
    c->p = (kd_conv_params){{l->k, l->k, l->k}, l->s, l->p, 1};
    c->bias = l->bias;
    kd_shape xs = kd_shape5(1, l->ci, edge, edge, edge), ys = kd_shape5(1, l->co, o, o, o);
    kd_shape ws = kd_shape5(1, 1, 1, 1, l->k * l->k * l->k * l->ci * l->co);
    kd_shape bs = kd_shape5(1, l->co, 1, 1, 1);
    kd_status s;
    if ((s = kd_tensor_create(dev, xs, &c->x)) || (s = kd_tensor_create(dev, ws, &c->w)) ||
        (s = kd_tensor_create(dev, bs, &c->b)) || (s = kd_tensor_create(dev, ys, &c->y)) ||
        (s = kd_tensor_create(dev, ys, &c->dy)) || (s = kd_tensor_create(dev, xs, &c->dx)) ||
        (s = kd_tensor_zeros(dev, ws, &c->dw)))
        goto fail;
    if (seed) {
        uint64_t st = seed;
        if ((s = fill_random(c->x, &st)) || (s = fill_random(c->w, &st)) ||
            (s = fill_random(c->b, &st)) || (s = fill_random(c->dy, &st)))
            goto fail;
    } else if ((s = kd_tensor_fill(c->x, 0.5f)) || (s = kd_tensor_fill(c->w, 0.01f)) ||
               (s = kd_tensor_fill(c->b, 0.1f)) || (s = kd_tensor_fill(c->dy, 0.25f))) {
        goto fail; /* small finite values (no denormals) */
    }
    c->g = (kd_conv_geom){1,    l->ci, edge, edge, edge, l->co, o, o, o, {l->k, l->k, l->k},
                          l->s, l->p,  1,    0,    0};
    *out = c;
    return KD_OK;
fail:
    kd_conv_case_free(c);
    return s;
}
