// shard_sp.c — sequence parallelism (Megatron-LM's), a rewrite after shard_tp.c's.
//
// Outside the split regions of tensor parallelism (norms, residual adds, elementwise ops) the
// activations are split along the tokens instead of replicated: the B·S token rows of a
// [B, S, H] activation are flattened and rank r of tp holds rows [r·BS/tp, (r+1)·BS/tp), as a
// [1, BS/tp, H] tensor. A row chunk is contiguous, so an all-gather of the chunks is exactly the
// whole [B, S, H] tensor and a reduce-scatter of a whole one gives each rank its rows. The pass
// walks the graph in order, gives each tensor a layout (replicated, split along the last
// dimension, or token-split) and inserts three kinds of node:
//
//   SP_GATHER   token-split x → whole x       before a column-split linear (backward: the
//                                             linears' partial input gradients reduce-scattered)
//   SP_SCATTER  partial sums → token-split    after a row-split linear, instead of its
//                                             all-reduce; the bias moves here and every rank
//                                             adds it to its own rows (backward: all-gather)
//   SP_CHUNK    replicated x → token-split    entering the token-split layout from a replicated
//                                             tensor (GPT's embedding + positions); backward:
//                                             all-gather of the rows' gradients. A
//                                             vocabulary-parallel embedding read only through
//                                             it reduce-scatters its partial rows instead
//
// Norms, adds, gelu/silu/mul read and write token-split tensors unchanged (they work per token
// or per element). Attention, rope and pos_embedding depend on positions, so they must see
// whole or column-split tensors; the rewrite reports them at the op otherwise.
//
// Parameters used on token-split data (norm gains and biases, row-split biases, linears
// without @split) get gradients summed over this rank's rows only: they are marked
// sp_reduce_grad and dhx_lower_sp_grad_sync all-reduces them over the tensor-parallel group in
// STEP, before the data-parallel reduction, after which every tensor rank holds the same whole
// gradient (for memplan.c and optimizer.c they are whole parameters like any other).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "ice.h"
#include "elaborate.h"
#include "lower.h"

typedef enum { REPLICATED = 0, SPLIT = 1, TOKENS = 2 } layout;

typedef struct spass {
  dhx_graph *g;
  int tp;
  int64_t tokens;     // B·S, the token rows of one micro-batch
  uint8_t *lay;       // per tensor
  int *chunk_of;      // replicated tensor → its token-split rows (-1 none yet)
  int *gathered_of;   // token-split tensor → its gathered whole (-1 none yet)
  int cap;
  bool ok;
} spass;

static void fail(spass *s, const dhx_node *n, const char *msg) {
  if (!s->ok) return;
  s->ok = false;
  dhx_error_at(&n->loc, dhx_source_for(n->loc.file), "sequence parallelism (sp: on, tp = %d): %s",
               s->tp, msg);
  dhx_note_instantiation(s->g, n->site, n->from, &n->loc);
}

static dhx_tensor *T(spass *s, int t) { return &s->g->tensors[t]; }

// Is t a whole activation of the micro-batch's token rows ([B, S, H] or [B·S])?
static bool token_rows(spass *s, int t) {
  return T(s, t)->ndim >= 1 && dhx_tensor_rows(T(s, t)) == s->tokens;
}

// Token-split shape for t (its B·S rows are cut to B·S/tp): [1, BS/tp, H], or [BS/tp].
static void make_tokens(spass *s, int t) {
  dhx_tensor *x = T(s, t);
  int64_t rows = dhx_tensor_rows(x);
  if (x->ndim == 1) {
    x->shape[0] /= s->tp;
  } else {
    for (int i = 0; i < x->ndim - 2; i++) x->shape[i] = 1;
    x->shape[x->ndim - 2] = rows / s->tp;
  }
  s->lay[t] = TOKENS;
}

static int new_tensor_like(spass *s, int t, const char *suffix) {
  char name[DHX_NAME_MAX + 16];
  snprintf(name, sizeof name, "%.80s.%s", T(s, t)->name, suffix);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, T(s, t)->shape, sizeof shape);
  int id = dhx_tensor_new(s->g, name, DHX_T_ACT, DHX_F32, T(s, t)->ndim, shape);
  if (id >= s->cap) DHX_ICE("sequence-parallel tensor map overflow (%d tensors)", id);
  s->chunk_of[id] = s->gathered_of[id] = -1;
  return id;
}

// A new node before `at` (which is copied into the rebuilt array after it).
static int insert_node(spass *s, dhx_node_op op, const dhx_node *at, int in, int out) {
  int id = dhx_node_new(s->g, op, &at->loc, at->scope);
  dhx_node *n = &s->g->nodes[id];
  n->in[0] = in;
  n->nin = 1;
  n->out = out;
  n->layer = at->layer;
  n->site = at->site;
  n->from = at->from;
  return id;
}

// This rank's token rows of replicated tensor t (one SP_CHUNK per tensor, shared by readers).
static int chunk(spass *s, const dhx_node *at, int t) {
  if (s->chunk_of[t] >= 0) return s->chunk_of[t];
  if (!token_rows(s, t)) {
    fail(s, at, "this op reads a tensor that is not one row per token, so it cannot be split "
         "along the tokens; compute it inside a tensor-parallel region or set sp: off");
    return t;
  }
  int c = new_tensor_like(s, t, "sp_rows");
  make_tokens(s, c);
  insert_node(s, DHX_N_SP_CHUNK, at, t, c);
  s->chunk_of[t] = c;
  return c;
}

// The whole tensor of token-split t, gathered once and shared by the column-split linears.
static int gather(spass *s, const dhx_node *at, int t) {
  if (s->gathered_of[t] >= 0) return s->gathered_of[t];
  int64_t cols = dhx_tensor_cols(T(s, t));
  int64_t shape[3] = {s->g->micro_batch, s->g->seq, cols};
  char name[DHX_NAME_MAX + 16];
  snprintf(name, sizeof name, "%.80s.sp_whole", T(s, t)->name);
  int w = dhx_tensor_new(s->g, name, DHX_T_ACT, DHX_F32, 3, shape);
  if (w >= s->cap) DHX_ICE("sequence-parallel tensor map overflow (%d tensors)", w);
  s->chunk_of[w] = s->gathered_of[w] = -1;
  s->lay[w] = REPLICATED;
  insert_node(s, DHX_N_SP_GATHER, at, t, w);
  s->gathered_of[t] = w;
  return w;
}

static void mark_params(spass *s, const dhx_node *n, int from) {
  for (int j = from; j < n->nin; j++)
    if (T(s, n->in[j])->kind == DHX_T_PARAM) T(s, n->in[j])->sp_reduce_grad = true;
}

// Rewrites node n (a copy) before it is appended; may append nodes before it.
static void rewrite(spass *s, dhx_node *n) {
  switch (n->op) {
    case DHX_N_EMBEDDING:
      s->lay[n->out] = REPLICATED;
      break;
    case DHX_N_POS_EMBEDDING:
      if (s->lay[n->in[0]] != REPLICATED)
        fail(s, n, "pos_embedding adds a table by position, which needs whole sequences; apply it "
             "to the embedding's output, before the first norm");
      s->lay[n->out] = REPLICATED;
      break;
    case DHX_N_LAYERNORM:
    case DHX_N_RMSNORM:
      if (s->lay[n->in[0]] == REPLICATED) n->in[0] = chunk(s, n, n->in[0]);
      if (!s->ok) return;
      make_tokens(s, n->out);
      for (int k = 0; k < n->nsaved; k++) make_tokens(s, n->saved[k]);
      mark_params(s, n, 1);
      break;
    case DHX_N_LINEAR: {
      int x = n->in[0];
      if (n->split == 1) {
        if (s->lay[x] == TOKENS) {
          T(s, x)->tp_reduce_grad = false;  // the gather's backward reduce-scatters instead
          n->in[0] = gather(s, n, x);
        }
        s->lay[n->out] = SPLIT;
      } else if (n->split == 2) {
        // x @ w into a partial-sum tensor; the SP_SCATTER after it makes n->out token-split.
        int out = n->out, bias = n->nin > 2 ? n->in[2] : -1;
        int partial = new_tensor_like(s, out, "partial");
        s->lay[partial] = REPLICATED;
        n->out = partial;
        n->nin = 2;
        n->sp_partial = true;
        int id = dhx_node_new(s->g, n->op, NULL, NULL);
        s->g->nodes[id] = *n;
        n->op = DHX_N_SP_SCATTER;  // what the caller appends in place of the linear
        memset(n->in, 0, sizeof n->in);
        n->in[0] = partial;
        n->nin = 1;
        n->out = out;
        n->nsaved = 0;
        n->split = 0;
        n->sp_partial = false;
        if (bias >= 0) {
          n->in[n->nin++] = bias;
          T(s, bias)->sp_reduce_grad = true;
        }
        make_tokens(s, out);
      } else if (s->lay[x] == TOKENS) {  // a per-token linear on this rank's rows
        make_tokens(s, n->out);
        mark_params(s, n, 1);
      } else {
        s->lay[n->out] = s->lay[x];
      }
      break;
    }
    case DHX_N_ATTENTION:
    case DHX_N_ROPE:
      for (int j = 0; j < n->nin; j++)
        if (s->lay[n->in[j]] == TOKENS) {
          fail(s, n, n->op == DHX_N_ROPE
                         ? "rope rotates by position and needs whole sequences, but it reads a "
                           "token-split tensor; apply it to the output of a column-split linear, or set sp: off"
                         : "attention needs whole sequences, but it reads a token-split tensor; "
                           "compute q, k and v with column-split linears (@split(col)), or set sp: off");
          return;
        }
      s->lay[n->out] = s->lay[n->in[0]];
      break;
    case DHX_N_GELU:
    case DHX_N_SILU:
    case DHX_N_ADD:
    case DHX_N_MUL: {
      bool tokens = false;
      for (int j = 0; j < n->nin; j++) tokens = tokens || s->lay[n->in[j]] == TOKENS;
      if (!tokens) {
        s->lay[n->out] = s->lay[n->in[0]];
        break;
      }
      for (int j = 0; j < n->nin; j++) {
        if (s->lay[n->in[j]] == SPLIT) {
          fail(s, n, "this op combines a token-split tensor (outside the tensor-parallel "
               "region) with one split by a column-split linear; end the split region with a "
               "row-split linear first");
          return;
        }
        if (s->lay[n->in[j]] == REPLICATED) n->in[j] = chunk(s, n, n->in[j]);
      }
      if (!s->ok) return;
      make_tokens(s, n->out);
      break;
    }
    case DHX_N_CROSS_ENTROPY:
      if (s->lay[n->in[0]] == TOKENS)
        fail(s, n, "cross_entropy reads token-split logits; make the output projection "
             "column-split (@split(col), vocabulary-parallel)");
      break;
    case DHX_N_SP_GATHER:
    case DHX_N_SP_SCATTER:
    case DHX_N_SP_CHUNK: break;
  }
}

// A vocabulary-parallel embedding read only through SP_CHUNK (Llama's: no position table)
// need not all-reduce its partial rows: a reduce-scatter gives each rank its token rows of the
// sum directly, with half the traffic and no whole [B, S, H] tensor.
static void scatter_embeddings(dhx_graph *g) {
  int *readers = calloc((size_t)g->ntensors + 1, sizeof(int));
  int *reader = malloc(sizeof(int) * ((size_t)g->ntensors + 1));
  if (!readers || !reader) abort();
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i].nin; j++) {
      readers[g->nodes[i].in[j]]++;
      reader[g->nodes[i].in[j]] = i;
    }
  for (int i = 0; i < g->nnodes; i++) {
    dhx_node *n = &g->nodes[i];
    if (n->op != DHX_N_EMBEDDING || !n->vocab_parallel || readers[n->out] != 1) continue;
    dhx_node *c = &g->nodes[reader[n->out]];
    if (c->op != DHX_N_SP_CHUNK) continue;
    n->sp_partial = true;
    c->op = DHX_N_SP_SCATTER;
    memcpy(c->scope, n->scope, sizeof c->scope);
  }
  free(readers);
  free(reader);
}

bool dhx_shard_sequence_parallel(dhx_graph *g) {
  if (g->tp == 1) return true;
  int n0 = g->nnodes;
  spass s = {.g = g, .tp = g->tp, .ok = true,
             .tokens = (int64_t)g->micro_batch * g->seq};
  if (s.tokens % g->tp != 0) {  // dhxc check reports the positions; this is the whole batch
    dhx_error("sequence parallelism (sp: on) splits the %lld token rows of a micro-batch over "
              "tp = %d, which leaves a remainder of %lld; choose a micro_batch * seq that tp "
              "divides", (long long)s.tokens, g->tp, (long long)(s.tokens % g->tp));
    return false;
  }
  s.cap = g->ntensors + 4 * n0 + 16;
  s.lay = calloc((size_t)s.cap, 1);
  s.chunk_of = malloc(sizeof(int) * (size_t)s.cap);
  s.gathered_of = malloc(sizeof(int) * (size_t)s.cap);
  dhx_node *old = malloc(sizeof(dhx_node) * (size_t)(n0 ? n0 : 1));
  if (!s.lay || !s.chunk_of || !s.gathered_of || !old) abort();
  for (int i = 0; i < s.cap; i++) s.chunk_of[i] = s.gathered_of[i] = -1;
  // Layouts as shard_tp.c left them: a column-split linear's output and what follows it in the
  // split region have their last dimension split; rewrite() tracks that again as it goes.
  memcpy(old, g->nodes, sizeof(dhx_node) * (size_t)n0);
  g->nnodes = 0;
  for (int i = 0; i < n0 && s.ok; i++) {
    dhx_node n = old[i];
    rewrite(&s, &n);
    int id = dhx_node_new(g, n.op, NULL, NULL);
    g->nodes[id] = n;
  }
  free(old);
  if (s.ok) scatter_embeddings(g);
  free(s.lay);
  free(s.chunk_of);
  free(s.gathered_of);
  return s.ok;
}

void dhx_lower_sp_grad_sync(dhx_graph *g, int stream) {
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || !p->sp_reduce_grad || p->grad < 0) continue;
    // zero 1 sums the whole gradient before reducing it; zero 2 and 3 this rank's piece,
    // which is the same piece on every tensor rank (the parameter is not split)
    int grad = p->work >= 0 ? p->work : p->grad;
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "%.60s: sum token-split grads", p->name);
    dhx_emit_allreduce(step, stream, DHX_COMM_TP, grad, dhx_tensor_alloc_elems(&g->tensors[grad]),
                       note);
  }
}
