/* kdseg: OpenCL devices, the program cache, device memory accounting. */
#ifndef KDSEG_DEVICE_H
#define KDSEG_DEVICE_H

#include <stddef.h>
#include <stdio.h>

#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_device kd_device;

/* Open a device. selector: NULL or "" means $KDSEG_DEVICE, else automatic
 * (GPU, then accelerator, then CPU). "P:D" picks platform P, device D;
 * anything else is a case-insensitive substring of the device or platform name.
 * Builds every program (from the on-disk cache when it can). */
kd_status kd_device_open(const char *selector, kd_device **out);
/* Another kd_device on like's OpenCL device: its own context, in-order queue, buffer pool
 * and programs (from the cache like's build wrote), so that two host threads can each
 * drive one (a kd_device is used by one thread at a time). */
kd_status kd_device_open_like(const kd_device *like, kd_device **out);
/* The selector ("P:D") of the n-th device, counted modulo their number, of the best kind
 * present (GPUs, else accelerators, else CPUs), in platform and device order: how the
 * ranks of a distributed job on one machine share its GPUs (rank n takes the n-th). */
kd_status kd_device_selector_nth(int n, char *buf, size_t len);
/* Releases the device, its programs and buffer pool (every tensor and model on it must be
 * freed first). NULL ok. */
void kd_device_free(kd_device *dev);

/* Print every platform and device, which one would be chosen, and the cache
 * state, to f. */
kd_status kd_device_list(FILE *f, const char *selector);

/* Name of the device ("pthread-haswell-AMD EPYC ..."). Borrowed. */
const char *kd_device_name(const kd_device *dev);
/* 1 for a CPU device (PoCL), 0 otherwise. */
int kd_device_is_cpu(const kd_device *dev);

/* Identity of a device for per-device tables (the conv tuning table): its name, the
 * device's and the platform's vendor strings, and its type as a rank. */
typedef struct kd_dev_ident {
    char name[256], vendor[256], pvendor[256];
    int rank; /* 0 GPU, 1 accelerator, 2 CPU, 3 other */
} kd_dev_ident;
void kd_device_ident(kd_device *dev, kd_dev_ident *out);
/* The identity of the device kd_device_open(selector) would choose, without opening it. */
kd_status kd_device_ident_chosen(const char *selector, kd_dev_ident *out);

/* Seconds the start-up program builds took, and how many came from the cache. */
double kd_device_build_seconds(const kd_device *dev);
int kd_device_cache_hits(const kd_device *dev);     /* programs loaded from the cache */
int kd_device_program_count(const kd_device *dev); /* programs built at start-up */

/* Wait for all queued work. Only sync points that need host data call this. */
kd_status kd_device_finish(kd_device *dev);

/* Device memory accounting (bytes of buffers handed out to tensors). */
size_t kd_device_mem_current(const kd_device *dev); /* bytes held now */
size_t kd_device_mem_peak(const kd_device *dev);    /* most held since the last reset */
void kd_device_mem_reset_peak(kd_device *dev);      /* peak := current */
size_t kd_device_max_alloc(const kd_device *dev);   /* largest single buffer */
size_t kd_device_global_mem(const kd_device *dev);  /* memory limit (KDSEG_MEM_LIMIT) */
/* The device's compute units (CPU devices: cores or hardware threads). */
int kd_device_compute_units(const kd_device *dev);

/* Per-kernel profile (only when KDSEG_PROFILE=1): print and reset. */
void kd_device_profile_print(kd_device *dev, FILE *f);
/* Total kernel-busy seconds recorded by profiling since the last reset; the wall
 * span between first start and last end is returned in *span (may be NULL). */
double kd_device_profile_busy(kd_device *dev, double *span);
void kd_device_profile_reset(kd_device *dev);     /* forget the kernels recorded so far */
int kd_device_profiling(const kd_device *dev);    /* 1 when KDSEG_PROFILE is on */

/* Profiling tags: kernels launched while a tag is set are also summed per tag
 * (used by the scheduler to report time per job kind). 0..7; 0 is the default. */
#define KD_PROFILE_TAGS 8
void kd_device_profile_tag(kd_device *dev, int tag);        /* tag the next launches */
double kd_device_profile_tag_busy(kd_device *dev, int tag); /* busy seconds of a tag */

/* A pending device->host read (non-blocking): wait for it before using the data. */
typedef struct kd_event kd_event;
kd_status kd_event_wait(kd_event *ev); /* waits and frees */

/* The program-cache folder ($XDG_CACHE_HOME/kdseg or ~/.cache/kdseg). */
const char *kd_cache_dir(void);

#ifdef __cplusplus
}
#endif
#endif
