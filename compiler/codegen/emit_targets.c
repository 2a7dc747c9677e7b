// emit_targets.c — the host object and the PTX of every architecture at once, one thread each.
//
// Each target builds its own module in its own LLVMContext from the read-only kernel specs
// (codegen.c), so they share nothing but LLVM's target registry, which is filled here before
// the threads start (its registration is not meant to race).
#include <pthread.h>
#include <stdio.h>

#include <llvm-c/Target.h>

#include "codegen_internal.h"

static void *run_target(void *arg) {
  dhx_codegen_target *t = arg;
  t->ok = t->sm ? dhx_codegen_emit_ptx(t->cg, t->sm, t->path, t->err, sizeof t->err)
                : dhx_codegen_emit_host_so(t->cg, t->path, t->err, sizeof t->err);
  return NULL;
}

bool dhx_codegen_emit_targets(dhx_codegen_target *targets, int n) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
  pthread_t tid[DHX_CODEGEN_MAX_TARGETS];
  bool started[DHX_CODEGEN_MAX_TARGETS] = {false};
  for (int i = 0; i < n && i < DHX_CODEGEN_MAX_TARGETS; i++)
    started[i] = pthread_create(&tid[i], NULL, run_target, &targets[i]) == 0;
  bool ok = true;
  for (int i = 0; i < n && i < DHX_CODEGEN_MAX_TARGETS; i++) {
    if (started[i]) pthread_join(tid[i], NULL);
    else run_target(&targets[i]);  // no thread to spare: in line
    ok &= targets[i].ok;
  }
  return ok && n <= DHX_CODEGEN_MAX_TARGETS;
}
