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

const char *kd_loss_name(kd_loss_kind k); /* "paper", "bce", "mse" (static) */
kd_status kd_loss_parse(const char *name, kd_loss_kind *out); /* those names */

typedef struct kd_loss kd_loss; /* scratch buffers and the device-side loss value */

kd_status kd_loss_create(kd_device *dev, kd_loss **out); /* owned by the caller */
void kd_loss_free(kd_loss *l);                            /* NULL ok */
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
    float ema;               /* > 0: also keep an exponential moving average of the
                                parameters, ema = ema * d + params * (1 - d) after every
                                update, d = ema (kd_optim_ema); 0: none (the default) */
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
/* Sets s->kind from "step", "poly", "cosine" or "const" (the other fields stay). */
kd_status kd_schedule_parse(const char *name, kd_schedule *s);
/* The learning rate of step: base_lr through warm-up and the schedule. */
float kd_schedule_lr(const kd_schedule *s, float base_lr, long step);

typedef struct kd_optim kd_optim;

/* An optimizer of m's parameters (m borrowed: it must outlive the optimizer), its state
 * slabs zeroed. */
kd_status kd_optim_create(kd_model *m, const kd_optim_config *c, kd_optim **out);
void kd_optim_free(kd_optim *o); /* NULL ok */
/* One update with learning rate lr: gradient norm, finite check (of the gradients and
 * of `loss`, if given), update skipped on device when not finite. Nothing is read. */
kd_status kd_optim_step(kd_optim *o, float lr, kd_loss *loss);
/* Read the last step's gradient L2 norm and whether it was applied (a sync point). */
kd_status kd_optim_read(kd_optim *o, float *grad_norm, int *applied);
/* Non-blocking read of [sum of squares, applied flag] into st[2]. */
kd_status kd_optim_read_async(kd_optim *o, float st[2], kd_event **ev);
long kd_optim_steps(const kd_optim *o);          /* updates applied (Adam's bias correction) */
void kd_optim_set_steps(kd_optim *o, long steps); /* e.g. from a checkpoint */
/* Called at the start of every kd_optim_step, before the gradient norm, the finite
 * check and the update: it may rewrite the gradients (grads: the model's slab) and the
 * step's loss total (loss_total: the loss's device value, NULL when the step was given
 * no loss), e.g. average both over the ranks of a data-parallel job (kdseg/dist.h). An
 * error ends the step with nothing updated. NULL fn: none (the default). */
typedef kd_status (*kd_grad_hook)(void *ctx, kd_optim *o, kd_tensor *grads, kd_tensor *loss_total);
void kd_optim_set_grad_hook(kd_optim *o, kd_grad_hook fn, void *ctx);
/* State slabs (m, v, vmax for Adam; momentum for SGD; then the parameters' moving average
 * when the config asks for one), for checkpoints. */
int kd_optim_state_count(const kd_optim *o);
kd_tensor *kd_optim_state_tensor(kd_optim *o, int i);
const char *kd_optim_state_name(const kd_optim *o, int i);
/* The moving average of the parameters (the model's slab layout), or NULL when the config
 * keeps none. It starts as the parameters at creation; kd_optim_ema_restart sets it to the
 * parameters again (e.g. a checkpoint without one). */
kd_tensor *kd_optim_ema(kd_optim *o);
kd_status kd_optim_ema_restart(kd_optim *o);


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
 * ("key=value" lines), a tensor table (name, shape, offset) with the parameters in
 * PyTorch layout, the non-trained state and the optimizer state, then a CRC32 over
 * everything. Written to a temporary file, flushed and renamed. */
#define KD_CHECKPOINT_VERSION 1

/* What data a model was trained on: its checkpoints' domain record, filled from the
 * training cases by kd_dataset_domain and compared with a case by kd_domain_compare
 * (kdseg/domain.h). A plain record of values, so checkpoints (this layer) can keep it. */
#define KD_DOMAIN_CHANNELS 4
typedef struct kd_domain {
    char kind[16];       /* "real"; "phantom": images written by kdseg phantom (their header's
                            description); "mixed"; "": no record */
    char layout[16];     /* the data's layout name ("brats2018", ...) */
    char modalities[64]; /* channel order, e.g. "t1ce,flair" */
    int cases;           /* training cases (0: no record) */
    int channels;        /* C */
    double spacing[3];   /* voxel size x, y, z in mm, mean over the cases */
    double brain_ml[2];  /* smallest and largest brain volume (mL; any modality nonzero) */
    /* per channel: 1st, 50th, 99th percentile of the normalised intensities inside the
     * brain (z-scores), mean over the cases */
    double p01[KD_DOMAIN_CHANNELS], p50[KD_DOMAIN_CHANNELS], p99[KD_DOMAIN_CHANNELS];
} kd_domain;

/* What a checkpoint says about itself. Read and written only by checkpoint.c, as the
 * metadata block's key=value lines (one table there maps keys to these fields; keys a
 * reader does not know are ignored, fields a file lacks keep kd_ckpt_meta_init's values,
 * so older and newer files load). To add a record (e.g. the data a model was trained on):
 * add the fields here and one table row per field in src/train/checkpoint.c. */
typedef struct kd_ckpt_meta {
    char spec[512];       /* the model's canonical spec: filled on load; save writes the
                             model's own */
    long step;            /* optimizer steps done (0) */
    long steps;           /* the run's planned total steps (0: unknown) */
    uint64_t seed;        /* the run's seed (0) */
    double best_dice;     /* best mean validation Dice over WT, TC, ET so far (-1: none) */
    double lr;            /* base learning rate (0: unknown) */
    int batch;            /* training batch (0: unknown) */
    int patch[3];         /* training patch D, H, W (0: unknown; inference then decides) */
    char mode[16];        /* "train", "distill", "online", "imported" ("": unknown) */
    char data[1024];      /* the training data folder ("") */
    char loss[16];        /* loss on labeled batches: "paper", "bce", "mse" ("") */
    char optim[16];       /* "adam", "sgd" ("") */
    char recipe[16];      /* the training recipe (kdseg/recipe.h), whose post-processing
                             segmentation applies ("": none) */
    kd_domain domain;     /* the data it was trained on (kdseg/domain.h; cases 0: unknown) */
    double ema;           /* decay of the weight average the run keeps (0: none; -1: unknown) */
} kd_ckpt_meta;

/* Every field unknown: zeros, "", best_dice and ema -1. */
void kd_ckpt_meta_init(kd_ckpt_meta *meta);

/* Writes the model, the optimizer's state (o may be NULL) and meta (may be NULL: all
 * unknown). KD_ERR_INVALID_ARG for a text field holding a newline. */
kd_status kd_checkpoint_save(const char *path, kd_model *m, kd_optim *o, const kd_ckpt_meta *meta);
/* Load: checks magic, version, CRC and shapes. Creates the model (owned by the caller)
 * from the stored spec on dev; with o_out, also an optimizer of config oc (NULL: Adam
 * defaults) holding the stored state and step. meta (may be NULL) receives the
 * metadata. */
kd_status kd_checkpoint_load(const char *path, kd_device *dev, kd_model **m_out,
                             const kd_optim_config *oc, kd_optim **o_out, kd_ckpt_meta *meta);
/* The metadata alone (magic, version and CRC checked; no device, no model built). */
kd_status kd_checkpoint_read_meta(const char *path, kd_ckpt_meta *meta);
/* Writes a checkpoint of the model with the averaged parameters in place of its own (no
 * optimizer state; meta as kd_checkpoint_save), leaving the model as it was.
 * KD_ERR_INVALID_ARG when o keeps no average. */
kd_status kd_optim_save_ema(kd_optim *o, const char *path, const kd_ckpt_meta *meta);

/* ---- the training loop ------------------------------------------------------------ */

/* Fills the device batch for `step`: images x (B, Cin, P, P, P) and targets t
 * (B, Cout, P, P, P), and picks the loss for this step (kind, weight). Must depend
 * only on (seed, step) so that a resumed run repeats exactly. */
typedef kd_status (*kd_batch_fn)(void *ctx, long step, kd_tensor *x, kd_tensor *t,
                                 kd_loss_kind *kind, float *weight);
/* Validation: mean Dice per region (WT, TC, ET) on held-out cases. */
typedef kd_status (*kd_val_fn)(void *ctx, kd_model *m, double dice[3]);

/* What one training step did. */
typedef struct kd_step_report {
    float loss;       /* the step's loss (weighted) */
    float grad_norm;  /* L2 norm of the gradient */
    int applied;      /* 0: loss or gradient not finite, the update was skipped */
    const char *kind; /* what the step learnt from, train.csv's kind column (static text) */
} kd_step_report;

/* One training step, pluggable into kd_train_run: the batch of `step`, forward, loss,
 * backward and the update at rate lr, then its report (a sync point). `next` is the step
 * the loop runs after this one (-1: none), which a step may prepare while this one runs
 * on the device. Must depend only on (seed, step) so that a resumed run repeats exactly.
 * Two implementations: kd_plain_step_run below, and kd_sched_step (kdseg/sched.h), which
 * runs the teacher ensemble first for unlabeled batches. */
typedef kd_status (*kd_step_fn)(void *ctx, long step, long next, float lr, kd_step_report *rep);

/* The plain step: device batches from fn (borrowed, with its ctx), kd_train_step, then the
 * loss and gradient norm read back. m and o are borrowed; the step owns its batch tensors
 * (batch, Cin, patch) and (batch, Cout, patch). */
typedef struct kd_plain_step kd_plain_step;
/* Owned by the caller (kd_plain_step_free). */
kd_status kd_plain_step_create(kd_model *m, kd_optim *o, int batch, const int patch[3],
                               kd_batch_fn fn, void *ctx, kd_plain_step **out);
void kd_plain_step_free(kd_plain_step *s); /* NULL ok */
/* A kd_step_fn: ctx is the kd_plain_step. */
kd_status kd_plain_step_run(void *plain_step, long step, long next, float lr, kd_step_report *rep);

typedef struct kd_train_config {
    long steps;              /* total steps (the run stops at this step count) */
    float lr;
    kd_schedule sched;
    uint64_t seed;
    long val_every;          /* 0: no validation */
    long ckpt_every;         /* save `last` every N steps (and at the end); 0: end only */
    const char *out_dir;     /* last.kds, best.kds, train.csv are written here (created) */
    const kd_ckpt_meta *meta;/* what checkpoints say besides step, seed, best_dice, lr and
                                steps, which the loop fills in (NULL: nothing more) */
    int progress;            /* 1: progress bar on a terminal, 0: quiet */
    const volatile int *stop;/* set non-zero (e.g. by SIGINT) to save and stop */
    double best_so_far;      /* best mean validation Dice before `start` (-1: none) */
    int follower;            /* 1: a data-parallel rank other than 0 (kdseg/dist.h): runs
                                the steps and the validation calls (which a data-parallel
                                val shares over the ranks); writes no file, no progress */
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

/* The training loop: steps [start, c->steps) of `step` (with its ctx) on model m and
 * optimizer o (both borrowed), the learning rate from c->sched; one train.csv row per
 * step (a resumed run first cuts the log back to `start`), validation every val_every
 * steps with best.kds kept, last.kds every ckpt_every steps, at the end and when *stop
 * is set (then KD_ERR_INTERRUPTED). A step whose update was skipped (non-finite loss
 * or gradient) stops the run with KD_ERR_NUMERIC, the last good checkpoint kept. */
kd_status kd_train_run(kd_model *m, kd_optim *o, const kd_train_config *c, long start,
                       kd_step_fn step, void *step_ctx, kd_val_fn val, void *vctx,
                       kd_train_result *res);

#ifdef __cplusplus
}
#endif
#endif
