/* The loop over cases shared by segment and annotate. */
#include "segment_common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "kdseg/recipe.h"
#include "kdseg/train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int kd_seg_args_parse(const char *cmd, int argc, char **argv, kd_seg_args *a) {
    memset(a, 0, sizeof *a);
    kd_infer_opts_default(&a->infer);
    a->infer.progress = 1;
    kd_postproc_options_default(&a->post);
    a->layout = "auto";
    const char *v;
    int annotate = !strcmp(cmd, "annotate");
    for (int i = 1; i < argc; i++) {
        int r = 0;
        if (kd_cli_opt(argc, argv, &i, annotate ? "--teacher" : "--model", &v) ||
            (annotate && kd_cli_opt(argc, argv, &i, "--model", &v))) {
            if (!v) return kd_cli_unknown(cmd, argv[i]); /* the option, its value missing */
            if (a->nmodels == KD_SEG_MAX_MODELS) {
                fprintf(stderr, "kdseg %s: at most %d models\n", cmd, KD_SEG_MAX_MODELS);
                return 2;
            }
            a->models[a->nmodels++] = v;
        } else if (kd_cli_opt(argc, argv, &i, "--case", &v)) a->case_dir = v;
        else if (kd_cli_opt(argc, argv, &i, "--dataset", &v)) a->dataset = v;
        else if (kd_cli_opt(argc, argv, &i, "--out", &v)) a->out = v;
        else if (kd_cli_opt(argc, argv, &i, "--layout", &v)) a->layout = v;
        else if (kd_cli_opt(argc, argv, &i, "--modalities", &v)) a->modalities = v;
        else if (kd_cli_opt(argc, argv, &i, "--labels", &v)) a->labels = v;
        else if (kd_cli_opt(argc, argv, &i, "--tta", &v)) {
            if (!v) return kd_cli_unknown(cmd, "--tta");
            if (!strcmp(v, "none") || !strcmp(v, "1")) a->infer.tta = 0;
            else if (!strcmp(v, "4")) a->infer.tta = 4;
            else if (!strcmp(v, "8")) a->infer.tta = 8;
            else {
                fprintf(stderr, "kdseg %s: --tta expects none, 4 or 8, got '%s'\n", cmd, v);
                return 2;
            }
        } else if (kd_cli_opt(argc, argv, &i, "--tile", &v)) {
            if (v && !strcmp(v, "whole")) {
                a->whole = 1;
                a->infer.force_tiles = 0;
                memset(a->infer.tile, 0, sizeof a->infer.tile);
            } else {
                r = kd_cli_dims3(cmd, "--tile", v, 8, 1024, a->infer.tile);
                a->infer.force_tiles = 1;
                a->whole = 0;
            }
        } else if (kd_cli_opt(argc, argv, &i, "--overlap", &v)) {
            double x;
            r = kd_cli_float(cmd, "--overlap", v, 0, 0.9, &x);
            a->infer.overlap = (float)x;
        } else if (kd_cli_opt(argc, argv, &i, "--threshold", &v)) {
            double x;
            r = kd_cli_float(cmd, "--threshold", v, 0, 1, &x);
            a->post.threshold = (float)x;
        } else if (kd_cli_opt(argc, argv, &i, "--et-min", &v)) {
            r = kd_cli_int(cmd, "--et-min", v, -1, 1000000000, &a->post.et_min_voxels);
            a->set_et_min = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--min-component", &v)) {
            r = kd_cli_float(cmd, "--min-component", v, 0, 1, &a->post.min_component_fraction);
            a->set_min_component = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--largest-component", &v)) {
            r = kd_cli_int(cmd, "--largest-component", v, 0, 1, &a->post.largest_only);
            a->set_largest = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--brain-mask", &v)) {
            r = kd_cli_int(cmd, "--brain-mask", v, 0, 1, &a->brain_mask);
            a->set_brain_mask = 1;
        } else if (kd_cli_flag(argv, i, "--probabilities")) {
            a->probabilities = 1;
            if (i + 1 < argc && (!strcmp(argv[i + 1], "u8") || !strcmp(argv[i + 1], "f32")))
                a->probabilities = !strcmp(argv[++i], "u8") ? 1 : 2;
        } else if (!annotate && kd_cli_opt(argc, argv, &i, "--member-out", &v)) {
            if (!v) return kd_cli_unknown(cmd, argv[i]);
            if (a->nmember_out == KD_SEG_MAX_MODELS) {
                fprintf(stderr, "kdseg %s: at most %d --member-out\n", cmd, KD_SEG_MAX_MODELS);
                return 2;
            }
            a->member_out[a->nmember_out++] = v;
        } else if (kd_cli_flag(argv, i, "--png")) a->png = 1;
        else if (annotate && kd_cli_flag(argv, i, "--soft")) a->soft = 1;
        else if (annotate && kd_cli_flag(argv, i, "--all")) a->labeled_too = 1;
        else return kd_cli_unknown(cmd, argv[i]);
        if (r) return r;
    }
    a->skip_done = annotate;
    if (a->nmember_out && a->nmember_out != a->nmodels) {
        fprintf(stderr, "kdseg %s: %d --member-out for %d --model: give one per model, in order\n",
                cmd, a->nmember_out, a->nmodels);
        return 2;
    }
    return 0;
}

void kd_seg_args_free(kd_seg_args *a) { (void)a; }

/* The post-processing of the first model's recipe (recorded in its checkpoint; none
 * recorded: the paper's rules, as before recipes existed), where the command line does not
 * set it. */
static void post_from_recipe(const kd_seg_args *a, const char *meta, kd_seg_run *r) {
    char name[64];
    if (!kd_meta_get(meta, "recipe", name, sizeof name)) return;
    const kd_recipe *rc = kd_recipe_find(name);
    if (!rc) {
        kd_log(KD_LOG_WARN, "%s: recipe '%s' is unknown to this version; post-processing as "
               "the command line says", a->models[0], name);
        return;
    }
    if (!a->set_brain_mask) r->brain_mask = rc->brain_mask;
    if (!a->set_largest) r->post.largest_only = rc->largest_only;
    if (!a->set_min_component) r->post.min_component_fraction = rc->min_component;
    if (!a->set_et_min) r->post.et_min_voxels = rc->et_min_voxels;
}

kd_status kd_seg_open(const kd_seg_args *a, const char *cmd, kd_seg_run *r) {
    memset(r, 0, sizeof *r);
    kd_dataset_opts o;
    memset(&o, 0, sizeof o);
    kd_status s = kd_layout_parse(a->layout, &o.layout);
    if (s) return s;
    o.modalities = a->modalities;
    s = a->case_dir ? kd_dataset_open_case(a->case_dir, &o, &r->ds)
                    : kd_dataset_open(a->dataset, &o, &r->ds);
    if (s) return s;
    /* one writer per output folder, taken before any work; the longest name written in
     * it: the longest case's probabilities */
    char longest[300] = "";
    for (int i = 0; i < kd_dataset_count(r->ds); i++)
        if (strlen(kd_dataset_case_name(r->ds, i)) + 13 > strlen(longest))
            snprintf(longest, sizeof longest, "%s_prob.nii.gz", kd_dataset_case_name(r->ds, i));
    for (int i = -1; i < a->nmember_out; i++)
        if ((s = kd_outdir_open(i < 0 ? a->out : a->member_out[i], longest, &r->outdirs[i + 1])))
            return s;
    if (!(r->dev = kd_cli_open_device(cmd))) return kd_fail(KD_ERR_NO_DEVICE, "%s", kd_last_error());
    r->infer = a->infer;
    r->post = a->post;
    r->brain_mask = a->brain_mask;
    int patch[3] = {0, 0, 0}, all_have_patch = a->nmodels > 0;
    for (int i = 0; i < a->nmodels; i++) {
        char meta[4096], v[64];
        int pd[3];
        s = kd_checkpoint_load(a->models[i], r->dev, &r->models[i], NULL, NULL, meta, sizeof meta);
        if (s) return s;
        /* the training patch: GroupNorm/InstanceNorm statistics over a whole volume differ
         * from those over the patches the model learnt on (the demo's GroupNorm students
         * lost 0.14 mean Dice to it), so windows of the training patch are the default */
        if (kd_meta_get(meta, "patch", v, sizeof v) &&
            sscanf(v, "%d,%d,%d", &pd[0], &pd[1], &pd[2]) == 3 && pd[0] > 0 && pd[1] > 0 && pd[2] > 0) {
            for (int k = 0; k < 3; k++)
                if (pd[k] > patch[k]) patch[k] = pd[k];
        } else {
            all_have_patch = 0;
        }
        if (i == 0) post_from_recipe(a, meta, r);
        r->nmodels++;
        if (kd_model_in_channels(r->models[i]) != kd_dataset_channels(r->ds))
            return kd_fail(KD_ERR_SHAPE, "%s takes %d channels but the data has %d (--modalities)",
                           a->models[i], kd_model_in_channels(r->models[i]),
                           kd_dataset_channels(r->ds));
    }
    if (!a->infer.force_tiles && !a->whole && all_have_patch) {
        /* several models: the largest training patch per axis */
        memcpy(r->infer.tile, patch, sizeof patch);
        r->infer.force_tiles = 1;
        kd_log(KD_LOG_INFO, "sliding windows of the training patch %dx%dx%d (--tile whole: one pass)",
               patch[0], patch[1], patch[2]);
    }
    return KD_OK;
}

void kd_seg_close(kd_seg_run *r) {
    for (int i = 0; i < r->nmodels; i++) kd_model_free(r->models[i]);
    kd_device_free(r->dev);
    kd_dataset_free(r->ds);
    for (int i = 0; i <= KD_SEG_MAX_MODELS; i++) kd_outdir_close(r->outdirs[i]);
    memset(r, 0, sizeof *r);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* 2019 labels -> the MSD convention (1 edema, 2 non-enhancing, 3 enhancing). */
static void to_msd(uint8_t *l, size_t n) {
    for (size_t i = 0; i < n; i++) l[i] = l[i] == 2 ? 1 : l[i] == 1 ? 2 : l[i] == 4 ? 3 : 0;
}

static double dice_mask(const float *a, const float *b, size_t n) {
    double i = 0, sa = 0, sb = 0;
    for (size_t k = 0; k < n; k++) {
        int x = a[k] > 0.5f, y = b[k] > 0.5f;
        i += x && y;
        sa += x;
        sb += y;
    }
    return sa + sb > 0 ? 2 * i / (sa + sb) : 1.0;
}

/* One agreement.csv row: the mean pairwise Dice between the teachers per region. The row
 * goes to disk before the output is renamed into place: a run killed in between leaves a
 * row without an output, which the next run drops. */
static kd_status agreement_row(FILE *agree, const kd_seg_args *a, const char *name,
                               const float *one, int nmodels, size_t nv) {
    double dsum[3] = {0, 0, 0};
    int pairs = 0;
    for (int x = 0; x < nmodels; x++)
        for (int y = x + 1; y < nmodels; y++, pairs++)
            for (int g = 0; g < 3; g++)
                dsum[g] += dice_mask(one + ((size_t)x * 3 + g) * nv, one + ((size_t)y * 3 + g) * nv, nv);
    if (fprintf(agree, "%s,%.4f,%.4f,%.4f,%.4f\n", name, dsum[0] / pairs, dsum[1] / pairs,
                dsum[2] / pairs, (dsum[0] + dsum[1] + dsum[2]) / (3.0 * pairs)) < 0 ||
        fflush(agree) != 0)
        return kd_fail(KD_ERR_IO, "%s/agreement.csv: write failed: %s", a->out, strerror(errno));
    return KD_OK;
}

static kd_status one_case(kd_seg_run *r, const kd_seg_args *a, int mode, int i, FILE *agree) {
    const char *name = kd_dataset_case_name(r->ds, i);
    char out[KD_PATH_MAX], path[KD_PATH_MAX];
    kd_status s = kd_path_printf(out, sizeof out, "%s/%s.nii.gz", a->out, name);
    if (s) return s;
    if (a->skip_done && exists(out)) {
        printf("  %s: already annotated, skipped\n", name);
        return KD_OK;
    }
    double t0 = now_s();
    kd_case *c = NULL;
    if ((s = kd_case_load(r->ds, i, &c))) return s;
    size_t nv = (size_t)c->orig[0] * c->orig[1] * c->orig[2];
    float *p = calloc(3 * nv, sizeof(float)), *one = NULL;
    uint8_t *lab = malloc(nv), *mask = NULL;
    kd_infer_stats st = {0}, st1;
    size_t peak = 0;
    if (!p || !lab) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s", name);
        goto done;
    }
    if ((mode == KD_SEG_ANNOTATE || a->nmember_out) && r->nmodels > 1) {
        /* each model separately: the teachers' agreement marks untrustworthy pseudo-labels;
         * --member-out writes each model's own label map */
        one = malloc((size_t)r->nmodels * 3 * nv * sizeof(float));
        if (!one) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s", name);
            goto done;
        }
        for (int m = 0; m < r->nmodels && !s; m++) {
            s = kd_segment_case(&r->models[m], 1, c, &r->infer, one + (size_t)m * 3 * nv, &st1);
            st.passes += st1.passes;
            st.windows = st1.windows;
            if (st1.peak_device > peak) peak = st1.peak_device;
        }
        if (s) goto done;
        for (size_t k = 0; k < 3 * nv; k++) {
            double acc = 0;
            for (int m = 0; m < r->nmodels; m++) acc += one[(size_t)m * 3 * nv + k];
            p[k] = (float)(acc / r->nmodels);
        }
        if (mode == KD_SEG_ANNOTATE && agree && (s = agreement_row(agree, a, name, one, r->nmodels, nv)))
            goto done;
    } else {
        s = kd_segment_case(r->models, r->nmodels, c, &r->infer, p, &st);
        peak = st.peak_device;
        if (s) goto done;
        if (a->nmember_out) one = p; /* a single model is its own member */
    }
    kd_postproc_options po = r->post;
    if (r->brain_mask) {
        if (!(mask = malloc(nv))) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "case %s: brain mask", name);
            goto done;
        }
        kd_case_brain_mask(c, mask);
        po.brain_mask = mask;
    }
    kd_layout lay = kd_dataset_layout(r->ds);
    if (a->labels) {
        if ((s = kd_label_convention_parse(a->labels, &po.labels))) goto done;
    } else po.labels = lay == KD_LAYOUT_BRATS2023 ? KD_LABELS_2023 : KD_LABELS_2019;
    if (mode == KD_SEG_ANNOTATE && a->soft) {
        s = kd_case_write_probs(c, out, p, 1);
    } else {
        if (mode == KD_SEG_ANNOTATE && lay == KD_LAYOUT_MSD) po.labels = KD_LABELS_2019;
        if ((s = kd_postproc_labels(p, KD_PROB_CDHW, c->orig[0], c->orig[1], c->orig[2], &po, lab)))
            goto done;
        if (mode == KD_SEG_ANNOTATE && lay == KD_LAYOUT_MSD) to_msd(lab, nv);
        s = kd_case_write_labels(c, out, lab);
    }
    for (int m = 0; m < a->nmember_out && !s; m++) {
        if (!(s = kd_path_printf(path, sizeof path, "%s/%s.nii.gz", a->member_out[m], name)) &&
            !(s = kd_postproc_labels(one + (size_t)m * 3 * nv, KD_PROB_CDHW, c->orig[0], c->orig[1],
                                     c->orig[2], &po, lab)))
            s = kd_case_write_labels(c, path, lab);
    }
    if (s) goto done;
    if (a->probabilities && mode == KD_SEG_WRITE_LABELS) {
        if ((s = kd_path_printf(path, sizeof path, "%s/%s_prob.nii.gz", a->out, name)) ||
            (s = kd_case_write_probs(c, path, p, a->probabilities == 1)))
            goto done;
    }
    if (a->png) {
        size_t pv = (size_t)c->d * c->h * c->w;
        float *pp = malloc(3 * pv * sizeof(float));
        if (!pp) {
            s = kd_fail(KD_ERR_OUT_OF_MEMORY, "png");
            goto done;
        }
        kd_case_crop(c, p, 3, pp);
        for (size_t k = 0; k < 3 * pv; k++) pp[k] = pp[k] > r->post.threshold ? 1.0f : 0.0f;
        s = kd_path_printf(path, sizeof path, "%s/%s.png", a->out, name);
        if (!s) {
            kd_overlay_info info;
            kd_overlay_info_for_case(&info, r->ds, c, "prediction");
            s = kd_plot_overlay_write(path, c->image, c->channels, c->d, c->h, c->w, pp, &info);
        }
        free(pp);
        if (s) goto done;
    }
    printf("  %s: %dx%dx%d, %s, %d passes, %.2f s, peak device memory %.1f MiB\n", name,
           c->orig[0], c->orig[1], c->orig[2],
           st.windows > 1 ? "sliding windows" : "whole volume", st.passes, now_s() - t0,
           peak / 1048576.0);
    fflush(stdout);
done:
    if (one != p) free(one);
    free(p);
    free(lab);
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
static kd_status agreement_clean(const kd_seg_args *a, const char *path) {
    FILE *f = fopen(path, "r");
    char **rows = NULL, line[1024], tmp[KD_PATH_MAX], out[KD_PATH_MAX];
    int n = 0, cap = 0;
    kd_status s = KD_OK;
    while (f && !s && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        char *comma = strchr(line, ',');
        if (!len || line[len - 1] != '\n' || !comma || !strncmp(line, "case,", 5)) continue;
        if (kd_path_printf(out, sizeof out, "%s/%.*s.nii.gz", a->out, (int)(comma - line), line) ||
            !exists(out))
            continue;
        if (n == cap) {
            char **q = realloc(rows, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *rows);
            if (!q) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
            else rows = q;
        }
        if (!s && !(rows[n++] = strdup(line))) s = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
    }
    if (f) fclose(f);
    if (!s) s = kd_path_printf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
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
    for (int i = 0; i < n; i++) free(rows[i]);
    free(rows);
    return s;
}

kd_status kd_seg_all(kd_seg_run *r, const kd_seg_args *a, int mode) {
    int n = kd_dataset_count(r->ds), todo = 0;
    FILE *agree = NULL;
    if (mode == KD_SEG_ANNOTATE && r->nmodels > 1) {
        char path[KD_PATH_MAX];
        kd_status cs = kd_path_join(path, sizeof path, a->out, "agreement.csv");
        if (!cs) cs = agreement_clean(a, path);
        if (cs) return cs;
        agree = fopen(kd_output_target(path), "a");
        if (!agree) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    for (int i = 0; i < n; i++)
        todo += mode != KD_SEG_ANNOTATE || a->labeled_too || !kd_dataset_case_labeled(r->ds, i);
    printf("%s %d case%s with %d model%s on %s\n", mode == KD_SEG_ANNOTATE ? "annotating" : "segmenting",
           todo, todo == 1 ? "" : "s", r->nmodels, r->nmodels == 1 ? "" : "s", kd_device_name(r->dev));
    kd_status s = KD_OK;
    int k = 0;
    double t0 = now_s();
    char eta[32] = "?";
    for (int i = 0; i < n && !s; i++) {
        if (mode == KD_SEG_ANNOTATE && !a->labeled_too && kd_dataset_case_labeled(r->ds, i)) continue;
        k++;
        if (kd_log_is_tty())
            fprintf(stderr, "[%d/%d%s%s] ", k, todo, k > 1 ? ", ETA " : "", k > 1 ? eta : "");
        s = one_case(r, a, mode, i, agree);
        if (agree) fflush(agree);
        double per = (now_s() - t0) / k;
        kd_format_duration(per * (todo - k), eta, sizeof eta);
        if (!s && !kd_log_is_tty() && k < todo)
            kd_log_progress("%d/%d cases, %.1f s per case, ETA %s", k, todo, per, eta);
    }
    if (agree) fclose(agree);
    return s;
}
