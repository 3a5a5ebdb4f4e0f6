/* The paper's loss and the distillation losses: which terms each uses, and the running
 * total of several terms. The device work is the loss op's (src/ops/loss.c). */
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "kdseg/train.h"

struct kd_loss {
    kd_device *dev;
    kd_tensor *part;  /* KD_LOSS_PARTIALS: the op's partial sums */
    kd_tensor *stats; /* KD_LOSS_STATS: statistics and value of the last term */
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
    if ((s = kd_tensor_zeros(dev, kd_shape5(1, KD_LOSS_PARTIALS, 1, 1, 1), &l->part)) ||
        (s = kd_tensor_zeros(dev, kd_shape5(1, KD_LOSS_STATS, 1, 1, 1), &l->stats)) ||
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

/* The terms of each loss kind (ops.h's kd_loss_terms). */
static kd_loss_terms terms_of(kd_loss_kind kind) {
    switch (kind) {
    case KD_LOSS_PAPER: return (kd_loss_terms){.dice = 0.5f, .bce = 0.5f, .bg = 0.01f};
    case KD_LOSS_BCE: return (kd_loss_terms){.bce = 1.0f, .bg = 1.0f};
    case KD_LOSS_MSE: return (kd_loss_terms){.mse = 1.0f, .bg = 1.0f};
    case KD_LOSS_DICE_BCE: return (kd_loss_terms){.dice = 0.5f, .bce = 0.5f, .bg = 1.0f};
    }
    return (kd_loss_terms){.bg = 1.0f};
}

kd_status kd_loss_add(kd_loss *l, kd_loss_kind kind, const kd_tensor *p, const kd_tensor *t,
                      float weight, kd_tensor *dp, int accumulate) {
    kd_loss_terms terms = terms_of(kind);
    kd_status s = kd_loss_forward(&terms, p, t, l->part, l->stats);
    if (!s && dp) s = kd_loss_backward(&terms, p, t, l->stats, weight, accumulate, dp);
    /* total = weight * value (+ total) */
    if (!s) {
        kd_tensor *v = NULL;
        s = kd_tensor_view(l->stats, KD_LOSS_VALUE, kd_shape5(1, 1, 1, 1, 1), &v);
        if (!s && l->have_total) s = kd_axpy(weight, v, l->total);
        else if (!s) {
            /* copy then scale: 0 * an old NaN would stay NaN */
            s = kd_tensor_copy(l->total, v);
            if (!s) s = kd_scale(weight, l->total);
        }
        kd_tensor_free(v);
        l->have_total = 1;
    }
    return s ? kd_fail_context(s, "%s loss", kd_loss_name(kind)) : KD_OK;
}

kd_status kd_loss_read(kd_loss *l, float *total) {
    kd_status s = kd_tensor_download_ndhwc(l->total, total);
    return s ? kd_fail_context(s, "reading the loss") : KD_OK;
}

kd_status kd_loss_read_async(kd_loss *l, float *dst, kd_event **ev) {
    return kd_tensor_download_ndhwc_async(l->total, dst, ev);
}
