/* Buffer pool and device memory accounting, and blocking transfers. */
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

static void fmt_mib(char *out, size_t n, size_t b) {
    snprintf(out, n, "%.1f MiB", (double)b / (1024.0 * 1024.0));
}

/* KDSEG_POOL_EXACT=1 (set by tools/check_kernels.sh): buffers of exactly the size
 * asked, never a larger pooled one, so that Oclgrind sees a kernel that overruns
 * its tensor by a few elements instead of writing into the rounding slack. */
static int pool_exact(void) {
    const char *e = getenv("KDSEG_POOL_EXACT");
    return e && *e && strcmp(e, "0") != 0;
}

static size_t pool_round(size_t bytes) {
    if (bytes == 0) bytes = 4;
    return pool_exact() ? bytes : (bytes + 255) & ~(size_t)255;
}

kd_status kd_rt_alloc(kd_device *d, size_t bytes, cl_mem *out) {
    *out = NULL;
    bytes = pool_round(bytes);
    /* best fit among pooled buffers, at most 25% larger than asked */
    int best = -1;
    size_t slack = pool_exact() ? 0 : bytes / 4;
    for (int i = 0; i < d->npool; i++) {
        size_t b = d->pool[i].bytes;
        if (b >= bytes && b <= bytes + slack && (best < 0 || b < d->pool[best].bytes))
            best = i;
    }
    if (best >= 0) {
        *out = d->pool[best].mem;
        size_t b = d->pool[best].bytes;
        d->pool[best] = d->pool[--d->npool];
        d->pooled_bytes -= b;
        d->in_use += b;
        if (d->in_use > d->peak_in_use) d->peak_in_use = d->in_use;
        return KD_OK;
    }
    char req[32], lim[32], max[32], used[32];
    fmt_mib(req, sizeof req, bytes);
    fmt_mib(lim, sizeof lim, d->mem_limit);
    fmt_mib(max, sizeof max, d->max_alloc);
    if (bytes > d->max_alloc)
        return kd_fail(KD_ERR_OUT_OF_MEMORY,
                       "device buffer of %s exceeds %s's largest allocation (%s; global memory "
                       "%s): use a smaller patch or batch, or --tile",
                       req, d->name, max, lim);
    if (d->in_use + d->pooled_bytes + bytes > d->mem_limit) kd_rt_pool_trim(d);
    if (d->in_use + bytes > d->mem_limit) {
        fmt_mib(used, sizeof used, d->in_use);
        return kd_fail(KD_ERR_OUT_OF_MEMORY,
                       "device memory exhausted on %s: %s in use, %s more requested, limit %s "
                       "(KDSEG_MEM_LIMIT or the device's global memory): use a smaller patch or "
                       "batch, or --tile",
                       d->name, used, req, lim);
    }
    cl_int err;
    cl_mem m = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!m && (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
               err == CL_OUT_OF_HOST_MEMORY)) {
        kd_rt_pool_trim(d);
        m = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    }
    if (!m) return kd_cl_fail(err, "allocating %s on %s", req, d->name);
    d->in_use += bytes;
    if (d->in_use > d->peak_in_use) d->peak_in_use = d->in_use;
    *out = m;
    return KD_OK;
}

void kd_rt_release(kd_device *d, cl_mem mem, size_t bytes) {
    if (!mem) return;
    bytes = pool_round(bytes);
    d->in_use -= bytes < d->in_use ? bytes : d->in_use;
    if (d->npool == d->cap_pool) {
        int cap = d->cap_pool ? 2 * d->cap_pool : 64;
        kd_pool_entry *p = realloc(d->pool, (size_t)cap * sizeof *p);
        if (!p) {
            clReleaseMemObject(mem);
            return;
        }
        d->pool = p;
        d->cap_pool = cap;
    }
    d->pool[d->npool++] = (kd_pool_entry){mem, bytes};
    d->pooled_bytes += bytes;
}

void kd_rt_pool_trim(kd_device *d) {
    for (int i = 0; i < d->npool; i++) clReleaseMemObject(d->pool[i].mem);
    d->npool = 0;
    d->pooled_bytes = 0;
}

size_t kd_device_mem_current(const kd_device *d) { return d->in_use; }
size_t kd_device_mem_peak(const kd_device *d) { return d->peak_in_use; }
void kd_device_mem_reset_peak(kd_device *d) { d->peak_in_use = d->in_use; }

/* The note on a failure that KDSEG_FAULT injected. */
#define INJECTED(inj) ((inj) ? " (injected by KDSEG_FAULT)" : "")

kd_status kd_rt_write(kd_device *d, cl_mem m, size_t off, size_t bytes, const void *src) {
    if (!bytes) return KD_OK;
    cl_int err = kd_rt_fault(d, KD_FAULT_WRITE);
    int inj = err != CL_SUCCESS;
    if (!inj) err = clEnqueueWriteBuffer(d->queue, m, CL_TRUE, off, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? KD_OK
                             : kd_cl_fail(err, "writing %zu bytes to the device%s", bytes, INJECTED(inj));
}

kd_status kd_rt_read(kd_device *d, cl_mem m, size_t off, size_t bytes, void *dst) {
    if (!bytes) return KD_OK;
    cl_int err = kd_rt_fault(d, KD_FAULT_READ);
    int inj = err != CL_SUCCESS;
    if (!inj) err = clEnqueueReadBuffer(d->queue, m, CL_TRUE, off, bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? KD_OK
                             : kd_cl_fail(err, "reading %zu bytes from the device%s", bytes, INJECTED(inj));
}

kd_status kd_rt_read_async(kd_device *d, cl_mem m, size_t off, size_t bytes, void *dst,
                           kd_event **ev) {
    *ev = calloc(1, sizeof **ev);
    if (!*ev) return kd_fail(KD_ERR_OUT_OF_MEMORY, "event");
    cl_int err = kd_rt_fault(d, KD_FAULT_READ);
    int inj = err != CL_SUCCESS;
    if (!inj)
        err = clEnqueueReadBuffer(d->queue, m, CL_FALSE, off, bytes, dst, 0, NULL, &(*ev)->ev);
    if (err != CL_SUCCESS) {
        free(*ev);
        *ev = NULL;
        return kd_cl_fail(err, "reading %zu bytes from the device%s", bytes, INJECTED(inj));
    }
    clFlush(d->queue);
    return KD_OK;
}

kd_status kd_event_wait(kd_event *ev) {
    if (!ev) return KD_OK;
    cl_int err = clWaitForEvents(1, &ev->ev);
    clReleaseEvent(ev->ev);
    free(ev);
    return err == CL_SUCCESS ? KD_OK : kd_cl_fail(err, "waiting for a device read");
}

kd_status kd_rt_write_async(kd_device *d, cl_mem m, size_t off, size_t bytes, const void *src) {
    if (!bytes) return KD_OK;
    cl_int err = kd_rt_fault(d, KD_FAULT_WRITE);
    int inj = err != CL_SUCCESS;
    if (!inj) err = clEnqueueWriteBuffer(d->queue, m, CL_FALSE, off, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? KD_OK
                             : kd_cl_fail(err, "writing %zu bytes to the device%s", bytes, INJECTED(inj));
}

kd_status kd_rt_fill(kd_device *d, cl_mem m, size_t off, size_t bytes, float value) {
    if (!bytes) return KD_OK;
    size_t n = bytes / sizeof(float);
    size_t g = n;
    return kd_rt_launch(d, "kd_fill", 1, &g, NULL,
                        KD_ARGS(KD_MEM(m), KD_INT(off / sizeof(float)), KD_INT(n), KD_FLOAT(value)));
}

kd_status kd_rt_copy(kd_device *d, cl_mem src, size_t so, cl_mem dst, size_t dof, size_t bytes) {
    if (!bytes) return KD_OK;
    cl_int err = clEnqueueCopyBuffer(d->queue, src, dst, so, dof, bytes, 0, NULL, NULL);
    return err == CL_SUCCESS ? KD_OK : kd_cl_fail(err, "copying %zu bytes on the device", bytes);
}
