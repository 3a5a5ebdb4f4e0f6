/* Training sessions: an output folder, the data, the model and optimizer (or the
 * checkpoint to resume), the labeled sampler and the validation cases; one loop
 * (kd_train_run) over a pluggable step. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kd_internal.h"
#include "kdseg/domain.h"
#include "kdseg/recipe.h"

struct kd_session {
    kd_train_opts o;        /* as given; o.data resolved (OUT/phantom with synthetic cases) */
    kd_device *dev;         /* borrowed */
    kd_outdir *outdir;      /* OUT, held while the session is open */
    char data[KD_PATH_MAX]; /* the data folder */
    kd_dataset *ds;
    int *lab, nlab;         /* labeled case indices; the last val_cases are held out */
    int *pseudo, npseudo;   /* cases labeled by the annotations folder */
    kd_model *m;
    kd_optim *opt;
    kd_sampler *smp;        /* the labeled training cases */
    kd_validator *val;
    kd_train_config tc;
    kd_ckpt_meta meta;
    long start;
    int ran;                /* a run began: the folder is no longer discarded on free */
};

double kd_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kd_progressf(kd_progress_fn fn, void *ctx, const char *fmt, ...) {
    if (!fn) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fn(ctx, line);
}

int kd_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

void kd_train_opts_default(kd_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->layout = KD_LAYOUT_AUTO;
    o->synthetic_size[0] = o->synthetic_size[1] = o->synthetic_size[2] = 64;
    o->val_cases = 1;
    o->model = NULL; /* resunet; resuming: the checkpoint's */
    kd_optim_defaults(&o->optim);
    kd_schedule_defaults(&o->schedule);
    o->loss = KD_LOSS_PAPER;
    o->steps = 200;
    kd_sampler_opts_default(&o->sampler);
    o->sampler.batch = 1;
    o->sampler.patch[0] = o->sampler.patch[1] = o->sampler.patch[2] = 64;
    o->sampler.margin = 50;
    o->seed = 1;
    o->val_every = 50;
    o->ckpt_every = 50;
    o->threads = 1;
}

void kd_session_free(kd_session *s) {
    if (!s) return;
    kd_validator_free(s->val);
    kd_sampler_free(s->smp);
    kd_optim_free(s->opt);
    kd_model_free(s->m);
    kd_dataset_free(s->ds);
    free(s->lab);
    free(s->pseudo);
    /* a session that never ran leaves no folder it created behind (an empty one; one
     * holding a generated phantom cohort stays) */
    if (s->ran) kd_outdir_close(s->outdir);
    else kd_outdir_discard(s->outdir);
    free(s);
}

/* The files of a run in its output folder; the first two are its checkpoints (ema.kds, the
 * weight average, comes with last.kds). */
static const char *const run_files[] = {"last.kds", "best.kds", "ema.kds", "train.csv", "train.png"};
enum { N_RUN_FILES = 5, N_CHECKPOINTS = 2 };

/* A folder holding an earlier run's checkpoints is refused unless the run resumes or
 * overwrites; before any work, so a refused start changes nothing. */
static kd_status check_earlier_run(const kd_session *s) {
    const kd_train_opts *o = &s->o;
    if (o->resume && o->overwrite)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: resume or overwrite the earlier run, not both", o->out);
    if (o->resume || o->overwrite) return KD_OK;
    char path[KD_PATH_MAX], found[64] = "";
    for (int i = 0; i < N_CHECKPOINTS; i++) {
        kd_status st = kd_path_join(path, sizeof path, o->out, run_files[i]);
        if (st) return st;
        if (kd_exists(path)) snprintf(found + strlen(found), sizeof found - strlen(found), "%s%s",
                                      *found ? " and " : "", run_files[i]);
    }
    if (!*found) return KD_OK;
    char what[700] = "";
    kd_ckpt_meta meta;
    if (!kd_path_join(path, sizeof path, o->out, run_files[0]) && kd_exists(path) &&
        !kd_checkpoint_read_meta(path, &meta))
        snprintf(what, sizeof what, " (%s, step %ld of %ld)", meta.spec, meta.step, meta.steps);
    kd_clear_error();
    return kd_fail(KD_ERR_INVALID_ARG, "%s holds %s of an earlier run%s: resume to continue it (--resume), "
                   "overwrite to start again keeping its files as *.bak (--overwrite), or choose another "
                   "output folder", o->out, found, what);
}

/* Starting again over an earlier run: its files become *.bak (an older *.bak is
 * replaced), at the start of the run, once everything else has been checked. */
static kd_status keep_earlier_run(const kd_session *s) {
    char path[KD_PATH_MAX], bak[KD_PATH_MAX];
    for (int i = 0; i < N_RUN_FILES; i++) {
        kd_status st = kd_path_join(path, sizeof path, s->o.out, run_files[i]);
        if (!st) st = kd_path_printf(bak, sizeof bak, "%s.bak", path);
        if (st) return st;
        if (!kd_exists(path)) continue;
        if (rename(path, bak) != 0)
            return kd_fail(KD_ERR_IO, "%s: cannot keep it as %s: %s", path, bak, strerror(errno));
        kd_log(KD_LOG_INFO, "kept the earlier run's %s as %s", path, bak);
    }
    return KD_OK;
}

/* The same folder: both resolve to one path, or (one missing) the same text. -1: the
 * recorded one no longer exists (cannot tell). */
static int same_folder(const char *a, const char *recorded) {
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!realpath(recorded, rb)) return -1;
    if (!realpath(a, ra)) return !strcmp(a, recorded);
    return !strcmp(ra, rb);
}

/* Resuming: the checkpoint must be of the model and data asked for (when asked). */
static kd_status check_resume(kd_session *s, const char *last, kd_ckpt_meta *meta) {
    const kd_train_opts *o = &s->o;
    if (!kd_exists(last) && errno == ENOENT)
        return kd_fail(KD_ERR_IO, "%s: nothing to resume: no checkpoint yet (%s does not exist; "
                       "run without --resume to start)", o->out, last);
    kd_status st = kd_checkpoint_read_meta(last, meta);
    if (st) return st;
    if (o->model) {
        char want[512], have[512];
        if ((st = kd_model_spec_canonical(o->model, want, sizeof want))) return st;
        if (kd_model_spec_canonical(meta->spec, have, sizeof have)) snprintf(have, sizeof have, "%s", meta->spec);
        if (strcmp(want, have))
            return kd_fail(KD_ERR_INVALID_ARG, "%s is a %s model, not %s as asked: resume without giving "
                           "the model (it is the checkpoint's), or start a new run", last, have, want);
    }
    if (o->data && meta->data[0]) {
        int same = same_folder(o->data, meta->data);
        if (!same)
            return kd_fail(KD_ERR_INVALID_ARG, "%s was trained on %s, not %s as asked: resume on its data "
                           "(or without giving the data), or start a new run", last, meta->data, o->data);
        if (same < 0)
            kd_log(KD_LOG_WARN, "%s was trained on %s, which no longer exists; resuming on %s", last,
                   meta->data, o->data);
    }
    return KD_OK;
}

/* OUT/phantom: a cohort generated by an earlier run of the session, or a new one. */
static kd_status synthetic_data(kd_session *s) {
    const kd_train_opts *o = &s->o;
    kd_status st = kd_path_join(s->data, sizeof s->data, o->out, "phantom");
    if (st) return st;
    kd_phantom_opts po;
    memset(&po, 0, sizeof po);
    po.cases = o->synthetic_cases;
    memcpy(po.size, o->synthetic_size, sizeof po.size);
    po.seed = o->seed;
    po.layout = KD_LAYOUT_BRATS2018;
    /* a cohort of an earlier run: only a whole one of the same shape will do */
    if (kd_exists(s->data)) return kd_phantom_check_cohort(s->data, &po);
    if (o->progress)
        kd_log_progress("generating %d phantom cases of %dx%dx%d in %s", po.cases, po.size[0], po.size[1],
                        po.size[2], s->data);
    return kd_phantom_write_cohort(s->data, &po);
}

/* The dataset and its labeled and annotated case lists. */
static kd_status open_data(kd_session *s) {
    const kd_train_opts *o = &s->o;
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    dopts.layout = o->layout;
    dopts.annotations = o->annotations;
    dopts.modalities = o->modalities;
    dopts.channels = o->channels;
    kd_status st = kd_dataset_open(s->data, &dopts, &s->ds);
    if (st) return st;
    int n = kd_dataset_count(s->ds);
    s->lab = malloc(sizeof(int) * (size_t)(n + 1));
    s->pseudo = malloc(sizeof(int) * (size_t)(n + 1));
    if (!s->lab || !s->pseudo) return kd_fail(KD_ERR_OUT_OF_MEMORY, "case list");
    for (int i = 0; i < n; i++) {
        int l = kd_dataset_case_labeled(s->ds, i);
        if (l == 1) s->lab[s->nlab++] = i;
        else if (l == 2) s->pseudo[s->npseudo++] = i;
    }
    if (s->nlab - o->val_cases < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: %d labeled cases; need more than --val-cases %d", s->data,
                       s->nlab, o->val_cases);
    /* the held-out cases are the last val_cases labeled ones; none may be trained on */
    const int *val = s->lab + s->nlab - o->val_cases;
    kd_status st2 = kd_dataset_check_disjoint(s->ds, val, o->val_cases, "validation", s->ds, s->lab,
                                              s->nlab - o->val_cases, "training");
    if (!st2)
        st2 = kd_dataset_check_disjoint(s->ds, val, o->val_cases, "validation", s->ds, s->pseudo,
                                        s->npseudo, "annotated training");
    return st2;
}

/* The model and optimizer: new, or resumed from OUT/last.kds. */
static kd_status open_model(kd_session *s) {
    const kd_train_opts *o = &s->o;
    char path[KD_PATH_MAX];
    kd_status st = kd_path_join(path, sizeof path, o->out, "last.kds");
    if (st) return st;
    s->tc.best_so_far = -1;
    if (o->resume) {
        kd_ckpt_meta meta;
        if ((st = kd_checkpoint_load(path, s->dev, &s->m, &o->optim, &s->opt, &meta))) return st;
        s->start = meta.step;
        s->tc.best_so_far = meta.best_dice;
        if (o->progress) kd_log_progress("resuming %s at step %ld", kd_model_spec(s->m), s->start);
    } else if ((st = kd_model_create(s->dev, o->model ? o->model : "resunet", o->seed, &s->m)) ||
               (st = kd_optim_create(s->m, &o->optim, &s->opt))) {
        return st;
    }
    const int *p = o->sampler.patch;
    for (int k = 0; k < 3; k++)
        if (p[k] % kd_model_divisor(s->m))
            return kd_fail(KD_ERR_INVALID_ARG, "--patch %dx%dx%d: sizes must be multiples of %d for %s",
                           p[0], p[1], p[2], kd_model_divisor(s->m), kd_model_arch(s->m));
    return KD_OK;
}

/* The domain record of the cases trained on (labeled, not held out, and annotated): at
 * most 16 of them read for the statistics, spread over the list. */
static kd_status training_domain(const kd_session *s, kd_domain *d) {
    int n = s->nlab - s->o.val_cases, k = 0;
    int *idx = malloc((size_t)(n + s->npseudo + 1) * sizeof *idx);
    if (!idx) return kd_fail(KD_ERR_OUT_OF_MEMORY, "training domain");
    for (int i = 0; i < n; i++) idx[k++] = s->lab[i];
    for (int i = 0; i < s->npseudo; i++) idx[k++] = s->pseudo[i];
    kd_status st = kd_dataset_domain(s->ds, idx, k, 16, d);
    free(idx);
    return st;
}

kd_status kd_train_opts_recipe(kd_train_opts *o, const char *name) {
    const kd_recipe *r = kd_recipe_find(name);
    if (!r) return KD_ERR_INVALID_ARG; /* kd_recipe_find named it */
    o->recipe = r->name;
    memcpy(o->sampler.patch, r->patch, sizeof o->sampler.patch);
    o->sampler.batch = r->batch;
    o->steps = r->steps;
    o->optim.lr = (float)r->lr;
    o->optim.weight_decay = (float)r->wd;
    o->optim.kind = strcmp(r->optim, "sgd") ? KD_OPT_ADAM : KD_OPT_SGD;
    kd_status s = kd_schedule_parse(r->schedule, &o->schedule);
    o->schedule.warmup = r->warmup;
    o->schedule.step_every = r->step_every;
    if (!s) s = kd_loss_parse(r->loss, &o->loss);
    if (!s) s = kd_augment_opts_parse(r->aug, &o->sampler.aug);
    o->sampler.fg_fraction = r->fg_fraction;
    o->sampler.random_fraction = r->random_fraction;
    o->sampler.class_balance = r->class_balance;
    o->sampler.margin = r->margin;
    o->val_cases = r->val_cases;
    o->val_every = r->val_every;
    o->optim.ema = (float)r->ema;
    return s ? kd_fail_context(s, "recipe %s", name) : KD_OK;
}

kd_status kd_session_open(kd_device *dev, const kd_train_opts *o, kd_session **out) {
    *out = NULL;
    if (!o->out) return kd_fail(KD_ERR_INVALID_ARG, "training: no output folder");
    if (o->data && o->synthetic_cases > 0)
        return kd_fail(KD_ERR_INVALID_ARG, "training: give a data folder or a synthetic cohort, not both");
    if (!o->data && !(o->synthetic_cases > 0) && !o->resume)
        return kd_fail(KD_ERR_INVALID_ARG, "training: give a data folder or a synthetic cohort");
    if (o->val_cases < 0 || o->steps < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "training: %d validation cases, %ld steps", o->val_cases,
                       o->steps);
    if (o->synthetic_cases > 0 && o->synthetic_cases - o->val_cases < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "training: %d phantom cases; need more than %d held out for "
                       "validation", o->synthetic_cases, o->val_cases);
    char spec[512];
    kd_status st = o->model ? kd_model_spec_canonical(o->model, spec, sizeof spec) : KD_OK;
    if (st) return st; /* before anything is created */
    kd_session *s = calloc(1, sizeof *s);
    if (!s) return kd_fail(KD_ERR_OUT_OF_MEMORY, "training session");
    s->o = *o;
    s->dev = dev;
    kd_dist *dist = o->dist;
    int rank = kd_dist_rank(dist), follower = rank > 0;
    /* one writer per output folder (rank 0 of a job); the longest name it gets: a phantom
     * case file */
    st = follower ? KD_OK
                  : kd_outdir_open(o->out, o->synthetic_cases > 0 ? "phantom/KDPhantom_00000/KDPhantom_00000_flair.nii.gz"
                                                                  : "train.png.bak", &s->outdir);
    if (!st && !follower) st = check_earlier_run(s);
    st = kd_dist_agree(dist, st);
    kd_ckpt_meta last;
    kd_ckpt_meta_init(&last);
    char lastp[KD_PATH_MAX] = "";
    if (!st && o->resume && !(st = kd_path_join(lastp, sizeof lastp, o->out, "last.kds")))
        st = check_resume(s, lastp, &last);
    /* resuming without data given: the checkpoint's */
    if (!st && !o->data && !(o->synthetic_cases > 0)) {
        if (!last.data[0])
            st = kd_fail(KD_ERR_INVALID_ARG, "%s does not record its training data: give the data folder",
                         lastp);
        else
            st = kd_path_printf(s->data, sizeof s->data, "%s", last.data);
    }
    /* the model before the data: a model that cannot be built generates no cohort */
    if (!st) st = open_model(s);
    if (!st && o->data) st = kd_path_printf(s->data, sizeof s->data, "%s", o->data);
    else if (!st && o->synthetic_cases > 0 && !follower) st = synthetic_data(s);
    /* the other ranks read the phantom cohort rank 0 wrote */
    st = kd_dist_agree(dist, st);
    if (!st && !o->data && o->synthetic_cases > 0 && follower) st = synthetic_data(s);
    s->o.data = s->data;
    s->o.sampler.rank = rank;
    s->o.sampler.ranks = kd_dist_size(dist);
    if (!st) st = open_data(s);
    kd_sampler_opts so = s->o.sampler;
    so.seed = o->seed;
    if (!st) st = kd_sampler_create(&so, &s->smp);
    if (!st) st = kd_sampler_add(s->smp, s->ds, s->lab, s->nlab - o->val_cases);
    /* each rank validates its share of the held-out cases (kd_dist_mine) */
    int *vidx = malloc(sizeof(int) * (size_t)(o->val_cases + 1)), nv = 0;
    if (!st && !vidx) st = kd_fail(KD_ERR_OUT_OF_MEMORY, "validation case list");
    for (int j = 0; !st && j < o->val_cases; j++)
        if (kd_dist_mine(dist, j)) vidx[nv++] = s->lab[s->nlab - o->val_cases + j];
    if (!st) st = kd_validator_create(s->ds, vidx, nv, so.patch, &s->val);
    free(vidx);
    /* every rank ready, from rank 0's parameters, with its gradients averaged; a hash of the
     * parameters compared at the first update and at every checkpoint */
    st = kd_dist_agree(dist, st);
    if (!st) st = kd_dist_broadcast_model(dist, s->m, s->opt);
    if (!st) st = kd_dist_attach(dist, s->m, s->opt, o->stop, o->ckpt_every > 0 ? o->ckpt_every : 50);
    if (st) {
        kd_session_free(s);
        return st;
    }
    kd_train_config *tc = &s->tc;
    tc->steps = o->steps;
    tc->lr = o->optim.lr;
    tc->sched = o->schedule;
    tc->sched.total_steps = o->steps;
    tc->seed = o->seed;
    tc->val_every = o->val_cases > 0 ? o->val_every : 0;
    tc->ckpt_every = o->ckpt_every;
    tc->out_dir = o->out;
    tc->progress = o->progress != NULL;
    tc->stop = kd_dist_size(dist) > 1 ? kd_dist_stop_flag(dist) : o->stop;
    tc->follower = follower;
    kd_ckpt_meta_init(&s->meta);
    snprintf(s->meta.mode, sizeof s->meta.mode, "train");
    /* the data as an absolute path: a resumed run compares it wherever it starts from */
    char abs[PATH_MAX];
    snprintf(s->meta.data, sizeof s->meta.data, "%s", realpath(s->data, abs) ? abs : s->data);
    snprintf(s->meta.loss, sizeof s->meta.loss, "%s", kd_loss_name(o->loss));
    snprintf(s->meta.optim, sizeof s->meta.optim, "%s", o->optim.kind == KD_OPT_SGD ? "sgd" : "adam");
    memcpy(s->meta.patch, so.patch, sizeof s->meta.patch);
    s->meta.batch = so.batch;
    s->meta.ema = o->optim.ema;
    snprintf(s->meta.recipe, sizeof s->meta.recipe, "%s", o->recipe ? o->recipe : "");
    if ((st = training_domain(s, &s->meta.domain))) {
        kd_session_free(s);
        return st;
    }
    tc->meta = &s->meta;
    *out = s;
    return KD_OK;
}

kd_model *kd_session_model(kd_session *s) { return s->m; }
kd_optim *kd_session_optim(kd_session *s) { return s->opt; }
const kd_dataset *kd_session_dataset(const kd_session *s) { return s->ds; }
kd_sampler *kd_session_sampler(kd_session *s) { return s->smp; }
const kd_train_opts *kd_session_opts(const kd_session *s) { return &s->o; }
long kd_session_start(const kd_session *s) { return s->start; }
kd_ckpt_meta *kd_session_meta(kd_session *s) { return &s->meta; }

int kd_session_labeled(const kd_session *s, const int **idx) {
    if (idx) *idx = s->lab;
    return s->nlab - s->o.val_cases;
}

int kd_session_validation(const kd_session *s, const int **idx) {
    if (idx) *idx = s->lab + s->nlab - s->o.val_cases;
    return s->o.val_cases;
}

int kd_session_annotated(const kd_session *s, const int **idx) {
    if (idx) *idx = s->pseudo;
    return s->npseudo;
}

/* A kd_val_fn (ctx: the session): the mean over every rank's share of the held-out
 * cases, the same on every rank. */
static kd_status validate_shared(void *ctx, kd_model *m, double dice[3]) {
    kd_session *s = ctx;
    int n = kd_validator_count(s->val);
    kd_status st = n ? kd_validate(s->val, m, dice) : KD_OK;
    if (st) return st;
    float sums[4] = {0, 0, 0, (float)n};
    for (int r = 0; r < 3 && n; r++) sums[r] = (float)(dice[r] * n);
    st = kd_dist_allreduce_sum(s->o.dist, sums, 4, "gathering the validation Dice");
    for (int r = 0; r < 3 && !st; r++) dice[r] = sums[3] > 0 ? sums[r] / sums[3] : 0.0;
    return st;
}

kd_status kd_session_run_step(kd_session *s, kd_step_fn step, void *step_ctx, kd_train_result *res) {
    const kd_train_opts *o = &s->o;
    const int *p = o->sampler.patch;
    kd_train_result r;
    if (!res) res = &r;
    int ranks = kd_dist_size(o->dist), follower = kd_dist_rank(o->dist) > 0;
    if (!s->ran && o->overwrite && !follower) { /* rank 0 keeps the earlier run's files */
        kd_status st = keep_earlier_run(s);
        if (st) return st;
    }
    s->ran = 1;
    if (s->start >= o->steps) { /* a finished run resumed: nothing to train, nothing rewritten */
        memset(res, 0, sizeof *res);
        res->best_dice = s->tc.best_so_far;
        if (!follower)
            kd_progressf(o->progress, o->progress_ctx, "%s/last.kds is at step %ld of %ld already: nothing "
                         "to train (more steps continue it)", o->out, s->start, o->steps);
        return KD_OK;
    }
    if (o->progress && !follower) {
        size_t plan = 0;
        kd_model_plan(s->m, kd_shape5(o->sampler.batch, kd_model_in_channels(s->m), p[0], p[1], p[2]), 1,
                      &plan);
        kd_progressf(o->progress, o->progress_ctx,
                     "training %s (%zu parameters) on %s, %d labeled cases (%d held out), patch "
                     "%dx%dx%d, batch %d, steps %ld..%ld",
                     kd_model_spec(s->m), kd_model_param_count(s->m), kd_device_name(s->dev), s->nlab,
                     o->val_cases, p[0], p[1], p[2], o->sampler.batch, s->start, o->steps);
        if (ranks > 1)
            kd_progressf(o->progress, o->progress_ctx,
                         "data-parallel over %d ranks: batch %d per rank, %d in all; gradients "
                         "averaged every step",
                         ranks, o->sampler.batch, ranks * o->sampler.batch);
        kd_progressf(o->progress, o->progress_ctx,
                     "planned activation memory %.1f MiB (+ %.1f MiB parameters, gradients and "
                     "optimizer state)", plan / 1048576.0, 5.0 * kd_model_param_bytes(s->m) / 1048576.0);
    }
    kd_val_fn val = !o->val_cases ? NULL : ranks > 1 ? validate_shared : kd_validate;
    kd_status st = kd_train_run(s->m, s->opt, &s->tc, s->start, step, step_ctx, val,
                                ranks > 1 ? (void *)s : (void *)s->val, res);
    if (st && st != KD_ERR_INTERRUPTED) return st;
    /* every rank ends with the parameters rank 0 saved */
    uint64_t hash = 0;
    kd_status hs = ranks > 1 ? kd_dist_check_model(o->dist, s->m, s->start + res->steps_done) : KD_OK;
    if (!hs && ranks > 1) hs = kd_model_hash(s->m, &hash);
    if (hs) return hs;
    if (follower) return st; /* rank 0 reports and plots */
    if (ranks > 1) {
        long n = 0;
        kd_progressf(o->progress, o->progress_ctx, "parameters identical on all %d ranks (hash %016llx)",
                     ranks, (unsigned long long)hash);
        double ar = 0, wait = 0, ex = kd_dist_exchange_seconds(o->dist, &n, &ar, &wait);
        double k = n > 0 ? 1.0 / (double)n : 0.0;
        kd_progressf(o->progress, o->progress_ctx,
                     "gradient exchange over %d ranks, per step after the first: %.4f s = waiting "
                     "for the slowest rank %.4f s%s + MPI_Allreduce of %zu gradients %.4f s + device "
                     "reads, writes and hash checks %.4f s",
                     ranks, ex * k, wait * k, wait > 0 ? "" : " (KDSEG_DIST_PROFILE=1 measures it apart)",
                     kd_model_param_count(s->m), ar * k, (ex - ar - wait) * k);
    }
    char best[64] = "none (no validation yet)";
    if (res->best_dice >= 0) snprintf(best, sizeof best, "%.4f", res->best_dice);
    kd_progressf(o->progress, o->progress_ctx,
                 "%ld steps in %.1f s (%.3f steps/s), loss %.4f -> %.4f, best validation Dice %s, "
                 "peak device memory %.1f MiB",
                 res->steps_done, res->seconds, res->steps_per_s, (double)res->first_loss,
                 (double)res->last_loss, best, res->peak_device_bytes / 1048576.0);
    char csv[KD_PATH_MAX], png[KD_PATH_MAX];
    kd_status ps = kd_path_join(csv, sizeof csv, o->out, "train.csv");
    if (!ps) ps = kd_path_join(png, sizeof png, o->out, "train.png");
    if (!ps) ps = kd_plot_training(csv, png);
    if (ps) kd_log(KD_LOG_WARN, "plot: %s", kd_last_error());
    else kd_progressf(o->progress, o->progress_ctx, "wrote %s/last.kds, %s, %s", o->out, csv, png);
    if (st) kd_fail(st, "stopped at step %ld; checkpoint %s/last.kds saved", s->start + res->steps_done,
                    o->out);
    return st;
}

kd_status kd_session_run(kd_session *s, kd_batch_source *bs, kd_train_result *res) {
    const kd_train_opts *o = &s->o;
    kd_batch_source *own = NULL;
    kd_status st = KD_OK;
    if (!bs) {
        kd_batch_source_opts bo;
        memset(&bo, 0, sizeof bo);
        bo.a = s->smp;
        bo.kind_a = o->loss;
        bo.seed = o->seed;
        bo.first_step = s->start;
        bo.threads = o->threads;
        if ((st = kd_batch_source_create(&bo, &own))) return st;
        bs = own;
    }
    kd_plain_step *step = NULL;
    st = kd_plain_step_create(s->m, s->opt, o->sampler.batch, o->sampler.patch, kd_batch_source_next, bs,
                              &step);
    if (!st) st = kd_session_run_step(s, kd_plain_step_run, step, res);
    kd_plain_step_free(step);
    kd_batch_source_free(own);
    return st;
}

kd_status kd_train(kd_device *dev, const kd_train_opts *o, kd_train_result *res) {
    kd_session *s = NULL;
    kd_status st = kd_session_open(dev, o, &s);
    /* cases labeled by the annotations folder train alongside (validation stays on real
     * labels) */
    if (!st && s->npseudo) st = kd_sampler_add(s->smp, s->ds, s->pseudo, s->npseudo);
    if (!st) st = kd_session_run(s, NULL, res);
    kd_session_free(s);
    return st;
}
