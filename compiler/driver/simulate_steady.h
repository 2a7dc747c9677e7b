// simulate_steady.h — the figures of a long step from three short ones (simulate_steady.c).
#ifndef DHX_SIMULATE_STEADY_H
#define DHX_SIMULATE_STEADY_H

#include <stdbool.h>

#include "compile.h"
#include "cost.h"
#include "front.h"
#include "step_sim.h"

// One step of the compiled program simulated under m: its figures, with the overlap search's
// modelled times when it pairs strands; false with err when a program cannot run.
bool dhx_simulate_compiled(const dhx_compiled *c, const dhx_config *cfg,
                           const dhx_cost_model *m, unsigned flags, dhx_step_figures *fig,
                           char *err, size_t errlen);

// The figures of cfg's step (paired strands or a pipeline other than the W, past three periods
// of micro-batches) from three short steps of the same schedule, when every figure grows evenly
// over them; false otherwise, and the caller simulates the whole step. Nothing is printed.
bool dhx_simulate_steady(const dhx_program *prog, const dhx_config *cfg, unsigned flags,
                         dhx_step_figures *out);

#endif
