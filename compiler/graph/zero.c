// zero.c — sharded optimizer state over the data-parallel group (ZeRO stage 1).
//
// Every data-parallel rank keeps the whole parameters and accumulates the whole gradients, but
// updates only the parameters it owns and keeps AdamW moments for those alone. Ownership is by
// whole tensor: the parameters, in the memory planner's order (decay whole, decay split,
// no-decay split, no-decay whole), are cut into dp contiguous runs of about equal bytes. The
// planner lays the parameter and gradient windows out as dp equal chunks, chunk r holding
// rank r's tensors in that order, so that STEP is
//
//   reduce-scatter grads[all] → step.shard       (this rank's chunk of the summed gradients)
//   sums of squares of the shard → 2 scalars (whole, split) → all-reduce over dp (split: tp)
//   GRAD_NORM over the 2 scalars                  (the same norm on every rank)
//   AdamW on params[own,decay|no_decay] with the shard and this rank's moments
//   copy params[own] → step.shard, all-gather into params[all]
//
// Element e of the moment windows is element e of the chunk: the moments are laid out like
// the chunk (the same tensors in the same order with the same padding).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

#define SUMSQ_CHUNK 16384  // as optimizer.c: fixed, so the summation order is fixed

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

static int64_t state_bytes(const dhx_tensor *t) { return align_up(dhx_tensor_elems(t) * 4); }

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort();
  return p;
}

bool dhx_zero_sharded(const dhx_graph *g) { return g->zero >= 1 && g->dp > 1; }

int dhx_zero_order(const dhx_graph *g, int *order) {
  static const bool decay[4] = {true, true, false, false}, split[4] = {false, true, true, false};
  int n = 0;
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < g->ntensors; i++) {
      const dhx_tensor *p = &g->tensors[i];
      if (p->kind == DHX_T_PARAM && p->decay == decay[k] && (p->split_dim >= 0) == split[k])
        order[n++] = i;
    }
  return n;
}

static int scratch(dhx_graph *g, const char *name, int64_t elems) {
  return dhx_tensor_new(g, name, DHX_T_SCRATCH, DHX_F32, 1, &elems);
}

void dhx_zero_partition(dhx_graph *g) {
  int *order = xmalloc(sizeof(int) * (size_t)(g->ntensors + 1));
  int n = dhx_zero_order(g, order);
  int64_t total = 0;
  for (int k = 0; k < n; k++) total += state_bytes(&g->tensors[order[k]]);
  // Greedy by bytes: a tensor goes to the rank whose share [r·total/dp, (r+1)·total/dp) holds
  // its middle byte, so the runs are contiguous and each near total/dp.
  int64_t at = 0, *owned = xmalloc(sizeof(int64_t) * (size_t)g->dp);
  memset(owned, 0, sizeof(int64_t) * (size_t)g->dp);
  memset(&g->zc, 0, sizeof g->zc);
  for (int k = 0; k < n; k++) {
    dhx_tensor *p = &g->tensors[order[k]];
    int64_t size = state_bytes(p);
    int64_t r = total > 0 ? (2 * at + size) * g->dp / (2 * total) : 0;
    if (r >= g->dp) r = g->dp - 1;
    at += size;
    p->owner = (int)r;
    if (p->grad >= 0) g->tensors[p->grad].owner = (int)r;
    owned[r] += size;
    if (r == g->dp_rank) {
      g->zc.own_end += size;
      if (p->decay) g->zc.decay_end += size;
      if (p->decay && p->split_dim < 0) g->zc.whole_decay += size;
      if (p->decay || p->split_dim >= 0) g->zc.split_end += size;
    } else {  // its moments live on its owner
      p->opt_m = p->opt_v = -1;
    }
  }
  for (int r = 0; r < g->dp; r++)
    if (owned[r] > g->zc.chunk) g->zc.chunk = owned[r];
  if (g->zc.chunk == 0) g->zc.chunk = DHX_ALIGN;
  free(owned);
  free(order);
  scratch(g, "grad_norm.shard", 2);
}

static int find(const dhx_graph *g, dhx_tensor_kind kind, const char *name) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == kind && strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

// Partial sums of squares of `bytes` bytes of the shard from byte `from` into partials[at...].
static int64_t shard_sumsq(dhx_oplist *l, int partials, int64_t at, int shard, int64_t from,
                           int64_t bytes, const char *note) {
  int64_t count = bytes / 4;
  if (count == 0) return 0;
  int64_t chunks = (count + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
  dhx_operand sq[] = {dhx_buf(partials, at), dhx_buf(shard, from / 4), dhx_i64(count),
                      dhx_i64(SUMSQ_CHUNK)};
  dhx_emit_kernel(l, DHX_K_SUMSQ, chunks, note, 4, sq);
  return chunks;
}

// norm[which] += partials[from, from + rows) (COLSUM over one column).
static void add_rows(dhx_oplist *l, int norm, int which, int partials, int64_t from,
                     int64_t rows, const char *note) {
  if (rows == 0) return;
  dhx_operand a[] = {dhx_buf(norm, which), dhx_buf(partials, from), dhx_i64(rows), dhx_i64(1),
                     dhx_i64(1)};
  dhx_emit_kernel(l, DHX_K_COLSUM, 1, note, 5, a);
}

static void adamw(dhx_graph *g, dhx_oplist *l, const dhx_lower_opts *o, const char *group,
                  int shard, int64_t from, double wd) {
  char pn[64], mn[64], vn[64], note[DHX_NAME_MAX];
  snprintf(pn, sizeof pn, "params[own,%s]", group);
  snprintf(mn, sizeof mn, "adam_m[%s]", group);
  snprintf(vn, sizeof vn, "adam_v[%s]", group);
  int p = find(g, DHX_T_VIEW, pn);
  if (p < 0 || g->tensors[p].view_elems == 0) return;
  snprintf(note, sizeof note, "adamw %s (this rank's shard)", group);
  dhx_emit_adamw_op(l, o, p, dhx_buf(shard, from / 4), find(g, DHX_T_VIEW, mn),
                 find(g, DHX_T_VIEW, vn), g->tensors[p].view_elems, wd, note);
}

void dhx_lower_zero_step(dhx_graph *g, const dhx_lower_opts *o) {
  const dhx_zero_chunk *z = &g->zc;
  int grads = find(g, DHX_T_VIEW, "grads[all]"), params = find(g, DHX_T_VIEW, "params[all]");
  int own = find(g, DHX_T_VIEW, "params[own]");
  // One chunk of STEP's own memory (an activation of STEP: it shares bytes with the other
  // programs' activations, never live at the same time) holds the gradient shard, then the
  // updated parameters for the all-gather, which needs an input apart from its output.
  int64_t chunk_elems = z->chunk / 4;
  int shard = dhx_tensor_new(g, "step.shard", DHX_T_ACT, DHX_F32, 1, &chunk_elems);
  g->tensors[shard].program = DHX_PROG_STEP;
  int gshard = shard, pshard = shard;
  int norm = find(g, DHX_T_SCRATCH, "grad_norm.shard");
  int partials = find(g, DHX_T_SCRATCH, "grad_norm.partials");
  int64_t count = (int64_t)g->dp * z->chunk / 4;
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];

  // This rank's chunk of the summed gradients, on the communication stream.
  dhx_emit_reduce_scatter(step, 1, DHX_COMM_DP, grads, gshard, count,
                          "data-parallel gradient sum, this rank's shard");
  dhx_lop *rec = dhx_lop_push(step, DHX_L_RECORD, 1, "gradient shard reduced");
  rec->event = 0;
  dhx_lop *w = dhx_lop_push(step, DHX_L_WAIT, 0, "gradient shard reduced");
  w->event = 0;
  step->nevents = 1;

  // The shards hold different tensors on each rank, so their partial sums cannot be added
  // element by element across ranks: each rank reduces its own to two scalars (whole tensors,
  // split tensors), and those are added over the group (the split one over tensor ranks too).
  int64_t c1 = shard_sumsq(step, partials, 0, gshard, 0, z->whole_decay,
                           "sum of squares of whole gradients (shard)");
  int64_t c2 = shard_sumsq(step, partials, c1, gshard, z->split_end, z->own_end - z->split_end,
                           "sum of squares of whole gradients (shard)");
  int64_t c3 = shard_sumsq(step, partials, c1 + c2, gshard, z->whole_decay,
                           z->split_end - z->whole_decay, "sum of squares of split gradients (shard)");
  dhx_lop *zn = dhx_lop_push(step, DHX_L_ZERO, 0, "shard norm scalars");
  zn->args[0] = dhx_buf(norm, 0);
  zn->args[1] = dhx_i64(8);
  zn->nargs = 2;
  add_rows(step, norm, 0, partials, 0, c1 + c2, "whole gradients' sum of squares");
  add_rows(step, norm, 1, partials, c1 + c2, c3, "split gradients' sum of squares");
  dhx_emit_allreduce(step, 0, DHX_COMM_DP, norm, 2, "add shard sums over data ranks");
  if (g->tp > 1) {
    dhx_lop *ar = dhx_emit_allreduce(step, 0, DHX_COMM_TP, norm, 1, "add split sums over tensor ranks");
    ar->args[0] = dhx_buf(norm, 1);
  }
  if (g->pp > 1)  // each stage holds different parameters: add the stages' sums
    dhx_emit_allreduce(step, 0, DHX_COMM_PP, norm, 2, "add the stages' sums of squares");
  dhx_lop *gn = dhx_lop_push(step, DHX_L_GRAD_NORM, 0, "global norm and clip scale");
  gn->args[0] = dhx_buf(norm, 0);
  gn->args[1] = dhx_i64(2);
  gn->args[2] = dhx_f64(o->grad_clip);
  gn->nargs = 3;

  adamw(g, step, o, "decay", gshard, 0, o->weight_decay);
  adamw(g, step, o, "no_decay", gshard, z->decay_end, 0.0);

  // Every rank's updated chunk to every rank.
  if (own >= 0 && g->tensors[own].view_elems > 0) {
    dhx_ewb b;
    dhx_ewb_init(&b);
    int x = dhx_ewb_load(&b, dhx_buf(own, 0), 0);
    dhx_ewb_store(&b, x, dhx_buf(pshard, 0), false);
    dhx_emit_ew(step, &b, z->chunk / 4, "updated parameter shard");
  }
  dhx_emit_all_gather(step, 0, DHX_COMM_DP, pshard, params, count,
                      "data-parallel parameter shards to every rank");
}
