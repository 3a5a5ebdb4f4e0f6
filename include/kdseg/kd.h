/* kdseg: the workflow, as a C program calls it. Training sessions (an output folder with
 * checkpoints, a log and a plot; resume; stop on request), batch sources that mix labeled
 * and pseudo-labeled cases, validation, offline and online distillation, ensemble
 * segmentation and annotation, agreement filtering, and the paper's experiment with its
 * statistics. The kdseg command is option parsing and printing over this header;
 * examples/distill.c is a short program on it.
 *
 * Ownership: an object made by kd_x_create or kd_x_open is freed by kd_x_free, which
 * accepts NULL. Strings and arrays in option structs are borrowed for the call (for an
 * object, for its life). Devices are the caller's: every call that runs models takes an
 * open kd_device and never frees it.
 *
 * Progress: long calls report what they do as text lines through an optional
 * kd_progress_fn (NULL: silent); the numbers a program needs come back in report structs.
 * Stopping: calls that take `stop` check *stop between steps or cases; a caller sets it
 * (e.g. from a SIGINT handler): the work done is kept (a checkpoint, finished cases) and
 * the call returns KD_ERR_INTERRUPTED. */
#ifndef KDSEG_KD_H
#define KDSEG_KD_H

#include <stdint.h>
#include <stdio.h>

#include "kdseg/data.h"
#include "kdseg/dist.h"
#include "kdseg/infer.h"
#include "kdseg/metrics.h"
#include "kdseg/postproc.h"
#include "kdseg/sched.h"
#include "kdseg/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One line of progress (no newline), for the caller to print or log. */
typedef void (*kd_progress_fn)(void *ctx, const char *line);

/* ---- batch sources ------------------------------------------------------------------ */

/* Training batches from one sampler, or mixed from two: step s takes sampler b when
 * splitmix64(seed * 7919 + s) mod 1000 < ratio_b * 1000 (a pure function of seed and
 * step, so a resumed run draws the same batches). With one sampler a background loader
 * prepares the next batches. */
typedef struct kd_batch_source_opts {
    kd_sampler *a, *b;          /* borrowed; b may be NULL (every batch from a) */
    float ratio_b;              /* share of steps drawn from b, in [0, 1] */
    kd_loss_kind kind_a, kind_b;/* loss of a's and of b's batches */
    float weight_a, weight_b;   /* loss weights (0 means 1) */
    uint64_t seed;
    long first_step;            /* the loader's first batch (a resumed run's start) */
    int threads;                /* loader threads with one sampler (0: synchronous) */
} kd_batch_source_opts;

typedef struct kd_batch_source kd_batch_source;

/* A new source over o's samplers (borrowed: they must outlive it); starts its loader. */
kd_status kd_batch_source_create(const kd_batch_source_opts *o, kd_batch_source **out);
/* Stops the loader and frees the source (not the samplers). NULL ok. */
void kd_batch_source_free(kd_batch_source *bs);
/* 1 when step's batch comes from b. */
int kd_batch_source_uses_b(const kd_batch_source *bs, long step);
/* A kd_batch_fn (ctx: the source): the device batch of step, its loss and weight. */
kd_status kd_batch_source_next(void *source, long step, kd_tensor *x, kd_tensor *t,
                               kd_loss_kind *kind, float *weight);
/* A kd_host_batch_fn (ctx: the source) for the scheduler: host batch of step,
 * *labeled = 1 when it comes from a (b's batches get the teachers' targets). */
kd_status kd_batch_source_host(void *source, long step, float *images, float *targets,
                               int *labeled);

/* ---- validation --------------------------------------------------------------------- */

typedef struct kd_validator kd_validator;

/* Held-out labeled cases idx[0..n) of ds, preprocessed into memory (ds is not kept).
 * tile: sliding windows of this size (the training patch), as segmentation infers;
 * NULL or zeros: whole volumes where they fit. */
kd_status kd_validator_create(const kd_dataset *ds, const int *idx, int n, const int tile[3],
                              kd_validator **out);
/* Frees the validator and its cases. NULL ok. */
void kd_validator_free(kd_validator *v);
/* The number of validation cases. */
int kd_validator_count(const kd_validator *v);
/* A kd_val_fn (ctx: the validator): mean Dice per region (WT, TC, ET) over the cases of
 * thresholded predictions (kd_dice_threshold at 0.5, no flips). */
kd_status kd_validate(void *validator, kd_model *m, double dice[3]);

/* ---- training sessions ----------------------------------------------------------------- */

/* A training run in an output folder: OUT/last.kds, best.kds, train.csv, train.png. */
typedef struct kd_train_opts {
    /* data */
    const char *data;          /* dataset folder (NULL with synthetic_cases; resuming: NULL
                                  is the checkpoint's, another than its is refused) */
    kd_layout layout;          /* KD_LAYOUT_AUTO: detect */
    const char *modalities;    /* NULL: t1,t1ce,t2,flair */
    const char *channels;      /* nnU-Net without dataset.json: the modality of each channel
                                  file, e.g. "t1,t1ce,t2,flair" (kd_dataset_opts.channels) */
    const char *annotations;   /* labels for the data's unlabeled cases (kd_annotate's out):
                                  kd_train trains on them alongside; never validated on */
    int synthetic_cases;       /* > 0: a phantom cohort of this many cases in OUT/phantom */
    int synthetic_size[3];     /* its grid (64) */
    int val_cases;             /* the last N labeled cases are held out for validation (1) */
    /* output */
    const char *out;           /* folder (created). One holding an earlier run's last.kds
                                  or best.kds is refused unless resume or overwrite */
    int resume;                /* continue from OUT/last.kds exactly */
    int overwrite;             /* start again over an earlier run in OUT: its last.kds,
                                  best.kds, train.csv, train.png become *.bak (older *.bak
                                  replaced) when the run starts */
    /* model and optimisation */
    const char *model;         /* architecture spec (NULL: "resunet"; see kd_model_create);
                                  resuming: NULL is the checkpoint's, another is refused */
    kd_optim_config optim;     /* kind, lr, weight decay... (Adam, lr 1e-4, wd 1e-6) */
    kd_schedule schedule;      /* kind, step_every, warmup... (step: x0.5 every 16000);
                                  total_steps is set from steps */
    kd_loss_kind loss;         /* on labeled batches (paper) */
    long steps;                /* total steps (200) */
    kd_sampler_opts sampler;   /* batch, patch, margin, fractions, augmentation (batch 1,
                                  patch 64, margin 50, fractions 0, default augmentation);
                                  its seed is set from seed */
    uint64_t seed;             /* every random choice (1) */
    long val_every;            /* validate every N steps (50; 0: never) */
    long ckpt_every;           /* save last.kds every N steps (50; 0: at the end only) */
    int threads;               /* background loader threads (1; 0: none) */
    /* reporting and stopping */
    kd_progress_fn progress;   /* banner and summary lines (NULL: quiet, no progress bar) */
    void *progress_ctx;
    const volatile int *stop;  /* set by the caller: last.kds saved, KD_ERR_INTERRUPTED */
    /* scale-out */
    kd_dist *dist;             /* data-parallel job (kdseg/dist.h), borrowed; NULL: this
                                  process alone. Every rank opens the session with the same
                                  options on its own device; the batch is per rank (the
                                  global batch is ranks x batch); rank 0 generates the
                                  phantom cohort and writes OUT; OUT and the data must be
                                  on a file system every rank sees */
    const char *recipe;        /* the recipe these options came from (kd_train_opts_recipe),
                                  recorded in the checkpoints: segmentation then applies its
                                  post-processing (NULL: none) */
} kd_train_opts;

/* The defaults above: no recipe, the settings the synthetic demo was developed with.
 * The kdseg train and distill commands start from the default recipe ("real", for real
 * scans) instead: kd_train_opts_recipe(o, "real"). */
void kd_train_opts_default(kd_train_opts *o);
/* The training settings of the recipe called name (kdseg/recipe.h: "real", "phantom")
 * into o, and o->recipe; other fields are kept. KD_ERR_INVALID_ARG naming the known
 * recipes for an unknown name. */
kd_status kd_train_opts_recipe(kd_train_opts *o, const char *name);

typedef struct kd_session kd_session;

/* Opens a session: the output folder, the model and optimizer on dev (or OUT/last.kds
 * with resume), the data (generating the phantom cohort), the labeled sampler, the
 * validation cases. dev is borrowed for the session's life. Refuses, before creating or
 * changing anything: a bad model spec, a folder holding an earlier run's checkpoints
 * (neither resume nor overwrite), a resume whose model or data differ from the
 * checkpoint's (naming both). */
kd_status kd_session_open(kd_device *dev, const kd_train_opts *o, kd_session **out);
/* Frees everything the session owns (model, optimizer, data, sampler, validation cases)
 * and releases its output folder; not the device. A session that never ran removes the
 * output folder it created while that is empty (kd_outdir_discard). NULL ok. */
void kd_session_free(kd_session *s);

/* Parts of an open session, borrowed (valid until kd_session_free): */
kd_model *kd_session_model(kd_session *s);                 /* the model being trained */
kd_optim *kd_session_optim(kd_session *s);                 /* its optimizer */
const kd_dataset *kd_session_dataset(const kd_session *s); /* the data folder's cases */
kd_sampler *kd_session_sampler(kd_session *s);             /* the labeled training cases */
const kd_train_opts *kd_session_opts(const kd_session *s); /* as given, data resolved */
long kd_session_start(const kd_session *s);                /* the first step to run */
/* Labeled cases of the dataset used for training (not held out) and those labeled by
 * the annotations folder: count, and their indices in *idx (borrowed; may be NULL). */
int kd_session_labeled(const kd_session *s, const int **idx);
int kd_session_annotated(const kd_session *s, const int **idx);
/* The held-out validation cases of the dataset: count, indices in *idx (borrowed). */
int kd_session_validation(const kd_session *s, const int **idx);
/* The metadata every checkpoint of the session carries (mode "train"; a caller may
 * change mode or add records before running). */
kd_ckpt_meta *kd_session_meta(kd_session *s);

/* Runs the session's remaining steps with plain steps from bs (NULL: the labeled
 * sampler alone, with the session's loader threads), validating on the held-out cases;
 * writes train.png at the end (or when stopped). */
kd_status kd_session_run(kd_session *s, kd_batch_source *bs, kd_train_result *res);
/* The same with any step (e.g. kd_sched_step with its scheduler as ctx). */
kd_status kd_session_run_step(kd_session *s, kd_step_fn step, void *step_ctx,
                              kd_train_result *res);

/* One call: a session on the labeled (and annotated) cases, run, closed. */
kd_status kd_train(kd_device *dev, const kd_train_opts *o, kd_train_result *res);

/* A PNG of the loss and validation Dice curves of a train.csv. */
kd_status kd_plot_training(const char *csv_path, const char *png_path);

/* ---- ensemble segmentation and annotation ------------------------------------------- */

#define KD_ENSEMBLE_MAX 16

/* What segmentation and annotation share: the models, the data, inference and
 * post-processing. */
typedef struct kd_ensemble_opts {
    const char *const *models;  /* checkpoint files (1..KD_ENSEMBLE_MAX), averaged */
    int nmodels;
    kd_layout layout;           /* of the data (AUTO: detect) */
    const char *modalities;     /* NULL: t1,t1ce,t2,flair */
    const char *channels;       /* nnU-Net without dataset.json (kd_dataset_opts.channels) */
    kd_infer_opts infer;        /* flips, overlap...; tile all 0 and force_tiles 0: windows
                                   of the largest training patch in the checkpoints */
    int whole;                  /* 1: one pass over the whole volume when memory allows */
    kd_postproc_options post;   /* post.labels KD_LABELS_AUTO: segment writes BraTS maps
                                   (2023 for a BraTS 2023 dataset, else 2019) or, on an
                                   nnU-Net dataset, its own values (dataset.json); annotate
                                   the dataset's own values (kd_dataset_label_table) */
    int brain_mask;             /* 1: no tumour where every modality is 0 (outside the
                                   brain) (0) */
    unsigned post_given;        /* KD_POST_GIVEN_* bits: which of brain_mask and post's
                                   largest_only, min_component_fraction, et_min_voxels the
                                   caller chose; the others follow the first model's recipe
                                   when its checkpoint records one (0: all from the recipe) */
    int png;                    /* also OUT/CASE.png, an overlay montage */
    kd_progress_fn progress;    /* a line per case */
    void *progress_ctx;
    const volatile int *stop;   /* checked between cases */
    kd_dist *dist;              /* the job whose ranks share the cases (kdseg/dist.h),
                                   borrowed; NULL: this process alone. Case i of the data is
                                   rank i mod ranks'; each writes its own cases' outputs into
                                   the one OUT (rank 0 holds its lock), and rank 0 gathers
                                   the agreement rows into agreement.csv, in case order, at
                                   the end; reports count every rank's cases */
} kd_ensemble_opts;

#define KD_POST_GIVEN_BRAIN_MASK 1u
#define KD_POST_GIVEN_LARGEST 2u
#define KD_POST_GIVEN_MIN_COMPONENT 4u
#define KD_POST_GIVEN_ET_MIN 8u

/* No models; automatic layout, inference and post-processing defaults, labels AUTO. */
void kd_ensemble_opts_default(kd_ensemble_opts *o);

typedef struct kd_segment_opts {
    kd_ensemble_opts e;
    const char *case_dir;       /* one case (a BraTS folder or MSD image), or */
    const char *dataset;        /* every case of a dataset */
    const char *out;            /* OUT/CASE.nii.gz: labels on the case's original grid */
    const char *const *member_out; /* NULL, or one folder per model: each model's own
                                      labels from the ensemble's passes */
    int probabilities;          /* 1: OUT/CASE_prob.nii.gz uint8, 2: float32, 0: none */
} kd_segment_opts;

/* kd_ensemble_opts_default, no data or output yet. */
void kd_segment_opts_default(kd_segment_opts *o);
/* Loads the models on dev (freed at the end) and writes a label map per case (and the
 * member maps, probabilities, PNGs asked for); output folders are created. */
kd_status kd_segment(kd_device *dev, const kd_segment_opts *o);

typedef struct kd_annotate_opts {
    kd_ensemble_opts e;         /* e.models: the teachers */
    const char *dataset;        /* its unlabeled cases are annotated */
    const char *out;            /* OUT/CASE.nii.gz, and OUT/agreement.csv with two or more
                                   teachers (their mean pairwise Dice per case) */
    int soft;                   /* WT/TC/ET probabilities (uint8, 4-D) instead of labels */
    int all;                    /* labeled cases too */
} kd_annotate_opts;

typedef struct kd_annotate_report {
    int annotated, skipped;     /* cases written now, cases already there (resumed) */
} kd_annotate_report;

/* kd_ensemble_opts_default, hard labels, unlabeled cases only. */
void kd_annotate_opts_default(kd_annotate_opts *o);
/* Resumable: a case whose output exists is skipped; agreement.csv keeps one row per
 * annotated case. rep may be NULL. */
kd_status kd_annotate(kd_device *dev, const kd_annotate_opts *o, kd_annotate_report *rep);

/* ---- agreement filtering -------------------------------------------------------------- */

typedef struct kd_agreement_report {
    int kept, total, below, missing; /* of the annotated cases given */
    double min;
} kd_agreement_report;

/* Keeps in idx[0..*n) (cases of pool) only those whose teachers' mean pairwise Dice in
 * ANN_DIR/agreement.csv is >= min (a re-annotated case's last row wins): disagreement
 * marks the pseudo-labels least worth learning from. Errors name the file (and line);
 * no case kept is KD_ERR_INVALID_ARG. rep may be NULL. */
kd_status kd_agreement_filter(const char *ann_dir, const kd_dataset *pool, double min, int *idx,
                              int *n, kd_agreement_report *rep);

/* ---- distillation ------------------------------------------------------------------------ */

typedef struct kd_distill_opts {
    kd_train_opts train;        /* the student's session; train.data: the labeled cases */
    const char *unlabeled;      /* the unlabeled pool (NULL: train.data's unlabeled cases) */
    const char *annotations;    /* offline: the pool's labels (kd_annotate's out), or */
    const char *const *teachers;/* online: teacher checkpoints run on each unlabeled patch */
    int nteachers;
    double pseudo_ratio;        /* share of steps from the pool (0.5) */
    double pseudo_weight;       /* loss weight of those steps (1) */
    double min_agreement;       /* offline: kd_agreement_filter's min (0: keep every case) */
    kd_loss_kind pseudo_loss;   /* offline: loss on annotated cases (paper) */
    kd_loss_kind distill_loss;  /* online: loss against the ensemble's soft targets (bce) */
} kd_distill_opts;

/* kd_train_opts_default, ratio 0.5, weight 1, no filter, losses paper and bce. */
void kd_distill_opts_default(kd_distill_opts *o);

typedef struct kd_distill_report {
    kd_train_result train;
    int labeled, pool;          /* training cases: labeled, and annotated or unlabeled */
    kd_agreement_report agreement; /* with min_agreement */
    kd_sched_report sched;      /* online: steps, teacher jobs, device time per job kind */
} kd_distill_report;

/* Offline (the paper: annotations) or online (teachers through the device scheduler, one
 * training loop either way); checkpoints record mode "distill" or "online". rep may be
 * NULL. */
kd_status kd_distill(kd_device *dev, const kd_distill_opts *o, kd_distill_report *rep);

/* ---- evaluation statistics --------------------------------------------------------------- */

/* Mean Dice over the cases of region r (0 WT, 1 TC, 2 ET), or over the three (r = 3). */
double kd_eval_mean_dice(const kd_eval_result *r, int region);

/* Paired comparison of a against b over their common cases (matched by name): the mean
 * and standard error of the per-case differences of mean Dice (WT, TC, ET), and on how
 * many cases a is better. */
typedef struct kd_paired {
    double mean, se;
    int wins, n;
} kd_paired;

/* a against b (a - b per case). */
kd_paired kd_eval_paired(const kd_eval_result *a, const kd_eval_result *b);

/* ---- the paper's experiment ---------------------------------------------------------------- */

#define KD_EXPERIMENT_MAX_TEACHERS 6
#define KD_EXPERIMENT_MAX_DIRS 8
#define KD_EXPERIMENT_MAX_RUNS 8
#define KD_EXPERIMENT_MAX_JOBS 4

/* Every option of the experiment, the training recipe included: it does not follow the
 * train command's defaults. */
typedef struct kd_experiment_opts {
    const char *out;            /* folder: data/, models/, annotations/, pred/, results */
    uint64_t seed;              /* cohort and training seed (1) */
    int labeled, unlabeled, test; /* phantom cases per set */
    int size;                   /* phantom grid size^3 */
    /* the user's cases instead of phantoms (any supported layout; all three or none):
     * labeled cases (the last val_cases held out for validation), unlabeled folders
     * (their cases' own labels, if any, are hidden from training, and score the
     * annotations; when every case has them, an oracle student learns from them), and
     * test cases (labeled). No case may be in two sets. */
    const char *labeled_dir, *test_dir;
    const char *unlabeled_dirs[KD_EXPERIMENT_MAX_DIRS];
    int nunlabeled_dirs;
    const char *modalities;     /* NULL: t1,t1ce,t2,flair; models take as many channels */
    int nteachers;
    const char *teacher_names[KD_EXPERIMENT_MAX_TEACHERS];
    const char *teacher_specs[KD_EXPERIMENT_MAX_TEACHERS];
    const char *student_spec;
    long teacher_steps, student_steps;
    double teacher_lr, student_lr;
    double pseudo_ratio, pseudo_weight, min_agreement;
    kd_loss_kind student_loss;  /* every student's loss (baseline, distilled, oracle), on
                                   labeled and annotated cases alike (default: the paper's;
                                   a recipe's own); the teachers keep the recipe's loss */
    int student_runs;           /* the baseline and the distilled student are each trained
                                   this many times (1 to KD_EXPERIMENT_MAX_RUNS), run 1 with
                                   seed, run k > 1 with seed 100 + k - 1: with few labeled
                                   cases one student's test Dice moves with its own seed
                                   alone, so the verdict compares each test case's Dice
                                   averaged over the runs (1: one run, as before) */
    int jobs;                   /* models trained at once (1 to KD_EXPERIMENT_MAX_JOBS; 0 or
                                   1: one after another), each on a host thread with its own
                                   queue on the device: the teachers, then the students' runs
                                   and the oracle; every model is the same as when trained
                                   alone (given the same conv choices) */
    int online;                 /* also a student distilled online */
    int tta;                    /* flips at annotation and test time (0) */
    /* the recipe of every model */
    int patch, batch, val_cases, margin;
    long val_every;
    float fg_fraction, random_fraction;
    kd_augment_opts aug;
    kd_sched_kind schedule;
    const char *recipe;         /* NULL: the settings above are every model's whole recipe
                                   (the phantom demo's); a recipe's name (kdseg/recipe.h,
                                   e.g. "real"): every model starts from that recipe
                                   (optimiser, warm-up, loss, class-balanced sampling, its
                                   post-processing at segmentation) and the settings above
                                   override it (kd_experiment_opts_recipe copies the
                                   recipe's values into them) */
    int threads;
    kd_progress_fn progress;
    void *progress_ctx;
    const volatile int *stop;
} kd_experiment_opts;

/* The default run (2 + 2 labeled, 24 unlabeled, 24 test cases; teachers 800 steps,
 * students 2000) and the quick one (the tests'). */
void kd_experiment_opts_default(kd_experiment_opts *o);
void kd_experiment_opts_quick(kd_experiment_opts *o);
/* The named recipe (kdseg/recipe.h) for every model: o->recipe, and the recipe's patch,
 * batch, steps (teachers' and students'), learning rate, sampling fractions, margin,
 * validation interval, schedule and augmentation into o (val_cases, models and sizes
 * kept). `kdseg demo` on the user's cases starts from "real". KD_ERR_INVALID_ARG naming
 * the known recipes for an unknown name. */
kd_status kd_experiment_opts_recipe(kd_experiment_opts *o, const char *name);

typedef struct kd_experiment_model {
    char name[64];
    kd_eval_result *eval;       /* on the test cases */
    int run;                    /* 0: a model of its own; with student_runs > 1, k >= 1: run k
                                   of the baseline or distilled student ("student-baseline",
                                   "student-baseline-2", ...), -1: each test case's metrics
                                   averaged over those runs ("student-baseline-mean"; no
                                   model or segmentation of its own) */
} kd_experiment_model;

typedef struct kd_experiment_result {
    int nmodels;                /* the teachers, "ensemble", "student-baseline" (its runs and
                                   their mean), "student-distilled" (likewise),
                                   "student-oracle", "student-online" */
    kd_experiment_model models[KD_EXPERIMENT_MAX_TEACHERS + 5 + 2 * KD_EXPERIMENT_MAX_RUNS];
    int nteachers, ensemble, baseline, distilled, oracle, online; /* indices (oracle, online:
                                   -1 when not run); with several runs, baseline and
                                   distilled are the "-mean" entries */
    int runs;                   /* student runs; their indices: */
    int baseline_runs[KD_EXPERIMENT_MAX_RUNS], distilled_runs[KD_EXPERIMENT_MAX_RUNS];
    double annotations[4];      /* the ensemble's annotations against the unlabeled cases'
                                   hidden truth: Dice WT, TC, ET, mean (-1: no truth known) */
    double baseline_unlabeled[4]; /* the baseline student on the same cases (the mean over its
                                   runs; -1 likewise) */
    kd_sched_report online_sched;
    double seconds;
} kd_experiment_result;

/* Runs the stages: phantom cohort (or the user's cases), teachers, annotation (scored
 * against the hidden truth), baseline, distilled and oracle students (and online),
 * segmentation and evaluation of the test cases; writes OUT/results.md, results.csv,
 * dice_boxplot.png and example.png. *out is the caller's (kd_experiment_result_free). */
kd_status kd_experiment_run(kd_device *dev, const kd_experiment_opts *o,
                            kd_experiment_result **out);
/* Frees the result and its evaluations. NULL ok. */
void kd_experiment_result_free(kd_experiment_result *r);
/* The table (Dice and HD95 per region, mean ± std) and the paired comparisons. */
void kd_experiment_print(const kd_experiment_result *r, FILE *f);

/* ---- the data-amount study ------------------------------------------------------------------ */

#define KD_STUDY_MAX_SIZES 8
#define KD_STUDY_MAX_SEEDS 16
#define KD_STUDY_MAX_POINTS (2 * KD_STUDY_MAX_SIZES + KD_EXPERIMENT_MAX_TEACHERS + 1)

/* The paper's question, "the relationship between the performance of the model and the
 * amount of data employed during training", on phantom cohorts: per seed, a new cohort;
 * the student trained on labeled cases only at each size of `labeled`, and on `base`
 * labeled cases plus each size of `pool` ensemble-annotated cases (the teachers learn
 * from the base cases and annotate the pool); the teachers and their ensemble as
 * reference lines. Every model is scored on the seed's test cases. */
typedef struct kd_study_opts {
    kd_experiment_opts exp;     /* the recipe, models, steps, grid, test cases and val_cases
                                   (held out besides the sizes below); exp.out: the study's
                                   folder (OUT/seed-S per seed); exp.seed, labeled, unlabeled
                                   and the user's folders are not used */
    int labeled[KD_STUDY_MAX_SIZES], nlabeled; /* labeled-only student: training cases */
    int base;                   /* labeled training cases of the teachers and of the
                                   distilled students (0: the smallest of labeled) */
    int pool[KD_STUDY_MAX_SIZES], npool; /* annotated cases added to base (0: base alone) */
    uint64_t seeds[KD_STUDY_MAX_SEEDS];
    int nseeds;
} kd_study_opts;

/* The default study (the demo's recipe at 2000 steps per model, two models at a time:
 * about 30 minutes on 2 CPU cores) and the tests' tiny one. */
void kd_study_opts_default(kd_study_opts *o);
void kd_study_opts_quick(kd_study_opts *o);

typedef struct kd_study_point {
    char kind[64];              /* "labeled only", "labeled + annotated", "ensemble" or a
                                   teacher's name */
    int labeled, pool;          /* its training cases: labeled, ensemble-annotated */
    int n;                      /* seeds */
    double dice[KD_STUDY_MAX_SEEDS][4]; /* per seed: mean test Dice WT, TC, ET, their mean */
    double mean[4], se[4];      /* over the seeds: mean and standard error (0 for one seed) */
} kd_study_point;

typedef struct kd_study_result {
    int npoints;
    kd_study_point points[KD_STUDY_MAX_POINTS]; /* labeled only by size, then labeled +
                                   annotated by pool size, then ensemble and teachers */
    double annotations[KD_STUDY_MAX_SEEDS]; /* per seed: the ensemble's annotations of the
                                   largest pool against its hidden truth, mean Dice */
    int nseeds;                 /* seeds done */
    double seconds;
} kd_study_result;

/* Runs the study; writes OUT/study.csv (one row per point and seed), OUT/study.md (the
 * table of means and standard errors) and OUT/study.png (test Dice against training
 * cases, one line per kind of label with error bars, the ensemble and the teachers as
 * reference lines), after each seed with the seeds done so far (a study stopped later
 * keeps them). Run again into the same folder with the same options, it continues: a
 * model with a checkpoint resumes from it (a finished one runs no steps), and a finished
 * seed's scores are read back from OUT/seed-S/scores.csv. *out is the caller's
 * (kd_study_result_free). */
kd_status kd_study_run(kd_device *dev, const kd_study_opts *o, kd_study_result **out);
void kd_study_result_free(kd_study_result *r); /* NULL ok */
/* The table and what it says, as text. */
void kd_study_print(const kd_study_result *r, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
