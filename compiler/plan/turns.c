// turns.c — the order in which a CPU rank that computes on several streams runs its compute.
//
// Paired strands give a rank two compute streams. On a GPU they run side by side; on a CPU
// rank, which has one core, they take it in turns. Left to the operating system, the two
// threads share the core by time slices, each GEMM stretching while the other runs, and the
// two ranks of a tensor-parallel group interleave their strands differently, so each waits for
// the other at every collective. So where paired strands run free (search: none; compile.c
// decides), dhxc fixes the order (plan.h: turn): it simulates the
// program with the cost model, giving the core lead-first (dhx_sim_options: of the streams
// waiting for it, the one with the least compute left before its next collective goes first,
// which starts that collective sooner and keeps the links busy), and numbers the compute
// instructions of each rank in the order they started. The runtime runs them in that order;
// the plan validator and the cross-rank simulator check that it cannot hang; every rank of a
// group runs its collectives in step with the others. Turns change when instructions run,
// never what they compute.
#include "turns.h"

#include <stdlib.h>

#include "plan_util.h"
#include "simulate.h"

// Whether some rank runs compute on two or more streams of program `prog`.
static bool computes_on_streams(const dhx_plan *p, int prog) {
  for (uint32_t r = 0; r < p->nranks; r++) {
    const dhx_plan_program *pr = &p->ranks[r].programs[prog];
    uint32_t mask = 0;
    for (uint32_t i = 0; i < pr->ninstrs; i++)
      if (dhx_op_computes(pr->instrs[i].op)) mask |= 1u << pr->instrs[i].stream;
    if (mask & (mask - 1)) return true;
  }
  return false;
}

typedef struct started {
  double at;
  uint32_t stream, instr;
} started;

static int started_cmp(const void *x, const void *y) {
  const started *a = x, *b = y;
  if (a->at != b->at) return a->at < b->at ? -1 : 1;
  if (a->stream != b->stream) return a->stream < b->stream ? -1 : 1;
  return a->instr < b->instr ? -1 : a->instr > b->instr;
}

// Numbers rank r's compute instructions of `prog` in the order they started in `res`.
static void number(dhx_plan *p, int prog, uint32_t r, const dhx_sim_result *res, started *buf,
                   size_t first) {
  dhx_plan_program *pr = &p->ranks[r].programs[prog];
  size_t n = 0;
  for (uint32_t i = 0; i < pr->ninstrs; i++)
    if (dhx_op_computes(pr->instrs[i].op))
      buf[n++] = (started){res->slices[first + i].start, pr->instrs[i].stream, i};
  qsort(buf, n, sizeof *buf, started_cmp);
  for (size_t k = 0; k < n; k++) pr->instrs[buf[k].instr].turn = (uint32_t)(k + 1);
}

bool dhx_plan_assign_turns(dhx_plan *p, const dhx_cost_model *m, char *err, size_t errlen) {
  for (int prog = 0; prog < DHX_PROG_COUNT; prog++) {
    if (!computes_on_streams(p, prog)) continue;
    dhx_sim_options o = {.interference = m->interference, .lead_first = true};
    dhx_sim_result res;
    if (!dhx_simulate_with(p, prog, dhx_cost_duration, (void *)m, &o, NULL, &res, err, errlen))
      return false;
    size_t most = 1, first = 0;
    for (uint32_t r = 0; r < p->nranks; r++)
      if (p->ranks[r].programs[prog].ninstrs > most) most = p->ranks[r].programs[prog].ninstrs;
    started *buf = malloc(most * sizeof *buf);
    if (!buf) abort();
    for (uint32_t r = 0; r < p->nranks; r++) {
      // A rank that shares another's programs has its turns from that one.
      if (!p->ranks[r].shares) number(p, prog, r, &res, buf, first);
      first += p->ranks[r].programs[prog].ninstrs;
    }
    free(buf);
    dhx_sim_result_free(&res);
  }
  return true;
}
