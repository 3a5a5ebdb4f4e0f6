/* kdseg: losses, optimizers, schedules, checkpoints. */
#ifndef KDSEG_TRAIN_H
#define KDSEG_TRAIN_H

#include <stdint.h>

#include "kdseg/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- losses ------------------------------------------------------------------ */

typedef enum kd_loss_kind {
    KD_LOSS_PAPER = 0, /* (soft Dice with p^2 + BCE with background weight 0.01) / 2 */
    KD_LOSS_BCE,       /* distillation: BCE against soft targets (both terms weight 1) */
    KD_LOSS_MSE,       /* distillation: mean squared error against soft targets */
    KD_LOSS_DICE_BCE   /* (soft Dice + BCE with both terms weight 1) / 2: background voxels
                          weigh as much as tumour in the BCE (nnU-Net's Dice + CE) */
} kd_loss_kind;

const char *kd_loss_name(kd_loss_kind k);
kd_status kd_loss_parse(const char *name, kd_loss_kind *out);

typedef struct kd_loss kd_loss; /* scratch buffers and the device-side loss value */

kd_status kd_loss_create(kd_device *dev, kd_loss **out);
void kd_loss_free(kd_loss *l);
/* Enqueue loss(p, t) of `kind`, scaled by weight, and its gradient into dp
 * (accumulate: 0 overwrite, 1 add). The loss value stays on the device until read;
 * several calls sum their values (a total for mixed losses). reset clears the total. */
kd_status kd_loss_add(kd_loss *l, kd_loss_kind kind, const kd_tensor *p, const kd_tensor *t,
                      float weight, kd_tensor *dp, int accumulate);
void kd_loss_reset(kd_loss *l);
/* Read the total (a sync point). Also gives Dice per channel of the last term. */
kd_status kd_loss_read(kd_loss *l, float *total);
/* Non-blocking read of the total into *dst (valid after kd_event_wait). */
kd_status kd_loss_read_async(kd_loss *l, float *dst, kd_event **ev);
/* The device buffer holding the running total, for the optimizer's finite check. */
kd_tensor *kd_loss_total_tensor(kd_loss *l);

/* ---- optimizers and schedules ----------------------------------------------------- */

typedef enum kd_optim_kind { KD_OPT_ADAM = 0, KD_OPT_SGD } kd_optim_kind;

typedef struct kd_optim_config {
    kd_optim_kind kind;
    float lr, weight_decay;
    float beta1, beta2, eps; /* Adam (always AMSGrad, as the paper) */
    float momentum;          /* SGD (Nesterov) */
} kd_optim_config;

void kd_optim_defaults(kd_optim_config *c); /* the paper: Adam lr 1e-4, wd 1e-6 ... */

typedef enum kd_sched_kind { KD_SCHED_STEP = 0, KD_SCHED_POLY, KD_SCHED_COSINE, KD_SCHED_CONST } kd_sched_kind;

typedef struct kd_schedule {
    kd_sched_kind kind;
    long total_steps;  /* poly, cosine */
    long step_every;   /* step: multiply by gamma every step_every steps */
    float gamma;       /* step */
    float power;       /* poly */
    long warmup;       /* linear warm-up steps */
} kd_schedule;

void kd_schedule_defaults(kd_schedule *s); /* the paper: halve every 16000 steps */
kd_status kd_schedule_parse(const char *name, kd_schedule *s);
float kd_schedule_lr(const kd_schedule *s, float base_lr, long step);

typedef struct kd_optim kd_optim;

kd_status kd_optim_create(kd_model *m, const kd_optim_config *c, kd_optim **out);
void kd_optim_free(kd_optim *o);
/* One update with learning rate lr: gradient norm, finite check (of the gradients and
 * of `loss`, if given), update skipped on device when not finite. Nothing is read. */
kd_status kd_optim_step(kd_optim *o, float lr, kd_loss *loss);
/* Read the last step's gradient L2 norm and whether it was applied (a sync point). */
kd_status kd_optim_read(kd_optim *o, float *grad_norm, int *applied);
/* Non-blocking read of [sum of squares, applied flag] into st[2]. */
kd_status kd_optim_read_async(kd_optim *o, float st[2], kd_event **ev);
long kd_optim_steps(const kd_optim *o);
void kd_optim_set_steps(kd_optim *o, long steps);
/* State slabs (m, v, vmax for Adam; momentum for SGD), for checkpoints. */
int kd_optim_state_count(const kd_optim *o);
kd_tensor *kd_optim_state_tensor(kd_optim *o, int i);
const char *kd_optim_state_name(const kd_optim *o, int i);


/* ---- golden self-test ---------------------------------------------------------------- */
typedef struct kd_selftest_report {
    char spec[512];
    int batch, depth, height, width;
    double out_err;   /* max |got - ref| / max |ref| over the output */
    double loss_err;  /* relative error of the loss */
    double grad_err;  /* error of the gradient tensor worst against its tolerance */
    char grad_worst[96];
    double step_err;  /* |got - ref| of the stepped parameters where |g| is not tiny,
                         in the tensor worst against its tolerance */
    double step_err_tiny; /* worst error where |g| is tiny, in units of lr */
    /* The tolerance each was judged by: the fixed one below, or twice PyTorch's own
     * float32 error against the same float64 reference (the file's fp32/ tensors) where
     * that is larger. */
    double out_tol, loss_tol, grad_tol, step_tol, step_tiny_tol;
    int fp32_tensors;   /* tensors of the file with fp32/ results (0: fixed tolerances) */
    int fp32_loosened;  /* tensors whose tolerance PyTorch's float32 error set */
    float loss_ref, loss_got;
    int pass;
} kd_selftest_report;

/* Fixed tolerances (see ../shared/reference/README.md): outputs, loss, gradients within
 * 1e-3 of each tensor's largest magnitude; stepped parameters within 1e-5 absolute
 * where |g| >= 2e-3 max|g| of the tensor, else within 2 lr. */
#define KD_SELFTEST_TOL_REL 1e-3
#define KD_SELFTEST_TOL_STEP 1e-5
#define KD_SELFTEST_TOL_TINY_LR 2.0
/* Where PyTorch's float32 error on a tensor exceeds the fixed tolerance, the tensor is
 * judged against this multiple of it. */
#define KD_SELFTEST_FP32_FACTOR 2.0
/* Load a golden file, build the student at its widths (read from the parameter
 * shapes), run forward, the paper's loss, backward and one AMSGrad step, compare each
 * tensor with the file's float64 results, within the tolerances above. */
kd_status kd_selftest_golden(kd_device *dev, const char *path, kd_selftest_report *r);

/* ---- checkpoints ------------------------------------------------------------------ */

/* Self-describing file: magic "KDSEGCKP", format version, a metadata text block
 * ("key=value" lines: spec, step, options, RNG state...), a tensor table (name, shape,
 * offset) with the parameters in PyTorch layout, the non-trained state and the
 * optimizer state, then a CRC32 over everything. Written to a temporary file, flushed
 * and renamed. */
#define KD_CHECKPOINT_VERSION 1
kd_status kd_checkpoint_save(const char *path, kd_model *m, kd_optim *o, const char *meta);
/* Load: checks magic, version, CRC and shapes. Creates the model from the stored spec
 * on dev; with o_out, also an optimizer of config oc (NULL: Adam defaults) holding the
 * stored state. meta (may be NULL) receives the metadata text: the whole lines that fit
 * in meta_n bytes. */
kd_status kd_checkpoint_load(const char *path, kd_device *dev, kd_model **m_out,
                             const kd_optim_config *oc, kd_optim **o_out, char *meta,
                             size_t meta_n);
/* Value of key in a metadata text ("" if absent). Returns 1 when found; a value that
 * does not fit in val[n] is reported absent, never cut. */
int kd_meta_get(const char *meta, const char *key, char *val, size_t n);

/* ---- the training loop ------------------------------------------------------------ */

/* Fills the device batch for `step`: images x (B, Cin, P, P, P) and targets t
 * (B, Cout, P, P, P), and picks the loss for this step (kind, weight). Must depend
 * only on (seed, step) so that a resumed run repeats exactly. */
typedef kd_status (*kd_batch_fn)(void *ctx, long step, kd_tensor *x, kd_tensor *t,
                                 kd_loss_kind *kind, float *weight);
/* Validation: mean Dice per region (WT, TC, ET) on held-out cases. */
typedef kd_status (*kd_val_fn)(void *ctx, kd_model *m, double dice[3]);

typedef struct kd_train_config {
    int batch, patch[3];
    long steps;              /* total steps (the run stops at this step count) */
    float lr;
    kd_schedule sched;
    uint64_t seed;
    long val_every;          /* 0: no validation */
    long ckpt_every;         /* save `last` every N steps (and at the end); 0: end only */
    const char *out_dir;     /* last.kds, best.kds, train.csv are written here */
    const char *meta_extra;  /* more "key=value\n" lines stored in checkpoints */
    int progress;            /* 1: progress bar on a terminal, 0: quiet */
    const volatile int *stop;/* set non-zero (e.g. by SIGINT) to save and stop */
    double best_so_far;      /* best mean validation Dice before `start` (-1: none) */
} kd_train_config;

typedef struct kd_train_result {
    long steps_done;
    float first_loss, last_loss;
    double best_dice;        /* mean of WT, TC, ET at the best validation */
    double seconds, steps_per_s;
    size_t peak_device_bytes;
} kd_train_result;

/* One training step on device tensors: zero grads, forward, loss, backward, update.
 * Reads nothing back. */
kd_status kd_train_step(kd_model *m, kd_optim *o, kd_loss *loss, const kd_tensor *x,
                        const kd_tensor *t, kd_loss_kind kind, float weight, float lr);

/* Runs steps [start, c->steps) with checkpoints, CSV log and validation. */
kd_status kd_train_run(kd_model *m, kd_optim *o, const kd_train_config *c, long start,
                       kd_batch_fn batch, void *bctx, kd_val_fn val, void *vctx,
                       kd_train_result *res);

#ifdef __cplusplus
}
#endif
#endif
