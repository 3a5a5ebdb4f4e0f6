/* The device structure, shared by the files of src/runtime/ only. */
#ifndef KD_RT_INTERNAL_H
#define KD_RT_INTERNAL_H

#include <stdatomic.h>

#include "rt.h"

#define KD_MAX_PROGRAMS 32
#define KD_MAX_KERNELS 512

typedef struct kd_kernel_entry {
    char name[64];
    cl_kernel kernel;
    double busy_s; /* profiling: total kernel time */
    long calls;
} kd_kernel_entry;

typedef struct kd_pool_entry {
    cl_mem mem;
    size_t bytes;
} kd_pool_entry;

typedef struct kd_pending_event {
    cl_event ev;
    int kernel, tag;
} kd_pending_event;

struct kd_event {
    cl_event ev;
};

struct kd_device {
    cl_platform_id platform;
    cl_device_id device;
    cl_context ctx;
    cl_command_queue queue;
    char name[256];
    int is_cpu;
    size_t global_mem, max_alloc, mem_limit;
    char extra_options[512]; /* tuned -D values */

    cl_program programs[KD_MAX_PROGRAMS];
    int nprograms;
    kd_kernel_entry kernels[KD_MAX_KERNELS];
    int nkernels, last_kernel;
    double build_seconds;
    int cache_hits;

    /* buffer pool and accounting */
    kd_pool_entry *pool;
    int npool, cap_pool;
    size_t pooled_bytes; /* free buffers held by the pool */
    size_t in_use, peak_in_use;

    /* profiling */
    int profiling;
    kd_pending_event *events;
    int nevents, cap_events;
    cl_ulong first_start, last_end;
    int tag;
    double tag_busy[KD_PROFILE_TAGS];

    /* fault injection for tests: KDSEG_FAULT=KIND:N[:CODE], read once at open */
    int fault_kind; /* KD_FAULT_*; 0: none */
    long fault_at;  /* the N-th call of that kind fails (1-based) */
    cl_int fault_code;
    _Atomic long fault_count;
};

enum { KD_FAULT_NONE, KD_FAULT_LAUNCH, KD_FAULT_READ, KD_FAULT_WRITE };
/* The error to inject into this call of `kind` (KD_FAULT_*), else CL_SUCCESS. */
cl_int kd_rt_fault(kd_device *d, int kind);

void kd_rt_profile_add(kd_device *d, int kernel, cl_event ev);
void kd_rt_profile_collect(kd_device *d);
void kd_rt_profile_clear(kd_device *d);
int kd_rt_dir_stats(const char *dir, int *files, long *bytes);
/* Tuned -D options for this device (tuning table; may be empty). */
void kd_rt_tuning_options(kd_device *d, char *out, size_t n);

#endif
