/* Elementwise ops over flat ranges. */

__kernel void kd_fill(__global float *y, int yoff, int n, float v) {
    int i = get_global_id(0);
    if (i < n) y[yoff + i] = v;
}

/* y = a * x + b * y */
__kernel void kd_axpby(__global float *y, int yoff, __global const float *x, int xoff, int n,
                       float a, float b) {
    int i = get_global_id(0);
    if (i < n) y[yoff + i] = a * x[xoff + i] + b * y[yoff + i];
}
