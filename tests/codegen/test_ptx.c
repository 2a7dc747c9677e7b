// test_ptx.c — PTX of every kernel (f32, f64 and bf16-storage variants of every catalogue kind
// and the fused specs)
// is accepted by NVIDIA's assembler: `test_ptx SM PTXAS` emits kernels.ptx for SM, checks
// that each kernel is an .entry and that nothing external is called, and runs
// `PTXAS -arch=SM kernels.ptx -o kernels.cubin`.
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cg_test.h"

extern char **environ;

int main(int argc, char **argv) {
  CHECK(argc == 3, "usage: test_ptx SM PTXAS");
  const char *sm = argv[1], *ptxas = argv[2];
  cgt t;
  cgt_init(&t);
  cgt_add_all(&t, DHX_KT_F32);
  cgt_add_all(&t, DHX_KT_F64);
  cgt_add_all(&t, DHX_KT_BF16_MIXED);

  char ptx[400], cubin[400], err[1024] = "";
  snprintf(ptx, sizeof ptx, "%s/kernels_%s.ptx", t.dir, sm);
  snprintf(cubin, sizeof cubin, "%s/kernels_%s.cubin", t.dir, sm);
  CHECK(dhx_codegen_emit_ptx(t.cg, sm, ptx, err, sizeof err), "emit_ptx: %s", err);

  char *text = cgt_slurp(ptx);
  CHECK(strstr(text, ".extern") == NULL, "PTX declares an external symbol");
  char want[64];
  snprintf(want, sizeof want, ".target %s", sm);
  CHECK(strstr(text, want) != NULL, "PTX is not for %s", sm);
  for (int i = 0; i < dhx_codegen_count(t.cg); i++) {
    dhx_plan_kernel e;
    dhx_codegen_table_entry(t.cg, i, &e);
    char entry[DHX_NAME_MAX + 16];
    snprintf(entry, sizeof entry, ".entry %s(", e.name);
    CHECK(strstr(text, entry) != NULL, "no %s in the PTX", entry);
  }
  free(text);

  // The unsupported-architecture error is an error, not a crash.
  CHECK(!dhx_codegen_emit_ptx(t.cg, "sm_20", ptx, err, sizeof err), "sm_20 accepted");

  char arch[32];
  snprintf(arch, sizeof arch, "-arch=%s", sm);
  char *args[] = {(char *)ptxas, arch, ptx, "-o", cubin, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, ptxas, NULL, NULL, args, environ);
  CHECK(rc == 0, "cannot run %s: %s", ptxas, strerror(rc));
  int status;
  CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "ptxas rejected %s (kept for inspection)",
        ptx);
  printf("ptxas %s accepted %d kernels\n", arch, dhx_codegen_count(t.cg));
  unlink(ptx);
  unlink(cubin);
  cgt_done(&t);
  return 0;
}
