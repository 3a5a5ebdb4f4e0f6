/* The paper's experiment on a synthetic cohort or on a user's cases: teachers of several
 * architectures learn from a few labeled cases, their ensemble annotates an unlabeled
 * pool, and a student distilled from labeled + annotated cases is compared with the same
 * student trained on the labeled cases only, an oracle student (the pool's true labels,
 * where they are known), every teacher and the ensemble, on held-out test cases. The
 * recipe helpers here are shared with the data-amount study (study.c). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_internal.h"
#include "kdseg/recipe.h"

/* ---- options ---------------------------------------------------------------------------- */

static const char *const default_names[3] = {"unet3d", "cascade", "resnext-se"};

void kd_experiment_opts_default(kd_experiment_opts *o) {
    static const char *const specs[3] = {"unet3d:widths=8,16,32", "cascade:widths=8,16,32",
                                         "resnext-se:widths=16,32,64:enc=1,1,1"};
    memset(o, 0, sizeof *o);
    o->out = "kdseg-demo";
    o->seed = 1;
    /* the paper's setting: few labeled cases (2), many unlabeled ones; where labeled
     * data, not steps, limits the baseline (measured: README, "What the demo does") */
    o->labeled = 2, o->unlabeled = 24, o->test = 24;
    o->size = 64;
    o->nteachers = 3;
    for (int t = 0; t < 3; t++) o->teacher_names[t] = default_names[t], o->teacher_specs[t] = specs[t];
    o->student_spec = "resunet:widths=8,16,32,64:enc=1,1,1,1:dec=1,1,1";
    /* every model keeps its last checkpoint (val_cases 0 below): a "best" one chosen on
     * 2 validation cases was noise (the baseline's test Dice 0.743 from best.kds, 0.786
     * from last.kds on seed 1); the teachers need the steps then (ensemble 0.736 -> 0.779) */
    o->teacher_steps = 2000;
    o->student_steps = 2000;
    o->teacher_lr = o->student_lr = 3e-3;
    o->pseudo_ratio = 0.8; /* 24 annotated cases against 2 labeled: most steps from the former */
    o->pseudo_weight = 1.0;
    /* the paper's loss for every model. Dice + BCE at full background weight for the
     * students (--student-loss dicebce) was measured and not adopted: distilled 0.621 ->
     * 0.766 on seed 2, 0.795 -> 0.676 on seed 1 (README, "What the demo does") */
    o->student_loss = KD_LOSS_PAPER;
    /* one student run's test Dice moves with its seed alone (seed 1: baseline 0.786, 0.708,
     * 0.694 at three seeds, distilled 0.791, 0.798, 0.793): the verdict is on the mean of 3 */
    o->student_runs = 3;
    /* two models train at once, each on its own queue: on this 2-core machine two runs side
     * by side take 117 s where one alone takes 88 s at two threads (README, "The default run") */
    o->jobs = 2;
    o->patch = 32, o->batch = 2, o->val_cases = 0, o->margin = 50;
    o->val_every = 100;
    o->fg_fraction = 0.5f;
    kd_augment_opts_default(&o->aug); /* the "phantom" set the demo was measured with */
    o->schedule = KD_SCHED_COSINE;
    o->threads = 1;
}

void kd_experiment_opts_quick(kd_experiment_opts *o) {
    static const char *const specs[3] = {"unet3d:widths=8,16", "cascade:widths=8,16",
                                         "resnext-se:widths=16,32:enc=1,1"};
    kd_experiment_opts_default(o);
    o->labeled = 6, o->unlabeled = 8, o->test = 4;
    o->val_cases = 2;  /* the tests' run: validation and best.kds exercised */
    o->student_runs = 1;
    o->size = 48;
    o->batch = 1;
    for (int t = 0; t < 3; t++) o->teacher_specs[t] = specs[t];
    o->student_spec = "resunet:widths=8,16,32:enc=1,1,1:dec=1,1";
    o->teacher_steps = 40, o->student_steps = 50;
    o->val_every = 25;
    o->pseudo_ratio = 0.6;
}

kd_status kd_experiment_opts_recipe(kd_experiment_opts *o, const char *name) {
    const kd_recipe *r = kd_recipe_find(name);
    if (!r) return KD_ERR_INVALID_ARG; /* kd_recipe_find named the known ones */
    kd_schedule sch;
    kd_augment_opts aug;
    kd_status s = kd_schedule_parse(r->schedule, &sch);
    if (!s) s = kd_augment_opts_parse(r->aug, &aug);
    if (s) return kd_fail_context(s, "recipe %s", name);
    o->recipe = r->name;
    o->patch = r->patch[0];
    o->batch = r->batch;
    o->teacher_steps = o->student_steps = r->steps;
    o->teacher_lr = o->student_lr = r->lr;
    o->fg_fraction = r->fg_fraction;
    o->random_fraction = r->random_fraction;
    o->margin = r->margin;
    o->val_every = r->val_every;
    o->schedule = sch.kind;
    o->aug = aug;
    return kd_loss_parse(r->loss, &o->student_loss); /* the students' loss: the recipe's */
}

/* Every training option of a model of the experiment, set here rather than taken from
 * the train command's defaults (or, with o->recipe, from that recipe with the
 * experiment's settings over it); data and out are the caller's (borrowed by t). */
void kd_exp_recipe(const kd_experiment_opts *o, const char *data, const char *out, const char *spec,
                   long steps, double lr, uint64_t seed, kd_train_opts *t) {
    if (o->recipe) {
        /* optimiser, weight decay, warm-up, loss, class-balanced centres and (recorded in
         * the checkpoints) post-processing from the recipe; check_opts found its name */
        kd_train_opts_default(t);
        (void)kd_train_opts_recipe(t, o->recipe);
        t->optim.lr = (float)lr;
        t->schedule.kind = o->schedule;
    } else {
        memset(t, 0, sizeof *t);
        kd_optim_defaults(&t->optim); /* the paper's Adam (AMSGrad) */
        t->optim.kind = KD_OPT_ADAM;
        t->optim.lr = (float)lr;
        t->optim.weight_decay = 1e-6f;
        kd_schedule_defaults(&t->schedule);
        t->schedule.kind = o->schedule;
        t->schedule.step_every = 16000;
        t->schedule.warmup = 0;
        t->loss = KD_LOSS_PAPER;
        kd_sampler_opts_default(&t->sampler);
    }
    t->data = data;
    t->layout = KD_LAYOUT_AUTO;
    t->modalities = o->modalities;
    t->val_cases = o->val_cases;
    t->out = out;
    t->overwrite = 1; /* a rerun of the experiment trains its models again (the old as *.bak) */
    t->model = spec;
    t->steps = steps;
    t->sampler.batch = o->batch;
    t->sampler.patch[0] = t->sampler.patch[1] = t->sampler.patch[2] = o->patch;
    t->sampler.margin = o->margin;
    t->sampler.fg_fraction = o->fg_fraction;
    t->sampler.random_fraction = o->random_fraction;
    t->sampler.aug = o->aug;
    t->sampler.max_cases_in_memory = 0;
    t->sampler.allow_unlabeled = 0;
    t->seed = seed;
    t->val_every = o->val_every;
    t->ckpt_every = 50;
    t->threads = o->threads;
    t->stop = o->stop; /* models train quietly: the experiment reports its stages */
}

void kd_exp_student_recipe(const kd_experiment_opts *o, const char *data, const char *out, const char *spec,
                           kd_train_opts *t) {
    kd_exp_recipe(o, data, out, spec, o->student_steps, o->student_lr, o->seed, t);
    t->loss = o->student_loss;
}

kd_status kd_exp_checkpoint(const char *model_dir, char *path, size_t n) {
    kd_status s = kd_path_join(path, n, model_dir, "best.kds");
    if (!s && !kd_exists(path)) s = kd_path_join(path, n, model_dir, "last.kds");
    return s;
}

/* Inference and post-processing of the experiment's segmentations and annotations. */
void kd_exp_ensemble_recipe(const kd_experiment_opts *o, kd_ensemble_opts *e) {
    kd_ensemble_opts_default(e);
    e->modalities = o->modalities;
    e->infer.tta = o->tta;
    e->infer.progress = o->progress != NULL; /* a bar over windows, on a terminal only */
    e->infer.overlap = 0.5f;
    e->post.threshold = 0.5f;
    e->post.et_min_voxels = 32;
    e->post.min_component_fraction = 0.1;
    e->post.labels = KD_LABELS_AUTO;
    e->progress = o->progress;
    e->progress_ctx = o->progress_ctx;
    e->stop = o->stop;
}

/* spec with ":in=C" appended when the data has C != 4 channels and spec names none. */
kd_status kd_exp_spec(const char *spec, int channels, char *buf, size_t n) {
    if (channels == 4 || strstr(spec, ":in=")) return kd_path_printf(buf, n, "%s", spec);
    return kd_path_printf(buf, n, "%s:in=%d", spec, channels);
}

kd_status kd_exp_evaluate(const char *pred, const char *ref, kd_eval_result **ev) {
    kd_eval_options eo;
    kd_eval_options_default(&eo);
    eo.pred_dir = pred;
    eo.ref = ref;
    return kd_evaluate(&eo, ev);
}

kd_status kd_exp_cohort(const kd_experiment_opts *o, const char *dir, int cases, int first, int unlabeled) {
    kd_phantom_opts po;
    memset(&po, 0, sizeof po);
    po.cases = cases;
    po.size[0] = po.size[1] = po.size[2] = o->size;
    po.seed = o->seed;
    po.unlabeled = unlabeled;
    po.layout = KD_LAYOUT_BRATS2018;
    po.first_index = first;
    double t0 = kd_now_s();
    kd_status s = kd_phantom_write_cohort(dir, &po);
    double sec = kd_now_s() - t0;
    /* the line kdseg phantom prints */
    if (!s)
        kd_progressf(o->progress, o->progress_ctx,
                     "wrote %d %s%s cases of %dx%dx%d to %s in %.2f s (%.3f s per case)", cases,
                     unlabeled ? "unlabeled " : "", kd_layout_name(po.layout), o->size, o->size,
                     o->size, dir, sec, sec / cases);
    return s;
}

kd_status kd_exp_link(const char *target, const char *link) {
    char real[PATH_MAX];
    if (!realpath(target, real)) return kd_fail(KD_ERR_IO, "%s: %s", target, strerror(errno));
    unlink(link);
    if (symlink(real, link)) return kd_fail(KD_ERR_IO, "%s: cannot link to %s: %s", link, real, strerror(errno));
    return KD_OK;
}

/* ".nii.gz" or ".nii": the extension of a NIfTI path. */
static const char *nifti_ext(const char *path) {
    size_t n = strlen(path);
    return n > 4 && !strcmp(path + n - 4, ".nii") ? ".nii" : ".nii.gz";
}

/* VIEW/CASE/CASE_MOD.nii[.gz]: channel ch of case i of ds, a link to its file, or for a
 * volume of a 4-D file (the Decathlon layout) that volume written out. */
static kd_status view_image(const kd_dataset *ds, int i, int ch, const char *view) {
    int vol = 0;
    const char *src = kd_dataset_case_image(ds, i, ch, &vol);
    const char *name = kd_dataset_case_name(ds, i);
    char dst[KD_PATH_MAX];
    kd_volume *v = NULL;
    kd_status s = kd_path_printf(dst, sizeof dst, "%s/%s/%s_%s%s", view, name, name,
                                 kd_modality_name(kd_dataset_modality(ds, ch)), nifti_ext(src));
    if (!s) s = kd_nifti_read_header(src, &v);
    if (!s && v->nt == 1) {
        kd_volume_free(v);
        return kd_exp_link(src, dst);
    }
    kd_volume_free(v);
    v = NULL;
    if (!s) s = kd_nifti_read(src, &v);
    if (!s && (vol < 0 || vol >= v->nt))
        s = kd_fail(KD_ERR_FORMAT, "%s: volume %d of %d", src, vol, v->nt);
    if (!s) {
        size_t n = (size_t)v->nx * v->ny * v->nz;
        unlink(dst);
        s = kd_nifti_write(dst, v, 1, KD_DT_FLOAT32, v->data + (size_t)vol * n, NULL);
    }
    kd_volume_free(v);
    return s;
}

/* DST: the label file of case i of ds in the BraTS 2019 convention of the view (a link
 * when it is in it already). */
static kd_status truth_label(const kd_dataset *ds, int i, const char *dst) {
    kd_label_convention c = kd_layout_labels(kd_dataset_layout(ds));
    const char *src = kd_dataset_case_label(ds, i);
    if (c == KD_LABELS_2019) return kd_exp_link(src, dst);
    kd_volume *v = NULL;
    kd_status s = kd_nifti_read(src, &v);
    size_t n = s ? 0 : (size_t)v->nx * v->ny * v->nz;
    uint8_t *lab = s ? NULL : malloc(n ? n : 1);
    if (!s && !lab) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", src);
    for (size_t k = 0; !s && k < n; k++) {
        int r = kd_label_regions(c, (int)v->data[k]);
        if (r < 0) s = kd_fail(KD_ERR_FORMAT, "%s: label %g is not one of the %s convention's", src,
                               (double)v->data[k], kd_label_convention_name(c));
        lab[k] = r & 4 ? 4 : r & 2 ? 1 : r & 1 ? 2 : 0;
    }
    if (!s) {
        unlink(dst);
        s = kd_nifti_write(dst, v, 1, KD_DT_UINT8, lab, NULL);
    }
    free(lab);
    kd_volume_free(v);
    return s;
}

/* Empties DIR (the experiment's own view folders), down to `depth` folders: a view of an
 * earlier run's folders must not add its cases to this one's. */
static void clear_view(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[KD_PATH_MAX];
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || kd_path_join(p, sizeof p, dir, e->d_name) ||
            lstat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth > 0) clear_view(p, depth - 1);
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
}

/* The unlabeled pool as the students may see it: every case of the folders dirs[0..n) in
 * one BraTS 2018 folder VIEW (links to the image files of the selected modalities; no
 * label files), and the labels the cases have in TRUTH/CASE.nii.gz (BraTS 2019 labels),
 * for scoring the annotations and for the oracle student. Counts the cases and those with
 * labels. */
static kd_status hide_labels(const kd_experiment_opts *o, const char *view, const char *truth,
                             int *ncases, int *nlabeled) {
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    dopts.modalities = o->modalities;
    *ncases = *nlabeled = 0;
    clear_view(view, 1);
    clear_view(truth, 0);
    kd_status s = kd_mkdirs(view);
    if (!s) s = kd_mkdirs(truth);
    for (int d = 0; d < o->nunlabeled_dirs && !s; d++) {
        kd_dataset *ds = NULL;
        if ((s = kd_dataset_open(o->unlabeled_dirs[d], &dopts, &ds))) break;
        if (!kd_dataset_count(ds))
            s = kd_fail(KD_ERR_INVALID_ARG, "%s: no cases", o->unlabeled_dirs[d]);
        for (int i = 0; i < kd_dataset_count(ds) && !s; i++) {
            const char *name = kd_dataset_case_name(ds, i);
            char dir[KD_PATH_MAX], lab[KD_PATH_MAX];
            if ((s = kd_path_join(dir, sizeof dir, view, name)) || (s = kd_mkdirs(dir))) break;
            for (int ch = 0; ch < kd_dataset_channels(ds) && !s; ch++) s = view_image(ds, i, ch, view);
            if (!s && kd_dataset_case_labeled(ds, i) == 1) {
                const char *src = kd_dataset_case_label(ds, i);
                if (!(s = kd_path_printf(lab, sizeof lab, "%s/%s%s", truth, name, nifti_ext(src))))
                    s = truth_label(ds, i, lab);
                ++*nlabeled;
            }
            ++*ncases;
        }
        kd_dataset_free(ds);
    }
    return s;
}

/* ---- stages ---------------------------------------------------------------------------- */

typedef struct exp_state {
    const kd_experiment_opts *o;
    kd_device *dev;
    kd_device *devs[KD_EXPERIMENT_MAX_JOBS]; /* devs[0] = dev; models trained at once */
    int ndevs;
    double t0;
    int stage, nstages;
    int user;                          /* the user's cases, not phantoms */
    char labeled[KD_PATH_MAX], unlabeled[KD_PATH_MAX], test[KD_PATH_MAX];
    char truth[KD_PATH_MAX];           /* the unlabeled cases' true labels ("" unknown) */
    char oracle[KD_PATH_MAX];          /* those labels for every unlabeled case ("" none) */
    int channels;
    char specs[KD_EXPERIMENT_MAX_TEACHERS + 1][KD_PATH_MAX]; /* teachers', student's (in=C) */
    char teacher_ckpt[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *teacher_ptr[KD_EXPERIMENT_MAX_TEACHERS];
} exp_state;

static void stage(exp_state *x, const char *what) {
    const kd_experiment_opts *o = x->o;
    kd_progressf(o->progress, o->progress_ctx, "%s", "");
    kd_progressf(o->progress, o->progress_ctx, "[%d/%d] %s  (%.0f s elapsed)", ++x->stage, x->nstages,
                 what, kd_now_s() - x->t0);
}

/* The oracle's "annotations": links OUT/oracle/CASE.nii.gz to the unlabeled cases' hidden
 * truth, so the same distillation run can learn from perfect labels of the same cases. */
static kd_status link_oracle(const char *truth, const char *dir) {
    kd_dataset *ds = NULL;
    kd_status s = kd_mkdirs(dir);
    if (!s) s = kd_dataset_open(truth, NULL, &ds);
    for (int i = 0; !s && i < kd_dataset_count(ds); i++) {
        char link[KD_PATH_MAX];
        if (!(s = kd_path_printf(link, sizeof link, "%s/%s.nii.gz", dir, kd_dataset_case_name(ds, i))))
            s = kd_exp_link(kd_dataset_case_label(ds, i), link);
    }
    kd_dataset_free(ds);
    return s;
}

/* The phantom cohort: labeled, unlabeled and test cases, and the unlabeled cases again
 * with their labels (the generator knows them: same seed and case numbers). */
static kd_status phantom_cases(exp_state *x) {
    const kd_experiment_opts *o = x->o;
    char unl[KD_PATH_MAX];
    kd_status s = kd_path_printf(x->labeled, KD_PATH_MAX, "%s/data/labeled", o->out);
    if (!s) s = kd_path_printf(unl, sizeof unl, "%s/data/unlabeled", o->out);
    if (!s) s = kd_path_printf(x->test, KD_PATH_MAX, "%s/data/test", o->out);
    if (!s) s = kd_path_printf(x->truth, KD_PATH_MAX, "%s/data/unlabeled-truth", o->out);
    if (!s) s = kd_path_printf(x->oracle, KD_PATH_MAX, "%s/oracle", o->out);
    if (s) return s;
    snprintf(x->unlabeled, KD_PATH_MAX, "%s", unl);
    if (!s) s = kd_exp_cohort(o, x->labeled, o->labeled, 0, 0);
    if (!s) s = kd_exp_cohort(o, x->unlabeled, o->unlabeled, 1000, 1);
    if (!s) s = kd_exp_cohort(o, x->test, o->test, 2000, 0);
    if (!s) s = kd_exp_cohort(o, x->truth, o->unlabeled, 1000, 0);
    if (!s) s = link_oracle(x->truth, x->oracle);
    return s;
}

/* The user's folders: labeled and test cases read where they are; the unlabeled pool
 * seen through OUT/data/unlabeled, with any labels its cases have hidden from training
 * and kept in OUT/data/unlabeled-truth for scoring (and, when every case has them, for
 * the oracle student). No case may be in two sets. */
static kd_status user_cases(exp_state *x) {
    const kd_experiment_opts *o = x->o;
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    dopts.modalities = o->modalities;
    kd_dataset *lab = NULL, *test = NULL, *unl = NULL;
    int nunl = 0, nlab_unl = 0;
    kd_status s = kd_path_printf(x->labeled, KD_PATH_MAX, "%s", o->labeled_dir);
    if (!s) s = kd_path_printf(x->test, KD_PATH_MAX, "%s", o->test_dir);
    if (!s) s = kd_path_printf(x->unlabeled, KD_PATH_MAX, "%s/data/unlabeled", o->out);
    if (!s) s = kd_path_printf(x->truth, KD_PATH_MAX, "%s/data/unlabeled-truth", o->out);
    if (!s) s = kd_dataset_open(o->labeled_dir, &dopts, &lab);
    if (!s) s = kd_dataset_open(o->test_dir, &dopts, &test);
    if (!s && kd_dataset_labeled_count(lab) - o->val_cases < 1)
        s = kd_fail(KD_ERR_INVALID_ARG, "%s: %d labeled cases; need more than the %d held out for "
                    "validation", o->labeled_dir, kd_dataset_labeled_count(lab), o->val_cases);
    if (!s && (!kd_dataset_count(test) || kd_dataset_labeled_count(test) < kd_dataset_count(test)))
        s = kd_fail(KD_ERR_INVALID_ARG, "%s: the test cases need their labels (%d of %d have them)",
                    o->test_dir, kd_dataset_labeled_count(test), kd_dataset_count(test));
    if (!s) s = hide_labels(o, x->unlabeled, x->truth, &nunl, &nlab_unl);
    if (!s) s = kd_dataset_open(x->unlabeled, &dopts, &unl);
    int *all = NULL, n = 0;
    if (!s) {
        n = kd_dataset_count(lab) + kd_dataset_count(test) + kd_dataset_count(unl) + 1;
        if (!(all = malloc(sizeof(int) * (size_t)n))) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case lists");
        for (int i = 0; i < n; i++) all[i] = i;
    }
    if (!s) s = kd_dataset_check_disjoint(test, all, kd_dataset_count(test), "test", lab, all,
                                          kd_dataset_count(lab), "labeled");
    if (!s) s = kd_dataset_check_disjoint(test, all, kd_dataset_count(test), "test", unl, all,
                                          kd_dataset_count(unl), "unlabeled");
    if (!s) s = kd_dataset_check_disjoint(lab, all, kd_dataset_count(lab), "labeled", unl, all,
                                          kd_dataset_count(unl), "unlabeled");
    if (!s) {
        kd_progressf(o->progress, o->progress_ctx, "  labeled: %d cases in %s (%d held out for validation)",
                     kd_dataset_labeled_count(lab), o->labeled_dir, o->val_cases);
        kd_progressf(o->progress, o->progress_ctx, "  unlabeled: %d cases from %d folder%s, seen through %s%s",
                     nunl, o->nunlabeled_dirs, o->nunlabeled_dirs > 1 ? "s" : "", x->unlabeled,
                     nlab_unl ? " (their labels hidden)" : "");
        kd_progressf(o->progress, o->progress_ctx, "  test: %d cases in %s", kd_dataset_count(test), o->test_dir);
        if (nlab_unl)
            kd_progressf(o->progress, o->progress_ctx, "  %d of the unlabeled cases have labels: the annotations "
                         "are scored against them%s", nlab_unl,
                         nlab_unl == nunl ? ", and an oracle student learns from them" : "");
    }
    if (!nlab_unl) x->truth[0] = 0;
    if (!s && nlab_unl == nunl) snprintf(x->oracle, KD_PATH_MAX, "%s", x->truth);
    free(all);
    kd_dataset_free(lab);
    kd_dataset_free(test);
    kd_dataset_free(unl);
    return s;
}

/* Channels of the labeled cases, and every model's spec for them. */
static kd_status model_specs(exp_state *x) {
    const kd_experiment_opts *o = x->o;
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    dopts.modalities = o->modalities;
    kd_dataset *ds = NULL;
    kd_status s = kd_dataset_open(x->labeled, &dopts, &ds);
    if (!s) x->channels = kd_dataset_channels(ds);
    kd_dataset_free(ds);
    for (int t = 0; t < o->nteachers && !s; t++)
        s = kd_exp_spec(o->teacher_specs[t], x->channels, x->specs[t], KD_PATH_MAX);
    if (!s) s = kd_exp_spec(o->student_spec, x->channels, x->specs[o->nteachers], KD_PATH_MAX);
    return s;
}

/* Mean Dice per region (and their mean in m[3]) of the label maps in PRED against the
 * unlabeled cases' hidden truth. */
static kd_status score_unlabeled(exp_state *x, const char *pred, double m[4]) {
    kd_eval_result *ev = NULL;
    kd_status s = kd_exp_evaluate(pred, x->truth, &ev);
    for (int r = 0; !s && r < 4; r++) m[r] = kd_eval_mean_dice(ev, r);
    kd_eval_result_free(ev);
    return s;
}

/* The devices the models train on at once: the experiment's, and o->jobs - 1 more on the
 * same OpenCL device, opened once, one after another (programs from the cache). */
static kd_status open_devices(exp_state *x) { return kd_exp_open_devices(x->dev, x->o->jobs, x->devs, &x->ndevs); }

static kd_exp_job *new_jobs(int n) { return calloc((size_t)n, sizeof(kd_exp_job)); }

/* kd_exp_run_jobs on the experiment's devices (opened on first use). */
static kd_status run_jobs(exp_state *x, kd_exp_job *jobs, int n) {
    kd_status s = open_devices(x);
    return s ? s : kd_exp_run_jobs(x->devs, x->ndevs, jobs, n, x->o->progress, x->o->progress_ctx);
}

static kd_status train_teachers(exp_state *x) {
    const kd_experiment_opts *o = x->o;
    kd_exp_job *jobs = new_jobs(o->nteachers);
    if (!jobs) return kd_fail(KD_ERR_OUT_OF_MEMORY, "experiment: teacher jobs");
    kd_status s = KD_OK;
    for (int t = 0; t < o->nteachers && !s; t++) {
        kd_exp_job *j = &jobs[t];
        snprintf(j->line, sizeof j->line, "  teacher %s (%s): %ld steps", o->teacher_names[t], x->specs[t],
                 o->teacher_steps);
        s = kd_path_printf(j->out, sizeof j->out, "%s/models/%s", o->out, o->teacher_names[t]);
        kd_exp_recipe(o, x->labeled, j->out, x->specs[t], o->teacher_steps, o->teacher_lr,
                      o->seed + 10 + (uint64_t)t, &j->train);
    }
    if (!s) s = run_jobs(x, jobs, o->nteachers);
    for (int t = 0; t < o->nteachers && !s; t++) {
        s = kd_exp_checkpoint(jobs[t].out, x->teacher_ckpt[t], KD_PATH_MAX);
        x->teacher_ptr[t] = x->teacher_ckpt[t];
    }
    free(jobs);
    return s;
}

/* The ensemble's annotations of the unlabeled cases, scored against their hidden truth:
 * distillation can only help where these beat what the baseline student reaches. */
static kd_status annotate(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char out[KD_PATH_MAX];
    kd_annotate_opts ao;
    kd_annotate_opts_default(&ao);
    kd_exp_ensemble_recipe(o, &ao.e);
    ao.e.models = x->teacher_ptr;
    ao.e.nmodels = o->nteachers;
    kd_status s = kd_path_printf(out, sizeof out, "%s/annotations", o->out);
    ao.dataset = x->unlabeled;
    ao.out = out;
    if (!s) s = kd_annotate(x->dev, &ao, NULL);
    if (s || !x->truth[0]) return s;
    if (!(s = score_unlabeled(x, out, r->annotations)))
        kd_progressf(o->progress, o->progress_ctx,
                     "  ensemble annotations against the unlabeled cases' hidden truth: Dice WT %.3f, "
                     "TC %.3f, ET %.3f (mean %.3f)", r->annotations[0], r->annotations[1],
                     r->annotations[2], r->annotations[3]);
    return s;
}

/* A student distilled from the unlabeled pool and the labels in ANN (offline) or the
 * teachers (online, ann NULL): job j's options (ann and x's strings borrowed). */
static kd_status distill_job(exp_state *x, const char *ann, const char *name, double min_agreement,
                             uint64_t seed, kd_exp_job *j) {
    const kd_experiment_opts *o = x->o;
    kd_distill_opts *d = &j->dist;
    j->distill = 1;
    kd_distill_opts_default(d);
    kd_status s = kd_path_printf(j->out, sizeof j->out, "%s/models/%s", o->out, name);
    if (s) return s;
    kd_exp_student_recipe(o, x->labeled, j->out, x->specs[o->nteachers], &d->train);
    d->train.seed = seed;
    d->unlabeled = x->unlabeled;
    d->annotations = ann;
    d->teachers = ann ? NULL : x->teacher_ptr;
    d->nteachers = ann ? 0 : o->nteachers;
    d->pseudo_ratio = o->pseudo_ratio;
    d->pseudo_weight = o->pseudo_weight;
    d->min_agreement = min_agreement;
    d->pseudo_loss = o->student_loss;
    d->distill_loss = KD_LOSS_BCE;
    return KD_OK;
}

/* The seed of a student's run k (0-based): the experiment's for the first, 100 + k after. */
static uint64_t run_seed(const kd_experiment_opts *o, int k) { return k ? 100 + (uint64_t)k : o->seed; }

/* The students' runs and the oracle, trained at once (o->jobs), then the baseline's runs
 * on the unlabeled cases, then the online student (it runs the teachers on its queue). */
static kd_status students(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char ckpt[KD_PATH_MAX], pred[KD_PATH_MAX], ann[KD_PATH_MAX], run[32] = "";
    int n = 2 * r->runs + (r->oracle >= 0), nj = 0;
    kd_exp_job *jobs = new_jobs(n + 1);
    if (!jobs) return kd_fail(KD_ERR_OUT_OF_MEMORY, "experiment: student jobs");
    kd_status s = kd_path_printf(ann, sizeof ann, "%s/annotations", o->out);
    for (int k = 0; k < r->runs && !s; k++) {
        kd_exp_job *j = &jobs[nj++];
        if (r->runs > 1) snprintf(run, sizeof run, ", run %d of %d", k + 1, r->runs);
        snprintf(j->line, sizeof j->line, "  student (%s), labeled only: %ld steps, loss %s%s",
                 x->specs[o->nteachers], o->student_steps, kd_loss_name(o->student_loss), run);
        s = kd_path_printf(j->out, sizeof j->out, "%s/models/%s", o->out, r->models[r->baseline_runs[k]].name);
        kd_exp_student_recipe(o, x->labeled, j->out, x->specs[o->nteachers], &j->train);
        j->train.seed = run_seed(o, k);
    }
    for (int k = 0; k < r->runs && !s; k++) {
        kd_exp_job *j = &jobs[nj++];
        if (r->runs > 1) snprintf(run, sizeof run, ", run %d of %d", k + 1, r->runs);
        snprintf(j->line, sizeof j->line,
                 "  student distilled offline (labeled + %sensemble-annotated cases): %ld steps%s",
                 x->user ? "the " : "", o->student_steps, run);
        s = distill_job(x, ann, r->models[r->distilled_runs[k]].name, o->min_agreement, run_seed(o, k), j);
    }
    if (!s && r->oracle >= 0) {
        kd_exp_job *j = &jobs[nj++];
        snprintf(j->line, sizeof j->line,
                 "  oracle student (labeled + the same unlabeled cases with their hidden true labels): "
                 "%ld steps", o->student_steps);
        s = distill_job(x, x->oracle, "student-oracle", 0, o->seed, j);
    }
    if (!s) s = run_jobs(x, jobs, nj);
    double bu[4] = {0, 0, 0, 0};
    for (int k = 0; k < r->runs && !s && x->truth[0]; k++) {
        /* what the baseline student reaches by itself on the unlabeled cases: the
         * annotations teach it something only where they are better than that */
        const char *name = r->models[r->baseline_runs[k]].name;
        kd_segment_opts so;
        kd_segment_opts_default(&so);
        kd_exp_ensemble_recipe(o, &so.e);
        const char *one[1] = {ckpt};
        double m[4];
        so.e.models = one;
        so.e.nmodels = 1;
        so.dataset = x->unlabeled;
        so.out = pred;
        s = kd_exp_checkpoint(jobs[k].out, ckpt, sizeof ckpt);
        if (!s) s = kd_path_printf(pred, sizeof pred, "%s/pred-unlabeled/%s", o->out, name);
        if (!s) s = kd_segment(x->dev, &so);
        if (!s) s = score_unlabeled(x, pred, m);
        for (int g = 0; !s && g < 4; g++) bu[g] += m[g] / r->runs;
    }
    if (!s && x->truth[0]) {
        double *b = r->baseline_unlabeled;
        const double *a = r->annotations;
        for (int g = 0; g < 4; g++) b[g] = bu[g];
        kd_progressf(o->progress, o->progress_ctx,
                     "  the baseline student%s on the same unlabeled cases: Dice WT %.3f, TC %.3f, ET %.3f "
                     "(mean %.3f): the annotations are %+.3f from it", r->runs > 1 ? " (mean of its runs)" : "",
                     b[0], b[1], b[2], b[3], a[3] - b[3]);
    }
    if (!s && o->online) {
        kd_exp_job *j = &jobs[n];
        kd_distill_report rep;
        memset(&rep, 0, sizeof rep);
        kd_progressf(o->progress, o->progress_ctx,
                     "  student distilled online (teachers run on each unlabeled patch): %ld steps",
                     o->student_steps);
        s = distill_job(x, NULL, "student-online", 0, o->seed, j);
        if (!s) s = kd_distill(x->dev, &j->dist, &rep);
        if (!s) {
            r->online_sched = rep.sched;
            kd_sched_report_lines(&rep.sched, o->nteachers, rep.sched.seconds, o->progress, o->progress_ctx);
        }
    }
    free(jobs);
    return s;
}

/* Every model on the test cases: the teachers and their ensemble from one set of passes
 * (each teacher's own map written beside the ensemble's), then each student. */
static kd_status test_cases(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char out[KD_PATH_MAX], members[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *mp[KD_EXPERIMENT_MAX_TEACHERS];
    kd_segment_opts so;
    kd_segment_opts_default(&so);
    kd_exp_ensemble_recipe(o, &so.e);
    kd_status s = KD_OK;
    for (int t = 0; t < o->nteachers && !s; t++) {
        s = kd_path_printf(members[t], KD_PATH_MAX, "%s/pred/%s", o->out, o->teacher_names[t]);
        mp[t] = members[t];
    }
    if (!s) s = kd_path_printf(out, sizeof out, "%s/pred/ensemble", o->out);
    if (s) return s;
    char names[KD_EXPERIMENT_MAX_TEACHERS * 66] = "";
    for (int t = 0; t < o->nteachers; t++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", t ? ", " : "",
                 o->teacher_names[t]);
    kd_progressf(o->progress, o->progress_ctx, "  %s and their ensemble", names);
    so.e.models = x->teacher_ptr;
    so.e.nmodels = o->nteachers;
    so.dataset = x->test;
    so.out = out;
    so.member_out = mp;
    if ((s = kd_segment(x->dev, &so))) return s;
    so.member_out = NULL;
    char ckpt[KD_PATH_MAX];
    const char *one[1] = {ckpt};
    for (int m = 0; m < r->nmodels && !s; m++) {
        char dir[KD_PATH_MAX];
        if (r->models[m].run < 0) continue; /* the mean of runs: below */
        if (m > r->ensemble) {
            kd_progressf(o->progress, o->progress_ctx, "  %s", r->models[m].name);
            so.e.models = one;
            so.e.nmodels = 1;
            if ((s = kd_path_printf(dir, sizeof dir, "%s/models/%s", o->out, r->models[m].name)) ||
                (s = kd_exp_checkpoint(dir, ckpt, sizeof ckpt)) ||
                (s = kd_path_printf(out, sizeof out, "%s/pred/%s", o->out, r->models[m].name)) ||
                (s = kd_segment(x->dev, &so)))
                break;
        }
        if (!(s = kd_path_printf(out, sizeof out, "%s/pred/%s", o->out, r->models[m].name)))
            s = kd_exp_evaluate(out, x->test, &r->models[m].eval);
    }
    for (int kind = 0; kind < 2 && r->runs > 1 && !s; kind++) { /* the runs' means */
        const int *runs = kind ? r->distilled_runs : r->baseline_runs;
        const kd_eval_result *ev[KD_EXPERIMENT_MAX_RUNS];
        for (int k = 0; k < r->runs; k++) ev[k] = r->models[runs[k]].eval;
        s = kd_exp_mean_eval(ev, r->runs, &r->models[kind ? r->distilled : r->baseline].eval);
    }
    return s;
}

static kd_status check_opts(const kd_experiment_opts *o) {
    if (!o->out || !o->student_spec || o->nteachers < 1 || o->nteachers > KD_EXPERIMENT_MAX_TEACHERS)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: an output folder, a student and 1 to %d teachers "
                       "are needed", KD_EXPERIMENT_MAX_TEACHERS);
    for (int t = 0; t < o->nteachers; t++)
        if (!o->teacher_names[t] || !o->teacher_specs[t] || strlen(o->teacher_names[t]) >= 64)
            return kd_fail(KD_ERR_INVALID_ARG, "experiment: teacher %d needs a name (under 64 characters) "
                           "and a spec", t);
    int user = o->labeled_dir || o->test_dir || o->nunlabeled_dirs;
    if (user && (!o->labeled_dir || !o->test_dir || o->nunlabeled_dirs < 1 ||
                 o->nunlabeled_dirs > KD_EXPERIMENT_MAX_DIRS))
        return kd_fail(KD_ERR_INVALID_ARG, "experiment on your cases: give a labeled folder, a test folder "
                       "and 1 to %d unlabeled folders", KD_EXPERIMENT_MAX_DIRS);
    for (int d = 0; d < o->nunlabeled_dirs; d++)
        if (!o->unlabeled_dirs[d]) return kd_fail(KD_ERR_INVALID_ARG, "experiment: unlabeled folder %d", d);
    if (o->recipe && !kd_recipe_find(o->recipe)) return KD_ERR_INVALID_ARG; /* it named the known ones */
    if (o->student_runs < 0 || o->student_runs > KD_EXPERIMENT_MAX_RUNS)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: %d student runs (1 to %d)", o->student_runs,
                       KD_EXPERIMENT_MAX_RUNS);
    if (user) return o->val_cases >= 0 ? KD_OK : kd_fail(KD_ERR_INVALID_ARG, "experiment: %d validation "
                                                          "cases", o->val_cases);
    if (o->labeled - o->val_cases < 1 || o->unlabeled < 1 || o->test < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: %d labeled cases (%d held out), %d unlabeled, %d "
                       "test: each set needs cases", o->labeled, o->val_cases, o->unlabeled, o->test);
    if (o->patch > o->size)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: the patch %d is larger than the volume %d",
                       o->patch, o->size);
    return KD_OK;
}

/* The result's model list: teachers, ensemble, the students that run. */
static void name_models(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    r->nteachers = o->nteachers;
    for (int t = 0; t < o->nteachers; t++) snprintf(r->models[t].name, 64, "%s", o->teacher_names[t]);
    int m = o->nteachers;
    r->ensemble = m, snprintf(r->models[m++].name, 64, "ensemble");
    r->runs = o->student_runs > 1 ? o->student_runs : 1;
    for (int kind = 0; kind < 2; kind++) { /* the baseline's runs and their mean, the distilled's */
        const char *base = kind ? "student-distilled" : "student-baseline";
        int *runs = kind ? r->distilled_runs : r->baseline_runs;
        for (int k = 0; k < r->runs; k++) {
            runs[k] = m;
            r->models[m].run = r->runs > 1 ? k + 1 : 0;
            if (k) snprintf(r->models[m++].name, 64, "%s-%d", base, k + 1);
            else snprintf(r->models[m++].name, 64, "%s", base);
        }
        if (r->runs > 1) {
            r->models[m].run = -1;
            snprintf(r->models[m].name, 64, "%s-mean", base);
        }
        *(kind ? &r->distilled : &r->baseline) = r->runs > 1 ? m++ : runs[0];
    }
    r->oracle = x->oracle[0] ? m : -1;
    if (x->oracle[0]) snprintf(r->models[m++].name, 64, "student-oracle");
    r->online = o->online ? m : -1;
    if (o->online) snprintf(r->models[m++].name, 64, "student-online");
    r->nmodels = m;
    for (int k = 0; k < 4; k++) r->annotations[k] = -1, r->baseline_unlabeled[k] = -1;
}

kd_status kd_experiment_run(kd_device *dev, const kd_experiment_opts *o, kd_experiment_result **out) {
    *out = NULL;
    kd_status s = check_opts(o);
    if (s) return s;
    kd_experiment_result *r = calloc(1, sizeof *r);
    exp_state *x = calloc(1, sizeof *x);
    if (!r || !x) {
        free(r);
        free(x);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "experiment");
    }
    x->o = o, x->dev = dev, x->t0 = kd_now_s(), x->nstages = 6;
    x->devs[0] = dev, x->ndevs = 1;
    x->user = o->labeled_dir != NULL;
    kd_outdir *od = NULL;
    /* the experiment's own files in OUT are its alone; each stage locks its subfolder too */
    s = kd_outdir_open(o->out, "data/unlabeled-truth/KDPhantom_1000/KDPhantom_1000_flair.nii.gz", &od);
    if (!s) stage(x, x->user ? "reading your cases" : "generating the phantom cohort");
    if (!s) s = x->user ? user_cases(x) : phantom_cases(x);
    if (!s) s = model_specs(x);
    if (!s) name_models(x, r);
    static const char *count[KD_EXPERIMENT_MAX_TEACHERS + 1] = {"no",   "one",  "two", "three",
                                                                "four", "five", "six"};
    char what[96];
    snprintf(what, sizeof what, "training %s %s on the labeled cases", count[o->nteachers],
             o->nteachers > 1 ? "heterogeneous teachers" : "teacher");
    if (!s) stage(x, what);
    if (!s) s = train_teachers(x);
    if (!s) stage(x, "annotating the unlabeled cases with the teacher ensemble");
    if (!s) s = annotate(x, r);
    if (!s) stage(x, "training the student on labeled cases (baseline) and distilling it");
    if (!s) s = students(x, r);
    if (!s) stage(x, "segmenting and evaluating the test cases");
    if (!s) s = test_cases(x, r);
    if (!s) stage(x, "results");
    if (!s) s = kd_experiment_write(r, o->out, x->test, o->modalities);
    kd_outdir_close(od);
    r->seconds = kd_now_s() - x->t0;
    for (int i = 1; i < x->ndevs; i++) kd_device_free(x->devs[i]);
    free(x);
    if (s) {
        kd_experiment_result_free(r);
        return s;
    }
    *out = r;
    return KD_OK;
}

void kd_experiment_result_free(kd_experiment_result *r) {
    if (!r) return;
    for (int m = 0; m < r->nmodels; m++) kd_eval_result_free(r->models[m].eval);
    free(r);
}
