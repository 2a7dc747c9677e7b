// kernel_rope.c — rotary position embedding, and the permutation that moves attention heads
// in front of positions (and back).
//
// RoPE runs one index per rotated pair, so on the GPU it is one thread per pair and on the
// host the index loop vectorises. The angle is computed in f64 even in f32 kernels: positions
// times frequencies reach thousands of radians, where an f32 product alone would be off by
// 1e-4 rad; the sine and cosine are then taken in f64 and rounded once.
#include "codegen_internal.h"

static LLVMValueRef udiv(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildUDiv(k->b, a, b, ""); }
static LLVMValueRef urem(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildURem(k->b, a, b, ""); }

static LLVMValueRef to_f64(kb *k, LLVMValueRef v) {
  return k->type == DHX_KT_F64 ? v : LLVMBuildFPExt(k->b, v, k->f64, "");
}
static LLVMValueRef from_f64(kb *k, LLVMValueRef v) {
  return k->type == DHX_KT_F64 ? v : LLVMBuildFPTrunc(k->b, v, k->f, "");
}

// (out, x, S, D, hs, base, sign)   idx = pair p
void dhx_emit_rope(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef p,
                   LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], x = a[1], S = a[2], D = a[3], hs = a[4], base = a[5], sign = a[6];
  LLVMValueRef half = udiv(k, hs, kb_i64c(k, 2)), pairs = udiv(k, D, kb_i64c(k, 2));
  LLVMValueRef row = udiv(k, p, pairs), j = urem(k, p, pairs);
  LLVMValueRef head = udiv(k, j, half), i = urem(k, j, half);
  LLVMValueRef pos = urem(k, row, S);
  LLVMValueRef ia = kb_iadd(k, kb_imul(k, row, D), kb_iadd(k, kb_imul(k, head, hs), i));
  LLVMValueRef ib = kb_iadd(k, ia, half);
  // theta = pos * base^(-2i/hs) = pos * exp(-(2i/hs) ln base), in f64
  LLVMValueRef fi = LLVMBuildSIToFP(k->b, i, k->f64, ""), fhs = LLVMBuildSIToFP(k->b, hs, k->f64, "");
  LLVMValueRef expo = kb_div(k, kb_mul(k, kb_cf(k->f64, -2.0), fi), fhs);
  LLVMValueRef freq = kb_exp(k, kb_mul(k, expo, kb_log(k, to_f64(k, base))));
  LLVMValueRef theta = kb_mul(k, LLVMBuildSIToFP(k->b, pos, k->f64, ""), freq);
  LLVMValueRef sn, cs;
  kb_sincos(k, theta, &sn, &cs);
  LLVMValueRef c = from_f64(k, cs), sg = from_f64(k, kb_mul(k, sn, to_f64(k, sign)));
  LLVMValueRef xa = kb_load_s(k, x, ia), xb = kb_load_s(k, x, ib);
  kb_store_s(k, kb_sub(k, kb_mul(k, xa, c), kb_mul(k, xb, sg)), out, ia);
  kb_store_s(k, kb_fma(k, xa, sg, kb_mul(k, xb, c)), out, ib);
}

// (out, in, X, Y, W)   idx = out row r = (b*Y + y)*X + x  ←  in row (b*X + x)*Y + y
void dhx_emit_permute(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                      LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], in = a[1], X = a[2], Y = a[3], W = a[4];
  LLVMValueRef xy = kb_imul(k, X, Y);
  LLVMValueRef b = udiv(k, r, xy), rem = urem(k, r, xy);
  LLVMValueRef y = udiv(k, rem, X), xi = urem(k, rem, X);
  LLVMValueRef src = kb_imul(k, kb_iadd(k, kb_imul(k, kb_iadd(k, kb_imul(k, b, X), xi), Y), y), W);
  LLVMValueRef dst = kb_imul(k, r, W);
  kb_loop L;
  LLVMValueRef c = kb_loop_begin(k, &L, kb_i64c(k, 0), W, "copy");
  kb_store(k, kb_load(k, in, kb_iadd(k, src, c)), out, kb_iadd(k, dst, c));
  kb_loop_end(k, &L, true);
}
