// sema.h — checks of a model under its schedule that need the elaborated graph: what the
// parallel layout must divide (heads, split widths, layers, sequence), and whether the model
// fits the GPUs' memory.
#ifndef DHX_SEMA_H
#define DHX_SEMA_H

#include "front.h"
#include "graph.h"

struct dhx_plan;  // runtime/plan.h: only memory.c reads a plan

// defs.c: checks every layer and model definition of the program once for all its instances
// (names, types, symbolic shapes; warnings for what the main file never uses), then the
// model instance's arguments (instance may be NULL). Returns false on error.
bool dhx_check_definitions(const dhx_program *prog, const dhx_item *instance);

// Reports every constraint of the layout that the graph breaks, with the numbers that break
// it, at the op's call site (and a note at the schedule). Returns false on error.
bool dhx_check_layout(const dhx_graph *g, const dhx_config *cfg);

// ---- memory estimate (memory.c) -------------------------------------------------------------
// Bytes per GPU of one pipeline stage, by what holds them. Precision: bf16 weights and
// activations with fp32 gradients and fp32 optimizer state (master weights, Adam moments), or
// f32 everywhere; ZeRO stages shard optimizer state, then gradients, then weights over dp;
// tensor parallelism divides split weights (and, with sp, every activation); 1F1B keeps up to
// pp - stage micro-batches' activations alive. docs/architecture.md has the whole model.
typedef struct dhx_stage_memory {
  double weights, grads, optimizer, activations, transient, reserve;
  double total;
  int64_t params;        // parameters held by this stage (after tensor parallelism)
  int layers;            // layers of the stack on this stage
  int in_flight;         // micro-batches whose activations are alive at the peak
} dhx_stage_memory;

typedef struct dhx_memory {
  int nstages;                 // pp
  dhx_stage_memory *stage;     // [nstages]
  int worst;                   // stage with the largest total
} dhx_memory;

// Estimates the memory of every stage. The graph must come from a GPU cluster's config or not:
// for cpu clusters it still estimates (f32, attention with its probabilities stored).
void dhx_estimate_memory(const dhx_graph *g, const dhx_config *cfg, dhx_memory *out);
void dhx_memory_free(dhx_memory *m);
// The estimate as a table, for `dhxc --emit=memory`.
void dhx_print_memory(const dhx_memory *m, const dhx_config *cfg, FILE *f);
// On a GPU cluster: an error at the model instance, saying by how much, when the worst stage
// does not fit the GPU's memory. Returns false on error.
bool dhx_check_memory(const dhx_graph *g, const dhx_config *cfg);

// ---- the planned arena of a rank (memory.c) ---------------------------------------------------
// What `dhxc -o` plans on a cpu cluster is exact: every rank allocates one arena of
// plan.ranks[r].arena_bytes (pipeline stages may differ). Its parts, in bytes (after alignment):
// persistent weights, gradients and Adam moments, the inputs (token ids, targets, losses and
// scratch), and the activations, whose space the programs share.
#define DHX_MEMORY_RUNS 16
typedef struct dhx_rank_memory {
  int64_t weights, grads, optimizer, io, activations;
  int64_t total;         // the arena: the sum of the parts
  int64_t params;
  int nranks;
  int64_t largest;       // the largest rank's arena (ranks differ under pipeline or ZeRO)
  int largest_rank;
  int64_t all_ranks;     // the arenas of all ranks together
  // Where ranks' arenas differ: runs of consecutive ranks with the same arena, in rank order
  // (nruns 1 when all are alike; the first DHX_MEMORY_RUNS of them, `more` when there are more).
  struct { int first, last; int64_t bytes; } runs[DHX_MEMORY_RUNS];
  int nruns;
  bool more;
} dhx_rank_memory;

// The parts of the arena of `arena` bytes that memplan.c laid out in g (every rank alike).
void dhx_rank_memory_of(const dhx_graph *g, int64_t arena, int nranks, dhx_rank_memory *out);
// The same for rank 0 of a plan whose graph is g, with the largest arena and the total over
// all of the plan's ranks.
void dhx_plan_memory_of(const dhx_graph *g, const struct dhx_plan *plan, dhx_rank_memory *out);
// The table of `dhxc --emit=memory` on a cpu cluster.
void dhx_print_rank_memory(const dhx_rank_memory *m, const dhx_config *cfg, FILE *f);
// The memory this machine has available now (MemAvailable), in bytes; 0 when unknown.
double dhx_host_memory_available(void);
// A warning at the model instance when one rank, or all ranks together, need more host memory
// than this machine has available.
void dhx_warn_host_memory(const dhx_rank_memory *m, const dhx_config *cfg);

// ---- the data (shards.c) ------------------------------------------------------------------------
// For `dhxc check`: warnings about the token shards the program names that exist already (not a
// shard, shorter than one step, a validation shard too small for one evaluation, uint16 ids
// for a larger vocabulary), from their headers. seq and vocab are the elaborated model's.
void dhx_warn_data_shards(const dhx_config *cfg, int seq, int vocab);

#endif
