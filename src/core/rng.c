/* The seeded RNG (kdseg/rng.h): PCG32 streams seeded by splitmix64. */
#include "kdseg/rng.h"

#include <math.h>

uint64_t kd_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

kd_rng kd_rng_make(uint64_t seed, uint64_t rank, uint64_t step, uint64_t sub) {
    uint64_t x = seed;
    uint64_t h = kd_splitmix64(&x);
    x = h ^ rank;
    h = kd_splitmix64(&x);
    x = h ^ step;
    h = kd_splitmix64(&x);
    x = h ^ sub;
    kd_rng r;
    r.state = 0;
    r.inc = (kd_splitmix64(&x) << 1) | 1u;
    uint64_t init = kd_splitmix64(&x);
    kd_rng_u32(&r);
    r.state += init;
    kd_rng_u32(&r);
    return r;
}

uint32_t kd_rng_u32(kd_rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xs = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (xs >> rot) | (xs << ((32 - rot) & 31));
}

double kd_rng_uniform(kd_rng *r) {
    uint64_t hi = kd_rng_u32(r), lo = kd_rng_u32(r);
    return (double)((hi << 21) ^ lo) / 9007199254740992.0; /* 53 bits */
}

double kd_rng_range(kd_rng *r, double lo, double hi) { return lo + (hi - lo) * kd_rng_uniform(r); }

int kd_rng_int(kd_rng *r, int n) {
    if (n <= 0) return 0;
    uint32_t bound = (uint32_t)n, threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint32_t x = kd_rng_u32(r);
        if (x >= threshold) return (int)(x % bound);
    }
}

double kd_rng_normal(kd_rng *r) {
    double u1 = kd_rng_uniform(r), u2 = kd_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
