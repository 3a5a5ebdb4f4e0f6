/* The background loader: worker threads run kd_sampler_batch for consecutive steps
 * into a ring of `depth` slots; the consumer takes them in step order. A worker's
 * error travels in its slot (status + message) and is returned by kd_loader_next. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

typedef struct slot {
    float *images, *targets;
    int64_t step;
    int ready;
    kd_status status;
    char msg[KD_MESSAGE_MAX]; /* a worker's kd_last_error(), whole */
} slot;

struct kd_loader {
    kd_sampler *s;
    int depth, nthreads, started;
    slot *slots;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t next_assign; /* next step a worker takes */
    int64_t next_take;   /* next step the consumer takes */
    int stop;
    int failed; /* an error was returned: no more batches */
};

static void *worker(void *arg) {
    kd_loader *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        while (!l->stop && l->next_assign >= l->next_take + l->depth)
            pthread_cond_wait(&l->cond, &l->lock);
        if (l->stop) {
            pthread_mutex_unlock(&l->lock);
            return NULL;
        }
        int64_t step = l->next_assign++;
        slot *sl = &l->slots[step % l->depth];
        pthread_mutex_unlock(&l->lock);

        kd_clear_error();
        kd_status st = kd_sampler_batch(l->s, step, sl->images, sl->targets, NULL);

        pthread_mutex_lock(&l->lock);
        sl->step = step;
        sl->status = st;
        snprintf(sl->msg, sizeof sl->msg, "%s", st ? kd_last_error() : "");
        sl->ready = 1;
        if (st) l->stop = 1; /* the consumer sees this error in order; nothing after it */
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
        if (st) return NULL;
    }
}

void kd_loader_free(kd_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    for (int i = 0; i < l->started; i++)
        pthread_join(l->threads[i], NULL);
    for (int i = 0; i < l->depth; i++) {
        free(l->slots[i].images);
        free(l->slots[i].targets);
    }
    free(l->slots);
    free(l->threads);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

kd_status kd_loader_create(kd_sampler *s, int64_t first_step, int threads, int depth,
                           kd_loader **out) {
    *out = NULL;
    if (!s || kd_sampler_count(s) == 0)
        return kd_fail(KD_ERR_INVALID_ARG, "loader: the sampler has no cases");
    if (threads < 1 || threads > 256 || depth < 1 || depth > 1024 || first_step < 0)
        return kd_fail(KD_ERR_INVALID_ARG, "loader: threads %d, depth %d, first step %lld", threads,
                       depth, (long long)first_step);
    kd_loader *l = calloc(1, sizeof *l);
    if (!l) return kd_fail(KD_ERR_OUT_OF_MEMORY, "loader");
    l->s = s;
    l->depth = depth;
    l->nthreads = threads;
    l->next_assign = l->next_take = first_step;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->slots = calloc(depth, sizeof *l->slots);
    l->threads = calloc(threads, sizeof *l->threads);
    int ok = l->slots && l->threads;
    for (int i = 0; ok && i < depth; i++) {
        l->slots[i].images = malloc(kd_sampler_image_floats(s) * sizeof(float));
        l->slots[i].targets = malloc(kd_sampler_target_floats(s) * sizeof(float));
        ok = l->slots[i].images && l->slots[i].targets;
    }
    if (!ok) {
        if (!l->slots) l->depth = 0;
        kd_loader_free(l);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "loader: %d batches of %zu floats", depth,
                       kd_sampler_image_floats(s));
    }
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&l->threads[i], NULL, worker, l) != 0) {
            kd_loader_free(l);
            return kd_fail(KD_ERR_INTERNAL, "loader: cannot start thread %d", i);
        }
        l->started++;
    }
    *out = l;
    return KD_OK;
}

kd_status kd_loader_next(kd_loader *l, int64_t *step, float *images, float *targets) {
    if (!l) return kd_fail(KD_ERR_INVALID_ARG, "loader: NULL");
    pthread_mutex_lock(&l->lock);
    if (l->failed) {
        pthread_mutex_unlock(&l->lock);
        return kd_fail(KD_ERR_INVALID_ARG, "loader: stopped after an earlier error");
    }
    slot *sl = &l->slots[l->next_take % l->depth];
    while (!sl->ready)
        pthread_cond_wait(&l->cond, &l->lock);
    pthread_mutex_unlock(&l->lock);
    /* The slot is ours until next_take moves on. */
    kd_status st = sl->status;
    if (st) {
        pthread_mutex_lock(&l->lock);
        l->failed = 1;
        pthread_mutex_unlock(&l->lock);
        return kd_fail(st, "background loader, step %lld: %s", (long long)sl->step, sl->msg);
    }
    memcpy(images, sl->images, kd_sampler_image_floats(l->s) * sizeof(float));
    memcpy(targets, sl->targets, kd_sampler_target_floats(l->s) * sizeof(float));
    if (step) *step = sl->step;
    pthread_mutex_lock(&l->lock);
    sl->ready = 0;
    l->next_take++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return KD_OK;
}
