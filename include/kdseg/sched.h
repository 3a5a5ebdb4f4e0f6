/* kdseg: the device scheduler. Teacher forward passes and student training steps are
 * jobs on the one in-order device queue, pipelined so the device does not wait for the
 * host: while step i runs, batch i+1 is prepared on the host, uploaded and the teacher
 * jobs producing its soft targets are queued behind step i; the loss of step i is read
 * without blocking the queue. */
#ifndef KDSEG_SCHED_H
#define KDSEG_SCHED_H

#include "kdseg/train.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { KD_JOB_OTHER = 0, KD_JOB_TEACHER = 1, KD_JOB_STUDENT = 2, KD_JOB_KINDS = 3 };

/* A host batch for `step`: images (B, C, P, P, P) NCDHW; targets (B, K, P, P, P) for a
 * labeled batch (set *labeled = 1), or untouched for an unlabeled one (*labeled = 0:
 * the teachers produce the targets). */
typedef kd_status (*kd_host_batch_fn)(void *ctx, long step, float *images, float *targets,
                                      int *labeled);
/* kd_sched_run's callback after step `step` with its loss and gradient norm (in step
 * order). */
typedef kd_status (*kd_sched_step_cb)(void *ctx, long step, int labeled, float loss, float grad_norm);

typedef struct kd_sched_config {
    int batch, patch[3];
    kd_host_batch_fn batches;  /* kd_sched_step's host batches, with their context */
    void *batches_ctx;
    float lr;                  /* kd_sched_run only (kd_sched_step is given its rate) */
    kd_schedule sched;         /* kd_sched_run only */
    kd_loss_kind label_loss;   /* for labeled batches (paper) */
    kd_loss_kind distill_loss; /* against the ensemble's soft targets (bce) */
    float distill_weight;      /* weight of the distillation loss (1) */
    size_t mem_budget;         /* 0: 80% of the device's limit */
} kd_sched_config;

typedef struct kd_sched_report {
    long steps, teacher_jobs;
    double seconds;                /* kd_sched_run's wall time (kd_sched_stats: 0) */
    double busy_fraction;          /* kernel-busy time / span (profiling on), else -1 */
    double job_seconds[KD_JOB_KINDS]; /* device time per job kind (profiling on) */
    size_t peak_device_bytes;      /* with every model resident */
    size_t planned_bytes;
} kd_sched_report;

typedef struct kd_sched kd_sched;

/* Plans memory for the student's training step plus every teacher's parameters and the
 * largest teacher forward; KD_ERR_OUT_OF_MEMORY (saying to fall back to offline
 * annotation) when they do not fit together. */
kd_status kd_sched_create(kd_model *student, kd_optim *opt, kd_model *const *teachers,
                          int nteachers, const kd_sched_config *c, kd_sched **out);
/* Frees the scheduler's tensors and staging buffers; the student, optimizer and teachers
 * (borrowed by kd_sched_create, which must outlive it) stay. NULL ok. */
void kd_sched_free(kd_sched *s);

/* The ensemble's soft targets for device images x: t = mean over teachers of their
 * probabilities (inference mode, activations released after each teacher). */
kd_status kd_sched_teacher_targets(kd_sched *s, const kd_tensor *x, kd_tensor *t);

/* The scheduler's training step, a kd_step_fn for kd_train_run (ctx: the kd_sched): batch
 * `step` from c->batches (prepared ahead by the previous step when it was told `next`),
 * for an unlabeled batch the teachers' soft targets, the student's training step, and,
 * while it runs, batch `next`'s upload and teacher jobs queued behind it; then the loss
 * is read. rep->kind is "labeled" or "teachers". */
kd_status kd_sched_step(void *sched, long step, long next, float lr, kd_step_report *rep);

/* Steps and teacher jobs since kd_sched_create; with device profiling on, the busy
 * fraction and device time per job kind since the device's profile was last reset; the
 * device's peak memory since it was last reset; the planned bytes. */
void kd_sched_stats(kd_sched *s, kd_sched_report *rep);

/* Steps [start, end) of kd_sched_step through the pipeline with batches from `batch`,
 * learning rate from c->lr and c->sched, nothing logged or saved: a benchmark's loop
 * (kdseg bench sched). Training runs kd_sched_step in kd_train_run. */
kd_status kd_sched_run(kd_sched *s, long start, long end, kd_host_batch_fn batch, void *bctx,
                       kd_sched_step_cb on_step, void *sctx, const volatile int *stop,
                       kd_sched_report *rep);

#ifdef __cplusplus
}
#endif
#endif
