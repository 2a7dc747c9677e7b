// simulate.c — the cross-rank simulator (see the header for the model).
//
// Layout: every instruction of the program on every rank has a global id (rank by rank, in
// program order). Every stream of every rank is a lane, lane = rank * DHX_MAX_STREAMS + stream,
// holding its instructions in order as steps: index, op and event, copied out of the plan once,
// so that the run does not reach into the plan's large instructions (which, at thousands of
// ranks, would cost a cache miss or two per instruction). A rendezvous (a collective, or a SEND with
// its RECV) is a group of (lane, instruction) members; which instructions form a group depends
// only on the plan, so the groups are built up front by sorting the communicating instructions
// on their matching keys. The run itself moves lanes through a heap ordered by time: a lane
// leaves the heap when its running instruction ends, applies what that instruction does (a
// RECORD wakes the lanes parked on its event), and starts its next instruction, parks on an
// event not recorded yet, or arrives at a rendezvous and parks there until the last member
// arrives.
#include "simulate.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan_util.h"

#define LANES DHX_MAX_STREAMS  // lanes per rank

typedef struct member {
  uint32_t lane, instr;
} member;

// A rendezvous: its members (by rank for collectives, sender first for transfers) and how many
// have arrived, the last when.
typedef struct group {
  size_t first;  // members[first .. first + n)
  uint32_t n, arrived;
  double at;
} group;

// What the run needs of one instruction.
typedef struct step {
  uint32_t instr;  // index in the rank's program
  uint32_t op;
  int32_t event;   // RECORD, WAIT and a deferred collective's; -1 otherwise
  uint32_t turn;   // its turn on the rank's core (plan.h); 0: none
} step;

typedef struct lane {
  size_t first;         // its instructions: steps[first .. first + n)
  uint32_t n, pos;      // pos: the next one to start
  bool running;         // steps[pos - 1] runs now (it ends when the lane leaves the heap)
  bool for_core;        // parked until the rank's core is its head's (turns, lead-first)
  bool takes_turns;     // computes in turns (plan.h: turn), so its thread shares the core
  bool held;            // its running collective was held for the core once (finish)
  double after_wire;    // of its running collective: the time after its wire time (arrive)
  int32_t next_waiter;  // the next lane parked on the same event, -1
} lane;

typedef struct ready {  // a heap entry: lane `lane` moves on at time t, or event `event` is
  double t;              // recorded then (a deferred collective completes; -1: a lane's)
  uint64_t seq;  // ties in time go first in, first out, so runs are reproducible
  uint32_t lane;
  int64_t event;
} ready;

typedef struct sim {
  const dhx_plan *p;
  int prog;
  dhx_sim_duration_fn dur;
  void *ctx;
  double interference;  // factor on compute that starts while its rank communicates
  dhx_sim_duration_fn link_hold;  // dhx_sim_options
  double *comm_until;   // per rank: when its latest started communication ends
  double *compute_free; // per rank: when its compute resource (the device) is free again
  double *link_free;    // per communicator: when its latest collective ends
  uint32_t *next_turn;  // per rank: the turn whose compute instruction may start (from 1)
  bool lead_first;      // compute without turns: the lead-first core (dhx_sim_options)
  uint8_t *core_busy;   // per rank, lead-first: a compute instruction runs
  uint32_t nlanes;
  size_t *base;      // per rank, nranks + 1 entries: global id of its instruction 0
  size_t *ev_base;   // per rank, nranks + 1 entries: index of its event 0
  lane *lanes;
  step *steps;       // lane by lane
  size_t ncomm;      // communicating instructions
  int64_t *group_of; // per global id: its rendezvous, -1
  group *groups;
  int64_t ngroups;
  member *members;
  size_t nmembers;
  uint8_t *recorded; // per event
  int32_t *waiters;  // per event: the first lane parked on it, -1
  ready *heap;
  size_t nheap, heap_cap;
  uint64_t seq;
  dhx_sim_slice *slices;  // NULL when the caller wants none
  double *rank_end;
  char *err;
  size_t errlen;
} sim;

static void *xcalloc(size_t n, size_t size) {
  void *q = calloc(n ? n : 1, size);
  if (!q) abort();
  return q;
}

// ---- instructions and how to name them ------------------------------------------------------

static const dhx_plan_program *program_of(const sim *s, uint32_t rank) {
  return &s->p->ranks[rank].programs[s->prog];
}

static const dhx_plan_instr *instr_at(const sim *s, uint32_t rank, uint32_t i) {
  return &program_of(s, rank)->instrs[i];
}

static bool is_collective(uint32_t op) {
  return op == DHX_OP_ALLREDUCE || op == DHX_OP_REDUCE_SCATTER || op == DHX_OP_ALL_GATHER ||
         op == DHX_OP_ALL_TO_ALL;
}

static bool is_transfer(uint32_t op) { return op == DHX_OP_SEND || op == DHX_OP_RECV; }

// An I64 argument, or -1 when the instruction does not have it.
static int64_t i64_arg(const dhx_plan_instr *in, uint32_t j) {
  return j < in->nargs && in->args[j].kind == DHX_ARG_I64 ? in->args[j].i : -1;
}

// Elements a communicating instruction moves (the whole count for reduce-scatter, all-gather
// and all-to-all, as plan.h defines it).
static int64_t count_of(const dhx_plan_instr *in) {
  return i64_arg(in, (uint32_t)dhx_op_count_arg(in->op));
}

static const char *op_label(uint32_t op) {
  static const char *names[] = {"?", "KERNEL", "GEMM", "ZERO", "ALLREDUCE", "RECORD", "WAIT",
                                "GRAD_NORM", "REDUCE_SCATTER", "ALL_GATHER", "SEND", "RECV",
                                "LOAD_BATCH", "ALL_TO_ALL"};
  return op < sizeof names / sizeof names[0] ? names[op] : "?";
}

// World rank of member `index` of communicator `c`, or -1.
static int64_t world_rank(const sim *s, int32_t c, int64_t index) {
  const dhx_plan_comm *cm = &s->p->comms[c];
  return index >= 0 && index < cm->nranks ? cm->ranks[index] : -1;
}

// Index of world rank `rank` in communicator `c` (ranks ascending), or -1.
static int64_t member_index(const sim *s, int32_t c, uint32_t rank) {
  const dhx_plan_comm *cm = &s->p->comms[c];
  uint32_t lo = 0, hi = cm->nranks;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (cm->ranks[mid] < (int64_t)rank) lo = mid + 1;
    else hi = mid;
  }
  return lo < cm->nranks && cm->ranks[lo] == (int32_t)rank ? (int64_t)lo : -1;
}

// The plan communicator instruction `in` of rank r exchanges on (a rank that shares another
// rank's programs substitutes its own).
static int32_t comm_of(const sim *s, uint32_t r, const dhx_plan_instr *in) {
  return dhx_rank_comm(&s->p->ranks[r], in->comm);
}

// What an instruction of rank r does, for messages: "ALLREDUCE of 64 f32 on comm 0".
static void what(const sim *s, uint32_t r, const dhx_plan_instr *in, char *buf, size_t n) {
  int32_t c = comm_of(s, r, in);
  if (is_collective(in->op)) {
    snprintf(buf, n, "%s of %" PRId64 " %s on comm %d", op_label(in->op), count_of(in),
             dhx_dtype_name(in->dtype), c);
  } else if (is_transfer(in->op)) {
    int64_t peer = i64_arg(in, 2);
    snprintf(buf, n, "%s of %" PRId64 " %s %s peer %" PRId64 " (rank %" PRId64 ") tag %" PRId64
             " on comm %d", op_label(in->op), count_of(in), dhx_dtype_name(in->dtype),
             in->op == DHX_OP_SEND ? "to" : "from", peer, world_rank(s, c, peer),
             i64_arg(in, 3), c);
  } else if (in->op == DHX_OP_WAIT || in->op == DHX_OP_RECORD) {
    snprintf(buf, n, "%s of event %d", op_label(in->op), in->event);
  } else if (in->turn) {
    snprintf(buf, n, "%s, turn %u", op_label(in->op), in->turn);
  } else {
    snprintf(buf, n, "%s", op_label(in->op));
  }
}

// "stream 1 instr 12 (ALL_GATHER of 64 f32 on comm 2, 'h.0.attn: gather q')"
static void describe(const sim *s, uint32_t rank, uint32_t i, char *buf, size_t n) {
  const dhx_plan_instr *in = instr_at(s, rank, i);
  char w[160];
  what(s, rank, in, w, sizeof w);
  snprintf(buf, n, "stream %u instr %u (%s, '%s')", in->stream, i, w, dhx_instr_note(in));
}

static bool fail(sim *s, const char *fmt, ...) {
  int used = snprintf(s->err, s->errlen, "program %s: ", dhx_prog_name((uint32_t)s->prog));
  if (used >= 0 && (size_t)used < s->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err + used, s->errlen - (size_t)used, fmt, ap);
    va_end(ap);
  }
  return false;
}

// ---- lanes ------------------------------------------------------------------------------------

static uint32_t head_of(const sim *s, uint32_t l) {
  const lane *L = &s->lanes[l];
  return L->pos < L->n ? s->steps[L->first + L->pos].instr : UINT32_MAX;
}

// Checks what the run relies on (streams, events, communicators in range) and sorts every
// rank's instructions into lanes.
static bool build_lanes(sim *s) {
  const dhx_plan *p = s->p;
  s->base = xcalloc(p->nranks + 1, sizeof(size_t));
  s->ev_base = xcalloc(p->nranks + 1, sizeof(size_t));
  for (uint32_t r = 0; r < p->nranks; r++) {
    const dhx_plan_program *pr = program_of(s, r);
    s->base[r + 1] = s->base[r] + pr->ninstrs;
    s->ev_base[r + 1] = s->ev_base[r] + pr->nevents;
    for (uint32_t i = 0; i < pr->ninstrs; i++) {
      const dhx_plan_instr *in = &pr->instrs[i];
      if (in->stream >= LANES) return fail(s, "rank %u instr %u: stream %u", r, i, in->stream);
      bool evented = in->op == DHX_OP_WAIT || dhx_instr_records(in);
      if (evented && (in->event < 0 || (uint32_t)in->event >= pr->nevents))
        return fail(s, "rank %u instr %u: event %d of %u", r, i, in->event, pr->nevents);
      if (dhx_op_on_comm(in->op) && (in->comm < 0 || (uint32_t)in->comm >= p->ncomms))
        return fail(s, "rank %u instr %u: communicator %d of %u", r, i, in->comm, p->ncomms);
      s->lanes[r * LANES + in->stream].n++;
      s->ncomm += dhx_op_on_comm(in->op);
    }
  }
  size_t at = 0;
  for (uint32_t l = 0; l < s->nlanes; l++) {
    s->lanes[l].first = at;
    at += s->lanes[l].n;
    s->lanes[l].n = 0;  // refilled below
  }
  s->steps = xcalloc(at, sizeof(step));
  for (uint32_t r = 0; r < p->nranks; r++) {
    const dhx_plan_program *pr = program_of(s, r);
    for (uint32_t i = 0; i < pr->ninstrs; i++) {
      const dhx_plan_instr *in = &pr->instrs[i];
      lane *L = &s->lanes[r * LANES + in->stream];
      bool evented = in->op == DHX_OP_WAIT || dhx_instr_records(in);
      s->steps[L->first + L->n++] = (step){i, in->op, evented ? in->event : -1, in->turn};
      if (in->turn) L->takes_turns = true;
    }
  }
  return true;
}

// ---- pairing: which instructions meet in which rendezvous ---------------------------------------

// A collective, keyed so that the k-th on one channel of every member sort together.
typedef struct coll_key {
  int32_t comm;
  uint32_t stream, k, rank, instr;
} coll_key;

// A transfer, keyed so that the sends and then the receives of one (channel, sender, receiver,
// tag) sort together, each in program order.
typedef struct p2p_key {
  int32_t comm;
  uint32_t stream, src, dst;
  int64_t tag;
  uint32_t recv, rank, instr;
} p2p_key;

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b) ? 1 : 0)

static int coll_cmp(const void *x, const void *y) {
  const coll_key *a = x, *b = y;
  int c = CMP(a->comm, b->comm);
  if (!c) c = CMP(a->stream, b->stream);
  if (!c) c = CMP(a->k, b->k);
  return c ? c : CMP(a->rank, b->rank);
}

static int p2p_cmp(const void *x, const void *y) {
  const p2p_key *a = x, *b = y;
  int c = CMP(a->comm, b->comm);
  if (!c) c = CMP(a->stream, b->stream);
  if (!c) c = CMP(a->src, b->src);
  if (!c) c = CMP(a->dst, b->dst);
  if (!c) c = CMP(a->tag, b->tag);
  if (!c) c = CMP(a->recv, b->recv);
  return c ? c : CMP(a->instr, b->instr);
}

static bool same_channel_k(const coll_key *a, const coll_key *b) {
  return a->comm == b->comm && a->stream == b->stream && a->k == b->k;
}

static bool same_p2p_key(const p2p_key *a, const p2p_key *b) {
  return a->comm == b->comm && a->stream == b->stream && a->src == b->src && a->dst == b->dst &&
         a->tag == b->tag;
}

// What the pairing gathered: the keys, and the first member left without partners.
typedef struct pairing {
  coll_key *colls;
  size_t ncolls;
  p2p_key *p2ps;
  size_t np2ps;
  const coll_key *short_run;  // a collective some member never issues (the run's first member)
  size_t short_len;
  const p2p_key *unpaired;    // a transfer without its partner
  size_t unpaired_nth, partner_count;  // it is the nth (1-based) of its key; the peer has this many
} pairing;

static bool check_member(sim *s, uint32_t r, uint32_t i, const dhx_plan_instr *in) {
  if (member_index(s, comm_of(s, r, in), r) >= 0) return true;
  char d[320];
  describe(s, r, i, d, sizeof d);
  return fail(s, "rank %u %s: rank %u is not a member of communicator %d", r, d, r,
              comm_of(s, r, in));
}

// A transfer's world ranks: sender and receiver. False (with the message) when the peer is not
// another member of the communicator.
static bool transfer_ends(sim *s, uint32_t r, uint32_t i, const dhx_plan_instr *in,
                          uint32_t *src, uint32_t *dst) {
  int32_t c = comm_of(s, r, in);
  int64_t peer = world_rank(s, c, i64_arg(in, 2));
  if (peer < 0 || peer == r) {
    char d[320];
    describe(s, r, i, d, sizeof d);
    return fail(s, "rank %u %s: the peer must be another member of communicator %d (%u members)",
                r, d, c, s->p->comms[c].nranks);
  }
  *src = in->op == DHX_OP_SEND ? r : (uint32_t)peer;
  *dst = in->op == DHX_OP_SEND ? (uint32_t)peer : r;
  return true;
}

// Gathers the keys of every communicating instruction. A collective's k is its place among the
// rank's collectives on the same channel, counted in `seen` (reset after each rank).
static bool gather_keys(sim *s, pairing *g) {
  const dhx_plan *p = s->p;
  g->colls = xcalloc(s->ncomm, sizeof(coll_key));
  g->p2ps = xcalloc(s->ncomm, sizeof(p2p_key));
  uint32_t *seen = xcalloc((size_t)p->ncomms * LANES, sizeof(uint32_t));
  bool ok = true;
  for (uint32_t r = 0; r < p->nranks && ok; r++) {
    const dhx_plan_program *pr = program_of(s, r);
    size_t rank_first = g->ncolls;
    for (uint32_t i = 0; i < pr->ninstrs && ok; i++) {
      const dhx_plan_instr *in = &pr->instrs[i];
      if (!dhx_op_on_comm(in->op)) continue;
      ok = check_member(s, r, i, in);
      int32_t c = comm_of(s, r, in);
      if (ok && is_collective(in->op)) {
        uint32_t k = seen[(size_t)c * LANES + in->stream]++;
        g->colls[g->ncolls++] = (coll_key){c, in->stream, k, r, i};
      } else if (ok) {
        uint32_t src = 0, dst = 0;
        ok = transfer_ends(s, r, i, in, &src, &dst);
        g->p2ps[g->np2ps++] = (p2p_key){c, in->stream, src, dst, i64_arg(in, 3),
                                        in->op == DHX_OP_RECV, r, i};
      }
    }
    for (size_t j = rank_first; j < g->ncolls; j++)
      seen[(size_t)g->colls[j].comm * LANES + g->colls[j].stream] = 0;
  }
  free(seen);
  return ok;
}

static int64_t new_group(sim *s) {
  group *G = &s->groups[s->ngroups];
  *G = (group){.first = s->nmembers};
  return s->ngroups++;
}

static void add_member(sim *s, int64_t g, uint32_t rank, uint32_t instr) {
  const dhx_plan_instr *in = instr_at(s, rank, instr);
  s->members[s->nmembers++] = (member){rank * LANES + in->stream, instr};
  s->groups[g].n++;
  s->group_of[s->base[rank] + instr] = g;
}

// Two instructions that meet must agree; the first difference, or NULL.
static const char *difference(const dhx_plan_instr *a, const dhx_plan_instr *b) {
  bool transfer = is_transfer(a->op);
  if (transfer ? a->op == b->op : a->op != b->op) return "the kinds differ";
  if (count_of(a) != count_of(b)) return "the element counts differ";
  if (a->dtype != b->dtype) return "the dtypes differ";
  return NULL;
}

static bool mismatch(sim *s, uint32_t ra, uint32_t ia, uint32_t rb, uint32_t ib,
                     const char *how, const char *why) {
  char da[320], db[320];
  describe(s, ra, ia, da, sizeof da);
  describe(s, rb, ib, db, sizeof db);
  return fail(s, "rank %u %s meets rank %u %s %s, but %s: the ranks would hang or exchange the "
              "wrong data", ra, da, rb, db, how, why);
}

// Collectives: each full run of one (channel, k) is a rendezvous; a run short of the
// communicator's size leaves its members waiting for one that never comes.
static bool pair_collectives(sim *s, pairing *g) {
  qsort(g->colls, g->ncolls, sizeof(coll_key), coll_cmp);
  for (size_t a = 0, b; a < g->ncolls; a = b) {
    const coll_key *first = &g->colls[a];
    const dhx_plan_instr *ref = instr_at(s, first->rank, first->instr);
    for (b = a + 1; b < g->ncolls && same_channel_k(first, &g->colls[b]); b++) {
      const coll_key *k = &g->colls[b];
      const char *why = difference(ref, instr_at(s, k->rank, k->instr));
      char how[96];
      snprintf(how, sizeof how, "as collective #%u on comm %d stream %u", k->k + 1, k->comm,
               k->stream);
      if (why) return mismatch(s, k->rank, k->instr, first->rank, first->instr, how, why);
    }
    if (b - a < s->p->comms[first->comm].nranks) {
      if (!g->short_run) g->short_run = first, g->short_len = b - a;
      continue;
    }
    int64_t grp = new_group(s);
    for (size_t j = a; j < b; j++) add_member(s, grp, g->colls[j].rank, g->colls[j].instr);
  }
  return true;
}

// Transfers: the i-th send of a key meets the i-th receive.
static bool pair_transfers(sim *s, pairing *g) {
  qsort(g->p2ps, g->np2ps, sizeof(p2p_key), p2p_cmp);
  for (size_t a = 0, b; a < g->np2ps; a = b) {
    size_t m = a;
    for (b = a; b < g->np2ps && same_p2p_key(&g->p2ps[a], &g->p2ps[b]); b++) m += !g->p2ps[b].recv;
    size_t nsend = m - a, nrecv = b - m, npairs = nsend < nrecv ? nsend : nrecv;
    for (size_t j = 0; j < npairs; j++) {
      const p2p_key *x = &g->p2ps[a + j], *y = &g->p2ps[m + j];
      const char *why = difference(instr_at(s, x->rank, x->instr), instr_at(s, y->rank, y->instr));
      if (why) return mismatch(s, x->rank, x->instr, y->rank, y->instr, "as its transfer", why);
      int64_t grp = new_group(s);
      add_member(s, grp, x->rank, x->instr);
      add_member(s, grp, y->rank, y->instr);
    }
    if (nsend != nrecv && !g->unpaired) {
      g->unpaired = &g->p2ps[nsend > nrecv ? a + npairs : m + npairs];
      g->unpaired_nth = npairs + 1;
      g->partner_count = npairs;
    }
  }
  return true;
}

// The instruction of rank q most likely meant to meet the one left without a partner, as a
// phrase: an unmatched one of the wanted kind on the same communicator (with `peer` when it is
// >= 0; `op` 0 means any collective), else its last one on the same channel, else its last
// instruction on that stream.
static void counterpart(const sim *s, uint32_t q, uint32_t op, int32_t comm, uint32_t stream,
                        int64_t peer, char *buf, size_t n) {
  const dhx_plan_program *pr = program_of(s, q);
  int64_t unmatched = -1, last_same = -1, last_stream = -1;
  for (uint32_t i = 0; i < pr->ninstrs; i++) {
    const dhx_plan_instr *in = &pr->instrs[i];
    bool kind = op ? in->op == op : is_collective(in->op);
    bool wanted = kind && comm_of(s, q, in) == comm && (peer < 0 || i64_arg(in, 2) == peer);
    if (wanted && s->group_of[s->base[q] + i] < 0 && unmatched < 0) unmatched = i;
    if (wanted && in->stream == stream) last_same = i;
    if (in->stream == stream) last_stream = i;
  }
  char d[320];
  const char *kind = op ? op_label(op) : "collective";
  if (unmatched >= 0) {
    describe(s, q, (uint32_t)unmatched, d, sizeof d);
    snprintf(buf, n, "rank %u's unmatched %s on comm %d is %s", q, kind, comm, d);
  } else if (last_same >= 0) {
    describe(s, q, (uint32_t)last_same, d, sizeof d);
    snprintf(buf, n, "rank %u's last %s there is %s", q, kind, d);
  } else if (last_stream >= 0) {
    describe(s, q, (uint32_t)last_stream, d, sizeof d);
    snprintf(buf, n, "rank %u has none there; its last instruction on the stream is %s", q, d);
  } else {
    snprintf(buf, n, "rank %u has no instruction on stream %u", q, stream);
  }
}

// The first comm member missing from a short run (whose ranks are sorted).
static uint32_t missing_member(const sim *s, const coll_key *run, size_t len) {
  const dhx_plan_comm *cm = &s->p->comms[run->comm];
  size_t j = 0;
  for (uint32_t i = 0; i < cm->nranks; i++, j++)
    if (j == len || run[j].rank != (uint32_t)cm->ranks[i]) return (uint32_t)cm->ranks[i];
  return (uint32_t)cm->ranks[0];
}

static bool report_short_run(sim *s, const pairing *g) {
  const coll_key *k = g->short_run;
  uint32_t q = missing_member(s, k, g->short_len);
  char d[320], other[512];
  describe(s, k->rank, k->instr, d, sizeof d);
  counterpart(s, q, 0, k->comm, k->stream, -1, other, sizeof other);
  return fail(s, "rank %u %s is collective #%u on comm %d stream %u, but rank %u issues only %u "
              "there; %s: rank %u would wait forever", k->rank, d, k->k + 1, k->comm, k->stream,
              q, k->k, other, k->rank);
}

static bool report_unpaired(sim *s, const pairing *g) {
  const p2p_key *k = g->unpaired;
  const dhx_plan_instr *in = instr_at(s, k->rank, k->instr);
  uint32_t q = k->recv ? k->src : k->dst;
  uint32_t want = k->recv ? DHX_OP_SEND : DHX_OP_RECV;
  char d[320], other[512];
  describe(s, k->rank, k->instr, d, sizeof d);
  counterpart(s, q, want, k->comm, in->stream, member_index(s, k->comm, k->rank), other,
              sizeof other);
  return fail(s, "rank %u %s has no matching %s on rank %u (it is %s #%zu from rank %u to rank %u "
              "with tag %" PRId64 " on comm %d stream %u; rank %u posts %zu); %s: rank %u would "
              "wait forever", k->rank, d, op_label(want), q, op_label(in->op), g->unpaired_nth,
              k->src, k->dst, k->tag, k->comm, k->stream, q, g->partner_count, other, k->rank);
}

// Builds the rendezvous groups; fails on instructions that meet but disagree, then on ones left
// without a partner.
static bool pair_up(sim *s) {
  pairing g = {0};
  bool ok = gather_keys(s, &g);
  size_t n = g.ncolls + g.np2ps;
  s->groups = xcalloc(n, sizeof(group));
  s->members = xcalloc(n, sizeof(member));
  ok = ok && pair_collectives(s, &g) && pair_transfers(s, &g);
  if (ok && g.short_run) ok = report_short_run(s, &g);
  else if (ok && g.unpaired) ok = report_unpaired(s, &g);
  free(g.colls);
  free(g.p2ps);
  return ok;
}

// ---- the run ----------------------------------------------------------------------------------

static bool earlier(const ready *a, const ready *b) {
  return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void push_entry(sim *s, uint32_t l, int64_t event, double t) {
  if (s->nheap == s->heap_cap) {
    s->heap_cap *= 2;
    s->heap = realloc(s->heap, sizeof(ready) * s->heap_cap);
    if (!s->heap) abort();
  }
  size_t i = s->nheap++;
  s->heap[i] = (ready){t, s->seq++, l, event};
  while (i > 0 && earlier(&s->heap[i], &s->heap[(i - 1) / 2])) {
    ready tmp = s->heap[i];
    s->heap[i] = s->heap[(i - 1) / 2];
    s->heap[(i - 1) / 2] = tmp;
    i = (i - 1) / 2;
  }
}

static void push(sim *s, uint32_t l, double t) { push_entry(s, l, -1, t); }

static ready pop(sim *s) {
  ready top = s->heap[0];
  s->heap[0] = s->heap[--s->nheap];
  for (size_t i = 0;;) {
    size_t c = 2 * i + 1;
    if (c >= s->nheap) break;
    if (c + 1 < s->nheap && earlier(&s->heap[c + 1], &s->heap[c])) c++;
    if (!earlier(&s->heap[c], &s->heap[i])) break;
    ready tmp = s->heap[i];
    s->heap[i] = s->heap[c];
    s->heap[c] = tmp;
    i = c;
  }
  return top;
}

static double duration(sim *s, uint32_t rank, const dhx_plan_instr *in) {
  if (!s->dur) return 0;
  double d = s->dur(s->ctx, s->p, rank, s->prog, in);
  return d > 0 ? d : 0;  // also NaN
}

// Starts lane l's next instruction at time t; the lane comes back out of the heap when it ends.
// The rank's compute is one resource: a compute instruction reached while another stream's
// compute holds the device starts when that one ends (first come, first served; the lane
// counts as running meanwhile). It never parks, so it adds no wait to the deadlock analysis.
static double start(sim *s, uint32_t l, double t, int64_t match) {
  lane *L = &s->lanes[l];
  uint32_t r = l / LANES, i = s->steps[L->first + L->pos].instr;
  const dhx_plan_instr *in = instr_at(s, r, i);
  double d = s->dur ? duration(s, r, in) : 0;
  if (dhx_op_on_comm(in->op)) {
    if (t + d > s->comm_until[r]) s->comm_until[r] = t + d;
  } else if (dhx_op_computes(in->op)) {
    if (s->compute_free[r] > t) t = s->compute_free[r];
    if (s->comm_until[r] > t) d *= s->interference;  // sharing the GPU with a collective
    s->compute_free[r] = t + d;
  }
  double end = t + d;
  if (s->slices) s->slices[s->base[r] + i] = (dhx_sim_slice){r, l % LANES, i, t, end, match};
  L->pos++;
  if (dhx_instr_deferred(in)) {  // posted: the stream goes on, the event comes when it ends
    L->running = false;
    push_entry(s, l, (int64_t)(s->ev_base[r] + (size_t)in->event), end);
    push(s, l, t);
    return end;
  }
  L->running = true;
  push(s, l, end);
  return end;
}

// One more member of rendezvous g is there at time t; the last to arrive starts them all. The
// links of a communicator are one resource too: a collective starts when the previous one on
// its communicator (on any stream) has ended, so two streams' collectives on one group of ranks
// take turns instead of each getting the whole bandwidth. Every member of the communicator is
// in each of its collectives, so one time per communicator says when its links are free.
static void arrive(sim *s, int64_t g, double t) {
  group *G = &s->groups[g];
  G->arrived++;
  if (t > G->at) G->at = t;
  if (G->arrived < G->n) return;
  member m0 = s->members[G->first];
  const dhx_plan_instr *in = instr_at(s, m0.lane / LANES, m0.instr);
  int32_t c = is_collective(in->op) ? comm_of(s, m0.lane / LANES, in) : -1;
  double at = c >= 0 && s->link_free[c] > G->at ? s->link_free[c] : G->at;
  double hold = c >= 0 && s->link_hold ? s->link_hold(s->ctx, s->p, m0.lane / LANES, s->prog, in)
                                       : INFINITY;
  for (uint32_t j = 0; j < G->n; j++) {
    lane *L = &s->lanes[s->members[G->first + j].lane];
    double end = start(s, s->members[G->first + j].lane, at, G->n > 1 ? g : -1);
    L->after_wire = c >= 0 && end - at > hold ? end - at - hold : 0;
    L->held = false;
    if (end > at + hold) end = at + hold;
    if (c >= 0 && end > s->link_free[c]) s->link_free[c] = end;
  }
}

// The modelled compute lane l has left before it hands work to communication: up to its next
// communicating instruction, WAIT, or RECORD after the head (which, on a strand, issues a
// collective to its communication stream).
static double compute_lead(sim *s, uint32_t l) {
  const lane *L = &s->lanes[l];
  uint32_t r = l / LANES;
  double sum = 0;
  for (uint32_t k = L->pos; k < L->n; k++) {
    const step *st = &s->steps[L->first + k];
    if (dhx_op_on_comm(st->op) || st->op == DHX_OP_WAIT || (st->op == DHX_OP_RECORD && k > L->pos))
      break;
    if (dhx_op_computes(st->op)) sum += duration(s, r, instr_at(s, r, st->instr));
  }
  return sum;
}

// Whether lane l, whose head `st` computes, may take the rank's core now. With turns, when its
// turn has come. Lead-first, when the core is free and no parked lane is waiting for it (the
// parked ones go first, by lead, when the core frees: next_on_core). Otherwise always: first
// come, first served, a start delayed until the core is free (start).
static bool core_is_mine(sim *s, uint32_t l, const step *st) {
  uint32_t r = l / LANES;
  if (st->turn) return st->turn == s->next_turn[r];
  if (!s->lead_first) return true;
  if (s->core_busy[r]) return false;
  for (uint32_t m = r * LANES; m < (r + 1) * LANES; m++)
    if (s->lanes[m].for_core) return false;
  s->core_busy[r] = 1;
  return true;
}

// The rank's core is free at time t: the parked lane whose turn has come, or lead-first the
// parked lane with the least compute lead (ties: the lower stream), moves on.
static void next_on_core(sim *s, uint32_t r, double t) {
  int64_t best = -1;
  double best_lead = 0;
  for (uint32_t m = r * LANES; m < (r + 1) * LANES; m++) {
    lane *M = &s->lanes[m];
    if (!M->for_core) continue;
    const step *st = &s->steps[M->first + M->pos];
    if (st->turn) {
      if (st->turn != s->next_turn[r]) continue;
      best = m;
      break;
    }
    double lead = compute_lead(s, m);
    if (best < 0 || lead < best_lead) best = m, best_lead = lead;
  }
  if (best < 0) return;
  s->lanes[best].for_core = false;
  if (!s->steps[s->lanes[best].first + s->lanes[best].pos].turn) s->core_busy[r] = 1;
  start(s, (uint32_t)best, t, -1);
}

// Lane l is free at time t: it starts its next instruction, parks, or is done.
static void advance(sim *s, uint32_t l, double t) {
  lane *L = &s->lanes[l];
  uint32_t r = l / LANES;
  if (L->pos == L->n) {
    if (t > s->rank_end[r]) s->rank_end[r] = t;
    return;
  }
  const step *st = &s->steps[L->first + L->pos];
  if (st->op == DHX_OP_WAIT && !s->recorded[s->ev_base[r] + st->event]) {
    size_t e = s->ev_base[r] + st->event;
    L->next_waiter = s->waiters[e];
    s->waiters[e] = (int32_t)l;
    return;
  }
  if (dhx_op_computes(st->op) && !core_is_mine(s, l, st)) {
    L->for_core = true;
    return;
  }
  int64_t g = dhx_op_on_comm(st->op) ? s->group_of[s->base[r] + st->instr] : -1;
  if (g >= 0) arrive(s, g, t);
  else start(s, l, t, -1);
}

// Event e (of all ranks' events) is recorded at time t: the lanes waiting on it move on.
static void record_event(sim *s, size_t e, double t) {
  if (s->recorded[e]) return;
  s->recorded[e] = 1;
  for (int32_t w = s->waiters[e]; w >= 0; w = s->lanes[w].next_waiter) push(s, (uint32_t)w, t);
  s->waiters[e] = -1;
}

// Lane l's running instruction has ended at time t: a RECORD releases the lanes waiting on it.
static void finish(sim *s, uint32_t l, double t) {
  lane *L = &s->lanes[l];
  uint32_t r = l / LANES;
  const step *st = L->running ? &s->steps[L->first + L->pos - 1] : NULL;
  // A collective on a stream that computes in turns runs on that stream's thread, which does not
  // take the core from the other strand's running instruction (runtime/streams.c: SCHED_BATCH):
  // what it does after its wire time (posting, its peers' answers) waits until that one ends.
  if (st && L->takes_turns && !L->held && is_collective(st->op) && s->compute_free[r] > t) {
    L->held = true;
    double end = s->compute_free[r] + L->after_wire;
    if (s->slices) s->slices[s->base[r] + st->instr].end = end;
    push(s, l, end);
    return;
  }
  if (st && st->op == DHX_OP_RECORD) record_event(s, s->ev_base[r] + st->event, t);
  L->running = false;
  bool freed = st && dhx_op_computes(st->op) && (st->turn || s->lead_first);
  if (freed && st->turn) s->next_turn[r]++;
  if (freed && !st->turn) s->core_busy[r] = 0;
  advance(s, l, t);
  if (freed) next_on_core(s, r, t);
}

static void run(sim *s, const double *rank_start) {
  for (uint32_t r = 0; r < s->p->nranks; r++) {
    double t0 = rank_start ? rank_start[r] : 0;
    s->rank_end[r] = t0;
    for (uint32_t k = 0; k < LANES; k++)
      if (s->lanes[r * LANES + k].n) push(s, r * LANES + k, t0);
  }
  while (s->nheap) {
    ready x = pop(s);
    if (x.event >= 0) record_event(s, (size_t)x.event, x.t);
    else finish(s, x.lane, x.t);
  }
}

// ---- deadlocks --------------------------------------------------------------------------------

// The lane that blocked lane l waits on, with the instruction of it that l needs (the RECORD of
// its event, or its side of the rendezvous); -1 when there is none.
static int64_t blocker(const sim *s, uint32_t l, uint32_t *need) {
  uint32_t r = l / LANES, i = head_of(s, l);
  const dhx_plan_instr *in = instr_at(s, r, i);
  if (s->lanes[l].for_core) {  // a turn: the lane that holds the rank's next one
    for (uint32_t m = r * LANES; m < (r + 1) * LANES; m++) {
      const lane *M = &s->lanes[m];
      for (uint32_t j = M->pos; j < M->n; j++)
        if (s->steps[M->first + j].turn == s->next_turn[r]) {
          *need = s->steps[M->first + j].instr;
          return m;
        }
    }
    return -1;
  }
  if (in->op == DHX_OP_WAIT) {
    for (uint32_t m = r * LANES; m < (r + 1) * LANES; m++) {
      const lane *M = &s->lanes[m];
      for (uint32_t j = M->pos; j < M->n; j++) {
        const step *x = &s->steps[M->first + j];
        if (x->op == DHX_OP_RECORD && x->event == in->event) {
          *need = x->instr;
          return m;
        }
      }
    }
    // A deferred collective records it when its rendezvous completes: the member not there yet.
    for (uint32_t m = r * LANES; m < (r + 1) * LANES; m++) {
      const lane *M = &s->lanes[m];
      for (uint32_t j = 0; j < M->pos; j++) {
        const step *x = &s->steps[M->first + j];
        if (x->op == DHX_OP_WAIT || x->op == DHX_OP_RECORD || x->event != in->event) continue;
        int64_t g = s->group_of[s->base[r] + x->instr];
        for (uint32_t k = 0; g >= 0 && k < s->groups[g].n; k++) {
          member mm = s->members[s->groups[g].first + k];
          if (head_of(s, mm.lane) < mm.instr) {
            *need = mm.instr;
            return mm.lane;
          }
        }
      }
    }
    return -1;
  }
  const group *G = &s->groups[s->group_of[s->base[r] + i]];
  for (uint32_t j = 0; j < G->n; j++) {
    member m = s->members[G->first + j];
    if (head_of(s, m.lane) != m.instr) {
      *need = m.instr;
      return m.lane;
    }
  }
  return -1;
}

// "rank 0 stream 1 instr 4"
static void place(const sim *s, uint32_t l, char *buf, size_t n) {
  snprintf(buf, n, "rank %u stream %u instr %u", l / LANES, l % LANES, head_of(s, l));
}

// A WAIT whose event no stream of its rank will record any more (the validator refuses such
// plans; this keeps the simulator safe on others).
static bool report_lost_record(sim *s, uint32_t l) {
  char d[320];
  describe(s, l / LANES, head_of(s, l), d, sizeof d);
  return fail(s, "rank %u %s waits for a RECORD that no stream of rank %u has left to run",
              l / LANES, d, l / LANES);
}

// A cycle of waits: lane cyc[j] waits for lane cyc[j + 1] (and the last for the first), needing
// its instruction need[j]. The edge reported is the first between two ranks, else the first.
static bool report_cycle(sim *s, const uint32_t *cyc, const uint32_t *need, int64_t len) {
  int64_t at = 0;
  for (int64_t j = 0; j < len; j++)
    if (cyc[j] / LANES != cyc[(j + 1) % len] / LANES) {
      at = j;
      break;
    }
  uint32_t a = cyc[at], b = cyc[(at + 1) % len], ra = a / LANES, rb = b / LANES;
  char da[320], db[320], dn[320], before[400], list[600] = "", buf[64];
  describe(s, ra, head_of(s, a), da, sizeof da);
  describe(s, rb, head_of(s, b), db, sizeof db);
  describe(s, rb, need[at], dn, sizeof dn);
  const dhx_plan_instr *wa = instr_at(s, ra, head_of(s, a));
  if (wa->op == DHX_OP_WAIT) snprintf(before, sizeof before, "before recording event %d", wa->event);
  else snprintf(before, sizeof before, "before reaching its side, %s", dn);
  for (int64_t j = 0; j < len && j < 8; j++) {
    place(s, cyc[(at + j) % len], buf, sizeof buf);
    size_t used = strlen(list);
    snprintf(list + used, sizeof list - used, "%s -> ", buf);
  }
  size_t used = strlen(list);
  if (len > 8) snprintf(list + used, sizeof list - used, "... (%" PRId64 " in all)", len);
  else snprintf(list + used, sizeof list - used, "back");
  return fail(s, "rank %u %s waits for rank %u, which is blocked at %s %s; the cycle of waits: %s",
              ra, da, rb, db, before, list);
}

// Follows the waits from the first blocked lane until one repeats, then reports an edge of that
// cycle (one between two ranks when there is one) and the cycle itself.
static bool report_deadlock(sim *s, uint32_t first) {
  int64_t *step = xcalloc(s->nlanes, sizeof(int64_t));
  uint32_t *path = xcalloc(s->nlanes + 1, sizeof(uint32_t));
  uint32_t *needs = xcalloc(s->nlanes + 1, sizeof(uint32_t));
  for (uint32_t l = 0; l < s->nlanes; l++) step[l] = -1;
  int64_t l = first, k = 0;
  while (l >= 0 && step[l] < 0) {
    step[l] = k;
    path[k] = (uint32_t)l;
    l = blocker(s, (uint32_t)l, &needs[k]);
    k++;
  }
  bool ok = l >= 0 ? report_cycle(s, path + step[l], needs + step[l], k - step[l])
                   : report_lost_record(s, path[k - 1]);
  free(step);
  free(path);
  free(needs);
  return ok;
}

// ---- entry ------------------------------------------------------------------------------------

static void sim_free(sim *s) {
  free(s->base);
  free(s->ev_base);
  free(s->lanes);
  free(s->steps);
  free(s->group_of);
  free(s->groups);
  free(s->members);
  free(s->recorded);
  free(s->waiters);
  free(s->heap);
  free(s->comm_until);
  free(s->compute_free);
  free(s->link_free);
  free(s->next_turn);
  free(s->core_busy);
}

static void init(sim *s, const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                 char *err, size_t errlen) {
  *s = (sim){.p = p, .prog = prog, .dur = dur, .ctx = ctx, .interference = 1, .err = err,
             .errlen = errlen};
  s->comm_until = xcalloc(p->nranks ? p->nranks : 1, sizeof(double));
  s->compute_free = xcalloc(p->nranks ? p->nranks : 1, sizeof(double));
  s->link_free = xcalloc(p->ncomms ? p->ncomms : 1, sizeof(double));
  s->next_turn = xcalloc(p->nranks ? p->nranks : 1, sizeof(uint32_t));
  for (uint32_t r = 0; r < p->nranks; r++) s->next_turn[r] = 1;
  s->core_busy = xcalloc(p->nranks ? p->nranks : 1, 1);
  s->nlanes = p->nranks * LANES;
  s->lanes = xcalloc(s->nlanes, sizeof(lane));
  s->heap_cap = s->nlanes ? s->nlanes : 1;
  s->heap = xcalloc(s->heap_cap, sizeof(ready));
  for (uint32_t l = 0; l < s->nlanes; l++) s->lanes[l].next_waiter = -1;
}

// Allocations that need the instruction and event counts from build_lanes.
static void init_run(sim *s) {
  size_t n = s->base[s->p->nranks], ne = s->ev_base[s->p->nranks];
  s->group_of = xcalloc(n, sizeof(int64_t));
  for (size_t i = 0; i < n; i++) s->group_of[i] = -1;
  s->recorded = xcalloc(ne, 1);
  s->waiters = xcalloc(ne, sizeof(int32_t));
  for (size_t e = 0; e < ne; e++) s->waiters[e] = -1;
}

bool dhx_simulate(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                  const double *rank_start, dhx_sim_result *out, char *err, size_t errlen) {
  return dhx_simulate_interfering(p, prog, dur, ctx, 1, rank_start, out, err, errlen);
}

bool dhx_simulate_interfering(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                              double interference, const double *rank_start,
                              dhx_sim_result *out, char *err, size_t errlen) {
  dhx_sim_options o = {.interference = interference};
  return dhx_simulate_with(p, prog, dur, ctx, &o, rank_start, out, err, errlen);
}

bool dhx_simulate_with(const dhx_plan *p, int prog, dhx_sim_duration_fn dur, void *ctx,
                       const dhx_sim_options *o, const double *rank_start, dhx_sim_result *out,
                       char *err, size_t errlen) {
  double interference = o->interference;
  if (out) memset(out, 0, sizeof *out);
  if (errlen) err[0] = '\0';
  if (prog < 0 || prog >= DHX_PROG_COUNT || p->nranks > DHX_PLAN_MAX_RANKS) {
    snprintf(err, errlen, "program %d of a plan of %u ranks cannot be simulated", prog, p->nranks);
    return false;
  }
  sim s;
  init(&s, p, prog, dur, ctx, err, errlen);
  if (interference > 1) s.interference = interference;
  s.link_hold = o->link_hold;
  s.lead_first = o->lead_first;
  bool ok = build_lanes(&s);
  if (ok) init_run(&s);
  ok = ok && pair_up(&s);
  if (ok && out) {
    out->nslices = s.base[p->nranks];
    out->slices = s.slices = xcalloc(out->nslices, sizeof(dhx_sim_slice));
  }
  s.rank_end = out ? (out->rank_end = xcalloc(p->nranks, sizeof(double)))
                   : xcalloc(p->nranks, sizeof(double));
  if (ok) run(&s, rank_start);
  for (uint32_t l = 0; l < s.nlanes && ok; l++)
    if (s.lanes[l].pos < s.lanes[l].n) ok = report_deadlock(&s, l);
  if (out) {
    out->nmatches = s.ngroups;
    for (uint32_t r = 0; r < p->nranks; r++)
      if (out->rank_end[r] > out->makespan) out->makespan = out->rank_end[r];
  } else {
    free(s.rank_end);
  }
  sim_free(&s);
  if (!ok && out) dhx_sim_result_free(out);
  return ok;
}

void dhx_sim_result_free(dhx_sim_result *r) {
  free(r->slices);
  free(r->rank_end);
  memset(r, 0, sizeof *r);
}
