/* C references of the convolutions: straight loops over the definition, in double
 * accumulators. The spec the OpenCL kernels are tested against. */
#include <string.h>

#include "ref_conv.h"

/* Geometry shared by the three conv references. */
typedef struct geo {
    int n, ci, d, h, w, co, od, oh, ow, kd, kh, kw, s, p, g, cig, cog;
} geo;

static geo geo_of(const kd_conv_params *p, kd_shape xs, int cout) {
    geo g;
    g.n = xs.n, g.ci = xs.c, g.d = xs.d, g.h = xs.h, g.w = xs.w, g.co = cout;
    g.kd = p->k[0], g.kh = p->k[1], g.kw = p->k[2], g.s = p->stride, g.p = p->pad;
    g.g = p->groups > 0 ? p->groups : 1;
    g.od = kd_conv_out_size(g.d, g.kd, g.s, g.p);
    g.oh = kd_conv_out_size(g.h, g.kh, g.s, g.p);
    g.ow = kd_conv_out_size(g.w, g.kw, g.s, g.p);
    g.cig = g.ci / g.g, g.cog = g.co / g.g;
    return g;
}

static size_t xidx(const geo *g, int n, int z, int y, int x, int c) {
    return ((((size_t)n * g->d + z) * g->h + y) * g->w + x) * g->ci + c;
}
static size_t yidx(const geo *g, int n, int z, int y, int x, int c) {
    return ((((size_t)n * g->od + z) * g->oh + y) * g->ow + x) * g->co + c;
}
static size_t widx(const geo *g, int a, int b, int e, int cig, int co) {
    return ((((size_t)a * g->kh + b) * g->kw + e) * g->cig + cig) * g->co + co;
}

/* Calls fn for every (output voxel, tap) pair whose input voxel is inside. */
#define FOR_TAPS(g, BODY)                                                                  \
    for (int n = 0; n < g.n; n++)                                                          \
        for (int oz = 0; oz < g.od; oz++)                                                  \
            for (int oy = 0; oy < g.oh; oy++)                                              \
                for (int ox = 0; ox < g.ow; ox++)                                          \
                    for (int a = 0; a < g.kd; a++)                                         \
                        for (int b = 0; b < g.kh; b++)                                     \
                            for (int e = 0; e < g.kw; e++) {                               \
                                int iz = oz * g.s + a - g.p, iy = oy * g.s + b - g.p;      \
                                int ix = ox * g.s + e - g.p;                               \
                                if (iz < 0 || iz >= g.d || iy < 0 || iy >= g.h || ix < 0 || \
                                    ix >= g.w)                                             \
                                    continue;                                              \
                                BODY                                                       \
                            }

void kd_ref_conv3d_forward(const kd_conv_params *p, kd_shape xs, int cout, const float *x,
                           const float *w, const float *b, float *y) {
    geo g = geo_of(p, xs, cout);
    for (int n = 0; n < g.n; n++)
        for (int oz = 0; oz < g.od; oz++)
            for (int oy = 0; oy < g.oh; oy++)
                for (int ox = 0; ox < g.ow; ox++)
                    for (int co = 0; co < g.co; co++) {
                        int grp = co / g.cog;
                        double s = b ? b[co] : 0.0;
                        for (int a = 0; a < g.kd; a++)
                            for (int bb = 0; bb < g.kh; bb++)
                                for (int e = 0; e < g.kw; e++) {
                                    int iz = oz * g.s + a - g.p, iy = oy * g.s + bb - g.p;
                                    int ix = ox * g.s + e - g.p;
                                    if (iz < 0 || iz >= g.d || iy < 0 || iy >= g.h || ix < 0 ||
                                        ix >= g.w)
                                        continue;
                                    for (int c = 0; c < g.cig; c++)
                                        s += (double)x[xidx(&g, n, iz, iy, ix, grp * g.cig + c)] *
                                             w[widx(&g, a, bb, e, c, co)];
                                }
                        y[yidx(&g, n, oz, oy, ox, co)] = (float)s;
                    }
}

void kd_ref_conv3d_backward_input(const kd_conv_params *p, kd_shape xs, int cout,
                                  const float *dy, const float *w, float *dx) {
    geo g = geo_of(p, xs, cout);
    size_t nx = (size_t)g.n * g.d * g.h * g.w * g.ci;
    memset(dx, 0, nx * sizeof *dx);
    FOR_TAPS(g, {
        for (int co = 0; co < g.co; co++) {
            int grp = co / g.cog;
            float gy = dy[yidx(&g, n, oz, oy, ox, co)];
            for (int c = 0; c < g.cig; c++)
                dx[xidx(&g, n, iz, iy, ix, grp * g.cig + c)] += gy * w[widx(&g, a, b, e, c, co)];
        }
    })
}

void kd_ref_conv3d_backward_weight(const kd_conv_params *p, kd_shape xs, int cout,
                                   const float *x, const float *dy, float *dw, float *db) {
    geo g = geo_of(p, xs, cout);
    FOR_TAPS(g, {
        for (int co = 0; co < g.co; co++) {
            int grp = co / g.cog;
            float gy = dy[yidx(&g, n, oz, oy, ox, co)];
            for (int c = 0; c < g.cig; c++)
                dw[widx(&g, a, b, e, c, co)] += x[xidx(&g, n, iz, iy, ix, grp * g.cig + c)] * gy;
        }
    })
    if (db)
        for (size_t v = 0; v < (size_t)g.n * g.od * g.oh * g.ow; v++)
            for (int co = 0; co < g.co; co++) db[co] += dy[v * g.co + co];
}

/* ---- transposed 2x2x2 stride 2 --------------------------------------------------------- */

#define FOR_T_TAPS(xs, BODY)                                                               \
    for (int n = 0; n < xs.n; n++)                                                         \
        for (int iz = 0; iz < xs.d; iz++)                                                  \
            for (int iy = 0; iy < xs.h; iy++)                                              \
                for (int ix = 0; ix < xs.w; ix++)                                          \
                    for (int ta = 0; ta < 2; ta++)                                         \
                        for (int tb = 0; tb < 2; tb++)                                     \
                            for (int te = 0; te < 2; te++) {                               \
                                size_t xi = ((((size_t)n * xs.d + iz) * xs.h + iy) * xs.w + ix) * xs.c; \
                                size_t yi = ((((size_t)n * 2 * xs.d + 2 * iz + ta) * 2 * xs.h + \
                                              2 * iy + tb) * 2 * xs.w + 2 * ix + te) * cout; \
                                size_t wi = (size_t)((ta * 2 + tb) * 2 + te) * xs.c * cout; \
                                BODY                                                       \
                            }

void kd_ref_convT3d_forward(kd_shape xs, int cout, const float *x, const float *w,
                            const float *b, float *y) {
    FOR_T_TAPS(xs, {
        for (int co = 0; co < cout; co++) {
            double s = b ? b[co] : 0.0;
            for (int c = 0; c < xs.c; c++) s += (double)x[xi + c] * w[wi + (size_t)c * cout + co];
            y[yi + co] = (float)s;
        }
    })
}

void kd_ref_convT3d_backward_input(kd_shape xs, int cout, const float *dy, const float *w,
                                   float *dx) {
    memset(dx, 0, kd_shape_numel(xs) * sizeof *dx);
    FOR_T_TAPS(xs, {
        for (int c = 0; c < xs.c; c++) {
            double s = 0.0;
            for (int co = 0; co < cout; co++) s += (double)dy[yi + co] * w[wi + (size_t)c * cout + co];
            dx[xi + c] += (float)s;
        }
    })
}

void kd_ref_convT3d_backward_weight(kd_shape xs, int cout, const float *x, const float *dy,
                                    float *dw, float *db) {
    FOR_T_TAPS(xs, {
        for (int c = 0; c < xs.c; c++)
            for (int co = 0; co < cout; co++) dw[wi + (size_t)c * cout + co] += x[xi + c] * dy[yi + co];
    })
    if (db) {
        size_t nv = (size_t)xs.n * 8 * xs.d * xs.h * xs.w;
        for (size_t v = 0; v < nv; v++)
            for (int co = 0; co < cout; co++) db[co] += dy[v * cout + co];
    }
}
