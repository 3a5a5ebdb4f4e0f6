/* Graph-level fusions against the unfused graph they replace: the same parameters, the
 * same input and dL/d(output) must give the same output and the same gradients bit for
 * bit (the fused kernels do the same float operations in the same order). */
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"
#include "nn/graph.h"

/* input (Cin 4) -> conv -> GroupNorm -> residual block -> 1x1 conv (3) -> sigmoid, where
 * the block is conv -> GN+leaky -> conv -> GN+leaky, + the block's input; fused: the
 * block's last norm, activation and sum are one kd_g_gn_leaky_add node. */
static kd_graph *res_graph(kd_device *d, int c, int groups, int fused) {
    kd_graph *g = kd_graph_new(d);
    if (!g) return NULL;
    int x = kd_g_input(g, 4);
    x = kd_g_conv(g, x, c, 3, 1, 1, 1, 1, "stem");
    x = kd_g_gn(g, x, groups, "stem_norm");
    int o = kd_g_conv(g, x, c, 3, 1, 1, 1, 0, "b.conv1");
    o = kd_g_gn_leaky(g, o, groups, 0.01f, "b.norm1");
    o = kd_g_conv(g, o, c, 3, 1, 1, 1, 0, "b.conv2");
    if (fused) {
        o = kd_g_gn_leaky_add(g, o, x, groups, 0.01f, "b.norm2");
    } else {
        o = kd_g_gn_leaky(g, o, groups, 0.01f, "b.norm2");
        o = kd_g_binary(g, KD_N_ADD, x, o);
    }
    o = kd_g_conv(g, o, 3, 1, 1, 0, 1, 1, "head");
    o = kd_g_unary(g, KD_N_SIGMOID, o);
    if (o < 0 || kd_graph_finalize(g, o)) {
        kd_graph_free(g);
        return NULL;
    }
    return g;
}

static int get(const kd_tensor *t, float **h, size_t *n) {
    *n = kd_tensor_numel(t);
    *h = malloc(*n * sizeof(float));
    KD_CHECK(*h != NULL, "alloc");
    KD_CHECK_OK(kd_tensor_download_ndhwc(t, *h));
    return 0;
}

static int same(const kd_tensor *a, const kd_tensor *b, const char *what) {
    float *x = NULL, *y = NULL;
    size_t n, m;
    int bad = get(a, &x, &n) || get(b, &y, &m);
    if (!bad && (n != m || memcmp(x, y, n * sizeof(float)))) {
        size_t i = 0;
        while (i < n && i < m && x[i] == y[i]) i++;
        fprintf(stderr, "%s: fused and unfused differ (%zu vs %zu elements; first at %zu: "
                "%.9g vs %.9g)\n", what, n, m, i, i < n ? x[i] : 0.0, i < m ? y[i] : 0.0);
        bad = 1;
    }
    free(x);
    free(y);
    return bad;
}

static int one_case(kd_device *d, kd_shape in, int c, int groups, unsigned seed) {
    kd_graph *g[2] = {res_graph(d, c, groups, 0), res_graph(d, c, groups, 1)};
    KD_CHECK(g[0] && g[1], "building the graphs: %s", kd_last_error());
    KD_CHECK(g[0]->param_numel == g[1]->param_numel && g[0]->nparams == g[1]->nparams,
             "the fused graph has other parameters");
    KD_CHECK(g[1]->nnodes == g[0]->nnodes - 1, "the fused graph should have one node less");
    size_t np = g[0]->param_numel, nx = kd_shape_numel(in);
    float *p = malloc(np * sizeof(float)), *xh = malloc(nx * sizeof(float));
    KD_CHECK(p && xh, "alloc");
    kd_test_randu(p, np, seed, -0.4f, 0.4f);
    kd_test_randu(xh, nx, seed + 1, -2.0f, 2.0f);
    kd_tensor *x = NULL, *out[2] = {NULL, NULL}, *dout = NULL;
    KD_CHECK_OK(kd_tensor_create(d, in, &x));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(x, xh));
    int bad = 0;
    for (int k = 0; k < 2; k++) {
        KD_CHECK_OK(kd_tensor_upload_ndhwc(g[k]->pslab, p));
        KD_CHECK_OK(kd_tensor_fill(g[k]->gslab, 0.0f));
    }
    /* inference forward, then a training forward and backward */
    for (int k = 0; k < 2; k++) KD_CHECK_OK(kd_graph_forward(g[k], x, 0, &out[k]));
    bad = same(out[0], out[1], "inference output");
    for (int k = 0; k < 2; k++) kd_graph_release(g[k]);
    for (int k = 0; k < 2 && !bad; k++) KD_CHECK_OK(kd_graph_forward(g[k], x, 1, &out[k]));
    if (!bad) bad = same(out[0], out[1], "training output");
    if (!bad) {
        size_t no = kd_tensor_numel(out[0]);
        float *dh = malloc(no * sizeof(float));
        KD_CHECK(dh != NULL, "alloc");
        kd_test_randu(dh, no, seed + 2, -1.0f, 1.0f);
        KD_CHECK_OK(kd_tensor_create(d, kd_tensor_shape(out[0]), &dout));
        KD_CHECK_OK(kd_tensor_upload_ndhwc(dout, dh));
        free(dh);
        for (int k = 0; k < 2; k++) KD_CHECK_OK(kd_graph_backward(g[k], dout));
        bad = same(g[0]->gslab, g[1]->gslab, "parameter gradients");
        /* the residual path carries gradient: the stem's gradients are not all zero */
        float *gh = NULL;
        size_t ng;
        if (!bad && !get(g[1]->gslab, &gh, &ng)) {
            double s = 0;
            for (size_t i = 0; i < ng; i++) s += gh[i] < 0 ? -gh[i] : gh[i];
            if (!(s > 0)) {
                fprintf(stderr, "all gradients are zero\n");
                bad = 1;
            }
        }
        free(gh);
    }
    for (int k = 0; k < 2; k++) kd_graph_free(g[k]);
    kd_tensor_free(x);
    kd_tensor_free(dout);
    free(p);
    free(xh);
    return bad;
}

/* Catches: the fused residual tail (kd_g_gn_leaky_add: GroupNorm + LeakyReLU + add in one
 * kernel pass, its backward giving dy to the residual input and GroupNorm+LeakyReLU's dx
 * to the conv) differing in any bit from the unfused nodes, in the output or in any
 * parameter's gradient: the sum dropped or done twice, the residual read at a wrong
 * offset, dy handed to the wrong input, dx written over the residual's gradient.
 * Odd sizes, groups of 2 channels (straddling float4 lanes), C not a multiple of 4,
 * batch 2. */
static int gn_leaky_add_graph(void) {
    KD_DEVICE_OR_FAIL(d);
    if (one_case(d, kd_shape5(1, 4, 5, 6, 7), 8, 4, 11u) ||
        one_case(d, kd_shape5(2, 4, 3, 5, 4), 6, 3, 12u) ||
        one_case(d, kd_shape5(1, 4, 6, 4, 5), 16, 16, 13u))
        return 1;
    KD_CHECK_OK(kd_device_finish(d));
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"gn_leaky_add_graph", gn_leaky_add_graph},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
