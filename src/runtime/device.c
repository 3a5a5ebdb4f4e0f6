/* Device discovery and choice, context and the one in-order queue, start-up
 * program builds with the on-disk binary cache, kernel lookup and launch,
 * profiling. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "rt.h"
#include "kdseg/fs.h"
#include "rt_internal.h"
#include "tmpfiles.h"

#define MAX_PLATFORMS 16
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif
#define MAX_DEVICES 32

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t kd_hash64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    if (!h) h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- enumeration ---------------------------------------------------------- */

typedef struct dev_entry {
    int p, d, rank;
    char name[256], pname[256];
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
} dev_entry;

static int type_rank(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU) return 0;
    if (t & CL_DEVICE_TYPE_ACCELERATOR) return 1;
    if (t & CL_DEVICE_TYPE_CPU) return 2;
    return 3;
}

static kd_status enumerate(dev_entry *out, int *count) {
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, plats, &np);
    *count = 0;
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && np == 0) ||
        err == CL_INVALID_VALUE)
        return kd_fail(KD_ERR_NO_DEVICE,
                       "no OpenCL platform found: install an OpenCL driver (on Debian/Ubuntu: "
                       "'apt-get install ocl-icd-libopencl1 pocl-opencl-icd' for CPUs, or your "
                       "GPU vendor's OpenCL runtime) and check /etc/OpenCL/vendors");
    if (err != CL_SUCCESS) return kd_cl_fail(err, "clGetPlatformIDs");
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd && *count < MAX_PLATFORMS * 4; d++) {
            dev_entry *e = &out[(*count)++];
            memset(e, 0, sizeof *e);
            e->p = (int)p;
            e->d = (int)d;
            e->platform = plats[p];
            e->device = devs[d];
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof e->type, &e->type, NULL);
            clGetDeviceInfo(devs[d], CL_DEVICE_NAME, sizeof e->name - 1, e->name, NULL);
            clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof e->pname - 1, e->pname, NULL);
            e->rank = type_rank(e->type);
        }
    }
    if (*count == 0)
        return kd_fail(KD_ERR_NO_DEVICE,
                       "OpenCL platforms found but no devices: install a driver for your "
                       "GPU, or 'apt-get install pocl-opencl-icd' for the CPU");
    return KD_OK;
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n)) return 1;
    return n == 0;
}

static kd_status choose(const dev_entry *e, int count, const char *sel, int *idx) {
    kd_dev_desc desc[MAX_PLATFORMS * 4];
    for (int i = 0; i < count; i++) {
        desc[i].p = e[i].p;
        desc[i].d = e[i].d;
        desc[i].rank = e[i].rank;
        desc[i].name = e[i].name;
        desc[i].pname = e[i].pname;
    }
    *idx = kd_rt_choose(desc, count, sel);
    return KD_OK;
}

int kd_rt_choose(const kd_dev_desc *e, int count, const char *sel) {
    if (sel && *sel) {
        int p, d;
        char extra;
        if (sscanf(sel, "%d:%d%c", &p, &d, &extra) == 2) {
            for (int i = 0; i < count; i++)
                if (e[i].p == p && e[i].d == d) return i;
            return -1;
        }
        for (int i = 0; i < count; i++)
            if (contains_ci(e[i].name, sel)) return i;
        for (int i = 0; i < count; i++)
            if (contains_ci(e[i].pname, sel)) return i;
        return -1;
    }
    int best = -1;
    for (int i = 0; i < count; i++)
        if (best < 0 || e[i].rank < e[best].rank) best = i;
    return best;
}

static const char *effective_selector(const char *sel) {
    if (sel && *sel) return sel;
    const char *env = getenv("KDSEG_DEVICE");
    return (env && *env) ? env : NULL;
}

static kd_status no_match(const dev_entry *e, int count, const char *sel) {
    char list[2048] = "";
    size_t used = 0;
    for (int i = 0; i < count && used < sizeof list - 300; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s %d:%d %s", i ? ";" : "",
                                 e[i].p, e[i].d, e[i].name);
    return kd_fail(KD_ERR_NO_DEVICE,
                   "no OpenCL device matches '%s' (use P:D or part of a name); available:%s",
                   sel, list);
}

/* ---- cache folder ----------------------------------------------------------- */

/* The longest cache folder: its files' names (program binaries, conv choices, the
 * tuning table) and their temporary names then fit the buffers that compose them. */
#define CACHE_DIR_MAX 900

/* The folder in dir[KD_PATH_MAX]; its full length (longer than CACHE_DIR_MAX: unusable,
 * kd_device_open refuses it). */
static size_t cache_dir_into(char *dir) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int n = x && *x ? snprintf(dir, KD_PATH_MAX, "%s/kdseg", x)
                    : snprintf(dir, KD_PATH_MAX, "%s/.cache/kdseg", (h && *h) ? h : "/tmp");
    return n < 0 ? KD_PATH_MAX : (size_t)n;
}

const char *kd_cache_dir(void) {
    static _Thread_local char dir[KD_PATH_MAX];
    cache_dir_into(dir);
    return dir;
}

static kd_status check_cache_dir(void) {
    char dir[KD_PATH_MAX];
    size_t n = cache_dir_into(dir);
    if (n <= CACHE_DIR_MAX) return KD_OK;
    return kd_fail(KD_ERR_INVALID_ARG, "path too long: the cache folder %s%s (%zu characters; at most "
                   "%d): set XDG_CACHE_HOME to a shorter folder", dir, n >= KD_PATH_MAX ? "..." : "",
                   n, CACHE_DIR_MAX);
}

static int cache_enabled(void) {
    const char *e = getenv("KDSEG_CACHE");
    return !(e && !strcmp(e, "0"));
}

void kd_rt_mkdir_p(const char *path) {
    char tmp[KD_PATH_MAX];
    if (kd_path_printf(tmp, sizeof tmp, "%s", path)) return; /* the open that follows says why */
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

#define CACHE_MAGIC "KDPCACHE"

static void cache_path(char *out, size_t n, const char *file, uint64_t key) {
    char stem[128];
    snprintf(stem, sizeof stem, "%s", file);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = 0;
    snprintf(out, n, "%s/%s-%016llx.bin", kd_cache_dir(), stem, (unsigned long long)key);
}

/* Read a cache entry; returns malloc'd binary or NULL if absent or corrupt. */
static unsigned char *cache_read(const char *path, uint64_t key, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[8];
    uint64_t k = 0, n = 0;
    uint32_t crc = 0;
    unsigned char *bin = NULL;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, CACHE_MAGIC, 8) ||
        fread(&k, 8, 1, f) != 1 || k != key || fread(&n, 8, 1, f) != 1 ||
        fread(&crc, 4, 1, f) != 1 || n == 0 || n > ((uint64_t)1 << 31))
        goto bad;
    bin = malloc(n);
    if (!bin || fread(bin, 1, n, f) != n) goto bad;
    if ((uint32_t)crc32(0L, bin, (uInt)n) != crc) goto bad;
    fclose(f);
    *size = n;
    return bin;
bad:
    kd_log(KD_LOG_INFO, "program cache entry %s is corrupt or stale; rebuilding", path);
    free(bin);
    fclose(f);
    return NULL;
}

static void cache_write(const char *path, uint64_t key, const unsigned char *bin, size_t n) {
    kd_rt_mkdir_p(kd_cache_dir());
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        kd_log(KD_LOG_WARN, "cannot write program cache %s: %s", tmp, strerror(errno));
        return;
    }
    uint64_t n64 = n;
    uint32_t crc = (uint32_t)crc32(0L, bin, (uInt)n);
    int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&key, 8, 1, f) == 1 &&
             fwrite(&n64, 8, 1, f) == 1 && fwrite(&crc, 4, 1, f) == 1 &&
             fwrite(bin, 1, n, f) == n;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        kd_log(KD_LOG_WARN, "cannot write program cache %s", path);
        remove(tmp);
    }
}

/* ---- sources ----------------------------------------------------------------- */

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

/* ---- the device -------------------------------------------------------------- */

static void build_options(kd_device *d, char *opt, size_t n) {
    char ver[128] = "";
    clGetDeviceInfo(d->device, CL_DEVICE_OPENCL_C_VERSION, sizeof ver - 1, ver, NULL);
    int major = 1, minor = 1;
    sscanf(ver, "OpenCL C %d.%d", &major, &minor);
    const char *std = (major > 1 || minor >= 2) ? "-cl-std=CL1.2" : "-cl-std=CL1.1";
    char vendor[256] = "";
    clGetDeviceInfo(d->device, CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
    const char *quirk = contains_ci(vendor, "nvidia") ? " -DKD_VENDOR_NVIDIA=1"
                        : (contains_ci(vendor, "amd") || contains_ci(vendor, "advanced micro"))
                            ? " -DKD_VENDOR_AMD=1"
                        : contains_ci(vendor, "intel") ? " -DKD_VENDOR_INTEL=1"
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
    cache_path(path, sizeof path, file, key);
    cl_int err;
    cl_program prog = NULL;
    if (cache_enabled()) {
        size_t n = 0;
        unsigned char *bin = cache_read(path, key, &n);
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
        if (cache_enabled()) {
            size_t bsz = 0;
            clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof bsz, &bsz, NULL);
            unsigned char *bin = bsz ? malloc(bsz) : NULL;
            if (bin && clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) ==
                           CL_SUCCESS)
                cache_write(path, key, bin, bsz);
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

static size_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    while (*end == ' ') end++;
    switch (toupper((unsigned char)*end)) {
    case 'K': v *= 1024.0; break;
    case 'M': v *= 1024.0 * 1024.0; break;
    case 'G': v *= 1024.0 * 1024.0 * 1024.0; break;
    default: break;
    }
    return v > 0 ? (size_t)v : 0;
}

/* KDSEG_FAULT=KIND:N[:CODE] (tests): the N-th launch, blocking or non-blocking read,
 * or write of the device fails with CODE (an OpenCL error name or number; default
 * CL_OUT_OF_RESOURCES), as a driver would report it, so error paths can be tested
 * without a failing device. Read once here; a bad value is refused. KDSEG_FAULT=full:N
 * is the file writers' (kd_output_target, fs.c): accepted here and left to them. */
static kd_status parse_fault(kd_device *d) {
    const char *e = getenv("KDSEG_FAULT");
    if (!e || !*e) return KD_OK;
    static const char *const kinds[] = {"launch", "read", "write"};
    char kind[16] = "", code[64] = "";
    long n = 0;
    int got = sscanf(e, "%15[a-z]:%ld:%63s", kind, &n, code);
    if (got == 2 && n > 0 && !strcmp(kind, "full")) return KD_OK; /* files, not the device: fs.c */
    for (int k = 0; k < 3 && got >= 2 && n > 0; k++)
        if (!strcmp(kind, kinds[k])) d->fault_kind = KD_FAULT_LAUNCH + k;
    d->fault_at = n;
    d->fault_code = CL_OUT_OF_RESOURCES;
    if (d->fault_kind && got == 3) {
        char *end;
        long v = strtol(code, &end, 10);
        int found = *end == 0 && v < 0;
        if (found) d->fault_code = (cl_int)v;
        for (cl_int c = -1; c >= -70 && !found; c--)
            if (!strcmp(code, kd_cl_error_name(c))) d->fault_code = c, found = 1;
        if (!found) d->fault_kind = KD_FAULT_NONE;
    }
    if (!d->fault_kind)
        return kd_fail(KD_ERR_INVALID_ARG,
                       "KDSEG_FAULT='%s': expected launch|read|write:N[:CODE] with N >= 1 and "
                       "CODE an OpenCL error name such as CL_OUT_OF_RESOURCES, or full:N", e);
    kd_log(KD_LOG_WARN, "KDSEG_FAULT: %s call %ld will fail with %s", kinds[d->fault_kind - 1],
           d->fault_at, kd_cl_error_name(d->fault_code));
    return KD_OK;
}

cl_int kd_rt_fault(kd_device *d, int kind) {
    if (d->fault_kind != kind) return CL_SUCCESS;
    return atomic_fetch_add(&d->fault_count, 1) + 1 == d->fault_at ? d->fault_code : CL_SUCCESS;
}

kd_status kd_device_open(const char *selector, kd_device **out) {
    *out = NULL;
    dev_entry list[MAX_PLATFORMS * 4];
    int count = 0;
    kd_status s = enumerate(list, &count);
    if (s) return s;
    const char *sel = effective_selector(selector);
    int idx;
    choose(list, count, sel, &idx);
    if (idx < 0) return no_match(list, count, sel);
    kd_device *d = calloc(1, sizeof *d);
    if (!d) return kd_fail(KD_ERR_OUT_OF_MEMORY, "device");
    d->platform = list[idx].platform;
    d->device = list[idx].device;
    d->is_cpu = (list[idx].type & CL_DEVICE_TYPE_CPU) != 0;
    snprintf(d->name, sizeof d->name, "%s", list[idx].name);
    cl_ulong gm = 0, ma = 0;
    clGetDeviceInfo(d->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL);
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL);
    d->global_mem = (size_t)gm;
    d->max_alloc = (size_t)ma;
    d->mem_limit = d->global_mem;
    const char *lim = getenv("KDSEG_MEM_LIMIT");
    if (lim && *lim && parse_bytes(lim)) d->mem_limit = parse_bytes(lim);
    const char *prof = getenv("KDSEG_PROFILE");
    d->profiling = prof && (!strcmp(prof, "1") || !strcmp(prof, "quiet"));
    if ((s = parse_fault(d)) || (s = check_cache_dir())) goto fail;
    /* program binaries and conv choices of killed writers */
    if (cache_enabled()) kd_tmp_sweep(kd_cache_dir(), KD_TMP_STALE_SECONDS);
    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
    d->ctx = clCreateContext(props, 1, &d->device, NULL, NULL, &err);
    if (!d->ctx) {
        s = kd_cl_fail(err, "creating a context on %s", d->name);
        goto fail;
    }
    d->queue = clCreateCommandQueue(d->ctx, d->device,
                                    d->profiling ? CL_QUEUE_PROFILING_ENABLE : 0, &err);
    if (!d->queue) {
        s = kd_cl_fail(err, "creating a command queue on %s", d->name);
        goto fail;
    }
    kd_rt_tuning_options(d, d->extra_options, sizeof d->extra_options);
    double t0 = now_s();
    for (int i = 0; i < kd_cl_source_count; i++)
        if ((s = build_program(d, i))) goto fail;
    d->build_seconds = now_s() - t0;
    kd_log(KD_LOG_INFO, "built %d programs for %s in %.2f s (%d from cache)", d->nprograms,
           d->name, d->build_seconds, d->cache_hits);
    *out = d;
    return KD_OK;
fail:
    kd_device_free(d);
    return s;
}

void kd_device_free(kd_device *d) {
    if (!d) return;
    if (d->queue) clFinish(d->queue);
    const char *prof = getenv("KDSEG_PROFILE");
    if (d->profiling && prof && !strcmp(prof, "1")) kd_device_profile_print(d, stderr);
    kd_rt_profile_clear(d);
    kd_rt_pool_trim(d);
    free(d->pool);
    for (int i = 0; i < d->nkernels; i++) clReleaseKernel(d->kernels[i].kernel);
    for (int i = 0; i < d->nprograms; i++) clReleaseProgram(d->programs[i]);
    if (d->queue) clReleaseCommandQueue(d->queue);
    if (d->ctx) clReleaseContext(d->ctx);
    free(d);
}

const char *kd_device_name(const kd_device *d) { return d->name; }
int kd_device_is_cpu(const kd_device *d) { return d->is_cpu; }
double kd_device_build_seconds(const kd_device *d) { return d->build_seconds; }
int kd_device_cache_hits(const kd_device *d) { return d->cache_hits; }
int kd_device_program_count(const kd_device *d) { return d->nprograms; }
size_t kd_device_max_alloc(const kd_device *d) { return d->max_alloc; }
size_t kd_device_global_mem(const kd_device *d) { return d->global_mem; }
cl_context kd_rt_context(kd_device *d) { return d->ctx; }
cl_command_queue kd_rt_queue(kd_device *d) { return d->queue; }
cl_device_id kd_rt_device_id(kd_device *d) { return d->device; }
int kd_device_profiling(const kd_device *d) { return d->profiling; }

kd_status kd_device_finish(kd_device *d) {
    cl_int err = clFinish(d->queue);
    if (err != CL_SUCCESS) return kd_cl_fail(err, "waiting for the device queue");
    kd_rt_profile_collect(d);
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

kd_status kd_rt_launch(kd_device *d, const char *name, int dim, const size_t *gws,
                       const size_t *lws, int nargs, const kd_arg *args) {
    cl_kernel k;
    kd_status s = kd_rt_kernel(d, name, &k);
    if (s) return s;
    int kidx = d->last_kernel;
    for (int i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].ptr);
        if (err != CL_SUCCESS) return kd_cl_fail(err, "kernel %s argument %d", name, i);
    }
    size_t g[3];
    for (int i = 0; i < dim; i++) {
        g[i] = gws[i] ? gws[i] : 1;
        if (lws && lws[i]) g[i] = (g[i] + lws[i] - 1) / lws[i] * lws[i];
    }
    cl_event ev = NULL;
    cl_int err = kd_rt_fault(d, KD_FAULT_LAUNCH);
    int injected = err != CL_SUCCESS;
    if (!injected)
        err = clEnqueueNDRangeKernel(d->queue, k, (cl_uint)dim, NULL, g, lws, 0, NULL,
                                     d->profiling ? &ev : NULL);
    if (err != CL_SUCCESS) {
        char shape[128];
        snprintf(shape, sizeof shape, "%zu", g[0]);
        for (int i = 1; i < dim; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "x%zu", g[i]);
        return kd_cl_fail(err, "launching kernel %s over %s on %s%s", name, shape, d->name,
                          injected ? " (injected by KDSEG_FAULT)" : "");
    }
    if (ev) kd_rt_profile_add(d, kidx, ev);
    return KD_OK;
}

/* ---- listing -------------------------------------------------------------------- */

static void fmt_bytes(char *out, size_t n, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024.0 && i < 4) {
        b /= 1024.0;
        i++;
    }
    snprintf(out, n, "%.1f %s", b, u[i]);
}

static const char *type_name(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU) return "GPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR) return "accelerator";
    if (t & CL_DEVICE_TYPE_CPU) return "CPU";
    return "other";
}

static int has_ext(cl_device_id dev, const char *ext) {
    size_t n = 0;
    clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n);
    char *s = malloc(n + 1);
    if (!s) return 0;
    clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, s, NULL);
    s[n] = 0;
    int r = strstr(s, ext) != NULL;
    free(s);
    return r;
}

kd_status kd_device_list(FILE *f, const char *selector) {
    dev_entry list[MAX_PLATFORMS * 4];
    int count = 0;
    kd_status s = enumerate(list, &count);
    if (s) return s;
    const char *sel = effective_selector(selector);
    int chosen;
    choose(list, count, sel, &chosen);
    for (int i = 0; i < count; i++) {
        dev_entry *e = &list[i];
        if (i == 0 || list[i - 1].p != e->p) {
            char ver[256] = "";
            clGetPlatformInfo(e->platform, CL_PLATFORM_VERSION, sizeof ver - 1, ver, NULL);
            fprintf(f, "platform %d: %s (%s)\n", e->p, e->pname, ver);
        }
        cl_uint cu = 0;
        cl_ulong gm = 0, ma = 0, lm = 0;
        char cver[128] = "", drv[128] = "";
        clGetDeviceInfo(e->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
        clGetDeviceInfo(e->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gm, &gm, NULL);
        clGetDeviceInfo(e->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL);
        clGetDeviceInfo(e->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
        clGetDeviceInfo(e->device, CL_DEVICE_OPENCL_C_VERSION, sizeof cver - 1, cver, NULL);
        clGetDeviceInfo(e->device, CL_DRIVER_VERSION, sizeof drv - 1, drv, NULL);
        char g[32], m[32], l[32];
        fmt_bytes(g, sizeof g, (double)gm);
        fmt_bytes(m, sizeof m, (double)ma);
        fmt_bytes(l, sizeof l, (double)lm);
        fprintf(f, "  %s device %d:%d  %s\n", i == chosen ? "*" : " ", e->p, e->d, e->name);
        fprintf(f, "      type %s, %u compute units, driver %s\n", type_name(e->type), cu, drv);
        fprintf(f, "      global memory %s, max allocation %s, local memory %s\n", g, m, l);
        fprintf(f, "      %s, fp16 %s, fp64 %s\n", cver,
                has_ext(e->device, "cl_khr_fp16") ? "yes" : "no",
                has_ext(e->device, "cl_khr_fp64") ? "yes" : "no");
    }
    if (chosen < 0) return no_match(list, count, sel);
    fprintf(f, "chosen: %d:%d %s%s\n", list[chosen].p, list[chosen].d, list[chosen].name,
            sel ? " (by selector)" : " (automatic: GPU, then accelerator, then CPU)");
    int files = 0;
    long bytes = 0;
    kd_rt_dir_stats(kd_cache_dir(), &files, &bytes);
    fprintf(f, "program cache: %s (%s; %d files, %ld bytes)\n", kd_cache_dir(),
            cache_enabled() ? "enabled" : "disabled by KDSEG_CACHE=0", files, bytes);
    return KD_OK;
}

/* ---- identity (per-device tables) ------------------------------------------------ */

static void ident_fill(cl_platform_id p, cl_device_id dv, kd_dev_ident *out) {
    memset(out, 0, sizeof *out);
    cl_device_type t = 0;
    clGetDeviceInfo(dv, CL_DEVICE_NAME, sizeof out->name - 1, out->name, NULL);
    clGetDeviceInfo(dv, CL_DEVICE_VENDOR, sizeof out->vendor - 1, out->vendor, NULL);
    clGetPlatformInfo(p, CL_PLATFORM_VENDOR, sizeof out->pvendor - 1, out->pvendor, NULL);
    clGetDeviceInfo(dv, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    out->rank = type_rank(t);
}

void kd_rt_ident(kd_device *d, kd_dev_ident *out) { ident_fill(d->platform, d->device, out); }

kd_status kd_rt_ident_chosen(const char *selector, kd_dev_ident *out) {
    dev_entry list[MAX_PLATFORMS * 4];
    int count = 0, idx;
    kd_status s = enumerate(list, &count);
    if (s) return s;
    const char *sel = effective_selector(selector);
    choose(list, count, sel, &idx);
    if (idx < 0) return no_match(list, count, sel);
    ident_fill(list[idx].platform, list[idx].device, out);
    return KD_OK;
}
