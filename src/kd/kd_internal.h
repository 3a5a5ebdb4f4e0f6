/* Shared by the files of src/kd (not installed). */
#ifndef KD_KD_INTERNAL_H
#define KD_KD_INTERNAL_H

#include "kdseg/fs.h"
#include "kdseg/kd.h"

/* Monotonic seconds. */
double kd_now_s(void);

/* A printf-formatted progress line to fn (nothing when fn is NULL). */
void kd_progressf(kd_progress_fn fn, void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The online scheduler's report as progress lines. */
void kd_sched_report_lines(const kd_sched_report *r, int nteachers, double seconds,
                           kd_progress_fn fn, void *ctx);

/* OUT/results.md, results.csv, dice_boxplot.png, example.png of an experiment whose test
 * cases (with the modalities given, NULL: all four) are in test. */
kd_status kd_experiment_write(const kd_experiment_result *r, const char *out, const char *test,
                              const char *modalities);

/* The experiment's recipe, shared with the study (experiment.c). */
/* Every training option of a model: data and out borrowed by t. */
void kd_exp_recipe(const kd_experiment_opts *o, const char *data, const char *out, const char *spec,
                   long steps, double lr, uint64_t seed, kd_train_opts *t);
/* A student's: kd_exp_recipe with the students' steps, learning rate, seed and loss
 * (o->student_loss; the teachers keep the recipe's). */
void kd_exp_student_recipe(const kd_experiment_opts *o, const char *data, const char *out, const char *spec,
                           kd_train_opts *t);
/* Inference and post-processing of segmentations and annotations. */
void kd_exp_ensemble_recipe(const kd_experiment_opts *o, kd_ensemble_opts *e);
/* MODEL_DIR/best.kds, or last.kds where no validation chose a best. */
kd_status kd_exp_checkpoint(const char *model_dir, char *path, size_t n);
/* spec with ":in=C" for data of C != 4 channels (unless spec names in=). */
kd_status kd_exp_spec(const char *spec, int channels, char *buf, size_t n);
/* Each case's metrics averaged over n evaluations of the same cases (a student's runs):
 * names from the first; an evaluation of other cases is KD_ERR_INVALID_ARG (report.c). */
kd_status kd_exp_mean_eval(const kd_eval_result *const *ev, int n, kd_eval_result **out);
/* The label maps in pred evaluated against the labeled cases (or label maps) of ref. */
kd_status kd_exp_evaluate(const char *pred, const char *ref, kd_eval_result **ev);
/* A link at `link` to `target` (made absolute), replacing an old one. */
kd_status kd_exp_link(const char *target, const char *link);
/* DIR: `cases` phantom cases of o's size and seed, numbered from first. */
kd_status kd_exp_cohort(const kd_experiment_opts *o, const char *dir, int cases, int first, int unlabeled);

/* One model's training for kd_exp_run_jobs: kd_train(train), or kd_distill(dist) when
 * distill is set; out is its folder (train.out or dist.train.out point at it); line, when
 * not empty, is printed as the job starts. */
typedef struct kd_exp_job {
    int distill;
    kd_train_opts train;
    kd_distill_opts dist;
    char out[KD_PATH_MAX];
    char line[512];
    kd_status s;                 /* the job's result ... */
    char err[KD_MESSAGE_MAX];    /* ... and its message */
} kd_exp_job;
/* The devices models train on at once: devs[0..*ndevs) already open (devs[0] = dev), more
 * opened like dev until there are `jobs` (1 to KD_EXPERIMENT_MAX_JOBS); the caller frees
 * devs[1..). */
kd_status kd_exp_open_devices(kd_device *dev, int jobs, kd_device **devs, int *ndevs);
/* Runs jobs[0..n) on min(ndevs, n) host threads (the caller's among them), thread i on
 * devs[i], each taking the next job when its last one ends; after a failure no new job
 * starts. With more than one thread it says so first (a progress line) and settles every
 * model's convolution choices alone on devs[0]. Returns the first failed job's status and
 * message (in the jobs' order). */
kd_status kd_exp_run_jobs(kd_device *const *devs, int ndevs, kd_exp_job *jobs, int n, kd_progress_fn progress,
                          void *progress_ctx);

/* 1 when path names an existing file or folder. */
int kd_exists(const char *path);

#endif
