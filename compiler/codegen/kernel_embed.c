// kernel_embed.c — token embedding: the gather (one row per index; a warp per row in the PTX,
// so a row's copy is coalesced) and its backward, a
// scatter-add that is made race-free by giving each index a column instead of a row; and the
// same two for a vocabulary shard (tensor parallelism), where ids of other shards count for
// nothing and never reach memory.
#include "codegen_internal.h"

// (out, tokens:i32, table, C)   idx = row r:  out[r, :] = table[tokens[r], :]
void dhx_emit_embed_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                        LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], tokens = a[1], table = a[2], C = a[3];
  LLVMValueRef src = kb_imul(k, kb_load_i32(k, tokens, r), C);
  LLVMValueRef dst = kb_imul(k, r, C);
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "copy");
  kb_store(k, kb_load(k, table, kb_iadd(k, src, c)), out, kb_iadd(k, dst, c));
  kb_row_loop_end(k, &L, true);
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

// ---- vocabulary-parallel embedding: this rank holds the table rows [lo, lo + Vl) ----

LLVMValueRef dhx_shard_row(kb *k, LLVMValueRef id, LLVMValueRef lo, LLVMValueRef n,
                           LLVMValueRef *ok) {
  LLVMValueRef zero = kb_i64c(k, 0);
  LLVMValueRef d = LLVMBuildSub(k->b, id, lo, "");  // wraps (no nsw) when lo is far from id
  LLVMValueRef ge = LLVMBuildICmp(k->b, LLVMIntSGE, id, lo, "");
  LLVMValueRef fits = LLVMBuildAnd(k->b, LLVMBuildICmp(k->b, LLVMIntSGE, d, zero, ""),
                                   kb_ilt(k, d, n), "");
  *ok = LLVMBuildAnd(k->b, ge, fits, "");
  return kb_select(k, *ok, d, zero);
}

// (out, tokens:i32, table, C, lo, Vl)   idx = row r:
//   out[r, :] = table[tokens[r] - lo, :] for a token of this shard, else zeros
// The table is read only for a token of the shard, so it is reached only in [0, Vl·C).
void dhx_emit_embed_vp_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                           LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], tokens = a[1], table = a[2], C = a[3], lo = a[4], Vl = a[5];
  LLVMValueRef ok, row = dhx_shard_row(k, kb_load_i32(k, tokens, r), lo, Vl, &ok);
  LLVMValueRef src = kb_imul(k, row, C), dst = kb_imul(k, r, C);
  kb_if in;
  kb_loop L;
  kb_if_begin(k, &in, ok);
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "copy");
  kb_store(k, kb_load(k, table, kb_iadd(k, src, c)), out, kb_iadd(k, dst, c));
  kb_row_loop_end(k, &L, true);
  kb_if_else(k, &in);
  c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "zero");
  kb_store(k, kb_fc(k, 0.0), out, kb_iadd(k, dst, c));
  kb_row_loop_end(k, &L, true);
  kb_if_end(k, &in);
}

// (dtable, tokens:i32, dout, rows, C, lo, Vl)   idx = column c:
//   for r < rows with a token of this shard: dtable[tokens[r] - lo, c] += dout[r, c]
// As in dhx_emit_embed_bwd: rows in sequence (a repeated token adds up), columns independent,
// lanes columns at once on the host. Rows of other shards read neither dout nor dtable.
void dhx_emit_embed_vp_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef c,
                           LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dtable = a[0], tokens = a[1], dout = a[2], rows = a[3], C = a[4];
  LLVMValueRef lo = a[5], Vl = a[6];
  kb_loop L;
  LLVMValueRef r = kb_loop_begin(k, &L, kb_i64c(k, 0), rows, "rows");
  LLVMValueRef ok, row = dhx_shard_row(k, kb_load_i32(k, tokens, r), lo, Vl, &ok);
  kb_if in;
  kb_if_begin(k, &in, ok);
  LLVMValueRef t = kb_iadd(k, kb_imul(k, row, C), c);
  LLVMValueRef d = kb_load(k, dout, kb_iadd(k, kb_imul(k, r, C), c));
  kb_store(k, kb_add(k, kb_load(k, dtable, t), d), dtable, t);
  kb_if_end(k, &in);
  kb_loop_end(k, &L, false);
}
