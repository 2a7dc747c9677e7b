// memplan.c — static arena layout for one rank.
//
// Persistent tensors come first, in an order that makes the optimizer's windows contiguous:
// parameters with weight decay, parameters without, then gradients, first and second moments
// (and qWD's master weights) in the same order (so element e of every window is the same weight), then the inputs,
// losses and scratch. Activations follow: each belongs to one program and shares memory with
// the activations of that program whose uses all happen before its own or after them, by the
// order of streams and events (first fit over the op order; with paired strands also
// two-ended, below). The programs never run at the same time, so they all start at the same base.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "happens_before.h"
#include "passes.h"

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

static int view_id(const dhx_graph *g, const char *name) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_VIEW && strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

static void set_view(dhx_graph *g, const char *name, int64_t start, int64_t end, int first) {
  int v = view_id(g, name);
  if (v < 0) return;
  g->tensors[v].offset = start;
  g->tensors[v].view_elems = (end - start) / 4;
  g->tensors[v].view_of = first;
  g->tensors[v].shape[0] = g->tensors[v].view_elems;
}

// Places the state tensors (`which`: 0 param, 1 grad, 2 m, 3 v, 4 qWD master) of the parameters in the
// decay group or the other that are split by tensor parallelism (split) or whole, in
// parameter order. Returns the new end of the arena; *first is the first tensor placed.
static int64_t place_group(dhx_graph *g, int which, bool decay, bool split, int64_t at,
                           int *first) {
  for (int i = 0; i < g->ntensors; i++) {
    dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || p->decay != decay || (p->split_dim >= 0) != split) continue;
    int state[] = {i, p->grad, p->opt_m, p->opt_v, p->master};
    int t = state[which];
    if (t < 0) continue;
    if (*first < 0) *first = t;
    g->tensors[t].offset = at;
    at = align_up(at + dhx_tensor_alloc_bytes(&g->tensors[t]));
  }
  return at;
}

// Each kind of state is laid out as [decay: whole | split] [no decay: split | whole], so the
// decay groups, all state, and the split tensors' state are each one contiguous window:
// the optimizer runs over the groups, the gradient norm adds the split part over the tensor
// ranks and the whole part once. With sharded data parallelism (zero.c) the gradients and
// moments (and with zero 3 the parameters) are this rank's pieces, laid out the same way.
static int64_t place_persistent(dhx_graph *g) {
  static const char *kinds[] = {"params", "grads", "adam_m", "adam_v", "master"};
  int64_t at = 0;
  for (int which = 0; which < 5; which++) {  // (no views name the masters)
    int64_t kind_start = at, split_start = 0, whole_start = 0;
    int kind_first = -1, split_first = -1, whole_first = -1, group_first = -1;
    char name[64];
    // decay: whole, then split
    int64_t start = at;
    at = place_group(g, which, true, false, at, &group_first);
    if (which == 1) set_view(g, "grads[whole,decay]", start, at, group_first);
    kind_first = group_first;
    split_start = at;
    at = place_group(g, which, true, true, at, &split_first);
    if (group_first < 0) group_first = split_first;
    snprintf(name, sizeof name, "%s[decay]", kinds[which]);
    set_view(g, name, start, at, group_first);
    // no decay: split, then whole
    start = at;
    group_first = -1;
    at = place_group(g, which, false, true, at, &group_first);
    if (split_first < 0) split_first = group_first;
    if (which == 1) set_view(g, "grads[split]", split_start, at, split_first);
    whole_start = at;
    at = place_group(g, which, false, false, at, &whole_first);
    if (which == 1) set_view(g, "grads[whole,no_decay]", whole_start, at, whole_first);
    if (group_first < 0) group_first = whole_first;
    snprintf(name, sizeof name, "%s[no_decay]", kinds[which]);
    set_view(g, name, start, at, group_first);
    if (kind_first < 0) kind_first = split_first >= 0 ? split_first : whole_first;
    if (which == 1) set_view(g, "grads[all]", kind_start, at, kind_first);
  }
  for (int i = 0; i < g->ntensors; i++) {
    dhx_tensor *t = &g->tensors[i];
    if (t->kind == DHX_T_TOKENS || t->kind == DHX_T_TARGETS || t->kind == DHX_T_LOSSES ||
        t->kind == DHX_T_SCRATCH) {
      t->offset = at;
      at = align_up(at + dhx_tensor_alloc_bytes(t));
    }
  }
  return at;
}

typedef struct live {
  int tensor;
  int64_t offset, size;
  int done;  // position in the op list from which on every op happens after its uses
} live;

static int by_first_use(const void *a, const void *b, void *g_) {
  const dhx_graph *g = g_;
  const dhx_tensor *x = &g->tensors[*(const int *)a], *y = &g->tensors[*(const int *)b];
  if (x->first_use != y->first_use) return x->first_use - y->first_use;
  return *(const int *)a - *(const int *)b;
}

// Lowest offset >= base where `size` bytes fit between the blocks in `act` (sorted by offset)
// that may be live with tensor t: those that do not happen before all of t's uses. A block
// used at or after t's first use in the list does not (a WAIT listed before its RECORD could
// order it so; treating it as live is safe), so only the others need the clocks.
static int64_t first_fit(const dhx_graph *g, const live *act, int n, int64_t base, int64_t size,
                         const dhx_hb *h, const dhx_hb_span *uses, const int *local, int t) {
  int64_t at = base;
  for (int i = 0; i < n; i++) {
    if (act[i].offset >= at + size) break;
    int x = act[i].tensor;
    if (g->tensors[x].last_use < g->tensors[t].first_use &&
        dhx_hb_span_before(h, &uses[local[x]], &uses[local[t]]))
      continue;
    if (act[i].offset + act[i].size > at) at = align_up(act[i].offset + act[i].size);
  }
  return at;
}

// Happens-before among the program's ops. Dead ops order nothing.
static void order_ops(const dhx_oplist *l, dhx_hb *h) {
  int ns = l->nstreams > 0 ? l->nstreams : 1;
  for (int i = 0; i < l->n; i++)
    if (l->ops[i].stream + 1 > ns) ns = l->ops[i].stream + 1;
  if (ns > DHX_MAX_STREAMS) DHX_ICE("%d streams (at most %d)", ns, DHX_MAX_STREAMS);
  dhx_hb_init(h, (uint32_t)l->n, (uint32_t)ns, (uint32_t)l->nevents);
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    h->stream[i] = (uint8_t)op->stream;
    if (op->dead) continue;
    if (op->kind == DHX_L_RECORD) h->records[i] = op->event;
    if (op->kind == DHX_L_WAIT) h->waits[i] = op->event;
  }
  dhx_hb_order(h);
}

// from[p]: the live ops at positions p and later. A block whose uses all happen before
// from[p] is done for every tensor first used at p or later.
static dhx_hb_span *ops_from(const dhx_oplist *l, const dhx_hb *h) {
  dhx_hb_span *from = malloc(sizeof(dhx_hb_span) * (size_t)(l->n + 1));
  if (!from) abort();
  dhx_hb_span_clear(&from[l->n]);
  for (int p = l->n - 1; p >= 0; p--) {
    from[p] = from[p + 1];
    if (!l->ops[p].dead) dhx_hb_span_add(h, &from[p], (uint32_t)p);
  }
  return from;
}

// The first position p after `last` with every op from p on happening after the uses `x`
// (from[p] only shrinks as p grows, so this is a binary search).
static int done_at(const dhx_hb *h, const dhx_hb_span *from, int n, const dhx_hb_span *x,
                   int last) {
  int lo = last + 1, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (dhx_hb_span_before(h, x, &from[mid]))
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

// Highest offset in [base, ceiling - size] where `size` bytes fit between the blocks that may
// be live with tensor t (as in first_fit), or, when none is free, the first fit above them all.
static int64_t last_fit(const dhx_graph *g, const live *act, int n, int64_t base, int64_t ceiling,
                        int64_t size, const dhx_hb *h, const dhx_hb_span *uses, const int *local,
                        int t) {
  int64_t best = -1, reach = base;  // reach: the end of the live blocks below the one at hand
  for (int i = 0; i <= n; i++) {
    int64_t next = ceiling;
    if (i < n) {
      int x = act[i].tensor;
      if (g->tensors[x].last_use < g->tensors[t].first_use &&
          dhx_hb_span_before(h, &uses[local[x]], &uses[local[t]]))
        continue;
      next = act[i].offset < ceiling ? act[i].offset : ceiling;
    }
    int64_t top = (next - size) / DHX_ALIGN * DHX_ALIGN;
    if (top >= reach) best = top;
    if (i < n && act[i].offset + act[i].size > reach) reach = align_up(act[i].offset + act[i].size);
  }
  return best >= 0 ? best : reach > ceiling ? reach : ceiling;
}

// One program's liveness: its activations in order of first use, and the happens-before
// relation their placement consults.
typedef struct liveness {
  dhx_graph *g;
  const dhx_oplist *l;
  dhx_hb h;
  dhx_hb_span *uses, *from;
  int *local, *order, n;
} liveness;

// How place() lays the activations out.
typedef enum placing {
  FIRST_FIT,  // each at the lowest offset where it fits
  TWO_ENDED,  // those first used by an odd micro-batch at the highest below a ceiling
  CEILING,    // none: only a ceiling for TWO_ENDED
} placing;

// Places the activations in order of first use; returns the arena's end, or for CEILING base
// plus the most bytes any tensor could be live with (itself and every block not done before
// it). That is what the arena needs when those blocks are live with each other too, as they
// are with one strand's activations beside the other's; where streams run free it may
// overstate the need (blocks live with a tensor need not be live with each other).
static int64_t place(liveness *v, int64_t base, placing how, int64_t ceiling) {
  dhx_graph *g = v->g;
  live *act = malloc(sizeof(live) * (size_t)(v->n + 1));
  if (!act) abort();
  int nact = 0, soonest = INT_MAX;  // soonest: the least `done` in act
  int64_t end = base;
  for (int k = 0; k < v->n; k++) {
    int id = v->order[k];
    dhx_tensor *t = &g->tensors[id];
    if (soonest <= t->first_use) {  // drop the blocks done before this tensor and all later ones
      int j = 0;
      soonest = INT_MAX;
      for (int i = 0; i < nact; i++)
        if (act[i].done > t->first_use) {
          act[j++] = act[i];
          if (act[i].done < soonest) soonest = act[i].done;
        }
      nact = j;
    }
    int64_t size = align_up(dhx_tensor_alloc_bytes(t));
    int64_t at = base;
    if (how == CEILING) {
      for (int i = 0; i < nact; i++) {
        int x = act[i].tensor;
        if (!(g->tensors[x].last_use < t->first_use &&
              dhx_hb_span_before(&v->h, &v->uses[v->local[x]], &v->uses[v->local[id]])))
          at += act[i].size;
      }
    } else if (how == TWO_ENDED && v->l->ops[t->first_use].at.micro % 2) {
      at = last_fit(g, act, nact, base, ceiling, size, &v->h, v->uses, v->local, id);
    } else {
      at = first_fit(g, act, nact, base, size, &v->h, v->uses, v->local, id);
    }
    if (how != CEILING) t->offset = at;
    // Keep `act` sorted by offset: insert after the blocks at or below the new one's offset
    // (the order a stable sort would give), one move instead of a sort per tensor.
    int pos = nact;
    if (how != CEILING)
      while (pos > 0 && act[pos - 1].offset > at) pos--;
    memmove(act + pos + 1, act + pos, sizeof(live) * (size_t)(nact - pos));
    act[pos] = (live){id, at, size,
                      done_at(&v->h, v->from, v->l->n, &v->uses[v->local[id]], t->last_use)};
    if (act[pos].done < soonest) soonest = act[pos].done;
    nact++;
    if (at + size > end) end = at + size;
  }
  free(act);
  return end;
}

// Activations of the program share bytes when every use of one happens before every use of
// the other (program order per stream, RECORD -> WAIT across streams): a use on another
// stream that nothing orders keeps the bytes live. Tensors are placed first fit in order of
// their first use; with one stream this is liveness by position in the op list.
//
// Paired strands defeat plain first fit: one micro-batch's backward frees its activations from
// the top of its stack down while the next micro-batch's forward allocates, so first fit puts
// the newcomer's first tensors in the top holes and then has to grow above them. So paired
// programs are placed two-ended as well: odd micro-batches stack down from a ceiling while even
// ones stack up from the base, each filling what the other frees; the smaller layout is kept.
static int64_t place_program(dhx_graph *g, int prog, int64_t base) {
  liveness v = {.g = g, .l = &g->prog[prog]};
  const dhx_oplist *l = v.l;
  v.local = malloc(sizeof(int) * (size_t)g->ntensors);  // index among the program's tensors
  if (!v.local) abort();
  int nlocal = 0;
  for (int i = 0; i < g->ntensors; i++) {
    v.local[i] = g->tensors[i].program == prog ? nlocal++ : -1;
    if (v.local[i] >= 0) g->tensors[i].first_use = g->tensors[i].last_use = -1;
  }
  order_ops(l, &v.h);
  v.uses = malloc(sizeof(dhx_hb_span) * (size_t)(nlocal + 1));
  if (!v.uses) abort();
  for (int i = 0; i < nlocal; i++) dhx_hb_span_clear(&v.uses[i]);
  for (int i = 0; i < l->n; i++) {
    if (l->ops[i].dead) continue;
    for (int j = 0; j < l->ops[i].nargs; j++) {
      int t = l->ops[i].args[j].tensor;
      if (l->ops[i].args[j].kind != DHX_ARG_BUF || g->tensors[t].kind != DHX_T_ACT) continue;
      if (v.local[t] < 0) continue;
      if (g->tensors[t].first_use < 0) g->tensors[t].first_use = i;
      g->tensors[t].last_use = i;
      dhx_hb_span_add(&v.h, &v.uses[v.local[t]], (uint32_t)i);
    }
  }
  v.from = ops_from(l, &v.h);
  v.order = malloc(sizeof(int) * (size_t)(nlocal + 1));
  if (!v.order) abort();
  for (int i = 0; i < g->ntensors; i++)
    if (v.local[i] >= 0 && g->tensors[i].first_use >= 0) v.order[v.n++] = i;
  qsort_r(v.order, (size_t)v.n, sizeof(int), by_first_use, g);
  int64_t end = place(&v, base, FIRST_FIT, 0);
  if (g->strands) {
    int64_t *first = malloc(sizeof(int64_t) * (size_t)(v.n + 1));
    if (!first) abort();
    for (int k = 0; k < v.n; k++) first[k] = g->tensors[v.order[k]].offset;
    int64_t two = place(&v, base, TWO_ENDED, place(&v, base, CEILING, 0));
    if (two < end) end = two;
    else
      for (int k = 0; k < v.n; k++) g->tensors[v.order[k]].offset = first[k];
    free(first);
  }
  free(v.order);
  free(v.from);
  free(v.uses);
  free(v.local);
  dhx_hb_free(&v.h);
  return end;
}

int64_t dhx_plan_persistent(dhx_graph *g) { return place_persistent(g); }

int64_t dhx_plan_memory(dhx_graph *g) {
  int64_t base = place_persistent(g), end = base;
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    int64_t e = place_program(g, p, base);
    if (e > end) end = e;
  }
  return end;
}
