/* The device scheduler: teacher jobs and student steps on one in-order queue. */
#include "kdseg/sched.h"

#include "../ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kd_sched {
    kd_model *student;
    kd_optim *opt;
    kd_model *const *teachers;
    int nt;
    kd_sched_config c;
    kd_device *dev;
    kd_tensor *x, *t;
    kd_loss *loss;
    float *host_img[2], *host_tgt[2], *stage_img[2], *stage_tgt[2];
    size_t planned;
    long ready;          /* the step whose batch is on the device (-1: none) */
    int ready_labeled;   /* whether that batch is labeled */
    long steps, teacher_jobs;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kd_sched_free(kd_sched *s) {
    if (!s) return;
    kd_tensor_free(s->x);
    kd_tensor_free(s->t);
    kd_loss_free(s->loss);
    for (int i = 0; i < 2; i++) {
        free(s->host_img[i]);
        free(s->host_tgt[i]);
        free(s->stage_img[i]);
        free(s->stage_tgt[i]);
    }
    free(s);
}

kd_status kd_sched_create(kd_model *student, kd_optim *opt, kd_model *const *teachers,
                          int nteachers, const kd_sched_config *c, kd_sched **out) {
    *out = NULL;
    kd_device *dev = kd_model_device(student);
    int C = kd_model_in_channels(student), K = kd_model_out_channels(student);
    for (int i = 0; i < nteachers; i++)
        if (kd_model_in_channels(teachers[i]) != C || kd_model_out_channels(teachers[i]) != K ||
            kd_model_device(teachers[i]) != dev)
            return kd_fail(KD_ERR_SHAPE, "teacher %d (%s) does not match the student (%d in, %d out)",
                           i, kd_model_spec(teachers[i]), C, K);
    kd_shape xs = kd_shape5(c->batch, C, c->patch[0], c->patch[1], c->patch[2]);
    /* memory: student step + optimizer state + every teacher's parameters + the largest
     * teacher forward (teachers release their activations between jobs) */
    size_t train = 0, worst_t = 0, params = 5 * kd_model_param_bytes(student);
    kd_status st = kd_model_plan(student, xs, 1, &train);
    for (int i = 0; i < nteachers && !st; i++) {
        size_t b = 0;
        st = kd_model_plan(teachers[i], xs, 0, &b);
        if (b > worst_t) worst_t = b;
        params += 2 * kd_model_param_bytes(teachers[i]); /* parameters and gradient slab */
    }
    if (st) return st;
    size_t io = 2 * kd_shape_numel(xs) * sizeof(float) * 2;
    size_t need = params + (train > worst_t ? train : worst_t) + io;
    size_t budget = c->mem_budget ? c->mem_budget : kd_device_global_mem(dev) / 10 * 8;
    if (need > budget)
        return kd_fail(KD_ERR_OUT_OF_MEMORY,
                       "the student's training step and %d resident teachers need %.0f MiB but the "
                       "device budget is %.0f MiB: fall back to offline annotation (kdseg annotate, "
                       "then distill with --annotations) or use a smaller patch",
                       nteachers, need / 1048576.0, budget / 1048576.0);
    kd_sched *s = calloc(1, sizeof *s);
    if (!s) return kd_fail(KD_ERR_OUT_OF_MEMORY, "scheduler");
    s->student = student;
    s->opt = opt;
    s->teachers = teachers;
    s->nt = nteachers;
    s->c = *c;
    s->dev = dev;
    s->planned = need;
    s->ready = -1;
    kd_shape ts = xs;
    ts.c = K;
    size_t ni = kd_shape_numel(xs), nk = kd_shape_numel(ts);
    if ((st = kd_tensor_create(dev, xs, &s->x)) || (st = kd_tensor_create(dev, ts, &s->t)) ||
        (st = kd_loss_create(dev, &s->loss))) {
        kd_sched_free(s);
        return st;
    }
    for (int i = 0; i < 2; i++) {
        s->host_img[i] = malloc(ni * sizeof(float));
        s->host_tgt[i] = malloc(nk * sizeof(float));
        s->stage_img[i] = malloc(ni * sizeof(float));
        s->stage_tgt[i] = malloc(nk * sizeof(float));
        if (!s->host_img[i] || !s->host_tgt[i] || !s->stage_img[i] || !s->stage_tgt[i]) {
            kd_sched_free(s);
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "scheduler staging buffers");
        }
    }
    *out = s;
    return KD_OK;
}

kd_status kd_sched_teacher_targets(kd_sched *s, const kd_tensor *x, kd_tensor *t) {
    if (s->nt < 1) return kd_fail(KD_ERR_INVALID_ARG, "online distillation needs teachers");
    kd_device_profile_tag(s->dev, KD_JOB_TEACHER);
    kd_status st = KD_OK;
    for (int i = 0; i < s->nt && !st; i++) {
        kd_tensor *y = NULL;
        st = kd_model_forward(s->teachers[i], x, 0, &y);
        if (!st && i == 0) {
            st = kd_tensor_copy(t, y);
            if (!st && s->nt > 1) st = kd_scale(1.0f / (float)s->nt, t);
        } else if (!st) {
            st = kd_axpy(1.0f / (float)s->nt, y, t);
        }
        kd_model_release(s->teachers[i]);
    }
    kd_device_profile_tag(s->dev, KD_JOB_OTHER);
    return st;
}

/* Get host batch `step` into slot, convert, enqueue uploads and teacher jobs. */
static kd_status prepare(kd_sched *s, long step, int slot, kd_host_batch_fn batch, void *bctx,
                         int *labeled) {
    kd_shape xs = kd_tensor_shape(s->x), ts = kd_tensor_shape(s->t);
    *labeled = 0;
    kd_status st = batch(bctx, step, s->host_img[slot], s->host_tgt[slot], labeled);
    if (st) return st;
    kd_ncdhw_to_ndhwc(s->host_img[slot], s->stage_img[slot], xs);
    if ((st = kd_tensor_upload_ndhwc_async(s->x, s->stage_img[slot]))) return st;
    if (*labeled) {
        kd_ncdhw_to_ndhwc(s->host_tgt[slot], s->stage_tgt[slot], ts);
        return kd_tensor_upload_ndhwc_async(s->t, s->stage_tgt[slot]);
    }
    return kd_sched_teacher_targets(s, s->x, s->t);
}

/* Batch `step` onto the device (with its teacher jobs) unless it is there. */
static kd_status ensure(kd_sched *s, long step, kd_host_batch_fn batch, void *bctx) {
    if (s->ready == step) return KD_OK;
    s->ready = -1;
    kd_status st = prepare(s, step, (int)(step & 1), batch, bctx, &s->ready_labeled);
    if (st) return st;
    s->teacher_jobs += !s->ready_labeled;
    s->ready = step;
    return KD_OK;
}

static kd_status step_with(kd_sched *s, long i, long next, float lr, kd_host_batch_fn batch,
                           void *bctx, kd_step_report *rep) {
    kd_status st = ensure(s, i, batch, bctx);
    if (st) return st;
    int labeled = s->ready_labeled;
    s->ready = -1;
    kd_loss_kind kind = labeled ? s->c.label_loss : s->c.distill_loss;
    float w = labeled ? 1.0f : s->c.distill_weight;
    kd_device_profile_tag(s->dev, KD_JOB_STUDENT);
    st = kd_train_step(s->student, s->opt, s->loss, s->x, s->t, kind, w, lr);
    kd_device_profile_tag(s->dev, KD_JOB_OTHER);
    if (st) return st;
    float lv = NAN, ost[2] = {0, 0};
    kd_event *e1 = NULL, *e2 = NULL;
    if ((st = kd_loss_read_async(s->loss, &lv, &e1)) || (st = kd_optim_read_async(s->opt, ost, &e2))) {
        kd_event_wait(e1);
        return st;
    }
    /* batch `next` is prepared while step i runs; its uploads and teacher jobs queue behind
     * step i and run while we wait for step i's loss */
    if (next >= 0) st = ensure(s, next, batch, bctx);
    kd_status w1 = kd_event_wait(e1), w2 = kd_event_wait(e2);
    if (!st) st = w1 ? w1 : w2;
    if (st) return st;
    s->steps++;
    rep->loss = lv;
    rep->grad_norm = sqrtf(ost[0]);
    rep->applied = ost[1] != 0.0f;
    rep->kind = labeled ? "labeled" : "teachers";
    return KD_OK;
}

kd_status kd_sched_step(void *sched, long step, long next, float lr, kd_step_report *rep) {
    kd_sched *s = sched;
    if (!s->c.batches)
        return kd_fail(KD_ERR_INVALID_ARG, "kd_sched_step: the scheduler has no batch function");
    return step_with(s, step, next, lr, s->c.batches, s->c.batches_ctx, rep);
}

void kd_sched_stats(kd_sched *s, kd_sched_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->steps = s->steps;
    rep->teacher_jobs = s->teacher_jobs;
    rep->planned_bytes = s->planned;
    rep->peak_device_bytes = kd_device_mem_peak(s->dev);
    rep->busy_fraction = -1;
    if (kd_device_profiling(s->dev)) {
        double span = 0, busy = kd_device_profile_busy(s->dev, &span);
        rep->busy_fraction = span > 0 ? busy / span : -1;
        for (int k = 0; k < KD_JOB_KINDS; k++)
            rep->job_seconds[k] = kd_device_profile_tag_busy(s->dev, k);
    }
}

kd_status kd_sched_run(kd_sched *s, long start, long end, kd_host_batch_fn batch, void *bctx,
                       kd_sched_step_cb on_step, void *sctx, const volatile int *stop,
                       kd_sched_report *rep) {
    if (kd_device_profiling(s->dev)) kd_device_profile_reset(s->dev);
    kd_device_mem_reset_peak(s->dev);
    long steps0 = s->steps, jobs0 = s->teacher_jobs;
    double t0 = now_s();
    s->ready = -1; /* batches from this run's function */
    kd_status st = KD_OK;
    for (long i = start; i < end && !st; i++) {
        if (stop && *stop) {
            st = kd_fail(KD_ERR_INTERRUPTED, "stopped before step %ld", i);
            break;
        }
        kd_step_report r;
        st = step_with(s, i, i + 1 < end ? i + 1 : -1, kd_schedule_lr(&s->c.sched, s->c.lr, i), batch,
                       bctx, &r);
        if (!st && !r.applied)
            st = kd_fail(KD_ERR_NUMERIC, "non-finite loss or gradient at step %ld (loss %g): the "
                         "update was not applied", i, (double)r.loss);
        if (!st && on_step) st = on_step(sctx, i, !strcmp(r.kind, "labeled"), r.loss, r.grad_norm);
    }
    s->ready = -1;
    kd_status fin = kd_device_finish(s->dev);
    if (!st) st = fin;
    kd_sched_stats(s, rep);
    rep->steps = s->steps - steps0;
    rep->teacher_jobs = s->teacher_jobs - jobs0;
    rep->seconds = now_s() - t0;
    return st;
}
