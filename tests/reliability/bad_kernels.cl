/* Deliberately broken kernels. tools/check_kernels.sh appends this file to a copy of
 * the kernel sources (through KDSEG_CL_DIR), runs each under Oclgrind and requires
 * the matching diagnostic: a kernel check that cannot fail would prove nothing. */

/* Shifts by one: the last work-item writes one element past the end of y (n elements). */
__kernel void kd_bad_oob_write(__global float *y, int yoff, int n) {
    int i = get_global_id(0);
    if (i < n) y[yoff + i + 1] = 1.0f;
}

/* Every work-item read-modify-writes element 0: a data race. */
__kernel void kd_bad_race(__global float *y, int yoff, int n) {
    int i = get_global_id(0);
    if (i < n) y[yoff] += (float)i;
}

/* s[LAST] is never written but read (by work-item 0): an uninitialised read. */
__kernel void kd_bad_uninit(__global float *y, int yoff, int n) {
    __local float s[16];
    int l = get_local_id(0);
    if (l < 15) s[l] = (float)l;
    barrier(CLK_LOCAL_MEM_FENCE);
    int i = get_global_id(0);
    if (i < n) y[yoff + i] = s[15 - l];
}
