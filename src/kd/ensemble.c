/* Segmentation and annotation of cases with one model or an ensemble: the models'
 * checkpoints, windows of their training patch, a loop over cases writing label maps
 * (and for annotation, resumably, the teachers' agreement). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_internal.h"
#include "kdseg/domain.h"
#include "kdseg/plot.h"
#include "kdseg/recipe.h"

enum { MODE_SEGMENT, MODE_ANNOTATE };

/* What one run needs, from kd_segment_opts or kd_annotate_opts. */
typedef struct run_opts {
    const kd_ensemble_opts *e;
    int mode;
    const char *case_dir, *dataset, *out;
    const char *const *member_out; /* segment: one per model, or NULL */
    int probabilities;             /* segment */
    int soft, all;                 /* annotate */
} run_opts;

typedef struct run_state {
    const run_opts *r;
    kd_dataset *ds;
    kd_model *models[KD_ENSEMBLE_MAX];
    int nmodels;
    kd_infer_opts infer;  /* e->infer, with windows of the training patch by default */
    kd_postproc_options post;
    int brain_mask;       /* e->brain_mask, or the first model's recipe's */
    kd_domain domain[KD_ENSEMBLE_MAX]; /* what each model was trained on (cases 0: unknown) */
    int own;              /* labels in the dataset's own values (its label table) */
    kd_outdir *outdirs[1 + KD_ENSEMBLE_MAX]; /* out and each member_out, held */
    FILE *agree;          /* annotate, two or more teachers: agreement.csv */
} run_state;

void kd_ensemble_opts_default(kd_ensemble_opts *o) {
    memset(o, 0, sizeof *o);
    o->layout = KD_LAYOUT_AUTO;
    kd_infer_opts_default(&o->infer);
    kd_postproc_options_default(&o->post);
    o->post.labels = KD_LABELS_AUTO;
}

void kd_segment_opts_default(kd_segment_opts *o) {
    memset(o, 0, sizeof *o);
    kd_ensemble_opts_default(&o->e);
}

void kd_annotate_opts_default(kd_annotate_opts *o) {
    memset(o, 0, sizeof *o);
    kd_ensemble_opts_default(&o->e);
}

/* failed: an output folder the run created and wrote nothing into is removed */
static void state_free(run_state *st, int failed) {
    for (int i = 0; i < st->nmodels; i++) kd_model_free(st->models[i]);
    kd_dataset_free(st->ds);
    if (st->agree) fclose(st->agree);
    for (int i = 0; i <= KD_ENSEMBLE_MAX; i++) {
        if (failed) kd_outdir_discard(st->outdirs[i]);
        else kd_outdir_close(st->outdirs[i]);
    }
}

static int nmember(const run_opts *r) { return r->member_out ? r->e->nmodels : 0; }

/* The post-processing of the model's recipe (recorded in its checkpoint; none recorded:
 * the options as given), where the caller did not choose. */
static void post_from_recipe(const kd_ensemble_opts *e, const kd_ckpt_meta *meta, run_state *st) {
    if (!meta->recipe[0]) return;
    const kd_recipe *rc = kd_recipe_find(meta->recipe);
    if (!rc) {
        kd_log(KD_LOG_WARN, "%s: recipe '%s' is unknown to this version; post-processing as given",
               e->models[0], meta->recipe);
        return;
    }
    if (!(e->post_given & KD_POST_GIVEN_BRAIN_MASK)) st->brain_mask = rc->brain_mask;
    if (!(e->post_given & KD_POST_GIVEN_LARGEST)) st->post.largest_only = rc->largest_only;
    if (!(e->post_given & KD_POST_GIVEN_MIN_COMPONENT)) st->post.min_component_fraction = rc->min_component;
    if (!(e->post_given & KD_POST_GIVEN_ET_MIN)) st->post.et_min_voxels = rc->et_min_voxels;
}

/* One warning line per model when case c is far from what the model was trained on. */
static kd_status domain_check(const run_state *st, const kd_case *c) {
    kd_domain cd;
    kd_status s = kd_case_domain(st->ds, c, &cd);
    for (int m = 0; m < st->nmodels && !s; m++) {
        char why[768];
        const kd_domain *md = &st->domain[m];
        if (kd_domain_compare(md, &cd, why, sizeof why))
            kd_log(KD_LOG_WARN, "%s is far from what %s was trained on (%s %s, %d case%s): %s", c->name,
                   st->r->e->models[m], md->kind, md->modalities, md->cases, md->cases == 1 ? "" : "s", why);
    }
    return s;
}

/* The data, the output folders, the models (and their training patch). */
static kd_status state_open(kd_device *dev, const run_opts *r, run_state *st) {
    const kd_ensemble_opts *e = r->e;
    memset(st, 0, sizeof *st);
    st->r = r;
    if (e->nmodels < 1 || e->nmodels > KD_ENSEMBLE_MAX)
        return kd_fail(KD_ERR_INVALID_ARG, "%d models: give 1 to %d", e->nmodels, KD_ENSEMBLE_MAX);
    if (!r->out || !r->case_dir == !r->dataset)
        return kd_fail(KD_ERR_INVALID_ARG, "an output folder and one of a case or a dataset are needed");
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.layout = e->layout;
    o.modalities = e->modalities;
    o.channels = e->channels;
    kd_status s = r->case_dir ? kd_dataset_open_case(r->case_dir, &o, &st->ds)
                              : kd_dataset_open(r->dataset, &o, &st->ds);
    if (s) return s;
    /* one writer per output folder, taken before any work; the longest name written in
     * it: the longest case's probabilities */
    char longest[300] = "";
    for (int i = 0; i < kd_dataset_count(st->ds); i++)
        if (strlen(kd_dataset_case_name(st->ds, i)) + 13 > strlen(longest))
            snprintf(longest, sizeof longest, "%s_prob.nii.gz", kd_dataset_case_name(st->ds, i));
    /* a job's rank 0 holds the folders for all its ranks (which write other cases) */
    for (int i = -1; i < nmember(r) && !s && kd_dist_rank(e->dist) == 0; i++)
        s = kd_outdir_open(i < 0 ? r->out : r->member_out[i], longest, &st->outdirs[i + 1]);
    if (s) return s;
    st->infer = e->infer;
    st->post = e->post;
    st->brain_mask = e->brain_mask;
    int patch[3] = {0, 0, 0}, all_have_patch = 1;
    for (int i = 0; i < e->nmodels; i++) {
        kd_ckpt_meta meta;
        if ((s = kd_checkpoint_load(e->models[i], dev, &st->models[i], NULL, NULL, &meta))) return s;
        st->nmodels++;
        st->domain[i] = meta.domain;
        if (i == 0) post_from_recipe(e, &meta, st);
        /* the training patch: GroupNorm/InstanceNorm statistics over a whole volume differ
         * from those over the patches the model learnt on (the demo's GroupNorm students
         * lost 0.14 mean Dice to it), so windows of the training patch are the default */
        if (meta.patch[0] > 0 && meta.patch[1] > 0 && meta.patch[2] > 0) {
            for (int k = 0; k < 3; k++)
                if (meta.patch[k] > patch[k]) patch[k] = meta.patch[k];
        } else {
            all_have_patch = 0;
        }
        if (kd_model_in_channels(st->models[i]) != kd_dataset_channels(st->ds))
            return kd_fail(KD_ERR_SHAPE, "%s takes %d channels but the data has %d (modalities)",
                           e->models[i], kd_model_in_channels(st->models[i]),
                           kd_dataset_channels(st->ds));
    }
    int tiled = e->infer.force_tiles || e->infer.tile[0] || e->infer.tile[1] || e->infer.tile[2];
    if (!tiled && !e->whole && all_have_patch) {
        /* several models: the largest training patch per axis */
        memcpy(st->infer.tile, patch, sizeof patch);
        st->infer.force_tiles = 1;
        kd_log(KD_LOG_INFO, "sliding windows of the training patch %dx%dx%d (whole volume: one pass)",
               patch[0], patch[1], patch[2]);
    }
    if (st->post.labels == KD_LABELS_AUTO) {
        kd_layout lay = kd_dataset_layout(st->ds);
        /* the dataset's own values: annotations, which are read back as the dataset's
         * labels, and an nnU-Net dataset's predictions, as nnU-Net writes them (its
         * dataset.json's values); else BraTS maps. Made in 2019 values, then translated. */
        st->own = r->mode == MODE_ANNOTATE || lay == KD_LAYOUT_NNUNET;
        st->post.labels = !st->own && lay == KD_LAYOUT_BRATS2023 ? KD_LABELS_2023 : KD_LABELS_2019;
    }
    return KD_OK;
}

/* One agreement.csv row: the mean pairwise Dice between the teachers per region. The row
 * goes to disk before the output is renamed into place: a run killed in between leaves a
 * row without an output, which the next run drops. */
static kd_status agreement_row(run_state *st, const char *name, const float *one, size_t nv) {
    double dsum[3] = {0, 0, 0};
    int pairs = 0, n = st->nmodels;
    for (int x = 0; x < n; x++)
        for (int y = x + 1; y < n; y++, pairs++)
            for (int g = 0; g < 3; g++)
                dsum[g] += kd_dice_threshold(one + ((size_t)x * 3 + g) * nv, one + ((size_t)y * 3 + g) * nv,
                                             nv, 0.5f);
    if (fprintf(st->agree, "%s,%.4f,%.4f,%.4f,%.4f\n", name, dsum[0] / pairs, dsum[1] / pairs,
                dsum[2] / pairs, (dsum[0] + dsum[1] + dsum[2]) / (3.0 * pairs)) < 0 ||
        fflush(st->agree) != 0)
        return kd_fail(KD_ERR_IO, "%s/agreement.csv: write failed: %s", st->r->out, strerror(errno));
    return KD_OK;
}

/* The region probabilities of case c on its original grid into p (3, D, H, W), averaged
 * over the models; with `one` (models x 3 x nv) each model's own too, from one upload of
 * the case and one set of windows for all the models. */
static kd_status infer_case(run_state *st, const kd_case *c, float *p, float *one, kd_infer_stats *is) {
    size_t nv = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    memset(is, 0, sizeof *is);
    if (!one) return kd_segment_case(st->models, st->nmodels, c, &st->infer, p, is);
    kd_status s = kd_segment_case_members(st->models, st->nmodels, c, &st->infer, one, is);
    for (size_t k = 0; k < 3 * nv && !s; k++) {
        double acc = 0;
        for (int m = 0; m < st->nmodels; m++) acc += one[(size_t)m * 3 * nv + k];
        p[k] = (float)(acc / st->nmodels);
    }
    return s;
}

/* The outputs of one case beside the label map: member maps, probabilities, PNG. */
static kd_status extras(run_state *st, const char *name, const kd_case *c, const float *p,
                        const float *one, uint8_t *lab) {
    const run_opts *r = st->r;
    char path[KD_PATH_MAX];
    kd_status s = KD_OK;
    size_t nv = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    for (int m = 0; m < nmember(r) && !s; m++)
        if (!(s = kd_path_printf(path, sizeof path, "%s/%s.nii.gz", r->member_out[m], name)) &&
            !(s = kd_postproc_labels(one + (size_t)m * 3 * nv, KD_PROB_CDHW, c->orig[0], c->orig[1],
                                     c->orig[2], &st->post, lab))) {
            if (st->own) kd_label_table_from_2019(kd_dataset_label_table(st->ds), lab, nv);
            s = kd_case_write_labels(c, path, lab);
        }
    if (!s && r->probabilities && r->mode == MODE_SEGMENT &&
        !(s = kd_path_printf(path, sizeof path, "%s/%s_prob.nii.gz", r->out, name)))
        s = kd_case_write_probs(c, path, p, r->probabilities == 1);
    if (!s && r->e->png) {
        size_t pv = (size_t)c->d * c->h * c->w;
        float *pp = malloc(3 * pv * sizeof(float));
        if (!pp) return kd_fail(KD_ERR_OUT_OF_MEMORY, "png of %s", name);
        kd_case_crop(c, p, 3, pp);
        for (size_t k = 0; k < 3 * pv; k++) pp[k] = pp[k] > st->post.threshold ? 1.0f : 0.0f;
        s = kd_path_printf(path, sizeof path, "%s/%s.png", r->out, name);
        if (!s) {
            kd_overlay_info info;
            kd_overlay_info_for_case(&info, st->ds, c, "prediction");
            s = kd_plot_overlay_write(path, c->image, c->channels, c->d, c->h, c->w, pp, &info);
        }
        free(pp);
    }
    return s;
}

static kd_status one_case(run_state *st, int i, kd_annotate_report *rep) {
    const run_opts *r = st->r;
    const kd_ensemble_opts *e = r->e;
    const char *name = kd_dataset_case_name(st->ds, i);
    char out[KD_PATH_MAX];
    kd_status s = kd_path_printf(out, sizeof out, "%s/%s.nii.gz", r->out, name);
    if (s) return s;
    if (r->mode == MODE_ANNOTATE && kd_exists(out)) {
        kd_progressf(e->progress, e->progress_ctx, "  %s: already annotated, skipped", name);
        rep->skipped++;
        return KD_OK;
    }
    double t0 = kd_now_s();
    kd_case *c = NULL;
    if ((s = kd_case_load(st->ds, i, &c))) return s;
    size_t nv = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    uint8_t *mask = NULL;
    if ((s = domain_check(st, c))) {
        kd_case_free(c);
        return s;
    }
    if (st->brain_mask) {
        if (!(mask = malloc(nv))) {
            kd_case_free(c);
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: brain mask", name);
        }
        kd_case_brain_mask(c, mask);
    }
    st->post.brain_mask = mask;
    /* each model separately: the teachers' agreement marks untrustworthy pseudo-labels;
     * member outputs are each model's own label map */
    int separately = (r->mode == MODE_ANNOTATE || nmember(r)) && st->nmodels > 1;
    int soft = r->mode == MODE_ANNOTATE && r->soft;
    /* only the label map wanted: thresholded on the device, only labels downloaded (MSD
     * labels come from kd_postproc_labels on the host) */
    int labels_only = !separately && !soft && !nmember(r) && !(r->mode == MODE_SEGMENT && r->probabilities) &&
                      !e->png && st->post.labels != KD_LABELS_MSD;
    float *p = labels_only ? NULL : calloc(3 * nv, sizeof(float)), *one = NULL;
    uint8_t *lab = malloc(nv);
    if (separately) one = malloc((size_t)st->nmodels * 3 * nv * sizeof(float));
    kd_infer_stats is = {0};
    if ((!labels_only && !p) || !lab || (separately && !one)) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s", name);
    if (!s && labels_only) s = kd_segment_case_labels(st->models, st->nmodels, c, &st->infer, &st->post, lab, &is);
    else if (!s) s = infer_case(st, c, p, one, &is);
    if (!s && !one) one = p; /* a single model is its own member */
    if (!s && st->agree && separately) s = agreement_row(st, name, one, nv);
    if (!s && soft) s = kd_case_write_probs(c, out, p, 1);
    else if (!s && (labels_only || !(s = kd_postproc_labels(p, KD_PROB_CDHW, c->orig[0], c->orig[1],
                                                            c->orig[2], &st->post, lab)))) {
        if (st->own) kd_label_table_from_2019(kd_dataset_label_table(st->ds), lab, nv);
        s = kd_case_write_labels(c, out, lab);
    }
    if (!s) s = extras(st, name, c, p, one, lab);
    if (!s) {
        rep->annotated++;
        kd_progressf(e->progress, e->progress_ctx,
                     "  %s: %dx%dx%d, %s, %d passes, %.2f s, peak device memory %.1f MiB", name,
                     c->orig[0], c->orig[1], c->orig[2], is.windows > 1 ? "sliding windows" : "whole volume",
                     is.passes, kd_now_s() - t0, is.peak_device / 1048576.0);
    }
    if (one != p) free(one);
    free(p);
    free(lab);
    st->post.brain_mask = NULL;
    free(mask);
    kd_case_free(c);
    /* (kd_segment_case names the case itself) */
    return s && strncmp(kd_last_error(), "case ", 5) ? kd_fail_context(s, "case %s", name) : s;
}

/* Rewrites OUT/agreement.csv (temp file + rename) keeping one row per case whose output
 * exists: a killed run may have left a partial last row, or a row of a case whose output
 * was never renamed into place; a case whose output was removed is redone. The last row
 * of a case wins. A missing file is created with its header the same way, so a run killed
 * before its first row never leaves an empty or header-less file. */
/* Rows of one agreement file whose case output exists, appended to *rows. */
static kd_status agreement_read(const char *out, const char *path, char ***rows, int *n, int *cap) {
    FILE *f = fopen(path, "r");
    char line[1024], file[KD_PATH_MAX];
    kd_status s = KD_OK;
    while (f && !s && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        char *comma = strchr(line, ',');
        if (!len || line[len - 1] != '\n' || !comma || !strncmp(line, "case,", 5)) continue;
        if (kd_path_printf(file, sizeof file, "%s/%.*s.nii.gz", out, (int)(comma - line), line) ||
            !kd_exists(file))
            continue;
        if (*n == *cap) {
            char **q = realloc(*rows, (size_t)(*cap = *cap ? 2 * *cap : 64) * sizeof **rows);
            if (!q) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
            else *rows = q;
        }
        if (!s && !((*rows)[(*n)++] = strdup(line))) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
    }
    if (f) fclose(f);
    return s;
}

/* A job's ranks each append their rows to OUT/agreement.csv.rank-R (R < 4096); rank 0
 * merges them into agreement.csv at the start (a killed job's rows) and at the end. */
#define AGREE_PART "agreement.csv.rank-%d"
#define AGREE_PARTS_MAX 4096

/* Position of row's case in ds (rows of cases not in ds last). */
static int case_order(const kd_dataset *ds, const char *row) {
    size_t key = strcspn(row, ",");
    for (int i = 0; ds && i < kd_dataset_count(ds); i++) {
        const char *name = kd_dataset_case_name(ds, i);
        if (strlen(name) == key && !strncmp(name, row, key)) return i;
    }
    return ds ? kd_dataset_count(ds) : 0;
}

static kd_status agreement_clean_rows(const char *out, const char *path, const kd_dataset *ds, int merge);

static kd_status agreement_clean(const char *out, const char *path) {
    return agreement_clean_rows(out, path, NULL, 0);
}

/* The same, with merge: the rank files' rows too (then removed), every row in ds's case
 * order, so that a job of any number of ranks writes the file one process writes. */
static kd_status agreement_clean_rows(const char *out, const char *path, const kd_dataset *ds, int merge) {
    char **rows = NULL, tmp[KD_PATH_MAX], part[KD_PATH_MAX];
    int n = 0, cap = 0;
    kd_status s = agreement_read(out, path, &rows, &n, &cap);
    for (int r = 0; merge && r < AGREE_PARTS_MAX && !s; r++) {
        char name[64];
        snprintf(name, sizeof name, AGREE_PART, r);
        if (!(s = kd_path_join(part, sizeof part, out, name)) && kd_exists(part))
            s = agreement_read(out, part, &rows, &n, &cap);
    }
    if (merge && !s) /* stable: a case's later rows stay later */
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && case_order(ds, rows[j - 1]) > case_order(ds, rows[j]); j--) {
                char *t = rows[j];
                rows[j] = rows[j - 1];
                rows[j - 1] = t;
            }
    if (!s) s = kd_tmp_name(path, tmp, sizeof tmp);
    FILE *g = s ? NULL : fopen(kd_output_target(tmp), "w");
    if (!s && !g) s = kd_fail(KD_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    if (g) {
        int ok = fputs("case,dice_wt,dice_tc,dice_et,mean\n", g) >= 0;
        for (int i = 0; i < n && ok; i++) {
            size_t key = strcspn(rows[i], ",") + 1;
            int later = 0;
            for (int j = i + 1; j < n && !later; j++) later = !strncmp(rows[i], rows[j], key);
            if (!later) ok = fputs(rows[i], g) >= 0;
        }
        ok = fclose(g) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            s = kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            remove(tmp);
        }
    }
    /* the rank files' rows are in agreement.csv now */
    for (int r = 0; merge && r < AGREE_PARTS_MAX && !s; r++) {
        char name[64];
        snprintf(name, sizeof name, AGREE_PART, r);
        if (!kd_path_join(part, sizeof part, out, name) && kd_exists(part) && remove(part) != 0)
            s = kd_fail(KD_ERR_IO, "%s: cannot remove: %s", part, strerror(errno));
    }
    for (int i = 0; i < n; i++) free(rows[i]);
    free(rows);
    return s;
}

static kd_status agreement_open(run_state *st) {
    char path[KD_PATH_MAX];
    kd_dist *d = st->r->e->dist;
    int ranks = kd_dist_size(d);
    kd_status s = kd_path_join(path, sizeof path, st->r->out, "agreement.csv");
    if (ranks == 1) {
        if (!s) s = agreement_clean(st->r->out, path);
    } else {
        /* rank 0 gathers a killed job's rows; then each rank its own file */
        if (!s && kd_dist_rank(d) == 0) s = agreement_clean_rows(st->r->out, path, st->ds, 1);
        s = kd_dist_agree(d, s);
        char name[64];
        snprintf(name, sizeof name, AGREE_PART, kd_dist_rank(d));
        if (!s) s = kd_path_join(path, sizeof path, st->r->out, name);
    }
    if (s) return s;
    st->agree = fopen(kd_output_target(path), "a");
    if (!st->agree) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return KD_OK;
}

/* The end of a job's run: every rank done, rank 0 gathers the agreement rows, and the
 * report counts every rank's cases. */
static kd_status gather(run_state *st, kd_status s, kd_annotate_report *rep) {
    kd_dist *d = st->r->e->dist;
    if (kd_dist_size(d) == 1) return s;
    if (st->agree) {
        if (fclose(st->agree) != 0 && !s) s = kd_fail(KD_ERR_IO, "%s: agreement rows: %s", st->r->out, strerror(errno));
        st->agree = NULL;
        if (!(s = kd_dist_agree(d, s)) && kd_dist_rank(d) == 0) {
            char path[KD_PATH_MAX];
            s = kd_path_join(path, sizeof path, st->r->out, "agreement.csv");
            if (!s) s = agreement_clean_rows(st->r->out, path, st->ds, 1);
        }
    }
    s = kd_dist_agree(d, s);
    float counts[2] = {(float)rep->annotated, (float)rep->skipped};
    if (!s) s = kd_dist_allreduce_sum(d, counts, 2, "counting the ranks' cases");
    if (!s) {
        rep->annotated = (int)counts[0];
        rep->skipped = (int)counts[1];
    }
    return s;
}

/* Case i is to be done, and by this rank. */
static int wanted(const run_state *st, int i) {
    return (st->r->mode != MODE_ANNOTATE || st->r->all || !kd_dataset_case_labeled(st->ds, i)) &&
           kd_dist_mine(st->r->e->dist, i);
}

static kd_status run(kd_device *dev, const run_opts *r, kd_annotate_report *rep) {
    const kd_ensemble_opts *e = r->e;
    kd_annotate_report none;
    if (!rep) rep = &none;
    memset(rep, 0, sizeof *rep);
    run_state st;
    kd_status s = state_open(dev, r, &st);
    s = kd_dist_agree(e->dist, s); /* every rank ready; rank 0 holds OUT */
    if (!s && r->mode == MODE_ANNOTATE && st.nmodels > 1) s = agreement_open(&st);
    int n = s ? 0 : kd_dataset_count(st.ds), todo = 0, k = 0, total = 0;
    for (int i = 0; i < n; i++) todo += wanted(&st, i);
    /* the job's cases: this rank's (todo) and every rank's (total) */
    float count = (float)todo;
    if (!s) s = kd_dist_allreduce_sum(e->dist, &count, 1, "counting the job's cases");
    total = (int)count;
    if (!s && r->mode == MODE_ANNOTATE && !total)
        kd_log(KD_LOG_WARN, "%s: no unlabeled case to annotate (%d case%s, all labeled); --all annotates "
               "labeled cases too", r->dataset, n, n == 1 ? "" : "s");
    if (!s)
        kd_progressf(e->progress, e->progress_ctx, "%s %d case%s with %d model%s on %s",
                     r->mode == MODE_ANNOTATE ? "annotating" : "segmenting", todo, todo == 1 ? "" : "s",
                     st.nmodels, st.nmodels == 1 ? "" : "s", kd_device_name(dev));
    double t0 = kd_now_s();
    char eta[32] = "?";
    for (int i = 0; i < n && !s; i++) {
        if (!wanted(&st, i)) continue;
        if (e->stop && *e->stop) {
            s = kd_fail(KD_ERR_INTERRUPTED, "stopped after %d of %d cases", k, todo);
            break;
        }
        k++;
        if (e->progress && kd_log_is_tty())
            fprintf(stderr, "[%d/%d%s%s] ", k, todo, k > 1 ? ", ETA " : "", k > 1 ? eta : "");
        s = one_case(&st, i, rep);
        double per = (kd_now_s() - t0) / k;
        kd_format_duration(per * (todo - k), eta, sizeof eta);
        if (!s && e->progress && !kd_log_is_tty() && k < todo)
            kd_log_progress("%d/%d cases, %.1f s per case, ETA %s", k, todo, per, eta);
    }
    s = gather(&st, s, rep);
    state_free(&st, s != KD_OK || !total); /* nothing done: no folder left behind */
    return s;
}

kd_status kd_segment(kd_device *dev, const kd_segment_opts *o) {
    run_opts r = {&o->e, MODE_SEGMENT, o->case_dir, o->dataset, o->out, o->member_out, o->probabilities, 0, 0};
    return run(dev, &r, NULL);
}

kd_status kd_annotate(kd_device *dev, const kd_annotate_opts *o, kd_annotate_report *rep) {
    run_opts r = {&o->e, MODE_ANNOTATE, NULL, o->dataset, o->out, NULL, 0, o->soft, o->all};
    return run(dev, &r, rep);
}
