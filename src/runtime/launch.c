/* Kernel launches: arguments set, the range rounded up to the work-group size, the
 * enqueue (or the injected fault), and the profiling event. */
#include <stdio.h>
#include <string.h>

#include "rt_internal.h"

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

