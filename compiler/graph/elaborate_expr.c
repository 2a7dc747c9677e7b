// elaborate_expr.c — expressions: numbers, names, arithmetic with overflow checks, tensor
// operators, calls of primitive ops and layers, and binding a call's arguments.
#include <math.h>
#include <string.h>

#include "elaborate_internal.h"
#include "ice.h"

static value eval_call(ctx *c, frame *f, const dhx_expr *e, const dhx_expr *annot) {
  const char *n = e->str;
  c->site = e;
  c->from = 0;
  if (annot && strcmp(n, "linear") != 0) {
    FAIL(c, &annot->loc, "@%s applies to 'linear' calls only", annot->str);
    return (value){0};
  }
  value op;
  if (elab_primitive_op(c, f, e, annot, &op)) return op;
  const dhx_item *def = dhx_find_definition(c->prog, n);
  if (def && def->kind == ITEM_LAYER) return elab_call_layer(c, f, e, def);
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

value elab_eval(ctx *c, frame *f, const dhx_expr *e) {
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
      value *v = elab_lookup(f, e->str);
      if (v) return *v;
      FAIL(c, &e->loc, "unknown name '%s'", e->str);
      return (value){0};
    }
    case EXPR_NEG: {
      value v = elab_eval(c, f, e->lhs);
      if (v.k == V_INT) return (value){.k = V_INT, .i = -v.i, .from = v.from};
      if (v.k == V_FLOAT) return (value){.k = V_FLOAT, .f = -v.f, .from = v.from};
      if (!c->failed) FAIL(c, &e->loc, "cannot negate %s", kind_name(v.k));
      return (value){0};
    }
    case EXPR_BINOP: {
      value l = elab_eval(c, f, e->lhs), r = elab_eval(c, f, e->rhs);
      if (c->failed) return (value){0};
      if (l.k == V_TENSOR && r.k == V_TENSOR && (e->op == '+' || e->op == '*'))
        return elab_elementwise(c, f, e, l, r);
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
bool elab_bind_call_args(ctx *c, frame *f, const dhx_expr *call, const char *const *names,
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
    out[i] = elab_eval(c, f, slot[i]->value);
    long k = slot[i] - call->args;  // the instance's arguments are where taint starts
    if (call == c->inst_call && k < 64) out[i].from |= 1ull << k;
    from |= out[i].from;
  }
  c->from = from;
  return !c->failed;
}
