// The op-list verifier (compiler/graph/verify_ops.c): a well-formed list passes, and each
// broken one is an internal error (exit 70) that names the pass and what is wrong.
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lower.h"
#include "testlib.h"

// A graph with x [4, 8], w [8, 8], y [4, 8] and one GEMM y = x w on stream 0.
static void build(dhx_graph *g) {
  dhx_graph_init(g);
  g->micro_batch = 1;
  g->seq = 4;
  int64_t s48[2] = {4, 8}, s88[2] = {8, 8};
  int x = dhx_tensor_new(g, "x", DHX_T_ACT, DHX_F32, 2, s48);
  int w = dhx_tensor_new(g, "w", DHX_T_PARAM, DHX_F32, 2, s88);
  int y = dhx_tensor_new(g, "y", DHX_T_ACT, DHX_F32, 2, s48);
  dhx_emit_gemm(&g->prog[DHX_PROG_MICRO], "y = x w", false, false, 4, 8, 8, dhx_buf(x, 0), 8,
                dhx_buf(w, 0), 8, dhx_buf(y, 0), 8, 0.0);
}

// Runs the verifier on g's MICRO in a child; returns its stderr and whether it exited 70.
static bool verify_fails(dhx_graph *g, bool placed, char *out, size_t n) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  fflush(stdout);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    dhx_verify_ops(g, &g->prog[DHX_PROG_MICRO], "the test pass", placed);
    _exit(0);
  }
  close(fds[1]);
  size_t len = 0;
  for (ssize_t r; (r = read(fds[0], out + len, n - 1 - len)) > 0;) len += (size_t)r;
  out[len] = 0;
  close(fds[0]);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) && WEXITSTATUS(status) == 70;
}

static void expect_failure(dhx_graph *g, bool placed, const char *want) {
  char got[4096];
  CHECK(verify_fails(g, placed, got, sizeof got));
  if (!strstr(got, "after the test pass") || !strstr(got, want)) {
    fprintf(stderr, "expected '%s' in:\n%s", want, got);
    CHECK(false);
  }
  dhx_graph_free(g);
}

static void accepts_a_well_formed_list(void) {
  dhx_graph g;
  build(&g);
  char got[4096];
  CHECK(!verify_fails(&g, false, got, sizeof got));
  dhx_graph_free(&g);
}

static void rejects_a_gemm_past_its_tensor(void) {
  dhx_graph g;
  build(&g);
  dhx_plan_gemm taller = *g.prog[DHX_PROG_MICRO].ops[0].gemm;
  taller.m = 5;  // one row more than y has
  g.prog[DHX_PROG_MICRO].ops[0].gemm = dhx_intern_gemm(&taller);
  expect_failure(&g, false, "A reaches elements [0, 40) of 'x', which has 32");
}

static void rejects_a_missing_tensor(void) {
  dhx_graph g;
  build(&g);
  g.prog[DHX_PROG_MICRO].ops[0].args[1].tensor = 99;
  expect_failure(&g, false, "B names tensor 99 of 3");
}

static void rejects_a_wait_without_record(void) {
  dhx_graph g;
  build(&g);
  dhx_oplist *l = &g.prog[DHX_PROG_MICRO];
  dhx_lop *w = dhx_lop_push(l, DHX_L_WAIT, 0, "wait");
  w->event = 0;
  l->nevents = 1;
  expect_failure(&g, false, "WAIT on event 0, which no RECORD records");
}

static void rejects_kernel_arguments_off_the_signature(void) {
  dhx_graph g;
  build(&g);
  dhx_operand a[] = {dhx_buf(0, 0), dhx_buf(1, 0), dhx_f64(1.0), dhx_i64(16)};  // f for i64
  dhx_emit_kernel(&g.prog[DHX_PROG_MICRO], DHX_K_SUMSQ, 1, "sum of squares", 4, a);
  expect_failure(&g, false, "argument 2 does not match the kernel's signature");
}

// A fused elementwise op without its spec, and a catalogue kernel with one.
static void rejects_a_kernel_without_its_fused_spec(void) {
  dhx_graph g;
  build(&g);
  dhx_ewb b;
  dhx_ewb_init(&b);
  dhx_ewb_store(&b, dhx_ewb_load(&b, dhx_buf(0, 0), 0), dhx_buf(2, 0), false);  // y = x
  dhx_lop *op = dhx_emit_ew(&g.prog[DHX_PROG_MICRO], &b, 32, "copy");
  const dhx_ew_spec *spec = op->kspec.ew;
  char got[4096];
  CHECK(!verify_fails(&g, false, got, sizeof got));
  op->kspec.ew = NULL;
  expect_failure(&g, false, "without a fused spec");  // (frees g)
  build(&g);
  dhx_operand a[] = {dhx_buf(0, 0), dhx_buf(1, 0), dhx_i64(4), dhx_i64(8)};
  dhx_emit_kernel(&g.prog[DHX_PROG_MICRO], DHX_K_SUMSQ, 1, "sum of squares", 4, a)->kspec.ew =
      spec;
  expect_failure(&g, false, "with a fused spec");
}

static void rejects_an_unknown_communicator_role(void) {
  dhx_graph g;
  build(&g);
  dhx_emit_allreduce(&g.prog[DHX_PROG_MICRO], 1, DHX_COMM_ROLES, 2, 32, "sum");
  expect_failure(&g, false, "communicator role");
}

// An all-to-all of x into y (32 elements each) is well formed; one past its tensors, or in
// place, is not.
static void checks_an_all_to_all(void) {
  dhx_graph g;
  build(&g);
  dhx_emit_all_to_all(&g.prog[DHX_PROG_MICRO], 1, DHX_COMM_DP, 0, 2, 32, "swap blocks");
  char got[4096];
  CHECK(!verify_fails(&g, false, got, sizeof got));
  g.prog[DHX_PROG_MICRO].ops[1].args[2].i = 40;
  CHECK(verify_fails(&g, false, got, sizeof got) && strstr(got, "of 'x', which has 32"));
  g.prog[DHX_PROG_MICRO].ops[1].args[2].i = 32;
  g.prog[DHX_PROG_MICRO].ops[1].args[1].tensor = 0;
  expect_failure(&g, false, "all-to-all in place");
}

static void rejects_an_unplaced_tensor_after_memory_planning(void) {
  dhx_graph g;
  build(&g);
  for (int t = 0; t < g.ntensors; t++) g.tensors[t].offset = 64 * t;
  g.tensors[2].offset = -1;
  expect_failure(&g, true, "C 'y' has no place in the arena");
}

int main(int argc, char **argv) {
  static const tl_test tests[] = {
      {"verify_ops_accepts_a_well_formed_list", accepts_a_well_formed_list},
      {"verify_ops_rejects_a_gemm_past_its_tensor", rejects_a_gemm_past_its_tensor},
      {"verify_ops_rejects_a_missing_tensor", rejects_a_missing_tensor},
      {"verify_ops_rejects_a_wait_without_record", rejects_a_wait_without_record},
      {"verify_ops_rejects_kernel_arguments_off_the_signature",
       rejects_kernel_arguments_off_the_signature},
      {"verify_ops_rejects_a_kernel_without_its_fused_spec",
       rejects_a_kernel_without_its_fused_spec},
      {"verify_ops_rejects_an_unknown_communicator_role", rejects_an_unknown_communicator_role},
      {"verify_ops_checks_an_all_to_all", checks_an_all_to_all},
      {"verify_ops_rejects_an_unplaced_tensor_after_memory_planning",
       rejects_an_unplaced_tensor_after_memory_planning},
  };
  return tl_main("test_verify_ops", tests, sizeof tests / sizeof tests[0], argc, argv);
}
