// autodiff.c — reverse-mode differentiation of the operator graph into low-level ops.
//
// Nodes are visited in reverse. Each tensor's gradient is created by the first contribution
// (which overwrites) and later contributions add into it, so a tensor read by several nodes
// (the residual stream) gets the sum. Weight gradients always add: they are zeroed once per
// step (program BEGIN) and accumulate across micro-batches. Where it is safe, a gradient is
// the same buffer as another (an add passes its output gradient straight to one input; the
// loss gradient overwrites the logits in place) to save memory and passes over it.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

typedef struct ad {
  dhx_graph *g;
  dhx_oplist *l;
  int *grad;      // tensor → gradient tensor (-1 none yet)
  int *consumers; // tensor → number of nodes reading it
} ad;

static const dhx_tensor *T(const ad *a, int t) { return &a->g->tensors[t]; }

static bool needs_grad(const ad *a, int t) {
  dhx_tensor_kind k = T(a, t)->kind;
  return k == DHX_T_ACT || k == DHX_T_PARAM;
}

// The gradient buffer a contribution to t's gradient goes to, and whether it adds.
static int grad_dst(ad *a, int t, bool *accumulate) {
  const dhx_tensor *x = T(a, t);
  if (x->kind == DHX_T_PARAM) {
    *accumulate = true;
    return x->grad;
  }
  if (a->grad[t] >= 0) {
    *accumulate = true;
    return a->grad[t];
  }
  char name[DHX_NAME_MAX + 2];
  snprintf(name, sizeof name, "d.%s", x->name);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  int d = dhx_tensor_new(a->g, name, DHX_T_ACT, DHX_F32, x->ndim, shape);
  a->grad[t] = d;
  *accumulate = false;
  return d;
}

static void note_of(const dhx_node *n, const char *what, char *out) {
  snprintf(out, DHX_NAME_MAX, "%.70s: %s", n->scope, what);
}

// grad(t) (+)= dy, elementwise; when t has no gradient yet and nothing else will read dy
// afterwards, t's gradient simply becomes dy.
static void pass_through(ad *a, int t, int dy, bool *dy_taken, const dhx_node *n) {
  if (!needs_grad(a, t)) return;
  if (a->grad[t] < 0 && !*dy_taken && T(a, t)->kind == DHX_T_ACT) {
    a->grad[t] = dy;
    *dy_taken = true;
    return;
  }
  bool acc;
  int d = grad_dst(a, t, &acc);
  char note[DHX_NAME_MAX];
  note_of(n, "grad pass-through", note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int v = dhx_ewb_load(&b, dhx_buf(dy, 0), 0);
  dhx_ewb_store(&b, v, dhx_buf(d, 0), acc);
  dhx_emit_ew(a->l, &b, dhx_tensor_elems(T(a, t)), note);
}

static void back_embedding(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  note_of(n, "grad table", note);
  const dhx_tensor *out = T(a, n->out);
  dhx_operand args[] = {dhx_buf(T(a, n->in[1])->grad, 0), dhx_buf(n->in[0], 0), dhx_buf(dy, 0),
                        dhx_i64(dhx_tensor_rows(out)), dhx_i64(dhx_tensor_cols(out))};
  dhx_emit_kernel(a->l, DHX_K_EMBED_BWD, dhx_tensor_cols(out), note, 5, args);
}

static void back_pos_embedding(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  note_of(n, "grad table", note);
  const dhx_tensor *w = T(a, n->in[1]);
  int64_t m = dhx_tensor_elems(w), rows = dhx_tensor_elems(T(a, n->out)) / m;
  dhx_operand args[] = {dhx_buf(w->grad, 0), dhx_buf(dy, 0), dhx_i64(rows), dhx_i64(m),
                        dhx_i64(1)};
  dhx_emit_kernel(a->l, DHX_K_COLSUM, m, note, 5, args);
  bool taken = false;
  pass_through(a, n->in[0], dy, &taken, n);
}

static void back_layernorm(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *x = T(a, n->in[0]);
  int64_t rows = dhx_tensor_rows(x), cols = dhx_tensor_cols(x);
  note_of(n, "grad gamma, beta", note);
  dhx_operand p[] = {dhx_buf(T(a, n->in[1])->grad, 0), dhx_buf(T(a, n->in[2])->grad, 0),
                     dhx_buf(dy, 0), dhx_buf(n->in[0], 0), dhx_buf(n->saved[0], 0),
                     dhx_buf(n->saved[1], 0), dhx_i64(rows), dhx_i64(cols)};
  dhx_emit_kernel(a->l, DHX_K_LAYERNORM_BWD_DPARAMS, cols, note, 8, p);
  if (!needs_grad(a, n->in[0])) return;
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  note_of(n, "grad x", note);
  dhx_operand args[] = {dhx_buf(dx, 0), dhx_buf(dy, 0), dhx_buf(n->in[0], 0),
                        dhx_buf(n->saved[0], 0), dhx_buf(n->saved[1], 0),
                        dhx_buf(n->in[1], 0), dhx_i64(cols), dhx_i64(acc)};
  dhx_emit_kernel(a->l, DHX_K_LAYERNORM_BWD_DX, rows, note, 8, args);
}

static void back_linear(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *w = T(a, n->in[1]);
  int64_t rows = dhx_tensor_rows(T(a, n->in[0])), in = w->shape[0], out = w->shape[1];
  if (n->nin > 2) {
    note_of(n, "grad bias", note);
    dhx_operand args[] = {dhx_buf(T(a, n->in[2])->grad, 0), dhx_buf(dy, 0), dhx_i64(rows),
                          dhx_i64(out), dhx_i64(1)};
    dhx_emit_kernel(a->l, DHX_K_COLSUM, out, note, 5, args);
  }
  note_of(n, "grad w += x^T dy", note);
  dhx_emit_gemm(a->l, note, true, false, in, out, rows, dhx_buf(n->in[0], 0), in, dhx_buf(dy, 0),
                out, dhx_buf(w->grad, 0), out, 1.0);
  if (!needs_grad(a, n->in[0])) return;
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  note_of(n, "grad x = dy w^T", note);
  dhx_emit_gemm(a->l, note, false, true, rows, in, out, dhx_buf(dy, 0), out, dhx_buf(n->in[1], 0),
                out, dhx_buf(dx, 0), in, acc ? 1.0 : 0.0);
}

// The backward of lower_attention, with the same strided views of qkv and its gradient.
static void back_attention(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *qkv = T(a, n->in[0]);
  int64_t B = qkv->shape[0], S = qkv->shape[1], D = qkv->shape[2] / 3, H = n->heads,
          hs = D / H;
  int q = n->in[0], p = n->saved[0];
  bool acc;
  int dq = grad_dst(a, q, &acc);
  double beta = acc ? 1.0 : 0.0;
  char name[DHX_NAME_MAX + 2];
  snprintf(name, sizeof name, "d.%s", T(a, p)->name);
  int dp = dhx_tensor_new(a->g, name, DHX_T_ACT, DHX_F32, 4, T(a, p)->shape);

  note_of(n, "grad probs = dy v^T", note);
  dhx_lop *op = dhx_emit_gemm(a->l, note, false, true, S, S, hs, dhx_buf(dy, 0), D,
                              dhx_buf(q, 2 * D), 3 * D, dhx_buf(dp, 0), S, 0.0);
  dhx_gemm_batch(op, 0, B, S * D, S * 3 * D, H * S * S);
  dhx_gemm_batch(op, 1, H, hs, hs, S * S);
  note_of(n, "grad v = probs^T dy", note);
  op = dhx_emit_gemm(a->l, note, true, false, S, hs, S, dhx_buf(p, 0), S, dhx_buf(dy, 0), D,
                     dhx_buf(dq, 2 * D), 3 * D, beta);
  dhx_gemm_batch(op, 0, B, H * S * S, S * D, S * 3 * D);
  dhx_gemm_batch(op, 1, H, S * S, hs, hs);
  note_of(n, "causal softmax backward", note);
  dhx_operand args[] = {dhx_buf(dp, 0), dhx_buf(dp, 0), dhx_buf(p, 0), dhx_i64(S),
                        dhx_f64(1.0 / sqrt((double)hs))};
  dhx_emit_kernel(a->l, DHX_K_SOFTMAX_CAUSAL_BWD, B * H * S, note, 5, args);
  note_of(n, "grad q = dscores k", note);
  op = dhx_emit_gemm(a->l, note, false, false, S, hs, S, dhx_buf(dp, 0), S, dhx_buf(q, D), 3 * D,
                     dhx_buf(dq, 0), 3 * D, beta);
  dhx_gemm_batch(op, 0, B, H * S * S, S * 3 * D, S * 3 * D);
  dhx_gemm_batch(op, 1, H, S * S, hs, hs);
  note_of(n, "grad k = dscores^T q", note);
  op = dhx_emit_gemm(a->l, note, true, false, S, hs, S, dhx_buf(dp, 0), S, dhx_buf(q, 0), 3 * D,
                     dhx_buf(dq, D), 3 * D, beta);
  dhx_gemm_batch(op, 0, B, H * S * S, S * 3 * D, S * 3 * D);
  dhx_gemm_batch(op, 1, H, S * S, hs, hs);
}

static void back_gelu(ad *a, const dhx_node *n, int dy) {
  if (!needs_grad(a, n->in[0])) return;
  char note[DHX_NAME_MAX];
  note_of(n, "gelu backward", note);
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  int d = dhx_ewb_load(&b, dhx_buf(dy, 0), 0);
  dhx_ewb_store(&b, dhx_ewb_op(&b, DHX_EW_GELU_GRAD, x, d), dhx_buf(dx, 0), acc);
  dhx_emit_ew(a->l, &b, dhx_tensor_elems(T(a, n->out)), note);
}

static void back_add(ad *a, const dhx_node *n, int dy) {
  bool taken = false;
  pass_through(a, n->in[0], dy, &taken, n);
  pass_through(a, n->in[1], dy, &taken, n);
}

// The loss gradient: softmax minus one-hot, scaled to a mean over the global batch. When the
// logits feed nothing else it overwrites them in place.
static void back_cross_entropy(ad *a, const dhx_node *n, double loss_scale) {
  char note[DHX_NAME_MAX];
  note_of(n, "loss backward", note);
  int logits = n->in[0];
  int d;
  if (a->consumers[logits] == 1 && T(a, logits)->kind == DHX_T_ACT && a->grad[logits] < 0) {
    d = logits;
    a->grad[logits] = d;
  } else {
    bool acc;
    d = grad_dst(a, logits, &acc);
    if (acc) {
      fprintf(stderr, "dhxc: internal error: logits gradient already has a contribution\n");
      abort();
    }
  }
  const dhx_tensor *lg = T(a, logits);
  dhx_operand args[] = {dhx_buf(d, 0), dhx_buf(logits, 0), dhx_buf(n->in[1], 0),
                        dhx_i64(dhx_tensor_cols(lg)), dhx_f64(loss_scale)};
  dhx_emit_kernel(a->l, DHX_K_XENT_BWD, dhx_tensor_rows(lg), note, 5, args);
}

void dhx_lower_backward(dhx_graph *g, dhx_oplist *l, double loss_scale) {
  ad a = {.g = g, .l = l};
  // Tensors created below grow g->tensors; size the maps for the worst case up front.
  int cap = g->ntensors * 3 + 16;
  a.grad = malloc(sizeof(int) * (size_t)cap);
  a.consumers = calloc((size_t)cap, sizeof(int));
  if (!a.grad || !a.consumers) abort();
  for (int i = 0; i < cap; i++) a.grad[i] = -1;
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i].nin; j++) a.consumers[g->nodes[i].in[j]]++;

  for (int i = g->nnodes - 1; i >= 0; i--) {
    const dhx_node n = g->nodes[i];  // a copy: tensor creation may move g->nodes' neighbours
    if (n.op == DHX_N_CROSS_ENTROPY) {
      back_cross_entropy(&a, &n, loss_scale);
      continue;
    }
    int dy = a.grad[n.out];
    if (dy < 0) continue;  // the output does not reach the loss
    switch (n.op) {
      case DHX_N_EMBEDDING: back_embedding(&a, &n, dy); break;
      case DHX_N_POS_EMBEDDING: back_pos_embedding(&a, &n, dy); break;
      case DHX_N_LAYERNORM: back_layernorm(&a, &n, dy); break;
      case DHX_N_LINEAR: back_linear(&a, &n, dy); break;
      case DHX_N_ATTENTION: back_attention(&a, &n, dy); break;
      case DHX_N_GELU: back_gelu(&a, &n, dy); break;
      case DHX_N_ADD: back_add(&a, &n, dy); break;
      case DHX_N_CROSS_ENTROPY: break;
    }
    if (g->ntensors >= cap - 8) {
      fprintf(stderr, "dhxc: internal error: gradient map overflow\n");
      abort();
    }
  }
  free(a.grad);
  free(a.consumers);
}
