/* The experiment's statistics and outputs: mean Dice, paired per-case differences, the
 * result tables, the per-case Dice box plot and an example slice of every model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_internal.h"
#include "kdseg/plot.h"

double kd_eval_mean_dice(const kd_eval_result *r, int region) {
    if (region == 3)
        return (kd_eval_mean_dice(r, 0) + kd_eval_mean_dice(r, 1) + kd_eval_mean_dice(r, 2)) / 3;
    double s = 0;
    for (int i = 0; i < r->n_cases; i++) s += r->cases[i].region[region].dice;
    return r->n_cases ? s / r->n_cases : 0;
}

static double case_mean3(const kd_eval_case *c) {
    return (c->region[0].dice + c->region[1].dice + c->region[2].dice) / 3;
}

/* The two models see the same cases, so this is far less noisy than comparing the two
 * table means (whose spread is mostly between cases). */
kd_paired kd_eval_paired(const kd_eval_result *a, const kd_eval_result *b) {
    kd_paired p = {0, 0, 0, 0};
    double s = 0, s2 = 0;
    for (int i = 0; i < a->n_cases; i++)
        for (int j = 0; j < b->n_cases; j++) {
            if (strcmp(a->cases[i].name, b->cases[j].name)) continue;
            double d = case_mean3(&a->cases[i]) - case_mean3(&b->cases[j]);
            s += d;
            s2 += d * d;
            p.wins += d > 0;
            p.n++;
            break;
        }
    if (p.n) p.mean = s / p.n;
    if (p.n > 1) p.se = sqrt(fmax(0, (s2 - p.n * p.mean * p.mean) / (p.n - 1)) / p.n);
    return p;
}

kd_status kd_exp_mean_eval(const kd_eval_result *const *ev, int n, kd_eval_result **out) {
    *out = NULL;
    if (n < 1) return kd_fail(KD_ERR_INVALID_ARG, "mean of evaluations: none given");
    int nc = ev[0]->n_cases;
    for (int k = 1; k < n; k++) {
        int same = ev[k]->n_cases == nc;
        for (int i = 0; same && i < nc; i++) same = !strcmp(ev[k]->cases[i].name, ev[0]->cases[i].name);
        if (!same) return kd_fail(KD_ERR_INVALID_ARG, "mean of evaluations: run %d scored other cases", k + 1);
    }
    kd_eval_result *r = calloc(1, sizeof *r);
    if (r) r->cases = calloc((size_t)(nc ? nc : 1), sizeof *r->cases);
    if (!r || !r->cases) {
        free(r);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "mean of evaluations");
    }
    for (int i = 0; i < nc; i++, r->n_cases++) {
        kd_eval_case *c = &r->cases[i];
        if (!(c->name = strdup(ev[0]->cases[i].name))) {
            kd_eval_result_free(r);
            return kd_fail(KD_ERR_OUT_OF_MEMORY, "mean of evaluations");
        }
        c->status = KD_EVAL_OK;
        for (int g = 0; g < KD_REGION_COUNT; g++) {
            kd_metrics *m = &c->region[g];
            double tp = 0, fp = 0, fn = 0, tn = 0, vp = 0, vr = 0;
            for (int k = 0; k < n; k++) {
                const kd_metrics *e = &ev[k]->cases[i].region[g];
                m->dice += e->dice / n, m->hd95 += e->hd95 / n;
                m->sensitivity += e->sensitivity / n, m->specificity += e->specificity / n;
                m->vol_pred_mm3 += e->vol_pred_mm3 / n, m->vol_ref_mm3 += e->vol_ref_mm3 / n;
                tp += (double)e->tp / n, fp += (double)e->fp / n, fn += (double)e->fn / n;
                tn += (double)e->tn / n, vp += (double)e->vol_pred / n, vr += (double)e->vol_ref / n;
            }
            m->tp = llround(tp), m->fp = llround(fp), m->fn = llround(fn), m->tn = llround(tn);
            m->vol_pred = llround(vp), m->vol_ref = llround(vr);
        }
    }
    *out = r;
    return KD_OK;
}

/* "mean ± std" of a region's Dice or HD95 over the cases. */
static void summary_cell(char *buf, size_t n, const kd_eval_result *ev, int region, int hd) {
    double *x = malloc((size_t)(ev->n_cases ? ev->n_cases : 1) * sizeof *x);
    kd_summary s = {0};
    if (x) {
        for (int i = 0; i < ev->n_cases; i++)
            x[i] = hd ? ev->cases[i].region[region].hd95 : ev->cases[i].region[region].dice;
        kd_summary_compute(x, (size_t)ev->n_cases, &s);
        free(x);
    }
    if (hd) snprintf(buf, n, "%.2f ± %.2f", s.mean, s.std);
    else snprintf(buf, n, "%.3f ± %.3f", s.mean, s.std);
}

/* Writes text through a temporary file renamed into OUT/NAME. */
typedef kd_status (*writer_fn)(FILE *f, const kd_experiment_result *r);

static kd_status write_file(const char *out, const char *name, writer_fn fn, const kd_experiment_result *r) {
    char path[KD_PATH_MAX];
    kd_atomic_file a;
    kd_status s = kd_path_join(path, sizeof path, out, name);
    if (!s) s = kd_atomic_open(&a, path, "w");
    return s ? s : kd_atomic_close(&a, fn(a.f, r));
}

static kd_status markdown(FILE *f, const kd_experiment_result *r) {
    fprintf(f, "| model | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET |\n"
               "| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int m = 0; m < r->nmodels; m++) {
        fprintf(f, "| %s", r->models[m].name);
        for (int hd = 0; hd < 2; hd++)
            for (int g = 0; g < 3; g++) {
                char cell[64];
                summary_cell(cell, sizeof cell, r->models[m].eval, g, hd);
                fprintf(f, " | %s", cell);
            }
        fprintf(f, " |\n");
    }
    return ferror(f) ? kd_fail(KD_ERR_IO, "results.md: write failed") : KD_OK;
}

static kd_status csv(FILE *f, const kd_experiment_result *r) {
    fprintf(f, "model,case,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et\n");
    for (int m = 0; m < r->nmodels; m++)
        for (int i = 0; i < r->models[m].eval->n_cases; i++) {
            const kd_eval_case *c = &r->models[m].eval->cases[i];
            fprintf(f, "%s,%s,%.4f,%.4f,%.4f,%.3f,%.3f,%.3f\n", r->models[m].name, c->name,
                    c->region[0].dice, c->region[1].dice, c->region[2].dice, c->region[0].hd95,
                    c->region[1].hd95, c->region[2].hd95);
        }
    return ferror(f) ? kd_fail(KD_ERR_IO, "results.csv: write failed") : KD_OK;
}

static kd_status boxplot(const char *out, const kd_experiment_result *r) {
    static const char *groups[3] = {"WT", "TC", "ET"};
    enum { M = KD_EXPERIMENT_MAX_TEACHERS + 5 };
    const char *names[M];
    const double *vals[3 * M];
    int counts[3 * M], shown[M], n = 0, nc = r->models[0].eval->n_cases;
    double *store = malloc(sizeof(double) * 3 * M * (size_t)(nc + 1));
    if (!store) return kd_fail(KD_ERR_OUT_OF_MEMORY, "box plot");
    for (int m = 0; m < r->nmodels && n < M; m++) /* a student's runs: their mean stands for them */
        if (r->models[m].run <= 0) shown[n] = m, names[n++] = r->models[m].name;
    for (int g = 0; g < 3; g++)
        for (int m = 0; m < n; m++) {
            const kd_eval_result *ev = r->models[shown[m]].eval;
            double *v = store + (size_t)(g * n + m) * (nc + 1);
            for (int i = 0; i < ev->n_cases && i <= nc; i++) v[i] = ev->cases[i].region[g].dice;
            vals[g * n + m] = v;
            counts[g * n + m] = ev->n_cases <= nc + 1 ? ev->n_cases : nc + 1;
        }
    kd_canvas c;
    kd_status s = kd_canvas_create(960, 420, &c);
    if (!s) {
        kd_plot_boxes_labeled(&c, 0, 0, 960, 420, "per-case dice on the test cases", "dice", groups, 3,
                              names, n, vals, counts, 0.0, 1.0);
        char path[KD_PATH_MAX];
        s = kd_path_join(path, sizeof path, out, "dice_boxplot.png");
        if (!s) s = kd_canvas_write(&c, path);
    }
    kd_canvas_free(&c);
    free(store);
    return s;
}

/* One test case, axial slice through the reference tumour: FLAIR (else the first
 * modality) with each model's labels in the overlay colours (legend below), reference
 * first. */
static kd_status example(const char *out, const kd_experiment_result *r, const char *test,
                         const char *modalities) {
    enum { M = KD_EXPERIMENT_MAX_TEACHERS + 5 };
    kd_dataset *ds = NULL;
    kd_dataset_opts dopts;
    memset(&dopts, 0, sizeof dopts);
    dopts.modalities = modalities;
    kd_status s = kd_dataset_open(test, &dopts, &ds);
    if (s) return s;
    const char *name = kd_dataset_case_name(ds, 0);
    int vol, n = 0, chan = 0, shown[M];
    for (int m = 0; m < r->nmodels && n < M; m++) /* of a student's runs, the first */
        if (r->models[m].run == 0 || r->models[m].run == 1) shown[n++] = m;
    for (int k = 0; k < kd_dataset_channels(ds); k++)
        if (!strcmp(kd_modality_name(kd_dataset_modality(ds, k)), "flair")) chan = k;
    const char *flair = kd_dataset_case_image(ds, 0, chan, &vol);
    kd_volume *img = NULL;
    kd_label_map *ref = NULL, *pred[M] = {0};
    kd_canvas c = {0};
    if ((s = kd_nifti_read(flair, &img)) || (s = kd_label_map_read(kd_dataset_case_label(ds, 0), &ref)))
        goto done;
    int D = ref->d, H = ref->h, W = ref->w;
    for (int m = 0; m < n; m++) {
        char p[KD_PATH_MAX];
        if ((s = kd_path_printf(p, sizeof p, "%s/pred/%s/%s.nii.gz", out, r->models[shown[m]].name, name)) ||
            (s = kd_label_map_read(p, &pred[m])))
            goto done;
    }
    /* slice with the most tumour */
    int zbest = D / 2;
    long best = -1;
    for (int z = 0; z < D; z++) {
        long cnt = 0;
        for (int k = 0; k < H * W; k++) cnt += ref->labels[(size_t)z * H * W + k] > 0;
        if (cnt > best) best = cnt, zbest = z;
    }
    if (vol < 0 || vol >= img->nt) vol = 0;
    const float *slice = img->data + ((size_t)vol * D + zbest) * H * W;
    float mx = 1e-6f;
    for (int k = 0; k < H * W; k++) mx = fmaxf(mx, slice[k]);
    int scale = W > 120 ? 1 : 3, cw = W * scale + 8, ch = H * scale + 24, top = 24, bottom = 40;
    if ((s = kd_canvas_create(cw * (n + 1), top + ch + bottom, &c))) goto done;
    char title[512];
    snprintf(title, sizeof title, "test case %s, %s, axial slice %d/%d (the most tumour)", name,
             kd_modality_name(kd_dataset_modality(ds, chan)), zbest + 1, D);
    kd_canvas_text(&c, 4, 6, title, 0x000000, 2);
    kd_plot_region_legend(&c, 4, top + ch + 6, 1);
    for (int m = -1; m < n; m++) {
        const uint8_t *lab = (m < 0 ? ref : pred[m])->labels + (size_t)zbest * H * W;
        int x0 = (m + 1) * cw + 4;
        kd_canvas_text(&c, x0, top + 4, m < 0 ? "reference" : r->models[shown[m]].name, 0x000000, 1);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float g = slice[(size_t)y * W + x] / mx;
                int v = (int)(255 * (g < 0 ? 0 : g > 1 ? 1 : g));
                uint32_t col = (uint32_t)(v << 16 | v << 8 | v);
                uint8_t l = lab[(size_t)y * W + x];
                if (l == 2) col = KD_OVERLAY_WT;
                else if (l == 1) col = KD_OVERLAY_TC;
                else if (l == 4 || l == 3) col = KD_OVERLAY_ET;
                /* image rows top to bottom: flip H so anterior is up */
                int py = top + 20 + (H - 1 - y) * scale;
                kd_canvas_rect(&c, x0 + x * scale, py, x0 + x * scale + scale - 1, py + scale - 1, col, 1);
            }
    }
    char p[KD_PATH_MAX];
    if (!(s = kd_path_join(p, sizeof p, out, "example.png"))) s = kd_canvas_write(&c, p);
done:
    kd_canvas_free(&c);
    for (int m = 0; m < n; m++) kd_label_map_free(pred[m]);
    kd_label_map_free(ref);
    kd_volume_free(img);
    kd_dataset_free(ds);
    return s;
}

kd_status kd_experiment_write(const kd_experiment_result *r, const char *out, const char *test,
                              const char *modalities) {
    kd_status s = write_file(out, "results.md", markdown, r);
    if (!s) s = write_file(out, "results.csv", csv, r);
    if (!s) s = boxplot(out, r);
    if (!s) s = example(out, r, test, modalities);
    return s;
}

void kd_experiment_print(const kd_experiment_result *r, FILE *f) {
    fprintf(f, "\n%-22s %-14s %-14s %-14s %-14s %-14s %-14s\n", "model", "Dice WT", "Dice TC", "Dice ET",
            "HD95 WT", "HD95 TC", "HD95 ET");
    for (int m = 0; m < r->nmodels; m++) {
        fprintf(f, "%-22s", r->models[m].name);
        for (int hd = 0; hd < 2; hd++)
            for (int g = 0; g < 3; g++) {
                char cell[64];
                summary_cell(cell, sizeof cell, r->models[m].eval, g, hd);
                fprintf(f, " %-14s", cell);
            }
        fprintf(f, "\n");
    }
    const kd_eval_result *base = r->models[r->baseline].eval, *dist = r->models[r->distilled].eval,
                         *ens = r->models[r->ensemble].eval;
    double mb = kd_eval_mean_dice(base, 3), md = kd_eval_mean_dice(dist, 3), me = kd_eval_mean_dice(ens, 3);
    double best_t = 0;
    int beats_all = 1;
    for (int t = 0; t < r->nteachers; t++) {
        double v = kd_eval_mean_dice(r->models[t].eval, 3);
        if (v > best_t) best_t = v;
        if (md <= v) beats_all = 0;
    }
    fprintf(f, "\nmean Dice over WT, TC, ET: ensemble %.3f, best teacher %.3f, student baseline %.3f, "
               "student distilled %.3f\n", me, best_t, mb, md);
    if (r->runs > 1) {
        fprintf(f, "the students' %d runs (seeds differ; the verdicts below compare each test case's Dice "
                   "averaged over them):", r->runs);
        for (int kind = 0; kind < 2; kind++) {
            fprintf(f, "%s", kind ? "; distilled" : " baseline");
            for (int k = 0; k < r->runs; k++)
                fprintf(f, " %.3f", kd_eval_mean_dice(r->models[(kind ? r->distilled_runs : r->baseline_runs)[k]].eval, 3));
        }
        fprintf(f, "\n");
    }
    if (r->oracle >= 0)
        fprintf(f, "oracle student (the unlabeled cases with their true labels) %.3f\n",
                kd_eval_mean_dice(r->models[r->oracle].eval, 3));
    if (r->online >= 0)
        fprintf(f, "student distilled online %.3f\n", kd_eval_mean_dice(r->models[r->online].eval, 3));
    const double *a = r->annotations, *b = r->baseline_unlabeled;
    if (a[3] < 0)
        fprintf(f, "the unlabeled cases have no labels: how good the annotations are is not known\n");
    else
        fprintf(f, "on the unlabeled cases, against their hidden truth: the ensemble's annotations %.3f, "
               "the baseline student %.3f (what the teachers can teach beyond the labeled cases: "
               "%+.3f)\n", a[3], b[3], a[3] - b[3]);
    /* "beats" only where the paired difference is at least two standard errors */
    kd_paired vb = kd_eval_paired(dist, base), ve = kd_eval_paired(dist, ens);
    /* one test case has no standard error: no verdict */
    const char *verdict = vb.n < 2                 ? "cannot be judged against (one test case, no standard error)"
                          : vb.mean > 2 * vb.se    ? "beats"
                          : vb.mean < -2 * vb.se   ? "is worse than"
                                                   : "ties with";
    fprintf(f, "distilled student %s the baseline student: %+.3f ± %.3f mean Dice per case (paired, "
               "standard error), better on %d of %d test cases\n", verdict, vb.mean, vb.se, vb.wins, vb.n);
    for (int t = 0; t < r->nteachers; t++) {
        kd_paired vt = kd_eval_paired(dist, r->models[t].eval);
        fprintf(f, "  against %-10s %+.3f ± %.3f, better on %d of %d\n", r->models[t].name, vt.mean, vt.se,
                vt.wins, vt.n);
    }
    fprintf(f, "  against ensemble   %+.3f ± %.3f, better on %d of %d\n", ve.mean, ve.se, ve.wins, ve.n);
    fprintf(f, "distilled student %s every single teacher on the mean and is %.3f %s the ensemble\n",
            beats_all ? "beats" : "does not beat", fabs(me - md), md > me ? "above" : "below");
    kd_paired vo;
    if (r->oracle >= 0) {
        vo = kd_eval_paired(r->models[r->oracle].eval, base);
        fprintf(f, "oracle student against the baseline: %+.3f ± %.3f, better on %d of %d (what the "
                   "unlabeled cases are worth with perfect labels)\n", vo.mean, vo.se, vo.wins, vo.n);
    }
    if (r->online >= 0) {
        vo = kd_eval_paired(r->models[r->online].eval, base);
        fprintf(f, "online-distilled student against the baseline: %+.3f ± %.3f, better on %d of %d\n",
                vo.mean, vo.se, vo.wins, vo.n);
    }
}
