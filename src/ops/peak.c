/* The device's measured peak (kdseg/tune.h): FMA throughput and memory bandwidth by the
 * kernels of cl/peak.cl, clpeak-like. Each figure is the best of a few runs, each run long
 * enough (about 0.1 s) that launch costs do not count. */
#include <time.h>

#include "kdseg/tune.h"
#include "rt.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define RUNS 3
#define MIN_RUN_S 0.08

/* GFLOP/s of kernel `name` (lanes floats per chain), over g work-items of local size lws
 * (0: the driver's); *cpu receives GFLOP per CPU-second of this process. */
static kd_status fma_rate(kd_device *dev, const char *name, int lanes, size_t g, size_t lws,
                          cl_mem out, double *gflops, double *cpu) {
    int iters = 256;
    double best = 0, best_cpu = 0;
    kd_status s = KD_OK;
    for (int run = 0; run < RUNS + 8 && !s; run++) {
        double t0 = now_s(), c0 = cpu_s();
        s = kd_rt_launch(dev, name, 1, &g, lws ? &lws : NULL,
                         KD_ARGS(KD_MEM(out), KD_INT(iters), KD_FLOAT(0.999f), KD_FLOAT(1e-3f)));
        if (!s) s = kd_device_finish(dev);
        double t = now_s() - t0, c = cpu_s() - c0;
        if (s) break;
        if (t < MIN_RUN_S && iters < (1 << 26)) { /* too short to time: grow, rerun */
            iters *= t > 0.005 ? 2 : 8;
            run = -1;
            continue;
        }
        double fl = 2.0 * 16 * lanes * (double)iters * (double)g;
        if (fl / t > best) best = fl / t;
        if (c > 0 && fl / c > best_cpu) best_cpu = fl / c;
        if (run >= RUNS - 1) break;
    }
    *gflops = best * 1e-9;
    *cpu = best_cpu * 1e-9;
    return s;
}

/* GB/s of a read or copy of `bytes` through buffers a (and b), both access orders, best. */
static kd_status bw_rate(kd_device *dev, int copy, cl_mem a, cl_mem b, size_t bytes, size_t g,
                         size_t lws, cl_mem out, double *gbs) {
    int n = (int)(bytes / 16);
    double best = 0;
    kd_status s = KD_OK;
    for (int chunked = 0; chunked < 2 && !s; chunked++)
        for (int run = 0; run < RUNS && !s; run++) {
            double t0 = now_s();
            if (copy)
                s = kd_rt_launch(dev, "kd_peak_copy", 1, &g, lws ? &lws : NULL,
                                 KD_ARGS(KD_MEM(a), KD_MEM(b), KD_INT(n), KD_INT(chunked)));
            else
                s = kd_rt_launch(dev, "kd_peak_read", 1, &g, lws ? &lws : NULL,
                                 KD_ARGS(KD_MEM(a), KD_INT(n), KD_INT(chunked), KD_MEM(out)));
            if (!s) s = kd_device_finish(dev);
            double t = now_s() - t0;
            double moved = (double)(n - n % g) * 16.0 * (copy ? 2 : 1);
            if (!s && t > 0 && moved / t > best) best = moved / t;
        }
    *gbs = best * 1e-9;
    return s;
}

kd_status kd_device_peak(kd_device *dev, size_t req, kd_peak *out) {
    if (!dev || !out) return kd_fail(KD_ERR_INVALID_ARG, "device peak: NULL argument");
    double t0 = now_s();
    int cpu = kd_device_is_cpu(dev), cu = kd_device_compute_units(dev);
    /* CPUs: 4 one-item groups per core keep every core busy; GPUs: plenty per unit */
    size_t g = cpu ? (size_t)cu * 4 : (size_t)cu * 2048, lws = cpu ? 1 : 0;
    /* the read and copy buffers: 256 MiB (far beyond any cache), less if the device is
     * small; sizes a multiple of 16 bytes times the work-items */
    size_t bytes = req ? req : (size_t)256 << 20, lim = kd_device_max_alloc(dev) / 2;
    if (bytes > lim) bytes = lim;
    bytes -= bytes % (32 * g); /* the copy moves half, in float4 per work-item */
    if (bytes == 0) bytes = 32 * g;
    cl_mem o = NULL, a = NULL, b = NULL;
    kd_peak p = {0};
    kd_status s = kd_rt_alloc(dev, g * sizeof(float), &o);
    double c1 = 0, c16 = 0;
    if (!s) s = fma_rate(dev, "kd_peak_fma_v1", 1, g, lws, o, &p.gflops_v1, &c1);
    if (!s) s = fma_rate(dev, "kd_peak_fma_v16", 16, g, lws, o, &p.gflops_v16, &c16);
    if (!s) s = kd_rt_alloc(dev, bytes, &a);
    if (!s) s = kd_rt_alloc(dev, bytes, &b);
    if (!s) s = kd_rt_fill(dev, a, 0, bytes, 1.0f);
    if (!s) s = kd_rt_fill(dev, b, 0, bytes, 0.0f);
    if (!s) s = bw_rate(dev, 0, a, b, bytes, g, lws, o, &p.read_gbs);
    if (!s) s = bw_rate(dev, 1, a, b, bytes / 2, g, lws, o, &p.copy_gbs);
    kd_rt_release(dev, o, g * sizeof(float));
    kd_rt_release(dev, a, bytes);
    kd_rt_release(dev, b, bytes);
    kd_rt_pool_trim(dev);
    if (s) return kd_fail_context(s, "measuring the peak of %s", kd_device_name(dev));
    p.gflops = p.gflops_v1 > p.gflops_v16 ? p.gflops_v1 : p.gflops_v16;
    p.cpu_gflops = cpu ? (c1 > c16 ? c1 : c16) : 0;
    p.seconds = now_s() - t0;
    *out = p;
    return KD_OK;
}
