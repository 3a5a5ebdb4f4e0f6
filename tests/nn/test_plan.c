/* The memory plan as a dry run of the executor (src/nn/graph_plan.c). */
#include <stdlib.h>
#include <string.h>

#include "../kdtest.h"

static int download(kd_tensor *t, float **out) {
    size_t n = kd_tensor_numel(t);
    *out = malloc(n * sizeof(float));
    KD_CHECK(*out != NULL, "alloc");
    KD_CHECK_OK(kd_tensor_download_ndhwc(t, *out));
    return 0;
}

/* Catches: a plan that works on the graph's own run state (shapes, lifetimes, tensors)
 * instead of a copy, so that planning between a training forward and its backward
 * breaks the backward, changes its gradients or frees the output the caller holds. */
static int plan_keeps_run(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16:enc=1,1:dec=1", 7, &m));
    kd_shape xs = kd_shape5(1, 4, 16, 16, 16), ys = kd_shape5(1, 3, 16, 16, 16);
    size_t nx = kd_shape_numel(xs), ny = kd_shape_numel(ys);
    float *hx = malloc(nx * 4), *hd = malloc(ny * 4), *g[2] = {NULL, NULL}, *y[2] = {NULL, NULL};
    KD_CHECK(hx && hd, "alloc");
    kd_test_randu(hx, nx, 1, -1, 1);
    kd_test_randu(hd, ny, 2, -1, 1);
    kd_tensor *x, *dy, *out;
    KD_CHECK_OK(kd_tensor_create(dev, xs, &x));
    KD_CHECK_OK(kd_tensor_create(dev, ys, &dy));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(x, hx));
    KD_CHECK_OK(kd_tensor_upload_ndhwc(dy, hd));
    size_t before = 0, after = 0, other = 0;
    KD_CHECK_OK(kd_model_plan(m, xs, 1, &before));
    for (int k = 0; k < 2; k++) {
        KD_CHECK_OK(kd_model_zero_grad(m));
        KD_CHECK_OK(kd_model_forward(m, x, 1, &out));
        if (k == 1) { /* plans of other shapes and modes between forward and backward */
            KD_CHECK_OK(kd_model_plan_explain(m, xs, 1, &after, stdout));
            KD_CHECK_OK(kd_model_plan(m, kd_shape5(2, 4, 32, 16, 48), 1, &other));
            KD_CHECK_OK(kd_model_plan(m, kd_shape5(1, 4, 8, 8, 8), 0, &other));
        }
        if (download(out, &y[k])) return 1;
        KD_CHECK_OK(kd_model_backward(m, dy));
        if (download(kd_model_grads(m), &g[k])) return 1;
    }
    size_t np = kd_tensor_numel(kd_model_grads(m));
    KD_CHECK(!memcmp(y[0], y[1], ny * 4), "the output changed under the plan");
    KD_CHECK(!memcmp(g[0], g[1], np * 4), "the gradients changed under the plan");
    KD_CHECK(before == after && before > 0, "plan %zu, then %zu", before, after);
    for (int k = 0; k < 2; k++) free(g[k]), free(y[k]);
    free(hx), free(hd);
    kd_tensor_free(x), kd_tensor_free(dy);
    kd_model_free(m);
    return 0;
}

/* Catches: a plan that refuses a shape too large to run instead of saying how much it
 * would need (whole-volume inference plans first and falls back to windows when the
 * answer exceeds the device), or that grows other than linearly with the batch. */
static int plan_too_large(void) {
    KD_DEVICE_OR_FAIL(dev);
    kd_model *m;
    KD_CHECK_OK(kd_model_create(dev, "resunet:widths=8,16:enc=1,1:dec=1", 1, &m));
    size_t big = 0, one = 0, two = 0;
    KD_CHECK_OK(kd_model_plan(m, kd_shape5(1, 4, 1024, 1024, 512), 0, &big)); /* 2^32 values a layer */
    KD_CHECK(big > ((size_t)16 << 30), "plan %zu bytes for 2^32-value activations", big);
    KD_CHECK_OK(kd_model_plan(m, kd_shape5(1, 4, 32, 32, 32), 1, &one));
    KD_CHECK_OK(kd_model_plan(m, kd_shape5(2, 4, 32, 32, 32), 1, &two));
    KD_CHECK(two > one + one / 2 && two <= 2 * one + 65536, "batch 1 %zu, batch 2 %zu", one, two);
    kd_status s = kd_model_plan(m, kd_shape5(1, 3, 16, 16, 16), 1, &one);
    KD_CHECK(s == KD_ERR_SHAPE && strstr(kd_last_error(), "input channels"), "%s", kd_last_error());
    kd_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    static const kd_test_case cases[] = {
        {"plan_keeps_run", plan_keeps_run},
        {"plan_too_large", plan_too_large},
    };
    return kd_test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
