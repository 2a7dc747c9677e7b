// kernel_embed.c — token embedding: the gather (one row per index) and its backward, a
// scatter-add that is made race-free by giving each index a column instead of a row.
#include "codegen_internal.h"

// (out, tokens:i32, table, C)   idx = row r:  out[r, :] = table[tokens[r], :]
void dhx_emit_embed_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                        LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], tokens = a[1], table = a[2], C = a[3];
  LLVMValueRef src = kb_imul(k, kb_load_i32(k, tokens, r), C);
  LLVMValueRef dst = kb_imul(k, r, C);
  kb_loop L;
  LLVMValueRef c = kb_loop_begin(k, &L, kb_i64c(k, 0), C, "copy");
  kb_store(k, kb_load(k, table, kb_iadd(k, src, c)), out, kb_iadd(k, dst, c));
  kb_loop_end(k, &L, true);
}

// (dtable, tokens:i32, dout, rows, C)   idx = column c:
//   for r < rows: dtable[tokens[r], c] += dout[r, c]
// Rows with the same token hit the same element, so the row loop is sequential (not
// parallel); columns are independent. With k->lanes > 1 this handles lanes columns.
void dhx_emit_embed_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef c,
                        LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dtable = a[0], tokens = a[1], dout = a[2], rows = a[3], C = a[4];
  kb_loop L;
  LLVMValueRef r = kb_loop_begin(k, &L, kb_i64c(k, 0), rows, "rows");
  LLVMValueRef t = kb_iadd(k, kb_imul(k, kb_load_i32(k, tokens, r), C), c);
  LLVMValueRef d = kb_load(k, dout, kb_iadd(k, kb_imul(k, r, C), c));
  kb_store(k, kb_add(k, kb_load(k, dtable, t), d), dtable, t);
  kb_loop_end(k, &L, false);
}
