// trace_emit.c — the simulated step as trace-event JSON, written as it goes (a plan of
// thousands of ranks makes millions of events; no tree is built).
#include "trace_emit.h"

#include <inttypes.h>
#include <stdlib.h>

#include "plan_util.h"
#include "simulate.h"
#include "step_sim.h"
#include "verify_ranks.h"

typedef struct trace {
  FILE *f;
  const dhx_plan *p;
  bool any;  // an event has been written (the next one needs a comma)
} trace;

static void next_event(trace *t) {
  fputs(t->any ? ",\n" : "\n", t->f);
  t->any = true;
}


static void metadata(trace *t, const char *what, uint32_t pid, int64_t tid, const char *name) {
  next_event(t);
  fprintf(t->f, "{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%u,", what, pid);
  if (tid >= 0) fprintf(t->f, "\"tid\":%" PRId64 ",", tid);
  fputs("\"args\":{\"name\":", t->f);
  dhx_json_string(t->f, name);
  fputs("}}", t->f);
}

// The streams rank r uses in any program, as a mask.
static uint32_t streams_of(const dhx_plan_rank *r) {
  uint32_t mask = 1;
  for (int g = 0; g < DHX_PROG_COUNT; g++)
    for (uint32_t i = 0; i < r->programs[g].ninstrs; i++)
      mask |= 1u << (r->programs[g].instrs[i].stream % DHX_MAX_STREAMS);
  return mask;
}

static void name_ranks_and_streams(trace *t) {
  char buf[32];
  for (uint32_t r = 0; r < t->p->nranks; r++) {
    snprintf(buf, sizeof buf, "rank %u", r);
    metadata(t, "process_name", r, -1, buf);
    next_event(t);
    fprintf(t->f, "{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%u,\"args\":"
            "{\"sort_index\":%u}}", r, r);
    uint32_t mask = streams_of(&t->p->ranks[r]);
    for (int s = 0; s < DHX_MAX_STREAMS; s++) {
      if (!(mask & (1u << s))) continue;
      snprintf(buf, sizeof buf, "stream %d", s);
      metadata(t, "thread_name", r, s, s == 0 ? "compute" : s == 1 ? "comm" : buf);
    }
  }
}

// One instruction as a complete event.
static void slice_event(trace *t, int prog, const dhx_sim_slice *sl, const char *run) {
  const dhx_plan_instr *in = &t->p->ranks[sl->rank].programs[prog].instrs[sl->instr];
  next_event(t);
  fputs("{\"name\":", t->f);
  dhx_json_string(t->f, dhx_instr_note(in)[0] ? dhx_instr_note(in) : dhx_op_name(in->op));
  fprintf(t->f, ",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
          "\"args\":{\"op\":\"%s\",\"program\":\"%s\",\"instr\":%u", dhx_op_name(in->op),
          sl->rank, sl->stream, sl->start * 1e6, (sl->end - sl->start) * 1e6, dhx_op_name(in->op),
          run, sl->instr);
  if (dhx_op_on_comm(in->op))
    fprintf(t->f, ",\"comm\":%d,\"bytes_sent\":%" PRId64,
            dhx_rank_comm(&t->p->ranks[sl->rank], in->comm), dhx_cost_bytes_sent(t->p, in));
  fputs("}}", t->f);
}

// One step of the flow that links a rendezvous: "s" on its first member, "t" on the middle
// ones, "f" on the last, each bound to the member's slice (at its middle, so that a slice
// ending at the same time on that stream is not taken instead).
static void flow_event(trace *t, int prog, const dhx_sim_slice *sl, int64_t id, uint32_t nth,
                       uint32_t n) {
  const dhx_plan_instr *in = &t->p->ranks[sl->rank].programs[prog].instrs[sl->instr];
  const char *ph = nth == 0 ? "s" : nth + 1 == n ? "f" : "t";
  next_event(t);
  fprintf(t->f, "{\"name\":\"%s\",\"cat\":\"rendezvous\",\"ph\":\"%s\",\"id\":%" PRId64
          ",\"pid\":%u,\"tid\":%u,\"ts\":%.3f%s}", dhx_op_name(in->op), ph, id, sl->rank,
          sl->stream, (sl->start + sl->end) / 2 * 1e6, nth ? ",\"bp\":\"e\"" : "");
}

// One program run: its slices, then the flows of its rendezvous (ids from `id_base` on).
static void emit_run(trace *t, int prog, const dhx_sim_result *res, const char *run,
                     int64_t id_base) {
  uint32_t *members = calloc(res->nmatches ? (size_t)res->nmatches : 1, sizeof(uint32_t));
  uint32_t *seen = calloc(res->nmatches ? (size_t)res->nmatches : 1, sizeof(uint32_t));
  if (!members || !seen) abort();
  for (size_t i = 0; i < res->nslices; i++) {
    slice_event(t, prog, &res->slices[i], run);
    if (res->slices[i].match >= 0) members[res->slices[i].match]++;
  }
  for (size_t i = 0; i < res->nslices; i++) {  // rank order: the flow runs from the lowest rank
    int64_t mt = res->slices[i].match;
    if (mt >= 0) flow_event(t, prog, &res->slices[i], id_base + mt, seen[mt]++, members[mt]);
  }
  free(members);
  free(seen);
}

// The model's constants, so a reader of the trace knows what produced its durations.
static void other_data(trace *t, const dhx_cost_model *m, double step) {
  fprintf(t->f, "\n],\"otherData\":{\"timeline\":\"dhxc --emit=trace: BEGIN, "
          "MICRO x accum_steps / micro_per_run, STEP, simulated\",\"step_us\":%.3f,\"flops\":%g,"
          "\"mem_bandwidth\":%g,\"launch_s\":%g,"
          "\"net_bandwidth\":%g,\"net_latency_s\":%g,\"intra_bandwidth\":%g,\"intra_latency_s\":%g,"
          "\"interference\":%g}}\n", step * 1e6, m->flops, m->mem_bandwidth, m->launch,
          m->net_bandwidth, m->net_latency, m->intra_bandwidth, m->intra_latency,
          m->interference);
}

typedef struct trace_runs {
  trace *t;
  int64_t id_base;  // flow ids of the next run start here
} trace_runs;

static void trace_run(void *ctx, int prog, const char *run, const dhx_sim_result *res) {
  trace_runs *tr = ctx;
  emit_run(tr->t, prog, res, run, tr->id_base);
  tr->id_base += res->nmatches;
}

bool dhx_trace_emit(const dhx_plan *p, const dhx_cost_model *m, FILE *f, char *err, size_t errlen) {
  if (!dhx_plan_verify_ranks(p, err, errlen)) return false;  // nothing half written
  trace t = {.f = f, .p = p};
  fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[", f);
  name_ranks_and_streams(&t);
  trace_runs tr = {.t = &t};
  dhx_step_figures fig;
  bool ok = dhx_simulate_step(p, m, 0, DHX_SIM_EVERY_RANK, trace_run, &tr, &fig, err, errlen);
  other_data(&t, m, fig.step_time_s);
  dhx_step_figures_free(&fig);
  return ok;
}
