// defer_collectives.c — paired strands that run free on a CPU cluster: a backward's collectives
// posted where they stand and completed where their results are first needed.
//
// With `search: none` each strand's collectives stay on its compute stream, and a collective
// there holds the stream until it is done, though the ops listed after it often do not need
// it: a layer's backward gathers its saved input again ("gather token rows again") and then
// computes the input gradient, which reads other tensors; it reduce-scatters that gradient and
// then computes the weight gradient (weight_grads.c moved it there). Deferred (plan.h:
// dhx_instr_deferred), such a collective is posted, its stream goes on, and one WAIT on its
// event completes it just before the first op that touches a tensor it names. The other strand
// no longer has the core to itself while the link is busy, which is when two strands on one
// core lose: the model of docs/simulator.md ("What two blocking chains on one core can reach")
// put the bench's paired step at 1.14x the limit with this, against 1.20 without.
//
// Which collectives: reduce-scatters and all-gathers of f32 on the tensor-parallel group when it
// has two members, which the CPU runtime really completes at the WAIT (comm.c); others it runs
// at the post, and deferring those would only make the simulator expect an overlap that does
// not happen. The WAIT also comes before any event, transfer or batch load (what orders the
// strands, or reads or writes what another stream sees, must see the collective complete), and
// at the latest at the end of the backward's segment, so a layer's segment still ends with its
// work done (pipeline.c orders the strands' backwards by segment).
//
// Nothing runs on other values: the same ops read the same bytes, a collective's inputs and
// outputs are left alone until its WAIT (the validator checks the bytes, and the memory
// planner keeps them live until then, memplan.c), so the losses stay bitwise those of
// `pair: off`.
#include <stdlib.h>
#include <string.h>

#include "lower.h"
#include "passes.h"

static bool deferrable(const dhx_graph *g, const dhx_lop *op) {
  if (op->dead || op->comm != DHX_COMM_TP || g->tp != 2) return false;
  if (op->kind != DHX_L_REDUCE_SCATTER && op->kind != DHX_L_ALL_GATHER) return false;
  for (int j = 0; j < 2; j++)
    if (op->args[j].kind != DHX_ARG_BUF || g->tensors[op->args[j].tensor].dtype != DHX_F32)
      return false;
  return true;
}

// Whether b must see collective c complete: it touches a tensor c names (a view may be any),
// or it is an event, a transfer or a batch load.
static bool needs_done(const dhx_graph *g, const dhx_lop *c, const dhx_lop *b) {
  if (dhx_lop_barrier(b)) return true;
  for (int i = 0; i < 2; i++) {
    int tc = c->args[i].tensor;
    for (int j = 0; j < b->nargs; j++) {
      if (b->args[j].kind != DHX_ARG_BUF) continue;
      int tb = b->args[j].tensor;
      if (tb == tc || g->tensors[tb].kind == DHX_T_VIEW || g->tensors[tc].kind == DHX_T_VIEW)
        return true;
    }
  }
  return false;
}

// Whether a collective must stay after op a: a touches a tensor it names, and one of the two
// writes it (a view may be any tensor), or a is another collective (their order is what every
// member issues), an event, a transfer or a batch load.
static bool after(const dhx_graph *g, const dhx_lop *a, const dhx_lop *c) {
  if (a->dead) return false;
  return dhx_lop_collective(a->kind) || dhx_lop_barrier(a) || a->stream != c->stream ||
         dhx_lops_conflict(g, a, c);
}

// Moves each deferrable collective of ops [from, to) up to just after the last op it must
// follow: a gather of a tensor the forward saved ("gather token rows again") then starts with
// its segment, and the ops before its reader run while it is on the link.
static void hoist(const dhx_graph *g, dhx_oplist *l, int from, int to) {
  for (int i = from; i < to; i++) {
    if (!deferrable(g, &l->ops[i])) continue;
    int k = i;
    while (k > from && !after(g, &l->ops[k - 1], &l->ops[i])) k--;
    if (k == i) continue;
    dhx_lop c = l->ops[i];
    memmove(&l->ops[k + 1], &l->ops[k], sizeof(dhx_lop) * (size_t)(i - k));
    l->ops[k] = c;
  }
}

static void push_wait(dhx_oplist *out, const dhx_lop *c) {
  dhx_lop w;
  memset(&w, 0, sizeof w);
  w.kind = DHX_L_WAIT;
  w.stream = c->stream;
  w.comm = -1;
  w.event = c->event;
  w.at = c->at;
  w.note = dhx_intern_note("complete the deferred collective");
  dhx_lop_append(out, &w);
}

int dhx_defer_collectives(const dhx_graph *g, dhx_oplist *l, int nseg, int *seg_first) {
  if (nseg <= 0) return 0;
  dhx_oplist out = {.nstreams = l->nstreams, .nevents = l->nevents, .at = l->at};
  int *pending = malloc(sizeof(int) * (size_t)(l->n + 1));  // positions in `out`, posting order
  int npending = 0, deferred = 0;
  if (!pending) abort();
  for (int i = 0; i < seg_first[0]; i++) dhx_lop_append(&out, &l->ops[i]);
  for (int s = 0; s < nseg; s++) {
    int from = seg_first[s], to = seg_first[s + 1];
    hoist(g, l, from, to);
    seg_first[s] = out.n;
    for (int i = from; i < to; i++) {
      const dhx_lop *op = &l->ops[i];
      if (!op->dead) {  // complete what this op needs, keeping the others pending
        int keep = 0;
        for (int k = 0; k < npending; k++) {
          const dhx_lop *c = &out.ops[pending[k]];
          if (c->stream == op->stream && needs_done(g, c, op))
            push_wait(&out, c);
          else
            pending[keep++] = pending[k];
        }
        npending = keep;
      }
      dhx_lop_append(&out, op);
      if (deferrable(g, op)) {
        out.ops[out.n - 1].event = out.nevents++;
        pending[npending++] = out.n - 1;
        deferred++;
      }
    }
    for (int k = 0; k < npending; k++) push_wait(&out, &out.ops[pending[k]]);
    npending = 0;
  }
  int end = seg_first[nseg];
  seg_first[nseg] = out.n;
  for (int i = end; i < l->n; i++) dhx_lop_append(&out, &l->ops[i]);
  free(pending);
  free(l->ops);
  *l = out;
  return deferred;
}
