// zero.c — sharded data parallelism (ZeRO stages 1, 2 and 3) over the data-parallel group.
//
// Every parameter's elements (of this rank's tensor-parallel slice, row-major) are cut into dp
// equal pieces of `piece` elements (the last ones padded with zeros); data rank r keeps piece r
// of the state that is sharded:
//
//   zero 1  moments, and the gradient's piece for the optimizer. The whole gradient is
//           accumulated over the step as before (in `work`), reduce-scattered in STEP.
//   zero 2  moments and gradients. Each micro-batch's whole gradient is a short-lived
//           activation: zeroed before its first contribution, reduce-scattered on the
//           data-parallel stream as soon as the backward has finished with it (one bucket per
//           run of ops of one layer, overlapping the backward of the next), and added into the
//           persistent piece there, in program order (with paired strands too).
//   zero 3  also the parameters: each run of ops of one layer, micro-batch and phase finds the
//           whole weights it reads all-gathered into short-lived activations, gathered on the
//           data-parallel stream while the previous run computes.
//
// STEP: (zero 1: reduce-scatter) → sums of squares of this rank's gradient pieces, added over
// the data-parallel group (and over tensor ranks and stages as without sharding) → the global
// norm → AdamW on each parameter's piece → (zero 1, 2: the updated pieces all-gathered in place
// into the whole parameters, which are allocated dp * piece elements for that; with qWD,
// compress_params.c: AdamW on fp32 master pieces, their quantized differences gathered).
//
// Paired strands: each run's gathers, zeroing and bucket events are on the stream of the
// strand that computes it, chained along that strand's runs (rebuild); the data-parallel
// stream is one, shared in program order, which the overlap search may lay out in its
// alignment's order (overlap_search.c); every rank does the same, so the collectives pair up
// across ranks.
//
// Overlap changes when things run, never what they compute: the pieces are reduced in a fixed
// ring order and each micro-batch's gradient is added into the piece in micro-batch order, so
// runs are reproducible.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

#define PIECE_ALIGN 16  // elements: every piece starts on a DHX_ALIGN boundary

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

bool dhx_zero_sharded(const dhx_graph *g) { return g->zero >= 1 && g->dp > 1; }

int64_t dhx_zero_piece(int64_t elems, int dp) {
  int64_t per = (elems + dp - 1) / dp;
  return (per + PIECE_ALIGN - 1) / PIECE_ALIGN * PIECE_ALIGN;
}

// Elements of a parameter's slice, and this rank's piece of them.
static int64_t slice_elems(const dhx_tensor *p) { return dhx_tensor_elems(p); }
static int64_t piece_of(const dhx_graph *g, const dhx_tensor *p) {
  return dhx_grad_piece(g, slice_elems(p));
}
// How many of this rank's piece elements are real (the rest is padding); may be 0.
static int64_t valid_of(const dhx_graph *g, const dhx_tensor *p) {
  int64_t c = piece_of(g, p), rest = slice_elems(p) - (int64_t)g->dp_rank * c;
  return rest < 0 ? 0 : rest < c ? rest : c;
}

static void make_piece(dhx_graph *g, int t, int64_t piece) {
  if (t < 0) return;
  g->tensors[t].shard_parts = g->dp;
  g->tensors[t].shard_index = g->dp_rank;
  g->tensors[t].alloc_elems = piece;
}

static int flat_tensor(dhx_graph *g, const char *name, dhx_tensor_kind kind, int64_t elems) {
  return dhx_tensor_new(g, name, kind, DHX_F32, 1, &elems);
}

static void partition(dhx_graph *g) {
  int n = g->ntensors;
  for (int i = 0; i < n; i++) {
    if (g->tensors[i].kind != DHX_T_PARAM) continue;
    int64_t c = piece_of(g, &g->tensors[i]);
    make_piece(g, g->tensors[i].grad, c);
    make_piece(g, g->tensors[i].opt_m, c);
    make_piece(g, g->tensors[i].opt_v, c);
    if (g->zero >= 3) {
      make_piece(g, i, c);
    } else {
      g->tensors[i].alloc_elems = c * g->dp;  // the pieces are gathered into it in place
    }
    if (g->zero == 1) {
      char name[DHX_NAME_MAX];
      snprintf(name, sizeof name, "grad.whole.%.50s", g->tensors[i].name);
      int w = flat_tensor(g, name, DHX_T_SCRATCH, c * g->dp);
      g->tensors[i].work = w;
    }
  }
}

// ---- MICRO and EVAL: whole copies of sharded state, gathers and reductions --------------------

// What a run of the op list touches of one parameter: its whole gradient (zero 2, 3) per
// micro-batch, and its whole weights (zero 3) per micro-batch and phase.
enum { USE_GRAD = 4, USE_SLOTS = 5 };  // slots 0..3: weights by phase; 4: the gradient

typedef struct use {
  int param;      // tensor id of the parameter
  int slot, micro;
  int first, last;  // op indices in the old list
  int copy;       // the short-lived whole tensor that replaces it
  int run;        // the run of its first use
  bool zeroed, sent;  // a whole gradient: zeroed before its first use, reduced after its last
} use;

typedef struct rewrite {
  dhx_graph *g;
  dhx_oplist *old;
  dhx_oplist out;
  int prog, stream, micros;
  int *param_of;  // tensor → parameter whose gradient or weights it is, -1
  int *use_at;    // (param index, micro, slot) → use, -1
  int *pidx;      // tensor → parameter index, -1
  use *uses;
  int nuses;
  int *run;       // old op → run index
  int *run_stream;  // run → the stream its compute is on (a strand's with paired strands)
  int nruns;
} rewrite;

static int slot_key(const rewrite *w, int pi, int micro, int slot) {
  return (pi * w->micros + micro) * USE_SLOTS + slot;
}

static bool same_run(const dhx_lop *a, const dhx_lop *b) {
  return a->at.micro == b->at.micro && a->at.phase == b->at.phase && a->at.layer == b->at.layer;
}

// Whether op runs on a compute stream: a pipeline's transfers, and the events around them,
// may sit on streams of their own.
static bool computes(const dhx_lop *op) {
  return op->kind != DHX_L_SEND && op->kind != DHX_L_RECV && op->kind != DHX_L_RECORD &&
         op->kind != DHX_L_WAIT;
}

// Runs, and the stream each computes on: that of its first computing op, or the previous
// run's when it has none (a run of transfers).
static void find_runs(rewrite *w) {
  w->run = xcalloc((size_t)w->old->n, sizeof(int));
  w->run_stream = xcalloc((size_t)w->old->n + 1, sizeof(int));
  const dhx_lop *prev = NULL;
  int r = -1;
  bool known = false;  // run r's stream is set by one of its computing ops
  for (int i = 0; i < w->old->n; i++) {
    const dhx_lop *op = &w->old->ops[i];
    if (op->dead) continue;
    if (!prev || !same_run(prev, op)) {
      r++;
      w->run_stream[r] = r > 0 ? w->run_stream[r - 1] : 0;
      known = false;
    }
    if (!known && computes(op)) {
      w->run_stream[r] = op->stream;
      known = true;
    }
    w->run[i] = r;
    prev = op;
  }
  w->nruns = r + 1;
}

// The key of operand tensor t of op i, or -1 when t is not sharded state this pass replaces.
static int key_of(const rewrite *w, int i, int t) {
  int p = w->param_of[t];
  if (p < 0) return -1;
  const dhx_lop *op = &w->old->ops[i];
  int slot = t == p ? (int)op->at.phase : USE_GRAD;
  return slot_key(w, w->pidx[p], op->at.micro < 0 ? 0 : op->at.micro, slot);
}

// Records that op i uses operand tensor t (when it is sharded state).
static void note_use(rewrite *w, int i, int t) {
  int key = key_of(w, i, t);
  if (key < 0) return;
  if (w->use_at[key] < 0) {
    const dhx_lop *op = &w->old->ops[i];
    int p = w->param_of[t];
    w->uses[w->nuses] = (use){.param = p, .slot = t == p ? (int)op->at.phase : USE_GRAD,
                              .micro = op->at.micro < 0 ? 0 : op->at.micro, .first = i,
                              .last = i, .run = w->run[i]};
    w->use_at[key] = w->nuses++;
  }
  w->uses[w->use_at[key]].last = i;
}

// The use operand a of op i belongs to, or NULL.
static use *use_at(rewrite *w, int i, const dhx_operand *a) {
  if (a->kind != DHX_ARG_BUF) return NULL;
  int key = key_of(w, i, a->tensor);
  return key < 0 ? NULL : &w->uses[w->use_at[key]];
}

static void collect_uses(rewrite *w) {
  dhx_graph *g = w->g;
  int np = 0;
  w->param_of = xcalloc((size_t)g->ntensors, sizeof(int));
  w->pidx = xcalloc((size_t)g->ntensors, sizeof(int));
  for (int i = 0; i < g->ntensors; i++) w->param_of[i] = w->pidx[i] = -1;
  for (int i = 0; i < g->ntensors; i++) {
    dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM) continue;
    w->pidx[i] = np++;
    if (g->zero >= 3) w->param_of[i] = i;
    if (p->grad >= 0 && g->zero >= 2) w->param_of[p->grad] = i;
  }
  w->micros = 1;
  for (int i = 0; i < w->old->n; i++)
    if (w->old->ops[i].at.micro + 1 > w->micros) w->micros = w->old->ops[i].at.micro + 1;
  size_t keys = (size_t)np * (size_t)w->micros * USE_SLOTS;
  w->use_at = malloc(sizeof(int) * (keys ? keys : 1));
  if (!w->use_at) abort();
  for (size_t k = 0; k < keys; k++) w->use_at[k] = -1;
  w->uses = xcalloc(keys, sizeof(use));
  for (int i = 0; i < w->old->n; i++) {
    const dhx_lop *op = &w->old->ops[i];
    if (op->dead) continue;
    for (int j = 0; j < op->nargs; j++)
      if (op->args[j].kind == DHX_ARG_BUF) note_use(w, i, op->args[j].tensor);
  }
  for (int k = 0; k < w->nuses; k++) {  // the short-lived whole copies
    use *u = &w->uses[k];
    const dhx_tensor *p = &g->tensors[u->param];
    char name[DHX_NAME_MAX];
    static const char *phase[] = {"", ",fwd", ",bwd", ",opt", ""};
    snprintf(name, sizeof name, "%s%.50s.whole[%d%s]", u->slot == USE_GRAD ? "grad." : "",
             p->name, u->micro, phase[u->slot]);
    u->copy = flat_tensor(g, name, DHX_T_ACT, piece_of(g, p) * g->dp);
    g->tensors[u->copy].program = w->prog;
  }
}

static dhx_lop *push(rewrite *w, dhx_lop_kind kind, int stream, const char *note) {
  return dhx_lop_push(&w->out, kind, stream, note);
}

static int event(rewrite *w, dhx_lop_kind kind, int stream, int ev, const char *note) {
  if (ev < 0) ev = w->out.nevents++;
  push(w, kind, stream, note)->event = ev;
  return ev;
}

// The whole weights of every use whose first run is `run`, gathered on the data-parallel
// stream once compute (on stream `compute`) has reached this point; returns the event
// recorded when they are all in, or -1 when there are none.
static int gather_run(rewrite *w, int run, int compute) {
  dhx_graph *g = w->g;
  int done = -1;
  for (int k = 0; k < w->nuses; k++) {
    use *u = &w->uses[k];
    if (u->slot == USE_GRAD || u->run != run) continue;
    if (done < 0) {
      int go = event(w, DHX_L_RECORD, compute, -1, "weights may be gathered");
      event(w, DHX_L_WAIT, w->stream, go, "weights may be gathered");
      done = 0;
    }
    const dhx_tensor *p = &g->tensors[u->param];
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "gather %.60s", p->name);
    dhx_emit_all_gather(&w->out, w->stream, DHX_COMM_DP, u->param, u->copy,
                        piece_of(g, p) * g->dp, note);
  }
  return done < 0 ? -1 : event(w, DHX_L_RECORD, w->stream, -1, "weights gathered");
}

// A bucket of finished whole gradients: reduce-scattered on the data-parallel stream into
// short-lived pieces, which that stream then adds into the persistent pieces. The adds of all
// buckets thus run in program order on one stream, micro-batch after micro-batch, whichever
// strand computed the gradients. Compute waits for a bucket (at the next bucket or the end)
// before the bytes of its whole gradients and pieces may be reused.
typedef struct bucket {
  int *uses, n;
  int done;  // event recorded when its reductions are in, -1 before it is sent
  int *parts;
} bucket;

static void send_bucket(rewrite *w, bucket *b, int compute) {
  dhx_graph *g = w->g;
  int go = event(w, DHX_L_RECORD, compute, -1, "gradients may be reduced");
  event(w, DHX_L_WAIT, w->stream, go, "gradients may be reduced");
  for (int k = 0; k < b->n; k++) {
    use *u = &w->uses[b->uses[k]];
    int64_t c = piece_of(g, &g->tensors[u->param]);
    char name[DHX_NAME_MAX], note[DHX_NAME_MAX];
    snprintf(name, sizeof name, "grad.%.50s.piece[%d]", g->tensors[u->param].name, u->micro);
    b->parts[k] = flat_tensor(g, name, DHX_T_ACT, c);  // (moves g->tensors)
    g->tensors[b->parts[k]].program = w->prog;
    snprintf(note, sizeof note, "reduce %.60s", g->tensors[u->param].name);
    dhx_emit_grad_reduce(g, &w->out, w->stream, w->stream, w->prog, u->param, u->micro,
                         u->copy, b->parts[k], note);
  }
  for (int k = 0; k < b->n; k++) {
    const dhx_tensor *p = &g->tensors[w->uses[b->uses[k]].param];
    dhx_ewb e;
    dhx_ewb_init(&e);
    int x = dhx_ewb_load(&e, dhx_buf(b->parts[k], 0), 0);
    dhx_ewb_store(&e, x, dhx_buf(p->grad, 0), true);
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "add %.60s's reduced piece", p->name);
    dhx_emit_ew(&w->out, &e, piece_of(g, p), note)->stream = w->stream;
  }
  b->done = event(w, DHX_L_RECORD, w->stream, -1, "gradients reduced");
}

// The whole gradients and pieces stay live (for the memory planner) until this wait, on
// stream `compute`, orders the bucket's reductions and adds before what follows.
static void settle_bucket(rewrite *w, bucket *b, int compute) {
  event(w, DHX_L_WAIT, compute, b->done, "gradients reduced");
  b->n = 0;
  b->done = -1;
}

static dhx_operand replace(rewrite *w, int i, dhx_operand a) {
  use *u = use_at(w, i, &a);
  if (u) a.tensor = u->copy;
  return a;
}

// Each strand's runs, its buckets and its gathers follow one another: a run's start triggers
// the gather of the next run on its own stream (the first run of a stream gathers its own
// weights as it starts), and a bucket waits for the previous bucket of its own stream. With one
// stream that is program order. With paired strands it keeps the strands' progress apart, so
// the overlap search may order the shared data-parallel stream by its alignment
// (overlap_search.c) without closing a cycle through these triggers.
typedef struct strand_buckets {
  bucket now, sent;
} strand_buckets;

static bucket new_bucket(const rewrite *w) {
  return (bucket){xcalloc((size_t)w->nuses, sizeof(int)), 0, -1,
                  xcalloc((size_t)w->nuses, sizeof(int))};
}

static void free_bucket(bucket *b) {
  free(b->uses);
  free(b->parts);
}

static void rebuild(rewrite *w) {
  dhx_graph *g = w->g;
  dhx_oplist *old = w->old;
  w->out = (dhx_oplist){.nstreams = old->nstreams, .nevents = old->nevents};
  enum { NOT_YET = -2 };
  int *gathered = xcalloc((size_t)w->nruns + 1, sizeof(int));  // event, -1 (none), NOT_YET
  int *next_same = xcalloc((size_t)w->nruns + 1, sizeof(int));  // next run on the same stream
  for (int r = 0; r <= w->nruns; r++) gathered[r] = NOT_YET;
  int last_of[DHX_MAX_STREAMS];
  for (int s = 0; s < DHX_MAX_STREAMS; s++) last_of[s] = -1;
  for (int r = w->nruns - 1; r >= 0; r--) {
    next_same[r] = last_of[w->run_stream[r]];
    last_of[w->run_stream[r]] = r;
  }
  strand_buckets b[DHX_MAX_STREAMS];
  bool used[DHX_MAX_STREAMS] = {false};
  int prev_run = -1;
  for (int i = 0; i < old->n; i++) {
    const dhx_lop *op = &old->ops[i];
    if (op->dead) continue;
    w->out.at = op->at;
    w->out.at.node = -1;
    int r = w->run[i], compute = w->run_stream[r];
    if (r != prev_run) {  // a run starts: gather its weights (first on its stream) and the next's
      if (gathered[r] == NOT_YET) gathered[r] = gather_run(w, r, compute);
      int nx = next_same[r];
      if (nx >= 0 && gathered[nx] == NOT_YET) gathered[nx] = gather_run(w, nx, compute);
      if (gathered[r] >= 0) event(w, DHX_L_WAIT, compute, gathered[r], "weights gathered");
      prev_run = r;
    }
    if (!used[compute]) {
      b[compute] = (strand_buckets){new_bucket(w), new_bucket(w)};
      used[compute] = true;
    }
    strand_buckets *sb = &b[compute];
    for (int j = 0; j < op->nargs; j++) {  // whole gradients start at zero
      use *u = use_at(w, i, &op->args[j]);
      if (!u || u->slot != USE_GRAD || u->zeroed) continue;
      dhx_lop *z = push(w, DHX_L_ZERO, op->stream, "whole gradient starts at zero");
      z->args[0] = dhx_buf(u->copy, 0);
      z->args[1] = dhx_i64(dhx_tensor_elems(&g->tensors[u->copy]) * 4);
      z->nargs = 2;
      u->zeroed = true;
    }
    dhx_lop copy = *op;
    for (int j = 0; j < copy.nargs; j++) copy.args[j] = replace(w, i, copy.args[j]);
    dhx_lop_append(&w->out, &copy);
    for (int j = 0; j < op->nargs; j++) {  // gradients the backward has finished with
      use *u = use_at(w, i, &op->args[j]);
      if (!u || u->slot != USE_GRAD || u->last != i || u->sent) continue;
      u->sent = true;  // once, however many operands name it
      sb->now.uses[sb->now.n++] = (int)(u - w->uses);
    }
    int next = i + 1;
    while (next < old->n && old->ops[next].dead) next++;
    if (sb->now.n > 0 && (next == old->n || w->run[next] != r)) {  // the run ends: its bucket
      if (sb->sent.n > 0) settle_bucket(w, &sb->sent, compute);
      send_bucket(w, &sb->now, compute);
      bucket t = sb->sent;
      sb->sent = sb->now;
      sb->now = t;
    }
  }
  for (int s = 0; s < DHX_MAX_STREAMS; s++) {
    if (!used[s]) continue;
    if (b[s].sent.n > 0) settle_bucket(w, &b[s].sent, 0);
    free_bucket(&b[s].now);
    free_bucket(&b[s].sent);
  }
  free(gathered);
  free(next_same);
}

static void rewrite_program(dhx_graph *g, int prog) {
  rewrite w = {.g = g, .old = &g->prog[prog], .prog = prog};
  w.stream = w.old->nstreams > 1 ? w.old->nstreams : 1;
  find_runs(&w);
  collect_uses(&w);
  if (w.nuses > 0) {
    rebuild(&w);
    free(w.old->ops);
    w.out.at = w.old->at;
    *w.old = w.out;
  }
  free(w.run);
  free(w.run_stream);
  free(w.param_of);
  free(w.pidx);
  free(w.use_at);
  free(w.uses);
}

// zero 1: the backward accumulates into the whole gradient, the optimizer reads the piece.
static void use_whole_gradients(dhx_graph *g, dhx_oplist *l) {
  int *work = xcalloc((size_t)g->ntensors, sizeof(int));
  for (int i = 0; i < g->ntensors; i++) work[i] = -1;
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_PARAM && g->tensors[i].grad >= 0)
      work[g->tensors[i].grad] = g->tensors[i].work;
  for (int i = 0; i < l->n; i++)
    for (int j = 0; j < l->ops[i].nargs; j++) {
      dhx_operand *a = &l->ops[i].args[j];
      if (a->kind == DHX_ARG_BUF && work[a->tensor] >= 0) a->tensor = work[a->tensor];
    }
  free(work);
}

void dhx_zero_shard(dhx_graph *g) {
  if (!dhx_zero_sharded(g)) return;
  partition(g);
  if (g->qwd_bits) dhx_qwd_add_masters(g);
  if (g->zero == 1) {
    use_whole_gradients(g, &g->prog[DHX_PROG_MICRO]);
    return;
  }
  rewrite_program(g, DHX_PROG_MICRO);
  if (g->zero >= 3) rewrite_program(g, DHX_PROG_EVAL);
}

// ---- BEGIN and STEP ---------------------------------------------------------------------------

void dhx_lower_zero_begin(dhx_graph *g) {
  if (g->zero != 1) return;
  dhx_oplist *begin = &g->prog[DHX_PROG_BEGIN];
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || p->work < 0) continue;
    dhx_lop *z = dhx_lop_push(begin, DHX_L_ZERO, 0, "zero the whole gradient");
    z->args[0] = dhx_buf(p->work, 0);
    z->args[1] = dhx_i64(dhx_tensor_elems(&g->tensors[p->work]) * 4);
    z->nargs = 2;
  }
}

void dhx_lower_zero_reduce(dhx_graph *g, int stream) {
  if (g->zero != 1) return;
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || p->work < 0) continue;
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "reduce %.60s to this rank's piece", p->name);
    dhx_emit_grad_reduce(g, step, stream, stream + 1, DHX_PROG_STEP, i, 0, p->work, p->grad,
                         note);
  }
  dhx_grad_reduce_join(g, step, stream, stream + 1);
}

void dhx_lower_zero_update(dhx_graph *g, const dhx_lower_opts *o) {
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];
  bool gather = false;
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM) continue;
    int64_t valid = valid_of(g, p), mine = g->zero >= 3 ? 0 : (int64_t)g->dp_rank * piece_of(g, p);
    if (valid == 0) continue;
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "adamw %.60s (this rank's piece)", p->name);
    dhx_lop *op = dhx_emit_adamw_op(step, o, i, dhx_buf(p->grad, 0), p->opt_m, p->opt_v, valid,
                                    p->decay ? o->weight_decay : 0.0, dhx_clip_scale_id(g), note);
    op->args[0] = p->master >= 0 ? dhx_buf(p->master, 0) : dhx_buf(i, mine);
    gather |= g->zero < 3;
  }
  if (g->qwd_bits) {  // the pieces' differences, quantized, instead of the pieces
    dhx_lower_qwd_gather(g);
    return;
  }
  if (!gather) return;
  // The updated pieces into every rank's whole parameters, in place.
  int go = step->nevents++, done = step->nevents++;
  dhx_lop_push(step, DHX_L_RECORD, 0, "parameters updated")->event = go;
  dhx_lop_push(step, DHX_L_WAIT, 1, "parameters updated")->event = go;
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM) continue;
    int64_t c = piece_of(g, p);
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "gather %.60s's updated pieces", p->name);
    dhx_lop *ag = dhx_emit_all_gather(step, 1, DHX_COMM_DP, i, i, c * g->dp, note);
    ag->args[0] = dhx_buf(i, (int64_t)g->dp_rank * c);
  }
  dhx_lop_push(step, DHX_L_RECORD, 1, "parameters gathered")->event = done;
  dhx_lop_push(step, DHX_L_WAIT, 0, "parameters gathered")->event = done;
}
