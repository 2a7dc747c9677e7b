// kernel_optim.c — the optimizer step: AdamW per element, and the chunked sum of squares the
// global gradient norm (for clipping) is built from.
#include "codegen_internal.h"

// (param, grad, m, v, lr, beta1, beta2, eps, wd, bc1, bc2, grad_scale)   idx = element i
//   g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   param -= lr * ((m/bc1) / (sqrt(v/bc2) + eps) + wd*param)
void dhx_emit_adamw(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef i,
                    LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef param = a[0], grad = a[1], m = a[2], v = a[3];
  LLVMValueRef lr = a[4], b1 = a[5], b2 = a[6], eps = a[7], wd = a[8], bc1 = a[9], bc2 = a[10];
  LLVMValueRef gs = a[11];
  LLVMValueRef one = kb_fc(k, 1.0);
  LLVMValueRef g = kb_mul(k, kb_load(k, grad, i), gs);
  LLVMValueRef mn = kb_fma(k, b1, kb_load(k, m, i), kb_mul(k, kb_sub(k, one, b1), g));
  LLVMValueRef vn = kb_fma(k, b2, kb_load(k, v, i), kb_mul(k, kb_sub(k, one, b2), kb_mul(k, g, g)));
  LLVMValueRef p = kb_load(k, param, i);
  LLVMValueRef den = kb_add(k, kb_sqrt(k, kb_div(k, vn, bc2)), eps);
  LLVMValueRef upd = kb_fma(k, wd, p, kb_div(k, kb_div(k, mn, bc1), den));
  kb_store(k, kb_sub(k, p, kb_mul(k, lr, upd)), param, i);
  kb_store(k, mn, m, i);
  kb_store(k, vn, v, i);
}

// (out, x, count, chunk)   idx = chunk c:
//   out[c] = sum of x[i]^2 over [c*chunk, min(count, (c+1)*chunk)), accumulated in f64 even
// for f32 data (the norm of ~1e8 gradients must not lose the small ones).
void dhx_emit_sumsq(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef c,
                    LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], x = a[1], count = a[2], chunk = a[3];
  LLVMValueRef lo = kb_imul(k, c, chunk);
  LLVMValueRef hi = kb_smin(k, count, kb_iadd(k, lo, chunk));
  LLVMValueRef acc = kb_var(k, k->f64, LLVMConstReal(k->f64, 0.0));
  kb_loop L;
  LLVMValueRef i = kb_loop_begin(k, &L, lo, hi, "sumsq");
  LLVMValueRef xv = kb_load_s(k, x, i);
  if (k->type != DHX_KT_F64) xv = LLVMBuildFPExt(k->b, xv, k->f64, "");
  kb_set(k, acc, kb_radd(k, kb_get(k, acc), kb_mul(k, xv, xv)));
  kb_loop_end(k, &L, true);
  LLVMValueRef sum = kb_get(k, acc);
  if (k->type != DHX_KT_F64) sum = LLVMBuildFPTrunc(k->b, sum, k->f, "");
  kb_store_s(k, sum, out, c);
}
