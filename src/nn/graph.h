/* The static model graph: nodes in forward order, parameters carved from one slab
 * (graph_build.c), forward/backward with activation lifetimes and recomputation
 * (graph_exec.c), and the memory plan, a dry run of the same executor (graph_plan.c). */
#ifndef KD_GRAPH_H
#define KD_GRAPH_H

#include <stdio.h>

#include "../ops/ops.h"
#include "kdseg/model.h"

typedef enum kd_node_op {
    KD_N_INPUT,
    KD_N_CONV,      /* p.conv, w, b? */
    KD_N_CONVT,     /* 2x2x2 stride 2 transposed conv, w, b? */
    KD_N_GN,        /* groups, eps; w=gamma, b=beta */
    KD_N_GN_LEAKY,  /* fused GroupNorm + LeakyReLU(slope) */
    KD_N_BN,        /* BatchNorm3d; w=gamma, b=beta, rm/rv state */
    KD_N_LEAKY,     /* slope (0: ReLU) */
    KD_N_SIGMOID,
    KD_N_UP_TRI,
    KD_N_UP_NEAR,
    KD_N_MAXPOOL,
    KD_N_AVGPOOL,
    KD_N_GAP,
    KD_N_CHSCALE,   /* in[0] * in[1] (N, C, 1, 1, 1) */
    KD_N_SPGATE,    /* in[0] * in[1] (N, 1, D, H, W) */
    KD_N_CONCAT,
    KD_N_ADD,
    KD_N_SLICE,     /* channels [c0, c0 + cout) of in[0] */
    KD_N_CONV_CAT,  /* 1x1x1 conv of concat(in[0], in[1]) along channels, w, b?; backward
                       reads the two inputs, so the concatenation is never kept */
    KD_N_DETACH,    /* a copy of in[0] that no gradient flows back through */
    KD_N_GN_LEAKY_ADD /* leaky(GroupNorm(in[0])) + in[1] in one pass (the residual block's
                         tail); backward: GroupNorm+LeakyReLU's for in[0], dy for in[1] */
} kd_node_op;

typedef struct kd_param_info {
    char name[96];
    int ndim, dims[5]; /* PyTorch shape */
    size_t numel, offset; /* offset in the slab (elements) */
    int layout;           /* 0 plain, 1 conv weight, 2 transposed-conv weight */
} kd_param_info;

typedef struct kd_node {
    kd_node_op op;
    int in[2];
    int cout;             /* output channels (0: inferred) */
    kd_conv_params conv;
    int groups, c0;
    float eps, slope, momentum;
    int w, b, rm, rv;     /* parameter / state indices, -1 if none */
    /* per run */
    kd_shape shape;
    kd_tensor *out, *grad, *mean, *rstd;
    int uses_left;        /* forward consumers not yet run */
    int keep;             /* output needed by backward */
    int recompute;        /* training: output dropped once its forward consumers ran, rebuilt
                             in backward for each consumer whose backward reads it */
    int inplace;          /* LeakyReLU written over its input's buffer (its only reader);
                             backward takes the sign from the output */
} kd_node;

typedef struct kd_graph {
    kd_device *dev;
    kd_node *nodes;
    int nnodes, cap;
    kd_param_info *params, *states;
    int nparams, nstates, cap_params, cap_states;
    size_t param_numel, state_numel;
    kd_tensor *pslab, *gslab, *sslab; /* (1, numel, 1, 1, 1) flat */
    kd_tensor **pview, **gview, **sview;
    int output;
    int training_run;     /* last forward was in training mode */
    struct kd_plan_rec *rec; /* non-NULL: a dry run that records allocations (graph_plan.c) */
} kd_graph;

/* Building. Each returns the new node's index, or -1 on allocation failure. */
kd_graph *kd_graph_new(kd_device *dev);
void kd_graph_free(kd_graph *g);
int kd_g_input(kd_graph *g, int channels);
int kd_g_conv(kd_graph *g, int in, int cout, int k, int stride, int pad, int groups, int bias,
              const char *name);
int kd_g_convt(kd_graph *g, int in, int cout, int bias, const char *name);
int kd_g_gn(kd_graph *g, int in, int groups, const char *name);
int kd_g_gn_leaky(kd_graph *g, int in, int groups, float slope, const char *name);
/* kd_g_gn_leaky(in) followed by kd_g_binary(KD_N_ADD, r, that), fused: same parameters,
 * same results bit for bit, one pass over memory and one tensor less. */
int kd_g_gn_leaky_add(kd_graph *g, int in, int r, int groups, float slope, const char *name);
int kd_g_bn(kd_graph *g, int in, const char *name);
int kd_g_leaky(kd_graph *g, int in, float slope);
int kd_g_unary(kd_graph *g, kd_node_op op, int in);
int kd_g_binary(kd_graph *g, kd_node_op op, int a, int b);
int kd_g_slice(kd_graph *g, int in, int c0, int count);
/* 1x1x1 conv of concat(a, b): the parameter is one (cout, Ca + Cb, 1, 1, 1) weight, as for
 * a conv after a concat node, but the concatenation exists only inside the forward. */
int kd_g_conv_cat(kd_graph *g, int a, int b, int cout, int bias, const char *name);
/* Allocate the slabs and views once the graph is complete. */
kd_status kd_graph_finalize(kd_graph *g, int output);
int kd_graph_channels(const kd_graph *g, int node);

kd_status kd_graph_forward(kd_graph *g, const kd_tensor *x, int training, kd_tensor **out);
kd_status kd_graph_backward(kd_graph *g, const kd_tensor *dout);
void kd_graph_release(kd_graph *g);
/* The planned peak of device bytes that forward (and, training, backward) take beyond the
 * input and the parameter slabs, the caller's dL/d(output) included: activations, saved
 * statistics, recomputed outputs, gradients and the conv ops' scratch. Computed by running
 * kd_graph_forward/backward dry on a copy of the graph's nodes (storage-less tensors, no
 * op launched, every allocation recorded, rounded as the buffer pool rounds), so g's own
 * run state is left as it was. With explain, also writes what is live at the peak. */
kd_status kd_graph_plan(kd_graph *g, kd_shape in, int training, size_t *peak);
kd_status kd_graph_conv_flops(kd_graph *g, kd_shape in, int training, double *flops);
kd_status kd_graph_plan_explain(kd_graph *g, kd_shape in, int training, size_t *peak,
                                FILE *explain);

#endif
