// shard_pp.c — pipeline parallelism as a cut of the operator graph into stages.
//
// The model's layer stack (the iterations of its top-level repeats, dhx_node.layer) is cut
// into pp · v chunks of equal layer counts (`dhxc check` requires that they divide), or of the
// counts `parallel { stages: (...) }` gives (to move layers off a stage that also holds the
// embeddings or the output projection and the loss), chunk c
// going to stage c mod pp: one chunk per stage for the plain pipeline, v for an interleaved
// one (virtual stages). Folded into a W (DHelix), the stack is cut into 2·pp chunks and stage
// g holds chunks g and 2pp-1-g: a micro-batch goes down the stages and back up, so the first
// and the last chunk (embeddings; output projection and loss) share stage 0, and the hand-off
// from chunk pp-1 to chunk pp stays on stage pp-1. The ops before the first layer
// (embeddings) go with the first chunk and those after the last (final norm, output
// projection, loss) with the last. A stage keeps its
// own nodes only: parameters of other stages are not allocated, and each of its chunks receives
// the one activation that crosses into it (the residual stream) from the chunk before, which
// lives on a neighbour stage (at the turn of a W, on the same one), and sends the one that
// leaves it to the next.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "ice.h"
#include "elaborate.h"
#include "lower.h"

static void fail(const dhx_graph *g, const dhx_node *n, const char *msg) {
  dhx_error_at(&n->loc, dhx_source_for(n->loc.file), "pipeline parallelism: %s", msg);
  dhx_note_instantiation(g, n->site, n->from, &n->loc);
}

// ---- stage sizes by cost ---------------------------------------------------------------------
// An estimate of a node's forward and backward work, in multiply-adds: matrix products count
// their 2mnk (three times: the forward and the two backward products), attention its two
// products per head, anything else a few operations per element it touches.
static double node_cost(const dhx_graph *g, const dhx_node *n) {
  const dhx_tensor *out = &g->tensors[n->out];
  double elems = (double)dhx_tensor_elems(out);
  switch (n->op) {
    case DHX_N_LINEAR: {
      const dhx_tensor *w = &g->tensors[n->in[1]];
      return 3.0 * 2.0 * (double)dhx_tensor_rows(out) * (double)w->shape[0] * (double)w->shape[1];
    }
    case DHX_N_ATTENTION:  // B·H·S·S scores of hs each, out [B, S, H·hs]: 12·|out|·S
      return 3.0 * 4.0 * (double)dhx_tensor_elems(out) * (double)out->shape[1];
    case DHX_N_CROSS_ENTROPY: return 8.0 * (double)dhx_tensor_elems(&g->tensors[n->in[0]]);
    default: return 8.0 * elems;
  }
}

// The layer counts of `k` contiguous chunks (each at least one layer) that make the costliest
// chunk as cheap as possible, and among those the chunks as even as possible (least sum of
// squares): cost[l] is layer l's, with the ops before the layers counted in layer 0 and those
// after in the last. Dynamic programming over (chunks, layers), O(k·L²).
void dhx_balance_layers(const double *cost, int nlayers, int k, int *layers) {
  double *prefix = calloc((size_t)nlayers + 1, sizeof(double));
  double *best = malloc(sizeof(double) * (size_t)(k + 1) * (size_t)(nlayers + 1));
  double *squares = malloc(sizeof(double) * (size_t)(k + 1) * (size_t)(nlayers + 1));
  int *cut = malloc(sizeof(int) * (size_t)(k + 1) * (size_t)(nlayers + 1));
  if (!prefix || !best || !squares || !cut) abort();
  for (int l = 0; l < nlayers; l++) prefix[l + 1] = prefix[l] + cost[l];
#define AT(a, c, i) a[(size_t)(c) * (size_t)(nlayers + 1) + (size_t)(i)]
  for (int c = 0; c <= k; c++)
    for (int i = 0; i <= nlayers; i++) AT(best, c, i) = AT(squares, c, i) = 1e300;
  AT(best, 0, 0) = AT(squares, 0, 0) = 0;
  for (int c = 1; c <= k; c++)
    for (int i = c; i <= nlayers - (k - c); i++)  // the first i layers in c chunks
      for (int j = c - 1; j < i; j++) {           // the last chunk holds layers [j, i)
        double worst = AT(best, c - 1, j);
        double last = prefix[i] - prefix[j], sq = AT(squares, c - 1, j) + last * last;
        if (last > worst) worst = last;
        double was = AT(best, c, i), tol = 1e-9 * (worst > 0 ? worst : 1);
        if (worst < was - tol || (worst <= was + tol && sq < AT(squares, c, i))) {
          AT(best, c, i) = worst;
          AT(squares, c, i) = sq;
          AT(cut, c, i) = j;
        }
      }
  for (int c = k, i = nlayers; c >= 1; c--) {
    int j = AT(cut, c, i);
    layers[c - 1] = i - j;
    i = j;
  }
#undef AT
  free(prefix);
  free(best);
  free(squares);
  free(cut);
}

void dhx_layers_by_cost(const dhx_graph *g, int chunks, int *layers) {
  double *cost = calloc((size_t)g->nlayers, sizeof(double));
  if (!cost) abort();
  bool after = false;
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    if (n->layer >= 0) after = true;
    int l = n->layer >= 0 ? n->layer : after ? g->nlayers - 1 : 0;
    cost[l] += node_cost(g, n);
  }
  dhx_balance_layers(cost, g->nlayers, chunks, layers);
  free(cost);
}

// `stages: auto` says what it chose, in the syntax that would fix it.
static void report_balance(int chunks, const int *layers) {
  char text[1024];
  size_t n = 0;
  for (int c = 0; c < chunks && n < sizeof text - 16; c++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%s%d", c ? ", " : "", layers[c]);
  dhx_note_at(NULL, NULL, "stages: auto balances the pipeline's estimated work as stages: (%s)",
              text);
}

// The chunk of each layer: `layers[c]` layers for chunk c when given, else equal counts.
static int chunk_of_layer(const dhx_graph *g, int layer, int total, const int *layers) {
  if (!layers) return (int)((int64_t)layer * total / g->nlayers);
  int c = 0;
  for (int end = layers[0]; layer >= end && c < total - 1;) end += layers[++c];
  return c;
}

// The global chunk (0 .. pp·v-1) of every node.
static int *assign_chunks(const dhx_graph *g, int total, const int *layers) {
  int *chunk = malloc(sizeof(int) * (size_t)(g->nnodes + 1));
  if (!chunk) abort();
  bool after = false;
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    if (n->layer >= 0) {
      after = true;
      chunk[i] = chunk_of_layer(g, n->layer, total, layers);
    } else {
      chunk[i] = after ? total - 1 : 0;
    }
  }
  return chunk;
}

int dhx_chunk_stage(const dhx_graph *g, int c) {
  if (g->fold) return c < g->pp ? c : 2 * g->pp - 1 - c;
  return c % g->pp;
}

int dhx_chunk_local(const dhx_graph *g, int c) {
  if (g->fold) return c < g->pp ? 0 : 1;
  return c / g->pp;
}

int dhx_global_chunk(const dhx_graph *g, int stage, int i) {
  if (g->fold) return i == 0 ? stage : 2 * g->pp - 1 - stage;
  return i * g->pp + stage;
}

// An activation crosses from chunk a to chunk b when its producer is in a and a reader in b.
// The supported cut is a chain: each chunk receives at most one activation, from the chunk
// before it, and sends at most one, to the chunk after it.
static bool find_boundaries(dhx_graph *g, const int *chunk, int stage) {
  int *producer = malloc(sizeof(int) * (size_t)g->ntensors);
  if (!producer) abort();
  for (int t = 0; t < g->ntensors; t++) producer[t] = -1;
  for (int i = 0; i < g->nnodes; i++) producer[g->nodes[i].out] = i;
  bool ok = true;
  for (int i = 0; i < g->nnodes && ok; i++) {
    const dhx_node *n = &g->nodes[i];
    for (int j = 0; j < n->nin && ok; j++) {
      int t = n->in[j], p = producer[t];
      if (p < 0 || chunk[p] == chunk[i]) continue;
      if (chunk[i] != chunk[p] + 1) {
        fail(g, n, "this op reads an activation made two or more layer chunks earlier; a "
             "chunk passes one activation to the next chunk only");
        ok = false;
        continue;
      }
      int slots[2][2] = {{chunk[i], 0}, {chunk[p], 1}};  // (chunk, 0 = receives / 1 = sends)
      for (int k = 0; k < 2 && ok; k++) {
        if (dhx_chunk_stage(g, slots[k][0]) != stage) continue;
        int local = dhx_chunk_local(g, slots[k][0]);
        int *slot = slots[k][1] ? &g->chunk_out[local] : &g->chunk_in[local];
        if (*slot >= 0 && *slot != t) {
          fail(g, n, "more than one activation crosses this pipeline cut (only the residual "
               "stream may: move the cut or the extra input)");
          ok = false;
        }
        *slot = t;
      }
    }
  }
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

bool dhx_shard_pipeline(dhx_graph *g, int pp, int chunks, const int *layers, bool by_cost,
                        bool report, int stage, int micro) {
  g->pp = pp;
  g->pp_rank = stage;
  g->chunks = chunks;
  if (pp == 1) {  // one stage: still `micro` micro-batches at once when MICRO spans the step
    widen_io(g, micro);
    return true;
  }
  if (chunks > DHX_MAX_CHUNKS)
    DHX_ICE("%d layer chunks per stage (at most %d)", chunks, DHX_MAX_CHUNKS);
  if (g->fold && (chunks != 2 || layers || by_cost))
    DHX_ICE("a W-folded pipeline has two equal chunks per stage (asked %d)", chunks);
  int balanced[DHX_MAX_STAGE_CHUNKS];
  if (by_cost && pp * chunks <= DHX_MAX_STAGE_CHUNKS && g->nlayers >= pp * chunks) {
    dhx_layers_by_cost(g, pp * chunks, balanced);
    layers = balanced;
    if (report && stage == 0 && g->tp_rank == 0 && g->dp_rank == 0)
      report_balance(pp * chunks, balanced);
  }
  int *where = assign_chunks(g, pp * chunks, layers);
  bool ok = find_boundaries(g, where, stage);
  // Keep this stage's nodes (in order, so each chunk's are contiguous); a parameter that no
  // kept node reads belongs to another stage and is never placed.
  bool *used = calloc((size_t)g->ntensors + 1, 1);
  if (!used) abort();
  int kept = 0;
  for (int i = 0; i < g->nnodes; i++) {
    if (dhx_chunk_stage(g, where[i]) != stage) continue;
    for (int j = 0; j < g->nodes[i].nin; j++) used[g->nodes[i].in[j]] = true;
    g->nodes[kept] = g->nodes[i];
    g->nodes[kept++].chunk = dhx_chunk_local(g, where[i]);
  }
  g->nnodes = kept;
  for (int t = 0; t < g->ntensors; t++)
    if (g->tensors[t].kind == DHX_T_PARAM && !used[t]) g->tensors[t].kind = DHX_T_ACT;
  widen_io(g, micro);
  free(used);
  free(where);
  return ok;
}
