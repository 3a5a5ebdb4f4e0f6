/* Device discovery and choice: the platforms' devices, the choice rule (a selector, else
 * GPU, then accelerator, then CPU), the listing of `kdseg devices`, and a device's
 * identity for per-device tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rt_internal.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES 32 /* per platform */
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif

static int type_rank(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU) return 0;
    if (t & CL_DEVICE_TYPE_ACCELERATOR) return 1;
    if (t & CL_DEVICE_TYPE_CPU) return 2;
    return 3;
}

kd_status kd_rt_enumerate(kd_dev_entry *out, int *count) {
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
        for (cl_uint d = 0; d < nd && *count < KD_MAX_DEVICES; d++) {
            kd_dev_entry *e = &out[(*count)++];
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

int kd_rt_contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n)) return 1;
    return n == 0;
}

static kd_status choose(const kd_dev_entry *e, int count, const char *sel, int *idx) {
    kd_dev_desc desc[KD_MAX_DEVICES];
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
            if (kd_rt_contains_ci(e[i].name, sel)) return i;
        for (int i = 0; i < count; i++)
            if (kd_rt_contains_ci(e[i].pname, sel)) return i;
        return -1;
    }
    int best = -1;
    for (int i = 0; i < count; i++)
        if (best < 0 || e[i].rank < e[best].rank) best = i;
    return best;
}

/* The selector in force: the caller's, else KDSEG_DEVICE, else NULL (automatic). */
static const char *effective_selector(const char *sel) {
    if (sel && *sel) return sel;
    const char *env = getenv("KDSEG_DEVICE");
    return (env && *env) ? env : NULL;
}

static kd_status no_match(const kd_dev_entry *e, int count, const char *sel) {
    char list[2048] = "";
    size_t used = 0;
    for (int i = 0; i < count && used < sizeof list - 300; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s %d:%d %s", i ? ";" : "",
                                 e[i].p, e[i].d, e[i].name);
    return kd_fail(KD_ERR_NO_DEVICE,
                   "no OpenCL device matches '%s' (use P:D or part of a name); available:%s",
                   sel, list);
}

kd_status kd_rt_find(const char *selector, kd_dev_entry *out) {
    kd_dev_entry list[KD_MAX_DEVICES];
    int count = 0, idx;
    kd_status s = kd_rt_enumerate(list, &count);
    if (s) return s;
    const char *sel = effective_selector(selector);
    choose(list, count, sel, &idx);
    if (idx < 0) return no_match(list, count, sel);
    *out = list[idx];
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
    kd_dev_entry list[KD_MAX_DEVICES];
    int count = 0;
    kd_status s = kd_rt_enumerate(list, &count);
    if (s) return s;
    const char *sel = effective_selector(selector);
    int chosen;
    choose(list, count, sel, &chosen);
    for (int i = 0; i < count; i++) {
        kd_dev_entry *e = &list[i];
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
            kd_rt_cache_enabled() ? "enabled" : "disabled by KDSEG_CACHE=0", files, bytes);
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

void kd_device_ident(kd_device *d, kd_dev_ident *out) { ident_fill(d->platform, d->device, out); }

kd_status kd_device_ident_chosen(const char *selector, kd_dev_ident *out) {
    kd_dev_entry e;
    kd_status s = kd_rt_find(selector, &e);
    if (!s) ident_fill(e.platform, e.device, out);
    return s;
}
