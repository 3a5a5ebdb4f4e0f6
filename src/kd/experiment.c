/* The paper's experiment on a synthetic cohort: teachers of several architectures learn
 * from a few labeled cases, their ensemble annotates an unlabeled pool, and a student
 * distilled from labeled + annotated cases is compared with the same student trained on
 * the labeled cases only, an oracle student (the pool's true labels), every teacher and
 * the ensemble, on held-out test cases. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_internal.h"

/* ---- options ---------------------------------------------------------------------------- */

/* The augmentation every model of the experiment trains with, written out here (not
 * kd_augment_opts_default, which real data may tune): flips, transposition, scaling,
 * rotation, intensity, noise and gamma as the phantom runs were measured with. */
static void phantom_augment(kd_augment_opts *a) {
    kd_augment_opts_none(a); /* every other augmentation off, its parameters in range */
    a->p_flip = 0.5f;
    a->p_transpose = 0.5f;
    a->p_scale = 0.5f;
    a->scale_lo = 0.7f;
    a->scale_hi = 1.3f;
    a->p_rotate = 0.2f;
    a->rotate_deg = 10.0f;
    a->p_intensity = 1.0f;
    a->int_scale_lo = 0.9f;
    a->int_scale_hi = 1.1f;
    a->int_shift_lo = -0.2f;
    a->int_shift_hi = 0.2f;
    a->p_noise = 0.15f;
    a->noise_sigma = 0.1f;
    a->p_gamma = 0.15f;
    a->gamma_lo = 0.7f;
    a->gamma_hi = 1.5f;
}

static const char *const default_names[3] = {"unet3d", "cascade", "resnext-se"};

void kd_experiment_opts_default(kd_experiment_opts *o) {
    static const char *const specs[3] = {"unet3d:widths=8,16,32", "cascade:widths=8,16,32",
                                         "resnext-se:widths=16,32,64:enc=1,1,1"};
    memset(o, 0, sizeof *o);
    o->out = "kdseg-demo";
    o->seed = 1;
    o->labeled = 10, o->unlabeled = 24, o->test = 24;
    o->size = 64;
    o->nteachers = 3;
    for (int t = 0; t < 3; t++) o->teacher_names[t] = default_names[t], o->teacher_specs[t] = specs[t];
    o->student_spec = "resunet:widths=8,16,32,64:enc=1,1,1,1:dec=1,1,1";
    o->teacher_steps = o->student_steps = 400;
    o->teacher_lr = o->student_lr = 3e-3;
    o->pseudo_ratio = 0.5;
    o->pseudo_weight = 1.0;
    o->patch = 32, o->batch = 2, o->val_cases = 2, o->margin = 50;
    o->val_every = 100;
    o->fg_fraction = 0.5f;
    phantom_augment(&o->aug);
    o->schedule = KD_SCHED_COSINE;
    o->threads = 1;
}

void kd_experiment_opts_quick(kd_experiment_opts *o) {
    static const char *const specs[3] = {"unet3d:widths=8,16", "cascade:widths=8,16",
                                         "resnext-se:widths=16,32:enc=1,1"};
    kd_experiment_opts_default(o);
    o->labeled = 6, o->unlabeled = 8, o->test = 4;
    o->size = 48;
    o->batch = 1;
    for (int t = 0; t < 3; t++) o->teacher_specs[t] = specs[t];
    o->student_spec = "resunet:widths=8,16,32:enc=1,1,1:dec=1,1";
    o->teacher_steps = 40, o->student_steps = 50;
    o->val_every = 25;
    o->pseudo_ratio = 0.6;
}

/* Every training option of a model of the experiment, set here rather than taken from
 * the train command's defaults. */
static kd_status recipe(const kd_experiment_opts *o, const char *sub, const char *name, const char *spec,
                        long steps, double lr, uint64_t seed, kd_train_opts *t, char *data, char *out) {
    kd_status s = kd_path_printf(data, KD_PATH_MAX, "%s/data/labeled", o->out);
    if (!s) s = kd_path_printf(out, KD_PATH_MAX, "%s/%s/%s", o->out, sub, name);
    if (s) return s;
    memset(t, 0, sizeof *t);
    t->data = data;
    t->layout = KD_LAYOUT_AUTO;
    t->val_cases = o->val_cases;
    t->out = out;
    t->overwrite = 1; /* a rerun of the experiment trains its models again (the old as *.bak) */
    t->model = spec;
    kd_optim_defaults(&t->optim); /* the paper's Adam (AMSGrad) */
    t->optim.kind = KD_OPT_ADAM;
    t->optim.lr = (float)lr;
    t->optim.weight_decay = 1e-6f;
    kd_schedule_defaults(&t->schedule);
    t->schedule.kind = o->schedule;
    t->schedule.step_every = 16000;
    t->schedule.warmup = 0;
    t->loss = KD_LOSS_PAPER;
    t->steps = steps;
    kd_sampler_opts_default(&t->sampler);
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
    return KD_OK;
}

/* Inference and post-processing of the experiment's segmentations and annotations. */
static void ensemble_recipe(const kd_experiment_opts *o, kd_ensemble_opts *e) {
    kd_ensemble_opts_default(e);
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

/* ---- stages ---------------------------------------------------------------------------- */

typedef struct exp_state {
    const kd_experiment_opts *o;
    kd_device *dev;
    double t0;
    int stage, nstages;
    char teacher_ckpt[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *teacher_ptr[KD_EXPERIMENT_MAX_TEACHERS];
} exp_state;

static void stage(exp_state *x, const char *what) {
    const kd_experiment_opts *o = x->o;
    kd_progressf(o->progress, o->progress_ctx, "%s", "");
    kd_progressf(o->progress, o->progress_ctx, "[%d/%d] %s  (%.0f s elapsed)", ++x->stage, x->nstages,
                 what, kd_now_s() - x->t0);
}

/* OUT/data/SUB: `cases` phantom cases numbered from first. */
static kd_status cohort(exp_state *x, const char *sub, int cases, int first, int unlabeled) {
    const kd_experiment_opts *o = x->o;
    char dir[KD_PATH_MAX];
    kd_status s = kd_path_printf(dir, sizeof dir, "%s/data/%s", o->out, sub);
    if (s) return s;
    kd_phantom_opts po;
    memset(&po, 0, sizeof po);
    po.cases = cases;
    po.size[0] = po.size[1] = po.size[2] = o->size;
    po.seed = o->seed;
    po.unlabeled = unlabeled;
    po.layout = KD_LAYOUT_BRATS2018;
    po.first_index = first;
    double t0 = kd_now_s();
    if ((s = kd_phantom_write_cohort(dir, &po))) return s;
    double sec = kd_now_s() - t0;
    /* the line kdseg phantom prints */
    kd_progressf(o->progress, o->progress_ctx,
                 "wrote %d %s%s cases of %dx%dx%d to %s in %.2f s (%.3f s per case)", cases,
                 unlabeled ? "unlabeled " : "", kd_layout_name(po.layout), o->size, o->size,
                 o->size, dir, sec, sec / cases);
    return KD_OK;
}

/* The label maps in OUT/PRED evaluated against the cases of OUT/data/SET. */
static kd_status evaluate_in(const char *out, const char *pred, const char *set, kd_eval_result **ev) {
    kd_eval_options eo;
    kd_eval_options_default(&eo);
    char p[KD_PATH_MAX], ref[KD_PATH_MAX];
    kd_status s = kd_path_join(p, sizeof p, out, pred);
    if (!s) s = kd_path_printf(ref, sizeof ref, "%s/data/%s", out, set);
    if (s) return s;
    eo.pred_dir = p;
    eo.ref = ref;
    return kd_evaluate(&eo, ev);
}

/* Mean Dice per region (and their mean in m[3]) of the label maps in OUT/PRED against the
 * unlabeled cases' hidden truth, OUT/data/unlabeled-truth. */
static kd_status score_unlabeled(const char *out, const char *pred, double m[4]) {
    kd_eval_result *ev = NULL;
    kd_status s = evaluate_in(out, pred, "unlabeled-truth", &ev);
    for (int r = 0; !s && r < 4; r++) m[r] = kd_eval_mean_dice(ev, r);
    kd_eval_result_free(ev);
    return s;
}

/* The oracle's "annotations": links OUT/oracle/CASE.nii.gz to the unlabeled cases' hidden
 * truth, so the same distillation run can learn from perfect labels of the same cases. */
static kd_status link_oracle(const char *out) {
    char truth[KD_PATH_MAX], dir[KD_PATH_MAX];
    kd_dataset *ds = NULL;
    kd_status s = kd_path_join(truth, sizeof truth, out, "data/unlabeled-truth");
    if (!s) s = kd_path_join(dir, sizeof dir, out, "oracle");
    if (!s) s = kd_mkdirs(dir);
    if (!s) s = kd_dataset_open(truth, NULL, &ds);
    for (int i = 0; !s && i < kd_dataset_count(ds); i++) {
        char target[PATH_MAX], link[KD_PATH_MAX];
        if (!realpath(kd_dataset_case_label(ds, i), target)) {
            s = kd_fail(KD_ERR_IO, "%s: %s", kd_dataset_case_label(ds, i), strerror(errno));
            break;
        }
        if ((s = kd_path_printf(link, sizeof link, "%s/%s.nii.gz", dir, kd_dataset_case_name(ds, i))))
            break;
        unlink(link);
        if (symlink(target, link)) s = kd_fail(KD_ERR_IO, "%s: %s", link, strerror(errno));
    }
    kd_dataset_free(ds);
    return s;
}

static kd_status train_teachers(exp_state *x) {
    const kd_experiment_opts *o = x->o;
    kd_status s = KD_OK;
    for (int t = 0; t < o->nteachers && !s; t++) {
        char data[KD_PATH_MAX], out[KD_PATH_MAX];
        kd_train_opts to;
        kd_progressf(o->progress, o->progress_ctx, "  teacher %s (%s): %ld steps", o->teacher_names[t],
                     o->teacher_specs[t], o->teacher_steps);
        s = recipe(o, "models", o->teacher_names[t], o->teacher_specs[t], o->teacher_steps, o->teacher_lr,
                   o->seed + 10 + (uint64_t)t, &to, data, out);
        if (!s) s = kd_train(x->dev, &to, NULL);
        if (!s) s = kd_path_printf(x->teacher_ckpt[t], KD_PATH_MAX, "%s/best.kds", out);
        x->teacher_ptr[t] = x->teacher_ckpt[t];
    }
    return s;
}

/* The ensemble's annotations of the unlabeled cases, scored against their hidden truth:
 * distillation can only help where these beat what the baseline student reaches. */
static kd_status annotate(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char data[KD_PATH_MAX], out[KD_PATH_MAX];
    kd_annotate_opts ao;
    kd_annotate_opts_default(&ao);
    ensemble_recipe(o, &ao.e);
    ao.e.models = x->teacher_ptr;
    ao.e.nmodels = o->nteachers;
    kd_status s = kd_path_printf(data, sizeof data, "%s/data/unlabeled", o->out);
    if (!s) s = kd_path_printf(out, sizeof out, "%s/annotations", o->out);
    ao.dataset = data;
    ao.out = out;
    if (!s) s = kd_annotate(x->dev, &ao, NULL);
    /* the phantom generator knows the unlabeled cases' truth: the same cases, labeled */
    if (!s) s = cohort(x, "unlabeled-truth", o->unlabeled, 1000, 0);
    if (!s) s = score_unlabeled(o->out, "annotations", r->annotations);
    if (!s)
        kd_progressf(o->progress, o->progress_ctx,
                     "  ensemble annotations against the unlabeled cases' hidden truth: Dice WT %.3f, "
                     "TC %.3f, ET %.3f (mean %.3f)", r->annotations[0], r->annotations[1],
                     r->annotations[2], r->annotations[3]);
    return s;
}

/* A student distilled from OUT/data/unlabeled and labels ANN (offline) or the teachers
 * (online, ann NULL). */
static kd_status distill(exp_state *x, const char *ann, const char *name, double min_agreement,
                         kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char data[KD_PATH_MAX], out[KD_PATH_MAX], unl[KD_PATH_MAX], annp[KD_PATH_MAX];
    kd_distill_opts d;
    kd_distill_opts_default(&d);
    kd_status s = recipe(o, "models", name, o->student_spec, o->student_steps, o->student_lr, o->seed,
                         &d.train, data, out);
    if (!s) s = kd_path_printf(unl, sizeof unl, "%s/data/unlabeled", o->out);
    if (!s && ann) s = kd_path_join(annp, sizeof annp, o->out, ann);
    if (s) return s;
    d.unlabeled = unl;
    d.annotations = ann ? annp : NULL;
    d.teachers = ann ? NULL : x->teacher_ptr;
    d.nteachers = ann ? 0 : o->nteachers;
    d.pseudo_ratio = o->pseudo_ratio;
    d.pseudo_weight = o->pseudo_weight;
    d.min_agreement = min_agreement;
    d.pseudo_loss = KD_LOSS_PAPER;
    d.distill_loss = KD_LOSS_BCE;
    kd_distill_report rep;
    s = kd_distill(x->dev, &d, &rep);
    if (!s && !ann) {
        r->online_sched = rep.sched;
        kd_sched_report_lines(&rep.sched, o->nteachers, rep.sched.seconds, o->progress, o->progress_ctx);
    }
    return s;
}

static kd_status students(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char data[KD_PATH_MAX], out[KD_PATH_MAX], ckpt[KD_PATH_MAX], unl[KD_PATH_MAX], pred[KD_PATH_MAX];
    kd_train_opts to;
    kd_progressf(o->progress, o->progress_ctx, "  student (%s), labeled only: %ld steps", o->student_spec,
                 o->student_steps);
    kd_status s = recipe(o, "models", "student-baseline", o->student_spec, o->student_steps, o->student_lr,
                         o->seed, &to, data, out);
    if (!s) s = kd_train(x->dev, &to, NULL);
    /* what the baseline student reaches by itself on the unlabeled cases: the annotations
     * teach it something only where they are better than that */
    kd_segment_opts so;
    kd_segment_opts_default(&so);
    ensemble_recipe(o, &so.e);
    const char *one[1] = {ckpt};
    so.e.models = one;
    so.e.nmodels = 1;
    so.dataset = unl;
    so.out = pred;
    if (!s) s = kd_path_printf(ckpt, sizeof ckpt, "%s/best.kds", out);
    if (!s) s = kd_path_printf(unl, sizeof unl, "%s/data/unlabeled", o->out);
    if (!s) s = kd_path_printf(pred, sizeof pred, "%s/pred-unlabeled/student-baseline", o->out);
    if (!s) s = kd_segment(x->dev, &so);
    if (!s) s = score_unlabeled(o->out, "pred-unlabeled/student-baseline", r->baseline_unlabeled);
    if (s) return s;
    const double *a = r->annotations, *b = r->baseline_unlabeled;
    kd_progressf(o->progress, o->progress_ctx,
                 "  the baseline student on the same unlabeled cases: Dice WT %.3f, TC %.3f, ET %.3f "
                 "(mean %.3f): the annotations are %+.3f from it", b[0], b[1], b[2], b[3], a[3] - b[3]);
    kd_progressf(o->progress, o->progress_ctx,
                 "  student distilled offline (labeled + %d ensemble-annotated cases): %ld steps",
                 o->unlabeled, o->student_steps);
    if ((s = distill(x, "annotations", "student-distilled", o->min_agreement, r))) return s;
    kd_progressf(o->progress, o->progress_ctx,
                 "  oracle student (labeled + the same %d cases with their hidden true labels): %ld "
                 "steps", o->unlabeled, o->student_steps);
    if ((s = link_oracle(o->out)) || (s = distill(x, "oracle", "student-oracle", 0, r))) return s;
    if (o->online) {
        kd_progressf(o->progress, o->progress_ctx,
                     "  student distilled online (teachers run on each unlabeled patch): %ld steps",
                     o->student_steps);
        s = distill(x, NULL, "student-online", 0, r);
    }
    return s;
}

/* Every model on the test cases: the teachers and their ensemble from one set of passes
 * (each teacher's own map written beside the ensemble's), then each student. */
static kd_status test_cases(exp_state *x, kd_experiment_result *r) {
    const kd_experiment_opts *o = x->o;
    char test[KD_PATH_MAX], out[KD_PATH_MAX], members[KD_EXPERIMENT_MAX_TEACHERS][KD_PATH_MAX];
    const char *mp[KD_EXPERIMENT_MAX_TEACHERS];
    kd_segment_opts so;
    kd_segment_opts_default(&so);
    ensemble_recipe(o, &so.e);
    kd_status s = kd_path_printf(test, sizeof test, "%s/data/test", o->out);
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
    so.dataset = test;
    so.out = out;
    so.member_out = mp;
    if ((s = kd_segment(x->dev, &so))) return s;
    so.member_out = NULL;
    char ckpt[KD_PATH_MAX];
    const char *one[1] = {ckpt};
    for (int m = 0; m < r->nmodels && !s; m++) {
        char pred[KD_PATH_MAX];
        if (m > r->ensemble) {
            kd_progressf(o->progress, o->progress_ctx, "  %s", r->models[m].name);
            so.e.models = one;
            so.e.nmodels = 1;
            if ((s = kd_path_printf(ckpt, sizeof ckpt, "%s/models/%s/best.kds", o->out, r->models[m].name)) ||
                (s = kd_path_printf(out, sizeof out, "%s/pred/%s", o->out, r->models[m].name)) ||
                (s = kd_segment(x->dev, &so)))
                break;
        }
        if (!(s = kd_path_printf(pred, sizeof pred, "pred/%s", r->models[m].name)))
            s = evaluate_in(o->out, pred, "test", &r->models[m].eval);
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
    if (o->labeled - o->val_cases < 1 || o->unlabeled < 1 || o->test < 1)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: %d labeled cases (%d held out), %d unlabeled, %d "
                       "test: each set needs cases", o->labeled, o->val_cases, o->unlabeled, o->test);
    if (o->patch > o->size)
        return kd_fail(KD_ERR_INVALID_ARG, "experiment: the patch %d is larger than the volume %d",
                       o->patch, o->size);
    return KD_OK;
}

kd_status kd_experiment_run(kd_device *dev, const kd_experiment_opts *o, kd_experiment_result **out) {
    *out = NULL;
    kd_status s = check_opts(o);
    if (s) return s;
    kd_experiment_result *r = calloc(1, sizeof *r);
    if (!r) return kd_fail(KD_ERR_OUT_OF_MEMORY, "experiment");
    exp_state x = {o, dev, kd_now_s(), 0, 6, {{0}}, {0}};
    r->nteachers = o->nteachers;
    for (int t = 0; t < o->nteachers; t++) snprintf(r->models[t].name, 64, "%s", o->teacher_names[t]);
    static const char *const rest[] = {"ensemble", "student-baseline", "student-distilled", "student-oracle",
                                       "student-online"};
    r->nmodels = o->nteachers + (o->online ? 5 : 4);
    for (int k = 0; k < r->nmodels - o->nteachers; k++)
        snprintf(r->models[o->nteachers + k].name, 64, "%s", rest[k]);
    r->ensemble = o->nteachers, r->baseline = r->ensemble + 1, r->distilled = r->ensemble + 2;
    r->oracle = r->ensemble + 3, r->online = o->online ? r->ensemble + 4 : -1;
    for (int k = 0; k < 4; k++) r->annotations[k] = 0, r->baseline_unlabeled[k] = -1;
    kd_outdir *od = NULL;
    /* the experiment's own files in OUT are its alone; each stage locks its subfolder too */
    s = kd_outdir_open(o->out, "data/unlabeled-truth/KDPhantom_1000/KDPhantom_1000_flair.nii.gz", &od);
    if (!s) stage(&x, "generating the phantom cohort");
    if (!s) s = cohort(&x, "labeled", o->labeled, 0, 0);
    if (!s) s = cohort(&x, "unlabeled", o->unlabeled, 1000, 1);
    if (!s) s = cohort(&x, "test", o->test, 2000, 0);
    static const char *count[KD_EXPERIMENT_MAX_TEACHERS + 1] = {"no",   "one",  "two", "three",
                                                                "four", "five", "six"};
    char what[96];
    snprintf(what, sizeof what, "training %s %s on the labeled cases", count[o->nteachers],
             o->nteachers > 1 ? "heterogeneous teachers" : "teacher");
    if (!s) stage(&x, what);
    if (!s) s = train_teachers(&x);
    if (!s) stage(&x, "annotating the unlabeled cases with the teacher ensemble");
    if (!s) s = annotate(&x, r);
    if (!s) stage(&x, "training the student on labeled cases (baseline) and distilling it");
    if (!s) s = students(&x, r);
    if (!s) stage(&x, "segmenting and evaluating the test cases");
    if (!s) s = test_cases(&x, r);
    if (!s) stage(&x, "results");
    if (!s) s = kd_experiment_write(r, o->out);
    kd_outdir_close(od);
    r->seconds = kd_now_s() - x.t0;
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
