/* What data a model was trained on (its domain record, kept in its checkpoints), and how
 * far a case is from it: a phantom-trained model on a real scan, other modalities,
 * another voxel size, a brain of another size, intensities normalised differently. */
#ifndef KDSEG_DOMAIN_H
#define KDSEG_DOMAIN_H

#include <stddef.h>

#include "kdseg/data.h"
#include "kdseg/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kd_domain, the record itself, is in kdseg/train.h (checkpoints keep it). */

/* No record: zeros, empty strings. */
void kd_domain_init(kd_domain *d);
/* The record of one loaded case c of ds (cases = 1). */
kd_status kd_case_domain(const kd_dataset *ds, const kd_case *c, kd_domain *out);
/* acc and one summarised together (acc may hold no record). */
void kd_domain_merge(kd_domain *acc, const kd_domain *one);
/* The record of cases idx[0..n) of ds, loading at most max_cases of them spread evenly
 * (0: all); cases counts all n. */
kd_status kd_dataset_domain(const kd_dataset *ds, const int *idx, int n, int max_cases, kd_domain *out);
/* How far case record c is from model record m: the number of differences found, and
 * them in one line in why (cap bytes; "" when none or when m holds no record):
 * kind (phantom vs real), modalities, voxel size (> 25% on an axis), brain volume (under
 * half the smallest or over twice the largest trained on), intensities (a 1st or 99th
 * percentile more than 2.5 standard deviations from the trained mean). */
int kd_domain_compare(const kd_domain *m, const kd_domain *c, char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
