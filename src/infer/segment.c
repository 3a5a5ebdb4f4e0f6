/* Whole cases: preprocessed grid in, original-grid probabilities or labels out. */
#include <stdlib.h>
#include <string.h>

#include "kdseg/infer.h"

kd_status kd_segment_case(kd_model *const *models, int nmodels, const kd_case *c,
                          const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st) {
    int K = kd_model_out_channels(models[0]);
    size_t nv = (size_t)c->d * c->h * c->w;
    float *p = malloc(nv * K * sizeof(float));
    if (!p)
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: %d x %dx%dx%d probabilities", c->name, K,
                       c->d, c->h, c->w);
    kd_status s =
        kd_infer_volume(models, nmodels, c->image, c->channels, c->d, c->h, c->w, o, p, st);
    if (!s) kd_case_uncrop(c, p, K, 0.0f, probs_orig);
    free(p);
    return s ? kd_fail_context(s, "case %s", c->name) : KD_OK;
}

kd_status kd_segment_case_members(kd_model *const *models, int nmodels, const kd_case *c,
                                  const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st) {
    int K = kd_model_out_channels(models[0]);
    size_t nv = (size_t)c->d * c->h * c->w, no = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    float *p = malloc((size_t)nmodels * nv * K * sizeof(float));
    if (!p)
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: %d x %d x %dx%dx%d probabilities", c->name,
                       nmodels, K, c->d, c->h, c->w);
    kd_status s =
        kd_infer_volume_members(models, nmodels, c->image, c->channels, c->d, c->h, c->w, o, p, st);
    for (int m = 0; m < nmodels && !s; m++)
        kd_case_uncrop(c, p + (size_t)m * K * nv, K, 0.0f, probs_orig + (size_t)m * K * no);
    free(p);
    return s ? kd_fail_context(s, "case %s", c->name) : KD_OK;
}

/* The preprocessed grid's labels into the original grid, 0 outside the crop box (where
 * kd_segment_case's probabilities are 0, below any threshold). */
static void uncrop_labels(const kd_case *c, const uint8_t *src, uint8_t *dst) {
    const int H = c->orig[1], W = c->orig[2];
    memset(dst, 0, (size_t)c->orig[0] * H * W);
    const int len = c->crop_hi[2] - c->crop_lo[2];
    for (int z = c->crop_lo[0]; z < c->crop_hi[0]; z++)
        for (int y = c->crop_lo[1]; y < c->crop_hi[1]; y++)
            memcpy(dst + ((size_t)z * H + y) * W + c->crop_lo[2],
                   src +
                       ((size_t)(z - c->crop_lo[0] + c->pad_lo[0]) * c->h +
                        (y - c->crop_lo[1] + c->pad_lo[1])) *
                           c->w +
                       c->pad_lo[2],
                   (size_t)len);
}

kd_status kd_segment_case_labels(kd_model *const *models, int nmodels, const kd_case *c,
                                 const kd_infer_opts *o, const kd_postproc_options *po,
                                 uint8_t *labels_orig, kd_infer_stats *st) {
    if (po->labels != KD_LABELS_2019 && po->labels != KD_LABELS_2023)
        return kd_fail(KD_ERR_INVALID_ARG, "post-processing: labels must be 2019 or 2023, not %s",
                       kd_label_convention_name(po->labels));
    /* outside the crop box the probabilities are 0: label 0 needs a threshold >= 0 */
    if (!(po->threshold >= 0.0f))
        return kd_fail(KD_ERR_INVALID_ARG, "post-processing: threshold %g not >= 0", po->threshold);
    uint8_t et = po->labels == KD_LABELS_2019 ? 4 : 3;
    size_t nv = (size_t)c->d * c->h * c->w;
    uint8_t *l = malloc(nv);
    if (!l)
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: %dx%dx%d labels", c->name, c->d, c->h, c->w);
    kd_status s = kd_infer_volume_labels(models, nmodels, c->image, c->channels, c->d, c->h, c->w,
                                         o, po->threshold, et, l, st);
    if (!s) {
        uncrop_labels(c, l, labels_orig);
        size_t no = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
        for (size_t i = 0; po->brain_mask && i < no; i++)
            if (!po->brain_mask[i]) labels_orig[i] = 0;
        s = po->largest_only
                ? kd_labels_keep_largest_component(labels_orig, c->orig[0], c->orig[1], c->orig[2], NULL)
                : kd_labels_remove_small_components(labels_orig, c->orig[0], c->orig[1], c->orig[2],
                                                    po->min_component_fraction, NULL);
    }
    if (!s)
        s = kd_labels_drop_small_et(labels_orig, (size_t)c->orig[0] * c->orig[1] * c->orig[2], et,
                                    po->et_min_voxels, NULL);
    free(l);
    return s ? kd_fail_context(s, "case %s", c->name) : KD_OK;
}
