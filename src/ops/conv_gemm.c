/* The GEMM path of the convolution: im2col (cl/conv_gemm.cl) + CLBlast SGEMM, row-major,
 * buffer offsets in elements. Large problems are cut into chunks of output planes so that
 * the im2col matrix stays under COL_BUDGET floats. Depthwise convs are not GEMMs: the
 * dispatcher sends them to the direct kernels. */
#include <clblast_c.h>
#include <pthread.h>
#include <stdio.h>

#include "conv_internal.h"

#define COL_BUDGET ((size_t)16 << 20) /* floats (64 MiB) per im2col chunk */

int kd_conv_gemm_supports(const kd_conv_geom *g) { return g->groups == 1; }

/* CLBlast's calls are serialised: its kernel and tuning-database caches are process-wide,
 * and the Debian build's are not safe when two threads (two models trained at once, each
 * on its own queue) call it at the same time (found under AddressSanitizer: a
 * heap-use-after-free in clblast::Database). A call only enqueues its kernels (the first
 * per device also builds them), so the lock is held briefly. */
static pthread_mutex_t clblast_lock = PTHREAD_MUTEX_INITIALIZER;

/* C (m x n) = op(A) op(B) + beta C, row-major. */
static kd_status sgemm(kd_device *dev, int ta, int tb, size_t m, size_t n, size_t k, cl_mem a,
                       size_t aoff, size_t lda, cl_mem b, size_t boff, size_t ldb, float beta,
                       cl_mem c, size_t coff, size_t ldc) {
    if (!m || !n || !k) return KD_OK;
    cl_command_queue q = kd_rt_queue(dev);
    pthread_mutex_lock(&clblast_lock);
    CLBlastStatusCode st = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, 1.0f, a, aoff, lda, b, boff, ldb,
        beta, c, coff, ldc, &q, NULL);
    pthread_mutex_unlock(&clblast_lock);
    if (st != CLBlastSuccess)
        return kd_fail(KD_ERR_DEVICE, "conv gemm path: CLBlastSgemm %zux%zux%zu (ta %d tb %d) "
                       "failed with CLBlast status %d", m, n, k, ta, tb, (int)st);
    return KD_OK;
}

typedef struct tmpbuf {
    cl_mem mem;
    size_t bytes;
} tmpbuf;

static kd_status tmp_alloc(kd_device *dev, size_t n, tmpbuf *t) {
    t->bytes = (n ? n : 1) * sizeof(float);
    return kd_rt_alloc(dev, t->bytes, &t->mem);
}
static void tmp_free(kd_device *dev, tmpbuf *t) {
    if (t->mem) kd_rt_release(dev, t->mem, t->bytes);
    t->mem = NULL;
}

/* Plain conv geometry (after mapping a transposed conv onto its k2 s2 conv). */
typedef struct cg {
    int n, ci, d, h, w, co, od, oh, ow, k[3], s, p;
} cg;

static cg plain(const kd_conv_geom *g) {
    cg c = {g->n, g->ci, g->d, g->h, g->w, g->co, g->od, g->oh, g->ow,
            {g->k[0], g->k[1], g->k[2]}, g->s, g->p};
    return c;
}

static int is_pointwise(const cg *c) {
    return c->k[0] == 1 && c->k[1] == 1 && c->k[2] == 1 && c->s == 1 && c->p == 0;
}

/* Output planes per chunk so that the im2col matrix stays within the budget. */
static int chunk_planes(const cg *c) {
    size_t per_plane = (size_t)c->oh * c->ow * c->k[0] * c->k[1] * c->k[2] * c->ci;
    size_t np = COL_BUDGET / (per_plane ? per_plane : 1);
    if (np < 1) np = 1;
    return np > (size_t)c->od ? c->od : (int)np;
}

static kd_status im2col(kd_device *dev, const cg *c, cl_mem xm, size_t xoff, cl_mem col, int n,
                        int z0, int nz) {
    size_t gws[3] = {(size_t)c->ci, (size_t)c->k[0] * c->k[1] * c->k[2],
                     (size_t)nz * c->oh * c->ow};
    return kd_rt_launch(dev, "kd_conv_im2col", 3, gws, NULL,
                        KD_ARGS(KD_MEM(xm), KD_INT(xoff), KD_MEM(col), KD_INT(c->d),
                                KD_INT(c->h), KD_INT(c->w), KD_INT(c->ci), KD_INT(c->oh),
                                KD_INT(c->ow), KD_INT(c->k[0]), KD_INT(c->k[1]),
                                KD_INT(c->k[2]), KD_INT(c->s), KD_INT(c->p), KD_INT(n),
                                KD_INT(z0), KD_INT(nz)));
}

/* ---- plain conv ----------------------------------------------------------------------- */

static kd_status conv_forward(kd_device *dev, const cg *c, cl_mem xm, size_t xoff, cl_mem wm,
                              size_t woff, const kd_tensor *b, const kd_tensor *y) {
    size_t K = (size_t)c->k[0] * c->k[1] * c->k[2] * c->ci;
    size_t rows_all = (size_t)c->n * c->od * c->oh * c->ow;
    float beta = 0.0f;
    kd_status st;
    if (b) {
        size_t gws[2] = {(size_t)c->co, rows_all};
        st = kd_rt_launch(dev, "kd_conv_bias_rows", 2, gws, NULL,
                          KD_ARGS(KD_T(y), KD_T(b), KD_INT(rows_all), KD_INT(c->co)));
        if (st) return st;
        beta = 1.0f;
    }
    if (is_pointwise(c))
        return sgemm(dev, 0, 0, rows_all, (size_t)c->co, K, xm, xoff, K, wm, woff, (size_t)c->co,
                     beta, y->mem, y->off, (size_t)c->co);
    int np = chunk_planes(c);
    size_t plane = (size_t)c->oh * c->ow;
    tmpbuf col = {0};
    if ((st = tmp_alloc(dev, (size_t)np * plane * K, &col))) return st;
    for (int n = 0; n < c->n && !st; n++)
        for (int z0 = 0; z0 < c->od && !st; z0 += np) {
            int nz = c->od - z0 < np ? c->od - z0 : np;
            st = im2col(dev, c, xm, xoff, col.mem, n, z0, nz);
            if (!st)
                st = sgemm(dev, 0, 0, (size_t)nz * plane, (size_t)c->co, K, col.mem, 0, K, wm,
                           woff, (size_t)c->co, beta, y->mem,
                           y->off + ((size_t)n * c->od + z0) * plane * c->co, (size_t)c->co);
        }
    tmp_free(dev, &col);
    return st;
}

/* dx = col2im(dy x w^T); w (K, co) with K = k3 * ci. */
static kd_status conv_backward_input(kd_device *dev, const cg *c, const kd_tensor *dy,
                                     cl_mem wm, size_t woff, const kd_tensor *dx) {
    size_t K = (size_t)c->k[0] * c->k[1] * c->k[2] * c->ci;
    size_t plane = (size_t)c->oh * c->ow;
    if (is_pointwise(c))
        return sgemm(dev, 0, 1, (size_t)c->n * plane * c->od, (size_t)c->ci, (size_t)c->co,
                     dy->mem, dy->off, (size_t)c->co, wm, woff, (size_t)c->co, 0.0f, dx->mem,
                     dx->off, (size_t)c->ci);
    kd_status st = kd_rt_fill(dev, dx->mem, dx->off * sizeof(float),
                              kd_shape_numel(dx->shape) * sizeof(float), 0.0f);
    if (st) return st;
    int np = chunk_planes(c);
    tmpbuf col = {0};
    if ((st = tmp_alloc(dev, (size_t)np * plane * K, &col))) return st;
    for (int n = 0; n < c->n && !st; n++)
        for (int z0 = 0; z0 < c->od && !st; z0 += np) {
            int nz = c->od - z0 < np ? c->od - z0 : np;
            st = sgemm(dev, 0, 1, (size_t)nz * plane, K, (size_t)c->co, dy->mem,
                       dy->off + ((size_t)n * c->od + z0) * plane * c->co, (size_t)c->co, wm,
                       woff, (size_t)c->co, 0.0f, col.mem, 0, K);
            if (st) break;
            int zi0 = z0 * c->s - c->p, zi1 = (z0 + nz - 1) * c->s + c->k[0] - 1 - c->p;
            if (zi0 < 0) zi0 = 0;
            if (zi1 > c->d - 1) zi1 = c->d - 1;
            size_t gws[3] = {(size_t)c->ci, (size_t)c->h * c->w, (size_t)(zi1 - zi0 + 1)};
            st = kd_rt_launch(dev, "kd_conv_col2im", 3, gws, NULL,
                              KD_ARGS(KD_MEM(col.mem), KD_T(dx), KD_INT(c->d), KD_INT(c->h),
                                      KD_INT(c->w), KD_INT(c->ci), KD_INT(c->oh), KD_INT(c->ow),
                                      KD_INT(c->k[0]), KD_INT(c->k[1]), KD_INT(c->k[2]),
                                      KD_INT(c->s), KD_INT(c->p), KD_INT(n), KD_INT(z0),
                                      KD_INT(nz), KD_INT(zi0), KD_INT(zi1 - zi0 + 1)));
        }
    tmp_free(dev, &col);
    return st;
}

/* dw (K, co) += col^T dy. */
static kd_status conv_backward_weight(kd_device *dev, const cg *c, const kd_tensor *x,
                                      const kd_tensor *dy, const kd_tensor *dw) {
    size_t K = (size_t)c->k[0] * c->k[1] * c->k[2] * c->ci;
    size_t plane = (size_t)c->oh * c->ow;
    if (is_pointwise(c))
        return sgemm(dev, 1, 0, K, (size_t)c->co, (size_t)c->n * c->od * plane, x->mem, x->off,
                     K, dy->mem, dy->off, (size_t)c->co, 1.0f, dw->mem, dw->off, (size_t)c->co);
    int np = chunk_planes(c);
    tmpbuf col = {0};
    kd_status st = tmp_alloc(dev, (size_t)np * plane * K, &col);
    if (st) return st;
    for (int n = 0; n < c->n && !st; n++)
        for (int z0 = 0; z0 < c->od && !st; z0 += np) {
            int nz = c->od - z0 < np ? c->od - z0 : np;
            st = im2col(dev, c, x->mem, x->off, col.mem, n, z0, nz);
            if (!st)
                st = sgemm(dev, 1, 0, K, (size_t)c->co, (size_t)nz * plane, col.mem, 0, K,
                           dy->mem, dy->off + ((size_t)n * c->od + z0) * plane * c->co,
                           (size_t)c->co, 1.0f, dw->mem, dw->off, (size_t)c->co);
        }
    tmp_free(dev, &col);
    return st;
}

/* ---- transposed 2x2x2 stride 2: eight GEMMs, one per tap ---------------------------------- */

static kd_status convT_forward(kd_device *dev, const kd_conv_geom *g, const kd_tensor *x,
                               const kd_tensor *w, const kd_tensor *b, kd_tensor *y) {
    size_t V = (size_t)g->n * g->d * g->h * g->w, ci = (size_t)g->ci, co = (size_t)g->co;
    tmpbuf tmp = {0};
    kd_status st = tmp_alloc(dev, 8 * V * co, &tmp);
    for (int tap = 0; tap < 8 && !st; tap++)
        st = sgemm(dev, 0, 0, V, co, ci, x->mem, x->off, ci, w->mem, w->off + tap * ci * co, co,
                   0.0f, tmp.mem, tap * V * co, co);
    if (!st) {
        size_t gws[3] = {co, 8, V};
        cl_mem bm = b ? b->mem : y->mem;
        st = kd_rt_launch(dev, "kd_convT_scatter", 3, gws, NULL,
                          KD_ARGS(KD_MEM(tmp.mem), KD_T(y), KD_MEM(bm),
                                  KD_INT(b ? b->off : 0), KD_INT(b != NULL), KD_INT(g->n),
                                  KD_INT(g->d), KD_INT(g->h), KD_INT(g->w), KD_INT(g->co)));
    }
    tmp_free(dev, &tmp);
    return st;
}

/* The k2 s2 conv whose input is the transposed conv's output: im2col of dy per batch item
 * gives rows (d*h*w) x (8 taps * co). */
static cg convT_as_conv(const kd_conv_geom *g) {
    cg c = {1, g->co, g->od, g->oh, g->ow, g->ci, g->d, g->h, g->w, {2, 2, 2}, 2, 0};
    return c;
}

static kd_status convT_backward_input(kd_device *dev, const kd_conv_geom *g,
                                      const kd_tensor *dy, const kd_tensor *w, kd_tensor *dx) {
    cg c = convT_as_conv(g);
    size_t rows = (size_t)g->d * g->h * g->w, ci = (size_t)g->ci, co = (size_t)g->co;
    size_t ysz = (size_t)g->od * g->oh * g->ow * co;
    tmpbuf col = {0};
    kd_status st = tmp_alloc(dev, rows * 8 * co, &col);
    for (int n = 0; n < g->n && !st; n++) {
        st = im2col(dev, &c, dy->mem, dy->off + n * ysz, col.mem, 0, 0, g->d);
        for (int tap = 0; tap < 8 && !st; tap++)
            st = sgemm(dev, 0, 1, rows, ci, co, col.mem, tap * co, 8 * co, w->mem,
                       w->off + tap * ci * co, co, tap ? 1.0f : 0.0f, dx->mem,
                       dx->off + n * rows * ci, ci);
    }
    tmp_free(dev, &col);
    return st;
}

static kd_status convT_backward_weight(kd_device *dev, const kd_conv_geom *g,
                                       const kd_tensor *x, const kd_tensor *dy, kd_tensor *dw) {
    cg c = convT_as_conv(g);
    size_t rows = (size_t)g->d * g->h * g->w, ci = (size_t)g->ci, co = (size_t)g->co;
    size_t ysz = (size_t)g->od * g->oh * g->ow * co;
    tmpbuf col = {0};
    kd_status st = tmp_alloc(dev, rows * 8 * co, &col);
    for (int n = 0; n < g->n && !st; n++) {
        st = im2col(dev, &c, dy->mem, dy->off + n * ysz, col.mem, 0, 0, g->d);
        for (int tap = 0; tap < 8 && !st; tap++)
            st = sgemm(dev, 1, 0, ci, co, rows, x->mem, x->off + n * rows * ci, ci, col.mem,
                       tap * co, 8 * co, 1.0f, dw->mem, dw->off + tap * ci * co, co);
    }
    tmp_free(dev, &col);
    return st;
}

/* ---- entry points --------------------------------------------------------------------------- */

kd_status kd_conv_gemm_forward(const kd_conv_geom *g, const kd_tensor *x, const kd_tensor *w,
                               const kd_tensor *b, kd_tensor *y) {
    if (g->transposed) return convT_forward(x->dev, g, x, w, b, y);
    cg c = plain(g);
    return conv_forward(x->dev, &c, x->mem, x->off, w->mem, w->off, b, y);
}

kd_status kd_conv_gemm_backward_input(const kd_conv_geom *g, const kd_tensor *dy,
                                      const kd_tensor *w, kd_tensor *dx) {
    if (g->transposed) return convT_backward_input(dy->dev, g, dy, w, dx);
    cg c = plain(g);
    return conv_backward_input(dy->dev, &c, dy, w->mem, w->off, dx);
}

kd_status kd_conv_gemm_backward_weight(const kd_conv_geom *g, const kd_tensor *x,
                                       const kd_tensor *dy, kd_tensor *dw) {
    if (g->transposed) return convT_backward_weight(x->dev, g, x, dy, dw);
    cg c = plain(g);
    return conv_backward_weight(x->dev, &c, x, dy, dw);
}
