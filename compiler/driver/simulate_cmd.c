// simulate_cmd.c — dhxc --simulate: a training step of the plan under the cluster's cost model.
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compile.h"
#include "cost.h"
#include "driver.h"
#include "simulate_steady.h"
#include "step_sim.h"
#include "timeline_svg.h"
#include "timing.h"
#include "trace_emit.h"

// One line on stderr for a feature the simulation leaves out: where it was asked for, and why.
static void leave_out(const dhx_loc *at, const char *what) {
  if (at->file) fprintf(stderr, "%s:%d:%d: ", at->file, at->line, at->col);
  fprintf(stderr, "note: simulating without %s (not lowered yet)\n", what);
}

// Whether the compiler would refuse cfg's strands block (simulated as a CPU f32 plan).
static bool strands_unlowered(const dhx_config *cfg) {
  dhx_config c = *cfg;
  c.cluster_cpu = true;
  c.precision = DHX_PREC_F32;
  c.qwd_bits = 0;
  c.tlq_hadamard = 32;
  c.offload_optimizer = c.seq_adaptive = false;
  const dhx_loc *at;
  char what[160];
  return dhx_unlowered(&c, &at, what, sizeof what) != NULL;
}

// cfg without the features this build cannot lower yet, each reported; a GPU cluster and bf16
// stay (dhx_compile_for_simulation lowers them as the f32 plan).
static dhx_config without_unlowered(const dhx_config *cfg) {
  dhx_config c = *cfg;
  if (c.strands_pair && strands_unlowered(&c)) {
    leave_out(&c.strands_loc, "strand interleaving (the strands block)");
    c.strands_pair = false;
  }
  if (c.tlq_intra && c.tlq_hadamard != 0 && c.tlq_hadamard != 32) {
    leave_out(&c.tlq_loc, "tlq's Hadamard transform of this size (timed with blocks of 32)");
    c.tlq_hadamard = 32;  // the same traffic and about the same work
  }
  if (c.offload_optimizer) {
    leave_out(&c.offload_loc, "optimizer offload (the offload block)");
    c.offload_optimizer = false;
  }
  if (c.seq_adaptive) {
    leave_out(&c.sequence_loc, "length-adaptive sequence parallelism (the sequence block)");
    c.seq_adaptive = false;
  }
  // Paired strands stay where this build lowers them (what is left refused is theirs).
  dhx_config lowered = c;
  lowered.cluster_cpu = true;
  lowered.precision = DHX_PREC_F32;
  char buf[160];
  const dhx_loc *at;
  if (c.strands_pair && dhx_unlowered(&lowered, &at, buf, sizeof buf)) {
    leave_out(&c.strands_loc, "strand interleaving (the strands block)");
    c.strands_pair = false;
  }
  return c;
}

static bool write_trace(const dhx_plan *p, const dhx_cost_model *m, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) {
    dhx_error("--simulate-trace: cannot write '%s'", path);
    return false;
  }
  char err[2048];
  bool ok = dhx_trace_emit(p, m, f, err, sizeof err);
  if (fclose(f) != 0 || !ok) {
    dhx_error("--simulate-trace '%s': %s", path, ok ? "write failed" : err);
    return false;
  }
  return true;
}

// The timeline again, drawn as it runs (the first run gave the step time the picture scales to).
static bool write_svg(const dhx_plan *p, const dhx_cost_model *m, double step, const char *title,
                      const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) {
    dhx_error("--simulate-svg: cannot write '%s'", path);
    return false;
  }
  char err[2048];
  dhx_svg_timeline *t = dhx_svg_timeline_begin(p, step, title, f);
  dhx_step_figures fig;
  bool ok = dhx_simulate_step(p, m, 0, DHX_SIM_EVERY_RANK, dhx_svg_timeline_run, t, &fig, err,
                              sizeof err);
  dhx_svg_timeline_end(t);
  dhx_step_figures_free(&fig);
  if (fclose(f) != 0 || !ok) {
    dhx_error("--simulate-svg '%s': %s", path, ok ? "write failed" : err);
    return false;
  }
  return true;
}

// Measured times replace the model's where the profile has them; its communication times only
// when it was measured on the plan's network, and its interference factor when it measured one.
static bool use_profile(const char *path, const dhx_plan *p, dhx_cost_model *m,
                        dhx_profile **out) {
  char err[4400];
  dhx_profile *prof = dhx_profile_load(path, err, sizeof err);
  if (!prof) {
    dhx_error("--profile: %s", err);
    return false;
  }
  double bw = 0, lat = 0;
  dhx_profile_network(prof, &bw, &lat);
  m->profile = prof;
  m->profile_comm = fabs(bw - p->train.net_bandwidth) <= 1e-6 * bw &&
                    fabs(lat - p->train.net_latency) <= 1e-6 * (lat > 0 ? lat : 1);
  if (dhx_profile_interference(prof) > 0) m->interference = dhx_profile_interference(prof);
  int64_t covered, total;
  dhx_profile_coverage(prof, p, &covered, &total);
  fprintf(stderr, "dhxc: profile %s times %" PRId64 " of the plan's %" PRId64 " instructions%s\n",
          path, covered, total, m->profile_comm ? "" : "; it was measured on another network, "
          "so communication is timed by the model");
  *out = prof;
  return true;
}

int dhx_simulate_main(const dhx_program *prog, const dhx_config *cfg,
                      const dhx_simulate_options *o) {
  dhx_config c = without_unlowered(cfg);
  unsigned flags = (o->every_rank ? DHX_SIM_EVERY_RANK : 0) |
                   (o->live_activations ? DHX_SIM_LIVE_ACTIVATIONS : 0);
  dhx_step_figures steady;
  if (!o->trace_path && !o->svg_path && !o->profile_path && !o->whole_step &&
      dhx_simulate_steady(prog, &c, flags, &steady)) {
    if (o->json) dhx_step_figures_json(&steady, stdout);
    else dhx_step_figures_print(&steady, stdout);
    dhx_step_figures_free(&steady);
    return 0;
  }
  dhx_compiled compiled;
  bool ok = dhx_compile_for_simulation(prog, &c, &compiled) && dhx_diag.errors == 0;
  if (ok) {
    const dhx_plan *p = &compiled.plan;
    dhx_cost_model m = dhx_cost_model_of_cluster(&c, p);
    dhx_profile *prof = NULL;
    if (o->profile_path && !use_profile(o->profile_path, p, &m, &prof)) {
      dhx_compiled_free(&compiled);
      return 1;
    }
    dhx_step_figures fig;
    char err[2048];
    dhx_timing_pass("simulate");
    ok = dhx_simulate_compiled(&compiled, &c, &m, flags, &fig, err, sizeof err);
    dhx_timing_stop();
    if (!ok) dhx_error("--simulate: %s", err);
    if (ok && o->json) dhx_step_figures_json(&fig, stdout);
    else if (ok) dhx_step_figures_print(&fig, stdout);
    if (ok && o->trace_path) ok = write_trace(p, &m, o->trace_path);
    if (ok && o->svg_path) ok = write_svg(p, &m, fig.step_time_s, prog->main->path, o->svg_path);
    dhx_step_figures_free(&fig);
    dhx_profile_free(prof);
  }
  dhx_compiled_free(&compiled);
  return ok ? 0 : 1;
}
