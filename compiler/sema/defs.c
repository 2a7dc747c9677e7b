// defs.c — checks every layer and model definition once, for all its instances.
//
// A definition's integer parameters and the unbound names in its tensor types are symbolic
// variables (symbolic.h), so its body is checked without knowing the numbers: names resolve
// (with a did-you-mean), types agree, and tensor shapes follow each op's rule (defs_ops.c) as
// polynomials — `x + linear(a, 3 * hidden)` with x of [B, S, hidden] is an error in the layer
// itself, whatever instance it would later have. Each definition yields its return value in
// terms of its own variables; a call substitutes the caller's arguments, so checking is
// linear in the program, not in its unrolled size. A `repeat` body is checked twice (the
// second time with the values of the first), and must keep every variable's shape. Then the
// model instance's arguments are matched against its model. Definitions of the main module
// also get warnings for parameters, variables and layers that are never used.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defs_internal.h"
#include "sema.h"

#define MAX_PARAMS 64
#define MAX_SHAPE_VARS 32

const char *sem_src(const dhx_loc *loc) { return dhx_source_for(loc->file); }
#define FAIL(at, ...) dhx_error_at((at), sem_src(at), __VA_ARGS__)

// The span of a call's callee name.
static dhx_loc callee_loc(const dhx_expr *call) {
  dhx_loc l = call->loc;
  l.end_line = l.line;
  l.end_col = l.col + (int)strlen(call->str);
  return l;
}

// What checking a definition leaves for its callers.
typedef struct defcheck {
  const dhx_item *def;
  int index;                       // position in the program (the first of a name wins)
  int state;                       // 0 not checked, 1 being checked, 2 done
  bool ok, used;
  bool in_main;                    // defined in the main file (gets unused warnings)
  sval pval[MAX_PARAMS];           // each parameter as the body sees it
  sval pdefault[MAX_PARAMS];       // K_ERR when the parameter has no default
  const dhx_sym *svars[MAX_SHAPE_VARS];  // variables of the tensor types (B, S, ...)
  int nsvars;
  sval ret;
} defcheck;

struct checker {
  const dhx_program *prog;
  dhx_symtab *syms;
  defcheck *defs;
  int ndefs;
  int depth;
};

dhx_symtab *sem_syms(fn *f) { return f->ck->syms; }
sval sem_err(void) { return (sval){.k = K_ERR}; }
sval sem_int(const dhx_sym *v) { return (sval){.k = K_INT, .i = v}; }

const char *sem_kind_name(sem_kind k) {
  static const char *n[] = {"an error", "an integer", "a number", "a boolean", "a string",
                            "a tensor", "a loss"};
  return n[k];
}

const char *sem_shape_text(fn *f, const sval *v, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < v->ndim && len < n; i++) {
    char d[96];
    dhx_sym_text(f->ck->syms, v->dims[i], d, sizeof d);
    len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", d);
  }
  if (len < n) snprintf(buf + len, n - len, "]");
  return buf;
}

bool sem_same_dims(const sval *a, const sval *b, int from, int to) {
  for (int i = from; i < to; i++)
    if (i >= a->ndim || i >= b->ndim ||
        (a->dims[i] && b->dims[i] && !dhx_sym_equal(a->dims[i], b->dims[i])))
      return false;
  return true;
}

static bool same_shape(const sval *a, const sval *b) {
  return a->ndim == b->ndim && a->i32 == b->i32 && sem_same_dims(a, b, 0, a->ndim);
}

// ---- scopes -------------------------------------------------------------------------------------

static sem_var *lookup(fn *f, const char *name) {
  for (int i = f->nvars - 1; i >= 0; i--)
    if (strcmp(f->vars[i].name, name) == 0) return &f->vars[i];
  return NULL;
}

static sem_var *declare(fn *f, const char *name, sval v, const dhx_loc *loc) {
  if (f->nvars == f->cap) {
    f->cap = f->cap ? 2 * f->cap : 16;
    f->vars = realloc(f->vars, (size_t)f->cap * sizeof *f->vars);
    if (!f->vars) abort();
  }
  sem_var *x = &f->vars[f->nvars++];
  *x = (sem_var){.name = name, .v = v, .loc = *loc};
  return x;
}

static void warn_unused(fn *f, const sem_var *x) {
  if (!f->warn || x->used || x->loop || x->name[0] == '_') return;
  if (x->param)
    dhx_warning_at(&x->loc, sem_src(&x->loc), "parameter '%s' of '%s' is never used", x->name,
                   f->def->name);
  else
    dhx_warning_at(&x->loc, sem_src(&x->loc), "the value assigned to '%s' is never used", x->name);
}

// x = v: a new binding; the old one, if never read, was a wasted assignment.
static void assign(fn *f, const char *name, sval v, const dhx_loc *loc) {
  sem_var *x = lookup(f, name);
  if (!x) {
    declare(f, name, v, loc);
    return;
  }
  if (!x->param) warn_unused(f, x);
  x->v = v;
  x->loc = *loc;
  x->used = false;
  x->param = false;
}

// Names visible in f (for did-you-mean), NULL-terminated.
static void visible_names(fn *f, const char **out, int n) {
  int k = 0;
  for (int i = 0; i < f->nvars && k < n - 1; i++) out[k++] = f->vars[i].name;
  out[k] = NULL;
}

// ---- expressions --------------------------------------------------------------------------------

static sval call_value(fn *f, const dhx_expr *call, const dhx_expr *annot);

static sval arith(fn *f, const dhx_expr *e, sval l, sval r) {
  dhx_symtab *t = f->ck->syms;
  if (l.k == K_ERR || r.k == K_ERR) return sem_err();
  if (l.k == K_INT && r.k == K_INT) {
    int64_t c;
    if ((e->op == '/' || e->op == '%') && r.i && dhx_sym_is_const(r.i, &c) && c == 0) {
      FAIL(&e->loc, "division by zero");
      return sem_err();
    }
    const dhx_sym *v = NULL;
    switch (e->op) {
      case '+': v = dhx_sym_add(t, l.i, r.i); break;
      case '-': v = dhx_sym_sub(t, l.i, r.i); break;
      case '*': v = dhx_sym_mul(t, l.i, r.i); break;
      case '/': v = dhx_sym_div(t, l.i, r.i); break;
      case '%': v = dhx_sym_mod(t, l.i, r.i); break;
    }
    int64_t a, b;
    if (!v && l.i && r.i && dhx_sym_is_const(l.i, &a) && dhx_sym_is_const(r.i, &b)) {
      FAIL(&e->loc, "integer overflow");
      return sem_err();
    }
    return sem_int(v);
  }
  if ((l.k == K_INT || l.k == K_FLOAT) && (r.k == K_INT || r.k == K_FLOAT)) return (sval){.k = K_FLOAT};
  if (l.k == K_TENSOR && r.k == K_TENSOR && (e->op == '+' || e->op == '*')) {
    char a[160], b[160];
    if (l.i32 || r.i32) {
      FAIL(&e->loc, "cannot %s token ids", e->op == '+' ? "add" : "multiply");
      return sem_err();
    }
    if (!same_shape(&l, &r)) {
      FAIL(&e->loc, "cannot %s tensors of different shapes: %s and %s",
           e->op == '+' ? "add" : "multiply", sem_shape_text(f, &l, a, sizeof a),
           sem_shape_text(f, &r, b, sizeof b));
      return sem_err();
    }
    return l;
  }
  if (l.k == K_TENSOR || r.k == K_TENSOR) {
    FAIL(&e->loc, "'%c' on tensors is not supported (tensor + tensor and tensor * tensor are)", e->op);
    return sem_err();
  }
  FAIL(&e->loc, "cannot apply '%c' to %s and %s", e->op, sem_kind_name(l.k), sem_kind_name(r.k));
  return sem_err();
}

sval sem_eval(fn *f, const dhx_expr *e) {
  switch (e->kind) {
    case EXPR_NUM:
      if (e->unit != DHX_UNIT_NONE) {
        FAIL(&e->loc, "a quantity with a unit is not allowed in a model");
        return sem_err();
      }
      if (e->is_int) return sem_int(dhx_sym_const(f->ck->syms, (int64_t)e->num));
      return (sval){.k = K_FLOAT};
    case EXPR_STR: return (sval){.k = K_STR};
    case EXPR_BOOL: return (sval){.k = K_BOOL};
    case EXPR_IDENT: {
      sem_var *x = lookup(f, e->str);
      if (x) {
        x->used = true;
        return x->v;
      }
      const char *names[128];
      visible_names(f, names, 128);
      const char *hint = dhx_suggest(e->str, names);
      if (hint) FAIL(&e->loc, "unknown name '%s'; did you mean '%s'?", e->str, hint);
      else FAIL(&e->loc, "unknown name '%s'", e->str);
      return sem_err();
    }
    case EXPR_NEG: {
      sval v = sem_eval(f, e->lhs);
      if (v.k == K_INT) return sem_int(dhx_sym_neg(f->ck->syms, v.i));
      if (v.k == K_FLOAT || v.k == K_ERR) return v;
      FAIL(&e->loc, "cannot negate %s", sem_kind_name(v.k));
      return sem_err();
    }
    case EXPR_BINOP: {
      sval l = sem_eval(f, e->lhs), r = sem_eval(f, e->rhs);
      return arith(f, e, l, r);
    }
    case EXPR_CALL: return call_value(f, e, NULL);
    case EXPR_ANNOT:
      if (e->lhs->kind != EXPR_CALL) {
        FAIL(&e->loc, "an annotation must follow a call");
        sem_eval(f, e->lhs);
        return sem_err();
      }
      return call_value(f, e->lhs, e);
    case EXPR_TUPLE:
      FAIL(&e->loc, "tuples are not values in a model");
      return sem_err();
  }
  return sem_err();
}

// ---- definitions ----------------------------------------------------------------------------------

// Definitions are sorted by name (then program order), so a lookup is a binary search even
// in a program of many thousands of layers.
static int def_cmp(const void *a, const void *b) {
  const defcheck *x = a, *y = b;
  int c = strcmp(x->def->name, y->def->name);
  return c ? c : (x->index > y->index) - (x->index < y->index);
}

static defcheck *find_def(checker *ck, const char *name) {
  int lo = 0, hi = ck->ndefs;
  while (lo < hi) {  // the first entry whose name is not below `name`
    int mid = lo + (hi - lo) / 2;
    if (strcmp(ck->defs[mid].def->name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < ck->ndefs && strcmp(ck->defs[lo].def->name, name) == 0 ? &ck->defs[lo] : NULL;
}

static bool type_matches(dhx_type_kind t, const sval *v) {
  switch (t) {
    case TYPE_INT: return v->k == K_INT;
    case TYPE_FLOAT: return v->k == K_FLOAT || v->k == K_INT;
    case TYPE_BOOL: return v->k == K_BOOL;
    case TYPE_STR: return v->k == K_STR;
    case TYPE_TENSOR: return v->k == K_TENSOR;
  }
  return false;
}

static const char *type_name(dhx_type_kind t) {
  static const char *n[] = {"an integer", "a number", "a boolean", "a string", "a tensor"};
  return n[t];
}

static void check_def(checker *ck, defcheck *d);
static void run_body(fn *f, dhx_stmt *const *body, int n);

// The value of a tensor parameter's declared type: [B, S, hidden] with B, S shape variables.
static sval tensor_type(fn *f, defcheck *d, const dhx_param *p) {
  sval v = {.k = K_TENSOR, .ndim = p->ndims, .i32 = p->dtype && strcmp(p->dtype, "i32") == 0};
  if (p->dtype && strcmp(p->dtype, "i32") != 0 && strcmp(p->dtype, "f32") != 0) {
    FAIL(&p->loc, "unknown element type '%s' (i32 for token ids, f32 otherwise)", p->dtype);
    return sem_err();
  }
  if (p->ndims < 1 || p->ndims > DHX_MAX_DIMS) {
    FAIL(&p->loc, "'%s' has %d dimensions (1 to %d are supported)", p->name, p->ndims, DHX_MAX_DIMS);
    return sem_err();
  }
  for (int i = 0; i < p->ndims; i++) {
    const dhx_expr *e = p->dims[i];
    if (e->kind == EXPR_IDENT && !lookup(f, e->str)) {
      if (d->nsvars == MAX_SHAPE_VARS) {
        FAIL(&e->loc, "more than %d dimension names in '%s'", MAX_SHAPE_VARS, d->def->name);
        return sem_err();
      }
      const dhx_sym *s = dhx_sym_var(f->ck->syms, e->str);
      d->svars[d->nsvars++] = s;
      sem_var *x = declare(f, e->str, sem_int(s), &e->loc);
      x->loop = true;  // a dimension name needs no use
      v.dims[i] = s;
      continue;
    }
    sval dv = sem_eval(f, e);
    if (dv.k == K_ERR) return sem_err();
    if (dv.k != K_INT) {
      FAIL(&e->loc, "a dimension must be an integer, got %s", sem_kind_name(dv.k));
      return sem_err();
    }
    v.dims[i] = dv.i;
  }
  return v;
}

// Parameters: scalars become variables (defaults checked in the scope of the ones before),
// then tensor types, which may use any scalar parameter.
static bool bind_params(fn *f, defcheck *d) {
  const dhx_item *def = d->def;
  if (def->nparams > MAX_PARAMS) {
    FAIL(&def->name_loc, "'%s' has more than %d parameters", def->name, MAX_PARAMS);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < def->nparams; i++) {
    const dhx_param *p = &def->params[i];
    for (int j = 0; j < i; j++)
      if (strcmp(def->params[j].name, p->name) == 0) {
        FAIL(&p->loc, "parameter '%s' is declared twice", p->name);
        dhx_note_at(&def->params[j].loc, sem_src(&def->params[j].loc), "first declared here");
        ok = false;
      }
    d->pdefault[i] = sem_err();
    if (p->type == TYPE_TENSOR) continue;
    if (p->default_value) {
      sval dv = sem_eval(f, p->default_value);
      if (dv.k != K_ERR && !type_matches(p->type, &dv)) {
        FAIL(&p->default_value->loc, "the default of '%s' must be %s, got %s", p->name,
             type_name(p->type), sem_kind_name(dv.k));
        ok = false;
      } else {
        d->pdefault[i] = dv.k == K_INT && p->type == TYPE_FLOAT ? (sval){.k = K_FLOAT} : dv;
      }
    }
    sval pv = {.k = p->type == TYPE_INT ? K_INT : p->type == TYPE_FLOAT ? K_FLOAT
                    : p->type == TYPE_BOOL ? K_BOOL : K_STR};
    if (p->type == TYPE_INT) pv.i = dhx_sym_var(f->ck->syms, p->name);
    d->pval[i] = pv;
    declare(f, p->name, pv, &p->loc)->param = true;
  }
  for (int i = 0; i < def->nparams; i++) {
    const dhx_param *p = &def->params[i];
    if (p->type != TYPE_TENSOR) continue;
    if (p->default_value) {
      FAIL(&p->default_value->loc, "a tensor parameter cannot have a default");
      ok = false;
    }
    d->pval[i] = tensor_type(f, d, p);
    if (d->pval[i].k == K_ERR) ok = false;
    declare(f, p->name, d->pval[i], &p->loc)->param = true;
  }
  return ok;
}

static void check_model_inputs(const defcheck *d) {
  const dhx_item *def = d->def;
  int seen = 0;
  for (int i = 0; i < def->nparams && seen < 2; i++) {
    if (def->params[i].type != TYPE_TENSOR) continue;
    const sval *v = &d->pval[i];
    if (v->k == K_TENSOR && (!v->i32 || v->ndim > 3)) {
      FAIL(&def->params[i].loc, "model input '%s' holds token ids: it must be [batch, ...] i32 "
           "with 1 to 3 dimensions", def->params[i].name);
    }
    seen++;
  }
  if (seen < 2)
    FAIL(&def->name_loc, "model '%s' needs two tensor inputs (tokens and targets), as in "
         "'model %s(tokens: [B, seq] i32, targets: [B, seq] i32, ...)'", def->name, def->name);
}

static void check_def(checker *ck, defcheck *d) {
  if (d->state != 0) return;
  d->state = 1;
  int errors = dhx_diag.errors;
  fn f = {.ck = ck, .def = d->def, .warn = d->in_main};
  bool ok = bind_params(&f, d);
  if (d->def->kind == ITEM_MODEL_DEF) check_model_inputs(d);
  run_body(&f, d->def->body, d->def->nbody);
  if (!f.returned) {
    FAIL(&d->def->name_loc, "'%s' never returns a value (it needs a 'return')", d->def->name);
    ok = false;
  } else if (d->def->kind == ITEM_MODEL_DEF && f.ret.k != K_LOSS && f.ret.k != K_ERR) {
    char sh[160] = "";
    if (f.ret.k == K_TENSOR) sem_shape_text(&f, &f.ret, sh, sizeof sh);
    FAIL(&d->def->name_loc, "model '%s' must return its loss (the result of cross_entropy), "
         "but returns %s %s", d->def->name, sem_kind_name(f.ret.k), sh);
    ok = false;
  } else if (d->def->kind == ITEM_LAYER && f.ret.k == K_LOSS) {
    FAIL(&d->def->name_loc, "layer '%s' returns a loss; only a model may (layers return tensors)",
         d->def->name);
    ok = false;
  }
  for (int i = 0; i < f.nvars; i++) warn_unused(&f, &f.vars[i]);
  d->ret = f.ret;
  d->ok = ok && dhx_diag.errors == errors && f.ret.k != K_ERR;
  d->state = 2;
  free(f.vars);
}

// ---- statements -----------------------------------------------------------------------------------

static void check_repeat(fn *f, const dhx_stmt *s) {
  sval n = sem_eval(f, s->value);
  int64_t c;
  if (n.k != K_INT && n.k != K_ERR) {
    FAIL(&s->value->loc, "a repeat count must be an integer, got %s", sem_kind_name(n.k));
  } else if (n.k == K_INT && n.i && dhx_sym_is_const(n.i, &c) && (c < 0 || c > 100000)) {
    FAIL(&s->value->loc, "repeat count must be an integer from 0 to 100000, got %lld", (long long)c);
  }
  if (s->name) {
    sem_var *x = lookup(f, s->name);
    sval iv = sem_int(dhx_sym_var(f->ck->syms, s->name));
    if (x) {
      x->v = iv;
      x->loop = true;
    } else {
      declare(f, s->name, iv, &s->name_loc)->loop = true;
    }
  }
  // Twice: the second pass sees the values the first leaves, as the next iteration would.
  int before = f->nvars;
  sval *old = malloc(sizeof(sval) * (size_t)(before ? before : 1));
  if (!old) abort();
  for (int i = 0; i < before; i++) old[i] = f->vars[i].v;
  run_body(f, s->body, s->nbody);
  bool stable = true;
  for (int i = 0; i < before && !f->returned; i++) {
    const sval *a = &old[i], *b = &f->vars[i].v;
    if (a->k == K_ERR || b->k == K_ERR || f->vars[i].loop) continue;
    bool same = a->k == b->k && (a->k != K_TENSOR || same_shape(a, b));
    if (!same) {
      char x[160] = "", y[160] = "";
      if (a->k == K_TENSOR) sem_shape_text(f, a, x, sizeof x);
      else snprintf(x, sizeof x, "%s", sem_kind_name(a->k));
      if (b->k == K_TENSOR) sem_shape_text(f, b, y, sizeof y);
      else snprintf(y, sizeof y, "%s", sem_kind_name(b->k));
      FAIL(&f->vars[i].loc, "'%s' is %s before this repeat and %s after one iteration; every "
           "iteration must keep it the same", f->vars[i].name, x, y);
      dhx_note_at(&s->loc, sem_src(&s->loc), "the repeat");
      stable = false;
    }
  }
  free(old);
  if (stable && !f->returned) run_body(f, s->body, s->nbody);
}

static void run_body(fn *f, dhx_stmt *const *body, int n) {
  for (int i = 0; i < n; i++) {
    const dhx_stmt *s = body[i];
    if (f->returned) {
      if (f->warn)
        dhx_warning_at(&s->loc, sem_src(&s->loc), "this statement comes after 'return' and never runs");
      return;
    }
    switch (s->kind) {
      case STMT_ASSIGN: assign(f, s->name, sem_eval(f, s->value), &s->name_loc); break;
      case STMT_RETURN:
        f->ret = sem_eval(f, s->value);
        f->returned = true;
        break;
      case STMT_REPEAT: check_repeat(f, s); break;
    }
  }
}

// ---- calls of layers ------------------------------------------------------------------------------

typedef struct binding {
  const dhx_sym *vars[MAX_PARAMS + MAX_SHAPE_VARS];
  const dhx_sym *vals[MAX_PARAMS + MAX_SHAPE_VARS];
  int n;
} binding;

static void bind_var(binding *b, const dhx_sym *var, const dhx_sym *val) {
  for (int i = 0; i < b->n; i++)
    if (dhx_sym_equal(b->vars[i], var)) {
      if (!b->vals[i]) b->vals[i] = val;
      return;
    }
  b->vars[b->n] = var;
  b->vals[b->n++] = val;
}

// A callee's symbolic value at a call site; dimensions that still depend on something the
// call did not determine become unknown.
static const dhx_sym *at_call(checker *ck, const binding *b, const dhx_sym *s) {
  if (!s) return NULL;
  for (int i = 0; i < b->n; i++)
    if (!b->vals[i] && dhx_sym_has_var(ck->syms, s, b->vars[i])) return NULL;
  return dhx_sym_subst(ck->syms, s, b->vars, b->vals, b->n);
}

static sval sval_at_call(checker *ck, const binding *b, sval v) {
  if (v.k == K_INT) v.i = at_call(ck, b, v.i);
  if (v.k == K_TENSOR)
    for (int i = 0; i < v.ndim; i++) v.dims[i] = at_call(ck, b, v.dims[i]);
  return v;
}

// A definition's parameters matched by dhx_match_call_args.
static bool match_args(const dhx_expr *call, const dhx_item *def, const dhx_arg **slot) {
  const char *names[MAX_PARAMS + 1];
  int n = def->nparams < MAX_PARAMS ? def->nparams : MAX_PARAMS;
  for (int i = 0; i < n; i++) names[i] = def->params[i].name;
  names[n] = NULL;
  return dhx_match_call_args(call, def->name, names, n, &def->name_loc, slot);
}

static sval call_layer(fn *f, const dhx_expr *call, defcheck *d) {
  checker *ck = f->ck;
  d->used = true;
  if (d->state == 1) {
    FAIL(&call->loc, "'%s' calls itself (layers cannot be recursive)", d->def->name);
    return sem_err();
  }
  if (ck->depth > 64) return sem_err();
  ck->depth++;
  check_def(ck, d);
  ck->depth--;
  const dhx_item *def = d->def;
  const dhx_arg *slot[MAX_PARAMS] = {0};
  bool ok = match_args(call, def, slot);
  sval vals[MAX_PARAMS];
  for (int i = 0; i < def->nparams; i++) vals[i] = slot[i] ? sem_eval(f, slot[i]->value) : sem_err();
  if (!ok || !d->ok) return sem_err();
  binding b = {0};
  // scalars: the argument, or the default with the earlier parameters substituted
  for (int i = 0; i < def->nparams; i++) {
    const dhx_param *p = &def->params[i];
    if (p->type == TYPE_TENSOR) continue;
    if (!slot[i]) {
      if (d->pdefault[i].k == K_ERR) {
        FAIL(&call->loc, "missing argument '%s' of '%s'", p->name, def->name);
        dhx_note_at(&def->name_loc, sem_src(&def->name_loc), "'%s' is defined here", def->name);
        ok = false;
        continue;
      }
      vals[i] = sval_at_call(ck, &b, d->pdefault[i]);
    } else if (vals[i].k != K_ERR && !type_matches(p->type, &vals[i])) {
      FAIL(&slot[i]->value->loc, "argument '%s' of '%s' must be %s, got %s", p->name, def->name,
           type_name(p->type), sem_kind_name(vals[i].k));
      ok = false;
    }
    if (vals[i].k == K_ERR) ok = false;
    if (p->type == TYPE_INT) bind_var(&b, d->pval[i].i, vals[i].k == K_INT ? vals[i].i : NULL);
  }
  if (!ok) return sem_err();
  // tensors: bind the dimension names first, then compare every dimension
  for (int pass = 0; pass < 2 && ok; pass++)
    for (int i = 0; i < def->nparams; i++) {
      const dhx_param *p = &def->params[i];
      if (p->type != TYPE_TENSOR) continue;
      const dhx_loc *at = slot[i] ? &slot[i]->value->loc : &call->loc;
      if (!slot[i]) {
        if (pass == 0) {
          FAIL(&call->loc, "missing argument '%s' of '%s'", p->name, def->name);
          ok = false;
        }
        continue;
      }
      const sval *want = &d->pval[i], *got = &vals[i];
      if (got->k != K_TENSOR) {
        if (pass == 0) {
          FAIL(at, "argument '%s' of '%s' must be a tensor, got %s", p->name, def->name,
               sem_kind_name(got->k));
          ok = false;
        }
        continue;
      }
      if (want->ndim != got->ndim || want->i32 != got->i32) {
        if (pass == 0) {
          char sh[160];
          FAIL(at, "'%s' of '%s' must be a %d-dimensional %s tensor, got %s%s", p->name, def->name,
               want->ndim, want->i32 ? "i32" : "f32", got->i32 ? "i32 " : "",
               sem_shape_text(f, got, sh, sizeof sh));
          dhx_note_at(&p->loc, sem_src(&p->loc), "parameter declared here");
          ok = false;
        }
        continue;
      }
      for (int j = 0; j < want->ndim; j++) {
        if (pass == 0) {
          for (int s = 0; s < d->nsvars; s++)
            if (dhx_sym_equal(want->dims[j], d->svars[s])) bind_var(&b, d->svars[s], got->dims[j]);
          continue;
        }
        const dhx_sym *w = at_call(ck, &b, want->dims[j]);
        if (w && got->dims[j] && !dhx_sym_equal(w, got->dims[j])) {
          char ws[96], gs[96], ds[96];
          dhx_sym_text(ck->syms, want->dims[j], ds, sizeof ds);
          dhx_sym_text(ck->syms, w, ws, sizeof ws);
          dhx_sym_text(ck->syms, got->dims[j], gs, sizeof gs);
          if (strcmp(ds, ws) != 0)
            FAIL(at, "dimension %d of '%s' must be %s (here %s), got %s", j, p->name, ds, ws, gs);
          else
            FAIL(at, "dimension %d of '%s' must be %s, got %s", j, p->name, ws, gs);
          dhx_note_at(&p->loc, sem_src(&p->loc), "parameter declared here");
          ok = false;
          break;
        }
      }
    }
  for (int s = 0; s < d->nsvars; s++) bind_var(&b, d->svars[s], NULL);  // unbound ones: unknown
  return ok ? sval_at_call(ck, &b, d->ret) : sem_err();
}

static sval call_value(fn *f, const dhx_expr *call, const dhx_expr *annot) {
  const dhx_op_sig *op = dhx_find_op(call->str);
  if (op) return sem_op(f, op, call, annot);
  defcheck *d = find_def(f->ck, call->str);
  if (annot) {
    FAIL(&annot->loc, "@%s applies to 'linear' calls only", annot->str);
    return sem_err();
  }
  if (d && d->def->kind == ITEM_LAYER) return call_layer(f, call, d);
  dhx_loc at = callee_loc(call);
  if (d) {
    FAIL(&at, "'%s' is a model; models cannot be called (layers can)", call->str);
    return sem_err();
  }
  const char *names[256];
  int k = 0;
  for (int op = 0; op < DHX_N_COUNT && k < 200; op++) {  // the primitive ops, from the table
    const dhx_op_sig *sig = dhx_op_info((dhx_node_op)op);
    if (sig->call == DHX_CALL_FN) names[k++] = sig->name;
  }
  for (int i = 0; i < f->ck->ndefs && k < 255; i++)
    if (f->ck->defs[i].def->kind == ITEM_LAYER) names[k++] = f->ck->defs[i].def->name;
  names[k] = NULL;
  const char *hint = dhx_suggest(call->str, names);
  if (hint) FAIL(&at, "unknown layer or op '%s'; did you mean '%s'?", call->str, hint);
  else FAIL(&at, "unknown layer or op '%s'", call->str);
  for (int i = 0; i < call->nargs; i++) sem_eval(f, call->args[i].value);
  return sem_err();
}

// ---- the model instance -------------------------------------------------------------------------

static void check_instance(checker *ck, const dhx_item *inst) {
  const dhx_expr *call = inst->value;
  if (!call || call->kind != EXPR_CALL) return;
  dhx_loc at = callee_loc(call);
  defcheck *d = find_def(ck, call->str);
  if (!d || d->def->kind != ITEM_MODEL_DEF) {
    const char *names[256];
    int k = 0;
    for (int i = 0; i < ck->ndefs && k < 255; i++)
      if (ck->defs[i].def->kind == ITEM_MODEL_DEF) names[k++] = ck->defs[i].def->name;
    names[k] = NULL;
    const char *hint = dhx_suggest(call->str, names);
    if (d) FAIL(&at, "'%s' is a layer; a model instance needs a model definition", call->str);
    else if (hint) FAIL(&at, "unknown model '%s'; did you mean '%s'?", call->str, hint);
    else FAIL(&at, "unknown model '%s' (is a 'use' missing?)", call->str);
    return;
  }
  d->used = true;
  fn f = {.ck = ck};
  const dhx_arg *slot[MAX_PARAMS] = {0};
  match_args(call, d->def, slot);
  for (int i = 0; i < d->def->nparams; i++) {
    const dhx_param *p = &d->def->params[i];
    if (p->type == TYPE_TENSOR) {
      if (slot[i]) {
        FAIL(&slot[i]->name_loc, "'%s' is an input of model '%s' (the runtime feeds it); it takes "
             "no argument", p->name, d->def->name);
      }
      continue;
    }
    if (!slot[i]) {
      if (!p->default_value) {
        FAIL(&at, "missing argument '%s' of model '%s'", p->name, d->def->name);
        dhx_note_at(&p->loc, sem_src(&p->loc), "parameter declared here");
      }
      continue;
    }
    sval v = sem_eval(&f, slot[i]->value);
    if (v.k != K_ERR && !type_matches(p->type, &v))
      FAIL(&slot[i]->value->loc, "argument '%s' of model '%s' must be %s, got %s", p->name,
           d->def->name, type_name(p->type), sem_kind_name(v.k));
  }
  free(f.vars);
}

// ---- the program --------------------------------------------------------------------------------

bool dhx_check_definitions(const dhx_program *prog, const dhx_item *instance) {
  int errors = dhx_diag.errors;
  checker ck = {.prog = prog, .syms = dhx_symtab_new()};
  int cap = 0;
  for (int m = 0; m < prog->nmodules; m++)
    for (int i = 0; i < prog->modules[m]->nitems; i++) {
      const dhx_item *it = prog->modules[m]->items[i];
      if (it->kind != ITEM_LAYER && it->kind != ITEM_MODEL_DEF) continue;
      if (ck.ndefs == cap) {
        cap = cap ? 2 * cap : 32;
        ck.defs = realloc(ck.defs, (size_t)cap * sizeof *ck.defs);
        if (!ck.defs) abort();
      }
      ck.defs[ck.ndefs] = (defcheck){.def = it, .index = ck.ndefs, .in_main = m == 0};
      ck.ndefs++;
    }
  if (ck.ndefs) qsort(ck.defs, (size_t)ck.ndefs, sizeof *ck.defs, def_cmp);
  // Checked (and reported) in program order; looked up by name.
  defcheck **order = malloc(sizeof *order * (size_t)(ck.ndefs ? ck.ndefs : 1));
  if (!order) abort();
  for (int i = 0; i < ck.ndefs; i++) order[ck.defs[i].index] = &ck.defs[i];
  for (int i = 0; i < ck.ndefs; i++) check_def(&ck, order[i]);
  if (instance) check_instance(&ck, instance);
  // Definitions of the main file that the program never uses (a file without a model
  // instance is a library: everything in it is for others).
  if (instance)
    for (int i = 0; i < ck.ndefs; i++) {
      const dhx_item *def = order[i]->def;
      if (!order[i]->used && order[i]->in_main)
        dhx_warning_at(&def->name_loc, sem_src(&def->name_loc), "%s '%s' is never used",
                       def->kind == ITEM_LAYER ? "layer" : "model", def->name);
    }
  free(order);
  free(ck.defs);
  dhx_symtab_free(ck.syms);
  return dhx_diag.errors == errors;
}
