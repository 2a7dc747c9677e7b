// kernel_softmax.c — causal softmax over the last axis of a [*, T, T] score tensor, one row
// per index (row r is query position t = r % T, which sees keys 0..t); in the PTX a warp per
// row, each lane owning the same elements in every pass (ir_rows.c).
//
// Both kernels may run in place (P over S, dS over dP): every pass reads element j before it
// writes element j and never reads an earlier element after writing it, so the loops stay
// parallel (element-independent) even then.
#include <math.h>

#include "codegen_internal.h"

// (P, S, T, scale)   P[r,j] = exp(scale*S[r,j] - max) / sum for j <= t, 0 for j > t.
void dhx_emit_softmax_causal_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                 LLVMValueRef r, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef P = a[0], S = a[1], T = a[2], scale = a[3];
  LLVMValueRef base = kb_imul(k, r, T);
  LLVMValueRef zero = kb_i64c(k, 0);
  LLVMValueRef n = kb_iadd(k, LLVMBuildSRem(k->b, r, T, ""), kb_i64c(k, 1));  // keys 0..t

  LLVMValueRef mx = kb_var(k, k->f, kb_fc(k, -INFINITY));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, zero, n, "max");
  kb_set(k, mx, kb_rmax(k, kb_get(k, mx), kb_mul(k, scale, kb_load(k, S, kb_iadd(k, base, j)))));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef m = kb_row_max(k, kb_get(k, mx));

  // exp values go straight to P (which may be S: element j is read, then written).
  LLVMValueRef sum = kb_var(k, k->f, kb_fc(k, 0.0));
  j = kb_row_loop_begin(k, &L, zero, n, "exp");
  LLVMValueRef i = kb_iadd(k, base, j);
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_mul(k, scale, kb_load(k, S, i)), m));
  kb_store(k, e, P, i);
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef inv = kb_div(k, kb_fc(k, 1.0), kb_row_sum(k, kb_get(k, sum)));

  j = kb_row_loop_begin(k, &L, zero, n, "scale");
  i = kb_iadd(k, base, j);
  kb_store(k, kb_mul(k, kb_load(k, P, i), inv), P, i);
  kb_row_loop_end(k, &L, true);

  j = kb_row_loop_begin(k, &L, n, T, "mask");
  kb_store(k, kb_fc(k, 0.0), P, kb_iadd(k, base, j));
  kb_row_loop_end(k, &L, true);
}

// (dS, dP, P, T, scale)   dS[r,j] = scale * P[r,j] * (dP[r,j] - sum_k P[r,k] dP[r,k]),
// 0 for the masked j > t (whatever dP holds there).
void dhx_emit_softmax_causal_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                 LLVMValueRef r, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dS = a[0], dP = a[1], P = a[2], T = a[3], scale = a[4];
  LLVMValueRef base = kb_imul(k, r, T);
  LLVMValueRef zero = kb_i64c(k, 0);
  LLVMValueRef n = kb_iadd(k, LLVMBuildSRem(k->b, r, T, ""), kb_i64c(k, 1));

  LLVMValueRef dot = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, zero, n, "dot");
  LLVMValueRef i = kb_iadd(k, base, j);
  kb_set(k, dot, kb_radd(k, kb_get(k, dot), kb_mul(k, kb_load(k, P, i), kb_load(k, dP, i))));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef d = kb_row_sum(k, kb_get(k, dot));

  j = kb_row_loop_begin(k, &L, zero, n, "grad");
  i = kb_iadd(k, base, j);
  LLVMValueRef p = kb_mul(k, scale, kb_load(k, P, i));
  kb_store(k, kb_mul(k, p, kb_sub(k, kb_load(k, dP, i), d)), dS, i);
  kb_row_loop_end(k, &L, true);

  j = kb_row_loop_begin(k, &L, n, T, "mask");
  kb_store(k, kb_fc(k, 0.0), dS, kb_iadd(k, base, j));
  kb_row_loop_end(k, &L, true);
}
