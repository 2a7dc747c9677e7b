// codegen.c — the kernel table a plan refers to, and building one LLVM module of all its
// kernels for a target (target_host.c and target_ptx.c emit it; the .ll is written here). The
// host module also carries each kernel's table entry as a string (dhxabi_NAME), so that dhxrun
// can check a plan.bin against the kernels.so it came with.
//
// Kernels are kept as specs, not IR: every emission builds its module afresh in its own
// LLVMContext from the same builders, so the host object, the PTX and the .ll always agree
// and no LLVM state outlives a call.
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "ice.h"
#include "codegen_internal.h"

typedef struct cg_kernel {
  dhx_kernel_spec spec;
  char name[DHX_NAME_MAX];
  uint8_t bytes[DHX_SPEC_BYTES_MAX];
  size_t nbytes;
} cg_kernel;

struct dhx_codegen {
  int n, cap;
  cg_kernel *k;
  char error[256];
};

dhx_codegen *dhx_codegen_new(void) { return calloc(1, sizeof(dhx_codegen)); }

void dhx_codegen_free(dhx_codegen *cg) {
  if (!cg) return;
  free(cg->k);
  free(cg);
}

int dhx_codegen_count(const dhx_codegen *cg) { return cg ? cg->n : 0; }

bool dhx_codegen_merge(dhx_codegen *into, const dhx_codegen *from, int *map) {
  for (int i = 0; i < dhx_codegen_count(from); i++)
    if ((map[i] = dhx_codegen_add(into, &from->k[i].spec)) < 0) return false;
  return true;
}

const char *dhx_codegen_error(const dhx_codegen *cg) { return cg ? cg->error : ""; }

int dhx_codegen_add(dhx_codegen *cg, const dhx_kernel_spec *spec) {
  if (!cg) return -1;
  cg->error[0] = 0;
  if (!dhx_kernel_spec_valid(spec, cg->error, sizeof cg->error)) return -1;
  cg_kernel k;
  memset(&k, 0, sizeof k);
  k.spec.kind = spec->kind;
  k.spec.type = spec->type;
  k.spec.bf16 = spec->bf16;  // in the name's suffix, so equal names have equal masks
  if (spec->kind == DHX_K_ELTWISE) k.spec.ew = spec->ew;  // other kinds: ew stays zeroed
  if (!dhx_kernel_name(&k.spec, k.name, sizeof k.name)) {
    dhx_cg_fail(cg->error, sizeof cg->error, "kernel name too long");
    return -1;
  }
  k.nbytes = dhx_kernel_spec_bytes(&k.spec, k.bytes);
  for (int i = 0; i < cg->n; i++) {
    if (strcmp(cg->k[i].name, k.name) != 0) continue;
    if (cg->k[i].nbytes == k.nbytes && memcmp(cg->k[i].bytes, k.bytes, k.nbytes) == 0) return i;
    // Two different fused specs with the same 64-bit hash: refuse rather than merge them.
    dhx_cg_fail(cg->error, sizeof cg->error, "kernel name collision on %s", k.name);
    return -1;
  }
  if (cg->n == cg->cap) {
    int cap = cg->cap ? cg->cap * 2 : 16;
    cg_kernel *nk = realloc(cg->k, sizeof(cg_kernel) * (size_t)cap);
    if (!nk) {
      dhx_cg_fail(cg->error, sizeof cg->error, "out of memory");
      return -1;
    }
    cg->k = nk;
    cg->cap = cap;
  }
  cg->k[cg->n] = k;
  return cg->n++;
}

void dhx_codegen_table_entry(const dhx_codegen *cg, int i, dhx_plan_kernel *out) {
  memset(out, 0, sizeof *out);
  if (!cg || i < 0 || i >= cg->n) return;
  memcpy(out->name, cg->k[i].name, sizeof out->name);
  int n = dhx_kernel_signature(&cg->k[i].spec, out->arg_types);
  out->nargs = n < 0 ? 0 : (uint32_t)n;
  out->threads_per_index = dhx_kernel_threads_per_index(&cg->k[i].spec);
  out->indices_per_thread = dhx_kernel_indices_per_thread(&cg->k[i].spec);
  dhx_kernel_access(&cg->k[i].spec, out->access);
}

// The module starts from parsed text because the C API cannot create the one thing needed
// here: a distinct empty metadata node, which is what an access group (the tag that
// llvm.loop.parallel_accesses refers to) must be.
// Kinds whose index is a column: the host builds a lane-vectorised body beside the scalar one.
static bool column_kind(dhx_kernel_kind kind) {
  dhx_kshape shape = dhx_kdesc_of(kind)->shape;
  return shape == DHX_KS_COLUMNS || shape == DHX_KS_COLUMN_SUMS;
}

static LLVMModuleRef new_module(LLVMContextRef ctx, LLVMMetadataRef *access_group) {
  static const char src[] = "!dhx.access_group = !{!0}\n!0 = distinct !{}\n";
  LLVMMemoryBufferRef buf =
      LLVMCreateMemoryBufferWithMemoryRangeCopy(src, sizeof src - 1, "dhx_kernels");
  LLVMModuleRef mod = NULL;
  char *msg = NULL;
  if (LLVMParseIRInContext(ctx, buf, &mod, &msg))  // takes ownership of buf
    DHX_ICE("the module template does not parse: %s", msg ? msg : "?");
  LLVMValueRef op = NULL;
  LLVMGetNamedMetadataOperands(mod, "dhx.access_group", &op);
  *access_group = LLVMValueAsMetadata(op);
  return mod;
}

LLVMModuleRef dhx_codegen_build_module(const dhx_codegen *cg, LLVMContextRef ctx,
                                       dhx_target target) {
  LLVMMetadataRef ag;
  LLVMModuleRef mod = new_module(ctx, &ag);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  // The host's emulation of the GPU's thread code (dhx_build_grid_entry) is for the GPU tests'
  // emulated driver; the CPU backend never calls it, so it is built only when asked.
  const char *ge = getenv("DHX_CODEGEN_GRID_ENTRIES");
  bool grid_entries = ge && strcmp(ge, "1") == 0;
  for (int i = 0; i < cg->n; i++) {
    const cg_kernel *ck = &cg->k[i];
    kb k;
    kb_init(&k, ctx, mod, b, ag, ck->spec.type);
    unsigned row_threads = target == DHX_TGT_PTX ? dhx_kernel_threads_per_index(&ck->spec) : 1;
    LLVMValueRef body = dhx_build_body(&k, &ck->spec, ck->name, 1, row_threads);
    k.trap_misaligned = target != DHX_TGT_PTX;  // the host emulates the GPU's fault
    LLVMValueRef wide = dhx_build_wide_body(&k, &ck->spec, ck->name);
    k.trap_misaligned = false;
    if (target == DHX_TGT_PTX) {
      dhx_build_ptx_entry(&k, &ck->spec, ck->name, body, wide);
    } else {
      unsigned lanes = DHX_HOST_COLUMN_BYTES / (ck->spec.type == DHX_KT_F64 ? 8u : 4u);
      LLVMValueRef vec =
          column_kind(ck->spec.kind) ? dhx_build_body(&k, &ck->spec, ck->name, lanes, 1) : NULL;
      dhx_build_host_entry(&k, &ck->spec, ck->name, body, vec, lanes);
      if (grid_entries) dhx_build_grid_entry(&k, &ck->spec, ck->name, body, wide);
      dhx_plan_kernel entry;
      dhx_codegen_table_entry(cg, i, &entry);
      if (!dhx_build_host_abi(&k, &entry))
        DHX_ICE("kernel %s: its signature does not encode", ck->name);
    }
  }
  LLVMDisposeBuilder(b);
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg))
    DHX_ICE("the generated IR does not verify: %s", msg ? msg : "?");
  LLVMDisposeMessage(msg);
  return mod;
}

// Inlining a body with noalias pointers into a host loop adds a noalias scope declaration to
// each iteration. The declaration counts as touching memory and the inliner gives it no access
// group, so the loop no longer counts as annotated parallel and LLVM vectorises it behind a
// runtime alias check, which fails when the kernel runs in place: a fused bias + GELU ran
// scalar, 8x slower. A declaration touches no data, so it joins the module's access group.
static void tag_scope_declarations(LLVMModuleRef mod) {
  LLVMValueRef group = NULL;
  if (LLVMGetNamedMetadataNumOperands(mod, "dhx.access_group") != 1) return;
  LLVMGetNamedMetadataOperands(mod, "dhx.access_group", &group);
  LLVMContextRef ctx = LLVMGetModuleContext(mod);
  unsigned kind = LLVMGetMDKindIDInContext(ctx, "llvm.access.group", 17);
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
      for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
        if (LLVMGetInstructionOpcode(in) != LLVMCall) continue;
        LLVMValueRef callee = LLVMGetCalledValue(in);
        size_t len = 0;
        const char *name = callee ? LLVMGetValueName2(callee, &len) : "";
        if (strcmp(name, "llvm.experimental.noalias.scope.decl") == 0)
          LLVMSetMetadata(in, kind, group);
      }
}

// Runs pipeline `passes` on mod; false with err (naming `what`) when LLVM refuses.
static bool run_passes(LLVMModuleRef mod, const char *passes, LLVMTargetMachineRef tm,
                       LLVMPassBuilderOptionsRef o, const char *what, char *err, size_t errlen) {
  LLVMErrorRef e = LLVMRunPasses(mod, passes, tm, o);
  LLVMDisposePassBuilderOptions(o);
  if (!e) return true;
  char *m = LLVMGetErrorMessage(e);
  dhx_cg_fail(err, errlen, "LLVM %s failed: %s", what, m);
  LLVMDisposeErrorMessage(m);
  return false;
}

bool dhx_codegen_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, char *err, size_t errlen) {
  // The bodies are inlined first, so that their scope declarations can be tagged.
  if (!run_passes(mod, "always-inline", tm, LLVMCreatePassBuilderOptions(), "inlining", err,
                  errlen))
    return false;
  tag_scope_declarations(mod);
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  // The C API's defaults leave SLP vectorisation off (clang turns it on at -O2 and up).
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
  return run_passes(mod, "default<O3>", tm, o, "optimisation", err, errlen);
}

bool dhx_codegen_emit_llvm(dhx_codegen *cg, const char *path, char *err, size_t errlen) {
  if (!cg || !path) return dhx_cg_fail(err, errlen, "no code generator or path");
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = dhx_codegen_build_module(cg, ctx, DHX_TGT_LLVM);
  bool ok = true;
  char *msg = NULL;
  if (LLVMPrintModuleToFile(mod, path, &msg))
    ok = dhx_cg_fail(err, errlen, "cannot write %s: %s", path, msg ? msg : "?");
  LLVMDisposeMessage(msg);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  return ok;
}
