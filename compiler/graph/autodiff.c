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

#include "ice.h"
#include "lower.h"

typedef struct ad {
  dhx_graph *g;
  dhx_oplist *l;
  int *grad;      // tensor → gradient tensor (-1 none yet)
  int *consumers; // tensor → number of nodes reading it
  int *gathered_from;  // sequence parallelism: an SP_GATHER's output → its token-split input
  int *regathered;     //   and the copy gathered again for the backward (-1 none yet)
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
  snprintf(out, DHX_NAME_MAX, "%.60s: %s", n->scope, what);
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
  if (n->vocab_parallel) {  // this rank's rows of the table only
    int64_t vrows = T(a, n->in[1])->shape[0];
    dhx_operand args[] = {dhx_buf(T(a, n->in[1])->grad, 0), dhx_buf(n->in[0], 0),
                          dhx_buf(dy, 0), dhx_i64(dhx_tensor_rows(out)),
                          dhx_i64(dhx_tensor_cols(out)), dhx_i64(a->g->tp_rank * vrows),
                          dhx_i64(vrows)};
    dhx_emit_kernel(a->l, DHX_K_EMBED_VP_BWD, dhx_tensor_cols(out), note, 7, args);
    return;
  }
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

// The value of a linear's input x for its weight gradient. Under sequence parallelism a
// column-split linear reads the all-gather of token-split rows; that whole tensor is not kept
// for the backward (it would cost tp times the rows the ranks keep) but gathered again from
// the token-split rows, once for all the linears that read it (Megatron-LM does the same).
static int input_value(ad *a, const dhx_node *n, int x) {
  if (a->gathered_from[x] < 0) return x;
  if (a->regathered[x] >= 0) return a->regathered[x];
  char name[DHX_NAME_MAX + 16], note[DHX_NAME_MAX];
  snprintf(name, sizeof name, "%.80s.bwd", T(a, x)->name);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, T(a, x)->shape, sizeof shape);
  int r = dhx_tensor_new(a->g, name, DHX_T_ACT, DHX_F32, T(a, x)->ndim, shape);
  note_of(n, "gather token rows again", note);
  dhx_emit_all_gather(a->l, 0, DHX_COMM_TP, a->gathered_from[x], r, dhx_tensor_elems(T(a, r)),
                      note);
  a->regathered[x] = r;
  return r;
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
  int w_grad = w->grad;  // before input_value, whose new tensor may move the tensor array
  int x = input_value(a, n, n->in[0]);
  dhx_emit_gemm(a->l, note, true, false, in, out, rows, dhx_buf(x, 0), in, dhx_buf(dy, 0), out,
                dhx_buf(w_grad, 0), out, 1.0);
  if (!needs_grad(a, n->in[0])) return;
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  note_of(n, "grad x = dy w^T", note);
  dhx_emit_gemm(a->l, note, false, true, rows, in, out, dhx_buf(dy, 0), out, dhx_buf(n->in[1], 0),
                out, dhx_buf(dx, 0), in, acc ? 1.0 : 0.0);
}

// The backward of lower_attention, with the same strided views of qkv and its gradient.
static void back_fused_attention(ad *a, const dhx_node *n, int dy) {
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

// A fresh activation tensor shaped like t (for gradients computed before they are added).
static int temp_like(ad *a, int t, const char *what) {
  char name[DHX_NAME_MAX + 16];
  snprintf(name, sizeof name, "%.80s.%s", T(a, t)->name, what);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, T(a, t)->shape, sizeof shape);
  return dhx_tensor_new(a->g, name, DHX_T_ACT, DHX_F32, T(a, t)->ndim, shape);
}

// dst += src, elementwise over t's size.
static void add_into(ad *a, int dst, int src, int64_t n, const dhx_node *nd) {
  char note[DHX_NAME_MAX];
  note_of(nd, "add gradient", note);
  dhx_ewb b;
  dhx_ewb_init(&b);
  dhx_ewb_store(&b, dhx_ewb_load(&b, dhx_buf(src, 0), 0), dhx_buf(dst, 0), true);
  dhx_emit_ew(a->l, &b, n, note);
}

// The backward of lower_gqa (lower.c), GEMM for GEMM.
static void back_gqa(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  dhx_gqa d;
  dhx_gqa_dims(a->g, n, &d);
  int q = n->in[0], k = n->in[1], v = n->in[2], p = n->saved[0], qt = n->saved[1];
  int64_t S = d.S, hs = d.hs, GS = d.per * S;
  int dot = temp_like(a, qt, "d_out"), dp = temp_like(a, p, "d");
  note_of(n, "grad out heads first", note);
  dhx_emit_permute_op(a->l, note, dot, dy, d.B, S, d.H, hs);
  note_of(n, "grad probs = dout v^T", note);
  dhx_lop *op = dhx_emit_gemm(a->l, note, false, true, GS, S, hs, dhx_buf(dot, 0), hs,
                              dhx_buf(v, 0), d.Dk, dhx_buf(dp, 0), S, 0.0);
  dhx_gqa_batch(op, &d, d.H * S * hs, GS * hs, S * d.Dk, hs, d.H * S * S, GS * S);
  if (needs_grad(a, v)) {
    bool acc;
    int dv = grad_dst(a, v, &acc);
    note_of(n, "grad v = probs^T dout", note);
    op = dhx_emit_gemm(a->l, note, true, false, S, hs, GS, dhx_buf(p, 0), S, dhx_buf(dot, 0), hs,
                       dhx_buf(dv, 0), d.Dk, acc ? 1.0 : 0.0);
    dhx_gqa_batch(op, &d, d.H * S * S, GS * S, d.H * S * hs, GS * hs, S * d.Dk, hs);
  }
  note_of(n, "causal softmax backward", note);
  dhx_operand args[] = {dhx_buf(dp, 0), dhx_buf(dp, 0), dhx_buf(p, 0), dhx_i64(S),
                        dhx_f64(1.0 / sqrt((double)hs))};
  dhx_emit_kernel(a->l, DHX_K_SOFTMAX_CAUSAL_BWD, d.B * d.H * S, note, 5, args);
  if (needs_grad(a, k)) {
    bool acc;
    int dk = grad_dst(a, k, &acc);
    note_of(n, "grad k = dscores^T q", note);
    op = dhx_emit_gemm(a->l, note, true, false, S, hs, GS, dhx_buf(dp, 0), S, dhx_buf(qt, 0), hs,
                       dhx_buf(dk, 0), d.Dk, acc ? 1.0 : 0.0);
    dhx_gqa_batch(op, &d, d.H * S * S, GS * S, d.H * S * hs, GS * hs, S * d.Dk, hs);
  }
  if (!needs_grad(a, q)) return;
  int dqt = temp_like(a, qt, "d");
  note_of(n, "grad q = dscores k", note);
  op = dhx_emit_gemm(a->l, note, false, false, GS, hs, S, dhx_buf(dp, 0), S, dhx_buf(k, 0), d.Dk,
                     dhx_buf(dqt, 0), hs, 0.0);
  dhx_gqa_batch(op, &d, d.H * S * S, GS * S, S * d.Dk, hs, d.H * S * hs, GS * hs);
  bool acc;
  int dq = grad_dst(a, q, &acc);
  int into = acc ? temp_like(a, q, "d_part") : dq;
  note_of(n, "grad q heads back", note);
  dhx_emit_permute_op(a->l, note, into, dqt, d.B, d.H, S, hs);
  if (acc) add_into(a, dq, into, dhx_tensor_elems(T(a, q)), n);
}

static void back_rmsnorm(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  const dhx_tensor *x = T(a, n->in[0]);
  int64_t rows = dhx_tensor_rows(x), cols = dhx_tensor_cols(x);
  note_of(n, "grad gamma", note);
  dhx_operand p[] = {dhx_buf(T(a, n->in[1])->grad, 0), dhx_buf(dy, 0), dhx_buf(n->in[0], 0),
                     dhx_buf(n->saved[0], 0), dhx_i64(rows), dhx_i64(cols)};
  dhx_emit_kernel(a->l, DHX_K_RMSNORM_BWD_DGAMMA, cols, note, 6, p);
  if (!needs_grad(a, n->in[0])) return;
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  note_of(n, "grad x", note);
  dhx_operand args[] = {dhx_buf(dx, 0), dhx_buf(dy, 0), dhx_buf(n->in[0], 0),
                        dhx_buf(n->saved[0], 0), dhx_buf(n->in[1], 0), dhx_i64(cols),
                        dhx_i64(acc)};
  dhx_emit_kernel(a->l, DHX_K_RMSNORM_BWD_DX, rows, note, 7, args);
}

// RoPE is a rotation per position: its backward rotates the gradient back.
static void back_rope(ad *a, const dhx_node *n, int dy) {
  if (!needs_grad(a, n->in[0])) return;
  char note[DHX_NAME_MAX];
  note_of(n, "rotary embedding backward", note);
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  int into = acc ? temp_like(a, n->in[0], "d_part") : dx;
  dhx_emit_rope_op(a->l, note, into, dy, T(a, n->in[0]), n->heads, n->base, -1.0);
  if (acc) add_into(a, dx, into, dhx_tensor_elems(T(a, n->in[0])), n);
}

// d(a*b) = dy*b into a's gradient and dy*a into b's (2 dy a when both are the same tensor).
static void back_mul(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  int64_t elems = dhx_tensor_elems(T(a, n->out));
  bool same = n->in[0] == n->in[1];
  for (int side = 0; side < (same ? 1 : 2); side++) {
    int t = n->in[side], other = n->in[1 - side];
    if (!needs_grad(a, t)) continue;
    note_of(n, side == 0 ? "mul backward (left)" : "mul backward (right)", note);
    bool acc;
    int dt = grad_dst(a, t, &acc);
    dhx_ewb b;
    dhx_ewb_init(&b);
    int v = dhx_ewb_op(&b, DHX_EW_MUL, dhx_ewb_load(&b, dhx_buf(dy, 0), 0),
                       dhx_ewb_load(&b, dhx_buf(other, 0), 0));
    if (same) v = dhx_ewb_op(&b, DHX_EW_ADD, v, v);
    dhx_ewb_store(&b, v, dhx_buf(dt, 0), acc);
    dhx_emit_ew(a->l, &b, elems, note);
  }
}

// dx (+)= dy * f'(x) for an elementwise activation f, as one fused op (GELU_GRAD, SILU_GRAD).
static void back_activation(ad *a, const dhx_node *n, int dy, dhx_ew_op grad_op, const char *what) {
  if (!needs_grad(a, n->in[0])) return;
  char note[DHX_NAME_MAX];
  note_of(n, what, note);
  bool acc;
  int dx = grad_dst(a, n->in[0], &acc);
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(n->in[0], 0), 0);
  int d = dhx_ewb_load(&b, dhx_buf(dy, 0), 0);
  dhx_ewb_store(&b, dhx_ewb_op(&b, grad_op, x, d), dhx_buf(dx, 0), acc);
  dhx_emit_ew(a->l, &b, dhx_tensor_elems(T(a, n->out)), note);
}

static void back_add(ad *a, const dhx_node *n, int dy) {
  bool taken = false;
  pass_through(a, n->in[0], dy, &taken, n);
  pass_through(a, n->in[1], dy, &taken, n);
}

// The loss gradient: softmax minus one-hot, scaled to a mean over the global batch. When the
// logits feed nothing else it overwrites them in place.
static void back_loss(ad *a, const dhx_node *n, double loss_scale) {
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
    if (acc) DHX_ICE("the logits gradient already has a contribution");
  }
  const dhx_tensor *lg = T(a, logits);
  if (n->vocab_parallel) {  // softmax from the forward's log-sum-exp over all slices
    int64_t V = dhx_tensor_cols(lg);
    dhx_operand args[] = {dhx_buf(d, 0), dhx_buf(logits, 0), dhx_buf(n->saved[0], 0),
                          dhx_buf(n->in[1], 0), dhx_i64(V), dhx_i64(a->g->tp_rank * V),
                          dhx_f64(loss_scale)};
    dhx_emit_kernel(a->l, DHX_K_XENT_VP_BWD, dhx_tensor_rows(lg), note, 7, args);
    return;
  }
  dhx_operand args[] = {dhx_buf(d, 0), dhx_buf(logits, 0), dhx_buf(n->in[1], 0),
                        dhx_i64(dhx_tensor_cols(lg)), dhx_f64(loss_scale)};
  dhx_emit_kernel(a->l, DHX_K_XENT_BWD, dhx_tensor_rows(lg), note, 5, args);
}

// Sequence parallelism: the backward of an all-gather is a reduce-scatter of the (partial)
// gradients of the whole tensor and vice versa; taking this rank's rows of a replicated
// tensor gathers the rows' gradients from every rank.
static void back_sp_collective(ad *a, const dhx_node *n, int dy, bool gather_dy) {
  int x = n->in[0];
  if (!needs_grad(a, x)) return;
  char note[DHX_NAME_MAX];
  bool acc;
  int dx = grad_dst(a, x, &acc);
  int into = acc ? temp_like(a, x, "d_part") : dx;
  if (gather_dy) {
    note_of(n, "gather token-row gradients", note);
    dhx_emit_all_gather(a->l, 0, DHX_COMM_TP, dy, into, dhx_tensor_elems(T(a, x)), note);
  } else {
    note_of(n, "reduce-scatter partial grads", note);
    dhx_emit_reduce_scatter(a->l, 0, DHX_COMM_TP, dy, into, dhx_tensor_elems(T(a, n->out)), note);
  }
  if (acc) add_into(a, dx, into, dhx_tensor_elems(T(a, x)), n);
}

static void back_sp_scatter(ad *a, const dhx_node *n, int dy) {
  if (n->nin > 1) {  // the bias, added on this rank's rows: a partial sum (shard_sp.c syncs it)
    char note[DHX_NAME_MAX];
    note_of(n, "grad bias (this rank's rows)", note);
    const dhx_tensor *y = T(a, n->out);
    dhx_operand args[] = {dhx_buf(T(a, n->in[1])->grad, 0), dhx_buf(dy, 0),
                          dhx_i64(dhx_tensor_rows(y)), dhx_i64(dhx_tensor_cols(y)), dhx_i64(1)};
    dhx_emit_kernel(a->l, DHX_K_COLSUM, dhx_tensor_cols(y), note, 5, args);
  }
  back_sp_collective(a, n, dy, true);
}

// ---- the backward rule of each op (ops.def names them back_<name>) ---------------------------

// The backward of lower_attention_kernel: dsum = dot(dy, out) per query row, then the query
// gradient a row per query and the key and value gradients a row per key (kernel_attn.c),
// each recomputing its probabilities from the saved log-sum-exp.
static void back_attention_kernel(ad *a, const dhx_node *n, int dy) {
  char note[DHX_NAME_MAX];
  dhx_attn_dims d;
  dhx_attn_dims_of(a->g, n, &d);
  int q = n->in[0], k = n->nin == 3 ? n->in[1] : q, v = n->nin == 3 ? n->in[2] : q;
  int lse = n->saved[0], dsum = temp_like(a, lse, "dsum");
  int64_t rows = d.B * d.H * d.S;
  note_of(n, "attention dsum", note);
  dhx_operand dot[] = {dhx_buf(dsum, 0), dhx_buf(dy, 0), dhx_buf(n->out, 0), dhx_i64(d.S),
                       dhx_i64(d.H), dhx_i64(d.hs)};
  dhx_emit_kernel(a->l, DHX_K_ATTN_BWD_DOT, rows, note, 6, dot);
  // Where the three gradients go: the fused projection's one gradient (each kernel writes its
  // own columns), or three; one that is not wanted goes to a scratch tensor.
  bool acc_q = false, acc_k = false, acc_v = false;
  int dq = needs_grad(a, q) ? grad_dst(a, q, &acc_q) : temp_like(a, q, "dq");
  int dk = dq, dv = dq;
  acc_k = acc_v = acc_q;
  if (n->nin == 3) {
    dk = needs_grad(a, k) ? grad_dst(a, k, &acc_k) : temp_like(a, k, "dk");
    dv = needs_grad(a, v) ? grad_dst(a, v, &acc_v) : temp_like(a, v, "dv");
  }
  note_of(n, "attention grad q", note);
  dhx_operand qa[15] = {dhx_buf(dq, 0), dhx_buf(q, 0), dhx_buf(k, 0), dhx_buf(v, 0),
                        dhx_buf(dy, 0), dhx_buf(lse, 0), dhx_buf(dsum, 0)};
  dhx_attn_args(&d, acc_q ? 1 : 0, qa + 7);
  dhx_emit_kernel(a->l, DHX_K_ATTN_BWD_DQ, rows, note, 15, qa);
  note_of(n, "attention grad k, v", note);
  dhx_operand ka[16] = {dhx_buf(dk, 0), dhx_buf(dv, 0), dhx_buf(q, 0), dhx_buf(k, 0),
                        dhx_buf(v, 0), dhx_buf(dy, 0), dhx_buf(lse, 0), dhx_buf(dsum, 0)};
  dhx_attn_args(&d, (acc_k ? 1 : 0) | (acc_v ? 2 : 0), ka + 8);
  dhx_emit_kernel(a->l, DHX_K_ATTN_BWD_DKV, d.B * d.G * d.S, note, 16, ka);
}

static void back_attention(ad *a, const dhx_node *n, int dy) {
  if (a->g->fused_attention) back_attention_kernel(a, n, dy);
  else if (n->nin == 3) back_gqa(a, n, dy);
  else back_fused_attention(a, n, dy);
}

static void back_gelu(ad *a, const dhx_node *n, int dy) {
  back_activation(a, n, dy, DHX_EW_GELU_GRAD, "gelu backward");
}

static void back_silu(ad *a, const dhx_node *n, int dy) {
  back_activation(a, n, dy, DHX_EW_SILU_GRAD, "silu backward");
}

// The loss is where the backward starts: back_loss seeds its gradient, before any dy exists.
static void back_cross_entropy(ad *a, const dhx_node *n, int dy) {
  (void)a, (void)n, (void)dy;
}

static void back_sp_gather(ad *a, const dhx_node *n, int dy) {
  back_sp_collective(a, n, dy, false);
}

static void back_sp_chunk(ad *a, const dhx_node *n, int dy) {
  back_sp_collective(a, n, dy, true);
}

typedef void (*backward_rule)(ad *a, const dhx_node *n, int dy);

static const backward_rule BACKWARD[DHX_N_COUNT] = {
#define DHX_OP(ID, name, call, nin_min, nin_max, grads, tp, params) [DHX_N_##ID] = back_##name,
#include "ops.def"
#undef DHX_OP
};

void dhx_lower_backward(dhx_graph *g, dhx_oplist *l, double loss_scale) {
  dhx_lower_backward_from(g, l, loss_scale, -1, NULL, -1, NULL);
}

void dhx_lower_backward_from(dhx_graph *g, dhx_oplist *l, double loss_scale, int seed,
                             int *seed_grad, int want, int *want_grad) {
  ad a = {.g = g, .l = l};
  // Tensors created below grow g->tensors; size the maps for the worst case up front.
  int cap = g->ntensors * 3 + 16;
  a.grad = malloc(sizeof(int) * (size_t)cap);
  a.consumers = calloc((size_t)cap, sizeof(int));
  a.gathered_from = malloc(sizeof(int) * (size_t)cap);
  a.regathered = malloc(sizeof(int) * (size_t)cap);
  if (!a.grad || !a.consumers || !a.gathered_from || !a.regathered) abort();
  for (int i = 0; i < cap; i++) a.grad[i] = a.gathered_from[i] = a.regathered[i] = -1;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == DHX_N_SP_GATHER) a.gathered_from[g->nodes[i].out] = g->nodes[i].in[0];
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i].nin; j++) a.consumers[g->nodes[i].in[j]]++;
  if (seed >= 0) {  // its gradient arrives from elsewhere (the next pipeline stage)
    bool acc;
    *seed_grad = grad_dst(&a, seed, &acc);
  }

  for (int i = g->nnodes - 1; i >= 0; i--) {
    const dhx_node n = g->nodes[i];  // a copy: tensor creation may move g->nodes' neighbours
    l->at = (dhx_origin){.node = g->node_base + i, .layer = n.layer,
                         .phase = DHX_PHASE_BACKWARD};
    if (n.op == DHX_N_CROSS_ENTROPY) {
      back_loss(&a, &n, loss_scale);
      continue;
    }
    int dy = a.grad[n.out];
    if (dy < 0) continue;  // the output does not reach the loss
    if (T(&a, n.out)->tp_reduce_grad) {  // column-split linears left partial sums
      char note[DHX_NAME_MAX];
      note_of(&n, "sum partial grads", note);
      dhx_emit_allreduce(l, 0, DHX_COMM_TP, dy, dhx_tensor_elems(T(&a, n.out)), note);
    }
    BACKWARD[n.op](&a, &n, dy);
    if (g->ntensors >= cap - 8)
      DHX_ICE("gradient map overflow (%d tensors, room for %d)", g->ntensors, cap);
  }
  if (want >= 0) *want_grad = a.grad[want];
  free(a.grad);
  free(a.consumers);
  free(a.gathered_from);
  free(a.regathered);
}
