/* Between the graph's executor (graph_exec.c) and its memory plan (graph_plan.c): the
 * recorder of a dry run. In a dry run (g->rec set) the executor creates storage-less
 * tensors, launches nothing, and reports every allocation, release and op scratch here. */
#ifndef KD_GRAPH_INTERNAL_H
#define KD_GRAPH_INTERNAL_H

#include "graph.h"

typedef struct kd_plan_rec kd_plan_rec;

/* t (a dry tensor) was allocated for node `node` in the role `what` ("output",
 * "gradient", "recomputed output", ...): its bytes count until kd_plan_rec_free(t). */
kd_status kd_plan_rec_alloc(kd_plan_rec *r, const kd_tensor *t, int node, const char *what);
/* t is released (a tensor the recorder does not know, a view, is ignored). */
void kd_plan_rec_free(kd_plan_rec *r, const kd_tensor *t);
/* An op of node `node` takes `bytes` of scratch and gives them back before it returns. */
kd_status kd_plan_rec_scratch(kd_plan_rec *r, int node, const char *what, size_t bytes);
/* The executor is at node `node` of phase "forward" or "backward". */
void kd_plan_rec_at(kd_plan_rec *r, const char *phase, int node);

#endif
