/* Models trained at once: the experiment's independent trainings (the teachers; the
 * students' runs and the oracle) on a few host threads, each thread driving its own
 * kd_device (context, in-order queue, buffer pool) on the same OpenCL device. On a CPU
 * device two small models side by side keep both cores busy where one model's kernels
 * do not (measured: README, "The default run"). Each training is what it would be alone:
 * its own seed, data order and output folder; nothing is shared but the read-only data. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "kd_internal.h"
#include "kdseg/model.h"
#include "kdseg/tensor.h"
#include "kdseg/tune.h"

typedef struct pool {
    kd_exp_job *jobs;
    int n, next, failed;
    kd_progress_fn progress;
    void *progress_ctx;
    pthread_mutex_t lock;
} pool;

typedef struct worker {
    pool *p;
    kd_device *dev;
} worker;

static void run_one(kd_device *dev, kd_exp_job *j) {
    j->s = j->distill ? kd_distill(dev, &j->dist, NULL) : kd_train(dev, &j->train, NULL);
    /* the message is this thread's: kept with the job for the caller's thread */
    if (j->s) snprintf(j->err, sizeof j->err, "%s", kd_last_error());
}

static void *work(void *arg) {
    worker *w = arg;
    pool *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        kd_exp_job *j = !p->failed && p->next < p->n ? &p->jobs[p->next++] : NULL;
        if (j && j->line[0]) kd_progressf(p->progress, p->progress_ctx, "%s", j->line);
        pthread_mutex_unlock(&p->lock);
        if (!j) return NULL;
        run_one(w->dev, j);
        if (j->s) {
            pthread_mutex_lock(&p->lock);
            p->failed = 1; /* the jobs running finish; no new one starts */
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static const kd_train_opts *job_train(const kd_exp_job *j) { return j->distill ? &j->dist.train : &j->train; }

/* One forward and backward pass of j's model at its training batch and patch, on dev:
 * every convolution the training runs has its implementation chosen (timed) here. */
static kd_status settle_choices(kd_device *dev, const kd_train_opts *t) {
    const int *p = t->sampler.patch;
    kd_model *m = NULL;
    kd_tensor *x = NULL, *y = NULL, *dy = NULL;
    kd_status s = kd_model_create(dev, t->model, t->seed, &m);
    if (!s)
        s = kd_tensor_create(dev, kd_shape5(t->sampler.batch, kd_model_in_channels(m), p[0], p[1], p[2]), &x);
    if (!s) s = kd_tensor_fill(x, 0.5f);
    if (!s) s = kd_model_forward(m, x, 1, &y);
    if (!s) s = kd_tensor_create(dev, kd_tensor_shape(y), &dy);
    if (!s) s = kd_tensor_fill(dy, 1e-3f);
    if (!s) s = kd_model_backward(m, dy);
    if (!s) s = kd_device_finish(dev);
    kd_tensor_free(dy);
    kd_tensor_free(x);
    kd_model_free(m);
    return s;
}

/* The conv chooser times each new (device, shape, pass) once and keeps the faster
 * implementation for good. Timed while other models train on the same device, the
 * timings are noise: on a fresh cache, the study's teachers and students trained side
 * by side chose im2col + GEMM for 35 shapes (the quiet chooser: none) and trained 5 to 7
 * times slower (0.42 s per student step against 0.06). So before the models start
 * together, one pass of each distinct model (spec, batch, patch) runs alone on devs[0]:
 * the trainings then find every choice made. */
static kd_status settle_all(kd_device *dev, const kd_exp_job *jobs, int n) {
    kd_status s = KD_OK;
    for (int i = 0; i < n && !s; i++) {
        const kd_train_opts *t = job_train(&jobs[i]);
        /* nothing to settle when an implementation is forced; a model left to its checkpoint
         * (model NULL) or without a fixed patch settles its choices as it trains */
        int seen = !t->model || kd_conv_forced() != KD_CONV_AUTO || t->sampler.batch < 1 ||
                   t->sampler.patch[0] < 1 || t->sampler.patch[1] < 1 || t->sampler.patch[2] < 1;
        for (int k = 0; k < i && !seen; k++) {
            const kd_train_opts *u = job_train(&jobs[k]);
            seen = u->model && !strcmp(u->model, t->model) && u->sampler.batch == t->sampler.batch &&
                   !memcmp(u->sampler.patch, t->sampler.patch, sizeof u->sampler.patch);
        }
        if (!seen) s = settle_choices(dev, t);
    }
    return s;
}

kd_status kd_exp_open_devices(kd_device *dev, int jobs, kd_device **devs, int *ndevs) {
    int want = jobs < 1 ? 1 : jobs > KD_EXPERIMENT_MAX_JOBS ? KD_EXPERIMENT_MAX_JOBS : jobs;
    kd_status s = KD_OK;
    while (!s && *ndevs < want)
        if (!(s = kd_device_open_like(dev, &devs[*ndevs]))) (*ndevs)++;
    return s;
}

kd_status kd_exp_run_jobs(kd_device *const *devs, int ndevs, kd_exp_job *jobs, int n, kd_progress_fn progress,
                          void *progress_ctx) {
    if (n <= 0) return KD_OK;
    if (ndevs < 1 || !devs[0]) return kd_fail(KD_ERR_INVALID_ARG, "experiment: no device for the trainings");
    int nw = ndevs < n ? ndevs : n, started = 1;
    if (nw > KD_EXPERIMENT_MAX_JOBS) nw = KD_EXPERIMENT_MAX_JOBS;
    if (nw > 1) {
        kd_progressf(progress, progress_ctx, "  %d models at a time, each on its own queue of the device", nw);
        kd_status s = settle_all(devs[0], jobs, n);
        if (s) return s;
    }
    int timed = kd_conv_timings_done();
    pool p = {jobs, n, 0, 0, progress, progress_ctx, PTHREAD_MUTEX_INITIALIZER};
    worker w[KD_EXPERIMENT_MAX_JOBS];
    pthread_t th[KD_EXPERIMENT_MAX_JOBS];
    for (int i = 0; i < n; i++) jobs[i].s = KD_OK, jobs[i].err[0] = 0;
    for (int i = 0; i < KD_EXPERIMENT_MAX_JOBS; i++) w[i].p = &p, w[i].dev = i < nw ? devs[i] : NULL;
    /* this thread is worker 0; a thread that cannot start leaves its share to the others */
    for (int i = 1; i < nw; i++) {
        if (pthread_create(&th[started], NULL, work, &w[i])) break;
        started++;
    }
    work(&w[0]);
    for (int i = 1; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.lock);
    if (nw > 1 && (timed = kd_conv_timings_done() - timed) > 0)
        kd_log(KD_LOG_INFO, "%d convolution shapes timed while models trained at once: their choices may be "
               "off (KDSEG_CONV, or remove conv-choices.txt and run one model at a time)", timed);
    for (int i = 0; i < n; i++) /* the first failure in the jobs' order */
        if (jobs[i].s) return kd_fail(jobs[i].s, "%s", jobs[i].err);
    return KD_OK;
}
