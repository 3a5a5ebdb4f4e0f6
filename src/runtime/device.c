/* The device: opened on the chosen OpenCL device with its context and the one in-order
 * queue, its memory limit, profiling and fault settings, and its programs built; freed
 * with everything it holds. The parts live beside it: select.c (choice), program.c
 * (builds), progcache.c (binary cache), fault.c (KDSEG_FAULT), launch.c, pool.c. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kdseg/fs.h"
#include "rt_internal.h"

/* "512M", "4G", "1.5 G", a number of bytes; 0 when unreadable. */
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

/* A device with its own context and queue on the OpenCL device of entry e. */
static kd_status open_entry(const kd_dev_entry *e, kd_device **out) {
    *out = NULL;
    kd_status s = KD_OK;
    kd_device *d = calloc(1, sizeof *d);
    if (!d) return kd_fail(KD_ERR_OUT_OF_MEMORY, "device");
    d->platform = e->platform;
    d->device = e->device;
    d->is_cpu = (e->type & CL_DEVICE_TYPE_CPU) != 0;
    snprintf(d->name, sizeof d->name, "%s", e->name);
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
    if ((s = kd_rt_fault_parse(d)) || (s = kd_rt_cache_dir_check())) goto fail;
    /* program binaries and conv choices of killed writers */
    if (kd_rt_cache_enabled()) kd_tmp_sweep(kd_cache_dir(), KD_TMP_STALE_SECONDS);
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
    if ((s = kd_rt_build_programs(d))) goto fail;
    *out = d;
    return KD_OK;
fail:
    kd_device_free(d);
    return s;
}

kd_status kd_device_open(const char *selector, kd_device **out) {
    *out = NULL;
    kd_dev_entry e;
    kd_status s = kd_rt_find(selector, &e);
    return s ? s : open_entry(&e, out);
}

kd_status kd_device_open_like(const kd_device *like, kd_device **out) {
    kd_dev_entry e;
    memset(&e, 0, sizeof e);
    e.platform = like->platform;
    e.device = like->device;
    e.type = like->is_cpu ? CL_DEVICE_TYPE_CPU : CL_DEVICE_TYPE_GPU;
    snprintf(e.name, sizeof e.name, "%s", like->name);
    return open_entry(&e, out);
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
int kd_device_compute_units(const kd_device *d) {
    cl_uint cu = 0;
    if (clGetDeviceInfo(d->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL) != CL_SUCCESS)
        cu = 1;
    return cu ? (int)cu : 1;
}
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

