// kernel_optim.c — the optimizer step: AdamW per element, the chunked sum of squares the
// global gradient norm (for clipping) is built from, and the norm and clip scale themselves
// (computed on the device, so a GPU step needs no host round trip to clip).
#include <math.h>

#include "codegen_internal.h"

// (param, grad, m, v, lr, beta1, beta2, eps, wd, bc1, bc2, clip)   idx = element i
//   s = clip[0]; NaN: return (GRAD_NORM found a non-finite norm: the step is skipped)
//   g = grad*s; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   param -= lr * ((m/bc1) / (sqrt(v/bc2) + eps) + wd*param)
void dhx_emit_adamw(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef i,
                    LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef param = a[0], grad = a[1], m = a[2], v = a[3];
  // Scalars splatted: the GPU's wide body updates 4 elements at a time (kernel_entry.c).
  LLVMValueRef lr = kb_splat(k, a[4]), b1 = kb_splat(k, a[5]), b2 = kb_splat(k, a[6]);
  LLVMValueRef eps = kb_splat(k, a[7]), wd = kb_splat(k, a[8]);
  LLVMValueRef bc1 = kb_splat(k, a[9]), bc2 = kb_splat(k, a[10]);
  LLVMValueRef scale = kb_load_s(k, a[11], kb_i64c(k, 0));
  // The same value for every element: a uniform branch, which the host loop unswitches.
  kb_if update;
  kb_if_begin(k, &update, LLVMBuildFCmp(k->b, LLVMRealORD, scale, scale, "update"));
  LLVMValueRef gs = kb_splat(k, scale);
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
  kb_if_end(k, &update);
}

// (out, x, count, chunk)   idx = chunk c:
//   out[c] = sum of x[i]^2 over [c*chunk, min(count, (c+1)*chunk)), accumulated in f64 even
// for f32 data (the norm of ~1e8 gradients must not lose the small ones). A row kernel: on the
// GPU a warp sums a chunk (lanes strided over it, a shuffle butterfly, lane 0 stores).
void dhx_emit_sumsq(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef c,
                    LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], x = a[1], count = a[2], chunk = a[3];
  LLVMValueRef lo = kb_imul(k, c, chunk);
  LLVMValueRef hi = kb_smin(k, count, kb_iadd(k, lo, chunk));
  LLVMValueRef acc = kb_var(k, k->f64, LLVMConstReal(k->f64, 0.0));
  kb_loop L;  // a chunk is a row: a warp's lanes stride it on the GPU
  LLVMValueRef i = kb_row_loop_begin(k, &L, lo, hi, "sumsq");
  LLVMValueRef xv = kb_load_s(k, x, i);
  if (k->type != DHX_KT_F64) xv = LLVMBuildFPExt(k->b, xv, k->f64, "");
  kb_set(k, acc, kb_radd(k, kb_get(k, acc), kb_mul(k, xv, xv)));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef sum = kb_row_sum(k, kb_get(k, acc));
  if (k->type != DHX_KT_F64) sum = LLVMBuildFPTrunc(k->b, sum, k->f, "");
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_s(k, sum, out, c);
  kb_row_owner_end(k, &lead);
}

// (scale, norm, partials, count, max_norm)   one index (n = 1); everything in f64, the sum in
// index order, exactly as the CPU backend's GRAD_NORM (runtime/exec_cpu.c) computes it:
//   norm = sqrt(sum partials); scale = max_norm > 0 ? min(1, max_norm / (norm + 1e-6)) : 1,
//   NaN when the norm is not finite (the AdamW kernels then skip the update).
void dhx_emit_grad_norm(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef idx,
                        LLVMValueRef *mod_idx) {
  (void)s, (void)idx, (void)mod_idx;
  LLVMValueRef scale_out = a[0], norm_out = a[1], partials = a[2], count = a[3], max_norm = a[4];
  LLVMTypeRef d = k->f64;
  LLVMValueRef acc = kb_var(k, d, LLVMConstReal(d, 0.0));
  kb_loop L;
  LLVMValueRef i = kb_loop_begin(k, &L, kb_i64c(k, 0), count, "partials");
  LLVMValueRef x = kb_load_s(k, partials, i);
  if (k->type != DHX_KT_F64) x = LLVMBuildFPExt(k->b, x, d, "");
  kb_set(k, acc, LLVMBuildFAdd(k->b, kb_get(k, acc), x, ""));  // in order: no reassociation
  kb_loop_end(k, &L, false);
  LLVMValueRef norm = kb_intrinsic(k, "llvm.sqrt", &d, 1, (LLVMValueRef[]){kb_get(k, acc)}, 1);
  LLVMValueRef one = LLVMConstReal(d, 1.0);
  LLVMValueRef ratio = LLVMBuildFDiv(k->b, max_norm,
                                     LLVMBuildFAdd(k->b, norm, LLVMConstReal(d, 1e-6), ""), "");
  // fmin(1, ratio) as C's fmin: ratio NaN only when the norm is (then the NaN below wins).
  LLVMValueRef clipped = kb_intrinsic(k, "llvm.minnum", &d, 1, (LLVMValueRef[]){one, ratio}, 2);
  LLVMValueRef on = LLVMBuildFCmp(k->b, LLVMRealOGT, max_norm, LLVMConstReal(d, 0.0), "");
  LLVMValueRef scale = LLVMBuildSelect(k->b, on, clipped, one, "");
  LLVMValueRef abs = kb_intrinsic(k, "llvm.fabs", &d, 1, (LLVMValueRef[]){norm}, 1);
  LLVMValueRef finite = LLVMBuildFCmp(k->b, LLVMRealOLT, abs, LLVMConstReal(d, INFINITY), "");
  scale = LLVMBuildSelect(k->b, finite, scale, LLVMConstReal(d, NAN), "");
  if (k->type != DHX_KT_F64) {
    scale = LLVMBuildFPTrunc(k->b, scale, k->f, "");
    norm = LLVMBuildFPTrunc(k->b, norm, k->f, "");
  }
  kb_store_s(k, scale, scale_out, kb_i64c(k, 0));
  kb_store_s(k, norm, norm_out, kb_i64c(k, 0));
}
