/* The paper's loss and the distillation losses, with deterministic reductions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/tensor_impl.h"
#include "../ops/ops.h"
#include "kdseg/train.h"

#define LOSS_WG 64
#define LOSS_GROUPS 64
#define NSTAT 26
#define LOSS_INDEX 26 /* stats[26] = loss of this term */

struct kd_loss {
    kd_device *dev;
    kd_tensor *part;  /* (LOSS_GROUPS x NSTAT) partial sums */
    kd_tensor *stats; /* NSTAT + 1 floats of the last term */
    kd_tensor *total; /* 1 float: running total */
    int have_total;
};

const char *kd_loss_name(kd_loss_kind k) {
    switch (k) {
    case KD_LOSS_PAPER: return "paper";
    case KD_LOSS_BCE: return "bce";
    case KD_LOSS_MSE: return "mse";
    case KD_LOSS_DICE_BCE: return "dicebce";
    }
    return "?";
}

kd_status kd_loss_parse(const char *name, kd_loss_kind *out) {
    for (int k = 0; k <= KD_LOSS_DICE_BCE; k++)
        if (!strcmp(name, kd_loss_name((kd_loss_kind)k))) {
            *out = (kd_loss_kind)k;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID_ARG, "unknown loss '%s' (paper, bce, mse, dicebce)", name);
}

kd_status kd_loss_create(kd_device *dev, kd_loss **out) {
    *out = NULL;
    kd_loss *l = calloc(1, sizeof *l);
    if (!l) return kd_fail(KD_ERR_OUT_OF_MEMORY, "loss");
    l->dev = dev;
    kd_status s;
    if ((s = kd_tensor_zeros(dev, kd_shape5(1, LOSS_GROUPS * NSTAT, 1, 1, 1), &l->part)) ||
        (s = kd_tensor_zeros(dev, kd_shape5(1, NSTAT + 1, 1, 1, 1), &l->stats)) ||
        (s = kd_tensor_zeros(dev, kd_shape5(1, 1, 1, 1, 1), &l->total))) {
        kd_loss_free(l);
        return s;
    }
    *out = l;
    return KD_OK;
}

void kd_loss_free(kd_loss *l) {
    if (!l) return;
    kd_tensor_free(l->part);
    kd_tensor_free(l->stats);
    kd_tensor_free(l->total);
    free(l);
}

void kd_loss_reset(kd_loss *l) { l->have_total = 0; }
kd_tensor *kd_loss_total_tensor(kd_loss *l) { return l->total; }

kd_status kd_loss_add(kd_loss *l, kd_loss_kind kind, const kd_tensor *p, const kd_tensor *t,
                      float weight, kd_tensor *dp, int accumulate) {
    kd_shape ps = kd_tensor_shape(p);
    char a[96], b[96];
    if (!kd_shape_equal(ps, kd_tensor_shape(t)) || (dp && !kd_shape_equal(ps, kd_tensor_shape(dp))))
        return kd_fail(KD_ERR_SHAPE, "loss: prediction %s and target %s differ",
                       kd_shape_str(ps, a, 96), kd_shape_str(kd_tensor_shape(t), b, 96));
    if (ps.c > 8) return kd_fail(KD_ERR_SHAPE, "loss: at most 8 channels, got %d", ps.c);
    float a_dice = 0, a_bce = 0, a_mse = 0, wbg = 1.0f;
    switch (kind) {
    case KD_LOSS_PAPER:
        a_dice = 0.5f;
        a_bce = 0.5f;
        wbg = 0.01f;
        break;
    case KD_LOSS_BCE: a_bce = 1.0f; break;
    case KD_LOSS_MSE: a_mse = 1.0f; break;
    case KD_LOSS_DICE_BCE:
        a_dice = 0.5f;
        a_bce = 0.5f;
        break;
    }
    int nvox = (int)(kd_shape_numel(ps) / (size_t)ps.c), n = (int)kd_shape_numel(ps);
    size_t g1 = (size_t)LOSS_WG * LOSS_GROUPS, l1 = LOSS_WG, one = 1;
    kd_status s = kd_rt_launch(l->dev, "kd_loss_partials", 1, &g1, &l1,
                               KD_ARGS(KD_T(p), KD_T(t), KD_INT(nvox), KD_INT(ps.c),
                                       KD_FLOAT(wbg), KD_MEM(l->part->mem)));
    if (!s)
        s = kd_rt_launch(l->dev, "kd_loss_finalize", 1, &one, NULL,
                         KD_ARGS(KD_MEM(l->part->mem), KD_INT(LOSS_GROUPS), KD_INT(ps.c),
                                 KD_INT(n), KD_FLOAT(a_dice), KD_FLOAT(a_bce), KD_FLOAT(a_mse),
                                 KD_MEM(l->stats->mem)));
    if (!s && dp) {
        size_t gn = (size_t)n;
        s = kd_rt_launch(l->dev, "kd_loss_grad", 1, &gn, NULL,
                         KD_ARGS(KD_T(p), KD_T(t), KD_INT(n), KD_INT(ps.c), KD_INT(n),
                                 KD_FLOAT(wbg), KD_FLOAT(a_dice), KD_FLOAT(a_bce),
                                 KD_FLOAT(a_mse), KD_FLOAT(weight), KD_INT(accumulate),
                                 KD_MEM(l->stats->mem), KD_T(dp)));
    }
    /* total = weight * stats[26] (+ total) */
    if (!s) {
        kd_tensor *v = NULL;
        s = kd_tensor_view(l->stats, LOSS_INDEX, kd_shape5(1, 1, 1, 1, 1), &v);
        if (!s && l->have_total) s = kd_axpy(weight, v, l->total);
        else if (!s) {
            /* copy then scale: 0 * an old NaN would stay NaN */
            s = kd_tensor_copy(l->total, v);
            if (!s) s = kd_scale(weight, l->total);
        }
        kd_tensor_free(v);
        l->have_total = 1;
    }
    return s ? kd_fail_context(s, "loss %s on prediction %s", kd_loss_name(kind), kd_shape_str(ps, a, 96))
             : KD_OK;
}

kd_status kd_loss_read(kd_loss *l, float *total) {
    kd_status s = kd_tensor_download_ndhwc(l->total, total);
    return s ? kd_fail_context(s, "reading the loss") : KD_OK;
}

kd_status kd_loss_read_async(kd_loss *l, float *dst, kd_event **ev) {
    return kd_tensor_download_ndhwc_async(l->total, dst, ev);
}
