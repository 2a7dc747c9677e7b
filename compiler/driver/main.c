// main.c — the dhxc command line.
//
//   dhxc FILE.dhx -o PLAN_DIR [--set PATH=VALUE]... [-I STDLIB_DIR]
//   dhxc FILE.dhx --emit=graph|memory|schedule|trace|llvm|ptx [--set ...]
//   dhxc FILE.dhx --simulate [--json] [--simulate-trace OUT.json] [--simulate-svg OUT.svg]
//   dhxc check FILE.dhx [--set ...]
//   dhxc data -o PREFIX [--val-fraction F] TEXT_FILE...
//   dhxc fmt [-i | --check] FILE.dhx...
//   dhxc convert --from F --to G IN.safetensors OUT.safetensors
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "timing.h"
#include "front.h"
#include "compile.h"
#include "trace_emit.h"
#include "sema.h"
#include "driver.h"

#ifndef DHX_STDLIB_DIR
#define DHX_STDLIB_DIR "stdlib"
#endif
#ifndef DHX_STDLIB_FROM_BIN
#define DHX_STDLIB_FROM_BIN "../share/dhx/stdlib"
#endif

// The stdlib searched after -I and $DHX_STDLIB: an installed dhxc finds it relative to its own
// binary (PREFIX/bin/../share/dhx/stdlib), wherever PREFIX is; a dhxc run from its build tree
// has none there and uses the source tree's (DHX_STDLIB_DIR).
static const char *builtin_stdlib_dir(void) {
  static char dir[PATH_MAX];
  char exe[PATH_MAX], beside[PATH_MAX + sizeof DHX_STDLIB_FROM_BIN];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return DHX_STDLIB_DIR;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (!slash) return DHX_STDLIB_DIR;
  *slash = '\0';  // the folder of the binary
  snprintf(beside, sizeof beside, "%s/%s", exe, DHX_STDLIB_FROM_BIN);
  struct stat st;
  if (realpath(beside, dir) && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return dir;
  return DHX_STDLIB_DIR;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: dhxc FILE.dhx -o PLAN_DIR [options]     compile a training plan\n"
          "       dhxc check FILE.dhx [options]           check a program without writing a plan\n"
          "       dhxc data -o PREFIX [--val-fraction F] [--shard-tokens N] FILE...\n"
          "                                               make byte-level token shards\n"
          "       dhxc fmt [-i | --check] FILE.dhx...     print, rewrite or check canonical form\n"
          "       dhxc convert --from F --to G IN OUT     checkpoints to and from Hugging Face\n"
          "                                               names (dhx, hf-gpt2, hf-llama)\n"
          "options:\n"
          "  --set PATH=VALUE   override a field, e.g. --set schedule.parallel.dp=2\n"
          "  --emit=KIND        print graph | memory | schedule | trace | llvm | ptx to stdout\n"
          "                     (trace: the planned timeline of one step as Chrome trace JSON)\n"
          "  --simulate         simulate one training step on the configured cluster and print\n"
          "                     step time, MFU, bubble, exposed communication, peak memory\n"
          "  --json             with --simulate: print them as one JSON object\n"
          "  --simulate-trace OUT.json, --simulate-svg OUT.svg\n"
          "                     with --simulate: the simulated timeline as a Chrome trace / SVG\n"
          "  --simulate-every-rank\n"
          "                     with --simulate: simulate every rank, not one data-parallel\n"
          "                     replica for its clones (slower; the same figures)\n"
          "  --simulate-activations\n"
          "                     with --simulate: also the most activation bytes live at once in\n"
          "                     the simulated order, beside the arena laid out for them\n"
          "  --simulate-whole-step\n"
          "                     with --simulate: lower and simulate every micro-batch of a long\n"
          "                     step, not three short steps it repeats (slower; the same figures)\n"
          "  --profile PROFILE.json\n"
          "                     with --simulate: instruction times measured by dhxrun --profile\n"
          "                     instead of the cost model's, wherever the profile has them\n"
          "  -I DIR             add a stdlib directory (searched before the built-in one)\n"
          "  --no-lower         with check, --emit=memory or --emit=graph: from the analyzed\n"
          "                     model only (the schedule constraints, the memory estimate),\n"
          "                     without lowering: quick at any scale, where lowering a\n"
          "                     64-rank plan of a paper-scale model takes a minute\n"
          "  --time-passes      print the wall time of each compiler pass to stderr\n"
          "  -h, --help         this text\n");
}

typedef struct options {
  const char *input, *output, *emit;
  bool check, time_passes, simulate;
  bool no_lower;  // check and --emit=memory|graph from the analyzed model alone
  dhx_simulate_options sim;
  const char *sets[256];
  int nsets;
  const char *dirs[16];
  int ndirs;
} options;

static bool parse_args(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-o") == 0 && i + 1 < argc) {
      o->output = argv[++i];
    } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
      if (o->nsets == 256) {
        dhx_error("too many --set options");
        return false;
      }
      o->sets[o->nsets++] = argv[++i];
    } else if (strncmp(a, "--set=", 6) == 0 && o->nsets < 256) {
      o->sets[o->nsets++] = a + 6;
    } else if (strcmp(a, "--time-passes") == 0) {
      o->time_passes = true;
    } else if (strcmp(a, "--simulate") == 0) {
      o->simulate = true;
    } else if (strcmp(a, "--no-lower") == 0) {
      o->no_lower = true;
    } else if (strcmp(a, "--json") == 0) {
      o->sim.json = true;
    } else if (strcmp(a, "--simulate-trace") == 0 && i + 1 < argc) {
      o->sim.trace_path = argv[++i];
    } else if (strcmp(a, "--profile") == 0 && i + 1 < argc) {
      o->sim.profile_path = argv[++i];
    } else if (strcmp(a, "--simulate-svg") == 0 && i + 1 < argc) {
      o->sim.svg_path = argv[++i];
    } else if (strcmp(a, "--simulate-every-rank") == 0) {
      o->sim.every_rank = true;
    } else if (strcmp(a, "--simulate-activations") == 0) {
      o->sim.live_activations = true;
    } else if (strcmp(a, "--simulate-whole-step") == 0) {
      o->sim.whole_step = true;
    } else if (strncmp(a, "--emit=", 7) == 0) {
      o->emit = a + 7;
    } else if (strcmp(a, "-I") == 0 && i + 1 < argc && o->ndirs < 15) {
      o->dirs[o->ndirs++] = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      dhx_error("unknown option '%s' (see dhxc --help)", a);
      return false;
    } else if (!o->input) {
      o->input = a;
    } else {
      dhx_error("more than one input file ('%s' and '%s')", o->input, a);
      return false;
    }
  }
  if (!o->input) {
    dhx_error("no input file (see dhxc --help)");
    return false;
  }
  static const char *kinds[] = {"graph", "memory", "schedule", "trace", "llvm", "ptx"};
  if (o->emit) {
    bool known = false;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
      known |= strcmp(o->emit, kinds[k]) == 0;
    if (!known) {
      dhx_error("unknown --emit kind '%s' (graph, memory, schedule, trace, llvm or ptx)", o->emit);
      return false;
    }
  }
  if (!o->simulate && (o->sim.json || o->sim.trace_path || o->sim.svg_path || o->sim.profile_path ||
                       o->sim.every_rank || o->sim.whole_step || o->sim.live_activations)) {
    dhx_error("--json, --simulate-trace, --simulate-svg, --simulate-every-rank, "
              "--simulate-activations, --simulate-whole-step and --profile go with --simulate");
    return false;
  }
  if (o->no_lower && (o->output || o->simulate || (o->emit && strcmp(o->emit, "memory") != 0 &&
                                                    strcmp(o->emit, "graph") != 0) ||
                      (!o->check && !o->emit))) {
    dhx_error("--no-lower goes with 'dhxc check' and --emit=memory or --emit=graph");
    return false;
  }
  if (o->simulate && (o->check || o->emit || o->output)) {
    dhx_error("--simulate runs on its own (not with 'check', --emit or -o)");
    return false;
  }
  if (!o->check && !o->emit && !o->output && !o->simulate) {
    dhx_error("no output: give -o PLAN_DIR, --emit=KIND, --simulate, or use 'dhxc check'");
    return false;
  }
  return true;
}

static int emit(dhx_compiled *c, const dhx_config *cfg, const char *kind) {
  char err[1024];
  bool ok = true;
  if (strcmp(kind, "graph") == 0) {
    dhx_graph_dump(&c->graph, stdout);
  } else if (strcmp(kind, "memory") == 0) {  // a lowered plan: the exact arena of each rank
    dhx_rank_memory m;
    dhx_plan_memory_of(&c->graph, &c->plan, &m);
    dhx_print_rank_memory(&m, cfg, stdout);
  } else if (strcmp(kind, "schedule") == 0) {
    dhx_plan_print(&c->plan, stdout);
  } else if (strcmp(kind, "trace") == 0) {  // the timeline the cost model predicts
    dhx_cost_model m = dhx_cost_model_for(&c->plan);
    ok = dhx_trace_emit(&c->plan, &m, stdout, err, sizeof err);
  } else if (strcmp(kind, "llvm") == 0) {
    fflush(stdout);
    ok = dhx_codegen_emit_llvm(c->cg, "/dev/stdout", err, sizeof err);
  } else {
    fflush(stdout);
    ok = dhx_codegen_emit_ptx(c->cg, "sm_90", "/dev/stdout", err, sizeof err);
  }
  if (!ok) dhx_error("%s", err);
  return ok ? 0 : 1;
}

// What only needs the analyzed model: --emit=memory, and `dhxc check` and --emit=graph (the
// operator graph without programs) of a program this build cannot lower yet.
static int analyze_only(const dhx_program *prog, const dhx_config *cfg, const options *o) {
  dhx_graph g;
  bool ok = dhx_analyze(prog, cfg, &g);
  if (ok && o->check) dhx_warn_data_shards(cfg, g.seq, g.vocab);
  if (ok && o->emit && strcmp(o->emit, "graph") == 0) dhx_graph_dump(&g, stdout);
  if (ok && o->emit && strcmp(o->emit, "memory") == 0) {
    dhx_memory m;
    dhx_estimate_memory(&g, cfg, &m);
    dhx_print_memory(&m, cfg, stdout);
    dhx_memory_free(&m);
  }
  char what[160];
  const dhx_loc *at;
  if (ok && o->check && !o->emit && dhx_unlowered(cfg, &at, what, sizeof what))
    dhx_note_at(at, dhx_source_for(at->file), "checked through the schedule constraints and the "
                "memory estimate; %s is not lowered by this build yet, so 'dhxc -o' refuses it",
                what);
  dhx_graph_free(&g);
  return ok && dhx_diag.errors == 0 ? 0 : 1;
}

// Reads the configuration and checks every definition (both, so one run reports the
// mistakes of both); true when neither found an error.
static bool config_and_definitions(const dhx_program *prog, dhx_config *cfg) {
  int errors = dhx_diag.errors;
  dhx_read_config(prog, cfg);  // fills model_inst even when a field is wrong
  dhx_check_definitions(prog, cfg->model_inst);
  return dhx_diag.errors == errors;
}

static int compile_main(options *o) {
  const char *dirs[18];
  int nd = 0;
  for (int i = 0; i < o->ndirs; i++) dirs[nd++] = o->dirs[i];
  const char *env = getenv("DHX_STDLIB");
  if (env && *env) dirs[nd++] = env;
  dirs[nd++] = builtin_stdlib_dir();

  dhx_program *prog = dhx_load_program(o->input, dirs, nd);
  if (!prog) return 1;
  if (o->check && dhx_diag.errors == 0) {
    // A file that defines nothing would pass as an empty library module; checking one is
    // rather a mistake (the wrong file, an editor that saved nothing), so it is reported.
    const dhx_module *m = prog->main;
    bool defines = false, uses = false, blank = true;
    for (int i = 0; i < m->nitems; i++) {
      uses |= m->items[i]->kind == ITEM_USE;
      defines |= m->items[i]->kind != ITEM_USE;
    }
    for (long i = 0; i < m->source_len && blank; i++) {
      char c = m->source[i];
      blank = c == ' ' || c == '\t' || c == '\r' || c == '\n';
    }
    if (!defines) {
      dhx_loc at = {m->path, 0, 0, 0, 0};
      dhx_error_at(&at, NULL, "nothing to check: the file %s",
                   uses ? "only uses modules and defines nothing"
                   : blank ? "is empty" : "has only comments");
      dhx_program_free(prog);
      return 1;
    }
  }
  int rc = 1;
  for (int i = 0; i < o->nsets && dhx_diag.errors == 0; i++) dhx_apply_override(prog, o->sets[i]);
  dhx_config cfg;
  if (dhx_diag.errors == 0 && config_and_definitions(prog, &cfg)) {
    char what[160];
    const dhx_loc *at;
    bool unlowered = o->no_lower || dhx_unlowered(&cfg, &at, what, sizeof what) != NULL;
    // A plan that can be lowered on a cpu cluster reports the memory it really allocates (the
    // arena of each rank, in this machine's memory); the others, and GPU clusters, the
    // estimate per GPU from the analyzed model.
    bool memory = o->emit && strcmp(o->emit, "memory") == 0;
    bool analysis = o->emit && ((unlowered && (memory || strcmp(o->emit, "graph") == 0)) ||
                                (memory && !cfg.cluster_cpu));
    if (o->simulate) {
      rc = dhx_simulate_main(prog, &cfg, &o->sim);
    } else if (o->check && !o->emit && !cfg.model_inst) {
      // a module without a model instance (a stdlib module): its definitions were checked
      rc = 0;
    } else if (analysis || (o->check && !o->emit && unlowered)) {
      rc = analyze_only(prog, &cfg, o);
    } else {
      dhx_compiled c;
      if (dhx_compile(prog, &cfg, &c) && dhx_diag.errors == 0) {
        rc = 0;
        if (o->check) dhx_warn_data_shards(&cfg, c.graph.seq, c.graph.vocab);
        if (o->emit) rc = emit(&c, &cfg, o->emit);
        if (rc == 0 && o->output && !dhx_write_plan_dir(&c, o->output)) rc = 1;
      }
      dhx_compiled_free(&c);
    }
  }
  dhx_program_free(prog);
  return rc == 0 && dhx_diag.errors == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
    printf("dhxc 0.1 (plan format %d)\n", DHX_PLAN_VERSION);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "data") == 0) return dhx_data_main(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "fmt") == 0) return dhx_fmt_main(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "convert") == 0) return dhx_convert_main(argc - 1, argv + 1);
  options o = {0};
  if (argc >= 2 && strcmp(argv[1], "check") == 0) {
    o.check = true;
    argv++;
    argc--;
  }
  if (!parse_args(argc, argv, &o)) return 1;
  dhx_timing_enable(o.time_passes);
  int rc = compile_main(&o);
  dhx_timing_report(stderr);
  return rc;
}
