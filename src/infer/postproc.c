/* Region probabilities -> BraTS label maps (the paper's post-processing), and label
 * maps -> region masks for each label convention. */
#include "kdseg/postproc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *kd_region_name(int region) {
    static const char *names[] = {"WT", "TC", "ET"};
    return region >= 0 && region < KD_REGION_COUNT ? names[region] : "?";
}

/* Region membership bits (1 WT, 2 TC, 4 ET) of each label value; 0x80: not a label. */
static void region_table(kd_label_convention c, uint8_t t[256]) {
    for (int v = 0; v < 256; v++) {
        int r = kd_label_regions(c, v);
        t[v] = r < 0 ? 0x80 : (uint8_t)r;
    }
}

kd_status kd_labels_to_regions(const uint8_t *labels, size_t n, kd_label_convention c, uint8_t *wt,
                               uint8_t *tc, uint8_t *et) {
    if (c != KD_LABELS_2019 && c != KD_LABELS_2023 && c != KD_LABELS_MSD)
        return kd_fail(KD_ERR_INVALID_ARG, "labels to regions: convention '%s' is not concrete",
                       kd_label_convention_name(c));
    uint8_t t[256];
    region_table(c, t);
    for (size_t i = 0; i < n; i++) {
        uint8_t r = t[labels[i]];
        if (r & 0x80)
            return kd_fail(KD_ERR_FORMAT,
                           "label %d at voxel %zu is not a label of the %s convention", labels[i],
                           i, kd_label_convention_name(c));
        if (wt) wt[i] = r & 1;
        if (tc) tc[i] = (r >> 1) & 1;
        if (et) et[i] = (r >> 2) & 1;
    }
    return KD_OK;
}

kd_status kd_labels_detect(const uint8_t *labels, size_t n, kd_label_convention fallback,
                           kd_label_convention *out) {
    int has3 = 0, has4 = 0;
    for (size_t i = 0; i < n; i++) {
        has3 |= labels[i] == 3;
        has4 |= labels[i] == 4;
    }
    if (has3 && has4)
        return kd_fail(KD_ERR_FORMAT, "label map holds both 3 and 4: no known convention");
    *out = has4 ? KD_LABELS_2019 : has3 ? KD_LABELS_2023 : fallback;
    return KD_OK;
}

void kd_postproc_options_default(kd_postproc_options *o) {
    o->threshold = 0.5f;
    o->labels = KD_LABELS_2019;
    o->et_min_voxels = 32;
    o->min_component_fraction = 0.1;
    o->largest_only = 0;
    o->brain_mask = NULL;
}


kd_status kd_labels_drop_small_et(uint8_t *labels, size_t n, uint8_t et_label, int max_voxels,
                                  size_t *relabelled) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += labels[i] == et_label;
    if (relabelled) *relabelled = 0;
    if (max_voxels < 0 || count == 0 || count > (size_t)max_voxels) return KD_OK;
    for (size_t i = 0; i < n; i++)
        if (labels[i] == et_label) labels[i] = 1;
    if (relabelled) *relabelled = count;
    return KD_OK;
}

/* Labels the 26-connected components of label > 0 into comp (0 = background, 1..k),
 * k in *k, and their voxel counts in *sizes (index 1..k; allocated here). queue: n
 * entries of scratch. n < 2^32 (checked by the caller). */
static kd_status components26(const uint8_t *labels, int d, int h, int w, uint32_t *comp,
                              uint32_t *queue, uint32_t **sizes, uint32_t *k_out) {
    size_t n = (size_t)d * h * w, hw = (size_t)h * w;
    memset(comp, 0, sizeof(uint32_t) * n);
    uint32_t k = 0, cap = 0, *sz = NULL;
    for (size_t seed = 0; seed < n; seed++) {
        if (!labels[seed] || comp[seed]) continue;
        if (++k >= cap) {
            cap = cap ? cap * 2 : 64;
            uint32_t *ns = realloc(sz, sizeof(uint32_t) * cap);
            if (!ns) {
                free(sz);
                return kd_fail(KD_ERR_OUT_OF_MEMORY, "component removal: %u components", k);
            }
            sz = ns;
        }
        size_t head = 0, tail = 0;
        queue[tail++] = (uint32_t)seed;
        comp[seed] = k;
        while (head < tail) {
            size_t i = queue[head++];
            int z = (int)(i / hw), y = (int)(i % hw / (size_t)w), x = (int)(i % (size_t)w);
            for (int zz = z - 1; zz <= z + 1; zz++) {
                if (zz < 0 || zz >= d) continue;
                for (int yy = y - 1; yy <= y + 1; yy++) {
                    if (yy < 0 || yy >= h) continue;
                    for (int xx = x - 1; xx <= x + 1; xx++) {
                        if (xx < 0 || xx >= w) continue;
                        size_t j = (size_t)zz * hw + (size_t)yy * w + xx;
                        if (labels[j] && !comp[j]) {
                            comp[j] = k;
                            queue[tail++] = (uint32_t)j;
                        }
                    }
                }
            }
        }
        sz[k] = (uint32_t)tail;
    }
    *sizes = sz;
    *k_out = k;
    return KD_OK;
}

/* Zeroes the 26-connected tumour components smaller than fraction * (all tumour voxels),
 * or with `largest`, every component but the largest. */
static kd_status drop_components(uint8_t *labels, int d, int h, int w, double fraction, int largest,
                                 size_t *removed) {
    if (removed) *removed = 0;
    if (d <= 0 || h <= 0 || w <= 0)
        return kd_fail(KD_ERR_INVALID_ARG, "component removal: grid (%d, %d, %d) must be positive",
                       d, h, w);
    if (!(fraction >= 0 && fraction <= 1))
        return kd_fail(KD_ERR_INVALID_ARG, "component removal: fraction %g not in [0, 1]",
                       fraction);
    if (fraction == 0 && !largest) return KD_OK;
    size_t n = (size_t)d * h * w;
    if (n >= UINT32_MAX)
        return kd_fail(KD_ERR_INVALID_ARG, "component removal: grid (%d, %d, %d) too large", d, h,
                       w);
    uint32_t *comp = malloc(sizeof(uint32_t) * n), *queue = malloc(sizeof(uint32_t) * n);
    uint32_t *sizes = NULL, k = 0;
    kd_status s = KD_OK;
    if (!comp || !queue)
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "component removal on a (%d, %d, %d) grid", d, h, w);
    if (!s) s = components26(labels, d, h, w, comp, queue, &sizes, &k);
    if (!s) {
        size_t total = 0, count = 0;
        uint32_t best = 0;
        for (uint32_t c = 1; c <= k; c++) {
            total += sizes[c];
            if (!best || sizes[c] > sizes[best]) best = c;
        }
        /* size < fraction * total, with a relative margin so that a component of exactly
         * 10% of the tumour is kept although 0.1 is not exact in binary */
        double limit = fraction * (double)total * (1.0 - 1e-12);
        for (size_t i = 0; i < n; i++)
            if (comp[i] && (largest ? comp[i] != best : (double)sizes[comp[i]] < limit)) {
                labels[i] = 0;
                count++;
            }
        if (removed) *removed = count;
    }
    free(comp), free(queue), free(sizes);
    return s;
}

kd_status kd_labels_remove_small_components(uint8_t *labels, int d, int h, int w, double fraction,
                                            size_t *removed) {
    return drop_components(labels, d, h, w, fraction, 0, removed);
}

kd_status kd_labels_keep_largest_component(uint8_t *labels, int d, int h, int w, size_t *removed) {
    return drop_components(labels, d, h, w, 0, 1, removed);
}

kd_status kd_postproc_labels(const float *prob, kd_prob_layout layout, int d, int h, int w,
                             const kd_postproc_options *o, uint8_t *labels) {
    if (d <= 0 || h <= 0 || w <= 0)
        return kd_fail(KD_ERR_INVALID_ARG, "post-processing: grid (%d, %d, %d) must be positive", d,
                       h, w);
    if (o->labels != KD_LABELS_2019 && o->labels != KD_LABELS_2023 && o->labels != KD_LABELS_MSD)
        return kd_fail(KD_ERR_INVALID_ARG, "post-processing: labels must be 2019, 2023 or msd, not %s",
                       kd_label_convention_name(o->labels));
    if (!isfinite(o->threshold))
        return kd_fail(KD_ERR_INVALID_ARG, "post-processing: threshold %g", o->threshold);
    size_t n = (size_t)d * h * w;
    uint8_t et_label = o->labels == KD_LABELS_2023 ? 3 : 4; /* MSD: 2019, converted below */
    static const uint8_t region_label[3] = {2, 1, 0}; /* ET's label set per convention */
    for (size_t i = 0; i < n; i++) {
        uint8_t l = 0;
        for (int r = 0; r < 3; r++) {
            float p = layout == KD_PROB_CDHW ? prob[(size_t)r * n + i] : prob[i * 3 + r];
            if (!isfinite(p))
                return kd_fail(KD_ERR_NUMERIC, "post-processing: probability %g of %s at voxel %zu",
                               p, kd_region_name(r), i);
            if (p > o->threshold) l = r == KD_REGION_ET ? et_label : region_label[r];
        }
        labels[i] = o->brain_mask && !o->brain_mask[i] ? 0 : l;
    }
    kd_status s = drop_components(labels, d, h, w, o->min_component_fraction, o->largest_only, NULL);
    if (!s) s = kd_labels_drop_small_et(labels, n, et_label, o->et_min_voxels, NULL);
    if (!s && o->labels == KD_LABELS_MSD) {
        uint8_t to[256] = {0};
        for (int v = 1; v < 256; v++) {
            int r = kd_label_regions(KD_LABELS_2019, v);
            float reg[3] = {(float)(r > 0 && (r & 1)), (float)(r > 0 && (r & 2)), (float)(r > 0 && (r & 4))};
            kd_regions_to_labels(KD_LABELS_MSD, reg, 1, &to[v]);
        }
        for (size_t i = 0; i < n; i++) labels[i] = to[labels[i]];
    }
    return s;
}
