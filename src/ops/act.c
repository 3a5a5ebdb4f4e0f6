/* Activations: LeakyReLU/ReLU, sigmoid, softmax over channels (cl/act.cl). */
#include "layers_impl.h"

kd_status kd_leaky_forward(const kd_tensor *x, float slope, kd_tensor *y) {
    kd_status st = kd_check_same("leaky_relu", "x", x, "y", y);
    if (st) return st;
    size_t n = kd_tensor_numel(x);
    return kd_op_fail(kd_launch_flat8(x->dev, "kd_leaky_fwd", n,
                                      KD_ARGS(KD_T(x), KD_T(y), KD_INT(n), KD_FLOAT(slope))),
                      "leaky_relu", x);
}

kd_status kd_leaky_backward(const kd_tensor *dy, const kd_tensor *x, float slope,
                            kd_tensor *dx) {
    kd_status st = kd_check_same("leaky_relu backward", "x", x, "dy", dy);
    if (!st) st = kd_check_same("leaky_relu backward", "x", x, "dx", dx);
    if (st) return st;
    size_t n = kd_tensor_numel(x);
    return kd_op_fail(kd_launch_flat8(x->dev, "kd_leaky_bwd", n,
                                      KD_ARGS(KD_T(dy), KD_T(x), KD_T(dx), KD_INT(n), KD_FLOAT(slope))),
                      "leaky_relu backward", x);
}

kd_status kd_sigmoid_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = kd_check_same("sigmoid", "x", x, "y", y);
    if (st) return st;
    size_t n = kd_tensor_numel(x);
    return kd_op_fail(kd_launch_flat8(x->dev, "kd_sigmoid_fwd", n, KD_ARGS(KD_T(x), KD_T(y), KD_INT(n))),
                      "sigmoid", x);
}

kd_status kd_sigmoid_backward(const kd_tensor *dy, const kd_tensor *y, kd_tensor *dx) {
    kd_status st = kd_check_same("sigmoid backward", "y", y, "dy", dy);
    if (!st) st = kd_check_same("sigmoid backward", "y", y, "dx", dx);
    if (st) return st;
    size_t n = kd_tensor_numel(y);
    return kd_op_fail(kd_launch_flat8(y->dev, "kd_sigmoid_bwd", n,
                                      KD_ARGS(KD_T(dy), KD_T(y), KD_T(dx), KD_INT(n))),
                      "sigmoid backward", y);
}

kd_status kd_softmax_forward(const kd_tensor *x, kd_tensor *y) {
    kd_status st = kd_check_same("softmax", "x", x, "y", y);
    if (st) return st;
    size_t nvox = kd_tensor_numel(x) / (size_t)x->shape.c;
    return kd_op_fail(kd_launch_1d(x->dev, "kd_softmax_fwd", nvox,
                                   KD_ARGS(KD_T(x), KD_T(y), KD_INT(nvox), KD_INT(x->shape.c))),
                      "softmax", x);
}

kd_status kd_softmax_backward(const kd_tensor *dy, const kd_tensor *y, kd_tensor *dx) {
    kd_status st = kd_check_same("softmax backward", "y", y, "dy", dy);
    if (!st) st = kd_check_same("softmax backward", "y", y, "dx", dx);
    if (st) return st;
    size_t nvox = kd_tensor_numel(y) / (size_t)y->shape.c;
    return kd_op_fail(kd_launch_1d(y->dev, "kd_softmax_bwd", nvox,
                                   KD_ARGS(KD_T(dy), KD_T(y), KD_T(dx), KD_INT(nvox), KD_INT(y->shape.c))),
                      "softmax backward", y);
}
