/* kdseg: the one seeded random number generator. Every random choice of the library
 * (patch sampling, augmentation, phantoms, parameter initialisation) draws from it, so
 * a seed repeats a run bit for bit. Plain values, no global state: safe on any thread
 * that owns its kd_rng. */
#ifndef KDSEG_RNG_H
#define KDSEG_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PCG32 (XSH-RR). Streams are derived from (seed, rank, step, sub) by splitmix64,
 * so every random choice is reproducible and independent across ranks/steps. */
typedef struct kd_rng {
    uint64_t state, inc;
} kd_rng;

kd_rng kd_rng_make(uint64_t seed, uint64_t rank, uint64_t step, uint64_t sub);
uint32_t kd_rng_u32(kd_rng *r);
double kd_rng_uniform(kd_rng *r);                     /* [0, 1) */
double kd_rng_range(kd_rng *r, double lo, double hi); /* [lo, hi) */
int kd_rng_int(kd_rng *r, int n);                     /* [0, n), unbiased; 0 when n <= 0 */
double kd_rng_normal(kd_rng *r);                      /* standard normal (Box-Muller) */

/* splitmix64: advances *state and returns the next 64-bit value (the seeding step of
 * kd_rng_make; also a fast stream of its own where one 64-bit state is enough). */
uint64_t kd_splitmix64(uint64_t *state);

#ifdef __cplusplus
}
#endif
#endif
