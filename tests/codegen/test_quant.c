// test_quant.c — the compression kernels (kernel_quant.c) against the format kernel_spec.h and
// docs/compression.md define. `test_cg_quant WHAT`, for f32 and f64:
//   format      hand-computed words for 4- and 8-bit groups (ties to even, subtract, an
//               all-zero group), groups left as they were when their arguments are invalid,
//               and the access descriptors (the validator's bounds) against what kernels touch
//   nearest     round trip within half a step per element (4 and 8 bits; random groups, an
//               all-zero group, one with a large outlier), codes equal to a C reference of the
//               format, dequantize with accumulate (w += deq); NaN and infinities give
//               their group scale NaN
//   stochastic  the mean of many roundings is the input within a few standard errors (where
//               nearest rounding is off by many), every rounding within a step, codes equal to
//               a C reference of the documented generator; same seed the same codes, another
//               seed or offset other codes
//   hadamard    the transform equals its definition and a C fast transform, is its own inverse
//               and keeps norms, runs in place; the fused kernels equal the unfused sequence;
//               an outlier's group scale shrinks
//   reduce      dequantize-reduce-requantize (every pair of widths, both roundings) and
//               dequantize-reduce-hadamard against a double-precision C reference, within the
//               quantization bounds; a group past the rows is left as it was
// Every launch also runs in uneven index pieces and must give bitwise the same result.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"
#include "plan_util.h"

static dhx_ktype TY;
static cgt T;
static int nchecks;

static size_t es(void) { return TY == DHX_KT_F64 ? 8 : 4; }
static double rnd(double v) { return TY == DHX_KT_F32 ? (double)(float)v : v; }
static double eps(void) { return TY == DHX_KT_F32 ? 0x1p-24 : 0x1p-53; }

// ---- buffers of the kernel's dtype, read and written as doubles ----

typedef struct vec {
  int64_t n;
  void *d;
} vec;

static vec vnew(int64_t n) {
  vec v = {n, calloc((size_t)n + 1, es())};
  CHECK(v.d != NULL, "out of memory");
  return v;
}
static double vget(const vec *v, int64_t i) {
  return TY == DHX_KT_F32 ? (double)((float *)v->d)[i] : ((double *)v->d)[i];
}
static void vset(vec *v, int64_t i, double x) {
  if (TY == DHX_KT_F32) ((float *)v->d)[i] = (float)x;
  else ((double *)v->d)[i] = x;
}
static void vrand(vec *v, double lo, double hi) {
  for (int64_t i = 0; i < v->n; i++) vset(v, i, rng_uniform(lo, hi));
}
static int32_t *words_new(int64_t n) {
  int32_t *w = calloc((size_t)n + 1, sizeof *w);
  CHECK(w != NULL, "out of memory");
  return w;
}

#define P(v) ((dhx_slot){.p = (v).d})
#define W(w) ((dhx_slot){.p = (w)})
#define I(x) ((dhx_slot){.i = (x)})

static dhx_kernel_fn kfn(dhx_kernel_kind kind) {
  dhx_kernel_spec s = cgt_spec(kind, TY);
  return cgt_fn(&T, &s);
}

typedef struct mem {
  void *p;
  size_t bytes;
} mem;
static mem mv(const vec *v) { return (mem){v->d, (size_t)v->n * es()}; }
static mem mw(int32_t *w, int64_t n) { return (mem){w, (size_t)n * sizeof *w}; }

// Runs fn over [0, n) in one call and, from the same starting memory, in uneven pieces; the
// results must be bitwise equal (distinct groups never share memory; the generator is
// stateless). Leaves m holding the result.
static void run(const char *what, dhx_kernel_fn fn, const dhx_slot *a, int64_t n, mem *m,
                int nm) {
  void *start[8], *whole[8];
  for (int i = 0; i < nm; i++) {
    start[i] = malloc(m[i].bytes + 1);
    whole[i] = malloc(m[i].bytes + 1);
    CHECK(start[i] && whole[i], "out of memory");
    memcpy(start[i], m[i].p, m[i].bytes);
  }
  fn(a, 0, n);
  for (int i = 0; i < nm; i++) memcpy(whole[i], m[i].p, m[i].bytes);
  for (int i = 0; i < nm; i++) memcpy(m[i].p, start[i], m[i].bytes);
  cgt_run_split(fn, a, n, 4, 3);
  for (int i = 0; i < nm; i++) {
    CHECK(memcmp(whole[i], m[i].p, m[i].bytes) == 0, "%s: buffer %d differs between one call "
          "and split ranges", what, i);
    free(start[i]);
    free(whole[i]);
  }
}

// ---- the format, in plain C ----

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static double ref_uniform(uint64_t seed, uint64_t counter) {
  uint64_t h = mix64(seed + (counter + 1) * 0x9E3779B97F4A7C15ULL);
  return TY == DHX_KT_F64 ? (double)(h >> 11) * 0x1p-53 : (double)(h >> 40) * 0x1p-24;
}

static int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

// Code j of a group's words, sign-extended.
static int code_at(const int32_t *words, int64_t j, int bits) {
  int pw = 32 / bits, c = (int)(j % pw);
  uint32_t w = (uint32_t)words[j / pw] >> (c * bits), m = (1u << bits) - 1;
  int v = (int)(w & m);
  return v > qmax_of(bits) + 1 ? v - (1 << bits) : v;  // (qmax + 1 is -qmax - 1)
}

// The codes and scale of values v[0 .. G) (in the dtype), computed as kernel_spec.h says, in
// the dtype's arithmetic (each operation rounded to it: exact for + - * / of the dtype).
static double ref_quantize(const double *v, int64_t G, int bits, bool stochastic,
                           uint64_t seed, uint64_t counter0, int *code) {
  double qmax = qmax_of(bits), amax = 0;
  for (int64_t j = 0; j < G; j++) amax = fmax(amax, fabs(v[j]));
  double scale = rnd(amax / qmax);
  for (int64_t j = 0; j < G; j++) {
    double t = scale > 0 ? rnd(v[j] / scale) : 0;
    double r = stochastic ? floor(rnd(t + ref_uniform(seed, counter0 + (uint64_t)j)))
                          : nearbyint(t);
    code[j] = (int)fmax(fmin(r, qmax), -qmax);
  }
  return scale;
}

// The fast transform in the dtype's arithmetic, and the definition in double.
static void ref_fwht(double *v) {
  for (int h = 1; h < 32; h *= 2)
    for (int i = 0; i < 32; i += 2 * h)
      for (int j = i; j < i + h; j++) {
        double a = v[j], b = v[j + h];
        v[j] = rnd(a + b), v[j + h] = rnd(a - b);
      }
  for (int i = 0; i < 32; i++) v[i] = rnd(v[i] * rnd(0.17677669529663688110));
}
static void def_hadamard(const double *x, double *y) {
  for (int i = 0; i < 32; i++) {
    y[i] = 0;
    for (int j = 0; j < 32; j++) y[i] += (__builtin_popcount((unsigned)(i & j)) & 1 ? -x[j] : x[j]);
    y[i] /= sqrt(32.0);
  }
}

static double norm(const double *v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += v[i] * v[i];
  return sqrt(s);
}

static void ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ok(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  ok ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  nchecks++;
}

// ---- launches ----

// QUANTIZE of `ng` groups of words*pw elements; ref may be NULL (subtract 0).
static void quantize(int32_t *codes, vec *scales, vec *x, vec *ref, int64_t ng, int64_t words,
                     int bits, int stochastic, uint64_t seed, int64_t offset) {
  dhx_slot a[] = {W(codes), P(*scales), P(*x), ref ? P(*ref) : P(*x), I(words), I(32 / bits),
                  I(ref != NULL), I(stochastic), I((int64_t)seed), I(offset)};
  mem m[] = {mw(codes, ng * words), mv(scales)};
  run("quantize", kfn(DHX_K_QUANTIZE), a, ng, m, 2);
}

static void dequantize(vec *out, int32_t *codes, vec *scales, int64_t ng, int64_t words,
                       int bits, int accumulate) {
  dhx_slot a[] = {P(*out), W(codes), P(*scales), I(words), I(32 / bits), I(accumulate)};
  mem m[] = {mv(out)};
  run("dequantize", kfn(DHX_K_DEQUANTIZE), a, ng, m, 1);
}

// ---- access descriptors ----

// The kernel table entry of a kind (from a code generator of its own: the table needs no build).
static dhx_plan_kernel entry_of(dhx_kernel_kind kind) {
  dhx_kernel_spec s = cgt_spec(kind, TY);
  dhx_codegen *cg = dhx_codegen_new();
  CHECK(cg != NULL && dhx_codegen_add(cg, &s) == 0, "dhx_codegen_add");
  dhx_plan_kernel e;
  dhx_codegen_table_entry(cg, 0, &e);
  dhx_codegen_free(cg);
  return e;
}

// What the plan validator bounds a launch by (the extent of each pointer over n groups, from
// the i64 arguments) is exactly what the kernel touches: want[j] elements of argument j
// (0 for non-pointers), written where bit j of writes is set; codes are 4-byte words.
static void expect_extents(dhx_kernel_kind kind, int64_t n, const int64_t *i64,
                           const int64_t *want, uint32_t writes, uint32_t words) {
  dhx_plan_kernel e = entry_of(kind);
  dhx_plan_instr in;
  memset(&in, 0, sizeof in);
  in.op = DHX_OP_KERNEL;
  in.n = n;
  in.nargs = e.nargs;
  for (uint32_t j = 0; j < e.nargs; j++) in.args[j].i = i64[j];
  for (uint32_t j = 0; j < e.nargs; j++) {
    const dhx_plan_access *a = &e.access[j];
    if (e.arg_types[j] != DHX_KARG_PTR) {
      CHECK(want[j] == 0 && a->form == DHX_ACC_NONE, "%s argument %u", e.name, j);
      continue;
    }
    int64_t got = -1;
    CHECK(dhx_access_extent(a, &in, 1, &got) && got == want[j], "%s argument %u reaches %lld "
          "elements, the kernel touches %lld", e.name, j, (long long)got, (long long)want[j]);
    CHECK(((a->flags & DHX_ACC_WRITES) != 0) == ((writes >> j) & 1), "%s argument %u: writes",
          e.name, j);
    CHECK(a->elem_bytes == ((words >> j) & 1 ? 4 : es()), "%s argument %u: %u-byte elements",
          e.name, j, a->elem_bytes);
  }
}

static void test_extents(void) {
  const int64_t n = 5, W = 6, pw = 8, G = W * pw, p = 3, RW = 40, RG = 7;
  expect_extents(DHX_K_QUANTIZE, n, (int64_t[]){0, 0, 0, 0, W, pw, 1, 1, 9, 9},
                 (int64_t[]){n * W, n, n * G, n * G, 0, 0, 0, 0, 0, 0}, 0x3, 0x1);
  expect_extents(DHX_K_DEQUANTIZE, n, (int64_t[]){0, 0, 0, W, pw, 1},
                 (int64_t[]){n * G, n * W, n, 0, 0, 0}, 0x1, 0x2);
  expect_extents(DHX_K_HADAMARD32, n, (int64_t[]){0, 0, 64}, (int64_t[]){n * 64, n * 64, 0}, 0x1,
                 0);
  expect_extents(DHX_K_HADAMARD_QUANTIZE, n, (int64_t[]){0, 0, 0, W, pw, 1, 9, 9},
                 (int64_t[]){n * W, n, n * G, 0, 0, 0, 0, 0}, 0x3, 0x1);
  expect_extents(DHX_K_DEQUANTIZE_HADAMARD, n, (int64_t[]){0, 0, 0, W, pw, 0},
                 (int64_t[]){n * G, n * W, n, 0, 0, 0}, 0x1, 0x2);
  expect_extents(DHX_K_DEQUANTIZE_REDUCE_QUANTIZE, n,
                 (int64_t[]){0, 0, 0, 0, p, RW, RG, 2 * W, 4, W, pw, 1, 9, 9},
                 (int64_t[]){n * W, n, p * RW, p * RG, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0x3, 0x5);
  expect_extents(DHX_K_DEQUANTIZE_REDUCE_HADAMARD, n,
                 (int64_t[]){0, 0, 0, p, RW, RG, W, pw, 0},
                 (int64_t[]){n * G, p * RW, p * RG, 0, 0, 0, 0, 0, 0}, 0x1, 0x2);
  ok("access descriptors: every pointer's extent over a launch is what the kernel touches");
}

// ---- format ----

static void test_format(void) {
  test_extents();
  // 4-bit, scale 1: codes 7 -7 3 1 -1 0 2 -2 (2.5 and -2.5 tie to even) through subtract.
  const double v4[8] = {7, -7, 3, 1, -1, 0, 2.5, -2.5};
  // 8-bit, scale 1: codes 127 -127 2 -3 | 0 2 -64 100 (0.5 and 1.5 tie to even).
  const double v8[8] = {127, -127, 2, -3, 0.5, 1.5, -64, 100};
  vec x = vnew(16), ref = vnew(16), s = vnew(2);
  int32_t *w = words_new(4);
  for (int j = 0; j < 8; j++) {
    vset(&x, j, v4[j] + 10), vset(&ref, j, 10);
    vset(&x, 8 + j, 0), vset(&ref, 8 + j, 0);  // an all-zero group
  }
  quantize(w, &s, &x, &ref, 2, 1, 4, 0, 0, 0);
  CHECK((uint32_t)w[0] == 0xE20F1397u, "4-bit word 0x%08X, want 0xE20F1397", (uint32_t)w[0]);
  CHECK(w[1] == 0 && vget(&s, 0) == 1.0 && vget(&s, 1) == 0.0, "4-bit: zero group %08X %g %g",
        (uint32_t)w[1], vget(&s, 0), vget(&s, 1));
  vec out = vnew(16);
  dequantize(&out, w, &s, 2, 1, 4, 0);
  const double deq4[8] = {7, -7, 3, 1, -1, 0, 2, -2};
  for (int j = 0; j < 16; j++)
    CHECK(vget(&out, j) == (j < 8 ? deq4[j] : 0), "4-bit dequantized [%d] = %g", j, vget(&out, j));
  ok("4-bit group packs to 0xE20F1397 (little end first, ties to even), zero group scale 0");

  for (int j = 0; j < 8; j++) vset(&x, j, v8[j]);
  quantize(w, &s, &x, NULL, 1, 2, 8, 0, 0, 0);
  CHECK((uint32_t)w[0] == 0xFD02817Fu && (uint32_t)w[1] == 0x64C00200u,
        "8-bit words 0x%08X 0x%08X, want 0xFD02817F 0x64C00200", (uint32_t)w[0], (uint32_t)w[1]);
  CHECK(vget(&s, 0) == 1.0, "8-bit scale %g", vget(&s, 0));
  ok("8-bit group packs to 0xFD02817F 0x64C00200");

  // Invalid arguments leave the group as it was: a per_word other than 4 or 8, G not a
  // multiple of 8 (8-bit codes, one word), a Hadamard group not a multiple of 32.
  for (int j = 0; j < 4; j++) w[j] = 0x5A5A5A5A;
  vset(&s, 0, -3);
  dhx_slot bad[][10] = {
      {W(w), P(s), P(x), P(x), I(1), I(2), I(0), I(0), I(0), I(0)},
      {W(w), P(s), P(x), P(x), I(1), I(4), I(0), I(0), I(0), I(0)},
  };
  for (int i = 0; i < 2; i++) kfn(DHX_K_QUANTIZE)(bad[i], 0, 1);
  dhx_slot badh[] = {W(w), P(s), P(x), I(2), I(8), I(0), I(0), I(0)};  // G = 16
  kfn(DHX_K_HADAMARD_QUANTIZE)(badh, 0, 1);
  CHECK(w[0] == 0x5A5A5A5A && w[1] == 0x5A5A5A5A && vget(&s, 0) == -3, "invalid group written");
  ok("groups with invalid per_word or size are left as they were");
  free(w);
  free(x.d), free(ref.d), free(s.d), free(out.d);
}

// ---- nearest ----

// ng groups of G: random, all zero, one outlier, wide, tiny.
static void fill_groups(vec *x, int64_t G, int64_t ng) {
  for (int64_t g = 0; g < ng; g++)
    for (int64_t j = 0; j < G; j++) {
      double v = rng_uniform(-1, 1);
      switch (g % 5) {
      case 1: v = 0; break;
      case 2: v = j == G / 3 ? 1000 : v * 0.01; break;
      case 3: v *= 1e4; break;
      case 4: v *= 1e-20; break;
      default: break;
      }
      vset(x, g * G + j, v);
    }
}

static void check_codes(const char *what, const int32_t *codes, const vec *s, const vec *x,
                        int64_t G, int64_t ng, int64_t words, int bits, bool stochastic,
                        uint64_t seed, int64_t offset) {
  double *v = malloc(sizeof(double) * (size_t)G);
  int *c = malloc(sizeof(int) * (size_t)G);
  CHECK(v && c, "out of memory");
  for (int64_t g = 0; g < ng; g++) {
    for (int64_t j = 0; j < G; j++) v[j] = vget(x, g * G + j);
    double scale = ref_quantize(v, G, bits, stochastic, seed, (uint64_t)(offset + g * G), c);
    CHECK(vget(s, g) == scale, "%s: group %lld scale %.17g, want %.17g", what, (long long)g,
          vget(s, g), scale);
    for (int64_t j = 0; j < G; j++)
      CHECK(code_at(codes + g * words, j, bits) == c[j], "%s: group %lld code %lld is %d, want %d",
            what, (long long)g, (long long)j, code_at(codes + g * words, j, bits), c[j]);
  }
  free(v);
  free(c);
}

static void test_nearest(void) {
  for (int bits = 4; bits <= 8; bits += 4) {
    const int64_t G = 64, ng = 5, words = G * bits / 32, n = G * ng;
    vec x = vnew(n), s = vnew(ng), out = vnew(n), w0 = vnew(n);
    int32_t *codes = words_new(ng * words);
    fill_groups(&x, G, ng);
    quantize(codes, &s, &x, NULL, ng, words, bits, 0, 0, 0);
    check_codes("nearest", codes, &s, &x, G, ng, words, bits, false, 0, 0);
    dequantize(&out, codes, &s, ng, words, bits, 0);
    double worst = 0;
    for (int64_t g = 0; g < ng; g++) {
      double amax = 0, scale = vget(&s, g);
      for (int64_t j = 0; j < G; j++) amax = fmax(amax, fabs(vget(&x, g * G + j)));
      CHECK(fabs(scale - amax / qmax_of(bits)) <= 2 * eps() * scale, "scale of group %lld",
            (long long)g);
      for (int64_t j = 0; j < G; j++) {
        int64_t i = g * G + j;
        double err = fabs(vget(&out, i) - vget(&x, i));
        CHECK(err <= scale * (0.5 + 4 * eps()), "%d-bit group %lld [%lld]: |%g - %g| > scale/2 "
              "(%g)", bits, (long long)g, (long long)j, vget(&out, i), vget(&x, i), scale / 2);
        if (scale > 0 && err / scale > worst) worst = err / scale;
      }
    }
    CHECK(vget(&s, 1) == 0 && codes[words] == 0, "zero group");
    ok("%d-bit nearest round trip: codes as the C reference, |err| <= scale/2 (worst %.4f scale)",
       bits, worst);

    // Subtract and accumulate: w + deq(quant(x - w)) is x within half a step (qWD).
    vrand(&w0, -2, 2);
    for (int64_t i = 0; i < n; i++) vset(&out, i, vget(&w0, i));
    quantize(codes, &s, &x, &w0, ng, words, bits, 0, 0, 0);
    dequantize(&out, codes, &s, ng, words, bits, 1);
    for (int64_t i = 0; i < n; i++) {
      double d = rnd(vget(&x, i) - vget(&w0, i)), scale = vget(&s, i / G);
      double deq = vget(&out, i) - vget(&w0, i);
      CHECK(fabs(deq - d) <= scale * (0.5 + 4 * eps()) + 4 * eps() * fabs(vget(&out, i)),
            "%d-bit qWD [%lld]: %g vs %g", bits, (long long)i, deq, d);
    }
    ok("%d-bit subtract + dequantize-accumulate: w + deq(q(x - w)) within half a step of x", bits);

    // A NaN or an infinity makes its group's scale NaN (every element dequantizes to NaN);
    // codes stay in range and the other groups are unaffected.
    fill_groups(&x, G, ng);
    vset(&x, 0 * G + 7, NAN);
    vset(&x, 3 * G + 9, -INFINITY);
    quantize(codes, &s, &x, NULL, ng, words, bits, 1, 5, 0);
    dequantize(&out, codes, &s, ng, words, bits, 0);
    for (int64_t g = 0; g < ng; g++) {
      bool bad = g == 0 || g == 3;
      CHECK(isnan(vget(&s, g)) == bad, "group %lld scale %g", (long long)g, vget(&s, g));
      for (int64_t j = 0; j < G; j++) {
        int c = code_at(codes + g * words, j, bits);
        CHECK(c >= -qmax_of(bits) && c <= qmax_of(bits), "code %d out of range", c);
        CHECK(isnan(vget(&out, g * G + j)) == bad, "group %lld [%lld] = %g", (long long)g,
              (long long)j, vget(&out, g * G + j));
      }
    }
    ok("%d-bit: a NaN or an infinity gives its group scale NaN, codes in range", bits);
    free(codes);
    free(x.d), free(s.d), free(out.d), free(w0.d);
  }
}

// ---- stochastic ----

static void test_stochastic(void) {
  const int bits = 4, K = 4000;
  const int64_t G = 128, words = G * bits / 32;
  vec x = vnew(G), s = vnew(1), out = vnew(G);
  // Most values sit 0.3 of a step above a code (nearest rounding is biased there); the max
  // pins the scale to 1; a few are exact codes.
  for (int64_t j = 0; j < G; j++) vset(&x, j, (double)(j % 7) - 3 + (j % 16 == 5 ? 0 : 0.3));
  vset(&x, 0, 7);
  int32_t *codes = words_new(words), *again = words_new(words);
  double *sum = calloc((size_t)G, sizeof(double));
  CHECK(sum != NULL, "out of memory");
  for (int t = 0; t < K; t++) {
    quantize(codes, &s, &x, NULL, 1, words, bits, 1, 1000 + (uint64_t)t, 0);
    if (t < 3)
      check_codes("stochastic", codes, &s, &x, G, 1, words, bits, true, 1000 + (uint64_t)t, 0);
    dequantize(&out, codes, &s, 1, words, bits, 0);
    for (int64_t j = 0; j < G; j++) {
      double err = vget(&out, j) - vget(&x, j);
      CHECK(fabs(err) < vget(&s, 0), "stochastic error %g not below a step", err);
      sum[j] += err;
    }
  }
  double scale = vget(&s, 0), z = 0, var = 0, worst = 0;
  for (int64_t j = 0; j < G; j++) {
    double t = vget(&x, j) / scale, f = t - floor(t), sd = scale * sqrt(f * (1 - f) / K);
    double bias = sum[j] / K, tol = 5 * sd + 8 * eps() * scale;
    CHECK(fabs(bias) <= tol, "element %lld: mean error %g, %g standard errors", (long long)j,
          bias, sd > 0 ? bias / sd : INFINITY);
    if (sd > 0 && fabs(bias) / sd > worst) worst = fabs(bias) / sd;
    z += sum[j];
    var += K * scale * scale * f * (1 - f);
  }
  CHECK(fabs(z) <= 5 * sqrt(var) + 8 * eps() * scale * K * G, "total bias %g, %g standard errors",
        z, z / sqrt(var));
  // Nearest rounding is off by 0.3 of a step on most of these elements: the test has power.
  quantize(codes, &s, &x, NULL, 1, words, bits, 0, 0, 0);
  dequantize(&out, codes, &s, 1, words, bits, 0);
  double nbias = 0;
  for (int64_t j = 0; j < G; j++) nbias += vget(&out, j) - vget(&x, j);
  CHECK(fabs(nbias) > 20 * sqrt(var) / K, "nearest rounding looks unbiased here (%g)", nbias);
  ok("stochastic rounding unbiased over %d seeds: worst element %.2f standard errors, total "
     "%.2f (nearest: %.0f)", K, worst, z / sqrt(var), nbias / (sqrt(var) / K));

  quantize(codes, &s, &x, NULL, 1, words, bits, 1, 42, 0);
  quantize(again, &s, &x, NULL, 1, words, bits, 1, 42, 0);
  CHECK(memcmp(codes, again, sizeof(int32_t) * words) == 0, "same seed, other codes");
  quantize(again, &s, &x, NULL, 1, words, bits, 1, 43, 0);
  CHECK(memcmp(codes, again, sizeof(int32_t) * words) != 0, "another seed, the same codes");
  quantize(again, &s, &x, NULL, 1, words, bits, 1, 42, 1 << 20);
  CHECK(memcmp(codes, again, sizeof(int32_t) * words) != 0, "another offset, the same codes");
  ok("same seed: bitwise the same codes; another seed or offset: other codes");
  free(codes), free(again), free(sum);
  free(x.d), free(s.d), free(out.d);
}

// ---- hadamard ----

static void hadamard(vec *out, vec *x, int64_t G, int64_t ng) {
  dhx_slot a[] = {P(*out), P(*x), I(G)};
  mem m[] = {mv(out)};
  run("hadamard32", kfn(DHX_K_HADAMARD32), a, ng, m, 1);
}

static void test_hadamard(void) {
  const int64_t G = 128, ng = 3, n = G * ng;
  const double tol = TY == DHX_KT_F32 ? 1e-6 : 1e-14;
  vec x = vnew(n), y = vnew(n), z = vnew(n);
  vrand(&x, -1, 1);
  hadamard(&y, &x, G, ng);
  hadamard(&z, &y, G, ng);
  double worst_def = 0, worst_inv = 0, worst_norm = 0;
  for (int64_t b = 0; b < n / 32; b++) {
    double xb[32], yb[32], d[32], f[32], zb[32];
    for (int i = 0; i < 32; i++) {
      xb[i] = f[i] = vget(&x, b * 32 + i);
      yb[i] = vget(&y, b * 32 + i);
      zb[i] = vget(&z, b * 32 + i);
    }
    def_hadamard(xb, d);
    ref_fwht(f);
    double nx = norm(xb, 32), ny = norm(yb, 32);
    for (int i = 0; i < 32; i++) {
      CHECK(yb[i] == f[i], "block %lld [%d]: %.17g, the C fast transform %.17g", (long long)b, i,
            yb[i], f[i]);
      worst_def = fmax(worst_def, fabs(yb[i] - d[i]) / nx);
      worst_inv = fmax(worst_inv, fabs(zb[i] - xb[i]) / nx);
    }
    worst_norm = fmax(worst_norm, fabs(ny - nx) / nx);
  }
  CHECK(worst_def <= tol && worst_inv <= tol && worst_norm <= tol,
        "definition %.3g, inverse %.3g, norm %.3g (tol %g)", worst_def, worst_inv, worst_norm, tol);
  ok("hadamard32 = the C fast transform bitwise; vs H32/sqrt(32) %.1e, H(H(x)) - x %.1e, norm "
     "%.1e (relative to the block's norm)", worst_def, worst_inv, worst_norm);

  memcpy(z.d, x.d, (size_t)n * es());
  hadamard(&z, &z, G, ng);
  CHECK(memcmp(z.d, y.d, (size_t)n * es()) == 0, "in place differs");
  ok("hadamard32 in place gives the same result");

  // The fused kernels are the unfused sequence, bit for bit (the counters are the same).
  for (int bits = 4; bits <= 8; bits += 4) {
    int64_t words = G * bits / 32;
    int32_t *c1 = words_new(ng * words), *c2 = words_new(ng * words);
    vec s1 = vnew(ng), s2 = vnew(ng), o1 = vnew(n), o2 = vnew(n);
    for (int st = 0; st < 2; st++) {
      quantize(c1, &s1, &y, NULL, ng, words, bits, st, 7, 5);
      dhx_slot a[] = {W(c2), P(s2), P(x), I(words), I(32 / bits), I(st), I(7), I(5)};
      mem m[] = {mw(c2, ng * words), mv(&s2)};
      run("hadamard_quantize", kfn(DHX_K_HADAMARD_QUANTIZE), a, ng, m, 2);
      CHECK(memcmp(c1, c2, sizeof(int32_t) * (size_t)(ng * words)) == 0 &&
                memcmp(s1.d, s2.d, (size_t)ng * es()) == 0,
            "%d-bit hadamard_quantize (stochastic %d) differs from hadamard32 + quantize", bits,
            st);
    }
    for (int acc = 0; acc < 2; acc++) {
      vrand(&o1, -1, 1);
      memcpy(o2.d, o1.d, (size_t)n * es());
      dequantize(&z, c1, &s1, ng, words, bits, 0);
      hadamard(&y, &z, G, ng);  // y is free now
      for (int64_t i = 0; i < n; i++)
        vset(&o1, i, acc ? rnd(vget(&o1, i) + vget(&y, i)) : vget(&y, i));
      dhx_slot a[] = {P(o2), W(c1), P(s1), I(words), I(32 / bits), I(acc)};
      mem m[] = {mv(&o2)};
      run("dequantize_hadamard", kfn(DHX_K_DEQUANTIZE_HADAMARD), a, ng, m, 1);
      CHECK(memcmp(o1.d, o2.d, (size_t)n * es()) == 0,
            "%d-bit dequantize_hadamard (accumulate %d) differs from dequantize + hadamard32",
            bits, acc);
    }
    hadamard(&y, &x, G, ng);  // restore y = H x
    free(c1), free(c2), free(s1.d), free(s2.d), free(o1.d), free(o2.d);
  }
  ok("hadamard_quantize = hadamard32 + quantize, dequantize_hadamard = dequantize + "
     "hadamard32 (4 and 8 bits, both roundings, accumulate)");

  // Smoothing: an outlier's 4-bit group scale shrinks by about sqrt(32) / (the blocks' spread).
  vec o = vnew(G), s = vnew(1);
  int32_t *c = words_new(G / 8);
  vrand(&o, -1, 1);
  vset(&o, 40, 100);
  quantize(c, &s, &o, NULL, 1, G / 8, 4, 0, 0, 0);
  double plain = vget(&s, 0);
  dhx_slot a[] = {W(c), P(s), P(o), I(G / 8), I(8), I(0), I(0), I(0)};
  kfn(DHX_K_HADAMARD_QUANTIZE)(a, 0, 1);
  CHECK(vget(&s, 0) < plain / 3, "smoothed scale %g vs %g", vget(&s, 0), plain);
  ok("an outlier of 100 among values in [-1, 1]: 4-bit scale %.3g plain, %.3g after the "
     "transform", plain, vget(&s, 0));
  free(c), free(o.d), free(s.d);
  free(x.d), free(y.d), free(z.d);
}

// ---- reduce ----

typedef struct rows {
  int64_t p, R, words, row_words, row_groups;
  int bits;
  int32_t *codes;
  vec scales;
} rows;

// p rows of R random groups (codes anywhere in [-qmax, qmax], scales in [0.5, 2)), each row
// padded by 3 words and a scale that must not be read as data of this group.
static rows rows_new(int64_t p, int64_t R, int64_t G, int bits) {
  rows r = {p, R, G * bits / 32, 0, R + 1, bits, NULL, {0, NULL}};
  r.row_words = R * r.words + 3;
  r.codes = words_new(p * r.row_words);
  r.scales = vnew(p * r.row_groups);
  int q = qmax_of(bits);
  for (int64_t i = 0; i < p * r.row_words; i++) {
    uint32_t w = 0;
    for (int c = 0; c < 32 / bits; c++)
      w |= ((uint32_t)(rng_int(2 * q + 1) - q) & ((1u << bits) - 1)) << (c * bits);
    r.codes[i] = (int32_t)w;
  }
  vrand(&r.scales, 0.5, 2);
  return r;
}

// v[e] = sum over rows of code * scale, in double, for group g; returns the largest sum of
// the terms' magnitudes (what the kernel's roundings are relative to).
static double ref_sum(const rows *r, int64_t g, int64_t G, double *v) {
  double most = 0;
  for (int64_t e = 0; e < G; e++) {
    double mag = 0;
    v[e] = 0;
    for (int64_t q = 0; q < r->p; q++) {
      double t = code_at(r->codes + q * r->row_words + g * r->words, e, r->bits) *
                 vget(&r->scales, q * r->row_groups + g);
      v[e] += t;
      mag += fabs(t);
    }
    most = fmax(most, mag);
  }
  return most;
}

static void test_reduce_quantize(int bits_in, int bits_out, int stochastic) {
  const int64_t p = 3, R = 4, G = 64, words_out = G * bits_out / 32;
  rows r = rows_new(p, R, G, bits_in);
  int32_t *codes = words_new((R + 1) * words_out);
  vec s = vnew(R + 1);
  for (int64_t i = 0; i < (R + 1) * words_out; i++) codes[i] = 0x13579BDF;
  vset(&s, R, -5);
  dhx_slot a[] = {W(codes), P(s), W(r.codes), P(r.scales), I(p), I(r.row_words),
                  I(r.row_groups), I(r.words), I(32 / bits_in), I(words_out),
                  I(32 / bits_out), I(stochastic), I(99), I(17)};
  mem m[] = {mw(codes, (R + 1) * words_out), mv(&s)};
  // n = R + 1: the last group is past the rows' words and must be left alone.
  run("dequantize_reduce_quantize", kfn(DHX_K_DEQUANTIZE_REDUCE_QUANTIZE), a, R + 1, m, 2);
  double v[64], worst = 0;
  for (int64_t g = 0; g < R; g++) {
    double mag = ref_sum(&r, g, G, v), amax = 0, scale = vget(&s, g);
    for (int e = 0; e < G; e++) amax = fmax(amax, fabs(v[e]));
    // The kernel sums p products in the dtype: a rounding per term.
    double sumtol = 2 * p * eps() * mag;
    CHECK(fabs(scale - amax / qmax_of(bits_out)) <= sumtol + 2 * eps() * scale,
          "group %lld scale %g, want %g", (long long)g, scale, amax / qmax_of(bits_out));
    for (int e = 0; e < G; e++) {
      double deq = code_at(codes + g * words_out, e, bits_out) * scale, err = fabs(deq - v[e]);
      double bound = stochastic ? scale : scale / 2;
      CHECK(err <= bound * (1 + 4 * eps()) + sumtol, "%d->%d bits (stochastic %d) group %lld "
            "[%d]: %g, want %g within %g", bits_in, bits_out, stochastic, (long long)g, e, deq,
            v[e], bound);
      worst = fmax(worst, err / scale);
    }
  }
  for (int64_t i = R * words_out; i < (R + 1) * words_out; i++)
    CHECK(codes[i] == 0x13579BDF, "group past the rows written");
  CHECK(vget(&s, R) == -5, "scale past the rows written");
  ok("dequantize_reduce_quantize %d -> %d bits, %s: within %s of the double sum (worst %.3f "
     "scale); a group past the rows untouched", bits_in, bits_out,
     stochastic ? "stochastic" : "nearest", stochastic ? "a step" : "half a step", worst);
  free(codes), free(s.d), free(r.codes), free(r.scales.d);
}

static void test_reduce_hadamard(int bits, int acc) {
  const int64_t p = 4, R = 3, G = 64, n = G * R;
  rows r = rows_new(p, R, G, bits);
  vec out = vnew(n), start = vnew(n);
  vrand(&start, -1, 1);
  memcpy(out.d, start.d, (size_t)n * es());
  dhx_slot a[] = {P(out), W(r.codes), P(r.scales), I(p), I(r.row_words), I(r.row_groups),
                  I(r.words), I(32 / bits), I(acc)};
  mem m[] = {mv(&out)};
  run("dequantize_reduce_hadamard", kfn(DHX_K_DEQUANTIZE_REDUCE_HADAMARD), a, R, m, 1);
  double v[64], y[32], maxabs = 0, worst = 0;
  for (int64_t g = 0; g < R; g++) {
    ref_sum(&r, g, G, v);
    for (int e = 0; e < G; e++) maxabs = fmax(maxabs, fabs(v[e]));
  }
  const double rtol = TY == DHX_KT_F32 ? 1e-5 : 1e-13;
  for (int64_t g = 0; g < R; g++) {
    ref_sum(&r, g, G, v);
    for (int b = 0; b < G / 32; b++) {
      def_hadamard(v + 32 * b, y);
      for (int i = 0; i < 32; i++) {
        int64_t k = g * G + 32 * b + i;
        double want = y[i] + (acc ? vget(&start, k) : 0), err = fabs(vget(&out, k) - want);
        CHECK(err <= rtol * maxabs, "%d-bit group %lld [%d]: %.9g, want %.9g", bits,
              (long long)g, 32 * b + i, vget(&out, k), want);
        worst = fmax(worst, err / maxabs);
      }
    }
  }
  ok("dequantize_reduce_hadamard %d bits%s: H32/sqrt(32) of the double sum within %.1e of the "
     "largest value", bits, acc ? ", accumulate" : "", worst);
  free(out.d), free(start.d), free(r.codes), free(r.scales.d);
}

static void test_reduce(void) {
  for (int bi = 4; bi <= 8; bi += 4)
    for (int bo = 4; bo <= 8; bo += 4)
      for (int st = 0; st < 2; st++) test_reduce_quantize(bi, bo, st);
  for (int bits = 4; bits <= 8; bits += 4)
    for (int acc = 0; acc < 2; acc++) test_reduce_hadamard(bits, acc);
}

#define K(kind) (1u << (kind - DHX_K_QUANTIZE))

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    void (*fn)(void);
    unsigned kinds;  // the kernels it runs (only those are compiled)
  } tests[] = {
      {"format", test_format, K(DHX_K_QUANTIZE) | K(DHX_K_DEQUANTIZE) | K(DHX_K_HADAMARD_QUANTIZE)},
      {"nearest", test_nearest, K(DHX_K_QUANTIZE) | K(DHX_K_DEQUANTIZE)},
      {"stochastic", test_stochastic, K(DHX_K_QUANTIZE) | K(DHX_K_DEQUANTIZE)},
      {"hadamard", test_hadamard,
       K(DHX_K_QUANTIZE) | K(DHX_K_DEQUANTIZE) | K(DHX_K_HADAMARD32) |
           K(DHX_K_HADAMARD_QUANTIZE) | K(DHX_K_DEQUANTIZE_HADAMARD)},
      {"reduce", test_reduce,
       K(DHX_K_DEQUANTIZE_REDUCE_QUANTIZE) | K(DHX_K_DEQUANTIZE_REDUCE_HADAMARD)},
  };
  int which = -1;
  for (int i = 0; argc == 2 && i < (int)(sizeof tests / sizeof tests[0]); i++)
    if (strcmp(argv[1], tests[i].name) == 0) which = i;
  CHECK(which >= 0, "usage: test_cg_quant format|nearest|stochastic|hadamard|reduce");

  cgt_init(&T);
  for (int t = 0; t < 2; t++)
    for (int k = DHX_K_QUANTIZE; k <= DHX_K_DEQUANTIZE_REDUCE_HADAMARD; k++) {
      if (!(tests[which].kinds & K(k))) continue;
      dhx_kernel_spec s = cgt_spec((dhx_kernel_kind)k, (dhx_ktype)t);
      cgt_add(&T, &s);
    }
  cgt_build(&T);
  for (int t = 0; t < 2; t++) {
    TY = (dhx_ktype)t;
    rng_seed(11 + (uint64_t)t);
    printf("%s (%s)\n", argv[1], t ? "f64" : "f32");
    tests[which].fn();
  }
  cgt_done(&T);
  printf("%d checks passed\n", nchecks);
  return 0;
}
