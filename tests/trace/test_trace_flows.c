// test_trace_flows — a trace's flows link the members of each collective and of each send/recv
// pair. Runs the runtime tests' collectives plan (testlib.h: a reduce-scatter and an all-gather
// of every rank on stream 0, a ring of sends and receives with two tags on stream 1) for 3 steps
// with the default window (the first 2), and writes the trace to argv[1] for trace_check.py.
#include <mpi.h>

#include "sanitize.h"  // LSan defaults for OpenMPI under -DDHX_SANITIZE=ON
#include "testlib.h"

int main(int argc, char **argv) {
  int provided, rank, size;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(argc == 2 && provided == MPI_THREAD_MULTIPLE);
  collectives_bufs b;
  dhx_plan *plan = collectives_plan((uint32_t)size, 12 * 64, 1000, 7, &b);
  char err[1024];
  if (!dhx_plan_validate(plan, err, sizeof err)) {
    fprintf(stderr, "collectives plan is invalid: %s\n", err);
    return 1;
  }
  dhx_rt rt;
  CHECK(dhx_rt_init(&rt, plan, rank, NULL, 1, err, sizeof err));
  dhx_rt_connect(&rt);
  dhx_trace *trace = dhx_trace_new(plan, rank, 0, 0, 0, 3, false, err, sizeof err);
  CHECK(trace);
  dhx_streams_trace(rt.streams, trace);
  for (int step = 0; step < 3; step++) {
    dhx_rt_run(&rt, DHX_PROG_BEGIN);
    dhx_rt_run(&rt, DHX_PROG_STEP);
  }
  if (!dhx_trace_write(trace, argv[1], err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  dhx_rt_free(&rt);
  dhx_trace_free(trace);
  tb_free(plan);
  MPI_Finalize();
  if (rank == 0) printf("%d ranks: trace written to %s\n", size, argv[1]);
  return 0;
}
