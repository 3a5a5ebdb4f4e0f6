/* kdseg: the simple named-tensor file ("KDGOLD01"): the PyTorch golden files and
 * the tensor files `kdseg import-torch` reads. Little-endian:
 *   8 bytes magic "KDGOLD01", u32 count, per tensor: u32 name length, name,
 *   u32 ndim, u32 dims[ndim], f32 data (C order). */
#ifndef KDSEG_TENSORFILE_H
#define KDSEG_TENSORFILE_H

#include <stddef.h>

#include "kdseg/model.h"
#include "kdseg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_named_tensor {
    char *name;
    int ndim;
    int dims[8];
    size_t numel;
    float *data;
} kd_named_tensor;

typedef struct kd_tensorfile {
    kd_named_tensor *t;
    int n;
} kd_tensorfile;

/* Reads the whole file, checking every count against the file size. */
kd_status kd_tensorfile_read(const char *path, kd_tensorfile **out);
const kd_named_tensor *kd_tensorfile_find(const kd_tensorfile *f, const char *name); /* NULL: absent; borrowed */
void kd_tensorfile_free(kd_tensorfile *f); /* every tensor, name and data; NULL ok */
/* Writes tensors (temp file + rename). */
kd_status kd_tensorfile_write(const char *path, const kd_named_tensor *t, int n);

/* A PyTorch state dict into m's parameters: each parameter PREFIX + its state-dict name,
 * present with its PyTorch shape, else KD_ERR_FORMAT naming `source` (the file) and the
 * tensor. prefix may be NULL. */
kd_status kd_model_load_state_dict(kd_model *m, const kd_tensorfile *tf, const char *prefix,
                                   const char *source);

#ifdef __cplusplus
}
#endif
#endif
