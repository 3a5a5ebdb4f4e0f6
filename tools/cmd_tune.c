/* kdseg tune: measure the direct conv kernels' launch parameters on the present device and
 * store the winners in the tuning table (kdseg/tune.h). For every conv shape of the
 * student (kd_conv_case, the shapes of `kdseg bench ops`) and every pass, each
 * candidate of a small grid is first checked against the built-in default's output (same
 * numbers within 1e-4 of the largest value), then timed: median of --reps runs after the
 * check run, which doubles as the warm-up. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "kdseg/tune.h"

#define MAX_CANDS 64
#define TOLERANCE 1e-4
/* a candidate replaces the default only when at least this much faster (noise margin) */
#define MIN_GAIN 0.97

static const char *pass_names[] = {"fwd", "bwd_data", "bwd_weight"};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void add_cand(kd_conv_tune *c, int *n, const kd_conv_tune *p) {
    for (int i = 0; i < *n; i++)
        if (kd_conv_tune_equal(&c[i], p)) return;
    if (*n < MAX_CANDS) c[(*n)++] = *p;
}

/* The candidate grid of a pass (forward-like: fwd, bwd_data; or weight gradient). The
 * built-in default comes first (the reference every candidate must match), then the
 * built-in entry for this device's vendor and type if there is one (the base, and the
 * incumbent *inc that a winner must beat by 3%). CPUs: one change at a time around the base
 * (local sizes, vector width, loop order, register blocks, rows, taps, chunks, the
 * few-output-channel kernels), as the measured base is near the best and each candidate
 * costs seconds. Other
 * devices: a small product grid over work-group shape, vector width and loop order (or
 * chunks), then the register blocks one at a time around the base. */
static int make_grid(const kd_dev_ident *id, int wgrad, kd_conv_tune *c, int *inc) {
    int n = 0;
    *inc = 0;
    kd_conv_tune d = kd_conv_tune_default, t, base = d;
    add_cand(c, &n, &d);
    int nb;
    const kd_tune_entry *b = kd_conv_tune_builtin(&nb);
    if (kd_conv_tune_resolve(b, nb, id, wgrad ? "conv|bwd_weight|" : "conv|fwd|", &base)) {
        add_cand(c, &n, &base);
        *inc = n - 1;
    }
    static const int blocks[][2] = {{4, 1}, {8, 1}, {8, 2}, {4, 4}};
    if (id->rank == 2) { /* CPU */
        if (!wgrad) {
            static const int lxs[] = {2, 4}, lys[] = {2}, cos[] = {-1, 64, 1024};
            for (int i = 0; i < 2; i++) t = base, t.lx = lxs[i], add_cand(c, &n, &t);
            for (int i = 0; i < 1; i++) t = base, t.ly = lys[i], add_cand(c, &n, &t);
            t = base, t.vmax = 8, add_cand(c, &n, &t);
            for (int i = 0; i < 3; i++) t = base, t.coouter = cos[i], add_cand(c, &n, &t);
            t = base, t.local = KD_TUNE_LOCAL_DRIVER, add_cand(c, &n, &t);
            for (int i = 0; i < 4; i++)
                t = base, t.wb = blocks[i][0], t.cb = blocks[i][1], add_cand(c, &n, &t);
            t = base, t.rows = 3 - base.rows, add_cand(c, &n, &t);
            static const int pws[] = {0, 2, 4, 8};
            for (int i = 0; i < 4; i++) t = base, t.pw = pws[i], add_cand(c, &n, &t);
        } else {
            static const int chs[] = {16, 32, 128}, wkbs[] = {0, 256, 4096};
            for (int i = 0; i < 3; i++) t = base, t.chunks = chs[i], add_cand(c, &n, &t);
            for (int i = 0; i < 3; i++) t = base, t.wkb = wkbs[i], add_cand(c, &n, &t);
            t = base, t.vmax = 8, add_cand(c, &n, &t);
            t = base, t.local = KD_TUNE_LOCAL_DRIVER, add_cand(c, &n, &t);
            for (int i = 0; i < 4; i++)
                t = base, t.wci = blocks[i][0], t.wcb = blocks[i][1], add_cand(c, &n, &t);
            t = base, t.wt3 = !base.wt3, add_cand(c, &n, &t);
        }
        t = base, t.small = !base.small, add_cand(c, &n, &t);
        return n;
    }
    static const int vms[] = {16, 8, 1};
    if (!wgrad) {
        static const int wg[][2] = {{0, 0}, {32, 1}, {64, 1}, {128, 1}, {32, 4}, {16, 8}, {8, 8}};
        static const int cos[] = {256, -1};
        for (int g = 0; g < 7; g++)
            for (int v = 0; v < 3; v++)
                for (int o = 0; o < 2; o++) {
                    t = d;
                    t.local = wg[g][0] ? KD_TUNE_LOCAL_SET : KD_TUNE_LOCAL_DRIVER;
                    if (wg[g][0]) t.lx = wg[g][0], t.ly = wg[g][1];
                    t.vmax = vms[v], t.coouter = cos[o];
                    add_cand(c, &n, &t);
                }
        for (int i = 0; i < 4; i++)
            t = base, t.wb = blocks[i][0], t.cb = blocks[i][1], add_cand(c, &n, &t);
        t = base, t.rows = 3 - base.rows, add_cand(c, &n, &t);
        t = base, t.pw = base.pw ? 0 : 4, add_cand(c, &n, &t);
    } else {
        static const int chs[] = {64, 256, 1024}, wls[] = {0, 32, 128};
        for (int h = 0; h < 3; h++)
            for (int v = 0; v < 3; v++)
                for (int w = 0; w < 3; w++) {
                    t = d;
                    t.chunks = chs[h], t.vmax = vms[v];
                    t.local = wls[w] ? KD_TUNE_LOCAL_SET : KD_TUNE_LOCAL_DRIVER;
                    if (wls[w]) t.wlx = wls[w];
                    add_cand(c, &n, &t);
                }
        for (int i = 0; i < 4; i++)
            t = base, t.wci = blocks[i][0], t.wcb = blocks[i][1], add_cand(c, &n, &t);
        t = base, t.wt3 = !base.wt3, add_cand(c, &n, &t);
    }
    t = base, t.small = !base.small, add_cand(c, &n, &t);
    return n;
}

/* Largest |got - ref| over the largest |ref|; infinite when got holds a NaN. */
static double rel_err(const float *got, const float *ref, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isinf(got[i])) return INFINITY;
        double a = fabs((double)ref[i]), d = fabs((double)got[i] - (double)ref[i]);
        if (a > m) m = a;
        if (d > e) e = d;
    }
    return m > 0 ? e / m : e;
}

/* One run of a pass with parameters p into host memory (dw zeroed first); trace[]
 * receives the conv kernel launches it made. */
static kd_status run_into(kd_device *dev, kd_conv_case *b, kd_conv_pass pass,
                          const kd_conv_tune *p, float *host, char *trace, size_t ntrace) {
    kd_conv_tune_force(p);
    kd_status s = pass == KD_PASS_BWD_WEIGHT ? kd_conv_case_out_zero(b, pass) : KD_OK;
    kd_conv_tune_trace_begin();
    if (!s) s = kd_conv_case_run(b, pass);
    kd_conv_tune_trace_end(trace, ntrace);
    if (!s) s = kd_conv_case_out_read(b, pass, host);
    if (!s) s = kd_device_finish(dev);
    return s;
}

static kd_status time_once(kd_device *dev, kd_conv_case *b, kd_conv_pass pass,
                           const kd_conv_tune *p, double *ms) {
    kd_conv_tune_force(p);
    double t0 = now_ms();
    kd_status s = kd_conv_case_run(b, pass);
    if (!s) s = kd_device_finish(dev);
    *ms = now_ms() - t0;
    return s;
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

typedef struct tune_opts {
    int patch, reps, dry_run;
    const char *only;
} tune_opts;

/* Per pass: the grid and, per candidate, the time summed over the shapes tuned and
 * whether it passed on every one of them (the pass-level entry for untuned shapes). */
typedef struct pass_state {
    kd_conv_tune cand[MAX_CANDS];
    int ncand, shapes;
    int inc; /* the incumbent candidate: the built-in entry for this device (1), else 0 */
    double sum[MAX_CANDS];
    int ok[MAX_CANDS];
} pass_state;

static void entry_set(kd_tune_entry *e, const kd_dev_ident *id, const char *scope,
                      const kd_conv_tune *p, double ms_default, double ms_best) {
    memset(e, 0, sizeof *e);
    e->level = KD_TUNE_LEVEL_NAME;
    snprintf(e->match, sizeof e->match, "%s", id->name);
    e->rank = -1;
    snprintf(e->scope, sizeof e->scope, "%s", scope);
    e->p = *p;
    e->ms_default = ms_default;
    e->ms_best = ms_best;
    e->user = 1;
}

/* Tune one (shape, pass). Every candidate runs once and is checked against the default;
 * a candidate whose conv launches (kernels, ranges, local sizes) are exactly those of an
 * earlier one shares its time. The distinct ones are timed in interleaved rounds (each
 * round runs each once), so drift of the machine's load hits all of them alike. Returns 0,
 * or the exit code of a failure of the default itself. */
static int tune_one(kd_device *dev, const kd_dev_ident *id, const kd_conv_layer *r, int edge,
                    kd_conv_case *b, kd_conv_pass pass, pass_state *ps,
                    const tune_opts *o, kd_tune_entry *out, int *nout) {
    size_t n = kd_conv_case_out_numel(b, pass);
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    static char traces[MAX_CANDS][2048];
    double ms[MAX_CANDS], t[MAX_CANDS][64];
    int ok[MAX_CANDS], same[MAX_CANDS], nok = 0, ndistinct = 0, rc = 0;
    const int nc = ps->ncand;
    kd_status s = (ref && got) ? KD_OK : kd_fail(KD_ERR_OUT_OF_MEMORY, "tune: %zu floats", n);
    if (!s) s = run_into(dev, b, pass, &ps->cand[0], ref, traces[0], sizeof traces[0]);
    if (s) {
        rc = kd_cli_error("tune", s);
        goto done;
    }
    for (int i = 0; i < nc; i++) {
        ok[i] = i == 0, same[i] = i, ms[i] = -1;
        if (i == 0) continue;
        char pstr[200];
        kd_conv_tune_format(&ps->cand[i], pstr, sizeof pstr);
        s = run_into(dev, b, pass, &ps->cand[i], got, traces[i], sizeof traces[i]);
        if (s) {
            kd_log(KD_LOG_INFO, "tune: %s %s: %s failed: %s", r->name, pass_names[pass], pstr,
                   kd_last_error());
            kd_clear_error();
            kd_device_finish(dev);
            kd_clear_error();
            continue;
        }
        double e = rel_err(got, ref, n);
        if (!(e <= TOLERANCE)) {
            fprintf(stderr, "kdseg tune: %s %s: %s differs from the default by %.3g (rejected)\n",
                    r->name, pass_names[pass], pstr, e);
            continue;
        }
        ok[i] = 1;
        for (int j = 0; j < i && same[i] == i; j++)
            if (ok[j] && same[j] == j && !strcmp(traces[i], traces[j])) same[i] = j;
    }
    for (int i = 0; i < nc; i++) {
        nok += ok[i];
        ndistinct += ok[i] && same[i] == i;
    }
    for (int rep = 0; rep < o->reps && !s; rep++)
        for (int i = 0; i < nc; i++) {
            if (!ok[i] || same[i] != i) continue;
            if ((s = time_once(dev, b, pass, &ps->cand[i], &t[i][rep]))) {
                if (i == 0) break;
                kd_clear_error(); /* ran before: a failure now drops it */
                kd_device_finish(dev);
                kd_clear_error();
                ok[i] = 0;
                s = KD_OK;
            }
        }
    if (s) {
        rc = kd_cli_error("tune", s);
        goto done;
    }
    for (int i = 0; i < nc; i++)
        if (ok[i] && same[i] == i) ms[i] = median(t[i], o->reps);
    for (int i = 0; i < nc; i++)
        if (ok[i] && same[i] != i) {
            ok[i] = ok[same[i]];
            ms[i] = ms[same[i]];
        }
    /* the incumbent: what this device runs without a user entry */
    int inc = ok[ps->inc] ? ps->inc : 0, best = inc;
    for (int i = 0; i < nc; i++)
        if (ok[i] && ms[i] < ms[best]) best = i;
    if (ms[best] > MIN_GAIN * ms[inc]) best = inc;
    for (int i = 0; i < nc; i++) {
        if (ok[i]) ps->sum[i] += ms[i];
        else ps->ok[i] = 0;
    }
    ps->shapes++;
    char key[192], pstr[200], size[16], chk[16];
    kd_conv_case_key(b, pass, key, sizeof key);
    entry_set(&out[(*nout)++], id, key, &ps->cand[best], ms[inc], ms[best]);
    kd_conv_tune_format(&ps->cand[best], pstr, sizeof pstr);
    snprintf(size, sizeof size, "%d^3", edge);
    snprintf(chk, sizeof chk, "%d/%d/%d", nok, ndistinct, nc);
    printf("%-24s %-6s %-10s %8s %10.3f %10.3f %6.2fx  %s%s\n", pass ? "" : r->name, size,
           pass_names[pass], chk, ms[inc], ms[best], ms[inc] / ms[best],
           best == inc ? "kept: " : "", pstr);
    fflush(stdout);
done:
    free(ref);
    free(got);
    return rc;
}

/* Merge the new entries into the user file: this device's entries for the same scopes are
 * replaced, everything else is kept (a corrupt file is replaced as a whole). */
static int store(const char *path, const kd_tune_entry *add, int nadd) {
    kd_tune_entry *old = NULL;
    int nold = 0;
    char why[600];
    if (kd_conv_tune_file_read(path, &old, &nold, why, sizeof why) < 0)
        fprintf(stderr, "kdseg tune: replacing the unreadable table (%s)\n", why);
    kd_tune_entry *all = malloc((size_t)(nold + nadd) * sizeof *all);
    if (!all) {
        free(old);
        fprintf(stderr, "kdseg tune: out of memory\n");
        return 1;
    }
    int n = 0;
    for (int i = 0; i < nold; i++) {
        int replaced = 0;
        for (int j = 0; j < nadd && !replaced; j++)
            replaced = old[i].level == KD_TUNE_LEVEL_NAME && !strcmp(old[i].match, add[j].match) &&
                       !strcmp(old[i].scope, add[j].scope);
        if (!replaced) all[n++] = old[i];
    }
    memcpy(all + n, add, (size_t)nadd * sizeof *all);
    n += nadd;
    free(old);
    kd_status s = kd_conv_tune_file_write(path, all, n);
    free(all);
    if (s) return kd_cli_error("tune", s);
    kd_conv_tune_reload();
    return 0;
}

static int tune_device(kd_device *dev, const tune_opts *o) {
    kd_dev_ident id;
    kd_device_ident(dev, &id);
    pass_state *ps = calloc(3, sizeof *ps);
    int nlayers;
    const kd_conv_layer *layers = kd_conv_layers(&nlayers);
    kd_tune_entry *out = calloc((size_t)nlayers * 3 + 3, sizeof *out);
    if (!ps || !out) {
        free(ps);
        free(out);
        fprintf(stderr, "kdseg tune: out of memory\n");
        return 1;
    }
    for (int p = 0; p < 3; p++) {
        ps[p].ncand = make_grid(&id, p == KD_PASS_BWD_WEIGHT, ps[p].cand, &ps[p].inc);
        for (int i = 0; i < ps[p].ncand; i++) ps[p].ok[i] = 1;
    }
    printf("tuning the direct conv kernels on %s, %d^3 patch, batch 1\n", id.name, o->patch);
    printf("candidates: %d (fwd, bwd_data), %d (bwd_weight); each checked against the default "
           "(within %.0e),\nthen the distinct launches timed: median of %d interleaved runs. "
           "ok/distinct/all: candidates that\nmatched the default / launched differently / "
           "tried\n\n",
           ps[0].ncand, ps[2].ncand, TOLERANCE, o->reps);
    printf("%-24s %-6s %-10s %8s %10s %10s %7s  %s\n", "layer", "size", "pass", "ok/dis/n",
           "untuned ms", "best ms", "gain", "chosen parameters");
    double t0 = now_ms();
    kd_conv_force(KD_CONV_DIRECT);
    int nout = 0, rc = 0, rows = 0;
    for (int i = 0; i < nlayers && !rc; i++) {
        const kd_conv_layer *r = &layers[i];
        if (o->only ? !strstr(r->name, o->only) : kd_conv_layer_is_teacher(r)) continue;
        int edge = o->patch >> r->level;
        if (edge < r->k) continue;
        kd_conv_case *b = NULL;
        kd_status s = kd_conv_case_create(dev, r, edge, 1234u + (unsigned)i, &b);
        if (s) rc = kd_cli_error("tune", s);
        for (int p = 0; p < 3 && !rc; p++)
            rc = tune_one(dev, &id, r, edge, b, (kd_conv_pass)p, &ps[p], o, out, &nout);
        kd_conv_case_free(b);
        rows++;
    }
    kd_conv_tune_force(NULL);
    kd_conv_force(KD_CONV_AUTO);
    if (!rc && rows == 0) {
        fprintf(stderr, "kdseg tune: no conv shape matches '%s' at a %d^3 patch\n",
                o->only ? o->only : "", o->patch);
        rc = 2;
    }
    if (!rc) {
        printf("\nfor shapes not tuned here (other sizes), per pass: the candidate fastest over "
               "all shapes above\n");
        for (int p = 0; p < 3; p++) {
            int inc = ps[p].ok[ps[p].inc] ? ps[p].inc : 0, best = inc;
            for (int i = 0; i < ps[p].ncand; i++)
                if (ps[p].ok[i] && ps[p].sum[i] < ps[p].sum[best]) best = i;
            if (ps[p].sum[best] > MIN_GAIN * ps[p].sum[inc]) best = inc;
            char pstr[200];
            kd_conv_tune_format(&ps[p].cand[best], pstr, sizeof pstr);
            printf("%-10s total %10.3f -> %10.3f ms  %s%s\n", pass_names[p], ps[p].sum[inc],
                   ps[p].sum[best], best == inc ? "kept: " : "", pstr);
            entry_set(&out[nout++], &id, pass_names[p], &ps[p].cand[best], ps[p].sum[inc],
                      ps[p].sum[best]);
        }
        char path[1200];
        kd_conv_tune_path(path, sizeof path);
        printf("\ntuned %d shapes in %.1f s\n", rows, (now_ms() - t0) * 1e-3);
        if (o->dry_run)
            printf("dry run: %d entries not written (%s)\n", nout, path);
        else if (!(rc = store(path, out, nout)))
            printf("wrote %d entries for %s to %s\n", nout, id.name, path);
    }
    free(ps);
    free(out);
    return rc;
}

static void help(FILE *f) {
    fprintf(f,
            "usage: kdseg tune [--patch N|D,H,W] [--only TEXT] [--reps N] [--dry-run]\n\n"
            "Measures the direct conv kernels' launch parameters (local sizes, vector width,\n"
            "loop order, weight-gradient chunks) on the present device, for every conv shape\n"
            "of the student (the shapes of `kdseg bench ops`) and every pass. Each candidate\n"
            "is checked against the built-in default's output (within 1e-4 of the largest\n"
            "value) before it is timed; a candidate replaces what the device runs untuned (its\n"
            "built-in vendor entry, else the default) only when at least 3%% faster. The winners, per shape and per pass (for shapes not tuned), are\n"
            "stored for this device's name in the tuning table in the cache folder\n"
            "(conv-tuning.txt), which every later run reads; `kdseg devices` shows the entry\n"
            "that applies.\n\n"
            "  --patch N|D,H,W  the (cubic) patch the shapes are taken at (default 64)\n"
            "  --only TEXT  only layers whose name contains TEXT (also the teachers' \"T ...\")\n"
            "  --reps N     timed runs per candidate, median (default 5)\n"
            "  --dry-run    measure and print, but do not write the table\n\n"
            "The table: $KDSEG_TUNE_FILE, else conv-tuning.txt in the program cache.\n\n"
            "examples:\n"
            "  kdseg tune --patch 16 --only \"conv 16\" --reps 1 --dry-run\n"
            "  kdseg tune --patch 16 --only \"down 16\" --reps 1\n");
}

static int run(int argc, char **argv) {
    tune_opts o = {64, 5, 0, NULL};
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_cube("tune", "--patch", v, 4, 512, &o.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--reps", &v)) {
            if (kd_cli_int("tune", "--reps", v, 1, 64, &o.reps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--only", &v)) {
            if (!v) return kd_cli_unknown("tune", argv[i]);
            o.only = v;
        } else if (kd_cli_flag(argv, i, "--dry-run")) {
            o.dry_run = 1;
        } else {
            return kd_cli_unknown("tune", argv[i]);
        }
    }
    kd_device *dev = kd_cli_open_device("tune");
    if (!dev) return 1;
    int rc = tune_device(dev, &o);
    kd_device_free(dev);
    return rc;
}

const kd_command kd_cmd_tune = {"tune", "measure and store the conv kernels' launch parameters",
                                run, help};
