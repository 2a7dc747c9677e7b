// elaborate_layers.c — statements and layer calls: assignments, `repeat` (in the model body,
// the layer stack), a layer's parameters bound and checked against its declared shapes, and its
// body run in a frame of its own.
#include <stdlib.h>
#include <string.h>

#include "elaborate_internal.h"

static void exec_body(ctx *c, frame *f, dhx_stmt *const *body, int n);

static void exec_stmt(ctx *c, frame *f, const dhx_stmt *s) {
  switch (s->kind) {
    case STMT_ASSIGN: {
      value v = elab_eval(c, f, s->value);
      if (!c->failed) elab_bind(f, s->name, v);
      break;
    }
    case STMT_RETURN:
      f->ret = elab_eval(c, f, s->value);
      f->returned = true;
      break;
    case STMT_REPEAT: {
      value n = elab_eval(c, f, s->value);
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
        if (s->name) elab_bind(f, s->name, (value){.k = V_INT, .i = i});
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
    if (de->kind == EXPR_IDENT && !elab_lookup(callee, de->str)) {
      uint64_t from = d == x->ndim - 1 ? arg.from : 0;
      elab_bind(callee, de->str, (value){.k = V_INT, .i = x->shape[d], .from = from});
      continue;
    }
    value v = elab_eval(c, callee, de);
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

bool elab_type_ok(const dhx_param *p, value v) {
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
  if (!elab_bind_call_args(c, caller, call, names, def->nparams, vals)) return false;
  for (int i = 0; i < def->nparams; i++) {
    const dhx_param *p = &def->params[i];
    if (vals[i].k == V_NONE) {
      if (!p->default_value) {
        FAIL(c, &call->loc, "missing argument '%s' of '%s'", p->name, def->name);
        dhx_note_at(&def->name_loc, src_of(&def->name_loc), "'%s' defined here", def->name);
        return false;
      }
      vals[i] = elab_eval(c, callee, p->default_value);  // defaults see earlier parameters
      if (c->failed) return false;
    }
    if (vals[i].k == V_INT && p->type == TYPE_FLOAT)
      vals[i] = (value){.k = V_FLOAT, .f = (double)vals[i].i, .from = vals[i].from};
    if (!elab_type_ok(p, vals[i])) {
      FAIL(c, &call->loc, "argument '%s' of '%s' must be %s, got %s", p->name, def->name,
           p->type == TYPE_TENSOR ? "a tensor" : p->type == TYPE_INT ? "an integer"
           : p->type == TYPE_FLOAT ? "a number" : p->type == TYPE_BOOL ? "a boolean" : "a string",
           kind_name(vals[i].k));
      return false;
    }
    elab_bind(callee, p->name, vals[i]);
  }
  for (int i = 0; i < def->nparams; i++)
    if (def->params[i].type == TYPE_TENSOR &&
        !match_shape(c, callee, &def->params[i], vals[i], call))
      return false;
  return true;
}

value elab_run_body(ctx *c, frame *callee, const dhx_item *def, const dhx_expr *site) {
  exec_body(c, callee, def->body, def->nbody);
  if (c->failed) return (value){0};
  if (!callee->returned) {
    FAIL(c, &site->loc, "'%s' ended without 'return'", def->name);
    dhx_note_at(&def->name_loc, src_of(&def->name_loc), "'%s' defined here", def->name);
    return (value){0};
  }
  return callee->ret;
}

value elab_call_layer(ctx *c, frame *f, const dhx_expr *call, const dhx_item *def) {
  if (c->depth >= MAX_CALL_DEPTH) {
    FAIL(c, &call->loc, "layer calls nested deeper than %d (recursive layer?)", MAX_CALL_DEPTH);
    return (value){0};
  }
  frame callee = {0};
  elab_child_scope(f, def->name, callee.scope);
  c->depth++;
  value r = (value){0};
  if (bind_params(c, f, &callee, def, call)) {  // errors in the arguments belong to the caller
    int caller_site = c->call_site;
    c->call_site = dhx_site_new(c->g, &call->loc, def->name, caller_site);
    r = elab_run_body(c, &callee, def, call);
    c->call_site = caller_site;
  }
  c->depth--;
  free(callee.vars);
  return r;
}
