// fmt_check.c — checks the promises of `dhxc fmt` on .dhx files, for the fmt_ tests.
//
//   fmt_check FILE...          each file: its formatted text parses without errors, has the
//                              same syntax tree (spans aside) and the same comments in the
//                              same order, and formatting it again changes nothing
//   fmt_check --fuzz [--pairs] FILE...
//                              the same for variants of each file with a comment inserted at
//                              every boundary of a syntax node or comment (inline, trailing,
//                              on a line of its own, a block comment over two lines, between
//                              blank lines); --pairs adds two comments at every pair of
//                              neighbouring boundaries (slower)
//
// Prints what broke and exits 1 at the first failure; 0 when everything holds.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"

typedef struct text {
  char *s;
  size_t n;
} text;

static text slurp(const char *path) {
  text t = {0};
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fmt_check: cannot open %s\n", path);
    exit(2);
  }
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    t.s = realloc(t.s, t.n + got + 1);
    memcpy(t.s + t.n, chunk, got);
    t.n += got;
  }
  fclose(f);
  if (!t.s) t.s = calloc(1, 1);
  return t;
}

// The tree as dhx_dump_module prints it, without the spans and the module line: what must
// not change when only the layout does.
static char *tree_of(const dhx_module *m) {
  char *dump = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&dump, &n);
  dhx_dump_module(m, f);
  fclose(f);
  char *out = malloc(n + 1), *o = out;
  const char *s = strchr(dump, '\n');
  s = s ? s + 1 : dump + n;
  while (*s) {
    if (s[0] == ' ' && s[1] == '@' && s[2] >= '0' && s[2] <= '9') {
      while (*s && *s != '\n') s++;
    } else {
      *o++ = *s++;
    }
  }
  *o = '\0';
  free(dump);
  return out;
}

// The comments, one per line, `#` comments without trailing blanks (fmt drops those).
static char *comments_of(const dhx_module *m) {
  char *out = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&out, &n);
  for (int i = 0; i < m->ncomments; i++) {
    const char *t = m->comments[i].text;
    size_t len = strlen(t);
    if (t[0] == '#')
      while (len > 1 && (t[len - 1] == ' ' || t[len - 1] == '\t' || t[len - 1] == '\r')) len--;
    fprintf(f, "%.*s\n", (int)len, t);
  }
  fclose(f);
  return out;
}

static bool quiet;  // fuzz variants: the failing input is shown instead of parse messages

static dhx_module *parse(const char *name, const char *s, size_t n, bool *ok) {
  int errors = dhx_diag.errors;
  dhx_module *m = dhx_parse_buffer(name, s, (long)n);
  *ok = dhx_diag.errors == errors;
  return m;
}

static bool fail(const char *what, const char *name, const char *input, const char *a,
                 const char *b) {
  fprintf(stderr, "FAIL %s: %s\n", name, what);
  if (input) fprintf(stderr, "---- input ----\n%s", input);
  if (a) fprintf(stderr, "---- first ----\n%s", a);
  if (b) fprintf(stderr, "---- second ----\n%s", b);
  fprintf(stderr, "---- end ----\n");
  return false;
}

// Every promise for one input text. Inputs that do not parse are skipped (*parsed = false).
// `tree`, when given, is the input's tree, known already (comments do not change it).
static bool check(const char *name, const char *src, size_t len, const char *tree, bool *parsed) {
  bool ok;
  dhx_module *m0 = parse(name, src, len, &ok);
  *parsed = ok;
  if (!ok) {
    dhx_module_free(m0);
    return true;
  }
  size_t n1, n2;
  char *out1 = dhx_format_module(m0, &n1);
  dhx_module *m1 = parse("<formatted>", out1, n1, &ok);
  bool good = ok || fail("the formatted text does not parse", name, quiet ? src : NULL, out1, NULL);
  char *t0 = tree ? NULL : tree_of(m0), *t1 = tree_of(m1);
  if (tree) t0 = strcpy(malloc(strlen(tree) + 1), tree);
  char *c0 = comments_of(m0), *c1 = comments_of(m1);
  char *out2 = dhx_format_module(m1, &n2);
  if (good && strcmp(t0, t1) != 0)
    good = fail("the syntax tree changed", name, quiet ? src : NULL, t0, t1);
  if (good && strcmp(c0, c1) != 0)
    good = fail("the comments changed", name, quiet ? src : NULL, c0, c1);
  if (good && (n1 != n2 || memcmp(out1, out2, n1) != 0))
    good = fail("formatting twice differs from formatting once", name, quiet ? src : NULL, out1,
                out2);
  free(t0), free(t1), free(c0), free(c1), free(out1), free(out2);
  dhx_module_free(m0);
  dhx_module_free(m1);
  return good;
}

// ---- fuzz: a comment at every boundary of a node ---------------------------------------------

typedef struct offsets {
  long *v;
  int n, cap;
  const long *lines;
  int nlines;
} offsets;

static void add(offsets *o, dhx_loc l, bool start) {
  int line = start ? l.line : l.end_line, col = start ? l.col : l.end_col;
  if (line < 1 || line > o->nlines) return;
  if (o->n == o->cap) {
    o->cap = o->cap ? 2 * o->cap : 256;
    o->v = realloc(o->v, (size_t)o->cap * sizeof *o->v);
  }
  o->v[o->n++] = o->lines[line - 1] + col - 1;
}

static void span(offsets *o, dhx_loc l) {
  add(o, l, true);
  add(o, l, false);
}

static void expr_offsets(offsets *o, const dhx_expr *e) {
  if (!e) return;
  span(o, e->loc);
  expr_offsets(o, e->lhs);
  expr_offsets(o, e->rhs);
  for (int i = 0; i < e->nargs; i++) {
    span(o, e->args[i].name_loc);
    expr_offsets(o, e->args[i].value);
  }
}

static void fields_offsets(offsets *o, const dhx_fields *fs) {
  if (!fs) return;
  span(o, fs->loc);
  for (int i = 0; i < fs->n; i++) {
    span(o, fs->items[i].loc);
    expr_offsets(o, fs->items[i].value);
    fields_offsets(o, fs->items[i].block);
  }
}

static void stmts_offsets(offsets *o, dhx_stmt *const *s, int n) {
  for (int i = 0; i < n; i++) {
    span(o, s[i]->loc);
    if (s[i]->name) span(o, s[i]->name_loc);
    expr_offsets(o, s[i]->value);
    stmts_offsets(o, s[i]->body, s[i]->nbody);
  }
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return x < y ? -1 : x > y;
}

static bool fuzz(const char *name, const text *t, bool pairs) {
  bool ok;
  dhx_module *m = parse(name, t->s, t->n, &ok);
  if (!ok) return fail("does not parse", name, NULL, NULL, NULL);
  offsets o = {0};
  int nlines = 1;
  for (size_t i = 0; i < t->n; i++) nlines += t->s[i] == '\n';
  long *lines = malloc((size_t)nlines * sizeof *lines);
  lines[0] = 0;
  for (size_t i = 0, k = 1; i < t->n; i++)
    if (t->s[i] == '\n') lines[k++] = (long)i + 1;
  o.lines = lines;
  o.nlines = nlines;
  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    span(&o, it->loc);
    span(&o, it->name_loc);
    for (int j = 0; j < it->nparams; j++) {
      span(&o, it->params[j].loc);
      for (int k = 0; k < it->params[j].ndims; k++) expr_offsets(&o, it->params[j].dims[k]);
      expr_offsets(&o, it->params[j].default_value);
    }
    stmts_offsets(&o, it->body, it->nbody);
    expr_offsets(&o, it->value);
    fields_offsets(&o, it->fields);
  }
  for (int i = 0; i < m->ncomments; i++) span(&o, m->comments[i].loc);
  char *tree = tree_of(m);
  dhx_module_free(m);
  if (o.n > 0) qsort(o.v, (size_t)o.n, sizeof *o.v, cmp_long);

  // Each comment alone at every boundary; then pairs at neighbouring boundaries, where one
  // comment's place depends on the other (the first NPAIR kinds in every combination).
  static const char *inserts[] = {" /* c */ ", " # c\n", "\n# c\n", "/* c */", "\n/* c\n   d */\n",
                                  "\n\n# c\n\n", "\n/* e */ "};
  enum { NINSERT = sizeof inserts / sizeof *inserts, NPAIR = 4 };
  int nparsed = 0, nvariants = 0, nb = 0;
  for (int i = 0; i < o.n; i++)
    if (i == 0 || o.v[i] != o.v[i - 1]) o.v[nb++] = o.v[i];
  bool good = true;
  quiet = true;
  FILE *saved = dhx_diag.out;
  dhx_diag.out = fopen("/dev/null", "w");
  for (int i = 0; i < nb && good; i++) {
    for (int k = 0; k < NINSERT + (pairs ? NPAIR * NPAIR : 0) && good; k++) {
      bool pair = k >= NINSERT;
      if (pair && i + 1 >= nb) break;
      const char *a = inserts[pair ? (k - NINSERT) / NPAIR : k];  // a and b: kinds < NPAIR
      const char *b = pair ? inserts[(k - NINSERT) % NPAIR] : "";
      size_t at = (size_t)o.v[i], at2 = pair ? (size_t)o.v[i + 1] : at;
      size_t na = strlen(a), nb2 = strlen(b), n = t->n + na + nb2;
      char *v = malloc(n + 1), *w = v;
      memcpy(w, t->s, at), w += at;
      memcpy(w, a, na), w += na;
      memcpy(w, t->s + at, at2 - at), w += at2 - at;
      memcpy(w, b, nb2), w += nb2;
      memcpy(w, t->s + at2, t->n - at2);
      v[n] = '\0';
      bool parsed;
      good = check(name, v, n, tree, &parsed);
      nvariants++;
      nparsed += parsed;
      free(v);
    }
  }
  fclose(dhx_diag.out);
  dhx_diag.out = saved;
  quiet = false;
  free(o.v);
  free(lines);
  free(tree);
  // A comment between two tokens is blanks to the lexer, so every variant must parse.
  if (good && nparsed != nvariants) {
    fprintf(stderr, "FAIL %s: %d of %d variants do not parse\n", name, nvariants - nparsed,
            nvariants);
    good = false;
  }
  if (good) printf("ok %s: %d variants\n", name, nvariants);
  return good;
}

int main(int argc, char **argv) {
  bool do_fuzz = argc > 1 && strcmp(argv[1], "--fuzz") == 0;
  bool pairs = do_fuzz && argc > 2 && strcmp(argv[2], "--pairs") == 0;
  int first = 1 + do_fuzz + pairs;
  if (first >= argc) {
    fprintf(stderr, "usage: fmt_check [--fuzz [--pairs]] FILE...\n");
    return 2;
  }
  for (int i = first; i < argc; i++) {
    text t = slurp(argv[i]);
    bool good;
    if (do_fuzz) {
      good = fuzz(argv[i], &t, pairs);
    } else {
      bool parsed;
      good = check(argv[i], t.s, t.n, NULL, &parsed);
      if (good && !parsed) good = fail("does not parse", argv[i], NULL, NULL, NULL);
      if (good) printf("ok %s\n", argv[i]);
    }
    free(t.s);
    if (!good) return 1;
  }
  return 0;
}
