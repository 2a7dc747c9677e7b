// ir_builder.h — the small vocabulary the kernel builders (kernel_*.c) write LLVM IR in.
//
// A kernel body is emitted through a `kb` (kernel builder): it knows the kernel's float type,
// how many lanes a value has (1 everywhere except the host's column-vectorised bodies, see
// kernel_entry.c), and the module-wide access group that marks every kernel memory access so
// that loops whose iterations are independent can say so to the loop vectoriser
// (llvm.loop.parallel_accesses). Everything here is target-independent IR.
#ifndef DHX_IR_BUILDER_H
#define DHX_IR_BUILDER_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/Core.h>

#include "kernels.h"

typedef struct kb {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  dhx_ktype type;
  LLVMTypeRef f;    // the kernel's element type: float or double
  LLVMTypeRef vt;   // a value of the kernel: f, or <lanes x f>
  LLVMTypeRef i1, i32, i64, f64, ptr, vd;
  unsigned lanes;   // 1, or the width of a column-vectorised body
  // Vector accesses (kb_load/kb_store of lanes > 1) may assume lanes · element alignment:
  // set for the GPU grid's wide bodies, which run only where every pointer is that aligned
  // (kernel_entry.c); the host column bodies load at any column and leave it false.
  bool vec_aligned;
  // With vec_aligned: trap on a vector access that is not so aligned, as the GPU faults on a
  // misaligned 16-byte access (the host would not notice); for the host's emulation of the
  // GPU's thread code (kernel_entry.c), so that its tests catch a wide path taken wrongly.
  bool trap_misaligned;
  // Threads that share one row of a DHX_KS_ROWS kernel (ir_rows.c): 1 on the host, where a
  // row is a serial loop; DHX_PLAN_WARP in the PTX, where a warp runs the row and `lane`
  // (i64, set by the body's entry block) is this thread's place in it.
  unsigned row_threads;
  LLVMValueRef lane;
  // Mixed precision: the body's pointer parameters stored as bf16 (dhx_kernel_spec.bf16).
  // kb_load and kb_store widen and round through them; the bodies never derive pointers, so
  // a parameter's value identifies it.
  LLVMValueRef bf16_ptr[DHX_MAX_ARGS];
  int nbf16;
  LLVMValueRef fn;  // the function being built
  LLVMMetadataRef access_group;  // distinct !{} shared by all kernel memory accesses
  unsigned md_access_group, md_loop;
} kb;

// Binds k to a module (types, metadata kinds, the access group). lanes = 1.
void kb_init(kb *k, LLVMContextRef ctx, LLVMModuleRef mod, LLVMBuilderRef b,
             LLVMMetadataRef access_group, dhx_ktype type);
// Sets the lane count (1 = scalar) and with it k->vt.
void kb_set_lanes(kb *k, unsigned lanes);

// ---- constants ----
LLVMValueRef kb_cf(LLVMTypeRef ty, double v);        // float constant, splatted for vectors
LLVMValueRef kb_ci(LLVMTypeRef ty, long long v);     // integer constant, splatted for vectors
LLVMValueRef kb_fc(kb *k, double v);                 // constant of type k->vt
LLVMValueRef kb_i64c(kb *k, int64_t v);

// ---- arithmetic (type-generic: scalars or vectors) ----
LLVMValueRef kb_add(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_sub(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_mul(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_div(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_neg(kb *k, LLVMValueRef a);
// a + b marked as a reduction step: reassociation (and contraction) allowed, so the
// vectoriser may keep per-lane partial sums.
LLVMValueRef kb_radd(kb *k, LLVMValueRef acc, LLVMValueRef b);
// max(acc, b) as a reduction step (llvm.maxnum with nnan nsz, which the vectoriser needs).
LLVMValueRef kb_rmax(kb *k, LLVMValueRef acc, LLVMValueRef b);
LLVMValueRef kb_fma(kb *k, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);  // llvm.fmuladd
LLVMValueRef kb_sqrt(kb *k, LLVMValueRef a);
LLVMValueRef kb_fabs(kb *k, LLVMValueRef a);
LLVMValueRef kb_copysign(kb *k, LLVMValueRef mag, LLVMValueRef sign);
LLVMValueRef kb_rint(kb *k, LLVMValueRef a);
LLVMValueRef kb_floor(kb *k, LLVMValueRef a);
LLVMValueRef kb_minnum(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_maxnum(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_smin(kb *k, LLVMValueRef a, LLVMValueRef b);  // i64
LLVMValueRef kb_ilt(kb *k, LLVMValueRef a, LLVMValueRef b);   // signed <
LLVMValueRef kb_imul(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_iadd(kb *k, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_select(kb *k, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kb_splat(kb *k, LLVMValueRef scalar);  // scalar → k->vt (identity if lanes = 1)
LLVMValueRef kb_to_f(kb *k, LLVMValueRef i64v);     // i64 → k->f
// Calls an intrinsic; `over` are the overload types (may be 0).
LLVMValueRef kb_intrinsic(kb *k, const char *name, LLVMTypeRef *over, unsigned nover,
                          LLVMValueRef *args, unsigned nargs);

// ---- memory: ptr[index] with an inbounds GEP; every access carries the access group ----
// Floating loads and stores through a bf16 parameter (k->bf16_ptr) read bf16 and widen it
// exactly, or round to bf16 (nearest even; NaN stays a quiet NaN of the same sign) and store.
LLVMValueRef kb_gep(kb *k, LLVMTypeRef elem, LLVMValueRef ptr, LLVMValueRef index);
LLVMValueRef kb_load(kb *k, LLVMValueRef ptr, LLVMValueRef index);   // k->vt at element index
void kb_store(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index);
LLVMValueRef kb_load_s(kb *k, LLVMValueRef ptr, LLVMValueRef index);   // one k->f element
void kb_store_s(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index);
LLVMValueRef kb_load_i32(kb *k, LLVMValueRef ptr, LLVMValueRef index);  // sign-extended to i64
void kb_store_i32(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index);  // v is an i32
// f32 → bf16 bits (an i16, or a vector of them) and back: plain integer IR, the same bits on
// every target.
LLVMValueRef kb_to_bf16(kb *k, LLVMValueRef v);
LLVMValueRef kb_from_bf16(kb *k, LLVMValueRef bits);
// out[index] = v, or out[index] += v when `acc` (an i1) is true: a branch, so the
// overwriting path never reads out.
void kb_store_acc(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index, LLVMValueRef acc);

// ---- local variables (allocas in the entry block; SROA turns them into registers) ----
LLVMValueRef kb_var(kb *k, LLVMTypeRef ty, LLVMValueRef init);
LLVMValueRef kb_get(kb *k, LLVMValueRef var);
void kb_set(kb *k, LLVMValueRef var, LLVMValueRef v);

// ---- control flow ----
// for (iv = lo; iv < hi; iv++) — guarded, bottom-tested. `parallel` on the end call promises
// that the iterations' memory accesses are independent (distinct iterations touch distinct
// memory, or only read), which lets the vectoriser skip runtime alias checks; true even when
// an output aliases an input element for element.
typedef struct kb_loop {
  LLVMBasicBlockRef header, exit;
  LLVMValueRef iv, hi;
} kb_loop;
LLVMValueRef kb_loop_begin(kb *k, kb_loop *L, LLVMValueRef lo, LLVMValueRef hi, const char *name);
void kb_loop_end(kb *k, kb_loop *L, bool parallel);
// Same, with an explicit next value of the induction variable (must be > iv).
void kb_loop_end_at(kb *k, kb_loop *L, LLVMValueRef next, bool parallel);

typedef struct kb_if {
  LLVMBasicBlockRef other, end;
  bool has_else;
} kb_if;
void kb_if_begin(kb *k, kb_if *s, LLVMValueRef cond);
void kb_if_else(kb *k, kb_if *s);
void kb_if_end(kb *k, kb_if *s);

// ---- rows spread over threads (ir_rows.c) ----
// The body of a row kernel is written once for the row; these make it run on k->row_threads
// threads. With row_threads = 1 (the host) they emit exactly the serial code: a loop from lo
// by 1, reductions that return their argument, no lane guards. With a warp (the PTX), lane l
// visits elements lo+l, lo+l+32, ...; lanes past the row's end visit none and so keep the
// identity a reduction starts from (0 for sums, -inf for a max).
//
// for (iv = lo + lane; iv < hi; iv += row_threads): the elements this thread owns.
LLVMValueRef kb_row_loop_begin(kb *k, kb_loop *L, LLVMValueRef lo, LLVMValueRef hi,
                               const char *name);
void kb_row_loop_end(kb *k, kb_loop *L, bool parallel);
// The row's total / maximum of every thread's partial, in every thread. On a warp, a
// butterfly of shuffles (llvm.nvvm.shfl.sync.bfly, all 32 lanes): each step combines two
// partials in an order both partners share, so all lanes end with the same bits, the same on
// every run. Must be reached by all lanes of the warp (never inside a per-lane branch).
// `partial` is a scalar float or double.
LLVMValueRef kb_row_sum(kb *k, LLVMValueRef partial);
LLVMValueRef kb_row_max(kb *k, LLVMValueRef partial);
// if (this thread owns element j of loops that start at 0) { ... }: the one thread that writes
// a per-row scalar (j = 0: lane 0) or updates an element other passes wrote (its owner, which
// wrote it itself, so no other lane's store needs to be seen). No branch when row_threads = 1.
typedef struct kb_row_if {
  kb_if s;
  bool active;
} kb_row_if;
void kb_row_owner_begin(kb *k, kb_row_if *s, LLVMValueRef j);
void kb_row_owner_end(kb *k, kb_row_if *s);
// Sets k->lane for a row body being built on `row_threads` threads (call at the body's start);
// 1 leaves the serial form.
void kb_row_setup(kb *k, unsigned row_threads);

// ---- math in plain IR (ir_math.c): no libm calls, so the same code runs on the GPU and
// vectorises on the CPU. Type-generic over float/double scalars and vectors. ----
LLVMValueRef kb_exp(kb *k, LLVMValueRef x);
LLVMValueRef kb_log(kb *k, LLVMValueRef x);
LLVMValueRef kb_tanh(kb *k, LLVMValueRef x);
LLVMValueRef kb_gelu(kb *k, LLVMValueRef x);
LLVMValueRef kb_gelu_grad(kb *k, LLVMValueRef x, LLVMValueRef dy);
LLVMValueRef kb_silu(kb *k, LLVMValueRef x);                       // x sigma(x)
LLVMValueRef kb_silu_grad(kb *k, LLVMValueRef x, LLVMValueRef dy);  // dy d silu(x)/dx
void kb_sincos(kb *k, LLVMValueRef x, LLVMValueRef *sin_out, LLVMValueRef *cos_out);

#endif
