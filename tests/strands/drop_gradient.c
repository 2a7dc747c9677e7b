// drop_gradient: zeroes one gradient contribution in a compiled plan, to show that the strands
// parity test would catch a schedule that loses gradient work (as one published
// implementation once did while reporting speedups).
//
//   drop_gradient PLAN_DIR      rewrites PLAN_DIR/plan.bin
//
// In every rank's MICRO, the last GEMM that adds into a gradient buffer (beta = 1: the last
// micro-batch's contribution to a first-layer weight) gets alpha = 0: it still runs, on the
// same streams and events, but adds nothing.
#include <stdio.h>
#include <string.h>

#include "plan.h"

static int drop_one(dhx_plan *plan, dhx_plan_rank *r) {
  dhx_plan_program *p = &r->programs[DHX_PROG_MICRO];
  dhx_plan_instr *last = NULL;
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    dhx_plan_instr *in = &p->instrs[i];
    if (in->op != DHX_OP_GEMM || in->gemm->beta != 1.0 || in->gemm->alpha == 0.0) continue;
    const dhx_plan_arg *c = &in->args[2];
    if (c->kind == DHX_ARG_BUF && r->buffers[c->buf].kind == DHX_BUF_GRAD) last = in;
  }
  if (!last) return 0;
  dhx_plan_own_gemm(plan, last)->alpha = 0.0;
  printf("dropped: %s\n", dhx_instr_note(last));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: drop_gradient PLAN_DIR\n");
    return 2;
  }
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/plan.bin", argv[1]);
  dhx_plan plan;
  if (!dhx_plan_read(path, &plan, err, sizeof err)) {
    fprintf(stderr, "drop_gradient: %s\n", err);
    return 1;
  }
  int dropped = 0;
  for (uint32_t r = 0; r < plan.nranks; r++)
    if (!plan.ranks[r].shares) dropped += drop_one(&plan, &plan.ranks[r]);
  bool ok = dropped > 0 && dhx_plan_write(path, &plan, err, sizeof err);
  if (!ok) fprintf(stderr, "drop_gradient: %s\n", dropped ? err : "no gradient GEMM to drop");
  dhx_plan_free(&plan);
  return ok ? 0 : 1;
}
