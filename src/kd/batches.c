/* Batch sources: one sampler with a background loader, or two mixed by a per-step draw. */
#include <stdlib.h>
#include <string.h>

#include "kd_internal.h"

struct kd_batch_source {
    kd_batch_source_opts o;
    float *img, *tgt;   /* host staging (kd_batch_source_next) */
    kd_loader *la, *lb; /* background loaders (NULL: synchronous) */
};

int kd_batch_source_uses_b(const kd_batch_source *bs, long step) {
    const kd_batch_source_opts *o = &bs->o;
    if (!o->b || o->ratio_b <= 0) return 0;
    if (!o->a || o->ratio_b >= 1) return 1;
    uint64_t x = o->seed * 7919u + (uint64_t)step;
    return (int)(kd_splitmix64(&x) % 1000) < (int)(o->ratio_b * 1000);
}

void kd_batch_source_free(kd_batch_source *bs) {
    if (!bs) return;
    kd_loader_free(bs->la);
    kd_loader_free(bs->lb);
    free(bs->img);
    free(bs->tgt);
    free(bs);
}

kd_status kd_batch_source_create(const kd_batch_source_opts *o, kd_batch_source **out) {
    *out = NULL;
    if (!o->a && !o->b) return kd_fail(KD_ERR_INVALID_ARG, "batch source: no sampler");
    if (!(o->ratio_b >= 0 && o->ratio_b <= 1))
        return kd_fail(KD_ERR_INVALID_ARG, "batch source: ratio %g outside [0, 1]", (double)o->ratio_b);
    kd_batch_source *bs = calloc(1, sizeof *bs);
    if (!bs) return kd_fail(KD_ERR_OUT_OF_MEMORY, "batch source");
    bs->o = *o;
    if (bs->o.weight_a <= 0) bs->o.weight_a = 1.0f;
    if (bs->o.weight_b <= 0) bs->o.weight_b = 1.0f;
    kd_sampler *any = o->a ? o->a : o->b;
    bs->img = malloc(kd_sampler_image_floats(any) * sizeof(float));
    bs->tgt = malloc(kd_sampler_target_floats(any) * sizeof(float));
    kd_status s = KD_OK;
    if (!bs->img || !bs->tgt) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "batch staging buffers");
    /* one sampler: a background loader prepares the next batches */
    else if (o->threads > 0 && !(o->a && o->b))
        s = kd_loader_create(any, o->first_step, o->threads, 2, o->a ? &bs->la : &bs->lb);
    if (s) {
        kd_batch_source_free(bs);
        return s;
    }
    *out = bs;
    return KD_OK;
}

/* Host batch of step into img, tgt; *from_b whether it came from b. */
static kd_status host_batch(kd_batch_source *bs, long step, float *img, float *tgt, int *from_b) {
    int use_b = kd_batch_source_uses_b(bs, step);
    kd_loader *l = use_b ? bs->lb : bs->la;
    *from_b = use_b;
    if (!l) return kd_sampler_batch(use_b ? bs->o.b : bs->o.a, step, img, tgt, NULL);
    int64_t got = -1;
    kd_status st = kd_loader_next(l, &got, img, tgt);
    if (!st && got != step)
        st = kd_fail(KD_ERR_INTERNAL, "loader delivered step %lld for step %ld", (long long)got, step);
    return st;
}

kd_status kd_batch_source_next(void *source, long step, kd_tensor *x, kd_tensor *t,
                               kd_loss_kind *kind, float *weight) {
    kd_batch_source *bs = source;
    int use_b;
    kd_status st = host_batch(bs, step, bs->img, bs->tgt, &use_b);
    if (!st) st = kd_tensor_upload(x, bs->img);
    if (!st) st = kd_tensor_upload(t, bs->tgt);
    *kind = use_b ? bs->o.kind_b : bs->o.kind_a;
    *weight = use_b ? bs->o.weight_b : bs->o.weight_a;
    return st;
}

kd_status kd_batch_source_host(void *source, long step, float *images, float *targets, int *labeled) {
    int use_b;
    kd_status st = host_batch(source, step, images, targets, &use_b);
    *labeled = !use_b;
    return st;
}
