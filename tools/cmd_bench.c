/* kdseg bench: benchmarks as subcommands (a table below; `ops` measures the conv layers of
 * the student ResUNet). Timings are medians of several runs after a warm-up, each run
 * between two device waits; the device is named in the output. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ops/conv_internal.h"

/* Options shared by every bench subcommand. */
typedef struct bench_opts {
    int reps;          /* timed runs per measurement (median) */
    int patch;         /* cubic patch edge */
    const char *json;  /* --json FILE or NULL */
    const char *only;  /* substring filter on row names, or NULL */
    int impls;         /* bit 1: direct, bit 2: gemm */
    int cpu;           /* also print GFLOP per CPU-second (per-core efficiency) */
} bench_opts;

typedef struct bench_sub {
    const char *name;
    const char *summary;
    int (*run)(kd_device *dev, const bench_opts *o);
} bench_sub;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* CPU time of this process (all threads): on a CPU device shared with other jobs, flops per
 * CPU-second show a kernel's efficiency independent of how much of the machine we got. */
static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- bench ops: the conv layers ----------------------------------------------------------- */

/* A conv layer of the student at a patch of edge P: spatial size P >> level. */
typedef struct conv_row {
    const char *name;
    int level, ci, co, k, s, p, bias;
} conv_row;

/* The student ResUNet (widths 16, 32, 64, 128): encoder 3x3x3 convs per level, the input
 * and output convs, the 2x2x2 stride-2 down convs, and the decoder's 1x1x1 convs (2C -> C
 * after the skip concatenation at level i, and C_{i+1} -> C_i at level i+1 before upsampling). */
static const conv_row conv_rows[] = {
    {"input 4->16 k3", 0, 4, 16, 3, 1, 1, 1},
    {"conv 16 k3", 0, 16, 16, 3, 1, 1, 1},
    {"conv 32 k3", 1, 32, 32, 3, 1, 1, 1},
    {"conv 64 k3", 2, 64, 64, 3, 1, 1, 1},
    {"conv 128 k3", 3, 128, 128, 3, 1, 1, 1},
    {"down 16->32 k2s2", 0, 16, 32, 2, 2, 0, 1},
    {"down 32->64 k2s2", 1, 32, 64, 2, 2, 0, 1},
    {"down 64->128 k2s2", 2, 64, 128, 2, 2, 0, 1},
    {"dec 32->16 k1 (2C->C)", 0, 32, 16, 1, 1, 0, 1},
    {"dec 64->32 k1 (2C->C)", 1, 64, 32, 1, 1, 0, 1},
    {"dec 128->64 k1 (2C->C)", 2, 128, 64, 1, 1, 0, 1},
    {"dec 32->16 k1 (up)", 1, 32, 16, 1, 1, 0, 1},
    {"dec 64->32 k1 (up)", 2, 64, 32, 1, 1, 0, 1},
    {"dec 128->64 k1 (up)", 3, 128, 64, 1, 1, 0, 1},
    {"output 16->3 k1", 0, 16, 3, 1, 1, 0, 1},
};

typedef struct conv_bufs {
    kd_conv_params p;
    kd_tensor *x, *w, *b, *y, *dy, *dx, *dw, *db;
} conv_bufs;

static kd_status run_pass(conv_bufs *c, kd_conv_pass pass) {
    switch (pass) {
    case KD_PASS_FWD: return kd_conv3d_forward(&c->p, c->x, c->w, c->b, c->y);
    case KD_PASS_BWD_DATA: return kd_conv3d_backward_input(&c->p, c->dy, c->w, c->dx);
    default: return kd_conv3d_backward_weight(&c->p, c->x, c->dy, c->dw, NULL);
    }
}

/* Median ms of o->reps runs after one warm-up with impl forced. */
static kd_status time_pass(kd_device *dev, conv_bufs *c, kd_conv_pass pass, kd_conv_impl impl,
                           int reps, double *ms, double *cms) {
    kd_conv_force(impl);
    kd_status s = run_pass(c, pass);
    if (!s) s = kd_device_finish(dev);
    double t[64], ct[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps && !s; r++) {
        double t0 = now_ms(), c0 = cpu_ms();
        s = run_pass(c, pass);
        if (!s) s = kd_device_finish(dev);
        t[r] = now_ms() - t0;
        ct[r] = cpu_ms() - c0;
    }
    kd_conv_force(KD_CONV_AUTO);
    if (s) return s;
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    qsort(ct, (size_t)reps, sizeof ct[0], cmp_double);
    *ms = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    *cms = reps % 2 ? ct[reps / 2] : 0.5 * (ct[reps / 2 - 1] + ct[reps / 2]);
    return KD_OK;
}

static void conv_bufs_free(conv_bufs *c) {
    kd_tensor *all[] = {c->x, c->w, c->b, c->y, c->dy, c->dx, c->dw, c->db};
    for (int i = 0; i < 8; i++) kd_tensor_free(all[i]);
}

static kd_status conv_bufs_make(kd_device *dev, const conv_row *r, int edge, conv_bufs *c,
                                kd_conv_geom *g) {
    memset(c, 0, sizeof *c);
    c->p = (kd_conv_params){{r->k, r->k, r->k}, r->s, r->p, 1};
    int o = kd_conv_out_size(edge, r->k, r->s, r->p);
    kd_shape xs = kd_shape5(1, r->ci, edge, edge, edge), ys = kd_shape5(1, r->co, o, o, o);
    kd_shape ws = kd_shape5(1, 1, 1, 1, r->k * r->k * r->k * r->ci * r->co);
    kd_shape bs = kd_shape5(1, r->co, 1, 1, 1);
    kd_status s;
    if ((s = kd_tensor_create(dev, xs, &c->x)) || (s = kd_tensor_create(dev, ws, &c->w)) ||
        (s = kd_tensor_create(dev, bs, &c->b)) || (s = kd_tensor_create(dev, ys, &c->y)) ||
        (s = kd_tensor_create(dev, ys, &c->dy)) || (s = kd_tensor_create(dev, xs, &c->dx)) ||
        (s = kd_tensor_zeros(dev, ws, &c->dw)) || (s = kd_tensor_zeros(dev, bs, &c->db)))
        return s;
    /* small finite values (no denormals) */
    if ((s = kd_tensor_fill(c->x, 0.5f)) || (s = kd_tensor_fill(c->w, 0.01f)) ||
        (s = kd_tensor_fill(c->b, 0.1f)) || (s = kd_tensor_fill(c->dy, 0.25f)))
        return s;
    *g = (kd_conv_geom){1, r->ci, edge, edge, edge, r->co, o, o, o, {r->k, r->k, r->k},
                        r->s, r->p, 1, 0, 0};
    return KD_OK;
}

static const char *impl_name(kd_conv_impl i) {
    return i == KD_CONV_GEMM ? "gemm" : i == KD_CONV_DIRECT ? "direct" : "-";
}

static int bench_ops(kd_device *dev, const bench_opts *o) {
    static const char *pass_label[] = {"forward", "input-grad", "weight-grad"};
    FILE *js = NULL;
    if (o->json && !(js = fopen(o->json, "w"))) {
        fprintf(stderr, "kdseg bench: cannot write %s\n", o->json);
        return 1;
    }
    printf("conv layers of the student ResUNet at a %d^3 patch, batch 1, on %s\n", o->patch,
           kd_device_name(dev));
    printf("median of %d runs after a warm-up; GF/s = 2*MACs / time; weight-grad without bias\n\n",
           o->reps);
    printf("%-24s %-6s %-11s %9s %8s %9s %8s  %s\n", "layer", "size", "pass", "direct ms",
           "GF/s", "gemm ms", "GF/s", "chosen");
    if (js) fprintf(js, "{\"device\": \"%s\", \"patch\": %d, \"reps\": %d, \"rows\": [", kd_device_name(dev),
                    o->patch, o->reps);
    int first = 1, rc = 0;
    for (size_t i = 0; i < sizeof conv_rows / sizeof conv_rows[0] && !rc; i++) {
        const conv_row *r = &conv_rows[i];
        if (o->only && !strstr(r->name, o->only)) continue;
        int edge = o->patch >> r->level;
        if (edge < r->k) continue;
        conv_bufs c;
        kd_conv_geom g;
        kd_status s = conv_bufs_make(dev, r, edge, &c, &g);
        for (int pass = 0; pass < 3 && !s; pass++) {
            double ms[2] = {-1, -1}, cms[2] = {-1, -1};
            for (int im = 0; im < 2 && !s; im++)
                if (o->impls & (1 << im))
                    s = time_pass(dev, &c, (kd_conv_pass)pass, im ? KD_CONV_GEMM : KD_CONV_DIRECT,
                                  o->reps, &ms[im], &cms[im]);
            if (s) break;
            /* the chooser's pick (times both once if not stored yet) */
            kd_conv_force(KD_CONV_AUTO);
            if ((s = run_pass(&c, (kd_conv_pass)pass)) || (s = kd_device_finish(dev))) break;
            char key[160];
            g.has_bias = pass == KD_PASS_FWD && r->bias; /* as the ops key it */
            kd_conv_key(&g, (kd_conv_pass)pass, key, sizeof key);
            kd_conv_impl pick = kd_conv_choice_lookup(dev, key, NULL, NULL);
            if (pick == KD_CONV_AUTO && kd_conv_forced() != KD_CONV_AUTO) pick = kd_conv_forced();
            double gf = kd_conv_flops(&g) * 1e-6;
            char size[16], d[2][32];
            snprintf(size, sizeof size, "%d^3", edge);
            for (int im = 0; im < 2; im++)
                if (ms[im] >= 0) snprintf(d[im], sizeof d[im], "%9.2f %8.1f", ms[im], gf / ms[im]);
                else snprintf(d[im], sizeof d[im], "%9s %8s", "-", "-");
            printf("%-24s %-6s %-11s %s %s  %-6s", pass ? "" : r->name, size, pass_label[pass],
                   d[0], d[1], impl_name(pick));
            if (o->cpu)
                for (int im = 0; im < 2; im++)
                    if (cms[im] > 0) printf(" %7.1f", gf / cms[im]);
            printf("\n");
            fflush(stdout);
            if (js) {
                fprintf(js,
                        "%s\n  {\"layer\": \"%s\", \"size\": %d, \"cin\": %d, \"cout\": %d, "
                        "\"k\": %d, \"stride\": %d, \"pad\": %d, \"pass\": \"%s\", \"gflop\": %.6f, "
                        "\"direct_ms\": %.4f, \"gemm_ms\": %.4f, \"direct_cpu_ms\": %.4f, "
                        "\"gemm_cpu_ms\": %.4f, \"chosen\": \"%s\"}",
                        first ? "" : ",", r->name, edge, r->ci, r->co, r->k, r->s, r->p,
                        pass_label[pass], gf * 1e-3, ms[0], ms[1], cms[0], cms[1],
                        impl_name(pick));
                first = 0;
            }
        }
        conv_bufs_free(&c);
        if (s) rc = kd_cli_error("bench ops", s);
    }
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    return rc;
}

/* ---- the subcommand table ---------------------------------------------------------------- */

static const bench_sub subs[] = {
    {"ops", "time forward, input- and weight-gradient of every conv layer shape of the student, "
            "with each implementation, and the chooser's pick", bench_ops},
};
#define NSUBS ((int)(sizeof subs / sizeof subs[0]))

static void help(FILE *f) {
    fprintf(f, "usage: kdseg bench SUBCOMMAND [options]\n\nsubcommands:\n");
    for (int i = 0; i < NSUBS; i++) fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].summary);
    fprintf(f,
            "\noptions:\n"
            "  --patch N     cubic patch edge (default 64)\n"
            "  --reps N      timed runs per measurement, median reported (default 5)\n"
            "  --impl I      direct, gemm or both (default both)\n"
            "  --only TEXT   only rows whose name contains TEXT\n"
            "  --cpu         also print GFLOP per CPU-second of this process (per-core\n"
            "                efficiency, useful when other jobs share the CPU device)\n"
            "  --json FILE   also write the results as JSON\n");
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        help(stderr);
        return 2;
    }
    const bench_sub *sub = NULL;
    for (int i = 0; i < NSUBS; i++)
        if (!strcmp(argv[1], subs[i].name)) sub = &subs[i];
    if (!sub) {
        fprintf(stderr, "kdseg bench: unknown subcommand '%s' (see kdseg bench --help)\n", argv[1]);
        return 2;
    }
    bench_opts o = {5, 64, NULL, NULL, 3, 0};
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (kd_cli_opt(argc, argv, &i, "--reps", &v)) {
            if (kd_cli_int("bench", "--reps", v, 1, 64, &o.reps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_int("bench", "--patch", v, 8, 512, &o.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--json", &v)) {
            if (!v) return kd_cli_unknown("bench", argv[i]);
            o.json = v;
        } else if (kd_cli_opt(argc, argv, &i, "--only", &v)) {
            if (!v) return kd_cli_unknown("bench", argv[i]);
            o.only = v;
        } else if (kd_cli_flag(argv, i, "--cpu")) {
            o.cpu = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--impl", &v)) {
            if (v && !strcmp(v, "direct")) o.impls = 1;
            else if (v && !strcmp(v, "gemm")) o.impls = 2;
            else if (v && !strcmp(v, "both")) o.impls = 3;
            else {
                fprintf(stderr, "kdseg bench: --impl must be direct, gemm or both\n");
                return 2;
            }
        } else {
            return kd_cli_unknown("bench", argv[i]);
        }
    }
    kd_device *dev = kd_cli_open_device("bench");
    if (!dev) return 1;
    int rc = sub->run(dev, &o);
    kd_device_free(dev);
    return rc;
}

const kd_command kd_cmd_bench = {"bench", "benchmarks: kdseg bench ops (conv layers)", run, help};
