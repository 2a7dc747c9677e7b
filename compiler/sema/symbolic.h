// symbolic.h — symbolic integers for shape checking: canonical polynomials over variables.
//
// A layer is checked once for all its instances, so its integer parameters and the unbound
// names of its tensor types (`x: [B, S, hidden]`) are variables, and every dimension it
// computes is a polynomial in them with integer coefficients: `3 * hidden`, `B`,
// `kv_heads * (hidden / heads)`. Polynomials are kept in one canonical form (terms sorted,
// like terms merged, no zero terms), so two dimensions are equal for every instance exactly
// when their forms are equal. Division and remainder stay exact where they can (6h/3 = 2h;
// (heads * hs) / heads = hs, the divisor being a dimension and so non-zero) and otherwise
// become opaque atoms of their own (hidden / heads), interned so that equal quotients are the
// same atom. Substituting values for variables (a call site's arguments) re-simplifies.
//
// All polynomials live in a table and die with it. Functions return NULL where a result is
// not representable (more terms or factors than the limits below, or a coefficient that
// overflows); callers treat NULL as "unknown" and check nothing about it.
#ifndef DHX_SYMBOLIC_H
#define DHX_SYMBOLIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHX_SYM_MAX_TERMS 16
#define DHX_SYM_MAX_FACTORS 6

typedef struct dhx_symtab dhx_symtab;
typedef struct dhx_sym dhx_sym;

dhx_symtab *dhx_symtab_new(void);
void dhx_symtab_free(dhx_symtab *t);

const dhx_sym *dhx_sym_const(dhx_symtab *t, int64_t v);
// A new variable, distinct from every other one (even of the same name).
const dhx_sym *dhx_sym_var(dhx_symtab *t, const char *name);

const dhx_sym *dhx_sym_add(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b);
const dhx_sym *dhx_sym_sub(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b);
const dhx_sym *dhx_sym_mul(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b);
const dhx_sym *dhx_sym_neg(dhx_symtab *t, const dhx_sym *a);
// Truncating division and remainder, as in C. A constant divisor of 0 gives NULL.
const dhx_sym *dhx_sym_div(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b);
const dhx_sym *dhx_sym_mod(dhx_symtab *t, const dhx_sym *a, const dhx_sym *b);

bool dhx_sym_equal(const dhx_sym *a, const dhx_sym *b);
bool dhx_sym_is_const(const dhx_sym *a, int64_t *v);

// a with each variable vars[i] replaced by values[i] (NULL values leave it alone).
const dhx_sym *dhx_sym_subst(dhx_symtab *t, const dhx_sym *a, const dhx_sym *const *vars,
                             const dhx_sym *const *values, int n);

// Whether the variable `var` occurs in a (also inside quotients).
bool dhx_sym_has_var(const dhx_symtab *t, const dhx_sym *a, const dhx_sym *var);

// "3*hidden + 1", "hidden/heads", "B"; returns buf. NULL prints as "?".
const char *dhx_sym_text(const dhx_symtab *t, const dhx_sym *a, char *buf, size_t size);

#endif
