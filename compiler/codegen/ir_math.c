// ir_math.c — exp, log, tanh and GELU written out in IR.
//
// Why not call expf/logf: the PTX target has no libm (ptxas rejects an undefined `expf`), and
// on the CPU a libm call in a loop stops vectorisation. These are plain arithmetic, integer
// bit manipulation and selects, so they vectorise and run unchanged on the GPU. Accuracy
// (checked by tests/codegen against libm): f32 within a few ulp (< 1e-6 relative), f64
// within ~1e-15 relative, with IEEE behaviour for NaN, ±inf and zero. One deliberate
// difference: exp flushes results below the smallest normal number to zero (as GPU code built
// with flush-to-zero does). Producing or consuming subnormals costs x86 a microcode assist per
// operation (GELU and softmax measured 5-15x slower on inputs that produce them), and a value
// under 1.2e-38 carries no information for training.
#include <math.h>

#include "ir_builder.h"

// The shape of x: its float type, the integer type of the same width (and lane count).
typedef struct mt {
  LLVMTypeRef ty, ity;
  bool dbl;
} mt;

static mt mt_of(kb *k, LLVMValueRef x) {
  mt m;
  m.ty = LLVMTypeOf(x);
  bool vec = LLVMGetTypeKind(m.ty) == LLVMVectorTypeKind;
  LLVMTypeRef e = vec ? LLVMGetElementType(m.ty) : m.ty;
  m.dbl = LLVMGetTypeKind(e) == LLVMDoubleTypeKind;
  LLVMTypeRef ie = m.dbl ? k->i64 : k->i32;
  m.ity = vec ? LLVMVectorType(ie, LLVMGetVectorSize(m.ty)) : ie;
  return m;
}

static LLVMValueRef C(const mt *m, double v) { return kb_cf(m->ty, v); }
static LLVMValueRef I(const mt *m, long long v) { return kb_ci(m->ity, v); }

// Horner: c[0] + x*(c[1] + x*(c[2] + ...)), highest coefficient last.
static LLVMValueRef horner(kb *k, const mt *m, LLVMValueRef x, const double *c, int n) {
  LLVMValueRef p = C(m, c[n - 1]);
  for (int i = n - 2; i >= 0; i--) p = kb_fma(k, p, x, C(m, c[i]));
  return p;
}

static LLVMValueRef fcmp(kb *k, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(k->b, p, a, b, "");
}

// 2^n for integer n (of type ity) in the normal range: the exponent field built directly.
static LLVMValueRef pow2i(kb *k, const mt *m, LLVMValueRef n) {
  int mant = m->dbl ? 52 : 23, bias = m->dbl ? 1023 : 127;
  LLVMValueRef bits = LLVMBuildShl(k->b, LLVMBuildAdd(k->b, n, I(m, bias), ""), I(m, mant), "");
  return LLVMBuildBitCast(k->b, bits, m->ty, "");
}

// exp(x) = 2^n * e^r with n = rint(x / ln2) and r = x - n ln2 (|r| <= ln2/2, two-constant
// Cody–Waite reduction). e^r: Cephes' minimax polynomial for f32, Taylor to degree 13 for f64
// (truncation < 1e-17). 2^n is applied as two factors 2^(n/2) * 2^(n - n/2), so results up to
// overflow (→ inf) need no special case. x is clamped below at lo, where exp is just above the
// smallest normal, before any arithmetic, and results for x < lo are 0: no subnormal is
// ever produced (see the top of the file).
LLVMValueRef kb_exp(kb *k, LLVMValueRef x) {
  mt m = mt_of(k, x);
  // lo: the first float/double above ln(smallest normal) = -126 ln2 / -1022 ln2.
  double lo = m.dbl ? -708.396418532264 : -87.33654022216797, hi = m.dbl ? 710.0 : 89.0;
  double ln2_hi = m.dbl ? 6.93147180369123816490e-01 : 6.93145751953125e-01;
  double ln2_lo = m.dbl ? 1.90821492927058770002e-10 : 1.428606765330187045e-06;
  // Clamp with compare+select: NaN passes through (it is put back at the end).
  LLVMValueRef xc = kb_select(k, fcmp(k, LLVMRealOLT, x, C(&m, lo)), C(&m, lo), x);
  xc = kb_select(k, fcmp(k, LLVMRealOGT, xc, C(&m, hi)), C(&m, hi), xc);
  LLVMValueRef n = kb_rint(k, kb_mul(k, xc, C(&m, 1.44269504088896338700e+00)));
  LLVMValueRef r = kb_fma(k, n, C(&m, -ln2_hi), xc);
  r = kb_fma(k, n, C(&m, -ln2_lo), r);
  LLVMValueRef p;
  if (m.dbl) {
    double c[12];  // 1/2!, 1/3!, ..., 1/13!
    double f = 2.0;
    for (int i = 0; i < 12; i++) {
      c[i] = 1.0 / f;
      f *= (double)(i + 3);
    }
    p = horner(k, &m, r, c, 12);
  } else {
    static const double c[6] = {5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2,
                                8.3334519073e-3, 1.3981999507e-3, 1.9875691500e-4};
    p = horner(k, &m, r, c, 6);
  }
  // e^r = 1 + r + r^2 p(r)
  LLVMValueRef er = kb_add(k, C(&m, 1.0), kb_fma(k, p, kb_mul(k, r, r), r));
  LLVMValueRef ni = LLVMBuildFPToSI(k->b, n, m.ity, "");
  LLVMValueRef n1 = LLVMBuildAShr(k->b, ni, I(&m, 1), "");
  LLVMValueRef n2 = LLVMBuildSub(k->b, ni, n1, "");
  LLVMValueRef res = kb_mul(k, kb_mul(k, er, pow2i(k, &m, n1)), pow2i(k, &m, n2));
  res = kb_select(k, fcmp(k, LLVMRealOLT, x, C(&m, lo)), C(&m, 0.0), res);
  return kb_select(k, fcmp(k, LLVMRealUNO, x, x), x, res);
}

// log(x) = e ln2 + log(m) with x = m 2^e, m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s) =
// 2(s + s^3/3 + s^5/5 + ...) with s = (m-1)/(m+1), |s| <= 0.172 (series to s^11 for f32,
// s^23 for f64). Subnormal inputs are scaled up first.
LLVMValueRef kb_log(kb *k, LLVMValueRef x) {
  mt m = mt_of(k, x);
  int mant = m.dbl ? 52 : 23;
  long long bias = m.dbl ? 1023 : 127, emask = m.dbl ? 0x7ff : 0xff;
  long long mmask = m.dbl ? 0x000fffffffffffffLL : 0x007fffffLL;
  long long one = m.dbl ? 0x3ff0000000000000LL : 0x3f800000LL;
  double tiny = m.dbl ? 0x1p-1022 : 0x1p-126;
  double up = m.dbl ? 0x1p54 : 0x1p24;
  long long upe = m.dbl ? 54 : 24;
  LLVMValueRef is_tiny = fcmp(k, LLVMRealOLT, x, C(&m, tiny));
  LLVMValueRef xs = kb_select(k, is_tiny, kb_mul(k, x, C(&m, up)), x);
  LLVMValueRef bits = LLVMBuildBitCast(k->b, xs, m.ity, "");
  LLVMValueRef e = LLVMBuildAnd(k->b, LLVMBuildLShr(k->b, bits, I(&m, mant), ""), I(&m, emask), "");
  e = LLVMBuildSub(k->b, e, kb_select(k, is_tiny, I(&m, bias + upe), I(&m, bias)), "");
  LLVMValueRef mb = LLVMBuildOr(k->b, LLVMBuildAnd(k->b, bits, I(&m, mmask), ""), I(&m, one), "");
  LLVMValueRef mv = LLVMBuildBitCast(k->b, mb, m.ty, "");
  LLVMValueRef big = fcmp(k, LLVMRealOGT, mv, C(&m, M_SQRT2));
  mv = kb_select(k, big, kb_mul(k, mv, C(&m, 0.5)), mv);
  e = kb_select(k, big, LLVMBuildAdd(k->b, e, I(&m, 1), ""), e);
  LLVMValueRef s = kb_div(k, kb_sub(k, mv, C(&m, 1.0)), kb_add(k, mv, C(&m, 1.0)));
  LLVMValueRef z = kb_mul(k, s, s);
  double c[12];  // 1/3, 1/5, ...
  int nc = m.dbl ? 11 : 5;
  for (int i = 0; i < nc; i++) c[i] = 1.0 / (double)(2 * i + 3);
  LLVMValueRef q = horner(k, &m, z, c, nc);
  LLVMValueRef t = kb_add(k, s, s);
  LLVMValueRef logm = kb_fma(k, kb_mul(k, t, z), q, t);
  LLVMValueRef ef = LLVMBuildSIToFP(k->b, e, m.ty, "");
  double ln2_hi = m.dbl ? 6.93147180369123816490e-01 : 0.693359375;
  double ln2_lo = m.dbl ? 1.90821492927058770002e-10 : -2.12194440e-4;
  LLVMValueRef res = kb_fma(k, ef, C(&m, ln2_hi), kb_fma(k, ef, C(&m, ln2_lo), logm));
  // Special values: +inf → +inf, ±0 → -inf, negative → NaN, NaN → NaN.
  res = kb_select(k, fcmp(k, LLVMRealOEQ, x, C(&m, INFINITY)), x, res);
  res = kb_select(k, fcmp(k, LLVMRealOEQ, x, C(&m, 0.0)), C(&m, -INFINITY), res);
  res = kb_select(k, fcmp(k, LLVMRealOLT, x, C(&m, 0.0)), C(&m, NAN), res);
  return kb_select(k, fcmp(k, LLVMRealUNO, x, x), x, res);
}

// tanh: near zero its Taylor series (odd powers to x^15 for f32 below 0.4, to x^25 for f64
// below 0.3, truncation < 1e-8 / 1e-17 relative); elsewhere 1 - 2/(exp(2|x|) + 1), whose
// cancellation at the switch point costs under two ulp. Sign restored with copysign, so
// tanh(-0) = -0 and large |x| saturates to ±1.
LLVMValueRef kb_tanh(kb *k, LLVMValueRef x) {
  mt m = mt_of(k, x);
  static const double c[13] = {
      -0.3333333333333333,     0.13333333333333333,    -0.05396825396825397,
      0.021869488536155203,    -0.008863235529902197,  0.003592128036572481,
      -0.0014558343870513183,  0.000590027440945586,   -0.00023912911424355248,
      9.691537956929451e-05,   -3.927832388331683e-05, 1.5918905069328964e-05,
      -6.451689215655431e-06};
  LLVMValueRef ax = kb_fabs(k, x);
  LLVMValueRef z = kb_mul(k, ax, ax);
  LLVMValueRef q = horner(k, &m, z, c, m.dbl ? 12 : 7);
  LLVMValueRef poly = kb_fma(k, kb_mul(k, ax, z), q, ax);
  LLVMValueRef e = kb_exp(k, kb_add(k, ax, ax));
  LLVMValueRef far = kb_sub(k, C(&m, 1.0), kb_div(k, C(&m, 2.0), kb_add(k, e, C(&m, 1.0))));
  LLVMValueRef small = fcmp(k, LLVMRealOLT, ax, C(&m, m.dbl ? 0.3 : 0.4));
  return kb_copysign(k, kb_select(k, small, poly, far), x);
}

#define GELU_C 0.7978845608028654  // sqrt(2/pi)
#define GELU_K 0.044715

// gelu(x) = 0.5 x (1 + tanh(u)) = x sigma(2u), u = sqrt(2/pi)(x + 0.044715 x^3), and
// d gelu/dx = sigma(2u) + 2 x sigma(2u)(1 - sigma(2u)) u'. Both sigma(2u) and 1 - sigma(2u)
// are formed from t = exp(-2|u|) <= 1 as 1/(1+t) and t/(1+t): no overflow, and no
// cancellation for x << 0, where 1 + tanh(u) → 0 and the result is tiny but representable.
typedef struct sig {
  LLVMValueRef s, oms, u;  // sigma(2u), 1 - sigma(2u), u
} sig;

static sig gelu_sigmoid(kb *k, const mt *m, LLVMValueRef x, LLVMValueRef x2) {
  sig r;
  LLVMValueRef inner = kb_fma(k, C(m, GELU_K), x2, C(m, 1.0));
  r.u = kb_mul(k, kb_mul(k, x, inner), C(m, GELU_C));
  LLVMValueRef t = kb_exp(k, kb_mul(k, kb_fabs(k, r.u), C(m, -2.0)));
  LLVMValueRef a = kb_div(k, C(m, 1.0), kb_add(k, C(m, 1.0), t));  // sigma(2|u|)
  LLVMValueRef b = kb_mul(k, t, a);                                 // 1 - sigma(2|u|)
  LLVMValueRef pos = fcmp(k, LLVMRealOGE, r.u, C(m, 0.0));
  r.s = kb_select(k, pos, a, b);
  r.oms = kb_select(k, pos, b, a);
  return r;
}

LLVMValueRef kb_gelu(kb *k, LLVMValueRef x) {
  mt m = mt_of(k, x);
  sig g = gelu_sigmoid(k, &m, x, kb_mul(k, x, x));
  return kb_mul(k, x, g.s);
}

LLVMValueRef kb_gelu_grad(kb *k, LLVMValueRef x, LLVMValueRef dy) {
  mt m = mt_of(k, x);
  LLVMValueRef x2 = kb_mul(k, x, x);
  sig g = gelu_sigmoid(k, &m, x, x2);
  LLVMValueRef du = kb_fma(k, C(&m, 3.0 * GELU_K * GELU_C), x2, C(&m, GELU_C));  // u'
  LLVMValueRef t = kb_mul(k, kb_mul(k, kb_add(k, x, x), g.oms), du);
  return kb_mul(k, dy, kb_fma(k, g.s, t, g.s));  // dy * s (1 + 2x(1-s)u')
}

// silu(x) = x sigma(x) and its derivative sigma(x) (1 + x (1 - sigma(x))), with sigma formed
// from t = exp(-|x|) <= 1 as for GELU (no overflow, no cancellation for x << 0).
static void sigmoid_parts(kb *k, const mt *m, LLVMValueRef x, LLVMValueRef *s, LLVMValueRef *oms) {
  LLVMValueRef t = kb_exp(k, kb_neg(k, kb_fabs(k, x)));
  LLVMValueRef a = kb_div(k, C(m, 1.0), kb_add(k, C(m, 1.0), t));  // sigma(|x|)
  LLVMValueRef b = kb_mul(k, t, a);                                 // 1 - sigma(|x|)
  LLVMValueRef pos = fcmp(k, LLVMRealOGE, x, C(m, 0.0));
  *s = kb_select(k, pos, a, b);
  *oms = kb_select(k, pos, b, a);
}

LLVMValueRef kb_silu(kb *k, LLVMValueRef x) {
  mt m = mt_of(k, x);
  LLVMValueRef s, oms;
  sigmoid_parts(k, &m, x, &s, &oms);
  return kb_mul(k, x, s);
}

LLVMValueRef kb_silu_grad(kb *k, LLVMValueRef x, LLVMValueRef dy) {
  mt m = mt_of(k, x);
  LLVMValueRef s, oms;
  sigmoid_parts(k, &m, x, &s, &oms);
  return kb_mul(k, dy, kb_mul(k, s, kb_fma(k, x, oms, C(&m, 1.0))));
}

// sin and cos of x together: n = rint(x 2/pi), r = x - n pi/2 (three-constant Cody–Waite, so
// |r| <= pi/4 stays accurate for |x| up to ~1e5 in f32 and far beyond in f64), Taylor series
// on r (to r^11 / r^12 for f32, r^21 / r^22 for f64: truncation below an ulp), and the
// quadrant n mod 4 picks and signs them. Used by rotary embeddings, whose angles are
// positions times frequencies (at most a few hundred thousand radians).
void kb_sincos(kb *k, LLVMValueRef x, LLVMValueRef *sin_out, LLVMValueRef *cos_out) {
  mt m = mt_of(k, x);
  double p1 = m.dbl ? 1.57079632673412561417e+00 : 1.5703125;
  double p2 = m.dbl ? 6.07710050650619224932e-11 : 4.837512969970703125e-4;
  double p3 = m.dbl ? 2.02226624879595063154e-21 : 7.54978995489188216e-8;
  LLVMValueRef n = kb_rint(k, kb_mul(k, x, C(&m, 0.63661977236758134308)));
  LLVMValueRef r = kb_fma(k, n, C(&m, -p1), x);
  r = kb_fma(k, n, C(&m, -p2), r);
  r = kb_fma(k, n, C(&m, -p3), r);
  LLVMValueRef z = kb_mul(k, r, r);
  double sc[10], cc[11];  // sin: -1/3!, 1/5!, ...   cos: -1/2!, 1/4!, ...
  int ns = m.dbl ? 10 : 5, nc = m.dbl ? 11 : 6;
  double f = 1.0;
  for (int i = 1; i <= 2 * nc + 1; i++) {
    f *= (double)i;
    int sign = (i / 2) % 2 ? -1 : 1;
    if (i % 2 == 1 && i >= 3 && (i - 3) / 2 < ns) sc[(i - 3) / 2] = sign / f;
    if (i % 2 == 0 && (i - 2) / 2 < nc) cc[(i - 2) / 2] = sign / f;
  }
  LLVMValueRef sr = kb_fma(k, kb_mul(k, r, z), horner(k, &m, z, sc, ns), r);
  LLVMValueRef cr = kb_fma(k, z, horner(k, &m, z, cc, nc), C(&m, 1.0));
  LLVMValueRef q = LLVMBuildAnd(k->b, LLVMBuildFPToSI(k->b, n, m.ity, ""), I(&m, 3), "");
  LLVMValueRef swap = LLVMBuildICmp(k->b, LLVMIntNE, LLVMBuildAnd(k->b, q, I(&m, 1), ""), I(&m, 0), "");
  LLVMValueRef s = kb_select(k, swap, cr, sr), c = kb_select(k, swap, sr, cr);
  // sin is negative in quadrants 2, 3; cos in quadrants 1, 2.
  LLVMValueRef sneg = LLVMBuildICmp(k->b, LLVMIntUGE, q, I(&m, 2), "");
  LLVMValueRef cneg = LLVMBuildICmp(k->b, LLVMIntEQ, LLVMBuildAnd(k->b, LLVMBuildAdd(k->b, q, I(&m, 1), ""), I(&m, 2), ""), I(&m, 2), "");
  *sin_out = kb_select(k, sneg, kb_neg(k, s), s);
  *cos_out = kb_select(k, cneg, kb_neg(k, c), c);
}
