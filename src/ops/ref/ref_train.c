/* C references of the loss and optimizer ops (ref_train.h). Written once over a type
 * T: this file includes itself twice, for float (no suffix) and for double (suffix _d). */
#ifndef KD_REF_T

#include "ref_train.h"

#include <math.h>

#define KD_REF_BODY "ref_train.c"
#include "ref_twice.h"

#else /* the body, over T */

#define T KD_REF_T
#define F KD_REF_FN

void F(kd_ref_loss_forward)(const kd_loss_terms *l, const T *p, const T *t, size_t nvox, int C,
                            T *stats) {
    double spt[KD_LOSS_MAX_C] = {0}, spp[KD_LOSS_MAX_C] = {0}, st[KD_LOSS_MAX_C] = {0};
    double bce = 0, sse = 0, bg = l->bg;
    for (size_t v = 0; v < nvox; v++)
        for (int c = 0; c < C; c++) {
            double pv = p[v * C + c], tv = t[v * C + c];
            spt[c] += pv * tv;
            spp[c] += pv * pv;
            st[c] += tv;
            bce += tv * log(pv + 1e-6) + bg * (1 - tv) * log(1 + 1e-6 - pv);
            sse += (pv - tv) * (pv - tv);
        }
    double dice = 0, M = (double)nvox * C;
    for (int c = 0; c < KD_LOSS_MAX_C; c++) {
        stats[c] = (T)spt[c];
        stats[8 + c] = (T)spp[c];
        stats[16 + c] = (T)st[c];
        if (c < C) dice += 2 * (spt[c] + 1e-6) / (spp[c] + st[c] + 2e-6);
    }
    dice /= C;
    stats[24] = (T)bce;
    stats[25] = (T)sse;
    stats[KD_LOSS_VALUE] = (T)(l->dice * (1 - dice) - l->bce * bce / M + l->mse * sse / M);
}

void F(kd_ref_loss_backward)(const kd_loss_terms *l, const T *p, const T *t, size_t nvox, int C,
                             const T *stats, T weight, int accumulate, T *dp) {
    double M = (double)nvox * C, bg = l->bg;
    for (size_t i = 0; i < nvox * (size_t)C; i++) {
        int c = (int)(i % (size_t)C);
        double pv = p[i], tv = t[i];
        double num = (double)stats[c] + 1e-6, den = (double)stats[8 + c] + stats[16 + c] + 2e-6;
        double ddice = -(2 * tv / den - 4 * num * pv / (den * den)) / C;
        double dbce = -(tv / (pv + 1e-6) - bg * (1 - tv) / (1 + 1e-6 - pv)) / M;
        double dmse = 2 * (pv - tv) / M;
        T g = (T)(weight * (l->dice * ddice + l->bce * dbce + l->mse * dmse));
        dp[i] = accumulate ? dp[i] + g : g;
    }
}

void F(kd_ref_grad_check)(const T *g, size_t n, const T *loss, T *stats) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    stats[0] = (T)s;
    stats[1] = isfinite(stats[0]) && (!loss || isfinite(*loss)) ? 1 : 0;
}

void F(kd_ref_adam_update)(const kd_adam_params *h, T *p, const T *g, T *m, T *v, T *vmax,
                           size_t n, const T *stats) {
    if (stats[1] == 0) return;
    T b1 = h->beta1, b2 = h->beta2;
    T bc1 = (T)(1 - pow(b1, (double)h->step)), bc2 = (T)sqrt(1 - pow(b2, (double)h->step));
    for (size_t i = 0; i < n; i++) {
        T gi = g[i] + (T)h->weight_decay * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        vmax[i] = vmax[i] > v[i] ? vmax[i] : v[i];
        p[i] -= ((T)h->lr / bc1) * m[i] / ((T)sqrt(vmax[i]) / bc2 + (T)h->eps);
    }
}

void F(kd_ref_sgd_update)(T lr, T momentum, T weight_decay, int first, T *p, const T *g, T *buf,
                          size_t n, const T *stats) {
    if (stats[1] == 0) return;
    for (size_t i = 0; i < n; i++) {
        T gi = g[i] + weight_decay * p[i];
        buf[i] = first ? gi : momentum * buf[i] + gi;
        p[i] -= lr * (gi + momentum * buf[i]);
    }
}

#undef T
#undef F

#endif
