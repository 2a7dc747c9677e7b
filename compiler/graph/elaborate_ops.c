// elaborate_ops.c — the primitive ops: each call checks its arguments with concrete shapes and
// adds one node to the graph, with its weights (named after the scope) and saved tensors.
#include <stdio.h>
#include <string.h>

#include "elaborate_internal.h"
#include "ice.h"
#include "ops.h"

// Binds a primitive op's arguments by the names of ops.c (n = its parameter count).
static bool bind_op_args(ctx *c, frame *f, const dhx_expr *call, value *out, int n) {
  const dhx_op_sig *sig = dhx_find_op(call->str);
  if (!sig || sig->nparams != n)  // the table and this file disagree: a build bug
    DHX_ICE("primitive op '%s': ops.c and elaborate.c disagree on its parameters", call->str);
  return elab_bind_call_args(c, f, call, sig->params, n, out);
}

static int node_for(ctx *c, dhx_node_op op, const dhx_expr *call, const char *scope) {
  if (c->g->nnodes >= MAX_NODES && !c->failed)
    FAIL(c, &call->loc, "the model has more than %d ops (is a repeat count too large?)", MAX_NODES);
  int n = dhx_node_new(c->g, op, &call->loc, scope);
  c->g->nodes[n].layer = c->layer;
  c->g->nodes[n].site = c->call_site;
  c->g->nodes[n].from = c->from;
  return n;
}

static value op_embedding(ctx *c, frame *f, const dhx_expr *call) {
  value a[3];
  if (!bind_op_args(c, f, call, a, 3)) return (value){0};
  if (!elab_want_tensor(c, call, "tokens", a[0]) || !elab_want_int(c, call, "vocab", a[1], 1) ||
      !elab_want_int(c, call, "dim", a[2], 1))
    return (value){0};
  const dhx_tensor *tok = T(c, a[0].t);
  if (tok->dtype != DHX_I32 || tok->ndim > 3) {
    FAIL(c, &call->loc, "'tokens' of 'embedding' must be an i32 tensor of token ids");
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "embedding", scope);
  int64_t wshape[2] = {a[1].i, a[2].i};
  int w = elab_new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.02f, true);
  int64_t shape[DHX_MAX_DIMS];
  int nd = tok->ndim;
  for (int i = 0; i < nd; i++) shape[i] = tok->shape[i];
  shape[nd] = a[2].i;
  int n = node_for(c, DHX_N_EMBEDDING, call, scope);
  int out = elab_new_act(c, scope, "out", nd + 1, shape);
  dhx_node *nd_ = &c->g->nodes[n];
  nd_->in[0] = a[0].t;
  nd_->in[1] = w;
  nd_->nin = 2;
  nd_->out = out;
  if (c->g->vocab == 0) c->g->vocab = (int)a[1].i;
  return tensor_value(out, a[2].from);
}

static value op_pos_embedding(ctx *c, frame *f, const dhx_expr *call) {
  value a[1];
  if (!bind_op_args(c, f, call, a, 1)) return (value){0};
  if (!elab_want_tensor(c, call, "x", a[0])) return (value){0};
  const dhx_tensor *x = T(c, a[0].t);
  if (x->ndim != 3) {
    FAIL(c, &call->loc, "'x' of 'pos_embedding' must be [batch, seq, dim]");
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "pos_embedding", scope);
  int64_t wshape[2] = {x->shape[1], x->shape[2]};
  int64_t shape[3] = {x->shape[0], x->shape[1], x->shape[2]};
  int w = elab_new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.01f, true);
  int n = node_for(c, DHX_N_POS_EMBEDDING, call, scope);
  int out = elab_new_act(c, scope, "out", 3, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->in[1] = w;
  nd->nin = 2;
  nd->out = out;
  return tensor_value(out, a[0].from);
}

// layernorm(x, eps) (gain and bias; saves mean and rstd) or rmsnorm(x, eps) (gain only; saves
// rstd), over the last dimension.
static value op_norm(ctx *c, frame *f, const dhx_expr *call, bool rms) {
  value a[2];
  if (!bind_op_args(c, f, call, a, 2)) return (value){0};
  if (!elab_want_tensor(c, call, "x", a[0]) || !elab_want_last_dim(c, call, a[0].t, "x")) return (value){0};
  double eps = 1e-5;
  if (a[1].k == V_FLOAT || a[1].k == V_INT) eps = a[1].k == V_INT ? (double)a[1].i : a[1].f;
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, rms ? "rmsnorm" : "layernorm", scope);
  int64_t cols = dhx_tensor_cols(T(c, a[0].t)), rows = dhx_tensor_rows(T(c, a[0].t));
  int gamma = elab_new_param(c, scope, "g", 1, &cols, DHX_INIT_ONES, 0, false);
  int beta = rms ? -1 : elab_new_param(c, scope, "b", 1, &cols, DHX_INIT_ZEROS, 0, false);
  int64_t shape[DHX_MAX_DIMS];
  int ndim = elab_shape_with_last(c, a[0].t, cols, shape);
  int n = node_for(c, rms ? DHX_N_RMSNORM : DHX_N_LAYERNORM, call, scope);
  int out = elab_new_act(c, scope, "out", ndim, shape);
  int mean = rms ? -1 : elab_new_act(c, scope, "mean", 1, &rows);
  int rstd = elab_new_act(c, scope, "rstd", 1, &rows);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[nd->nin++] = a[0].t;
  nd->in[nd->nin++] = gamma;
  if (!rms) nd->in[nd->nin++] = beta;
  nd->out = out;
  if (!rms) nd->saved[nd->nsaved++] = mean;
  nd->saved[nd->nsaved++] = rstd;
  nd->eps = eps;
  return tensor_value(out, a[0].from);
}

// rope(x, heads, base: 10000): rotary position embedding of each head of x [B, S, heads*hs].
static value op_rope(ctx *c, frame *f, const dhx_expr *call) {
  value a[3];
  if (!bind_op_args(c, f, call, a, 3)) return (value){0};
  if (!elab_want_tensor(c, call, "x", a[0]) || !elab_want_int(c, call, "heads", a[1], 1)) return (value){0};
  double base = 10000;
  if (a[2].k == V_INT || a[2].k == V_FLOAT) base = a[2].k == V_INT ? (double)a[2].i : a[2].f;
  else if (a[2].k != V_NONE) {
    FAIL(c, &call->loc, "'base' of 'rope' must be a number, got %s", kind_name(a[2].k));
    return (value){0};
  }
  const dhx_tensor *x = T(c, a[0].t);
  if (x->ndim != 3) {
    FAIL(c, &call->loc, "'x' of 'rope' must be [batch, seq, heads * head_size]");
    return (value){0};
  }
  int64_t D = x->shape[2], H = a[1].i;
  if (D % H != 0 || (D / H) % 2 != 0) {
    FAIL(c, &call->loc, "rope needs an even head size, but %lld features in %lld heads give %s",
         (long long)D, (long long)H, D % H ? "a remainder" : "an odd size");
    return (value){0};
  }
  if (!(base > 1)) {
    FAIL(c, &call->loc, "'base' of 'rope' must be greater than 1, got %g", base);
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "rope", scope);
  int64_t shape[3] = {x->shape[0], x->shape[1], D};
  int n = node_for(c, DHX_N_ROPE, call, scope);
  int out = elab_new_act(c, scope, "out", 3, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->nin = 1;
  nd->out = out;
  nd->heads = (int)H;
  nd->base = base;
  return tensor_value(out, a[0].from);
}

static int split_of(ctx *c, const dhx_expr *annot) {
  if (!annot) return 0;
  if (strcmp(annot->str, "split") != 0) {
    FAIL(c, &annot->loc, "unknown annotation '@%s' (known: @split)", annot->str);
    return 0;
  }
  if (annot->nargs != 1 || annot->args[0].value->kind != EXPR_IDENT) {
    FAIL(c, &annot->loc, "@split takes one argument: col or row");
    return 0;
  }
  const char *s = annot->args[0].value->str;
  if (strcmp(s, "col") == 0) return 1;
  if (strcmp(s, "row") == 0) return 2;
  FAIL(c, &annot->args[0].value->loc, "@split takes col or row, got '%s'", s);
  return 0;
}

static value op_linear(ctx *c, frame *f, const dhx_expr *call, const dhx_expr *annot) {
  value a[3];
  if (!bind_op_args(c, f, call, a, 3)) return (value){0};
  if (!elab_want_tensor(c, call, "x", a[0]) || !elab_want_last_dim(c, call, a[0].t, "x") ||
      !elab_want_int(c, call, "out", a[1], 1))
    return (value){0};
  bool bias = a[2].k == V_BOOL ? a[2].b : true;
  if (a[2].k != V_NONE && a[2].k != V_BOOL) {
    FAIL(c, &call->loc, "'bias' of 'linear' must be true or false");
    return (value){0};
  }
  int split = split_of(c, annot);
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "linear", scope);
  int64_t in = dhx_tensor_cols(T(c, a[0].t));
  int64_t wshape[2] = {in, a[1].i};
  int w = elab_new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.02f, true);
  int b = bias ? elab_new_param(c, scope, "b", 1, &a[1].i, DHX_INIT_ZEROS, 0, false) : -1;
  int64_t shape[DHX_MAX_DIMS];
  int ndim = elab_shape_with_last(c, a[0].t, a[1].i, shape);
  int n = node_for(c, DHX_N_LINEAR, call, scope);
  int out = elab_new_act(c, scope, "out", ndim, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->in[1] = w;
  nd->nin = 2;
  if (b >= 0) nd->in[nd->nin++] = b;
  nd->out = out;
  nd->split = split;
  return tensor_value(out, a[1].from);
}

// attention(qkv, heads: H): multi-head causal attention over a fused [B, S, 3*dim] projection;
// attention(q, k, v, heads: H, kv_heads: G): over separate projections, with G key/value
// heads shared by groups of H/G query heads (grouped-query attention; G = H by default).
static value op_attention(ctx *c, frame *f, const dhx_expr *call) {
  value a[6];
  if (!bind_op_args(c, f, call, a, 6)) return (value){0};
  if (!elab_want_tensor(c, call, "q", a[0]) || !elab_want_int(c, call, "heads", a[3], 1)) return (value){0};
  bool fused = a[1].k == V_NONE && a[2].k == V_NONE;
  if (!fused && (!elab_want_tensor(c, call, "k", a[1]) || !elab_want_tensor(c, call, "v", a[2])))
    return (value){0};
  if (a[5].k != V_NONE && a[5].k != V_BOOL) {
    FAIL(c, &call->loc, "'causal' of 'attention' must be true or false");
    return (value){0};
  }
  if (a[5].k == V_BOOL && !a[5].b) {
    FAIL(c, &call->loc, "non-causal attention is not supported yet (causal: false)");
    return (value){0};
  }
  int64_t H = a[3].i, G = H;
  if (a[4].k != V_NONE) {
    if (!elab_want_int(c, call, "kv_heads", a[4], 1)) return (value){0};
    G = a[4].i;
  }
  const dhx_tensor *q = T(c, a[0].t);
  int64_t B = q->ndim == 3 ? q->shape[0] : 0, S = q->ndim == 3 ? q->shape[1] : 0, dim;
  if (fused) {
    if (q->ndim != 3 || q->shape[2] % 3 != 0) {
      FAIL(c, &call->loc, "'qkv' of 'attention' must be [batch, seq, 3 * dim]");
      return (value){0};
    }
    if (G != H) {
      FAIL(c, &call->loc, "grouped-query attention (kv_heads) needs separate q, k and v");
      return (value){0};
    }
    dim = q->shape[2] / 3;
    if (dim % H != 0) {
      FAIL(c, &call->loc, "attention dim %lld is not divisible by heads %lld", (long long)dim,
           (long long)H);
      return (value){0};
    }
  } else {
    const dhx_tensor *k = T(c, a[1].t), *v = T(c, a[2].t);
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || k->shape[0] != B || v->shape[0] != B ||
        k->shape[1] != S || v->shape[1] != S) {
      FAIL(c, &call->loc, "'q', 'k' and 'v' of 'attention' must be [batch, seq, features] of "
           "the same batch and sequence");
      return (value){0};
    }
    dim = q->shape[2];
    if (dim % H != 0) {
      FAIL(c, &call->loc, "attention: %lld query features are not divisible by heads %lld",
           (long long)dim, (long long)H);
      return (value){0};
    }
    if (H % G != 0) {
      FAIL(c, &call->loc, "attention: heads %lld is not a multiple of kv_heads %lld",
           (long long)H, (long long)G);
      return (value){0};
    }
    int64_t hs = dim / H;
    if (k->shape[2] != G * hs || v->shape[2] != G * hs) {
      FAIL(c, &call->loc, "attention: 'k' and 'v' must have kv_heads * head_size = %lld * %lld = "
           "%lld features, got %lld and %lld", (long long)G, (long long)hs, (long long)(G * hs),
           (long long)k->shape[2], (long long)v->shape[2]);
      return (value){0};
    }
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "attention", scope);
  int64_t shape[3] = {B, S, dim};
  int64_t pshape[4] = {B, H, S, S};
  int n = node_for(c, DHX_N_ATTENTION, call, scope);
  int out = elab_new_act(c, scope, "out", 3, shape);
  int probs = elab_new_act(c, scope, "probs", 4, pshape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->nin = 1;
  nd->out = out;
  nd->saved[0] = probs;
  nd->nsaved = 1;
  if (!fused) {
    int64_t qshape[4] = {B, H, S, dim / H};
    nd->in[1] = a[1].t;
    nd->in[2] = a[2].t;
    nd->nin = 3;
    nd->saved[1] = elab_new_act(c, scope, "q_t", 4, qshape);  // q with heads first
    nd->nsaved = 2;
  }
  nd->heads = (int)H;
  nd->kv_heads = (int)G;
  nd->causal = true;
  return tensor_value(out, a[0].from);
}

static value op_unary_tensor(ctx *c, frame *f, const dhx_expr *call, dhx_node_op op,
                             const char *opname) {
  value a[1];
  if (!bind_op_args(c, f, call, a, 1)) return (value){0};
  if (!elab_want_tensor(c, call, "x", a[0])) return (value){0};
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, opname, scope);
  const dhx_tensor *x = T(c, a[0].t);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  int n = node_for(c, op, call, scope);
  int out = elab_new_act(c, scope, "out", x->ndim, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->nin = 1;
  nd->out = out;
  return tensor_value(out, a[0].from);
}

static value op_cross_entropy(ctx *c, frame *f, const dhx_expr *call) {
  value a[2];
  if (!bind_op_args(c, f, call, a, 2)) return (value){0};
  if (!elab_want_tensor(c, call, "logits", a[0]) || !elab_want_tensor(c, call, "targets", a[1]))
    return (value){0};
  const dhx_tensor *lg = T(c, a[0].t), *tg = T(c, a[1].t);
  if (tg->dtype != DHX_I32 || dhx_tensor_elems(tg) != dhx_tensor_rows(lg)) {
    FAIL(c, &call->loc, "'targets' of 'cross_entropy' must be i32 ids, one per row of 'logits'");
    return (value){0};
  }
  if (c->g->losses >= 0) {
    FAIL(c, &call->loc, "a model has one loss; 'cross_entropy' is already used");
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, "cross_entropy", scope);
  int64_t rows = dhx_tensor_rows(lg);
  int n = node_for(c, DHX_N_CROSS_ENTROPY, call, scope);
  int out = dhx_tensor_new(c->g, "losses", DHX_T_LOSSES, DHX_F32, 1, &rows);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->in[1] = a[1].t;
  nd->nin = 2;
  nd->out = out;
  c->g->losses = out;
  return tensor_value(out, a[0].from | a[1].from);
}

// Writes a shape as "[8, 128, 512]".
static const char *shape_text(const dhx_tensor *t, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->ndim && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (len < n) snprintf(buf + len, n - len, "]");
  return buf;
}

// tensor + tensor, tensor * tensor: elementwise, same shapes.
value elab_elementwise(ctx *c, frame *f, const dhx_expr *e, value l, value r) {
  const dhx_tensor *a = T(c, l.t), *b = T(c, r.t);
  c->from = l.from | r.from;
  bool mul = e->op == '*';
  if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) != 0) {
    char sa[96], sb[96];
    FAIL(c, &e->loc, "cannot %s tensors of different shapes: %s and %s", mul ? "multiply" : "add",
         shape_text(a, sa, sizeof sa), shape_text(b, sb, sizeof sb));
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  elab_child_scope(f, mul ? "mul" : "add", scope);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  int n = node_for(c, mul ? DHX_N_MUL : DHX_N_ADD, e, scope);
  int out = elab_new_act(c, scope, "out", a->ndim, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = l.t;
  nd->in[1] = r.t;
  nd->nin = 2;
  nd->out = out;
  return tensor_value(out, l.from | r.from);
}

// Elaborates the primitive op that `e` calls into *out; false when e->str names no primitive op.
bool elab_primitive_op(ctx *c, frame *f, const dhx_expr *e, const dhx_expr *annot, value *out) {
  const dhx_op_sig *sig = dhx_find_op(e->str);
  if (!sig) return false;
  switch (sig->op) {
    case DHX_N_EMBEDDING: *out = op_embedding(c, f, e); break;
    case DHX_N_POS_EMBEDDING: *out = op_pos_embedding(c, f, e); break;
    case DHX_N_LAYERNORM: *out = op_norm(c, f, e, false); break;
    case DHX_N_LINEAR: *out = op_linear(c, f, e, annot); break;
    case DHX_N_ATTENTION: *out = op_attention(c, f, e); break;
    case DHX_N_GELU: *out = op_unary_tensor(c, f, e, DHX_N_GELU, "gelu"); break;
    case DHX_N_SILU: *out = op_unary_tensor(c, f, e, DHX_N_SILU, "silu"); break;
    case DHX_N_RMSNORM: *out = op_norm(c, f, e, true); break;
    case DHX_N_ROPE: *out = op_rope(c, f, e); break;
    case DHX_N_CROSS_ENTROPY: *out = op_cross_entropy(c, f, e); break;
    default:  // dhx_find_op finds only the ops a program calls by name
      DHX_ICE("op '%s' is called by name but elaboration has no rule for it", sig->name);
  }
  return true;
}
