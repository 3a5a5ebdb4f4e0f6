/* The static model graph: building, slabs, forward, backward, memory plan. */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_impl.h"

/* ---- building ---------------------------------------------------------------- */

kd_graph *kd_graph_new(kd_device *dev) {
    kd_graph *g = calloc(1, sizeof *g);
    if (g) {
        g->dev = dev;
        g->output = -1;
    }
    return g;
}

void kd_graph_release(kd_graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        if (n->op != KD_N_INPUT) kd_tensor_free(n->out);
        kd_tensor_free(n->grad);
        kd_tensor_free(n->mean);
        kd_tensor_free(n->rstd);
        n->out = n->grad = n->mean = n->rstd = NULL;
    }
}

void kd_graph_free(kd_graph *g) {
    if (!g) return;
    kd_graph_release(g);
    for (int i = 0; i < g->nparams; i++) {
        if (g->pview) kd_tensor_free(g->pview[i]);
        if (g->gview) kd_tensor_free(g->gview[i]);
    }
    for (int i = 0; i < g->nstates; i++)
        if (g->sview) kd_tensor_free(g->sview[i]);
    free(g->pview);
    free(g->gview);
    free(g->sview);
    kd_tensor_free(g->pslab);
    kd_tensor_free(g->gslab);
    kd_tensor_free(g->sslab);
    free(g->nodes);
    free(g->params);
    free(g->states);
    free(g);
}

static int add_node(kd_graph *g, kd_node_op op, int a, int b) {
    if (g->nnodes == g->cap) {
        int cap = g->cap ? 2 * g->cap : 64;
        kd_node *p = realloc(g->nodes, (size_t)cap * sizeof *p);
        if (!p) return -1;
        g->nodes = p;
        g->cap = cap;
    }
    kd_node *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->in[0] = a;
    n->in[1] = b;
    n->w = n->b = n->rm = n->rv = -1;
    return g->nnodes++;
}

static int add_info(kd_param_info **arr, int *count, int *cap, size_t *total, const char *name,
                    int ndim, const int *dims, int layout) {
    if (*count == *cap) {
        int c = *cap ? 2 * *cap : 64;
        kd_param_info *p = realloc(*arr, (size_t)c * sizeof *p);
        if (!p) return -1;
        *arr = p;
        *cap = c;
    }
    kd_param_info *pi = &(*arr)[*count];
    memset(pi, 0, sizeof *pi);
    snprintf(pi->name, sizeof pi->name, "%s", name);
    pi->ndim = ndim;
    pi->numel = 1;
    for (int i = 0; i < ndim; i++) {
        pi->dims[i] = dims[i];
        pi->numel *= (size_t)dims[i];
    }
    pi->offset = *total;
    pi->layout = layout;
    *total += pi->numel;
    return (*count)++;
}

static int add_param(kd_graph *g, const char *name, int ndim, const int *dims, int layout) {
    return add_info(&g->params, &g->nparams, &g->cap_params, &g->param_numel, name, ndim, dims,
                    layout);
}

int kd_graph_channels(const kd_graph *g, int node) {
    const kd_node *n = &g->nodes[node];
    switch (n->op) {
    case KD_N_INPUT:
    case KD_N_CONV:
    case KD_N_CONVT:
    case KD_N_SLICE: return n->cout;
    case KD_N_CONCAT: return kd_graph_channels(g, n->in[0]) + kd_graph_channels(g, n->in[1]);
    default: return kd_graph_channels(g, n->in[0]);
    }
}

int kd_g_input(kd_graph *g, int channels) {
    int i = add_node(g, KD_N_INPUT, -1, -1);
    if (i >= 0) g->nodes[i].cout = channels;
    return i;
}

int kd_g_conv(kd_graph *g, int in, int cout, int k, int stride, int pad, int groups, int bias,
              const char *name) {
    if (in < 0) return -1;
    int cin = kd_graph_channels(g, in);
    int i = add_node(g, KD_N_CONV, in, -1);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    n->cout = cout;
    n->conv = (kd_conv_params){{k, k, k}, stride, pad, groups};
    char pn[96];
    int dims[5] = {cout, cin / groups, k, k, k};
    snprintf(pn, sizeof pn, "%s.weight", name);
    n->w = add_param(g, pn, 5, dims, 1);
    if (bias) {
        snprintf(pn, sizeof pn, "%s.bias", name);
        n->b = add_param(g, pn, 1, &cout, 0);
    }
    return n->w < 0 || (bias && n->b < 0) ? -1 : i;
}

int kd_g_convt(kd_graph *g, int in, int cout, int bias, const char *name) {
    if (in < 0) return -1;
    int cin = kd_graph_channels(g, in);
    int i = add_node(g, KD_N_CONVT, in, -1);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    n->cout = cout;
    char pn[96];
    int dims[5] = {cin, cout, 2, 2, 2};
    snprintf(pn, sizeof pn, "%s.weight", name);
    n->w = add_param(g, pn, 5, dims, 2);
    if (bias) {
        snprintf(pn, sizeof pn, "%s.bias", name);
        n->b = add_param(g, pn, 1, &cout, 0);
    }
    return n->w < 0 || (bias && n->b < 0) ? -1 : i;
}

static int norm_node(kd_graph *g, kd_node_op op, int in, const char *name) {
    if (in < 0) return -1;
    int c = kd_graph_channels(g, in);
    int i = add_node(g, op, in, -1);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    char pn[96];
    snprintf(pn, sizeof pn, "%s.weight", name);
    n->w = add_param(g, pn, 1, &c, 0);
    snprintf(pn, sizeof pn, "%s.bias", name);
    n->b = add_param(g, pn, 1, &c, 0);
    n->eps = 1e-5f;
    return n->w < 0 || n->b < 0 ? -1 : i;
}

int kd_g_gn(kd_graph *g, int in, int groups, const char *name) {
    int i = norm_node(g, KD_N_GN, in, name);
    if (i >= 0) g->nodes[i].groups = groups;
    return i;
}

int kd_g_gn_leaky(kd_graph *g, int in, int groups, float slope, const char *name) {
    int i = norm_node(g, KD_N_GN_LEAKY, in, name);
    if (i >= 0) {
        g->nodes[i].groups = groups;
        g->nodes[i].slope = slope;
    }
    return i;
}

int kd_g_bn(kd_graph *g, int in, const char *name) {
    int i = norm_node(g, KD_N_BN, in, name);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    int c = kd_graph_channels(g, in);
    n->momentum = 0.1f;
    char pn[96];
    snprintf(pn, sizeof pn, "%s.running_mean", name);
    n->rm = add_info(&g->states, &g->nstates, &g->cap_states, &g->state_numel, pn, 1, &c, 0);
    snprintf(pn, sizeof pn, "%s.running_var", name);
    n->rv = add_info(&g->states, &g->nstates, &g->cap_states, &g->state_numel, pn, 1, &c, 0);
    return n->rm < 0 || n->rv < 0 ? -1 : i;
}

int kd_g_leaky(kd_graph *g, int in, float slope) {
    if (in < 0) return -1;
    int i = add_node(g, KD_N_LEAKY, in, -1);
    if (i >= 0) g->nodes[i].slope = slope;
    return i;
}

int kd_g_unary(kd_graph *g, kd_node_op op, int in) {
    return in < 0 ? -1 : add_node(g, op, in, -1);
}

int kd_g_binary(kd_graph *g, kd_node_op op, int a, int b) {
    return a < 0 || b < 0 ? -1 : add_node(g, op, a, b);
}

int kd_g_slice(kd_graph *g, int in, int c0, int count) {
    if (in < 0) return -1;
    int i = add_node(g, KD_N_SLICE, in, -1);
    if (i >= 0) {
        g->nodes[i].c0 = c0;
        g->nodes[i].cout = count;
    }
    return i;
}

static kd_status make_views(kd_tensor *slab, const kd_param_info *info, int n,
                            kd_tensor ***out) {
    *out = calloc((size_t)(n ? n : 1), sizeof **out);
    if (!*out) return kd_fail(KD_ERR_OUT_OF_MEMORY, "parameter views");
    for (int i = 0; i < n; i++) {
        kd_status s = kd_tensor_view(slab, info[i].offset,
                                     kd_shape5(1, (int)info[i].numel, 1, 1, 1), &(*out)[i]);
        if (s) return s;
    }
    return KD_OK;
}

kd_status kd_graph_finalize(kd_graph *g, int output) {
    g->output = output;
    kd_status s;
    if ((s = kd_tensor_zeros(g->dev, kd_shape5(1, (int)g->param_numel, 1, 1, 1), &g->pslab)) ||
        (s = kd_tensor_zeros(g->dev, kd_shape5(1, (int)g->param_numel, 1, 1, 1), &g->gslab)) ||
        (s = make_views(g->pslab, g->params, g->nparams, &g->pview)) ||
        (s = make_views(g->gslab, g->params, g->nparams, &g->gview)))
        return s;
    if (g->nstates) {
        if ((s = kd_tensor_zeros(g->dev, kd_shape5(1, (int)g->state_numel, 1, 1, 1), &g->sslab)) ||
            (s = make_views(g->sslab, g->states, g->nstates, &g->sview)))
            return s;
    }
    return KD_OK;
}

/* ---- shapes and lifetimes ---------------------------------------------------- */

static kd_status infer_shapes(kd_graph *g, kd_shape in) {
    char b1[96];
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        kd_shape s = n->in[0] >= 0 ? g->nodes[n->in[0]].shape : in;
        switch (n->op) {
        case KD_N_INPUT:
            if (in.c != n->cout)
                return kd_fail(KD_ERR_SHAPE, "model expects %d input channels, got %s", n->cout,
                               kd_shape_str(in, b1, sizeof b1));
            s = in;
            break;
        case KD_N_CONV: {
            int *dims[3] = {&s.d, &s.h, &s.w};
            for (int a = 0; a < 3; a++) {
                int o = kd_conv_out_size(*dims[a], n->conv.k[a], n->conv.stride, n->conv.pad);
                if (o <= 0 || (n->conv.stride == 2 && *dims[a] % 2))
                    return kd_fail(KD_ERR_SHAPE,
                                   "input %s: spatial sizes must be divisible by the model's "
                                   "divisor (a stride-2 layer got an odd size)",
                                   kd_shape_str(in, b1, sizeof b1));
                *dims[a] = o;
            }
            s.c = n->cout;
            break;
        }
        case KD_N_CONVT:
        case KD_N_UP_TRI:
        case KD_N_UP_NEAR:
            s.d *= 2;
            s.h *= 2;
            s.w *= 2;
            if (n->op == KD_N_CONVT) s.c = n->cout;
            break;
        case KD_N_MAXPOOL:
        case KD_N_AVGPOOL:
            if (s.d % 2 || s.h % 2 || s.w % 2)
                return kd_fail(KD_ERR_SHAPE, "input %s: pooling needs even sizes",
                               kd_shape_str(in, b1, sizeof b1));
            s.d /= 2;
            s.h /= 2;
            s.w /= 2;
            break;
        case KD_N_GAP: s.d = s.h = s.w = 1; break;
        case KD_N_CONCAT: s.c += g->nodes[n->in[1]].shape.c; break;
        case KD_N_SLICE: s.c = n->cout; break;
        default: break;
        }
        n->shape = s;
    }
    return KD_OK;
}

/* Does the backward of node j need its input k's forward output? */
static int bwd_needs_input(const kd_node *n, int which) {
    switch (n->op) {
    case KD_N_CONV:
    case KD_N_CONVT:
    case KD_N_GN:
    case KD_N_GN_LEAKY:
    case KD_N_BN:
    case KD_N_LEAKY:
    case KD_N_MAXPOOL: return which == 0;
    case KD_N_CHSCALE:
    case KD_N_SPGATE: return 1;
    default: return 0;
    }
}

static void lifetimes(kd_graph *g, int training) {
    for (int i = 0; i < g->nnodes; i++) {
        g->nodes[i].uses_left = 0;
        g->nodes[i].keep = 0;
    }
    for (int j = 0; j < g->nnodes; j++) {
        kd_node *n = &g->nodes[j];
        for (int w = 0; w < 2; w++) {
            if (n->in[w] < 0) continue;
            g->nodes[n->in[w]].uses_left++;
            if (training && bwd_needs_input(n, w)) g->nodes[n->in[w]].keep = 1;
        }
        if (training && n->op == KD_N_SIGMOID) n->keep = 1;
    }
    g->nodes[g->output].keep = 1;
}

static int has_stats(const kd_node *n) {
    return n->op == KD_N_GN || n->op == KD_N_GN_LEAKY || n->op == KD_N_BN;
}

static size_t stats_numel(const kd_node *n) {
    return n->op == KD_N_BN ? (size_t)n->shape.c : (size_t)n->shape.n * (size_t)n->groups;
}

/* ---- forward ----------------------------------------------------------------- */

static kd_status run_node(kd_graph *g, kd_node *n, int training) {
    kd_tensor *x = n->in[0] >= 0 ? g->nodes[n->in[0]].out : NULL;
    kd_tensor *x2 = n->in[1] >= 0 ? g->nodes[n->in[1]].out : NULL;
    kd_tensor *w = n->w >= 0 ? g->pview[n->w] : NULL, *b = n->b >= 0 ? g->pview[n->b] : NULL;
    kd_status s;
    if ((s = kd_tensor_create(g->dev, n->shape, &n->out))) return s;
    if (has_stats(n)) {
        kd_shape ss = kd_shape5(1, (int)stats_numel(n), 1, 1, 1);
        if ((s = kd_tensor_create(g->dev, ss, &n->mean)) ||
            (s = kd_tensor_create(g->dev, ss, &n->rstd)))
            return s;
    }
    switch (n->op) {
    case KD_N_CONV: return kd_conv3d_forward(&n->conv, x, w, b, n->out);
    case KD_N_CONVT: return kd_convT3d_forward(x, w, b, n->out);
    case KD_N_GN:
        return kd_groupnorm_forward(x, w, b, n->groups, n->eps, n->out, n->mean, n->rstd);
    case KD_N_GN_LEAKY:
        return kd_groupnorm_leaky_forward(x, w, b, n->groups, n->eps, n->slope, n->out, n->mean,
                                          n->rstd);
    case KD_N_BN:
        return kd_batchnorm_forward(x, w, b, g->sview[n->rm], g->sview[n->rv], training,
                                    n->momentum, n->eps, n->out, n->mean, n->rstd);
    case KD_N_LEAKY: return kd_leaky_forward(x, n->slope, n->out);
    case KD_N_SIGMOID: return kd_sigmoid_forward(x, n->out);
    case KD_N_UP_TRI: return kd_upsample_trilinear_forward(x, n->out);
    case KD_N_UP_NEAR: return kd_upsample_nearest_forward(x, n->out);
    case KD_N_MAXPOOL: return kd_maxpool_forward(x, n->out);
    case KD_N_AVGPOOL: return kd_avgpool_forward(x, n->out);
    case KD_N_GAP: return kd_global_avgpool_forward(x, n->out);
    case KD_N_CHSCALE: return kd_channel_scale_forward(x, x2, n->out);
    case KD_N_SPGATE: return kd_spatial_gate_forward(x, x2, n->out);
    case KD_N_CONCAT: return kd_concat_forward(x, x2, n->out);
    case KD_N_ADD: return kd_add(x, x2, n->out);
    case KD_N_SLICE: return kd_slice_channels_forward(x, n->c0, n->out);
    case KD_N_INPUT: break;
    }
    return kd_fail(KD_ERR_INTERNAL, "graph: unknown node op %d", (int)n->op);
}

static void drop_output(kd_graph *g, int k) {
    kd_node *n = &g->nodes[k];
    if (n->op != KD_N_INPUT) kd_tensor_free(n->out);
    n->out = NULL;
}

kd_status kd_graph_forward(kd_graph *g, const kd_tensor *x, int training, kd_tensor **out) {
    *out = NULL;
    kd_graph_release(g);
    kd_status s = infer_shapes(g, kd_tensor_shape(x));
    if (s) return s;
    lifetimes(g, training);
    g->training_run = training;
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        if (n->op == KD_N_INPUT) {
            n->out = (kd_tensor *)x; /* borrowed: never freed by the graph */
        } else if ((s = run_node(g, n, training))) {
            char b1[96];
            kd_fail_context(s, "forward of node %d (output %s)", i,
                            kd_shape_str(n->shape, b1, sizeof b1));
            kd_graph_release(g);
            return s;
        }
        if (!training && has_stats(n)) {
            kd_tensor_free(n->mean);
            kd_tensor_free(n->rstd);
            n->mean = n->rstd = NULL;
        }
        for (int w = 0; w < 2; w++) {
            int k = n->in[w];
            if (k < 0) continue;
            if (--g->nodes[k].uses_left == 0 && !g->nodes[k].keep) drop_output(g, k);
        }
    }
    *out = g->nodes[g->output].out;
    return KD_OK;
}

/* ---- backward ---------------------------------------------------------------- */

/* Add tmp into node k's gradient (taking ownership of tmp). */
static kd_status give_grad(kd_graph *g, int k, kd_tensor *tmp) {
    kd_node *n = &g->nodes[k];
    if (!n->grad) {
        n->grad = tmp;
        return KD_OK;
    }
    kd_status s = kd_add(n->grad, tmp, n->grad);
    kd_tensor_free(tmp);
    return s;
}

static int wants_grad(const kd_graph *g, int k) {
    return k >= 0 && g->nodes[k].op != KD_N_INPUT;
}

static kd_status new_like(kd_graph *g, int k, kd_tensor **t) {
    return kd_tensor_create(g->dev, g->nodes[k].shape, t);
}

static kd_status back_node(kd_graph *g, kd_node *n) {
    int a = n->in[0], b2 = n->in[1];
    kd_tensor *dy = n->grad, *x = a >= 0 ? g->nodes[a].out : NULL;
    kd_tensor *x2 = b2 >= 0 ? g->nodes[b2].out : NULL;
    kd_tensor *w = n->w >= 0 ? g->pview[n->w] : NULL;
    kd_tensor *dw = n->w >= 0 ? g->gview[n->w] : NULL, *db = n->b >= 0 ? g->gview[n->b] : NULL;
    kd_tensor *da = NULL, *db2 = NULL;
    int ga = wants_grad(g, a), gb = wants_grad(g, b2);
    kd_status s = KD_OK;
    if (ga && (s = new_like(g, a, &da))) return s;
    if (gb && (s = new_like(g, b2, &db2))) goto done;
    switch (n->op) {
    case KD_N_CONV:
        s = kd_conv3d_backward_weight(&n->conv, x, dy, dw, db);
        if (!s && ga) s = kd_conv3d_backward_input(&n->conv, dy, w, da);
        break;
    case KD_N_CONVT:
        s = kd_convT3d_backward_weight(x, dy, dw, db);
        if (!s && ga) s = kd_convT3d_backward_input(dy, w, da);
        break;
    case KD_N_GN:
        s = kd_groupnorm_backward(dy, x, w, n->mean, n->rstd, n->groups, da, dw, db);
        break;
    case KD_N_GN_LEAKY:
        s = kd_groupnorm_leaky_backward(dy, x, w, g->pview[n->b], n->mean, n->rstd, n->groups,
                                        n->slope, da, dw, db);
        break;
    case KD_N_BN: s = kd_batchnorm_backward(dy, x, w, n->mean, n->rstd, da, dw, db); break;
    case KD_N_LEAKY: s = ga ? kd_leaky_backward(dy, x, n->slope, da) : KD_OK; break;
    case KD_N_SIGMOID: s = ga ? kd_sigmoid_backward(dy, n->out, da) : KD_OK; break;
    case KD_N_UP_TRI: s = ga ? kd_upsample_trilinear_backward(dy, da) : KD_OK; break;
    case KD_N_UP_NEAR: s = ga ? kd_upsample_nearest_backward(dy, da) : KD_OK; break;
    case KD_N_MAXPOOL: s = ga ? kd_maxpool_backward(dy, x, da) : KD_OK; break;
    case KD_N_AVGPOOL: s = ga ? kd_avgpool_backward(dy, da) : KD_OK; break;
    case KD_N_GAP: s = ga ? kd_global_avgpool_backward(dy, da) : KD_OK; break;
    case KD_N_CHSCALE:
        if (!ga && (s = new_like(g, a, &da))) break;
        if (!gb && (s = new_like(g, b2, &db2))) break;
        s = kd_channel_scale_backward(dy, x, x2, da, db2);
        break;
    case KD_N_SPGATE:
        if (!ga && (s = new_like(g, a, &da))) break;
        if (!gb && (s = new_like(g, b2, &db2))) break;
        s = kd_spatial_gate_backward(dy, x, x2, da, db2);
        break;
    case KD_N_CONCAT:
        if (!ga && (s = new_like(g, a, &da))) break;
        if (!gb && (s = new_like(g, b2, &db2))) break;
        s = kd_concat_backward(dy, da, db2);
        break;
    case KD_N_ADD:
        if (ga) s = kd_tensor_copy(da, dy);
        if (!s && gb) s = kd_tensor_copy(db2, dy);
        break;
    case KD_N_SLICE:
        if (ga && !(s = kd_tensor_fill(da, 0.0f))) s = kd_slice_channels_backward(dy, n->c0, da);
        break;
    case KD_N_INPUT: break;
    }
    if (s) goto done;
    if (ga) {
        s = give_grad(g, a, da);
        da = NULL;
    }
    if (!s && gb) {
        s = give_grad(g, b2, db2);
        db2 = NULL;
    }
done:
    kd_tensor_free(da);
    kd_tensor_free(db2);
    return s;
}

kd_status kd_graph_backward(kd_graph *g, const kd_tensor *dout) {
    if (!g->training_run || !g->nodes[g->output].out)
        return kd_fail(KD_ERR_INVALID_ARG, "backward without a training-mode forward");
    kd_node *on = &g->nodes[g->output];
    if (!kd_shape_equal(kd_tensor_shape(dout), on->shape)) {
        char a[96], b[96];
        return kd_fail(KD_ERR_SHAPE, "backward: gradient %s for output %s",
                       kd_shape_str(kd_tensor_shape(dout), a, 96), kd_shape_str(on->shape, b, 96));
    }
    kd_status s = kd_tensor_create(g->dev, on->shape, &on->grad);
    if (!s) s = kd_tensor_copy(on->grad, dout);
    for (int i = g->nnodes - 1; i >= 0 && !s; i--) {
        kd_node *n = &g->nodes[i];
        if (n->grad && n->op != KD_N_INPUT) {
            s = back_node(g, n);
            if (s) {
                kd_fail_context(s, "backward of node %d", i);
                break;
            }
        }
        kd_tensor_free(n->grad);
        n->grad = NULL;
        kd_tensor_free(n->mean);
        kd_tensor_free(n->rstd);
        n->mean = n->rstd = NULL;
        /* n's output is no longer needed once its own backward ran */
        if (i != g->output) drop_output(g, i);
    }
    if (s) kd_graph_release(g);
    g->training_run = 0;
    return s;
}

/* ---- memory plan ------------------------------------------------------------- */

static size_t round_bytes(size_t numel) { return (numel * sizeof(float) + 255) & ~(size_t)255; }

kd_status kd_graph_plan(kd_graph *g, kd_shape in, int training, size_t *peak) {
    kd_status s = infer_shapes(g, in);
    if (s) return s;
    lifetimes(g, training);
    size_t cur = 0, best = 0;
    size_t *held = calloc((size_t)g->nnodes, sizeof *held);
    size_t *grad = calloc((size_t)g->nnodes, sizeof *grad);
    if (!held || !grad) {
        free(held);
        free(grad);
        return kd_fail(KD_ERR_OUT_OF_MEMORY, "memory plan");
    }
#define GROW(b)                   \
    do {                          \
        cur += (b);               \
        if (cur > best) best = cur; \
    } while (0)
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        if (n->op != KD_N_INPUT) {
            held[i] = round_bytes(kd_shape_numel(n->shape));
            if (has_stats(n)) held[i] += 2 * round_bytes(stats_numel(n));
            GROW(held[i]);
            if (!training && has_stats(n)) {
                cur -= 2 * round_bytes(stats_numel(n));
                held[i] -= 2 * round_bytes(stats_numel(n));
            }
        }
        for (int w = 0; w < 2; w++) {
            int k = n->in[w];
            if (k >= 0 && --g->nodes[k].uses_left == 0 && !g->nodes[k].keep) {
                cur -= held[k];
                held[k] = 0;
            }
        }
    }
    if (training) {
        grad[g->output] = round_bytes(kd_shape_numel(g->nodes[g->output].shape));
        GROW(grad[g->output]);
        for (int i = g->nnodes - 1; i >= 0; i--) {
            kd_node *n = &g->nodes[i];
            if (grad[i] && n->op != KD_N_INPUT) {
                for (int w = 0; w < 2; w++) {
                    int k = n->in[w];
                    if (k < 0 || g->nodes[k].op == KD_N_INPUT) continue;
                    size_t b = round_bytes(kd_shape_numel(g->nodes[k].shape));
                    GROW(b); /* the new gradient (or the temporary added into it) */
                    if (grad[k]) cur -= b;
                    else grad[k] = b;
                }
            }
            cur -= grad[i] + held[i];
            grad[i] = held[i] = 0;
        }
    }
#undef GROW
    free(held);
    free(grad);
    *peak = best;
    return KD_OK;
}
