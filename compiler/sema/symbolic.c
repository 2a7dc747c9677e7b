// symbolic.c — see symbolic.h. Polynomials are arrays of terms, each a coefficient times a
// sorted multiset of atoms (variables, or opaque quotients and remainders).
#include "symbolic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { ATOM_VAR, ATOM_DIV, ATOM_MOD } atom_kind;

typedef struct atom {
  atom_kind kind;
  char *name;                 // ATOM_VAR
  const dhx_sym *num, *den;   // ATOM_DIV, ATOM_MOD
} atom;

typedef struct term {
  int64_t coef;
  int n;                               // number of factors (0: a constant)
  int f[DHX_SYM_MAX_FACTORS];          // atom ids, ascending
} term;

struct dhx_sym {
  int n;
  term t[];                            // canonical: sorted by term_cmp, distinct, coef != 0
};

struct dhx_symtab {
  atom *atoms;
  int natoms, capatoms;
  void **blocks;                       // every allocation, freed with the table
  int nblocks, capblocks;
};

static void *xalloc(dhx_symtab *t, size_t size) {
  void *p = calloc(1, size);
  if (!p) abort();
  if (t->nblocks == t->capblocks) {
    t->capblocks = t->capblocks ? 2 * t->capblocks : 64;
    t->blocks = realloc(t->blocks, (size_t)t->capblocks * sizeof *t->blocks);
    if (!t->blocks) abort();
  }
  t->blocks[t->nblocks++] = p;
  return p;
}

dhx_symtab *dhx_symtab_new(void) {
  dhx_symtab *t = calloc(1, sizeof *t);
  if (!t) abort();
  return t;
}

void dhx_symtab_free(dhx_symtab *t) {
  if (!t) return;
  for (int i = 0; i < t->nblocks; i++) free(t->blocks[i]);
  free(t->blocks);
  free(t->atoms);
  free(t);
}

// ---- canonical form ---------------------------------------------------------------------------

static int term_cmp(const term *a, const term *b) {
  if (a->n != b->n) return a->n < b->n ? -1 : 1;
  for (int i = 0; i < a->n; i++)
    if (a->f[i] != b->f[i]) return a->f[i] < b->f[i] ? -1 : 1;
  return 0;
}

static int term_qsort_cmp(const void *a, const void *b) { return term_cmp(a, b); }

// Sorts, merges like terms and drops zeros; NULL on coefficient overflow or too many terms.
static const dhx_sym *make(dhx_symtab *t, term *terms, int n) {
  qsort(terms, (size_t)n, sizeof *terms, term_qsort_cmp);
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (k > 0 && term_cmp(&terms[k - 1], &terms[i]) == 0) {
      if (__builtin_add_overflow(terms[k - 1].coef, terms[i].coef, &terms[k - 1].coef)) return NULL;
    } else {
      terms[k++] = terms[i];
    }
  }
  int m = 0;  // drop the terms that cancelled
  for (int i = 0; i < k; i++)
    if (terms[i].coef != 0) terms[m++] = terms[i];
  if (m > DHX_SYM_MAX_TERMS) return NULL;
  dhx_sym *s = xalloc(t, sizeof *s + (size_t)m * sizeof(term));
  s->n = m;
  memcpy(s->t, terms, (size_t)m * sizeof(term));
  return s;
}

const dhx_sym *dhx_sym_const(dhx_symtab *t, int64_t v) {
  term x = {.coef = v};
  return make(t, &x, 1);
}

static int new_atom(dhx_symtab *t, atom a) {
  if (t->natoms == t->capatoms) {
    t->capatoms = t->capatoms ? 2 * t->capatoms : 32;
    t->atoms = realloc(t->atoms, (size_t)t->capatoms * sizeof *t->atoms);
    if (!t->atoms) abort();
  }
  t->atoms[t->natoms] = a;
  return t->natoms++;
}

static const dhx_sym *atom_sym(dhx_symtab *t, int id) {
  term x = {.coef = 1, .n = 1, .f = {id}};
  return make(t, &x, 1);
}

const dhx_sym *dhx_sym_var(dhx_symtab *t, const char *name) {
  size_t len = strlen(name);
  char *copy = xalloc(t, len + 1);
  memcpy(copy, name, len);
  return atom_sym(t, new_atom(t, (atom){ATOM_VAR, copy, NULL, NULL}));
}

static const dhx_sym *opaque(dhx_symtab *t, atom_kind kind, const dhx_sym *a, const dhx_sym *b) {
  for (int i = 0; i < t->natoms; i++)
    if (t->atoms[i].kind == kind && dhx_sym_equal(t->atoms[i].num, a) &&
        dhx_sym_equal(t->atoms[i].den, b))
      return atom_sym(t, i);
  return atom_sym(t, new_atom(t, (atom){kind, NULL, a, b}));
}

// ---- arithmetic -------------------------------------------------------------------------------

const dhx_sym *dhx_sym_add(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  if (!a || !b || a->n + b->n > 2 * DHX_SYM_MAX_TERMS) return NULL;
  term terms[2 * DHX_SYM_MAX_TERMS];
  memcpy(terms, a->t, (size_t)a->n * sizeof(term));
  memcpy(terms + a->n, b->t, (size_t)b->n * sizeof(term));
  return make(t, terms, a->n + b->n);
}

const dhx_sym *dhx_sym_neg(dhx_symtab *t, const dhx_sym *a) {
  if (!a) return NULL;
  term terms[DHX_SYM_MAX_TERMS];
  for (int i = 0; i < a->n; i++) {
    terms[i] = a->t[i];
    if (__builtin_sub_overflow((int64_t)0, a->t[i].coef, &terms[i].coef)) return NULL;
  }
  return make(t, terms, a->n);
}

const dhx_sym *dhx_sym_sub(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  return dhx_sym_add(t, a, dhx_sym_neg(t, b));
}

// The product of two factor multisets, still sorted; false when it has too many factors.
static bool merge_factors(const term *a, const term *b, term *out) {
  if (a->n + b->n > DHX_SYM_MAX_FACTORS) return false;
  int i = 0, j = 0, k = 0;
  while (i < a->n || j < b->n)
    out->f[k++] = (j >= b->n || (i < a->n && a->f[i] <= b->f[j])) ? a->f[i++] : b->f[j++];
  out->n = k;
  return true;
}

const dhx_sym *dhx_sym_mul(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  if (!a || !b || a->n * b->n > DHX_SYM_MAX_TERMS * DHX_SYM_MAX_TERMS) return NULL;
  term terms[DHX_SYM_MAX_TERMS * DHX_SYM_MAX_TERMS];
  int n = 0;
  for (int i = 0; i < a->n; i++)
    for (int j = 0; j < b->n; j++) {
      term *x = &terms[n++];
      if (!merge_factors(&a->t[i], &b->t[j], x)) return NULL;
      if (__builtin_mul_overflow(a->t[i].coef, b->t[j].coef, &x->coef)) return NULL;
    }
  return make(t, terms, n);
}

// x / d where d is one term dividing x exactly (its coefficient divides x's and its factors
// are among x's); false otherwise.
static bool divide_term(const term *x, const term *d, term *out) {
  if (d->coef == 0 || x->coef % d->coef != 0) return false;
  if (d->coef == -1 && x->coef == INT64_MIN) return false;
  int i = 0, k = 0;
  for (int j = 0; j < d->n; j++) {
    while (i < x->n && x->f[i] < d->f[j]) out->f[k++] = x->f[i++];
    if (i >= x->n || x->f[i] != d->f[j]) return false;
    i++;
  }
  while (i < x->n) out->f[k++] = x->f[i++];
  out->n = k;
  out->coef = x->coef / d->coef;
  return true;
}

// a / b when b is a single term dividing every term of a; NULL otherwise.
static const dhx_sym *exact_quotient(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  if (b->n != 1) return NULL;
  term terms[DHX_SYM_MAX_TERMS];
  for (int i = 0; i < a->n; i++)
    if (!divide_term(&a->t[i], &b->t[0], &terms[i])) return NULL;
  return make(t, terms, a->n);
}

const dhx_sym *dhx_sym_div(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  if (!a || !b) return NULL;
  int64_t x, y;
  bool ca = dhx_sym_is_const(a, &x), cb = dhx_sym_is_const(b, &y);
  if (cb && y == 0) return NULL;
  if (ca && cb) return (x == INT64_MIN && y == -1) ? NULL : dhx_sym_const(t, x / y);
  const dhx_sym *q = exact_quotient(t, a, b);
  return q ? q : opaque(t, ATOM_DIV, a, b);
}

const dhx_sym *dhx_sym_mod(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b) {
  if (!a || !b) return NULL;
  int64_t x, y;
  bool ca = dhx_sym_is_const(a, &x), cb = dhx_sym_is_const(b, &y);
  if (cb && y == 0) return NULL;
  if (ca && cb) return (x == INT64_MIN && y == -1) ? dhx_sym_const(t, 0) : dhx_sym_const(t, x % y);
  if (exact_quotient(t, a, b)) return dhx_sym_const(t, 0);
  return opaque(t, ATOM_MOD, a, b);
}

// ---- comparison and substitution ----------------------------------------------------------------

bool dhx_sym_equal(const dhx_sym *a, const dhx_sym *b) {
  if (!a || !b || a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (a->t[i].coef != b->t[i].coef || term_cmp(&a->t[i], &b->t[i]) != 0) return false;
  return true;
}

bool dhx_sym_is_const(const dhx_sym *a, int64_t *v) {
  if (!a) return false;
  if (a->n == 0) {
    *v = 0;
    return true;
  }
  if (a->n == 1 && a->t[0].n == 0) {
    *v = a->t[0].coef;
    return true;
  }
  return false;
}

static int var_id(const dhx_sym *v) { return v && v->n == 1 && v->t[0].n == 1 && v->t[0].coef == 1 ? v->t[0].f[0] : -1; }

static const dhx_sym *subst_atom(dhx_symtab *t, int id, const dhx_sym *const *vars,
                                 const dhx_sym *const *values, int n, int depth) {
  if (depth > 32) return NULL;
  atom a = t->atoms[id];
  if (a.kind == ATOM_VAR) {
    for (int i = 0; i < n; i++)
      if (values[i] && var_id(vars[i]) == id) return values[i];
    return atom_sym(t, id);
  }
  const dhx_sym *num = dhx_sym_subst(t, a.num, vars, values, n);
  const dhx_sym *den = dhx_sym_subst(t, a.den, vars, values, n);
  return a.kind == ATOM_DIV ? dhx_sym_div(t, num, den) : dhx_sym_mod(t, num, den);
}

const dhx_sym *dhx_sym_subst(dhx_symtab *t, const dhx_sym *a, const dhx_sym *const *vars,
                             const dhx_sym *const *values, int n) {
  if (!a) return NULL;
  const dhx_sym *sum = dhx_sym_const(t, 0);
  for (int i = 0; i < a->n && sum; i++) {
    const dhx_sym *prod = dhx_sym_const(t, a->t[i].coef);
    for (int j = 0; j < a->t[i].n && prod; j++)
      prod = dhx_sym_mul(t, prod, subst_atom(t, a->t[i].f[j], vars, values, n, 0));
    sum = dhx_sym_add(t, sum, prod);
  }
  return sum;
}

static bool atom_has(const dhx_symtab *t, int id, int var, int depth) {
  if (id == var) return true;
  const atom *a = &t->atoms[id];
  if (a->kind == ATOM_VAR || depth > 32) return false;
  const dhx_sym *parts[2] = {a->num, a->den};
  for (int p = 0; p < 2; p++)
    for (int i = 0; i < parts[p]->n; i++)
      for (int j = 0; j < parts[p]->t[i].n; j++)
        if (atom_has(t, parts[p]->t[i].f[j], var, depth + 1)) return true;
  return false;
}

bool dhx_sym_has_var(const dhx_symtab *t, const dhx_sym *a, const dhx_sym *var) {
  int v = var_id(var);
  if (!a || v < 0) return false;
  for (int i = 0; i < a->n; i++)
    for (int j = 0; j < a->t[i].n; j++)
      if (atom_has(t, a->t[i].f[j], v, 0)) return true;
  return false;
}

// ---- text ---------------------------------------------------------------------------------------

typedef struct out {
  char *buf;
  size_t size, len;
} out;

static void put(out *o, const char *s) {
  size_t n = strlen(s);
  if (o->len + n + 1 > o->size) n = o->size > o->len + 1 ? o->size - o->len - 1 : 0;
  memcpy(o->buf + o->len, s, n);
  o->len += n;
  o->buf[o->len] = '\0';
}

static void put_sym(out *o, const dhx_symtab *t, const dhx_sym *a, bool group);

static void put_atom(out *o, const dhx_symtab *t, int id) {
  const atom *a = &t->atoms[id];
  if (a->kind == ATOM_VAR) {
    put(o, a->name);
    return;
  }
  put_sym(o, t, a->num, true);
  put(o, a->kind == ATOM_DIV ? "/" : " % ");
  put_sym(o, t, a->den, true);
}

// group: parenthesise anything that is not a single factor (for operands of / and %).
static void put_sym(out *o, const dhx_symtab *t, const dhx_sym *a, bool group) {
  if (!a) {
    put(o, "?");
    return;
  }
  bool single = a->n == 0 || (a->n == 1 && (a->t[0].n == 0 || (a->t[0].n == 1 && a->t[0].coef == 1)));
  if (group && !single) put(o, "(");
  if (a->n == 0) put(o, "0");
  // Highest degree first; terms of one degree in their canonical (atom) order.
  int order[DHX_SYM_MAX_TERMS], k = 0;
  for (int end = a->n; end > 0;) {
    int start = end;
    while (start > 0 && a->t[start - 1].n == a->t[end - 1].n) start--;
    for (int i = start; i < end; i++) order[k++] = i;
    end = start;
  }
  for (int oi = 0; oi < a->n; oi++) {
    const term *x = &a->t[order[oi]];
    int64_t c = x->coef;
    if (oi > 0) put(o, c < 0 ? " - " : " + ");
    else if (c < 0) put(o, "-");
    char num[32];
    unsigned long long mag = c < 0 ? 0ULL - (unsigned long long)c : (unsigned long long)c;
    if (mag != 1 || x->n == 0) {
      snprintf(num, sizeof num, "%llu", mag);
      put(o, num);
      if (x->n) put(o, "*");
    }
    for (int j = 0; j < x->n; j++) {
      if (j) put(o, "*");
      put_atom(o, t, x->f[j]);
    }
  }
  if (group && !single) put(o, ")");
}

const char *dhx_sym_text(const dhx_symtab *t, const dhx_sym *a, char *buf, size_t size) {
  if (!size) return buf;
  out o = {buf, size, 0};
  buf[0] = '\0';
  put_sym(&o, t, a, false);
  return buf;
}
