// ast_dump.c — prints a module's syntax tree, one node per line with its span:
//
//   layer gpt_block @7:1-13:2
//     param x [B, S, hidden] @7:17-7:34
//       ident B @7:21-7:22
//
// The parser bounds every tree's depth, so the recursion here is bounded too.
#include <stdio.h>

#include "internal.h"

static void loc(FILE *f, const dhx_loc *l) {
  fprintf(f, " @%d:%d-%d:%d\n", l->line, l->col, l->end_line, l->end_col);
}

static void indent(FILE *f, int d) { fprintf(f, "%*s", 2 * d, ""); }

static const char *unit_names[] = {"", "bytes", "bytes/s", "s", "FLOP/s"};

static void expr(FILE *f, const dhx_expr *e, int d);

static void args(FILE *f, const dhx_expr *e, int d) {
  for (int i = 0; i < e->nargs; i++) {
    const dhx_arg *a = &e->args[i];
    if (a->name) {
      indent(f, d);
      fprintf(f, "arg %s", a->name);
      loc(f, &a->name_loc);
      expr(f, a->value, d + 1);
    } else {
      expr(f, a->value, d);
    }
  }
}

static void expr(FILE *f, const dhx_expr *e, int d) {
  indent(f, d);
  switch (e->kind) {
    case EXPR_NUM:
      if (e->is_int)  // exact: integers are at most 2^53
        fprintf(f, "num %.0f int", e->num);
      else
        fprintf(f, "num %.15g", e->num);
      if (e->unit) fprintf(f, " %s (written %s)", unit_names[e->unit], e->unit_text);
      break;
    case EXPR_STR: fprintf(f, "str \"%s\"", e->str); break;
    case EXPR_BOOL: fprintf(f, "bool %s", e->boolean ? "true" : "false"); break;
    case EXPR_IDENT: fprintf(f, "ident %s", e->str); break;
    case EXPR_BINOP: fprintf(f, "binop %c", e->op); break;
    case EXPR_NEG: fprintf(f, "neg"); break;
    case EXPR_CALL: fprintf(f, "call %s", e->str); break;
    case EXPR_TUPLE: fprintf(f, "tuple"); break;
    case EXPR_ANNOT: fprintf(f, "annot @%s", e->str); break;
  }
  loc(f, &e->loc);
  if (e->lhs) expr(f, e->lhs, d + 1);
  if (e->rhs) expr(f, e->rhs, d + 1);
  args(f, e, d + 1);
}

static void stmts(FILE *f, dhx_stmt *const *body, int n, int d) {
  for (int i = 0; i < n; i++) {
    const dhx_stmt *s = body[i];
    indent(f, d);
    switch (s->kind) {
      case STMT_ASSIGN: fprintf(f, "assign %s", s->name); break;
      case STMT_RETURN: fprintf(f, "return"); break;
      case STMT_REPEAT: fprintf(f, "repeat%s%s", s->name ? " " : "", s->name ? s->name : ""); break;
    }
    loc(f, &s->loc);
    if (s->name) {
      indent(f, d + 1);
      fprintf(f, "name");
      loc(f, &s->name_loc);
    }
    expr(f, s->value, d + 1);
    stmts(f, s->body, s->nbody, d + 1);
  }
}

static void fields(FILE *f, const dhx_fields *fs, int d) {
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *fl = &fs->items[i];
    indent(f, d);
    fprintf(f, "field %s%s", fl->name, fl->block ? " {}" : "");
    loc(f, &fl->loc);
    if (fl->value) expr(f, fl->value, d + 1);
    if (fl->block) fields(f, fl->block, d + 1);
  }
}

static const char *type_names[] = {"int", "float", "bool", "str", "tensor"};
static const char *item_names[] = {"use", "layer", "model", "model", "data", "cluster",
                                   "cluster", "gpu", "schedule", "train"};

void dhx_dump_module(const dhx_module *m, FILE *f) {
  fprintf(f, "module %s (%s)\n", m->name, m->path);
  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    fprintf(f, "  %s", item_names[it->kind]);
    if (it->name) fprintf(f, it->use_path ? " \"%s\"" : " %s", it->name);
    if (it->kind == ITEM_MODEL_INST || it->kind == ITEM_CLUSTER_DEF) fprintf(f, " =");
    loc(f, &it->loc);
    indent(f, 2);
    fprintf(f, "name");
    loc(f, &it->name_loc);
    for (int j = 0; j < it->nparams; j++) {
      const dhx_param *p = &it->params[j];
      indent(f, 2);
      fprintf(f, "param %s %s%s%s", p->name, type_names[p->type], p->dtype ? " " : "",
              p->dtype ? p->dtype : "");
      loc(f, &p->loc);
      for (int k = 0; k < p->ndims; k++) expr(f, p->dims[k], 3);
      if (p->default_value) {
        indent(f, 3);
        fprintf(f, "default\n");
        expr(f, p->default_value, 4);
      }
    }
    stmts(f, it->body, it->nbody, 2);
    if (it->value) expr(f, it->value, 2);
    if (it->fields) fields(f, it->fields, 2);
  }
}
