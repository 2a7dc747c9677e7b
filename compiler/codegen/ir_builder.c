// ir_builder.c — helpers for emitting kernel IR: typed constants, arithmetic with the right
// fast-math flags, indexed loads/stores tagged for parallel loops, local variables, loops and
// branches. See ir_builder.h for the conventions.
#include "ir_builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/DebugInfo.h>

#include "ice.h"

#define MAX_LANES 64

void kb_init(kb *k, LLVMContextRef ctx, LLVMModuleRef mod, LLVMBuilderRef b,
             LLVMMetadataRef access_group, dhx_ktype type) {
  memset(k, 0, sizeof *k);
  k->ctx = ctx;
  k->mod = mod;
  k->b = b;
  k->type = type;
  k->f = type == DHX_KT_F64 ? LLVMDoubleTypeInContext(ctx) : LLVMFloatTypeInContext(ctx);
  k->i1 = LLVMInt1TypeInContext(ctx);
  k->i32 = LLVMInt32TypeInContext(ctx);
  k->i64 = LLVMInt64TypeInContext(ctx);
  k->f64 = LLVMDoubleTypeInContext(ctx);
  k->ptr = LLVMPointerTypeInContext(ctx, 0);
  k->vd = LLVMVoidTypeInContext(ctx);
  k->access_group = access_group;
  k->md_access_group = LLVMGetMDKindIDInContext(ctx, "llvm.access.group", 17);
  k->md_loop = LLVMGetMDKindIDInContext(ctx, "llvm.loop", 9);
  kb_set_lanes(k, 1);
  k->vec_aligned = false;
  k->trap_misaligned = false;
  k->row_threads = 1;
}

void kb_set_lanes(kb *k, unsigned lanes) {
  if (lanes < 1 || lanes > MAX_LANES)
    DHX_ICE("%u vector lanes (the builder has 1..%d)", lanes, MAX_LANES);
  k->lanes = lanes;
  k->vt = lanes == 1 ? k->f : LLVMVectorType(k->f, lanes);
}

// ---- constants ----

static LLVMValueRef splat_const(LLVMTypeRef ty, LLVMValueRef (*mk)(LLVMTypeRef, void *),
                                void *arg) {
  if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return mk(ty, arg);
  unsigned n = LLVMGetVectorSize(ty);
  if (n > MAX_LANES)
    DHX_ICE("a constant of %u vector lanes (the builder has 1..%d)", n, MAX_LANES);
  LLVMValueRef e = mk(LLVMGetElementType(ty), arg), v[MAX_LANES];
  for (unsigned i = 0; i < n; i++) v[i] = e;
  return LLVMConstVector(v, n);
}

static LLVMValueRef mk_real(LLVMTypeRef ty, void *arg) { return LLVMConstReal(ty, *(double *)arg); }
static LLVMValueRef mk_int(LLVMTypeRef ty, void *arg) {
  return LLVMConstInt(ty, (unsigned long long)*(long long *)arg, 1);
}

LLVMValueRef kb_cf(LLVMTypeRef ty, double v) { return splat_const(ty, mk_real, &v); }
LLVMValueRef kb_ci(LLVMTypeRef ty, long long v) { return splat_const(ty, mk_int, &v); }
LLVMValueRef kb_fc(kb *k, double v) { return kb_cf(k->vt, v); }
LLVMValueRef kb_i64c(kb *k, int64_t v) { return LLVMConstInt(k->i64, (unsigned long long)v, 1); }

// ---- arithmetic ----

LLVMValueRef kb_add(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(k->b, a, b, ""); }
LLVMValueRef kb_sub(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(k->b, a, b, ""); }
LLVMValueRef kb_mul(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(k->b, a, b, ""); }
LLVMValueRef kb_div(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(k->b, a, b, ""); }
LLVMValueRef kb_neg(kb *k, LLVMValueRef a) { return LLVMBuildFNeg(k->b, a, ""); }

LLVMValueRef kb_radd(kb *k, LLVMValueRef acc, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFAdd(k->b, acc, b, "");
  LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
  return v;
}

LLVMValueRef kb_intrinsic(kb *k, const char *name, LLVMTypeRef *over, unsigned nover,
                          LLVMValueRef *args, unsigned nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  if (id == 0) DHX_ICE("unknown LLVM intrinsic %s", name);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(k->mod, id, over, nover);
  LLVMTypeRef fty = LLVMIntrinsicGetType(k->ctx, id, over, nover);
  return LLVMBuildCall2(k->b, fty, fn, args, nargs, "");
}

static LLVMValueRef intr1(kb *k, const char *name, LLVMValueRef a) {
  LLVMTypeRef t = LLVMTypeOf(a);
  return kb_intrinsic(k, name, &t, 1, &a, 1);
}
static LLVMValueRef intr2(kb *k, const char *name, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[2] = {a, b};
  return kb_intrinsic(k, name, &t, 1, args, 2);
}

LLVMValueRef kb_rmax(kb *k, LLVMValueRef acc, LLVMValueRef b) {
  LLVMValueRef v = intr2(k, "llvm.maxnum", acc, b);
  LLVMSetFastMathFlags(v, LLVMFastMathNoNaNs | LLVMFastMathNoSignedZeros);
  return v;
}

LLVMValueRef kb_fma(kb *k, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[3] = {a, b, c};
  return kb_intrinsic(k, "llvm.fmuladd", &t, 1, args, 3);
}
LLVMValueRef kb_sqrt(kb *k, LLVMValueRef a) { return intr1(k, "llvm.sqrt", a); }
LLVMValueRef kb_fabs(kb *k, LLVMValueRef a) { return intr1(k, "llvm.fabs", a); }
LLVMValueRef kb_rint(kb *k, LLVMValueRef a) { return intr1(k, "llvm.rint", a); }
LLVMValueRef kb_floor(kb *k, LLVMValueRef a) { return intr1(k, "llvm.floor", a); }
LLVMValueRef kb_copysign(kb *k, LLVMValueRef mag, LLVMValueRef sign) {
  return intr2(k, "llvm.copysign", mag, sign);
}
LLVMValueRef kb_minnum(kb *k, LLVMValueRef a, LLVMValueRef b) { return intr2(k, "llvm.minnum", a, b); }
LLVMValueRef kb_maxnum(kb *k, LLVMValueRef a, LLVMValueRef b) { return intr2(k, "llvm.maxnum", a, b); }
LLVMValueRef kb_smin(kb *k, LLVMValueRef a, LLVMValueRef b) { return intr2(k, "llvm.smin", a, b); }

LLVMValueRef kb_ilt(kb *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(k->b, LLVMIntSLT, a, b, "");
}
LLVMValueRef kb_imul(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(k->b, a, b, ""); }
LLVMValueRef kb_iadd(kb *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(k->b, a, b, ""); }
LLVMValueRef kb_select(kb *k, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(k->b, c, a, b, "");
}

LLVMValueRef kb_splat(kb *k, LLVMValueRef scalar) {
  if (k->lanes == 1) return scalar;
  LLVMValueRef v = LLVMBuildInsertElement(k->b, LLVMGetPoison(k->vt), scalar,
                                          LLVMConstInt(k->i32, 0, 0), "");
  LLVMValueRef mask = kb_ci(LLVMVectorType(k->i32, k->lanes), 0);
  return LLVMBuildShuffleVector(k->b, v, LLVMGetPoison(k->vt), mask, "");
}

LLVMValueRef kb_to_f(kb *k, LLVMValueRef i64v) { return LLVMBuildSIToFP(k->b, i64v, k->f, ""); }

// ---- memory ----

static void tag(kb *k, LLVMValueRef inst) {
  LLVMSetMetadata(inst, k->md_access_group, LLVMMetadataAsValue(k->ctx, k->access_group));
}

LLVMValueRef kb_gep(kb *k, LLVMTypeRef elem, LLVMValueRef ptr, LLVMValueRef index) {
  return LLVMBuildInBoundsGEP2(k->b, elem, ptr, &index, 1, "");
}

static unsigned fsize(const kb *k) { return k->type == DHX_KT_F64 ? 8 : 4; }

// if (addr % align) trap, for an aligned vector access where trap_misaligned asks.
static void check_aligned(kb *k, LLVMValueRef addr, unsigned align) {
  if (!k->trap_misaligned || align <= fsize(k)) return;
  LLVMValueRef low = LLVMBuildAnd(k->b, LLVMBuildPtrToInt(k->b, addr, k->i64, ""),
                                  kb_i64c(k, align - 1), "");
  kb_if bad;
  kb_if_begin(k, &bad, LLVMBuildICmp(k->b, LLVMIntNE, low, kb_i64c(k, 0), "misaligned"));
  kb_intrinsic(k, "llvm.trap", NULL, 0, NULL, 0);
  kb_if_end(k, &bad);
}

static LLVMValueRef load_as(kb *k, LLVMTypeRef ty, LLVMTypeRef elem, unsigned align,
                            LLVMValueRef ptr, LLVMValueRef index) {
  LLVMValueRef addr = kb_gep(k, elem, ptr, index);
  check_aligned(k, addr, align);
  LLVMValueRef v = LLVMBuildLoad2(k->b, ty, addr, "");
  LLVMSetAlignment(v, align);
  tag(k, v);
  return v;
}

static void store_as(kb *k, LLVMValueRef v, LLVMTypeRef elem, unsigned align, LLVMValueRef ptr,
                     LLVMValueRef index) {
  LLVMValueRef addr = kb_gep(k, elem, ptr, index);
  check_aligned(k, addr, align);
  LLVMValueRef s = LLVMBuildStore(k->b, v, addr);
  LLVMSetAlignment(s, align);
  tag(k, s);
}


// The alignment of an access of `lanes` elements of `size` bytes: the whole vector's on the
// wide bodies (kb.vec_aligned), else one element's.
static unsigned valign(const kb *k, unsigned lanes, unsigned size) {
  return lanes > 1 && k->vec_aligned ? size * lanes : size;
}

static bool is_bf16(const kb *k, LLVMValueRef ptr) {
  for (int i = 0; i < k->nbf16; i++)
    if (k->bf16_ptr[i] == ptr) return true;
  return false;
}

// An integer type of `bits`, as wide as a value of `like` (a scalar or a vector).
static LLVMTypeRef int_like(kb *k, LLVMTypeRef like, unsigned bits) {
  LLVMTypeRef it = LLVMIntTypeInContext(k->ctx, bits);
  return LLVMGetTypeKind(like) == LLVMVectorTypeKind ? LLVMVectorType(it, LLVMGetVectorSize(like))
                                                     : it;
}

LLVMValueRef kb_from_bf16(kb *k, LLVMValueRef bits) {
  LLVMTypeRef ty = LLVMTypeOf(bits);
  LLVMTypeRef i32t = int_like(k, ty, 32);
  LLVMValueRef wide = LLVMBuildShl(k->b, LLVMBuildZExt(k->b, bits, i32t, ""), kb_ci(i32t, 16), "");
  LLVMTypeRef ft = LLVMGetTypeKind(ty) == LLVMVectorTypeKind
                       ? LLVMVectorType(LLVMFloatTypeInContext(k->ctx), LLVMGetVectorSize(ty))
                       : LLVMFloatTypeInContext(k->ctx);
  return LLVMBuildBitCast(k->b, wide, ft, "");
}

// Round to nearest even by adding 0x7fff plus the kept part's lowest bit; an overflow carries
// into the exponent (to infinity, as it should). NaN would carry into garbage, so it takes its
// top half with the quiet bit set instead.
LLVMValueRef kb_to_bf16(kb *k, LLVMValueRef v) {
  LLVMTypeRef ty = LLVMTypeOf(v), i32t = int_like(k, ty, 32);
  LLVMValueRef bits = LLVMBuildBitCast(k->b, v, i32t, "");
  LLVMValueRef top = LLVMBuildLShr(k->b, bits, kb_ci(i32t, 16), "");
  LLVMValueRef odd = LLVMBuildAnd(k->b, top, kb_ci(i32t, 1), "");
  LLVMValueRef sum = LLVMBuildAdd(k->b, LLVMBuildAdd(k->b, bits, kb_ci(i32t, 0x7fff), ""), odd, "");
  LLVMValueRef rounded = LLVMBuildLShr(k->b, sum, kb_ci(i32t, 16), "");
  LLVMValueRef quiet = LLVMBuildOr(k->b, top, kb_ci(i32t, 0x40), "");
  LLVMValueRef nan = LLVMBuildFCmp(k->b, LLVMRealUNO, v, v, "");
  return LLVMBuildTrunc(k->b, LLVMBuildSelect(k->b, nan, quiet, rounded, ""), int_like(k, ty, 16), "");
}

// A floating load of `lanes` elements (k->vt, or one k->f) through ptr: of bf16 elements when
// ptr is one.
static LLVMValueRef load_f(kb *k, unsigned lanes, LLVMValueRef ptr, LLVMValueRef index) {
  LLVMTypeRef ty = lanes > 1 ? k->vt : k->f;
  if (!is_bf16(k, ptr)) return load_as(k, ty, k->f, valign(k, lanes, fsize(k)), ptr, index);
  LLVMTypeRef i16t = LLVMInt16TypeInContext(k->ctx);
  return kb_from_bf16(k, load_as(k, int_like(k, ty, 16), i16t, valign(k, lanes, 2), ptr, index));
}

static void store_f(kb *k, unsigned lanes, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index) {
  if (!is_bf16(k, ptr)) {
    store_as(k, v, k->f, valign(k, lanes, fsize(k)), ptr, index);
    return;
  }
  store_as(k, kb_to_bf16(k, v), LLVMInt16TypeInContext(k->ctx), valign(k, lanes, 2), ptr, index);
}

LLVMValueRef kb_load(kb *k, LLVMValueRef ptr, LLVMValueRef index) {
  return load_f(k, k->lanes, ptr, index);
}
void kb_store(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index) {
  store_f(k, k->lanes, v, ptr, index);
}
LLVMValueRef kb_load_s(kb *k, LLVMValueRef ptr, LLVMValueRef index) {
  return load_f(k, 1, ptr, index);
}
void kb_store_s(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index) {
  store_f(k, 1, v, ptr, index);
}
LLVMValueRef kb_load_i32(kb *k, LLVMValueRef ptr, LLVMValueRef index) {
  return LLVMBuildSExt(k->b, load_as(k, k->i32, k->i32, 4, ptr, index), k->i64, "");
}
void kb_store_i32(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index) {
  store_as(k, v, k->i32, 4, ptr, index);
}

void kb_store_acc(kb *k, LLVMValueRef v, LLVMValueRef ptr, LLVMValueRef index, LLVMValueRef acc) {
  kb_if s;
  kb_if_begin(k, &s, acc);
  kb_store(k, kb_add(k, kb_load(k, ptr, index), v), ptr, index);
  kb_if_else(k, &s);
  kb_store(k, v, ptr, index);
  kb_if_end(k, &s);
}

// ---- variables ----

LLVMValueRef kb_var(kb *k, LLVMTypeRef ty, LLVMValueRef init) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(k->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(k->b, first);
  else LLVMPositionBuilderAtEnd(k->b, entry);
  LLVMValueRef var = LLVMBuildAlloca(k->b, ty, "");
  LLVMPositionBuilderAtEnd(k->b, cur);
  LLVMBuildStore(k->b, init, var);
  return var;
}

LLVMValueRef kb_get(kb *k, LLVMValueRef var) {
  return LLVMBuildLoad2(k->b, LLVMGetAllocatedType(var), var, "");
}
void kb_set(kb *k, LLVMValueRef var, LLVMValueRef v) { LLVMBuildStore(k->b, v, var); }

// ---- control flow ----

LLVMValueRef kb_loop_begin(kb *k, kb_loop *L, LLVMValueRef lo, LLVMValueRef hi, const char *name) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(k->b);
  L->header = LLVMAppendBasicBlockInContext(k->ctx, k->fn, name);
  L->exit = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "");
  L->hi = hi;
  LLVMBuildCondBr(k->b, kb_ilt(k, lo, hi), L->header, L->exit);
  LLVMPositionBuilderAtEnd(k->b, L->header);
  L->iv = LLVMBuildPhi(k->b, k->i64, "");
  LLVMAddIncoming(L->iv, &lo, &pre, 1);
  return L->iv;
}

// Loop metadata: a self-referential node !{!self, !{"llvm.loop.parallel_accesses", !group}}.
// The temporary-node dance is how the C API makes the self reference (which also makes the
// node distinct, as a loop id must be).
static void mark_parallel(kb *k, LLVMValueRef br) {
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(k->ctx, NULL, 0);
  LLVMMetadataRef pa[2] = {LLVMMDStringInContext2(k->ctx, "llvm.loop.parallel_accesses", 27),
                           k->access_group};
  LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(k->ctx, pa, 2)};
  LLVMMetadataRef id = LLVMMDNodeInContext2(k->ctx, ops, 2);
  LLVMMetadataReplaceAllUsesWith(tmp, id);
  LLVMSetMetadata(br, k->md_loop, LLVMMetadataAsValue(k->ctx, id));
}

void kb_loop_end_at(kb *k, kb_loop *L, LLVMValueRef next, bool parallel) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(k->b);
  LLVMValueRef br = LLVMBuildCondBr(k->b, kb_ilt(k, next, L->hi), L->header, L->exit);
  if (parallel) mark_parallel(k, br);
  LLVMAddIncoming(L->iv, &next, &latch, 1);
  LLVMMoveBasicBlockAfter(L->exit, latch);
  LLVMPositionBuilderAtEnd(k->b, L->exit);
}

void kb_loop_end(kb *k, kb_loop *L, bool parallel) {
  kb_loop_end_at(k, L, LLVMBuildNSWAdd(k->b, L->iv, kb_i64c(k, 1), ""), parallel);
}

void kb_if_begin(kb *k, kb_if *s, LLVMValueRef cond) {
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "");
  s->other = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "");
  s->end = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "");
  s->has_else = false;
  LLVMBuildCondBr(k->b, cond, then, s->other);
  LLVMPositionBuilderAtEnd(k->b, then);
}

void kb_if_else(kb *k, kb_if *s) {
  LLVMBuildBr(k->b, s->end);
  LLVMMoveBasicBlockAfter(s->other, LLVMGetInsertBlock(k->b));
  LLVMPositionBuilderAtEnd(k->b, s->other);
  s->has_else = true;
}

void kb_if_end(kb *k, kb_if *s) {
  LLVMBuildBr(k->b, s->end);
  if (!s->has_else) {
    LLVMMoveBasicBlockAfter(s->other, LLVMGetInsertBlock(k->b));
    LLVMPositionBuilderAtEnd(k->b, s->other);
    LLVMBuildBr(k->b, s->end);
  }
  LLVMMoveBasicBlockAfter(s->end, LLVMGetInsertBlock(k->b));
  LLVMPositionBuilderAtEnd(k->b, s->end);
}
