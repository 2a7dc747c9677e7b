// kernel_entry.c — one kernel body, three ways to call it.
//
// The body ("dhxb_NAME", internal, always inlined) computes one index of the kernel's index
// space from typed arguments; it is the only place a kernel's arithmetic is written. Around it:
//   * the host entry "dhxk_NAME"(const dhx_slot *args, i64 begin, i64 end) of
//     runtime/kernel_abi.h unpacks the slots and loops the body over [begin, end). The loop is
//     marked parallel (distinct indices touch distinct memory — the ABI's contract), which is
//     what lets LLVM vectorise elementwise kernels even when they run in place;
//   * the PTX entry "NAME"(typed params..., i64 n) is a grid-stride loop from index
//     ctaid.x * ntid.x + tid.x, four indices at a time for a wide kernel, or for a row kernel
//     (DHX_KS_ROWS) from row (ctaid.x * ntid.x + tid.x) / 32 on a whole warp, whose lanes
//     share the row's elements (ir_rows.c);
//   * the host entry "dhxg_NAME" runs the PTX entry's thread code for the blocks of a grid,
//     so that the GPU's indexing is tested where there is no GPU;
//   * the textual .ll (dhxc --emit=llvm) shows the bodies and host entries unoptimised.
#include <stdio.h>
#include <string.h>

#include "codegen_internal.h"

#define MAX_PARAMS (DHX_MAX_ARGS + 1 + DHX_EW_MAX_IO)

static LLVMTypeRef code_type(kb *k, char code, unsigned addrspace) {
  switch (code) {
  case 'p':
  case 'q': return LLVMPointerTypeInContext(k->ctx, addrspace);
  case 'i': return k->i64;
  case 'd': return k->f64;
  default: return k->f;
  }
}

static void add_fn_attr(kb *k, LLVMValueRef fn, const char *attr) {
  unsigned id = LLVMGetEnumAttributeKindForName(attr, strlen(attr));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(k->ctx, id, 0));
}

// noalias on every pointer parameter the catalogue does not allow to alias.
static void add_noalias(kb *k, LLVMValueRef fn, const dhx_kernel_spec *s, const char *codes,
                        int n) {
  uint32_t alias = dhx_kernel_may_alias(s);
  unsigned id = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < n; i++)
    if ((codes[i] == 'p' || codes[i] == 'q') && !(alias & (1u << i)))
      LLVMAddAttributeAtIndex(fn, (unsigned)i + 1, LLVMCreateEnumAttribute(k->ctx, id, 0));
}

static void begin_function(kb *k, LLVMValueRef fn) {
  k->fn = fn;
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(k->ctx, fn, "entry");
  LLVMPositionBuilderAtEnd(k->b, entry);
}

LLVMValueRef dhx_build_body(kb *k, const dhx_kernel_spec *s, const char *name, unsigned lanes,
                            unsigned row_threads) {
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(s, codes), nmod = dhx_kernel_nmod(s);
  LLVMTypeRef params[MAX_PARAMS];
  for (int i = 0; i < n; i++) params[i] = code_type(k, codes[i], 0);
  for (int i = 0; i <= nmod; i++) params[n + i] = k->i64;  // idx, then the MOD indices
  LLVMTypeRef fty = LLVMFunctionType(k->vd, params, (unsigned)(n + 1 + nmod), 0);
  char fname[DHX_NAME_MAX + 32];
  if (lanes > 1) snprintf(fname, sizeof fname, "dhxb_%s_%c%u", name, k->vec_aligned ? 'w' : 'x', lanes);
  else snprintf(fname, sizeof fname, "dhxb_%s", name);
  LLVMValueRef fn = LLVMAddFunction(k->mod, fname, fty);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  add_fn_attr(k, fn, "alwaysinline");
  add_fn_attr(k, fn, "nounwind");
  add_noalias(k, fn, s, codes, n);
  // Its warp shuffles need every lane: no pass may make a call to it depend on more branches.
  if (row_threads > 1) add_fn_attr(k, fn, "convergent");

  begin_function(k, fn);
  kb_set_lanes(k, lanes);
  kb_row_setup(k, row_threads);
  LLVMValueRef args[MAX_PARAMS];
  for (int i = 0; i < n + 1 + nmod; i++) args[i] = LLVMGetParam(fn, (unsigned)i);
  k->nbf16 = 0;
  for (int i = 0; i < n; i++)
    if (s->bf16 & (1u << i)) k->bf16_ptr[k->nbf16++] = args[i];
  dhx_kdesc_of(s->kind)->emit(k, s, args, args[n], args + n + 1);
  k->nbf16 = 0;
  LLVMBuildRetVoid(k->b);
  kb_set_lanes(k, 1);
  kb_row_setup(k, 1);
  return fn;
}

static void call_body(kb *k, LLVMValueRef body, LLVMValueRef *vals, int n, LLVMValueRef idx,
                      LLVMValueRef *mod_idx, int nmod) {
  LLVMValueRef args[MAX_PARAMS];
  for (int i = 0; i < n; i++) args[i] = vals[i];
  args[n] = idx;
  for (int i = 0; i < nmod; i++) args[n + 1 + i] = mod_idx[i];
  LLVMBuildCall2(k->b, LLVMGlobalGetValueType(body), body, args, (unsigned)(n + 1 + nmod), "");
}

// Fused elementwise kernels with broadcast (MOD) inputs: [begin, end) is cut into runs in
// which no i % mod wraps, so inside a run every input index is i plus a constant — the inner
// loop is then as simple as a plain one (contiguous, vectorisable) and needs no division.
static void host_eltwise_runs(kb *k, const dhx_kernel_spec *s, LLVMValueRef body,
                              LLVMValueRef *vals, int n, LLVMValueRef begin, LLVMValueRef end) {
  int nmod = dhx_kernel_nmod(s);
  LLVMValueRef base[DHX_EW_MAX_IO], mods[DHX_EW_MAX_IO];
  int m = 0;
  for (int j = 0; j < s->ew.nin; j++)
    if (s->ew.in_mode[j] == DHX_EW_MOD) mods[m++] = kb_i64c(k, s->ew.in_mod[j]);
  kb_loop R, I;
  LLVMValueRef i0 = kb_loop_begin(k, &R, begin, end, "run");
  LLVMValueRef run_end = end;
  for (int j = 0; j < nmod; j++) {
    base[j] = LLVMBuildURem(k->b, i0, mods[j], "");
    LLVMValueRef wrap = kb_iadd(k, i0, LLVMBuildSub(k->b, mods[j], base[j], ""));
    run_end = kb_smin(k, run_end, wrap);
  }
  LLVMValueRef i = kb_loop_begin(k, &I, i0, run_end, "elem");
  LLVMValueRef off = LLVMBuildSub(k->b, i, i0, ""), mi[DHX_EW_MAX_IO];
  for (int j = 0; j < nmod; j++) mi[j] = kb_iadd(k, base[j], off);
  call_body(k, body, vals, n, i, mi, nmod);
  kb_loop_end(k, &I, true);
  kb_loop_end_at(k, &R, run_end, false);
}

// Loads the arguments from the slots (dhx_slot: 8 bytes each; .p, .i, or .f as a double)
// into vals; returns their count.
static int unpack_slots(kb *k, const dhx_kernel_spec *s, LLVMValueRef slots, LLVMValueRef *vals) {
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(s, codes);
  for (int i = 0; i < n; i++) {
    LLVMValueRef idx = kb_i64c(k, i);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(k->b, k->i64, slots, &idx, 1, "");
    LLVMTypeRef ty = codes[i] == 'i' ? k->i64 : codes[i] == 'f' || codes[i] == 'd' ? k->f64 : k->ptr;
    LLVMValueRef v = LLVMBuildLoad2(k->b, ty, p, "");
    LLVMSetAlignment(v, 8);
    if (codes[i] == 'f' && k->type == DHX_KT_F32) v = LLVMBuildFPTrunc(k->b, v, k->f, "");
    vals[i] = v;
  }
  return n;
}

LLVMValueRef dhx_build_host_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                  LLVMValueRef body, LLVMValueRef body_vec, unsigned lanes) {
  LLVMTypeRef params[3] = {k->ptr, k->i64, k->i64};
  LLVMTypeRef fty = LLVMFunctionType(k->vd, params, 3, 0);
  char fname[DHX_NAME_MAX + 16];
  snprintf(fname, sizeof fname, "dhxk_%s", name);
  LLVMValueRef fn = LLVMAddFunction(k->mod, fname, fty);
  add_fn_attr(k, fn, "nounwind");
  begin_function(k, fn);
  LLVMValueRef slots = LLVMGetParam(fn, 0), begin = LLVMGetParam(fn, 1), end = LLVMGetParam(fn, 2);

  LLVMValueRef vals[DHX_MAX_ARGS];
  int n = unpack_slots(k, s, slots, vals);

  if (dhx_kernel_nmod(s) > 0) {
    host_eltwise_runs(k, s, body, vals, n, begin, end);
  } else if (body_vec && lanes > 1) {
    // Column kernels: blocks of `lanes` columns through the vector body, then the rest.
    LLVMValueRef w = kb_i64c(k, lanes);
    LLVMValueRef nblk = LLVMBuildSDiv(k->b, LLVMBuildSub(k->b, end, begin, ""), w, "");
    kb_loop B, T;
    LLVMValueRef q = kb_loop_begin(k, &B, kb_i64c(k, 0), nblk, "blocks");
    call_body(k, body_vec, vals, n, kb_iadd(k, begin, kb_imul(k, q, w)), NULL, 0);
    kb_loop_end(k, &B, false);
    LLVMValueRef done = kb_imul(k, kb_intrinsic(k, "llvm.smax", &k->i64, 1,
                                                (LLVMValueRef[]){nblk, kb_i64c(k, 0)}, 2), w);
    LLVMValueRef tail = kb_iadd(k, begin, done);
    LLVMValueRef c = kb_loop_begin(k, &T, tail, end, "tail");
    call_body(k, body, vals, n, c, NULL, 0);
    kb_loop_end(k, &T, false);
  } else {
    kb_loop L;
    LLVMValueRef i = kb_loop_begin(k, &L, begin, end, "index");
    call_body(k, body, vals, n, i, NULL, 0);
    kb_loop_end(k, &L, true);
  }
  LLVMBuildRetVoid(k->b);
  return fn;
}

LLVMValueRef dhx_build_host_abi(kb *k, const dhx_plan_kernel *entry) {
  char text[DHX_KERNEL_ABI_MAX], sym[DHX_NAME_MAX + sizeof DHX_KERNEL_ABI_PREFIX];
  if (!dhx_kernel_abi_encode(entry, text)) return NULL;
  snprintf(sym, sizeof sym, DHX_KERNEL_ABI_PREFIX "%s", entry->name);
  LLVMValueRef init = LLVMConstStringInContext(k->ctx, text, (unsigned)strlen(text), 0);
  LLVMValueRef g = LLVMAddGlobal(k->mod, LLVMTypeOf(init), sym);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetAlignment(g, 1);
  return g;
}

static LLVMValueRef sreg(kb *k, const char *name) {
  return LLVMBuildZExt(k->b, kb_intrinsic(k, name, NULL, 0, NULL, 0), k->i64, "");
}

// ---- the GPU grid: what one thread runs, on the GPU and in the host's emulation of it ----
//
// Every PTX entry is a grid-stride loop: thread t of a grid of `stride` threads takes indices
// t, t + stride, ... (for a warp-per-row kernel, rows t/32, t/32 + stride/32, ...: blocks
// hold whole warps, so the lanes of a warp take the same rows). Any grid computes every index,
// so the runtime sizes grids for occupancy alone. A wide kernel (indices_per_thread 4) first
// checks that every pointer it reads or writes at the index is 16-byte aligned, a branch that
// is the same for the whole grid, and then takes the indices four at a time through the
// 4-lane body (one 16-byte load or store per pointer), the last n % 4 through the scalar
// body; with a pointer that is not aligned, the scalar loop.

static void mod_indices(kb *k, const dhx_kernel_spec *s, LLVMValueRef idx, LLVMValueRef *mi) {
  int m = 0;
  if (s->kind == DHX_K_ELTWISE)
    for (int j = 0; j < s->ew.nin; j++)
      if (s->ew.in_mode[j] == DHX_EW_MOD)
        mi[m++] = LLVMBuildURem(k->b, idx, kb_i64c(k, s->ew.in_mod[j]), "");
}

// body(idx), with the broadcast inputs' indices idx % m.
static void call_at(kb *k, const dhx_kernel_spec *s, LLVMValueRef body, LLVMValueRef *vals,
                    int n, LLVMValueRef idx) {
  LLVMValueRef mi[DHX_EW_MAX_IO];
  mod_indices(k, s, idx, mi);
  call_body(k, body, vals, n, idx, mi, dhx_kernel_nmod(s));
}

// for (q = first; q < hi; q += step) body(q · scale)
static void grid_stride(kb *k, const dhx_kernel_spec *s, LLVMValueRef body, LLVMValueRef *vals,
                        int n, LLVMValueRef first, LLVMValueRef step, LLVMValueRef hi,
                        unsigned scale) {
  kb_loop L;
  LLVMValueRef q = kb_loop_begin(k, &L, first, hi, "grid");
  call_at(k, s, body, vals, n, scale > 1 ? kb_imul(k, q, kb_i64c(k, scale)) : q);
  kb_loop_end_at(k, &L, kb_iadd(k, q, step), false);
}

// Thread t's share of the index space [0, count). raw: the pointer arguments as passed (their
// addresses decide the wide path); wide: the 4-lane body, or NULL.
static void thread_work(kb *k, const dhx_kernel_spec *s, LLVMValueRef body, LLVMValueRef wide,
                        LLVMValueRef *vals, LLVMValueRef *raw, int n, LLVMValueRef count,
                        LLVMValueRef t, LLVMValueRef stride) {
  uint32_t tpi = dhx_kernel_threads_per_index(s);
  if (tpi > 1) {
    LLVMValueRef w = kb_i64c(k, tpi);
    grid_stride(k, s, body, vals, n, LLVMBuildUDiv(k->b, t, w, "row"),
                LLVMBuildUDiv(k->b, stride, w, ""), count, 1);
    return;
  }
  if (!wide) {
    grid_stride(k, s, body, vals, n, t, stride, count, 1);
    return;
  }
  // Each pointer's four elements aligned: 16 bytes for f32, 8 for bf16 (wide kernels are f32).
  uint32_t mask = dhx_kernel_wide_pointers(s);
  LLVMValueRef bits = kb_i64c(k, 0);
  for (int i = 0; i < n; i++) {
    if (!(mask & (1u << i))) continue;
    unsigned bytes = DHX_PLAN_WIDE * (s->bf16 & (1u << i) ? 2 : 4);
    LLVMValueRef low = LLVMBuildAnd(k->b, LLVMBuildPtrToInt(k->b, raw[i], k->i64, ""),
                                    kb_i64c(k, bytes - 1), "");
    bits = LLVMBuildOr(k->b, bits, low, "");
  }
  LLVMValueRef aligned = LLVMBuildICmp(k->b, LLVMIntEQ, bits, kb_i64c(k, 0), "aligned");
  kb_if path;
  kb_if_begin(k, &path, aligned);
  LLVMValueRef groups = LLVMBuildSDiv(k->b, count, kb_i64c(k, DHX_PLAN_WIDE), "groups");
  grid_stride(k, s, wide, vals, n, t, stride, groups, DHX_PLAN_WIDE);
  LLVMValueRef rest = kb_iadd(k, kb_imul(k, groups, kb_i64c(k, DHX_PLAN_WIDE)), t);
  kb_if tail;
  kb_if_begin(k, &tail, kb_ilt(k, rest, count));
  call_at(k, s, body, vals, n, rest);
  kb_if_end(k, &tail);
  kb_if_else(k, &path);
  grid_stride(k, s, body, vals, n, t, stride, count, 1);
  kb_if_end(k, &path);
}

LLVMValueRef dhx_build_wide_body(kb *k, const dhx_kernel_spec *s, const char *name) {
  if (dhx_kernel_indices_per_thread(s) == 1) return NULL;
  k->vec_aligned = true;
  LLVMValueRef fn = dhx_build_body(k, s, name, DHX_PLAN_WIDE, 1);
  k->vec_aligned = false;
  return fn;
}

LLVMValueRef dhx_build_grid_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                  LLVMValueRef body, LLVMValueRef wide) {
  if (dhx_kernel_threads_per_index(s) > 1) return NULL;
  LLVMTypeRef params[6] = {k->ptr, k->i64, k->i64, k->i64, k->i64, k->i64};
  char fname[DHX_NAME_MAX + 16];
  snprintf(fname, sizeof fname, "dhxg_%s", name);  // DHX_GRID_PREFIX, runtime/kernel_abi.h
  LLVMValueRef fn = LLVMAddFunction(k->mod, fname, LLVMFunctionType(k->vd, params, 6, 0));
  add_fn_attr(k, fn, "nounwind");
  // A test's emulation, not the CPU backend's code: optimised for size, which keeps LLVM from
  // vectorising and unrolling its loops and so keeps dhxc's time nearly what it was without it.
  add_fn_attr(k, fn, "optsize");
  add_fn_attr(k, fn, "minsize");
  begin_function(k, fn);
  LLVMValueRef vals[DHX_MAX_ARGS];
  int n = unpack_slots(k, s, LLVMGetParam(fn, 0), vals);
  LLVMValueRef count = LLVMGetParam(fn, 1), ntid = LLVMGetParam(fn, 2);
  LLVMValueRef stride = kb_imul(k, ntid, LLVMGetParam(fn, 3));
  kb_loop B, T;
  LLVMValueRef c = kb_loop_begin(k, &B, LLVMGetParam(fn, 4), LLVMGetParam(fn, 5), "block");
  LLVMValueRef tid = kb_loop_begin(k, &T, kb_i64c(k, 0), ntid, "thread");
  thread_work(k, s, body, wide, vals, vals, n, count, kb_iadd(k, kb_imul(k, c, ntid), tid), stride);
  kb_loop_end(k, &T, false);
  kb_loop_end(k, &B, false);
  LLVMBuildRetVoid(k->b);
  return fn;
}

LLVMValueRef dhx_build_ptx_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                 LLVMValueRef body, LLVMValueRef wide) {
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(s, codes);
  LLVMTypeRef params[DHX_MAX_ARGS + 1];
  for (int i = 0; i < n; i++) params[i] = code_type(k, codes[i], 1);  // global memory
  params[n] = k->i64;
  LLVMTypeRef fty = LLVMFunctionType(k->vd, params, (unsigned)n + 1, 0);
  LLVMValueRef fn = LLVMAddFunction(k->mod, name, fty);
  LLVMSetFunctionCallConv(fn, LLVMPTXKernelCallConv);
  add_fn_attr(k, fn, "nounwind");
  add_noalias(k, fn, s, codes, n);
  begin_function(k, fn);

  LLVMValueRef ntid = sreg(k, "llvm.nvvm.read.ptx.sreg.ntid.x");
  LLVMValueRef t = kb_iadd(k, kb_imul(k, sreg(k, "llvm.nvvm.read.ptx.sreg.ctaid.x"), ntid),
                           sreg(k, "llvm.nvvm.read.ptx.sreg.tid.x"));
  LLVMValueRef stride = kb_imul(k, sreg(k, "llvm.nvvm.read.ptx.sreg.nctaid.x"), ntid);
  LLVMValueRef vals[DHX_MAX_ARGS], raw[DHX_MAX_ARGS];
  for (int i = 0; i < n; i++) {
    raw[i] = vals[i] = LLVMGetParam(fn, (unsigned)i);
    if (codes[i] == 'p' || codes[i] == 'q')
      vals[i] = LLVMBuildAddrSpaceCast(k->b, vals[i], k->ptr, "");
  }
  thread_work(k, s, body, wide, vals, raw, n, LLVMGetParam(fn, (unsigned)n), t, stride);
  LLVMBuildRetVoid(k->b);

  // Mark it a kernel both ways: the calling convention (current LLVM) and nvvm.annotations
  // (what older LLVM and other NVVM tools read).
  LLVMMetadataRef md[3] = {LLVMValueAsMetadata(fn), LLVMMDStringInContext2(k->ctx, "kernel", 6),
                           LLVMValueAsMetadata(LLVMConstInt(k->i32, 1, 0))};
  LLVMAddNamedMetadataOperand(k->mod, "nvvm.annotations",
                              LLVMMetadataAsValue(k->ctx, LLVMMDNodeInContext2(k->ctx, md, 3)));
  return fn;
}
