// overlap_search.c — the overlap search of paired strands (see the header and
// docs/overlap-search.md).
#include "overlap_search.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "happens_before.h"
#include "ice.h"
#include "plan_util.h"

// How much more activation memory than one micro-batch at a time dp's alignment may hold.
#define HELD_SLACK 0.02

static void *xcalloc(size_t n, size_t size) {
  void *q = calloc(n ? n : 1, size);
  if (!q) abort();
  return q;
}

// ---- the model and the alignment ---------------------------------------------------------------

double dhx_ovl_alone(const dhx_ovl_group *g) { return g->compute + g->comm; }

// Compute beside compute: the device does one after the other. Compute c beside a collective
// k: the compute runs at 1/interference of its speed while the collective runs.
static double beside(double c, double k, double interference) {
  if (c * interference <= k) return k;
  return k + c - k / interference;
}

double dhx_ovl_pair(const dhx_ovl_group *f, const dhx_ovl_group *b, double interference) {
  bool fc = f->comm <= 0, bc = b->comm <= 0;  // a group is compute or one collective
  if (fc && bc) return f->compute + b->compute;
  if (fc) return beside(f->compute, b->comm, interference);
  if (bc) return beside(b->compute, f->comm, interference);
  return f->comm > b->comm ? f->comm : b->comm;
}

// Two tensor-parallel collectives side by side would share the links they are each sized for.
bool dhx_ovl_legal(const dhx_ovl_group *f, const dhx_ovl_group *b) { return !(f->tp && b->tp); }

double dhx_ovl_cost(const dhx_ovl_group *F, const dhx_ovl_group *B, const dhx_ovl_step *steps,
                    int nsteps, double interference) {
  double t = 0;
  for (int s = 0; s < nsteps; s++) {
    const dhx_ovl_step *st = &steps[s];
    if (st->f >= 0 && st->b >= 0) t += dhx_ovl_pair(&F[st->f], &B[st->b], interference);
    else t += dhx_ovl_alone(st->f >= 0 ? &F[st->f] : &B[st->b]);
  }
  return t;
}

static int align_none(int nf, int nb, dhx_ovl_step *steps) {
  int n = 0;
  for (int i = 0; i < nf; i++) steps[n++] = (dhx_ovl_step){i, -1};
  for (int j = 0; j < nb; j++) steps[n++] = (dhx_ovl_step){-1, j};
  return n;
}

// Whether the cell of i forward and j backward groups holds no more than the limit.
static bool within(const dhx_ovl_group *F, const dhx_ovl_group *B, const dhx_ovl_memory *mem,
                   int i, int j) {
  return !mem || mem->limit <= 0 ||
         (i ? F[i - 1].held : 0) + (j ? B[j - 1].held : mem->b_start) <= mem->limit;
}

// Per cell (i, j) of the lattice: whether it is within the limit and the end can be reached from
// it through cells that are. NULL when every cell can (no limit, or none that the start meets).
static unsigned char *reachable(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                                const dhx_ovl_memory *mem) {
  if (!mem || mem->limit <= 0) return NULL;
  size_t w = (size_t)nb + 1;
  unsigned char *r = xcalloc(((size_t)nf + 1) * w, 1);
  for (int i = nf; i >= 0; i--)
    for (int j = nb; j >= 0; j--) {
      if (!within(F, B, mem, i, j)) continue;
      r[i * w + j] = (i == nf && j == nb) || (i < nf && r[(i + 1) * w + j]) ||
                     (j < nb && r[i * w + j + 1]) ||
                     (i < nf && j < nb && dhx_ovl_legal(&F[i], &B[j]) && r[(i + 1) * w + j + 1]);
    }
  if (!r[0]) {
    free(r);
    return NULL;
  }
  return r;
}

// Greedy: the next two groups together when legal, else the one that takes less time alone;
// under a memory limit, only moves from which the end stays reachable within it.
static int align_greedy(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                        const dhx_ovl_memory *mem, dhx_ovl_step *steps) {
  unsigned char *r = reachable(F, nf, B, nb, mem);
  size_t w = (size_t)nb + 1;
#define OK(a, b) (!r || r[(size_t)(a) * w + (size_t)(b)])
  int i = 0, j = 0, n = 0;
  while (i < nf || j < nb) {
    bool can_pair = i < nf && j < nb && dhx_ovl_legal(&F[i], &B[j]) && OK(i + 1, j + 1);
    bool can_f = i < nf && OK(i + 1, j), can_b = j < nb && OK(i, j + 1);
    if (can_pair) steps[n++] = (dhx_ovl_step){i++, j++};
    else if (can_f && (!can_b || dhx_ovl_alone(&F[i]) <= dhx_ovl_alone(&B[j])))
      steps[n++] = (dhx_ovl_step){i++, -1};
    else steps[n++] = (dhx_ovl_step){-1, j++};
  }
#undef OK
  free(r);
  return n;
}

enum { TAKE_PAIR = 0, TAKE_F, TAKE_B };

// T[i][j]: least time for the first i forward and j backward groups; `how` the last step.
// Among last steps of equal time (within rounding; two computes side by side take as long as
// one after the other) a forward group alone is preferred, then a backward one, then a pair:
// so the backward groups run as early as the time allows, and the activations they free are
// there for the forward's before it needs them (memplan.c can share them only when events
// order the two), and compute is not held beside compute for nothing.
static int align_dp(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                    double interference, const dhx_ovl_memory *mem, dhx_ovl_step *steps) {
  size_t w = (size_t)nb + 1;
  double *T = xcalloc(((size_t)nf + 1) * w, sizeof(double));
  unsigned char *how = xcalloc(((size_t)nf + 1) * w, 1);
  for (int i = 0; i <= nf; i++)
    for (int j = 0; j <= nb; j++) {
      if (i == 0 && j == 0) continue;
      if (!within(F, B, mem, i, j)) {
        T[i * w + j] = INFINITY;  // holds too much: no path goes through here
        continue;
      }
      double cost[3] = {INFINITY, INFINITY, INFINITY};  // by TAKE_*
      if (i > 0 && j > 0 && dhx_ovl_legal(&F[i - 1], &B[j - 1]))
        cost[TAKE_PAIR] = T[(i - 1) * w + j - 1] + dhx_ovl_pair(&F[i - 1], &B[j - 1], interference);
      if (i > 0) cost[TAKE_F] = T[(i - 1) * w + j] + dhx_ovl_alone(&F[i - 1]);
      if (j > 0) cost[TAKE_B] = T[i * w + j - 1] + dhx_ovl_alone(&B[j - 1]);
      double best = fmin(cost[TAKE_PAIR], fmin(cost[TAKE_F], cost[TAKE_B]));
      double tie = best * (1 + 1e-9);
      int take = cost[TAKE_F] <= tie ? TAKE_F : cost[TAKE_B] <= tie ? TAKE_B : TAKE_PAIR;
      T[i * w + j] = cost[take];
      how[i * w + j] = (unsigned char)take;
    }
  if (!isfinite(T[(size_t)nf * w + (size_t)nb])) {  // a limit nothing meets: none
    free(T);
    free(how);
    return align_dp(F, nf, B, nb, interference, NULL, steps);
  }
  int n = 0;
  for (int i = nf, j = nb; i > 0 || j > 0; n++) {
    int take = how[i * w + j];
    steps[n] = (dhx_ovl_step){take != TAKE_B ? i - 1 : -1, take != TAKE_F ? j - 1 : -1};
    i -= take != TAKE_B;
    j -= take != TAKE_F;
  }
  for (int a = 0, b = n - 1; a < b; a++, b--) {  // backtracking wrote them last first
    dhx_ovl_step tmp = steps[a];
    steps[a] = steps[b];
    steps[b] = tmp;
  }
  free(T);
  free(how);
  return n;
}

dhx_ovl_memory dhx_ovl_memory_of(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                                 double b_start, double slack) {
  double most_f = 0, most_b = b_start;
  for (int i = 0; i < nf; i++) most_f = fmax(most_f, F[i].held);
  for (int j = 0; j < nb; j++) most_b = fmax(most_b, B[j].held);
  double left = nb ? B[nb - 1].held : b_start;
  return (dhx_ovl_memory){b_start, fmax(most_b, most_f + left) * (1 + slack)};
}

int dhx_ovl_align(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                  dhx_strand_search search, double interference, dhx_ovl_step *steps) {
  return dhx_ovl_align_within(F, nf, B, nb, search, interference, NULL, steps);
}

int dhx_ovl_align_within(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                         dhx_strand_search search, double interference,
                         const dhx_ovl_memory *mem, dhx_ovl_step *steps) {
  switch (search) {
    case DHX_SEARCH_DP: return align_dp(F, nf, B, nb, interference, mem, steps);
    case DHX_SEARCH_GREEDY: return align_greedy(F, nf, B, nb, mem, steps);
    case DHX_SEARCH_NONE: break;
  }
  return align_none(nf, nb, steps);
}

void dhx_ovl_memo_free(dhx_ovl_memo *m) {
  for (int r = 0; r < m->nregions; r++) free(m->steps[r]);
  free(m->nf);
  free(m->nb);
  free(m->nsteps);
  free(m->steps);
  memset(m, 0, sizeof *m);
}

// ---- op times ---------------------------------------------------------------------------------

double dhx_ovl_op_time(const dhx_ovl_costs *c, const dhx_lop *op) {
  if (op->kind == DHX_L_RECORD || op->kind == DHX_L_WAIT) return 0;
  dhx_plan_instr in;
  dhx_emit_instr(NULL, op, NULL, c->comm_of, &in);
  // A kernel's bytes come from its access descriptors: show the cost model a plan whose kernel
  // table holds this one kernel.
  dhx_plan view = {.comms = c->plan->comms, .ncomms = c->plan->ncomms};
  dhx_plan_kernel k;
  view.train.vocab = c->vocab;
  if (op->kind == DHX_L_KERNEL || op->kind == DHX_L_EW) {
    dhx_kernel_spec spec = dhx_lop_spec(op);
    int id = dhx_codegen_add(c->cg, &spec);
    if (id >= 0) {
      dhx_codegen_table_entry(c->cg, id, &k);
      view.kernels = &k;
      view.nkernels = 1;
      in.kernel = 0;
    }
  }
  return dhx_cost_instr(c->model, &view, &in);
}

// ---- blocks and groups ------------------------------------------------------------------------

// A group: list positions of its first and last op, and its times.
typedef struct group {
  int first, last;
  dhx_ovl_group t;
  bool closed;  // a collective's: nothing joins it
} group;

// The ops of one micro-batch's forward or backward on one strand stream, cut into groups.
typedef struct block {
  int stream, micro;
  dhx_phase phase;
  group *groups;
  int n, cap;
  double held_start;  // activation bytes its micro-batch holds before its first group
} block;

typedef struct blocks {
  block *b;
  int n, cap;
  int open[DHX_MAX_STREAMS];  // per stream: its open block, -1
} blocks;

static bool is_event(const dhx_lop *op) {
  return op->kind == DHX_L_RECORD || op->kind == DHX_L_WAIT;
}

static bool is_comm(const dhx_lop *op) {
  switch (op->kind) {
    case DHX_L_ALLREDUCE:
    case DHX_L_ALL_GATHER:
    case DHX_L_REDUCE_SCATTER:
    case DHX_L_ALL_TO_ALL:
    case DHX_L_SEND:
    case DHX_L_RECV: return true;
    default: return false;
  }
}

static block *open_block(blocks *bs, const dhx_lop *op) {
  int *o = &bs->open[op->stream];
  block *b = *o >= 0 ? &bs->b[*o] : NULL;
  if (b && b->micro == op->at.micro && b->phase == op->at.phase) return b;
  if (bs->n == bs->cap) {
    bs->cap = bs->cap ? 2 * bs->cap : 64;
    bs->b = realloc(bs->b, sizeof(block) * (size_t)bs->cap);
    if (!bs->b) abort();
  }
  *o = bs->n;
  bs->b[bs->n] = (block){.stream = op->stream, .micro = op->at.micro, .phase = op->at.phase};
  return &bs->b[bs->n++];
}

// Adds op i to its stream's block: a compute op to the open compute group, a collective to a
// group of its own.
static void add_op(block *b, const dhx_lop *op, int i, double seconds) {
  if (b->n == 0 || b->groups[b->n - 1].closed || is_comm(op)) {
    if (b->n == b->cap) {
      b->cap = b->cap ? 2 * b->cap : 16;
      b->groups = realloc(b->groups, sizeof(group) * (size_t)b->cap);
      if (!b->groups) abort();
    }
    b->groups[b->n++] = (group){.first = i};
  }
  group *gr = &b->groups[b->n - 1];
  gr->last = i;
  if (is_comm(op)) {
    gr->t.comm += seconds;
    gr->t.tp = op->comm == DHX_COMM_TP;
    gr->closed = true;
  } else {
    gr->t.compute += seconds;
  }
}

// The stream of the second strand: where micro-batch 1's forward computes (0: no pairing).
// Its collectives may run elsewhere: ZeRO 3 gathers its weights on the data-parallel stream,
// listed before its first compute, and taking that stream for the strand's aligned the
// data-parallel stream with strand 0.
static int second_strand(const dhx_oplist *l) {
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (!op->dead && !is_event(op) && !is_comm(op) && op->at.micro == 1 &&
        op->at.phase == DHX_PHASE_FORWARD)
      return op->stream;
  }
  return 0;
}

// Cuts the ops of the two strand streams into blocks (events neither open nor cut them; an op
// of another phase closes its stream's block). Times only when `costs` is given.
static void find_blocks(const dhx_oplist *l, int strand, const dhx_ovl_costs *costs,
                        blocks *bs) {
  for (int s = 0; s < DHX_MAX_STREAMS; s++) bs->open[s] = -1;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead || is_event(op) || (op->stream != 0 && op->stream != strand)) continue;
    if (op->at.phase != DHX_PHASE_FORWARD && op->at.phase != DHX_PHASE_BACKWARD) {
      bs->open[op->stream] = -1;
      continue;
    }
    add_op(open_block(bs, op), op, i, costs ? dhx_ovl_op_time(costs, op) : 0);
  }
}

static void free_blocks(blocks *bs) {
  for (int k = 0; k < bs->n; k++) free(bs->b[k].groups);
  free(bs->b);
}

// ---- activation memory ---------------------------------------------------------------------------

// Where each activation of the program is first and last used in the list, and by which
// micro-batch (the origin of its first use), with the program's activations by micro-batch.
typedef struct act_uses {
  int *first, *last, *micro;  // per tensor; first -1: not an activation of the program
  int nmicro;
  int **of_micro, *count;     // per micro-batch: its tensors
} act_uses;

static void find_act_uses(const dhx_graph *g, const dhx_oplist *l, act_uses *u) {
  int nt = g->ntensors;
  u->first = xcalloc((size_t)nt, sizeof(int));
  u->last = xcalloc((size_t)nt, sizeof(int));
  u->micro = xcalloc((size_t)nt, sizeof(int));
  // Which tensors are activations, read once in order (not per use from each 272-byte record).
  bool *act = xcalloc((size_t)nt + 1, sizeof(bool));
  for (int t = 0; t < nt; t++) {
    u->first[t] = u->last[t] = -1;
    act[t] = g->tensors[t].kind == DHX_T_ACT;
  }
  u->nmicro = 0;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead) continue;
    for (int a = 0; a < op->nargs; a++) {
      int t = op->args[a].tensor;
      if (op->args[a].kind != DHX_ARG_BUF || !act[t]) continue;
      if (u->first[t] < 0) {
        u->first[t] = i;
        u->micro[t] = op->at.micro > 0 ? op->at.micro : 0;
        if (u->micro[t] + 1 > u->nmicro) u->nmicro = u->micro[t] + 1;
      }
      u->last[t] = i;
    }
  }
  free(act);
  u->count = xcalloc((size_t)u->nmicro + 1, sizeof(int));
  u->of_micro = xcalloc((size_t)u->nmicro + 1, sizeof(int *));
  for (int t = 0; t < nt; t++)
    if (u->first[t] >= 0) u->count[u->micro[t]]++;
  for (int m = 0; m < u->nmicro; m++) {
    u->of_micro[m] = xcalloc((size_t)u->count[m] + 1, sizeof(int));
    u->count[m] = 0;
  }
  for (int t = 0; t < nt; t++)
    if (u->first[t] >= 0) u->of_micro[u->micro[t]][u->count[u->micro[t]]++] = t;
}

static void free_act_uses(act_uses *u) {
  for (int m = 0; m < u->nmicro; m++) free(u->of_micro[m]);
  free(u->of_micro);
  free(u->count);
  free(u->first);
  free(u->last);
  free(u->micro);
}

// The first of the n ascending positions `at` that is >= p (n if none).
static int lower_bound(const int *at, int n, int p) {
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (at[mid] < p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// held[k]: the bytes of the block's micro-batch live just after list position at[k] (first used
// at or before it, used after it), for the n ascending positions at[].
static void held_at(const dhx_graph *g, const act_uses *u, int micro, const int *at, int n,
                    double *held) {
  double *delta = xcalloc((size_t)n + 1, sizeof(double));
  for (int k = 0; micro < u->nmicro && k < u->count[micro]; k++) {
    int t = u->of_micro[micro][k];
    int from = lower_bound(at, n, u->first[t]), to = lower_bound(at, n, u->last[t]);
    double bytes = (double)dhx_tensor_alloc_bytes(&g->tensors[t]);
    delta[from] += bytes;
    delta[to] -= bytes;
  }
  double sum = 0;
  for (int k = 0; k < n; k++) held[k] = sum += delta[k];
  free(delta);
}

// Sets each group's `held`; returns what the block's micro-batch holds before its first group.
static double block_held(const dhx_graph *g, const act_uses *u, block *b) {
  int *at = xcalloc((size_t)b->n + 1, sizeof(int));
  double *held = xcalloc((size_t)b->n + 1, sizeof(double));
  at[0] = b->groups[0].first - 1;
  for (int i = 0; i < b->n; i++) at[i + 1] = b->groups[i].last;
  held_at(g, u, b->micro, at, b->n + 1, held);
  for (int i = 0; i < b->n; i++) b->groups[i].t.held = held[i + 1];
  double start = held[0];
  free(at);
  free(held);
  return start;
}

// ---- events -----------------------------------------------------------------------------------

// An op to insert before list position `at` (ties in the order they were made).
typedef struct insert {
  int at, seq;
  dhx_lop_kind kind;
  int stream, event;
  dhx_origin origin;
} insert;

typedef struct inserts {
  insert *v;
  int n, cap;
} inserts;

static void add_insert(inserts *in, int at, dhx_lop_kind kind, const dhx_lop *like, int event) {
  if (in->n == in->cap) {
    in->cap = in->cap ? 2 * in->cap : 256;
    in->v = realloc(in->v, sizeof(insert) * (size_t)in->cap);
    if (!in->v) abort();
  }
  in->v[in->n] = (insert){at, in->n, kind, like->stream, event, like->at};
  in->n++;
}

// One region's alignment as events: a step's group waits for the latest group of the other
// stream from the earlier steps (once per such group), which records an event when it ends.
typedef struct region {
  const dhx_oplist *l;
  const block *side[2];  // forward, backward
  int *recorded[2];      // per group: the event recorded after it, -1
} region;

static int record_after(region *r, int side, int gi, int *nevents, inserts *in) {
  int *e = &r->recorded[side][gi];
  if (*e < 0) {
    const group *gr = &r->side[side]->groups[gi];
    *e = (*nevents)++;
    add_insert(in, gr->last + 1, DHX_L_RECORD, &r->l->ops[gr->last], *e);
  }
  return *e;
}

static void place_events(region *r, const dhx_ovl_step *steps, int nsteps, int *nevents,
                         inserts *in) {
  int last_step[2] = {-1, -1}, last_group[2] = {-1, -1}, waited[2] = {-1, -1};
  for (int s = 0; s < nsteps; s++) {
    int part[2] = {steps[s].f, steps[s].b};
    for (int x = 0; x < 2; x++) {
      int y = 1 - x;
      if (part[x] < 0 || last_step[y] <= waited[x]) continue;
      int e = record_after(r, y, last_group[y], nevents, in);
      int first = r->side[x]->groups[part[x]].first;
      add_insert(in, first, DHX_L_WAIT, &r->l->ops[first], e);
      waited[x] = last_step[y];
    }
    for (int x = 0; x < 2; x++)
      if (part[x] >= 0) {
        last_step[x] = s;
        last_group[x] = part[x];
      }
  }
}

// A region starts when both strands have ended what came before it: each block's first group
// waits for the last op listed before the other block on the other's stream (for the first
// region, the lone first forward; else the previous region's block on that stream). Without
// it, a forward could start beside the tail of the forward before it, whose activations the
// memory planner would then have to keep apart from its own.
static void place_start(region *r, int *nevents, inserts *in) {
  for (int x = 0; x < 2; x++) {
    const block *mine = r->side[x], *other = r->side[1 - x];
    int before = -1;
    for (int i = other->groups[0].first - 1; i >= 0 && before < 0; i--) {
      const dhx_lop *op = &r->l->ops[i];
      if (op->stream == other->stream && !op->dead && !is_event(op)) before = i;
    }
    if (before < 0) continue;
    int e = (*nevents)++;
    add_insert(in, before + 1, DHX_L_RECORD, &r->l->ops[before], e);
    add_insert(in, mine->groups[0].first, DHX_L_WAIT, &r->l->ops[mine->groups[0].first], e);
  }
}

// Events a region's alignment needs, at most: a WAIT and a RECORD per step, and two for its
// start.
static int events_needed(int nsteps) { return 2 * nsteps + 2; }

// At one position RECORDs go first: a group's end is recorded before its stream waits for the
// other's, so that no RECORD sits behind a WAIT it need not.
static int by_position(const void *x, const void *y) {
  const insert *a = x, *b = y;
  if (a->at != b->at) return a->at < b->at ? -1 : 1;
  if (a->kind != b->kind) return a->kind == DHX_L_RECORD ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

// Writes the inserted ops into the list at their positions. `key` (per op, or NULL) becomes
// the new list's: an inserted RECORD takes the key of the group it ends, a WAIT the key of
// the group it starts. The list grows in place and is filled from its end (an op only moves
// later), so a paper model's hundred thousand ops of a kilobyte and more are not copied into
// fresh pages, which cost more than the search itself.
static void apply(dhx_oplist *l, inserts *in, int64_t **key) {
  if (!in->n) return;
  qsort(in->v, (size_t)in->n, sizeof(insert), by_position);
  int total = l->n + in->n;
  dhx_lop *ops = realloc(l->ops, sizeof(dhx_lop) * (size_t)total);
  int64_t *keys = key ? realloc(*key, sizeof(int64_t) * (size_t)total) : NULL;
  if (!ops || (key && !keys)) abort();
  l->ops = ops;
  if (key) *key = keys;
  int n = total, k = in->n - 1;
  for (int i = l->n; i >= 0; i--) {
    if (i < l->n) {
      n--;
      if (keys) keys[n] = keys[i];
      if (n != i) ops[n] = ops[i];
    }
    // Inserts at position i go before op i: placed after it here, walking backwards. A RECORD
    // takes the key of op i - 1 (still in place: nothing is written below n > i - 1), a WAIT
    // that of op i (just placed at n).
    int64_t before = keys && i > 0 ? keys[i - 1] : 0, after = keys && i < l->n ? keys[n] : before;
    for (; k >= 0 && in->v[k].at == i; k--) {
      const insert *x = &in->v[k];
      n--;
      if (keys) keys[n] = x->kind == DHX_L_RECORD ? before : after;
      dhx_lop *op = &ops[n];
      *op = (dhx_lop){.kind = x->kind, .stream = x->stream, .comm = -1, .event = x->event,
                      .at = x->origin};
      op->note = dhx_intern_note(x->kind == DHX_L_RECORD
                                     ? "overlap search: group done"
                                     : "overlap search: the other strand's group done");
    }
  }
  l->n = l->cap = total;
}

// ---- listing the ops in step order ----------------------------------------------------------

// The search leaves each region listed as its whole forward block, then its whole backward
// block. The memory planner shares bytes only between tensors whose uses are ordered in the
// list as well as by the events (memplan.c), so listed so, the backward's freed activations
// could never hold the forward's new ones, and a paired step kept two micro-batches'
// activations. Relisting every region step by step (the step's forward group, then its
// backward group) lets the one strand's forward fill what the other's backward frees.
//
// `key[i]`: the region and step of op i when it is in an aligned group, else -1. An op without
// one takes the key of the op listed before it. Walking the ops in the happens-before order's
// linear extension (happens_before.c), each op's key is raised to its stream predecessor's and,
// for a WAIT, to its RECORD's, so keys never fall along a dependency; sorting by key, ties in
// that order, then keeps every stream's order and puts every RECORD before its WAITs.
typedef struct keyed {
  int64_t key;
  int at;
} keyed;

static int by_key(const void *x, const void *y) {
  const keyed *a = x, *b = y;
  if (a->key != b->key) return a->key < b->key ? -1 : 1;
  return (a->at > b->at) - (a->at < b->at);
}

// True when no event is recorded twice (else which RECORD a WAIT meets could depend on the
// listing, and the list is left as it is); marks the recorded events.
static bool events_once(const dhx_oplist *l, char *recorded) {
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead || op->kind != DHX_L_RECORD) continue;
    if (op->event < 0 || op->event >= l->nevents || recorded[op->event]++) return false;
  }
  return true;
}

// The happens-before order of n ops (happens_before.c): its linear extension `seq`, keeping to
// list order where the events allow, and whether some WAIT could never be released. Dead ops
// order nothing.
static void order_of(const dhx_lop *const *ops, int n, int nevents, dhx_hb *h) {
  uint32_t ns = 1;
  for (int i = 0; i < n; i++)
    if ((uint32_t)ops[i]->stream + 1 > ns) ns = (uint32_t)ops[i]->stream + 1;
  dhx_hb_init(h, (uint32_t)n, ns, (uint32_t)(nevents > 0 ? nevents : 1));
  h->listed = true;
  for (int i = 0; i < n; i++) {
    h->stream[i] = (uint8_t)ops[i]->stream;
    if (ops[i]->dead) continue;
    if (ops[i]->kind == DHX_L_RECORD) h->records[i] = ops[i]->event;
    if (ops[i]->kind == DHX_L_WAIT) h->waits[i] = ops[i]->event;
  }
  dhx_hb_order(h);
}

// Whether the list with the inserts in[from..to) (in the order apply() gives them) would still
// let every op run: no WAIT behind a RECORD it waits for, through streams and events.
static bool acyclic_with(const dhx_oplist *l, const inserts *in, int from, int to, int nevents) {
  int k = to - from;
  insert *v = xcalloc((size_t)k + 1, sizeof(insert));
  if (k > 0) memcpy(v, in->v + from, sizeof(insert) * (size_t)k);
  qsort(v, (size_t)k, sizeof(insert), by_position);
  dhx_lop *made = xcalloc((size_t)k + 1, sizeof(dhx_lop));
  const dhx_lop **ops = xcalloc((size_t)(l->n + k) + 1, sizeof(dhx_lop *));
  int n = 0, j = 0;
  for (int i = 0; i <= l->n; i++) {
    for (; j < k && v[j].at == i; j++) {
      made[j] = (dhx_lop){.kind = v[j].kind, .stream = v[j].stream, .event = v[j].event,
                          .note = ""};
      ops[n++] = &made[j];
    }
    if (i < l->n) ops[n++] = &l->ops[i];
  }
  dhx_hb h;
  order_of(ops, n, nevents, &h);
  bool ok = !h.hangs;
  dhx_hb_free(&h);
  free(ops);
  free(made);
  free(v);
  return ok;
}

static void list_by_steps(dhx_oplist *l, const int64_t *own) {
  char *recorded = xcalloc((size_t)(l->nevents > 0 ? l->nevents : 1), 1);
  bool once = events_once(l, recorded);
  free(recorded);
  if (!once) return;
  const dhx_lop **ops = xcalloc((size_t)l->n + 1, sizeof(dhx_lop *));
  for (int i = 0; i < l->n; i++) ops[i] = &l->ops[i];
  dhx_hb h;
  order_of(ops, l->n, l->nevents, &h);
  free(ops);
  if (h.hangs) {
    dhx_hb_free(&h);
    return;
  }
  int *by_seq = xcalloc((size_t)l->n + 1, sizeof(int));
  for (int i = 0; i < l->n; i++) by_seq[h.seq[i]] = i;
  dhx_hb_free(&h);
  int64_t *base = xcalloc((size_t)l->n + 1, sizeof(int64_t));
  for (int i = 0; i < l->n; i++) base[i] = own[i] >= 0 ? own[i] : i ? base[i - 1] : 0;
  int64_t stream_key[DHX_MAX_STREAMS] = {0};
  int64_t *event_key = xcalloc((size_t)(l->nevents > 0 ? l->nevents : 1), sizeof(int64_t));
  keyed *order = xcalloc((size_t)l->n + 1, sizeof(keyed));
  for (int t = 0; t < l->n; t++) {  // in an order where every op's predecessors come first
    int i = by_seq[t];
    const dhx_lop *op = &l->ops[i];
    int64_t k = base[i];
    if (k < stream_key[op->stream]) k = stream_key[op->stream];
    if (!op->dead && op->kind == DHX_L_WAIT && k < event_key[op->event]) k = event_key[op->event];
    if (!op->dead && op->kind == DHX_L_RECORD) event_key[op->event] = k;
    stream_key[op->stream] = k;
    order[t] = (keyed){k, t};
  }
  qsort(order, (size_t)l->n, sizeof(keyed), by_key);
  // ops[t] ← ops[from[t]], in place: cycle by cycle, one op held aside (see apply()).
  int *from = (int *)base;  // base is done with; an int64_t array holds as many ints
  for (int t = 0; t < l->n; t++) from[t] = by_seq[order[t].at];
  char *moved = xcalloc((size_t)l->n + 1, 1);
  dhx_lop held;
  for (int start = 0; start < l->n; start++) {
    if (moved[start] || from[start] == start) continue;
    held = l->ops[start];
    int t = start;
    while (from[t] != start) {
      l->ops[t] = l->ops[from[t]];
      moved[t] = 1;
      t = from[t];
    }
    l->ops[t] = held;
    moved[t] = 1;
  }
  free(moved);
  free(order);
  free(event_key);
  free(base);
  free(by_seq);
}

// Marks the ops of a region's aligned groups with (region, step).
static void key_region(const region *r, int index, const dhx_ovl_step *steps, int nsteps,
                       int64_t *key) {
  for (int s = 0; s < nsteps; s++) {
    int part[2] = {steps[s].f, steps[s].b};
    for (int x = 0; x < 2; x++) {
      if (part[x] < 0) continue;
      const block *b = r->side[x];
      const group *gr = &b->groups[part[x]];
      for (int i = gr->first; i <= gr->last; i++)
        if (r->l->ops[i].stream == b->stream) key[i] = ((int64_t)(index + 1) << 32) + s;
    }
  }
}

// ---- the pass ---------------------------------------------------------------------------------

static void memo_add(dhx_ovl_memo *m, int nf, int nb, const dhx_ovl_step *steps, int nsteps) {
  int r = m->nregions++;
  m->nf = realloc(m->nf, sizeof(int) * (size_t)m->nregions);
  m->nb = realloc(m->nb, sizeof(int) * (size_t)m->nregions);
  m->nsteps = realloc(m->nsteps, sizeof(int) * (size_t)m->nregions);
  m->steps = realloc(m->steps, sizeof(dhx_ovl_step *) * (size_t)m->nregions);
  if (!m->nf || !m->nb || !m->nsteps || !m->steps) abort();
  m->nf[r] = nf;
  m->nb[r] = nb;
  m->nsteps[r] = nsteps;
  m->steps[r] = xcalloc((size_t)(nsteps ? nsteps : 1), sizeof(dhx_ovl_step));
  if (nsteps) memcpy(m->steps[r], steps, sizeof(dhx_ovl_step) * (size_t)nsteps);
}

// The alignment of region r: the memo's when it has one, else searched (nothing for search
// none, or when the program's events would run out) and remembered, with the modelled time of
// every search's alignment.
static int choose(const block *f, const block *b, int r, dhx_strand_search search,
                  const dhx_ovl_costs *costs, dhx_ovl_memo *memo, int nevents,
                  dhx_ovl_step *steps, bool fill) {
  if (!fill) {
    if (r >= memo->nregions || memo->nf[r] != f->n || memo->nb[r] != b->n)
      DHX_ICE("paired strands: region %d has %d and %d groups here, not as on the stage's "
              "first rank", r, f->n, b->n);
    memcpy(steps, memo->steps[r], sizeof(dhx_ovl_step) * (size_t)memo->nsteps[r]);
    return memo->nsteps[r];
  }
  dhx_ovl_group *F = xcalloc((size_t)f->n, sizeof *F), *B = xcalloc((size_t)b->n, sizeof *B);
  for (int i = 0; i < f->n; i++) F[i] = f->groups[i].t;
  for (int j = 0; j < b->n; j++) B[j] = b->groups[j].t;
  double x = costs->model->interference;
  dhx_ovl_memory mem = dhx_ovl_memory_of(F, f->n, B, b->n, b->held_start, HELD_SLACK);
  for (int k = DHX_SEARCH_DP; k <= DHX_SEARCH_NONE; k++) {  // each search's, for comparison
    if (k == (int)search) continue;  // the chosen one last: `steps` keeps its alignment
    int nk = dhx_ovl_align_within(F, f->n, B, b->n, (dhx_strand_search)k, x, &mem, steps);
    memo->modelled[k] += dhx_ovl_cost(F, B, steps, nk, x);
  }
  int n = dhx_ovl_align_within(F, f->n, B, b->n, search, x, &mem, steps);
  memo->modelled[search] += dhx_ovl_cost(F, B, steps, n, x);
  if (search == DHX_SEARCH_NONE || nevents + events_needed(n) > DHX_OVL_EVENT_BUDGET) n = 0;
  memo_add(memo, f->n, b->n, steps, n);
  free(F);
  free(B);
  return n;
}

// One region as the pass placed it: its blocks, its alignment, and its inserts in[from..to).
typedef struct placed {
  const block *f, *b;
  dhx_ovl_step *steps;
  int n, from, to;
} placed;

// The search's events must not close a cycle with the events the program already has (a
// ZeRO-3 gather, say, that the data-parallel stream orders behind the other strand's
// reduce-scatter), or a WAIT would never complete. Checked once for all regions; if they do,
// the regions are taken one by one and a region whose events would close one is left
// unaligned (its strands run free), as the stage's first rank records in the memo for the
// others. On a rank that follows the memo a cycle is an internal error.
static void keep_acyclic(const dhx_oplist *l, inserts *in, placed *regions, int nregions,
                         dhx_ovl_memo *fill) {
  if (acyclic_with(l, in, 0, in->n, l->nevents)) return;
  if (!fill) DHX_ICE("paired strands: the stage's alignment closes a cycle of events here");
  int kept = 0;  // in->v[0..kept): the inserts of the regions kept so far
  for (int k = 0; k < nregions; k++) {
    placed *pl = &regions[k];
    int from = pl->from, to = pl->to;
    memmove(in->v + kept, in->v + from, sizeof(insert) * (size_t)(to - from));
    pl->from = kept;
    pl->to = kept + (to - from);
    if (pl->to > pl->from && !acyclic_with(l, in, 0, pl->to, l->nevents)) {
      pl->to = pl->from;
      pl->n = 0;
      fill->nsteps[k] = 0;
    }
    kept = pl->to;
  }
  in->n = kept;
}

// ---- the data-parallel stream in the alignment's order --------------------------------------
// With ZeRO 2 and 3 both strands share one data-parallel stream (zero.c), a unit on it per run
// of ops: it waits for its strand to reach a point, gathers weights or reduce-scatters and adds
// gradients, and records that it is done; the units are in program order. The alignment may
// hold a forward behind the other strand's backward while that stream has the forward's
// gather queued behind the backward's reduce-scatter: a cycle, which keep_acyclic can only
// resolve by leaving the region unaligned (both micro-batches' activations live). Ordering the
// units by the alignment instead, each by the step of the compute point it waits for, removes
// those cycles. The adds of a parameter's reduced pieces keep their micro-batch order: each
// micro-batch's backward run of a layer ends in a later step than the previous one's.

typedef struct dp_stream {
  int stream;     // -1: the program has none
  int *pos, n;    // its ops' places in the list
  dhx_lop *orig;  // its ops in program order
} dp_stream;

static bool on_dp(const dhx_lop *op) {
  return is_comm(op) && (op->comm == DHX_COMM_DP || op->comm == DHX_COMM_DP_INTRA ||
                         op->comm == DHX_COMM_DP_INTER);
}

// The stream of the data-parallel collectives, if it is neither strand's.
static dp_stream dp_stream_of(const dhx_oplist *l, const placed *regions, int nregions) {
  dp_stream d = {.stream = -1};
  for (int i = 0; i < l->n && d.stream < 0; i++)
    if (!l->ops[i].dead && on_dp(&l->ops[i])) d.stream = l->ops[i].stream;
  for (int k = 0; k < nregions && d.stream >= 0; k++)
    if (regions[k].f->stream == d.stream || regions[k].b->stream == d.stream) d.stream = -1;
  if (d.stream < 0) return d;
  for (int i = 0; i < l->n; i++) d.n += l->ops[i].stream == d.stream;
  d.pos = xcalloc((size_t)d.n, sizeof(int));
  d.orig = xcalloc((size_t)d.n, sizeof(dhx_lop));
  for (int i = 0, j = 0; i < l->n; i++)
    if (l->ops[i].stream == d.stream) {
      d.pos[j] = i;
      d.orig[j++] = l->ops[i];
    }
  return d;
}

typedef struct dp_unit {
  int64_t key;
  int first, n;  // ops orig[first .. first + n)
} dp_unit;

static int by_unit_key(const void *x, const void *y) {
  const dp_unit *a = x, *b = y;
  if (a->key != b->key) return a->key < b->key ? -1 : 1;
  return (a->first > b->first) - (a->first < b->first);
}

// Lays the stream's units out in the order of the steps their waits follow, by the regions'
// present alignments; keeps program order where that order would hang by itself.
static void order_dp_stream(dhx_oplist *l, const dp_stream *d, const placed *regions,
                            int nregions) {
  for (int j = 0; j < d->n; j++) l->ops[d->pos[j]] = d->orig[j];
  int64_t *step = xcalloc((size_t)l->n + 1, sizeof(int64_t));  // each op's step, or that of
  for (int i = 0; i < l->n; i++) step[i] = -1;                 // the next after it on its stream
  for (int k = 0; k < nregions; k++) {
    region reg = {.l = l, .side = {regions[k].f, regions[k].b}};
    key_region(&reg, k + 1, regions[k].steps, regions[k].n, step);
  }
  int64_t next[DHX_MAX_STREAMS];
  for (int st = 0; st < DHX_MAX_STREAMS; st++) next[st] = INT64_MAX;
  for (int i = l->n - 1; i >= 0; i--) {
    int st = l->ops[i].stream;
    if (step[i] < 0) step[i] = next[st];
    next[st] = step[i];
  }
  int nev = l->nevents > 0 ? l->nevents : 1;
  int *recorded_at = xcalloc((size_t)nev, sizeof(int));
  for (int e = 0; e < nev; e++) recorded_at[e] = -1;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (!op->dead && op->kind == DHX_L_RECORD && op->event >= 0 && op->event < l->nevents)
      recorded_at[op->event] = i;
  }
  dp_unit *u = xcalloc((size_t)d->n, sizeof(dp_unit));
  int nu = 0;
  for (int j = 0; j < d->n; j++) {  // a unit starts with the waits that follow other ops
    const dhx_lop *op = &d->orig[j];
    bool wait = op->kind == DHX_L_WAIT;
    if (nu == 0 || (wait && d->orig[j - 1].kind != DHX_L_WAIT)) {
      u[nu] = (dp_unit){-1, j, 0};
      nu++;
    }
    dp_unit *x = &u[nu - 1];
    x->n++;
    int at = wait && op->event >= 0 && op->event < l->nevents ? recorded_at[op->event] : -1;
    if (at >= 0 && l->ops[at].stream != d->stream && step[at] > x->key) x->key = step[at];
  }
  for (int k = 0; k < nu; k++)  // a unit that waits for no compute stays after the one before
    if (u[k].key < 0) u[k].key = k ? u[k - 1].key : 0;
  qsort(u, (size_t)nu, sizeof(dp_unit), by_unit_key);
  for (int k = 0, j = 0; k < nu; k++)
    for (int m = 0; m < u[k].n; m++) l->ops[d->pos[j++]] = d->orig[u[k].first + m];
  inserts none = {0};
  if (!acyclic_with(l, &none, 0, 0, l->nevents))
    for (int j = 0; j < d->n; j++) l->ops[d->pos[j]] = d->orig[j];
  free(u);
  free(recorded_at);
  free(step);
}

static int aligned_regions(const placed *regions, int nregions) {
  int n = 0;
  for (int k = 0; k < nregions; k++) n += regions[k].n > 0;
  return n;
}

void dhx_overlap_search(dhx_graph *g, dhx_strand_search search, const dhx_ovl_costs *costs,
                        dhx_ovl_memo *memo) {
  dhx_oplist *l = &g->prog[DHX_PROG_MICRO];
  int strand = second_strand(l);  // none too: its modelled time is compared with the others'
  if (strand <= 0) return;
  bool fill = memo->nregions == 0;
  blocks bs = {0};
  find_blocks(l, strand, fill ? costs : NULL, &bs);
  if (fill) {  // what each group leaves held, for the search's memory limit
    act_uses u;
    find_act_uses(g, l, &u);
    for (int k = 0; k < bs.n; k++)
      if (bs.b[k].n) bs.b[k].held_start = block_held(g, &u, &bs.b[k]);
    free_act_uses(&u);
  }
  inserts in = {0};
  placed *done = NULL;  // per region: its steps and where its inserts are in `in`
  int r = 0;
  for (int k = 0; k + 1 < bs.n; k++) {
    const block *f = &bs.b[k], *b = &bs.b[k + 1];
    if (f->phase != DHX_PHASE_FORWARD || b->phase != DHX_PHASE_BACKWARD || f->stream == b->stream)
      continue;
    done = realloc(done, sizeof(placed) * (size_t)(r + 1));
    if (!done) abort();
    placed *pl = &done[r];
    *pl = (placed){.f = f, .b = b, .steps = xcalloc((size_t)(f->n + b->n), sizeof(dhx_ovl_step)),
                   .from = in.n};
    pl->n = choose(f, b, r, search, costs, memo, l->nevents, pl->steps, fill);
    region reg = {.l = l, .side = {f, b}};
    reg.recorded[0] = xcalloc((size_t)f->n, sizeof(int));
    reg.recorded[1] = xcalloc((size_t)b->n, sizeof(int));
    for (int i = 0; i < f->n; i++) reg.recorded[0][i] = -1;
    for (int j = 0; j < b->n; j++) reg.recorded[1][j] = -1;
    if (pl->n > 0) place_start(&reg, &l->nevents, &in);
    place_events(&reg, pl->steps, pl->n, &l->nevents, &in);
    pl->to = in.n;
    free(reg.recorded[0]);
    free(reg.recorded[1]);
    r++;
  }
  // The data-parallel stream follows the alignment; where keep_acyclic leaves a region
  // unaligned, it follows the alignments left (as the memo's followers find them).
  dp_stream dp = dp_stream_of(l, done, r);
  for (;;) {
    if (dp.stream >= 0) order_dp_stream(l, &dp, done, r);
    int before = aligned_regions(done, r);
    keep_acyclic(l, &in, done, r, fill ? memo : NULL);
    if (dp.stream < 0 || aligned_regions(done, r) == before) break;
  }
  free(dp.pos);
  free(dp.orig);
  int64_t *key = xcalloc((size_t)(l->n ? l->n : 1), sizeof(int64_t));
  for (int i = 0; i < l->n; i++) key[i] = -1;
  bool aligned = false;
  for (int k = 0; k < r; k++) {
    region reg = {.l = l, .side = {done[k].f, done[k].b}};
    key_region(&reg, k + 1, done[k].steps, done[k].n, key);
    aligned |= done[k].n > 0;
    free(done[k].steps);
  }
  free(done);
  if (!fill && r != memo->nregions)
    DHX_ICE("paired strands: %d regions here, %d on the stage's first rank", r, memo->nregions);
  apply(l, &in, &key);
  if (aligned) list_by_steps(l, key);
  free(key);
  free(in.v);
  free_blocks(&bs);
}
