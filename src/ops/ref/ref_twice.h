/* Included by a C reference file whose body is written once over a type T (ref_layers.c,
 * ref_train.c): includes KD_REF_BODY twice, over float (names as written) and over double
 * (names with the suffix _d), with KD_REF_T the type and KD_REF_FN(name) the name. No
 * include guard: each file that uses it includes it once. */
#ifndef KD_REF_BODY
#error "define KD_REF_BODY (the file to include twice) before including ref_twice.h"
#endif

#define KD_REF_T float
#define KD_REF_FN(name) name
#include KD_REF_BODY
#undef KD_REF_T
#undef KD_REF_FN

#define KD_REF_T double
#define KD_REF_FN(name) name##_d
#include KD_REF_BODY
#undef KD_REF_T
#undef KD_REF_FN

#undef KD_REF_BODY
