/* The graph's executor: shapes and lifetimes per run, forward, and backward with
 * recomputation. Every allocation goes through new_tensor/free_tensor and every op call
 * through OP or the conv helpers, so that the memory plan (graph_plan.c) is this same
 * code run dry: storage-less tensors, no op launched, each allocation recorded. */
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"
#include "runtime/tensor_dry.h"

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
    case KD_N_GN_LEAKY_ADD:
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
    return n->op == KD_N_GN || n->op == KD_N_GN_LEAKY || n->op == KD_N_GN_LEAKY_ADD ||
           n->op == KD_N_BN;
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

/* ---- allocations and op calls, real or dry ------------------------------------ */

/* A new tensor of shape s for node `node`; what: its role, for the plan's report. */
static kd_status new_tensor(kd_graph *g, int node, const char *what, kd_shape s, kd_tensor **t) {
    if (!g->rec) return kd_tensor_create(g->dev, s, t);
    kd_status st = kd_tensor_create_dry(g->dev, s, t);
    if (!st && (st = kd_plan_rec_alloc(g->rec, *t, node, what))) {
        kd_tensor_free(*t);
        *t = NULL;
    }
    return st;
}

static void free_tensor(kd_graph *g, kd_tensor *t) {
    if (t && g->rec) kd_plan_rec_free(g->rec, t);
    kd_tensor_free(t);
}

/* An op call; a dry run records allocations only, and skips it. */
#define OP(g, call) ((g)->rec ? KD_OK : (call))

/* The conv ops, whose scratch (padded or transposed weights, padded dy, weight-gradient
 * partials) a dry run records as the op's own scratch functions size it. pass: 0
 * forward, 1 input gradient, 2 weight gradient; x, y the activation shapes. */
static kd_status conv_scratch(kd_graph *g, int node, const kd_node *n, kd_shape x, kd_shape y,
                              int bias, int pass) {
    static const char *what[] = {"conv scratch", "conv input-gradient scratch",
                                 "conv weight-gradient scratch"};
    size_t b = n->op == KD_N_CONVT ? kd_convT3d_scratch_bytes(g->dev, x, y, bias, pass)
                                   : kd_conv3d_scratch_bytes(g->dev, &n->conv, x, y, bias, pass);
    return kd_plan_rec_scratch(g->rec, node, what[pass], b);
}

static kd_status conv_forward(kd_graph *g, int node, const kd_node *n, const kd_tensor *x,
                              const kd_tensor *w, const kd_tensor *b, kd_tensor *y) {
    if (g->rec)
        return conv_scratch(g, node, n, kd_tensor_shape(x), kd_tensor_shape(y), b != NULL, 0);
    return n->op == KD_N_CONVT ? kd_convT3d_forward(x, w, b, y)
                               : kd_conv3d_forward(&n->conv, x, w, b, y);
}

static kd_status conv_backward_input(kd_graph *g, int node, const kd_node *n,
                                     const kd_tensor *dy, const kd_tensor *w, kd_tensor *dx) {
    if (g->rec)
        return conv_scratch(g, node, n, kd_tensor_shape(dx), kd_tensor_shape(dy), 0, 1);
    return n->op == KD_N_CONVT ? kd_convT3d_backward_input(dy, w, dx)
                               : kd_conv3d_backward_input(&n->conv, dy, w, dx);
}

static kd_status conv_backward_weight(kd_graph *g, int node, const kd_node *n,
                                      const kd_tensor *x, const kd_tensor *dy, kd_tensor *dw,
                                      kd_tensor *db) {
    if (g->rec)
        return conv_scratch(g, node, n, kd_tensor_shape(x), kd_tensor_shape(dy), db != NULL, 2);
    return n->op == KD_N_CONVT ? kd_convT3d_backward_weight(x, dy, dw, db)
                               : kd_conv3d_backward_weight(&n->conv, x, dy, dw, db);
}

/* Which node runs now (the plan's report names it). */
static void at(kd_graph *g, const char *phase, int node) {
    if (g->rec) kd_plan_rec_at(g->rec, phase, node);
}

void kd_graph_release(kd_graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        kd_node *n = &g->nodes[i];
        if (n->op != KD_N_INPUT) free_tensor(g, n->out);
        free_tensor(g, n->grad);
        free_tensor(g, n->mean);
        free_tensor(g, n->rstd);
        n->out = n->grad = n->mean = n->rstd = NULL;
    }
}

/* ---- forward ----------------------------------------------------------------- */

static void drop_output(kd_graph *g, int k) {
    kd_node *n = &g->nodes[k];
    if (n->op != KD_N_INPUT) free_tensor(g, n->out);
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
    int i = (int)(n - g->nodes);
    kd_tensor *x = n->in[0] >= 0 ? g->nodes[n->in[0]].out : NULL;
    kd_tensor *x2 = n->in[1] >= 0 ? g->nodes[n->in[1]].out : NULL;
    kd_tensor *w = n->w >= 0 ? g->pview[n->w] : NULL, *b = n->b >= 0 ? g->pview[n->b] : NULL;
    kd_status s;
    if (n->inplace) { /* take over the input's buffer */
        n->out = x;
        g->nodes[n->in[0]].out = NULL;
        return OP(g, kd_leaky_forward(n->out, n->slope, n->out));
    }
    if (n->op == KD_N_CONV_CAT) {
        /* the concatenation first: inputs nothing else reads go before y is allocated,
         * so inference holds no more than a concat node followed by a conv did */
        kd_tensor *cat = NULL;
        s = new_tensor(g, i, "concatenation", cat_shape(g, n), &cat);
        if (!s) s = OP(g, kd_concat_forward(x, x2, cat));
        release_inputs(g, n);
        if (!s) s = new_tensor(g, i, "output", n->shape, &n->out);
        if (!s) s = conv_forward(g, i, n, cat, w, b, n->out);
        free_tensor(g, cat);
        return s;
    }
    if ((s = new_tensor(g, i, "output", n->shape, &n->out))) return s;
    if (has_stats(n)) {
        kd_shape ss = kd_shape5(1, (int)stats_numel(n), 1, 1, 1);
        if ((s = new_tensor(g, i, "statistics", ss, &n->mean)) ||
            (s = new_tensor(g, i, "statistics", ss, &n->rstd)))
            return s;
    }
    switch (n->op) {
    case KD_N_CONV:
    case KD_N_CONVT: return conv_forward(g, i, n, x, w, b, n->out);
    case KD_N_GN:
        return OP(g, kd_groupnorm_forward(x, w, b, n->groups, n->eps, n->out, n->mean, n->rstd));
    case KD_N_GN_LEAKY:
        return OP(g, kd_groupnorm_leaky_forward(x, w, b, n->groups, n->eps, n->slope, n->out,
                                                n->mean, n->rstd));
    case KD_N_GN_LEAKY_ADD:
        return OP(g, kd_groupnorm_leaky_add_forward(x, w, b, n->groups, n->eps, n->slope, x2,
                                                    n->out, n->mean, n->rstd));
    case KD_N_BN:
        return OP(g, kd_batchnorm_forward(x, w, b, g->sview[n->rm], g->sview[n->rv], training,
                                          n->momentum, n->eps, n->out, n->mean, n->rstd));
    case KD_N_LEAKY: return OP(g, kd_leaky_forward(x, n->slope, n->out));
    case KD_N_SIGMOID: return OP(g, kd_sigmoid_forward(x, n->out));
    case KD_N_UP_TRI: return OP(g, kd_upsample_trilinear_forward(x, n->out));
    case KD_N_UP_NEAR: return OP(g, kd_upsample_nearest_forward(x, n->out));
    case KD_N_MAXPOOL: return OP(g, kd_maxpool_forward(x, n->out));
    case KD_N_AVGPOOL: return OP(g, kd_avgpool_forward(x, n->out));
    case KD_N_GAP: return OP(g, kd_global_avgpool_forward(x, n->out));
    case KD_N_CHSCALE: return OP(g, kd_channel_scale_forward(x, x2, n->out));
    case KD_N_SPGATE: return OP(g, kd_spatial_gate_forward(x, x2, n->out));
    case KD_N_CONCAT: return OP(g, kd_concat_forward(x, x2, n->out));
    case KD_N_ADD: return OP(g, kd_add(x, x2, n->out));
    case KD_N_SLICE: return OP(g, kd_slice_channels_forward(x, n->c0, n->out));
    case KD_N_DETACH: return OP(g, kd_tensor_copy(n->out, x));
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
        at(g, "forward", i);
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
            free_tensor(g, n->mean);
            free_tensor(g, n->rstd);
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
    kd_status s = OP(g, kd_add(n->grad, tmp, n->grad));
    free_tensor(g, tmp);
    return s;
}

/* n's gradient, now dx of input k computed in place: hand it over (k had none yet) or
 * add it into k's gradient. */
static kd_status pass_grad(kd_graph *g, kd_node *n, int k) {
    kd_node *t = &g->nodes[k];
    if (t->grad) return OP(g, kd_add(t->grad, n->grad, t->grad));
    t->grad = n->grad;
    n->grad = NULL;
    return KD_OK;
}

static int wants_grad(const kd_graph *g, int k) {
    return k >= 0 && g->nodes[k].op != KD_N_INPUT && g->nodes[k].op != KD_N_DETACH;
}

kd_status kd_graph_conv_flops(kd_graph *g, kd_shape in, int training, double *flops) {
    kd_status s = infer_shapes(g, in);
    if (s) return s;
    double f = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const kd_node *n = &g->nodes[i];
        if (n->op != KD_N_CONV && n->op != KD_N_CONVT && n->op != KD_N_CONV_CAT) continue;
        kd_shape y = n->shape;
        double vox = (double)y.n * y.d * y.h * y.w;
        for (int w = 0; w < 2; w++) {
            int k = n->in[w];
            if (k < 0) continue;
            kd_shape x = g->nodes[k].shape;
            double mac; /* multiply-adds of this input's share of the forward */
            if (n->op == KD_N_CONVT) /* each input voxel feeds 2x2x2 outputs */
                mac = (double)x.n * x.d * x.h * x.w * 8.0 * x.c * y.c;
            else
                mac = vox * n->conv.k[0] * n->conv.k[1] * n->conv.k[2] *
                      (double)(x.c / (n->op == KD_N_CONV ? n->conv.groups : 1)) * y.c;
            /* forward; training: the weight gradient and, if wanted, the input gradient */
            f += 2.0 * mac * (training ? 2 + wants_grad(g, k) : 1);
            if (n->op != KD_N_CONV_CAT) break;
        }
    }
    *flops = f;
    return KD_OK;
}

/* A new gradient for node k's output, on its way into k's gradient. */
static kd_status new_like(kd_graph *g, int k, kd_tensor **t) {
    return new_tensor(g, k, "input gradient", g->nodes[k].shape, t);
}

/* Rebuild a recomputed output (see recomputable) into *t. */
static kd_status recompute(kd_graph *g, int k, kd_tensor **t) {
    kd_node *n = &g->nodes[k];
    kd_tensor *x = g->nodes[n->in[0]].out;
    if (!x || (has_stats(n) && (!n->mean || !n->rstd)))
        return kd_fail(KD_ERR_INTERNAL, "graph: node %d cannot be recomputed: its input or "
                       "statistics were not kept", k);
    kd_status s = new_tensor(g, k, "recomputed output", n->shape, t);
    if (s) return s;
    switch (n->op) {
    case KD_N_GN:
    case KD_N_GN_LEAKY:
        s = OP(g, kd_groupnorm_apply(x, g->pview[n->w], g->pview[n->b], n->mean, n->rstd,
                                     n->groups, n->op == KD_N_GN_LEAKY, n->slope, *t));
        break;
    case KD_N_UP_TRI: s = OP(g, kd_upsample_trilinear_forward(x, *t)); break;
    case KD_N_UP_NEAR: s = OP(g, kd_upsample_nearest_forward(x, *t)); break;
    default: s = kd_fail(KD_ERR_INTERNAL, "graph: node %d (op %d) is not recomputable", k,
                         (int)n->op);
    }
    if (s) {
        free_tensor(g, *t);
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
        s = OP(g, kd_add(g->nodes[k].grad, n->grad, g->nodes[k].grad));
        added[w] = 1;
    }
    for (int w = 0; w < 2 && !s; w++) {
        int k = n->in[w];
        if (added[w] || !wants_grad(g, k)) continue;
        kd_node *t = &g->nodes[k];
        if (t->grad) { /* x + x: the copy made for in[0] */
            s = OP(g, kd_add(t->grad, n->grad, t->grad));
        } else if (w == 0 && wants_grad(g, n->in[1]) && !added[1]) {
            if (!(s = new_like(g, k, &t->grad))) s = OP(g, kd_tensor_copy(t->grad, n->grad));
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
    int i = (int)(n - g->nodes), a = n->in[0], b2 = n->in[1];
    kd_tensor *dy = n->grad, *wa = NULL, *wb = NULL, *dwa = NULL, *dwb = NULL, *d = NULL;
    kd_tensor *db = n->b >= 0 ? g->gview[n->b] : NULL;
    kd_status s = cat_views(g, n, g->pview[n->w], &wa, &wb);
    if (!s) s = cat_views(g, n, g->gview[n->w], &dwa, &dwb);
    if (!s) s = conv_backward_weight(g, i, n, g->nodes[a].out, dy, dwa, db);
    if (!s) s = conv_backward_weight(g, i, n, g->nodes[b2].out, dy, dwb, NULL);
    drop_recomputed(g, rec);
    for (int w = 0; w < 2 && !s; w++) { /* one input gradient at a time */
        int k = n->in[w];
        if (!wants_grad(g, k)) continue;
        if (!(s = new_like(g, k, &d))) s = conv_backward_input(g, i, n, dy, w ? wb : wa, d);
        if (!s) s = give_grad(g, k, d);
        else free_tensor(g, d);
        d = NULL;
    }
    kd_tensor_free(wa);
    kd_tensor_free(wb);
    kd_tensor_free(dwa);
    kd_tensor_free(dwb);
    return s;
}

static kd_status back_node(kd_graph *g, kd_node *n) {
    int i = (int)(n - g->nodes), a = n->in[0], b2 = n->in[1];
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
        s = OP(g, kd_groupnorm_backward(dy, x, w, n->mean, n->rstd, n->groups, dy, dw, db));
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_GN_LEAKY:
        s = OP(g, kd_groupnorm_leaky_backward(dy, x, w, g->pview[n->b], n->mean, n->rstd,
                                              n->groups, n->slope, dy, dw, db));
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_GN_LEAKY_ADD:
        /* dx into a tensor of its own: dy itself goes on to the residual input, as the
         * separate add's backward would pass it (where it made a copy of dy instead) */
        if ((s = new_like(g, a, &da))) goto done;
        s = OP(g, kd_groupnorm_leaky_backward(dy, x, w, g->pview[n->b], n->mean, n->rstd,
                                              n->groups, n->slope, da, dw, db));
        if (!s && ga) {
            s = give_grad(g, a, da);
            da = NULL;
        }
        if (!s && gb) {
            s = give_grad(g, b2, n->grad);
            n->grad = NULL;
        }
        goto done;
    case KD_N_BN:
        s = OP(g, kd_batchnorm_backward(dy, x, w, n->mean, n->rstd, dy, dw, db));
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_LEAKY:
        if (ga) s = OP(g, kd_leaky_backward(dy, n->inplace ? n->out : x, n->slope, dy));
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_SIGMOID:
        if (ga) s = OP(g, kd_sigmoid_backward(dy, n->out, dy));
        if (!s && ga) s = pass_grad(g, n, a);
        goto done;
    case KD_N_ADD: s = add_backward(g, n); goto done;
    case KD_N_CONV_CAT: s = conv_cat_backward(g, n, rec); goto done;
    /* weight gradients first: the recomputed input is dropped before dx is allocated */
    case KD_N_CONV:
    case KD_N_CONVT:
        s = conv_backward_weight(g, i, n, x, dy, dw, db);
        drop_recomputed(g, rec);
        if (!s && ga && !(s = new_like(g, a, &da))) s = conv_backward_input(g, i, n, dy, w, da);
        break;
    default:
        if (ga && (s = new_like(g, a, &da))) goto done;
        if (gb && (s = new_like(g, b2, &db2))) goto done;
        switch (n->op) {
        case KD_N_UP_TRI: s = ga ? OP(g, kd_upsample_trilinear_backward(dy, da)) : KD_OK; break;
        case KD_N_UP_NEAR: s = ga ? OP(g, kd_upsample_nearest_backward(dy, da)) : KD_OK; break;
        case KD_N_MAXPOOL: s = ga ? OP(g, kd_maxpool_backward(dy, x, da)) : KD_OK; break;
        case KD_N_AVGPOOL: s = ga ? OP(g, kd_avgpool_backward(dy, da)) : KD_OK; break;
        case KD_N_GAP: s = ga ? OP(g, kd_global_avgpool_backward(dy, da)) : KD_OK; break;
        case KD_N_CHSCALE:
            if (!ga && (s = new_like(g, a, &da))) break;
            if (!gb && (s = new_like(g, b2, &db2))) break;
            s = OP(g, kd_channel_scale_backward(dy, x, x2, da, db2));
            break;
        case KD_N_SPGATE:
            if (!ga && (s = new_like(g, a, &da))) break;
            if (!gb && (s = new_like(g, b2, &db2))) break;
            s = OP(g, kd_spatial_gate_backward(dy, x, x2, da, db2));
            break;
        case KD_N_CONCAT:
            if (!ga && (s = new_like(g, a, &da))) break;
            if (!gb && (s = new_like(g, b2, &db2))) break;
            s = OP(g, kd_concat_backward(dy, da, db2));
            break;
        case KD_N_SLICE:
            if (ga && !(s = OP(g, kd_tensor_fill(da, 0.0f))))
                s = OP(g, kd_slice_channels_backward(dy, n->c0, da));
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
    free_tensor(g, da);
    free_tensor(g, db2);
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
    at(g, "backward", g->output);
    kd_status s = new_tensor(g, g->output, "gradient", on->shape, &on->grad);
    if (!s) s = OP(g, kd_tensor_copy(on->grad, dout));
    for (int i = g->nnodes - 1; i >= 0 && !s; i--) {
        kd_node *n = &g->nodes[i];
        at(g, "backward", i);
        if (n->grad && n->op != KD_N_INPUT) {
            s = back_node(g, n);
            if (s) {
                char b1[96];
                kd_fail_context(s, "backward of node %d (output %s)", i,
                                kd_shape_str(n->shape, b1, sizeof b1));
                break;
            }
        }
        free_tensor(g, n->grad);
        n->grad = NULL;
        free_tensor(g, n->mean);
        free_tensor(g, n->rstd);
        n->mean = n->rstd = NULL;
        /* n's output is no longer needed once its own backward ran */
        if (i != g->output) drop_output(g, i);
    }
    if (s) kd_graph_release(g);
    g->training_run = 0;
    return s;
}

