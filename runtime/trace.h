// trace.h — dhxrun --trace: the measured timeline of a window of steps, every instruction of
// every stream of every rank, written by rank 0 as one Chrome trace-event JSON file (the format
// Perfetto and chrome://tracing open).
//
// Recording is split so that the hot path is two clock reads and a store: the streams ask
// dhx_trace_program once per program run (on the thread that calls dhx_streams_run) whether the
// run is recorded, and each stream thread then appends one fixed-size record per instruction to
// its own preallocated buffer (no locks, no allocation). Everything a record does not hold
// (note, op, bytes, communicator members) rank 0 looks up in the plan when it writes the file,
// since every rank holds the whole plan.
//
// The step and micro-batch of a record are inferred from the program runs: every step runs
// BEGIN once, then MICRO accum_steps times, STEP once and EVAL zero or more times (train.c).
#ifndef DHX_TRACE_H
#define DHX_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "plan.h"

typedef struct dhx_trace dhx_trace;

// One executed instruction; gathered to rank 0 as raw bytes (every rank runs the same binary).
typedef struct dhx_trace_rec {
  int64_t t0, t1;   // nanoseconds since the trace's origin (the barrier at the window's start)
  int64_t step;     // 0-based
  int32_t instr;    // index in the program
  int32_t micro;    // MICRO / EVAL: this run's index within the step; -1 for BEGIN / STEP
  int32_t seq;      // ops on a communicator: rendezvous number within the step; -1 otherwise
  uint8_t prog;     // dhx_prog_kind
  uint8_t stream;
  uint8_t pad[2];
} dhx_trace_rec;

// The largest trace a run may ask for (all ranks' records together), so that a window that
// would need gigabytes is refused before step 1 rather than failing at the end.
#define DHX_TRACE_MAX_BYTES (1LL << 30)

// A trace of steps [first, last] (1-based, inclusive; first = 0: the first 2 steps this run
// takes) of a run that takes steps [first_step, end_step) (0-based). Sizes one buffer per
// stream from the plan's instruction counts. Not collective: every rank reaches the same
// verdict. NULL with err set (naming --trace-steps) when the window holds none of the run's
// steps, or would record more than DHX_TRACE_MAX_BYTES, or memory runs out.
dhx_trace *dhx_trace_new(const dhx_plan *plan, int world_rank, int64_t first, int64_t last,
                         int64_t first_step, int64_t end_step, bool has_val, char *err,
                         size_t errlen);
void dhx_trace_free(dhx_trace *t);

// Called by dhx_streams_run before each program run, on its thread: whether the stream threads
// record this run. At BEGIN of the window's first step it is collective (an MPI_Barrier on
// MPI_COMM_WORLD, then the clock's origin), so every rank must run the same programs in the
// same order (train.c does).
bool dhx_trace_program(dhx_trace *t, const dhx_plan_program *prog);

// Monotonic nanoseconds.
static inline int64_t dhx_trace_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Stream `stream` ran instruction `index` (`in`) of the current program from t0
// (dhx_trace_clock) until now. Called only by that stream's thread, during a recorded run.
void dhx_trace_add(dhx_trace *t, uint32_t stream, const dhx_plan_instr *in, uint32_t index,
                   int64_t t0);

// Collective: rank 0 gathers every rank's records and writes the JSON file at `path` (through
// a temporary file and a rename, so the file appears whole). False with err set on rank 0 when
// the file cannot be written; other ranks return true.
bool dhx_trace_write(dhx_trace *t, const char *path, char *err, size_t errlen);

// Collective: every rank's records on rank 0, rank after rank, counts[r] of rank r (both
// malloc'd, the caller frees them); NULL (and *counts NULL) on the other ranks. *dropped: the
// records lost over all ranks (rank 0).
dhx_trace_rec *dhx_trace_gather(dhx_trace *t, int **counts, int64_t *dropped);
// The 0-based steps [from, to) the trace records.
void dhx_trace_steps(const dhx_trace *t, int64_t *from, int64_t *to);
// The id of the rendezvous record r (an op on a communicator, seq >= 0) of rank `rank` takes
// part in: the same on every member of a collective and on both ends of a transfer.
uint64_t dhx_trace_rendezvous(const dhx_plan *plan, uint32_t rank, const dhx_trace_rec *r);

#endif
