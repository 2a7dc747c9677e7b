// simulate.h — runs one program kind of a plan on all of its ranks together, in simulated time.
//
// The per-rank checks of the plan validator see one rank, or one communicator, at a time. What
// they cannot see is a wait that crosses ranks and streams: rank 0 waits on an event recorded
// after a receive whose send, on rank 1, sits behind a collective that rank 0 never reaches.
// This simulator runs every stream of every rank at once, with the rules the runtime follows:
//
//   * a stream runs its instructions in order; WAIT blocks until the event has been recorded
//     (by any RECORD of it, in this program run);
//   * a collective is a rendezvous of all members of its communicator on its (communicator,
//     stream) channel: the k-th collective of each member there pairs with the k-th of the
//     others, and none starts before all have arrived;
//   * a SEND and a RECV are a rendezvous of the two peers on their (communicator, stream)
//     channel, paired in order per (sender, receiver, tag). A SEND blocks until its RECV starts
//     (MPI may do so), so two peers that both send first deadlock;
//   * a rank's compute is one resource (the device): a compute instruction (not communicating,
//     not RECORD or WAIT) starts when its stream reaches it and the rank's previous compute
//     instruction, on whichever stream, has ended, first come first served. Two compute
//     streams (paired strands) thus take the sum of their work, not the longer of the two,
//     while communication runs beside compute. Where the plan gives compute instructions
//     turns (a CPU rank computing on several streams, plan.h), they start in turn order
//     instead, as the CPU runtime runs them;
//   * a communicator's links are one resource: a collective starts when its members have all
//     arrived and the communicator's previous collective, on whichever stream, has ended.
//   These two only delay starts (a stream never parks on them), so they cannot deadlock;
//   turns do park a stream, and a turn that never comes is reported like any other hang.
//
// Pairing is fixed by the plan, so it is checked first (kinds, element counts, dtypes, and
// instructions left without a partner). Then an event-driven run in time order (a heap of
// streams ready to move on) starts each instruction when its stream reaches it and, for a
// rendezvous, when the last member arrives; it ends `duration` later. The cost is
// O(instructions · log(streams)). Whatever is still blocked when nothing can move is a
// deadlock, reported as one edge of the cycle of waits: the waiting instruction and the one it
// waits on, with their ranks.
#ifndef DHX_SIMULATE_H
#define DHX_SIMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

// How long instruction `in` of rank `rank`'s program `prog` takes, in seconds (negative or NaN
// counts as 0). `ctx` is the caller's.
typedef double (*dhx_sim_duration_fn)(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                                      const dhx_plan_instr *in);

// One instruction's place in the simulated timeline.
typedef struct dhx_sim_slice {
  uint32_t rank, stream, instr;  // instr: index in the rank's program
  double start, end;             // seconds
  int64_t match;                 // shared by the members of one rendezvous of two or more; -1
} dhx_sim_slice;

typedef struct dhx_sim_result {
  dhx_sim_slice *slices;  // one per instruction, rank by rank in program order
  size_t nslices;
  double *rank_end;       // per rank: when its last instruction ended (its start if it has none)
  int64_t nmatches;       // match ids are 0 .. nmatches-1
  double makespan;        // the latest rank_end
} dhx_sim_result;

// Simulates program `prog` (dhx_prog_kind) on every rank of `p`, a plan dhx_plan_validate
// accepts (the simulator checks what it relies on and fails rather than crash otherwise).
// `dur` NULL: every instruction takes no time, and the run is a pure matching and deadlock
// check. `rank_start` (NULL: all 0) is when each rank starts the program, so runs can be laid
// end to end. `out` may be NULL when only the verdict matters. On failure returns false and
// err says what hangs, naming both instructions ("program MICRO: rank 1 stream 1 instr 12
// (...) waits for rank 3, which is blocked at stream 0 instr 7 (...) ...").
bool dhx_simulate(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                  const double *rank_start, dhx_sim_result *out, char *err, size_t errlen);
// dhx_simulate where compute slows down while communication runs on the same rank: a compute
// instruction (not RECORD or WAIT) that starts while a communicating instruction of its rank
// has started and not ended takes `interference` (>= 1) times its duration. One factor for the
// whole instruction, decided at its start, keeps the run event-driven (docs/simulator.md).
bool dhx_simulate_interfering(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                              double interference, const double *rank_start,
                              dhx_sim_result *out, char *err, size_t errlen);
// How a run shares what the plan does not order.
typedef struct dhx_sim_options {
  double interference;  // as dhx_simulate_interfering's; <= 1: none
  // A rank's compute instructions without turns take the core lead-first instead of first
  // come, first served: when it frees, of the streams waiting for it, the one with the least
  // compute left before it hands work to communication goes first (it starts that sooner, and
  // the links stay busy). dhxc simulates so to choose a CPU rank's turns (turns.c).
  bool lead_first;
  // How long a collective holds its communicator's links, from its start; NULL, or more than
  // its duration: all of it. A measured collective's time includes more than its bytes on the
  // wire (its peers' late arrivals, the exchange's own software time), which delays its stream
  // but leaves the links to other streams' collectives (dhx_cost_link_hold).
  dhx_sim_duration_fn link_hold;
} dhx_sim_options;
bool dhx_simulate_with(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                       const dhx_sim_options *o, const double *rank_start, dhx_sim_result *out,
                       char *err, size_t errlen);
void dhx_sim_result_free(dhx_sim_result *r);

#endif
