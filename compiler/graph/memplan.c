// memplan.c — static arena layout for one rank.
//
// Persistent tensors come first, in an order that makes the optimizer's windows contiguous:
// parameters with weight decay, parameters without, then gradients, first and second moments
// in the same order (so element e of every window is the same weight), then the inputs,
// losses and scratch. Activations follow: each belongs to one program, lives from its first
// to its last use in that program, and shares memory with activations whose lifetimes do not
// overlap (first fit over the op order). The programs never run at the same time, so they all
// start at the same base.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

static int64_t tensor_bytes(const dhx_tensor *t) {
  return dhx_tensor_elems(t) * (t->dtype == DHX_F64 ? 8 : 4);
}

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

// Places the state tensors (`which`: 0 param, 1 grad, 2 m, 3 v) of the parameters in the
// decay group or the other that are split by tensor parallelism (split) or whole, in
// parameter order. Returns the new end of the arena; *first is the first tensor placed.
static int64_t place_group(dhx_graph *g, int which, bool decay, bool split, int64_t at,
                           int *first) {
  for (int i = 0; i < g->ntensors; i++) {
    dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || p->decay != decay || (p->split_dim >= 0) != split) continue;
    int t = which == 0 ? i : which == 1 ? p->grad : which == 2 ? p->opt_m : p->opt_v;
    if (t < 0) continue;
    if (*first < 0) *first = t;
    g->tensors[t].offset = at;
    at = align_up(at + tensor_bytes(&g->tensors[t]));
  }
  return at;
}

// Each kind of state is laid out as [decay: whole | split] [no decay: split | whole], so the
// decay groups, all state, and the split tensors' state are each one contiguous window:
// the optimizer runs over the groups, the gradient norm adds the split part over the tensor
// ranks and the whole part once.
// With sharded optimizer state (zero.c) the parameter and gradient windows are dp chunks of
// g->zc.chunk bytes: chunk r holds the tensors rank r owns, in the planner's order, then zero
// padding. Views: the whole window, and this rank's chunk (all of it, decay, no decay).
static int64_t place_chunks(dhx_graph *g, int which, int64_t at) {
  int *order = malloc(sizeof(int) * (size_t)(g->ntensors + 1));
  if (!order) abort();
  int n = dhx_zero_order(g, order), first = -1;
  for (int r = 0; r < g->dp; r++) {
    int64_t c = at + (int64_t)r * g->zc.chunk;
    for (int k = 0; k < n; k++) {
      dhx_tensor *p = &g->tensors[order[k]];
      int t = which == 0 ? order[k] : p->grad;
      if (p->owner != r || t < 0) continue;
      if (first < 0) first = t;
      g->tensors[t].offset = c;
      c = align_up(c + tensor_bytes(&g->tensors[t]));
    }
  }
  free(order);
  int64_t end = at + (int64_t)g->dp * g->zc.chunk, mine = at + (int64_t)g->dp_rank * g->zc.chunk;
  set_view(g, which == 0 ? "params[all]" : "grads[all]", at, end, first);
  if (which == 0 && g->zc.own_end > 0) {
    set_view(g, "params[own]", mine, mine + g->zc.chunk, first);
    set_view(g, "params[own,decay]", mine, mine + g->zc.decay_end, first);
    set_view(g, "params[own,no_decay]", mine + g->zc.decay_end, mine + g->zc.own_end, first);
  }
  return end;
}

static int64_t place_persistent(dhx_graph *g) {
  static const char *kinds[] = {"params", "grads", "adam_m", "adam_v"};
  int64_t at = 0;
  for (int which = 0; which < 4; which++) {
    if (which < 2 && dhx_zero_sharded(g)) {
      at = place_chunks(g, which, at);
      continue;
    }
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
      at = align_up(at + tensor_bytes(t));
    }
  }
  return at;
}

typedef struct live {
  int tensor;
  int64_t offset, size;
  int last;
} live;

static int by_first_use(const void *a, const void *b, void *g_) {
  const dhx_graph *g = g_;
  const dhx_tensor *x = &g->tensors[*(const int *)a], *y = &g->tensors[*(const int *)b];
  if (x->first_use != y->first_use) return x->first_use - y->first_use;
  return *(const int *)a - *(const int *)b;
}

// Lowest offset >= base where `size` bytes fit between the blocks in `act` (sorted by offset).
static int64_t first_fit(const live *act, int n, int64_t base, int64_t size) {
  int64_t at = base;
  for (int i = 0; i < n; i++) {
    if (act[i].offset >= at + size) break;
    if (act[i].offset + act[i].size > at) at = align_up(act[i].offset + act[i].size);
  }
  return at;
}

static int64_t place_program(dhx_graph *g, int prog, int64_t base) {
  dhx_oplist *l = &g->prog[prog];
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].program == prog) g->tensors[i].first_use = g->tensors[i].last_use = -1;
  for (int i = 0; i < l->n; i++) {
    if (l->ops[i].dead) continue;
    for (int j = 0; j < l->ops[i].nargs; j++) {
      int t = l->ops[i].args[j].tensor;
      if (l->ops[i].args[j].kind != DHX_ARG_BUF || g->tensors[t].kind != DHX_T_ACT) continue;
      if (g->tensors[t].program != prog) continue;
      if (g->tensors[t].first_use < 0) g->tensors[t].first_use = i;
      g->tensors[t].last_use = i;
    }
    int kept = l->ops[i].keeps - 1;  // read by a transfer on another stream until here
    if (kept >= 0 && g->tensors[kept].program == prog && g->tensors[kept].first_use >= 0)
      g->tensors[kept].last_use = i;
  }
  int *order = malloc(sizeof(int) * (size_t)g->ntensors);
  live *act = malloc(sizeof(live) * (size_t)g->ntensors);
  if (!order || !act) abort();
  int n = 0, nact = 0;
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].program == prog && g->tensors[i].first_use >= 0) order[n++] = i;
  qsort_r(order, (size_t)n, sizeof(int), by_first_use, g);
  int64_t end = base;
  for (int k = 0; k < n; k++) {
    dhx_tensor *t = &g->tensors[order[k]];
    int j = 0;  // drop blocks whose last use is before this tensor's first use
    for (int i = 0; i < nact; i++)
      if (act[i].last >= t->first_use) act[j++] = act[i];
    nact = j;
    int64_t size = align_up(tensor_bytes(t));
    t->offset = first_fit(act, nact, base, size);
    // Keep `act` sorted by offset: insert after the blocks at or below the new one's offset
    // (the order a stable sort would give), one move instead of a sort per tensor.
    int at = nact;
    while (at > 0 && act[at - 1].offset > t->offset) at--;
    memmove(act + at + 1, act + at, sizeof(live) * (size_t)(nact - at));
    act[at] = (live){order[k], t->offset, size, t->last_use};
    nact++;
    if (t->offset + size > end) end = t->offset + size;
  }
  free(order);
  free(act);
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
