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

kd_status kd_exp_run_jobs(kd_device *const *devs, int ndevs, kd_exp_job *jobs, int n, kd_progress_fn progress,
                          void *progress_ctx) {
    if (n <= 0) return KD_OK;
    if (ndevs < 1 || !devs[0]) return kd_fail(KD_ERR_INVALID_ARG, "experiment: no device for the trainings");
    pool p = {jobs, n, 0, 0, progress, progress_ctx, PTHREAD_MUTEX_INITIALIZER};
    worker w[KD_EXPERIMENT_MAX_JOBS];
    pthread_t th[KD_EXPERIMENT_MAX_JOBS];
    int nw = ndevs < n ? ndevs : n, started = 1;
    if (nw > KD_EXPERIMENT_MAX_JOBS) nw = KD_EXPERIMENT_MAX_JOBS;
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
    for (int i = 0; i < n; i++) /* the first failure in the jobs' order */
        if (jobs[i].s) return kd_fail(jobs[i].s, "%s", jobs[i].err);
    return KD_OK;
}
