// test_symbolic.c — the symbolic integers that shape checking compares: canonical forms,
// exact and opaque division, substitution, printing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symbolic.h"

static int failures;
static dhx_symtab *T;

static void expect_text(const char *what, const dhx_sym *s, const char *want) {
  char buf[256];
  dhx_sym_text(T, s, buf, sizeof buf);
  if (strcmp(buf, want) != 0) {
    fprintf(stderr, "%s: got '%s', want '%s'\n", what, buf, want);
    failures++;
  }
}

static void expect(const char *what, bool ok) {
  if (!ok) {
    fprintf(stderr, "%s: failed\n", what);
    failures++;
  }
}

int main(void) {
  T = dhx_symtab_new();
  const dhx_sym *h = dhx_sym_var(T, "hidden"), *H = dhx_sym_var(T, "heads"), *B = dhx_sym_var(T, "B");
  const dhx_sym *three = dhx_sym_const(T, 3), *two = dhx_sym_const(T, 2);
  const dhx_sym *h3 = dhx_sym_mul(T, three, h);
  expect_text("3*hidden", h3, "3*hidden");
  expect("(3 hidden)/3 = hidden", dhx_sym_equal(dhx_sym_div(T, h3, three), h));
  expect("h + h = 2h", dhx_sym_equal(dhx_sym_add(T, h, h), dhx_sym_mul(T, two, h)));
  expect("h - h = 0", dhx_sym_equal(dhx_sym_sub(T, h, h), dhx_sym_const(T, 0)));
  expect("a*b = b*a", dhx_sym_equal(dhx_sym_mul(T, h, H), dhx_sym_mul(T, H, h)));
  // (a + 1)(a - 1) = a*a - 1
  const dhx_sym *one = dhx_sym_const(T, 1);
  expect("(h+1)(h-1) = h*h - 1",
         dhx_sym_equal(dhx_sym_mul(T, dhx_sym_add(T, h, one), dhx_sym_sub(T, h, one)),
                       dhx_sym_sub(T, dhx_sym_mul(T, h, h), one)));
  // hidden / heads is opaque but interned: two of them are the same atom
  const dhx_sym *hd = dhx_sym_div(T, h, H), *hd2 = dhx_sym_div(T, h, H);
  expect_text("hidden/heads", hd, "hidden/heads");
  expect("interned quotient", dhx_sym_equal(hd, hd2));
  // kv * (hidden/heads) == (hidden/heads) * kv
  const dhx_sym *kv = dhx_sym_var(T, "kv_heads");
  expect("kv*(h/H) commutes", dhx_sym_equal(dhx_sym_mul(T, kv, hd), dhx_sym_mul(T, hd2, kv)));
  // (heads * hs) / heads = hs: a single-term divisor cancels
  const dhx_sym *hs = dhx_sym_var(T, "hs");
  expect("(H*hs)/H = hs", dhx_sym_equal(dhx_sym_div(T, dhx_sym_mul(T, H, hs), H), hs));
  expect("(6h + 3) / 3 = 2h + 1",
         dhx_sym_equal(dhx_sym_div(T, dhx_sym_add(T, dhx_sym_mul(T, dhx_sym_const(T, 6), h), three), three),
                       dhx_sym_add(T, dhx_sym_mul(T, two, h), one)));
  expect_text("(h + 1)/2 stays opaque", dhx_sym_div(T, dhx_sym_add(T, h, one), two), "(hidden + 1)/2");
  expect("(4h) % 2 = 0", dhx_sym_equal(dhx_sym_mod(T, dhx_sym_mul(T, dhx_sym_const(T, 4), h), two),
                                       dhx_sym_const(T, 0)));
  expect_text("constants fold", dhx_sym_div(T, dhx_sym_const(T, 7), two), "3");
  expect_text("negatives", dhx_sym_sub(T, dhx_sym_neg(T, h3), dhx_sym_mul(T, B, two)), "-3*hidden - 2*B");
  expect("division by zero is unknown", dhx_sym_div(T, h, dhx_sym_const(T, 0)) == NULL);
  expect("overflow is unknown", dhx_sym_mul(T, dhx_sym_const(T, INT64_MAX), two) == NULL);
  // substitution: hidden/heads with hidden = 2*d, heads = 2 → d
  const dhx_sym *d = dhx_sym_var(T, "d");
  const dhx_sym *vars[] = {h, H}, *vals[] = {dhx_sym_mul(T, two, d), two};
  expect("subst then simplify", dhx_sym_equal(dhx_sym_subst(T, hd, vars, vals, 2), d));
  const dhx_sym *vals2[] = {dhx_sym_const(T, 768), dhx_sym_const(T, 12)};
  expect_text("subst to a constant", dhx_sym_subst(T, dhx_sym_mul(T, kv, hd), vars, vals2, 2), "64*kv_heads");
  dhx_symtab_free(T);
  if (failures) return 1;
  printf("symbolic integers: all checks passed\n");
  return 0;
}
