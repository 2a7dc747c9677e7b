// front.h — the front end's public interface: diagnostics, loading a .dhx program with its
// `use`d modules, command-line overrides, and the typed configuration (data, cluster,
// schedule, train) that the later passes read.
#ifndef DHX_FRONT_H
#define DHX_FRONT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ast.h"

// ---- diagnostics (diag.c) -------------------------------------------------------------------
// Printed as compilers print them:
//   file:line:col: error: message
//     <the source line>
//     ^~~~~
// Every error increments the global count; the driver exits 1 when it is non-zero.
typedef struct dhx_diag_sink {
  FILE *out;           // stderr by default
  int errors, warnings;
  int max_errors;      // stop reporting (not parsing) after this many; 0 = 50
} dhx_diag_sink;

extern dhx_diag_sink dhx_diag;  // the process-wide sink

// `source` may be NULL when the span is not in a loaded file (then no source line is shown).
void dhx_error_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dhx_warning_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dhx_note_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// An error with no source position: `dhxc: error: message`.
void dhx_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The source text of the module that owns `loc->file` (NULL if unknown). The loader registers
// every file it reads so passes can print source lines from a bare location.
const char *dhx_source_for(const char *file);
void dhx_register_source(const char *file, const char *source);
// The source text under a one-line span, copied into buf (truncated with "..." to fit);
// "" when the text is not available. Returns buf. For messages like "got 2.5".
const char *dhx_loc_text(const dhx_loc *loc, char *buf, size_t size);

// ---- parsing and loading (parser.y, lexer.l, load.c) ----------------------------------------
// Parses one buffer. Returns a module even when there were errors (check dhx_diag.errors);
// returns NULL only when out of memory (in this build that is reported and exits instead).
// The module's source is registered for diagnostics until dhx_module_free.
dhx_module *dhx_parse_buffer(const char *path, const char *source, long len);
void dhx_module_free(dhx_module *m);

// A whole program: the main file plus every module reached through `use`, loaded once each.
typedef struct dhx_program {
  dhx_module *main;
  dhx_module **modules;   // main first, then used modules in load order
  int nmodules;
  char **stdlib_dirs;     // search path for `use std.X` → <dir>/X.dhx
  int nstdlib_dirs;
  void *priv;             // front-end bookkeeping (module identities, --set texts); opaque
} dhx_program;

// Loads `path` and, recursively, its uses. `use std.gpt` resolves to gpt.dhx in each stdlib
// dir in order; `use "rel/path.dhx"`-style relative uses resolve against the using file.
// Cycles and missing modules are errors at the `use`. Returns NULL if the main file cannot
// be read; otherwise a program (check dhx_diag.errors).
dhx_program *dhx_load_program(const char *path, const char *const *stdlib_dirs, int ndirs);
void dhx_program_free(dhx_program *p);

// Finds a layer or model definition by name across all modules (NULL if none).
const dhx_item *dhx_find_definition(const dhx_program *p, const char *name);

// Prints a module's syntax tree with the span of every node (for --emit=ast and tests).
void dhx_dump_module(const dhx_module *m, FILE *out);

// ---- overrides (override.c) -----------------------------------------------------------------
// `--set schedule.parallel.dp=2`: parses VALUE as a .dhx expression and stores it at PATH in
// the main module (creating the field when the block exists but the field does not).
// PATH's first component names a block item: data, schedule, train (or cluster.FIELD to set an
// argument of the cluster call). Errors name the override. Returns false on error.
bool dhx_apply_override(dhx_program *p, const char *assignment);

// ---- configuration (config.c) ---------------------------------------------------------------
// The non-model part of a program, type-checked and defaulted. Unknown fields are errors that
// name the field and its location.
typedef struct dhx_adamw {
  double lr;            // peak learning rate
  double beta1, beta2;
  double eps;
  double weight_decay;  // decoupled, applied to matrices and embeddings (not biases/norms)
  double grad_clip;     // global-norm clip; 0 = off
} dhx_adamw;

typedef struct dhx_config {
  // model instance: `model NAME = CALLEE(args)`
  const dhx_item *model_inst;   // NULL when the file has none (a library module)
  // data { train: "...", val: "..." }
  char *train_path, *val_path;  // NULL when absent
  // cluster = cpu(ranks: N, net: BW, latency: T)
  bool cluster_cpu;             // only cpu clusters are runnable for now
  int cluster_ranks;            // 0 = take from the parallel layout
  double net_bandwidth;         // bytes/s; 0 = unlimited (no emulation)
  double net_latency;           // seconds
  // schedule { parallel { dp, tp, pp, sp, zero } }
  int dp, tp, pp, zero;
  bool sp;
  // train { ... }
  int micro_batch, global_batch, steps;
  uint64_t seed;
  dhx_adamw adamw;
  int warmup_steps;             // linear warm-up from 0 to lr
  double lr_min_ratio;          // cosine decay to lr*ratio at the last step; 1 = constant
  int val_every, val_batches;   // 0 = no evaluation
  int log_every;
  int checkpoint_every;         // 0 = none
  dhx_loc train_loc, schedule_loc;  // for diagnostics on derived constraints
} dhx_config;

// Fills `cfg` with defaults, then reads the program's main module. Returns false on error
// (already reported).
bool dhx_read_config(const dhx_program *p, dhx_config *cfg);

#endif
