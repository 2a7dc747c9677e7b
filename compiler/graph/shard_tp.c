// shard_tp.c — tensor parallelism as a rewrite of the operator graph (Megatron-LM's layout).
//
// The graph elaboration builds is the whole model. For tensor-parallel rank r of tp, this pass
// walks it in order and gives each tensor a layout: replicated (every rank holds all of it) or
// split along its last dimension (each rank holds 1/tp). The rules:
//
//   linear @split(col)   replicated x  →  split y     w [in, out/tp] (and b) are this rank's
//                                                      columns; x's gradient is a partial sum,
//                                                      all-reduced when complete (autodiff.c)
//   linear @split(row)   split x       →  replicated y w [in/tp, out]; y is a partial sum,
//                                                      all-reduced in the forward (lower.c); the
//                                                      bias is added once, by rank 0, before it
//   attention, rope      split         →  split        heads/tp (and kv_heads/tp) per rank
//   elementwise          same layout   →  same layout
//   norms, pos_embedding replicated only
//   embedding            vocabulary rows [r·V/tp, (r+1)·V/tp) per rank, masked lookup + all-reduce
//   cross_entropy        split logits  →  the loss from per-rank statistics (no rank holds
//                                          the full-vocabulary logits)
//
// A column-split linear feeding fused attention splits its 3·D outputs as three groups (q, k,
// v), so each rank's slice is its own heads' q, k and v. Parameters record which slice of the
// whole tensor they hold (split_dim, groups, parts, index), which is what makes initialisation
// and checkpoints independent of the layout.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "elaborate.h"
#include "lower.h"
#include "ops.h"

typedef enum { REPLICATED = 0, SPLIT = 1 } layout;

typedef struct shard {
  dhx_graph *g;
  int tp, rank;
  uint8_t *lay;  // per tensor
  bool ok;
} shard;

static void fail(shard *s, const dhx_node *n, const char *msg) {
  if (!s->ok) return;  // one error: later ones follow from it
  s->ok = false;
  dhx_error_at(&n->loc, dhx_source_for(n->loc.file), "tensor parallelism (tp = %d): %s", s->tp,
               msg);
  dhx_note_instantiation(s->g, n->site, n->from, &n->loc);
}

// Gives a parameter this rank's slice along `dim`, in `groups` groups.
static void split_param(shard *s, int t, int dim, int groups) {
  dhx_tensor *p = &s->g->tensors[t];
  p->split_dim = dim;
  p->split_groups = groups;
  p->split_parts = s->tp;
  p->split_index = s->rank;
  p->shape[dim] /= s->tp;
}

static void split_last(shard *s, int t) {
  dhx_tensor *x = &s->g->tensors[t];
  x->shape[x->ndim - 1] /= s->tp;
  s->lay[t] = SPLIT;
}

// Is tensor t read by fused attention (one [B, S, 3·D] input)?
static bool feeds_fused_attention(const dhx_graph *g, int t) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == DHX_N_ATTENTION && g->nodes[i].nin == 1 && g->nodes[i].in[0] == t)
      return true;
  return false;
}

static void shard_linear(shard *s, dhx_node *n) {
  dhx_graph *g = s->g;
  int x = n->in[0], w = n->in[1], b = n->nin > 2 ? n->in[2] : -1;
  if (n->split == 1) {
    if (s->lay[x] != REPLICATED) {
      fail(s, n, "a column-split linear reads a tensor that is already split (by an earlier "
           "column-split linear); put a row-split linear between them");
      return;
    }
    int groups = feeds_fused_attention(g, n->out) ? 3 : 1;
    split_param(s, w, 1, groups);
    if (b >= 0) split_param(s, b, 0, groups);
    g->tensors[x].tp_reduce_grad = true;
    split_last(s, n->out);
  } else if (n->split == 2) {
    if (s->lay[x] != SPLIT) {
      fail(s, n, "a row-split linear needs an input split by a column-split linear; this one "
           "reads a replicated tensor (mark the projection before it @split(col))");
      return;
    }
    split_param(s, w, 0, 1);
    s->lay[n->out] = REPLICATED;
  } else if (s->lay[x] != REPLICATED) {
    fail(s, n, "a linear without @split reads a split tensor; mark it @split(row) or the "
         "projection before it without @split(col)");
  }
}

static void shard_attention(shard *s, dhx_node *n) {
  dhx_graph *g = s->g;
  layout l = s->lay[n->in[0]];
  for (int i = 1; i < n->nin; i++)
    if (s->lay[n->in[i]] != l) {
      fail(s, n, "attention reads q, k and v of different layouts (some from column-split "
           "linears, some not)");
      return;
    }
  if (l == REPLICATED) return;
  n->heads /= s->tp;
  n->kv_heads /= s->tp;
  split_last(s, n->out);
  g->tensors[n->saved[0]].shape[1] /= s->tp;  // probs [B, H, S, S]
  if (n->nsaved > 1) g->tensors[n->saved[1]].shape[1] /= s->tp;  // q_t [B, H, S, hs]
}

static void shard_elementwise(shard *s, dhx_node *n) {
  layout l = s->lay[n->in[0]];
  for (int i = 1; i < n->nin; i++)
    if (s->lay[n->in[i]] != l) {
      fail(s, n, "an elementwise op combines a split tensor with a replicated one");
      return;
    }
  if (l == SPLIT) split_last(s, n->out);
  if (n->op == DHX_N_ROPE && l == SPLIT) n->heads /= s->tp;
}

static void shard_replicated_only(shard *s, dhx_node *n, const char *what) {
  if (s->lay[n->in[0]] == REPLICATED) return;
  char msg[200];
  snprintf(msg, sizeof msg, "%s over a tensor split along its last dimension (by a "
           "column-split linear) would see only part of each row; end the split region with a "
           "row-split linear first", what);
  fail(s, n, msg);
}

// By the op's tensor-parallel rule in the op table (ops.def).
static void shard_node(shard *s, dhx_node *n) {
  switch (dhx_op_info(n->op)->tp) {
    case DHX_TP_SPLIT: shard_linear(s, n); break;
    case DHX_TP_HEADS: shard_attention(s, n); break;
    case DHX_TP_ELEMENTWISE: shard_elementwise(s, n); break;
    case DHX_TP_REPLICATED: shard_replicated_only(s, n, dhx_node_op_name(n->op)); break;
    case DHX_TP_VOCAB:
      split_param(s, n->in[1], 0, 1);
      n->vocab_parallel = true;
      break;
    case DHX_TP_VOCAB_LOSS:
      if (s->lay[n->in[0]] == SPLIT) n->vocab_parallel = true;
      break;
    case DHX_TP_INSERTED: break;  // inserted later, by shard_sp.c
  }
}

// The gradient of a tensor read by column-split linears is the sum of their partial
// gradients over the group; anything else reading it would add a full gradient into that sum.
static void check_partial_grads(shard *s) {
  const dhx_graph *g = s->g;
  for (int i = 0; i < g->nnodes && s->ok; i++) {
    const dhx_node *n = &g->nodes[i];
    for (int j = 0; j < n->nin; j++) {
      const dhx_tensor *x = &g->tensors[n->in[j]];
      if (x->tp_reduce_grad && !(n->op == DHX_N_LINEAR && n->split == 1 && j == 0))
        fail(s, n, "a tensor that feeds a column-split linear is also read here; give this op "
             "its own copy of the input or split it the same way");
    }
  }
}

// The loss statistics of the vocabulary-parallel cross-entropy: lse is saved for the backward.
static void add_loss_state(shard *s) {
  dhx_graph *g = s->g;
  for (int i = 0; i < g->nnodes; i++) {
    dhx_node *n = &g->nodes[i];
    if (n->op != DHX_N_CROSS_ENTROPY || !n->vocab_parallel) continue;
    int64_t rows = dhx_tensor_rows(&g->tensors[n->in[0]]);
    char name[DHX_NAME_MAX + 8];
    snprintf(name, sizeof name, "%.80s.lse", n->scope);
    int lse = dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 1, &rows);
    g->nodes[i].saved[0] = lse;
    g->nodes[i].nsaved = 1;
  }
}

bool dhx_shard_tensor_parallel(dhx_graph *g, int tp, int rank) {
  g->tp = tp;
  g->tp_rank = rank;
  if (tp == 1) return true;
  shard s = {.g = g, .tp = tp, .rank = rank, .ok = true};
  s.lay = calloc((size_t)g->ntensors + 1, 1);
  if (!s.lay) abort();
  for (int i = 0; i < g->nnodes && s.ok; i++) shard_node(&s, &g->nodes[i]);
  if (s.ok) check_partial_grads(&s);
  if (s.ok) add_loss_state(&s);
  free(s.lay);
  return s.ok;
}
