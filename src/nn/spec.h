/* Model spec strings: "arch:key=v1,v2:key=v". */
#ifndef KD_SPEC_H
#define KD_SPEC_H

#include <stddef.h>

#include "kdseg/status.h"

#define KD_SPEC_MAX 8
#define KD_SPEC_KEYS 16

typedef struct kd_spec_kv {
    char key[16];
    int vals[KD_SPEC_MAX];
    int n;
    int given; /* set by the spec, not the defaults */
} kd_spec_kv;

typedef struct kd_spec {
    char arch[32];
    kd_spec_kv kv[KD_SPEC_KEYS];
    int nkv;
    /* common keys, filled by kd_spec_parse when present */
    int widths[KD_SPEC_MAX], nwidths;
    int enc[KD_SPEC_MAX], nenc;
    int dec[KD_SPEC_MAX], ndec;
    int groups, in, out;
} kd_spec;

/* Parse `defaults` then override with `spec` (same arch). Keys absent from the
 * defaults are refused; values must be positive integers. A spec that gives widths but
 * not enc (one per level) or dec (one per level but the last) gets the defaults' lists
 * cut or extended (by their last value) to its number of levels. */
kd_status kd_spec_parse(const char *defaults, const char *spec, kd_spec *out);
/* Values of key (NULL if absent); *n gets the count. */
const int *kd_spec_get(const kd_spec *sp, const char *key, int *n);
/* Single value of key, or def. */
int kd_spec_int(const kd_spec *sp, const char *key, int def);
void kd_spec_format(const kd_spec *sp, char *buf, size_t n);

/* The teacher zoo (src/nn/zoo.c). */
struct kd_graph;
int kd_zoo_count(void);
const char *kd_zoo_name(int i);
const char *kd_zoo_defaults(int i);
const char *kd_zoo_description(int i);
kd_status kd_zoo_build(int i, struct kd_graph *g, const kd_spec *sp, int *out_node, int *divisor);

#endif
