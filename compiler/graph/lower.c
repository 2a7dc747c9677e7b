// lower.c — forward lowering: each graph node becomes GEMMs, catalogue kernels and
// elementwise expressions on one rank (data parallelism keeps the whole model per rank).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lower.h"

static const dhx_tensor *T(const dhx_graph *g, int t) { return &g->tensors[t]; }

static void note_of(const dhx_node *n, const char *what, char *out) {
  snprintf(out, DHX_NAME_MAX, "%.60s: %s", n->scope, what);
}

// Vocabulary-parallel: each rank looks up the tokens in its rows of the table (zeros for the
// others') and an all-reduce over the group sums the rows into the full embedding.
static void lower_embedding(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "gather", note);
  const dhx_tensor *out = T(g, n->out);
  if (n->vocab_parallel) {
    int64_t rows = T(g, n->in[1])->shape[0];
    dhx_operand a[] = {dhx_buf(n->out, 0), dhx_buf(n->in[0], 0), dhx_buf(n->in[1], 0),
                       dhx_i64(dhx_tensor_cols(out)), dhx_i64(g->tp_rank * rows), dhx_i64(rows)};
    dhx_emit_kernel(l, DHX_K_EMBED_VP_FWD, dhx_tensor_rows(out), note, 6, a);
    if (n->sp_partial) return;  // sequence parallelism: an SP_SCATTER sums the shards
    note_of(n, "sum vocabulary shards", note);
    dhx_emit_allreduce(l, 0, DHX_COMM_TP, n->out, dhx_tensor_elems(out), note);
    return;
  }
  dhx_operand a[] = {dhx_buf(n->out, 0), dhx_buf(n->in[0], 0), dhx_buf(n->in[1], 0),
                     dhx_i64(dhx_tensor_cols(out))};
  dhx_emit_kernel(l, DHX_K_EMBED_FWD, dhx_tensor_rows(out), note, 4, a);
}

static void lower_pos_embedding(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "add positions", note);
  const dhx_tensor *w = T(g, n->in[1]);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  int p = dhx_ewb_load(&b, dhx_buf(n->in[1], 0), dhx_tensor_elems(w));
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_ADD, x, p), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, dhx_tensor_elems(T(g, n->out)), note);
}

static void lower_layernorm(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "layernorm", note);
  const dhx_tensor *x = T(g, n->in[0]);
  dhx_operand a[] = {dhx_buf(n->out, 0),      dhx_buf(n->saved[0], 0), dhx_buf(n->saved[1], 0),
                     dhx_buf(n->in[0], 0),    dhx_buf(n->in[1], 0),    dhx_buf(n->in[2], 0),
                     dhx_i64(dhx_tensor_cols(x)), dhx_f64(n->eps)};
  dhx_emit_kernel(l, DHX_K_LAYERNORM_FWD, dhx_tensor_rows(x), note, 8, a);
}

static void lower_linear(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *x = T(g, n->in[0]), *w = T(g, n->in[1]);
  int64_t rows = dhx_tensor_rows(x), in = w->shape[0], out = w->shape[1];
  note_of(n, "x @ w", note);
  dhx_emit_gemm(l, note, false, false, rows, out, in, dhx_buf(n->in[0], 0), in,
                dhx_buf(n->in[1], 0), out, dhx_buf(n->out, 0), out, 0.0);
  // A row-split linear makes partial sums: the bias goes into one rank's part only, then the
  // all-reduce adds the parts up.
  bool partial = n->split == 2 && g->tp > 1;
  if (n->nin > 2 && (!partial || g->tp_rank == 0)) {
    note_of(n, "+ bias", note);
    dhx_ewb b;
    dhx_ewb_init(&b);
    int y = dhx_ewb_load(&b, dhx_buf(n->out, 0), 0);
    int bias = dhx_ewb_load(&b, dhx_buf(n->in[2], 0), out);
    dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_ADD, y, bias), dhx_buf(n->out, 0), false);
    dhx_emit_ew(l, &b, rows * out, note);
  }
  if (!partial || n->sp_partial) return;  // sequence parallelism: an SP_SCATTER reduces it
  note_of(n, "sum row-split partials", note);
  dhx_emit_allreduce(l, 0, DHX_COMM_TP, n->out, rows * out, note);
}

// Multi-head causal attention over a fused [B, S, 3*D] projection, without moving data:
// the per-head Q, K and V are strided windows of qkv that the batched GEMMs read in place.
static void lower_fused_attention(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *qkv = T(g, n->in[0]);
  int64_t B = qkv->shape[0], S = qkv->shape[1], D = qkv->shape[2] / 3, H = n->heads,
          hs = D / H;
  int q = n->in[0], p = n->saved[0], o = n->out;
  note_of(n, "scores = q k^T", note);
  dhx_lop *op = dhx_emit_gemm(l, note, false, true, S, S, hs, dhx_buf(q, 0), 3 * D,
                              dhx_buf(q, D), 3 * D, dhx_buf(p, 0), S, 0.0);
  dhx_gemm_batch(op, 0, B, S * 3 * D, S * 3 * D, H * S * S);
  dhx_gemm_batch(op, 1, H, hs, hs, S * S);
  note_of(n, "causal softmax", note);
  dhx_operand a[] = {dhx_buf(p, 0), dhx_buf(p, 0), dhx_i64(S), dhx_f64(1.0 / sqrt((double)hs))};
  dhx_emit_kernel(l, DHX_K_SOFTMAX_CAUSAL_FWD, B * H * S, note, 4, a);
  note_of(n, "out = probs v", note);
  op = dhx_emit_gemm(l, note, false, false, S, hs, S, dhx_buf(p, 0), S, dhx_buf(q, 2 * D), 3 * D,
                     dhx_buf(o, 0), D, 0.0);
  dhx_gemm_batch(op, 0, B, H * S * S, S * 3 * D, S * D);
  dhx_gemm_batch(op, 1, H, S * S, hs, hs);
}

// Grouped-query attention over separate q [B,S,H*hs], k, v [B,S,G*hs]. The query is first
// permuted to [B,H,S,hs], so the H/G query heads that share key/value head g are one
// contiguous [H/G * S, hs] matrix: each GEMM then covers a whole group (batched over batch
// and kv head), the scores land in [B,H,S,S] as the causal softmax expects, and the key and
// value gradients come out summed over the group by the GEMMs themselves.
void dhx_gqa_dims(const dhx_graph *g, const dhx_node *n, dhx_gqa *d) {
  const dhx_tensor *q = &g->tensors[n->in[0]], *k = &g->tensors[n->in[1]];
  d->B = q->shape[0];
  d->S = q->shape[1];
  d->H = n->heads;
  d->G = n->kv_heads;
  d->hs = q->shape[2] / d->H;
  d->Dq = q->shape[2];
  d->Dk = k->shape[2];
  d->per = d->H / d->G;
}

// The two batch levels of a group GEMM: over the batch (outer) and the kv heads (inner).
void dhx_gqa_batch(dhx_lop *op, const dhx_gqa *d, int64_t a_b, int64_t a_g, int64_t b_b,
                   int64_t b_g, int64_t c_b, int64_t c_g) {
  dhx_gemm_batch(op, 0, d->B, a_b, b_b, c_b);
  dhx_gemm_batch(op, 1, d->G, a_g, b_g, c_g);
}

// out[b, y, x, :] = in[b, x, y, :] for in of [B, X, Y, W].
void dhx_emit_permute_op(dhx_oplist *l, const char *note, int out, int in, int64_t B, int64_t X,
                      int64_t Y, int64_t W) {
  dhx_operand a[] = {dhx_buf(out, 0), dhx_buf(in, 0), dhx_i64(X), dhx_i64(Y), dhx_i64(W)};
  dhx_emit_kernel(l, DHX_K_PERMUTE, B * X * Y, note, 5, a);
}

static void lower_gqa(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  dhx_gqa d;
  dhx_gqa_dims(g, n, &d);
  int q = n->in[0], k = n->in[1], v = n->in[2], p = n->saved[0], qt = n->saved[1];
  int64_t S = d.S, hs = d.hs, GS = d.per * S;
  note_of(n, "q heads first", note);
  dhx_emit_permute_op(l, note, qt, q, d.B, S, d.H, hs);
  note_of(n, "scores = q k^T", note);
  dhx_lop *op = dhx_emit_gemm(l, note, false, true, GS, S, hs, dhx_buf(qt, 0), hs, dhx_buf(k, 0),
                              d.Dk, dhx_buf(p, 0), S, 0.0);
  dhx_gqa_batch(op, &d, d.H * S * hs, GS * hs, S * d.Dk, hs, d.H * S * S, GS * S);
  note_of(n, "causal softmax", note);
  dhx_operand a[] = {dhx_buf(p, 0), dhx_buf(p, 0), dhx_i64(S), dhx_f64(1.0 / sqrt((double)hs))};
  dhx_emit_kernel(l, DHX_K_SOFTMAX_CAUSAL_FWD, d.B * d.H * S, note, 4, a);
  // probs v into q_t's shape, then heads back behind positions into the output.
  int64_t oshape[4] = {d.B, d.H, S, hs};
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%.80s.o_t", n->scope);
  int ot = dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 4, oshape);
  note_of(n, "out = probs v", note);
  op = dhx_emit_gemm(l, note, false, false, GS, hs, S, dhx_buf(p, 0), S, dhx_buf(v, 0), d.Dk,
                     dhx_buf(ot, 0), hs, 0.0);
  dhx_gqa_batch(op, &d, d.H * S * S, GS * S, S * d.Dk, hs, d.H * S * hs, GS * hs);
  note_of(n, "heads back", note);
  dhx_emit_permute_op(l, note, n->out, ot, d.B, d.H, S, hs);
}

static void lower_rmsnorm(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "rmsnorm", note);
  const dhx_tensor *x = T(g, n->in[0]);
  dhx_operand a[] = {dhx_buf(n->out, 0), dhx_buf(n->saved[0], 0), dhx_buf(n->in[0], 0),
                     dhx_buf(n->in[1], 0), dhx_i64(dhx_tensor_cols(x)), dhx_f64(n->eps)};
  dhx_emit_kernel(l, DHX_K_RMSNORM_FWD, dhx_tensor_rows(x), note, 6, a);
}

void dhx_emit_rope_op(dhx_oplist *l, const char *note, int out, int in, const dhx_tensor *x,
                   int heads, double base, double sign) {
  int64_t D = x->shape[2];
  dhx_operand a[] = {dhx_buf(out, 0), dhx_buf(in, 0), dhx_i64(x->shape[1]), dhx_i64(D),
                     dhx_i64(D / heads), dhx_f64(base), dhx_f64(sign)};
  dhx_emit_kernel(l, DHX_K_ROPE, dhx_tensor_elems(x) / 2, note, 7, a);
}

static void lower_rope(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "rotary embedding", note);
  dhx_emit_rope_op(l, note, n->out, n->in[0], T(g, n->in[0]), n->heads, n->base, 1.0);
}

// An elementwise op of one or two tensors into n->out.
static void lower_ew(dhx_graph *g, dhx_oplist *l, const dhx_node *n, dhx_ew_op op, const char *what) {
  char note[DHX_NAME_MAX];
  note_of(n, what, note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  int y = n->nin > 1 ? dhx_ewb_load(&b, dhx_buf(n->in[1], 0), 0) : 0;
  dhx_ewb_store(&b, dhx_ewb_op(&b, op, x, y), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, dhx_tensor_elems(T(g, n->out)), note);
}

static void lower_gelu(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "gelu", note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_GELU, x, 0), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, dhx_tensor_elems(T(g, n->out)), note);
}

static void lower_add(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "add", note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  int y = dhx_ewb_load(&b, dhx_buf(n->in[1], 0), 0);
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_ADD, x, y), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, dhx_tensor_elems(T(g, n->out)), note);
}

// Vocabulary-parallel loss: each rank reduces its slice of every row to (max, sum of exp,
// target logit); an all-gather gives every rank all slices' statistics, from which it forms
// the log-sum-exp (kept for the backward) and the loss. No rank holds a full row of logits.
static void lower_vocab_parallel_loss(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX], name[DHX_NAME_MAX + 16];
  const int64_t K = 3;  // statistics per row
  const dhx_tensor *lg = T(g, n->in[0]);
  int64_t rows = dhx_tensor_rows(lg), V = dhx_tensor_cols(lg);
  int64_t sshape[2] = {K, rows}, gshape[3] = {g->tp, K, rows};
  snprintf(name, sizeof name, "%.80s.stats", n->scope);
  int stats = dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 2, sshape);
  snprintf(name, sizeof name, "%.80s.all_stats", n->scope);
  int all = dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 3, gshape);
  note_of(n, "loss statistics of this slice", note);
  dhx_operand a[] = {dhx_buf(stats, 0), dhx_buf(n->in[0], 0), dhx_buf(n->in[1], 0), dhx_i64(V),
                     dhx_i64(g->tp_rank * V), dhx_i64(K), dhx_i64(rows)};
  dhx_emit_kernel(l, DHX_K_XENT_VP_STATS, rows, note, 7, a);
  note_of(n, "gather loss statistics", note);
  dhx_emit_all_gather(l, 0, DHX_COMM_TP, stats, all, g->tp * K * rows, note);
  note_of(n, "loss", note);
  dhx_operand c[] = {dhx_buf(n->out, 0), dhx_buf(n->saved[0], 0), dhx_buf(all, 0),
                     dhx_buf(n->in[1], 0), dhx_i64(g->tp * K), dhx_i64(rows), dhx_i64(K),
                     dhx_i64(V * g->tp)};
  dhx_emit_kernel(l, DHX_K_XENT_VP_COMBINE, rows, note, 8, c);
}

static void lower_cross_entropy(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  if (n->vocab_parallel) {
    lower_vocab_parallel_loss(g, l, n);
    return;
  }
  char note[DHX_NAME_MAX];
  note_of(n, "loss", note);
  const dhx_tensor *lg = T(g, n->in[0]);
  dhx_operand a[] = {dhx_buf(n->out, 0), dhx_buf(n->in[0], 0), dhx_buf(n->in[1], 0),
                     dhx_i64(dhx_tensor_cols(lg))};
  dhx_emit_kernel(l, DHX_K_XENT_FWD, dhx_tensor_rows(lg), note, 4, a);
}

// Sequence parallelism (shard_sp.c): moving between token-split and whole activations.
static void lower_sp_gather(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "gather token rows", note);
  dhx_emit_all_gather(l, 0, DHX_COMM_TP, n->in[0], n->out, dhx_tensor_elems(T(g, n->out)), note);
}

static void lower_sp_scatter(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "reduce-scatter partials", note);
  dhx_emit_reduce_scatter(l, 0, DHX_COMM_TP, n->in[0], n->out, dhx_tensor_elems(T(g, n->in[0])),
                          note);
  if (n->nin < 2) return;
  note_of(n, "+ bias", note);  // every rank, on its own rows
  const dhx_tensor *out = T(g, n->out);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int y = dhx_ewb_load(&b, dhx_buf(n->out, 0), 0);
  int bias = dhx_ewb_load(&b, dhx_buf(n->in[1], 0), dhx_tensor_cols(out));
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_ADD, y, bias), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, dhx_tensor_elems(out), note);
}

static void lower_sp_chunk(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "this rank's token rows", note);
  int64_t elems = dhx_tensor_elems(T(g, n->out));
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], g->tp_rank * elems), 0);
  dhx_ewb_store(&b, x, dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, elems, note);
}

// ---- the forward rule of each op (ops.def names them lower_<name>) ----------------------------

void dhx_use_fused_attention(dhx_graph *g) {
  g->fused_attention = true;
  for (int i = 0; i < g->nnodes; i++) {
    dhx_node *n = &g->nodes[i];
    if (n->op != DHX_N_ATTENTION) continue;
    dhx_tensor *p = &g->tensors[n->saved[0]];  // [B, H, S, S] → [B, H, S]
    p->ndim = 3;
    p->shape[3] = 0;
    size_t len = strlen(p->name);
    if (len >= 6 && strcmp(p->name + len - 6, ".probs") == 0)
      snprintf(p->name + len - 6, sizeof p->name - (len - 6), ".lse");
    n->nsaved = 1;
  }
}

void dhx_attn_dims_of(const dhx_graph *g, const dhx_node *n, dhx_attn_dims *d) {
  const dhx_tensor *q = &g->tensors[n->in[0]];
  d->B = q->shape[0];
  d->S = q->shape[1];
  d->H = n->heads;
  if (n->nin == 3) {
    d->G = n->kv_heads;
    d->hs = q->shape[2] / d->H;
    d->qs = q->shape[2];
    d->ks = g->tensors[n->in[1]].shape[2];
    d->layout = 0;
  } else {  // one [B, S, 3·D] projection
    d->G = d->H;
    d->hs = q->shape[2] / 3 / d->H;
    d->qs = d->ks = q->shape[2];
    d->layout = 4;
  }
  d->scale = 1.0 / sqrt((double)d->hs);
}

void dhx_attn_args(const dhx_attn_dims *d, int64_t acc, dhx_operand *a) {
  const int64_t v[7] = {d->S, d->H, d->G, d->hs, d->qs, d->ks, d->layout | acc};
  for (int i = 0; i < 7; i++) a[i] = dhx_i64(v[i]);
  a[7] = dhx_f64(d->scale);
}

// Fused attention (dhx_use_fused_attention): one kernel, a row per query position and head,
// reading q, k and v where they are (the fused projection's strided windows, or GQA's three
// projections) and saving each row's log-sum-exp for the backward; no score matrix.
static void lower_attention_kernel(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  dhx_attn_dims d;
  dhx_attn_dims_of(g, n, &d);
  int q = n->in[0], k = n->nin == 3 ? n->in[1] : q, v = n->nin == 3 ? n->in[2] : q;
  dhx_operand a[13] = {dhx_buf(n->out, 0), dhx_buf(n->saved[0], 0), dhx_buf(q, 0), dhx_buf(k, 0),
                       dhx_buf(v, 0)};
  dhx_attn_args(&d, 0, a + 5);
  note_of(n, "fused causal attention", note);
  dhx_emit_kernel(l, DHX_K_ATTN_FWD, d.B * d.H * d.S, note, 13, a);
}

static void lower_attention(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  if (g->fused_attention) lower_attention_kernel(g, l, n);
  else if (n->nin == 3) lower_gqa(g, l, n);
  else lower_fused_attention(g, l, n);
}

static void lower_silu(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  lower_ew(g, l, n, DHX_EW_SILU, "silu");
}

static void lower_mul(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  lower_ew(g, l, n, DHX_EW_MUL, "mul");
}

typedef void (*forward_rule)(dhx_graph *g, dhx_oplist *l, const dhx_node *n);

static const forward_rule FORWARD[DHX_N_COUNT] = {
#define DHX_OP(ID, name, call, nin_min, nin_max, grads, tp, params) [DHX_N_##ID] = lower_##name,
#include "ops.def"
#undef DHX_OP
};

void dhx_lower_forward(dhx_graph *g, dhx_oplist *l) {
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    l->at = (dhx_origin){.node = g->node_base + i, .layer = n->layer,
                         .phase = DHX_PHASE_FORWARD};
    FORWARD[n->op](g, l, n);
  }
}
