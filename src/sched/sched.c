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

kd_status kd_sched_run(kd_sched *s, long start, long end, kd_host_batch_fn batch, void *bctx,
                       kd_step_fn on_step, void *sctx, const volatile int *stop,
                       kd_sched_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->planned_bytes = s->planned;
    int profiling = kd_device_profiling(s->dev);
    if (profiling) kd_device_profile_reset(s->dev);
    kd_device_mem_reset_peak(s->dev);
    double t0 = now_s();
    int labeled = 0, next_labeled = 0;
    kd_status st = prepare(s, start, start & 1, batch, bctx, &labeled);
    rep->teacher_jobs += !labeled;
    for (long i = start; i < end && !st; i++) {
        if (stop && *stop) {
            st = kd_fail(KD_ERR_INTERRUPTED, "stopped before step %ld", i);
            break;
        }
        float lr = kd_schedule_lr(&s->c.sched, s->c.lr, i);
        kd_loss_kind kind = labeled ? s->c.label_loss : s->c.distill_loss;
        float w = labeled ? 1.0f : s->c.distill_weight;
        kd_device_profile_tag(s->dev, KD_JOB_STUDENT);
        st = kd_train_step(s->student, s->opt, s->loss, s->x, s->t, kind, w, lr);
        kd_device_profile_tag(s->dev, KD_JOB_OTHER);
        if (st) break;
        float lv = NAN, ost[2] = {0, 0};
        kd_event *e1 = NULL, *e2 = NULL;
        if ((st = kd_loss_read_async(s->loss, &lv, &e1)) ||
            (st = kd_optim_read_async(s->opt, ost, &e2))) {
            kd_event_wait(e1);
            break;
        }
        /* batch i+1 is prepared while step i runs; its uploads and teacher jobs queue
         * behind step i and run while we wait for step i's loss */
        if (i + 1 < end) {
            st = prepare(s, i + 1, (int)((i + 1) & 1), batch, bctx, &next_labeled);
            rep->teacher_jobs += !next_labeled;
        }
        kd_status w1 = kd_event_wait(e1), w2 = kd_event_wait(e2);
        if (!st) st = w1 ? w1 : w2;
        if (st) break;
        if (ost[1] == 0.0f) {
            st = kd_fail(KD_ERR_NUMERIC, "non-finite loss or gradient at step %ld (loss %g): the "
                         "update was not applied", i, (double)lv);
            break;
        }
        rep->steps++;
        if (on_step && (st = on_step(sctx, i, labeled, lv, sqrtf(ost[0])))) break;
        labeled = next_labeled;
    }
    kd_status fin = kd_device_finish(s->dev);
    if (!st) st = fin;
    rep->seconds = now_s() - t0;
    rep->peak_device_bytes = kd_device_mem_peak(s->dev);
    rep->busy_fraction = -1;
    if (profiling) {
        double span = 0, busy = kd_device_profile_busy(s->dev, &span);
        rep->busy_fraction = span > 0 ? busy / span : -1;
        for (int k = 0; k < KD_JOB_KINDS; k++)
            rep->job_seconds[k] = kd_device_profile_tag_busy(s->dev, k);
    }
    return st;
}
