// schedule_tests — the cross-rank simulator and verifier: `schedule_tests NAME [PLAN_DIR...]`.
//
// Small plans built by hand (2 to 4 ranks, 1 or 2 streams) are accepted when their ranks can
// run them together, then broken one way at a time: the verifier must refuse each, naming both
// instructions and both ranks. Some of the broken plans pass the per-rank validator (it sees one
// rank, or one communicator, at a time); those tests check that it does, to show what the
// verifier adds. The compiled samples (plan dirs given on the command line) must verify, and
// the timing run must respect every stream's own duration. A synthetic plan of 1024 ranks shows
// the cost stays near linear (the time is printed, never asserted).
#include <math.h>
#include <time.h>

#include "cost.h"
#include "simulate.h"
#include "testlib.h"
#include "verify_ranks.h"

#define N 64  // elements of every buffer

typedef struct bufs {
  int32_t x, part, msg, inbox;
} bufs;

static bufs g_b;

// A plan of `nranks` ranks with four buffers of N floats each and communicator 0 = all ranks;
// the programs are empty, filled rank by rank.
static dhx_plan *plan_of(uint32_t nranks) {
  dhx_plan *p = tb_new(nranks);
  int64_t n = N;
  g_b.x = tb_buffer(p, "x", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  g_b.part = tb_buffer(p, "part", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  g_b.msg = tb_buffer(p, "msg", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  g_b.inbox = tb_buffer(p, "inbox", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  int32_t all[4] = {0, 1, 2, 3};
  tb_comm(p, (int)nranks, all);
  tb_replicate(p);
  return p;
}

static dhx_plan_instr *compute(dhx_plan *p, uint32_t rank, uint32_t stream, const char *note) {
  dhx_plan_instr *in = tb_rank_instr(p, rank, DHX_PROG_MICRO, DHX_OP_ZERO, stream, note);
  tb_arg_buf(in, stream ? g_b.msg : g_b.x, 0);
  tb_arg_i64(in, N * 4);
  return in;
}

static dhx_plan_instr *collective(dhx_plan *p, uint32_t rank, dhx_op op, uint32_t stream,
                                  int32_t comm, int64_t count, const char *note) {
  dhx_plan_instr *in = tb_rank_instr(p, rank, DHX_PROG_MICRO, op, stream, note);
  in->comm = comm;
  if (op == DHX_OP_ALLREDUCE) {
    tb_arg_buf(in, g_b.x, 0);
  } else {
    tb_arg_buf(in, op == DHX_OP_REDUCE_SCATTER ? g_b.x : g_b.part, 0);
    tb_arg_buf(in, op == DHX_OP_REDUCE_SCATTER ? g_b.part : g_b.x, 0);
  }
  tb_arg_i64(in, count);
  return in;
}

static dhx_plan_instr *transfer(dhx_plan *p, uint32_t rank, dhx_op op, uint32_t stream,
                                int64_t count, int64_t peer, int64_t tag, const char *note) {
  dhx_plan_instr *in = tb_rank_instr(p, rank, DHX_PROG_MICRO, op, stream, note);
  in->comm = 0;
  tb_arg_buf(in, op == DHX_OP_SEND ? g_b.msg : g_b.inbox, 0);
  tb_arg_i64(in, count);
  tb_arg_i64(in, peer);
  tb_arg_i64(in, tag);
  return in;
}

static int32_t new_event(dhx_plan *p, uint32_t rank) {
  return (int32_t)p->ranks[rank].programs[DHX_PROG_MICRO].nevents++;
}

static void on_event(dhx_plan *p, uint32_t rank, dhx_op op, uint32_t stream, int32_t e,
                     const char *note) {
  tb_rank_instr(p, rank, DHX_PROG_MICRO, op, stream, note)->event = e;
}

static void expect_valid(const dhx_plan *p, const char *what) {
  char err[2048];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "%s: the validator refuses it: %s\n", what, err);
    exit(1);
  }
}

static void expect_verified(const dhx_plan *p, const char *what) {
  char err[2048];
  if (!dhx_plan_verify_ranks(p, err, sizeof err)) {
    fprintf(stderr, "%s: expected the ranks to verify, got: %s\n", what, err);
    exit(1);
  }
  printf("ok: %s verifies\n", what);
}

// The verifier must refuse `p` with a message containing every string of `want` (NULL-ended).
static void expect_rejected(const dhx_plan *p, const char *const *want) {
  char err[2048];
  CHECK_FAILS(dhx_plan_verify_ranks(p, err, sizeof err), err, want[0]);
  for (int i = 1; want[i]; i++) CHECK_FAILS(false, err, want[i]);
  printf("ok: %s\n", err);
}

// ---- valid plans ------------------------------------------------------------------------------

// Ring of transfers on stream 1 (even ranks send first), collectives on stream 0, events both
// ways between the streams.
static dhx_plan *ring_plan(uint32_t nranks) {
  dhx_plan *p = plan_of(nranks);
  for (uint32_t r = 0; r < nranks; r++) {
    int32_t ready = new_event(p, r), arrived = new_event(p, r);
    compute(p, r, 0, "fill x");
    on_event(p, r, DHX_OP_RECORD, 0, ready, "x ready");
    on_event(p, r, DHX_OP_WAIT, 1, ready, "x ready");
    uint32_t right = (r + 1) % nranks, left = (r + nranks - 1) % nranks;
    for (int phase = 0; phase < 2; phase++)
      if ((phase == 0) == (r % 2 == 0)) transfer(p, r, DHX_OP_SEND, 1, N, right, 7, "pass right");
      else transfer(p, r, DHX_OP_RECV, 1, N, left, 7, "take from left");
    on_event(p, r, DHX_OP_RECORD, 1, arrived, "inbox full");
    collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
    collective(p, r, DHX_OP_REDUCE_SCATTER, 0, 0, 16 * nranks, "scatter x");  // p divides it
    collective(p, r, DHX_OP_ALL_GATHER, 0, 0, 16 * nranks, "gather x");
    on_event(p, r, DHX_OP_WAIT, 0, arrived, "inbox full");
    compute(p, r, 0, "use inbox");
  }
  return p;
}

static void verify_ranks_accepts_valid_hand_plans(void) {
  for (uint32_t n = 2; n <= 4; n++) {
    dhx_plan *p = ring_plan(n);
    expect_valid(p, "ring plan");
    expect_verified(p, "ring plan");
    tb_free(p);
    collectives_bufs cb;
    p = collectives_plan(n, 12 * n, 5, 3, &cb);  // testlib's: odd rings included
    expect_verified(p, "testlib collectives plan");
    tb_free(p);
  }
  toy_opts o = toy_defaults();
  o.dp = 2;
  dhx_plan *p = toy_plan(&o);
  expect_verified(p, "toy plan at dp 2");
  tb_free(p);
}

// ---- broken plans -----------------------------------------------------------------------------

// Two communicators of the same two ranks, used in opposite orders; and three ranks whose pairs
// (0 1), (1 2), (0 2) each have a communicator, used so that every rank waits for the next.
static void verify_ranks_rejects_opposite_comm_order(void) {
  dhx_plan *p = plan_of(2);
  int32_t both[2] = {0, 1};
  int32_t a = tb_comm(p, 2, both), b = tb_comm(p, 2, both);
  collective(p, 0, DHX_OP_ALLREDUCE, 0, a, N, "sum over a");
  collective(p, 0, DHX_OP_ALLREDUCE, 0, b, N, "sum over b");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, b, N, "sum over b");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, a, N, "sum over a");
  expect_valid(p, "opposite communicator order");  // each communicator alone is consistent
  expect_rejected(p, (const char *[]){"program MICRO: rank 0 stream 0 instr 0 (ALLREDUCE of 64 f32 "
                                      "on comm 1, 'sum over a')", "waits for rank 1, which is "
                                      "blocked at stream 0 instr 0 (ALLREDUCE of 64 f32 on comm 2",
                                      "before reaching its side, stream 0 instr 1", NULL});
  tb_free(p);

  p = plan_of(3);
  int32_t c01 = tb_comm(p, 2, (int32_t[]){0, 1}), c12 = tb_comm(p, 2, (int32_t[]){1, 2});
  int32_t c02 = tb_comm(p, 2, (int32_t[]){0, 2});
  collective(p, 0, DHX_OP_ALLREDUCE, 0, c01, N, "with 1");
  collective(p, 0, DHX_OP_ALLREDUCE, 0, c02, N, "with 2");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, c12, N, "with 2");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, c01, N, "with 0");
  collective(p, 2, DHX_OP_ALLREDUCE, 0, c02, N, "with 0");
  collective(p, 2, DHX_OP_ALLREDUCE, 0, c12, N, "with 1");
  expect_valid(p, "three communicators in a cycle");
  expect_rejected(p, (const char *[]){"rank 0 stream 0 instr 0 (ALLREDUCE of 64 f32 on comm 1",
                                      "waits for rank 1, which is blocked at stream 0 instr 0",
                                      "the cycle of waits: rank 0 stream 0 instr 0 -> rank 1 "
                                      "stream 0 instr 0 -> rank 2 stream 0 instr 0 -> back", NULL});
  tb_free(p);
}

// Rank 0 sends; rank 1 has work on that stream but no receive. Then the receive is there with
// another tag: the message points at it.
static void verify_ranks_rejects_send_without_receive(void) {
  dhx_plan *p = plan_of(2);
  transfer(p, 0, DHX_OP_SEND, 1, N, 1, 3, "send h");
  compute(p, 1, 1, "busy on the comm stream");
  expect_rejected(p, (const char *[]){"rank 0 stream 1 instr 0 (SEND of 64 f32 to peer 1 (rank 1) "
                                      "tag 3 on comm 0, 'send h') has no matching RECV on rank 1",
                                      "rank 1 has none there; its last instruction on the stream "
                                      "is stream 1 instr 0 (ZERO, 'busy on the comm stream')", NULL});
  tb_free(p);

  p = plan_of(2);
  transfer(p, 0, DHX_OP_SEND, 1, N, 1, 3, "send h");
  transfer(p, 1, DHX_OP_RECV, 1, N, 0, 4, "recv h");
  expect_rejected(p, (const char *[]){"rank 0 stream 1 instr 0 (SEND", "has no matching RECV on "
                                      "rank 1", "rank 1's unmatched RECV on comm 0 is stream 1 "
                                      "instr 0 (RECV of 64 f32 from peer 0 (rank 0) tag 4", NULL});
  tb_free(p);
}

// Rank 1 receives from rank 0, which sent its only message with that tag already.
static void verify_ranks_rejects_receive_without_send(void) {
  dhx_plan *p = plan_of(2);
  transfer(p, 0, DHX_OP_SEND, 1, N, 1, 5, "send a");
  transfer(p, 1, DHX_OP_RECV, 1, N, 0, 5, "recv a");
  transfer(p, 1, DHX_OP_RECV, 1, N, 0, 5, "recv b");
  expect_rejected(p, (const char *[]){"rank 1 stream 1 instr 1 (RECV of 64 f32 from peer 0 (rank 0) "
                                      "tag 5 on comm 0, 'recv b') has no matching SEND on rank 0",
                                      "rank 0's last SEND there is stream 1 instr 0 (SEND", NULL});
  tb_free(p);
}

static void verify_ranks_rejects_mismatched_counts(void) {
  dhx_plan *p = plan_of(2);
  transfer(p, 0, DHX_OP_SEND, 1, N, 1, 1, "send 64");
  transfer(p, 1, DHX_OP_RECV, 1, N / 2, 0, 1, "recv 32");
  expect_rejected(p, (const char *[]){"rank 0 stream 1 instr 0 (SEND of 64 f32", "meets rank 1 "
                                      "stream 1 instr 0 (RECV of 32 f32", "the element counts "
                                      "differ", NULL});
  tb_free(p);

  p = plan_of(3);
  for (uint32_t r = 0; r < 3; r++)
    collective(p, r, DHX_OP_ALLREDUCE, 0, 0, r == 2 ? N / 2 : N, "sum x");
  expect_rejected(p, (const char *[]){"rank 2 stream 0 instr 0 (ALLREDUCE of 32 f32", "meets rank 0 "
                                      "stream 0 instr 0 (ALLREDUCE of 64 f32", "the element counts "
                                      "differ", NULL});
  tb_free(p);
}

// Three members exchange blocks of 16 (48 elements); one that sends blocks of 8 would leave
// the others waiting for the rest. (The validator's sequence check refuses it too.)
static void verify_ranks_rejects_mismatched_all_to_all_counts(void) {
  dhx_plan *p = plan_of(3);
  for (uint32_t r = 0; r < 3; r++) collective(p, r, DHX_OP_ALL_TO_ALL, 0, 0, 48, "swap blocks");
  expect_valid(p, "all-to-all over 3 ranks");
  expect_verified(p, "all-to-all over 3 ranks");
  p->ranks[2].programs[DHX_PROG_MICRO].instrs[0].args[2].i = 24;
  expect_rejected(p, (const char *[]){"rank 2 stream 0 instr 0 (ALL_TO_ALL of 24 f32", "meets "
                                      "rank 0 stream 0 instr 0 (ALL_TO_ALL of 48 f32", "the element "
                                      "counts differ", NULL});
  tb_free(p);
}

static void verify_ranks_rejects_mismatched_dtypes(void) {
  dhx_plan *p = plan_of(2);
  collective(p, 0, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, 0, N, "sum x")->dtype = DHX_F64;
  expect_rejected(p, (const char *[]){"rank 1 stream 0 instr 0 (ALLREDUCE of 64 f64", "meets rank 0 "
                                      "stream 0 instr 0 (ALLREDUCE of 64 f32", "the dtypes differ",
                                      NULL});
  tb_free(p);
}

static void verify_ranks_rejects_mismatched_collective_kinds(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  collective(p, 0, DHX_OP_ALLREDUCE, 0, 0, N, "sum again");
  collective(p, 1, DHX_OP_ALL_GATHER, 0, 0, N, "gather x");
  expect_rejected(p, (const char *[]){"rank 1 stream 0 instr 1 (ALL_GATHER of 64 f32 on comm 0, "
                                      "'gather x') meets rank 0 stream 0 instr 1 (ALLREDUCE",
                                      "the kinds differ", NULL});
  tb_free(p);

  p = plan_of(2);  // one collective more on rank 0
  for (uint32_t r = 0; r < 2; r++) collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  collective(p, 0, DHX_OP_ALL_GATHER, 0, 0, N, "gather x");
  expect_rejected(p, (const char *[]){"rank 0 stream 0 instr 1 (ALL_GATHER", "is collective #2 on "
                                      "comm 0 stream 0, but rank 1 issues only 1 there",
                                      "rank 1's last collective there is stream 0 instr 0 "
                                      "(ALLREDUCE", NULL});
  tb_free(p);
}

// Rank 0's compute stream waits for an event recorded after a receive; the matching send on
// rank 1 waits for an event recorded after an all-reduce that rank 0's compute stream reaches
// only after its wait. Every rank alone, and the communicator alone, look fine.
static void verify_ranks_rejects_cross_rank_event_cycle(void) {
  dhx_plan *p = plan_of(2);
  int32_t e0 = new_event(p, 0), e1 = new_event(p, 1);
  transfer(p, 0, DHX_OP_RECV, 1, N, 1, 1, "recv h");
  on_event(p, 0, DHX_OP_RECORD, 1, e0, "h arrived");
  on_event(p, 0, DHX_OP_WAIT, 0, e0, "h arrived");
  collective(p, 0, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  collective(p, 1, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  on_event(p, 1, DHX_OP_RECORD, 0, e1, "x summed");
  on_event(p, 1, DHX_OP_WAIT, 1, e1, "x summed");
  transfer(p, 1, DHX_OP_SEND, 1, N, 0, 1, "send h");
  expect_valid(p, "cross-rank event cycle");
  expect_rejected(p, (const char *[]){"rank 0 stream 1 instr 0 (RECV of 64 f32 from peer 1 (rank 1) "
                                      "tag 1 on comm 0, 'recv h') waits for rank 1, which is blocked "
                                      "at stream 1 instr 2 (WAIT of event 0, 'x summed') before "
                                      "reaching its side, stream 1 instr 3 (SEND", "the cycle of "
                                      "waits: rank 0 stream 1 instr 0 -> rank 1 stream 1 instr 2 -> "
                                      "rank 1 stream 0 instr 0 -> rank 0 stream 0 instr 2 -> back",
                                      NULL});
  tb_free(p);
}

// Both peers send first on one stream: with sends that block until the receive starts, each
// waits for the other.
static void verify_ranks_rejects_peers_that_both_send_first(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    transfer(p, r, DHX_OP_SEND, 1, N, 1 - r, 2, "send to the other");
    transfer(p, r, DHX_OP_RECV, 1, N, 1 - r, 2, "recv from the other");
  }
  expect_rejected(p, (const char *[]){"rank 0 stream 1 instr 0 (SEND of 64 f32 to peer 1 (rank 1) "
                                      "tag 2", "waits for rank 1, which is blocked at stream 1 "
                                      "instr 0 (SEND of 64 f32 to peer 0 (rank 0) tag 2",
                                      "before reaching its side, stream 1 instr 1 (RECV", NULL});
  tb_free(p);
}

// ---- timing -----------------------------------------------------------------------------------

// Checks one timed run: every stream runs its instructions in order without overlap, so the
// makespan is at least any stream's total; the members of a rendezvous start together; each
// rank starts no earlier than its start time.
static void check_timeline(const dhx_plan *p, int prog, const dhx_cost_model *m,
                           const double *rank_start, const dhx_sim_result *res) {
  const dhx_sim_slice **first = calloc((size_t)res->nmatches + 1, sizeof *first);
  CHECK(first != NULL);
  size_t k = 0;
  for (uint32_t r = 0; r < p->nranks; r++) {
    const dhx_plan_program *pr = &p->ranks[r].programs[prog];
    double busy[DHX_MAX_STREAMS] = {0}, last_end[DHX_MAX_STREAMS];
    for (int s = 0; s < DHX_MAX_STREAMS; s++) last_end[s] = rank_start ? rank_start[r] : 0;
    for (uint32_t i = 0; i < pr->ninstrs; i++, k++) {
      const dhx_sim_slice *sl = &res->slices[k];
      CHECK(sl->rank == r && sl->instr == i && sl->stream == pr->instrs[i].stream);
      double d = dhx_cost_instr(m, p, &pr->instrs[i]);
      CHECK(sl->end - sl->start > d * (1 - 1e-9) - 1e-15 && sl->end - sl->start < d * (1 + 1e-9) + 1e-15);
      CHECK(sl->start >= last_end[sl->stream] - 1e-12);
      last_end[sl->stream] = sl->end;
      busy[sl->stream] += d;
      CHECK(sl->end <= res->rank_end[r] + 1e-12);
      if (sl->match < 0) continue;
      CHECK(sl->match < res->nmatches);
      if (!first[sl->match]) first[sl->match] = sl;
      CHECK(first[sl->match]->start == sl->start);
    }
    for (int s = 0; s < DHX_MAX_STREAMS; s++) CHECK(res->makespan >= busy[s] * (1 - 1e-9));
  }
  CHECK(k == res->nslices);
  free(first);
}

// A timed run of every program; MICRO twice, the second starting where the first ended.
static void check_timed_runs(const dhx_plan *p, const char *what) {
  dhx_cost_model m = dhx_cost_model_for(p);
  char err[2048];
  for (int prog = 0; prog < DHX_PROG_COUNT; prog++) {
    dhx_sim_result a, b;
    bool ok = dhx_simulate(p, prog, dhx_cost_duration, &m, NULL, &a, err, sizeof err);
    if (!ok) fprintf(stderr, "%s: %s\n", what, err);
    CHECK(ok);
    check_timeline(p, prog, &m, NULL, &a);
    CHECK(dhx_simulate(p, prog, dhx_cost_duration, &m, a.rank_end, &b, err, sizeof err));
    check_timeline(p, prog, &m, a.rank_end, &b);
    CHECK(b.makespan >= a.makespan);
    printf("ok: %s %s: makespan %.1f us, %" PRId64 " rendezvous\n", what,
           dhx_prog_name((uint32_t)prog), a.makespan * 1e6, a.nmatches);
    dhx_sim_result_free(&a);
    dhx_sim_result_free(&b);
  }
}

static void simulate_makespan_covers_every_stream(void) {
  for (uint32_t n = 2; n <= 4; n++) {
    dhx_plan *p = ring_plan(n);
    check_timed_runs(p, "ring plan");
    tb_free(p);
  }
  toy_opts o = toy_defaults();
  o.dp = 2;
  dhx_plan *p = toy_plan(&o);
  check_timed_runs(p, "toy plan at dp 2");
  tb_free(p);
}

// MICRO of p in simulated time under m.
static dhx_sim_result timed_micro(const dhx_plan *p, const dhx_cost_model *m) {
  dhx_sim_result res;
  char err[512];
  CHECK(dhx_simulate(p, DHX_PROG_MICRO, dhx_cost_duration, (void *)m, NULL, &res, err, sizeof err));
  return res;
}

// A rank's compute is one resource: two compute streams take turns (the second starts when the
// first ends), while a collective on a third stream runs beside them from the start.
static void simulate_compute_streams_of_a_rank_share_the_device(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    compute(p, r, 0, "strand 0");
    compute(p, r, 1, "strand 1");
    collective(p, r, DHX_OP_ALLREDUCE, 2, 0, N, "beside");
  }
  dhx_cost_model m = dhx_cost_model_for(p);
  dhx_sim_result res = timed_micro(p, &m);
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *s0 = &res.slices[3 * r], *s1 = s0 + 1, *c = s0 + 2;
    double d = dhx_cost_instr(&m, p, &p->ranks[r].programs[DHX_PROG_MICRO].instrs[0]);
    CHECK(s0->start == 0 && s1->start == s0->end && s1->end > 2 * d * (1 - 1e-9));
    CHECK(c->start == 0);
  }
  printf("ok: two compute streams take %.3g us one after the other, the all-reduce starts at 0\n",
         res.slices[1].end * 1e6);
  dhx_sim_result_free(&res);
  tb_free(p);
}

// Turns (plan.h) order a rank's compute across its streams: the instruction with turn 1 runs
// first though its stream comes second, the other when it ends.
static void simulate_compute_follows_the_plans_turns(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    compute(p, r, 0, "strand 0")->turn = 2;
    compute(p, r, 1, "strand 1")->turn = 1;
  }
  expect_valid(p, "turns");
  dhx_cost_model m = dhx_cost_model_for(p);
  dhx_sim_result res = timed_micro(p, &m);
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *s0 = &res.slices[2 * r], *s1 = s0 + 1;
    CHECK(s1->start == 0 && s0->start == s1->end && s0->end > s0->start);
  }
  printf("ok: turn 1 (stream 1) runs first, turn 2 (stream 0) from %.3g us\n",
         res.slices[0].start * 1e6);
  dhx_sim_result_free(&res);
  tb_free(p);
}

// A turn can hang ranks that each look fine alone: rank 1's turn 1 waits for a message that
// rank 0 sends after an all-reduce, which rank 1 reaches only after its turn 2.
static void verify_ranks_rejects_a_turn_that_waits_for_another_rank(void) {
  dhx_plan *p = plan_of(2);
  int32_t summed = new_event(p, 0);
  collective(p, 0, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  on_event(p, 0, DHX_OP_RECORD, 0, summed, "x summed");
  on_event(p, 0, DHX_OP_WAIT, 1, summed, "x summed");
  transfer(p, 0, DHX_OP_SEND, 1, N, 1, 1, "send h");
  transfer(p, 1, DHX_OP_RECV, 1, N, 0, 1, "recv h");
  compute(p, 1, 1, "use h")->turn = 1;
  compute(p, 1, 0, "fill x")->turn = 2;
  collective(p, 1, DHX_OP_ALLREDUCE, 0, 0, N, "sum x");
  expect_valid(p, "a turn behind another rank");
  expect_rejected(p, (const char *[]){"which is blocked at stream 0 instr 2 (ZERO, turn 2, 'fill x')",
                                      "rank 1 stream 1 instr 0 -> rank 0 stream 1 instr 2", NULL});
  dhx_plan_program *g = &p->ranks[1].programs[DHX_PROG_MICRO];
  for (uint32_t i = 0; i < g->ninstrs; i++) g->instrs[i].turn = 0;
  expect_verified(p, "the same ranks without turns");
  tb_free(p);
}

// A communicator's links are one resource: two streams' collectives on it take turns; one on
// another communicator runs beside them.
static void simulate_collectives_on_one_communicator_take_turns(void) {
  dhx_plan *p = plan_of(2);
  int32_t both[2] = {0, 1};
  int32_t other = tb_comm(p, 2, both);
  for (uint32_t r = 0; r < 2; r++) {
    collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "strand 0");
    collective(p, r, DHX_OP_ALLREDUCE, 1, 0, N, "strand 1");
    collective(p, r, DHX_OP_ALLREDUCE, 2, other, N, "another group");
  }
  dhx_cost_model m = dhx_cost_model_for(p);
  dhx_sim_result res = timed_micro(p, &m);
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *a = &res.slices[3 * r], *b = a + 1, *c = a + 2;
    CHECK(a->start == 0 && b->start == a->end && c->start == 0);
  }
  printf("ok: the second all-reduce on comm 0 starts at %.3g us, the one on comm %d at 0\n",
         res.slices[1].start * 1e6, other);
  dhx_sim_result_free(&res);
  tb_free(p);
}

// Durations as a measured profile gives them: each collective three times the model's.
static double measured_slower(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                              const dhx_plan_instr *in) {
  double d = dhx_cost_duration(ctx, p, rank, prog, in);
  return dhx_op_on_comm(in->op) ? 3 * d : d;
}

// A measured collective holds its communicator's links only for the model's time of it
// (dhx_cost_link_hold): the other stream's collective starts then, while the first still
// blocks its own stream for its whole measured time. Without the hold they take turns whole.
static void simulate_measured_collective_holds_the_links_for_its_modelled_time(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "strand 0");
    collective(p, r, DHX_OP_ALLREDUCE, 1, 0, N, "strand 1");
  }
  dhx_cost_model m = dhx_cost_model_for(p);
  double wire = dhx_cost_instr(&m, p, &p->ranks[0].programs[DHX_PROG_MICRO].instrs[0]);
  char err[512];
  dhx_sim_result held, whole;
  dhx_sim_options o = {.interference = 1, .link_hold = dhx_cost_link_hold};
  CHECK(dhx_simulate_with(p, DHX_PROG_MICRO, measured_slower, &m, &o, NULL, &held, err, sizeof err));
  o.link_hold = NULL;
  CHECK(dhx_simulate_with(p, DHX_PROG_MICRO, measured_slower, &m, &o, NULL, &whole, err, sizeof err));
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *a = &held.slices[2 * r], *b = a + 1;
    CHECK(wire > 0 && a->start == 0 && fabs(a->end - 3 * wire) < 1e-12 * wire);
    CHECK(fabs(b->start - wire) < 1e-12 * wire && fabs(b->end - 4 * wire) < 1e-12 * wire);
    const dhx_sim_slice *wa = &whole.slices[2 * r], *wb = wa + 1;
    CHECK(wb->start == wa->end && fabs(wb->end - 6 * wire) < 1e-12 * wire);
  }
  printf("ok: measured all-reduces of %.3g us each, the second from %.3g us (%.3g us without "
         "the hold); the step ends at %.3g us (%.3g)\n", 3 * wire * 1e6, held.slices[1].start * 1e6,
         whole.slices[1].start * 1e6, held.makespan * 1e6, whole.makespan * 1e6);
  dhx_sim_result_free(&held);
  dhx_sim_result_free(&whole);
  tb_free(p);
}

// A deferred all-gather (plan.h: an event on a collective) lets its stream go on: on each of two
// ranks, stream 0 posts it (part into x), zeroes `inbox` meanwhile, then waits for it and zeroes
// x. With 10 us per instruction the first zeroing runs [0, 10) beside the all-gather [0, 10),
// and the last one [10, 20); as a plain collective they would take 30 us. The per-rank
// validator and the cross-rank verifier accept the plan; the validator refuses a second WAIT, a
// WAIT on another stream, a RECORD of the event, a deferred collective no WAIT completes, and
// zeroing x (which the all-gather writes) before the WAIT.
static double ten_us(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                     const dhx_plan_instr *in) {
  (void)ctx, (void)p, (void)rank, (void)prog;
  return in->op == DHX_OP_WAIT || in->op == DHX_OP_RECORD ? 0 : 10e-6;
}

// Two ranks: stream 0 posts the all-gather deferred to an event, zeroes inbox, waits, zeroes x;
// `broken` (0: none) adds a defect to rank 0's program.
static dhx_plan *deferred_plan(int broken) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    int32_t e = new_event(p, r);
    collective(p, r, DHX_OP_ALL_GATHER, 0, 0, N, "gather, deferred")->event = e;
    dhx_plan_instr *in = tb_rank_instr(p, r, DHX_PROG_MICRO, DHX_OP_ZERO, 0, "meanwhile");
    tb_arg_buf(in, r == 0 && broken == 5 ? g_b.x : g_b.inbox, 0);
    tb_arg_i64(in, N * 4);
    if (!(r == 0 && broken == 4)) on_event(p, r, DHX_OP_WAIT, r == 0 && broken == 2 ? 1 : 0, e,
                                           "gathered");
    if (r == 0 && broken == 1) on_event(p, r, DHX_OP_WAIT, 0, e, "gathered again");
    if (r == 0 && broken == 3) on_event(p, r, DHX_OP_RECORD, 1, e, "recorded elsewhere");
    compute(p, r, 0, "after");
  }
  return p;
}

static void simulate_deferred_collective_lets_its_stream_go_on(void) {
  dhx_plan *p = deferred_plan(0);
  expect_valid(p, "the deferred all-gather");
  expect_verified(p, "the deferred all-gather");
  char err[512];
  dhx_sim_result res;
  CHECK(dhx_simulate(p, DHX_PROG_MICRO, ten_us, NULL, NULL, &res, err, sizeof err));
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *gather = &res.slices[4 * r], *meanwhile = gather + 1, *after = gather + 3;
    CHECK(gather->start == 0 && fabs(gather->end - 10e-6) < 1e-15);
    CHECK(meanwhile->start == 0 && fabs(after->start - 10e-6) < 1e-15);
  }
  CHECK(fabs(res.makespan - 20e-6) < 1e-15);
  printf("ok: the stream computes beside its deferred all-gather; the step ends at %.3g us\n",
         res.makespan * 1e6);
  dhx_sim_result_free(&res);
  tb_free(p);
  const char *refusals[] = {"a second WAIT on deferred event 0",
                            "WAIT on deferred event 0 must come after its collective on its stream 0",
                            "RECORD of event 0, which a deferred collective records",
                            "deferred to event 0, which no WAIT completes",
                            "touches the bytes of deferred collective 0 ('gather, deferred') "
                            "before its WAIT (instr 2)"};
  for (int b = 1; b <= 5; b++) {
    p = deferred_plan(b);
    CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, refusals[b - 1]);
    printf("ok: %s\n", err);
    tb_free(p);
  }
}

// Unit times: compute 10 us, a collective 3 us of which 1 us on the wire.
static double unit_times(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                         const dhx_plan_instr *in) {
  (void)ctx, (void)p, (void)rank, (void)prog;
  return dhx_op_on_comm(in->op) ? 3e-6 : dhx_op_computes(in->op) ? 10e-6 : 0;
}
static double unit_wire(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                        const dhx_plan_instr *in) {
  (void)ctx, (void)p, (void)rank, (void)prog, (void)in;
  return 1e-6;
}

// On a CPU rank whose strands take turns, a collective runs on its strand's thread, which does
// not take the core from the other strand's running instruction: what follows its wire time
// waits until that instruction ends. Strand 1 computes [0, 10) us (turn 1) while strand 0's
// all-reduce is on the wire [0, 1); the all-reduce then ends at 10 + 2 us, not 3, and strand
// 0's compute (turn 2) starts then. Without turns the all-reduce ends at 3.
static void simulate_turns_hold_a_collective_until_the_core_is_free(void) {
  dhx_plan *p = plan_of(2);
  for (uint32_t r = 0; r < 2; r++) {
    compute(p, r, 1, "strand 1")->turn = 1;
    collective(p, r, DHX_OP_ALLREDUCE, 0, 0, N, "strand 0 sums");
    compute(p, r, 0, "strand 0")->turn = 2;
  }
  expect_valid(p, "turns beside a collective");
  char err[512];
  dhx_sim_options o = {.interference = 1, .link_hold = unit_wire};
  dhx_sim_result res;
  CHECK(dhx_simulate_with(p, DHX_PROG_MICRO, unit_times, NULL, &o, NULL, &res, err, sizeof err));
  for (uint32_t r = 0; r < 2; r++) {
    const dhx_sim_slice *k1 = &res.slices[3 * r], *c = k1 + 1, *k0 = k1 + 2;
    CHECK(k1->start == 0 && fabs(k1->end - 10e-6) < 1e-15);
    CHECK(c->start == 0 && fabs(c->end - 12e-6) < 1e-15);
    CHECK(fabs(k0->start - 12e-6) < 1e-15);
  }
  printf("ok: the all-reduce ends at %.3g us beside the other strand's compute, its strand's "
         "turn starts at %.3g us\n", res.slices[1].end * 1e6, res.slices[2].start * 1e6);
  dhx_sim_result_free(&res);
  for (uint32_t r = 0; r < 2; r++) {
    dhx_plan_program *g = &p->ranks[r].programs[DHX_PROG_MICRO];
    for (uint32_t i = 0; i < g->ninstrs; i++) g->instrs[i].turn = 0;
  }
  CHECK(dhx_simulate_with(p, DHX_PROG_MICRO, unit_times, NULL, &o, NULL, &res, err, sizeof err));
  CHECK(fabs(res.slices[1].end - 3e-6) < 1e-15);
  printf("ok: without turns it ends at %.3g us\n", res.slices[1].end * 1e6);
  dhx_sim_result_free(&res);
  tb_free(p);
}

// `verify_ranks_accepts_compiled_samples DIR...`: plans dhxc wrote, read as dhxrun reads them.
static void verify_ranks_accepts_compiled_samples(int ndirs, char **dirs) {
  CHECK(ndirs > 0);
  for (int i = 0; i < ndirs; i++) {
    char path[1024], err[2048];
    snprintf(path, sizeof path, "%s/plan.bin", dirs[i]);
    dhx_plan p;
    if (!dhx_plan_read(path, &p, err, sizeof err)) {
      fprintf(stderr, "%s: %s\n", path, err);
      exit(1);
    }
    expect_verified(&p, path);
    check_timed_runs(&p, path);
    dhx_plan_free(&p);
  }
}

// ---- scale ------------------------------------------------------------------------------------

enum { SCALE_RANKS = 1024, SCALE_LAYERS = 100, SCALE_TP = 8, SCALE_PER_LAYER = 21 };

typedef struct builder {
  dhx_plan_program *g;
  uint32_t cap;
} builder;

static const dhx_plan_gemm layer_gemm = {.m = 64, .n = 64, .k = 64, .batch = {1, 1}};

static dhx_plan_instr *put(builder *b, dhx_op op, uint32_t stream, int32_t comm) {
  CHECK(b->g->ninstrs < b->cap);
  dhx_plan_instr *in = &b->g->instrs[b->g->ninstrs++];
  memset(in, 0, sizeof *in);
  *in = (dhx_plan_instr){.op = op, .stream = stream, .kernel = -1, .comm = comm, .event = -1,
                         .dtype = comm >= 0 ? DHX_F32 : 0};
  in->note = "layer op";
  return in;
}

static void put_count(dhx_plan_instr *in, int64_t count, int64_t peer) {
  in->args[0] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = 0};
  in->args[1] = (dhx_plan_arg){.kind = DHX_ARG_I64, .buf = -1, .i = count};
  in->nargs = 2;
  if (peer < 0) return;
  in->args[2] = (dhx_plan_arg){.kind = DHX_ARG_I64, .buf = -1, .i = peer};
  in->args[3] = (dhx_plan_arg){.kind = DHX_ARG_I64, .buf = -1, .i = 9};
  in->nargs = 4;
}

static void put_event(builder *b, dhx_op op, uint32_t stream, int32_t e) {
  put(b, op, stream, -1)->event = e;
}

// One layer of rank r: compute, a tensor-parallel all-reduce in its group of SCALE_TP on the
// compute stream, then on the comm stream a ring exchange over all ranks and a data-parallel
// all-reduce over the ranks with the same place in their groups, ordered by events.
static void scale_layer(builder *b, uint32_t r, int layer) {
  int32_t go = 2 * layer, done = 2 * layer + 1;
  int32_t tp = 1 + (int32_t)(r / SCALE_TP), dp = 1 + SCALE_RANKS / SCALE_TP + (int32_t)(r % SCALE_TP);
  for (int i = 0; i < 8; i++) put(b, DHX_OP_GEMM, 0, -1)->gemm = &layer_gemm;
  put_count(put(b, DHX_OP_ALLREDUCE, 0, tp), 4096, -1);
  put_event(b, DHX_OP_RECORD, 0, go);
  put_event(b, DHX_OP_WAIT, 1, go);
  uint32_t right = (r + 1) % SCALE_RANKS, left = (r + SCALE_RANKS - 1) % SCALE_RANKS;
  for (int phase = 0; phase < 2; phase++)
    if ((phase == 0) == (r % 2 == 0)) put_count(put(b, DHX_OP_SEND, 1, 0), 1024, right);
    else put_count(put(b, DHX_OP_RECV, 1, 0), 1024, left);
  put_count(put(b, DHX_OP_ALLREDUCE, 1, dp), 1 << 16, -1);
  put_event(b, DHX_OP_RECORD, 1, done);
  for (int i = 0; i < 5; i++) put(b, DHX_OP_GEMM, 0, -1)->gemm = &layer_gemm;
  put_event(b, DHX_OP_WAIT, 0, done);
}

static dhx_plan *scale_plan(void) {
  dhx_plan *p = tb_new(SCALE_RANKS);
  int32_t *ranks = calloc(SCALE_RANKS, sizeof(int32_t));
  CHECK(ranks != NULL);
  for (int r = 0; r < SCALE_RANKS; r++) ranks[r] = r;
  tb_comm(p, SCALE_RANKS, ranks);  // 0: everyone
  for (int g = 0; g < SCALE_RANKS / SCALE_TP; g++) tb_comm(p, SCALE_TP, ranks + g * SCALE_TP);
  for (int j = 0; j < SCALE_TP; j++) {  // ranks j, j + TP, j + 2 TP, ...
    for (int i = 0; i < SCALE_RANKS / SCALE_TP; i++) ranks[i] = j + i * SCALE_TP;
    tb_comm(p, SCALE_RANKS / SCALE_TP, ranks);
  }
  free(ranks);
  for (uint32_t r = 0; r < SCALE_RANKS; r++) {
    dhx_plan_program *g = &p->ranks[r].programs[DHX_PROG_MICRO];
    builder b = {g, SCALE_PER_LAYER * SCALE_LAYERS};
    g->instrs = calloc(b.cap, sizeof(dhx_plan_instr));
    CHECK(g->instrs != NULL);
    g->nstreams = 2;
    g->nevents = 2 * SCALE_LAYERS;
    for (int layer = 0; layer < SCALE_LAYERS; layer++) scale_layer(&b, r, layer);
  }
  return p;
}

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void verify_ranks_scales(void) {
  dhx_plan *p = scale_plan();
  uint32_t n = p->ranks[0].programs[DHX_PROG_MICRO].ninstrs;
  double t0 = seconds();
  expect_verified(p, "1024 ranks");
  double t1 = seconds();
  dhx_cost_model m = dhx_cost_model_for(p);
  dhx_sim_result res;
  char err[2048];
  CHECK(dhx_simulate(p, DHX_PROG_MICRO, dhx_cost_duration, &m, NULL, &res, err, sizeof err));
  double t2 = seconds();
  printf("%d ranks x %u instructions: verified in %.3f s, timed in %.3f s (makespan %.1f us, "
         "%" PRId64 " rendezvous)\n", SCALE_RANKS, n, t1 - t0, t2 - t1, res.makespan * 1e6,
         res.nmatches);
  dhx_sim_result_free(&res);
  // One rank that sends twice instead of receiving, deep in the plan: still found, and named.
  dhx_plan_program *g = &p->ranks[513].programs[DHX_PROG_MICRO];
  for (uint32_t i = n / 2; i < n; i++)
    if (g->instrs[i].op == DHX_OP_RECV) {
      g->instrs[i].op = DHX_OP_SEND;
      g->instrs[i].args[2].i = 514;
      break;
    }
  t0 = seconds();
  // The send of rank 512 that rank 513's lost receive was for is the first left unmatched.
  expect_rejected(p, (const char *[]){"rank 512 stream 1 instr", "(SEND of 1024 f32 to peer 513",
                                      "has no matching RECV on rank 513", "rank 513's last RECV "
                                      "there is stream 1 instr", NULL});
  printf("rejected in %.3f s\n", seconds() - t0);
  tb_free(p);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "verify_ranks_accepts_compiled_samples") == 0) {
    verify_ranks_accepts_compiled_samples(argc - 2, argv + 2);
    printf("%s: passed\n", argv[1]);
    return 0;
  }
  static const tl_test tests[] = {
      {"verify_ranks_accepts_valid_hand_plans", verify_ranks_accepts_valid_hand_plans},
      {"verify_ranks_rejects_opposite_comm_order", verify_ranks_rejects_opposite_comm_order},
      {"verify_ranks_rejects_send_without_receive", verify_ranks_rejects_send_without_receive},
      {"verify_ranks_rejects_receive_without_send", verify_ranks_rejects_receive_without_send},
      {"verify_ranks_rejects_mismatched_counts", verify_ranks_rejects_mismatched_counts},
      {"verify_ranks_rejects_mismatched_dtypes", verify_ranks_rejects_mismatched_dtypes},
      {"verify_ranks_rejects_mismatched_all_to_all_counts",
       verify_ranks_rejects_mismatched_all_to_all_counts},
      {"verify_ranks_rejects_mismatched_collective_kinds",
       verify_ranks_rejects_mismatched_collective_kinds},
      {"verify_ranks_rejects_cross_rank_event_cycle", verify_ranks_rejects_cross_rank_event_cycle},
      {"verify_ranks_rejects_peers_that_both_send_first",
       verify_ranks_rejects_peers_that_both_send_first},
      {"simulate_makespan_covers_every_stream", simulate_makespan_covers_every_stream},
      {"simulate_compute_streams_of_a_rank_share_the_device",
       simulate_compute_streams_of_a_rank_share_the_device},
      {"simulate_compute_follows_the_plans_turns", simulate_compute_follows_the_plans_turns},
      {"verify_ranks_rejects_a_turn_that_waits_for_another_rank",
       verify_ranks_rejects_a_turn_that_waits_for_another_rank},
      {"simulate_collectives_on_one_communicator_take_turns",
       simulate_collectives_on_one_communicator_take_turns},
      {"simulate_measured_collective_holds_the_links_for_its_modelled_time",
       simulate_measured_collective_holds_the_links_for_its_modelled_time},
      {"simulate_turns_hold_a_collective_until_the_core_is_free",
       simulate_turns_hold_a_collective_until_the_core_is_free},
      {"simulate_deferred_collective_lets_its_stream_go_on",
       simulate_deferred_collective_lets_its_stream_go_on},
      {"verify_ranks_scales", verify_ranks_scales},
  };
  return tl_main("schedule_tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
