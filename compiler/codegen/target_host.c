// target_host.c — the kernels as a shared object for the CPU backend: IR for the host
// triple and CPU (its features, so the vectoriser uses AVX2/AVX-512 where present), O3, an
// object file, then `cc -shared` to link kernels.so.
//
// DHX_CODEGEN_CPU / DHX_CODEGEN_FEATURES override the CPU name and feature string, for plans
// built on one machine and run on another (e.g. DHX_CODEGEN_CPU=x86-64-v3
// DHX_CODEGEN_FEATURES=""); by default the object is tuned for, and needs, this host.
// DHX_CODEGEN_VECTOR_WIDTH sets LLVM's preferred vector width (see set_vector_width).
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "codegen_internal.h"

extern char **environ;

static LLVMTargetMachineRef host_machine(char *err, size_t errlen) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  char *triple = LLVMGetDefaultTargetTriple();
  const char *cpu_env = getenv("DHX_CODEGEN_CPU"), *feat_env = getenv("DHX_CODEGEN_FEATURES");
  char *cpu = cpu_env ? NULL : LLVMGetHostCPUName();
  char *feat = feat_env ? NULL : LLVMGetHostCPUFeatures();
  LLVMTargetRef t;
  char *msg = NULL;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    dhx_cg_fail(err, errlen, "no LLVM target for host triple %s: %s", triple, msg ? msg : "?");
  } else {
    tm = LLVMCreateTargetMachine(t, triple, cpu_env ? cpu_env : cpu, feat_env ? feat_env : feat,
                                 LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
    if (!tm) dhx_cg_fail(err, errlen, "cannot create a target machine for %s", triple);
  }
  LLVMDisposeMessage(msg);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  return tm;
}

// Splits $CC (e.g. "ccache gcc") into argv words; "cc" when unset or empty.
static int cc_words(char *buf, size_t len, char **argv, int max) {
  const char *cc = getenv("CC");
  if (!cc || !*cc) cc = "cc";
  snprintf(buf, len, "%s", cc);
  int n = 0;
  for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w && n < max;
       w = strtok_r(NULL, " \t", &save))
    argv[n++] = w;
  return n;
}

// Runs `$CC -shared -o so obj`; on failure err gets the compiler's message.
static bool link_shared(const char *obj, const char *so, char *err, size_t errlen) {
  char ccbuf[512];
  char *argv[16];
  int n = cc_words(ccbuf, sizeof ccbuf, argv, 10);
  if (n == 0) return dhx_cg_fail(err, errlen, "CC is empty");
  argv[n++] = "-shared";
  argv[n++] = "-o";
  argv[n++] = (char *)so;
  argv[n++] = (char *)obj;
  argv[n] = NULL;

  int pipefd[2];
  if (pipe(pipefd) != 0) return dhx_cg_fail(err, errlen, "pipe: %s", strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&fa, pipefd[1]);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (rc != 0) {
    close(pipefd[0]);
    return dhx_cg_fail(err, errlen, "cannot run %s: %s", argv[0], strerror(rc));
  }
  char out[1024];
  size_t got = 0;
  for (;;) {
    char tmp[512];
    ssize_t r = read(pipefd[0], tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    size_t take = (size_t)r < sizeof out - 1 - got ? (size_t)r : sizeof out - 1 - got;
    memcpy(out + got, tmp, take);
    got += take;
  }
  out[got] = 0;
  close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return dhx_cg_fail(err, errlen, "linking %s with %s failed: %s", so, argv[0],
                       got ? out : "(no output)");
  return true;
}

// LLVM's tuning for Intel server CPUs prefers 256-bit vectors even where AVX-512 exists (to
// avoid lowering the clock). The kernels here are dominated by exp/GELU arithmetic, the BLAS
// next to them runs 512-bit code anyway, and 512-bit vectors measured ~1.5x faster on GELU,
// softmax and cross-entropy: use them when the CPU has AVX-512F, unless
// DHX_CODEGEN_VECTOR_WIDTH (e.g. 256) says otherwise.
static void set_vector_width(LLVMContextRef ctx, LLVMModuleRef mod, LLVMTargetMachineRef tm) {
  const char *w = getenv("DHX_CODEGEN_VECTOR_WIDTH");
  char *feat = LLVMGetTargetMachineFeatureString(tm);
  if (!w || !*w) w = feat && strstr(feat, "+avx512f") ? "512" : NULL;
  if (w) {
    LLVMAttributeRef a = LLVMCreateStringAttribute(ctx, "prefer-vector-width", 19, w,
                                                   (unsigned)strlen(w));
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
      if (!LLVMIsDeclaration(f)) LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, a);
  }
  LLVMDisposeMessage(feat);
}

// Optimises mod (its triple and data layout set) for tm, writes it to a temporary object and
// links so_path from it.
static bool compile_and_link(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *so_path,
                             char *err, size_t errlen) {
  if (!dhx_codegen_optimize(mod, tm, err, errlen)) return false;

  const char *tmpdir = getenv("TMPDIR");
  char obj[DHX_PATH_MAX];
  snprintf(obj, sizeof obj, "%s/dhx-kernels-XXXXXX.o", tmpdir && *tmpdir ? tmpdir : "/tmp");
  int fd = mkstemps(obj, 2);
  if (fd < 0) return dhx_cg_fail(err, errlen, "cannot create %s: %s", obj, strerror(errno));
  close(fd);
  char *msg = NULL;
  bool ok;
  if (LLVMTargetMachineEmitToFile(tm, mod, obj, LLVMObjectFile, &msg))
    ok = dhx_cg_fail(err, errlen, "LLVM could not emit the host object: %s", msg ? msg : "?");
  else
    ok = link_shared(obj, so_path, err, errlen);
  LLVMDisposeMessage(msg);
  unlink(obj);
  return ok;
}

bool dhx_codegen_emit_host_so(dhx_codegen *cg, const char *so_path, char *err, size_t errlen) {
  if (!cg || !so_path) return dhx_cg_fail(err, errlen, "no code generator or path");
  LLVMTargetMachineRef tm = host_machine(err, errlen);
  if (!tm) return false;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = dhx_codegen_build_module(cg, ctx, DHX_TGT_HOST);
  set_vector_width(ctx, mod, tm);
  bool ok = dhx_codegen_emit_file(tm, mod, "so", 0755, compile_and_link, so_path, err, errlen);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return ok;
}
