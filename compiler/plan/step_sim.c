// step_sim.c — one training step in simulated time and the figures of dhxc --simulate.
#include "step_sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "live_activations.h"
#include "plan_util.h"

typedef struct span {
  double start, end;
} span;

static int span_cmp(const void *x, const void *y) {
  const span *a = x, *b = y;
  return a->start < b->start ? -1 : a->start > b->start;
}

// One rank's spans of one run, by stream: stream k's are s[first[k] .. first[k] + n[k]).
// A stream runs its instructions in order, so each stream's spans come sorted by start
// (checked; sorted here where they are not), and their union is a merge of DHX_MAX_STREAMS
// sorted lists: a paper-scale stage has a million spans, which a sort of them all made the
// slowest part of the step's accounting.
typedef struct stream_spans {
  span *s;
  size_t n[DHX_MAX_STREAMS], first[DHX_MAX_STREAMS];
  bool *is_compute;  // scratch for bucket: per slice
} stream_spans;

// The time covered by the union of the spans.
static double covered(stream_spans *ss) {
  size_t head[DHX_MAX_STREAMS], end[DHX_MAX_STREAMS];
  for (int k = 0; k < DHX_MAX_STREAMS; k++) {
    head[k] = ss->first[k];
    end[k] = ss->first[k] + ss->n[k];
    for (size_t i = head[k] + 1; i < end[k]; i++)
      if (ss->s[i].start < ss->s[i - 1].start) {
        qsort(ss->s + head[k], ss->n[k], sizeof(span), span_cmp);
        break;
      }
  }
  double total = 0, at = -1e300;
  for (;;) {
    int next = -1;
    for (int k = 0; k < DHX_MAX_STREAMS; k++)
      if (head[k] < end[k] && (next < 0 || ss->s[head[k]].start < ss->s[head[next]].start))
        next = k;
    if (next < 0) return total;
    const span *x = &ss->s[head[next]++];
    double from = x->start > at ? x->start : at;
    if (x->end > from) total += x->end - from;
    if (x->end > at) at = x->end;
  }
}

// Places rank slices [i, j) of a run into all by stream, and those of compute instructions
// also into compute.
static void bucket(const dhx_sim_slice *sl, size_t i, size_t j, const dhx_plan_program *pg,
                   stream_spans *all, stream_spans *compute) {
  bool *is_compute = compute->is_compute;
  memset(all->n, 0, sizeof all->n);
  memset(compute->n, 0, sizeof compute->n);
  for (size_t x = i; x < j; x++) {
    is_compute[x - i] = sl[x].end > sl[x].start && !dhx_op_on_comm(pg->instrs[sl[x].instr].op);
    if (sl[x].end <= sl[x].start) continue;
    all->n[sl[x].stream]++;
    compute->n[sl[x].stream] += is_compute[x - i];
  }
  size_t at_all = 0, at_compute = 0;
  for (int k = 0; k < DHX_MAX_STREAMS; k++) {
    all->first[k] = at_all;
    compute->first[k] = at_compute;
    at_all += all->n[k];
    at_compute += compute->n[k];
    all->n[k] = compute->n[k] = 0;
  }
  for (size_t x = i; x < j; x++) {
    if (sl[x].end <= sl[x].start) continue;
    uint32_t k = sl[x].stream;
    span s = {sl[x].start, sl[x].end};
    all->s[all->first[k] + all->n[k]++] = s;
    if (is_compute[x - i]) compute->s[compute->first[k] + compute->n[k]++] = s;
  }
}

// Adds one run's compute and exposed communication to each rank's figures (its slices are
// rank by rank; the runs of a rank do not overlap, so their sums add).
static void account_run(const dhx_plan *p, int prog, const dhx_sim_result *res,
                        dhx_rank_time *ranks, stream_spans *all, stream_spans *compute,
                        uint32_t watch, dhx_live_scratch *live_s) {
  size_t i = 0;
  while (i < res->nslices) {
    uint32_t r = res->slices[i].rank;
    int64_t live = r == watch ? dhx_live_activation_peak(p, prog, r, res, i, live_s) : 0;
    if (live > ranks[r].live_act_bytes) ranks[r].live_act_bytes = live;
    size_t j = i;
    while (j < res->nslices && res->slices[j].rank == r) j++;
    bucket(res->slices, i, j, &p->ranks[r].programs[prog], all, compute);
    double c = covered(compute);
    ranks[r].compute_s += c;
    ranks[r].exposed_comm_s += covered(all) - c;
    i = j;
  }
}

// Runs of MICRO per step: one per micro-batch, or one for all of them (a pipeline's).
static int64_t micro_runs(const dhx_plan *p) {
  int64_t accum = p->train.accum_steps > 0 ? p->train.accum_steps : 1;
  if (p->train.micro_per_run > 1)
    accum = (accum + p->train.micro_per_run - 1) / p->train.micro_per_run;
  return accum;
}

static size_t largest_program(const dhx_plan *p) {
  size_t n = 1;
  for (uint32_t r = 0; r < p->nranks; r++)
    for (int g = 0; g < DHX_PROG_COUNT; g++)
      if (p->ranks[r].programs[g].ninstrs > n) n = p->ranks[r].programs[g].ninstrs;
  return n;
}

// The rank whose arena is the largest (the first of them): the one whose live activations the
// figures report, since it sets the memory a layout needs.
static uint32_t largest_arena(const dhx_plan *p) {
  uint32_t best = 0;
  for (uint32_t r = 1; r < p->nranks; r++)
    if (p->ranks[r].arena_bytes > p->ranks[best].arena_bytes) best = r;
  return best;
}

static void figures(const dhx_plan *p, const dhx_cost_model *m, double peak_flops, double step,
                    dhx_step_figures *f) {
  f->step_time_s = step;
  uint32_t largest = largest_arena(p);
  f->live_act_bytes = f->ranks[largest].live_act_bytes;
  if (f->live_act_bytes) f->act_region_bytes = dhx_activation_region_bytes(&p->ranks[largest]);
  double tokens = (double)p->train.global_batch * (double)p->train.seq;
  f->model_flops = p->train.flops_per_token * tokens;
  f->peak_flops = peak_flops > 0 ? peak_flops : m->flops;
  f->mfu = step > 0 ? f->model_flops / ((double)p->nranks * f->peak_flops * step) : 0;
  f->tokens_per_s = step > 0 ? tokens / step : 0;
  for (uint32_t r = 0; r < p->nranks; r++) {
    dhx_rank_time *t = &f->ranks[r];
    t->idle_s = step - t->compute_s - t->exposed_comm_s;
    if (t->idle_s < 0) t->idle_s = 0;  // rounding
    f->compute_s += t->compute_s / p->nranks;
    f->exposed_comm_s += t->exposed_comm_s / p->nranks;
    f->bubble_s += t->idle_s / p->nranks;
    if (p->ranks[r].arena_bytes > f->peak_memory_bytes) f->peak_memory_bytes = p->ranks[r].arena_bytes;
  }
}

// Runs BEGIN, the step's MICRO runs and STEP of plan p with durations `dur`, adding each rank's
// compute and exposed communication into ranks[], and rank `watch`'s live activations (none:
// UINT32_MAX); *step is when the last rank ends.
static bool run_step(const dhx_plan *p, uint32_t watch, dhx_sim_duration_fn dur, void *dctx,
                     const dhx_sim_options *o, dhx_step_run_fn on_run, void *ctx,
                     dhx_rank_time *ranks, double *step, char *err, size_t errlen) {
  size_t cap = largest_program(p);
  stream_spans all = {.s = malloc((cap ? cap : 1) * sizeof(span))};
  stream_spans compute = {.s = malloc((cap ? cap : 1) * sizeof(span)),
                          .is_compute = malloc(cap ? cap : 1)};
  double *start = calloc(p->nranks ? p->nranks : 1, sizeof(double));
  if (!all.s || !compute.s || !compute.is_compute || !start) abort();
  int64_t accum = micro_runs(p);
  dhx_live_scratch live_s = {0};
  bool ok = true;
  for (int64_t k = -1; k <= accum && ok; k++) {  // -1: BEGIN, accum: STEP, between: MICRO
    int prog = k < 0 ? DHX_PROG_BEGIN : k == accum ? DHX_PROG_STEP : DHX_PROG_MICRO;
    char run[64];
    if (prog == DHX_PROG_MICRO) snprintf(run, sizeof run, "MICRO %" PRId64 "/%" PRId64, k + 1, accum);
    else snprintf(run, sizeof run, "%s", dhx_prog_name((uint32_t)prog));
    dhx_sim_result res;
    ok = dhx_simulate_with(p, prog, dur, dctx, o, start, &res, err, errlen);
    if (!ok) break;
    account_run(p, prog, &res, ranks, &all, &compute, watch, &live_s);
    if (on_run) on_run(ctx, prog, run, &res);
    for (uint32_t r = 0; r < p->nranks; r++) start[r] = res.rank_end[r];
    *step = res.makespan;
    dhx_sim_result_free(&res);
  }
  dhx_live_scratch_free(&live_s);
  free(all.s);
  free(compute.s);
  free(compute.is_compute);
  free(start);
  return ok;
}

// ---- one data-parallel replica for all ----------------------------------------------------------

// Where the data-parallel replicas of a plan run replica 0's programs (a simulation lowers them
// so), with the same durations, they move in lockstep: every collective among replicas has all
// its members arrive together. Simulating replica 0 alone then gives every rank's figures, dp
// times faster. `q` holds replica 0's ranks, with every communicator cut down to them.
typedef struct replica0 {
  dhx_plan q;
  const dhx_plan *p;
  const dhx_cost_model *m;
  uint32_t *orig;    // per rank of q: its rank in p
  int64_t *of;       // per rank of p: the rank of q it moves with
  dhx_plan_comm *comms;
} replica0;

static double replica0_duration(void *ctx, const dhx_plan *q, uint32_t rank, int prog,
                                const dhx_plan_instr *in) {
  (void)q;
  const replica0 *R = ctx;
  return dhx_cost_duration((void *)R->m, R->p, R->orig[rank], prog, in);
}

// Whether collectives take measured times, which the link hold can cut short; with the model's
// times the hold is the whole duration, so the simulator is spared asking.
static bool measured_comm(const dhx_cost_model *m) { return m->profile && m->profile_comm; }

static double replica0_link_hold(void *ctx, const dhx_plan *q, uint32_t rank, int prog,
                                 const dhx_plan_instr *in) {
  (void)q;
  const replica0 *R = ctx;
  return dhx_cost_link_hold((void *)R->m, R->p, R->orig[rank], prog, in);
}

static void replica0_free(replica0 *R) {
  for (uint32_t c = 0; R->comms && c < R->p->ncomms; c++) free(R->comms[c].ranks);
  free(R->comms);
  free(R->q.ranks);
  free(R->orig);
  free(R->of);
}

// A communicating instruction as its duration sees it: communicator, kind, counts, dtype,
// peer. Programs repeat a few dozen of these over their layers and micro-batches.
typedef struct comm_key {
  int32_t comm;
  uint32_t op, dtype, used;
  int64_t a1, a2;
} comm_key;

static comm_key key_of(const dhx_plan_instr *in) {
  int64_t a[3] = {0, 0, 0};
  for (uint32_t j = 1; j < 3 && j < in->nargs; j++)
    if (in->args[j].kind == DHX_ARG_I64) a[j] = in->args[j].i;
  return (comm_key){in->comm, in->op, in->dtype, 1, a[1], a[2]};
}

static uint64_t key_hash(const comm_key *k) {
  return ((uint64_t)(uint32_t)k->comm * 0x9E3779B97F4A7C15u) ^ (uint64_t)k->op * 31u ^
         (uint64_t)k->a1 * 0x100000001B3u ^ (uint64_t)k->a2 * 1099511628211u ^ k->dtype;
}

// One instruction of each distinct comm_key in a rank's programs, with its program: ranks that
// run those programs differ from that rank only in what these take on their communicators.
// Found once per represented rank, not once per rank it stands for (a paper model's replicas
// would otherwise walk a million instructions each).
typedef struct comm_set {
  const dhx_plan_instr **in;
  int *prog;
  uint32_t n;
} comm_set;

static void comm_set_free(comm_set *s) {
  free(s->in);
  free(s->prog);
  memset(s, 0, sizeof *s);
}

static void comm_set_of(const dhx_plan_rank *rank, comm_set *out) {
  uint32_t most = 0;  // communicating instructions: at most that many distinct keys
  for (int g = 0; g < DHX_PROG_COUNT; g++)
    for (uint32_t i = 0; i < rank->programs[g].ninstrs; i++)
      most += dhx_op_on_comm(rank->programs[g].instrs[i].op);
  uint32_t slots = 16, n = 0;
  while (slots < 2 * most) slots *= 2;  // at most half full
  comm_key *keys = calloc(slots, sizeof(comm_key));
  out->in = malloc(sizeof(*out->in) * (most ? most : 1));
  out->prog = malloc(sizeof(int) * (most ? most : 1));
  if (!keys || !out->in || !out->prog) abort();
  for (int g = 0; g < DHX_PROG_COUNT; g++) {
    const dhx_plan_program *pr = &rank->programs[g];
    for (uint32_t i = 0; i < pr->ninstrs; i++) {
      const dhx_plan_instr *in = &pr->instrs[i];
      if (!dhx_op_on_comm(in->op)) continue;
      comm_key k = key_of(in);
      uint32_t at = (uint32_t)(key_hash(&k) & (slots - 1));
      while (keys[at].used && memcmp(&keys[at], &k, sizeof k) != 0) at = (at + 1) & (slots - 1);
      if (keys[at].used) continue;  // seen
      keys[at] = k;
      out->in[n] = in;
      out->prog[n++] = g;
    }
  }
  free(keys);
  out->n = n;
}

// Whether rank r's programs are rank `rep`'s (whose distinct communicating instructions are
// `set`) and take the same time on its communicators.
static bool same_as(const dhx_plan *p, const dhx_cost_model *m, uint32_t r, uint32_t rep,
                    const comm_set *set) {
  for (int g = 0; g < DHX_PROG_COUNT; g++) {
    const dhx_plan_program *a = &p->ranks[r].programs[g], *b = &p->ranks[rep].programs[g];
    if (a->instrs != b->instrs || a->ninstrs != b->ninstrs) return false;
  }
  for (uint32_t j = 0; j < set->n; j++)
    if (dhx_cost_duration((void *)m, p, r, set->prog[j], set->in[j]) !=
        dhx_cost_duration((void *)m, p, rep, set->prog[j], set->in[j]))
      return false;
  return true;
}

// Whether rank r of p stands for the others in R: replica 0's, and with `tensor_too` only
// tensor rank 0 of each stage of it.
static bool represents(const dhx_plan_rank *r, bool tensor_too) {
  return r->dp_rank == 0 && (!tensor_too || r->tp_rank == 0);
}

// Builds R for p, or false where the replicas are not clones of replica 0 (then the whole plan
// is simulated). With `tensor_too`, the tensor ranks of each stage must also be clones of its
// tensor rank 0 (a simulation lowers them so: compile.c), which the same reasoning lets
// tensor rank 0 of replica 0 stand for: every tensor-parallel collective has its members
// arrive together, and the pipeline's transfers of tensor rank 0 are among themselves.
static bool replica0_of(const dhx_plan *p, const dhx_cost_model *m, bool tensor_too,
                        replica0 *R) {
  memset(R, 0, sizeof *R);
  R->p = p;
  R->m = m;
  if (m->profile || p->nranks < 2) return false;
  if (p->ranks[0].dp_size < 2 && (!tensor_too || p->ranks[0].tp_size < 2)) return false;
  R->of = malloc(sizeof(int64_t) * p->nranks);
  R->orig = malloc(sizeof(uint32_t) * p->nranks);
  if (!R->of || !R->orig) abort();
  uint32_t n = 0;
  for (uint32_t r = 0; r < p->nranks; r++) R->of[r] = -1;
  for (uint32_t r = 0; r < p->nranks; r++)
    if (represents(&p->ranks[r], tensor_too)) {
      R->of[r] = n;
      R->orig[n++] = r;
    }
  bool ok = true;
  comm_set *sets = calloc(n ? n : 1, sizeof(comm_set));  // per represented rank, when needed
  if (!sets) abort();
  for (uint32_t r = 0; r < p->nranks && ok; r++) {
    if (R->of[r] >= 0) continue;
    int64_t rep = -1;
    for (uint32_t k = 0; k < n && rep < 0; k++) {
      const dhx_plan_rank *a = &p->ranks[r], *b = &p->ranks[R->orig[k]];
      if ((tensor_too || a->tp_rank == b->tp_rank) && a->pp_rank == b->pp_rank) rep = k;
    }
    if (rep >= 0 && !sets[rep].in) comm_set_of(&p->ranks[R->orig[rep]], &sets[rep]);
    ok = rep >= 0 && same_as(p, m, r, R->orig[rep], &sets[rep]);
    if (ok) R->of[r] = rep;
  }
  for (uint32_t k = 0; k < n; k++) comm_set_free(&sets[k]);
  free(sets);
  R->comms = calloc(p->ncomms ? p->ncomms : 1, sizeof(dhx_plan_comm));
  if (!R->comms) abort();
  for (uint32_t c = 0; c < p->ncomms && ok; c++) {
    const dhx_plan_comm *pc = &p->comms[c];
    R->comms[c].ranks = malloc(sizeof(int32_t) * (pc->nranks ? pc->nranks : 1));
    if (!R->comms[c].ranks) abort();
    for (uint32_t j = 0; j < pc->nranks; j++) {
      uint32_t w = (uint32_t)pc->ranks[j];
      if (w < p->nranks && represents(&p->ranks[w], tensor_too))
        R->comms[c].ranks[R->comms[c].nranks++] = (int32_t)R->of[w];
    }
  }
  // A transfer names its peer by place in the communicator: only where replica 0 holds all of
  // a communicator do those places stay.
  for (uint32_t k = 0; k < n && ok; k++)
    for (int g = 0; g < DHX_PROG_COUNT && ok; g++) {
      const dhx_plan_program *pr = &p->ranks[R->orig[k]].programs[g];
      for (uint32_t i = 0; i < pr->ninstrs && ok; i++) {
        uint32_t op = pr->instrs[i].op;
        if (op != DHX_OP_SEND && op != DHX_OP_RECV) continue;
        int32_t c = dhx_rank_comm(&p->ranks[R->orig[k]], pr->instrs[i].comm);
        ok = c >= 0 && (uint32_t)c < p->ncomms && R->comms[c].nranks == p->comms[c].nranks;
      }
    }
  if (!ok) {
    replica0_free(R);
    return false;
  }
  R->q = *p;
  R->q.nranks = n;
  R->q.ranks = malloc(sizeof(dhx_plan_rank) * n);
  if (!R->q.ranks) abort();
  for (uint32_t k = 0; k < n; k++) R->q.ranks[k] = p->ranks[R->orig[k]];
  R->q.comms = R->comms;
  return true;
}

bool dhx_simulate_step(const dhx_plan *p, const dhx_cost_model *m, double peak_flops,
                       unsigned flags, dhx_step_run_fn on_run, void *ctx,
                       dhx_step_figures *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->nranks = p->nranks;
  out->ranks = calloc(p->nranks ? p->nranks : 1, sizeof(dhx_rank_time));
  if (!out->ranks) abort();
  double step = 0;
  replica0 R;
  bool live = flags & DHX_SIM_LIVE_ACTIVATIONS;
  if (!(flags & DHX_SIM_EVERY_RANK) && !on_run &&  // a timeline wants every rank's
      (replica0_of(p, m, true, &R) || replica0_of(p, m, false, &R))) {
    dhx_rank_time *ranks = calloc(R.q.nranks, sizeof(dhx_rank_time));
    if (!ranks) abort();
    uint32_t watch = live ? (uint32_t)R.of[largest_arena(p)] : UINT32_MAX;
    dhx_sim_options o = {.interference = m->interference,
                         .link_hold = measured_comm(m) ? replica0_link_hold : NULL};
    bool ok = run_step(&R.q, watch, replica0_duration, &R, &o, NULL, NULL, ranks,
                       &step, err, errlen);
    if (ok)
      for (uint32_t r = 0; r < p->nranks; r++) out->ranks[r] = ranks[R.of[r]];
    free(ranks);
    replica0_free(&R);
    if (ok) {
      figures(p, m, peak_flops, step, out);
      return true;
    }
    memset(out->ranks, 0, sizeof(dhx_rank_time) * p->nranks);  // the whole plan names the ranks
  }
  dhx_sim_options o = {.interference = m->interference,
                       .link_hold = measured_comm(m) ? dhx_cost_link_hold : NULL};
  bool ok = run_step(p, live ? largest_arena(p) : UINT32_MAX, dhx_cost_duration, (void *)m,
                     &o, on_run, ctx, out->ranks, &step, err, errlen);
  if (ok) figures(p, m, peak_flops, step, out);
  return ok;
}

void dhx_step_figures_free(dhx_step_figures *f) {
  free(f->ranks);
  memset(f, 0, sizeof *f);
}

void dhx_step_figures_json(const dhx_step_figures *f, FILE *out) {
  fprintf(out, "{\"step_time_s\":%.9g,\"mfu\":%.6g,\"bubble_s\":%.9g,\"exposed_comm_s\":%.9g,"
          "\"compute_s\":%.9g,\"peak_memory_bytes\":%" PRId64 ",", f->step_time_s, f->mfu,
          f->bubble_s, f->exposed_comm_s, f->compute_s, f->peak_memory_bytes);
  if (f->act_region_bytes)
    fprintf(out, "\"live_activation_bytes\":%" PRId64 ",\"activation_region_bytes\":%" PRId64 ",",
            f->live_act_bytes, f->act_region_bytes);
  fprintf(out, "\"tokens_per_s\":%.6g,\"model_flops_per_step\":%.6g,\"peak_flops_per_rank\":%.6g,"
          "\"ranks\":%u,\"per_rank\":[", f->tokens_per_s, f->model_flops, f->peak_flops,
          f->nranks);
  for (uint32_t r = 0; r < f->nranks; r++)
    fprintf(out, "%s{\"compute_s\":%.9g,\"exposed_comm_s\":%.9g,\"idle_s\":%.9g}", r ? "," : "",
            f->ranks[r].compute_s, f->ranks[r].exposed_comm_s, f->ranks[r].idle_s);
  fputs("]", out);
  if (f->searched)
    fprintf(out, ",\"overlap_search_modelled_s\":{\"dp\":%.9g,\"greedy\":%.9g,\"none\":%.9g}",
            f->search_modelled_s[0], f->search_modelled_s[1], f->search_modelled_s[2]);
  if (f->steady_micro[0])
    fprintf(out, ",\"extrapolated_from_micro_batches\":[%d,%d,%d]", f->steady_micro[0],
            f->steady_micro[1], f->steady_micro[2]);
  fputs("}\n", out);
}

void dhx_step_figures_print(const dhx_step_figures *f, FILE *out) {
  double s = f->step_time_s > 0 ? f->step_time_s : 1;
  fprintf(out, "simulated step of %u ranks: %.4g s, %.4g tokens/s, MFU %.1f%%\n", f->nranks,
          f->step_time_s, f->tokens_per_s, 100 * f->mfu);
  fprintf(out, "  per rank (mean): compute %.4g s (%.1f%%), exposed communication %.4g s "
          "(%.1f%%), idle (bubble) %.4g s (%.1f%%)\n", f->compute_s, 100 * f->compute_s / s,
          f->exposed_comm_s, 100 * f->exposed_comm_s / s, f->bubble_s, 100 * f->bubble_s / s);
  fprintf(out, "  peak memory: %.4g GiB (the largest arena over ranks)\n",
          (double)f->peak_memory_bytes / (1024.0 * 1024 * 1024));
  if (f->act_region_bytes)
    fprintf(out, "  activations: %.4g GiB live at once in the simulated order, %.4g GiB of arena "
            "laid out for them (the rank with the largest arena)\n",
            (double)f->live_act_bytes / (1024.0 * 1024 * 1024),
            (double)f->act_region_bytes / (1024.0 * 1024 * 1024));
  if (f->searched)
    fprintf(out, "  overlap search, modelled time of the paired regions: dp %.4g s, greedy %.4g s, "
            "none %.4g s\n", f->search_modelled_s[0], f->search_modelled_s[1],
            f->search_modelled_s[2]);
  if (f->steady_micro[0])
    fprintf(out, "  extrapolated from steps of %d, %d and %d micro-batches, whose figures grow "
            "evenly (--simulate-whole-step simulates them all)\n", f->steady_micro[0],
            f->steady_micro[1], f->steady_micro[2]);
}
