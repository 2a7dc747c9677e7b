// test_collectives — `mpirun -np P test_collectives CASE`: the collectives and transfers of the
// CPU runtime (runtime/comm.c), run through dhx_rt_run on the collectives plan (testlib.h).
//   chunked:   reduce-scatter and all-gather against a double-precision sum, identical bytes on
//              every rank, the bytes each rank sends; and the all-reduce summing every chunk in
//              the ring's fixed order (so it is bitwise what the ring has always computed);
//              and an all-gather in place.
//   zero_checkpoint: ZeRO-3 shards saved as whole tensors and loaded back into shards.
//   transfers: each rank's two messages arrive whole and in order at its right neighbour.
//   all_to_all: every block lands at its member, the bytes each rank sends, and an all-to-all
//              in place refused by the validator.
//   emulated:  chunked and transfers on an emulated network (--net-emulate), and each takes at
//              least the time that network gives its messages.
//   deferred_emulated: a reduce-scatter and an all-gather posted (dhx_comms_post) and completed
//              (dhx_comms_complete) around independent work on the emulated network: each
//              completes no sooner than its messages' time on the wire after the later of the
//              posts it waits for, and gives the synchronous call's bytes. On 2 ranks they are
//              left in flight at the post; on 3 they run whole there.
// Where bytes sent are checked, the count a GPU backend makes from the plan alone
// (dhx_comms_count_instr) must equal them.
#include <math.h>
#include <mpi.h>
#include <time.h>

#include "sanitize.h"
#include "testlib.h"

static float value(int rank, int64_t i) { return sinf(0.37f * (float)i + (float)rank) * (float)(rank + 1); }

// The bytes the program's exchanges send from this rank by the count a GPU backend makes
// without running them (dhx_comms_count_instr), which must be what the CPU's rings sent.
static uint64_t planned_bytes(dhx_rt *rt, dhx_prog_kind prog) {
  const dhx_plan_program *p = &rt->rank->programs[prog];
  dhx_comms_take_bytes(rt->comms);
  for (uint32_t i = 0; i < p->ninstrs; i++)
    dhx_comms_count_instr(rt->comms, rt->plan, rt->rank, &p->instrs[i]);
  return dhx_comms_take_bytes(rt->comms);
}

// Every rank holds the same bytes as rank 0.
static bool identical_everywhere(const float *x, int64_t n) {
  float *ref = malloc(sizeof(float) * (size_t)n);
  memcpy(ref, x, sizeof(float) * (size_t)n);
  MPI_Bcast(ref, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
  int same = memcmp(ref, x, sizeof(float) * (size_t)n) == 0, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  free(ref);
  return all;
}

// Element i of the sum over `p` ranks, in double, and the sum of magnitudes (the tolerance).
static double reference_sum(int p, int64_t i, double *scale) {
  double want = 0;
  *scale = 0;
  for (int k = 0; k < p; k++) want += value(k, i), *scale += fabs(value(k, i));
  return want;
}

static void check_sums(const float *x, int64_t from, int64_t n, int p) {
  for (int64_t i = 0; i < n; i++) {
    double scale, want = reference_sum(p, from + i, &scale);
    CHECK(fabs(x[i] - want) <= 1e-6 * scale + 1e-30);
  }
}

// The ring's order for chunk c: it starts as rank c's values, and each following rank adds its
// own to the partial it receives (own + partial, in float).
static float ring_order_sum(int p, int c, int64_t i) {
  float acc = value(c, i);
  for (int k = 1; k < p; k++) acc = value((c + k) % p, i) + acc;
  return acc;
}

static void test_chunked(dhx_rt *rt, const collectives_bufs *b, int me, int p, int64_t n) {
  float *x = dhx_rt_buffer(rt, b->x), *part = dhx_rt_buffer(rt, b->part);
  float *whole = dhx_rt_buffer(rt, b->whole);
  for (int64_t i = 0; i < n; i++) x[i] = value(me, i);
  dhx_comms_take_bytes(rt->comms);
  dhx_rt_run(rt, DHX_PROG_STEP);
  uint64_t sent = dhx_comms_take_bytes(rt->comms);
  int64_t chunk = n / p;
  check_sums(part, me * chunk, chunk, p);
  check_sums(whole, 0, n, p);
  for (int64_t i = 0; i < chunk; i++) CHECK(whole[me * chunk + i] == part[i]);
  for (int64_t i = 0; i < n; i++) CHECK(x[i] == value(me, i));  // the input is left alone
  CHECK(identical_everywhere(whole, n));
  // (p-1) chunks each way for the collectives, plus this rank's two messages.
  CHECK(sent == (uint64_t)(2 * (p - 1) * chunk + b->first + b->second) * 4);
  CHECK(planned_bytes(rt, DHX_PROG_STEP) == sent);

  // The all-reduce is the ring's reduce-scatter and all-gather, shifted by one chunk.
  int64_t m = 1003;  // not a multiple of p: uneven chunks
  float *y = malloc(sizeof(float) * (size_t)m);
  for (int64_t i = 0; i < m; i++) y[i] = value(me, i);
  dhx_allreduce_sum(rt->comms, 0, 0, y, m);
  for (int c = 0; c < p; c++)
    for (int64_t i = m / p * c + (c < m % p ? c : m % p), e = i + m / p + (c < m % p); i < e; i++)
      CHECK(memcmp(&y[i], &(float){ring_order_sum(p, c, i)}, sizeof(float)) == 0);
  free(y);
  if (me == 0)
    printf("%d ranks: reduce-scatter and all-gather of %lld match the double sum, %llu bytes sent; "
           "all-reduce bitwise in ring order\n", p, (long long)n, (unsigned long long)sent);
}

// An all-gather in place (NCCL's convention: the input is this rank's chunk of the output), with
// chunks of 1 and of 1003 elements: every rank ends with every rank's chunk.
static void test_in_place_gather(dhx_rt *rt, int me, int p) {
  for (int64_t n = p; n <= 1003 * p; n += 1002 * p) {
    float *x = malloc(sizeof(float) * (size_t)n);
    int64_t chunk = n / p;
    for (int64_t i = 0; i < n; i++) x[i] = i / chunk == me ? value(me, i) : -1.0f;
    dhx_all_gather(rt->comms, 0, 0, x + me * chunk, x, n);
    for (int64_t i = 0; i < n; i++) CHECK(x[i] == value((int)(i / chunk), i));
    free(x);
  }
  if (me == 0) printf("%d ranks: in-place all-gather\n", p);
}

static void test_transfers(dhx_rt *rt, const collectives_bufs *b, int me, int p) {
  int64_t total = b->first + b->second;
  float *msg = dhx_rt_buffer(rt, b->msg), *inbox = dhx_rt_buffer(rt, b->inbox);
  for (int64_t i = 0; i < total; i++) msg[i] = value(me + 10, i), inbox[i] = -1.0f;
  dhx_rt_run(rt, DHX_PROG_STEP);
  int left = (me + p - 1) % p;
  for (int64_t i = 0; i < total; i++) CHECK(inbox[i] == value(left + 10, i));
  if (me == 0)
    printf("%d ranks: messages of %lld and %lld floats arrived whole and in order\n", p,
           (long long)b->first, (long long)b->second);
}

// The value of element k of block j of member i's all-to-all input.
static float block_value(int i, int j, int64_t k) {
  return (float)(i * 1000 + j) + 0.001f * (float)k;
}

// A plan whose STEP is one all-to-all of `in` (n floats) into `out` (n floats, or `in` itself
// when `in_place`) over every rank.
static dhx_plan *all_to_all_plan(int p, int64_t n, bool in_place, int32_t *in_buf,
                                 int32_t *out_buf) {
  dhx_plan *plan = tb_new((uint32_t)p);
  *in_buf = tb_buffer(plan, "in", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  *out_buf = in_place ? *in_buf : tb_buffer(plan, "out", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  int32_t everyone[8];
  for (int r = 0; r < p; r++) everyone[r] = r;
  tb_comm(plan, p, everyone);
  dhx_plan_instr *in = tb_instr(plan, DHX_PROG_STEP, DHX_OP_ALL_TO_ALL, 0, "exchange blocks");
  in->comm = 0;
  in->dtype = DHX_F32;
  tb_arg_buf(in, *in_buf, 0);
  tb_arg_buf(in, *out_buf, 0);
  tb_arg_i64(in, n);
  tb_replicate(plan);
  return plan;
}

// Blocks of 1 and of 4099 elements: member me's output block j is member j's input block me,
// and it sends its p-1 other blocks.
static void test_all_to_all(int me, int p) {
  CHECK(p <= 8);
  char err[1024];
  for (int64_t block = 1; block <= 4099; block += 4098) {
    int64_t n = block * p;
    int32_t ib, ob;
    dhx_plan *plan = all_to_all_plan(p, n, false, &ib, &ob);
    CHECK(dhx_plan_validate(plan, err, sizeof err));
    dhx_rt rt;
    CHECK(dhx_rt_init(&rt, plan, me, NULL, 1, err, sizeof err));
    dhx_rt_connect(&rt);
    float *x = dhx_rt_buffer(&rt, ib), *y = dhx_rt_buffer(&rt, ob);
    for (int64_t i = 0; i < n; i++)
      x[i] = block_value(me, (int)(i / block), i % block), y[i] = -1.0f;
    dhx_comms_take_bytes(rt.comms);
    dhx_rt_run(&rt, DHX_PROG_STEP);
    uint64_t sent = dhx_comms_take_bytes(rt.comms);
    for (int64_t i = 0; i < n; i++) CHECK(y[i] == block_value((int)(i / block), me, i % block));
    for (int64_t i = 0; i < n; i++) CHECK(x[i] == block_value(me, (int)(i / block), i % block));
    CHECK(sent == (uint64_t)((p - 1) * block) * 4);
    CHECK(planned_bytes(&rt, DHX_PROG_STEP) == sent);
    MPI_Barrier(MPI_COMM_WORLD);
    dhx_rt_free(&rt);
    tb_free(plan);
  }
  int32_t ib, ob;
  dhx_plan *in_place = all_to_all_plan(p, 4 * p, true, &ib, &ob);
  CHECK(!dhx_plan_validate(in_place, err, sizeof err));
  CHECK(strstr(err, "all_to_all input and output overlap") != NULL);
  tb_free(in_place);
  if (me == 0)
    printf("%d ranks: all-to-all blocks of 1 and 4099 floats delivered; in place refused\n", p);
}

// What the state of ZeRO-3 parameter "w" holds at whole-tensor element k: the parameter, then
// its moments (kind 0, 1, 2).
static float state_value(int kind, int64_t k) { return (float)kind + 0.001f * (float)k; }

// ZeRO-3 over p ranks: rank r holds shard r of p of parameter "w" [13, 9] and of its state,
// padding included. Rank 0 saves the whole model (dhx_checkpoint_save_all: each rank sends its
// pieces); every rank loads it back into its shard, and a single-rank plan reads whole tensors.
static void test_zero_checkpoint(int me, int p) {
  int64_t shape[2] = {13, 9};
  dhx_plan *plan = tb_new((uint32_t)p);
  plan->train.zero = 3;
  tb_sharded_param(plan, "w", 2, shape, DHX_INIT_NORMAL, 0.02f, (uint32_t)p, 0);
  tb_replicate(plan);
  for (int r = 0; r < p; r++)
    for (uint32_t i = 0; i < plan->ranks[r].nbuffers; i++)
      plan->ranks[r].buffers[i].shard_index = (uint32_t)r;
  char err[1024];
  CHECK(dhx_plan_validate(plan, err, sizeof err));
  const dhx_plan_rank *mine = &plan->ranks[me];
  uint8_t *arena = calloc(1, (size_t)mine->arena_bytes);
  int32_t ids[3] = {0, mine->buffers[0].opt_m, mine->buffers[0].opt_v};
  for (int kind = 0; kind < 3; kind++) {  // padding NaN: it must go nowhere
    const dhx_plan_buffer *b = &mine->buffers[ids[kind]];
    float *x = (float *)(arena + b->offset);
    for (int64_t i = 0; i < dhx_buffer_elems(b); i++) {
      int64_t k = dhx_buffer_whole_index(b, i);
      x[i] = k < 0 ? NAN : state_value(kind, k);
    }
  }
  char path[64];
  snprintf(path, sizeof path, "zero_checkpoint_%d_ranks.safetensors", p);
  CHECK(dhx_checkpoint_save_all(plan, (uint32_t)me, arena, path, 3, err, sizeof err));
  MPI_Barrier(MPI_COMM_WORLD);
  memset(arena, 0xff, (size_t)mine->arena_bytes);
  int64_t step = -1;
  CHECK(dhx_checkpoint_load(plan, (uint32_t)me, arena, path, &step, err, sizeof err));
  CHECK(step == 3);
  for (int kind = 0; kind < 3; kind++) {
    const dhx_plan_buffer *b = &mine->buffers[ids[kind]];
    const float *x = (const float *)(arena + b->offset);
    for (int64_t i = 0; i < dhx_buffer_elems(b); i++) {
      int64_t k = dhx_buffer_whole_index(b, i);
      CHECK(x[i] == (k < 0 ? 0.0f : state_value(kind, k)));
    }
  }
  if (me == 0) {  // the file holds whole tensors
    dhx_plan *whole = tb_new(1);
    tb_param(whole, "w", 2, shape, DHX_INIT_NORMAL, 0.02f, false);
    uint8_t *w = calloc(1, (size_t)whole->ranks[0].arena_bytes);
    CHECK(dhx_checkpoint_load(whole, 0, w, path, &step, err, sizeof err));
    const dhx_plan_buffer *wb = whole->ranks[0].buffers;
    int32_t wids[3] = {0, wb[0].opt_m, wb[0].opt_v};
    for (int kind = 0; kind < 3; kind++)
      for (int64_t k = 0; k < 13 * 9; k++)
        CHECK(((const float *)(w + wb[wids[kind]].offset))[k] == state_value(kind, k));
    printf("%d ranks: ZeRO-3 shards saved whole and loaded back into their shards\n", p);
    free(w);
    tb_free(whole);
  }
  free(arena);
  tb_free(plan);
}

static double monotonic_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// On a network of `bw` bytes/s and `lat` s a message: an all-reduce of m floats takes at least
// its 2(p-1) ring steps one after the other, each a chunk on the link and then the latency; a
// transfer of n floats reaches its receiver no sooner than n*4/bw + lat after both started.
static void test_emulated_times(dhx_rt *rt, int me, int p, double bw, double lat) {
  int64_t m = 30000 * p;
  float *y = malloc(sizeof(float) * (size_t)m);
  for (int64_t i = 0; i < m; i++) y[i] = value(me, i);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  dhx_allreduce_sum(rt->comms, 0, 0, y, m);
  double took = MPI_Wtime() - t0, least = 2.0 * (p - 1) * ((double)(m / p) * 4 / bw + lat);
  CHECK(took >= least * (1 - 1e-6));
  for (int c = 0; c < p; c++)
    for (int64_t i = m / p * c, e = i + m / p; i < e; i++)
      CHECK(memcmp(&y[i], &(float){ring_order_sum(p, c, i)}, sizeof(float)) == 0);
  // Rank 0 sends n floats to rank 1, which waits for them. The ranks leave the barrier at
  // different times, so the arrival is measured from the send's start on the clock both ranks
  // share (they run on one host): rank 0 passes its start time on afterwards.
  int64_t n = 50000;
  MPI_Barrier(MPI_COMM_WORLD);
  double sent_at = monotonic_s(), arrived = 0, wire = (double)n * 4 / bw + lat;
  if (me == 0) {
    dhx_send(rt->comms, 0, 0, y, n, 1, 5);
    MPI_Send(&sent_at, 1, MPI_DOUBLE, 1, 6, MPI_COMM_WORLD);
  }
  if (me == 1) {
    dhx_recv(rt->comms, 0, 0, y, n, 0, 5);
    double received_at = monotonic_s();
    MPI_Recv(&sent_at, 1, MPI_DOUBLE, 0, 6, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    arrived = received_at - sent_at;
    CHECK(arrived >= wire * (1 - 1e-6));
  }
  MPI_Bcast(&arrived, 1, MPI_DOUBLE, 1, MPI_COMM_WORLD);
  free(y);
  if (me == 0)
    printf("%d ranks at %.3g MB/s: all-reduce of %lld floats in %.3g ms (at least %.3g), a "
           "transfer of %lld in %.3g ms (at least %.3g)\n", p, bw / 1e6, (long long)m, took * 1e3,
           least * 1e3, (long long)n, arrived * 1e3, wire * 1e3);
}

// A plan of p ranks whose STEP reduce-scatters x (n floats) into part, deferred to event 0, and
// all-gathers part into whole, deferred to event 1, on the emulated network; ids: x, part, whole.
static dhx_plan *deferred_plan(int p, int64_t n, double bw, double lat, int32_t ids[3]) {
  dhx_plan *plan = tb_new((uint32_t)p);
  int64_t chunk = n / p;
  ids[0] = tb_buffer(plan, "x", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  ids[1] = tb_buffer(plan, "part", DHX_BUF_SCRATCH, DHX_F32, 1, &chunk);
  ids[2] = tb_buffer(plan, "whole", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  int32_t everyone[8];
  for (int r = 0; r < p; r++) everyone[r] = r;
  tb_comm(plan, p, everyone);
  plan->train.net_bandwidth = bw;
  plan->train.net_latency = lat;
  plan->ranks[0].programs[DHX_PROG_STEP].nevents = 2;
  for (int32_t e = 0; e < 2; e++) {
    dhx_plan_instr *in = tb_instr(plan, DHX_PROG_STEP,
                                  e ? DHX_OP_ALL_GATHER : DHX_OP_REDUCE_SCATTER, 0, "deferred");
    in->comm = 0;
    in->event = e;
    tb_arg_buf(in, ids[e], 0);
    tb_arg_buf(in, ids[e + 1], 0);
    tb_arg_i64(in, n);
    tb_instr(plan, DHX_PROG_STEP, DHX_OP_WAIT, 0, "completed")->event = e;
  }
  tb_replicate(plan);
  return plan;
}

static void sleep_s(double s) {
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&t, &t) != 0) {
  }
}

// Each collective is posted, independent work (a sleep as long as one message's time on the
// wire) runs, and it is completed. It cannot have completed before the message it receives
// left its sender, which was no sooner than (p-1) wire times after that sender's post, nor
// before its own sends left: so no sooner than (p-1) wire times after the later of this rank's
// post and its left neighbour's, read on the clock both share (the ranks run on one host).
static void test_deferred_times(int me, int p, double bw, double lat) {
  CHECK(p <= 8);
  int64_t n = 30000 * p, chunk = n / p;
  int32_t ids[3];
  dhx_plan *plan = deferred_plan(p, n, bw, lat, ids);
  char err[1024];
  CHECK(dhx_plan_validate(plan, err, sizeof err));
  dhx_rt rt;
  CHECK(dhx_rt_init(&rt, plan, me, NULL, 1, err, sizeof err));
  dhx_rt_connect(&rt);
  float *bufs[3] = {dhx_rt_buffer(&rt, ids[0]), dhx_rt_buffer(&rt, ids[1]),
                    dhx_rt_buffer(&rt, ids[2])};
  float *ref = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) bufs[0][i] = value(me, i);
  double wire = (double)(chunk * 4) / bw + lat, least = (p - 1) * wire;
  for (int32_t e = 0; e < 2; e++) {
    dhx_op op = e ? DHX_OP_ALL_GATHER : DHX_OP_REDUCE_SCATTER;
    MPI_Barrier(MPI_COMM_WORLD);
    double posted = monotonic_s();
    bool left = dhx_comms_post(rt.comms, 0, 0, op, bufs[e], bufs[e + 1], n, e);
    sleep_s(wire);
    dhx_comms_complete(rt.comms, e);
    double done = monotonic_s(), left_posted = 0;
    CHECK(left == (p == 2));
    MPI_Sendrecv(&posted, 1, MPI_DOUBLE, (me + 1) % p, 8, &left_posted, 1, MPI_DOUBLE,
                 (me + p - 1) % p, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    double since = done - (posted > left_posted ? posted : left_posted);
    CHECK(since >= least * (1 - 1e-6));
    if (e == 0) dhx_reduce_scatter_sum(rt.comms, 0, 0, bufs[0], ref, n);
    else dhx_all_gather(rt.comms, 0, 0, bufs[1], ref, n);
    CHECK(memcmp(bufs[e + 1], ref, sizeof(float) * (size_t)(e ? n : chunk)) == 0);
    if (me == 0)
      printf("%d ranks: deferred %s of %lld floats completed %.3g ms after the posts (at least "
             "%.3g) with %.3g ms of work between; %s\n", p, e ? "all-gather" : "reduce-scatter",
             (long long)n, since * 1e3, least * 1e3, wire * 1e3,
             left ? "left in flight" : "run whole at the post");
  }
  free(ref);
  MPI_Barrier(MPI_COMM_WORLD);
  dhx_rt_free(&rt);
  tb_free(plan);
}

int main(int argc, char **argv) {
  int provided, rank, size;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(argc == 2 && provided == MPI_THREAD_MULTIPLE);
  int64_t n = 12 * 4099;  // a multiple of 3 and 4
  collectives_bufs b;
  // The long message is past OpenMPI's eager limit, so a send waits for its receive.
  dhx_plan *plan = collectives_plan((uint32_t)size, n, 100003, 7, &b);
  double bw = 200e6, lat = 1e-3;
  if (strcmp(argv[1], "emulated") == 0) plan->train.net_bandwidth = bw, plan->train.net_latency = lat;
  char err[1024];
  if (!dhx_plan_validate(plan, err, sizeof err)) {
    fprintf(stderr, "collectives plan is invalid: %s\n", err);
    return 1;
  }
  dhx_rt rt;
  CHECK(dhx_rt_init(&rt, plan, rank, NULL, 1, err, sizeof err));
  dhx_rt_connect(&rt);
  if (strcmp(argv[1], "chunked") == 0) {
    test_chunked(&rt, &b, rank, size, n);
    test_in_place_gather(&rt, rank, size);
  } else if (strcmp(argv[1], "zero_checkpoint") == 0)
    test_zero_checkpoint(rank, size);
  else if (strcmp(argv[1], "all_to_all") == 0)
    test_all_to_all(rank, size);
  else if (strcmp(argv[1], "transfers") == 0)
    test_transfers(&rt, &b, rank, size);
  else if (strcmp(argv[1], "deferred_emulated") == 0)
    test_deferred_times(rank, size, bw, lat);
  else if (strcmp(argv[1], "emulated") == 0) {
    test_chunked(&rt, &b, rank, size, n);
    test_transfers(&rt, &b, rank, size);
    test_emulated_times(&rt, rank, size, bw, lat);
  }
  else
    CHECK(!"unknown case");
  MPI_Barrier(MPI_COMM_WORLD);
  dhx_rt_free(&rt);
  tb_free(plan);
  MPI_Finalize();
  if (rank == 0) printf("%s: passed\n", argv[1]);
  return 0;
}
