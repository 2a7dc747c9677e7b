// comm.c — communicators, the ring collectives and the transfers of the CPU backend.
//
// Each communicator of the plan (a list of world ranks) becomes one MPI communicator per stream
// that exchanges on it, created with MPI_Comm_create_group (collective over the members only;
// a member's rank in it is its index in the plan's list). Streams run concurrently, so giving
// each its own communicator keeps their messages apart; the plan validator has checked that all
// members issue the same sequence of collectives on each (communicator, stream) and that every
// send meets its receive in order, so the exchanges pair up.
//
// ALL_TO_ALL is p-1 pairwise exchanges on the same communicators, counted and delayed alike.
//
// The all-reduce is a ring reduce-scatter followed by a ring all-gather (the same two halves
// serve the REDUCE_SCATTER and ALL_GATHER ops), written out over pairwise exchanges rather than
// MPI_Allreduce because:
//   * every member ends with bitwise-identical sums: each chunk is summed once, in a fixed
//     order, by one rank and then copied to the others;
//   * the bytes a rank sends are known exactly (2(p-1) chunks ≈ 2(p-1)/p of the buffer);
//   * a slower network can be emulated per message (a link per rank that its messages share:
//     bytes/bandwidth on the link, then the latency; slept before sending), so
//     communication/computation overlap is measurable on one machine.
//
// Every exchange is non-blocking (MPI_Isend/MPI_Irecv) and waited for by polling with sleeps
// (wait_all), not in MPI's busy loop: a stream waiting for its peers must leave the core to the
// stream that computes beside it (paired strands).
//
// A deferred collective (plan.h: dhx_instr_deferred) is split in two where that is one exchange:
// a reduce-scatter or all-gather over 2 members whose chunks fit in one message. dhx_comms_post
// starts its messages and returns; dhx_comms_complete, at the WAIT on its event, waits for them
// and (reduce-scatter) adds, in the order the synchronous ring adds, so the bytes are the same.
// The messages in flight live in a record per event of this rank's programs, allocated once.
// Anything else runs whole at the post. On the emulated network the post reserves the link as
// a synchronous send would but does not sleep; it sends the data at once, with its leave time
// beside it, and the completion sleeps until both members' messages would have left. The ranks
// compare those times on CLOCK_MONOTONIC, which only ranks on one host share: with ranks on
// several hosts an emulated deferred collective runs whole at the post instead.
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dhxrt.h"

#define MAX_MSG_FLOATS (1 << 28)  // MPI counts are int; longer chunks go in pieces
#define WAIT_SPIN_NS 50000        // wait_all's polling before its first sleep
#define WAIT_SPINS 64             // and its polls at least
// The tags of a deferred collective's data and of its sender's leave time (emulated network),
// above every transfer's tag (0..DHX_MAX_TAG) and the synchronous exchanges' 0, so a message
// in flight across later instructions cannot meet one of theirs.
#define DEFERRED_TAG (DHX_MAX_TAG + 1)
#define LEAVE_TAG (DHX_MAX_TAG + 2)

typedef struct ring {
  MPI_Comm comm;  // MPI_COMM_NULL when this rank does not exchange here
  int size, rank;
  const int32_t *world;  // world rank of each member (the plan's list, ascending)
  float *scratch;  // receive buffer of the reduce-scatter
  int64_t scratch_n;
} ring;

// A deferred collective between its post and its completion (dhx_comms_post), by event id.
// Only the stream that posted it touches it: the validator puts the WAIT on the same stream.
typedef struct pending {
  ring *r;             // NULL: nothing pending under this event
  MPI_Request reqs[4];  // receive, send; emulated: the peer's leave time, ours
  int nreqs;
  bool timed;          // emulated network: completion sleeps until both messages have left
  bool sum;            // a reduce-scatter: out[i] = own[i] + scratch[i] at completion
  const float *own;    // this rank's chunk of the reduce-scatter's input
  float *out;
  int64_t n;           // elements received
  float *scratch;      // the reduce-scatter's received partial; kept for the next step
  int64_t scratch_n;
  double leave, peer_leave;  // emulated: when our message and the peer's leave (CLOCK_MONOTONIC)
} pending;

struct dhx_comms {
  uint32_t n;
  ring (*rings)[DHX_MAX_STREAMS];  // [plan communicator][stream]
  pending *pending;                // one per event of this rank's largest program
  uint32_t npending;
  bool tags_fit;   // MPI's tag bound admits DEFERRED_TAG and LEAVE_TAG: collectives may defer
  bool one_host;   // every world rank runs on this host (shares its CLOCK_MONOTONIC)
  double bandwidth, latency;       // emulated network; bandwidth 0 = none
  pthread_mutex_t link_lock;       // guards link_free
  double link_free;                // CLOCK_MONOTONIC seconds when this rank's link is next free
  _Atomic uint64_t bytes_sent;
  _Atomic uint64_t kind_bytes[DHX_WIRE_KINDS];  // the same bytes by purpose (plan_wire.c)
  _Atomic uint64_t inter_node_bytes[DHX_WIRE_KINDS];  // of them, sent to ranks on other nodes
  int world_rank;
  int64_t per_node;  // ranks per node (consecutive world ranks); 0: all on one node
  int64_t spin_ns;   // how long a wait polls before its first sleep (wait_all)
};

// The kind the calling stream's exchanges count under: each stream runs on its own thread and
// says what it exchanges for before each collective (dhx_comms_count_as).
static _Thread_local int counted_as = DHX_WIRE_OTHER;

void dhx_comms_count_as(int kind) {
  counted_as = kind >= 0 && kind < DHX_WIRE_KINDS ? kind : DHX_WIRE_OTHER;
}

// Counts bytes sent to member `to` of ring r, and whether they leave the node.
static void count_sent(dhx_comms *cs, const ring *r, int to, uint64_t bytes) {
  atomic_fetch_add(&cs->bytes_sent, bytes);
  atomic_fetch_add(&cs->kind_bytes[counted_as], bytes);
  if (cs->per_node > 0 && r->world[to] / cs->per_node != cs->world_rank / cs->per_node)
    atomic_fetch_add(&cs->inter_node_bytes[counted_as], bytes);
}

// Streams on which any rank exchanges over communicator c (the same answer on every rank,
// since every rank reads the same plan).
static uint32_t streams_used(const dhx_plan *plan, int32_t c) {
  uint32_t mask = 0;
  for (uint32_t r = 0; r < plan->nranks; r++)
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      const dhx_plan_program *prog = &plan->ranks[r].programs[p];
      for (uint32_t i = 0; i < prog->ninstrs; i++)
        if (dhx_op_on_comm(prog->instrs[i].op) &&
            dhx_rank_comm(&plan->ranks[r], prog->instrs[i].comm) == c)
          mask |= 1u << prog->instrs[i].stream;
    }
  return mask;
}

static bool is_member(const dhx_plan_comm *c, int world_rank) {
  for (uint32_t i = 0; i < c->nranks; i++)
    if (c->ranks[i] == world_rank) return true;
  return false;
}

// Whether MPI admits the deferred collectives' tags (it guarantees only DHX_MAX_TAG; OpenMPI
// and MPICH admit far more). The same answer on every rank, so both members of a ring defer
// alike.
static bool deferred_tags_fit(void) {
  int *ub = NULL, flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  return flag && ub && *ub >= LEAVE_TAG;
}

// A pending record per event of this rank's largest program: events are numbered per program
// and programs run one at a time, so the event id names the collective in flight.
static void alloc_pending(dhx_comms *cs, const dhx_plan *plan, int world_rank) {
  uint32_t n = 0;
  if (world_rank >= 0 && (uint32_t)world_rank < plan->nranks)
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      uint32_t e = plan->ranks[world_rank].programs[p].nevents;
      n = e > n ? e : n;
    }
  cs->pending = calloc(n ? n : 1, sizeof *cs->pending);
  if (!cs->pending) MPI_Abort(MPI_COMM_WORLD, 1);
  cs->npending = n;
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
  for (int k = 0; k < DHX_WIRE_KINDS; k++) atomic_init(&cs->kind_bytes[k], 0);
  for (int k = 0; k < DHX_WIRE_KINDS; k++) atomic_init(&cs->inter_node_bytes[k], 0);
  cs->world_rank = world_rank;
  cs->per_node = plan->train.per_node;
  pthread_mutex_init(&cs->link_lock, NULL);
  // Polling pays only where each rank has a core of its own; where ranks share cores, a polling
  // rank takes the core its peer needs to arrive.
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int local = world_size > 1 ? dhx_ranks_on_node() : 1;
  cs->spin_ns = world_size > 1 && local <= cores ? WAIT_SPIN_NS : 0;
  cs->one_host = local == world_size;
  cs->tags_fit = deferred_tags_fit();
  alloc_pending(cs, plan, world_rank);
  MPI_Group world;
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  // Ascending communicator order on every rank, so overlapping groups are created in the same
  // order by their common members.
  for (uint32_t c = 0; c < plan->ncomms; c++) {
    const dhx_plan_comm *pc = &plan->comms[c];
    for (int s = 0; s < DHX_MAX_STREAMS; s++)
      cs->rings[c][s] = (ring){.comm = MPI_COMM_NULL, .size = (int)pc->nranks, .world = pc->ranks};
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
  for (uint32_t e = 0; e < cs->npending; e++) free(cs->pending[e].scratch);
  free(cs->pending);
  free(cs->rings);
  pthread_mutex_destroy(&cs->link_lock);
  free(cs);
}

uint64_t dhx_comms_take_bytes(dhx_comms *cs) {
  return cs ? atomic_exchange(&cs->bytes_sent, 0) : 0;
}

uint64_t dhx_comms_take_inter_node_bytes(dhx_comms *cs, int kind) {
  return cs && kind >= 0 && kind < DHX_WIRE_KINDS ? atomic_exchange(&cs->inter_node_bytes[kind], 0)
                                                  : 0;
}

uint64_t dhx_comms_take_kind_bytes(dhx_comms *cs, int kind) {
  return cs && kind >= 0 && kind < DHX_WIRE_KINDS ? atomic_exchange(&cs->kind_bytes[kind], 0) : 0;
}

// The emulated network: one link per rank, which its streams' messages share. A message of
// `bytes` takes the link when it is free (at once, or after the messages queued before it)
// for bytes/bandwidth, and leaves `latency` after that; the sender sleeps until then. Without
// the shared link two strands' collectives would each get the whole bandwidth at once, and
// overlap would look better than any real network allows.
//
// Takes the link for a message of `bytes` sent now and returns when it leaves.
static double reserve_link(dhx_comms *cs, int64_t bytes) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double t = (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
  pthread_mutex_lock(&cs->link_lock);
  double start = cs->link_free > t ? cs->link_free : t;
  cs->link_free = start + (double)bytes / cs->bandwidth;
  double leave = cs->link_free + cs->latency;
  pthread_mutex_unlock(&cs->link_lock);
  return leave;
}

// Sleeps until CLOCK_MONOTONIC reads `leave` seconds.
static void sleep_until(double leave) {
  struct timespec until = {.tv_sec = (time_t)leave,
                           .tv_nsec = (long)((leave - (double)(time_t)leave) * 1e9)};
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0) {
  }
}

static void network_delay(dhx_comms *cs, int64_t bytes) {
  if (cs->bandwidth > 0) sleep_until(reserve_link(cs, bytes));
}

// Waits for `n` requests without holding a core: MPI's blocking calls poll in a busy loop, and
// while one strand's stream waits for its peers the other strand's stream computes on the same
// core (the CPU backend gives each rank about one). So poll WAIT_SPINS times and, where each
// rank has a core of its own, for up to WAIT_SPIN_NS (cs->spin_ns), then sleep between polls,
// backing off to WAIT_SLEEP_MAX_NS. The polls are short (an MPI_Testall takes
// about 0.04 µs on one node), and a sleep wakes 20 µs or more late on a virtual machine, while
// a peer mostly comes within 50 µs (bench/strands_cpu at parity: 20 µs apart at the median, 54
// at the 90th percentile): polling that long before the first sleep made the unpaired and the
// paired steps 4% and 6% shorter than 64 polls (a few µs) did.
#define WAIT_SLEEP_MAX_NS 50000
static int64_t monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void wait_all(const dhx_comms *cs, MPI_Request *reqs, int n) {
  int64_t spin_until = monotonic_ns() + cs->spin_ns;
  bool polling = true;
  long sleep_ns = 1000;
  for (int k = 1;; k++) {
    int done = 0;
    MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (polling) {  // the clock every 16 polls
      polling = k < WAIT_SPINS || k % 16 != 0 || monotonic_ns() < spin_until;
      if (polling) continue;
    }
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < WAIT_SLEEP_MAX_NS) sleep_ns *= 2;
  }
}

// Sends `sn` floats to member `to` while receiving `rn` from member `from`, as `pieces`
// messages each way so MPI's int counts can hold them. Every rank uses the same number of
// pieces (from the largest chunk), including empty ones, so each message always meets its
// matching receive even when chunks are empty (count < ring size).
static void exchange_with(dhx_comms *cs, ring *r, const float *send, int64_t sn, int to,
                          float *recv, int64_t rn, int from, int64_t pieces) {
  for (int64_t k = 0; k < pieces; k++) {
    int64_t at = k * MAX_MSG_FLOATS;
    int64_t s = sn - at < MAX_MSG_FLOATS ? sn - at : MAX_MSG_FLOATS;
    int64_t q = rn - at < MAX_MSG_FLOATS ? rn - at : MAX_MSG_FLOATS;
    s = s < 0 ? 0 : s;
    q = q < 0 ? 0 : q;
    network_delay(cs, s * 4);
    MPI_Request reqs[2];
    MPI_Irecv(recv + (q ? at : 0), (int)q, MPI_FLOAT, from, 0, r->comm, &reqs[0]);
    MPI_Isend(send + (s ? at : 0), (int)s, MPI_FLOAT, to, 0, r->comm, &reqs[1]);
    wait_all(cs, reqs, 2);
    count_sent(cs, r, to, (uint64_t)s * 4);
  }
}

// The ring's step: to the right neighbour, from the left one.
static void exchange(dhx_comms *cs, ring *r, const float *send, int64_t sn, float *recv,
                     int64_t rn, int64_t pieces) {
  exchange_with(cs, r, send, sn, (r->rank + 1) % r->size, recv, rn,
                (r->rank + r->size - 1) % r->size, pieces);
}

// Chunk c of p over n elements: [n*c/p, n*(c+1)/p) without overflow.
static int64_t chunk_start(int64_t n, int p, int c) { return n / p * c + (c < n % p ? c : n % p); }
static int64_t chunk_len(int64_t n, int p, int c) { return n / p + (c < n % p ? 1 : 0); }

// The ring of plan communicator `comm` on `stream`, or NULL when this rank has no one to
// exchange with there.
static ring *ring_of(dhx_comms *cs, int comm, int stream) {
  if (!cs || comm < 0 || (uint32_t)comm >= cs->n || stream < 0 || stream >= DHX_MAX_STREAMS)
    return NULL;
  ring *r = &cs->rings[comm][stream];
  return r->comm == MPI_COMM_NULL || r->size < 2 ? NULL : r;
}

int dhx_comms_members(dhx_comms *cs, int comm, int stream, int *rank) {
  ring *r = ring_of(cs, comm, stream);
  if (!r) return 0;
  *rank = r->rank;
  return r->size;
}

void dhx_comms_bcast(dhx_comms *cs, int comm, int stream, void *data, int bytes) {
  ring *r = ring_of(cs, comm, stream);
  if (r) MPI_Bcast(data, bytes, MPI_BYTE, 0, r->comm);
}

// Whether plan communicator `comm` has this rank as its only member.
static bool alone_in(const dhx_comms *cs, int comm) {
  return cs && comm >= 0 && (uint32_t)comm < cs->n && cs->rings[comm][0].size == 1;
}

// Grows a receive buffer to hold n floats; kept from then on, so steps after the first
// allocate nothing.
static void reserve_floats(float **buf, int64_t *cap, int64_t n) {
  if (*cap >= n) return;
  free(*buf);
  *buf = malloc(sizeof(float) * (size_t)n);
  if (!*buf) MPI_Abort(MPI_COMM_WORLD, 1);
  *cap = n;
}

// Messages per exchange of a ring over `count` elements (from the largest chunk, so every
// member uses the same number).
static int64_t ring_pieces(int64_t count, int p) {
  return (chunk_len(count, p, 0) + MAX_MSG_FLOATS - 1) / MAX_MSG_FLOATS;
}

// Ring reduce-scatter of `count` elements of `in`: this rank ends with the sum over all members
// of chunk (rank + shift) % p. At step s a rank passes on the partial sum of one chunk and adds
// its own values to the arriving partial of the next, so each chunk is summed once, in a fixed
// order. In place (`sums` is `in`), each partial lands in its chunk of `in`; otherwise `sums`
// is one chunk long and holds the latest partial.
static void ring_reduce_scatter(dhx_comms *cs, ring *r, const float *in, float *sums,
                                bool in_place, int64_t count, int shift) {
  int p = r->size, me = r->rank;
  int64_t pieces = ring_pieces(count, p);
  reserve_floats(&r->scratch, &r->scratch_n, chunk_len(count, p, 0));
  for (int s = 0; s < p - 1; s++) {
    int sc = (me + shift - 1 - s + 2 * p) % p, rc = (me + shift - 2 - s + 2 * p) % p;
    int64_t rn = chunk_len(count, p, rc);
    const float *own = in + chunk_start(count, p, rc);
    const float *send = s == 0 || in_place ? in + chunk_start(count, p, sc) : sums;
    float *dst = in_place ? sums + chunk_start(count, p, rc) : sums;
    exchange(cs, r, send, chunk_len(count, p, sc), r->scratch, rn, pieces);
    for (int64_t i = 0; i < rn; i++) dst[i] = own[i] + r->scratch[i];
  }
}

// Ring all-gather over `x` (count elements): this rank starts with chunk (rank + shift) % p in
// place and passes the finished chunks around the ring, each copied as is.
static void ring_all_gather(dhx_comms *cs, ring *r, float *x, int64_t count, int shift) {
  int p = r->size, me = r->rank;
  int64_t pieces = ring_pieces(count, p);
  for (int s = 0; s < p - 1; s++) {
    int sc = (me + shift - s + p) % p, rc = (me + shift - 1 - s + p) % p;
    exchange(cs, r, x + chunk_start(count, p, sc), chunk_len(count, p, sc),
             x + chunk_start(count, p, rc), chunk_len(count, p, rc), pieces);
  }
}

// Reduce-scatter, then all-gather, each shifted by one chunk (the finished sum of a rank is the
// chunk after its own), which is the order of summation every earlier version used.
void dhx_allreduce_sum(dhx_comms *cs, int comm, int stream, float *x, int64_t count) {
  ring *r = ring_of(cs, comm, stream);
  if (!r || count <= 0) return;  // p == 1: a no-op
  ring_reduce_scatter(cs, r, x, x, true, count, 1);
  ring_all_gather(cs, r, x, count, 1);
}

void dhx_reduce_scatter_sum(dhx_comms *cs, int comm, int stream, const float *in, float *out,
                            int64_t count) {
  ring *r = ring_of(cs, comm, stream);
  if (count <= 0) return;
  if (!r) {  // p == 1: the whole sum is this rank's own input
    if (alone_in(cs, comm)) memcpy(out, in, sizeof(float) * (size_t)count);
    return;
  }
  ring_reduce_scatter(cs, r, in, out, false, count, 0);
}

void dhx_all_gather(dhx_comms *cs, int comm, int stream, const float *in, float *out,
                    int64_t count) {
  ring *r = ring_of(cs, comm, stream);
  if (count <= 0) return;
  if (!r) {  // p == 1: the whole is this rank's own chunk (in may be out: in place)
    if (alone_in(cs, comm)) memmove(out, in, sizeof(float) * (size_t)count);
    return;
  }
  int p = r->size, me = r->rank;
  float *mine = out + chunk_start(count, p, me);
  if (in != mine)  // in place (the input is this rank's chunk of the output): nothing to copy
    memcpy(mine, in, sizeof(float) * (size_t)chunk_len(count, p, me));
  ring_all_gather(cs, r, out, count, 0);
}

// The record a collective over `count` elements on ring r, deferred to `event`, is left
// pending in, or NULL where it runs whole: unless it is one exchange each way (2 members, one
// message), the tags fit, and on the emulated network the members read one clock. Every
// condition reads the same on both members, so both post it or both run it whole, and their
// messages meet.
static pending *deferrable(dhx_comms *cs, ring *r, int64_t count, int32_t event) {
  if (!r || r->size != 2 || count <= 0 || ring_pieces(count, 2) != 1 || !cs->tags_fit ||
      (cs->bandwidth > 0 && !cs->one_host) || event < 0 || (uint32_t)event >= cs->npending)
    return NULL;
  pending *pd = &cs->pending[event];
  if (pd->r) MPI_Abort(MPI_COMM_WORLD, 1);  // the validator gives an event one collective
  pd->r = r;
  return pd;
}

// Starts the one exchange of a deferred collective: `sn` floats at `send` to the peer, `rn`
// into `recv`, counted now (under the kind the posting stream has set, as the synchronous
// exchange counts them). Emulated: the link is taken now, as a synchronous send would take it,
// and each member sends the other its leave time beside the data.
static void post_exchange(dhx_comms *cs, pending *pd, const float *send, int64_t sn, float *recv,
                          int64_t rn) {
  ring *r = pd->r;
  int peer = 1 - r->rank;
  pd->timed = cs->bandwidth > 0;
  pd->nreqs = pd->timed ? 4 : 2;
  if (pd->timed) {
    pd->leave = reserve_link(cs, sn * 4);
    MPI_Irecv(&pd->peer_leave, 1, MPI_DOUBLE, peer, LEAVE_TAG, r->comm, &pd->reqs[2]);
    MPI_Isend(&pd->leave, 1, MPI_DOUBLE, peer, LEAVE_TAG, r->comm, &pd->reqs[3]);
  }
  MPI_Irecv(recv, (int)rn, MPI_FLOAT, peer, DEFERRED_TAG, r->comm, &pd->reqs[0]);
  MPI_Isend(send, (int)sn, MPI_FLOAT, peer, DEFERRED_TAG, r->comm, &pd->reqs[1]);
  count_sent(cs, r, peer, (uint64_t)sn * 4);
}

// The 2-member ring's one step of dhx_reduce_scatter_sum and dhx_all_gather, split: the
// reduce-scatter sends the peer's chunk and receives into the record's scratch (summed at
// completion), the all-gather sends its own chunk from its place in `out` and receives the
// peer's into place.
bool dhx_comms_post(dhx_comms *cs, int comm, int stream, dhx_op op, const float *in, float *out,
                    int64_t count, int32_t event) {
  ring *r = ring_of(cs, comm, stream);
  pending *pd = deferrable(cs, r, count, event);
  if (!pd) {
    if (op == DHX_OP_REDUCE_SCATTER) dhx_reduce_scatter_sum(cs, comm, stream, in, out, count);
    else dhx_all_gather(cs, comm, stream, in, out, count);
    return false;
  }
  int me = r->rank, peer = 1 - me;
  int64_t own_n = chunk_len(count, 2, me), peer_n = chunk_len(count, 2, peer);
  pd->sum = op == DHX_OP_REDUCE_SCATTER;
  if (pd->sum) {
    pd->own = in + chunk_start(count, 2, me);
    pd->out = out;
    pd->n = own_n;
    reserve_floats(&pd->scratch, &pd->scratch_n, own_n);
    post_exchange(cs, pd, in + chunk_start(count, 2, peer), peer_n, pd->scratch, own_n);
  } else {
    float *mine = out + chunk_start(count, 2, me);
    if (in != mine) memcpy(mine, in, sizeof(float) * (size_t)own_n);  // not in place
    post_exchange(cs, pd, mine, own_n, out + chunk_start(count, 2, peer), peer_n);
  }
  return true;
}

void dhx_comms_complete(dhx_comms *cs, int32_t event) {
  if (!cs || event < 0 || (uint32_t)event >= cs->npending || !cs->pending[event].r) return;
  pending *pd = &cs->pending[event];
  wait_all(cs, pd->reqs, pd->nreqs);
  // The peer's data may have come before its leave time: it is not ours until then.
  if (pd->timed) sleep_until(pd->leave > pd->peer_leave ? pd->leave : pd->peer_leave);
  if (pd->sum)  // own + received, the synchronous ring's order
    for (int64_t i = 0; i < pd->n; i++) pd->out[i] = pd->own[i] + pd->scratch[i];
  pd->r = NULL;
}

// All-to-all as p-1 pairwise exchanges: at step s a member sends its block for the member s
// places to its right and receives its block from the member s places to its left, so every
// step pairs each send with a posted receive and the order is the same on every run.
void dhx_all_to_all(dhx_comms *cs, int comm, int stream, const float *in, float *out,
                    int64_t count) {
  ring *r = ring_of(cs, comm, stream);
  if (count <= 0) return;
  if (!r) {  // p == 1: the one block stays here
    if (alone_in(cs, comm)) memcpy(out, in, sizeof(float) * (size_t)count);
    return;
  }
  int p = r->size, me = r->rank;
  int64_t block = count / p, pieces = (block + MAX_MSG_FLOATS - 1) / MAX_MSG_FLOATS;
  memcpy(out + me * block, in + me * block, sizeof(float) * (size_t)block);
  for (int s = 1; s < p; s++) {
    int to = (me + s) % p, from = (me - s + p) % p;
    exchange_with(cs, r, in + to * block, block, to, out + from * block, block, from, pieces);
  }
}

// Messages of a transfer: MPI counts are int, so long ones go in pieces, cut alike on both
// sides from the same count.
static int piece_len(int64_t count, int64_t at) {
  return (int)(count - at < MAX_MSG_FLOATS ? count - at : MAX_MSG_FLOATS);
}

void dhx_send(dhx_comms *cs, int comm, int stream, const float *x, int64_t count, int peer,
              int tag) {
  ring *r = ring_of(cs, comm, stream);
  if (!r) return;  // the validator admits no peer in a communicator of one
  for (int64_t at = 0; at < count; at += MAX_MSG_FLOATS) {
    int n = piece_len(count, at);
    network_delay(cs, (int64_t)n * 4);
    MPI_Request req;
    MPI_Isend(x + at, n, MPI_FLOAT, peer, tag, r->comm, &req);
    wait_all(cs, &req, 1);
    count_sent(cs, r, peer, (uint64_t)n * 4);
  }
}

void dhx_comms_count_instr(dhx_comms *cs, const dhx_plan *plan, const dhx_plan_rank *rank,
                           const dhx_plan_instr *in) {
  if (!dhx_op_on_comm(in->op) || in->op == DHX_OP_RECV) return;
  ring *r = ring_of(cs, dhx_rank_comm(rank, in->comm), (int)in->stream);
  int64_t bytes = dhx_wire_bytes(plan, rank, in);
  if (!r || bytes <= 0) return;
  counted_as = dhx_wire_kind_of(plan, rank, in);
  if (in->op == DHX_OP_SEND) {
    count_sent(cs, r, (int)in->args[2].i, (uint64_t)bytes);
  } else if (in->op == DHX_OP_ALL_TO_ALL) {  // a block to every other member
    for (int s = 1; s < r->size; s++)
      count_sent(cs, r, (r->rank + s) % r->size, (uint64_t)bytes / (uint64_t)(r->size - 1));
  } else {  // a ring: everything goes to the right neighbour
    count_sent(cs, r, (r->rank + 1) % r->size, (uint64_t)bytes);
  }
}

void dhx_recv(dhx_comms *cs, int comm, int stream, float *x, int64_t count, int peer, int tag) {
  ring *r = ring_of(cs, comm, stream);
  if (!r) return;
  for (int64_t at = 0; at < count; at += MAX_MSG_FLOATS) {
    MPI_Request req;
    MPI_Irecv(x + at, piece_len(count, at), MPI_FLOAT, peer, tag, r->comm, &req);
    wait_all(cs, &req, 1);
  }
}

int dhx_ranks_on_node(void) {
  MPI_Comm node;
  int local = 1;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  return local;
}
