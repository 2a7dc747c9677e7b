// ast.c — building expression nodes with their spans and bounded depth.
#include "internal.h"

dhx_loc dhx_loc_span(dhx_loc a, dhx_loc b) {
  a.end_line = b.end_line;
  a.end_col = b.end_col;
  return a;
}

dhx_expr *dhx_new_expr(dhx_arena *a, dhx_expr_kind kind, dhx_loc loc) {
  dhx_expr *e = dhx_arena_alloc(a, sizeof *e);
  e->kind = kind;
  e->loc = loc;
  e->depth = 1;
  return e;
}

static int max_depth(int d, const dhx_expr *e) { return e && e->depth > d ? e->depth : d; }

dhx_expr *dhx_finish_expr(dhx_parse_state *ps, dhx_expr *e) {
  int d = 0;
  d = max_depth(d, e->lhs);
  d = max_depth(d, e->rhs);
  for (int i = 0; i < e->nargs; i++) d = max_depth(d, e->args[i].value);
  e->depth = d + 1;
  if (e->depth <= DHX_MAX_EXPR_DEPTH) return e;
  if (!ps->deep_reported) {
    ps->deep_reported = true;
    dhx_error_at(&e->loc, ps->source, "expression is nested too deeply (more than %d levels)",
                 DHX_MAX_EXPR_DEPTH);
  }
  // A leaf in its place keeps every tree the parser returns within the limit.
  dhx_expr *leaf = dhx_new_expr(ps->arena, EXPR_NUM, e->loc);
  leaf->is_int = true;
  return leaf;
}
