/* Whole cases: preprocessed grid in, original-grid probabilities out. */
#include <stdlib.h>

#include "kdseg/infer.h"

kd_status kd_segment_case(kd_model *const *models, int nmodels, const kd_case *c,
                          const kd_infer_opts *o, float *probs_orig, kd_infer_stats *st) {
    int K = kd_model_out_channels(models[0]);
    size_t nv = (size_t)c->d * c->h * c->w;
    float *p = malloc(nv * K * sizeof(float));
    if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: %d x %dx%dx%d probabilities", c->name, K,
                           c->d, c->h, c->w);
    kd_status s = kd_infer_volume(models, nmodels, c->image, c->channels, c->d, c->h, c->w, o, p, st);
    if (!s) kd_case_uncrop(c, p, K, 0.0f, probs_orig);
    free(p);
    return s ? kd_fail_context(s, "case %s", c->name) : KD_OK;
}
