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
#include "arena_blocks.h"
#include "happens_before.h"
#include "lower.h"
#include "passes.h"

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

// The tensors place_persistent lays out, found in one pass: a stage of a paper-scale pipeline
// holds hundreds of thousands of activations, which each group below would otherwise scan.
typedef struct persistent {
  dhx_graph *g;
  int *params, nparams;  // in parameter order
  int *views, nviews;
  int *rest, nrest;      // inputs, losses and scratch, in tensor order
} persistent;

static void set_view(persistent *ps, const char *name, int64_t start, int64_t end, int first) {
  for (int i = 0; i < ps->nviews; i++) {
    dhx_tensor *v = &ps->g->tensors[ps->views[i]];
    if (strcmp(v->name, name) != 0) continue;
    v->offset = start;
    v->view_elems = (end - start) / 4;
    v->view_of = first;
    v->shape[0] = v->view_elems;
    return;
  }
}

// Places the state tensors (`which`: 0 param, 1 grad, 2 m, 3 v, 4 qWD master) of the parameters in the
// decay group or the other that are split by tensor parallelism (split) or whole, in
// parameter order. Returns the new end of the arena; *first is the first tensor placed.
static int64_t place_group(persistent *ps, int which, bool decay, bool split, int64_t at,
                           int *first) {
  dhx_graph *g = ps->g;
  for (int k = 0; k < ps->nparams; k++) {
    int i = ps->params[k];
    dhx_tensor *p = &g->tensors[i];
    if (p->decay != decay || (p->split_dim >= 0) != split) continue;
    int state[] = {i, p->grad, p->opt_m, p->opt_v, p->master};
    int t = state[which];
    if (t < 0) continue;
    if (*first < 0) *first = t;
    g->tensors[t].offset = at;
    at = align_up(at + dhx_tensor_alloc_bytes(&g->tensors[t]));
  }
  return at;
}

static int *ints(int n) {
  int *p = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
  if (!p) abort();
  return p;
}

// Each kind of state is laid out as [decay: whole | split] [no decay: split | whole], so the
// decay groups, all state, and the split tensors' state are each one contiguous window:
// the optimizer runs over the groups, the gradient norm adds the split part over the tensor
// ranks and the whole part once. With sharded data parallelism (zero.c) the gradients and
// moments (and with zero 3 the parameters) are this rank's pieces, laid out the same way.
static int64_t place_persistent(dhx_graph *g) {
  static const char *kinds[] = {"params", "grads", "adam_m", "adam_v", "master"};
  persistent ps = {.g = g, .params = ints(g->ntensors), .views = ints(g->ntensors),
                   .rest = ints(g->ntensors)};
  for (int i = 0; i < g->ntensors; i++) {
    dhx_tensor_kind k = g->tensors[i].kind;
    if (k == DHX_T_PARAM) ps.params[ps.nparams++] = i;
    if (k == DHX_T_VIEW) ps.views[ps.nviews++] = i;
    if (k == DHX_T_TOKENS || k == DHX_T_TARGETS || k == DHX_T_LOSSES || k == DHX_T_SCRATCH)
      ps.rest[ps.nrest++] = i;
  }
  int64_t at = 0;
  for (int which = 0; which < 5; which++) {  // (no views name the masters)
    int64_t kind_start = at, split_start = 0, whole_start = 0;
    int kind_first = -1, split_first = -1, whole_first = -1, group_first = -1;
    char name[64];
    // decay: whole, then split
    int64_t start = at;
    at = place_group(&ps, which, true, false, at, &group_first);
    if (which == 1) set_view(&ps, "grads[whole,decay]", start, at, group_first);
    kind_first = group_first;
    split_start = at;
    at = place_group(&ps, which, true, true, at, &split_first);
    if (group_first < 0) group_first = split_first;
    snprintf(name, sizeof name, "%s[decay]", kinds[which]);
    set_view(&ps, name, start, at, group_first);
    // no decay: split, then whole
    start = at;
    group_first = -1;
    at = place_group(&ps, which, false, true, at, &group_first);
    if (split_first < 0) split_first = group_first;
    if (which == 1) set_view(&ps, "grads[split]", split_start, at, split_first);
    whole_start = at;
    at = place_group(&ps, which, false, false, at, &whole_first);
    if (which == 1) set_view(&ps, "grads[whole,no_decay]", whole_start, at, whole_first);
    if (group_first < 0) group_first = whole_first;
    snprintf(name, sizeof name, "%s[no_decay]", kinds[which]);
    set_view(&ps, name, start, at, group_first);
    if (kind_first < 0) kind_first = split_first >= 0 ? split_first : whole_first;
    if (which == 1) set_view(&ps, "grads[all]", kind_start, at, kind_first);
  }
  for (int k = 0; k < ps.nrest; k++) {
    dhx_tensor *t = &g->tensors[ps.rest[k]];
    t->offset = at;
    at = align_up(at + dhx_tensor_alloc_bytes(t));
  }
  free(ps.params);
  free(ps.views);
  free(ps.rest);
  return at;
}

// Happens-before among the program's ops (dead ops order nothing), read in one walk over them
// with what else the planner needs of an op besides its operands: whether it is dead, and per
// event the live WAIT that completes it (-1: none). A stage of a paper-scale pipeline has
// hundreds of thousands of 344-byte ops, and each walk over them counts.
static void order_ops(const dhx_oplist *l, dhx_hb *h, uint8_t *dead, int *completed_at) {
  size_t n = (size_t)l->n;
  uint8_t *stream = malloc(n + 1);
  int32_t *records = malloc(sizeof(int32_t) * (n + 1)), *waits = malloc(sizeof(int32_t) * (n + 1));
  if (!stream || !records || !waits) abort();
  for (int e = 0; e < l->nevents; e++) completed_at[e] = -1;
  int ns = l->nstreams > 0 ? l->nstreams : 1;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->stream + 1 > ns) ns = op->stream + 1;
    stream[i] = (uint8_t)op->stream;
    dead[i] = op->dead;
    records[i] = !op->dead && op->kind == DHX_L_RECORD ? op->event : -1;
    waits[i] = !op->dead && op->kind == DHX_L_WAIT ? op->event : -1;
    if (waits[i] >= 0) completed_at[waits[i]] = i;  // (a deferred collective's)
  }
  if (ns > DHX_MAX_STREAMS) DHX_ICE("%d streams (at most %d)", ns, DHX_MAX_STREAMS);
  dhx_hb_init(h, (uint32_t)l->n, (uint32_t)ns, (uint32_t)l->nevents);
  memcpy(h->stream, stream, n);
  memcpy(h->records, records, sizeof(int32_t) * n);
  memcpy(h->waits, waits, sizeof(int32_t) * n);
  free(stream);
  free(records);
  free(waits);
  dhx_hb_order(h);
}

// Where a block leaves the live sets. Its uses x are done by an op q when every one of them
// happens before q: when, on every stream r, q has at least x.last_on[r] ops of r before it
// (past(q, r)). Along a stream past(q, r) only grows, and so does, along the list, the least
// past(q, r) over the ops from position p on; so the first op (position) where it reaches L
// is found once per L, in a table, and where a block is done is the latest of those over the
// streams: nstreams lookups per block, where a search over a paper-scale stage's hundreds of
// thousands of ops took twenty probes of nstreams clock words each.

// reach[L] for L = 0..most: the first index i of vals[0..n) (non-decreasing) with vals[i] >= L,
// n where none is. vals(ctx, i) reads the i-th value.
static uint32_t *reach_table(uint32_t most, int n, uint32_t (*vals)(const void *, int),
                             const void *ctx) {
  uint32_t *reach = malloc(sizeof(uint32_t) * ((size_t)most + 1));
  if (!reach) abort();
  uint32_t L = 0;
  for (int i = 0; i < n && L <= most; i++)
    for (uint32_t v = vals(ctx, i); L <= v && L <= most; L++) reach[L] = (uint32_t)i;
  for (; L <= most; L++) reach[L] = (uint32_t)n;
  return reach;
}

typedef struct stream_past {  // past(ops[i], r) along one stream's ops
  const dhx_hb *h;
  const uint32_t *ops;
  uint32_t r;
} stream_past;

static uint32_t past_along(const void *ctx, int i) {
  const stream_past *sp = ctx;
  return dhx_hb_past(sp->h, sp->ops[i], sp->r);
}

typedef struct least_past {  // over the live ops from position p on, the least past(op, r)
  const uint32_t *from;      //   (from[p * nstreams + r], UINT32_MAX past the last op)
  uint32_t ns, r;
} least_past;

static uint32_t least_from(const void *ctx, int p) {
  const least_past *lp = ctx;
  return lp->from[(size_t)p * lp->ns + lp->r];
}

// The least past(op, s) over the live ops at positions p and later, per p and stream.
static uint32_t *ops_from(int n, const uint8_t *dead, const dhx_hb *h) {
  uint32_t ns = h->nstreams;
  uint32_t *past_from = malloc(sizeof(uint32_t) * ns * (size_t)(n + 1));
  if (!past_from) abort();
  uint32_t *at = &past_from[(size_t)n * ns];
  for (uint32_t s = 0; s < ns; s++) at[s] = UINT32_MAX;
  for (int p = n - 1; p >= 0; p--) {
    at -= ns;
    memcpy(at, at + ns, sizeof(uint32_t) * ns);
    if (dead[p]) continue;
    for (uint32_t s = 0; s < ns; s++) {
      uint32_t past = dhx_hb_past(h, (uint32_t)p, s);
      if (past < at[s]) at[s] = past;
    }
  }
  return past_from;
}

// One program's liveness: its activations in order of first use, and the happens-before
// relation their placement consults.
typedef struct liveness {
  dhx_graph *g;
  const dhx_oplist *l;
  dhx_hb h;
  uint8_t *dead;                         // per op: whether it is (order_ops)
  int *completed_at;                     // per event: the live WAIT on it, -1 (order_ops)
  dhx_hb_span *uses;
  uint32_t most_on[DHX_MAX_STREAMS];     // per stream: its ops (the highest last_on)
  uint32_t *reach_from[DHX_MAX_STREAMS]; // per stream r, where `all` is consulted: the first
                                         //   position from which every live op has at least
                                         //   L ops of r before it, by L (reach_table)
  uint32_t *reach_on[DHX_MAX_STREAMS][DHX_MAX_STREAMS];  // per stream s that hosts and stream
                                         //   r: the first index in ops_on[s] with at least L
                                         //   ops of r before it, by L
  int *local;                            // per tensor: its index among the program's
                                         //   activations, -1 for other tensors
  int *first, *last;                     // per activation (local index): its first and last
                                         //   use (positions in the list), -1: unused,
  int64_t *size;                         //   its bytes in the arena,
  bool *odd;                             //   whether strand 1's micro-batch uses it first
  int *order, n;                         // the used activations (tensor ids) by first use
  int64_t *at;                           // per tensor in `order`: its offset as placed
  int *only_on;                          // per tensor in `order`: the one stream all its uses
                                         //   are on, or -1
  int last_shared;                       // the last index in `order` with only_on -1 (-1: none)
  uint32_t *ops_on[DHX_MAX_STREAMS];     // per stream that hosts: its live ops in list order,
  uint32_t *before_on[DHX_MAX_STREAMS];  //   and per list position p, how many are before p
  int nops_on[DHX_MAX_STREAMS];
  bool hosts[DHX_MAX_STREAMS];           // some tensor is used on this stream alone
  int *done, *done_on[DHX_MAX_STREAMS];  // per tensor in `order`: where its block leaves `all`
                                         //   (before last_shared) and on[s] of a stream that
                                         //   hosts (live_sets)
} liveness;

// How place() lays the activations out.
typedef enum placing {
  FIRST_FIT,  // each at the lowest offset where it fits
  TWO_ENDED,  // those first used by strand 1's micro-batches at the highest below a ceiling
  CEILING,    // none: only a ceiling for TWO_ENDED
} placing;

// Whether block x may be live with the tensor being placed: unless all of x's uses are listed
// before the tensor's first and happen before all of its uses. (A use of x listed at or after
// the tensor's first use could still happen before it, through a WAIT listed before its
// RECORD; taking x as live is safe.)
typedef struct placing_tensor {
  const liveness *v;
  int id;
} placing_tensor;

static bool live_with(const void *ctx, int x) {
  const placing_tensor *p = ctx;
  const liveness *v = p->v;
  int lx = v->local[x], lt = v->local[p->id];
  return !(v->last[lx] < v->first[lt] && dhx_hb_span_before(&v->h, &v->uses[lx], &v->uses[lt]));
}

// The blocks that may still be live, twice over. `all` holds every block not done for every
// later tensor (live_with decides per tensor). on[s] holds, for a stream that some tensor is
// used on alone, the blocks not done for such tensors: a tensor whose uses are all on s, the
// first at position f, is live with block x exactly when x's uses do not all happen before f
// (the later uses follow f on the stream), that is when x's done_on(s) is past f. So a tensor
// used on one stream fits among all of on[s] with no test per block, and the fits skip whole
// pages; one used on several streams tests every block of `all`. Only those consult `all`
// (a few hundred of a paper-scale stage's activations), so it is brought up to date when one
// does: the blocks placed since (`pending`) join it then, those done by then never.
typedef struct live_sets {
  dhx_blocks all, on[DHX_MAX_STREAMS];
  dhx_block *pending;
  int npending;
} live_sets;

// `all` as the tensor first used at position `first` sees it.
static dhx_blocks *all_at(live_sets *ls, int first) {
  dhx_blocks_drop_done(&ls->all, first);
  for (int i = 0; i < ls->npending; i++)
    if (ls->pending[i].done > first) dhx_blocks_insert(&ls->all, ls->pending[i]);
  ls->npending = 0;
  return &ls->all;
}

// Places the activations in order of first use; returns the arena's end, or for CEILING base
// plus the most bytes any tensor could be live with (itself and every block not done before
// it). That is what the arena needs when those blocks are live with each other too, as they
// are with one strand's activations beside the other's; where streams run free it may
// overstate the need (blocks live with a tensor need not be live with each other). TWO_ENDED
// (and CEILING) gives up, returning INT64_MAX, once its end reaches `stop` (the layout it would
// have to beat).
static int64_t place(liveness *v, int64_t base, placing how, int64_t ceiling, int64_t stop) {
  live_sets ls = {.pending = malloc(sizeof(dhx_block) * (size_t)(v->n + 1))};
  if (!ls.pending) abort();
  dhx_blocks_init(&ls.all);
  for (int s = 0; s < DHX_MAX_STREAMS; s++) dhx_blocks_init(&ls.on[s]);
  int64_t end = base;
  for (int k = 0; k < v->n && end < stop; k++) {
    int id = v->order[k];
    int lt = v->local[id], first = v->first[lt];
    for (int s = 0; s < (int)v->h.nstreams; s++)
      if (v->hosts[s]) dhx_blocks_drop_done(&ls.on[s], first);
    int64_t size = v->size[lt];
    dhx_blocks *mine = v->only_on[k] >= 0 ? &ls.on[v->only_on[k]] : NULL;
    const dhx_blocks *all = mine ? NULL : all_at(&ls, first);
    placing_tensor pt = {v, id};
    int64_t at;
    if (how == CEILING)
      at = base + (mine ? dhx_blocks_bytes(mine) : dhx_blocks_bytes_if(all, live_with, &pt));
    else if (how == TWO_ENDED && v->odd[lt])
      at = mine ? dhx_blocks_last_fit(mine, base, ceiling, size)
                : dhx_blocks_last_fit_if(all, base, ceiling, size, live_with, &pt);
    else
      at = mine ? dhx_blocks_first_fit(mine, base, size)
                : dhx_blocks_first_fit_if(all, base, size, live_with, &pt);
    if (how != CEILING) v->at[k] = at;
    dhx_block b = {.offset = at, .end = at + size, .tensor = id};
    if (k < v->last_shared) {  // a later tensor consults `all`
      b.done = v->done[k];
      ls.pending[ls.npending++] = b;
    }
    for (int s = 0; s < (int)v->h.nstreams; s++) {
      if (!v->hosts[s]) continue;
      b.done = v->done_on[s][k];
      dhx_blocks_insert(&ls.on[s], b);
    }
    if (at + size > end) end = at + size;
  }
  dhx_blocks_free(&ls.all);
  for (int s = 0; s < DHX_MAX_STREAMS; s++) dhx_blocks_free(&ls.on[s]);
  free(ls.pending);
  return end < stop ? end : INT64_MAX;
}

// Each stream's live ops, the stream each tensor is used on alone (if one), and where each
// tensor's block leaves the live sets.
static void find_streams(liveness *v) {
  const dhx_oplist *l = v->l;
  v->only_on = malloc(sizeof(int) * (size_t)(v->n + 1));
  if (!v->only_on) abort();
  v->last_shared = -1;
  for (int k = 0; k < v->n; k++) {
    const dhx_hb_span *u = &v->uses[v->local[v->order[k]]];
    int on = -1, count = 0;
    for (uint32_t s = 0; s < v->h.nstreams; s++)
      if (u->last_on[s]) on = (int)s, count++;
    v->only_on[k] = count == 1 ? on : -1;
    if (count == 1) v->hosts[on] = true;
    else v->last_shared = k;
  }
  for (uint32_t s = 0; s < v->h.nstreams; s++) {
    if (!v->hosts[s]) continue;
    v->ops_on[s] = malloc(sizeof(uint32_t) * (size_t)(l->n + 1));
    v->before_on[s] = malloc(sizeof(uint32_t) * (size_t)(l->n + 1));
    if (!v->ops_on[s] || !v->before_on[s]) abort();
  }
  for (int i = 0; i < l->n; i++) {
    uint32_t s = v->h.stream[i];
    if (v->hosts[s] && !v->dead[i]) v->ops_on[s][v->nops_on[s]++] = (uint32_t)i;
  }
  for (uint32_t s = 0; s < v->h.nstreams; s++) {
    if (!v->hosts[s]) continue;
    for (int p = 0, k = 0; p <= l->n; p++) {
      while (k < v->nops_on[s] && (int)v->ops_on[s][k] < p) k++;
      v->before_on[s][p] = (uint32_t)k;
    }
  }
  // Where each block leaves each set: the same for every way of placing.
  uint32_t ns = v->h.nstreams;
  for (int i = 0; i < l->n; i++)
    if (v->h.pos[i] > v->most_on[v->h.stream[i]]) v->most_on[v->h.stream[i]] = v->h.pos[i];
  if (v->last_shared > 0) {
    uint32_t *from = ops_from(l->n, v->dead, &v->h);
    for (uint32_t r = 0; r < ns; r++) {
      least_past lp = {from, ns, r};
      v->reach_from[r] = reach_table(v->most_on[r], l->n + 1, least_from, &lp);
    }
    free(from);
  }
  for (uint32_t s = 0; s < ns; s++)
    for (uint32_t r = 0; r < ns && v->hosts[s]; r++) {
      stream_past sp = {&v->h, v->ops_on[s], r};
      v->reach_on[s][r] = reach_table(v->most_on[r], v->nops_on[s], past_along, &sp);
    }
  v->done = malloc(sizeof(int) * (size_t)(v->n + 1));
  if (!v->done) abort();
  for (uint32_t s = 0; s < v->h.nstreams; s++) {
    if (!v->hosts[s]) continue;
    v->done_on[s] = malloc(sizeof(int) * (size_t)(v->n + 1));
    if (!v->done_on[s]) abort();
  }
  for (int k = 0; k < v->n; k++) {
    const dhx_hb_span *u = &v->uses[v->local[v->order[k]]];
    int last = v->last[v->local[v->order[k]]];
    // done: the first position after `last` from which every live op is after the uses.
    if (k < v->last_shared) {
      uint32_t p = (uint32_t)last + 1;
      for (uint32_t r = 0; r < ns; r++)
        if (v->reach_from[r][u->last_on[r]] > p) p = v->reach_from[r][u->last_on[r]];
      v->done[k] = (int)p;
    }
    // done_on[s]: the first live op of s after `last` that every use happens before (INT_MAX:
    // none).
    for (uint32_t s = 0; s < ns; s++) {
      if (!v->hosts[s]) continue;
      uint32_t i = v->before_on[s][last + 1];
      for (uint32_t r = 0; r < ns; r++)
        if (v->reach_on[s][r][u->last_on[r]] > i) i = v->reach_on[s][r][u->last_on[r]];
      v->done_on[s][k] = i < (uint32_t)v->nops_on[s] ? (int)v->ops_on[s][i] : INT_MAX;
    }
  }
}

// Activations of the program share bytes when every use of one happens before every use of
// the other (program order per stream, RECORD -> WAIT across streams): a use on another
// stream that nothing orders keeps the bytes live. Tensors are placed first fit in order of
// their first use; with one stream this is liveness by position in the op list.
//
// Paired strands defeat plain first fit: one micro-batch's backward frees its activations from
// the top of its stack down while the next micro-batch's forward allocates, so first fit puts
// the newcomer's first tensors in the top holes and then has to grow above them. So paired
// programs are placed two-ended as well: strand 1's micro-batches (dhx_strand_of) stack down
// from a ceiling while strand 0's stack up from the base, each filling what the other frees;
// the smallest layout is kept.
// The ceiling that suits depends on the schedule: with one stage, the most bytes any tensor may
// be live with (CEILING) leaves each strand the room it needs; in a pipeline, where many
// micro-batches are in flight, that bound is far above what first fit needs (llama_65b_a800x64,
// W: 114 GB against 45), and ceilings below first fit's end do better: the layout then ends at
// the ceiling until the ceiling is too low for the two stacks to pass each other, when the odd
// ones spill above it. So where the bound loses to first fit, ceilings are tried from 95% of
// first fit's span down in steps of 5% while each does better than the last (that W: 43.0,
// 40.8, then 41.5 GB at 85%). Where the bound wins it is kept alone: its layout grows by the
// same bytes per period of the schedule, which the short steps of a simulation rely on
// (simulate_steady.c), and the percentages' would not.
static int64_t place_two_ended(liveness *v, int64_t base, int64_t first_fit_end) {
  int64_t *best = malloc(sizeof(int64_t) * (size_t)(v->n + 1));
  if (!best) abort();
  memcpy(best, v->at, sizeof(int64_t) * (size_t)v->n);
  int64_t end = first_fit_end;
  int64_t span = first_fit_end - base;
  // A bound at or above first fit's end cannot win (the first odd tensor, stacked down from
  // it, already reaches that end), so its pass gives up there too (INT64_MAX).
  int64_t bound = place(v, base, CEILING, 0, end);
  for (int step = -1; step < 10; step++) {  // step -1: the bound; then 95%, 90%, ... 50%
    if (step < 0 && bound >= end) continue;
    int64_t ceiling = step < 0 ? bound : base + span / 100 * (95 - 5 * step) / DHX_ALIGN * DHX_ALIGN;
    int64_t two = place(v, base, TWO_ENDED, ceiling, end);  // gives up at `end`
    if (two >= end) {
      if (step >= 0) break;
      continue;
    }
    end = two;
    memcpy(best, v->at, sizeof(int64_t) * (size_t)v->n);
    if (step < 0) break;  // the bound serves (one stage)
  }
  memcpy(v->at, best, sizeof(int64_t) * (size_t)v->n);
  free(best);
  return end;
}

// The program's activations in order of first use (ties by tensor id), with their uses.
// Works on arrays of the program's own: a stage of a paper-scale pipeline has hundreds of
// thousands of tensors, too many to visit each one's record per use.
// act_of: per tensor, the program of an activation, -1 for other tensors.
static void find_uses(liveness *v, int prog, const int8_t *act_of) {
  dhx_graph *g = v->g;
  const dhx_oplist *l = v->l;
  v->local = malloc(sizeof(int) * (size_t)(g->ntensors + 1));
  if (!v->local) abort();
  int nlocal = 0;
  for (int i = 0; i < g->ntensors; i++) v->local[i] = act_of[i] == prog ? nlocal++ : -1;
  v->uses = malloc(sizeof(dhx_hb_span) * (size_t)(nlocal + 1));
  v->first = malloc(sizeof(int) * (size_t)(nlocal + 1));
  v->size = malloc(sizeof(int64_t) * (size_t)(nlocal + 1));
  v->odd = malloc(sizeof(bool) * (size_t)(nlocal + 1));
  v->last = malloc(sizeof(int) * (size_t)(nlocal + 1));
  v->order = malloc(sizeof(int) * (size_t)(nlocal + 1));
  v->at = malloc(sizeof(int64_t) * (size_t)(nlocal + 1));
  if (!v->uses || !v->first || !v->last || !v->size || !v->odd || !v->order || !v->at) abort();
  for (int i = 0; i < nlocal; i++) {
    dhx_hb_span_clear(&v->uses[i]);
    v->first[i] = v->last[i] = -1;
  }
  // A deferred collective (defer_collectives.c) uses its tensors until its WAIT completes it.
  const int *completed_at = v->completed_at;
  v->n = 0;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead) continue;
    int done = dhx_lop_collective(op->kind) && op->event >= 0 ? completed_at[op->event] : -1;
    int seen = v->n;  // the tensors first used here go in order of id
    for (int j = 0; j < op->nargs; j++) {
      if (op->args[j].kind != DHX_ARG_BUF) continue;
      int t = op->args[j].tensor, lt = v->local[t];
      if (lt < 0) continue;
      if (v->first[lt] < 0) {
        v->first[lt] = i;
        v->size[lt] = align_up(dhx_tensor_alloc_bytes(&g->tensors[t]));
        int m = op->at.micro;
        v->odd[lt] = m >= 0 ? dhx_strand_of(g, m) : true;
        int k = v->n++;
        for (; k > seen && v->order[k - 1] > t; k--) v->order[k] = v->order[k - 1];
        v->order[k] = t;
      }
      v->last[lt] = i > v->last[lt] ? i : v->last[lt];
      dhx_hb_span_add(&v->h, &v->uses[lt], (uint32_t)i);
      if (done < 0) continue;
      v->last[lt] = done > v->last[lt] ? done : v->last[lt];
      dhx_hb_span_add(&v->h, &v->uses[lt], (uint32_t)done);
    }
  }
}

static int64_t place_program(dhx_graph *g, int prog, int64_t base, const int8_t *act_of) {
  liveness v = {.g = g, .l = &g->prog[prog]};
  const dhx_oplist *l = v.l;
  v.dead = malloc((size_t)l->n + 1);
  v.completed_at = malloc(sizeof(int) * (size_t)(l->nevents + 1));
  if (!v.dead || !v.completed_at) abort();
  order_ops(l, &v.h, v.dead, v.completed_at);
  find_uses(&v, prog, act_of);
  find_streams(&v);
  int64_t end = place(&v, base, FIRST_FIT, 0, INT64_MAX);
  if (g->strands) end = place_two_ended(&v, base, end);
  for (int k = 0; k < v.n; k++) g->tensors[v.order[k]].offset = v.at[k];
  free(v.dead);
  free(v.completed_at);
  free(v.order);
  free(v.at);
  free(v.size);
  free(v.odd);
  free(v.only_on);
  free(v.done);
  for (uint32_t s = 0; s < v.h.nstreams; s++) {
    free(v.ops_on[s]);
    free(v.before_on[s]);
    free(v.done_on[s]);
  }
  for (uint32_t s = 0; s < v.h.nstreams; s++) {
    free(v.reach_from[s]);
    for (uint32_t r = 0; r < v.h.nstreams; r++) free(v.reach_on[s][r]);
  }
  free(v.uses);
  free(v.first);
  free(v.last);
  free(v.local);
  dhx_hb_free(&v.h);
  return end;
}

int64_t dhx_plan_persistent(dhx_graph *g) { return place_persistent(g); }

int64_t dhx_plan_memory(dhx_graph *g) {
  int64_t base = place_persistent(g), end = base;
  // Which program each activation belongs to, read once: a stage of a paper-scale pipeline
  // has hundreds of thousands of tensors, whose records are far apart.
  int8_t *act_of = malloc((size_t)g->ntensors + 1);
  if (!act_of) abort();
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *t = &g->tensors[i];
    act_of[i] = (int8_t)(t->kind == DHX_T_ACT ? t->program : -1);
  }
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    int64_t e = place_program(g, p, base, act_of);
    if (e > end) end = e;
  }
  free(act_of);
  return end;
}
