/* Internal runtime interface: the only header above which cl_* types appear. */
#ifndef KD_RT_H
#define KD_RT_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdint.h>

#include "kdseg/device.h"

/* A kernel argument: size and pointer, as clSetKernelArg takes them. */
typedef struct kd_arg {
    size_t size;
    const void *ptr;
} kd_arg;

#define KD_MEM(m) ((kd_arg){sizeof(cl_mem), &(m)})
#ifdef KD_CPPCHECK
/* tools/lint.sh defines KD_CPPCHECK: cppcheck 2.10 cannot parse a member access
 * inside these nested compound literals (internalAstError, which skips the whole
 * file), so it sees calls instead. */
kd_arg kd_cppcheck_int(cl_int v);
kd_arg kd_cppcheck_float(cl_float v);
#define KD_INT(v) kd_cppcheck_int((cl_int)(v))
#define KD_FLOAT(v) kd_cppcheck_float((cl_float)(v))
#else
#define KD_INT(v) ((kd_arg){sizeof(cl_int), &(cl_int){(cl_int)(v)}})
#define KD_FLOAT(v) ((kd_arg){sizeof(cl_float), &(cl_float){(cl_float)(v)}})
#endif
#define KD_LOCAL(bytes) ((kd_arg){(size_t)(bytes), NULL})

/* Device choice rule, testable without devices. rank: 0 GPU, 1 accelerator,
 * 2 CPU, 3 other. Returns the index chosen or -1 when the selector matches none. */
typedef struct kd_dev_desc {
    int p, d, rank;
    const char *name, *pname;
} kd_dev_desc;
int kd_rt_choose(const kd_dev_desc *e, int count, const char *sel);

/* (device identities, kd_dev_ident: kdseg/device.h; ranks as kd_dev_desc's) */

/* Map an OpenCL error code to its name. */
const char *kd_cl_error_name(cl_int err);
/* Record an OpenCL failure ("what: CL_OUT_OF_RESOURCES") and return KD_ERR_*. */
kd_status kd_cl_fail(cl_int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

cl_context kd_rt_context(kd_device *dev);
cl_command_queue kd_rt_queue(kd_device *dev);
cl_device_id kd_rt_device_id(kd_device *dev);

/* Look up a kernel by name among the built programs (cached). */
kd_status kd_rt_kernel(kd_device *dev, const char *name, cl_kernel *out);

/* Launch kernel `name` over a dim-dimensional range. gws is rounded up to a
 * multiple of lws when lws is given; kernels guard their own bounds. */
kd_status kd_rt_launch(kd_device *dev, const char *name, int dim, const size_t *gws,
                       const size_t *lws, int nargs, const kd_arg *args);

#define KD_ARGS(...) (sizeof((kd_arg[]){__VA_ARGS__}) / sizeof(kd_arg)), ((kd_arg[]){__VA_ARGS__})

/* Buffer pool: buffers of at least `bytes`, recycled on release. */
kd_status kd_rt_alloc(kd_device *dev, size_t bytes, cl_mem *out);
void kd_rt_release(kd_device *dev, cl_mem mem, size_t bytes);
/* Return pooled (free) buffers to the driver. */
void kd_rt_pool_trim(kd_device *dev);

/* Blocking transfers (sync points) and a non-blocking fill. */
kd_status kd_rt_write(kd_device *dev, cl_mem m, size_t off_bytes, size_t bytes, const void *src);
kd_status kd_rt_read(kd_device *dev, cl_mem m, size_t off_bytes, size_t bytes, void *dst);
/* Non-blocking transfers: src/dst must stay valid until the event completes (write:
 * until the next sync point that follows it). */
kd_status kd_rt_read_async(kd_device *dev, cl_mem m, size_t off_bytes, size_t bytes, void *dst,
                           kd_event **ev);
kd_status kd_rt_write_async(kd_device *dev, cl_mem m, size_t off_bytes, size_t bytes,
                            const void *src);
kd_status kd_rt_fill(kd_device *dev, cl_mem m, size_t off_bytes, size_t bytes, float value);
kd_status kd_rt_copy(kd_device *dev, cl_mem src, size_t src_off, cl_mem dst, size_t dst_off,
                     size_t bytes);

/* Embedded kernel sources (generated at build time). */
typedef struct kd_cl_source {
    const char *name; /* "conv3d.cl" */
    const char *text;
} kd_cl_source;
extern const kd_cl_source kd_cl_sources[];
extern const int kd_cl_source_count;
extern const char *const kd_cl_common_text; /* common.h, prepended to every program */

/* 64-bit FNV-1a, chained (used for cache keys). */
uint64_t kd_hash64(uint64_t h, const void *data, size_t n);

#endif
