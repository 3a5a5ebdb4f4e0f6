/* The training loop: steps, logging, validation, checkpoints, stop requests. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kdseg/fs.h"
#include "kdseg/train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

kd_status kd_train_step(kd_model *m, kd_optim *o, kd_loss *loss, const kd_tensor *x,
                        const kd_tensor *t, kd_loss_kind kind, float weight, float lr) {
    kd_tensor *p = NULL, *dp = NULL;
    kd_status s = kd_model_zero_grad(m);
    if (!s) s = kd_model_forward(m, x, 1, &p);
    if (!s) s = kd_tensor_create(kd_model_device(m), kd_tensor_shape(p), &dp);
    if (!s) {
        kd_loss_reset(loss);
        s = kd_loss_add(loss, kind, p, t, weight, dp, 0);
    }
    if (!s) s = kd_model_backward(m, dp);
    if (!s) s = kd_optim_step(o, lr, loss);
    kd_tensor_free(dp);
    if (s) kd_model_release(m);
    return s;
}

struct kd_plain_step {
    kd_model *m;
    kd_optim *o;
    kd_tensor *x, *t;
    kd_loss *loss;
    kd_batch_fn fn;
    void *ctx;
};

void kd_plain_step_free(kd_plain_step *s) {
    if (!s) return;
    kd_tensor_free(s->x);
    kd_tensor_free(s->t);
    kd_loss_free(s->loss);
    free(s);
}

kd_status kd_plain_step_create(kd_model *m, kd_optim *o, int batch, const int patch[3],
                               kd_batch_fn fn, void *ctx, kd_plain_step **out) {
    *out = NULL;
    kd_plain_step *s = calloc(1, sizeof *s);
    if (!s) return kd_fail(KD_ERR_OUT_OF_MEMORY, "training step");
    s->m = m;
    s->o = o;
    s->fn = fn;
    s->ctx = ctx;
    kd_device *dev = kd_model_device(m);
    kd_shape xs = kd_shape5(batch, kd_model_in_channels(m), patch[0], patch[1], patch[2]);
    kd_shape ts = xs;
    ts.c = kd_model_out_channels(m);
    kd_status st;
    if ((st = kd_tensor_create(dev, xs, &s->x)) || (st = kd_tensor_create(dev, ts, &s->t)) ||
        (st = kd_loss_create(dev, &s->loss))) {
        kd_plain_step_free(s);
        return st;
    }
    *out = s;
    return KD_OK;
}

kd_status kd_plain_step_run(void *plain_step, long step, long next, float lr, kd_step_report *rep) {
    kd_plain_step *s = plain_step;
    (void)next; /* a background loader, if any, prepares ahead behind fn */
    kd_loss_kind kind = KD_LOSS_PAPER;
    float weight = 1.0f;
    kd_status st = s->fn(s->ctx, step, s->x, s->t, &kind, &weight);
    if (!st) st = kd_train_step(s->m, s->o, s->loss, s->x, s->t, kind, weight, lr);
    if (!st) st = kd_loss_read(s->loss, &rep->loss);
    if (!st) st = kd_optim_read(s->o, &rep->grad_norm, &rep->applied);
    rep->kind = kd_loss_name(kind);
    return st;
}

static kd_status save(kd_model *m, kd_optim *o, const kd_train_config *c, const char *name,
                      long step, double best) {
    char path[KD_PATH_MAX];
    kd_ckpt_meta meta;
    if (c->follower) return KD_OK; /* rank 0 writes */
    kd_status s = kd_path_join(path, sizeof path, c->out_dir, name);
    if (s) return s;
    if (c->meta) meta = *c->meta;
    else kd_ckpt_meta_init(&meta);
    meta.step = step;
    meta.seed = c->seed;
    meta.best_dice = best;
    meta.lr = c->lr;
    meta.steps = c->steps;
    s = kd_checkpoint_save(path, m, o, &meta);
    /* with last.kds, the weight average as a model of its own (what inference uses) */
    if (!s && o && kd_optim_ema(o) && !strcmp(name, "last.kds") &&
        !(s = kd_path_join(path, sizeof path, c->out_dir, "ema.kds")))
        s = kd_optim_save_ema(o, path, &meta);
    return s;
}

static void progress(long step, long total, float loss, float lr, double rate, double eta) {
    int w = 30, filled = total > 0 ? (int)(w * step / total) : 0;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < filled ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "\r[%s] step %ld/%ld loss %.4f lr %.2e %.2f steps/s ETA %.0fs   ", bar, step,
            total, (double)loss, (double)lr, rate, eta);
    fflush(stderr);
}

#define CSV_HEADER "step,kind,loss,lr,grad_norm,seconds,val_wt,val_tc,val_et\n"

/* Opens train.csv for a run starting at `start`. A resumed run continues the log of the
 * run it resumes, which may have logged steps after its last checkpoint (killed between
 * a row and the next checkpoint) or a partial last row: the file is cut before the first
 * row at or past `start` (or the first incomplete one), so every step appears once. */
static kd_status csv_open(const char *path, long start, FILE **out) {
    *out = NULL;
    FILE *f = start > 0 ? fopen(path, "r+") : NULL;
    if (f) {
        char line[4096];
        long keep = 0;
        int header = 1;
        while (fgets(line, sizeof line, f)) {
            size_t n = strlen(line);
            if (n == 0 || line[n - 1] != '\n') break;
            char *end;
            long st = strtol(line, &end, 10);
            if (header ? strcmp(line, CSV_HEADER) : (end == line || *end != ',' || st >= start))
                break;
            header = 0;
            keep = ftell(f);
        }
        int bad = keep < 0 || fflush(f) != 0 || ftruncate(fileno(f), keep) != 0;
        int e = errno;
        fclose(f);
        if (bad) return kd_fail(KD_ERR_IO, "%s: cannot cut the log at step %ld: %s", path, start, strerror(e));
        f = fopen(kd_output_target(path), "a");
        if (f && keep == 0) fputs(CSV_HEADER, f);
    } else {
        f = fopen(kd_output_target(path), "w");
        if (f) fputs(CSV_HEADER, f);
    }
    if (!f) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    *out = f;
    return KD_OK;
}

kd_status kd_train_run(kd_model *m, kd_optim *o, const kd_train_config *c, long start,
                       kd_step_fn step_fn, void *sctx, kd_val_fn val, void *vctx,
                       kd_train_result *res) {
    memset(res, 0, sizeof *res);
    kd_device *dev = kd_model_device(m);
    FILE *csv = NULL;
    kd_status s;
    double best = c->best_so_far, t0 = now_s(); /* a resumed run keeps its best score */
    long step = start;
    int follower = c->follower, interactive = c->progress && !follower && kd_log_is_tty();
    char path[KD_PATH_MAX];
    if (!follower && ((s = kd_mkdirs(c->out_dir)) || (s = kd_path_join(path, sizeof path, c->out_dir, "train.csv")) ||
                      (s = csv_open(path, start, &csv))))
        goto done;
    kd_device_mem_reset_peak(dev);
    for (step = start; step < c->steps; step++) {
        if (c->stop && *c->stop) {
            s = save(m, o, c, "last.kds", step, best);
            if (!s) s = kd_fail(KD_ERR_INTERRUPTED, "stopped at step %ld; checkpoint %s/last.kds saved",
                                step, c->out_dir);
            goto done;
        }
        double ts0 = now_s();
        float lr = kd_schedule_lr(&c->sched, c->lr, step);
        kd_step_report r = {0.0f, 0.0f, 0, "?"};
        if ((s = step_fn(sctx, step, step + 1 < c->steps ? step + 1 : -1, lr, &r))) goto done;
        float lv = r.loss, gn = r.grad_norm;
        if (!r.applied) {
            s = kd_fail(KD_ERR_NUMERIC,
                        "non-finite %s at step %ld (loss %g, gradient norm %g): the update was "
                        "not applied and the last good checkpoint in %s is kept",
                        isfinite(lv) ? "gradient" : "loss", step, (double)lv, (double)gn,
                        c->out_dir);
            goto done;
        }
        if (step == start) res->first_loss = lv;
        res->last_loss = lv;
        double dice[3] = {NAN, NAN, NAN};
        int validated = 0;
        /* every rank validates (a data-parallel validation shares its cases); save is
         * rank 0's */
        if (val && c->val_every > 0 && ((step + 1) % c->val_every == 0 || step + 1 == c->steps)) {
            if ((s = val(vctx, m, dice))) goto done;
            validated = 1;
            double mean = (dice[0] + dice[1] + dice[2]) / 3.0;
            if (mean > best) {
                best = mean;
                if ((s = save(m, o, c, "best.kds", step + 1, best))) goto done;
            }
        }
        if (follower) continue; /* the log, checkpoints and progress are rank 0's */
        fprintf(csv, "%ld,%s,%.6f,%.6g,%.6g,%.4f", step, r.kind, (double)lv,
                (double)lr, (double)gn, now_s() - ts0);
        if (validated) fprintf(csv, ",%.4f,%.4f,%.4f\n", dice[0], dice[1], dice[2]);
        else fprintf(csv, ",,,\n");
        if (fflush(csv) != 0) {
            s = kd_fail(KD_ERR_IO, "%s/train.csv: write failed at step %ld: %s", c->out_dir, step,
                        strerror(errno));
            goto done;
        }
        if (c->ckpt_every > 0 && (step + 1) % c->ckpt_every == 0 &&
            (s = save(m, o, c, "last.kds", step + 1, best)))
            goto done;
        double el = now_s() - t0, rate = (double)(step + 1 - start) / (el > 0 ? el : 1e-9);
        if (interactive) progress(step + 1, c->steps, lv, lr, rate, (double)(c->steps - step - 1) / rate);
        else if (c->progress && ((step + 1) % 50 == 0 || validated))
        {
            char eta[32];
            kd_format_duration((double)(c->steps - step - 1) / rate, eta, sizeof eta);
            kd_log_progress("step %ld/%ld loss %.4f lr %.2e, %.2f steps/s, ETA %s%s", step + 1,
                            c->steps, (double)lv, (double)lr, rate, eta,
                            validated ? " (validated)" : "");
        }
    }
    s = save(m, o, c, "last.kds", step, best);
done:
    if (interactive) fprintf(stderr, "\n");
    res->steps_done = step - start;
    res->seconds = now_s() - t0;
    res->steps_per_s = res->seconds > 0 ? (double)res->steps_done / res->seconds : 0;
    res->best_dice = best;
    res->peak_device_bytes = kd_device_mem_peak(dev);
    if (csv) fclose(csv);
    return s;
}
