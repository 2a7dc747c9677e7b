// async_comm.c — a template's collectives on a communication stream of their own, with the
// compute around them reordered so that work that does not need a collective's result runs
// while it is in flight.
//
// Tensor-parallel layers put collectives between their GEMMs, and in program order each one
// stops its strand until it is done. With sequence parallelism a linear layer's backward
// gathers its saved input again (which depends on nothing in the backward), computes the weight
// gradient and the input gradient, and reduce-scatters the latter, which the weight gradient
// does not need. This pass list-schedules each layer's run of ops of a one-stream template:
//
//   * a collective is issued as soon as the ops it depends on have run and the collectives
//     before it are issued: their order is kept, so every member of the group issues the same
//     sequence;
//   * of the compute ops that may run, first those that lead to the next collective (so it
//     starts early), then those that need no collective still in flight, each time the first
//     in program order; an op that needs one waits for it then;
//   * at the end of the run the compute stream waits for every collective it issued, so what
//     follows the run (another layer, a send, a pass that cuts at runs) sees it complete.
//
// Two ops keep their order when they touch a common tensor and one of them writes it (a view,
// which may alias anything, orders an op against all others). So the reordering changes when
// ops run, never what they compute: each value comes from the same inputs by the same op, and
// losses stay bitwise equal. Issuing puts a RECORD on the compute stream and a WAIT before the
// collective, so it also sees everything the strand computed earlier (a forward activation a
// backward gathers again). Collectives go on stream DHX_TMPL_COMM_STREAM and the events are the
// template's own (0 .. nevents-1): pipeline.c maps both per copy to the strand's communication
// stream and to fresh event ids.
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "kernels.h"
#include "lower.h"

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

typedef struct access {
  int tensor;  // -1: any tensor (a view)
  int effect;
} access;

typedef struct region {
  const dhx_graph *g;
  const dhx_lop *ops;  // the run's ops (dead ones dropped)
  int n;
  access *acc;         // [op * DHX_MAX_ARGS + k]
  int *nacc;
  char *dep;           // [i * n + j]: j must follow i (i < j)
} region;

static void find_accesses(region *r) {
  r->acc = xcalloc((size_t)r->n * DHX_MAX_ARGS, sizeof(access));
  r->nacc = xcalloc((size_t)r->n, sizeof(int));
  for (int i = 0; i < r->n; i++) {
    const dhx_lop *op = &r->ops[i];
    for (int j = 0; j < op->nargs; j++) {
      if (op->args[j].kind != DHX_ARG_BUF) continue;
      int t = op->args[j].tensor;
      bool view = r->g->tensors[t].kind == DHX_T_VIEW;
      r->acc[i * DHX_MAX_ARGS + r->nacc[i]++] =
          (access){view ? -1 : t, view ? 3 : dhx_lop_arg_effect(op, j)};
    }
  }
}

static bool conflict(const region *r, int a, int b) {
  for (int x = 0; x < r->nacc[a]; x++)
    for (int y = 0; y < r->nacc[b]; y++) {
      access p = r->acc[a * DHX_MAX_ARGS + x], q = r->acc[b * DHX_MAX_ARGS + y];
      bool same = p.tensor < 0 || q.tensor < 0 || p.tensor == q.tensor;
      if (same && ((p.effect | q.effect) & 2)) return true;
    }
  return false;
}

typedef struct sched {
  region *r;
  dhx_oplist *out;   // the template being rebuilt
  bool *emitted;     // compute op run, or collective issued
  int *done_event;   // collective: its "done" event while its result is not yet waited for
  int comm_stream;
} sched;

static void emit_event(sched *s, dhx_lop_kind kind, int stream, int event, const dhx_lop *like,
                       const char *note) {
  dhx_lop *op = dhx_lop_push(s->out, kind, stream, note);
  op->event = event;
  op->at = like->at;
}

static void issue(sched *s, int c) {
  const dhx_lop *op = &s->r->ops[c];
  int ready = s->out->nevents++, done = s->out->nevents++;
  emit_event(s, DHX_L_RECORD, 0, ready, op, "collective may start");
  emit_event(s, DHX_L_WAIT, s->comm_stream, ready, op, "collective may start");
  dhx_lop *copy = dhx_lop_push(s->out, op->kind, s->comm_stream, op->note);
  *copy = *op;
  copy->stream = s->comm_stream;
  emit_event(s, DHX_L_RECORD, s->comm_stream, done, op, "collective done");
  s->done_event[c] = done;
  s->emitted[c] = true;
}

// Op i may run: everything it depends on has run or been issued.
static bool ready(const sched *s, int i) {
  for (int p = 0; p < i; p++)
    if (s->r->dep[p * s->r->n + i] && !s->emitted[p]) return false;
  return true;
}

static bool needs_wait(const sched *s, int i) {
  for (int p = 0; p < i; p++)
    if (s->r->dep[p * s->r->n + i] && s->done_event[p] >= 0) return true;
  return false;
}

// Marks in `lead` the compute ops not yet run that collective c depends on, directly or not.
static void leads_to(const sched *s, int c, bool *lead) {
  memset(lead, 0, (size_t)s->r->n);
  lead[c] = true;
  for (int j = c; j >= 0; j--) {
    if (!lead[j]) continue;
    for (int p = 0; p < j; p++)
      if (s->r->dep[p * s->r->n + j] && !s->emitted[p]) lead[p] = true;
  }
  lead[c] = false;
}

// Runs compute op i, after waiting for the collectives it needs.
static void run_op(sched *s, int i) {
  const dhx_lop *op = &s->r->ops[i];
  for (int p = 0; p < i; p++)
    if (s->r->dep[p * s->r->n + i] && s->done_event[p] >= 0) {
      emit_event(s, DHX_L_WAIT, 0, s->done_event[p], op, "collective done");
      s->done_event[p] = -1;
    }
  dhx_lop *copy = dhx_lop_push(s->out, op->kind, 0, op->note);
  *copy = *op;
  s->emitted[i] = true;
}

// The next compute op to run: one that leads to collective `next` (-1: none left) and needs
// no collective in flight, else one that needs none, else the first that may run.
static int pick(const sched *s, int next, bool *lead) {
  int n = s->r->n, free_op = -1, first = -1;
  if (next >= 0) leads_to(s, next, lead);
  for (int i = 0; i < n; i++) {
    if (s->emitted[i] || dhx_lop_collective(s->r->ops[i].kind) || !ready(s, i)) continue;
    if (first < 0) first = i;
    if (needs_wait(s, i)) continue;
    if (next >= 0 && lead[i]) return i;
    if (free_op < 0) free_op = i;
  }
  return free_op >= 0 ? free_op : first;
}

static void schedule_region(sched *s) {
  region *r = s->r;
  bool *lead = xcalloc((size_t)r->n, 1);
  int next = 0, left = r->n;
  for (;;) {
    while (next < r->n && !dhx_lop_collective(r->ops[next].kind)) next++;
    if (next < r->n && ready(s, next)) {
      issue(s, next++);
      left--;
      continue;
    }
    if (left == 0) break;
    int i = pick(s, next < r->n ? next : -1, lead);
    if (i < 0) DHX_ICE("async collectives: no op of the run may run (%d left)", left);
    run_op(s, i);
    left--;
  }
  for (int c = 0; c < r->n; c++)  // the run ends with its collectives complete
    if (s->done_event[c] >= 0) {
      emit_event(s, DHX_L_WAIT, 0, s->done_event[c], &r->ops[c], "collective done");
      s->done_event[c] = -1;
    }
  free(lead);
}

// Schedules ops [from, to) of `in` (one run) into `out`.
static void rebuild_run(const dhx_graph *g, const dhx_oplist *in, int from, int to,
                        dhx_oplist *out, int comm_stream) {
  region r = {.g = g, .ops = in->ops + from, .n = to - from};
  find_accesses(&r);
  r.dep = xcalloc((size_t)r.n * (size_t)r.n, 1);
  for (int i = 0; i < r.n; i++)
    for (int j = i + 1; j < r.n; j++) r.dep[i * r.n + j] = conflict(&r, i, j);
  sched s = {.r = &r, .out = out, .emitted = xcalloc((size_t)r.n, 1),
             .done_event = xcalloc((size_t)r.n, sizeof(int)), .comm_stream = comm_stream};
  for (int i = 0; i < r.n; i++) s.done_event[i] = -1;
  schedule_region(&s);
  free(s.emitted);
  free(s.done_event);
  free(r.dep);
  free(r.acc);
  free(r.nacc);
}

int dhx_async_collectives(const dhx_graph *g, dhx_oplist *l, int from, int to) {
  dhx_oplist out = {.nstreams = l->nstreams, .nevents = l->nevents, .at = l->at};
  for (int i = 0; i < from; i++) *dhx_lop_push(&out, l->ops[i].kind, 0, NULL) = l->ops[i];
  // The live ops of the range, then each run of one layer scheduled on its own.
  dhx_oplist live = {0};
  for (int i = from; i < to; i++) {
    if (l->ops[i].dead) continue;
    if (l->ops[i].stream != 0 || l->ops[i].kind == DHX_L_RECORD || l->ops[i].kind == DHX_L_WAIT)
      DHX_ICE("async collectives: the template has streams or events already");
    *dhx_lop_push(&live, l->ops[i].kind, 0, NULL) = l->ops[i];
  }
  for (int a = 0, b; a < live.n; a = b) {
    for (b = a + 1; b < live.n && live.ops[b].at.layer == live.ops[a].at.layer; b++) {}
    rebuild_run(g, &live, a, b, &out, DHX_TMPL_COMM_STREAM);
  }
  int end = out.n;
  for (int i = to; i < l->n; i++) *dhx_lop_push(&out, l->ops[i].kind, 0, NULL) = l->ops[i];
  free(live.ops);
  free(l->ops);
  *l = out;
  l->nstreams = 1;  // the communication stream is a stand-in, mapped when copied
  return end;
}

void dhx_async_collectives_program(const dhx_graph *g, dhx_oplist *l, int nfwd) {
  nfwd = dhx_async_collectives(g, l, 0, nfwd);
  dhx_async_collectives(g, l, nfwd, l->n);
  l->nstreams = 1;
  for (int i = 0; i < l->n; i++)
    if (l->ops[i].stream == DHX_TMPL_COMM_STREAM) {
      l->ops[i].stream = 1;
      l->nstreams = 2;
    }
}
