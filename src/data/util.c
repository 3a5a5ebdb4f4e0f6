/* Small file and number helpers of the data layer, and the seeded RNG. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_internal.h"

kd_status kd_data_tmpname(const char *path, char *out, size_t n) {
    static atomic_uint counter;
    unsigned c = atomic_fetch_add(&counter, 1);
    return kd_path_printf(out, n, "%s.tmp-%ld-%u", path, (long)getpid(), c);
}

kd_status kd_data_mkdirs(const char *dir) { return kd_mkdirs(dir); }

int kd_data_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int kd_data_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int kd_data_stat(const char *path, int64_t *size, int64_t *mtime_ns) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *size = st.st_size;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return 0;
}

uint16_t kd_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t e = (x >> 23) & 0xff, m = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int32_t ne = (int32_t)e - 127 + 15;
    if (ne >= 31) return (uint16_t)(sign | 0x7c00u);
    if (ne <= 0) {
        if (ne < -10) return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - ne;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)ne << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into the exponent */
    return (uint16_t)(sign | h);
}

float kd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, x;
    if (e == 0) {
        if (!m)
            x = sign;
        else {
            e = 127 - 15 + 1;
            while (!(m & 0x400u)) {
                m <<= 1;
                e--;
            }
            x = sign | (e << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31)
        x = sign | 0x7f800000u | (m << 13);
    else
        x = sign | ((e - 15 + 127) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ------------------------------------------------------------------ RNG -- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

kd_rng kd_rng_make(uint64_t seed, uint64_t rank, uint64_t step, uint64_t sub) {
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);
    x = h ^ rank;
    h = splitmix64(&x);
    x = h ^ step;
    h = splitmix64(&x);
    x = h ^ sub;
    kd_rng r;
    r.state = 0;
    r.inc = (splitmix64(&x) << 1) | 1u;
    uint64_t init = splitmix64(&x);
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
