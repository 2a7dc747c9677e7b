// simulate_steady.c — a long step simulated from three short ones.
//
// With paired strands or a pipeline, MICRO holds all of a step's micro-batches, so a paper-scale
// step (64 or 128 micro-batches of 40 to 80 layers) is lowered into hundreds of thousands of
// instructions and simulated whole, which takes seconds. Past its warm-up such a schedule repeats
// itself: every P micro-batches (2 for paired strands, whose micro-batches alternate between two
// strands; pp for the interleaved schedule; 1 for 1F1B) the same blocks run in the same order
// with the same durations, so every figure of the step (its time, each rank's compute, exposed
// communication and idle time, the arena, the overlap search's modelled time) grows by the same
// amount per period. The step of M micro-batches is then simulated at M1, M1 + P and M1 + 2P
// micro-batches, and when each figure grows by the same amount from the first to the second as
// from the second to the third (within 1e-9 of the step), it is the third's plus
// (M − M1 − 2P) / P of those amounts. Otherwise the step is simulated whole, as it is for the W
// fold: its block order comes from unit costs (pipeline.c), and under real costs it settles into
// its period only after tens of micro-batches (llama_65b_a800x64: about 44).
#include "simulate_steady.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "cost.h"
#include "front.h"
#include "overlap_search.h"

#define TOLERANCE 1e-9  // of the step time: what "grows by the same amount" allows for rounding

// The micro-batches after which cfg's schedule repeats itself: 2 paired (the strands take
// micro-batches in turn), pp interleaved (blocks go in groups of pp), and both when both.
static int period_of(const dhx_config *cfg) {
  int p = cfg->strands_pair ? 2 : 1;
  if (cfg->pp > 1 && cfg->virtual_stages > 1) p = cfg->pp % p == 0 ? cfg->pp : p * cfg->pp;
  return p;
}

// The first of the three short steps: past the warm-up of every stage (at most 2·pp·chunks
// blocks), on the period's grid.
static int first_of(const dhx_config *cfg, int period) {
  int m = 2 * cfg->pp * cfg->virtual_stages + 2;
  return (m + period - 1) / period * period;
}

typedef struct short_step {
  int micro;
  dhx_step_figures fig;
  double events;  // the most events of one rank's MICRO
} short_step;

// cfg's step at `micro` micro-batches, lowered and simulated; false if anything went wrong
// (the whole step then reports it).
static bool simulate_at(const dhx_program *prog, const dhx_config *cfg, int micro,
                        unsigned flags, short_step *out) {
  dhx_config c = *cfg;
  c.global_batch = micro * c.micro_batch * c.dp;
  out->micro = micro;
  dhx_compiled compiled;
  bool ok = dhx_compile_for_simulation(prog, &c, &compiled) && dhx_diag.errors == 0;
  if (ok) {
    const dhx_plan *p = &compiled.plan;
    dhx_cost_model m = dhx_cost_model_of_cluster(&c, p);
    char err[2048];
    ok = dhx_simulate_compiled(&compiled, &c, &m, flags, &out->fig, err, sizeof err);
    out->events = 0;
    for (uint32_t r = 0; r < p->nranks; r++) {
      double e = p->ranks[r].programs[DHX_PROG_MICRO].nevents;
      if (e > out->events) out->events = e;
    }
  }
  dhx_compiled_free(&compiled);
  return ok;
}

// Whether a, b, c (at M1, M1 + P, M1 + 2P) grow evenly, within `scale` · TOLERANCE.
static bool even(double a, double b, double c, double scale) {
  return fabs((c - b) - (b - a)) <= TOLERANCE * scale;
}

// The value `periods` periods after c, growing by c - b per period.
static double ahead(double b, double c, double periods) { return c + periods * (c - b); }

// Whether every figure of the three short steps grows evenly.
static bool grows_evenly(const short_step *s) {
  const dhx_step_figures *a = &s[0].fig, *b = &s[1].fig, *c = &s[2].fig;
  double t = c->step_time_s;
  if (a->nranks != c->nranks || b->nranks != c->nranks) return false;
  bool ok = even(a->step_time_s, b->step_time_s, c->step_time_s, t) &&
            even(a->bubble_s, b->bubble_s, c->bubble_s, t) &&
            even(a->exposed_comm_s, b->exposed_comm_s, c->exposed_comm_s, t) &&
            even(a->compute_s, b->compute_s, c->compute_s, t) &&
            even(a->model_flops, b->model_flops, c->model_flops, c->model_flops) &&
            even(s[0].events, s[1].events, s[2].events, 0) &&
            c->peak_memory_bytes - b->peak_memory_bytes ==
                b->peak_memory_bytes - a->peak_memory_bytes &&
            c->act_region_bytes - b->act_region_bytes ==
                b->act_region_bytes - a->act_region_bytes &&
            c->live_act_bytes - b->live_act_bytes == b->live_act_bytes - a->live_act_bytes;
  for (int k = 0; k < 3 && ok; k++)
    ok = even(a->search_modelled_s[k], b->search_modelled_s[k], c->search_modelled_s[k],
              t + c->search_modelled_s[k]);
  for (uint32_t r = 0; r < c->nranks && ok; r++)
    ok = even(a->ranks[r].compute_s, b->ranks[r].compute_s, c->ranks[r].compute_s, t) &&
         even(a->ranks[r].exposed_comm_s, b->ranks[r].exposed_comm_s,
              c->ranks[r].exposed_comm_s, t) &&
         even(a->ranks[r].idle_s, b->ranks[r].idle_s, c->ranks[r].idle_s, t);
  return ok;
}

// The step `periods` periods after the third short step; takes over s[2]'s rank array.
static void extrapolate(short_step *s, double periods, dhx_step_figures *out) {
  const dhx_step_figures *b = &s[1].fig;
  dhx_step_figures *c = &s[2].fig;
  double tokens = c->tokens_per_s * c->step_time_s;  // of the third short step
  double grown = ahead(b->model_flops, c->model_flops, periods) / c->model_flops;
  *out = *c;
  out->step_time_s = ahead(b->step_time_s, c->step_time_s, periods);
  out->bubble_s = ahead(b->bubble_s, c->bubble_s, periods);
  out->exposed_comm_s = ahead(b->exposed_comm_s, c->exposed_comm_s, periods);
  out->compute_s = ahead(b->compute_s, c->compute_s, periods);
  out->model_flops = ahead(b->model_flops, c->model_flops, periods);
  out->peak_memory_bytes = c->peak_memory_bytes +
      (int64_t)periods * (c->peak_memory_bytes - b->peak_memory_bytes);
  out->act_region_bytes = c->act_region_bytes +
      (int64_t)periods * (c->act_region_bytes - b->act_region_bytes);
  out->live_act_bytes = c->live_act_bytes +
      (int64_t)periods * (c->live_act_bytes - b->live_act_bytes);
  for (int k = 0; k < 3; k++)
    out->search_modelled_s[k] = ahead(b->search_modelled_s[k], c->search_modelled_s[k], periods);
  for (uint32_t r = 0; r < c->nranks; r++) {
    dhx_rank_time *t = &out->ranks[r];
    t->compute_s = ahead(b->ranks[r].compute_s, c->ranks[r].compute_s, periods);
    t->exposed_comm_s = ahead(b->ranks[r].exposed_comm_s, c->ranks[r].exposed_comm_s, periods);
    t->idle_s = ahead(b->ranks[r].idle_s, c->ranks[r].idle_s, periods);
  }
  double step = out->step_time_s;
  out->mfu = step > 0 ? out->model_flops / ((double)out->nranks * out->peak_flops * step) : 0;
  out->tokens_per_s = step > 0 ? tokens * grown / step : 0;
  c->ranks = NULL;  // now out's
  for (int i = 0; i < 3; i++) out->steady_micro[i] = s[i].micro;
}

bool dhx_simulate_compiled(const dhx_compiled *c, const dhx_config *cfg,
                           const dhx_cost_model *m, unsigned flags, dhx_step_figures *fig,
                           char *err, size_t errlen) {
  double peak = cfg->cluster_cpu ? m->flops : cfg->gpu.flops;  // MFU against the datasheet peak
  bool ok = dhx_simulate_step(&c->plan, m, peak, flags, NULL, NULL, fig, err, errlen);
  fig->searched = cfg->strands_pair && cfg->pp == 1;  // compile.c: no search in a pipeline
  for (int k = 0; k < 3; k++) fig->search_modelled_s[k] = c->overlap_modelled_s[k];
  return ok;
}

bool dhx_simulate_steady(const dhx_program *prog, const dhx_config *cfg, unsigned flags,
                         dhx_step_figures *out) {
  if (!cfg->strands_pair && cfg->pp == 1) return false;  // MICRO is one micro-batch already
  if (cfg->fold == DHX_FOLD_W) return false;
  int micro = cfg->global_batch / (cfg->micro_batch * cfg->dp);
  int period = period_of(cfg), first = first_of(cfg, period);
  int last = first + 2 * period;
  if (micro <= last || (micro - first) % period != 0) return false;
  // Diagnostics of the short steps would repeat (or, with another batch, differ from) the whole
  // step's: they go nowhere, and any of them sends the step to be simulated whole.
  if (dhx_diag.errors || dhx_diag.warnings) return false;
  FILE *sink = tmpfile();
  if (!sink) return false;
  FILE *shown = dhx_diag.out;
  dhx_diag.out = sink;
  // Slide the three short steps a period on while they do not grow evenly yet (a planner's
  // arena settles a period or two after the schedule does), as long as they stay short.
  short_step s[3];
  memset(s, 0, sizeof s);
  bool ok = true;
  int spent = 0;  // micro-batches simulated so far: at most half the step's
  for (int i = 0; i < 3 && ok; i++) {
    ok = simulate_at(prog, cfg, first + i * period, flags, &s[i]);
    spent += first + i * period;
  }
  while (ok && !grows_evenly(s)) {
    last += period;
    spent += last;
    ok = last < micro && 2 * spent <= micro;
    dhx_step_figures_free(&s[0].fig);
    s[0] = s[1];
    s[1] = s[2];
    memset(&s[2], 0, sizeof s[2]);
    ok = ok && simulate_at(prog, cfg, last, flags, &s[2]);
  }
  ok = ok && dhx_diag.errors == 0 && dhx_diag.warnings == 0;
  dhx_diag.out = shown;
  dhx_diag.errors = dhx_diag.warnings = 0;  // the record of shown ones starts afresh
  fclose(sink);
  double periods = (double)(micro - last) / period;
  // The overlap search leaves regions unaligned once a program would pass its event budget,
  // which the short steps do not show.
  ok = ok && ahead(s[1].events, s[2].events, periods) <= DHX_OVL_EVENT_BUDGET;
  if (ok) extrapolate(s, periods, out);
  for (int i = 0; i < 3; i++) dhx_step_figures_free(&s[i].fig);
  return ok;
}
