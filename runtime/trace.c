// trace.c — dhxrun --trace: records when every instruction of a window of steps ran, per stream,
// and writes the whole job's timeline as one Chrome trace-event file (trace.h).
//
// The file: pid = rank (process_name "rank N"), tid = stream (thread_name "compute" for 0,
// "comm" for 1), one complete event ("ph":"X") per executed instruction, named by its note,
// with the program (begin, micro, step, eval) as category. The members of each collective and
// each send/recv pair are linked by a flow (the lowest world rank "s", every other member "f"),
// with an id that every member computes alone: the n-th collective on (communicator, stream),
// or the n-th transfer from rank A to rank B on it, within a step, is the same rendezvous on
// every member (the plan validator proves they pair up in this order).
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhxrt.h"

typedef struct trace_stream {
  dhx_trace_rec *recs;  // written only by this stream's thread
  int64_t n, cap, dropped;
  uint32_t *seq;        // rendezvous counters of this step; layout: trace.seq_base
} trace_stream;

struct dhx_trace {
  const dhx_plan *plan;
  int rank;
  int64_t from, to;      // steps recorded, 0-based, [from, to)
  // The program run now: set by dhx_trace_program before the run starts, read by the streams.
  int64_t step;          // 0-based; first_step - 1 before the first BEGIN
  int32_t runs[DHX_PROG_COUNT];  // runs of each program in this step
  int32_t micro;
  uint8_t prog;
  bool started;          // the origin is set
  int64_t origin;        // dhx_trace_clock() after the barrier at the window's start
  // Counters per communicator c, from seq_base[c]: one for its collectives, then one per
  // member for sends to it, then one per member for receives from it.
  uint32_t *seq_base;
  uint32_t nseq;
  trace_stream streams[DHX_MAX_STREAMS];
};

// ---- sizing -------------------------------------------------------------------------------------

// How many times each program runs per step on this rank, at most (train.c's loop).
static void runs_per_step(const dhx_plan *plan, const dhx_plan_rank *r, bool has_val,
                          int64_t runs[DHX_PROG_COUNT]) {
  const dhx_plan_train *t = &plan->train;
  runs[DHX_PROG_BEGIN] = 1;
  runs[DHX_PROG_MICRO] = t->accum_steps;
  runs[DHX_PROG_STEP] = 1;
  bool eval = has_val && t->val_every > 0 && t->val_batches > 0;
  int64_t dp = r->dp_size ? r->dp_size : 1;
  runs[DHX_PROG_EVAL] = eval ? (t->val_batches + dp - 1) / dp : 0;
}

// Records rank r writes per step, on all its streams.
static int64_t recs_per_step(const dhx_plan *plan, uint32_t rank, bool has_val) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int64_t runs[DHX_PROG_COUNT], n = 0;
  runs_per_step(plan, r, has_val, runs);
  for (int p = 0; p < DHX_PROG_COUNT; p++) n += runs[p] * r->programs[p].ninstrs;
  return n;
}

// The same per stream, for this rank's buffers.
static void stream_recs_per_step(const dhx_plan *plan, uint32_t rank, bool has_val,
                                 int64_t n[DHX_MAX_STREAMS]) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int64_t runs[DHX_PROG_COUNT];
  runs_per_step(plan, r, has_val, runs);
  memset(n, 0, DHX_MAX_STREAMS * sizeof *n);
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++)
      n[r->programs[p].instrs[i].stream] += runs[p];
}

// Resolves the 1-based inclusive window against the steps this run takes.
static bool resolve_window(dhx_trace *t, int64_t first, int64_t last, int64_t first_step,
                           int64_t end_step, char *err, size_t errlen) {
  if (first == 0) {
    t->from = first_step;
    t->to = first_step + 2 < end_step ? first_step + 2 : end_step;
    return true;
  }
  if (first - 1 >= end_step || last <= first_step) {
    snprintf(err, errlen, "--trace-steps %" PRId64 ":%" PRId64 " holds none of the steps this run "
             "takes (%" PRId64 "..%" PRId64 ")", first, last, first_step + 1, end_step);
    return false;
  }
  t->from = first - 1 > first_step ? first - 1 : first_step;
  t->to = last < end_step ? last : end_step;
  return true;
}

static bool alloc_seq(dhx_trace *t) {
  const dhx_plan *plan = t->plan;
  t->seq_base = calloc(plan->ncomms ? plan->ncomms : 1, sizeof *t->seq_base);
  if (!t->seq_base) return false;
  for (uint32_t c = 0; c < plan->ncomms; c++) {
    t->seq_base[c] = t->nseq;
    t->nseq += 1 + 2 * plan->comms[c].nranks;
  }
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
    if (!(t->streams[s].seq = calloc(t->nseq ? t->nseq : 1, sizeof(uint32_t)))) return false;
  return true;
}

dhx_trace *dhx_trace_new(const dhx_plan *plan, int world_rank, int64_t first, int64_t last,
                         int64_t first_step, int64_t end_step, bool has_val, char *err,
                         size_t errlen) {
  dhx_trace *t = calloc(1, sizeof *t);
  if (!t) goto nomem;
  t->plan = plan;
  t->rank = world_rank;
  t->step = first_step - 1;
  if (!resolve_window(t, first, last, first_step, end_step, err, errlen)) {
    dhx_trace_free(t);
    return NULL;
  }
  // Every rank sizes the whole job, so they all refuse an oversized window together.
  int64_t steps = t->to - t->from;
  double total = 0;  // a double: a long window of a large job must not overflow
  for (uint32_t r = 0; r < plan->nranks; r++)
    total += (double)steps * (double)recs_per_step(plan, r, has_val);
  if (total * (double)sizeof(dhx_trace_rec) > (double)DHX_TRACE_MAX_BYTES) {
    snprintf(err, errlen, "--trace-steps: steps %" PRId64 "..%" PRId64 " would record %.0f "
             "instructions (%.0f MiB); trace fewer steps (at most %lld MiB)", t->from + 1, t->to,
             total, total * (double)sizeof(dhx_trace_rec) / (1 << 20), DHX_TRACE_MAX_BYTES >> 20);
    dhx_trace_free(t);
    return NULL;
  }
  int64_t per_step[DHX_MAX_STREAMS];
  stream_recs_per_step(plan, (uint32_t)world_rank, has_val, per_step);
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
    trace_stream *ts = &t->streams[s];
    ts->cap = steps * per_step[s];
    if (ts->cap && !(ts->recs = malloc((size_t)ts->cap * sizeof *ts->recs))) goto nomem;
  }
  if (!alloc_seq(t)) goto nomem;
  return t;
nomem:
  dhx_trace_free(t);
  snprintf(err, errlen, "--trace: out of memory for the trace buffers");
  return NULL;
}

void dhx_trace_free(dhx_trace *t) {
  if (!t) return;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
    free(t->streams[s].recs);
    free(t->streams[s].seq);
  }
  free(t->seq_base);
  free(t);
}

// ---- recording ----------------------------------------------------------------------------------

static int program_kind(const dhx_trace *t, const dhx_plan_program *prog) {
  const dhx_plan_rank *r = &t->plan->ranks[t->rank];
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    if (prog == &r->programs[p]) return p;
  return -1;
}

bool dhx_trace_program(dhx_trace *t, const dhx_plan_program *prog) {
  int kind = program_kind(t, prog);
  if (kind < 0) return false;
  if (kind == DHX_PROG_BEGIN) {
    t->step++;
    memset(t->runs, 0, sizeof t->runs);
  }
  bool on = t->step >= t->from && t->step < t->to;
  if (on && kind == DHX_PROG_BEGIN)  // rendezvous are numbered within a step
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
      memset(t->streams[s].seq, 0, t->nseq * sizeof(uint32_t));
  if (on && !t->started) {
    // Every rank is here at BEGIN of the same step: t = 0 is the same moment on every rank,
    // give or take the barrier's exit skew.
    MPI_Barrier(MPI_COMM_WORLD);
    t->origin = dhx_trace_clock();
    t->started = true;
  }
  t->prog = (uint8_t)kind;
  t->micro = kind == DHX_PROG_MICRO || kind == DHX_PROG_EVAL ? t->runs[kind] : -1;
  t->runs[kind]++;
  return on;
}

static int32_t next_seq(dhx_trace *t, trace_stream *ts, const dhx_plan_instr *in) {
  int32_t comm = dhx_rank_comm(&t->plan->ranks[t->rank], in->comm);
  uint32_t *c = ts->seq + t->seq_base[comm];
  uint32_t members = t->plan->comms[comm].nranks;
  if (in->op == DHX_OP_SEND) c += 1 + in->args[2].i;
  else if (in->op == DHX_OP_RECV) c += 1 + members + in->args[2].i;
  return (int32_t)(*c)++;
}

void dhx_trace_add(dhx_trace *t, uint32_t stream, const dhx_plan_instr *in, uint32_t index,
                   int64_t t0) {
  int64_t t1 = dhx_trace_clock();
  trace_stream *ts = &t->streams[stream];
  if (ts->n == ts->cap) {  // cannot happen with the sizing above; counted, never overrun
    ts->dropped++;
    return;
  }
  ts->recs[ts->n++] = (dhx_trace_rec){
      .t0 = t0 - t->origin, .t1 = t1 - t->origin, .step = t->step, .instr = (int32_t)index,
      .micro = t->micro, .seq = dhx_op_on_comm(in->op) ? next_seq(t, ts, in) : -1,
      .prog = t->prog, .stream = (uint8_t)stream};
}

// ---- flow ids -----------------------------------------------------------------------------------

static uint64_t mix(uint64_t h, uint64_t x) {  // splitmix64 of h ^ x
  uint64_t z = (h ^ x) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The flow id of a rendezvous, the same on every member: `src` / `dst` are the world ranks of a
// send / recv pair, -1 for collectives. Below 2^53, so that JSON readers keep it exact.
static uint64_t flow_id(int32_t comm, uint32_t stream, int32_t src, int32_t dst, int32_t seq,
                       int64_t step) {
  uint64_t h = mix(0x64687874726163ULL, (uint64_t)(uint32_t)comm);
  h = mix(h, stream);
  h = mix(h, (uint64_t)(uint32_t)src);
  h = mix(h, (uint64_t)(uint32_t)dst);
  h = mix(h, (uint64_t)(uint32_t)seq);
  h = mix(h, (uint64_t)step);
  return h & ((1ULL << 53) - 1);
}

// ---- the JSON file ------------------------------------------------------------------------------


static const char *prog_category(uint32_t prog) {
  static const char *names[] = {"begin", "micro", "step", "eval"};
  return prog < DHX_PROG_COUNT ? names[prog] : "?";
}

// Bytes of the region a communication op exchanges (its element count times the element size).
static int64_t comm_bytes(const dhx_plan_instr *in) {
  return in->args[dhx_op_count_arg(in->op)].i * dhx_dtype_size(in->dtype);
}

static uint32_t rank_streams(const dhx_plan_rank *r) {
  uint32_t n = 1;
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    if (r->programs[p].nstreams > n) n = r->programs[p].nstreams;
  return n;
}

// ",\n" between events: the list is written one event at a time.
static void separate(FILE *f, bool *first) {
  if (!*first) fputs(",\n", f);
  *first = false;
}

static void stream_name(uint32_t s, char *out, size_t len) {
  if (s == 0) snprintf(out, len, "compute");
  else if (s == 1) snprintf(out, len, "comm");
  else snprintf(out, len, "stream %u", s);
}

static void write_metadata(FILE *f, const dhx_plan *plan, bool *first) {
  for (uint32_t r = 0; r < plan->nranks; r++) {
    separate(f, first);
    fprintf(f, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%u,\"args\":{\"name\":"
            "\"rank %u\"}},\n{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":%u,"
            "\"args\":{\"sort_index\":%u}}", r, r, r, r);
    for (uint32_t s = 0; s < rank_streams(&plan->ranks[r]); s++) {
      char name[32];
      stream_name(s, name, sizeof name);
      fprintf(f, ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%u,\"tid\":%u,\"args\":"
              "{\"name\":\"%s\"}},\n{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":%u,"
              "\"tid\":%u,\"args\":{\"sort_index\":%u}}", r, s, name, r, s, s);
    }
  }
}

// The flow end of a communication op: "s" on the lowest world rank among its members, "f"
// (bound to the enclosing slice) on the others. Placed mid-slice so it binds to this slice.
static void write_flow(FILE *f, const dhx_plan *plan, uint32_t rank, const dhx_trace_rec *r,
                       const dhx_plan_instr *in) {
  const dhx_plan_comm *c = &plan->comms[dhx_rank_comm(&plan->ranks[rank], in->comm)];
  int32_t lowest = c->ranks[0];
  if (in->op == DHX_OP_SEND || in->op == DHX_OP_RECV) {
    int32_t peer = c->ranks[in->args[2].i];
    lowest = peer < (int32_t)rank ? peer : (int32_t)rank;
  }
  uint64_t id = dhx_trace_rendezvous(plan, rank, r);
  bool start = (int32_t)rank == lowest;
  fprintf(f, ",\n{\"ph\":\"%s\",%s\"id\":%" PRIu64 ",\"name\":\"rendezvous\",\"cat\":\"comm\","
          "\"pid\":%u,\"tid\":%u,\"ts\":%.3f}", start ? "s" : "f", start ? "" : "\"bp\":\"e\",",
          id, rank, r->stream, (double)(r->t0 + r->t1) / 2e3);
}

static void write_slice(FILE *f, const dhx_plan *plan, uint32_t rank, const dhx_trace_rec *r) {
  const dhx_plan_instr *in = &plan->ranks[rank].programs[r->prog].instrs[r->instr];
  fprintf(f, "{\"ph\":\"X\",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,\"name\":", rank,
          r->stream, (double)r->t0 / 1e3, (double)(r->t1 - r->t0) / 1e3);
  dhx_json_string(f, dhx_instr_note(in)[0] ? dhx_instr_note(in) : dhx_op_name(in->op));
  fprintf(f, ",\"cat\":\"%s\",\"args\":{\"op\":\"%s\",\"step\":%" PRId64, prog_category(r->prog),
          dhx_op_name(in->op), r->step + 1);
  if (r->micro >= 0) fprintf(f, ",\"micro\":%d", r->micro);
  fprintf(f, ",\"instr\":%d", r->instr);
  if (in->op == DHX_OP_KERNEL) {
    fputs(",\"kernel\":", f);
    dhx_json_string(f, plan->kernels[in->kernel].name);
  }
  if (dhx_op_on_comm(in->op))
    fprintf(f, ",\"comm\":%d,\"bytes\":%" PRId64, dhx_rank_comm(&plan->ranks[rank], in->comm),
            comm_bytes(in));
  fputs("}}", f);
  if (r->seq >= 0) write_flow(f, plan, rank, r, in);
}

static void write_json(FILE *f, const dhx_trace *t, const dhx_trace_rec *recs,
                       const int *counts, int64_t dropped) {
  fprintf(f, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"writer\":\"dhxrun --trace\","
          "\"steps\":\"%" PRId64 "..%" PRId64 "\",\"clock\":\"CLOCK_MONOTONIC, microseconds since "
          "a barrier of all ranks at the start of step %" PRId64 "\",\"dropped\":%" PRId64 "},\n"
          "\"traceEvents\":[\n", t->from + 1, t->to, t->from + 1, dropped);
  bool first = true;
  write_metadata(f, t->plan, &first);
  for (uint32_t rank = 0; rank < t->plan->nranks; rank++) {
    for (int i = 0; i < counts[rank]; i++, recs++) {
      separate(f, &first);
      write_slice(f, t->plan, rank, recs);
    }
  }
  fputs("\n]}\n", f);
}

static bool write_file(const char *path, const dhx_trace *t, const dhx_trace_rec *recs,
                       const int *counts, int64_t dropped, char *err, size_t errlen) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) {
    snprintf(err, errlen, "%s: cannot write the trace file", tmp);
    return false;
  }
  write_json(f, t, recs, counts, dropped);
  bool ok = !ferror(f);
  ok &= fclose(f) == 0;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    snprintf(err, errlen, "%s: cannot write the trace file", path);
    return false;
  }
  return true;
}

// This rank's records, streams one after the other.
static dhx_trace_rec *local_records(const dhx_trace *t, int64_t *n, int64_t *dropped) {
  *n = *dropped = 0;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
    *n += t->streams[s].n;
    *dropped += t->streams[s].dropped;
  }
  dhx_trace_rec *all = malloc((size_t)(*n ? *n : 1) * sizeof *all), *at = all;
  if (!all) MPI_Abort(MPI_COMM_WORLD, 1);
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
    if (!t->streams[s].n) continue;  // recs is NULL for a stream this rank never uses
    memcpy(at, t->streams[s].recs, (size_t)t->streams[s].n * sizeof *at);
    at += t->streams[s].n;
  }
  return all;
}

dhx_trace_rec *dhx_trace_gather(dhx_trace *t, int **counts, int64_t *dropped) {
  int64_t n = 0, mine_dropped = 0;
  dhx_trace_rec *mine = local_records(t, &n, &mine_dropped);
  int bytes = (int)(n * (int64_t)sizeof *mine), nranks = (int)t->plan->nranks;  // < 1 GiB in all
  int *c = t->rank == 0 ? calloc((size_t)nranks, sizeof *c) : NULL;
  int *displs = t->rank == 0 ? calloc((size_t)nranks, sizeof *displs) : NULL;
  if (t->rank == 0 && (!c || !displs)) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Gather(&bytes, 1, MPI_INT, c, 1, MPI_INT, 0, MPI_COMM_WORLD);
  *dropped = 0;
  MPI_Reduce(&mine_dropped, dropped, 1, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  int64_t sum = 0;
  for (int r = 0; t->rank == 0 && r < nranks; r++) {
    displs[r] = (int)sum;
    sum += c[r];
  }
  uint8_t *all = t->rank == 0 ? malloc((size_t)(sum ? sum : 1)) : NULL;
  if (t->rank == 0 && !all) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Gatherv(mine, bytes, MPI_BYTE, all, c, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
  free(mine);
  free(displs);
  for (int r = 0; t->rank == 0 && r < nranks; r++) c[r] /= (int)sizeof *mine;
  *counts = c;
  return (dhx_trace_rec *)all;
}

void dhx_trace_steps(const dhx_trace *t, int64_t *from, int64_t *to) {
  *from = t->from;
  *to = t->to;
}

uint64_t dhx_trace_rendezvous(const dhx_plan *plan, uint32_t rank, const dhx_trace_rec *r) {
  const dhx_plan_instr *in = &plan->ranks[rank].programs[r->prog].instrs[r->instr];
  int32_t comm = dhx_rank_comm(&plan->ranks[rank], in->comm);
  int32_t src = -1, dst = -1;
  if (in->op == DHX_OP_SEND || in->op == DHX_OP_RECV) {
    int32_t peer = plan->comms[comm].ranks[in->args[2].i];
    src = in->op == DHX_OP_SEND ? (int32_t)rank : peer;
    dst = in->op == DHX_OP_SEND ? peer : (int32_t)rank;
  }
  return flow_id(comm, r->stream, src, dst, r->seq, r->step);
}

bool dhx_trace_write(dhx_trace *t, const char *path, char *err, size_t errlen) {
  int *counts = NULL;
  int64_t dropped = 0;
  dhx_trace_rec *all = dhx_trace_gather(t, &counts, &dropped);
  bool ok = true;
  if (t->rank == 0) {
    if (dropped)
      fprintf(stderr, "dhxrun: warning: the trace lost %" PRId64 " events (buffers too small)\n",
              dropped);
    ok = write_file(path, t, all, counts, dropped, err, errlen);
  }
  free(all);
  free(counts);
  return ok;
}
