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

/* ---- choice (select.c) ---------------------------------------------------- */

#define KD_MAX_DEVICES 64

/* One OpenCL device as enumeration finds it. */
typedef struct kd_dev_entry {
    int p, d, rank; /* platform and device index; rank as kd_dev_desc's */
    char name[256], pname[256];
    cl_platform_id platform;
    cl_device_id device;
    cl_device_type type;
} kd_dev_entry;

/* Every device of every platform (at most KD_MAX_DEVICES); KD_ERR_NO_DEVICE with what
 * to install when there is none. */
kd_status kd_rt_enumerate(kd_dev_entry *out, int *count);
/* The device kd_device_open(selector) opens: the selector (else KDSEG_DEVICE, else the
 * automatic rule) applied to the enumeration; the error lists the devices there are. */
kd_status kd_rt_find(const char *selector, kd_dev_entry *out);
/* Case-insensitive substring test (an empty needle is found everywhere). */
int kd_rt_contains_ci(const char *hay, const char *needle);

/* ---- program builds and the binary cache (program.c, progcache.c) ----------- */

/* Builds (or loads from the cache) every embedded program for d and fills its kernel
 * table; sets build_seconds and cache_hits. */
kd_status kd_rt_build_programs(kd_device *d);
/* The cache is on unless KDSEG_CACHE=0. */
int kd_rt_cache_enabled(void);
/* "path too long" when the cache folder leaves no room for its files' names. */
kd_status kd_rt_cache_dir_check(void);
/* The cache entry of program `file` ("conv3d.cl") under `key`. */
void kd_rt_cache_path(char *out, size_t n, const char *file, uint64_t key);
/* The binary stored at path under key (malloc'd, *size set), NULL when absent or corrupt. */
unsigned char *kd_rt_cache_read(const char *path, uint64_t key, size_t *size);
/* Stores a binary through a temporary file; failures only warn (a cache is optional). */
void kd_rt_cache_write(const char *path, uint64_t key, const unsigned char *bin, size_t n);

/* ---- fault injection (fault.c) --------------------------------------------- */

enum { KD_FAULT_NONE, KD_FAULT_LAUNCH, KD_FAULT_READ, KD_FAULT_WRITE };
/* Reads KDSEG_FAULT into d (once, at open); a malformed value is KD_ERR_INVALID_ARG. */
kd_status kd_rt_fault_parse(kd_device *d);
/* The error to inject into this call of `kind` (KD_FAULT_*), else CL_SUCCESS. */
cl_int kd_rt_fault(kd_device *d, int kind);

/* ---- profiling and tuning (profile.c) -------------------------------------- */

void kd_rt_profile_add(kd_device *d, int kernel, cl_event ev);
void kd_rt_profile_collect(kd_device *d);
void kd_rt_profile_clear(kd_device *d);
int kd_rt_dir_stats(const char *dir, int *files, long *bytes);
/* Tuned -D options for this device (tuning table; may be empty). */
void kd_rt_tuning_options(kd_device *d, char *out, size_t n);

#endif
