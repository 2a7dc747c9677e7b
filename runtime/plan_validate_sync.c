// plan_validate_sync.c — what would make a valid-looking plan hang: a WAIT that can never
// complete (events across a program's streams), collectives that do not form the same sequence
// on every member of a communicator, and sends and receives that do not pair up in order.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

// Turns (plan.h): none at all, or every compute instruction has one, nothing else does, and
// they are 1..k, each once, rising along each stream. Sets *k (0: no turns).
static bool check_turns(plan_check_ctx *v, const dhx_plan_program *p, uint32_t *k) {
  *k = 0;
  uint32_t ncompute = 0, nturns = 0;
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    ncompute += dhx_op_computes(p->instrs[i].op);
    nturns += p->instrs[i].turn != 0;
  }
  if (nturns == 0) return true;
  uint8_t *seen = calloc(ncompute + 1, 1);
  if (!seen) return plan_check_fail(v, "out of memory");
  uint32_t last[DHX_MAX_STREAMS] = {0};
  bool ok = true;
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    v->instr = i;
    v->note = dhx_instr_note(in);
    if (!dhx_op_computes(in->op) && in->turn != 0)
      ok = plan_check_fail(v, "turn %u on an instruction that does not compute", in->turn);
    else if (dhx_op_computes(in->op) && (in->turn == 0 || in->turn > ncompute))
      ok = plan_check_fail(v, "turn %u: each of the program's %u compute instructions needs a turn "
                           "from 1 to %u", in->turn, ncompute, ncompute);
    else if (dhx_op_computes(in->op) && seen[in->turn])
      ok = plan_check_fail(v, "turn %u is given twice", in->turn);
    else if (dhx_op_computes(in->op) && in->stream < DHX_MAX_STREAMS && in->turn < last[in->stream])
      ok = plan_check_fail(v, "turn %u comes after turn %u on stream %u: a stream runs in order",
                           in->turn, last[in->stream], in->stream);
    if (ok && dhx_op_computes(in->op)) {
      seen[in->turn] = 1;
      if (in->stream < DHX_MAX_STREAMS) last[in->stream] = in->turn;
    }
  }
  v->instr = -1;
  free(seen);
  *k = ncompute;
  return ok;
}

// Whether instruction `in` names a buffer whose arena bytes overlap one that `c` names (whole
// buffers, so a kernel's strided reads count in full).
static bool shares_bytes(const dhx_plan_rank *r, const dhx_plan_instr *in,
                         const dhx_plan_instr *c) {
  for (uint32_t a = 0; a < in->nargs; a++) {
    if (in->args[a].kind != DHX_ARG_BUF) continue;
    const dhx_plan_buffer *x = &r->buffers[in->args[a].buf];
    for (uint32_t b = 0; b < c->nargs; b++) {
      if (c->args[b].kind != DHX_ARG_BUF) continue;
      const dhx_plan_buffer *y = &r->buffers[c->args[b].buf];
      if (x->offset < y->offset + y->nbytes && y->offset < x->offset + x->nbytes) return true;
    }
  }
  return false;
}

// Between a deferred collective and its WAIT its stream goes on while the collective still
// reads and writes its regions: nothing there may touch their bytes.
static bool check_deferred_regions(plan_check_ctx *v, const dhx_plan_program *p,
                                   const int64_t *by) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    const dhx_plan_instr *w = &p->instrs[i];
    if (w->op != DHX_OP_WAIT || by[w->event] < 0) continue;
    const dhx_plan_instr *c = &p->instrs[by[w->event]];
    for (uint32_t j = (uint32_t)by[w->event] + 1; j < i; j++) {
      const dhx_plan_instr *in = &p->instrs[j];
      if (in->stream != c->stream || !shares_bytes(r, in, c)) continue;
      v->instr = j;
      v->note = dhx_instr_note(in);
      return plan_check_fail(v, "touches the bytes of deferred collective %" PRId64 " ('%s') "
                             "before its WAIT (instr %u)", by[w->event], dhx_instr_note(c), i);
    }
  }
  return true;
}

// A deferred collective (plan.h: dhx_instr_deferred) is completed by the stream that posted it,
// at its one WAIT: so its event has no other recorder and exactly one WAIT, later on its stream,
// and nothing between them on that stream touches its regions.
static bool check_deferred(plan_check_ctx *v, const dhx_plan_program *p) {
  int64_t *by = malloc(sizeof(int64_t) * (p->nevents ? p->nevents : 1));  // its collective
  uint32_t *waits = calloc(p->nevents ? p->nevents : 1, sizeof(uint32_t));
  if (!by || !waits) {
    free(by);
    free(waits);
    return plan_check_fail(v, "out of memory");
  }
  for (uint32_t e = 0; e < p->nevents; e++) by[e] = -1;
  bool ok = true;
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if (!dhx_instr_deferred(in)) continue;
    v->instr = i;
    v->note = dhx_instr_note(in);
    if (by[in->event] >= 0)
      ok = plan_check_fail(v, "event %d is deferred to by two collectives", in->event);
    by[in->event] = i;
  }
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if ((in->op != DHX_OP_RECORD && in->op != DHX_OP_WAIT) || by[in->event] < 0) continue;
    const dhx_plan_instr *c = &p->instrs[by[in->event]];
    v->instr = i;
    v->note = dhx_instr_note(in);
    if (in->op == DHX_OP_RECORD)
      ok = plan_check_fail(v, "RECORD of event %d, which a deferred collective records",
                           in->event);
    else if (in->stream != c->stream || (int64_t)i < by[in->event])
      ok = plan_check_fail(v, "WAIT on deferred event %d must come after its collective on its "
                           "stream %u (only that stream completes it)", in->event, c->stream);
    else if (waits[in->event]++)
      ok = plan_check_fail(v, "a second WAIT on deferred event %d", in->event);
  }
  for (uint32_t e = 0; e < p->nevents && ok; e++)
    if (by[e] >= 0 && !waits[e]) {
      v->instr = (int64_t)by[e];
      v->note = dhx_instr_note(&p->instrs[by[e]]);
      ok = plan_check_fail(v, "deferred to event %d, which no WAIT completes", (int)e);
    }
  if (ok) ok = check_deferred_regions(v, p, by);
  v->instr = -1;
  free(by);
  free(waits);
  return ok;
}

// Every WAIT must be able to complete: simulate the streams, letting each run until it reaches
// a WAIT whose event nobody has recorded yet (or a compute instruction whose turn has not come);
// if all streams stop before their end, the event graph has a cycle (or waits for a RECORD that
// never comes) and the program would hang.
bool plan_check_events(plan_check_ctx *v, const dhx_plan_program *p) {
  uint32_t nturns;
  if (!check_turns(v, p, &nturns) || !check_deferred(v, p)) return false;
  uint32_t next_turn = 1;
  bool ok = true;
  uint8_t *recorded = calloc(p->nevents ? p->nevents : 1, 1);
  uint8_t *ever = calloc(p->nevents ? p->nevents : 1, 1);
  if (!recorded || !ever) {
    free(recorded);
    free(ever);
    return plan_check_fail(v, "out of memory");
  }
  for (uint32_t i = 0; i < p->ninstrs; i++)
    if (dhx_instr_records(&p->instrs[i])) ever[p->instrs[i].event] = 1;
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if (in->op == DHX_OP_WAIT && !ever[in->event]) {
      v->instr = i;
      v->note = dhx_instr_note(in);
      ok = plan_check_fail(v, "WAIT on event %d, which no RECORD in this program records", in->event);
    }
  }
  uint32_t pos[DHX_MAX_STREAMS] = {0};  // next instruction index to look at, per stream
  bool progress = ok;
  while (progress) {
    progress = false;
    for (uint32_t s = 0; s < p->nstreams; s++) {
      for (; pos[s] < p->ninstrs; pos[s]++) {
        const dhx_plan_instr *in = &p->instrs[pos[s]];
        if (in->stream != s) continue;
        if (in->op == DHX_OP_WAIT && !recorded[in->event]) break;
        if (nturns && in->turn && in->turn != next_turn) break;
        if (nturns && in->turn) next_turn++;
        if (dhx_instr_records(in)) recorded[in->event] = 1;
        progress = true;
      }
    }
  }
  for (uint32_t s = 0; s < p->nstreams && ok; s++)
    if (pos[s] < p->ninstrs) {
      const dhx_plan_instr *in = &p->instrs[pos[s]];
      v->instr = pos[s];
      v->note = dhx_instr_note(in);
      if (in->op == DHX_OP_WAIT)
        ok = plan_check_fail(v, "WAIT on event %d can never complete (it is recorded only after this "
                 "wait, directly or through other streams): the program would hang", in->event);
      else
        ok = plan_check_fail(v, "turn %u never comes (an earlier turn waits for what this stream "
                 "does after it): the program would hang", in->turn);
    }
  v->instr = -1;
  free(recorded);
  free(ever);
  return ok;
}


// Collectives (all-reduce, reduce-scatter, all-gather) on one communicator and stream must form
// the same sequence on every member, or the ring exchanges would pair the wrong messages and
// hang. The reference member's sequences are collected once per (communicator, program); each
// other member is compared in one pass over its program.
typedef struct collective {
  uint32_t op;
  int64_t count;
} collective;

typedef struct collective_seq {
  collective *ops[DHX_MAX_STREAMS];  // the reference's collectives, in order
  uint32_t len[DHX_MAX_STREAMS];
} collective_seq;

static bool is_collective(uint32_t op) {
  return op == DHX_OP_ALLREDUCE || op == DHX_OP_REDUCE_SCATTER || op == DHX_OP_ALL_GATHER ||
         op == DHX_OP_ALL_TO_ALL;
}

// A collective of rank r's program on plan communicator c (after r's substitutions).
static bool on_comm(const dhx_plan_rank *r, const dhx_plan_instr *in, uint32_t c) {
  return is_collective(in->op) && dhx_rank_comm(r, in->comm) == (int32_t)c;
}

static int64_t collective_count(const dhx_plan_instr *in) {
  return in->args[dhx_op_count_arg(in->op)].i;
}

static const char *collective_name(uint32_t op) {
  return op == DHX_OP_ALLREDUCE        ? "all-reduce"
         : op == DHX_OP_REDUCE_SCATTER ? "reduce-scatter"
         : op == DHX_OP_ALL_GATHER     ? "all-gather"
                                       : "all-to-all";
}

static bool collect_sequence(const dhx_plan_rank *r, const dhx_plan_program *p, uint32_t c,
                             collective_seq *q) {
  memset(q, 0, sizeof *q);
  uint32_t total = 0;
  for (uint32_t i = 0; i < p->ninstrs; i++) total += on_comm(r, &p->instrs[i], c);
  collective *all = malloc(sizeof(collective) * (total ? total : 1));
  if (!all) return false;
  uint32_t start = 0;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {  // one block of `all` per stream
    q->ops[s] = all + start;
    for (uint32_t i = 0; i < p->ninstrs; i++)
      if (on_comm(r, &p->instrs[i], c) && p->instrs[i].stream == s)
        q->ops[s][q->len[s]++] = (collective){p->instrs[i].op, collective_count(&p->instrs[i])};
    start += q->len[s];
  }
  return true;
}

static bool compare_sequence(plan_check_ctx *v, const collective_seq *q, uint32_t c,
                             int32_t ref, int32_t other, int prog) {
  const dhx_plan_program *b = &v->p->ranks[other].programs[prog];
  uint32_t pos[DHX_MAX_STREAMS] = {0};
  v->rank = other;
  v->prog = prog;
  for (uint32_t j = 0; j < b->ninstrs; j++) {
    const dhx_plan_instr *in = &b->instrs[j];
    if (!on_comm(&v->p->ranks[other], in, c)) continue;
    uint32_t s = in->stream;
    v->instr = j;
    v->note = dhx_instr_note(in);
    if (pos[s] == q->len[s])
      return plan_check_fail(v, "one %s more on communicator %u stream %u than rank %d has: the "
                 "ranks would hang", collective_name(in->op), c, s, ref);
    collective want = q->ops[s][pos[s]++];
    if (in->op != want.op || collective_count(in) != want.count)
      return plan_check_fail(v, "%s of %" PRId64 " elements on communicator %u, but rank %d's "
                 "matching %s has %" PRId64 ": the ranks would hang", collective_name(in->op),
                 collective_count(in), c, ref, collective_name(want.op), want.count);
  }
  v->instr = -1;
  v->note = NULL;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
    if (pos[s] != q->len[s])
      return plan_check_fail(v, "%u collectives on communicator %u stream %u, rank %d has %u: the "
                 "ranks would hang", pos[s], c, s, ref, q->len[s]);
  v->rank = v->prog = -1;
  return true;
}

// ---- transfers --------------------------------------------------------------------------------
// A SEND completes only when its peer reaches the matching RECV (same count and tag) and a
// collective only when every member reaches it, so the members' instructions on one
// (communicator, program, stream) are run together, each member stopping at its first
// instruction that cannot complete yet. Whatever is left when nothing moves would hang.

typedef struct member_ops {
  const dhx_plan_instr **ops;  // this member's instructions on the communicator and stream
  uint32_t n, pos;
} member_ops;

static bool is_transfer(uint32_t op) { return op == DHX_OP_SEND || op == DHX_OP_RECV; }

static const dhx_plan_instr *head(const member_ops *m) { return m->pos < m->n ? m->ops[m->pos] : NULL; }

// Member i's SEND (or RECV) `a` and member a's peer's head `b` pair up.
static bool transfers_pair(const dhx_plan_instr *a, uint32_t i, const dhx_plan_instr *b) {
  return b && is_transfer(b->op) && b->op != a->op && b->args[2].i == (int64_t)i &&
         b->args[1].i == a->args[1].i && b->args[3].i == a->args[3].i;
}

// One round over the members: completes every transfer pair and, when all members stand at a
// collective, that collective. Returns whether anything completed.
static bool run_round(member_ops *m, uint32_t nm) {
  bool moved = false, all_collective = true;
  for (uint32_t i = 0; i < nm; i++) {
    const dhx_plan_instr *a = head(&m[i]);
    all_collective &= a && is_collective(a->op);
    if (!a || a->op != DHX_OP_SEND) continue;
    member_ops *peer = &m[a->args[2].i];
    if (!transfers_pair(a, i, head(peer))) continue;
    m[i].pos++;
    peer->pos++;
    moved = true;
  }
  if (all_collective && nm) {
    for (uint32_t i = 0; i < nm; i++) m[i].pos++;
    moved = true;
  }
  return moved;
}

static bool report_stuck(plan_check_ctx *v, const dhx_plan_comm *cm, const member_ops *m,
                         uint32_t c, int prog) {
  for (uint32_t i = 0; i < cm->nranks; i++) {
    const dhx_plan_instr *a = head(&m[i]);
    if (!a) continue;
    const dhx_plan_program *pr = &v->p->ranks[cm->ranks[i]].programs[prog];
    v->rank = cm->ranks[i];
    v->prog = prog;
    v->instr = a - pr->instrs;
    v->note = dhx_instr_note(a);
    if (!is_transfer(a->op)) continue;  // a collective waits on a member stuck at a transfer
    return plan_check_fail(v, "%s of %" PRId64 " elements %s rank %" PRId64 " of communicator %u "
               "(tag %" PRId64 ") has no matching %s in the same order: the ranks would hang",
               dhx_op_name(a->op), a->args[1].i, a->op == DHX_OP_SEND ? "to" : "from",
               a->args[2].i, c, a->args[3].i, a->op == DHX_OP_SEND ? "recv" : "send");
  }
  return plan_check_fail(v, "collectives and transfers on communicator %u do not pair up: the "
                         "ranks would hang", c);
}

static bool has_transfers(const dhx_plan *pl, const dhx_plan_comm *cm, uint32_t c, int prog) {
  for (uint32_t i = 0; i < cm->nranks; i++) {
    const dhx_plan_program *pr = &pl->ranks[cm->ranks[i]].programs[prog];
    for (uint32_t j = 0; j < pr->ninstrs; j++)
      if (is_transfer(pr->instrs[j].op) &&
          dhx_rank_comm(&pl->ranks[cm->ranks[i]], pr->instrs[j].comm) == (int32_t)c)
        return true;
  }
  return false;
}

// Gathers each member's instructions on (c, stream) into m[i] (ops point into `store`).
static void gather_members(const dhx_plan *pl, const dhx_plan_comm *cm, uint32_t c, int prog,
                           uint32_t stream, member_ops *m, const dhx_plan_instr **store) {
  for (uint32_t i = 0; i < cm->nranks; i++) {
    const dhx_plan_program *pr = &pl->ranks[cm->ranks[i]].programs[prog];
    m[i] = (member_ops){.ops = store};
    for (uint32_t j = 0; j < pr->ninstrs; j++) {
      const dhx_plan_instr *in = &pr->instrs[j];
      if (dhx_op_on_comm(in->op) && in->stream == stream &&
          dhx_rank_comm(&pl->ranks[cm->ranks[i]], in->comm) == (int32_t)c)
        m[i].ops[m[i].n++] = in;
    }
    store += m[i].n;
  }
}

static bool check_transfers_on(plan_check_ctx *v, uint32_t c, int prog) {
  const dhx_plan_comm *cm = &v->p->comms[c];
  size_t total = 0;
  for (uint32_t i = 0; i < cm->nranks; i++) total += v->p->ranks[cm->ranks[i]].programs[prog].ninstrs;
  member_ops *m = calloc(cm->nranks, sizeof *m);
  const dhx_plan_instr **store = malloc(sizeof *store * (total ? total : 1));
  bool ok = m && store;
  if (!ok) plan_check_fail(v, "out of memory");
  for (uint32_t s = 0; s < DHX_MAX_STREAMS && ok; s++) {
    gather_members(v->p, cm, c, prog, s, m, store);
    while (run_round(m, cm->nranks)) {
    }
    for (uint32_t i = 0; i < cm->nranks && ok; i++)
      if (head(&m[i])) ok = report_stuck(v, cm, m, c, prog);
  }
  free(m);
  free(store);
  return ok;
}

bool plan_check_collectives(plan_check_ctx *v) {
  for (uint32_t c = 0; c < v->p->ncomms; c++) {
    const dhx_plan_comm *cm = &v->p->comms[c];
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      collective_seq q;
      if (!collect_sequence(&v->p->ranks[cm->ranks[0]], &v->p->ranks[cm->ranks[0]].programs[p], c,
                            &q))
        return plan_check_fail(v, "out of memory");
      bool ok = true;
      for (uint32_t i = 1; i < cm->nranks && ok; i++)
        ok = compare_sequence(v, &q, c, cm->ranks[0], cm->ranks[i], p);
      free(q.ops[0]);
      if (!ok || (has_transfers(v->p, cm, c, p) && !check_transfers_on(v, c, p))) return false;
    }
  }
  return true;
}
