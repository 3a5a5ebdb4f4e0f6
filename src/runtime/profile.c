/* Per-kernel profiling from OpenCL events (KDSEG_PROFILE=1), and small helpers. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rt_internal.h"

void kd_rt_profile_add(kd_device *d, int kernel, cl_event ev) {
    if (d->nevents == d->cap_events) {
        if (d->nevents >= 4096) kd_rt_profile_collect(d);
        if (d->nevents == d->cap_events) {
            int cap = d->cap_events ? 2 * d->cap_events : 1024;
            kd_pending_event *p = realloc(d->events, (size_t)cap * sizeof *p);
            if (!p) {
                clReleaseEvent(ev);
                return;
            }
            d->events = p;
            d->cap_events = cap;
        }
    }
    d->events[d->nevents++] = (kd_pending_event){ev, kernel, d->tag};
}

void kd_rt_profile_collect(kd_device *d) {
    if (!d->nevents) return;
    for (int i = 0; i < d->nevents; i++) {
        cl_ulong a = 0, b = 0;
        cl_event ev = d->events[i].ev;
        clWaitForEvents(1, &ev);
        if (clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof a, &a, NULL) ==
                CL_SUCCESS &&
            clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL) ==
                CL_SUCCESS &&
            b >= a) {
            kd_kernel_entry *k = &d->kernels[d->events[i].kernel];
            k->busy_s += 1e-9 * (double)(b - a);
            k->calls++;
            d->tag_busy[d->events[i].tag] += 1e-9 * (double)(b - a);
            if (!d->first_start || a < d->first_start) d->first_start = a;
            if (b > d->last_end) d->last_end = b;
        }
        clReleaseEvent(ev);
    }
    d->nevents = 0;
}

void kd_rt_profile_clear(kd_device *d) {
    for (int i = 0; i < d->nevents; i++) clReleaseEvent(d->events[i].ev);
    d->nevents = 0;
    free(d->events);
    d->events = NULL;
    d->cap_events = 0;
}

static int by_busy(const void *a, const void *b) {
    const kd_kernel_entry *x = *(kd_kernel_entry *const *)a, *y = *(kd_kernel_entry *const *)b;
    return (x->busy_s < y->busy_s) - (x->busy_s > y->busy_s);
}

void kd_device_profile_print(kd_device *d, FILE *f) {
    kd_rt_profile_collect(d);
    kd_kernel_entry *rows[KD_MAX_KERNELS];
    int n = 0;
    double total = 0;
    for (int i = 0; i < d->nkernels; i++)
        if (d->kernels[i].calls) {
            rows[n++] = &d->kernels[i];
            total += d->kernels[i].busy_s;
        }
    if (!n) return;
    qsort(rows, (size_t)n, sizeof rows[0], by_busy);
    fprintf(f, "kernel profile on %s (total %.3f s):\n", d->name, total);
    fprintf(f, "  %-32s %8s %12s %10s %6s\n", "kernel", "calls", "total ms", "mean us", "%");
    for (int i = 0; i < n; i++)
        fprintf(f, "  %-32s %8ld %12.2f %10.1f %6.1f\n", rows[i]->name, rows[i]->calls,
                1e3 * rows[i]->busy_s, 1e6 * rows[i]->busy_s / (double)rows[i]->calls,
                100.0 * rows[i]->busy_s / (total > 0 ? total : 1));
}

double kd_device_profile_busy(kd_device *d, double *span) {
    kd_rt_profile_collect(d);
    double t = 0;
    for (int i = 0; i < d->nkernels; i++) t += d->kernels[i].busy_s;
    if (span)
        *span = d->last_end > d->first_start ? 1e-9 * (double)(d->last_end - d->first_start) : 0;
    return t;
}

void kd_device_profile_reset(kd_device *d) {
    kd_rt_profile_collect(d);
    for (int i = 0; i < d->nkernels; i++) {
        d->kernels[i].busy_s = 0;
        d->kernels[i].calls = 0;
    }
    d->first_start = d->last_end = 0;
    for (int t = 0; t < KD_PROFILE_TAGS; t++) d->tag_busy[t] = 0;
}

void kd_device_profile_tag(kd_device *d, int tag) {
    d->tag = tag >= 0 && tag < KD_PROFILE_TAGS ? tag : 0;
}

double kd_device_profile_tag_busy(kd_device *d, int tag) {
    kd_rt_profile_collect(d);
    return tag >= 0 && tag < KD_PROFILE_TAGS ? d->tag_busy[tag] : 0;
}

int kd_rt_dir_stats(const char *dir, int *files, long *bytes) {
    *files = 0;
    *bytes = 0;
    DIR *dp = opendir(dir);
    if (!dp) return -1;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            (*files)++;
            *bytes += (long)st.st_size;
        }
    }
    closedir(dp);
    return 0;
}

void kd_rt_tuning_options(kd_device *d, char *out, size_t n) {
    (void)d;
    const char *extra = getenv("KDSEG_CL_OPTIONS");
    snprintf(out, n, "%s%s", extra && *extra ? " " : "", extra && *extra ? extra : "");
}
