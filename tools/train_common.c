/* Batches, validation and stop handling shared by train, distill and demo. */
#include "train_common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile int kd_stop_flag = 0;

static void on_signal(int sig) {
    if (kd_stop_flag && sig == SIGINT) _exit(130);
    kd_stop_flag = 1;
}

void kd_install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int kd_batch_source_uses_b(const kd_batch_source *bs, long step) {
    if (!bs->b || bs->ratio_b <= 0) return 0;
    if (!bs->a || bs->ratio_b >= 1) return 1;
    return (int)(mix(bs->seed * 7919u + (uint64_t)step) % 1000) < (int)(bs->ratio_b * 1000);
}

kd_status kd_batch_source_init(kd_batch_source *bs, kd_sampler *a, kd_sampler *b, float ratio_b,
                               uint64_t seed, long first_step, int threads) {
    kd_batch_source keep = *bs;
    memset(bs, 0, sizeof *bs);
    bs->a = a;
    bs->b = b;
    bs->ratio_b = ratio_b;
    bs->seed = seed;
    bs->kind_a = keep.kind_a;
    bs->kind_b = keep.kind_b;
    bs->weight_a = keep.weight_a > 0 ? keep.weight_a : 1.0f;
    bs->weight_b = keep.weight_b > 0 ? keep.weight_b : 1.0f;
    kd_sampler *any = a ? a : b;
    size_t ni = kd_sampler_image_floats(any), nt = kd_sampler_target_floats(any);
    bs->img = malloc(ni * sizeof(float));
    bs->tgt = malloc(nt * sizeof(float));
    if (!bs->img || !bs->tgt) return kd_fail(KD_ERR_OUT_OF_MEMORY, "batch staging buffers");
    /* one sampler: a background loader prepares the next batches */
    if (threads > 0 && !(a && b)) {
        kd_status s = kd_loader_create(any, first_step, threads, 2, a ? &bs->la : &bs->lb);
        if (s) return s;
    }
    return KD_OK;
}

void kd_batch_source_free(kd_batch_source *bs) {
    kd_loader_free(bs->la);
    kd_loader_free(bs->lb);
    free(bs->img);
    free(bs->tgt);
    memset(bs, 0, sizeof *bs);
}

kd_status kd_batch_from_source(void *ctx, long step, kd_tensor *x, kd_tensor *t,
                               kd_loss_kind *kind, float *weight) {
    kd_batch_source *bs = ctx;
    int use_b = kd_batch_source_uses_b(bs, step);
    kd_sampler *s = use_b ? bs->b : bs->a;
    kd_loader *l = use_b ? bs->lb : bs->la;
    kd_status st;
    if (l) {
        int64_t got = -1;
        st = kd_loader_next(l, &got, bs->img, bs->tgt);
        if (!st && got != step)
            st = kd_fail(KD_ERR_INTERNAL, "loader delivered step %lld for step %ld", (long long)got,
                         step);
    } else {
        st = kd_sampler_batch(s, step, bs->img, bs->tgt, NULL);
    }
    if (!st) st = kd_tensor_upload(x, bs->img);
    if (!st) st = kd_tensor_upload(t, bs->tgt);
    *kind = use_b ? bs->kind_b : bs->kind_a;
    *weight = use_b ? bs->weight_b : bs->weight_a;
    return st;
}

kd_status kd_val_set_load(kd_val_set *v, const kd_dataset *ds, const int *idx, int n) {
    v->cases = calloc((size_t)(n > 0 ? n : 1), sizeof *v->cases);
    v->n = 0;
    if (!v->cases) return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation set");
    for (int i = 0; i < n; i++) {
        kd_status s = kd_case_load(ds, idx[i], &v->cases[v->n]);
        if (s) return s;
        if (!v->cases[v->n]->target) {
            kd_case_free(v->cases[v->n]);
            return kd_fail(KD_ERR_INVALID_ARG, "validation case %s has no labels",
                           kd_dataset_case_name(ds, idx[i]));
        }
        v->n++;
    }
    return KD_OK;
}

void kd_val_set_free(kd_val_set *v) {
    for (int i = 0; i < v->n; i++) kd_case_free(v->cases[i]);
    free(v->cases);
    v->cases = NULL;
    v->n = 0;
}

kd_status kd_validate(void *ctx, kd_model *m, double dice[3]) {
    kd_val_set *v = ctx;
    dice[0] = dice[1] = dice[2] = 0;
    for (int i = 0; i < v->n; i++) {
        kd_case *c = v->cases[i];
        size_t nv = (size_t)c->d * c->h * c->w;
        float *p = malloc(3 * nv * sizeof(float));
        if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "validation");
        kd_status s = kd_infer_volume(&m, 1, c->image, c->channels, c->d, c->h, c->w, NULL, p, NULL);
        if (s) {
            free(p);
            return s;
        }
        for (int r = 0; r < 3; r++) {
            double inter = 0, sp = 0, sg = 0;
            for (size_t k = 0; k < nv; k++) {
                int a = p[r * nv + k] > 0.5f, b = c->target[r * nv + k] > 0.5f;
                inter += a && b;
                sp += a;
                sg += b;
            }
            dice[r] += sp + sg > 0 ? 2 * inter / (sp + sg) : 1.0;
        }
        free(p);
    }
    for (int r = 0; r < 3; r++) dice[r] /= v->n > 0 ? v->n : 1;
    return KD_OK;
}
