// target_ptx.c — the kernels as PTX for NVIDIA GPUs (nvptx64-nvidia-cuda), one entry per
// kernel, from the same bodies as the host code.
//
// The PTX ISA version is pinned per architecture to the lowest one that supports it (as
// Halide does): sm_80 → PTX 7.0, sm_86 → 7.1, sm_89/sm_90 → 7.8. That is what LLVM 19 can
// emit and what both older drivers and CUDA 13's ptxas accept.
#include <stdio.h>
#include <string.h>

#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "ice.h"
#include "codegen_internal.h"

static const struct {
  const char *sm, *features;
} PTX_ISA[] = {
    {"sm_80", "+ptx70"}, {"sm_86", "+ptx71"}, {"sm_87", "+ptx74"},
    {"sm_89", "+ptx78"}, {"sm_90", "+ptx78"},
};

#define PTX_TRIPLE "nvptx64-nvidia-cuda"

static LLVMTargetMachineRef ptx_machine(const char *sm, char *err, size_t errlen) {
  const char *features = NULL;
  for (size_t i = 0; i < sizeof PTX_ISA / sizeof PTX_ISA[0]; i++)
    if (strcmp(sm, PTX_ISA[i].sm) == 0) features = PTX_ISA[i].features;
  if (!features) {
    dhx_cg_fail(err, errlen, "unsupported GPU architecture '%s' (sm_80, sm_86, sm_87, sm_89, sm_90)",
                sm);
    return NULL;
  }
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
  LLVMTargetRef t;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(PTX_TRIPLE, &t, &msg)) {
    dhx_cg_fail(err, errlen, "this LLVM has no NVPTX target: %s", msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return NULL;
  }
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(t, PTX_TRIPLE, sm, features,
                                                    LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                                    LLVMCodeModelDefault);
  if (!tm) dhx_cg_fail(err, errlen, "cannot create an NVPTX target machine for %s", sm);
  return tm;
}

// Optimises and emits mod (its triple and data layout set); writes the PTX to path.
static bool emit(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *path, char *err,
                 size_t errlen) {
  if (!dhx_codegen_optimize(mod, tm, err, errlen)) return false;
  char *msg = NULL;
  LLVMMemoryBufferRef buf = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMAssemblyFile, &msg, &buf)) {
    dhx_cg_fail(err, errlen, "LLVM could not emit PTX: %s", msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  const char *text = LLVMGetBufferStart(buf);
  size_t size = LLVMGetBufferSize(buf);
  bool ok = true;
  // Every function a kernel uses is defined in the module; a declaration left over (a libm
  // call) would only fail later, in ptxas or at load time.
  static const char ext[] = ".extern .func";
  for (size_t i = 0; i + sizeof ext - 1 <= size; i++)
    if (memcmp(text + i, ext, sizeof ext - 1) == 0) DHX_ICE("the PTX calls an external function");
  FILE *f = fopen(path, "wb");
  if (!f) ok = dhx_cg_fail(err, errlen, "cannot write %s", path);
  if (f) {
    if (fwrite(text, 1, size, f) != size) ok = dhx_cg_fail(err, errlen, "cannot write %s", path);
    if (fclose(f) != 0 && ok) ok = dhx_cg_fail(err, errlen, "cannot write %s", path);
  }
  LLVMDisposeMemoryBuffer(buf);
  return ok;
}

bool dhx_codegen_emit_ptx(dhx_codegen *cg, const char *sm, const char *path, char *err,
                          size_t errlen) {
  if (!cg || !sm || !path) return dhx_cg_fail(err, errlen, "no code generator, sm or path");
  LLVMTargetMachineRef tm = ptx_machine(sm, err, errlen);
  if (!tm) return false;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = dhx_codegen_build_module(cg, ctx, DHX_TGT_PTX);
  bool ok = dhx_codegen_emit_file(tm, mod, "ptx", 0644, emit, path, err, errlen);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return ok;
}
