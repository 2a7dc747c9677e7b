// elaborate.c — evaluates a model instance into the operator graph.
//
// The model and layer bodies of the .dhx program run like a tiny interpreter: integers and
// floats are computed, `repeat` unrolls, layer calls are inlined with their own scope, and
// every primitive-op call adds a node (and its weights) to the graph. Parameter names come
// from the scope path ("gpt_block.2.linear.1.w"), so they are stable across schedules and are
// the checkpoint tensor names.
#include "elaborate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elaborate_internal.h"

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
    if (p->dims[0]->kind == EXPR_IDENT && !elab_lookup(f, p->dims[0]->str))
      elab_bind(f, p->dims[0]->str, (value){.k = V_INT, .i = c->micro_batch});
    for (int d = 1; d < p->ndims; d++) {
      value v = elab_eval(c, f, p->dims[d]);
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
    elab_bind(f, p->name, tensor_value(t, from));
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
  bool ok = elab_bind_call_args(&c, &caller, call, names, nscalar, vals);
  for (int k = 0; ok && k < nscalar; k++) {
    const dhx_param *p = &def->params[idx[k]];
    if (vals[k].k == V_NONE) {
      if (!p->default_value) {
        FAIL(&c, &call->loc, "missing argument '%s' of model '%s'", p->name, def->name);
        ok = false;
        break;
      }
      vals[k] = elab_eval(&c, &f, p->default_value);
    }
    if (vals[k].k == V_INT && p->type == TYPE_FLOAT)
      vals[k] = (value){.k = V_FLOAT, .f = (double)vals[k].i, .from = vals[k].from};
    if (!c.failed && !elab_type_ok(p, vals[k])) {
      FAIL(&c, &call->loc, "argument '%s' of model '%s' has the wrong type (%s)", p->name,
           def->name, kind_name(vals[k].k));
    }
    if (c.failed) {
      ok = false;
      break;
    }
    elab_bind(&f, p->name, vals[k]);
  }
  ok = ok && bind_model_inputs(&c, &f, def, call);
  value r = ok ? elab_run_body(&c, &f, def, call) : (value){0};
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
