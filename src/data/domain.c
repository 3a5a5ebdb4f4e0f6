/* Domain records: what a model was trained on, and a case's distance from it. */
#include "kdseg/domain.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

_Static_assert(KD_DOMAIN_CHANNELS == KD_MAX_MODALITIES, "a domain record has a slot per modality");

void kd_domain_init(kd_domain *d) { memset(d, 0, sizeof *d); }

/* Percentile histogram of z-scores: bins of 0.01 over [-20, 20). */
#define HBINS 4000
#define HLO (-20.0)
#define HW 0.01

static double hist_pct(const unsigned *h, size_t n, double q) {
    size_t want = (size_t)(q * (double)(n ? n - 1 : 0)), acc = 0;
    for (int b = 0; b < HBINS; b++) {
        acc += h[b];
        if (acc > want) return HLO + (b + 0.5) * HW;
    }
    return HLO + HBINS * HW;
}

static int is_phantom(const kd_case *c) {
    const char *d = c->geom ? c->geom->info.descrip : "";
    return !strcmp(d, "kdseg") || !strncmp(d, "kdseg phantom", 13);
}

kd_status kd_case_domain(const kd_dataset *ds, const kd_case *c, kd_domain *out) {
    kd_domain_init(out);
    if (!c || !c->image || c->channels < 1 || c->channels > KD_MAX_MODALITIES)
        return kd_fail(KD_ERR_INVALID_ARG, "domain: no case image");
    const size_t n = (size_t)c->d * c->h * c->w;
    unsigned *h = calloc((size_t)c->channels * HBINS, sizeof *h);
    if (!h) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: domain", c->name);
    size_t brain = 0;
    for (size_t i = 0; i < n; i++) {
        int in = 0;
        for (int ch = 0; ch < c->channels && !in; ch++) in = c->image[ch * n + i] != 0;
        if (!in) continue;
        brain++;
        for (int ch = 0; ch < c->channels; ch++) {
            double b = floor((c->image[ch * n + i] - HLO) / HW);
            h[ch * HBINS + (b < 0 ? 0 : b >= HBINS ? HBINS - 1 : (int)b)]++;
        }
    }
    for (int ch = 0; ch < c->channels; ch++) {
        out->p01[ch] = hist_pct(h + ch * HBINS, brain, 0.01);
        out->p50[ch] = hist_pct(h + ch * HBINS, brain, 0.50);
        out->p99[ch] = hist_pct(h + ch * HBINS, brain, 0.99);
    }
    free(h);
    double vox = 1;
    for (int a = 0; a < 3; a++) {
        double s = c->geom ? fabs(c->geom->info.pixdim[a]) : 1;
        out->spacing[a] = s > 0 ? s : 1;
        vox *= out->spacing[a];
    }
    out->brain_ml[0] = out->brain_ml[1] = (double)brain * vox / 1000.0;
    snprintf(out->kind, sizeof out->kind, "%s", is_phantom(c) ? "phantom" : "real");
    snprintf(out->layout, sizeof out->layout, "%s", ds ? kd_layout_name(kd_dataset_layout(ds)) : "");
    size_t k = 0;
    for (int ch = 0; ds && ch < kd_dataset_channels(ds); ch++)
        k += (size_t)snprintf(out->modalities + k, k < sizeof out->modalities ? sizeof out->modalities - k : 0,
                              "%s%s", ch ? "," : "", kd_modality_name(kd_dataset_modality(ds, ch)));
    out->channels = c->channels;
    out->cases = 1;
    return KD_OK;
}

void kd_domain_merge(kd_domain *acc, const kd_domain *one) {
    if (!one->cases) return;
    if (!acc->cases) {
        *acc = *one;
        return;
    }
    double wa = acc->cases, wb = one->cases, w = wa + wb;
    for (int a = 0; a < 3; a++) acc->spacing[a] = (acc->spacing[a] * wa + one->spacing[a] * wb) / w;
    for (int ch = 0; ch < KD_DOMAIN_CHANNELS; ch++) {
        acc->p01[ch] = (acc->p01[ch] * wa + one->p01[ch] * wb) / w;
        acc->p50[ch] = (acc->p50[ch] * wa + one->p50[ch] * wb) / w;
        acc->p99[ch] = (acc->p99[ch] * wa + one->p99[ch] * wb) / w;
    }
    if (one->brain_ml[0] < acc->brain_ml[0]) acc->brain_ml[0] = one->brain_ml[0];
    if (one->brain_ml[1] > acc->brain_ml[1]) acc->brain_ml[1] = one->brain_ml[1];
    if (strcmp(acc->kind, one->kind)) snprintf(acc->kind, sizeof acc->kind, "mixed");
    acc->cases += one->cases;
}

kd_status kd_dataset_domain(const kd_dataset *ds, const int *idx, int n, int max_cases, kd_domain *out) {
    kd_domain_init(out);
    int take = max_cases > 0 && max_cases < n ? max_cases : n;
    for (int k = 0; k < take; k++) {
        int j = take == n ? k : (int)((long)k * n / take);
        kd_case *c;
        kd_status s = kd_case_load(ds, idx ? idx[j] : j, &c);
        kd_domain one;
        if (!s) s = kd_case_domain(ds, c, &one);
        kd_case_free(c);
        if (s) return s;
        kd_domain_merge(out, &one);
    }
    out->cases = n;
    return KD_OK;
}

/* Appends "; "-separated text to why. */
static void add(char *why, size_t cap, int *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(char *why, size_t cap, int *n, const char *fmt, ...) {
    size_t len = strlen(why);
    if (*n && len + 2 < cap) {
        memcpy(why + len, "; ", 3);
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    if (len < cap) vsnprintf(why + len, cap - len, fmt, ap);
    va_end(ap);
    (*n)++;
}

int kd_domain_compare(const kd_domain *m, const kd_domain *c, char *why, size_t cap) {
    int n = 0;
    char tmp[1024] = "";
    if (!m->cases || !c->cases) {
        if (cap) why[0] = 0;
        return 0;
    }
    if (!strcmp(m->kind, "phantom") && !strcmp(c->kind, "real"))
        add(tmp, sizeof tmp, &n, "a phantom-trained model on a real scan");
    else if (!strcmp(m->kind, "real") && !strcmp(c->kind, "phantom"))
        add(tmp, sizeof tmp, &n, "a model trained on real scans, on a phantom case");
    if (m->modalities[0] && c->modalities[0] && strcmp(m->modalities, c->modalities))
        add(tmp, sizeof tmp, &n, "modalities %s, trained on %s", c->modalities, m->modalities);
    for (int a = 0; a < 3; a++)
        if (m->spacing[a] > 0 && fabs(c->spacing[a] / m->spacing[a] - 1) > 0.25) {
            add(tmp, sizeof tmp, &n, "voxels %.2gx%.2gx%.2g mm, trained on %.2gx%.2gx%.2g", c->spacing[0],
                c->spacing[1], c->spacing[2], m->spacing[0], m->spacing[1], m->spacing[2]);
            break;
        }
    if (m->brain_ml[1] > 0 && (c->brain_ml[0] < 0.5 * m->brain_ml[0] || c->brain_ml[0] > 2 * m->brain_ml[1]))
        add(tmp, sizeof tmp, &n, "brain %.0f mL, trained on %.0f-%.0f mL", c->brain_ml[0], m->brain_ml[0],
            m->brain_ml[1]);
    int chs = c->channels < m->channels ? c->channels : m->channels;
    for (int ch = 0; ch < chs; ch++) {
        const char *name = "channel";
        char nb[32];
        /* the case's channel name, from its modality list */
        const char *p = c->modalities;
        for (int k = 0; k < ch && p; k++) {
            p = strchr(p, ',');
            if (p) p++;
        }
        if (p && *p) {
            size_t l = strcspn(p, ",");
            snprintf(nb, sizeof nb, "%.*s", (int)(l < 31 ? l : 31), p);
            name = nb;
        }
        if (fabs(c->p01[ch] - m->p01[ch]) > 2.5 || fabs(c->p99[ch] - m->p99[ch]) > 2.5)
            add(tmp, sizeof tmp, &n, "%s intensities 1-99%% %.1f..%.1f, trained on %.1f..%.1f", name,
                c->p01[ch], c->p99[ch], m->p01[ch], m->p99[ch]);
    }
    if (cap) snprintf(why, cap, "%s", tmp);
    return n;
}
