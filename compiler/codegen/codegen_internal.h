// codegen_internal.h — what the files of compiler/codegen share with each other.
//
//   kernel_names.c    the catalogue: names, argument lists, aliasing rules, emitters; spec
//                     validation and the canonical (hashed) form of fused specs
//   kernel_*.c        one emitter per kernel kind: the body for one index, in IR
//   kernel_entry.c    wraps a body into a function, a host entry (slot ABI, index loop) or a
//                     PTX entry (one index per thread, or a warp per row)
//   ir_rows.c         a row's loops and reductions: serial on the host, a warp in the PTX
//   codegen.c         the kernel table and building a whole module for one target
//   target_host.c     x86-64 object → kernels.so;  target_ptx.c  nvptx64 → kernels.ptx
//   kernel_cache.c    one file's emission, through a cache keyed by what produced it
#ifndef DHX_CODEGEN_INTERNAL_H
#define DHX_CODEGEN_INTERNAL_H

#include <llvm-c/TargetMachine.h>

#include "ir_builder.h"
#include "kernels.h"
#include "plan_util.h"

// Fills what the kernel reaches through each argument (runtime/plan.h: dhx_plan_access), for the
// plan's kernel table; all DHX_ACC_NONE for an invalid spec (kernel_access.c).
void dhx_kernel_access(const dhx_kernel_spec *spec, dhx_plan_access access[DHX_MAX_ARGS]);

// Emits the body of one kernel instance. args are the signature's arguments (pointers as
// generic `ptr`, i64, scalars as k->f), idx the instance's index. For DHX_K_ELTWISE,
// mod_idx[m] is the element index of the m-th DHX_EW_MOD input (= idx % mod, computed by the
// caller, which on the host advances it without a division). With k->lanes > 1 (column
// kernels on the host only) the body computes columns idx .. idx+lanes-1 at once.
typedef void (*dhx_emit_fn)(kb *k, const dhx_kernel_spec *s, LLVMValueRef *args,
                            LLVMValueRef idx, LLVMValueRef *mod_idx);

// What one index of a kernel is, which decides how a target spreads the work over threads.
typedef enum {
  DHX_KS_INDEX,    // an element (or a small fixed piece of work): one index per thread
  DHX_KS_COLUMNS,  // a column, the body looping over rows: the host runs a lane-vectorised
                   // variant so each row step reads whole cache lines; on the GPU neighbouring
                   // threads already read neighbouring columns
  DHX_KS_ROWS,     // a row whose elements the body loops over (kb_row_loop_begin) and
                   // reduces (kb_row_sum/max): on the GPU a warp per row (DHX_PLAN_WARP
                   // threads per index), so a row's loads are coalesced
  DHX_KS_COLUMN_SUMS,  // a column whose rows the body sums (kb_row_loop_begin over the rows,
                       // kb_row_sum): the host as DHX_KS_COLUMNS; on the GPU a warp per
                       // column, its lanes splitting the rows (one thread per column left
                       // the GPU idle: GPT-2's 768 columns are 768 threads), the block's
                       // neighbouring warps reading neighbouring columns
} dhx_kshape;

typedef struct dhx_kdesc {
  const char *name;    // base name; "_f32"/"_f64" is appended
  const char *args;    // one code per argument: p = pointer to the dtype, q = pointer to i32,
                       // i = i64, f = floating scalar (f32/f64 as the kernel), d = f64
                       // scalar in either variant
  uint32_t may_alias;  // bit a set: pointer argument a may alias another argument, so it
                       // must not be declared noalias
  dhx_kshape shape;
  dhx_emit_fn emit;
} dhx_kdesc;

// The catalogue entry of a kind (for DHX_K_ELTWISE: name "ew", args and may_alias empty —
// use the functions below, which handle every kind).
const dhx_kdesc *dhx_kdesc_of(dhx_kernel_kind kind);
// Argument codes of a (valid) spec, NUL-terminated; returns the count.
int dhx_kernel_arg_codes(const dhx_kernel_spec *s, char codes[DHX_MAX_ARGS + 1]);
uint32_t dhx_kernel_may_alias(const dhx_kernel_spec *s);
// Threads of a PTX launch per index: DHX_PLAN_WARP for DHX_KS_ROWS and DHX_KS_COLUMN_SUMS
// kinds, else 1.
uint32_t dhx_kernel_threads_per_index(const dhx_kernel_spec *s);
// Indices one GPU thread takes at a time: DHX_PLAN_WIDE for the f32 kernels whose body is
// written for any lane count and touches memory only at its index (elementwise chains whose
// broadcast moduli are multiples of 4, AdamW), else 1. Their PTX runs a 4-lane body with
// 16-byte loads and stores wherever the pointers allow (kernel_entry.c).
uint32_t dhx_kernel_indices_per_thread(const dhx_kernel_spec *s);
// Bit a set: pointer argument a is accessed at the index by a wide kernel's body, so it must
// be 16-byte aligned for the wide path (0 when the kernel is not wide).
uint32_t dhx_kernel_wide_pointers(const dhx_kernel_spec *s);
// Number of DHX_EW_MOD inputs (0 for other kinds).
int dhx_kernel_nmod(const dhx_kernel_spec *s);
// The bytes of a spec that define its kernel (no padding, only fields that matter); equal
// bytes ⇔ same kernel. Returns the length (<= DHX_SPEC_BYTES_MAX).
#define DHX_SPEC_BYTES_MAX 640
size_t dhx_kernel_spec_bytes(const dhx_kernel_spec *s, uint8_t *buf);

// Emitters (kernel_*.c).
void dhx_emit_embed_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_embed_bwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_layernorm_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_layernorm_bwd_dx(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_layernorm_bwd_dparams(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_softmax_causal_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_softmax_causal_bwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_xent_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_xent_bwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_adamw(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_sumsq(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_grad_norm(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_attn_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_attn_bwd_dot(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_attn_bwd_dq(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_attn_bwd_dkv(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_colsum(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_rmsnorm_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_rmsnorm_bwd_dx(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_rmsnorm_bwd_dgamma(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_rope(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_permute(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_eltwise(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_embed_vp_fwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_embed_vp_bwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_xent_vp_stats(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_xent_vp_combine(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_xent_vp_bwd(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_quantize(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_dequantize(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_hadamard32(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_hadamard_quantize(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_dequantize_hadamard(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_dequantize_reduce_quantize(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);
void dhx_emit_dequantize_reduce_hadamard(kb *, const dhx_kernel_spec *, LLVMValueRef *, LLVMValueRef, LLVMValueRef *);

// Vocabulary shards (kernel_embed.c): the row of global id `id` (i64) in the shard holding
// ids [lo, lo + n), with *ok = whether it is there (then the row, else 0). Exact for any i64
// id, lo and n, so that no id of another shard reaches memory: id >= lo, and id - lo (which
// wraps to a negative value when it exceeds INT64_MAX) in [0, n).
LLVMValueRef dhx_shard_row(kb *k, LLVMValueRef id, LLVMValueRef lo, LLVMValueRef n,
                           LLVMValueRef *ok);

// ---- kernel_entry.c ----
typedef enum { DHX_TGT_LLVM, DHX_TGT_HOST, DHX_TGT_PTX } dhx_target;

// Bytes per row step of a host column body (see dhx_kdesc.columns): two cache lines.
#define DHX_HOST_COLUMN_BYTES 128

// The body function "dhxb_NAME" (internal, always inlined): (args..., i64 idx, i64 mod_idx...).
// lanes > 1 gives the column-vectorised variant "dhxb_NAME_xLANES"; row_threads > 1 (PTX of
// a DHX_KS_ROWS kernel only) the body of one lane of a warp sharing the row (ir_rows.c).
LLVMValueRef dhx_build_body(kb *k, const dhx_kernel_spec *s, const char *name, unsigned lanes,
                            unsigned row_threads);
// "dhxk_NAME"(const dhx_slot *args, i64 begin, i64 end): unpacks the slots and runs the body
// over [begin, end). body_vec (may be NULL) is the lanes-wide column body.
LLVMValueRef dhx_build_host_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                  LLVMValueRef body, LLVMValueRef body_vec, unsigned lanes);
// The constant string "dhxabi_NAME" beside the host entry: the kernel table entry, encoded by
// dhx_kernel_abi_encode (runtime/plan_util.h), which dhxrun checks plan.bin against. NULL when
// the entry does not encode.
LLVMValueRef dhx_build_host_abi(kb *k, const dhx_plan_kernel *entry);
// The 4-lane body "dhxb_NAME_w4" of a wide kernel (dhx_kernel_indices_per_thread), its
// vector loads and stores 16-byte aligned; NULL for other kernels.
LLVMValueRef dhx_build_wide_body(kb *k, const dhx_kernel_spec *s, const char *name);
// PTX kernel "NAME"(params in addrspace(1)..., i64 n): a grid-stride loop over the index
// space, an index per thread (four with `wide`, where the pointers are 16-byte aligned), or a
// row per warp for a DHX_KS_ROWS kernel (body built with row_threads = DHX_PLAN_WARP).
LLVMValueRef dhx_build_ptx_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                 LLVMValueRef body, LLVMValueRef wide);
// The host's emulation of that PTX entry, for kernels of one thread per index:
// "dhxg_NAME"(const dhx_slot *args, i64 n, i64 ntid, i64 nctaid, i64 ctaid_begin,
// i64 ctaid_end) runs, one after the other, every thread of blocks [ctaid_begin, ctaid_end) of
// a grid of nctaid blocks of ntid threads, through the same thread code as the PTX. The
// emulated driver of the GPU tests launches it, so the grid-stride loop, the alignment test
// and the wide path run on machines without a GPU. NULL for row kernels (their lanes
// exchange values through warp shuffles, which the host cannot run a thread at a time).
LLVMValueRef dhx_build_grid_entry(kb *k, const dhx_kernel_spec *s, const char *name,
                                  LLVMValueRef body, LLVMValueRef wide);

// Writes `path` (a file named `ext`, created with `mode`) from mod on tm: sets mod's triple
// and data layout, then copies the file from the kernel cache (kernel_cache.c,
// DHX_KERNEL_CACHE) where it holds one for this module and target, else runs `emit` (which
// optimises mod) and keeps what it wrote there.
typedef bool (*dhx_emit_file_fn)(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *path,
                                 char *err, size_t errlen);
bool dhx_codegen_emit_file(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *ext,
                           unsigned mode, dhx_emit_file_fn emit, const char *path, char *err,
                           size_t errlen);

// ---- codegen.c ----
// A fresh module in ctx holding every kernel of cg for `target` (no triple or data layout
// set). IR that does not verify is an internal error (ice.h): the kernels come from validated
// specs.
LLVMModuleRef dhx_codegen_build_module(const dhx_codegen *cg, LLVMContextRef ctx,
                                       dhx_target target);
// Runs an LLVM pass pipeline ("default<O3>") on a module with a target machine.
bool dhx_codegen_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, char *err, size_t errlen);
// Formats into err (snprintf-style) and returns false.
bool dhx_cg_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
