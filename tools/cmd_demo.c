/* kdseg demo: the paper's experiment on a built-in synthetic cohort. Teachers of three
 * architectures are trained on a few labeled cases, their ensemble annotates an
 * unlabeled pool, and a student trained on labeled + annotated cases is compared with
 * the same student trained on the labeled cases only, with every teacher and with the
 * ensemble, on held-out test cases. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "kdseg/metrics.h"
#include "kdseg/plot.h"
#include "train_common.h"

typedef struct demo_cfg {
    int labeled, unlabeled, test, size, patch, batch;
    int teacher_steps, student_steps, val_every;
    const char *teacher_specs[3], *teacher_names[3], *student_spec;
    double teacher_lr, student_lr, pseudo_ratio, pseudo_weight, min_agreement;
    const char *tta;
} demo_cfg;

static const demo_cfg demo_default = {
    10, 24, 24, 64, 32, 2, 400, 400, 100,
    {"unet3d:widths=8,16,32", "cascade:widths=8,16,32", "resnext-se:widths=16,32,64:enc=1,1,1"},
    {"unet3d", "cascade", "resnext-se"},
    "resunet:widths=8,16,32,64:enc=1,1,1,1:dec=1,1,1", 3e-3, 3e-3, 0.5, 1.0, 0.0, "none"};

static const demo_cfg demo_quick = {
    6, 8, 4, 48, 32, 1, 40, 50, 25,
    {"unet3d:widths=8,16", "cascade:widths=8,16", "resnext-se:widths=16,32:enc=1,1"},
    {"unet3d", "cascade", "resnext-se"},
    "resunet:widths=8,16,32:enc=1,1,1:dec=1,1", 3e-3, 3e-3, 0.6, 1.0, 0.0, "none"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double g_t0;

/* Run a kdseg subcommand with printf-formatted, space-separated arguments. */
static kd_status call(const char *fmt, ...) {
    char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (len < 0) return kd_fail(KD_ERR_OUT_OF_MEMORY, "demo: a command line");
    char *argv[128];
    int argc = 0;
    char *save = NULL;
    kd_status s = kd_fail(KD_ERR_INTERNAL, "no command in '%s'", line);
    for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (argc == 127) {
            free(line);
            return kd_fail(KD_ERR_INTERNAL, "demo: a command line of more than 127 arguments");
        }
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    for (int c = 0; argc && c < kd_command_count; c++)
        if (!strcmp(kd_commands[c]->name, argv[0])) {
            fflush(stdout);
            int r = kd_commands[c]->run(argc, argv);
            fflush(stdout);
            s = r ? kd_fail(KD_ERR_INTERNAL, "stage 'kdseg %s' failed (exit %d)", argv[0], r) : KD_OK;
            break;
        }
    free(line);
    return s;
}

static void stage(int k, int n, const char *what) {
    printf("\n[%d/%d] %s  (%.0f s elapsed)\n", k, n, what, now_s() - g_t0);
    fflush(stdout);
}

typedef struct model_result {
    char name[64];
    kd_eval_result *ev;
} model_result;

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

static double mean_dice(const kd_eval_result *ev, int region) {
    double s = 0;
    for (int i = 0; i < ev->n_cases; i++) s += ev->cases[i].region[region].dice;
    return ev->n_cases ? s / ev->n_cases : 0;
}

static double mean3(const kd_eval_result *ev) {
    return (mean_dice(ev, 0) + mean_dice(ev, 1) + mean_dice(ev, 2)) / 3;
}

/* Paired comparison of a against b over the test cases (matched by name): mean of the
 * per-case differences of mean Dice (WT, TC, ET), its standard error, and on how many
 * cases a is better. The two models see the same cases, so this is far less noisy than
 * comparing the two table means (whose spread is mostly between cases). */
typedef struct paired_diff {
    double mean, se;
    int wins, n;
} paired_diff;

static double case_mean3(const kd_eval_case *c) {
    return (c->region[0].dice + c->region[1].dice + c->region[2].dice) / 3;
}

static paired_diff paired(const kd_eval_result *a, const kd_eval_result *b) {
    paired_diff p = {0, 0, 0, 0};
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

static kd_status write_tables(const char *out, model_result *r, int n) {
    char path[KD_PATH_MAX], tmp[KD_PATH_MAX];
    kd_status s = kd_path_join(path, sizeof path, out, "results.md");
    if (!s) s = kd_path_printf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    if (s) return s;
    FILE *md = fopen(kd_output_target(tmp), "w");
    if (!md) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    fprintf(md, "| model | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET |\n"
                "| --- | --- | --- | --- | --- | --- | --- |\n");
    printf("\n%-22s %-14s %-14s %-14s %-14s %-14s %-14s\n", "model", "Dice WT", "Dice TC",
           "Dice ET", "HD95 WT", "HD95 TC", "HD95 ET");
    for (int m = 0; m < n; m++) {
        fprintf(md, "| %s", r[m].name);
        printf("%-22s", r[m].name);
        for (int hd = 0; hd < 2; hd++)
            for (int g = 0; g < 3; g++) {
                char cell[64];
                summary_cell(cell, sizeof cell, r[m].ev, g, hd);
                fprintf(md, " | %s", cell);
                printf(" %-14s", cell);
            }
        fprintf(md, " |\n");
        printf("\n");
    }
    if (fclose(md) || rename(tmp, path)) {
        s = kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return s;
    }
    if ((s = kd_path_join(path, sizeof path, out, "results.csv")) ||
        (s = kd_path_printf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid())))
        return s;
    FILE *csv = fopen(kd_output_target(tmp), "w");
    if (!csv) return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    fprintf(csv, "model,case,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et\n");
    for (int m = 0; m < n; m++)
        for (int i = 0; i < r[m].ev->n_cases; i++) {
            const kd_eval_case *c = &r[m].ev->cases[i];
            fprintf(csv, "%s,%s,%.4f,%.4f,%.4f,%.3f,%.3f,%.3f\n", r[m].name, c->name,
                    c->region[0].dice, c->region[1].dice, c->region[2].dice, c->region[0].hd95,
                    c->region[1].hd95, c->region[2].hd95);
        }
    if (fclose(csv) || rename(tmp, path)) {
        s = kd_fail(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
    }
    return s;
}

static kd_status write_boxplot(const char *out, model_result *r, int n) {
    static const char *groups[3] = {"WT", "TC", "ET"};
    const char *names[16];
    const double *vals[48];
    int counts[48];
    double *store = malloc(sizeof(double) * 48 * (size_t)(r[0].ev->n_cases + 1));
    if (!store) return kd_fail(KD_ERR_OUT_OF_MEMORY, "box plot");
    for (int m = 0; m < n; m++) names[m] = r[m].name;
    for (int g = 0; g < 3; g++)
        for (int m = 0; m < n; m++) {
            double *v = store + (size_t)(g * n + m) * (r[0].ev->n_cases + 1);
            for (int i = 0; i < r[m].ev->n_cases; i++) v[i] = r[m].ev->cases[i].region[g].dice;
            vals[g * n + m] = v;
            counts[g * n + m] = r[m].ev->n_cases;
        }
    kd_canvas c;
    kd_status s = kd_canvas_create(960, 420, &c);
    if (!s) {
        kd_plot_boxes_labeled(&c, 0, 0, 960, 420, "per-case dice on the test cases", "dice",
                              groups, 3, names, n, vals, counts, 0.0, 1.0);
        char path[KD_PATH_MAX];
        s = kd_path_join(path, sizeof path, out, "dice_boxplot.png");
        if (!s) s = kd_canvas_write(&c, path);
    }
    kd_canvas_free(&c);
    free(store);
    return s;
}

/* One test case, axial slice through the reference tumour: FLAIR with each model's
 * labels in the overlay colours (legend below), reference first. */
static kd_status write_example(const char *out, const char *test_dir, model_result *r, int n) {
    kd_dataset *ds = NULL;
    kd_status s = kd_dataset_open(test_dir, NULL, &ds);
    if (s) return s;
    const char *name = kd_dataset_case_name(ds, 0);
    int vol;
    const char *flair = kd_dataset_case_image(ds, 0, 3, &vol);
    kd_volume *img = NULL;
    kd_label_map *ref = NULL, *pred[16] = {0};
    kd_canvas c = {0};
    if ((s = kd_nifti_read(flair, &img)) || (s = kd_label_map_read(kd_dataset_case_label(ds, 0), &ref)))
        goto done;
    int D = ref->d, H = ref->h, W = ref->w;
    for (int m = 0; m < n; m++) {
        char p[KD_PATH_MAX];
        if ((s = kd_path_printf(p, sizeof p, "%s/pred/%s/%s.nii.gz", out, r[m].name, name)) ||
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
    float mx = 1e-6f;
    for (int k = 0; k < H * W; k++) mx = fmaxf(mx, img->data[(size_t)zbest * H * W + k]);
    int scale = 3, cw = W * scale + 8, ch = H * scale + 24, top = 24, bottom = 40;
    if ((s = kd_canvas_create(cw * (n + 1), top + ch + bottom, &c))) goto done;
    char title[512];
    snprintf(title, sizeof title, "test case %s, FLAIR, axial slice %d/%d (the most tumour)",
             name, zbest + 1, D);
    kd_canvas_text(&c, 4, 6, title, 0x000000, 2);
    kd_plot_region_legend(&c, 4, top + ch + 6, 1);
    for (int m = -1; m < n; m++) {
        const uint8_t *lab = (m < 0 ? ref : pred[m])->labels + (size_t)zbest * H * W;
        int x0 = (m + 1) * cw + 4;
        kd_canvas_text(&c, x0, top + 4, m < 0 ? "reference" : r[m].name, 0x000000, 1);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float g = img->data[(size_t)zbest * H * W + (size_t)y * W + x] / mx;
                int v = (int)(255 * (g < 0 ? 0 : g > 1 ? 1 : g));
                uint32_t col = (uint32_t)(v << 16 | v << 8 | v);
                uint8_t l = lab[(size_t)y * W + x];
                if (l == 2) col = KD_OVERLAY_WT;
                else if (l == 1) col = KD_OVERLAY_TC;
                else if (l == 4 || l == 3) col = KD_OVERLAY_ET;
                /* image rows top to bottom: flip H so anterior is up */
                int py = top + 20 + (H - 1 - y) * scale;
                kd_canvas_rect(&c, x0 + x * scale, py, x0 + x * scale + scale - 1, py + scale - 1,
                               col, 1);
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
    if (!s) {
        for (int r = 0; r < 3; r++) m[r] = mean_dice(ev, r);
        m[3] = mean3(ev);
    }
    kd_eval_result_free(ev);
    return s;
}

/* The teachers' checkpoints as " FLAG OUT/models/NAME/best.kds" each, and with member_out
 * also " --member-out OUT/pred/NAME" each (segment writes every teacher's own map there). */
static const char *teacher_args(const demo_cfg *c, const char *out, const char *flag,
                                int member_out, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int t = 0; t < 3; t++)
        k += snprintf(buf + k, k < n ? n - k : 0, " %s %s/models/%s/best.kds", flag, out, c->teacher_names[t]);
    for (int t = 0; member_out && t < 3; t++)
        k += snprintf(buf + k, k < n ? n - k : 0, " --member-out %s/pred/%s", out, c->teacher_names[t]);
    return buf;
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

/* The offline-distilled student OUT/models/NAME from the labeled cases and the unlabeled
 * cases labeled by OUT/ANN (the ensemble's annotations or the oracle's true labels);
 * min_agreement 0 keeps every case. */
static kd_status distill_offline(const demo_cfg *c, const char *out, const char *ann,
                                 const char *name, double min_agreement, int seed,
                                 const char *common) {
    return call("distill --data %s/data/labeled --unlabeled %s/data/unlabeled --annotations %s/%s "
                "--out %s/models/%s --model %s --steps %d --lr %g --val-every %d --seed %d "
                "--pseudo-ratio %g --pseudo-weight %g --min-agreement %g %s",
                out, out, out, ann, out, name, c->student_spec, c->student_steps, c->student_lr,
                c->val_every, seed, c->pseudo_ratio, c->pseudo_weight, min_agreement, common);
}

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg demo [--quick | --long] [--online] [--out DIR] [--seed S]\n\n"
            "The paper's experiment on a built-in synthetic cohort:\n"
            "  1. generate labeled, unlabeled and test phantom cases;\n"
            "  2. train three heterogeneous teachers (unet3d, cascade, resnext-se);\n"
            "  3. annotate the unlabeled cases with the teacher ensemble;\n"
            "  4. train the ResUNet student on the labeled cases only (baseline) and distil a\n"
            "     second student on labeled + ensemble-annotated cases (offline; with --online\n"
            "     also one distilled online through the device scheduler), and an oracle\n"
            "     student the same way on the unlabeled cases' hidden true labels: the most\n"
            "     distillation could gain from those cases;\n"
            "  5. segment the test cases with every teacher, the ensemble and the students,\n"
            "     and evaluate them;\n"
            "  6. print the paper's table (Dice and HD95 per region, mean ± std), write\n"
            "     results.csv, results.md, dice_boxplot.png and example.png into DIR.\n\n"
            "  --quick      a smaller run (used by the tests; about 1 minute here)\n"
            "  --long       teachers and students 1600 steps each instead of 400 (about 27\n"
            "               minutes on 2 CPU cores): the budget where the paper's effect shows\n"
            "  --out DIR    output folder (default kdseg-demo)\n"
            "  --seed S     cohort and training seed (default 1)\n\n"
            "the experiment's sizes (defaults: the default or --quick run's):\n"
            "  --labeled N --unlabeled N --test N   cases in each set\n"
            "  --size N           phantom volume N^3 voxels   --patch N  training patch N^3\n"
            "  --teacher-steps N --student-steps N  training steps of each teacher / student\n"
            "  --pseudo-ratio X   share of the distilled student's steps on annotated cases\n"
            "  --pseudo-weight W  weight of the loss on those steps\n"
            "  --min-agreement X  distil only from annotated cases whose teachers agree >= X\n");
}

static int run(int argc, char **argv) {
    demo_cfg c = demo_default;
    const char *out = "kdseg-demo";
    int online = 0, seed = 1;
    int quick = 0, lng = 0;
    for (int i = 1; i < argc; i++) { /* presets first: the size options below override them */
        quick |= kd_cli_flag(argv, i, "--quick");
        lng |= kd_cli_flag(argv, i, "--long");
    }
    if (quick && lng) {
        fprintf(stderr, "kdseg demo: --quick and --long exclude each other\n");
        return 2;
    }
    if (quick) c = demo_quick;
    if (lng) c.teacher_steps = c.student_steps = 1600;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (kd_cli_flag(argv, i, "--quick") || kd_cli_flag(argv, i, "--long")) continue;
        else if (kd_cli_flag(argv, i, "--online")) online = 1;
        else if (kd_cli_opt(argc, argv, &i, "--labeled", &v)) {
            if (kd_cli_int("demo", "--labeled", v, 3, 10000, &c.labeled)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--unlabeled", &v)) {
            if (kd_cli_int("demo", "--unlabeled", v, 1, 10000, &c.unlabeled)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--test", &v)) {
            if (kd_cli_int("demo", "--test", v, 1, 10000, &c.test)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--size", &v)) {
            if (kd_cli_int("demo", "--size", v, 16, 512, &c.size)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_int("demo", "--patch", v, 8, 512, &c.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--teacher-steps", &v)) {
            if (kd_cli_int("demo", "--teacher-steps", v, 1, 10000000, &c.teacher_steps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--student-steps", &v)) {
            if (kd_cli_int("demo", "--student-steps", v, 1, 10000000, &c.student_steps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-ratio", &v)) {
            if (kd_cli_float("demo", "--pseudo-ratio", v, 0, 1, &c.pseudo_ratio)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-weight", &v)) {
            if (kd_cli_float("demo", "--pseudo-weight", v, 0, 100, &c.pseudo_weight)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--min-agreement", &v)) {
            if (kd_cli_float("demo", "--min-agreement", v, 0, 1, &c.min_agreement)) return 2;
        }
        else if (kd_cli_opt(argc, argv, &i, "--out", &v) && v) out = v;
        else if (kd_cli_opt(argc, argv, &i, "--seed", &v) && v) {
            if (kd_cli_int("demo", "--seed", v, 0, 1000000, &seed)) return 2;
        } else return kd_cli_unknown("demo", argv[i]);
    }
    if (c.patch > c.size) {
        fprintf(stderr, "kdseg demo: --patch %d is larger than the volume (--size %d)\n", c.patch, c.size);
        return 2;
    }
    if (strchr(out, ' ')) {
        fprintf(stderr, "kdseg demo: --out must not contain spaces\n");
        return 2;
    }
    g_t0 = now_s();
    setenv("KDSEG_PROFILE", "quiet", 0); /* the scheduler's busy fraction */
    int nst = 6;
    kd_status s = KD_OK;
    char d[KD_PATH_MAX];
    /* the demo's own files in OUT are its alone; each stage locks its own subfolder too */
    kd_outdir *od = NULL;
    if ((s = kd_outdir_open(out, "data/unlabeled-truth/KDPhantom_1000/KDPhantom_1000_flair.nii.gz", &od)))
        return kd_cli_error("demo", s);
    const char *com = "--recipe phantom --patch %d --batch %d --margin 50 --fg-fraction 0.5 --val-cases 2 --quiet "
                      "--threads 1 --schedule cosine";
    char common[512];
    snprintf(common, sizeof common, com, c.patch, c.batch);
    stage(1, nst, "generating the phantom cohort");
    s = call("phantom --out %s/data/labeled --cases %d --size %d --seed %d", out, c.labeled, c.size, seed);
    if (!s) s = call("phantom --out %s/data/unlabeled --cases %d --size %d --seed %d --first 1000 --unlabeled",
                     out, c.unlabeled, c.size, seed);
    if (!s) s = call("phantom --out %s/data/test --cases %d --size %d --seed %d --first 2000", out,
                     c.test, c.size, seed);
    if (s) goto fail;
    stage(2, nst, "training three heterogeneous teachers on the labeled cases");
    for (int t = 0; t < 3 && !s; t++) {
        printf("  teacher %s (%s): %d steps\n", c.teacher_names[t], c.teacher_specs[t], c.teacher_steps);
        s = call("train --data %s/data/labeled --out %s/models/%s --model %s --steps %d --lr %g "
                 "--val-every %d --seed %d %s",
                 out, out, c.teacher_names[t], c.teacher_specs[t], c.teacher_steps, c.teacher_lr,
                 c.val_every, seed + 10 + t, common);
    }
    if (s) goto fail;
    stage(3, nst, "annotating the unlabeled cases with the teacher ensemble");
    char targs[6 * (KD_PATH_MAX + 64)]; /* six " FLAG OUT/x/NAME/best.kds": never cut */
    s = call("annotate%s --dataset %s/data/unlabeled --out %s/annotations --tta %s",
             teacher_args(&c, out, "--teacher", 0, targs, sizeof targs), out, out, c.tta);
    if (s) goto fail;
    /* How good are the pseudo-labels? The phantom generator knows the unlabeled cases'
     * truth: regenerate it beside them (same seed and numbers) and score the annotations.
     * Distillation can only help when these beat what the baseline student reaches. */
    double ann[4] = {0, 0, 0, 0}, own[4] = {-1, -1, -1, -1};
    if (!(s = call("phantom --out %s/data/unlabeled-truth --cases %d --size %d --seed %d --first 1000",
                   out, c.unlabeled, c.size, seed)) &&
        !(s = score_unlabeled(out, "annotations", ann)))
        printf("  ensemble annotations against the unlabeled cases' hidden truth: Dice WT %.3f, TC "
               "%.3f, ET %.3f (mean %.3f)\n", ann[0], ann[1], ann[2], ann[3]);
    if (s) goto fail;
    stage(4, nst, "training the student on labeled cases (baseline) and distilling it");
    printf("  student (%s), labeled only: %d steps\n", c.student_spec, c.student_steps);
    s = call("train --data %s/data/labeled --out %s/models/student-baseline --model %s --steps %d "
             "--lr %g --val-every %d --seed %d %s",
             out, out, c.student_spec, c.student_steps, c.student_lr, c.val_every, seed, common);
    /* What the baseline student reaches by itself on the unlabeled cases: the annotations
     * teach it something only where they are better than that */
    if (!s && !(s = call("segment --model %s/models/student-baseline/best.kds --dataset "
                         "%s/data/unlabeled --out %s/pred-unlabeled/student-baseline --tta %s",
                         out, out, out, c.tta)) &&
        !(s = score_unlabeled(out, "pred-unlabeled/student-baseline", own)))
        printf("  the baseline student on the same unlabeled cases: Dice WT %.3f, TC %.3f, ET %.3f "
               "(mean %.3f): the annotations are %+.3f from it\n", own[0], own[1], own[2], own[3],
               ann[3] - own[3]);
    if (s) goto fail;
    printf("  student distilled offline (labeled + %d ensemble-annotated cases): %d steps\n",
           c.unlabeled, c.student_steps);
    s = distill_offline(&c, out, "annotations", "student-distilled", c.min_agreement, seed, common);
    if (s) goto fail;
    printf("  oracle student (labeled + the same %d cases with their hidden true labels): %d steps\n",
           c.unlabeled, c.student_steps);
    if (!(s = link_oracle(out)))
        s = distill_offline(&c, out, "oracle", "student-oracle", 0, seed, common);
    if (s) goto fail;
    if (online) {
        printf("  student distilled online (teachers run on each unlabeled patch): %d steps\n",
               c.student_steps);
        s = call("distill --online%s --data %s/data/labeled --unlabeled %s/data/unlabeled --out "
                 "%s/models/student-online --model %s --steps %d --lr %g --val-every %d --seed %d "
                 "--pseudo-ratio %g --pseudo-weight %g %s",
                 teacher_args(&c, out, "--teacher", 0, targs, sizeof targs), out, out, out,
                 c.student_spec, c.student_steps, c.student_lr, c.val_every, seed, c.pseudo_ratio,
                 c.pseudo_weight, common);
        if (s) goto fail;
    }
    stage(5, nst, "segmenting and evaluating the test cases");
    enum { M_ENS = 3, M_BASE, M_DIST, M_ORACLE, M_ONLINE };
    const char *names[8] = {c.teacher_names[0], c.teacher_names[1], c.teacher_names[2], "ensemble",
                            "student-baseline", "student-distilled", "student-oracle", "student-online"};
    int nm = online ? 8 : 7;
    model_result res[8];
    memset(res, 0, sizeof res);
    /* the teachers and their ensemble from one set of passes: each teacher's own label map
     * is written beside the ensemble's (segment --member-out) */
    printf("  %s, %s, %s and their ensemble\n", names[0], names[1], names[2]);
    s = call("segment%s --dataset %s/data/test --out %s/pred/ensemble --tta %s",
             teacher_args(&c, out, "--model", 1, targs, sizeof targs), out, out, c.tta);
    for (int m = 0; m < nm && !s; m++) {
        snprintf(res[m].name, sizeof res[m].name, "%s", names[m]);
        if (m > M_ENS) {
            printf("  %s\n", names[m]);
            s = call("segment --model %s/models/%s/best.kds --dataset %s/data/test --out %s/pred/%s "
                     "--tta %s", out, names[m], out, out, names[m], c.tta);
            if (s) break;
        }
        if (!(s = kd_path_printf(d, sizeof d, "pred/%s", names[m])))
            s = evaluate_in(out, d, "test", &res[m].ev);
    }
    if (s) goto fail_free;
    stage(6, nst, "results");
    if ((s = write_tables(out, res, nm)) || (s = write_boxplot(out, res, nm))) goto fail_free;
    if ((s = kd_path_join(d, sizeof d, out, "data/test")) || (s = write_example(out, d, res, nm)))
        goto fail_free;
    double base = mean3(res[M_BASE].ev), dist = mean3(res[M_DIST].ev), ens = mean3(res[M_ENS].ev);
    double best_t = 0;
    int beats_all = 1;
    for (int t = 0; t < 3; t++) {
        double v = mean3(res[t].ev);
        if (v > best_t) best_t = v;
        if (dist <= v) beats_all = 0;
    }
    printf("\nmean Dice over WT, TC, ET: ensemble %.3f, best teacher %.3f, student baseline %.3f, "
           "student distilled %.3f\n",
           ens, best_t, base, dist);
    printf("oracle student (the unlabeled cases with their true labels) %.3f\n", mean3(res[M_ORACLE].ev));
    if (online) printf("student distilled online %.3f\n", mean3(res[M_ONLINE].ev));
    printf("on the unlabeled cases, against their hidden truth: the ensemble's annotations %.3f, "
           "the baseline student %.3f (what the teachers can teach beyond the labeled cases: "
           "%+.3f)\n", ann[3], own[3], ann[3] - own[3]);
    /* "beats" only where the paired difference is at least two standard errors */
    paired_diff vb = paired(res[M_DIST].ev, res[M_BASE].ev), ve = paired(res[M_DIST].ev, res[M_ENS].ev);
    const char *verdict = vb.mean > 2 * vb.se ? "beats" : vb.mean < -2 * vb.se ? "is worse than"
                                                                              : "ties with";
    printf("distilled student %s the baseline student: %+.3f ± %.3f mean Dice per case (paired, "
           "standard error), better on %d of %d test cases\n",
           verdict, vb.mean, vb.se, vb.wins, vb.n);
    for (int t = 0; t < 3; t++) {
        paired_diff vt = paired(res[M_DIST].ev, res[t].ev);
        printf("  against %-10s %+.3f ± %.3f, better on %d of %d\n", res[t].name, vt.mean, vt.se,
               vt.wins, vt.n);
    }
    printf("  against ensemble   %+.3f ± %.3f, better on %d of %d\n", ve.mean, ve.se, ve.wins, ve.n);
    printf("distilled student %s every single teacher on the mean and is %.3f from the ensemble\n",
           beats_all ? "beats" : "does not beat", ens - dist);
    paired_diff vo = paired(res[M_ORACLE].ev, res[M_BASE].ev);
    printf("oracle student against the baseline: %+.3f ± %.3f, better on %d of %d (what the "
           "unlabeled cases are worth with perfect labels)\n", vo.mean, vo.se, vo.wins, vo.n);
    if (online) {
        vo = paired(res[M_ONLINE].ev, res[M_BASE].ev);
        printf("online-distilled student against the baseline: %+.3f ± %.3f, better on %d of %d\n",
               vo.mean, vo.se, vo.wins, vo.n);
    }
    printf("wrote %s/results.md, results.csv, dice_boxplot.png, example.png (%.0f s in all)\n", out,
           now_s() - g_t0);
fail_free:
    for (int m = 0; m < 8; m++) kd_eval_result_free(res[m].ev);
fail:
    kd_outdir_close(od);
    return s ? kd_cli_error("demo", s) : 0;
}

const kd_command kd_cmd_demo = {"demo", "run the paper's distillation experiment on phantoms", run,
                                help};
