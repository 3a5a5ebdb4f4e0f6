/* The data-amount study: per seed a phantom cohort, the student trained on labeled cases
 * only at several sizes and on a base of labeled cases plus several sizes of
 * ensemble-annotated pool, the teachers and their ensemble as references, every model
 * scored on the seed's test cases; means and standard errors over the seeds in
 * study.csv, study.md and study.png. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_internal.h"
#include "kdseg/plot.h"

#define KIND_LABELED "labeled only"
#define KIND_DISTILLED "labeled + annotated"

void kd_study_opts_default(kd_study_opts *o) {
    memset(o, 0, sizeof *o);
    kd_experiment_opts_default(&o->exp);
    o->exp.out = "kdseg-study";
    /* the demo's recipe, steps and jobs (2000 steps per model, two models at a time, no
     * validation cases): 9 models per seed, three seeds in 30 minutes on 2 quiet cores (measured: README).
     * At 300 steps per model (the study's first default) the student gained nothing from
     * more cases, true or annotated: each case was seen too seldom (README, "The
     * data-amount study") */
    o->exp.test = 16;
    o->exp.student_runs = 1; /* (the study trains its own students, one per point) */
    static const int lab[] = {2, 4, 8, 16}, pool[] = {0, 6, 14};
    o->nlabeled = 4;
    memcpy(o->labeled, lab, sizeof lab);
    o->npool = 3;
    memcpy(o->pool, pool, sizeof pool);
    o->base = 2;
    o->nseeds = 3;
    for (int s = 0; s < 3; s++) o->seeds[s] = (uint64_t)s + 1;
}

void kd_study_opts_quick(kd_study_opts *o) {
    kd_study_opts_default(o);
    kd_experiment_opts_quick(&o->exp);
    o->exp.out = "kdseg-study";
    o->exp.student_loss = KD_LOSS_PAPER;
    o->exp.nteachers = 2;
    o->exp.labeled = 0, o->exp.unlabeled = 0;
    o->exp.size = 32, o->exp.patch = 16, o->exp.test = 2, o->exp.val_cases = 1;
    o->exp.teacher_steps = o->exp.student_steps = 6;
    o->exp.val_every = 3;
    static const int lab[] = {1, 2}, pool[] = {0, 2};
    o->nlabeled = 2;
    memcpy(o->labeled, lab, sizeof lab);
    o->npool = 2;
    memcpy(o->pool, pool, sizeof pool);
    o->base = 1;
    o->nseeds = 2;
}

static int cmp_int(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* The sizes, sorted; errors name the option. */
static kd_status check(const kd_study_opts *o, int lab[], int pool[], int *base) {
    if (o->nlabeled < 1 || o->nlabeled > KD_STUDY_MAX_SIZES || o->npool < 1 || o->npool > KD_STUDY_MAX_SIZES)
        return kd_fail(KD_ERR_INVALID_ARG, "study: 1 to %d labeled sizes and 1 to %d pool sizes (got %d and %d)",
                       KD_STUDY_MAX_SIZES, KD_STUDY_MAX_SIZES, o->nlabeled, o->npool);
    if (o->nseeds < 1 || o->nseeds > KD_STUDY_MAX_SEEDS)
        return kd_fail(KD_ERR_INVALID_ARG, "study: 1 to %d seeds (got %d)", KD_STUDY_MAX_SEEDS, o->nseeds);
    memcpy(lab, o->labeled, sizeof(int) * (size_t)o->nlabeled);
    memcpy(pool, o->pool, sizeof(int) * (size_t)o->npool);
    qsort(lab, (size_t)o->nlabeled, sizeof *lab, cmp_int);
    qsort(pool, (size_t)o->npool, sizeof *pool, cmp_int);
    *base = o->base > 0 ? o->base : lab[0];
    for (int i = 0; i < o->nlabeled; i++)
        if (lab[i] < 1 || (i && lab[i] == lab[i - 1]))
            return kd_fail(KD_ERR_INVALID_ARG, "study: labeled sizes must be distinct and at least 1");
    for (int i = 0; i < o->npool; i++)
        if (pool[i] < 0 || (i && pool[i] == pool[i - 1]))
            return kd_fail(KD_ERR_INVALID_ARG, "study: pool sizes must be distinct and at least 0");
    int lmax = lab[o->nlabeled - 1] > *base ? lab[o->nlabeled - 1] : *base;
    if (lmax + o->exp.val_cases > 1000 || pool[o->npool - 1] > 1000 || o->exp.test > 1000)
        return kd_fail(KD_ERR_INVALID_ARG, "study: at most 1000 cases per set");
    if (o->exp.test < 1 || o->exp.val_cases < 0)
        return kd_fail(KD_ERR_INVALID_ARG, "study: %d test cases, %d validation cases", o->exp.test,
                       o->exp.val_cases);
    if (o->exp.patch > o->exp.size)
        return kd_fail(KD_ERR_INVALID_ARG, "study: the patch %d is larger than the volume %d", o->exp.patch,
                       o->exp.size);
    if (o->exp.nteachers < 1 || o->exp.nteachers > KD_EXPERIMENT_MAX_TEACHERS || !o->exp.student_spec)
        return kd_fail(KD_ERR_INVALID_ARG, "study: a student and 1 to %d teachers", KD_EXPERIMENT_MAX_TEACHERS);
    return KD_OK;
}

/* Removes the links in dir (a subset folder made by an earlier run). */
static void clear_links(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[KD_PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.' || kd_path_join(p, sizeof p, dir, e->d_name)) continue;
        if (!lstat(p, &st) && S_ISLNK(st.st_mode)) unlink(p);
    }
    closedir(d);
}

/* DIR: links to the phantom case folders of ALL numbered idx[0..n). */
static kd_status subset(const char *all, const char *dir, const int *idx, int n) {
    kd_status s = kd_mkdirs(dir);
    if (s) return s;
    clear_links(dir);
    for (int k = 0; k < n && !s; k++) {
        char src[KD_PATH_MAX], dst[KD_PATH_MAX];
        if (!(s = kd_path_printf(src, sizeof src, "%s/KDPhantom_%03d", all, idx[k])) &&
            !(s = kd_path_printf(dst, sizeof dst, "%s/KDPhantom_%03d", dir, idx[k])))
            s = kd_exp_link(src, dst);
    }
    return s;
}

typedef struct study_seed {
    const kd_study_opts *so;
    kd_experiment_opts o;       /* so->exp with this seed */
    kd_device *dev;
    kd_device **devs;           /* devs[0] = dev: models trained at once (o.jobs) */
    int ndevs;
    /* the strings the students' jobs borrow, alive until the jobs end: */
    char ann[KD_PATH_MAX];      /* the pool's annotations */
    char unl[KD_STUDY_MAX_SIZES][KD_PATH_MAX];    /* pool folders, per pool size */
    char data[KD_STUDY_MAX_POINTS][KD_PATH_MAX];  /* labeled folders, per point */
    int si;
    char root[KD_PATH_MAX];
    char specs[KD_EXPERIMENT_MAX_TEACHERS + 1][KD_PATH_MAX];
    char ckpt[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *ckpt_ptr[KD_EXPERIMENT_MAX_TEACHERS];
} study_seed;

/* ROOT/data: labeled-all (lmax training + val cases, the held-out ones numbered last),
 * labeled-L for each size needed, unlabeled-all and its truth, pool-U, test. */
static kd_status cohorts(study_seed *x, const int *lab, int nlab, int base, const int *pool, int npool) {
    const kd_experiment_opts *o = &x->o;
    int lmax = lab[nlab - 1] > base ? lab[nlab - 1] : base, umax = pool[npool - 1], v = o->val_cases;
    char all[KD_PATH_MAX], dir[KD_PATH_MAX];
    int *idx = malloc(sizeof(int) * (size_t)(lmax + v + umax + 1));
    if (!idx) return kd_fail(KD_ERR_OUT_OF_MEMORY, "study cohort");
    kd_status s = kd_path_printf(all, sizeof all, "%s/data/labeled-all", x->root);
    if (!s) s = kd_exp_cohort(o, all, lmax + v, 0, 0);
    for (int i = 0; i <= nlab && !s; i++) {
        int L = i < nlab ? lab[i] : base, n = 0;
        for (int k = 0; k < L; k++) idx[n++] = k;
        for (int k = 0; k < v; k++) idx[n++] = lmax + k; /* validation: the same cases, last */
        if (!(s = kd_path_printf(dir, sizeof dir, "%s/data/labeled-%d", x->root, L))) s = subset(all, dir, idx, n);
    }
    if (!s && umax > 0) {
        if (!(s = kd_path_printf(all, sizeof all, "%s/data/unlabeled-all", x->root)))
            s = kd_exp_cohort(o, all, umax, 1000, 1);
        if (!s && !(s = kd_path_printf(dir, sizeof dir, "%s/data/unlabeled-truth", x->root)))
            s = kd_exp_cohort(o, dir, umax, 1000, 0);
        for (int i = 0; i < npool && !s; i++) {
            if (!pool[i]) continue;
            for (int k = 0; k < pool[i]; k++) idx[k] = 1000 + k;
            if (!(s = kd_path_printf(dir, sizeof dir, "%s/data/pool-%d", x->root, pool[i])))
                s = subset(all, dir, idx, pool[i]);
        }
    }
    if (!s && !(s = kd_path_printf(dir, sizeof dir, "%s/data/test", x->root))) s = kd_exp_cohort(o, dir, o->test, 2000, 0);
    free(idx);
    return s;
}

/* A model whose folder holds a checkpoint continues from it (a finished one has nothing
 * left to run): a stopped study, run again, picks up where it stopped. */
static void resume_started(kd_train_opts *t) {
    char p[KD_PATH_MAX];
    t->resume = !kd_path_join(p, sizeof p, t->out, "last.kds") && kd_exists(p);
    t->overwrite = 0; /* the recipe's "train again" is for the experiment, not a study's rerun */
}

/* kd_exp_run_jobs on the study's devices. */
static kd_status run_jobs(study_seed *x, kd_exp_job *jobs, int n) {
    return kd_exp_run_jobs(x->devs, x->ndevs, jobs, n, x->o.progress, x->o.progress_ctx);
}

static kd_status teachers(study_seed *x, int base) {
    const kd_experiment_opts *o = &x->o;
    char data[KD_PATH_MAX];
    kd_exp_job *jobs = calloc((size_t)o->nteachers, sizeof *jobs);
    if (!jobs) return kd_fail(KD_ERR_OUT_OF_MEMORY, "study: teacher jobs");
    kd_status s = kd_path_printf(data, sizeof data, "%s/data/labeled-%d", x->root, base);
    for (int t = 0; t < o->nteachers && !s; t++) {
        kd_exp_job *j = &jobs[t];
        snprintf(j->line, sizeof j->line, "  teacher %s on %d labeled cases: %ld steps", o->teacher_names[t], base,
                 o->teacher_steps);
        if ((s = kd_path_printf(j->out, sizeof j->out, "%s/models/%s", x->root, o->teacher_names[t]))) break;
        kd_exp_recipe(o, data, j->out, x->specs[t], o->teacher_steps, o->teacher_lr, o->seed + 10 + (uint64_t)t,
                      &j->train);
        resume_started(&j->train);
    }
    if (!s) s = run_jobs(x, jobs, o->nteachers);
    for (int t = 0; t < o->nteachers && !s; t++) {
        s = kd_exp_checkpoint(jobs[t].out, x->ckpt[t], KD_PATH_MAX);
        x->ckpt_ptr[t] = x->ckpt[t];
    }
    free(jobs);
    return s;
}

/* The ensemble annotates the largest pool; *score: mean Dice against its hidden truth. */
static kd_status annotate(study_seed *x, double *score) {
    const kd_experiment_opts *o = &x->o;
    char data[KD_PATH_MAX], out[KD_PATH_MAX], truth[KD_PATH_MAX];
    kd_annotate_opts ao;
    kd_annotate_opts_default(&ao);
    kd_exp_ensemble_recipe(o, &ao.e);
    ao.e.models = x->ckpt_ptr;
    ao.e.nmodels = o->nteachers;
    kd_status s = kd_path_printf(data, sizeof data, "%s/data/unlabeled-all", x->root);
    if (!s) s = kd_path_printf(out, sizeof out, "%s/annotations", x->root);
    if (!s) s = kd_path_printf(truth, sizeof truth, "%s/data/unlabeled-truth", x->root);
    ao.dataset = data;
    ao.out = out;
    kd_progressf(o->progress, o->progress_ctx, "  the ensemble annotates the unlabeled pool");
    if (!s) s = kd_annotate(x->dev, &ao, NULL);
    kd_eval_result *ev = NULL;
    if (!s) s = kd_exp_evaluate(out, truth, &ev);
    if (!s) {
        *score = kd_eval_mean_dice(ev, 3);
        kd_progressf(o->progress, o->progress_ctx, "  annotations against the pool's hidden truth: mean Dice %.3f",
                     *score);
    }
    kd_eval_result_free(ev);
    return s;
}

/* Job j of point p: a student labeled-only on L cases (pool 0) or distilled on base + pool
 * annotated (pool folder x->unl[pi]). The folders are x's strings, borrowed by the job. */
static kd_status student_job(study_seed *x, int L, int pool, int pi, int p, const char *name, kd_exp_job *j) {
    const kd_experiment_opts *o = &x->o;
    char *data = x->data[p];
    kd_status s = kd_path_printf(data, KD_PATH_MAX, "%s/data/labeled-%d", x->root, L);
    if (!s) s = kd_path_printf(j->out, sizeof j->out, "%s/models/%s", x->root, name);
    if (s) return s;
    snprintf(j->line, sizeof j->line, "  student on %d labeled%s: %ld steps", L,
             pool ? " + annotated cases" : " cases", o->student_steps);
    if (!pool) {
        kd_exp_student_recipe(o, data, j->out, x->specs[o->nteachers], &j->train);
        resume_started(&j->train);
        return KD_OK;
    }
    kd_distill_opts *d = &j->dist;
    j->distill = 1;
    kd_distill_opts_default(d);
    kd_exp_student_recipe(o, data, j->out, x->specs[o->nteachers], &d->train);
    resume_started(&d->train);
    if ((s = kd_path_printf(x->unl[pi], KD_PATH_MAX, "%s/data/pool-%d", x->root, pool)) ||
        (s = kd_path_printf(x->ann, sizeof x->ann, "%s/annotations", x->root)))
        return s;
    d->unlabeled = x->unl[pi];
    d->annotations = x->ann;
    d->pseudo_ratio = o->pseudo_ratio;
    d->pseudo_weight = o->pseudo_weight;
    d->min_agreement = o->min_agreement;
    d->pseudo_loss = o->student_loss;
    return KD_OK;
}

/* Mean test Dice per region and overall of the maps in ROOT/pred/NAME. */
static kd_status score(study_seed *x, const char *name, double dice[4]) {
    char pred[KD_PATH_MAX], test[KD_PATH_MAX];
    kd_eval_result *ev = NULL;
    kd_status s = kd_path_printf(pred, sizeof pred, "%s/pred/%s", x->root, name);
    if (!s) s = kd_path_printf(test, sizeof test, "%s/data/test", x->root);
    if (!s) s = kd_exp_evaluate(pred, test, &ev);
    for (int r = 0; !s && r < 4; r++) dice[r] = kd_eval_mean_dice(ev, r);
    kd_eval_result_free(ev);
    return s;
}

/* The model NAME (ROOT/models/NAME) segments the test cases into ROOT/pred/NAME. */
static kd_status segment_one(study_seed *x, const char *name) {
    char dir[KD_PATH_MAX], ckpt[KD_PATH_MAX], test[KD_PATH_MAX], out[KD_PATH_MAX];
    const char *one[1] = {ckpt};
    kd_segment_opts so;
    kd_segment_opts_default(&so);
    kd_exp_ensemble_recipe(&x->o, &so.e);
    so.e.models = one;
    so.e.nmodels = 1;
    so.e.progress = NULL; /* one line per model from the study instead */
    kd_status s = kd_path_printf(dir, sizeof dir, "%s/models/%s", x->root, name);
    if (!s) s = kd_exp_checkpoint(dir, ckpt, sizeof ckpt);
    if (!s) s = kd_path_printf(test, sizeof test, "%s/data/test", x->root);
    if (!s) s = kd_path_printf(out, sizeof out, "%s/pred/%s", x->root, name);
    so.dataset = test;
    so.out = out;
    return s ? s : kd_segment(x->dev, &so);
}

/* The teachers and their ensemble on the test cases (one set of passes). */
static kd_status segment_teachers(study_seed *x) {
    const kd_experiment_opts *o = &x->o;
    char test[KD_PATH_MAX], out[KD_PATH_MAX], members[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *mp[KD_EXPERIMENT_MAX_TEACHERS];
    kd_segment_opts so;
    kd_segment_opts_default(&so);
    kd_exp_ensemble_recipe(o, &so.e);
    so.e.progress = NULL;
    so.e.models = x->ckpt_ptr;
    so.e.nmodels = o->nteachers;
    kd_status s = kd_path_printf(test, sizeof test, "%s/data/test", x->root);
    if (!s) s = kd_path_printf(out, sizeof out, "%s/pred/ensemble", x->root);
    for (int t = 0; t < o->nteachers && !s; t++) {
        s = kd_path_printf(members[t], KD_PATH_MAX, "%s/pred/%s", x->root, o->teacher_names[t]);
        mp[t] = members[t];
    }
    so.dataset = test;
    so.out = out;
    so.member_out = mp;
    return s ? s : kd_segment(x->dev, &so);
}

static void record(kd_study_point *p, int si, const double d[4]) {
    memcpy(p->dice[si], d, sizeof p->dice[si]);
    p->n = si + 1;
}

/* What a seed's scores depend on, one line. */
static void signature(const study_seed *x, const int *lab, int nlab, int base, const int *pool, int npool,
                      char *buf, size_t n) {
    const kd_experiment_opts *o = &x->o;
    size_t u = (size_t)snprintf(buf, n, "# seed %llu base %d labeled", (unsigned long long)o->seed, base);
    for (int i = 0; i < nlab && u < n; i++) u += (size_t)snprintf(buf + u, n - u, " %d", lab[i]);
    if (u < n) u += (size_t)snprintf(buf + u, n - u, " pool");
    for (int i = 0; i < npool && u < n; i++) u += (size_t)snprintf(buf + u, n - u, " %d", pool[i]);
    if (u < n)
        u += (size_t)snprintf(buf + u, n - u, " test %d size %d patch %d batch %d val %d steps %ld %ld lr %g %g "
                              "ratio %g weight %g agree %g tta %d", o->test, o->size, o->patch, o->batch,
                              o->val_cases, o->teacher_steps, o->student_steps, o->teacher_lr, o->student_lr,
                              o->pseudo_ratio, o->pseudo_weight, o->min_agreement, o->tta);
    for (int t = 0; t <= o->nteachers && u < n; t++)
        u += (size_t)snprintf(buf + u, n - u, " %s", x->specs[t]);
    if (o->student_loss != KD_LOSS_PAPER && u < n) /* (the line of the seeds measured before it) */
        u += (size_t)snprintf(buf + u, n - u, " loss %s", kd_loss_name(o->student_loss));
}

/* ROOT/scores.csv: the seed's scores, read back by a later run with the same signature
 * instead of segmenting again. */
static kd_status write_scores(const study_seed *x, const char *sig, const kd_study_result *r) {
    char path[KD_PATH_MAX];
    kd_atomic_file a;
    kd_status s = kd_path_join(path, sizeof path, x->root, "scores.csv");
    if (!s) s = kd_atomic_open(&a, path, "w");
    if (s) return s;
    fprintf(a.f, "%s\nannotations,%.17g\n", sig, r->annotations[x->si]);
    for (int p = 0; p < r->npoints; p++) {
        const double *d = r->points[p].dice[x->si];
        fprintf(a.f, "%d,%.17g,%.17g,%.17g,%.17g\n", p, d[0], d[1], d[2], d[3]);
    }
    return kd_atomic_close(&a, KD_OK);
}

/* 1 when ROOT/scores.csv has this signature and every point (recorded into r). */
static int read_scores(const study_seed *x, const char *sig, kd_study_result *r) {
    char path[KD_PATH_MAX], line[4096];
    if (kd_path_join(path, sizeof path, x->root, "scores.csv")) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(line, sizeof line, f) && !strncmp(line, sig, strlen(sig)) && line[strlen(sig)] == '\n';
    double a, d[KD_STUDY_MAX_POINTS][4];
    ok = ok && fscanf(f, "annotations,%lf\n", &a) == 1;
    int n = 0, p;
    while (ok && n < r->npoints && fscanf(f, "%d,%lf,%lf,%lf,%lf\n", &p, &d[n][0], &d[n][1], &d[n][2], &d[n][3]) == 5)
        ok = p == n++;
    fclose(f);
    if (!ok || n != r->npoints) return 0;
    r->annotations[x->si] = a;
    for (int k = 0; k < n; k++) record(&r->points[k], x->si, d[k]);
    return 1;
}

/* One seed: cohort, teachers, annotation, students, test scores into r's points. */
static kd_status run_seed(study_seed *x, const int *lab, int nlab, int base, const int *pool, int npool,
                          kd_study_result *r) {
    const kd_experiment_opts *o = &x->o;
    int channels = 1; /* phantoms have every modality: as many channels as chosen */
    for (const char *c = o->modalities; c && *c; c++) channels += *c == ',';
    if (!o->modalities) channels = 4;
    kd_status s = KD_OK;
    for (int t = 0; t <= o->nteachers && !s; t++)
        s = kd_exp_spec(t < o->nteachers ? o->teacher_specs[t] : o->student_spec, channels, x->specs[t],
                        KD_PATH_MAX);
    char sig[2048];
    signature(x, lab, nlab, base, pool, npool, sig, sizeof sig);
    if (!s && read_scores(x, sig, r)) {
        kd_progressf(o->progress, o->progress_ctx, "  scores of this seed read back from %s/scores.csv", x->root);
        return KD_OK;
    }
    if (!s) s = cohorts(x, lab, nlab, base, pool, npool);
    if (!s) s = teachers(x, base);
    r->annotations[x->si] = -1;
    if (!s && pool[npool - 1] > 0) s = annotate(x, &r->annotations[x->si]);
    if (!s) s = segment_teachers(x);
    /* the students: trained at once (o->jobs), then each segments the test cases */
    double d[4];
    char name[KD_STUDY_MAX_POINTS][64];
    int train[KD_STUDY_MAX_POINTS] = {0}, np = nlab + npool, base_done = 0, nj = 0;
    kd_exp_job *jobs = s ? NULL : calloc((size_t)np, sizeof *jobs);
    if (!s && !jobs) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "study: student jobs");
    for (int k = 0; k < nlab; k++) base_done |= lab[k] == base;
    for (int p = 0; p < np && !s; p++) {
        int i = p < nlab ? p : p - nlab, L = p < nlab ? lab[i] : base, u = p < nlab ? 0 : pool[i];
        if (u) snprintf(name[p], sizeof name[p], "student-distilled-%d", u);
        else snprintf(name[p], sizeof name[p], "student-labeled-%d", L);
        /* pool 0 is the labeled-only student on BASE cases: trained once */
        train[p] = p < nlab || u || !base_done;
        if (train[p]) s = student_job(x, L, u, i, p, name[p], &jobs[nj++]);
    }
    if (!s) s = run_jobs(x, jobs, nj);
    free(jobs);
    for (int p = 0; p < np && !s; p++) /* labeled only by size, then base + annotated by pool size */
        if (!(train[p] && (s = segment_one(x, name[p]))) && !(s = score(x, name[p], d)))
            record(&r->points[p], x->si, d);
    int pi = np;
    for (int m = 0; m <= o->nteachers && !s; m++, pi++)
        if (!(s = score(x, m ? o->teacher_names[m - 1] : "ensemble", d))) record(&r->points[pi], x->si, d);
    return s ? s : write_scores(x, sig, r);
}

static void summarise(kd_study_result *r) {
    for (int p = 0; p < r->npoints; p++) {
        kd_study_point *q = &r->points[p];
        for (int k = 0; k < 4; k++) {
            double m = 0, v = 0;
            for (int s = 0; s < q->n; s++) m += q->dice[s][k];
            m = q->n ? m / q->n : 0;
            for (int s = 0; s < q->n; s++) v += (q->dice[s][k] - m) * (q->dice[s][k] - m);
            q->mean[k] = m;
            q->se[k] = q->n > 1 ? sqrt(v / (q->n - 1) / q->n) : 0;
        }
    }
}

/* ---- outputs --------------------------------------------------------------------------- */

typedef kd_status (*text_fn)(FILE *f, const kd_study_result *r, const kd_study_opts *o);

static kd_status write_text(const char *out, const char *name, text_fn fn, const kd_study_result *r,
                            const kd_study_opts *o) {
    char path[KD_PATH_MAX];
    kd_atomic_file a;
    kd_status s = kd_path_join(path, sizeof path, out, name);
    if (!s) s = kd_atomic_open(&a, path, "w");
    return s ? s : kd_atomic_close(&a, fn(a.f, r, o));
}

static kd_status csv(FILE *f, const kd_study_result *r, const kd_study_opts *o) {
    fprintf(f, "kind,labeled,annotated,training_cases,seed,dice_wt,dice_tc,dice_et,dice_mean\n");
    for (int p = 0; p < r->npoints; p++) {
        const kd_study_point *q = &r->points[p];
        for (int s = 0; s < q->n; s++)
            fprintf(f, "%s,%d,%d,%d,%llu,%.4f,%.4f,%.4f,%.4f\n", q->kind, q->labeled, q->pool,
                    q->labeled + q->pool, (unsigned long long)o->seeds[s], q->dice[s][0], q->dice[s][1],
                    q->dice[s][2], q->dice[s][3]);
    }
    return KD_OK;
}

static const kd_study_point *find(const kd_study_result *r, const char *kind, int labeled, int pool) {
    for (int p = 0; p < r->npoints; p++)
        if (!strcmp(r->points[p].kind, kind) && r->points[p].labeled == labeled && r->points[p].pool == pool)
            return &r->points[p];
    return NULL;
}

/* a - b per seed: mean and standard error over the seeds (the same cohorts: paired). */
static void paired(const kd_study_point *a, const kd_study_point *b, double *mean, double *se) {
    int n = a->n < b->n ? a->n : b->n;
    double m = 0, v = 0;
    for (int s = 0; s < n; s++) m += a->dice[s][3] - b->dice[s][3];
    m = n ? m / n : 0;
    for (int s = 0; s < n; s++) {
        double d = a->dice[s][3] - b->dice[s][3] - m;
        v += d * d;
    }
    *mean = m;
    *se = n > 1 ? sqrt(v / (n - 1) / n) : 0;
}

/* What the study says, a line each: the largest pool against the base alone and
 * against labeled-only at the nearest size, and where the students stand to the
 * ensemble. */
static void findings(FILE *f, const kd_study_result *r, const char *bullet) {
    int base = -1, umax = 0;
    for (int p = 0; p < r->npoints; p++)
        if (!strcmp(r->points[p].kind, KIND_DISTILLED)) {
            base = r->points[p].labeled;
            if (r->points[p].pool > umax) umax = r->points[p].pool;
        }
    const kd_study_point *big = find(r, KIND_DISTILLED, base, umax), *alone = find(r, KIND_DISTILLED, base, 0);
    const kd_study_point *ens = find(r, "ensemble", base, 0);
    if (!alone) alone = find(r, KIND_LABELED, base, 0);
    double m, se;
    if (big && alone && umax > 0) {
        paired(big, alone, &m, &se);
        fprintf(f, "%s%d labeled + %d annotated cases against the %d labeled alone: %+.3f ± %.3f mean Dice "
                   "(paired over %d seed%s)\n", bullet, base, umax, base, m, se, big->n, big->n > 1 ? "s" : "");
        const kd_study_point *near = NULL;
        for (int p = 0; p < r->npoints; p++) {
            const kd_study_point *q = &r->points[p];
            if (strcmp(q->kind, KIND_LABELED)) continue;
            if (!near || abs(q->labeled - (base + umax)) < abs(near->labeled - (base + umax))) near = q;
        }
        if (near && near->labeled != base) {
            paired(big, near, &m, &se);
            fprintf(f, "%s%d labeled + %d annotated cases against %d labeled (true labels): %+.3f ± %.3f\n",
                    bullet, base, umax, near->labeled, m, se);
        }
    }
    if (ens && big) {
        paired(big, ens, &m, &se);
        fprintf(f, "%sthe student with the largest pool against the ensemble: %+.3f ± %.3f", bullet, m, se);
        if (alone) {
            paired(alone, ens, &m, &se);
            fprintf(f, " (the student on %d labeled cases alone: %+.3f ± %.3f)", base, m, se);
        }
        fprintf(f, "\n");
    }
    int ns = 0;
    double a = 0;
    for (int s = 0; s < r->nseeds; s++)
        if (r->annotations[s] >= 0) a += r->annotations[s], ns++;
    if (ns) fprintf(f, "%sthe ensemble's annotations against the pool's hidden truth: mean Dice %.3f (mean of %d "
                       "seed%s)\n", bullet, a / ns, ns, ns > 1 ? "s" : "");
}

static kd_status markdown(FILE *f, const kd_study_result *r, const kd_study_opts *o) {
    fprintf(f, "Test Dice of the student against the amount of training data: mean ± standard error "
               "over %d seed%s (a new phantom cohort each, %d test cases of %d^3; %ld steps per "
               "student, %ld per teacher).\n\n", r->nseeds, r->nseeds > 1 ? "s" : "", o->exp.test,
            o->exp.size, o->exp.student_steps, o->exp.teacher_steps);
    fprintf(f, "| model | labeled | annotated | training cases | Dice (mean of WT, TC, ET) | Dice WT | "
               "Dice TC | Dice ET |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int p = 0; p < r->npoints; p++) {
        const kd_study_point *q = &r->points[p];
        int student = !strcmp(q->kind, KIND_LABELED) || !strcmp(q->kind, KIND_DISTILLED);
        fprintf(f, "| %s%s | %d | %d | %d | %.3f ± %.3f | %.3f ± %.3f | %.3f ± %.3f | %.3f ± %.3f |\n",
                student ? "student, " : "", q->kind, q->labeled, q->pool, q->labeled + q->pool, q->mean[3],
                q->se[3], q->mean[0], q->se[0], q->mean[1], q->se[1], q->mean[2], q->se[2]);
    }
    fprintf(f, "\n");
    findings(f, r, "- ");
    return KD_OK;
}

static kd_status plot(const char *out, const kd_study_result *r) {
    enum { P = KD_STUDY_MAX_POINTS };
    double x[2][P], y[2][P], e[2][P], rx[P][2], ry[P][2];
    int n[2] = {0, 0};
    double xmin = INFINITY, xmax = -INFINITY;
    for (int p = 0; p < r->npoints; p++) {
        const kd_study_point *q = &r->points[p];
        int k = !strcmp(q->kind, KIND_LABELED) ? 0 : !strcmp(q->kind, KIND_DISTILLED) ? 1 : -1;
        if (k < 0) continue;
        x[k][n[k]] = q->labeled + q->pool, y[k][n[k]] = q->mean[3], e[k][n[k]++] = q->se[3];
        xmin = fmin(xmin, q->labeled + q->pool), xmax = fmax(xmax, q->labeled + q->pool);
    }
    if (!(xmax > xmin)) xmin -= 1, xmax += 1;
    kd_series s[P];
    const double *err[P];
    char names[P][96];
    int ns = 0;
    static const uint32_t ref_colours[] = {0x2ca02c, 0x9467bd, 0x8c564b, 0x17becf, 0x7f7f7f, 0xbcbd22, 0xe377c2};
    snprintf(names[0], sizeof names[0], "labeled only (true labels)");
    snprintf(names[1], sizeof names[1], "labeled + ensemble-annotated");
    for (int k = 0; k < 2; k++) {
        if (!n[k]) continue;
        s[ns] = (kd_series){names[k], x[k], y[k], n[k], k ? 0xd62728 : 0x1f77b4, 1};
        err[ns++] = e[k];
    }
    int nref = 0;
    for (int p = 0; p < r->npoints; p++) {
        const kd_study_point *q = &r->points[p];
        if (!strcmp(q->kind, KIND_LABELED) || !strcmp(q->kind, KIND_DISTILLED)) continue;
        rx[p][0] = xmin, rx[p][1] = xmax, ry[p][0] = ry[p][1] = q->mean[3];
        snprintf(names[ns], sizeof names[ns], "%s (%d labeled)", q->kind, q->labeled);
        s[ns] = (kd_series){names[ns], rx[p], ry[p], 2, ref_colours[nref++ % 7], 0};
        err[ns++] = NULL;
    }
    kd_canvas c = {0};
    kd_status st = kd_canvas_create(900, 520, &c);
    if (!st) {
        char title[128];
        snprintf(title, sizeof title, "student test dice against training data (%d seed%s)", r->nseeds,
                 r->nseeds > 1 ? "s" : "");
        /* y: the points and bars with a margin (no line on the frame); x: room on the
         * right for the legend, clear of the lines */
        double ylo = INFINITY, yhi = -INFINITY;
        for (int p = 0; p < r->npoints; p++) {
            ylo = fmin(ylo, r->points[p].mean[3] - r->points[p].se[3]);
            yhi = fmax(yhi, r->points[p].mean[3] + r->points[p].se[3]);
        }
        ylo = fmax(0, floor((ylo - 0.03) * 20) / 20), yhi = fmin(1, ceil((yhi + 0.03) * 20) / 20);
        kd_chart ch = {title, "training cases (labeled + annotated)",
                       "test dice, mean of wt, tc, et (+- standard error)", 0, ylo, yhi, 0, xmax * 1.45};
        kd_plot_chart_errors(&c, 0, 0, 900, 520, &ch, s, err, ns, 1);
        char path[KD_PATH_MAX];
        if (!(st = kd_path_join(path, sizeof path, out, "study.png"))) st = kd_canvas_write(&c, path);
    }
    kd_canvas_free(&c);
    return st;
}

/* ---- the study --------------------------------------------------------------------------- */

/* The result's points: labeled only by size, labeled + annotated by pool size, the
 * ensemble and each teacher. */
static void name_points(kd_study_result *r, const kd_study_opts *o, const int *lab, int base, const int *pool) {
    int p = 0;
    for (int i = 0; i < o->nlabeled; i++, p++) {
        snprintf(r->points[p].kind, sizeof r->points[p].kind, KIND_LABELED);
        r->points[p].labeled = lab[i];
    }
    for (int i = 0; i < o->npool; i++, p++) {
        snprintf(r->points[p].kind, sizeof r->points[p].kind, KIND_DISTILLED);
        r->points[p].labeled = base, r->points[p].pool = pool[i];
    }
    snprintf(r->points[p++].kind, sizeof r->points[0].kind, "ensemble");
    for (int t = 0; t < o->exp.nteachers; t++) snprintf(r->points[p++].kind, sizeof r->points[0].kind, "%s",
                                                        o->exp.teacher_names[t]);
    for (int q = o->nlabeled + o->npool; q < p; q++) r->points[q].labeled = base;
    r->npoints = p;
}

kd_status kd_study_run(kd_device *dev, const kd_study_opts *o, kd_study_result **out) {
    *out = NULL;
    int lab[KD_STUDY_MAX_SIZES], pool[KD_STUDY_MAX_SIZES], base = 0;
    kd_status s = check(o, lab, pool, &base);
    if (s) return s;
    kd_study_result *r = calloc(1, sizeof *r);
    study_seed *x = calloc(1, sizeof *x);
    if (!r || !x) {
        free(r);
        free(x);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "study");
    }
    name_points(r, o, lab, base, pool);
    double t0 = kd_now_s();
    kd_outdir *od = NULL;
    const kd_experiment_opts *e = &o->exp;
    /* the devices the models train on at once: dev, and e->jobs - 1 more on the same
     * OpenCL device */
    kd_device *devs[KD_EXPERIMENT_MAX_JOBS] = {dev};
    int ndevs = 1;
    s = kd_outdir_open(e->out, "seed-1000000/data/unlabeled-truth/KDPhantom_1000/KDPhantom_1000_flair.nii.gz", &od);
    if (!s) s = kd_exp_open_devices(dev, e->jobs, devs, &ndevs);
    for (int si = 0; si < o->nseeds && !s; si++) {
        memset(x, 0, sizeof *x);
        x->so = o, x->o = *e, x->dev = dev, x->si = si;
        x->devs = devs, x->ndevs = ndevs;
        x->o.seed = o->seeds[si];
        if ((s = kd_path_printf(x->root, sizeof x->root, "%s/seed-%llu", e->out, (unsigned long long)o->seeds[si])))
            break;
        x->o.out = x->root;
        kd_progressf(e->progress, e->progress_ctx, "%s", "");
        kd_progressf(e->progress, e->progress_ctx, "[seed %llu, %d of %d] cohort, teachers, annotation, students "
                     "(%.0f s elapsed)", (unsigned long long)o->seeds[si], si + 1, o->nseeds, kd_now_s() - t0);
        s = run_seed(x, lab, o->nlabeled, base, pool, o->npool, r);
        /* the files after every seed: a study stopped later keeps the seeds done */
        r->nseeds = si + 1;
        if (!s) summarise(r);
        if (!s) s = write_text(e->out, "study.csv", csv, r, o);
        if (!s) s = write_text(e->out, "study.md", markdown, r, o);
        if (!s) s = plot(e->out, r);
        if (!s)
            kd_progressf(e->progress, e->progress_ctx, "  wrote %s/study.csv, study.md, study.png with %d of %d seeds "
                         "(%.0f s elapsed)", e->out, si + 1, o->nseeds, kd_now_s() - t0);
    }
    kd_outdir_close(od);
    for (int i = 1; i < ndevs; i++) kd_device_free(devs[i]);
    free(x);
    r->seconds = kd_now_s() - t0;
    if (s) {
        kd_study_result_free(r);
        return s;
    }
    *out = r;
    return KD_OK;
}

void kd_study_result_free(kd_study_result *r) { free(r); }

void kd_study_print(const kd_study_result *r, FILE *f) {
    fprintf(f, "\n%-30s %7s %9s %14s %14s\n", "model", "labeled", "annotated", "Dice (mean)", "± s.e.");
    for (int p = 0; p < r->npoints; p++) {
        const kd_study_point *q = &r->points[p];
        fprintf(f, "%-30s %7d %9d %14.3f %14.3f\n", q->kind, q->labeled, q->pool, q->mean[3], q->se[3]);
    }
    fprintf(f, "\n");
    findings(f, r, "");
}
