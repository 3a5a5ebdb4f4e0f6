/* The static model graph, building: nodes in forward order, parameters and states
 * carved from one slab each. Running it: graph_exec.c; its memory plan: graph_plan.c. */
#include "graph.h"

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

int kd_g_gn_leaky_add(kd_graph *g, int in, int r, int groups, float slope, const char *name) {
    if (r < 0) return -1;
    int i = kd_g_gn_leaky(g, in, groups, slope, name);
    if (i >= 0) {
        g->nodes[i].op = KD_N_GN_LEAKY_ADD;
        g->nodes[i].in[1] = r;
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
