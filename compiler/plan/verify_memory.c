// verify_memory.c — no two buffers that may be live at the same time share bytes (see the
// header for the rule).
//
// Per program: a happens-before order of the instructions as vector clocks (one entry per
// stream: how many instructions of that stream happen before or are this one), the memory
// planner's (happens_before.h); the accesses of every buffer (which instructions read or
// write it); and per buffer a summary of its uses: the latest access on each stream and the
// earliest clock any access has. "Every access of A happens before every access of B" is then
// one comparison per stream. Overlapping buffers are found by a sweep over the buffers sorted
// by offset, so the cost is the number of overlapping pairs times the stream count, plus linear
// work per program.
#include "verify_memory.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "happens_before.h"
#include "plan_util.h"

#define ACC_READ 1u
#define ACC_WRITE 2u

// One instruction's use of one buffer (the flags of all its arguments on that buffer).
typedef struct access {
  int32_t instr;
  uint32_t flags;  // ACC_READ | ACC_WRITE
} access;

// A buffer's use in one program.
typedef struct use {
  int32_t first, last;   // its first and last access in `seq` order; -1 when it is unused
  uint32_t first_flags;  // what the first access does to it
  uint32_t last_on[DHX_MAX_STREAMS];    // stream position of its latest access there, 0: none
  uint32_t min_clock[DHX_MAX_STREAMS];  // the smallest clock entry over its accesses
} use;

// One program: happens-before as vector clocks and every buffer's accesses.
typedef struct program_facts {
  const dhx_plan_program *prog;
  uint32_t nstreams;
  dhx_hb hb;
  const uint32_t *pos;    // 1-based position of an instruction in its stream
  const uint32_t *seq;    // place in a linear extension of happens-before
  uint32_t *start;   // accesses of buffer b: acc[start[b] .. start[b + 1])
  access *acc;
  use *uses;         // per buffer
} program_facts;

typedef enum { KEEP_NONE = 0, KEEP_KIND, KEEP_PROGRAMS, KEEP_READ_FIRST, KEEP_WINDOW } keep_reason;

// What the check needs to know of one buffer of the rank.
typedef struct buffer_facts {
  uint32_t programs;   // bit p: program p accesses it
  int home;            // the first program that accesses it; -1 when none does
  int read_first;      // a program that reads it before writing it; -1 when none
  uint32_t members;    // state buffers inside it (for windows)
  bool not_window;     // it overlaps something a window may not
  keep_reason keep;    // why it must keep its bytes to itself; KEEP_NONE when it need not
} buffer_facts;

typedef struct checker {
  const dhx_plan *plan;
  uint32_t rank;
  const dhx_plan_rank *r;
  program_facts progs[DHX_PROG_COUNT];
  buffer_facts *bufs;
  char *err;
  size_t errlen;
} checker;

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

// ---- happens-before ---------------------------------------------------------------------------

static uint32_t streams_of(const dhx_plan_program *p) {
  uint32_t n = p->nstreams;
  for (uint32_t i = 0; i < p->ninstrs; i++)
    if (p->instrs[i].stream + 1 > n) n = p->instrs[i].stream + 1;
  return n < DHX_MAX_STREAMS ? n : DHX_MAX_STREAMS;
}

// The clocks of the program's instructions (happens_before.h).
static void order_program(program_facts *f) {
  const dhx_plan_program *p = f->prog;
  dhx_hb_init(&f->hb, p->ninstrs, f->nstreams, p->nevents);
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    f->hb.stream[i] = (uint8_t)in->stream;
    if (in->op == DHX_OP_RECORD) f->hb.records[i] = in->event;
    if (in->op == DHX_OP_WAIT) f->hb.waits[i] = in->event;
  }
  dhx_hb_order(&f->hb);
  f->pos = f->hb.pos;
  f->seq = f->hb.seq;
}

// Instruction a happens before instruction b (a run of the program finishes a before b starts).
static bool happens_before(const program_facts *f, int32_t a, int32_t b) {
  return dhx_hb_before(&f->hb, (uint32_t)a, (uint32_t)b);
}

// ---- accesses ---------------------------------------------------------------------------------

// What instruction `in` does to the buffer of argument j: ACC_READ, ACC_WRITE, both, or 0.
static uint32_t arg_access(const dhx_plan *plan, const dhx_plan_instr *in, uint32_t j) {
  switch (in->op) {
    case DHX_OP_KERNEL: {
      if (in->kernel < 0 || (uint32_t)in->kernel >= plan->nkernels) return ACC_READ | ACC_WRITE;
      const dhx_plan_kernel *k = &plan->kernels[in->kernel];
      if (j >= k->nargs || k->arg_types[j] != DHX_KARG_PTR) return 0;
      return (k->access[j].flags & DHX_ACC_WRITES) ? ACC_WRITE : ACC_READ;
    }
    case DHX_OP_GEMM:
      if (j < 2) return ACC_READ;
      if (j == 2) return in->gemm->beta != 0 ? ACC_READ | ACC_WRITE : ACC_WRITE;
      if (j == 3) return in->gemm->epilogue ? ACC_READ : 0;                  // bias
      if (j == 4) return in->gemm->epilogue == DHX_GEMM_BIAS_GELU ? ACC_WRITE : 0;  // pre
      return 0;
    case DHX_OP_ZERO: return j == 0 ? ACC_WRITE : 0;
    case DHX_OP_ALLREDUCE: return j == 0 ? ACC_READ | ACC_WRITE : 0;
    case DHX_OP_REDUCE_SCATTER:  // reads its input, writes its chunk of the sum
    case DHX_OP_ALL_GATHER:      // reads its own chunk, writes the whole
    case DHX_OP_ALL_TO_ALL:      // reads all of its input, writes all of its output
      return j == 0 ? ACC_READ : j == 1 ? ACC_WRITE : 0;
    case DHX_OP_SEND: return j == 0 ? ACC_READ : 0;
    case DHX_OP_LOAD_BATCH: return j <= 1 ? ACC_WRITE : 0;
    case DHX_OP_RECV: return j == 0 ? ACC_WRITE : 0;
    case DHX_OP_GRAD_NORM: return j < 2 ? ACC_WRITE : j == 2 ? ACC_READ : 0;  // scale, norm; partials
    case DHX_OP_RECORD:
    case DHX_OP_WAIT: return 0;
    default: return ACC_READ | ACC_WRITE;  // an op this checker does not know may do anything
  }
}

// The buffers instruction `in` touches, each once, with the flags of all its arguments on it.
static uint32_t instr_accesses(const dhx_plan *plan, const dhx_plan_rank *r,
                               const dhx_plan_instr *in, int32_t bufs[DHX_MAX_ARGS],
                               uint32_t flags[DHX_MAX_ARGS]) {
  uint32_t n = 0;
  for (uint32_t j = 0; j < in->nargs && j < DHX_MAX_ARGS; j++) {
    const dhx_plan_arg *a = &in->args[j];
    if (a->kind != DHX_ARG_BUF || a->buf < 0 || (uint32_t)a->buf >= r->nbuffers) continue;
    uint32_t fl = arg_access(plan, in, j);
    if (!fl) continue;
    uint32_t k = 0;
    while (k < n && bufs[k] != a->buf) k++;
    if (k == n) {
      bufs[n] = a->buf;
      flags[n++] = 0;
    }
    flags[k] |= fl;
  }
  return n;
}

// The accesses instruction i counts as: its own, and at the WAIT that completes a deferred
// collective (plan.h: dhx_instr_deferred) the collective's again, since it may touch its
// buffers until then. deferred_by[e]: the deferred collective that records event e, or -1.
static uint32_t accesses_at(const checker *c, const dhx_plan_program *p,
                            const int32_t *deferred_by, uint32_t i, int32_t bufs[DHX_MAX_ARGS],
                            uint32_t flags[DHX_MAX_ARGS]) {
  const dhx_plan_instr *in = &p->instrs[i];
  if (in->op == DHX_OP_WAIT && in->event >= 0 && (uint32_t)in->event < p->nevents &&
      deferred_by[in->event] >= 0)
    in = &p->instrs[deferred_by[in->event]];
  return instr_accesses(c->plan, c->r, in, bufs, flags);
}

// Groups the program's accesses by buffer (acc[start[b] .. start[b + 1]), in list order).
static void collect_accesses(const checker *c, program_facts *f) {
  const dhx_plan_program *p = f->prog;
  uint32_t nb = c->r->nbuffers;
  int32_t bufs[DHX_MAX_ARGS];
  uint32_t flags[DHX_MAX_ARGS];
  int32_t *deferred_by = xcalloc((size_t)p->nevents + 1, sizeof(int32_t));
  for (uint32_t e = 0; e < p->nevents; e++) deferred_by[e] = -1;
  for (uint32_t i = 0; i < p->ninstrs; i++)
    if (dhx_instr_deferred(&p->instrs[i]) && (uint32_t)p->instrs[i].event < p->nevents)
      deferred_by[p->instrs[i].event] = (int32_t)i;
  f->start = xcalloc((size_t)nb + 1, sizeof(uint32_t));
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    uint32_t n = accesses_at(c, p, deferred_by, i, bufs, flags);
    for (uint32_t k = 0; k < n; k++) f->start[bufs[k] + 1]++;
  }
  for (uint32_t b = 0; b < nb; b++) f->start[b + 1] += f->start[b];
  f->acc = xcalloc(f->start[nb], sizeof(access));
  uint32_t *fill = xcalloc(nb, sizeof(uint32_t));
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    uint32_t n = accesses_at(c, p, deferred_by, i, bufs, flags);
    for (uint32_t k = 0; k < n; k++)
      f->acc[f->start[bufs[k]] + fill[bufs[k]]++] = (access){(int32_t)i, flags[k]};
  }
  free(fill);
  free(deferred_by);
}

static void summarize_use(const program_facts *f, uint32_t b, use *u) {
  u->first = u->last = -1;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
    u->last_on[s] = 0;
    u->min_clock[s] = UINT32_MAX;
  }
  for (uint32_t k = f->start[b]; k < f->start[b + 1]; k++) {
    int32_t i = f->acc[k].instr;
    uint32_t s = f->prog->instrs[i].stream;
    if (u->first < 0 || f->seq[i] < f->seq[u->first]) {
      u->first = i;
      u->first_flags = f->acc[k].flags;
    }
    if (u->last < 0 || f->seq[i] > f->seq[u->last]) u->last = i;
    if (f->pos[i] > u->last_on[s]) u->last_on[s] = f->pos[i];
    const uint32_t *clock = dhx_hb_clock(&f->hb, (uint32_t)i);
    for (uint32_t t = 0; t < f->nstreams; t++)
      if (clock[t] < u->min_clock[t]) u->min_clock[t] = clock[t];
  }
}

// The buffer's first access only writes it and happens before all its other accesses, so no
// access sees what the bytes held before.
static bool starts_with_write(const program_facts *f, const use *u) {
  if (u->first < 0 || u->first_flags != ACC_WRITE) return false;
  return u->min_clock[f->prog->instrs[u->first].stream] >= f->pos[u->first];
}

// Every access of `a` happens before every access of `b`, and `b` starts with a write.
static bool used_before(const program_facts *f, const use *a, const use *b) {
  if (a->last == b->first) return false;  // one instruction touches both
  for (uint32_t s = 0; s < f->nstreams; s++)
    if (b->min_clock[s] < a->last_on[s]) return false;
  return starts_with_write(f, b);
}

static void analyze_program(checker *c, int prog) {
  program_facts *f = &c->progs[prog];
  f->prog = &c->r->programs[prog];
  f->nstreams = streams_of(f->prog);
  order_program(f);
  collect_accesses(c, f);
  f->uses = xcalloc(c->r->nbuffers, sizeof(use));
  for (uint32_t b = 0; b < c->r->nbuffers; b++) {
    use *u = &f->uses[b];
    summarize_use(f, b, u);
    if (u->first < 0) continue;
    buffer_facts *bf = &c->bufs[b];
    bf->programs |= 1u << prog;
    if (bf->home < 0) bf->home = prog;
    if (bf->read_first < 0 && !starts_with_write(f, u)) bf->read_first = prog;
  }
}

static void free_program(program_facts *f) {
  dhx_hb_free(&f->hb);
  free(f->start);
  free(f->acc);
  free(f->uses);
}

// ---- buffers ----------------------------------------------------------------------------------

static bool persistent_kind(uint32_t kind) {
  switch (kind) {
    case DHX_BUF_PARAM:
    case DHX_BUF_GRAD:
    case DHX_BUF_OPT_M:
    case DHX_BUF_OPT_V:
    case DHX_BUF_MASTER:
    case DHX_BUF_TOKENS:
    case DHX_BUF_TARGETS:
    case DHX_BUF_LOSSES: return true;
    default: return false;
  }
}

// Optimizer state a window may cover: the buffers the optimizer updates as one range.
static bool state_kind(uint32_t kind) {
  return kind == DHX_BUF_PARAM || kind == DHX_BUF_GRAD || kind == DHX_BUF_OPT_M ||
         kind == DHX_BUF_OPT_V;
}

static int64_t end_of(const dhx_plan_buffer *b) { return b->offset + b->nbytes; }

static bool contains(const dhx_plan_buffer *outer, const dhx_plan_buffer *inner) {
  return inner->offset >= outer->offset && end_of(inner) <= end_of(outer);
}

static bool is_window(const checker *c, uint32_t b) {
  return c->r->buffers[b].kind == DHX_BUF_SCRATCH && c->bufs[b].members > 0 &&
         !c->bufs[b].not_window;
}

// A scratch buffer `w` overlapping `x`: x is state inside it, or something a window may not
// overlap (another scratch buffer may be a window too: that is decided pairwise later).
static void note_window_overlap(checker *c, uint32_t w, uint32_t x) {
  const dhx_plan_buffer *bw = &c->r->buffers[w], *bx = &c->r->buffers[x];
  if (bw->kind != DHX_BUF_SCRATCH || bx->kind == DHX_BUF_SCRATCH) return;
  if (state_kind(bx->kind) && contains(bw, bx))
    c->bufs[w].members++;
  else
    c->bufs[w].not_window = true;
}

static int by_offset(const void *x, const void *y, void *ctx) {
  const dhx_plan_buffer *b = ctx;
  const dhx_plan_buffer *a = &b[*(const uint32_t *)x], *c = &b[*(const uint32_t *)y];
  if (a->offset != c->offset) return a->offset < c->offset ? -1 : 1;
  return *(const uint32_t *)x < *(const uint32_t *)y ? -1 : 1;
}

// Buffers with bytes, sorted by offset; returns how many.
static uint32_t sorted_buffers(const dhx_plan_rank *r, uint32_t *ids) {
  uint32_t n = 0;
  for (uint32_t b = 0; b < r->nbuffers; b++)
    if (r->buffers[b].nbytes > 0) ids[n++] = b;
  qsort_r(ids, n, sizeof(uint32_t), by_offset, r->buffers);
  return n;
}

static void decide_keep(checker *c, uint32_t b) {
  buffer_facts *bf = &c->bufs[b];
  if (persistent_kind(c->r->buffers[b].kind))
    bf->keep = KEEP_KIND;
  else if (is_window(c, b))
    bf->keep = KEEP_WINDOW;
  else if (bf->programs & (bf->programs - 1))
    bf->keep = KEEP_PROGRAMS;
  else if (bf->read_first >= 0)
    bf->keep = KEEP_READ_FIRST;
}

// ---- reports ----------------------------------------------------------------------------------

static void describe_buffer(const checker *c, uint32_t b, char *out, size_t len) {
  const dhx_plan_buffer *x = &c->r->buffers[b];
  snprintf(out, len, "'%s' (%s, bytes [%" PRId64 ", %" PRId64 "))", x->name,
           dhx_buf_kind_name(x->kind), x->offset, end_of(x));
}

static void describe_instr(const checker *c, int prog, int32_t i, char *out, size_t len) {
  if (prog < 0 || i < 0) {
    snprintf(out, len, "(no instruction uses it)");
    return;
  }
  const dhx_plan_instr *in = &c->r->programs[prog].instrs[i];
  snprintf(out, len, "%s instruction %d '%s' (%s, stream %u)", dhx_prog_name((uint32_t)prog), i,
           dhx_instr_note(in), dhx_op_name(in->op), in->stream);
}

static bool report(checker *c, uint32_t a, uint32_t b, const char *why, int prog_a, int32_t ia,
                   int prog_b, int32_t ib, const char *order) {
  char ba[DHX_NAME_MAX + 96], bb[DHX_NAME_MAX + 96], xa[DHX_NAME_MAX + 96], xb[DHX_NAME_MAX + 96];
  describe_buffer(c, a, ba, sizeof ba);
  describe_buffer(c, b, bb, sizeof bb);
  describe_instr(c, prog_a, ia, xa, sizeof xa);
  describe_instr(c, prog_b, ib, xb, sizeof xb);
  if (prog_a == prog_b && ia == ib)
    snprintf(c->err, c->errlen, "rank %u: buffers %s and %s share bytes %s: %s %s", c->rank, ba,
             bb, why, xa, order);
  else
    snprintf(c->err, c->errlen, "rank %u: buffers %s and %s share bytes %s: %s and %s %s",
             c->rank, ba, bb, why, xa, xb, order);
  return false;
}

// Why buffer b must keep its bytes to itself, as a clause.
static void keep_text(const checker *c, uint32_t b, char *out, size_t len) {
  const dhx_plan_buffer *x = &c->r->buffers[b];
  const buffer_facts *bf = &c->bufs[b];
  switch (bf->keep) {
    case KEEP_KIND:
      snprintf(out, len, "but '%s' must keep them to itself (%s buffers persist across programs)",
               x->name, dhx_buf_kind_name(x->kind));
      break;
    case KEEP_WINDOW:
      snprintf(out, len, "but '%s' must keep them to itself (it is a window over persistent "
               "state)", x->name);
      break;
    case KEEP_PROGRAMS:
      snprintf(out, len, "but '%s' must keep them to itself (more than one program uses it)",
               x->name);
      break;
    default:
      snprintf(out, len, "but '%s' must keep them to itself (%s reads it before writing it: it "
               "carries a value in)", x->name, dhx_prog_name((uint32_t)bf->read_first));
      break;
  }
}

// b's accesses in program f: the first one that does not happen after `a`'s instruction ia.
static int32_t unordered_after(const program_facts *f, uint32_t b, int32_t ia) {
  for (uint32_t k = f->start[b]; k < f->start[b + 1]; k++)
    if (!happens_before(f, ia, f->acc[k].instr)) return f->acc[k].instr;
  return -1;
}

// Both used in one program, in no order that keeps them apart; `a` is the one that starts first.
static bool report_race(checker *c, int prog, uint32_t a, uint32_t b) {
  const program_facts *f = &c->progs[prog];
  const use *ua = &f->uses[a], *ub = &f->uses[b];
  const char *live = "while both may be live";
  if (ua->last == ub->first)
    return report(c, a, b, live, prog, ua->last, prog, ub->first, "uses both");
  for (uint32_t k = f->start[a + 1]; k-- > f->start[a];) {  // a's latest use that conflicts
    int32_t ia = f->acc[k].instr, ib = unordered_after(f, b, ia);
    if (ib < 0) continue;
    bool in_seq = f->seq[ia] < f->seq[ib];
    return report(c, a, b, live, prog, in_seq ? ia : ib, prog, in_seq ? ib : ia,
                  "may run at the same time or in the wrong order");
  }
  return report(c, a, b, live, prog, ua->last, prog, ub->first,
                "are in order, but the second does not start with a write that happens before "
                "the other uses of its buffer, so it may see what the first left");
}

// ---- the check --------------------------------------------------------------------------------

static bool check_pair(checker *c, uint32_t a, uint32_t b) {
  const buffer_facts *fa = &c->bufs[a], *fb = &c->bufs[b];
  const dhx_plan_buffer *xa = &c->r->buffers[a], *xb = &c->r->buffers[b];
  bool wa = fa->keep == KEEP_WINDOW, wb = fb->keep == KEEP_WINDOW;
  if ((wa && wb) || (wa && xb->kind != DHX_BUF_SCRATCH) || (wb && xa->kind != DHX_BUF_SCRATCH))
    return true;  // an alias of state it covers (a window overlaps nothing else but windows)
  if (fa->keep || fb->keep) {
    char why[DHX_NAME_MAX + 128];
    keep_text(c, fa->keep ? a : b, why, sizeof why);
    int32_t ia = fa->home >= 0 ? c->progs[fa->home].uses[a].first : -1;
    int32_t ib = fb->home >= 0 ? c->progs[fb->home].uses[b].first : -1;
    return report(c, a, b, why, fa->home, ia, fb->home, ib, "use them");
  }
  if (fa->home < 0 || fb->home < 0 || fa->home != fb->home) return true;  // never live together
  const program_facts *f = &c->progs[fa->home];
  const use *ua = &f->uses[a], *ub = &f->uses[b];
  if (used_before(f, ua, ub) || used_before(f, ub, ua)) return true;
  bool a_first = f->seq[ua->first] <= f->seq[ub->first];
  return report_race(c, fa->home, a_first ? a : b, a_first ? b : a);
}

// Calls visit(c, a, b) for every pair of buffers whose bytes overlap, until it returns false.
static bool each_overlap(checker *c, const uint32_t *ids, uint32_t n,
                         bool (*visit)(checker *, uint32_t, uint32_t)) {
  const dhx_plan_buffer *buf = c->r->buffers;
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = i + 1; j < n && buf[ids[j]].offset < end_of(&buf[ids[i]]); j++)
      if (!visit(c, ids[i], ids[j])) return false;
  return true;
}

static bool note_windows(checker *c, uint32_t a, uint32_t b) {
  note_window_overlap(c, a, b);
  note_window_overlap(c, b, a);
  return true;
}

static bool check_rank(checker *c) {
  uint32_t nb = c->r->nbuffers;
  c->bufs = xcalloc(nb, sizeof(buffer_facts));
  for (uint32_t b = 0; b < nb; b++) c->bufs[b].home = c->bufs[b].read_first = -1;
  for (int p = 0; p < DHX_PROG_COUNT; p++) analyze_program(c, p);
  uint32_t *ids = xcalloc(nb, sizeof(uint32_t));
  uint32_t n = sorted_buffers(c->r, ids);
  each_overlap(c, ids, n, note_windows);
  for (uint32_t b = 0; b < nb; b++) decide_keep(c, b);
  bool ok = each_overlap(c, ids, n, check_pair);
  free(ids);
  for (int p = 0; p < DHX_PROG_COUNT; p++) free_program(&c->progs[p]);
  free(c->bufs);
  return ok;
}

// The clocks have one entry per stream the format allows; the validator bounds the rest.
static bool streams_in_range(const dhx_plan_rank *r, uint32_t rank, char *err, size_t errlen) {
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++)
      if (r->programs[p].instrs[i].stream >= DHX_MAX_STREAMS) {
        snprintf(err, errlen, "rank %u: %s instruction %u is on stream %u (at most %d streams): "
                 "validate the plan first", rank, dhx_prog_name((uint32_t)p), i,
                 r->programs[p].instrs[i].stream, DHX_MAX_STREAMS);
        return false;
      }
  return true;
}

bool dhx_plan_verify_memory(const dhx_plan *plan, char *err, size_t errlen) {
  for (uint32_t r = 0; r < plan->nranks; r++) {
    if (plan->ranks[r].shares) continue;  // the owner's buffers and programs: checked there
    if (!streams_in_range(&plan->ranks[r], r, err, errlen)) return false;
    checker c = {.plan = plan, .rank = r, .r = &plan->ranks[r], .err = err, .errlen = errlen};
    if (!check_rank(&c)) return false;
  }
  return true;
}
