/* Pieces shared by train, distill and demo: dataset batches for the trainer,
 * validation on held-out cases, the SIGINT flag. */
#ifndef KD_TRAIN_COMMON_H
#define KD_TRAIN_COMMON_H

#include "kdseg/data.h"
#include "kdseg/fs.h"
#include "kdseg/infer.h"
#include "kdseg/train.h"

extern volatile int kd_stop_flag;
/* SIGINT/SIGTERM set kd_stop_flag (a second SIGINT ends the process). */
void kd_install_stop_handler(void);

/* Batches from one or two samplers: a step takes the second sampler (e.g. the
 * pseudo-labelled cases) when (hash(seed, step) mod 1000) < ratio * 1000. */
typedef struct kd_batch_source {
    kd_sampler *a, *b;
    float ratio_b;          /* share of steps drawn from b */
    kd_loss_kind kind_a, kind_b;
    float weight_a, weight_b;
    uint64_t seed;
    float *img, *tgt;       /* host staging */
    kd_loader *la, *lb;     /* background loaders (NULL: synchronous) */
} kd_batch_source;

kd_status kd_batch_source_init(kd_batch_source *bs, kd_sampler *a, kd_sampler *b, float ratio_b,
                               uint64_t seed, long first_step, int threads);
void kd_batch_source_free(kd_batch_source *bs);
int kd_batch_source_uses_b(const kd_batch_source *bs, long step);
kd_status kd_batch_from_source(void *ctx, long step, kd_tensor *x, kd_tensor *t,
                               kd_loss_kind *kind, float *weight);

/* Held-out cases for validation (preprocessed, in memory). */
typedef struct kd_val_set {
    kd_case **cases;
    int n;
    int tile[3]; /* sliding windows of this size (the training patch), as segment infers */
} kd_val_set;

kd_status kd_val_set_load(kd_val_set *v, const kd_dataset *ds, const int *idx, int n);
void kd_val_set_free(kd_val_set *v);
/* Mean Dice per region of thresholded predictions (no TTA; sliding windows of v->tile, or
 * the whole volume when tile is 0). */
kd_status kd_validate(void *ctx, kd_model *m, double dice[3]);

/* Writes a PNG of the loss and validation Dice curves from a train.csv. */
kd_status kd_plot_training(const char *csv_path, const char *png_path);

#endif

/* ---- command-line training sessions (train, distill, demo) ---------------------------- */

typedef struct kd_train_args {
    const char *data, *layout, *annotations, *modalities, *out, *model, *optim, *schedule, *loss,
        *aug, *recipe;
    int synthetic, cases, size[3], val_cases, patch[3], batch, steps, warmup, step_every,
        val_every, ckpt_every, resume, threads, margin, quiet, class_balance;
    double lr, wd, fg, rnd;
    long seed;
} kd_train_args;

/* The defaults: the default recipe (kdseg/recipe.h) and the rest. */
void kd_train_args_default(kd_train_args *a);
/* The defaults with the recipe named by a --recipe anywhere in argv (the other options
 * then override it, in any order). 0, or 2 after printing the error. */
int kd_train_args_init(const char *cmd, int argc, char **argv, kd_train_args *a);
/* Parses argv[*i] if it is a training option: 1 handled, 0 not a training option,
 * 2 a bad value (message printed). */
int kd_train_args_parse_one(const char *cmd, int argc, char **argv, int *i, kd_train_args *a);
/* The option list for --help. */
void kd_train_args_help(FILE *f);

typedef struct kd_train_session {
    kd_train_args a;
    kd_dataset *ds;
    int *lab, nlab;            /* labeled case indices; the last val_cases are held out */
    int *pseudo, npseudo;      /* cases labeled by the --annotations folder */
    kd_device *dev;
    kd_model *m;
    kd_optim *o;
    kd_optim_config oc;
    kd_loss_kind loss;
    kd_sampler_opts so;
    kd_sampler *smp;           /* labeled training cases */
    kd_val_set vs;
    kd_train_config tc;
    long start;
    char *extra;               /* checkpoint metadata lines (allocated) */
    kd_outdir *outdir;         /* OUT, held by this run */
    char phantom[KD_PATH_MAX]; /* OUT/phantom with --synthetic */
} kd_train_session;

/* Opens the data (generating a phantom cohort with --synthetic), the device, the model
 * and optimizer (or resumes from OUT/last.kds), the labeled sampler and validation set. */
kd_status kd_train_session_open(const char *cmd, const kd_train_args *a, kd_train_session *s);
void kd_train_session_close(kd_train_session *s);
/* Runs kd_train_run with a batch source, prints the summary, writes the plot. */
kd_status kd_train_session_run(kd_train_session *s, kd_batch_source *bs);
