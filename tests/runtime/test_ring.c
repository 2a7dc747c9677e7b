// test_ring — `mpirun -np 3 test_ring`: the ring all-reduce (runtime/comm.c) against a plain
// sum, for counts that do not divide by the ring size (including counts below it), on the
// whole world and on a sub-communicator, with and without an emulated network.
#include <math.h>
#include <mpi.h>
#include <time.h>

#include "sanitize.h"
#include "testlib.h"

static float value(int rank, int64_t i) { return sinf(0.37f * (float)i + (float)rank) * (float)(rank + 1); }

// A plan whose only purpose is its communicator table: comm 0 = every rank on stream 0,
// comm 1 = ranks {0, 2} on stream 1.
static dhx_plan *ring_plan(int64_t n, double bandwidth, double latency) {
  dhx_plan *p = tb_new(3);
  p->train.net_bandwidth = bandwidth;
  p->train.net_latency = latency;
  int32_t x = tb_buffer(p, "x", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  int32_t all[3] = {0, 1, 2}, outer[2] = {0, 2};
  int32_t c0 = tb_comm(p, 3, all), c1 = tb_comm(p, 2, outer);
  dhx_plan_instr *in = tb_instr(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, 0, "world");
  in->comm = c0;
  tb_arg_buf(in, x, 0);
  tb_arg_i64(in, n);
  in = tb_instr(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, 1, "outer ranks");
  in->comm = c1;
  tb_arg_buf(in, x, 0);
  tb_arg_i64(in, n);
  tb_replicate(p);
  return p;
}

// Every rank holds the same bytes as rank 0.
static bool identical_everywhere(const float *x, int64_t n, MPI_Comm comm) {
  float *ref = malloc(sizeof(float) * (size_t)(n ? n : 1));
  memcpy(ref, x, sizeof(float) * (size_t)n);
  MPI_Bcast(ref, (int)n, MPI_FLOAT, 0, comm);
  int same = memcmp(ref, x, sizeof(float) * (size_t)n) == 0, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, comm);
  free(ref);
  return all;
}

static void check_sum(const float *x, int64_t n, const int *ranks, int nranks) {
  for (int64_t i = 0; i < n; i++) {
    double want = 0, scale = 0;
    for (int k = 0; k < nranks; k++) want += value(ranks[k], i), scale += fabs(value(ranks[k], i));
    CHECK(fabs(x[i] - want) <= 1e-6 * scale + 1e-30);
  }
}

int main(int argc, char **argv) {
  int provided, rank, size;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(size == 3 && provided == MPI_THREAD_MULTIPLE);
  const int64_t max = 100003;
  float *x = malloc(sizeof(float) * max);
  dhx_plan *plan = ring_plan(max, 0, 0);
  dhx_comms *c = dhx_comms_new(plan, rank);
  static const int64_t counts[] = {0, 1, 2, 3, 5, 7, 1000, 4099, 100003};
  int everyone[3] = {0, 1, 2};
  for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
    int64_t n = counts[k];
    for (int64_t i = 0; i < n; i++) x[i] = value(rank, i);
    dhx_comms_take_bytes(c);
    dhx_allreduce_sum(c, 0, 0, x, n);
    uint64_t sent = dhx_comms_take_bytes(c);
    check_sum(x, n, everyone, 3);
    CHECK(identical_everywhere(x, n, MPI_COMM_WORLD));
    // 2(p-1) chunks of n/p elements each, give or take one element per chunk.
    double expect = 2.0 * (size - 1) / size * (double)n * 4;
    CHECK(fabs((double)sent - expect) <= 2.0 * (size - 1) * 4);
    if (rank == 0) printf("count %6lld: sums match, identical on 3 ranks, %llu bytes sent (%.1f expected)\n",
                          (long long)n, (unsigned long long)sent, expect);
  }
  // The sub-communicator {0, 2}: rank 1 is not a member and takes no part.
  int outer[2] = {0, 2};
  int64_t n = 1001;
  for (int64_t i = 0; i < n; i++) x[i] = value(rank, i);
  dhx_allreduce_sum(c, 1, 1, x, n);
  if (rank != 1) {
    check_sum(x, n, outer, 2);
    CHECK(dhx_comms_take_bytes(c) == (uint64_t)n * 4);  // 2(p-1)/p of the buffer, p = 2
  } else {
    for (int64_t i = 0; i < n; i++) CHECK(x[i] == value(1, i));  // untouched
  }
  MPI_Barrier(MPI_COMM_WORLD);
  dhx_comms_free(c);
  tb_free(plan);

  // Emulated network: 4 messages of ~1.3 KB at 1 MB/s with 10 ms latency each: >= 45 ms.
  plan = ring_plan(max, 1e6, 0.01);
  c = dhx_comms_new(plan, rank);
  for (int64_t i = 0; i < 1000; i++) x[i] = value(rank, i);
  MPI_Barrier(MPI_COMM_WORLD);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dhx_allreduce_sum(c, 0, 0, x, 1000);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  check_sum(x, 1000, everyone, 3);
  if (rank == 0) printf("emulated network: %.1f ms for 4 messages\n", sec * 1e3);
  CHECK(sec >= 0.045);
  dhx_comms_free(c);
  tb_free(plan);
  free(x);
  MPI_Finalize();
  if (rank == 0) printf("ring_allreduce_matches_sum: passed\n");
  return 0;
}
