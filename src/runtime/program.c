/* Program builds at start-up: each program's source (embedded, or from KDSEG_CL_DIR),
 * its build options, its binary from the program cache or a build, and the table of
 * kernels that launches look up by name. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kdseg/fs.h"
#include "rt_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* Source of program i: common header, a #line reset, then the file. */
static kd_status program_source(int i, char **out) {
    const char *dir = getenv("KDSEG_CL_DIR");
    const char *name = kd_cl_sources[i].name;
    char *common = NULL, *body = NULL;
    if (dir && *dir) {
        char path[KD_PATH_MAX];
        kd_status s = kd_path_join(path, sizeof path, dir, "common.h");
        if (s) return s;
        common = read_text(path);
        if ((s = kd_path_join(path, sizeof path, dir, name))) {
            free(common);
            return s;
        }
        body = read_text(path);
        if (!body) {
            free(common);
            return kd_fail(KD_ERR_IO, "KDSEG_CL_DIR: cannot read %s: %s", path, strerror(errno));
        }
    }
    const char *c = common ? common : kd_cl_common_text;
    const char *b = body ? body : kd_cl_sources[i].text;
    size_t n = strlen(c) + strlen(b) + strlen(name) + 64;
    char *s = malloc(n);
    if (!s) {
        free(common);
        free(body);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "kernel source %s", name);
    }
    snprintf(s, n, "%s\n#line 1 \"%s\"\n%s", c, name, b);
    free(common);
    free(body);
    *out = s;
    return KD_OK;
}

static void build_options(kd_device *d, char *opt, size_t n) {
    char ver[128] = "";
    clGetDeviceInfo(d->device, CL_DEVICE_OPENCL_C_VERSION, sizeof ver - 1, ver, NULL);
    int major = 1, minor = 1;
    sscanf(ver, "OpenCL C %d.%d", &major, &minor);
    const char *std = (major > 1 || minor >= 2) ? "-cl-std=CL1.2" : "-cl-std=CL1.1";
    char vendor[256] = "";
    clGetDeviceInfo(d->device, CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
    const char *quirk = kd_rt_contains_ci(vendor, "nvidia") ? " -DKD_VENDOR_NVIDIA=1"
                        : (kd_rt_contains_ci(vendor, "amd") || kd_rt_contains_ci(vendor, "advanced micro"))
                            ? " -DKD_VENDOR_AMD=1"
                        : kd_rt_contains_ci(vendor, "intel") ? " -DKD_VENDOR_INTEL=1"
                                                       : "";
    snprintf(opt, n, "%s -cl-mad-enable -DKD_DEVICE_CPU=%d%s%s", std, d->is_cpu, quirk,
             d->extra_options);
}

static kd_status build_log_fail(kd_device *d, cl_program prog, const char *file) {
    size_t n = 0;
    clGetProgramBuildInfo(prog, d->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char *log = malloc(n + 1);
    if (log) {
        clGetProgramBuildInfo(prog, d->device, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        log[n] = 0;
    }
    kd_status s = kd_fail(KD_ERR_BUILD, "building kernel file %s for %s failed:\n%s", file,
                          d->name, log ? log : "(no build log)");
    free(log);
    return s;
}

static kd_status build_program(kd_device *d, int i) {
    const char *file = kd_cl_sources[i].name;
    char *src = NULL;
    kd_status s = program_source(i, &src);
    if (s) return s;
    char opt[1024];
    build_options(d, opt, sizeof opt);
    char drv[256] = "", pver[256] = "";
    clGetDeviceInfo(d->device, CL_DRIVER_VERSION, sizeof drv - 1, drv, NULL);
    clGetPlatformInfo(d->platform, CL_PLATFORM_VERSION, sizeof pver - 1, pver, NULL);
    uint64_t key = kd_hash64(0, src, strlen(src));
    key = kd_hash64(key, opt, strlen(opt));
    key = kd_hash64(key, d->name, strlen(d->name));
    key = kd_hash64(key, drv, strlen(drv));
    key = kd_hash64(key, pver, strlen(pver));
    char path[1200];
    kd_rt_cache_path(path, sizeof path, file, key);
    cl_int err;
    cl_program prog = NULL;
    if (kd_rt_cache_enabled()) {
        size_t n = 0;
        unsigned char *bin = kd_rt_cache_read(path, key, &n);
        if (bin) {
            cl_int bst;
            const unsigned char *bp = bin;
            prog = clCreateProgramWithBinary(d->ctx, 1, &d->device, &n, &bp, &bst, &err);
            if (prog && (err != CL_SUCCESS || bst != CL_SUCCESS ||
                         clBuildProgram(prog, 1, &d->device, opt, NULL, NULL) != CL_SUCCESS)) {
                kd_log(KD_LOG_INFO, "cached binary %s rejected by the driver; rebuilding", path);
                clReleaseProgram(prog);
                prog = NULL;
            }
            free(bin);
            if (prog) d->cache_hits++;
        }
    }
    if (!prog) {
        const char *sp = src;
        prog = clCreateProgramWithSource(d->ctx, 1, &sp, NULL, &err);
        if (!prog) {
            free(src);
            return kd_cl_fail(err, "creating program %s", file);
        }
        err = clBuildProgram(prog, 1, &d->device, opt, NULL, NULL);
        if (err != CL_SUCCESS) {
            s = build_log_fail(d, prog, file);
            clReleaseProgram(prog);
            free(src);
            return s;
        }
        if (kd_rt_cache_enabled()) {
            size_t bsz = 0;
            clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof bsz, &bsz, NULL);
            unsigned char *bin = bsz ? malloc(bsz) : NULL;
            if (bin && clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) ==
                           CL_SUCCESS)
                kd_rt_cache_write(path, key, bin, bsz);
            free(bin);
        }
    }
    free(src);
    d->programs[d->nprograms++] = prog;
    /* create every kernel of the program once */
    cl_uint nk = 0;
    if (clCreateKernelsInProgram(prog, 0, NULL, &nk) != CL_SUCCESS) nk = 0;
    if (nk == 0) return KD_OK;
    cl_kernel *ks = calloc(nk, sizeof *ks);
    if (!ks) return kd_fail(KD_ERR_OUT_OF_MEMORY, "kernel table");
    clCreateKernelsInProgram(prog, nk, ks, NULL);
    for (cl_uint k = 0; k < nk; k++) {
        if (d->nkernels == KD_MAX_KERNELS) {
            clReleaseKernel(ks[k]);
            continue;
        }
        kd_kernel_entry *e = &d->kernels[d->nkernels++];
        clGetKernelInfo(ks[k], CL_KERNEL_FUNCTION_NAME, sizeof e->name - 1, e->name, NULL);
        e->kernel = ks[k];
    }
    free(ks);
    return KD_OK;
}

kd_status kd_rt_build_programs(kd_device *d) {
    double t0 = now_s();
    for (int i = 0; i < kd_cl_source_count; i++) {
        kd_status s = build_program(d, i);
        if (s) return s;
    }
    d->build_seconds = now_s() - t0;
    kd_log(KD_LOG_INFO, "built %d programs for %s in %.2f s (%d from cache)", d->nprograms,
           d->name, d->build_seconds, d->cache_hits);
    return KD_OK;
}

kd_status kd_rt_kernel(kd_device *d, const char *name, cl_kernel *out) {
    int lo = d->last_kernel;
    if (lo < d->nkernels && !strcmp(d->kernels[lo].name, name)) {
        *out = d->kernels[lo].kernel;
        return KD_OK;
    }
    for (int i = 0; i < d->nkernels; i++)
        if (!strcmp(d->kernels[i].name, name)) {
            d->last_kernel = i;
            *out = d->kernels[i].kernel;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INTERNAL, "kernel '%s' not found in the built programs", name);
}

