// format.c — `dhxc fmt`: the canonical text of a module, every comment kept.
//
// The printer walks the syntax tree in source order and writes its tokens with canonical
// spacing. Comments, which the lexer records with their spans, are interleaved by position:
// before anything that starts at source offset X is written, every comment that starts
// before X is written first, so comments keep their order and can only ever move later
// (past punctuation whose place the tree does not record), never earlier. Where a comment
// goes depends on how it sat in the source:
//
//   own line  nothing but blanks before it on its line   on a line of its own, at the
//                                                        indentation of what follows
//   trailing  code before it, none after it              at the end of the line that holds
//                                                        the code before it, one space after
//   inline    a block comment with code after it         in the line, before that code
//
// Line breaks are a function of the tree and the comments alone, never of the input's line
// breaks: a list (call or annotation arguments, tuple elements, parameters, tensor dims) or a
// field block is written on one line when it holds no comment that needs a line of its own,
// no nested block, and ends by column 100; otherwise with one element per line. Statement
// bodies always take one statement per line. That is what makes formatting idempotent: the
// output has the same tree, the same comments in the same places, hence the same layout.
//
// Blank lines are the one thing taken from the input: one is kept between items, statements
// and fields (and the comments among them) where the source had at least one.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WIDTH 100  // the column a one-line list or block may reach
#define STEP 2     // columns per level of indentation
#define FAR LONG_MAX

// ---- comments ----------------------------------------------------------------------------------

typedef enum { OWN_LINE, TRAILING, INLINE } comment_place;

typedef struct comment {
  long start, end;       // source offsets, end exclusive
  const char *text;      // in the source
  long len;              // the text's length, without the trailing blanks of a `#` comment
  comment_place place;
  bool multiline;        // a block comment over several lines never fits in a one-line list
  bool joined;           // follows the block comment before it on its line, only blanks between
} comment;

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Whether code (anything but blanks and comments) precedes comment i on its line. A comment
// that spans lines counts as blanks, so the line runs on through it.
static bool code_before(const comment *c, int i, const char *src) {
  int j = i - 1;
  for (long k = c[i].start - 1; k >= 0; k--) {
    while (j >= 0 && c[j].start > k) j--;
    if (j >= 0 && k < c[j].end) {  // inside comment j: skip it
      k = c[j].start;
      continue;
    }
    if (src[k] == '\n') return false;
    if (!blank(src[k])) return true;
  }
  return false;
}

// Whether code follows comment i on the line where it ends.
static bool code_after(const comment *c, int n, int i, const char *src, long len) {
  int j = i + 1;
  for (long k = c[i].end; k < len; k++) {
    if (j < n && k == c[j].start) {
      k = c[j].end - 1;
      j++;
      continue;
    }
    if (src[k] == '\n') return false;
    if (!blank(src[k])) return true;
  }
  return false;
}

// ---- the printer -------------------------------------------------------------------------------

typedef struct buffer {
  char *s;
  size_t n, cap;
} buffer;

typedef struct printer {
  const char *src;
  long srclen;
  const long *lines;     // source offset of the first byte of each line
  int nlines;
  const comment *c;
  int nc;
  buffer *out;
  // Everything below is saved before a one-line attempt and restored when it fails.
  int next;              // the first comment not yet written
  int last_comment;      // the comment written last, while nothing came after it; else -1
  long last_end;         // source offset just past the last thing written
  int col;               // columns on the current output line
  int indent;            // indentation of the current output line
  bool bol;              // nothing on the current line yet (indentation is written lazily)
  bool must_break;       // the line ends in a comment: what comes next starts a new line
  bool space;            // an inline comment was just written: a space before the next token
  bool first;            // nothing written yet in the current block: no blank line before
  int unit_indent;       // indentation of the current item, statement, field or element
  bool unit_started;     // ... which has written code, so later lines of it are continuations
  int tail;              // columns the unit writes after its last list (',' or ' {')
  int flat;              // > 0 during a one-line attempt
  bool failed;           // ... which needed a line break
  size_t floor;          // output before the attempt, which separate() must not trim
} printer;

static void append(buffer *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->n + n + 1 > cap) cap *= 2;
    b->s = dhx_xrealloc(b->s, cap);
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = '\0';
}

static long offset(const printer *p, int line, int col) {
  if (line < 1) return 0;
  if (line > p->nlines) return p->srclen;
  long o = p->lines[line - 1] + col - 1;
  return o < 0 ? 0 : o > p->srclen ? p->srclen : o;
}

static long start_of(const printer *p, dhx_loc l) { return offset(p, l.line, l.col); }
static long end_of(const printer *p, dhx_loc l) { return offset(p, l.end_line, l.end_col); }
static long max_long(long a, long b) { return a > b ? a : b; }

// The first comment that starts at or after `pos`.
static int comment_at_or_after(const printer *p, long pos) {
  int lo = 0, hi = p->nc;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (p->c[mid].start < pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The offset of the first byte of code at or after `pos`, past blanks and comments: where a
// bracket or an `@` the tree does not record must be.
static long next_code(const printer *p, long pos) {
  int j = comment_at_or_after(p, pos);
  while (pos < p->srclen) {
    if (blank(p->src[pos]) || p->src[pos] == '\n') {
      pos++;
    } else if (j < p->nc && p->c[j].start == pos) {
      pos = p->c[j++].end;
    } else {
      break;
    }
  }
  return pos;
}

// Past the closing parentheses of redundant brackets around what ends at `pos`.
static long past_parens(const printer *p, long pos) {
  pos = next_code(p, pos);
  while (pos < p->srclen && p->src[pos] == ')') pos = next_code(p, pos + 1);
  return pos;
}

// Code points, so a line with non-ASCII text in a string is measured as it is seen.
static int columns(const char *s, size_t n) {
  int w = 0;
  for (size_t i = 0; i < n; i++) w += ((unsigned char)s[i] & 0xc0) != 0x80;
  return w;
}

// ---- writing -----------------------------------------------------------------------------------

static void newline(printer *p, int indent) {
  if (p->flat) {
    p->failed = true;
    return;
  }
  buffer *b = p->out;
  while (b->n > 0 && b->s[b->n - 1] == ' ') b->n--;
  append(b, "\n", 1);
  p->bol = true;
  p->col = 0;
  p->indent = indent;
  p->must_break = p->space = false;
  p->last_comment = -1;
}

// Writes text as it is, first the line's indentation if nothing is on the line yet.
static void raw(printer *p, const char *s, size_t n) {
  if (p->bol) {
    static const char spaces[] = "                                ";
    for (int i = p->indent; i > 0; i -= 32) append(p->out, spaces, (size_t)(i < 32 ? i : 32));
    p->col = p->indent;
    p->bol = false;
  }
  append(p->out, s, n);
  const char *nl = memrchr(s, '\n', n);
  if (nl) {  // a block comment over several lines
    if (p->flat) p->failed = true;
    p->col = columns(nl + 1, n - (size_t)(nl + 1 - s));
  } else {
    p->col += columns(s, n);
  }
  p->first = false;
}

// Where the lines of a unit after its first one start.
static int continuation(const printer *p) {
  return p->unit_indent + (p->unit_started ? STEP : 0);
}

static void settle(printer *p) {
  if (p->must_break) newline(p, continuation(p));
}

// Writes code: on a new line after a comment that ended the line, one space after an inline
// comment (none at the start of a line).
static void put_n(printer *p, const char *s, size_t n) {
  settle(p);
  if (p->space) {
    p->space = false;
    if (n > 0 && !strchr(" ,)]}", s[0])) raw(p, " ", 1);
  }
  if (p->bol && n > 0 && s[0] == ' ') s++, n--;
  if (n == 0) return;
  raw(p, s, n);
  p->unit_started = true;
  p->last_comment = -1;
}

static void put(printer *p, const char *s) { put_n(p, s, strlen(s)); }

// Keeps one empty line before what starts at `pos` in a block when the source had one.
static void keep_blank(printer *p, long pos) {
  const buffer *b = p->out;
  if (p->first || !p->bol || p->flat) return;
  if (b->n == 0 || (b->n >= 2 && b->s[b->n - 2] == '\n')) return;  // one already
  int lines = 0;
  for (long i = p->last_end; i < pos && i < p->srclen; i++)
    if (p->src[i] == '\n' && ++lines == 2) {
      append(p->out, "\n", 1);
      return;
    }
}

// One space between code and a comment after it on the line, whatever the comment's kind (a
// comment written inline may be trailing in the output and must look the same then), none
// after an opening bracket.
static void separate(printer *p) {
  buffer *b = p->out;
  while (b->n > p->floor && b->s[b->n - 1] == ' ') b->n--, p->col--;
  b->s[b->n] = '\0';
  if (b->n > 0 && !strchr("([", b->s[b->n - 1])) raw(p, " ", 1);
}

static void write_comment(printer *p, int i, bool block) {
  const comment *c = &p->c[i];
  if (p->flat && (c->place != INLINE || c->multiline)) {
    p->failed = true;
    return;
  }
  bool joined = c->joined && p->last_comment == i - 1;
  if (c->place == INLINE && !joined) {
    settle(p);
  } else if (!joined && (c->place == OWN_LINE || p->bol || p->must_break)) {
    // a line of its own (also a trailing comment whose line has ended already)
    if (!p->bol) newline(p, continuation(p));
  }
  if (p->bol) {
    if (block) keep_blank(p, c->start);
  } else {
    separate(p);
  }
  p->space = false;
  raw(p, c->text, (size_t)c->len);
  p->last_end = c->end;
  p->last_comment = i;
  if (c->place == INLINE) p->space = true;
  else p->must_break = true;
}

// Writes every comment that starts before `pos`; `block`: in a block, keeping blank lines.
static void flush(printer *p, long pos, bool block) {
  while (p->next < p->nc && p->c[p->next].start < pos && !p->failed)
    write_comment(p, p->next++, block);
}

static bool comment_before(const printer *p, long pos) {
  return p->next < p->nc && p->c[p->next].start < pos;
}

// Ends the current line before something at `pos` that goes on a new line at `indent`: first
// the trailing comments that belong at the end of this one.
static void nl(printer *p, long pos, int indent) {
  while (comment_before(p, pos) && p->c[p->next].place == TRAILING) {
    const comment *c = &p->c[p->next];
    if (!(c->joined && p->last_comment == p->next - 1) && (p->bol || p->must_break)) break;
    write_comment(p, p->next++, false);
  }
  if (p->bol) p->indent = indent;
  else newline(p, indent);
}

typedef struct unit_state {
  int indent, tail;
  bool started;
} unit_state;

static unit_state save_unit(const printer *p) {
  return (unit_state){p->unit_indent, p->tail, p->unit_started};
}

static void restore_unit(printer *p, unit_state u) {
  p->unit_indent = u.indent;
  p->tail = u.tail;
  p->unit_started = u.started;
}

// Starts the line of an item, statement, field or list element that begins at `pos`, after
// the comments before it; `tail` columns will follow it on its last line.
static void open_line(printer *p, long pos, int indent, int tail, bool block) {
  nl(p, pos, indent);
  p->unit_indent = indent;
  p->unit_started = false;
  p->tail = tail;
  flush(p, pos, block);
  if (block) {
    settle(p);
    keep_blank(p, pos);
  }
}

// Ends a block or a list written one element per line: the comments before its closing
// bracket (at `close`) at the inner indentation, then the bracket on a line of its own.
static void close_lines(printer *p, long close, int outer, const char *bracket, bool block) {
  nl(p, close, outer + STEP);
  p->unit_indent = outer + STEP;
  p->unit_started = false;
  flush(p, close, block);
  nl(p, close, outer);
  put(p, bracket);
}

// Writes `what` on the current line if it can go there whole and ends by column WIDTH - tail;
// otherwise writes nothing and returns false.
typedef void (*layout_fn)(printer *p, const void *what);

static bool one_line(printer *p, layout_fn fn, const void *what, int tail) {
  if (p->flat) {
    fn(p, what);
    return true;
  }
  settle(p);
  printer saved = *p;
  size_t n = p->out->n;
  p->flat = 1;
  p->floor = n;
  fn(p, what);
  p->flat = 0;
  if (!p->failed && p->col + tail <= WIDTH) return true;
  *p = saved;
  p->out->n = n;
  p->out->s[n] = '\0';
  return false;
}

// ---- expressions -------------------------------------------------------------------------------

// Binding strength, as in parser.y: + - < * / % < unary - < @annotation < everything else.
static int precedence(const dhx_expr *e) {
  switch (e->kind) {
    case EXPR_BINOP: return e->op == '+' || e->op == '-' ? 1 : 2;
    case EXPR_NEG: return 3;
    case EXPR_ANNOT: return 4;
    default: return 5;
  }
}

static void expr(printer *p, const dhx_expr *e, int min);

// A number as written, with exactly one space before its unit (`10us` is `10 us`).
static void number(printer *p, const dhx_expr *e) {
  long a = start_of(p, e->loc), b = end_of(p, e->loc);
  const char *s = p->src + a;
  long n = b - a, u = e->unit_text ? (long)strlen(e->unit_text) : 0;
  if (n <= u) {  // no source text (cannot happen for a parsed file): print the value
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", e->num);
    put(p, buf);
    return;
  }
  long k = n - u;
  while (k > 0 && blank(s[k - 1])) k--;
  put_n(p, s, (size_t)k);
  if (u) {
    put(p, " ");
    put(p, e->unit_text);
  }
}

static void string(printer *p, const char *s) {
  buffer t = {0};
  append(&t, "\"", 1);
  for (; *s; s++) {
    switch (*s) {
      case '"': append(&t, "\\\"", 2); break;
      case '\\': append(&t, "\\\\", 2); break;
      case '\n': append(&t, "\\n", 2); break;
      case '\t': append(&t, "\\t", 2); break;
      default: append(&t, s, 1);
    }
  }
  append(&t, "\"", 1);
  put_n(p, t.s, t.n);
  free(t.s);
}

// `on`/`off` stay as written: they read better than true/false in a schedule.
static void boolean(printer *p, const dhx_expr *e) {
  static const char *words[] = {"true", "false", "on", "off"};
  long a = start_of(p, e->loc), n = end_of(p, e->loc) - a;
  for (int i = 0; i < 4; i++)
    if ((long)strlen(words[i]) == n && memcmp(p->src + a, words[i], (size_t)n) == 0 &&
        (i % 2 == 0) == e->boolean) {
      put(p, words[i]);
      return;
    }
  put(p, e->boolean ? "true" : "false");
}

// ---- lists: arguments, tuple elements, parameters, dims ----------------------------------------

typedef enum { ARGS, PARAMS, DIMS } list_kind;

typedef struct list {
  list_kind kind;
  const void *items;     // dhx_arg[], dhx_param[] or dhx_expr *[]
  int n;
  const char *open, *close;
  long close_at;         // source offset of the closing bracket
  bool last_comma;       // one element per line ends in ',' (dims allow no trailing comma)
  bool one_tuple;        // `(x,)`
  int tail;              // columns after the closing bracket on its line
} list;

static void param(printer *p, const dhx_param *pr);

static long elem_start(const printer *p, const list *l, int i) {
  switch (l->kind) {
    case ARGS: return start_of(p, ((const dhx_arg *)l->items)[i].name_loc);
    case PARAMS: return start_of(p, ((const dhx_param *)l->items)[i].loc);
    default: return start_of(p, ((dhx_expr *const *)l->items)[i]->loc);
  }
}

static void elem(printer *p, const list *l, int i) {
  if (l->kind == ARGS) {
    const dhx_arg *a = &((const dhx_arg *)l->items)[i];
    if (a->name) {
      flush(p, start_of(p, a->name_loc), false);
      put(p, a->name);
      put(p, ": ");
    }
    expr(p, a->value, 0);
  } else if (l->kind == PARAMS) {
    param(p, &((const dhx_param *)l->items)[i]);
  } else {
    expr(p, ((dhx_expr *const *)l->items)[i], 0);
  }
}

static void list_one_line(printer *p, const void *what) {
  const list *l = what;
  put(p, l->open);
  for (int i = 0; i < l->n; i++) {
    if (i > 0) put(p, ", ");
    elem(p, l, i);
  }
  if (l->one_tuple) put(p, ",");
  flush(p, l->close_at, false);
  put(p, l->close);
}

static void list_lines(printer *p, const list *l) {
  put(p, l->open);
  int outer = p->indent;
  unit_state u = save_unit(p);
  for (int i = 0; i < l->n; i++) {
    bool comma = i + 1 < l->n || l->last_comma;
    open_line(p, elem_start(p, l, i), outer + STEP, comma, false);
    elem(p, l, i);
    if (comma) put(p, ",");
  }
  close_lines(p, l->close_at, outer, l->close, false);
  restore_unit(p, u);
}

static void print_list(printer *p, const list *l) {
  if (!one_line(p, list_one_line, l, l->tail)) list_lines(p, l);
}

static void args(printer *p, const dhx_expr *e, const char *open, const char *close) {
  list l = {ARGS, e->args, e->nargs, open, close, end_of(p, e->loc) - 1, true,
            e->kind == EXPR_TUPLE && e->nargs == 1, p->tail};
  print_list(p, &l);
}

static void expr(printer *p, const dhx_expr *e, int min) {
  flush(p, start_of(p, e->loc), false);
  bool parens = precedence(e) < min;
  if (parens) put(p, "(");
  switch (e->kind) {
    case EXPR_NUM: number(p, e); break;
    case EXPR_STR: string(p, e->str); break;
    case EXPR_BOOL: boolean(p, e); break;
    case EXPR_IDENT: put(p, e->str); break;
    case EXPR_BINOP: {
      // Left-associative: an operand of the same strength needs brackets only on the right.
      char op[4] = {' ', e->op, ' ', '\0'};
      expr(p, e->lhs, precedence(e));
      flush(p, past_parens(p, end_of(p, e->lhs->loc)), false);  // comments before the operator
      put(p, op);
      expr(p, e->rhs, precedence(e) + 1);
      break;
    }
    case EXPR_NEG:
      put(p, e->lhs->kind == EXPR_NEG ? "- " : "-");
      expr(p, e->lhs, precedence(e));
      break;
    case EXPR_CALL:
      put(p, e->str);
      args(p, e, "(", ")");
      break;
    case EXPR_TUPLE: args(p, e, "(", ")"); break;
    case EXPR_ANNOT:
      expr(p, e->lhs, precedence(e));
      flush(p, past_parens(p, end_of(p, e->lhs->loc)), false);
      put(p, " @");
      put(p, e->str);
      if (e->nargs > 0) args(p, e, "(", ")");
      break;
  }
  if (parens) put(p, ")");
  p->last_end = max_long(p->last_end, end_of(p, e->loc));
}

// ---- parameters --------------------------------------------------------------------------------

static void param(printer *p, const dhx_param *pr) {
  static const char *types[] = {"int", "float", "bool", "str"};
  long at = start_of(p, pr->loc);
  flush(p, at, false);
  put(p, pr->name);
  put(p, ": ");
  long type_at = next_code(p, next_code(p, at + (long)strlen(pr->name)) + 1);  // past the ':'
  flush(p, type_at, false);
  if (pr->type != TYPE_TENSOR) {
    put(p, types[pr->type]);
  } else {
    long close = pr->ndims ? past_parens(p, end_of(p, pr->dims[pr->ndims - 1]->loc)) : type_at + 1;
    list l = {DIMS, pr->dims, pr->ndims, "[", "]", close, false, false, pr->dtype ? 1 : 0};
    print_list(p, &l);
    if (pr->dtype) {
      put(p, " ");
      put(p, pr->dtype);
    }
  }
  if (pr->default_value) {
    put(p, " = ");
    expr(p, pr->default_value, 0);
  }
  p->last_end = max_long(p->last_end, end_of(p, pr->loc));
}

// `(params)` after a layer or model name that ends at `at`; returns the offset of the ')'.
static long params(printer *p, const dhx_item *it, long at) {
  long close;
  if (it->nparams == 0) {
    close = next_code(p, next_code(p, at) + 1);
  } else {
    close = next_code(p, end_of(p, it->params[it->nparams - 1].loc));
    if (close < p->srclen && p->src[close] == ',') close = next_code(p, close + 1);
  }
  list l = {PARAMS, it->params, it->nparams, "(", ")", close, true, false, 2};
  print_list(p, &l);
  return close;
}

// ---- blocks ------------------------------------------------------------------------------------

static void field(printer *p, const dhx_field *f);

static long field_end(const printer *p, const dhx_field *f) {
  return end_of(p, f->block ? f->block->loc : f->value->loc);
}

static void fields_one_line(printer *p, const void *what) {
  const dhx_fields *fs = what;
  long close = end_of(p, fs->loc) - 1;
  bool empty = fs->n == 0 && !comment_before(p, close);
  put(p, empty ? "{" : "{ ");
  for (int i = 0; i < fs->n; i++) {
    if (i > 0) put(p, ", ");
    field(p, &fs->items[i]);
  }
  flush(p, close, false);
  put(p, empty ? "}" : " }");
}

// Fields one per line need no separator, like statements.
static void fields_lines(printer *p, const dhx_fields *fs) {
  put(p, "{");
  int outer = p->indent;
  unit_state u = save_unit(p);
  p->first = true;
  for (int i = 0; i < fs->n; i++) {
    open_line(p, start_of(p, fs->items[i].loc), outer + STEP, 0, true);
    field(p, &fs->items[i]);
    p->last_end = max_long(p->last_end, field_end(p, &fs->items[i]));
  }
  close_lines(p, end_of(p, fs->loc) - 1, outer, "}", true);
  restore_unit(p, u);
}

// ` { fields }` after a keyword, name or field name.
static void field_block(printer *p, const dhx_fields *fs) {
  flush(p, start_of(p, fs->loc), false);
  put(p, " ");
  bool nested = false;
  for (int i = 0; i < fs->n; i++) nested |= fs->items[i].block != NULL;
  if (nested || !one_line(p, fields_one_line, fs, p->tail)) fields_lines(p, fs);
}

static void field(printer *p, const dhx_field *f) {
  flush(p, start_of(p, f->loc), false);
  put(p, f->name);
  if (f->block) {
    field_block(p, f->block);
  } else {
    put(p, ": ");
    expr(p, f->value, 0);
  }
}

static void stmt(printer *p, const dhx_stmt *s);

// ` { statements }` of a layer, model or repeat whose '{' is at `open` and '}' at `close`.
static void body(printer *p, dhx_stmt *const *stmts, int n, long open, long close) {
  flush(p, open, false);
  put(p, " {");
  if (n == 0 && !comment_before(p, close)) {
    put(p, "}");
    return;
  }
  int outer = p->indent;
  unit_state u = save_unit(p);
  p->first = true;
  for (int i = 0; i < n; i++) {
    open_line(p, start_of(p, stmts[i]->loc), outer + STEP, 0, true);
    stmt(p, stmts[i]);
    p->last_end = max_long(p->last_end, end_of(p, stmts[i]->loc));
  }
  close_lines(p, close, outer, "}", true);
  restore_unit(p, u);
}

static void stmt(printer *p, const dhx_stmt *s) {
  switch (s->kind) {
    case STMT_ASSIGN:
      put(p, s->name);
      put(p, " = ");
      expr(p, s->value, 0);
      break;
    case STMT_RETURN:
      put(p, "return ");
      expr(p, s->value, 0);
      break;
    case STMT_REPEAT:
      put(p, "repeat ");
      if (s->name) {
        flush(p, start_of(p, s->name_loc), false);
        put(p, s->name);
        put(p, " in ");
      }
      expr(p, s->value, 0);
      body(p, s->body, s->nbody, past_parens(p, end_of(p, s->value->loc)), end_of(p, s->loc) - 1);
      break;
  }
}

// ---- items -------------------------------------------------------------------------------------

static void name(printer *p, const dhx_item *it) {
  flush(p, start_of(p, it->name_loc), false);
  put(p, it->name);
}

static void item(printer *p, const dhx_item *it) {
  static const char *keywords[] = {"use", "layer", "model", "model", "data", "cluster",
                                   "cluster", "gpu", "schedule", "train"};
  put(p, keywords[it->kind]);
  if (it->kind != ITEM_DATA && it->kind != ITEM_SCHEDULE && it->kind != ITEM_TRAIN) put(p, " ");
  switch (it->kind) {
    case ITEM_USE:
      flush(p, start_of(p, it->name_loc), false);
      if (it->use_path) string(p, it->name);
      else put(p, it->name);
      break;
    case ITEM_LAYER:
    case ITEM_MODEL_DEF: {
      name(p, it);
      long close = params(p, it, end_of(p, it->name_loc));
      body(p, it->body, it->nbody, next_code(p, close + 1), end_of(p, it->loc) - 1);
      break;
    }
    case ITEM_MODEL_INST:
    case ITEM_CLUSTER_DEF:
      name(p, it);
      put(p, " = ");
      expr(p, it->value, 0);
      break;
    case ITEM_CLUSTER:
      put(p, "= ");
      expr(p, it->value, 0);
      break;
    case ITEM_GPU:
      name(p, it);
      field_block(p, it->fields);
      break;
    case ITEM_DATA:
    case ITEM_SCHEDULE:
    case ITEM_TRAIN:
      field_block(p, it->fields);
      break;
  }
}

// ---- the module --------------------------------------------------------------------------------

static comment *read_comments(const printer *p, const dhx_module *m) {
  int n = m->ncomments;
  comment *c = dhx_xmalloc((size_t)(n ? n : 1) * sizeof *c);
  for (int i = 0; i < n; i++) {
    long a = start_of(p, m->comments[i].loc), b = end_of(p, m->comments[i].loc);
    long len = b - a;
    if (p->src[a] == '#')
      while (len > 1 && blank(p->src[a + len - 1])) len--;
    c[i] = (comment){.start = a, .end = b, .text = p->src + a, .len = len,
                     .multiline = memchr(p->src + a, '\n', (size_t)len) != NULL};
  }
  for (int i = 0; i < n; i++) {
    if (code_after(c, n, i, p->src, p->srclen)) c[i].place = INLINE;
    else if (code_before(c, i, p->src)) c[i].place = TRAILING;
    else c[i].place = OWN_LINE;
    if (i > 0 && c[i - 1].text[0] != '#') {
      bool same = true;
      for (long k = c[i - 1].end; k < c[i].start && same; k++) same = blank(p->src[k]);
      c[i].joined = same;
    }
  }
  return c;
}

char *dhx_format_module(const dhx_module *m, size_t *len) {
  printer p = {.src = m->source, .srclen = m->source_len, .last_comment = -1, .bol = true,
               .first = true};
  int nlines = 1;
  for (long i = 0; i < m->source_len; i++) nlines += m->source[i] == '\n';
  long *lines = dhx_xmalloc((size_t)nlines * sizeof *lines);
  lines[0] = 0;
  for (long i = 0, k = 1; i < m->source_len; i++)
    if (m->source[i] == '\n') lines[k++] = i + 1;
  p.lines = lines;
  p.nlines = nlines;
  comment *c = read_comments(&p, m);
  p.c = c;
  p.nc = m->ncomments;
  buffer out = {0};
  append(&out, "", 0);
  p.out = &out;

  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    open_line(&p, start_of(&p, it->loc), 0, 0, true);
    item(&p, it);
    p.last_end = max_long(p.last_end, end_of(&p, it->loc));
  }
  nl(&p, FAR, 0);
  flush(&p, FAR, true);
  if (!p.bol) newline(&p, 0);

  free(c);
  free(lines);
  if (len) *len = out.n;
  return out.s;
}
