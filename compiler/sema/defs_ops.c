// defs_ops.c — the type and shape rule of each primitive op, on symbolic values.
//
// The same rules elaborate.c applies to concrete shapes, stated for every instance at once:
// `linear(x, out)` keeps x's leading dimensions and ends in `out`, `attention` over a fused
// projection keeps a third of its features, and so on. What depends on the actual numbers
// (divisibility, positivity of a computed size) is left to elaboration unless the numbers are
// already known here.
#include <stdio.h>
#include <string.h>

#include "ice.h"
#include "defs_internal.h"

#define FAIL(at, ...) dhx_error_at((at), sem_src(at), __VA_ARGS__)

// Binds and evaluates a call's arguments in the op's parameter order; slots not given stay
// K_ERR with `given` false.
static bool bind(fn *f, const dhx_op_sig *sig, const dhx_expr *call, sval *vals, bool *given) {
  const char *names[DHX_OP_MAX_PARAMS + 1];
  for (int i = 0; i < sig->nparams; i++) names[i] = sig->params[i];
  names[sig->nparams] = NULL;
  const dhx_arg *slot[DHX_OP_MAX_PARAMS];
  bool ok = dhx_match_call_args(call, sig->name, names, sig->nparams, NULL, slot);
  for (int i = 0; i < sig->nparams; i++) {
    given[i] = slot[i] != NULL;
    vals[i] = slot[i] ? sem_eval(f, slot[i]->value) : sem_err();
  }
  return ok;
}

// Requirements on one argument; K_ERR arguments pass silently (already reported).
static bool want(fn *f, const dhx_expr *call, const dhx_op_sig *sig, const sval *vals,
                 const bool *given, int i, sem_kind k, bool optional) {
  (void)f;
  if (!given[i]) {
    if (optional) return true;
    FAIL(&call->loc, "missing argument '%s' of '%s'", sig->params[i], sig->name);
    return false;
  }
  sem_kind got = vals[i].k;
  if (got == K_ERR) return false;
  if (got == k || (k == K_FLOAT && got == K_INT)) return true;
  FAIL(&call->loc, "'%s' of '%s' must be %s, got %s", sig->params[i], sig->name,
       sem_kind_name(k), sem_kind_name(got));
  return false;
}

static bool positive_if_known(const dhx_expr *call, const dhx_op_sig *sig, const sval *v, int i) {
  int64_t c;
  if (!v->i || !dhx_sym_is_const(v->i, &c) || c >= 1) return true;
  FAIL(&call->loc, "'%s' of '%s' must be at least 1, got %lld", sig->params[i], sig->name, (long long)c);
  return false;
}

static bool want_rank(fn *f, const dhx_expr *call, const char *param, const char *op,
                      const sval *x, int lo, int hi, const char *form) {
  if (x->ndim >= lo && x->ndim <= hi) return true;
  char sh[128];
  FAIL(&call->loc, "'%s' of '%s' must be %s, got %s", param, op, form,
       sem_shape_text(f, x, sh, sizeof sh));
  return false;
}

static sval tensor_like(const sval *x) {
  sval r = *x;
  r.i32 = false;
  return r;
}

// @split(col | row): only on linear.
static bool check_split(const dhx_expr *annot) {
  static const char *const known[] = {"split", NULL};
  if (strcmp(annot->str, "split") != 0) {
    const char *hint = dhx_suggest(annot->str, known);
    if (hint)
      FAIL(&annot->loc, "unknown annotation '@%s'; did you mean '@%s'?", annot->str, hint);
    else
      FAIL(&annot->loc, "unknown annotation '@%s' (known: @split)", annot->str);
    return false;
  }
  if (annot->nargs != 1 || annot->args[0].name || annot->args[0].value->kind != EXPR_IDENT) {
    FAIL(&annot->loc, "@split takes one argument: col or row");
    return false;
  }
  const char *s = annot->args[0].value->str;
  if (strcmp(s, "col") == 0 || strcmp(s, "row") == 0) return true;
  FAIL(&annot->args[0].value->loc, "@split takes col or row, got '%s'", s);
  return false;
}

sval sem_op(fn *f, const dhx_op_sig *sig, const dhx_expr *call, const dhx_expr *annot) {
  sval v[DHX_OP_MAX_PARAMS];
  bool given[DHX_OP_MAX_PARAMS];
  bool ok = bind(f, sig, call, v, given);
  const char *op = sig->name;
  char sh[128], sh2[128];
  if (annot && sig->op != DHX_N_LINEAR) {
    FAIL(&annot->loc, "@%s applies to 'linear' calls only", annot->str);
    ok = false;
  }
  if (!ok) return sem_err();

  if (sig->op == DHX_N_EMBEDDING) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 1, K_INT, false) &
                want(f, call, sig, v, given, 2, K_INT, false);
    if (!good) return sem_err();
    if (!v[0].i32 || v[0].ndim > 3) {
      FAIL(&call->loc, "'tokens' of 'embedding' must be an i32 tensor of token ids, got %s%s",
           v[0].i32 ? "" : "f32 ", sem_shape_text(f, &v[0], sh, sizeof sh));
      return sem_err();
    }
    if (!positive_if_known(call, sig, &v[1], 1) || !positive_if_known(call, sig, &v[2], 2)) return sem_err();
    sval r = tensor_like(&v[0]);
    r.dims[r.ndim++] = v[2].i;
    return r;
  }
  if (sig->op == DHX_N_POS_EMBEDDING) {
    if (!want(f, call, sig, v, given, 0, K_TENSOR, false) ||
        !want_rank(f, call, "x", op, &v[0], 3, 3, "[batch, seq, dim]"))
      return sem_err();
    return tensor_like(&v[0]);
  }
  if (sig->op == DHX_N_LAYERNORM || sig->op == DHX_N_RMSNORM) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 1, K_FLOAT, true);
    if (!good || !want_rank(f, call, "x", op, &v[0], 2, DHX_MAX_DIMS, "a tensor of 2 or more dimensions"))
      return sem_err();
    return tensor_like(&v[0]);
  }
  if (sig->op == DHX_N_LINEAR) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 1, K_INT, false) &
                want(f, call, sig, v, given, 2, K_BOOL, true);
    if (annot && !check_split(annot)) good = false;
    if (!good || !want_rank(f, call, "x", op, &v[0], 2, DHX_MAX_DIMS, "a tensor of 2 or more dimensions") ||
        !positive_if_known(call, sig, &v[1], 1))
      return sem_err();
    sval r = tensor_like(&v[0]);
    r.dims[r.ndim - 1] = v[1].i;
    return r;
  }
  if (sig->op == DHX_N_ATTENTION) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 3, K_INT, false) &
                want(f, call, sig, v, given, 4, K_INT, true) & want(f, call, sig, v, given, 5, K_BOOL, true);
    bool fused = !given[1] && !given[2];
    if (!fused) good &= want(f, call, sig, v, given, 1, K_TENSOR, false) & want(f, call, sig, v, given, 2, K_TENSOR, false);
    if (!good || !want_rank(f, call, fused ? "qkv" : "q", op, &v[0], 3, 3, "[batch, seq, features]"))
      return sem_err();
    if (!positive_if_known(call, sig, &v[3], 3)) return sem_err();
    sval r = tensor_like(&v[0]);
    if (fused) {
      if (given[4]) {
        FAIL(&call->loc, "grouped-query attention (kv_heads) needs separate q, k and v");
        return sem_err();
      }
      r.dims[2] = dhx_sym_div(sem_syms(f), v[0].dims[2], dhx_sym_const(sem_syms(f), 3));
      return r;
    }
    for (int t = 1; t <= 2; t++) {
      if (!want_rank(f, call, t == 1 ? "k" : "v", op, &v[t], 3, 3, "[batch, seq, features]")) return sem_err();
      if (!sem_same_dims(&v[0], &v[t], 0, 2)) {
        FAIL(&call->loc, "'%s' of 'attention' must have the batch and sequence of 'q' (%s), got %s",
             t == 1 ? "k" : "v", sem_shape_text(f, &v[0], sh, sizeof sh),
             sem_shape_text(f, &v[t], sh2, sizeof sh2));
        return sem_err();
      }
    }
    if (!sem_same_dims(&v[1], &v[2], 2, 3)) {
      FAIL(&call->loc, "'k' and 'v' of 'attention' must have the same shape, got %s and %s",
           sem_shape_text(f, &v[1], sh, sizeof sh), sem_shape_text(f, &v[2], sh2, sizeof sh2));
      return sem_err();
    }
    return r;
  }
  if (sig->op == DHX_N_ROPE) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 1, K_INT, false) &
                want(f, call, sig, v, given, 2, K_FLOAT, true);
    if (!good || !want_rank(f, call, "x", op, &v[0], 3, 3, "[batch, seq, heads * head_size]") ||
        !positive_if_known(call, sig, &v[1], 1))
      return sem_err();
    return tensor_like(&v[0]);
  }
  if (sig->op == DHX_N_GELU || sig->op == DHX_N_SILU) {
    if (!want(f, call, sig, v, given, 0, K_TENSOR, false)) return sem_err();
    return tensor_like(&v[0]);
  }
  if (sig->op == DHX_N_CROSS_ENTROPY) {
    bool good = want(f, call, sig, v, given, 0, K_TENSOR, false) & want(f, call, sig, v, given, 1, K_TENSOR, false);
    if (!good || !want_rank(f, call, "logits", op, &v[0], 2, DHX_MAX_DIMS, "a tensor of 2 or more dimensions"))
      return sem_err();
    if (!v[1].i32 || v[1].ndim != v[0].ndim - 1 || !sem_same_dims(&v[0], &v[1], 0, v[1].ndim)) {
      FAIL(&call->loc, "'targets' of 'cross_entropy' must be i32 ids, one per row of 'logits' %s, got %s%s",
           sem_shape_text(f, &v[0], sh, sizeof sh), v[1].i32 ? "" : "f32 ",
           sem_shape_text(f, &v[1], sh2, sizeof sh2));
      return sem_err();
    }
    return (sval){.k = K_LOSS};
  }
  DHX_ICE("primitive op '%s' has no shape rule (every op ops.def calls by name needs one here)", op);
}
