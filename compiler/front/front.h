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

// The sink of the thread that reports: the main thread's, unless a thread of the compiler's
// (compile.c, stages lowered apart) collects its own and hands it over.
extern _Thread_local dhx_diag_sink dhx_diag;

// `source` may be NULL when the span is not in a loaded file (then no source line is shown).
void dhx_error_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dhx_warning_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dhx_note_at(const dhx_loc *loc, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// The name in `known` (NULL-terminated) closest to `name`, if within edit distance 2 — for
// "did you mean" hints (suggest.c).
const char *dhx_suggest(const char *name, const char *const *known);
// An error with no source position: `dhxc: error: message`.
void dhx_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The source text of the module that owns `loc->file` (NULL if unknown). The loader registers
// every file it reads so passes can print source lines from a bare location.
const char *dhx_source_for(const char *file);
void dhx_register_source(const char *file, const char *source);
// The source text under a one-line span, copied into buf (truncated with "..." to fit);
// "" when the text is not available. Returns buf. For messages like "got 2.5".
const char *dhx_loc_text(const dhx_loc *loc, char *buf, size_t size);

// Matches a call's arguments to parameter names (positional first, then named; names is
// NULL-terminated after n), reporting misplaced, unknown (with the closest name, and a note at
// `defined` when given) and repeated ones. slot[i] is the argument of parameter i or NULL.
// Shared by the definition checker and elaboration (call_args.c).
bool dhx_match_call_args(const dhx_expr *call, const char *fname, const char *const *names,
                         int n, const dhx_loc *defined, const dhx_arg **slot);

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
// The same with the main file's `len` bytes given in memory (they may hold NUL bytes); `path`
// names it in diagnostics and anchors its relative uses. Never returns NULL.
dhx_program *dhx_load_program_source(const char *path, const char *source, long len,
                                     const char *const *stdlib_dirs, int ndirs);
void dhx_program_free(dhx_program *p);

// Finds a layer or model definition by name across all modules (NULL if none).
const dhx_item *dhx_find_definition(const dhx_program *p, const char *name);

// Prints a module's syntax tree with the span of every node (for --emit=ast and tests).
void dhx_dump_module(const dhx_module *m, FILE *out);

// ---- overrides (override.c) -----------------------------------------------------------------
// `--set schedule.parallel.dp=2`: parses VALUE as a .dhx expression and stores it at PATH in
// the main module (creating the field when the block exists but the field does not).
// PATH's first component names a block item: data, schedule, train; cluster.FIELD sets an
// argument of the cluster call and model.NAME one of the model instance's call. The k-th call
// on a program is `--set #k`: its value's locations name the file `<--set #k>`, whose source
// is the assignment's text. Errors name the override. Returns false on error.
bool dhx_apply_override(dhx_program *p, const char *assignment);
// k when `file` is the `<--set #k>` of a --set value, else 0.
int dhx_set_index(const char *file);
// When `value` lies in a --set, a note at it naming that --set, as in
// `'model.heads' was set to 3 by --set #2 'model.heads=3'` (path is the field it set).
// Returns whether it did.
bool dhx_note_set_value(const dhx_loc *value, const char *path);

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

// A GPU kind, from a `gpu NAME { flops: ..., memory: ..., bandwidth: ... }` item (the presets
// are in stdlib/clusters.dhx).
typedef struct dhx_gpu_kind {
  const char *name;     // NULL when the cluster is not a GPU cluster
  double flops;         // peak dense bf16 tensor FLOP/s
  double memory;        // bytes of device memory
  double bandwidth;     // device memory bytes/s
  dhx_loc loc;          // the `gpu` item's name
} dhx_gpu_kind;

typedef enum { DHX_PREC_F32 = 0, DHX_PREC_BF16 } dhx_precision;
// The overlap search of paired strands (docs/overlap-search.md); `off` is read as NONE.
typedef enum { DHX_SEARCH_DP = 0, DHX_SEARCH_GREEDY, DHX_SEARCH_NONE } dhx_strand_search;
typedef enum { DHX_FOLD_OFF = 0, DHX_FOLD_W } dhx_fold;

#define DHX_MAX_STAGE_CHUNKS 256  // entries of parallel.stages

// How `parallel { stages }` cuts the layer stack into pipeline chunks: counts that balance an
// estimate of each chunk's work (the default, or `stages: auto`), equal counts
// (`stages: equal`), or the counts given (`stages: (4, 5, 5, 2)`).
typedef enum { DHX_STAGES_BY_COST = 0, DHX_STAGES_EQUAL, DHX_STAGES_GIVEN } dhx_stages_mode;

typedef struct dhx_config {
  // model instance: `model NAME = CALLEE(args)`
  const dhx_item *model_inst;   // NULL when the file has none (a library module)
  // data { train: "...", val: "..." }
  char *train_path, *val_path;  // NULL when absent; else absolute (see config.c)
  dhx_loc train_path_loc, val_path_loc;  // where they were written
  // cluster = cpu(ranks: N, per_node: K, net: BW, latency: T)
  //         | gpus(nodes: N, per_node: G, gpu: KIND, intra: BW, inter: BW, ...)
  //         | PRESET | PRESET(overrides...)
  bool cluster_cpu;             // false for a GPU cluster
  int cluster_ranks;            // cpu: 0 = take from the parallel layout; gpu: nodes * per_node
  double net_bandwidth;         // cpu: bytes/s; 0 = unlimited (no emulation)
  double net_latency;           // cpu: seconds
  int nodes, per_node;          // gpu; cpu: per_node 0 = every rank on one node
  dhx_loc per_node_loc;         // cpu: the per_node value (file NULL when absent)
  dhx_gpu_kind gpu;             // gpu
  double intra_bandwidth, intra_latency;  // gpu: between GPUs of a node (per GPU, one way)
  double inter_bandwidth, inter_latency;  // gpu: between nodes (per node, one way)
  double reserve;               // gpu: bytes per GPU kept for the runtime (context, NCCL, BLAS)
  dhx_loc cluster_loc;          // the cluster item (or the --set that made it)
  // schedule { parallel { dp, tp, pp, sp, zero } }
  int dp, tp, pp, zero;
  int virtual_stages;           // layer chunks per pipeline stage (interleaved 1F1B), 1 = plain
  int stage_layers[DHX_MAX_STAGE_CHUNKS];  // `stages: (n0, n1, ...)`: layers per layer chunk
  int nstage_layers;            //   in chunk order (pp * virtual of them)
  dhx_stages_mode stages;       // how the layer stack is cut into pipeline chunks
  bool sp;
  // schedule { strands { pair, search, fold } }   (DHelix strand interleaving)
  bool strands_pair;
  dhx_strand_search strands_search;
  dhx_fold fold;
  // schedule { compress { params: qwd(bits, group), grads: tlq(intra, inter, group, hadamard) } }
  int qwd_bits, qwd_group;      // qwd_bits 0 = parameter gathers uncompressed
  dhx_loc qwd_loc;              // the `params:` field (file NULL when absent)
  int tlq_intra, tlq_inter, tlq_group, tlq_hadamard;  // tlq_intra 0 = gradients uncompressed
  dhx_loc tlq_loc;              // the tlq(...) call (file NULL when absent)
  // schedule { offload { optimizer, stride, subgroup } }   (Deep Optimizer States)
  bool offload_optimizer;
  int offload_stride;           // 1 of every `stride` subgroups is updated on the GPU
  int64_t offload_subgroup;     // parameters per subgroup
  // schedule { sequence { adaptive, max_group, buckets, time_limit } }   (FlexSP)
  bool seq_adaptive;
  int seq_max_group, seq_buckets;
  double seq_time_limit;        // seconds per planner solve
  // train { ... }
  int micro_batch, global_batch, steps;
  uint64_t seed;
  dhx_adamw adamw;
  dhx_precision precision;      // default: f32 on cpu clusters, bf16 on gpu clusters
  int warmup_steps;             // linear warm-up from 0 to lr
  double lr_min_ratio;          // cosine decay to lr*ratio at the last step; 1 = constant
  int val_every, val_batches;   // 0 = no evaluation
  int log_every;
  int checkpoint_every;         // 0 = none
  bool skip_nonfinite;          // a step whose loss or gradient norm is not finite is skipped
  dhx_loc train_loc, schedule_loc;  // for diagnostics on derived constraints
  dhx_loc micro_batch_loc;      // its value (file NULL when defaulted)
  dhx_loc optimizer_loc;        // the optimizer call (file NULL when defaulted)
  // where each schedule block was written (file NULL when absent), for diagnostics
  dhx_loc parallel_loc, strands_loc, compress_loc, offload_loc, sequence_loc, precision_loc;
  dhx_loc strands_search_loc;  // where `search` is written (none: the default of the layout)
  dhx_loc layout_locs[7];       // the values of dp, tp, pp, sp, zero, virtual, stages (file
                                //   NULL when defaulted)
} dhx_config;

// Ranks are numbered with tensor parallelism fastest, then data, then pipeline parallelism:
// a tensor-parallel group is tp consecutive ranks, so it stays inside a node.
static inline int dhx_world_rank(const dhx_config *cfg, int tp_rank, int dp_rank, int pp_rank) {
  return tp_rank + cfg->tp * (dp_rank + cfg->dp * pp_rank);
}

// The node of world rank r: r / per_node (node 0 for all when per_node is 0).
static inline int dhx_node_of(const dhx_config *cfg, int rank) {
  return cfg->per_node > 0 ? rank / cfg->per_node : 0;
}

// How many members of each data-parallel group share a node, when every group has the same
// number on each of its nodes (its members on one node are consecutive data ranks); 0 when
// not.
int dhx_dp_per_node(const dhx_config *cfg);

// Notes at the values of dp, tp, pp, sp and zero that a `--set` gave, after an error about the
// layout whose caret points at the schedule block (which shows the file's values).
void dhx_note_layout_overrides(const dhx_config *cfg);

// Fills `cfg` with defaults, then reads the program's main module. Returns false on error
// (already reported).
bool dhx_read_config(const dhx_program *p, dhx_config *cfg);

// ---- formatting (format.c) --------------------------------------------------------------------
// The canonical text of a module that parsed without errors, every comment kept: what
// `dhxc fmt` writes. Formatting that text again gives the same text. Returns a malloc'ed,
// NUL-terminated string and its length in *len (when len is not NULL).
char *dhx_format_module(const dhx_module *m, size_t *len);

#endif
