/* The activation memory plan: the executor (graph_exec.c) run dry on a copy of the
 * graph's nodes. Its tensors have no storage and no op is launched; every allocation,
 * release and op scratch comes here, and the plan is the peak of the bytes live, each
 * tensor rounded as the buffer pool rounds. What the plan counts is therefore what the
 * executor allocates, by construction: there is no second description of it to keep in
 * step. Not counted: the GEMM conv path's im2col buffers (the plan assumes the direct
 * path) and the norms' few KiB of partial sums, which the ops allocate unannounced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"
#include "runtime/tensor_dry.h"

/* One live allocation: a dry tensor, or (t NULL) an op's scratch of the moment. */
typedef struct rec_entry {
    const kd_tensor *t;
    int node;
    const char *what;
    size_t bytes;
} rec_entry;

/* Who holds a tensor at the peak: node i's output, gradient, mean or rstd. */
enum { H_OUT, H_GRAD, H_MEAN, H_RSTD, H_KINDS };

struct kd_plan_rec {
    kd_graph *g; /* the dry copy being run */
    size_t cur, best;
    rec_entry *live; /* in allocation order */
    int nlive, cap;
    const char *phase;
    int at;
    const kd_tensor *caller; /* the caller's dL/d(output) */
    /* with explain: the live allocations and the nodes' tensors at the peak */
    int explain;
    rec_entry *pk;
    int npk, cap_pk;
    const kd_tensor **pk_hold; /* H_KINDS per node */
    const char *pk_phase;
    int pk_at;
    int oom;
};

/* Bytes the buffer pool takes for a tensor (it rounds every buffer up to 256 bytes). */
static size_t pool_bytes(const kd_tensor *t) {
    return (kd_tensor_numel(t) * sizeof(float) + 255) & ~(size_t)255;
}

static void snapshot(kd_plan_rec *r) {
    if (r->nlive > r->cap_pk) {
        rec_entry *p = realloc(r->pk, (size_t)r->nlive * sizeof *p);
        if (!p) {
            r->oom = 1;
            return;
        }
        r->pk = p;
        r->cap_pk = r->nlive;
    }
    memcpy(r->pk, r->live, (size_t)r->nlive * sizeof *r->pk);
    r->npk = r->nlive;
    for (int i = 0; i < r->g->nnodes; i++) {
        const kd_node *n = &r->g->nodes[i];
        const kd_tensor **h = &r->pk_hold[(size_t)i * H_KINDS];
        h[H_OUT] = n->out;
        h[H_GRAD] = n->grad;
        h[H_MEAN] = n->mean;
        h[H_RSTD] = n->rstd;
    }
    r->pk_phase = r->phase;
    r->pk_at = r->at;
}

static kd_status push(kd_plan_rec *r, const kd_tensor *t, int node, const char *what,
                      size_t bytes) {
    if (r->nlive == r->cap) {
        int cap = r->cap ? 2 * r->cap : 256;
        rec_entry *p = realloc(r->live, (size_t)cap * sizeof *p);
        if (!p) return kd_fail(KD_ERR_OUT_OF_MEMORY, "memory plan");
        r->live = p;
        r->cap = cap;
    }
    r->live[r->nlive++] = (rec_entry){t, node, what, bytes};
    r->cur += bytes;
    if (r->cur > r->best) {
        r->best = r->cur;
        if (r->explain) snapshot(r);
    }
    return r->oom ? kd_fail(KD_ERR_OUT_OF_MEMORY, "memory plan report") : KD_OK;
}

/* Removes live entry k, keeping the allocation order. */
static void pop(kd_plan_rec *r, int k) {
    r->cur -= r->live[k].bytes;
    memmove(&r->live[k], &r->live[k + 1], (size_t)(r->nlive - k - 1) * sizeof *r->live);
    r->nlive--;
}

kd_status kd_plan_rec_alloc(kd_plan_rec *r, const kd_tensor *t, int node, const char *what) {
    return push(r, t, node, what, pool_bytes(t));
}

void kd_plan_rec_free(kd_plan_rec *r, const kd_tensor *t) {
    for (int k = r->nlive - 1; k >= 0; k--)
        if (r->live[k].t == t) {
            pop(r, k);
            return;
        }
}

kd_status kd_plan_rec_scratch(kd_plan_rec *r, int node, const char *what, size_t bytes) {
    if (!bytes) return KD_OK;
    kd_status s = push(r, NULL, node, what, bytes);
    if (!s) pop(r, r->nlive - 1);
    return s;
}

void kd_plan_rec_at(kd_plan_rec *r, const char *phase, int node) {
    r->phase = phase;
    r->at = node;
}

/* ---- the report ------------------------------------------------------------------ */

static const char *op_name(kd_node_op op) {
    static const char *names[] = {"input",   "conv",     "convT",   "groupnorm", "gn+leaky",
                                  "batchnorm", "leaky",  "sigmoid", "up_tri",    "up_near",
                                  "maxpool", "avgpool",  "gap",     "chscale",   "spgate",
                                  "concat",  "add",      "slice",   "conv_cat",  "detach",
                                  "gn+leaky+add"};
    return (size_t)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

/* The bytes of t among the allocations live at the peak; 0 when it is not one of them.
 * A recomputed output is reported among the temporaries, not as its node's output. */
static size_t peak_bytes(const kd_plan_rec *r, const kd_tensor *t, int *taken) {
    if (!t) return 0;
    for (int k = 0; k < r->npk; k++)
        if (r->pk[k].t == t && strcmp(r->pk[k].what, "recomputed output") != 0) {
            taken[k] = 1;
            return r->pk[k].bytes;
        }
    return 0;
}

static void row(FILE *f, const char *node, const char *op, const char *shape, const char *what,
                size_t bytes) {
    fprintf(f, "%5s %-10s %-33s %-28s %10.1f\n", node, op, shape, what,
            (double)bytes / (1024.0 * 1024.0));
}

/* What is live at the peak: each node's output, statistics (one line for all) and
 * gradient, then the temporaries in allocation order, then the caller's dL/d(output). */
static void report(const kd_plan_rec *r, FILE *f) {
    const kd_graph *g = r->g;
    int *taken = calloc((size_t)(r->npk ? r->npk : 1), sizeof *taken);
    if (!taken) return;
    char b[96], id[16];
    fprintf(f, "planned peak %.1f MiB, during the %s of node %d (%s)\n",
            (double)r->best / (1024.0 * 1024.0), r->pk_phase, r->pk_at,
            op_name(g->nodes[r->pk_at].op));
    fprintf(f, "%5s %-10s %-33s %-28s %10s\n", "node", "op", "shape", "held", "MiB");
    for (int k = 0; k < r->npk; k++)
        if (r->pk[k].t && r->pk[k].t == r->caller) taken[k] = 1; /* last */
    size_t stats = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const kd_tensor *const *h = &r->pk_hold[(size_t)i * H_KINDS];
        kd_shape_str(g->nodes[i].shape, b, sizeof b);
        snprintf(id, sizeof id, "%d", i);
        size_t out = peak_bytes(r, h[H_OUT], taken);
        if (out) row(f, id, op_name(g->nodes[i].op), b, "output", out);
        stats += peak_bytes(r, h[H_MEAN], taken) + peak_bytes(r, h[H_RSTD], taken);
        size_t grad = peak_bytes(r, h[H_GRAD], taken);
        if (grad) row(f, id, op_name(g->nodes[i].op), b, "gradient", grad);
    }
    if (stats) row(f, "-", "norms", "", "statistics (mean, rstd)", stats);
    for (int k = 0; k < r->npk; k++) {
        if (taken[k]) continue;
        const rec_entry *e = &r->pk[k];
        snprintf(id, sizeof id, "%d", e->node);
        row(f, id, op_name(g->nodes[e->node].op),
            kd_shape_str(g->nodes[e->node].shape, b, sizeof b), e->what, e->bytes);
    }
    for (int k = 0; k < r->npk; k++)
        if (r->pk[k].t && r->pk[k].t == r->caller)
            row(f, "-", "caller", kd_shape_str(g->nodes[g->output].shape, b, sizeof b),
                "dL/d(output)", r->pk[k].bytes);
    free(taken);
}

/* ---- the dry run ------------------------------------------------------------------ */

kd_status kd_graph_plan_explain(kd_graph *g, kd_shape in, int training, size_t *peak,
                                FILE *explain) {
    kd_plan_rec r;
    memset(&r, 0, sizeof r);
    kd_graph dry = *g; /* parameters shared, read by nothing: no op runs */
    dry.rec = &r;
    dry.nodes = malloc((size_t)(g->nnodes ? g->nnodes : 1) * sizeof *dry.nodes);
    r.g = &dry;
    r.explain = explain != NULL;
    if (r.explain)
        r.pk_hold = calloc((size_t)(g->nnodes ? g->nnodes : 1) * H_KINDS, sizeof *r.pk_hold);
    kd_tensor *x = NULL, *y = NULL, *dy = NULL;
    kd_status s = KD_OK;
    if (!dry.nodes || (r.explain && !r.pk_hold)) {
        s = kd_fail(KD_ERR_OUT_OF_MEMORY, "memory plan");
    } else {
        memcpy(dry.nodes, g->nodes, (size_t)g->nnodes * sizeof *dry.nodes);
        for (int i = 0; i < dry.nnodes; i++)
            dry.nodes[i].out = dry.nodes[i].grad = dry.nodes[i].mean = dry.nodes[i].rstd = NULL;
        s = kd_tensor_create_dry(g->dev, in, &x); /* the caller's input: not counted */
    }
    if (!s) s = kd_graph_forward(&dry, x, training, &y);
    if (!s && training) {
        /* the caller's dL/d(output), live across the backward */
        s = kd_tensor_create_dry(g->dev, dry.nodes[dry.output].shape, &dy);
        if (!s) s = kd_plan_rec_alloc(&r, dy, dry.output, "dL/d(output)");
        r.caller = dy;
        if (!s) s = kd_graph_backward(&dry, dy);
    }
    if (!s) {
        *peak = r.best;
        if (explain && r.pk_phase) report(&r, explain);
    }
    if (dry.nodes) kd_graph_release(&dry);
    kd_tensor_free(dy);
    kd_tensor_free(x);
    free(dry.nodes);
    free(r.live);
    free(r.pk);
    free(r.pk_hold);
    return s;
}

kd_status kd_graph_plan(kd_graph *g, kd_shape in, int training, size_t *peak) {
    return kd_graph_plan_explain(g, in, training, peak, NULL);
}
