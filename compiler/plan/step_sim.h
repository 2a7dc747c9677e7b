// step_sim.h — one training step of a plan in simulated time, with the cost model's durations
// (dhxc --simulate): BEGIN, MICRO as many times as the runtime runs it per step, then STEP, on
// every rank at once, each rank starting a program when it has finished the previous one.
#ifndef DHX_STEP_SIM_H
#define DHX_STEP_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cost.h"
#include "plan.h"
#include "simulate.h"

// Per rank, the step's time split three ways: compute (some compute instruction runs), exposed
// communication (none does, but a communicating instruction of the rank runs) and idle (neither:
// waiting for another rank, a pipeline bubble, or done early). The three add up to the step.
typedef struct dhx_rank_time {
  double compute_s, exposed_comm_s, idle_s;
  int64_t live_act_bytes;  // the rank with the largest arena (only): the most activation bytes
                           // live at once in a run (live_activations.h)
} dhx_rank_time;

typedef struct dhx_step_figures {
  double step_time_s;       // the latest rank's end of STEP
  double model_flops;       // flops_per_token · tokens of the global batch
  double peak_flops;        // per rank, the model's FLOP/s at 100% (the GPU's datasheet peak)
  double mfu;               // model_flops / (ranks · peak_flops · step_time_s)
  double tokens_per_s;
  double bubble_s;          // idle time, the mean over ranks
  double exposed_comm_s;    // exposed communication, the mean over ranks
  double compute_s;         // compute, the mean over ranks
  int64_t peak_memory_bytes;  // the largest arena over ranks
  // With DHX_SIM_LIVE_ACTIVATIONS (else 0), of the rank with the largest arena:
  int64_t live_act_bytes;     // the most activation bytes live at once in its runs
  int64_t act_region_bytes;   // the region of its arena that its activations span
  uint32_t nranks;
  dhx_rank_time *ranks;     // per rank
  bool searched;            // paired strands: the overlap search's modelled times below
  double search_modelled_s[3];  // dp, greedy, none (docs/overlap-search.md)
  int steady_micro[3];      // a long step from three short ones: their micro-batches, else 0
                            // (dhxc's simulate_steady.c)
} dhx_step_figures;

// Called after each program run with its timeline (`run`: "BEGIN", "MICRO 3/64", "STEP").
typedef void (*dhx_step_run_fn)(void *ctx, int prog, const char *run, const dhx_sim_result *res);

// What dhx_simulate_step does besides the step's figures.
enum {
  DHX_SIM_EVERY_RANK = 1,        // simulate every rank, not one data-parallel replica for all
  DHX_SIM_LIVE_ACTIVATIONS = 2,  // fill live_act_bytes and act_region_bytes (a pass over the
                                 // instructions of the rank with the largest arena)
};

// Simulates one step of `p` under `m` (its interference factor included) and fills `out`;
// `on_run` (may be NULL) sees each run's timeline. `peak_flops` is one rank's peak for the MFU.
// Where the data-parallel replicas are clones of replica 0 (step_sim.c), only replica 0 is
// simulated, with the same figures, unless `flags` has DHX_SIM_EVERY_RANK (or `on_run`, which
// wants every rank's timeline). False with err when a program cannot run (as dhx_simulate).
bool dhx_simulate_step(const dhx_plan *p, const dhx_cost_model *m, double peak_flops,
                       unsigned flags, dhx_step_run_fn on_run, void *ctx,
                       dhx_step_figures *out, char *err, size_t errlen);
void dhx_step_figures_free(dhx_step_figures *f);

// The figures as one JSON object (step_time_s, mfu, bubble_s, exposed_comm_s,
// peak_memory_bytes, tokens_per_s, ..., with --simulate-activations live_activation_bytes and
// activation_region_bytes, with paired strands overlap_search_modelled_s), and as a few lines
// for a person.
void dhx_step_figures_json(const dhx_step_figures *f, FILE *out);
void dhx_step_figures_print(const dhx_step_figures *f, FILE *out);

#endif
