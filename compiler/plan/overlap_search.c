// overlap_search.c — the overlap search of paired strands (see the header and
// docs/overlap-search.md).
#include "overlap_search.h"

#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "ice.h"
#include "plan_util.h"

// Events the pass may add to a program: the plan's limit, less room for what lowering made.
#define EVENT_BUDGET (DHX_PLAN_MAX_EVENTS - 4096)

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

static int align_greedy(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                        dhx_ovl_step *steps) {
  int i = 0, j = 0, n = 0;
  while (i < nf || j < nb) {
    if (i < nf && j < nb && dhx_ovl_legal(&F[i], &B[j])) steps[n++] = (dhx_ovl_step){i++, j++};
    else if (j >= nb || (i < nf && dhx_ovl_alone(&F[i]) <= dhx_ovl_alone(&B[j])))
      steps[n++] = (dhx_ovl_step){i++, -1};
    else steps[n++] = (dhx_ovl_step){-1, j++};
  }
  return n;
}

enum { TAKE_PAIR = 0, TAKE_F, TAKE_B };

// T[i][j]: least time for the first i forward and j backward groups; `how` the last step.
static int align_dp(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                    double interference, dhx_ovl_step *steps) {
  size_t w = (size_t)nb + 1;
  double *T = xcalloc(((size_t)nf + 1) * w, sizeof(double));
  unsigned char *how = xcalloc(((size_t)nf + 1) * w, 1);
  for (int i = 0; i <= nf; i++)
    for (int j = 0; j <= nb; j++) {
      if (i == 0 && j == 0) continue;
      double best = 0;
      int take = -1;
      if (i > 0 && j > 0 && dhx_ovl_legal(&F[i - 1], &B[j - 1])) {
        best = T[(i - 1) * w + j - 1] + dhx_ovl_pair(&F[i - 1], &B[j - 1], interference);
        take = TAKE_PAIR;
      }
      double t;
      if (i > 0 && ((t = T[(i - 1) * w + j] + dhx_ovl_alone(&F[i - 1])) < best || take < 0)) {
        best = t;
        take = TAKE_F;
      }
      if (j > 0 && ((t = T[i * w + j - 1] + dhx_ovl_alone(&B[j - 1])) < best || take < 0)) {
        best = t;
        take = TAKE_B;
      }
      T[i * w + j] = best;
      how[i * w + j] = (unsigned char)take;
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

int dhx_ovl_align(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                  dhx_strand_search search, double interference, dhx_ovl_step *steps) {
  switch (search) {
    case DHX_SEARCH_DP: return align_dp(F, nf, B, nb, interference, steps);
    case DHX_SEARCH_GREEDY: return align_greedy(F, nf, B, nb, steps);
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
  dhx_emit_instr(op, NULL, c->comm_of, &in);
  // A kernel's bytes come from its access descriptors: show the cost model a plan whose kernel
  // table holds this one kernel.
  dhx_plan view = {.comms = c->plan->comms, .ncomms = c->plan->ncomms};
  dhx_plan_kernel k;
  view.train.vocab = c->vocab;
  if (op->kind == DHX_L_KERNEL || op->kind == DHX_L_EW) {
    int id = dhx_codegen_add(c->cg, &op->kspec);
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
static int second_strand(const dhx_oplist *l) {
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (!op->dead && !is_event(op) && op->at.micro == 1 && op->at.phase == DHX_PHASE_FORWARD)
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

// Events a region's alignment needs, at most: a WAIT and a RECORD per step.
static int events_needed(int nsteps) { return 2 * nsteps; }

// At one position RECORDs go first: a group's end is recorded before its stream waits for the
// other's, so that no RECORD sits behind a WAIT it need not.
static int by_position(const void *x, const void *y) {
  const insert *a = x, *b = y;
  if (a->at != b->at) return a->at < b->at ? -1 : 1;
  if (a->kind != b->kind) return a->kind == DHX_L_RECORD ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

// Writes the inserted ops into the list at their positions.
static void apply(dhx_oplist *l, inserts *in) {
  if (!in->n) return;
  qsort(in->v, (size_t)in->n, sizeof(insert), by_position);
  dhx_lop *ops = xcalloc((size_t)(l->n + in->n), sizeof(dhx_lop));
  int n = 0, k = 0;
  for (int i = 0; i <= l->n; i++) {
    for (; k < in->n && in->v[k].at == i; k++) {
      const insert *x = &in->v[k];
      dhx_lop *op = &ops[n++];
      *op = (dhx_lop){.kind = x->kind, .stream = x->stream, .comm = -1, .event = x->event,
                      .at = x->origin};
      snprintf(op->note, sizeof op->note, "%s", x->kind == DHX_L_RECORD
               ? "overlap search: group done" : "overlap search: the other strand's group done");
    }
    if (i < l->n) ops[n++] = l->ops[i];
  }
  free(l->ops);
  l->ops = ops;
  l->n = l->cap = n;
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
  for (int k = DHX_SEARCH_DP; k <= DHX_SEARCH_NONE; k++) {  // each search's, for comparison
    int nk = dhx_ovl_align(F, f->n, B, b->n, (dhx_strand_search)k, x, steps);
    memo->modelled[k] += dhx_ovl_cost(F, B, steps, nk, x);
  }
  int n = dhx_ovl_align(F, f->n, B, b->n, search, x, steps);
  if (search == DHX_SEARCH_NONE || nevents + events_needed(n) > EVENT_BUDGET) n = 0;
  memo_add(memo, f->n, b->n, steps, n);
  free(F);
  free(B);
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
  inserts in = {0};
  int r = 0;
  for (int k = 0; k + 1 < bs.n; k++) {
    const block *f = &bs.b[k], *b = &bs.b[k + 1];
    if (f->phase != DHX_PHASE_FORWARD || b->phase != DHX_PHASE_BACKWARD || f->stream == b->stream)
      continue;
    dhx_ovl_step *steps = xcalloc((size_t)(f->n + b->n), sizeof *steps);
    int n = choose(f, b, r++, search, costs, memo, l->nevents, steps, fill);
    region reg = {.l = l, .side = {f, b}};
    reg.recorded[0] = xcalloc((size_t)f->n, sizeof(int));
    reg.recorded[1] = xcalloc((size_t)b->n, sizeof(int));
    for (int i = 0; i < f->n; i++) reg.recorded[0][i] = -1;
    for (int j = 0; j < b->n; j++) reg.recorded[1][j] = -1;
    place_events(&reg, steps, n, &l->nevents, &in);
    free(reg.recorded[0]);
    free(reg.recorded[1]);
    free(steps);
  }
  if (!fill && r != memo->nregions)
    DHX_ICE("paired strands: %d regions here, %d on the stage's first rank", r, memo->nregions);
  apply(l, &in);
  free(in.v);
  free_blocks(&bs);
}
