/* The optimizer of a model (AMSGrad Adam or Nesterov SGD over its parameter slab, with
 * the finite check that skips a bad step) and LR schedules. The device work is the
 * update ops' (src/ops/optim.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "kdseg/train.h"

struct kd_optim {
    kd_model *m;
    kd_optim_config c;
    kd_tensor *state[4]; /* the method's slabs, then the parameters' moving average */
    int nstate, nmethod; /* all of them; the method's */
    kd_tensor *part, *stats; /* gradient-norm partials; [sumsq, finite] */
    long steps;
    kd_grad_hook hook; /* e.g. the data-parallel gradient average */
    void *hook_ctx;
};

void kd_optim_defaults(kd_optim_config *c) {
    c->kind = KD_OPT_ADAM;
    c->lr = 1e-4f;
    c->weight_decay = 1e-6f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->momentum = 0.9f;
    c->ema = 0.0f;
}

kd_status kd_optim_create(kd_model *m, const kd_optim_config *c, kd_optim **out) {
    *out = NULL;
    kd_optim *o = calloc(1, sizeof *o);
    if (!o) return kd_fail(KD_ERR_OUT_OF_MEMORY, "optimizer");
    o->m = m;
    o->c = *c;
    o->nmethod = c->kind == KD_OPT_ADAM ? 3 : 1;
    o->nstate = o->nmethod + (c->ema > 0);
    kd_device *dev = kd_model_device(m);
    kd_shape s = kd_tensor_shape(kd_model_params(m));
    kd_status st = c->ema >= 0 && c->ema < 1
                       ? KD_OK
                       : kd_fail(KD_ERR_INVALID_ARG, "weight average decay %g: must be in [0, 1)", (double)c->ema);
    for (int i = 0; i < o->nstate && !st; i++) st = kd_tensor_zeros(dev, s, &o->state[i]);
    if (!st && c->ema > 0) st = kd_optim_ema_restart(o);
    if (!st) st = kd_tensor_zeros(dev, kd_shape5(1, KD_GRAD_PARTIALS, 1, 1, 1), &o->part);
    if (!st) st = kd_tensor_zeros(dev, kd_shape5(1, 2, 1, 1, 1), &o->stats);
    if (st) {
        kd_optim_free(o);
        return st;
    }
    *out = o;
    return KD_OK;
}

void kd_optim_free(kd_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->nstate; i++) kd_tensor_free(o->state[i]);
    kd_tensor_free(o->part);
    kd_tensor_free(o->stats);
    free(o);
}

long kd_optim_steps(const kd_optim *o) { return o->steps; }
void kd_optim_set_steps(kd_optim *o, long steps) { o->steps = steps; }
int kd_optim_state_count(const kd_optim *o) { return o->nstate; }
kd_tensor *kd_optim_state_tensor(kd_optim *o, int i) { return o->state[i]; }
const char *kd_optim_state_name(const kd_optim *o, int i) {
    static const char *adam[] = {"adam.exp_avg", "adam.exp_avg_sq", "adam.max_exp_avg_sq"};
    if (i >= o->nmethod) return "ema.params";
    return o->c.kind == KD_OPT_ADAM ? adam[i] : "sgd.momentum_buffer";
}

kd_tensor *kd_optim_ema(kd_optim *o) { return o->nstate > o->nmethod ? o->state[o->nmethod] : NULL; }

kd_status kd_optim_ema_restart(kd_optim *o) {
    kd_tensor *e = kd_optim_ema(o);
    return e ? kd_tensor_copy(e, kd_model_params(o->m)) : KD_OK;
}

kd_status kd_optim_save_ema(kd_optim *o, const char *path, const kd_ckpt_meta *meta) {
    kd_tensor *e = kd_optim_ema(o), *p = kd_model_params(o->m), *keep = NULL;
    if (!e) return kd_fail(KD_ERR_INVALID_ARG, "%s: the optimizer keeps no weight average", path);
    /* the model's own parameters set aside while its slab holds the average */
    kd_status s = kd_tensor_create(kd_model_device(o->m), kd_tensor_shape(p), &keep);
    if (!s) s = kd_tensor_copy(keep, p);
    if (!s) s = kd_tensor_copy(p, e);
    if (!s) {
        s = kd_checkpoint_save(path, o->m, NULL, meta);
        kd_status r = kd_tensor_copy(p, keep);
        if (!s) s = r;
    }
    kd_tensor_free(keep);
    return s;
}

void kd_optim_set_grad_hook(kd_optim *o, kd_grad_hook fn, void *ctx) {
    o->hook = fn;
    o->hook_ctx = ctx;
}

kd_status kd_optim_step(kd_optim *o, float lr, kd_loss *loss) {
    kd_tensor *p = kd_model_params(o->m), *g = kd_model_grads(o->m);
    kd_tensor *lt = loss ? kd_loss_total_tensor(loss) : NULL;
    int n = (int)kd_tensor_numel(p);
    kd_status s = o->hook ? o->hook(o->hook_ctx, o, g, lt) : KD_OK;
    if (s) return s;
    s = kd_grad_check(g, lt, o->part, o->stats);
    if (s) return kd_fail_context(s, "gradient norm of %d parameters", n);
    o->steps++;
    if (o->c.kind == KD_OPT_ADAM) {
        kd_adam_params h = {lr, o->c.beta1, o->c.beta2, o->c.eps, o->c.weight_decay, o->steps};
        s = kd_adam_update(&h, p, g, o->state[0], o->state[1], o->state[2], o->stats);
    } else {
        s = kd_sgd_update(lr, o->c.momentum, o->c.weight_decay, o->steps == 1, p, g, o->state[0],
                          o->stats);
    }
    /* the average follows the parameters as they are after the update (a skipped update
     * left them unchanged) */
    if (!s && kd_optim_ema(o)) s = kd_axpby(1.0f - o->c.ema, p, o->c.ema, kd_optim_ema(o));
    return s ? kd_fail_context(s, "%s step on %d parameters", o->c.kind == KD_OPT_ADAM ? "adam" : "sgd", n)
             : KD_OK;
}

kd_status kd_optim_read(kd_optim *o, float *grad_norm, int *applied) {
    float st[2];
    kd_status s = kd_tensor_download_ndhwc(o->stats, st);
    if (s) return kd_fail_context(s, "reading the gradient norm");
    if (grad_norm) *grad_norm = sqrtf(st[0]);
    if (applied) *applied = st[1] != 0.0f;
    return KD_OK;
}

kd_status kd_optim_read_async(kd_optim *o, float st[2], kd_event **ev) {
    return kd_tensor_download_ndhwc_async(o->stats, st, ev);
}

/* ---- schedules ------------------------------------------------------------------ */

void kd_schedule_defaults(kd_schedule *s) {
    memset(s, 0, sizeof *s);
    s->kind = KD_SCHED_STEP;
    s->step_every = 16000;
    s->gamma = 0.5f;
    s->power = 0.9f;
}

kd_status kd_schedule_parse(const char *name, kd_schedule *s) {
    static const char *names[] = {"step", "poly", "cosine", "const"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) {
            s->kind = (kd_sched_kind)i;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID_ARG, "unknown schedule '%s' (step, poly, cosine, const)", name);
}

float kd_schedule_lr(const kd_schedule *s, float base, long step) {
    if (s->warmup > 0 && step < s->warmup) return base * (float)(step + 1) / (float)s->warmup;
    long t = step - s->warmup, T = s->total_steps - s->warmup;
    switch (s->kind) {
    case KD_SCHED_STEP: return base * powf(s->gamma, (float)(s->step_every > 0 ? t / s->step_every : 0));
    case KD_SCHED_POLY:
        return T > 0 ? base * powf(1.0f - (float)(t < T ? t : T) / (float)T, s->power) : base;
    case KD_SCHED_COSINE:
        return T > 0 ? base * 0.5f * (1.0f + cosf(3.14159265f * (float)(t < T ? t : T) / (float)T))
                     : base;
    case KD_SCHED_CONST: break;
    }
    return base;
}
