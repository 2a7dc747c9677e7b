// kernels.h — the catalogue of generated kernels and the code generator's interface.
//
// Each kernel is described once (kernel_*.c build its body as LLVM IR for one index of its
// index space) and emitted for two targets from the same IR: x86-64 host code linked into
// kernels.so (runtime/kernel_abi.h: a loop over [begin, end)), and PTX for nvptx64 (one index
// per thread). Every kernel exists for f32 (what plans use) and f64 (what the finite-difference
// tests use). Dense matrix products are not kernels: they are GEMM instructions (BLAS).
//
// The catalogue itself (kinds, their arguments, fused elementwise specs) is the IR's
// (compiler/ir/kernel_spec.h): the op list names kernels, this layer builds them. The plan's
// kernel table entry is filled here too, so only the definitions include runtime/plan.h.
#ifndef DHX_KERNELS_H
#define DHX_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel_spec.h"
#include "plan_base.h"

struct dhx_plan_kernel;

// Canonical kernel name, e.g. "layernorm_fwd_f32"; fused kernels get a name derived from
// their spec ("ew_<hash>_f32") so equal specs share one kernel. Returns false if too long.
bool dhx_kernel_name(const dhx_kernel_spec *spec, char *buf, size_t len);
// Fills arg_types (dhx_karg_type) and returns the argument count (-1 for an invalid spec).
int dhx_kernel_signature(const dhx_kernel_spec *spec, uint32_t arg_types[DHX_MAX_ARGS]);
// Checks a spec: kind and type in range; for DHX_K_ELTWISE the counts within their limits
// (and outputs + inputs + scalars <= DHX_MAX_ARGS), operands in range and before their users,
// moduli >= 1. On failure fills err (may be NULL) and returns false.
// Whether the kernel writes through its argument j (a pointer the catalogue marks written).
bool dhx_kernel_arg_writes(const dhx_kernel_spec *spec, int j);
bool dhx_kernel_spec_valid(const dhx_kernel_spec *spec, char *err, size_t errlen);
// Mixed precision (dhx_kernel_spec.bf16), for a valid spec. Bit j set:
//   float_pointers: argument j points to floating data (may be bf16 in an f32 kernel);
//   f32_only: the kernel reads back what it wrote through argument j within one index, so
//   bf16 storage would round its running values: it must stay f32.
uint32_t dhx_kernel_float_pointers(const dhx_kernel_spec *s);
uint32_t dhx_kernel_f32_only(const dhx_kernel_spec *s);

// ---- code generator (codegen.c) -------------------------------------------------------------
typedef struct dhx_codegen dhx_codegen;

dhx_codegen *dhx_codegen_new(void);
void dhx_codegen_free(dhx_codegen *cg);
// Adds a kernel (deduplicated by name) and returns its index in the kernel table, or -1.
int dhx_codegen_add(dhx_codegen *cg, const dhx_kernel_spec *spec);
// Why the last dhx_codegen_add returned -1 (invalid spec, name collision); "" otherwise.
const char *dhx_codegen_error(const dhx_codegen *cg);
int dhx_codegen_count(const dhx_codegen *cg);
// Adds `from`'s kernels to `into` in from's order; map[i] (room for dhx_codegen_count(from))
// receives the index in `into` of from's kernel i. False if one cannot be added.
bool dhx_codegen_merge(dhx_codegen *into, const dhx_codegen *from, int *map);
// Fills a plan kernel-table entry for kernel i: name, signature and access descriptors.
void dhx_codegen_table_entry(const dhx_codegen *cg, int i, struct dhx_plan_kernel *out);
// Writes PTX for `sm` ("sm_80", "sm_90"; also sm_86, sm_87, sm_89) to `path`.
bool dhx_codegen_emit_ptx(dhx_codegen *cg, const char *sm, const char *path, char *err,
                          size_t errlen);
// Compiles the kernels for the host CPU (its features, O3, vectorised) into an object and
// links `so_path` with the system C compiler ($CC, else `cc`, `-shared`). The object needs
// this CPU's features; DHX_CODEGEN_CPU / DHX_CODEGEN_FEATURES / DHX_CODEGEN_VECTOR_WIDTH
// override them (target_host.c). With DHX_CODEGEN_GRID_ENTRIES=1 the library also holds
// dhxg_NAME, the host's emulation of each PTX entry's thread code (runtime/kernel_abi.h), for
// the GPU tests' emulated driver.
bool dhx_codegen_emit_host_so(dhx_codegen *cg, const char *so_path, char *err, size_t errlen);
// One output of dhx_codegen_emit_targets: PTX for `sm`, or the host library when sm is NULL.
#define DHX_CODEGEN_MAX_TARGETS 4
typedef struct dhx_codegen_target {
  dhx_codegen *cg;
  const char *sm;
  char path[4096];
  bool ok;
  char err[1024];
} dhx_codegen_target;
// Emits every target at once (a thread each); false when any failed (see each one's err).
bool dhx_codegen_emit_targets(dhx_codegen_target *targets, int n);
// Writes the textual LLVM IR of the (target-independent) kernels, for `dhxc --emit=llvm`.
bool dhx_codegen_emit_llvm(dhx_codegen *cg, const char *path, char *err, size_t errlen);

#endif
