/* The static model graph: building, slabs, forward, backward, memory plan. */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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

/* A conv node's parameters: NAME.weight (5-D, dims, layout) and, with bias, NAME.bias
 * of n->cout values. Nonzero on failure. */
static int conv_params(kd_graph *g, kd_node *n, const char *name, const int dims[5], int layout,
                       int bias) {
    char pn[96];
    snprintf(pn, sizeof pn, "%s.weight", name);
    n->w = add_param(g, pn, 5, dims, layout);
    if (bias) {
        snprintf(pn, sizeof pn, "%s.bias", name);
        n->b = add_param(g, pn, 1, &n->cout, 0);
    }
    return n->w < 0 || (bias && n->b < 0);
}

int kd_graph_channels(const kd_graph *g, int node) {
    const kd_node *n = &g->nodes[node];
    switch (n->op) {
    case KD_N_INPUT:
    case KD_N_CONV:
    case KD_N_CONVT:
    case KD_N_SLICE:
    case KD_N_CONV_CAT: return n->cout;
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
    int dims[5] = {cout, cin / groups, k, k, k};
    return conv_params(g, n, name, dims, 1, bias) ? -1 : i;
}

int kd_g_convt(kd_graph *g, int in, int cout, int bias, const char *name) {
    if (in < 0) return -1;
    int cin = kd_graph_channels(g, in);
    int i = add_node(g, KD_N_CONVT, in, -1);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    n->cout = cout;
    int dims[5] = {cin, cout, 2, 2, 2};
    return conv_params(g, n, name, dims, 2, bias) ? -1 : i;
}

int kd_g_conv_cat(kd_graph *g, int a, int b, int cout, int bias, const char *name) {
    if (a < 0 || b < 0) return -1;
    int cin = kd_graph_channels(g, a) + kd_graph_channels(g, b);
    int i = add_node(g, KD_N_CONV_CAT, a, b);
    if (i < 0) return -1;
    kd_node *n = &g->nodes[i];
    n->cout = cout;
    n->conv = (kd_conv_params){{1, 1, 1}, 1, 0, 1};
    int dims[5] = {cout, cin, 1, 1, 1};
    return conv_params(g, n, name, dims, 1, bias) ? -1 : i;
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
        case KD_N_CONV_CAT: {
            kd_shape s2 = g->nodes[n->in[1]].shape;
            if (s2.n != s.n || s2.d != s.d || s2.h != s.h || s2.w != s.w) {
                char b2[96];
                return kd_fail(KD_ERR_SHAPE, "node %d: concatenating %s and %s", i,
                               kd_shape_str(s, b1, sizeof b1), kd_shape_str(s2, b2, sizeof b2));
            }
            s.c = n->cout;
            break;
        }
        default: break;
        }
        n->shape = s;
    }
    return KD_OK;
}

/* Does node n's backward read the forward output of its input `which`? */
static int bwd_needs_input(const kd_node *n, int which) {
    switch (n->op) {
    case KD_N_CONV:
    case KD_N_CONVT:
    case KD_N_GN:
    case KD_N_GN_LEAKY:
    case KD_N_BN:
    case KD_N_MAXPOOL: return which == 0;
    case KD_N_LEAKY: return which == 0 && !n->inplace; /* in place: the sign of its output */
    case KD_N_CHSCALE:
    case KD_N_SPGATE:
    case KD_N_CONV_CAT: return 1;
    default: return 0;
    }
}

/* Does node n's backward read its own forward output? */
static int bwd_needs_output(const kd_node *n) {
    return n->op == KD_N_SIGMOID || (n->op == KD_N_LEAKY && n->inplace);
}

/* Outputs rebuilt in backward from what backward keeps anyway (a norm's input and
 * statistics) or from a smaller tensor (the upsampling's input, 1/8 of the voxels): one
 * elementwise or resampling pass instead of a full-resolution tensor held from the forward
 * to the backward. BatchNorm is not among them: its forward updates the running stats. */
static int recomputable(const kd_node *n) {
    return n->op == KD_N_GN || n->op == KD_N_GN_LEAKY || n->op == KD_N_UP_TRI ||
           n->op == KD_N_UP_NEAR;
}

/* Per run: consumer counts, in-place LeakyReLUs, which outputs backward keeps, and which
 * it recomputes instead. */
static void lifetimes(kd_graph *g, int training) {
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        n->uses_left = n->keep = n->recompute = n->inplace = 0;
    }
    for (int j = 0; j < g->nnodes; j++)
        for (int w = 0; w < 2; w++)
            if (g->nodes[j].in[w] >= 0) g->nodes[g->nodes[j].in[w]].uses_left++;
    /* LeakyReLU (slope >= 0: y > 0 exactly where x > 0) over an input that nothing else
     * reads and whose own backward does not read it (the graph input is borrowed) */
    for (int j = 0; j < g->nnodes; j++) {
        kd_node *n = &g->nodes[j];
        int k = n->in[0];
        if (n->op != KD_N_LEAKY || !(n->slope >= 0.0f) || k < 0) continue;
        const kd_node *x = &g->nodes[k];
        if (x->op != KD_N_INPUT && x->uses_left == 1 && k != g->output && !bwd_needs_output(x))
            n->inplace = 1;
    }
    if (training)
        for (int j = 0; j < g->nnodes; j++) {
            kd_node *n = &g->nodes[j];
            for (int w = 0; w < 2; w++)
                if (n->in[w] >= 0 && bwd_needs_input(n, w)) g->nodes[n->in[w]].keep = 1;
            if (bwd_needs_output(n)) n->keep = 1;
        }
    g->nodes[g->output].keep = 1;
    if (!training) return;
    for (int k = 0; k < g->nnodes; k++) {
        kd_node *x = &g->nodes[k];
        if (!x->keep || k == g->output || !recomputable(x)) continue;
        kd_node *src = &g->nodes[x->in[0]];
        if (src->recompute) continue; /* one level: the source must be kept */
        x->recompute = 1;
        x->keep = 0;
        src->keep = 1;
    }
}

static int has_stats(const kd_node *n) {
    return n->op == KD_N_GN || n->op == KD_N_GN_LEAKY || n->op == KD_N_BN;
}

static size_t stats_numel(const kd_node *n) {
    return n->op == KD_N_BN ? (size_t)n->shape.c : (size_t)n->shape.n * (size_t)n->groups;
}

/* The concatenation a CONV_CAT node convolves (its forward's temporary). */
static kd_shape cat_shape(const kd_graph *g, const kd_node *n) {
    kd_shape s = g->nodes[n->in[0]].shape;
    s.c += g->nodes[n->in[1]].shape.c;
    return s;
}

/* ---- forward ----------------------------------------------------------------- */

static void drop_output(kd_graph *g, int k) {
    kd_node *n = &g->nodes[k];
    if (n->op != KD_N_INPUT) kd_tensor_free(n->out);
    n->out = NULL;
}

/* n has read its inputs: drop those no later forward or backward reads. */
static void release_inputs(kd_graph *g, const kd_node *n) {
    for (int w = 0; w < 2; w++) {
        int k = n->in[w];
        if (k >= 0 && --g->nodes[k].uses_left == 0 && !g->nodes[k].keep) drop_output(g, k);
    }
}

static kd_status run_node(kd_graph *g, kd_node *n, int training) {
    kd_tensor *x = n->in[0] >= 0 ? g->nodes[n->in[0]].out : NULL;
    kd_tensor *x2 = n->in[1] >= 0 ? g->nodes[n->in[1]].out : NULL;
    kd_tensor *w = n->w >= 0 ? g->pview[n->w] : NULL, *b = n->b >= 0 ? g->pview[n->b] : NULL;
    kd_status s;
    if (n->inplace) { /* take over the input's buffer */
        n->out = x;
        g->nodes[n->in[0]].out = NULL;
        return kd_leaky_forward(n->out, n->slope, n->out);
    }
    if (n->op == KD_N_CONV_CAT) {
        /* the concatenation first: inputs nothing else reads go before y is allocated,
         * so inference holds no more than a concat node followed by a conv did */
        kd_tensor *cat = NULL;
        s = kd_tensor_create(g->dev, cat_shape(g, n), &cat);
        if (!s) s = kd_concat_forward(x, x2, cat);
        release_inputs(g, n);
        if (!s) s = kd_tensor_create(g->dev, n->shape, &n->out);
        if (!s) s = kd_conv3d_forward(&n->conv, cat, w, b, n->out);
        kd_tensor_free(cat);
        return s;
    }
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
    case KD_N_DETACH: return kd_tensor_copy(n->out, x);
    case KD_N_CONV_CAT:
    case KD_N_INPUT: break;
    }
    return kd_fail(KD_ERR_INTERNAL, "graph: unknown node op %d", (int)n->op);
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
        if (n->op != KD_N_CONV_CAT) release_inputs(g, n); /* CONV_CAT: released inside */
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

/* n's gradient, now dx of input k computed in place: hand it over (k had none yet) or
 * add it into k's gradient. */
static kd_status pass_grad(kd_graph *g, kd_node *n, int k) {
    kd_node *t = &g->nodes[k];
    if (t->grad) return kd_add(t->grad, n->grad, t->grad);
    t->grad = n->grad;
    n->grad = NULL;
    return KD_OK;
}

static int wants_grad(const kd_graph *g, int k) {
    return k >= 0 && g->nodes[k].op != KD_N_INPUT && g->nodes[k].op != KD_N_DETACH;
}

static kd_status new_like(kd_graph *g, int k, kd_tensor **t) {
    return kd_tensor_create(g->dev, g->nodes[k].shape, t);
}

/* Rebuild a recomputed output (see recomputable) into *t. */
static kd_status recompute(kd_graph *g, int k, kd_tensor **t) {
    kd_node *n = &g->nodes[k];
    kd_tensor *x = g->nodes[n->in[0]].out;
    if (!x || (has_stats(n) && (!n->mean || !n->rstd)))
        return kd_fail(KD_ERR_INTERNAL, "graph: node %d cannot be recomputed: its input or "
                       "statistics were not kept", k);
    kd_status s = kd_tensor_create(g->dev, n->shape, t);
    if (s) return s;
    switch (n->op) {
    case KD_N_GN:
    case KD_N_GN_LEAKY:
        s = kd_groupnorm_apply(x, g->pview[n->w], g->pview[n->b], n->mean, n->rstd, n->groups,
                               n->op == KD_N_GN_LEAKY, n->slope, *t);
        break;
    case KD_N_UP_TRI: s = kd_upsample_trilinear_forward(x, *t); break;
    case KD_N_UP_NEAR: s = kd_upsample_nearest_forward(x, *t); break;
    default: s = kd_fail(KD_ERR_INTERNAL, "graph: node %d (op %d) is not recomputable", k,
                         (int)n->op);
    }
    if (s) {
        kd_tensor_free(*t);
        *t = NULL;
    }
    return s;
}

static void drop_recomputed(kd_graph *g, int rec[2]) {
    for (int w = 0; w < 2; w++)
        if (rec[w] >= 0) {
            drop_output(g, rec[w]);
            rec[w] = -1;
        }
}

/* ADD: dy goes to each input unchanged: first added into the inputs' existing gradients,
 * then copied for an input without one, the last such taker getting dy itself. */
static kd_status add_backward(kd_graph *g, kd_node *n) {
    kd_status s = KD_OK;
    int added[2] = {0, 0};
    for (int w = 0; w < 2 && !s; w++) {
        int k = n->in[w];
        if (!wants_grad(g, k) || !g->nodes[k].grad) continue;
        s = kd_add(g->nodes[k].grad, n->grad, g->nodes[k].grad);
        added[w] = 1;
    }
    for (int w = 0; w < 2 && !s; w++) {
        int k = n->in[w];
        if (added[w] || !wants_grad(g, k)) continue;
        kd_node *t = &g->nodes[k];
        if (t->grad) { /* x + x: the copy made for in[0] */
            s = kd_add(t->grad, n->grad, t->grad);
        } else if (w == 0 && wants_grad(g, n->in[1]) && !added[1]) {
            if (!(s = new_like(g, k, &t->grad))) s = kd_tensor_copy(t->grad, n->grad);
        } else {
            t->grad = n->grad;
            n->grad = NULL;
        }
    }
    return s;
}

/* CONV_CAT: the two row blocks of the 1x1 weight, (Ca, Cout) then (Cb, Cout), as views. */
static kd_status cat_views(kd_graph *g, kd_node *n, kd_tensor *w, kd_tensor **wa,
                           kd_tensor **wb) {
    size_t na = (size_t)g->nodes[n->in[0]].shape.c * n->cout,
           nb = (size_t)g->nodes[n->in[1]].shape.c * n->cout;
    kd_status s = kd_tensor_view(w, 0, kd_shape5(1, (int)na, 1, 1, 1), wa);
    if (!s) s = kd_tensor_view(w, na, kd_shape5(1, (int)nb, 1, 1, 1), wb);
    return s;
}

static kd_status conv_cat_backward(kd_graph *g, kd_node *n, int rec[2]) {
    int a = n->in[0], b2 = n->in[1];
    kd_tensor *dy = n->grad, *wa = NULL, *wb = NULL, *dwa = NULL, *dwb = NULL, *d = NULL;
    kd_tensor *db = n->b >= 0 ? g->gview[n->b] : NULL;
    kd_status s = cat_views(g, n, g->pview[n->w], &wa, &wb);
    if (!s) s = cat_views(g, n, g->gview[n->w], &dwa, &dwb);
    if (!s) s = kd_conv3d_backward_weight(&n->conv, g->nodes[a].out, dy, dwa, db);
    if (!s) s = kd_conv3d_backward_weight(&n->conv, g->nodes[b2].out, dy, dwb, NULL);
    drop_recomputed(g, rec);
    for (int w = 0; w < 2 && !s; w++) { /* one input gradient at a time */
        int k = n->in[w];
        if (!wants_grad(g, k)) continue;
        if (!(s = new_like(g, k, &d))) s = kd_conv3d_backward_input(&n->conv, dy, w ? wb : wa, d);
        if (!s) s = give_grad(g, k, d);
        else kd_tensor_free(d);
        d = NULL;
    }
    kd_tensor_free(wa);
    kd_tensor_free(wb);
    kd_tensor_free(dwa);
    kd_tensor_free(dwb);
    return s;
}

static kd_status back_node(kd_graph *g, kd_node *n) {
    int a = n->in[0], b2 = n->in[1];
    int rec[2] = {-1, -1};
    kd_status s = KD_OK;
    /* rebuild the recomputed inputs this backward reads; dropped again once used */
    for (int w = 0; w < 2 && !s; w++) {
        int k = n->in[w];
        if (k < 0 || !bwd_needs_input(n, w) || !g->nodes[k].recompute || g->nodes[k].out)
            continue;
        if (!(s = recompute(g, k, &g->nodes[k].out))) rec[w] = k;
    }
    if (s) return s;
    kd_tensor *dy = n->grad, *x = a >= 0 ? g->nodes[a].out : NULL;
    kd_tensor *x2 = b2 >= 0 ? g->nodes[b2].out : NULL;
    kd_tensor *w = n->w >= 0 ? g->pview[n->w] : NULL;
    kd_tensor *dw = n->w >= 0 ? g->gview[n->w] : NULL, *db = n->b >= 0 ? g->gview[n->b] : NULL;
    kd_tensor *da = NULL, *db2 = NULL;
    int ga = wants_grad(g, a), gb = wants_grad(g, b2);
    switch (n->op) {
    /* same-shape backwards computed in place over dy, then handed to the input */
    case KD_N_GN:
        s = kd_groupnorm_backward(dy, x, w, n->mean, n->rstd, n->groups, dy, dw, db);
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_GN_LEAKY:
        s = kd_groupnorm_leaky_backward(dy, x, w, g->pview[n->b], n->mean, n->rstd, n->groups,
                                        n->slope, dy, dw, db);
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_BN:
        s = kd_batchnorm_backward(dy, x, w, n->mean, n->rstd, dy, dw, db);
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_LEAKY:
        if (ga) s = kd_leaky_backward(dy, n->inplace ? n->out : x, n->slope, dy);
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_SIGMOID:
        if (ga) s = kd_sigmoid_backward(dy, n->out, dy);
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_ADD: s = add_backward(g, n); goto done;
    case KD_N_CONV_CAT: s = conv_cat_backward(g, n, rec); goto done;
    /* weight gradients first: the recomputed input is dropped before dx is allocated */
    case KD_N_CONV:
        s = kd_conv3d_backward_weight(&n->conv, x, dy, dw, db);
        drop_recomputed(g, rec);
        if (!s && ga && !(s = new_like(g, a, &da)))
            s = kd_conv3d_backward_input(&n->conv, dy, w, da);
        break;
    case KD_N_CONVT:
        s = kd_convT3d_backward_weight(x, dy, dw, db);
        drop_recomputed(g, rec);
        if (!s && ga && !(s = new_like(g, a, &da))) s = kd_convT3d_backward_input(dy, w, da);
        break;
    default:
        if (ga && (s = new_like(g, a, &da))) goto done;
        if (gb && (s = new_like(g, b2, &db2))) goto done;
        switch (n->op) {
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
        case KD_N_SLICE:
            if (ga && !(s = kd_tensor_fill(da, 0.0f)))
                s = kd_slice_channels_backward(dy, n->c0, da);
            break;
        default: s = kd_fail(KD_ERR_INTERNAL, "graph: no backward for op %d", (int)n->op);
        }
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
    drop_recomputed(g, rec);
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

/* The plan replays forward and backward allocation by allocation, as the two functions
 * above make them, and keeps the peak of the bytes live (rounded as the buffer pool
 * rounds). Live bytes per node: its output, its statistics, its gradient; plus the
 * temporaries of the node being run (a forward's concatenation, recomputed inputs, the
 * conv ops' scratch, an input gradient on its way into an existing one). */

enum { P_OUT, P_STATS, P_GRAD, P_KINDS };
#define P_MAXTMP 8

typedef struct plan_tmp {
    int node;
    const char *what;
    size_t bytes;
} plan_tmp;

typedef struct plan {
    kd_graph *g;
    size_t cur, best;
    size_t *live[P_KINDS];
    plan_tmp tmp[P_MAXTMP];
    int ntmp;
    const char *phase;
    int at;        /* node being run */
    size_t caller; /* the caller's dL/d(output) during backward */
    /* at the peak (explain only) */
    int snap;
    size_t *pk[P_KINDS];
    plan_tmp pk_tmp[P_MAXTMP];
    int pk_ntmp, pk_at;
    size_t pk_caller;
    const char *pk_phase;
} plan;

static size_t round_bytes(size_t numel) { return (numel * sizeof(float) + 255) & ~(size_t)255; }

static size_t node_bytes(const kd_graph *g, int k) {
    return round_bytes(kd_shape_numel(g->nodes[k].shape));
}

static void p_peak(plan *p) {
    if (p->cur <= p->best) return;
    p->best = p->cur;
    if (!p->snap) return;
    for (int k = 0; k < P_KINDS; k++)
        memcpy(p->pk[k], p->live[k], (size_t)p->g->nnodes * sizeof(size_t));
    memcpy(p->pk_tmp, p->tmp, sizeof p->tmp);
    p->pk_ntmp = p->ntmp;
    p->pk_at = p->at;
    p->pk_phase = p->phase;
    p->pk_caller = p->caller;
}

static void p_hold(plan *p, int kind, int node, size_t bytes) {
    p->live[kind][node] += bytes;
    p->cur += bytes;
    p_peak(p);
}

static void p_drop(plan *p, int kind, int node) {
    p->cur -= p->live[kind][node];
    p->live[kind][node] = 0;
}

/* Move node `from`'s gradient bytes to node `to` (a gradient handed over in place). */
static void p_move_grad(plan *p, int from, int to) {
    p->live[P_GRAD][to] = p->live[P_GRAD][from];
    p->live[P_GRAD][from] = 0;
}

static void p_tmp(plan *p, int node, const char *what, size_t bytes) {
    if (!bytes) return;
    if (p->ntmp < P_MAXTMP) p->tmp[p->ntmp++] = (plan_tmp){node, what, bytes};
    p->cur += bytes;
    p_peak(p);
}

/* Release the temporaries pushed after the first `keep`. */
static void p_tmp_pop(plan *p, int keep) {
    while (p->ntmp > keep) p->cur -= p->tmp[--p->ntmp].bytes;
}

static size_t conv_scratch(const kd_graph *g, const kd_node *n, kd_shape x, int pass) {
    if (n->op == KD_N_CONVT) return kd_convT3d_scratch_bytes(x, n->shape, n->b >= 0, pass);
    (void)g;
    return kd_conv3d_scratch_bytes(&n->conv, x, n->shape, n->b >= 0, pass);
}

/* An input gradient made by node n's backward for input k (a new tensor): k keeps it,
 * or it is added into k's gradient and released. */
static void p_new_grad(plan *p, int k, const char *what) {
    size_t b = node_bytes(p->g, k);
    if (p->live[P_GRAD][k]) {
        p_tmp(p, k, what, b);
        p_tmp_pop(p, p->ntmp - 1);
    } else {
        p_hold(p, P_GRAD, k, b);
    }
}

static void plan_release_inputs(plan *p, const kd_node *n) {
    for (int w = 0; w < 2; w++) {
        int k = n->in[w];
        if (k >= 0 && --p->g->nodes[k].uses_left == 0 && !p->g->nodes[k].keep)
            p_drop(p, P_OUT, k);
    }
}

static void plan_forward(plan *p, int training) {
    kd_graph *g = p->g;
    p->phase = "forward";
    for (int i = 0; i < g->nnodes; i++) {
        const kd_node *n = &g->nodes[i];
        p->at = i;
        if (n->op == KD_N_INPUT) {
            /* borrowed */
        } else if (n->inplace) {
            p->live[P_OUT][i] = p->live[P_OUT][n->in[0]];
            p->live[P_OUT][n->in[0]] = 0;
        } else if (n->op == KD_N_CONV_CAT) { /* as run_node */
            kd_shape cs = cat_shape(g, n);
            p_tmp(p, i, "concatenation", round_bytes(kd_shape_numel(cs)));
            plan_release_inputs(p, n);
            p_hold(p, P_OUT, i, node_bytes(g, i));
            p_tmp(p, i, "conv scratch", conv_scratch(g, n, cs, 0));
            p_tmp_pop(p, 0);
            continue;
        } else {
            p_hold(p, P_OUT, i, node_bytes(g, i));
            if (has_stats(n)) p_hold(p, P_STATS, i, 2 * round_bytes(stats_numel(n)));
            if (n->op == KD_N_CONV || n->op == KD_N_CONVT)
                p_tmp(p, i, "conv scratch", conv_scratch(g, n, g->nodes[n->in[0]].shape, 0));
            p_tmp_pop(p, 0);
            if (!training && has_stats(n)) p_drop(p, P_STATS, i);
        }
        plan_release_inputs(p, n);
    }
}

static void plan_backward_node(plan *p, int i) {
    const kd_graph *g = p->g;
    const kd_node *n = &g->nodes[i];
    int a = n->in[0], b2 = n->in[1];
    int ga = wants_grad(g, a), gb = wants_grad(g, b2);
    int nrec = 0;
    for (int w = 0; w < 2; w++) {
        int k = n->in[w];
        if (k < 0 || !bwd_needs_input(n, w) || !g->nodes[k].recompute || p->live[P_OUT][k] ||
            (w == 1 && k == a && nrec))
            continue;
        p_tmp(p, k, "recomputed output", node_bytes(g, k));
        nrec++;
    }
    switch (n->op) {
    case KD_N_GN:
    case KD_N_GN_LEAKY:
    case KD_N_BN:
    case KD_N_LEAKY:
    case KD_N_SIGMOID:
        if (ga) {
            if (!p->live[P_GRAD][a]) p_move_grad(p, i, a);
        }
        break;
    case KD_N_ADD: { /* as add_backward */
        int added[2] = {0, 0};
        for (int w = 0; w < 2; w++)
            added[w] = wants_grad(g, n->in[w]) && p->live[P_GRAD][n->in[w]];
        for (int w = 0; w < 2; w++) {
            int k = n->in[w];
            if (added[w] || !wants_grad(g, k) || p->live[P_GRAD][k]) continue;
            if (w == 0 && gb && !added[1]) p_hold(p, P_GRAD, k, node_bytes(g, k));
            else p_move_grad(p, i, k);
        }
        break;
    }
    case KD_N_CONV:
    case KD_N_CONVT:
        p_tmp(p, i, "conv weight-gradient scratch", conv_scratch(g, n, g->nodes[a].shape, 2));
        p_tmp_pop(p, 0); /* and the recomputed input */
        if (ga) {
            size_t b = node_bytes(g, a);
            p_tmp(p, a, "input gradient", b);
            p_tmp(p, i, "conv input-gradient scratch", conv_scratch(g, n, g->nodes[a].shape, 1));
            p_tmp_pop(p, 0);
            if (!p->live[P_GRAD][a]) p_hold(p, P_GRAD, a, b);
        }
        break;
    case KD_N_CONV_CAT:
        for (int w = 0; w < 2; w++) {
            p_tmp(p, i, "conv weight-gradient scratch",
                  kd_conv3d_scratch_bytes(&n->conv, g->nodes[n->in[w]].shape, n->shape,
                                          w == 0 && n->b >= 0, 2));
            p_tmp_pop(p, p->ntmp - 1);
        }
        p_tmp_pop(p, 0);
        for (int w = 0; w < 2; w++) {
            int k = n->in[w];
            if (!wants_grad(g, k)) continue;
            size_t b = node_bytes(g, k);
            p_tmp(p, k, "input gradient", b);
            p_tmp(p, i, "conv input-gradient scratch",
                  kd_conv3d_scratch_bytes(&n->conv, g->nodes[k].shape, n->shape, 0, 1));
            p_tmp_pop(p, 0);
            if (!p->live[P_GRAD][k]) p_hold(p, P_GRAD, k, b);
        }
        break;
    default: {
        /* new input gradients (CHSCALE, SPGATE, CONCAT: both inputs, wanted or not) */
        int both = n->op == KD_N_CHSCALE || n->op == KD_N_SPGATE || n->op == KD_N_CONCAT;
        int ta = ga || (both && a >= 0), tb = gb || (both && b2 >= 0);
        if (ta) p_tmp(p, a, "input gradient", node_bytes(g, a));
        if (tb) p_tmp(p, b2, "input gradient", node_bytes(g, b2));
        p_tmp_pop(p, nrec); /* the recomputed inputs stay until the gradients are given */
        if (ga) p_new_grad(p, a, "input gradient");
        if (gb) p_new_grad(p, b2, "input gradient");
    }
    }
    p_tmp_pop(p, 0);
}

static void plan_backward(plan *p) {
    const kd_graph *g = p->g;
    p->phase = "backward";
    p->at = g->output;
    /* the caller's dL/d(output), live across the backward, and the graph's copy of it */
    p->caller = node_bytes(g, g->output);
    p->cur += p->caller;
    p_hold(p, P_GRAD, g->output, node_bytes(g, g->output));
    for (int i = g->nnodes - 1; i >= 0; i--) {
        p->at = i;
        if (p->live[P_GRAD][i] && g->nodes[i].op != KD_N_INPUT) plan_backward_node(p, i);
        p_drop(p, P_GRAD, i);
        p_drop(p, P_STATS, i);
        if (i != g->output) p_drop(p, P_OUT, i); /* the output stays with the caller */
    }
}

static const char *op_name(kd_node_op op) {
    static const char *names[] = {"input",   "conv",     "convT",   "groupnorm", "gn+leaky",
                                  "batchnorm", "leaky",  "sigmoid", "up_tri",    "up_near",
                                  "maxpool", "avgpool",  "gap",     "chscale",   "spgate",
                                  "concat",  "add",      "slice",   "conv_cat",  "detach"};
    return (size_t)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

static void plan_print(const plan *p, FILE *f) {
    const kd_graph *g = p->g;
    static const char *kinds[P_KINDS] = {"output", "statistics", "gradient"};
    double mib = 1.0 / (1024.0 * 1024.0);
    char b[96];
    fprintf(f, "planned peak %.1f MiB, during the %s of node %d (%s)\n", (double)p->best * mib,
            p->pk_phase, p->pk_at, op_name(g->nodes[p->pk_at].op));
    fprintf(f, "%5s %-10s %-33s %-28s %10s\n", "node", "op", "shape", "held", "MiB");
    size_t stats = 0;
    int nstats = 0;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < P_KINDS; k++) {
            if (!p->pk[k][i]) continue;
            if (k == P_STATS) { /* a few KiB each: one line for all */
                stats += p->pk[k][i];
                nstats++;
                continue;
            }
            fprintf(f, "%5d %-10s %-33s %-28s %10.1f\n", i, op_name(g->nodes[i].op),
                    kd_shape_str(g->nodes[i].shape, b, sizeof b), kinds[k],
                    (double)p->pk[k][i] * mib);
        }
    if (nstats)
        fprintf(f, "%5s %-10s %-33s %-28s %10.1f\n", "-", "norms", "", "statistics (mean, rstd)",
                (double)stats * mib);
    for (int t = 0; t < p->pk_ntmp; t++)
        fprintf(f, "%5d %-10s %-33s %-28s %10.1f\n", p->pk_tmp[t].node,
                op_name(g->nodes[p->pk_tmp[t].node].op),
                kd_shape_str(g->nodes[p->pk_tmp[t].node].shape, b, sizeof b), p->pk_tmp[t].what,
                (double)p->pk_tmp[t].bytes * mib);
    if (p->pk_caller)
        fprintf(f, "%5s %-10s %-33s %-28s %10.1f\n", "-", "caller",
                kd_shape_str(g->nodes[g->output].shape, b, sizeof b), "dL/d(output)",
                (double)p->pk_caller * mib);
}

kd_status kd_graph_plan_explain(kd_graph *g, kd_shape in, int training, size_t *peak,
                                FILE *explain) {
    kd_status s = infer_shapes(g, in);
    if (s) return s;
    lifetimes(g, training);
    plan p;
    memset(&p, 0, sizeof p);
    p.g = g;
    p.snap = explain != NULL;
    size_t nn = (size_t)g->nnodes;
    int ok = 1;
    for (int k = 0; k < P_KINDS; k++) {
        ok &= (p.live[k] = calloc(nn, sizeof(size_t))) != NULL;
        if (p.snap) ok &= (p.pk[k] = calloc(nn, sizeof(size_t))) != NULL;
    }
    if (ok) {
        plan_forward(&p, training);
        if (training) plan_backward(&p);
        *peak = p.best;
        if (explain && p.pk_phase) plan_print(&p, explain);
    }
    for (int k = 0; k < P_KINDS; k++) {
        free(p.live[k]);
        free(p.pk[k]);
    }
    return ok ? KD_OK : kd_fail(KD_ERR_OUT_OF_MEMORY, "memory plan");
}

kd_status kd_graph_plan(kd_graph *g, kd_shape in, int training, size_t *peak) {
    return kd_graph_plan_explain(g, in, training, peak, NULL);
}
