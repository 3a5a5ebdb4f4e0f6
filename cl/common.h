/* Prepended to every kdseg OpenCL program. Tensors are float32, channels-last
 * (N, D, H, W, C); every buffer argument comes with an element offset so that
 * tensors can be views into slabs. */
#define KD_IDX5(n, z, y, x, c, D, H, W, C) \
    ((((((long)(n) * (D) + (z)) * (H) + (y)) * (W) + (x)) * (C)) + (c))

/* Leaky ReLU with slope s (s = 0 gives ReLU). */
inline float kd_leaky(float v, float s) { return v > 0.0f ? v : v * s; }
