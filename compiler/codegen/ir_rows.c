// ir_rows.c — a row kernel's loops and reductions, serial on the host and a warp per row in
// the PTX (ir_builder.h explains the contract).
//
// The warp's reduction is a butterfly: at step m each lane combines its value with lane
// (lane ^ m)'s, for m = 16, 8, 4, 2, 1. Partners compute op(a, b) and op(b, a), which are
// the same bits for IEEE add and max, so after the five steps all 32 lanes hold the same
// total and the order of the additions is fixed by the lane numbers alone.
#include "ir_builder.h"

#include "ice.h"

#define FULL_MASK 0xffffffffu
#define BFLY_CLAMP 0x1f  // shfl.sync's c operand for a whole-warp butterfly (segment 32)

void kb_row_setup(kb *k, unsigned row_threads) {
  k->row_threads = row_threads;
  k->lane = NULL;
  if (row_threads == 1) return;
  if (row_threads != 32) DHX_ICE("%u threads per row (a warp is 32)", row_threads);
  LLVMValueRef tid = kb_intrinsic(k, "llvm.nvvm.read.ptx.sreg.tid.x", NULL, 0, NULL, 0);
  // Blocks are a multiple of 32 threads, so tid.x % 32 is the lane within the row's warp.
  LLVMValueRef lane = LLVMBuildAnd(k->b, tid, LLVMConstInt(k->i32, row_threads - 1, 0), "");
  k->lane = LLVMBuildZExt(k->b, lane, k->i64, "lane");
}

static bool spread(const kb *k) { return k->row_threads > 1; }

LLVMValueRef kb_row_loop_begin(kb *k, kb_loop *L, LLVMValueRef lo, LLVMValueRef hi,
                               const char *name) {
  if (spread(k)) lo = kb_iadd(k, lo, k->lane);
  return kb_loop_begin(k, L, lo, hi, name);
}

void kb_row_loop_end(kb *k, kb_loop *L, bool parallel) {
  if (!spread(k)) {
    kb_loop_end(k, L, parallel);
    return;
  }
  LLVMValueRef next = LLVMBuildNSWAdd(k->b, L->iv, kb_i64c(k, k->row_threads), "");
  kb_loop_end_at(k, L, next, parallel);
}

// Lane (lane ^ m)'s value of an i32 or float.
static LLVMValueRef shfl_bfly(kb *k, LLVMValueRef v, int m) {
  bool is_float = LLVMGetTypeKind(LLVMTypeOf(v)) == LLVMFloatTypeKind;
  LLVMValueRef args[4] = {LLVMConstInt(k->i32, FULL_MASK, 0), v, LLVMConstInt(k->i32, m, 0),
                          LLVMConstInt(k->i32, BFLY_CLAMP, 0)};
  return kb_intrinsic(k, is_float ? "llvm.nvvm.shfl.sync.bfly.f32" : "llvm.nvvm.shfl.sync.bfly.i32",
                      NULL, 0, args, 4);
}

// Lane (lane ^ m)'s value of a float or double (a double travels as two 32-bit halves).
static LLVMValueRef partner(kb *k, LLVMValueRef v, int m) {
  if (LLVMGetTypeKind(LLVMTypeOf(v)) != LLVMDoubleTypeKind) return shfl_bfly(k, v, m);
  LLVMValueRef bits = LLVMBuildBitCast(k->b, v, k->i64, "");
  LLVMValueRef lo = LLVMBuildTrunc(k->b, bits, k->i32, "");
  LLVMValueRef hi = LLVMBuildTrunc(k->b, LLVMBuildLShr(k->b, bits, kb_i64c(k, 32), ""), k->i32, "");
  lo = LLVMBuildZExt(k->b, shfl_bfly(k, lo, m), k->i64, "");
  hi = LLVMBuildZExt(k->b, shfl_bfly(k, hi, m), k->i64, "");
  bits = LLVMBuildOr(k->b, LLVMBuildShl(k->b, hi, kb_i64c(k, 32), ""), lo, "");
  return LLVMBuildBitCast(k->b, bits, LLVMTypeOf(v), "");
}

typedef LLVMValueRef (*combine_fn)(kb *k, LLVMValueRef a, LLVMValueRef b);

static LLVMValueRef butterfly(kb *k, LLVMValueRef v, combine_fn op) {
  if (!spread(k)) return v;
  for (int m = (int)k->row_threads / 2; m >= 1; m /= 2) v = op(k, v, partner(k, v, m));
  return v;
}

LLVMValueRef kb_row_sum(kb *k, LLVMValueRef partial) { return butterfly(k, partial, kb_add); }
LLVMValueRef kb_row_max(kb *k, LLVMValueRef partial) { return butterfly(k, partial, kb_maxnum); }

void kb_row_owner_begin(kb *k, kb_row_if *s, LLVMValueRef j) {
  s->active = spread(k);
  if (!s->active) return;
  LLVMValueRef owner = LLVMBuildAnd(k->b, j, kb_i64c(k, k->row_threads - 1), "");
  kb_if_begin(k, &s->s, LLVMBuildICmp(k->b, LLVMIntEQ, owner, k->lane, ""));
}

void kb_row_owner_end(kb *k, kb_row_if *s) {
  if (s->active) kb_if_end(k, &s->s);
}
