// overlap_search.h — the overlap search of paired strands (docs/overlap-search.md).
//
// With paired strands the forward of micro-batch m (one strand's stream) runs beside the
// backward of m - 1 (the other's). Left alone the two streams run free; the search decides which
// parts of the two blocks run side by side. Each block is cut into groups of contiguous ops: a
// run of compute between two collectives, or one collective. An alignment is a sequence of
// steps, each one forward group, one backward group, or one of each run together. The search
// picks the alignment of least modelled time:
//
//   T[i][j] = min(T[i-1][j] + P(F_i, -), T[i][j-1] + P(-, B_j), T[i-1][j-1] + P(F_i, B_j))
//
// the last only when legal (never two tensor-parallel collectives side by side), by dynamic
// programming (dp), or greedily (pair the next two groups when legal, else run the cheaper one
// alone). dp keeps to a limit on the activations the two micro-batches hold together (about
// one micro-batch's), so the forward never runs far ahead of the backward's freeing. The
// alignment becomes RECORD/WAIT events between the strand streams at group boundaries: a
// region starts when both streams have ended what came before it, and a step's group starts
// when every group of the earlier steps has ended on the other stream. The program is then
// listed step by step, so that the memory planner, which also goes by list position, can give
// the forward the bytes the backward frees. Events change when ops run, never what they compute.
#ifndef DHX_OVERLAP_SEARCH_H
#define DHX_OVERLAP_SEARCH_H

#include <stdbool.h>

#include "cost.h"
#include "front.h"
#include "graph.h"
#include "kernels.h"
#include "plan_util.h"

// Events the search may add to a program: the plan's limit, less room for what lowering made.
// A region whose events would pass it is left unaligned.
#define DHX_OVL_EVENT_BUDGET (DHX_PLAN_MAX_EVENTS - 4096)

// What the search knows of a group: seconds of compute, or of its collective, and the bytes of
// activations its block's micro-batch holds once the group has ended.
typedef struct dhx_ovl_group {
  double compute, comm;  // one of them 0
  bool tp;               // a tensor-parallel collective
  double held;
} dhx_ovl_group;

// One step of an alignment: forward group f and/or backward group b (-1: none).
typedef struct dhx_ovl_step {
  int f, b;
} dhx_ovl_step;

// The modelled time of a group alone, and of two side by side: two computes take their sum (the
// device is one), a compute beside a collective runs `interference` times slower while the
// collective runs, two collectives take the longer.
double dhx_ovl_alone(const dhx_ovl_group *g);
double dhx_ovl_pair(const dhx_ovl_group *f, const dhx_ovl_group *b, double interference);
bool dhx_ovl_legal(const dhx_ovl_group *f, const dhx_ovl_group *b);

// The modelled time of an alignment of nsteps steps.
double dhx_ovl_cost(const dhx_ovl_group *F, const dhx_ovl_group *B, const dhx_ovl_step *steps,
                    int nsteps, double interference);

// Aligns F[0..nf) with B[0..nb) (search DP or GREEDY; NONE runs every group alone, F first)
// into `steps` (room for nf + nb); returns the number of steps.
int dhx_ovl_align(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                  dhx_strand_search search, double interference, dhx_ovl_step *steps);

// The activation memory an alignment may hold. Once i forward and j backward groups have run,
// the two micro-batches hold F[i-1].held (0 before the first) plus B[j-1].held (b_start before
// the first); dp takes the fastest alignment that never holds more than `limit`. One always
// exists when the limit allows every backward group before the first forward one.
typedef struct dhx_ovl_memory {
  double b_start, limit;
} dhx_ovl_memory;
// The limit of a region: what one micro-batch at a time would hold (the most either block
// holds, with what the backward leaves at its end beside the forward's most), and `slack` more.
dhx_ovl_memory dhx_ovl_memory_of(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                                 double b_start, double slack);
// dhx_ovl_align held within `mem` (NULL: no limit): dp takes the fastest alignment within it,
// greedy only moves from which the end stays reachable within it (so dp is never slower), none
// ignores it. Both fall back to no limit when nothing meets it.
int dhx_ovl_align_within(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                         dhx_strand_search search, double interference,
                         const dhx_ovl_memory *mem, dhx_ovl_step *steps);

// The alignments chosen for one pipeline stage, kept so that every rank of the stage (tensor
// and data replicas, whose collectives meet) runs the same one.
typedef struct dhx_ovl_memo {
  int nregions;
  int *nf, *nb, *nsteps;
  dhx_ovl_step **steps;
  double modelled[3];  // per dhx_strand_search: the modelled time of its alignments, summed
} dhx_ovl_memo;
void dhx_ovl_memo_free(dhx_ovl_memo *m);

// How long a low-level op takes: the cost model on the op as it will be emitted (comm_of: this
// rank's plan communicator per role; codegen: the kernel table, for a kernel's bytes).
typedef struct dhx_ovl_costs {
  const dhx_cost_model *model;
  const dhx_plan *plan;  // its communicators
  const int *comm_of;
  dhx_codegen *cg;
  int64_t vocab;
} dhx_ovl_costs;
double dhx_ovl_op_time(const dhx_ovl_costs *c, const dhx_lop *op);

// The pass, on MICRO of a graph with paired strands: aligns every (forward, backward) region
// and writes the events. An empty memo is filled; a filled one is followed.
void dhx_overlap_search(dhx_graph *g, dhx_strand_search search, const dhx_ovl_costs *costs,
                        dhx_ovl_memo *memo);

#endif
