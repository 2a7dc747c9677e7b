// kernel_reduce.c — column sums (the gradient of a bias or positional table broadcast over
// rows). One column per index so that indices never write the same element; on the host the
// body handles k->lanes adjacent columns, so each row step reads whole cache lines; on the
// GPU a warp sums a column, its lanes splitting the rows (DHX_KS_COLUMN_SUMS).
#include "codegen_internal.h"

// (out, in, rows, m, accumulate)   idx = j < m:   out[j] (+)= sum_r in[r*m + j]
void dhx_emit_colsum(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef j,
                     LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], in = a[1], rows = a[2], m = a[3], accumulate = a[4];
  LLVMValueRef acc = kb_var(k, k->vt, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef r = kb_row_loop_begin(k, &L, kb_i64c(k, 0), rows, "rows");
  LLVMValueRef v = kb_load(k, in, kb_iadd(k, kb_imul(k, r, m), j));
  kb_set(k, acc, kb_add(k, kb_get(k, acc), v));
  kb_row_loop_end(k, &L, false);
  LLVMValueRef sum = kb_row_sum(k, kb_get(k, acc));
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_acc(k, sum, out, j, LLVMBuildICmp(k->b, LLVMIntNE, accumulate, kb_i64c(k, 0), ""));
  kb_row_owner_end(k, &lead);
}
