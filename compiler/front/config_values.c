// config_values.c — typed reading of configuration values, with messages that point at the
// value and quote it: `'micro_batch' must be a positive integer, got 2.5`.
//
// Values may be constant arithmetic (`global_batch: 4 * 16`, `net: 2 * 1 GB/s`): fold()
// evaluates it, keeping track of units (a sum needs one unit, a product at most one).
#include <limits.h>
#include <math.h>  // isfinite (a macro: dhx_front does not link libm)
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_EXACT 9007199254740992.0  // 2^53: integers above this are not exact in a double

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

static const char *kind_desc(dhx_expr_kind k) {
  switch (k) {
    case EXPR_NUM: return "a number";
    case EXPR_STR: return "a string";
    case EXPR_BOOL: return "a boolean";
    case EXPR_IDENT: return "a name";
    case EXPR_BINOP:
    case EXPR_NEG: return "an expression";
    case EXPR_CALL: return "a call";
    case EXPR_TUPLE: return "a tuple";
    case EXPR_ANNOT: return "an annotated expression";
  }
  return "a value";
}

// How a value is quoted in messages: its source text, or its kind when the text is not at hand.
const char *dhx_cfg_got(const dhx_expr *e, char *buf, size_t size) {
  dhx_loc_text(&e->loc, buf, size);
  if (!buf[0]) snprintf(buf, size, "%s", kind_desc(e->kind));
  return buf;
}

dhx_qty dhx_cfg_fold(const dhx_expr *e) {
  dhx_qty bad = {0};
  switch (e->kind) {
    case EXPR_NUM: return (dhx_qty){true, e->num, e->is_int, e->unit};
    case EXPR_NEG: {
      dhx_qty q = dhx_cfg_fold(e->lhs);
      q.v = -q.v;
      return q;
    }
    case EXPR_BINOP: {
      dhx_qty l = dhx_cfg_fold(e->lhs), r = dhx_cfg_fold(e->rhs);
      if (!l.ok || !r.ok) return bad;
      dhx_qty q = {true, 0, l.is_int && r.is_int, l.unit};
      switch (e->op) {
        case '+':
        case '-':
          if (l.unit != r.unit) return bad;
          q.v = e->op == '+' ? l.v + r.v : l.v - r.v;
          break;
        case '*':
          if (l.unit && r.unit) return bad;
          q.unit = l.unit ? l.unit : r.unit;
          q.v = l.v * r.v;
          break;
        case '/':
          if (r.v == 0 || (r.unit && r.unit != l.unit)) return bad;
          q.unit = r.unit ? DHX_UNIT_NONE : l.unit;  // GB / GB is a plain ratio
          q.v = l.v / r.v;
          break;
        case '%':
          if (l.unit || r.unit || !q.is_int || r.v == 0) return bad;
          q.v = (double)((int64_t)l.v % (int64_t)r.v);  // both exact integers (is_int)
          break;
        default: return bad;
      }
      if (!isfinite(q.v)) return bad;
      q.is_int = q.is_int && q.v >= -MAX_EXACT && q.v <= MAX_EXACT && q.v == (double)(int64_t)q.v;
      return q;
    }
    default: return bad;
  }
}

bool dhx_cfg_int(const dhx_expr *e, const char *name, int lo, int hi, int *out) {
  dhx_qty q = dhx_cfg_fold(e);
  char got[64];
  if (q.ok && q.is_int && !q.unit && q.v >= lo && q.v <= hi) {
    *out = (int)q.v;
    return true;
  }
  if (q.ok && q.is_int && !q.unit && q.v > hi)
    dhx_error_at(&e->loc, src(&e->loc), "'%s' must be at most %d, got %s", name, hi,
                 dhx_cfg_got(e, got, sizeof got));
  else
    dhx_error_at(&e->loc, src(&e->loc), "'%s' must be %s, got %s", name,
                 lo == 1 ? "a positive integer" : lo == 0 ? "a non-negative integer" : "an integer",
                 dhx_cfg_got(e, got, sizeof got));
  return false;
}

bool dhx_cfg_u64(const dhx_expr *e, const char *name, uint64_t *out) {
  dhx_qty q = dhx_cfg_fold(e);
  char got[64];
  if (q.ok && q.is_int && !q.unit && q.v >= 0) {
    *out = (uint64_t)q.v;
    return true;
  }
  dhx_error_at(&e->loc, src(&e->loc), "'%s' must be a non-negative integer, got %s", name,
               dhx_cfg_got(e, got, sizeof got));
  return false;
}

bool dhx_cfg_number(const dhx_expr *e, const char *name, const char *what, double lo, bool lo_open,
                    double hi, bool hi_open, double *out) {
  dhx_qty q = dhx_cfg_fold(e);
  char got[64];
  if (q.ok && !q.unit && (lo_open ? q.v > lo : q.v >= lo) && (hi_open ? q.v < hi : q.v <= hi)) {
    *out = q.v;
    return true;
  }
  dhx_error_at(&e->loc, src(&e->loc), "'%s' must be %s, got %s", name, what,
               dhx_cfg_got(e, got, sizeof got));
  return false;
}

bool dhx_cfg_quantity(const dhx_expr *e, const char *name, dhx_unit unit, const char *example,
                      double *out) {
  dhx_qty q = dhx_cfg_fold(e);
  char got[64];
  if (q.ok && q.unit == unit && q.v >= 0) {
    *out = q.v;
    return true;
  }
  if (q.ok && q.unit == unit)
    dhx_error_at(&e->loc, src(&e->loc), "'%s' must not be negative, got %s", name,
                 dhx_cfg_got(e, got, sizeof got));
  else
    dhx_error_at(&e->loc, src(&e->loc), "expected %s such as '%s' for '%s', got %s",
                 dhx_unit_kind_name(unit), example, name, dhx_cfg_got(e, got, sizeof got));
  return false;
}

bool dhx_cfg_bool(const dhx_expr *e, const char *name, bool *out) {
  char got[64];
  if (e->kind == EXPR_BOOL) {
    *out = e->boolean;
    return true;
  }
  dhx_error_at(&e->loc, src(&e->loc), "'%s' must be on or off, got %s", name,
               dhx_cfg_got(e, got, sizeof got));
  return false;
}

bool dhx_cfg_string(const dhx_expr *e, const char *name, const char *what, char **out) {
  char got[64];
  if (e->kind == EXPR_STR) {
    *out = e->str;
    return true;
  }
  dhx_error_at(&e->loc, src(&e->loc), "'%s' must be %s, got %s", name, what,
               dhx_cfg_got(e, got, sizeof got));
  return false;
}

// The span of a call's callee name.
dhx_loc dhx_cfg_callee_loc(const dhx_expr *call) {
  dhx_loc l = call->loc;
  if (call->str) {
    l.end_line = l.line;
    l.end_col = l.col + (int)strlen(call->str);
  }
  return l;
}

// ---- fields and arguments ---------------------------------------------------------------------

int dhx_cfg_field_index(const char *name, const dhx_loc *loc, const char *noun, const char *what,
                        const char *const *known, const dhx_loc **seen) {
  for (int i = 0; known[i]; i++) {
    if (strcmp(name, known[i]) != 0) continue;
    if (seen[i]) {
      dhx_error_at(loc, src(loc), "'%s' is set twice in %s", name, what);
      dhx_note_at(seen[i], src(seen[i]), "first set here");
      return -1;
    }
    seen[i] = loc;
    return i;
  }
  const char *hint = dhx_suggest(name, known);
  if (hint)
    dhx_error_at(loc, src(loc), "unknown %s '%s' in %s; did you mean '%s'?", noun, name, what, hint);
  else
    dhx_error_at(loc, src(loc), "unknown %s '%s' in %s", noun, name, what);
  return -1;
}

const dhx_expr *dhx_cfg_value_of(const dhx_field *f) {
  if (f->value) return f->value;
  dhx_error_at(&f->loc, src(&f->loc), "'%s' takes a value, as in '%s: ...', not a block", f->name,
               f->name);
  return NULL;
}

const dhx_fields *dhx_cfg_block_of(const dhx_field *f, const char *example) {
  if (f->block) return f->block;
  dhx_error_at(&f->loc, src(&f->loc), "'%s' is a block, as in '%s'", f->name, example);
  return NULL;
}

void dhx_cfg_read_args(const dhx_arg *args, int nargs, const char *what, const char *example,
                       const char *const *known, dhx_arg_reader read, void *ctx) {
  const dhx_loc *seen[DHX_CFG_MAX_KNOWN] = {0};
  for (int i = 0; i < nargs; i++) {
    const dhx_arg *a = &args[i];
    if (!a->name) {
      dhx_error_at(&a->value->loc, src(&a->value->loc),
                   "arguments of %s must be named, as in %s", what, example);
      continue;
    }
    int k = dhx_cfg_field_index(a->name, &a->name_loc, "argument", what, known, seen);
    if (k >= 0) read(ctx, k, a);
  }
}

int dhx_cfg_choice(const dhx_expr *e, const char *name, const char *const *choices) {
  const char *word = e->kind == EXPR_IDENT ? e->str
                     : e->kind == EXPR_BOOL ? (e->boolean ? "on" : "off")
                                            : NULL;
  int n = 0;
  for (; choices[n]; n++)
    if (word && strcmp(word, choices[n]) == 0) return n;
  char list[160] = "", got[64];
  size_t len = 0;
  for (int i = 0; i < n && len < sizeof list; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i == 0 ? "" : i + 1 < n ? ", " : " or ",
                            choices[i]);
  const char *hint = word ? dhx_suggest(word, choices) : NULL;
  if (hint)
    dhx_error_at(&e->loc, src(&e->loc), "'%s' must be %s, got %s; did you mean '%s'?", name, list,
                 dhx_cfg_got(e, got, sizeof got), hint);
  else
    dhx_error_at(&e->loc, src(&e->loc), "'%s' must be %s, got %s", name, list,
                 dhx_cfg_got(e, got, sizeof got));
  return -1;
}
