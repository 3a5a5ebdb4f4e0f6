/* Prepended to every kdseg OpenCL program. Tensors are float32, channels-last
 * (N, D, H, W, C); every buffer argument comes with an element offset so that
 * tensors can be views into slabs. */
#define KD_IDX5(n, z, y, x, c, D, H, W, C) \
    ((((((long)(n) * (D) + (z)) * (H) + (y)) * (W) + (x)) * (C)) + (c))

/* Leaky ReLU with slope s (s = 0 gives ReLU). */
inline float kd_leaky(float v, float s) { return v > 0.0f ? v : v * s; }

/* Channels c..c+3 of one voxel's C channels (channels-last): one vector load or store
 * when all four exist, else lane by lane (the last vector when C % 4 != 0; missing
 * lanes load as 0 and are not stored). */
inline float4 kd_ld4(__global const float *p, int c, int C) {
    if (c + 4 <= C) return vload4(0, p + c);
    float4 v = (float4)(0.0f);
    v.s0 = p[c];
    if (c + 1 < C) v.s1 = p[c + 1];
    if (c + 2 < C) v.s2 = p[c + 2];
    return v;
}

inline void kd_st4(__global float *p, int c, int C, float4 v) {
    if (c + 4 <= C) {
        vstore4(v, 0, p + c);
        return;
    }
    p[c] = v.s0;
    if (c + 1 < C) p[c + 1] = v.s1;
    if (c + 2 < C) p[c + 2] = v.s2;
}
