/* kdseg bench: benchmarks as subcommands (a table below; `ops` measures the conv layers of
 * the student ResUNet). Timings are medians of several runs after a warm-up, each run
 * between two device waits; the device is named in the output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef KD_BENCH_SCRIPT
#define KD_BENCH_SCRIPT "tools/bench/pytorch_bench.py"
#endif

#include "cli.h"
#include "kdseg/infer.h"
#include "kdseg/sched.h"
#include "kdseg/tune.h"

/* Options shared by every bench subcommand. */
typedef struct bench_opts {
    int reps;          /* timed runs per measurement (median) */
    int patch;         /* cubic patch edge */
    const char *json;  /* --json FILE or NULL */
    const char *only;  /* substring filter on row names, or NULL */
    int impls;         /* bit 1: direct, bit 2: gemm */
    int cpu;           /* also print GFLOP per CPU-second (per-core efficiency) */
    int batch;         /* train, sched: batch size */
    const char *model; /* model spec (train, infer; the student in sched) */
    int tta;           /* infer: flips besides the plain pass (0: both 1 and 4) */
    int vol[3];        /* infer: volume (D, H, W) */
    int tile[3];       /* infer: sliding-window tile (D, H, W); 0: whole volume */
    int steps;         /* sched: steps through the pipeline */
    int compare;       /* --compare-pytorch */
    int scaling;       /* train: the patch x batch table */
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

static int run_pytorch(const char *args, char *out, size_t n);

/* --torch-device: where the PyTorch side runs (cpu, or cuda for cuDNN on a GPU machine) */
static const char *torch_device = "cpu";

/* The PyTorch figure comparable to kdseg's planned device memory: the process's peak
 * resident memory on the CPU, the CUDA allocator's peak on a GPU. */
static const char *torch_mem_key(void) {
    return strcmp(torch_device, "cpu") ? "cuda_peak_mib" : "maxrss_mib";
}
static const char *today(char *buf, size_t n);

/* ---- bench ops: the conv layers ----------------------------------------------------------- */

/* The conv layer shapes and their tensors: kd_conv_layers, kd_conv_case (shared with kdseg
 * tune). */

/* Median ms of o->reps runs after one warm-up with impl forced. */
static kd_status time_pass(kd_device *dev, kd_conv_case *c, kd_conv_pass pass, kd_conv_impl impl,
                           int reps, double *ms, double *cms) {
    kd_conv_force(impl);
    kd_status s = kd_conv_case_run(c, pass);
    if (!s) s = kd_device_finish(dev);
    double t[64], ct[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps && !s; r++) {
        double t0 = now_ms(), c0 = cpu_ms();
        s = kd_conv_case_run(c, pass);
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

static const char *impl_name(kd_conv_impl i) {
    return i == KD_CONV_GEMM ? "gemm" : i == KD_CONV_DIRECT ? "direct" : "-";
}

/* The device's peak for the share-of-peak columns: measured once per run (a few seconds)
 * unless --peak gave it; NULL when --peak 0 turned the columns off. */
static kd_peak peak_cache;
static int peak_state; /* 0 not measured, 1 measured or given, -1 off or failed */
static double peak_given = -1;

static const kd_peak *device_peak(kd_device *dev) {
    if (peak_state == 0) {
        if (peak_given == 0) {
            peak_state = -1;
        } else if (peak_given > 0) {
            memset(&peak_cache, 0, sizeof peak_cache);
            peak_cache.gflops = peak_given;
            peak_state = 1;
        } else {
            kd_status s = kd_device_peak(dev, 0, &peak_cache);
            peak_state = s ? -1 : 1;
            if (s) {
                fprintf(stderr, "kdseg bench: peak not measured (%s); no share-of-peak columns\n",
                        kd_last_error());
                kd_clear_error();
            }
        }
        if (peak_state > 0) {
            printf("device peak: %.1f GFLOP/s FMA", peak_cache.gflops);
            if (peak_cache.cpu_gflops > 0)
                printf(", %.1f GFLOP per CPU-second (one core)", peak_cache.cpu_gflops);
            if (peak_cache.read_gbs > 0) printf(", read %.1f GB/s", peak_cache.read_gbs);
            printf("%s\n\n", peak_given > 0 ? " (--peak)" : " (kdseg bench peak)");
        }
    }
    return peak_state > 0 ? &peak_cache : NULL;
}

/* "  12.3%" of the peak, or blanks. */
static const char *pct(char *buf, size_t n, double v, double peak) {
    if (peak > 0 && v > 0) snprintf(buf, n, " %6.1f%%", 100.0 * v / peak);
    else snprintf(buf, n, " %7s", "");
    return buf;
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
    const kd_peak *pk = device_peak(dev);
    double pg = pk ? pk->gflops : 0, pc = pk ? pk->cpu_gflops : 0;
    printf("median of %d runs after a warm-up; GF/s = 2*MACs / time; weight-grad without bias;\n"
           "%%pk: the chosen implementation's GF/s as a share of the device's FMA peak%s\n\n",
           o->reps, o->cpu ? "; cpu GF/s: GFLOP per CPU-second of this process, %core: its\n"
                             "share of one core's peak" : "");
    printf("%-24s %-6s %-11s %9s %8s %9s %8s  %-6s %7s", "layer", "size", "pass", "direct ms",
           "GF/s", "gemm ms", "GF/s", "chosen", "%pk");
    if (o->cpu) printf(" %7s %7s %7s", "cpu GF/s", "", "%core");
    printf("\n");
    char date[32];
    if (js)
        fprintf(js,
                "{\"bench\": \"ops\", \"device\": \"%s\", \"date\": \"%s\", \"patch\": %d, "
                "\"reps\": %d, \"peak_gflops\": %.3f, \"peak_cpu_gflops\": %.3f, \"rows\": [",
                kd_device_name(dev), today(date, sizeof date), o->patch, o->reps, pg, pc);
    int first = 1, rc = 0, nl;
    const kd_conv_layer *layers = kd_conv_layers(&nl);
    enum { NROWS = 64 };
    double fb_ms[NROWS], fb_cpu[NROWS], fb_gf[NROWS]; /* forward + both gradients, chosen impl */
    int done_row[NROWS];
    int nrows = nl < NROWS ? nl : NROWS;
    char shapes[1024] = "";
    for (int i = 0; i < nrows && !rc; i++) {
        fb_ms[i] = fb_cpu[i] = fb_gf[i] = 0;
        done_row[i] = 0;
        const kd_conv_layer *r = &layers[i];
        if (o->only && !strstr(r->name, o->only)) continue;
        int edge = o->patch >> r->level;
        if (edge < r->k) continue;
        kd_conv_case *c = NULL;
        kd_status s = kd_conv_case_create(dev, r, edge, 0, &c);
        for (int pass = 0; pass < 3 && !s; pass++) {
            double ms[2] = {-1, -1}, cms[2] = {-1, -1};
            for (int im = 0; im < 2 && !s; im++)
                if (o->impls & (1 << im))
                    s = time_pass(dev, c, (kd_conv_pass)pass, im ? KD_CONV_GEMM : KD_CONV_DIRECT,
                                  o->reps, &ms[im], &cms[im]);
            if (s) break;
            /* the chooser's pick (times both once if not stored yet) */
            kd_conv_force(KD_CONV_AUTO);
            if ((s = kd_conv_case_run(c, (kd_conv_pass)pass)) || (s = kd_device_finish(dev)))
                break;
            char key[160], pb[2][16];
            kd_conv_case_key(c, (kd_conv_pass)pass, key, sizeof key);
            kd_conv_impl pick = kd_conv_choice_lookup(dev, key, NULL, NULL);
            if (pick == KD_CONV_AUTO && kd_conv_forced() != KD_CONV_AUTO) pick = kd_conv_forced();
            double gf = kd_conv_case_flops(c) * 1e-6; /* MFLOP: / ms gives GFLOP/s */
            int ci = pick == KD_CONV_GEMM && ms[1] >= 0 ? 1 : ms[0] >= 0 ? 0 : 1;
            fb_ms[i] += ms[ci];
            fb_cpu[i] += cms[ci];
            fb_gf[i] += gf;
            char size[16], d[2][32];
            snprintf(size, sizeof size, "%d^3", edge);
            for (int im = 0; im < 2; im++)
                if (ms[im] >= 0)
                    snprintf(d[im], sizeof d[im], "%9.2f %8.1f", ms[im], gf / ms[im]);
                else
                    snprintf(d[im], sizeof d[im], "%9s %8s", "-", "-");
            printf("%-24s %-6s %-11s %s %s  %-6s%s", pass ? "" : r->name, size, pass_label[pass],
                   d[0], d[1], impl_name(pick), pct(pb[0], sizeof pb[0], gf / ms[ci], pg));
            if (o->cpu) {
                printf(" %8.1f        %s", cms[ci] > 0 ? gf / cms[ci] : 0.0,
                       pct(pb[1], sizeof pb[1], cms[ci] > 0 ? gf / cms[ci] : 0, pc));
            }
            printf("\n");
            fflush(stdout);
            if (js) {
                fprintf(
                    js,
                    "%s\n  {\"layer\": \"%s\", \"size\": %d, \"cin\": %d, \"cout\": %d, "
                    "\"k\": %d, \"stride\": %d, \"pad\": %d, \"pass\": \"%s\", \"gflop\": %.6f, "
                    "\"direct_ms\": %.4f, \"gemm_ms\": %.4f, \"direct_cpu_ms\": %.4f, "
                    "\"gemm_cpu_ms\": %.4f, \"chosen\": \"%s\", \"share_of_peak\": %.4f}",
                    first ? "" : ",", r->name, edge, r->ci, r->co, r->k, r->s, r->p,
                    pass_label[pass], gf * 1e-3, ms[0], ms[1], cms[0], cms[1], impl_name(pick),
                    pg > 0 ? gf / ms[ci] / pg : -1.0);
                first = 0;
            }
        }
        kd_conv_case_free(c);
        if (s)
            rc = kd_cli_error("bench ops", s);
        else {
            done_row[i] = 1;
            size_t l = strlen(shapes);
            snprintf(shapes + l, sizeof shapes - l, "%s%d,%d,%d,%d,%d,%d", l ? ";" : "", r->ci,
                     r->co, r->k, r->s, r->p, r->level);
        }
    }
    char py[16384], args[1400];
    if (!rc && o->compare && shapes[0]) {
        snprintf(args, sizeof args, "convs --edge %d --reps %d --shapes '%s'", o->patch,
                 o->reps < 3 ? o->reps : 3, shapes);
        printf("\nforward + input-grad + weight-grad (chosen implementation) against PyTorch's\n"
               "forward + backward (input and weight gradients), 2 threads, same run:\n\n");
        if (!run_pytorch(args, py, sizeof py)) {
            const char *lst = strstr(py, "\"fwdbwd_ms_list\": \"");
            char *p = lst ? (char *)lst + strlen("\"fwdbwd_ms_list\": \"") : NULL;
            printf("%-24s %-6s %10s %10s %8s %10s %8s\n", "layer", "size", "kdseg ms", "cpu-s",
                   "%pk", "torch ms", "speedup");
            for (int i = 0; i < nrows && p; i++) {
                if (!done_row[i]) continue;
                double t = strtod(p, &p);
                if (*p == ',') p++;
                char size[16], pb[16];
                snprintf(size, sizeof size, "%d^3", o->patch >> layers[i].level);
                printf("%-24s %-6s %10.2f %10.3f %s %10.2f %7.2fx\n", layers[i].name, size,
                       fb_ms[i], fb_cpu[i] * 1e-3, pct(pb, sizeof pb, fb_gf[i] / fb_ms[i], pg), t,
                       t / fb_ms[i]);
                if (js) {
                    fprintf(js,
                            ",\n  {\"layer\": \"%s\", \"size\": %d, \"fwdbwd_ms\": %.4f, "
                            "\"fwdbwd_cpu_ms\": %.4f, \"torch_fwdbwd_ms\": %.4f}",
                            layers[i].name, o->patch >> layers[i].level, fb_ms[i], fb_cpu[i], t);
                }
            }
        }
    }
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    return rc;
}

/* ---- bench peak ----------------------------------------------------------------------- */

static int bench_peak(kd_device *dev, const bench_opts *o) {
    char date[32];
    printf("peak of %s (%d compute units), %s\n", kd_device_name(dev),
           kd_device_compute_units(dev), today(date, sizeof date));
    kd_peak p;
    kd_status s = kd_device_peak(dev, 0, &p);
    if (s) return kd_cli_error("bench peak", s);
    printf("FMA throughput, float per work-item     %10.1f GFLOP/s\n", p.gflops_v1);
    printf("FMA throughput, float16 per work-item   %10.1f GFLOP/s\n", p.gflops_v16);
    printf("FMA peak (the better of the two)        %10.1f GFLOP/s\n", p.gflops);
    if (p.cpu_gflops > 0)
        printf("FMA per CPU-second of this process      %10.1f GFLOP  (one core's peak, whatever\n"
               "                                                         share of the machine "
               "we got)\n",
               p.cpu_gflops);
    printf("memory read bandwidth                   %10.1f GB/s\n", p.read_gbs);
    printf("memory copy bandwidth (read + write)    %10.1f GB/s\n", p.copy_gbs);
    printf("measured in %.1f s\n", p.seconds);
    if (o->json) {
        FILE *js = fopen(o->json, "w");
        if (!js) {
            fprintf(stderr, "kdseg bench: cannot write %s\n", o->json);
            return 1;
        }
        fprintf(js,
                "{\"bench\": \"peak\", \"device\": \"%s\", \"date\": \"%s\", \"gflops\": %.3f, "
                "\"gflops_v1\": %.3f, \"gflops_v16\": %.3f, \"cpu_gflops\": %.3f, "
                "\"read_gbs\": %.3f, \"copy_gbs\": %.3f, \"seconds\": %.3f}\n",
                kd_device_name(dev), date, p.gflops, p.gflops_v1, p.gflops_v16, p.cpu_gflops,
                p.read_gbs, p.copy_gbs, p.seconds);
        fclose(js);
    }
    return 0;
}

/* ---- helpers shared by train, infer and sched --------------------------------------------- */

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float rng_unit(uint64_t *st) { return (float)(kd_splitmix64(st) >> 40) / 16777216.0f; }

/* Images in [-2, 2] and binary targets (a random half of the voxels set per channel). */
static void fill_batch(float *x, size_t nx, float *t, size_t nt, uint64_t seed) {
    uint64_t st = seed;
    for (size_t i = 0; i < nx; i++)
        x[i] = 4.0f * rng_unit(&st) - 2.0f;
    for (size_t i = 0; t && i < nt; i++)
        t[i] = rng_unit(&st) < 0.5f ? 1.0f : 0.0f;
}

static const char *today(char *buf, size_t n) {
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(buf, n, "%Y-%m-%d %H:%M", &tmv);
    return buf;
}

/* Value of "key": NUMBER in a flat JSON text, or -1 when absent. */
static double json_num(const char *js, const char *key) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = js ? strstr(js, pat) : NULL;
    if (!p) return -1;
    return strtod(p + strlen(pat), NULL);
}

/* A python that can import torch: python3 on PATH, else Debian's /usr/bin/python3. */
static const char *find_python(void) {
    static const char *cands[] = {"python3", "/usr/bin/python3"};
    for (int i = 0; i < 2; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) return cands[i];
    }
    return NULL;
}

static const char *bench_script(void) {
    const char *e = getenv("KDSEG_BENCH_SCRIPT");
    if (e && *e) return e;
    FILE *f = fopen("tools/bench/pytorch_bench.py", "r");
    if (f) {
        fclose(f);
        return "tools/bench/pytorch_bench.py";
    }
    return KD_BENCH_SCRIPT;
}

/* Runs the PyTorch script with args (2 threads) and returns its last output line (a flat
 * JSON object) in out; 0 on success. Prints why when it cannot. */
static int run_pytorch(const char *args, char *out, size_t n) {
    static int checked, have;
    static const char *py;
    if (!checked) {
        checked = 1;
        py = find_python();
        have = py != NULL;
        if (!have)
            printf("PyTorch comparison skipped: no python with torch (tried python3, "
                   "/usr/bin/python3)\n");
    }
    if (!have) return 1;
    char cmd[4096];
    if (snprintf(cmd, sizeof cmd, "%s %s --threads 2 --device %s %s", py, bench_script(), torch_device,
                 args) >= (int)sizeof cmd) {
        printf("PyTorch comparison skipped: its command line would be longer than %zu characters\n",
               sizeof cmd - 1);
        return 1;
    }
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) {
        printf("PyTorch comparison failed: cannot run %s\n", cmd);
        return 1;
    }
    char line[4096];
    out[0] = 0;
    while (fgets(line, sizeof line, p))
        if (line[0] == '{') snprintf(out, n, "%s", line);
    int rc = pclose(p);
    if (rc != 0 || !out[0]) {
        printf("PyTorch comparison failed: '%s' exited with status %d\n", cmd, rc);
        return 1;
    }
    return 0;
}

/* Parse "widths=..:enc=..:dec=.." of a resunet spec into the script's arguments. */
static int resunet_args(const char *spec, char *out, size_t n) {
    if (strncmp(spec, "resunet", 7)) return 1;
    const char *keys[] = {"widths=", "enc=", "dec=", "groups="};
    const char *opts[] = {"--widths", "--enc", "--dec", "--groups"};
    size_t len = 0;
    out[0] = 0;
    for (int k = 0; k < 4; k++) {
        const char *p = strstr(spec, keys[k]);
        if (!p) continue;
        p += strlen(keys[k]);
        size_t l = strcspn(p, ":");
        len += (size_t)snprintf(out + len, n > len ? n - len : 0, " %s %.*s", opts[k], (int)l, p);
    }
    return 0;
}

/* ---- bench train ---------------------------------------------------------------------- */

typedef struct train_res {
    double ms, cpu_ms;        /* median per step: wall and process CPU time */
    size_t planned, measured; /* device bytes */
    size_t act_plan, param_bytes;
    double conv_gflop; /* the step's conv work (forward, weight and input gradients) */
} train_res;

static kd_status train_measure(kd_device *dev, const char *spec, int batch, int patch, int reps,
                               train_res *r) {
    kd_model *m = NULL;
    kd_optim *opt = NULL;
    kd_loss *loss = NULL;
    kd_tensor *x = NULL, *t = NULL;
    float *hx = NULL, *ht = NULL;
    memset(r, 0, sizeof *r);
    kd_device_mem_reset_peak(dev);
    size_t base = kd_device_mem_current(dev);
    kd_status s = kd_model_create(dev, spec, 1, &m);
    kd_optim_config oc;
    kd_optim_defaults(&oc);
    if (!s) s = kd_optim_create(m, &oc, &opt);
    if (!s) s = kd_loss_create(dev, &loss);
    if (s) goto done;
    int ci = kd_model_in_channels(m), co = kd_model_out_channels(m);
    kd_shape xs = kd_shape5(batch, ci, patch, patch, patch),
             ts = kd_shape5(batch, co, patch, patch, patch);
    size_t nx = kd_shape_numel(xs), nt = kd_shape_numel(ts);
    if (!(hx = malloc(nx * sizeof *hx)) || !(ht = malloc(nt * sizeof *ht))) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "bench train: host batch of %zu floats", nx + nt);
        goto done;
    }
    fill_batch(hx, nx, ht, nt, 7);
    if ((s = kd_tensor_create(dev, xs, &x)) || (s = kd_tensor_create(dev, ts, &t)) ||
        (s = kd_tensor_upload(x, hx)) || (s = kd_tensor_upload(t, ht)))
        goto done;
    if ((s = kd_model_plan(m, xs, 1, &r->act_plan))) goto done;
    double fl = 0;
    if ((s = kd_model_conv_flops(m, xs, 1, &fl))) goto done;
    r->conv_gflop = fl * 1e-9;
    r->param_bytes = kd_model_param_bytes(m);
    /* parameters, gradients, Adam's m, v and vmax; the batch; the activation plan */
    r->planned = 5 * r->param_bytes + (nx + nt) * sizeof(float) + r->act_plan;
    double wt[64], ct[64];
    if (reps > 64) reps = 64;
    for (int i = -1; i < reps && !s; i++) { /* i = -1: warm-up (chooser timing, pool) */
        double t0 = now_ms(), c0 = cpu_ms();
        s = kd_train_step(m, opt, loss, x, t, KD_LOSS_PAPER, 1.0f, 1e-4f);
        if (!s) s = kd_device_finish(dev);
        if (i >= 0) {
            wt[i] = now_ms() - t0;
            ct[i] = cpu_ms() - c0;
        } else if (kd_device_profiling(dev)) {
            kd_device_profile_reset(dev); /* KDSEG_PROFILE=1 then shows the timed steps only */
        }
    }
    if (!s) {
        float lv;
        s = kd_loss_read(loss, &lv);
        if (!s && !(lv == lv)) s = kd_fail(KD_ERR_NUMERIC, "bench train: non-finite loss");
    }
    if (s) goto done;
    r->ms = median(wt, reps);
    r->cpu_ms = median(ct, reps);
    r->measured = kd_device_mem_peak(dev) - base;
done:
    free(hx);
    free(ht);
    kd_tensor_free(x);
    kd_tensor_free(t);
    kd_loss_free(loss);
    kd_optim_free(opt);
    kd_model_free(m);
    return s;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

static int bench_train(kd_device *dev, const bench_opts *o) {
    static const int patches[] = {32, 64, 96, 128}, batches[] = {1, 2, 4};
    char date[32], py[4096], args[1024], ra[640]; /* ra: a spec (<= 511) + option names */
    FILE *js = NULL;
    if (o->json && !(js = fopen(o->json, "w"))) {
        fprintf(stderr, "kdseg bench: cannot write %s\n", o->json);
        return 1;
    }
    printf(
        "training step (zero grads, forward, the paper's loss, backward, AMSGrad Adam) of\n  %s\n"
        "on %s, %s; median of %d steps after a warm-up step\n",
        o->model, kd_device_name(dev), today(date, sizeof date), o->reps);
    const kd_peak *pk = device_peak(dev);
    double pg = pk ? pk->gflops : 0;
    printf("planned = parameters + gradients + Adam state (5x params) + batch + activation plan;\n"
           "measured = peak device bytes handed out during the run; conv GF/s = the step's conv\n"
           "FLOPs (forward, weight and input gradients) / its time, %%pk its share of the peak\n\n");
    printf("%-7s %5s %10s %10s %12s %11s %11s %9s %9s %7s", "patch", "batch", "ms/step",
           "cpu-s/step", "Mvoxel/s", "planned MiB", "measured MiB", "conv GF", "conv GF/s",
           "%pk");
    if (o->compare)
        printf(" %10s %11s %8s %9s %11s %9s", "torch ms", "torch cpu-s", "speedup", "cpu ratio",
               "torch MiB", "mem ratio");
    printf("\n");
    if (js)
        fprintf(js,
                "{\"bench\": \"train\", \"device\": \"%s\", \"date\": \"%s\", \"model\": \"%s\", "
                "\"reps\": %d, \"rows\": [",
                kd_device_name(dev), date, o->model, o->reps);
    int has_ref = !resunet_args(o->model, ra, sizeof ra);
    if (o->compare && !has_ref) printf("(PyTorch comparison only for resunet specs: skipped)\n");
    int rc = 0, first = 1;
    int np = o->scaling ? 4 : 1, nb = o->scaling ? 3 : 1;
    for (int pi = 0; pi < np && !rc; pi++)
        for (int bi = 0; bi < nb && !rc; bi++) {
            int patch = o->scaling ? patches[pi] : o->patch,
                batch = o->scaling ? batches[bi] : o->batch;
            train_res r;
            kd_status s = train_measure(dev, o->model, batch, patch, o->reps, &r);
            if (s == KD_ERR_OUT_OF_MEMORY && o->scaling) {
                printf("%d^3%*s %5d   does not fit: %s\n", patch, patch < 100 ? 3 : 2, "", batch,
                       kd_last_error());
                continue;
            }
            if (s) {
                rc = kd_cli_error("bench train", s);
                break;
            }
            double vox = (double)batch * patch * patch * patch;
            char pre[16];
            snprintf(pre, sizeof pre, "%d^3", patch);
            char pb[16];
            printf("%-7s %5d %10.1f %10.2f %12.2f %11.1f %11.1f %9.1f %9.1f%s", pre, batch, r.ms,
                   r.cpu_ms * 1e-3, vox / r.ms * 1e-3, mib(r.planned), mib(r.measured),
                   r.conv_gflop, r.conv_gflop / r.ms * 1e3,
                   pct(pb, sizeof pb, r.conv_gflop / r.ms * 1e3, pg));
            double tms = -1, trss = -1, tcpu = -1;
            if (o->compare && has_ref && !(o->scaling && (batch > 1))) {
                snprintf(args, sizeof args, "train%s --patch %d --batch %d --reps %d", ra, patch,
                         batch, o->reps < 3 ? o->reps : 3);
                if (!run_pytorch(args, py, sizeof py)) {
                    tms = json_num(py, "step_ms");
                    tcpu = json_num(py, "step_cpu_ms");
                    trss = json_num(py, torch_mem_key());
                    printf(" %10.1f %11.2f %7.2fx %8.2fx %11.1f %8.2fx", tms, tcpu * 1e-3,
                           tms / r.ms, tcpu / r.cpu_ms, trss, trss / mib(r.planned));
                }
            }
            printf("\n");
            fflush(stdout);
            if (js) {
                fprintf(js,
                        "%s\n  {\"patch\": %d, \"batch\": %d, \"ms\": %.3f, \"cpu_ms\": %.3f, "
                        "\"voxels_per_s\": %.1f, \"planned_bytes\": %zu, "
                        "\"activation_plan_bytes\": %zu, "
                        "\"param_bytes\": %zu, \"measured_peak_bytes\": %zu, \"torch_ms\": %.3f, "
                        "\"torch_cpu_ms\": %.3f, \"torch_maxrss_mib\": %.1f, \"conv_gflop\": %.3f, "
                        "\"peak_gflops\": %.3f}",
                        first ? "" : ",", patch, batch, r.ms, r.cpu_ms, vox / r.ms * 1e3, r.planned,
                        r.act_plan, r.param_bytes, r.measured, tms, tcpu, trss, r.conv_gflop, pg);
                first = 0;
            }
        }
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    return rc;
}

/* ---- bench infer ---------------------------------------------------------------------- */

static int bench_infer(kd_device *dev, const bench_opts *o) {
    char date[32], py[4096], args[1024], ra[640]; /* ra: a spec (<= 511) + option names */
    int D = o->vol[0], H = o->vol[1], W = o->vol[2];
    kd_model *m = NULL;
    kd_status s = kd_model_create(dev, o->model, 1, &m);
    if (s) return kd_cli_error("bench infer", s);
    int div = kd_model_divisor(m);
    if (D % div || H % div || W % div) {
        fprintf(stderr, "kdseg bench infer: --size %dx%dx%d must be a multiple of %d\n", D, H, W,
                div);
        kd_model_free(m);
        return 2;
    }
    int C = kd_model_in_channels(m), K = kd_model_out_channels(m);
    size_t nv = (size_t)D * H * W;
    float *img = malloc((size_t)C * nv * sizeof *img),
          *probs = malloc((size_t)K * nv * sizeof *probs);
    if (!img || !probs) {
        fprintf(stderr, "kdseg bench infer: out of host memory\n");
        free(img);
        free(probs);
        kd_model_free(m);
        return 1;
    }
    fill_batch(img, (size_t)C * nv, NULL, 0, 11);
    FILE *js = NULL;
    if (o->json && !(js = fopen(o->json, "w")))
        fprintf(stderr, "kdseg bench: cannot write %s\n", o->json);
    char how[64] = "whole-volume";
    if (o->tile[0])
        snprintf(how, sizeof how, "sliding-window (%dx%dx%d, overlap 0.5)", o->tile[0], o->tile[1],
                 o->tile[2]);
    printf("%s inference (kd_infer_volume) of a %dx%dx%d crop, %d channels, with\n  %s\n"
           "on %s, %s; median of %d runs after a warm-up; batch: windows x flips per forward\n"
           "pass (%s)\n\n",
           how, D, H, W, C, o->model, kd_device_name(dev), today(date, sizeof date), o->reps,
           o->batch > 1 ? "--batch: at most that many, as memory allows" : "1, the default");
    const kd_peak *pk = device_peak(dev);
    double pg = pk ? pk->gflops : 0;
    printf("conv GF/s: the passes' conv FLOPs (tile x passes) / the time, %%pk its share of the "
           "peak\n\n");
    printf("%-6s %8s %6s %9s %10s %11s %12s %12s %9s %7s", "tta", "windows", "batch", "forwards",
           "s/volume", "cpu-s/vol", "Mvoxel/s", "peak MiB", "conv GF/s", "%pk");
    if (o->compare) printf(" %10s %11s %8s %9s", "torch s", "torch cpu-s", "speedup", "cpu ratio");
    printf("\n");
    if (js)
        fprintf(js,
                "{\"bench\": \"infer\", \"device\": \"%s\", \"date\": \"%s\", \"model\": \"%s\", "
                "\"volume\": [%d, %d, %d], \"tile\": [%d, %d, %d], \"reps\": %d, \"rows\": [",
                kd_device_name(dev), date, o->model, D, H, W, o->tile[0], o->tile[1], o->tile[2],
                o->reps);
    int has_ref = !resunet_args(o->model, ra, sizeof ra), rc = 0;
    int ttas[2] = {1, 4}, nt = 2;
    if (o->tta) {
        ttas[0] = o->tta;
        nt = 1;
    }
    for (int k = 0; k < nt && !rc; k++) {
        kd_infer_opts io;
        kd_infer_opts_default(&io);
        io.tta = ttas[k];
        io.batch = o->batch;
        if (o->tile[0]) {
            memcpy(io.tile, o->tile, sizeof io.tile);
            io.force_tiles = 1;
        }
        kd_infer_stats st;
        double wt[64], ct[64];
        int reps = o->reps > 64 ? 64 : o->reps;
        for (int i = -1; i < reps && !s; i++) {
            double t0 = now_ms(), c0 = cpu_ms();
            s = kd_infer_volume(&m, 1, img, C, D, H, W, &io, probs, &st);
            if (i >= 0) {
                wt[i] = now_ms() - t0;
                ct[i] = cpu_ms() - c0;
            }
        }
        if (s) {
            rc = kd_cli_error("bench infer", s);
            break;
        }
        double ms = median(wt, reps), cms = median(ct, reps), fl = 0;
        if ((s = kd_model_conv_flops(m, kd_shape5(1, C, st.tile[0], st.tile[1], st.tile[2]), 0,
                                     &fl))) {
            rc = kd_cli_error("bench infer", s);
            break;
        }
        double gfs = fl * st.passes / ms * 1e-6;
        char pb[16];
        printf("%-6d %8d %6d %9d %10.2f %11.2f %12.2f %12.1f %9.1f%s", ttas[k], st.windows,
               st.batch, st.forwards, ms * 1e-3, cms * 1e-3, (double)nv / ms * 1e-3,
               mib(st.peak_device), gfs, pct(pb, sizeof pb, gfs, pg));
        double ts = -1, tcs = -1;
        if (o->compare && has_ref) {
            int n = snprintf(args, sizeof args, "infer%s --volume %d %d %d --tta %d --reps %d", ra,
                             D, H, W, ttas[k], ttas[k] > 1 ? 1 : (o->reps < 3 ? o->reps : 3));
            if (o->tile[0])
                snprintf(args + n, sizeof args - (size_t)n, " --tile %d %d %d", o->tile[0],
                         o->tile[1], o->tile[2]);
            if (!run_pytorch(args, py, sizeof py)) {
                ts = json_num(py, "infer_ms") * 1e-3;
                tcs = json_num(py, "infer_cpu_ms") * 1e-3;
                printf(" %10.2f %11.2f %7.2fx %8.2fx", ts, tcs, ts / (ms * 1e-3),
                       tcs / (cms * 1e-3));
            }
        }
        printf("\n");
        fflush(stdout);
        if (js)
            fprintf(
                js,
                "%s\n  {\"tta\": %d, \"windows\": %d, \"batch\": %d, \"forwards\": %d, "
                "\"seconds\": %.4f, \"cpu_seconds\": %.4f, "
                "\"peak_device_bytes\": %zu, \"torch_seconds\": %.4f, \"torch_cpu_seconds\": %.4f, "
                "\"conv_gflops\": %.3f, \"peak_gflops\": %.3f}",
                k ? "," : "", ttas[k], st.windows, st.batch, st.forwards, ms * 1e-3, cms * 1e-3,
                st.peak_device, ts, tcs, gfs, pg);
    }
    if (o->compare && !has_ref) printf("(PyTorch comparison only for resunet specs: skipped)\n");
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    free(img);
    free(probs);
    kd_model_free(m);
    return rc;
}

/* ---- bench sched ---------------------------------------------------------------------- */

typedef struct sched_ctx {
    int batch, patch, ci, co;
} sched_ctx;

/* Even steps labeled, odd steps unlabeled (the teachers annotate them). */
static kd_status sched_batch(void *ctx, long step, float *images, float *targets, int *labeled) {
    sched_ctx *c = ctx;
    size_t v = (size_t)c->batch * c->patch * c->patch * c->patch;
    *labeled = step % 2 == 0;
    fill_batch(images, v * (size_t)c->ci, *labeled ? targets : NULL, v * (size_t)c->co,
               100 + (uint64_t)step);
    return KD_OK;
}

static const char *const sched_teachers[] = {
    "unet3d:widths=16,32,64,128", "cascade:widths=16,32,64", "resnext-se:widths=16,32,64,128"};

static int bench_sched(kd_device *dev, const bench_opts *o) {
    char date[32];
    if (!kd_device_profiling(dev)) {
        fprintf(stderr, "kdseg bench sched: profiling is off (KDSEG_PROFILE must be quiet or 1 "
                        "before the device opens)\n");
        return 1;
    }
    kd_model *st = NULL, *t[3] = {NULL, NULL, NULL};
    kd_optim *opt = NULL;
    kd_sched *sc = NULL;
    kd_optim_config oc;
    kd_optim_defaults(&oc);
    kd_status s = kd_model_create(dev, o->model, 1, &st);
    for (int i = 0; i < 3 && !s; i++)
        s = kd_model_create(dev, sched_teachers[i], 2 + (uint64_t)i, &t[i]);
    if (!s) s = kd_optim_create(st, &oc, &opt);
    kd_sched_config c;
    memset(&c, 0, sizeof c);
    c.batch = o->batch;
    c.patch[0] = c.patch[1] = c.patch[2] = o->patch;
    c.lr = 1e-4f;
    kd_schedule_defaults(&c.sched);
    c.label_loss = KD_LOSS_PAPER;
    c.distill_loss = KD_LOSS_BCE;
    c.distill_weight = 1;
    if (!s) s = kd_sched_create(st, opt, t, 3, &c, &sc);
    sched_ctx bc = {o->batch, o->patch, st ? kd_model_in_channels(st) : 4,
                    st ? kd_model_out_channels(st) : 3};
    kd_sched_report warm = {0}, rep = {0};
    /* warm-up: one labeled and one unlabeled step (chooser timing, pool) */
    if (!s) s = kd_sched_run(sc, 0, 2, sched_batch, &bc, NULL, NULL, NULL, &warm);
    if (!s) {
        kd_device_profile_reset(dev);
        s = kd_sched_run(sc, 2, 2 + o->steps, sched_batch, &bc, NULL, NULL, NULL, &rep);
    }
    int rc = 0;
    if (s)
        rc = kd_cli_error("bench sched", s);
    else {
        printf("scheduler: student %s\n  + teachers %s, %s, %s\non %s, %s\n"
               "%ld steps (half labeled, half annotated by the ensemble), batch %d, patch %d^3\n\n",
               o->model, sched_teachers[0], sched_teachers[1], sched_teachers[2],
               kd_device_name(dev), today(date, sizeof date), rep.steps, o->batch, o->patch);
        printf("wall time              %10.2f s (%.2f s per step)\n", rep.seconds,
               rep.seconds / (double)(rep.steps ? rep.steps : 1));
        printf("device busy fraction   %10.3f\n", rep.busy_fraction);
        printf("ensemble jobs          %10ld (3 teacher forwards each), device time %.2f s (%.2f s "
               "per job)\n",
               rep.teacher_jobs, rep.job_seconds[KD_JOB_TEACHER],
               rep.job_seconds[KD_JOB_TEACHER] / (double)(rep.teacher_jobs ? rep.teacher_jobs : 1));
        printf("student steps          %10ld, device time %.2f s (%.2f s per step)\n", rep.steps,
               rep.job_seconds[KD_JOB_STUDENT],
               rep.job_seconds[KD_JOB_STUDENT] / (double)(rep.steps ? rep.steps : 1));
        printf("other device time      %10.2f s\n", rep.job_seconds[KD_JOB_OTHER]);
        printf("peak device memory     %10.1f MiB (planned %.1f MiB), all four models resident\n",
               mib(rep.peak_device_bytes), mib(rep.planned_bytes));
        if (o->json) {
            FILE *js = fopen(o->json, "w");
            if (!js)
                fprintf(stderr, "kdseg bench: cannot write %s\n", o->json);
            else {
                fprintf(js,
                        "{\"bench\": \"sched\", \"device\": \"%s\", \"date\": \"%s\", \"student\": "
                        "\"%s\", "
                        "\"teachers\": [\"%s\", \"%s\", \"%s\"], \"batch\": %d, \"patch\": %d, "
                        "\"steps\": %ld, \"teacher_jobs\": %ld, \"seconds\": %.4f, "
                        "\"busy_fraction\": %.4f, "
                        "\"teacher_seconds\": %.4f, \"student_seconds\": %.4f, \"other_seconds\": "
                        "%.4f, "
                        "\"peak_device_bytes\": %zu, \"planned_bytes\": %zu}\n",
                        kd_device_name(dev), date, o->model, sched_teachers[0], sched_teachers[1],
                        sched_teachers[2], o->batch, o->patch, rep.steps, rep.teacher_jobs,
                        rep.seconds, rep.busy_fraction, rep.job_seconds[KD_JOB_TEACHER],
                        rep.job_seconds[KD_JOB_STUDENT], rep.job_seconds[KD_JOB_OTHER],
                        rep.peak_device_bytes, rep.planned_bytes);
                fclose(js);
            }
        }
    }
    kd_sched_free(sc);
    kd_optim_free(opt);
    for (int i = 0; i < 3; i++)
        kd_model_free(t[i]);
    kd_model_free(st);
    return rc;
}

/* ---- the subcommand table ---------------------------------------------------------------- */

static const bench_sub subs[] = {
    {"ops",
     "time forward, input- and weight-gradient of every conv layer shape of the student "
     "and the teachers' other plain conv shapes, with each implementation, and the "
     "chooser's pick",
     bench_ops},
    {"peak",
     "the device's FMA throughput and memory bandwidth (clpeak-like, a few seconds); ops, "
     "train and infer print their figures also as a share of it",
     bench_peak},
    {"train",
     "one training step of a model (--arch, --patch, --batch; --scaling: patch 32..128 "
     "x batch 1, 2, 4): time, voxels/s, planned and measured device memory",
     bench_train},
    {"infer",
     "inference of a 160x192x160 crop (--size), whole or in windows (--tile), with and "
     "without TTA 4",
     bench_infer},
    {"sched",
     "teacher ensemble + student steps through the scheduler: busy fraction, time per "
     "job kind, peak memory",
     bench_sched},
};
#define NSUBS ((int)(sizeof subs / sizeof subs[0]))

static void help(FILE *f) {
    fprintf(f, "usage: kdseg bench SUBCOMMAND [options]\n\nsubcommands:\n");
    for (int i = 0; i < NSUBS; i++)
        fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].summary);
    fprintf(
        f, "\noptions:\n"
           "  --patch N|D,H,W  the (cubic) patch (default 64; sched 32)\n"
           "  --reps N      timed runs per measurement, median reported (default 5)\n"
           "  --impl I      direct, gemm or both (default both)\n"
           "  --only TEXT   only rows whose name contains TEXT\n"
           "  --cpu         also print GFLOP per CPU-second of this process (per-core\n"
           "                efficiency, useful when other jobs share the CPU device)\n"
           "  --json FILE   also write the results as JSON\n"
           "  --arch SPEC   architecture spec (train, infer; the student in sched; default\n"
           "                the paper's student resunet:widths=16,32,64,128; kdseg models)\n"
           "  --batch N     batch size (train, sched; default 1); infer: at most N windows x\n"
           "                flips per forward pass, as memory allows (default 1)\n"
           "  --scaling     train: the table over patch 32,64,96,128 and batch 1,2,4\n"
           "  --size D,H,W|N  infer: the volume (default 160,192,160)\n"
           "  --tta none|4|8  infer: only these test-time flips (default none and 4)\n"
           "  --tile D,H,W  infer: sliding windows of this tile, overlap 0.5 (default: the\n"
           "                whole volume in one window)\n"
           "  --steps N     sched: timed steps (default 4)\n"
           "  --compare-pytorch  run tools/bench/pytorch_bench.py (same model, shapes, loss\n"
           "                and AMSGrad step, 2 threads) in the same run and print ratios;\n"
           "                skipped when no python3 or /usr/bin/python3 imports torch\n"
           "  --torch-device cpu|cuda  where the PyTorch side runs (default cpu; cuda: cuDNN\n"
           "                autotuned, strict fp32, memory = the CUDA allocator's peak)\n"
           "  --peak G      ops, train, infer: take G GFLOP/s as the device's peak instead of\n"
           "                measuring it (a few seconds); 0: no share-of-peak columns\n"
           "\nenvironment: KDSEG_MEM_LIMIT (kdseg's device memory limit), POCL_MEMORY_LIMIT=GB\n"
           "(PoCL's, default 4 GiB on this CPU device), KDSEG_BENCH_SCRIPT (the PyTorch script)\n"
           "\nexamples:\n"
           "  kdseg bench ops --patch 32 --only \"conv 32\" --reps 1\n"
           "  kdseg bench train --arch resunet:widths=8,16,32 --patch 32 --reps 1\n"
           "  kdseg bench infer --size 64 --tta none --reps 1\n");
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
    bench_opts o = {5, 64, NULL, NULL, 3, 0, 1, "resunet:widths=16,32,64,128", 0, {160, 192, 160},
                    {0, 0, 0}, 4, 0, 0};
    if (!strcmp(sub->name, "train") || !strcmp(sub->name, "infer")) o.reps = 3;
    if (!strcmp(sub->name, "sched")) o.patch = 32;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (kd_cli_opt(argc, argv, &i, "--reps", &v)) {
            if (kd_cli_int("bench", "--reps", v, 1, 64, &o.reps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--patch", &v)) {
            if (kd_cli_cube("bench", "--patch", v, 8, 512, &o.patch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--json", &v)) {
            if (!v) return kd_cli_unknown("bench", argv[i]);
            o.json = v;
        } else if (kd_cli_opt(argc, argv, &i, "--only", &v)) {
            if (!v) return kd_cli_unknown("bench", argv[i]);
            o.only = v;
        } else if (kd_cli_flag(argv, i, "--cpu")) {
            o.cpu = 1;
        } else if (kd_cli_flag(argv, i, "--compare-pytorch")) {
            o.compare = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--torch-device", &v)) {
            if (!v || (strcmp(v, "cpu") && strcmp(v, "cuda"))) {
                fprintf(stderr, "kdseg bench: --torch-device must be cpu or cuda\n");
                return 2;
            }
            torch_device = v;
        } else if (kd_cli_opt(argc, argv, &i, "--peak", &v)) {
            double g;
            if (kd_cli_float("bench", "--peak", v, 0, 1e9, &g)) return 2;
            peak_given = g;
        } else if (kd_cli_flag(argv, i, "--scaling")) {
            o.scaling = 1;
        } else if (kd_cli_opt(argc, argv, &i, "--arch", &v) ||
                   kd_cli_old_opt("bench", argc, argv, &i, "--model", "--arch", &v)) {
            if (!v) return kd_cli_unknown("bench", argv[i]);
            o.model = v;
        } else if (kd_cli_opt(argc, argv, &i, "--batch", &v)) {
            if (kd_cli_int("bench", "--batch", v, 1, 64, &o.batch)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--steps", &v)) {
            if (kd_cli_int("bench", "--steps", v, 1, 1000, &o.steps)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--tta", &v)) {
            if (kd_cli_tta("bench", v, &o.tta)) return 2;
            if (!o.tta) o.tta = 1; /* one plain pass */
        } else if (kd_cli_opt(argc, argv, &i, "--size", &v) ||
                   kd_cli_old_opt("bench", argc, argv, &i, "--volume", "--size", &v)) {
            if (kd_cli_dims3("bench", "--size", v, 8, 1024, o.vol)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--tile", &v)) {
            if (kd_cli_dims3("bench", "--tile", v, 8, 1024, o.tile)) return 2;
        } else if (kd_cli_opt(argc, argv, &i, "--impl", &v)) {
            if (v && !strcmp(v, "direct"))
                o.impls = 1;
            else if (v && !strcmp(v, "gemm"))
                o.impls = 2;
            else if (v && !strcmp(v, "both"))
                o.impls = 3;
            else {
                fprintf(stderr, "kdseg bench: --impl must be direct, gemm or both\n");
                return 2;
            }
        } else {
            return kd_cli_unknown("bench", argv[i]);
        }
    }
    /* the scheduler's busy fraction and per-job times come from profiling events */
    if (!strcmp(sub->name, "sched")) setenv("KDSEG_PROFILE", "quiet", 0);
    kd_device *dev = kd_cli_open_device("bench");
    if (!dev) return 1;
    /* train, infer, sched: --impl direct or gemm forces the conv implementation (skips the
     * chooser's one-time timings of new shapes, which at 128^3 take minutes) */
    if (strcmp(sub->name, "ops") && o.impls != 3)
        kd_conv_force(o.impls == 1 ? KD_CONV_DIRECT : KD_CONV_GEMM);
    int rc = sub->run(dev, &o);
    kd_conv_force(KD_CONV_AUTO);
    kd_device_free(dev);
    return rc;
}

const kd_command kd_cmd_bench = {
    "bench", "benchmarks: kdseg bench ops|train|infer|sched [--compare-pytorch]", run, help};
