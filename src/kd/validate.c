/* Validation on held-out labeled cases, inferred as segmentation infers. */
#include <stdlib.h>
#include <string.h>

#include "kd_internal.h"

struct kd_validator {
    kd_case **cases;
    int n;
    int tile[3]; /* sliding windows of this size (the training patch); 0: whole volumes */
};

void kd_validator_free(kd_validator *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) kd_case_free(v->cases[i]);
    free(v->cases);
    free(v);
}

kd_status kd_validator_create(const kd_dataset *ds, const int *idx, int n, const int tile[3],
                              kd_validator **out) {
    *out = NULL;
    kd_validator *v = calloc(1, sizeof *v);
    if (v) v->cases = calloc((size_t)(n > 0 ? n : 1), sizeof *v->cases);
    if (!v || !v->cases) {
        free(v);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation set");
    }
    if (tile) memcpy(v->tile, tile, sizeof v->tile);
    kd_status s = KD_OK;
    for (int i = 0; i < n && !s; i++) {
        if ((s = kd_case_load(ds, idx[i], &v->cases[v->n]))) break;
        if (!v->cases[v->n]->target) {
            kd_case_free(v->cases[v->n]);
            s = kd_fail(KD_ERR_INVALID_ARG, "validation case %s has no labels",
                        kd_dataset_case_name(ds, idx[i]));
            break;
        }
        v->n++;
    }
    if (s) {
        kd_validator_free(v);
        return s;
    }
    *out = v;
    return KD_OK;
}

int kd_validator_count(const kd_validator *v) { return v ? v->n : 0; }

kd_status kd_validate(void *validator, kd_model *m, double dice[3]) {
    kd_validator *v = validator;
    dice[0] = dice[1] = dice[2] = 0;
    kd_infer_opts io;
    kd_infer_opts_default(&io);
    if (v->tile[0] > 0) {
        memcpy(io.tile, v->tile, sizeof io.tile);
        io.force_tiles = 1;
    }
    for (int i = 0; i < v->n; i++) {
        kd_case *c = v->cases[i];
        size_t nv = (size_t)c->d * c->h * c->w;
        float *p = malloc(3 * nv * sizeof(float));
        if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation of %s", c->name);
        kd_status s = kd_infer_volume(&m, 1, c->image, c->channels, c->d, c->h, c->w, &io, p, NULL);
        for (int r = 0; r < 3 && !s; r++)
            dice[r] += kd_dice_threshold(p + r * nv, c->target + r * nv, nv, 0.5f);
        free(p);
        if (s) return s;
    }
    for (int r = 0; r < 3; r++) dice[r] /= v->n > 0 ? v->n : 1;
    return KD_OK;
}
