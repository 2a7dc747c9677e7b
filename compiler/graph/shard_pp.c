// shard_pp.c — pipeline parallelism as a cut of the operator graph into stages.
//
// The model's layer stack (the iterations of its top-level repeats, dhx_node.layer) is cut
// into pp stages of equal layer counts (`dhxc check` requires that they divide); the ops before
// the first layer (embeddings) go to the first stage and those after the last (final norm,
// output projection, loss) to the last. A stage keeps its own nodes only: parameters of other
// stages are not allocated, and the one activation that crosses into the stage (the residual
// stream) is received from the previous stage, the one that leaves it sent to the next.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../front/front.h"
#include "elaborate.h"
#include "lower.h"

static int stage_of(const dhx_graph *g, const dhx_node *n, int pp, bool after_layers) {
  if (n->layer < 0) return after_layers ? pp - 1 : 0;
  return (int)((int64_t)n->layer * pp / g->nlayers);
}

static void fail(const dhx_graph *g, const dhx_node *n, const char *msg) {
  dhx_error_at(&n->loc, dhx_source_for(n->loc.file), "pipeline parallelism: %s", msg);
  dhx_note_instantiation(g, n->site, n->from, &n->loc);
}

// The stage of every node; -1 for a graph without layers.
static int *assign_stages(const dhx_graph *g, int pp) {
  int *stage = malloc(sizeof(int) * (size_t)(g->nnodes + 1));
  if (!stage) abort();
  bool after = false;
  for (int i = 0; i < g->nnodes; i++) {
    if (g->nodes[i].layer >= 0) after = true;
    stage[i] = stage_of(g, &g->nodes[i], pp, after && g->nodes[i].layer < 0);
  }
  return stage;
}

// An activation crosses from stage a to stage b when its producer is on a and a reader on b.
// The supported cut is a chain: each stage receives at most one activation, from the stage
// before it, and sends at most one, to the stage after it.
static bool find_boundaries(dhx_graph *g, const int *stage, int pp, int me) {
  int *producer = malloc(sizeof(int) * (size_t)g->ntensors);
  if (!producer) abort();
  for (int t = 0; t < g->ntensors; t++) producer[t] = -1;
  for (int i = 0; i < g->nnodes; i++) producer[g->nodes[i].out] = i;
  bool ok = true;
  for (int i = 0; i < g->nnodes && ok; i++) {
    const dhx_node *n = &g->nodes[i];
    for (int j = 0; j < n->nin && ok; j++) {
      int t = n->in[j], p = producer[t];
      if (p < 0 || stage[p] == stage[i]) continue;
      if (stage[i] != stage[p] + 1) {
        fail(g, n, "this op reads an activation made two or more stages earlier; stages pass "
             "one activation to the next stage only");
        ok = false;
      } else if (stage[i] == me || stage[p] == me) {
        int *slot = stage[i] == me ? &g->stage_in : &g->stage_out;
        if (*slot >= 0 && *slot != t) {
          fail(g, n, "more than one activation crosses this stage boundary (only the residual "
               "stream may: move the cut or the extra input)");
          ok = false;
        }
        *slot = t;
      }
    }
  }
  (void)pp;
  free(producer);
  return ok;
}

// Inputs, targets and losses hold `micro` micro-batches, one after another.
static void widen_io(dhx_graph *g, int micro) {
  for (int t = 0; t < g->ntensors; t++) {
    dhx_tensor *x = &g->tensors[t];
    if (x->kind == DHX_T_TOKENS || x->kind == DHX_T_TARGETS || x->kind == DHX_T_LOSSES)
      x->shape[0] *= micro;
  }
}

bool dhx_shard_pipeline(dhx_graph *g, int pp, int stage, int micro) {
  g->pp = pp;
  g->pp_rank = stage;
  if (pp == 1) return true;
  int *where = assign_stages(g, pp);
  bool ok = find_boundaries(g, where, pp, stage);
  // Keep this stage's nodes; a parameter no kept node reads belongs to another stage.
  bool *used = calloc((size_t)g->ntensors + 1, 1);
  if (!used) abort();
  int kept = 0;
  for (int i = 0; i < g->nnodes; i++) {
    if (where[i] != stage) continue;
    for (int j = 0; j < g->nodes[i].nin; j++) used[g->nodes[i].in[j]] = true;
    g->nodes[kept++] = g->nodes[i];
  }
  g->nnodes = kept;
  for (int t = 0; t < g->ntensors; t++)
    if (g->tensors[t].kind == DHX_T_PARAM && !used[t]) g->tensors[t].kind = DHX_T_ACT;  // unused
  widen_io(g, micro);
  free(used);
  free(where);
  return ok;
}
