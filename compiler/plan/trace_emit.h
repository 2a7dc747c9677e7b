// trace_emit.h — the planned timeline of one training step as a Chrome trace-event JSON file
// (`dhxc --emit=trace`), which Perfetto (ui.perfetto.dev) and chrome://tracing open.
#ifndef DHX_TRACE_EMIT_H
#define DHX_TRACE_EMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cost.h"
#include "plan.h"

// Simulates BEGIN, then MICRO accum_steps / micro_per_run times (as the runtime runs it: once
// per micro-batch, or once per step for a pipeline), then STEP, each rank starting a program
// when it has finished the previous one, with durations from `m`, and writes the timeline to `f`:
// one process per rank ("rank N"), one thread per stream ("compute", "comm", "stream N"), a
// complete event ("X") per instruction named by its note (args: op, program run, instruction
// index, communicator and bytes sent for communication), and the members of each rendezvous
// linked by one flow (s, t..., f with the same id, in rank order). Times are microseconds.
// Returns false, writing nothing, when a program cannot run (err as dhx_plan_verify_ranks).
bool dhx_trace_emit(const dhx_plan *p, const dhx_cost_model *m, FILE *f, char *err, size_t errlen);

#endif
