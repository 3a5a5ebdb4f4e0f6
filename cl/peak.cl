/* Kernels of kd_device_peak (kdseg bench peak): FMA throughput and memory bandwidth. */

/* 16 independent FMA chains per work-item (enough to cover an FMA's latency times the FMA
 * pipes of a CPU core), iters rounds each; a = a*b + c with 0 < b < 1 converges to
 * c / (1 - b), so values stay normal. out[g] keeps the result alive. VT: float (a GPU's
 * width per work-item) or float16 (a CPU core's SIMD width in one work-item). */
#define KD_PEAK_FMA(NAME, VT, SUM)                                                           \
    __kernel void NAME(__global float *out, int iters, float b, float c) {                   \
        int g = get_global_id(0);                                                            \
        VT a0 = (VT)(g * 1e-7f), a1 = a0 + 0.01f, a2 = a0 + 0.02f, a3 = a0 + 0.03f;          \
        VT a4 = a0 + 0.04f, a5 = a0 + 0.05f, a6 = a0 + 0.06f, a7 = a0 + 0.07f;               \
        VT a8 = a0 + 0.08f, a9 = a0 + 0.09f, a10 = a0 + 0.10f, a11 = a0 + 0.11f;             \
        VT a12 = a0 + 0.12f, a13 = a0 + 0.13f, a14 = a0 + 0.14f, a15 = a0 + 0.15f;           \
        VT bb = (VT)b, cc = (VT)c;                                                           \
        for (int i = 0; i < iters; i++) {                                                    \
            a0 = fma(a0, bb, cc), a1 = fma(a1, bb, cc), a2 = fma(a2, bb, cc);                \
            a3 = fma(a3, bb, cc), a4 = fma(a4, bb, cc), a5 = fma(a5, bb, cc);                \
            a6 = fma(a6, bb, cc), a7 = fma(a7, bb, cc), a8 = fma(a8, bb, cc);                \
            a9 = fma(a9, bb, cc), a10 = fma(a10, bb, cc), a11 = fma(a11, bb, cc);            \
            a12 = fma(a12, bb, cc), a13 = fma(a13, bb, cc), a14 = fma(a14, bb, cc);          \
            a15 = fma(a15, bb, cc);                                                          \
        }                                                                                    \
        VT s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) +                           \
               (((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15)));                    \
        out[g] = SUM(s);                                                                     \
    }
#define KD_PEAK_SUM1(s) (s)
#define KD_PEAK_SUM16(s) (s.s0 + s.s1 + s.s2 + s.s3 + s.s4 + s.s5 + s.s6 + s.s7 + s.s8 + \
                          s.s9 + s.sa + s.sb + s.sc + s.sd + s.se + s.sf)
KD_PEAK_FMA(kd_peak_fma_v1, float, KD_PEAK_SUM1)
KD_PEAK_FMA(kd_peak_fma_v16, float16, KD_PEAK_SUM16)

/* Streaming read of n float4 (n < 2^31): each work-item sums either one contiguous chunk (chunked != 0:
 * CPUs, where a core streams its own range) or every G-th element from g (GPUs, where
 * neighbouring work-items read neighbouring addresses). */
__kernel void kd_peak_read(__global const float4 *x, int n, int chunked, __global float *out) {
    long g = get_global_id(0), G = get_global_size(0);
    float4 s = (float4)0.0f;
    if (chunked) {
        long per = n / G, i0 = g * per;
        for (long i = i0; i < i0 + per; i++) s += x[i];
    } else {
        for (long i = g; i < n; i += G) s += x[i];
    }
    out[g] = s.x + s.y + s.z + s.w;
}

/* y = x, n float4, the same two access orders. */
__kernel void kd_peak_copy(__global const float4 *x, __global float4 *y, int n, int chunked) {
    long g = get_global_id(0), G = get_global_size(0);
    if (chunked) {
        long per = n / G, i0 = g * per;
        for (long i = i0; i < i0 + per; i++) y[i] = x[i];
    } else {
        for (long i = g; i < n; i += G) y[i] = x[i];
    }
}
