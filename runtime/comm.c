// comm.c — communicators and the ring all-reduce of the CPU backend.
//
// Each communicator of the plan (a list of world ranks) becomes one MPI communicator per stream
// that all-reduces on it, created with MPI_Comm_create_group (collective over the members
// only). Streams run concurrently, so giving each its own communicator keeps their messages
// apart without tags; the plan validator has checked that all members issue the same sequence
// of all-reduces on each (communicator, stream), so the exchanges pair up.
//
// The all-reduce is written out as a ring over MPI_Sendrecv rather than MPI_Allreduce because:
//   * every member ends with bitwise-identical sums: each chunk is summed once, in a fixed
//     order, by one rank and then copied to the others;
//   * the bytes a rank sends are known exactly (2(p-1) chunks ≈ 2(p-1)/p of the buffer);
//   * a slower network can be emulated per message (latency + bytes/bandwidth, slept before
//     sending), so communication/computation overlap is measurable on one machine.
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhxrt.h"

#define MAX_MSG_FLOATS (1 << 28)  // MPI counts are int; longer chunks go in pieces

typedef struct ring {
  MPI_Comm comm;  // MPI_COMM_NULL when this rank does not all-reduce here
  int size, rank;
  float *scratch;  // receive buffer of the reduce-scatter
  int64_t scratch_n;
} ring;

struct dhx_comms {
  uint32_t n;
  ring (*rings)[DHX_MAX_STREAMS];  // [plan communicator][stream]
  double bandwidth, latency;       // emulated network; bandwidth 0 = none
  _Atomic uint64_t bytes_sent;
};

// Streams on which any rank all-reduces over communicator c (the same answer on every rank,
// since every rank reads the same plan).
static uint32_t streams_used(const dhx_plan *plan, int32_t c) {
  uint32_t mask = 0;
  for (uint32_t r = 0; r < plan->nranks; r++)
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      const dhx_plan_program *prog = &plan->ranks[r].programs[p];
      for (uint32_t i = 0; i < prog->ninstrs; i++)
        if (prog->instrs[i].op == DHX_OP_ALLREDUCE && prog->instrs[i].comm == c)
          mask |= 1u << prog->instrs[i].stream;
    }
  return mask;
}

static bool is_member(const dhx_plan_comm *c, int world_rank) {
  for (uint32_t i = 0; i < c->nranks; i++)
    if (c->ranks[i] == world_rank) return true;
  return false;
}

dhx_comms *dhx_comms_new(const dhx_plan *plan, int world_rank) {
  dhx_comms *cs = calloc(1, sizeof *cs);
  if (!cs) MPI_Abort(MPI_COMM_WORLD, 1);
  cs->n = plan->ncomms;
  cs->rings = calloc(plan->ncomms ? plan->ncomms : 1, sizeof *cs->rings);
  if (!cs->rings) MPI_Abort(MPI_COMM_WORLD, 1);
  cs->bandwidth = plan->train.net_bandwidth;
  cs->latency = plan->train.net_latency;
  atomic_init(&cs->bytes_sent, 0);
  MPI_Group world;
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  // Ascending communicator order on every rank, so overlapping groups are created in the same
  // order by their common members.
  for (uint32_t c = 0; c < plan->ncomms; c++) {
    for (int s = 0; s < DHX_MAX_STREAMS; s++) cs->rings[c][s].comm = MPI_COMM_NULL;
    const dhx_plan_comm *pc = &plan->comms[c];
    uint32_t mask = streams_used(plan, (int32_t)c);
    if (pc->nranks < 2 || !mask || !is_member(pc, world_rank)) continue;  // nothing to exchange
    MPI_Group group;
    MPI_Group_incl(world, (int)pc->nranks, pc->ranks, &group);
    for (int s = 0; s < DHX_MAX_STREAMS; s++) {
      if (!(mask & (1u << s))) continue;
      ring *r = &cs->rings[c][s];
      MPI_Comm_create_group(MPI_COMM_WORLD, group, s, &r->comm);
      MPI_Comm_size(r->comm, &r->size);
      MPI_Comm_rank(r->comm, &r->rank);
    }
    MPI_Group_free(&group);
  }
  MPI_Group_free(&world);
  return cs;
}

void dhx_comms_free(dhx_comms *cs) {
  if (!cs) return;
  for (uint32_t c = 0; c < cs->n; c++)
    for (int s = 0; s < DHX_MAX_STREAMS; s++) {
      ring *r = &cs->rings[c][s];
      if (r->comm != MPI_COMM_NULL) MPI_Comm_free(&r->comm);
      free(r->scratch);
    }
  free(cs->rings);
  free(cs);
}

uint64_t dhx_comms_take_bytes(dhx_comms *cs) {
  return cs ? atomic_exchange(&cs->bytes_sent, 0) : 0;
}

// The emulated network: a message of `bytes` leaves after latency + bytes/bandwidth.
static void network_delay(const dhx_comms *cs, int64_t bytes) {
  if (cs->bandwidth <= 0) return;
  double sec = cs->latency + (double)bytes / cs->bandwidth;
  struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = (long)((sec - (double)(time_t)sec) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

// Sends `sn` floats to the right neighbour while receiving `rn` from the left one, as `pieces`
// messages each way so MPI's int counts can hold them. Every rank uses the same number of
// pieces (from the largest chunk), including empty ones, so each message always meets its
// matching receive even when chunks are empty (count < ring size).
static void exchange(dhx_comms *cs, ring *r, const float *send, int64_t sn, float *recv,
                     int64_t rn, int64_t pieces) {
  int right = (r->rank + 1) % r->size, left = (r->rank + r->size - 1) % r->size;
  for (int64_t k = 0; k < pieces; k++) {
    int64_t at = k * MAX_MSG_FLOATS;
    int64_t s = sn - at < MAX_MSG_FLOATS ? sn - at : MAX_MSG_FLOATS;
    int64_t q = rn - at < MAX_MSG_FLOATS ? rn - at : MAX_MSG_FLOATS;
    s = s < 0 ? 0 : s;
    q = q < 0 ? 0 : q;
    network_delay(cs, s * 4);
    MPI_Sendrecv(send + (s ? at : 0), (int)s, MPI_FLOAT, right, 0, recv + (q ? at : 0), (int)q,
                 MPI_FLOAT, left, 0, r->comm, MPI_STATUS_IGNORE);
    atomic_fetch_add(&cs->bytes_sent, (uint64_t)s * 4);
  }
}

// Chunk c of p over n elements: [n*c/p, n*(c+1)/p) without overflow.
static int64_t chunk_start(int64_t n, int p, int c) { return n / p * c + (c < n % p ? c : n % p); }
static int64_t chunk_len(int64_t n, int p, int c) { return n / p + (c < n % p ? 1 : 0); }

void dhx_allreduce_sum(dhx_comms *cs, int comm, int stream, float *x, int64_t count) {
  if (!cs || comm < 0 || (uint32_t)comm >= cs->n || stream < 0 || stream >= DHX_MAX_STREAMS)
    return;
  ring *r = &cs->rings[comm][stream];
  if (r->comm == MPI_COMM_NULL || r->size < 2 || count <= 0) return;  // p == 1: a no-op
  int p = r->size, me = r->rank;
  int64_t biggest = chunk_len(count, p, 0);
  int64_t pieces = (biggest + MAX_MSG_FLOATS - 1) / MAX_MSG_FLOATS;
  if (r->scratch_n < biggest) {
    free(r->scratch);
    r->scratch = malloc(sizeof(float) * (size_t)biggest);
    if (!r->scratch) MPI_Abort(MPI_COMM_WORLD, 1);
    r->scratch_n = biggest;
  }
  // Reduce-scatter: at step s a rank passes on the partial sum of chunk (me - s) and adds its
  // own values to the arriving partial of chunk (me - s - 1). After p-1 steps chunk (me + 1)
  // holds the sum over all ranks.
  for (int s = 0; s < p - 1; s++) {
    int sc = (me - s + p) % p, rc = (me - s - 1 + p) % p;
    int64_t rn = chunk_len(count, p, rc);
    float *dst = x + chunk_start(count, p, rc);
    exchange(cs, r, x + chunk_start(count, p, sc), chunk_len(count, p, sc), r->scratch, rn, pieces);
    for (int64_t i = 0; i < rn; i++) dst[i] += r->scratch[i];
  }
  // All-gather: pass the finished chunks around the ring, each copied as is.
  for (int s = 0; s < p - 1; s++) {
    int sc = (me + 1 - s + p) % p, rc = (me - s + p) % p;
    exchange(cs, r, x + chunk_start(count, p, sc), chunk_len(count, p, sc),
             x + chunk_start(count, p, rc), chunk_len(count, p, rc), pieces);
  }
}
