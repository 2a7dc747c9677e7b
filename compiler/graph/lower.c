// lower.c — forward lowering: each graph node becomes GEMMs, catalogue kernels and
// elementwise expressions on one rank (data parallelism keeps the whole model per rank).
#include <math.h>
#include <stdio.h>

#include "lower.h"

static const dhx_tensor *T(const dhx_graph *g, int t) { return &g->tensors[t]; }

static void note_of(const dhx_node *n, const char *what, char *out) {
  snprintf(out, DHX_NAME_MAX, "%.70s: %s", n->scope, what);
}

static void lower_embedding(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "gather", note);
  const dhx_tensor *out = T(g, n->out);
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
  if (n->nin < 3) return;
  note_of(n, "+ bias", note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int y = dhx_ewb_load(&b, dhx_buf(n->out, 0), 0);
  int bias = dhx_ewb_load(&b, dhx_buf(n->in[2], 0), out);
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_ADD, y, bias), dhx_buf(n->out, 0), false);
  dhx_emit_ew(l, &b, rows * out, note);
}

// Multi-head causal attention over a fused [B, S, 3*D] projection, without moving data:
// the per-head Q, K and V are strided windows of qkv that the batched GEMMs read in place.
static void lower_attention(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
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

static void lower_cross_entropy(dhx_graph *g, dhx_oplist *l, const dhx_node *n) {
  char note[DHX_NAME_MAX];
  note_of(n, "loss", note);
  const dhx_tensor *lg = T(g, n->in[0]);
  dhx_operand a[] = {dhx_buf(n->out, 0), dhx_buf(n->in[0], 0), dhx_buf(n->in[1], 0),
                     dhx_i64(dhx_tensor_cols(lg))};
  dhx_emit_kernel(l, DHX_K_XENT_FWD, dhx_tensor_rows(lg), note, 4, a);
}

void dhx_lower_forward(dhx_graph *g, dhx_oplist *l) {
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    switch (n->op) {
      case DHX_N_EMBEDDING: lower_embedding(g, l, n); break;
      case DHX_N_POS_EMBEDDING: lower_pos_embedding(g, l, n); break;
      case DHX_N_LAYERNORM: lower_layernorm(g, l, n); break;
      case DHX_N_LINEAR: lower_linear(g, l, n); break;
      case DHX_N_ATTENTION: lower_attention(g, l, n); break;
      case DHX_N_GELU: lower_gelu(g, l, n); break;
      case DHX_N_ADD: lower_add(g, l, n); break;
      case DHX_N_CROSS_ENTROPY: lower_cross_entropy(g, l, n); break;
    }
  }
}
