/* Distillation: the student learns from labeled cases plus the teacher ensemble's
 * annotations (offline, the paper) or its live predictions on each unlabeled patch
 * (online, through the device scheduler); one training loop either way. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_internal.h"

void kd_distill_opts_default(kd_distill_opts *o) {
    memset(o, 0, sizeof *o);
    kd_train_opts_default(&o->train);
    o->pseudo_ratio = 0.5;
    o->pseudo_weight = 1.0;
    o->pseudo_loss = KD_LOSS_PAPER;
    o->distill_loss = KD_LOSS_BCE;
}

/* ---- agreement filtering ---------------------------------------------------------------- */

typedef struct agreement_rows {
    char **names;
    double *vals;
    int n, cap;
} agreement_rows;

static void rows_free(agreement_rows *r) {
    for (int i = 0; i < r->n; i++) free(r->names[i]);
    free(r->names);
    free(r->vals);
}

static kd_status rows_add(agreement_rows *r, const char *name, double v, const char *path) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        char **nn = realloc(r->names, (size_t)cap * sizeof *nn);
        if (nn) r->names = nn;
        double *nv = nn ? realloc(r->vals, (size_t)cap * sizeof *nv) : NULL;
        if (!nn || !nv) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
        r->vals = nv;
        r->cap = cap;
    }
    if (!(r->names[r->n] = strdup(name))) return kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
    r->vals[r->n++] = v;
    return KD_OK;
}

/* ANN_DIR/agreement.csv: case and mean Dice per row. */
static kd_status rows_read(const char *path, agreement_rows *r) {
    FILE *f = fopen(path, "r");
    if (!f)
        return kd_fail(KD_ERR_IO, "%s: cannot read (agreement filtering needs the agreement file "
                       "that annotation writes with two or more teachers)", path);
    char line[1024];
    int lineno = 0;
    kd_status st = KD_OK;
    while (!st && fgets(line, sizeof line, f)) {
        lineno++;
        if (lineno == 1 && !strncmp(line, "case,", 5)) continue;
        char *comma = strchr(line, ','), *last = strrchr(line, ','), *end = NULL;
        double v = last ? strtod(last + 1, &end) : NAN;
        if (!comma || !end || end == last + 1 || !(v >= 0 && v <= 1)) {
            st = kd_fail(KD_ERR_FORMAT, "%s:%d: expected 'case,wt,tc,et,mean' with Dice in [0, 1]", path,
                         lineno);
            break;
        }
        *comma = 0;
        st = rows_add(r, line, v, path);
    }
    fclose(f);
    return st;
}

kd_status kd_agreement_filter(const char *ann_dir, const kd_dataset *pool, double min, int *idx,
                              int *n, kd_agreement_report *rep) {
    kd_agreement_report none;
    if (!rep) rep = &none;
    memset(rep, 0, sizeof *rep);
    rep->min = min;
    rep->total = *n;
    char path[KD_PATH_MAX];
    agreement_rows rows = {0};
    kd_status st = kd_path_join(path, sizeof path, ann_dir, "agreement.csv");
    if (!st) st = rows_read(path, &rows);
    for (int i = 0; i < *n && !st; i++) {
        const char *name = kd_dataset_case_name(pool, idx[i]);
        int r = rows.n - 1; /* the last row of a case wins (a re-annotated case) */
        while (r >= 0 && strcmp(rows.names[r], name)) r--;
        if (r < 0) rep->missing++;
        else if (rows.vals[r] < min) rep->below++;
        else idx[rep->kept++] = idx[i];
    }
    rows_free(&rows);
    if (st) return st;
    *n = rep->kept;
    if (!rep->kept)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: no annotated case has a teacher agreement of at least "
                       "%.2f", path, min);
    return KD_OK;
}

/* ---- distillation ---------------------------------------------------------------------- */

void kd_sched_report_lines(const kd_sched_report *r, int nteachers, double seconds,
                           kd_progress_fn fn, void *ctx) {
    kd_progressf(fn, ctx, "online distillation: %ld steps (%ld with teacher jobs) in %.1f s", r->steps,
                 r->teacher_jobs, seconds);
    if (r->busy_fraction >= 0)
        kd_progressf(fn, ctx,
                     "scheduler: device busy %.1f%%, device time teachers %.1f s, student %.1f s, "
                     "other %.1f s, peak device memory %.1f MiB with %d teachers resident",
                     100.0 * r->busy_fraction, r->job_seconds[KD_JOB_TEACHER],
                     r->job_seconds[KD_JOB_STUDENT], r->job_seconds[KD_JOB_OTHER],
                     r->peak_device_bytes / 1048576.0, nteachers);
    else
        kd_progressf(fn, ctx,
                     "scheduler: peak device memory %.1f MiB with %d teachers resident (busy "
                     "fraction needs KDSEG_PROFILE=quiet)", r->peak_device_bytes / 1048576.0, nteachers);
}

typedef struct distill_state {
    kd_session *s;
    kd_dataset *pool_ds; /* the unlabeled folder's dataset (NULL: the session's) */
    int *idx, n;         /* pool cases used */
    kd_sampler *pool;
    kd_model *teachers[KD_ENSEMBLE_MAX];
    int nt;
} distill_state;

static void state_free(distill_state *d) {
    for (int i = 0; i < d->nt; i++) kd_model_free(d->teachers[i]);
    kd_sampler_free(d->pool);
    free(d->idx);
    kd_session_free(d->s);
    kd_dataset_free(d->pool_ds);
}

/* The pool's cases to learn from (annotated offline, unlabeled online) and their sampler. */
static kd_status open_pool(const kd_distill_opts *o, int online, distill_state *d, kd_distill_report *rep) {
    const kd_train_opts *t = kd_session_opts(d->s);
    const kd_dataset *pool = kd_session_dataset(d->s);
    kd_status st = KD_OK;
    if (o->unlabeled) {
        kd_dataset_opts dopts;
        memset(&dopts, 0, sizeof dopts);
        dopts.layout = t->layout;
        dopts.modalities = t->modalities;
        dopts.channels = t->channels;
        dopts.annotations = online ? NULL : o->annotations;
        if ((st = kd_dataset_open(o->unlabeled, &dopts, &d->pool_ds))) return st;
        pool = d->pool_ds;
    }
    if (!(d->idx = malloc(sizeof(int) * (size_t)(kd_dataset_count(pool) + 1))))
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "case list");
    for (int i = 0; i < kd_dataset_count(pool); i++)
        if (kd_dataset_case_labeled(pool, i) == (online ? 0 : 2)) d->idx[d->n++] = i;
    if (!d->n)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: no %s cases", o->unlabeled ? o->unlabeled : t->data,
                       online ? "unlabeled" : "annotated (check --annotations)");
    if (!online && o->min_agreement > 0) {
        kd_agreement_report *a = &rep->agreement;
        st = kd_agreement_filter(o->annotations, pool, o->min_agreement, d->idx, &d->n, a);
        if (!st || st == KD_ERR_INVALID_ARG) /* read: how many were kept, if none */
            kd_progressf(t->progress, t->progress_ctx, "min agreement %.2f: kept %d of %d annotated cases "
                         "(%d below, %d not in %s/agreement.csv)", o->min_agreement, a->kept, a->total,
                         a->below, a->missing, o->annotations);
        if (st) return st;
    }
    /* the pool trained on must not hold a held-out case (e.g. through a link) */
    const int *val;
    int nval = kd_session_validation(d->s, &val);
    if ((st = kd_dataset_check_disjoint(kd_session_dataset(d->s), val, nval, "validation", pool, d->idx, d->n,
                                        online ? "unlabeled training" : "annotated training")))
        return st;
    kd_sampler_opts so = t->sampler;
    so.seed = t->seed + 1000003;
    so.allow_unlabeled = online;
    if ((st = kd_sampler_create(&so, &d->pool)) || (st = kd_sampler_add(d->pool, pool, d->idx, d->n)))
        return st;
    rep->labeled = kd_session_labeled(d->s, NULL);
    rep->pool = d->n;
    kd_progressf(t->progress, t->progress_ctx, "distilling %s: %d labeled + %d %s cases, %.0f%% of steps "
                 "from the latter", online ? "online" : "offline", rep->labeled, d->n,
                 online ? "unlabeled" : "ensemble-annotated", 100 * o->pseudo_ratio);
    return KD_OK;
}

/* Online: the scheduler's step (teachers first for unlabeled batches) in the one loop. */
static kd_status run_online(kd_device *dev, const kd_distill_opts *o, distill_state *d,
                            kd_batch_source *bs, kd_distill_report *rep) {
    const kd_train_opts *t = kd_session_opts(d->s);
    kd_status st = KD_OK;
    for (int i = 0; i < o->nteachers && !st; i++)
        if (!(st = kd_checkpoint_load(o->teachers[i], dev, &d->teachers[i], NULL, NULL, NULL))) d->nt++;
    if (st) return st;
    kd_sched_config c;
    memset(&c, 0, sizeof c);
    c.batch = t->sampler.batch;
    memcpy(c.patch, t->sampler.patch, sizeof c.patch);
    c.batches = kd_batch_source_host;
    c.batches_ctx = bs;
    c.label_loss = t->loss;
    c.distill_loss = o->distill_loss;
    c.distill_weight = (float)o->pseudo_weight;
    kd_sched *sc = NULL;
    if ((st = kd_sched_create(kd_session_model(d->s), kd_session_optim(d->s), d->teachers, d->nt, &c, &sc)))
        return st;
    if (kd_device_profiling(dev)) kd_device_profile_reset(dev);
    double t0 = kd_now_s();
    st = kd_session_run_step(d->s, kd_sched_step, sc, &rep->train);
    kd_sched_stats(sc, &rep->sched);
    rep->sched.seconds = kd_now_s() - t0;
    kd_sched_free(sc);
    kd_sched_report_lines(&rep->sched, d->nt, rep->sched.seconds, t->progress, t->progress_ctx);
    return st;
}

kd_status kd_distill(kd_device *dev, const kd_distill_opts *o, kd_distill_report *rep) {
    kd_distill_report none;
    if (!rep) rep = &none;
    memset(rep, 0, sizeof *rep);
    int online = o->nteachers > 0;
    if (online == !!o->annotations)
        return kd_fail(KD_ERR_INVALID_ARG, "distillation: give annotations (offline) or teachers "
                       "(online), not %s", online ? "both" : "neither");
    if (o->nteachers > KD_ENSEMBLE_MAX)
        return kd_fail(KD_ERR_INVALID_ARG, "distillation: at most %d teachers", KD_ENSEMBLE_MAX);
    if (!(o->pseudo_ratio >= 0 && o->pseudo_ratio <= 1) || !(o->pseudo_weight >= 0))
        return kd_fail(KD_ERR_INVALID_ARG, "distillation: pseudo ratio %g, weight %g", o->pseudo_ratio,
                       o->pseudo_weight);
    /* annotations belong to the unlabeled pool: a separate dataset when given */
    kd_train_opts t = o->train;
    t.annotations = online || o->unlabeled ? NULL : o->annotations;
    distill_state d;
    memset(&d, 0, sizeof d);
    kd_status st = kd_session_open(dev, &t, &d.s);
    if (!st) snprintf(kd_session_meta(d.s)->mode, sizeof kd_session_meta(d.s)->mode, online ? "online" : "distill");
    if (!st) st = open_pool(o, online, &d, rep);
    kd_batch_source *bs = NULL;
    if (!st) {
        kd_batch_source_opts bo;
        memset(&bo, 0, sizeof bo);
        bo.a = kd_session_sampler(d.s);
        bo.b = d.pool;
        bo.ratio_b = (float)o->pseudo_ratio;
        bo.kind_a = t.loss;
        bo.kind_b = o->pseudo_loss;
        bo.weight_b = (float)o->pseudo_weight;
        bo.seed = t.seed;
        bo.first_step = kd_session_start(d.s);
        bo.threads = t.threads;
        st = kd_batch_source_create(&bo, &bs);
    }
    if (!st) st = online ? run_online(dev, o, &d, bs, rep) : kd_session_run(d.s, bs, &rep->train);
    kd_batch_source_free(bs);
    state_free(&d);
    return st;
}
