/* kdseg distill: the student learns from labeled cases plus the teacher ensemble's
 * annotations (offline, the paper) or its live predictions (online). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "kdseg/sched.h"
#include "train_common.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg distill --data LABELED --out DIR [--unlabeled DIR]\n"
            "                     (--annotations ANN_DIR | --online --teacher T.kds ...) [options]\n\n"
            "Offline (the paper): the student trains on the labeled cases plus the unlabeled\n"
            "cases labeled by ANN_DIR (from kdseg annotate).\n"
            "Online: no files in between; the device scheduler runs the teacher ensemble on\n"
            "each augmented unlabeled patch and the student learns from the ensemble's soft\n"
            "probabilities on that same patch, mixed with labeled patches.\n\n"
            "  --unlabeled DIR       the unlabeled pool (default: the unlabeled cases of --data)\n"
            "  --pseudo-ratio X      share of steps drawn from pseudo-labeled/unlabeled cases\n"
            "                        (default 0.5)\n"
            "  --pseudo-weight W     weight of the loss on those steps (default 1)\n"
            "  --min-agreement X     offline: use only annotated cases whose teachers agree\n"
            "                        (mean pairwise Dice in ANN_DIR/agreement.csv) >= X\n"
            "  --pseudo-loss L       offline: loss on annotated cases (default paper)\n"
            "  --online              online distillation (needs --teacher)\n"
            "  --teacher T.kds       a teacher checkpoint (repeat for an ensemble)\n"
            "  --distill-loss L      online: loss against the soft targets: bce (default), mse,\n"
            "                        paper\n\n");
    kd_train_args_help(f);
}

/* ---- online -------------------------------------------------------------------- */

typedef struct online_ctx {
    kd_sampler *lab, *unl;
    float ratio;
    uint64_t seed;
    FILE *csv;
    double t_step;
    kd_schedule *sched;
    float lr;
    const char *path; /* of csv */
} online_ctx;

static int use_unlabeled(const online_ctx *c, long step) {
    uint64_t z = c->seed * 7919u + (uint64_t)step + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (int)(z % 1000) < (int)(c->ratio * 1000);
}

static kd_status online_batch(void *ctx, long step, float *img, float *tgt, int *labeled) {
    online_ctx *c = ctx;
    int u = use_unlabeled(c, step);
    *labeled = !u;
    return kd_sampler_batch(u ? c->unl : c->lab, step, img, tgt, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kd_status online_step(void *ctx, long step, int labeled, float loss, float gn) {
    online_ctx *c = ctx;
    double t = now_s();
    fprintf(c->csv, "%ld,%s,%.6f,%.6g,%.6g,%.4f,,,\n", step, labeled ? "labeled" : "teachers",
            (double)loss, (double)kd_schedule_lr(c->sched, c->lr, step), (double)gn, t - c->t_step);
    c->t_step = t;
    if (fflush(c->csv) != 0 || ferror(c->csv))
        return kd_fail(KD_ERR_IO, "%s: write failed at step %ld: %s", c->path, step, strerror(errno));
    return KD_OK;
}

static kd_status save(kd_train_session *s, const char *name, long step, double best) {
    char path[KD_PATH_MAX], *meta = NULL;
    kd_status st = kd_path_join(path, sizeof path, s->a.out, name);
    if (st) return st;
    if (asprintf(&meta, "step=%ld\nseed=%ld\nbest_dice=%.6f\nmode=online\n%s", step, s->a.seed, best,
                 s->extra) < 0)
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "checkpoint %s: metadata", path);
    st = kd_checkpoint_save(path, s->m, s->o, meta);
    free(meta);
    return st;
}

static kd_status run_online(kd_train_session *s, kd_sampler *unl, kd_model **teachers, int nt,
                            float ratio, kd_loss_kind dloss, float dweight) {
    kd_sched_config c;
    memset(&c, 0, sizeof c);
    c.batch = s->a.batch;
    memcpy(c.patch, s->a.patch, sizeof c.patch);
    c.lr = (float)s->a.lr;
    c.sched = s->tc.sched;
    c.label_loss = s->loss;
    c.distill_loss = dloss;
    c.distill_weight = dweight;
    kd_sched *sc = NULL;
    kd_status st = kd_sched_create(s->m, s->o, teachers, nt, &c, &sc);
    if (st) return st;
    char path[KD_PATH_MAX];
    if ((st = kd_path_join(path, sizeof path, s->a.out, "train.csv"))) {
        kd_sched_free(sc);
        return st;
    }
    online_ctx oc = {s->smp, unl, ratio, (uint64_t)s->a.seed, fopen(kd_output_target(path), s->start ? "a" : "w"),
                     now_s(), &s->tc.sched, (float)s->a.lr, path};
    if (!oc.csv) {
        kd_sched_free(sc);
        return kd_fail(KD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    if (!s->start) fprintf(oc.csv, "step,kind,loss,lr,grad_norm,seconds,val_wt,val_tc,val_et\n");
    double best = s->tc.best_so_far, t0 = now_s();
    long step = s->start, total_steps = 0, teacher_jobs = 0;
    double job[KD_JOB_KINDS] = {0}, busy_w = 0, seconds = 0;
    size_t peak = 0;
    while (step < s->a.steps && !st) {
        long end = s->a.val_every > 0 ? (step / s->a.val_every + 1) * s->a.val_every : s->a.steps;
        if (end > s->a.steps) end = s->a.steps;
        kd_sched_report rep;
        st = kd_sched_run(sc, step, end, online_batch, &oc, online_step, &oc, &kd_stop_flag, &rep);
        step += rep.steps;
        total_steps += rep.steps;
        teacher_jobs += rep.teacher_jobs;
        seconds += rep.seconds;
        for (int k = 0; k < KD_JOB_KINDS; k++) job[k] += rep.job_seconds[k];
        if (rep.busy_fraction >= 0) busy_w += rep.busy_fraction * rep.seconds;
        if (rep.peak_device_bytes > peak) peak = rep.peak_device_bytes;
        if (st) break;
        double d[3] = {NAN, NAN, NAN};
        if (s->a.val_cases > 0 && s->a.val_every > 0) {
            if ((st = kd_validate(&s->vs, s->m, d))) break;
            double mean = (d[0] + d[1] + d[2]) / 3;
            fprintf(oc.csv, "%ld,validation,,,,,%.4f,%.4f,%.4f\n", step - 1, d[0], d[1], d[2]);
            if (mean > best) {
                best = mean;
                if ((st = save(s, "best.kds", step, best))) break;
            }
            if (!s->a.quiet)
                kd_log_progress("step %ld/%d validation Dice WT %.3f TC %.3f ET %.3f", step,
                       s->a.steps, d[0], d[1], d[2]);
        }
        if (fflush(oc.csv) != 0 || ferror(oc.csv)) {
            st = kd_fail(KD_ERR_IO, "%s: write failed at step %ld: %s", path, step, strerror(errno));
            break;
        }
        if ((st = save(s, "last.kds", step, best))) break;
    }
    if (st == KD_ERR_INTERRUPTED) {
        kd_status sv = save(s, "last.kds", step, best);
        if (sv) st = sv;
    }
    fclose(oc.csv);
    /* the scheduler's report is printed even with --quiet (the demo shows it) */
    {
        printf("online distillation: %ld steps (%ld with teacher jobs) in %.1f s\n", total_steps,
               teacher_jobs, now_s() - t0);
        if (busy_w > 0)
            printf("scheduler: device busy %.1f%%, device time teachers %.1f s, student %.1f s, "
                   "other %.1f s, peak device memory %.1f MiB with %d teachers resident\n",
                   100.0 * busy_w / (seconds > 0 ? seconds : 1), job[KD_JOB_TEACHER],
                   job[KD_JOB_STUDENT], job[KD_JOB_OTHER], peak / 1048576.0, nt);
        else
            printf("scheduler: peak device memory %.1f MiB with %d teachers resident (busy "
                   "fraction needs KDSEG_PROFILE=quiet)\n", peak / 1048576.0, nt);
    }
    kd_sched_free(sc);
    return st;
}

/* Keeps in idx[0..n) only the annotated cases whose mean pairwise Dice between teachers
 * (ANN_DIR/agreement.csv, written by kdseg annotate with two or more teachers) is at least
 * min: disagreement marks the pseudo-labels least worth learning from. */
static kd_status filter_by_agreement(const char *ann, const kd_dataset *pool, int *idx, int *n,
                                     double min, int quiet) {
    char path[KD_PATH_MAX], line[1024];
    kd_status ps = kd_path_join(path, sizeof path, ann, "agreement.csv");
    if (ps) return ps;
    FILE *f = fopen(path, "r");
    if (!f)
        return kd_fail(KD_ERR_IO, "%s: cannot read (--min-agreement needs the agreement file that "
                       "kdseg annotate writes with two or more teachers)", path);
    int kept = 0, low = 0, missing = 0, lineno = 0;
    char **names = NULL;
    double *vals = NULL;
    int nrows = 0, cap = 0;
    kd_status st = KD_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (lineno == 1 && !strncmp(line, "case,", 5)) continue;
        char *comma = strchr(line, ',');
        char *last = strrchr(line, ',');
        char *end = NULL;
        double v = last ? strtod(last + 1, &end) : NAN;
        if (!comma || !end || end == last + 1 || !(v >= 0 && v <= 1)) {
            st = kd_fail(KD_ERR_FORMAT, "%s:%d: expected 'case,wt,tc,et,mean' with Dice in [0, 1]",
                         path, lineno);
            break;
        }
        *comma = 0;
        if (nrows == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            double *nv = nn ? realloc(vals, (size_t)cap * sizeof *nv) : NULL;
            if (nn) names = nn;
            if (!nn || !nv) {
                st = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
                break;
            }
            vals = nv;
        }
        names[nrows] = strdup(line);
        if (!names[nrows]) {
            st = kd_fail(KD_ERR_OUT_OF_MEMORY, "%s", path);
            break;
        }
        vals[nrows++] = v;
    }
    fclose(f);
    for (int i = 0; i < *n && !st; i++) {
        const char *name = kd_dataset_case_name(pool, idx[i]);
        int r = nrows - 1; /* the last row of a case wins (a re-annotated case) */
        while (r >= 0 && strcmp(names[r], name)) r--;
        if (r < 0) missing++;
        else if (vals[r] < min) low++;
        else idx[kept++] = idx[i];
    }
    for (int r = 0; r < nrows; r++) free(names[r]);
    free(names);
    free(vals);
    if (st) return st;
    if (!quiet || !kept)
        printf("--min-agreement %.2f: kept %d of %d annotated cases (%d below, %d not in %s)\n",
               min, kept, *n, low, missing, path);
    *n = kept;
    if (!kept)
        return kd_fail(KD_ERR_INVALID_ARG, "%s: no annotated case has a teacher agreement of at "
                       "least %.2f", path, min);
    return KD_OK;
}

static int run(int argc, char **argv) {
    kd_train_args a;
    if (kd_train_args_init("distill", argc, argv, &a)) return 2;
    const char *unlabeled = NULL, *teachers[16], *pseudo_loss = "paper", *distill_loss = "bce";
    int nt = 0, online = 0, r;
    double ratio = 0.5, weight = 1.0, min_agree = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((r = kd_train_args_parse_one("distill", argc, argv, &i, &a)) == 1) continue;
        if (r == 2) return 2;
        if (kd_cli_opt(argc, argv, &i, "--unlabeled", &v)) unlabeled = v;
        else if (kd_cli_opt(argc, argv, &i, "--teacher", &v)) {
            if (!v || nt == 16) return kd_cli_unknown("distill", "--teacher");
            teachers[nt++] = v;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-loss", &v)) pseudo_loss = v;
        else if (kd_cli_opt(argc, argv, &i, "--distill-loss", &v)) distill_loss = v;
        else if (kd_cli_opt(argc, argv, &i, "--pseudo-ratio", &v)) {
            if (kd_cli_float("distill", "--pseudo-ratio", v, 0, 1, &ratio)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--pseudo-weight", &v) ||
                   kd_cli_opt(argc, argv, &i, "--distill-weight", &v)) {
            if (kd_cli_float("distill", "--pseudo-weight", v, 0, 100, &weight)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--min-agreement", &v)) {
            if (kd_cli_float("distill", "--min-agreement", v, 0, 1, &min_agree)) return 2;
        } else if (kd_cli_flag(argv, i, "--online")) online = 1;
        else return kd_cli_unknown("distill", argv[i]);
    }
    if (!a.out || (!a.data && !a.synthetic)) {
        fprintf(stderr, "kdseg distill: --data (or --synthetic) and --out are required\n");
        return 2;
    }
    if (online ? nt == 0 : !a.annotations) {
        fprintf(stderr, "kdseg distill: offline needs --annotations ANN_DIR; --online needs "
                        "--teacher\n");
        return 2;
    }
    kd_loss_kind pl, dl;
    kd_status st = kd_loss_parse(pseudo_loss, &pl);
    if (!st) st = kd_loss_parse(distill_loss, &dl);
    if (st) return kd_cli_error("distill", st);
    /* annotations belong to the unlabeled pool: a separate dataset when given */
    const char *ann = a.annotations;
    if (unlabeled) a.annotations = NULL;
    kd_train_session s;
    kd_dataset *ud = NULL;
    kd_sampler *us = NULL;
    kd_model *tm[16] = {0};
    kd_batch_source bs;
    memset(&bs, 0, sizeof bs);
    int *idx = NULL, n = 0;
    st = kd_train_session_open("distill", &a, &s);
    if (st) goto done;
    const kd_dataset *pool = s.ds;
    if (unlabeled) {
        kd_dataset_opts o;
        memset(&o, 0, sizeof o);
        if ((st = kd_layout_parse(a.layout, &o.layout))) goto done;
        o.modalities = a.modalities;
        o.annotations = online ? NULL : ann;
        if ((st = kd_dataset_open(unlabeled, &o, &ud))) goto done;
        pool = ud;
    }
    idx = malloc(sizeof(int) * (size_t)(kd_dataset_count(pool) + 1));
    if (!idx) {
        st = kd_fail(KD_ERR_OUT_OF_MEMORY, "case list");
        goto done;
    }
    for (int i = 0; i < kd_dataset_count(pool); i++)
        if (kd_dataset_case_labeled(pool, i) == (online ? 0 : 2)) idx[n++] = i;
    if (!n) {
        st = kd_fail(KD_ERR_INVALID_ARG, "%s: no %s cases", unlabeled ? unlabeled : a.data,
                     online ? "unlabeled" : "annotated (check --annotations)");
        goto done;
    }
    if (!online && min_agree > 0 &&
        (st = filter_by_agreement(ann, pool, idx, &n, min_agree, a.quiet)))
        goto done;
    /* the pool trained on must not hold a held-out case (e.g. through a link) */
    if ((st = kd_dataset_check_disjoint(s.ds, s.lab + s.nlab - a.val_cases, a.val_cases, "validation",
                                        pool, idx, n, online ? "unlabeled training" : "annotated training")))
        goto done;
    kd_sampler_opts so = s.so;
    so.allow_unlabeled = online;
    so.seed = s.so.seed + 1000003;
    if ((st = kd_sampler_create(&so, &us)) || (st = kd_sampler_add(us, pool, idx, n))) goto done;
    if (!a.quiet)
        printf("distilling %s: %d labeled + %d %s cases, %.0f%% of steps from the latter\n",
               online ? "online" : "offline", s.nlab - a.val_cases, n,
               online ? "unlabeled" : "ensemble-annotated", 100 * ratio);
    if (online) {
        for (int i = 0; i < nt; i++)
            if ((st = kd_checkpoint_load(teachers[i], s.dev, &tm[i], NULL, NULL, NULL, 0))) goto done;
        st = run_online(&s, us, tm, nt, (float)ratio, dl, (float)weight);
    } else {
        bs.kind_a = s.loss;
        bs.kind_b = pl;
        bs.weight_b = (float)weight;
        if ((st = kd_batch_source_init(&bs, s.smp, us, (float)ratio, (uint64_t)a.seed, s.start, a.threads)))
            goto done;
        st = kd_train_session_run(&s, &bs);
    }
done:
    kd_batch_source_free(&bs);
    for (int i = 0; i < nt; i++) kd_model_free(tm[i]);
    kd_sampler_free(us);
    free(idx);
    kd_train_session_close(&s);
    kd_dataset_free(ud);
    return st ? kd_cli_error("distill", st) : 0;
}

const kd_command kd_cmd_distill = {"distill", "train the student from labeled + teacher-labeled cases",
                                   run, help};
