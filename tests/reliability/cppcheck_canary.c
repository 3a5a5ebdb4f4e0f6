/* Not compiled: tools/lint.sh runs cppcheck on this file with the project's
 * settings and requires both defects below to be reported, so a cppcheck
 * configuration that silently checks nothing fails CI. */
#include <stdlib.h>

#include "rt.h"

int kd_canary_oob(void) {
    int a[4] = {0};
    a[4] = 1; /* arrayIndexOutOfBounds */
    return a[0];
}

double kd_canary_realloc(size_t n) {
    double *x = malloc(8);
    if (!x) return 0;
    x = realloc(x, n); /* memleakOnRealloc */
    double r = x ? x[0] : 0;
    free(x);
    return r;
}

/* parsed through KD_ARGS like the ops: no internalAstError */
int kd_canary_launch(kd_device *d, cl_mem m, const int *p) {
    size_t g = 1;
    return (int)kd_rt_launch(d, "kd_fill", 1, &g, NULL, KD_ARGS(KD_MEM(m), KD_INT(p[1]), KD_FLOAT(*p)));
}
