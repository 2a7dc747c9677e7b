// elaborate.c — evaluates a model instance into the operator graph.
//
// The model and layer bodies of the .dhx program run like a tiny interpreter: integers and
// floats are computed, `repeat` unrolls, layer calls are inlined with their own scope, and
// every primitive-op call adds a node (and its weights) to the graph. Parameter names come
// from the scope path ("gpt_block.2.linear.1.w"), so they are stable across schedules and are
// the checkpoint tensor names.
#include "elaborate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "ice.h"
#include "ops.h"

typedef enum { V_NONE, V_INT, V_FLOAT, V_BOOL, V_STR, V_TENSOR, V_SYMBOL } vkind;

typedef struct value {
  vkind k;
  int64_t i;      // V_INT
  double f;       // V_FLOAT
  bool b;         // V_BOOL
  const char *s;  // V_STR, V_SYMBOL (an unbound identifier, e.g. `col` in @split(col))
  int t;          // V_TENSOR
  // Bit i: the value depends on argument i of the model instance (a tensor: its last, feature
  // dimension does). An error can then name the --set options behind the numbers it quotes.
  uint64_t from;
} value;

typedef struct binding {
  const char *name;
  value v;
} binding;

// One activation record: a layer or model body. `repeat` bodies share their caller's frame.
typedef struct frame {
  binding *vars;
  int nvars, capvars;
  char scope[DHX_NAME_MAX];
  // per-op-name call counters, so the k-th linear of a scope is "linear.k"
  const char *counter_names[64];
  int counters[64];
  int ncounters;
  bool returned;
  value ret;
} frame;

typedef struct ctx {
  dhx_graph *g;
  const dhx_program *prog;
  int micro_batch;
  int depth;
  int layer;      // the layer-stack iteration being elaborated, -1 outside one
  const dhx_expr *site;  // the op call being elaborated (for size errors)
  int call_site;  // the layer call being elaborated (c->g->sites), -1 in the model body
  uint64_t from;  // the instance arguments behind the values the current call or operator reads
  const dhx_expr *inst_call;  // the model instance's call
  bool failed;
} ctx;

#define MAX_CALL_DEPTH 64

static const char *src_of(const dhx_loc *loc) { return dhx_source_for(loc->file); }

// An error, then the chain of calls that led to it, as "in layer ... called here" notes.
#define FAIL(c, loc, ...)                                              \
  do {                                                                 \
    dhx_error_at((loc), src_of(loc), __VA_ARGS__);                     \
    dhx_note_instantiation((c)->g, (c)->call_site, (c)->from, (loc));  \
    (c)->failed = true;                                                \
  } while (0)

static const char *kind_name(vkind k) {
  static const char *n[] = {"nothing", "an integer", "a number", "a boolean", "a string",
                            "a tensor", "a name"};
  return n[k];
}

// ---- frames ---------------------------------------------------------------------------------

static value *lookup(frame *f, const char *name) {
  for (int i = f->nvars - 1; i >= 0; i--)
    if (strcmp(f->vars[i].name, name) == 0) return &f->vars[i].v;
  return NULL;
}

static void bind(frame *f, const char *name, value v) {
  value *old = lookup(f, name);
  if (old) {
    *old = v;
    return;
  }
  if (f->nvars == f->capvars) {
    f->capvars = f->capvars ? 2 * f->capvars : 16;
    f->vars = realloc(f->vars, (size_t)f->capvars * sizeof *f->vars);
    if (!f->vars) abort();
  }
  f->vars[f->nvars++] = (binding){name, v};
}

static int next_counter(frame *f, const char *name) {
  for (int i = 0; i < f->ncounters; i++)
    if (strcmp(f->counter_names[i], name) == 0) return f->counters[i]++;
  if (f->ncounters == 64) return 63;  // absurdly many distinct ops in one scope; names stay unique by index
  f->counter_names[f->ncounters] = name;
  f->counters[f->ncounters++] = 1;
  return 0;
}

// "scope.op.k" for the k-th call of `op` in this frame.
static void child_scope(frame *f, const char *op, char *out) {
  int k = next_counter(f, op);
  // Names longer than DHX_NAME_MAX are cut; they only label nodes and parameters.
  int n = f->scope[0] ? snprintf(out, DHX_NAME_MAX, "%s.%s.%d", f->scope, op, k)
                      : snprintf(out, DHX_NAME_MAX, "%s.%d", op, k);
  if (n >= DHX_NAME_MAX) out[DHX_NAME_MAX - 1] = '\0';
}

// ---- tensors --------------------------------------------------------------------------------

// Tensors stay below 2^40 elements and models below MAX_NODES ops, so every size the later
// passes compute fits in 64 bits (and absurd programs fail fast instead of eating memory).
#define MAX_TENSOR_ELEMS (1LL << 40)
#define MAX_NODES 200000

// The shape, or all ones after reporting it when it is too large (elaboration then stops).
static const int64_t *checked_shape(ctx *c, const char *name, int ndim, const int64_t *shape,
                                    int64_t *ones) {
  int64_t n = 1;
  bool ok = true;
  for (int i = 0; i < ndim; i++)
    ok = ok && shape[i] >= 0 && !__builtin_mul_overflow(n, shape[i], &n) && n <= MAX_TENSOR_ELEMS;
  if (ok) return shape;
  if (!c->failed && c->site)
    FAIL(c, &c->site->loc, "tensor '%s' would have more than 2^40 elements", name);
  c->failed = true;
  for (int i = 0; i < ndim; i++) ones[i] = 1;
  return ones;
}

static int new_tensor(ctx *c, const char *name, dhx_tensor_kind kind, int ndim,
                      const int64_t *shape) {
  int64_t ones[DHX_MAX_DIMS];
  return dhx_tensor_new(c->g, name, kind, DHX_F32, ndim, checked_shape(c, name, ndim, shape, ones));
}

static int new_param(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape,
                     dhx_init_kind init, float std, bool decay) {
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s.%s", scope, leaf);
  int t = new_tensor(c, name, DHX_T_PARAM, ndim, shape);
  dhx_tensor *p = &c->g->tensors[t];
  p->init = init;
  p->init_std = std;
  p->decay = decay;
  c->g->n_params += dhx_tensor_elems(p);
  return t;
}

static int new_act(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape) {
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s.%s", scope, leaf);
  return new_tensor(c, name, DHX_T_ACT, ndim, shape);
}

static const dhx_tensor *T(ctx *c, int t) { return &c->g->tensors[t]; }

// ---- argument binding -----------------------------------------------------------------------

// Matches a call's arguments to `names` (positional first, then named). Missing arguments keep
// the V_NONE kind so callers can apply defaults.
static bool bind_call_args(ctx *c, frame *f, const dhx_expr *call, const char *const *names,
                           int n, value *out);
static value eval(ctx *c, frame *f, const dhx_expr *e);

static bool want_tensor(ctx *c, const dhx_expr *call, const char *what, value v) {
  if (v.k == V_TENSOR) return true;
  FAIL(c, &call->loc, "'%s' of '%s' must be a tensor, got %s", what, call->str, kind_name(v.k));
  return false;
}

static bool want_int(ctx *c, const dhx_expr *call, const char *what, value v, int64_t lo) {
  if (v.k == V_INT && v.i >= lo) return true;
  if (v.k == V_INT)
    FAIL(c, &call->loc, "'%s' of '%s' must be at least %lld, got %lld", what, call->str,
         (long long)lo, (long long)v.i);
  else
    FAIL(c, &call->loc, "'%s' of '%s' must be an integer, got %s", what, call->str,
         kind_name(v.k));
  return false;
}

static bool want_last_dim(ctx *c, const dhx_expr *call, int t, const char *what) {
  if (T(c, t)->ndim >= 2) return true;
  FAIL(c, &call->loc, "'%s' of '%s' must have at least 2 dimensions", what, call->str);
  return false;
}

// Copies t's shape with the last dim replaced by `last`.
static int shape_with_last(ctx *c, int t, int64_t last, int64_t *shape) {
  const dhx_tensor *x = T(c, t);
  for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
  shape[x->ndim - 1] = last;
  return x->ndim;
}

// ---- primitive ops --------------------------------------------------------------------------

// Binds a primitive op's arguments by the names of ops.c (n = its parameter count).
static bool bind_op_args(ctx *c, frame *f, const dhx_expr *call, value *out, int n) {
  const dhx_op_sig *sig = dhx_find_op(call->str);
  if (!sig || sig->nparams != n)  // the table and this file disagree: a build bug
    DHX_ICE("primitive op '%s': ops.c and elaborate.c disagree on its parameters", call->str);
  return bind_call_args(c, f, call, sig->params, n, out);
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

static value tensor_value(int t, uint64_t from) {
  return (value){.k = V_TENSOR, .t = t, .from = from};
}

static value op_embedding(ctx *c, frame *f, const dhx_expr *call) {
  value a[3];
  if (!bind_op_args(c, f, call, a, 3)) return (value){0};
  if (!want_tensor(c, call, "tokens", a[0]) || !want_int(c, call, "vocab", a[1], 1) ||
      !want_int(c, call, "dim", a[2], 1))
    return (value){0};
  const dhx_tensor *tok = T(c, a[0].t);
  if (tok->dtype != DHX_I32 || tok->ndim > 3) {
    FAIL(c, &call->loc, "'tokens' of 'embedding' must be an i32 tensor of token ids");
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  child_scope(f, "embedding", scope);
  int64_t wshape[2] = {a[1].i, a[2].i};
  int w = new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.02f, true);
  int64_t shape[DHX_MAX_DIMS];
  int nd = tok->ndim;
  for (int i = 0; i < nd; i++) shape[i] = tok->shape[i];
  shape[nd] = a[2].i;
  int n = node_for(c, DHX_N_EMBEDDING, call, scope);
  int out = new_act(c, scope, "out", nd + 1, shape);
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
  if (!want_tensor(c, call, "x", a[0])) return (value){0};
  const dhx_tensor *x = T(c, a[0].t);
  if (x->ndim != 3) {
    FAIL(c, &call->loc, "'x' of 'pos_embedding' must be [batch, seq, dim]");
    return (value){0};
  }
  char scope[DHX_NAME_MAX];
  child_scope(f, "pos_embedding", scope);
  int64_t wshape[2] = {x->shape[1], x->shape[2]};
  int64_t shape[3] = {x->shape[0], x->shape[1], x->shape[2]};
  int w = new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.01f, true);
  int n = node_for(c, DHX_N_POS_EMBEDDING, call, scope);
  int out = new_act(c, scope, "out", 3, shape);
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
  if (!want_tensor(c, call, "x", a[0]) || !want_last_dim(c, call, a[0].t, "x")) return (value){0};
  double eps = 1e-5;
  if (a[1].k == V_FLOAT || a[1].k == V_INT) eps = a[1].k == V_INT ? (double)a[1].i : a[1].f;
  char scope[DHX_NAME_MAX];
  child_scope(f, rms ? "rmsnorm" : "layernorm", scope);
  int64_t cols = dhx_tensor_cols(T(c, a[0].t)), rows = dhx_tensor_rows(T(c, a[0].t));
  int gamma = new_param(c, scope, "g", 1, &cols, DHX_INIT_ONES, 0, false);
  int beta = rms ? -1 : new_param(c, scope, "b", 1, &cols, DHX_INIT_ZEROS, 0, false);
  int64_t shape[DHX_MAX_DIMS];
  int ndim = shape_with_last(c, a[0].t, cols, shape);
  int n = node_for(c, rms ? DHX_N_RMSNORM : DHX_N_LAYERNORM, call, scope);
  int out = new_act(c, scope, "out", ndim, shape);
  int mean = rms ? -1 : new_act(c, scope, "mean", 1, &rows);
  int rstd = new_act(c, scope, "rstd", 1, &rows);
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
  if (!want_tensor(c, call, "x", a[0]) || !want_int(c, call, "heads", a[1], 1)) return (value){0};
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
  child_scope(f, "rope", scope);
  int64_t shape[3] = {x->shape[0], x->shape[1], D};
  int n = node_for(c, DHX_N_ROPE, call, scope);
  int out = new_act(c, scope, "out", 3, shape);
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
  if (!want_tensor(c, call, "x", a[0]) || !want_last_dim(c, call, a[0].t, "x") ||
      !want_int(c, call, "out", a[1], 1))
    return (value){0};
  bool bias = a[2].k == V_BOOL ? a[2].b : true;
  if (a[2].k != V_NONE && a[2].k != V_BOOL) {
    FAIL(c, &call->loc, "'bias' of 'linear' must be true or false");
    return (value){0};
  }
  int split = split_of(c, annot);
  char scope[DHX_NAME_MAX];
  child_scope(f, "linear", scope);
  int64_t in = dhx_tensor_cols(T(c, a[0].t));
  int64_t wshape[2] = {in, a[1].i};
  int w = new_param(c, scope, "w", 2, wshape, DHX_INIT_NORMAL, 0.02f, true);
  int b = bias ? new_param(c, scope, "b", 1, &a[1].i, DHX_INIT_ZEROS, 0, false) : -1;
  int64_t shape[DHX_MAX_DIMS];
  int ndim = shape_with_last(c, a[0].t, a[1].i, shape);
  int n = node_for(c, DHX_N_LINEAR, call, scope);
  int out = new_act(c, scope, "out", ndim, shape);
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
  if (!want_tensor(c, call, "q", a[0]) || !want_int(c, call, "heads", a[3], 1)) return (value){0};
  bool fused = a[1].k == V_NONE && a[2].k == V_NONE;
  if (!fused && (!want_tensor(c, call, "k", a[1]) || !want_tensor(c, call, "v", a[2])))
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
    if (!want_int(c, call, "kv_heads", a[4], 1)) return (value){0};
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
  child_scope(f, "attention", scope);
  int64_t shape[3] = {B, S, dim};
  int64_t pshape[4] = {B, H, S, S};
  int n = node_for(c, DHX_N_ATTENTION, call, scope);
  int out = new_act(c, scope, "out", 3, shape);
  int probs = new_act(c, scope, "probs", 4, pshape);
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
    nd->saved[1] = new_act(c, scope, "q_t", 4, qshape);  // q with heads first
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
  if (!want_tensor(c, call, "x", a[0])) return (value){0};
  char scope[DHX_NAME_MAX];
  child_scope(f, opname, scope);
  const dhx_tensor *x = T(c, a[0].t);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  int n = node_for(c, op, call, scope);
  int out = new_act(c, scope, "out", x->ndim, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = a[0].t;
  nd->nin = 1;
  nd->out = out;
  return tensor_value(out, a[0].from);
}

static value op_cross_entropy(ctx *c, frame *f, const dhx_expr *call) {
  value a[2];
  if (!bind_op_args(c, f, call, a, 2)) return (value){0};
  if (!want_tensor(c, call, "logits", a[0]) || !want_tensor(c, call, "targets", a[1]))
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
  child_scope(f, "cross_entropy", scope);
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
static value op_elementwise(ctx *c, frame *f, const dhx_expr *e, value l, value r) {
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
  child_scope(f, mul ? "mul" : "add", scope);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  int n = node_for(c, mul ? DHX_N_MUL : DHX_N_ADD, e, scope);
  int out = new_act(c, scope, "out", a->ndim, shape);
  dhx_node *nd = &c->g->nodes[n];
  nd->in[0] = l.t;
  nd->in[1] = r.t;
  nd->nin = 2;
  nd->out = out;
  return tensor_value(out, l.from | r.from);
}

// ---- expressions ----------------------------------------------------------------------------

static value call_layer(ctx *c, frame *f, const dhx_expr *call, const dhx_item *def);

static value eval_call(ctx *c, frame *f, const dhx_expr *e, const dhx_expr *annot) {
  const char *n = e->str;
  c->site = e;
  c->from = 0;
  if (annot && strcmp(n, "linear") != 0) {
    FAIL(c, &annot->loc, "@%s applies to 'linear' calls only", annot->str);
    return (value){0};
  }
  if (strcmp(n, "embedding") == 0) return op_embedding(c, f, e);
  if (strcmp(n, "pos_embedding") == 0) return op_pos_embedding(c, f, e);
  if (strcmp(n, "layernorm") == 0) return op_norm(c, f, e, false);
  if (strcmp(n, "linear") == 0) return op_linear(c, f, e, annot);
  if (strcmp(n, "attention") == 0) return op_attention(c, f, e);
  if (strcmp(n, "gelu") == 0) return op_unary_tensor(c, f, e, DHX_N_GELU, "gelu");
  if (strcmp(n, "silu") == 0) return op_unary_tensor(c, f, e, DHX_N_SILU, "silu");
  if (strcmp(n, "rmsnorm") == 0) return op_norm(c, f, e, true);
  if (strcmp(n, "rope") == 0) return op_rope(c, f, e);
  if (strcmp(n, "cross_entropy") == 0) return op_cross_entropy(c, f, e);
  const dhx_item *def = dhx_find_definition(c->prog, n);
  if (def && def->kind == ITEM_LAYER) return call_layer(c, f, e, def);
  if (def && def->kind == ITEM_MODEL_DEF) {
    FAIL(c, &e->loc, "'%s' is a model; models cannot be called from layers", n);
    return (value){0};
  }
  FAIL(c, &e->loc, "unknown layer or op '%s'", n);
  return (value){0};
}

static value arith(ctx *c, const dhx_expr *e, value l, value r) {
  c->from = l.from | r.from;
  if (l.k == V_INT && r.k == V_INT) {
    int64_t a = l.i, b = r.i, v = 0;
    bool ovf = false;
    switch (e->op) {
      case '+': ovf = __builtin_add_overflow(a, b, &v); break;
      case '-': ovf = __builtin_sub_overflow(a, b, &v); break;
      case '*': ovf = __builtin_mul_overflow(a, b, &v); break;
      case '/':
      case '%':
        if (b == 0) {
          FAIL(c, &e->loc, "division by zero");
          return (value){0};
        }
        if (a == INT64_MIN && b == -1) ovf = true;
        else v = e->op == '/' ? a / b : a % b;
        break;
    }
    if (ovf) {
      FAIL(c, &e->loc, "integer overflow");
      return (value){0};
    }
    return (value){.k = V_INT, .i = v, .from = c->from};
  }
  if ((l.k == V_INT || l.k == V_FLOAT) && (r.k == V_INT || r.k == V_FLOAT)) {
    double a = l.k == V_INT ? (double)l.i : l.f, b = r.k == V_INT ? (double)r.i : r.f, v = 0;
    switch (e->op) {
      case '+': v = a + b; break;
      case '-': v = a - b; break;
      case '*': v = a * b; break;
      case '/': v = a / b; break;
      case '%': v = fmod(a, b); break;
    }
    return (value){.k = V_FLOAT, .f = v, .from = c->from};
  }
  FAIL(c, &e->loc, "cannot apply '%c' to %s and %s", e->op, kind_name(l.k), kind_name(r.k));
  return (value){0};
}

static value eval(ctx *c, frame *f, const dhx_expr *e) {
  if (c->failed) return (value){0};
  switch (e->kind) {
    case EXPR_NUM:
      if (e->unit != DHX_UNIT_NONE) {
        FAIL(c, &e->loc, "a quantity with a unit is not allowed in a model");
        return (value){0};
      }
      if (e->is_int) return (value){.k = V_INT, .i = (int64_t)e->num};
      return (value){.k = V_FLOAT, .f = e->num};
    case EXPR_STR: return (value){.k = V_STR, .s = e->str};
    case EXPR_BOOL: return (value){.k = V_BOOL, .b = e->boolean};
    case EXPR_IDENT: {
      value *v = lookup(f, e->str);
      if (v) return *v;
      FAIL(c, &e->loc, "unknown name '%s'", e->str);
      return (value){0};
    }
    case EXPR_NEG: {
      value v = eval(c, f, e->lhs);
      if (v.k == V_INT) return (value){.k = V_INT, .i = -v.i, .from = v.from};
      if (v.k == V_FLOAT) return (value){.k = V_FLOAT, .f = -v.f, .from = v.from};
      if (!c->failed) FAIL(c, &e->loc, "cannot negate %s", kind_name(v.k));
      return (value){0};
    }
    case EXPR_BINOP: {
      value l = eval(c, f, e->lhs), r = eval(c, f, e->rhs);
      if (c->failed) return (value){0};
      if (l.k == V_TENSOR && r.k == V_TENSOR && (e->op == '+' || e->op == '*'))
        return op_elementwise(c, f, e, l, r);
      if (l.k == V_TENSOR || r.k == V_TENSOR) {
        FAIL(c, &e->loc, "'%c' on tensors is not supported (tensor + tensor and tensor * tensor "
             "are)", e->op);
        return (value){0};
      }
      return arith(c, e, l, r);
    }
    case EXPR_CALL: return eval_call(c, f, e, NULL);
    case EXPR_ANNOT:
      if (e->lhs->kind != EXPR_CALL) {
        FAIL(c, &e->loc, "an annotation must follow a call");
        return (value){0};
      }
      return eval_call(c, f, e->lhs, e);
    case EXPR_TUPLE:
      FAIL(c, &e->loc, "tuples are not values in a model");
      return (value){0};
  }
  return (value){0};
}

// The matching itself is the front end's (dhx_match_call_args, shared with the definition
// checker), so positional, named, unknown and repeated arguments are judged and worded the
// same in both places.
static bool bind_call_args(ctx *c, frame *f, const dhx_expr *call, const char *const *names,
                           int n, value *out) {
  const char *list[65];
  const dhx_arg *slot[64];
  if (n > 64) DHX_ICE("%d parameters to bind (callers bound the count at 64)", n);
  for (int i = 0; i < n; i++) list[i] = names[i];
  list[n] = NULL;
  for (int i = 0; i < n; i++) out[i] = (value){0};
  if (!dhx_match_call_args(call, call->str, list, n, NULL, slot)) {
    dhx_note_instantiation(c->g, c->call_site, 0, &call->loc);
    c->failed = true;
    return false;
  }
  uint64_t from = 0;
  for (int i = 0; i < n && !c->failed; i++) {
    if (!slot[i]) continue;
    out[i] = eval(c, f, slot[i]->value);
    long k = slot[i] - call->args;  // the instance's arguments are where taint starts
    if (call == c->inst_call && k < 64) out[i].from |= 1ull << k;
    from |= out[i].from;
  }
  c->from = from;
  return !c->failed;
}

// ---- statements and layers ------------------------------------------------------------------

static void exec_body(ctx *c, frame *f, dhx_stmt *const *body, int n);

static void exec_stmt(ctx *c, frame *f, const dhx_stmt *s) {
  switch (s->kind) {
    case STMT_ASSIGN: {
      value v = eval(c, f, s->value);
      if (!c->failed) bind(f, s->name, v);
      break;
    }
    case STMT_RETURN:
      f->ret = eval(c, f, s->value);
      f->returned = true;
      break;
    case STMT_REPEAT: {
      value n = eval(c, f, s->value);
      if (c->failed) return;
      c->from = n.from;
      if (n.k != V_INT || n.i < 0 || n.i > 100000) {
        FAIL(c, &s->value->loc, "repeat count must be an integer from 0 to 100000");
        return;
      }
      // A repeat in the model body itself is its layer stack: each iteration is one layer
      // (pipeline stages and the memory estimate divide the model by these).
      bool stack = c->depth == 0 && c->layer < 0;
      if (stack && !c->g->layers_loc.file) {
        c->g->layers_loc = s->loc;
        c->g->layers_from = n.from;
      }
      for (int64_t i = 0; i < n.i && !c->failed && !f->returned; i++) {
        if (stack) c->layer = c->g->nlayers++;
        if (s->name) bind(f, s->name, (value){.k = V_INT, .i = i});
        exec_body(c, f, s->body, s->nbody);
      }
      if (stack) c->layer = -1;
      break;
    }
  }
}

static void exec_body(ctx *c, frame *f, dhx_stmt *const *body, int n) {
  for (int i = 0; i < n && !c->failed && !f->returned; i++) exec_stmt(c, f, body[i]);
}

// Checks a tensor argument against a declared shape, binding symbolic dims on first sight.
static bool match_shape(ctx *c, frame *callee, const dhx_param *p, value arg,
                        const dhx_expr *site) {
  const dhx_tensor *x = T(c, arg.t);
  if (p->ndims != x->ndim) {
    FAIL(c, &site->loc, "'%s' expects a %d-dimensional tensor, got %d dimensions", p->name,
         p->ndims, x->ndim);
    dhx_note_at(&p->loc, src_of(&p->loc), "parameter declared here");
    return false;
  }
  for (int d = 0; d < p->ndims; d++) {
    const dhx_expr *de = p->dims[d];
    if (de->kind == EXPR_IDENT && !lookup(callee, de->str)) {
      uint64_t from = d == x->ndim - 1 ? arg.from : 0;
      bind(callee, de->str, (value){.k = V_INT, .i = x->shape[d], .from = from});
      continue;
    }
    value v = eval(c, callee, de);
    if (c->failed) return false;
    if (v.k != V_INT || v.i != x->shape[d]) {
      FAIL(c, &site->loc, "dimension %d of '%s' must be %lld, got %lld", d, p->name,
           (long long)(v.k == V_INT ? v.i : -1), (long long)x->shape[d]);
      dhx_note_at(&p->loc, src_of(&p->loc), "parameter declared here");
      return false;
    }
  }
  return true;
}

static bool type_ok(const dhx_param *p, value v) {
  switch (p->type) {
    case TYPE_INT: return v.k == V_INT;
    case TYPE_FLOAT: return v.k == V_FLOAT || v.k == V_INT;
    case TYPE_BOOL: return v.k == V_BOOL;
    case TYPE_STR: return v.k == V_STR;
    case TYPE_TENSOR: return v.k == V_TENSOR;
  }
  return false;
}

// Binds a definition's parameters from a call, into a new frame.
static bool bind_params(ctx *c, frame *caller, frame *callee, const dhx_item *def,
                        const dhx_expr *call) {
  value vals[64];
  const char *names[64];
  if (def->nparams > 64) {
    FAIL(c, &def->name_loc, "'%s' has more than 64 parameters", def->name);
    return false;
  }
  for (int i = 0; i < def->nparams; i++) names[i] = def->params[i].name;
  if (!bind_call_args(c, caller, call, names, def->nparams, vals)) return false;
  for (int i = 0; i < def->nparams; i++) {
    const dhx_param *p = &def->params[i];
    if (vals[i].k == V_NONE) {
      if (!p->default_value) {
        FAIL(c, &call->loc, "missing argument '%s' of '%s'", p->name, def->name);
        dhx_note_at(&def->name_loc, src_of(&def->name_loc), "'%s' defined here", def->name);
        return false;
      }
      vals[i] = eval(c, callee, p->default_value);  // defaults see earlier parameters
      if (c->failed) return false;
    }
    if (vals[i].k == V_INT && p->type == TYPE_FLOAT)
      vals[i] = (value){.k = V_FLOAT, .f = (double)vals[i].i, .from = vals[i].from};
    if (!type_ok(p, vals[i])) {
      FAIL(c, &call->loc, "argument '%s' of '%s' must be %s, got %s", p->name, def->name,
           p->type == TYPE_TENSOR ? "a tensor" : p->type == TYPE_INT ? "an integer"
           : p->type == TYPE_FLOAT ? "a number" : p->type == TYPE_BOOL ? "a boolean" : "a string",
           kind_name(vals[i].k));
      return false;
    }
    bind(callee, p->name, vals[i]);
  }
  for (int i = 0; i < def->nparams; i++)
    if (def->params[i].type == TYPE_TENSOR &&
        !match_shape(c, callee, &def->params[i], vals[i], call))
      return false;
  return true;
}

static value run_body(ctx *c, frame *callee, const dhx_item *def, const dhx_expr *site) {
  exec_body(c, callee, def->body, def->nbody);
  if (c->failed) return (value){0};
  if (!callee->returned) {
    FAIL(c, &site->loc, "'%s' ended without 'return'", def->name);
    dhx_note_at(&def->name_loc, src_of(&def->name_loc), "'%s' defined here", def->name);
    return (value){0};
  }
  return callee->ret;
}

static value call_layer(ctx *c, frame *f, const dhx_expr *call, const dhx_item *def) {
  if (c->depth >= MAX_CALL_DEPTH) {
    FAIL(c, &call->loc, "layer calls nested deeper than %d (recursive layer?)", MAX_CALL_DEPTH);
    return (value){0};
  }
  frame callee = {0};
  child_scope(f, def->name, callee.scope);
  c->depth++;
  value r = (value){0};
  if (bind_params(c, f, &callee, def, call)) {  // errors in the arguments belong to the caller
    int caller_site = c->call_site;
    c->call_site = dhx_site_new(c->g, &call->loc, def->name, caller_site);
    r = run_body(c, &callee, def, call);
    c->call_site = caller_site;
  }
  c->depth--;
  free(callee.vars);
  return r;
}

// ---- the model instance ---------------------------------------------------------------------

// A model's first two tensor parameters are its inputs: token ids and next-token targets, each
// [batch, ...] with batch bound to the micro-batch size.
static bool bind_model_inputs(ctx *c, frame *f, const dhx_item *def, const dhx_expr *site) {
  int seen = 0;
  for (int i = 0; i < def->nparams && seen < 2; i++) {
    const dhx_param *p = &def->params[i];
    if (p->type != TYPE_TENSOR) continue;
    if (p->ndims < 1 || p->ndims > 3) {
      FAIL(c, &p->loc, "model input '%s' must have 1 to 3 dimensions", p->name);
      return false;
    }
    int64_t shape[DHX_MAX_DIMS];
    uint64_t from = 0;  // of the last dimension
    shape[0] = c->micro_batch;
    if (p->dims[0]->kind == EXPR_IDENT && !lookup(f, p->dims[0]->str))
      bind(f, p->dims[0]->str, (value){.k = V_INT, .i = c->micro_batch});
    for (int d = 1; d < p->ndims; d++) {
      value v = eval(c, f, p->dims[d]);
      if (c->failed) return false;
      if (v.k != V_INT || v.i <= 0) {
        FAIL(c, &p->dims[d]->loc, "dimension %d of model input '%s' must be a positive integer",
             d, p->name);
        return false;
      }
      shape[d] = v.i;
      from = v.from;
    }
    if (p->dtype && strcmp(p->dtype, "i32") != 0) {
      FAIL(c, &p->loc, "model input '%s' holds token ids and must be i32", p->name);
      return false;
    }
    int t = dhx_tensor_new(c->g, seen == 0 ? "tokens" : "targets",
                           seen == 0 ? DHX_T_TOKENS : DHX_T_TARGETS, DHX_I32, p->ndims, shape);
    if (seen == 0) {
      c->g->tokens = t;
      c->g->seq = p->ndims > 1 ? (int)shape[1] : 1;
    } else {
      c->g->targets = t;
    }
    bind(f, p->name, tensor_value(t, from));
    seen++;
  }
  if (seen < 2) {
    FAIL(c, &site->loc, "model '%s' needs two tensor inputs (tokens and targets)", def->name);
    dhx_note_at(&def->name_loc, src_of(&def->name_loc), "'%s' defined here", def->name);
    return false;
  }
  return true;
}

bool dhx_elaborate(const dhx_program *prog, const dhx_item *inst, int micro_batch,
                   dhx_graph *g) {
  ctx c = {.g = g, .prog = prog, .micro_batch = micro_batch, .layer = -1, .call_site = -1,
           .inst_call = inst->value};
  const dhx_expr *call = inst->value;
  g->model_inst = inst;
  snprintf(g->model_name, sizeof g->model_name, "%s", inst->name);
  g->micro_batch = micro_batch;
  const dhx_item *def = dhx_find_definition(prog, call->str);
  if (!def || def->kind != ITEM_MODEL_DEF) {
    FAIL(&c, &call->loc, "'%s' is not a model definition", call->str);
    return false;
  }
  frame f = {0};
  // Scalar parameters first (input shapes may refer to them), then the inputs.
  frame caller = {0};
  value vals[64];
  const char *names[64] = {0};
  int nscalar = 0;
  int idx[64];
  for (int i = 0; i < def->nparams && nscalar < 64; i++)
    if (def->params[i].type != TYPE_TENSOR) {
      idx[nscalar] = i;
      names[nscalar++] = def->params[i].name;
    }
  bool ok = bind_call_args(&c, &caller, call, names, nscalar, vals);
  for (int k = 0; ok && k < nscalar; k++) {
    const dhx_param *p = &def->params[idx[k]];
    if (vals[k].k == V_NONE) {
      if (!p->default_value) {
        FAIL(&c, &call->loc, "missing argument '%s' of model '%s'", p->name, def->name);
        ok = false;
        break;
      }
      vals[k] = eval(&c, &f, p->default_value);
    }
    if (vals[k].k == V_INT && p->type == TYPE_FLOAT)
      vals[k] = (value){.k = V_FLOAT, .f = (double)vals[k].i, .from = vals[k].from};
    if (!c.failed && !type_ok(p, vals[k])) {
      FAIL(&c, &call->loc, "argument '%s' of model '%s' has the wrong type (%s)", p->name,
           def->name, kind_name(vals[k].k));
    }
    if (c.failed) {
      ok = false;
      break;
    }
    bind(&f, p->name, vals[k]);
  }
  ok = ok && bind_model_inputs(&c, &f, def, call);
  value r = ok ? run_body(&c, &f, def, call) : (value){0};
  free(f.vars);
  free(caller.vars);
  if (c.failed) return false;
  if (r.k != V_TENSOR || r.t != g->losses) {
    FAIL(&c, &call->loc, "model '%s' must return its loss (the result of cross_entropy)",
         def->name);
    return false;
  }
  return true;
}

// ---- where an error came from -----------------------------------------------------------------

static bool same_line_span(const dhx_loc *at, const dhx_loc *span) {
  return at && at->file && span->file && strcmp(at->file, span->file) == 0 &&
         at->line >= span->line && at->line <= span->end_line;
}

void dhx_note_instantiation(const dhx_graph *g, int site, uint64_t from, const dhx_loc *at) {
  for (int s = site; s >= 0 && s < g->nsites; s = g->sites[s].parent)
    dhx_note_at(&g->sites[s].loc, src_of(&g->sites[s].loc), "in layer '%s' called here",
                g->sites[s].name);
  const dhx_item *inst = g->model_inst;
  if (!inst || !inst->value || inst->value->kind != EXPR_CALL) return;
  const dhx_expr *call = inst->value;
  if (!same_line_span(at, &inst->loc)) {  // an error at the instance is there already
    dhx_loc callee = call->loc;
    callee.end_line = callee.line;
    callee.end_col = callee.col + (int)strlen(call->str);
    dhx_note_at(&callee, src_of(&callee), "in model '%s', an instance of '%s'", inst->name,
                call->str);
  }
  for (int i = 0; i < call->nargs && i < 64; i++) {
    const dhx_arg *a = &call->args[i];
    if (!(from >> i & 1) || !a->name) continue;
    char path[DHX_NAME_MAX + 8];
    snprintf(path, sizeof path, "model.%s", a->name);
    dhx_note_set_value(&a->value->loc, path);
  }
}
