// compile.h — the compiler pipeline from a loaded program to a plan directory.
#ifndef DHX_COMPILE_H
#define DHX_COMPILE_H

#include "kernels.h"
#include "front.h"
#include "graph.h"
#include "plan.h"

// optimizer.c / memplan.c helpers used by the pipeline
void dhx_create_param_state(dhx_graph *g);
void dhx_create_views(dhx_graph *g);
void dhx_create_norm_scratch(dhx_graph *g);
int dhx_view_id(const dhx_graph *g, const char *name);
int64_t dhx_plan_persistent(dhx_graph *g);

// emit.c: one rank's section of the plan from its planned graph.
// comm_of maps each communicator role (DHX_COMM_TP, ...) to this rank's plan communicator (-1:
// none; lowering emits nothing on it).
bool dhx_emit_rank(const dhx_graph *g, int64_t arena, const int comm_of[DHX_COMM_ROLES],
                   dhx_codegen *cg, dhx_plan_rank *r);

// One op as emit.c writes it (buf_id NULL: buffers left unnamed, for the cost model, and g
// may be NULL; the kernel is not looked up).
void dhx_emit_instr(const dhx_graph *g, const dhx_lop *op, const int *buf_id,
                    const int *comm_of, dhx_plan_instr *in);

typedef struct dhx_compiled {
  dhx_plan plan;
  dhx_codegen *cg;
  dhx_graph graph;   // rank 0's graph (for --emit=graph)
  // Paired strands: per search (dp, greedy, none), the modelled time of the regions the overlap
  // search aligned, summed over stages (all 0 without paired strands).
  double overlap_modelled_s[3];
} dhx_compiled;

// Elaborates the model into `g` (initialized here) and checks it under the schedule: what the
// layout must divide, and (on GPU clusters) whether it fits in memory. Everything `dhxc check`
// does before lowering. Errors are reported; returns false on error.
bool dhx_analyze(const dhx_program *prog, const dhx_config *cfg, dhx_graph *g);

// The first feature of `cfg` that the language and its checks know but this build cannot lower
// into a runnable plan yet (written into buf, with *at where the program asks for it), or NULL.
const char *dhx_unlowered(const dhx_config *cfg, const dhx_loc **at, char *buf, size_t n);

// Analyzes, then lowers (forward, backward, optimizer), fuses, plans memory and builds the plan
// and the kernel set. Errors are reported; returns false on error.
bool dhx_compile(const dhx_program *prog, const dhx_config *cfg, dhx_compiled *out);
// dhx_compile for the simulator (dhxc --simulate): a GPU cluster, or bf16 precision, is lowered
// as the CPU backend's f32 plan, whose per-rank programs are the same; the cost model counts
// the cluster's hardware and bf16 bytes. Every other feature that is not lowered yet is refused.
bool dhx_compile_for_simulation(const dhx_program *prog, const dhx_config *cfg,
                                dhx_compiled *out);
void dhx_compiled_free(dhx_compiled *c);

// Writes DIR/plan.bin, DIR/kernels.so, DIR/kernels.ptx (sm_80) and DIR/kernels.sm_90.ptx.
bool dhx_write_plan_dir(dhx_compiled *c, const char *dir);

#endif
