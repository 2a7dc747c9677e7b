// test_no_alias_check.c — the host loops of elementwise kernels vectorize without a runtime
// alias check, so a kernel that runs in place (its output over its input, as the fused bias +
// GELU of a tensor-parallel MLP does) takes the vector path. A check that fails in place sends
// it to the scalar loop, which computes the same numbers 8-12x slower: no correctness test can
// see it. This builds the kernels' host module, optimizes it as dhxc does, and requires that no
// host entry has a "vector.memcheck" block (the loop vectorizer's runtime alias check).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "cg_test.h"
#include "codegen_internal.h"

static LLVMTargetMachineRef host_machine(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName(),
       *feat = LLVMGetHostCPUFeatures(), *msg = NULL;
  LLVMTargetRef t;
  CHECK(!LLVMGetTargetFromTriple(triple, &t, &msg), "no target for %s", triple);
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(t, triple, cpu, feat,
                                                    LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                                    LLVMCodeModelDefault);
  CHECK(tm != NULL, "no target machine");
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  return tm;
}

int main(void) {
  dhx_ktype f = DHX_KT_F32;
  dhx_kernel_spec specs[] = {spec_bias_gelu(f, 512), spec_bias_gelu(f, 768), spec_pos_add(f, 1024),
                             spec_gelu_grad(f, false), spec_gelu_grad(f, true), spec_acc_add(f)};
  size_t n = sizeof specs / sizeof specs[0];
  cgt t;
  cgt_init(&t);
  for (size_t i = 0; i < n; i++) cgt_add(&t, &specs[i]);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = dhx_codegen_build_module(t.cg, ctx, DHX_TGT_HOST);
  LLVMTargetMachineRef tm = host_machine();
  char err[512];
  CHECK(dhx_codegen_optimize(mod, tm, err, sizeof err), "%s", err);
  int checked = 0, bad = 0;
  for (size_t i = 0; i < n; i++) {
    char name[DHX_NAME_MAX], entry[DHX_NAME_MAX + 8];
    CHECK(dhx_kernel_name(&specs[i], name, sizeof name), "name");
    snprintf(entry, sizeof entry, "dhxk_%s", name);
    LLVMValueRef fn = LLVMGetNamedFunction(mod, entry);
    CHECK(fn != NULL, "no host entry %s", entry);
    int memchecks = 0;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb)) {
      const char *b = LLVMGetBasicBlockName(bb);
      memchecks += b && strstr(b, "memcheck") != NULL;
    }
    printf("  %s %-40s %d runtime alias checks\n", memchecks ? "FAIL" : "ok  ", entry, memchecks);
    bad += memchecks > 0;
    checked++;
  }
  LLVMDisposeModule(mod);
  LLVMDisposeTargetMachine(tm);
  LLVMContextDispose(ctx);
  cgt_done(&t);
  CHECK(checked == (int)n && bad == 0, "%d kernels vectorize behind a runtime alias check", bad);
  return 0;
}
