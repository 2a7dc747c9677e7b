// graph.h — the operator graph and the low-level op list it lowers to.
//
// Two levels, both plain arrays indexed by id:
//
//  * The operator graph (dhx_node): what the model computes, one node per primitive op of the
//    language (embedding, layernorm, linear, attention, gelu, add, cross_entropy...), built by
//    elaborate.c from a model instance. Nothing here knows what a GPT is.
//
//  * The low-level ops (dhx_lop): what a rank executes. Forward nodes lower to GEMMs, kernel
//    launches and elementwise expressions (lower.c); autodiff.c walks the graph backwards and
//    appends the backward ops; optimizer.c appends reduction, clipping and AdamW. fuse.c merges
//    chains of elementwise ops into one kernel, memplan.c gives every tensor an arena offset and
//    emit.c writes the plan.
//
// Tensors are shared by both levels.
#ifndef DHX_GRAPH_H
#define DHX_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "../codegen/kernels.h"
#include "../front/ast.h"
#include "../../runtime/plan.h"

#define DHX_MAX_NODE_IO 4
#define DHX_MAX_CHUNKS 64  // layer chunks per pipeline stage (virtual stages)

typedef enum {
  DHX_T_ACT = 0,   // activation or activation gradient (planned per program)
  DHX_T_PARAM,     // trained weight
  DHX_T_GRAD,      // gradient of a weight
  DHX_T_OPT_M, DHX_T_OPT_V,
  DHX_T_TOKENS, DHX_T_TARGETS, DHX_T_LOSSES,
  DHX_T_SCRATCH,   // persistent helper storage (norm partials)
  DHX_T_VIEW,      // a window onto a contiguous run of persistent tensors (all gradients...)
} dhx_tensor_kind;

typedef struct dhx_tensor {
  char name[DHX_NAME_MAX];
  dhx_tensor_kind kind;
  dhx_dtype dtype;
  int ndim;
  int64_t shape[DHX_MAX_DIMS];
  // parameters
  dhx_init_kind init;
  float init_std;
  bool decay;
  int grad, opt_m, opt_v;   // tensor ids, -1 when absent
  // views: the first tensor of the run and the element count
  int view_of;
  int64_t view_elems;
  // memory planning
  int64_t offset;           // bytes in the rank arena, -1 until planned
  int first_use, last_use;  // op indices in the program that owns it (activations)
  int program;              // DHX_PROG_* owning an activation, -1 for persistent tensors
  // tensor parallelism (shard_tp.c): the slice of the whole model's tensor a parameter (and
  // its gradient and moments) holds, as in dhx_plan_buffer; split_dim -1 for a whole tensor
  int64_t global_shape[DHX_MAX_DIMS];
  int split_dim, split_groups, split_parts, split_index;
  bool tp_reduce_grad;      // its gradient is a partial sum over the tensor-parallel group
                            //   (it feeds column-split linears): all-reduce it when complete
  bool sp_reduce_grad;      // a parameter used on token-split data (sequence parallelism):
                            //   its gradient is a partial sum over the tensor-parallel group
  // Sharded data parallelism (zero.c): with shard_parts > 1 the tensor holds only piece
  // shard_index of its slice's elements cut into shard_parts equal pieces (alloc_elems each,
  // the last ones padded); alloc_elems > 0 also pads a whole tensor (0: product of the shape).
  int shard_parts, shard_index;
  int64_t alloc_elems;
  int work;                 // zero 1: the parameter's whole gradient, accumulated over the step
                            //   (the gradient itself is this rank's shard); -1 otherwise
} dhx_tensor;

typedef enum {
  DHX_N_EMBEDDING,     // in: tokens, table          out: [.., dim]
  DHX_N_POS_EMBEDDING, // in: x, table [seq, dim]     out: x + table (broadcast over batch)
  DHX_N_LAYERNORM,     // in: x, gamma, beta          out: y   saved: mean, rstd
  DHX_N_LINEAR,        // in: x, w [in, out], b?      out: y
  DHX_N_ATTENTION,     // in: qkv [B, S, 3*dim]       out: o [B, S, dim]  saved: probs
                       //  or in: q [B, S, heads*hs], k, v [B, S, kv_heads*hs] (grouped-query)
                       //     out: o [B, S, heads*hs]  saved: probs, q with heads first
  DHX_N_GELU,          // in: x                       out: y
  DHX_N_ADD,           // in: a, b                    out: a + b
  DHX_N_CROSS_ENTROPY, // in: logits, targets         out: per-position losses
  DHX_N_RMSNORM,       // in: x, gamma                out: y   saved: rstd
  DHX_N_SILU,          // in: x                       out: x sigma(x)
  DHX_N_MUL,           // in: a, b                    out: a * b (elementwise)
  DHX_N_ROPE,          // in: x [B, S, heads*hs]      out: x rotated by position (heads, base)
  // Sequence parallelism (shard_sp.c inserts these; token-split tensors are [1, B*S/tp, H],
  // rank r holding the flattened token rows [r*BS/tp, (r+1)*BS/tp)):
  DHX_N_SP_GATHER,     // in: token-split x           out: whole [B, S, H] (all-gather)
  DHX_N_SP_SCATTER,    // in: partial sums [B, S, H], b?  out: token-split sum (+ b) (reduce-scatter)
  DHX_N_SP_CHUNK,      // in: replicated x            out: this rank's token rows of x
} dhx_node_op;

typedef struct dhx_node {
  dhx_node_op op;
  int in[DHX_MAX_NODE_IO], nin;
  int out;                   // result tensor
  int saved[2], nsaved;      // tensors the backward needs that the forward makes
  int heads;                 // attention, rope
  int kv_heads;              // attention with separate q, k, v (= heads without grouping)
  bool causal;               // attention
  double base;               // rope: the frequency base (10000 in most models)
  double eps;                // layernorm
  int split;                 // 0 none, 1 col, 2 row (@split annotation, for tensor parallelism)
  bool vocab_parallel;       // embedding, cross_entropy: over this rank's vocabulary slice
  bool sp_partial;           // row-split linear or vocabulary-parallel embedding under sequence
                             //   parallelism: its output is the partial sum an SP_SCATTER
                             //   reduces (no all-reduce; a linear's bias moves to the scatter)
  char scope[DHX_NAME_MAX];  // "gpt_block.2.linear.1"
  dhx_loc loc;               // the call in the source
  int layer;                 // index in the model's layer stack (its top-level repeats), -1 outside
  int chunk;                 // pipeline: which of its stage's layer chunks it belongs to
  int site;                  // the layer call it was elaborated in (dhx_graph.sites); -1: the
                             //   model body
  uint64_t from;             // bit i: its arguments depend on argument i of the model instance
} dhx_node;

// A layer call that elaboration inlined. An op's site and the sites' parents are the chain of
// calls from the model body down to the op, for "in layer 'gpt_block' called here" notes.
typedef struct dhx_site {
  dhx_loc loc;               // the call
  const char *name;          // the layer called
  int parent;                // the call it happened in, -1 in the model body
} dhx_site;

typedef enum {
  DHX_L_GEMM,
  DHX_L_KERNEL,     // a catalogue kernel (not elementwise)
  DHX_L_EW,         // an elementwise expression (fusable)
  DHX_L_ZERO,
  DHX_L_ALLREDUCE,  // in place: args[0] region, args[1] count; over communicator `comm`
  DHX_L_ALL_GATHER, // args[0] input, args[1] output, args[2] count (of the output)
  DHX_L_SEND, DHX_L_RECV,  // args[0] region, args[1] count, args[2] peer, args[3] tag
  DHX_L_LOAD,       // args[0] tokens, args[1] targets, args[2] micro-batch of the step
  DHX_L_REDUCE_SCATTER,  // args[0] input, args[1] output, args[2] count (of the input)
  DHX_L_GRAD_NORM,
  DHX_L_RECORD, DHX_L_WAIT,
} dhx_lop_kind;

// Where a low-level op comes from, for the passes that reorder ops (overlap search, strands)
// and the cost model: the graph node it was lowered from (its index in the graph's node list,
// -1 for glue), that node's layer, the micro-batch of a program that spans several, and the
// phase. A pass sets its op list's `at` before it emits; dhx_lop_push copies it into the op.
typedef enum { DHX_PHASE_NONE = 0, DHX_PHASE_FORWARD, DHX_PHASE_BACKWARD,
               DHX_PHASE_OPTIMIZER } dhx_phase;

typedef struct dhx_origin {
  int node, layer, micro;
  dhx_phase phase;
} dhx_origin;

// An operand: a tensor plus an element offset into it, or a scalar.
typedef struct dhx_operand {
  int tensor;       // -1 for scalars
  int64_t elem;     // element offset into the tensor
  int64_t i;        // DHX_ARG_I64
  double f;         // DHX_ARG_F64
  int reg;          // >= 0: a register instead of f
  uint8_t kind;     // dhx_arg_kind
} dhx_operand;

typedef struct dhx_lop {
  dhx_lop_kind kind;
  int stream;
  dhx_kernel_spec kspec;       // KERNEL, EW
  int64_t n;                   // index space (KERNEL/EW)
  dhx_operand args[DHX_MAX_ARGS];
  int nargs;
  dhx_plan_gemm gemm;          // GEMM: args[0..2] = A, B, C
  int comm, event;
  bool dead;                   // removed by a pass
  dhx_origin at;               // where it comes from
  char note[DHX_NAME_MAX];
} dhx_lop;

typedef struct dhx_oplist {
  dhx_lop *ops;
  int n, cap;
  int nstreams, nevents;
  dhx_origin at;               // stamped on the ops pushed from now on
} dhx_oplist;

typedef struct dhx_graph {
  dhx_tensor *tensors;
  int ntensors, captensors;
  dhx_node *nodes;
  int nnodes, capnodes;
  int tokens, targets, losses;   // input and loss tensors
  int micro_batch, seq, vocab;
  int nlayers;                   // iterations of the model body's top-level repeats
  dhx_loc layers_loc;            // the first top-level repeat (file NULL when none)
  uint64_t layers_from;          // the model instance's arguments its count depends on
  const dhx_item *model_inst;    // `model NAME = CALLEE(args)` (NULL before elaboration)
  dhx_site *sites;
  int nsites, capsites;
  int64_t n_params;
  char model_name[DHX_NAME_MAX];
  int tp, tp_rank;               // tensor-parallel degree and this graph's rank (1, 0 unsplit)
  int pp, pp_rank;               // pipeline stages and this graph's stage (1, 0 unsplit)
  int chunks;                    // layer chunks on this stage (virtual stages; 1 = plain)
  int node_base;                 // index of g->nodes[0] in the stage's node list (a pass that
                                 //   shows a window of the nodes sets it)
  int chunk_in[DHX_MAX_CHUNKS];  // per chunk: the activation it receives / sends (-1: none)
  int chunk_out[DHX_MAX_CHUNKS];
  dhx_oplist prog[DHX_PROG_COUNT];
  int dp, dp_rank, zero;         // data-parallel degree, this graph's rank, ZeRO stage
} dhx_graph;

// Communicators as lowering names them; compile.c maps them to each rank's plan communicator.
enum { DHX_COMM_TP = 0, DHX_COMM_DP = 1, DHX_COMM_PP = 2, DHX_COMM_ROLES };

// graph.c
void dhx_graph_init(dhx_graph *g);
void dhx_graph_free(dhx_graph *g);
int dhx_tensor_new(dhx_graph *g, const char *name, dhx_tensor_kind kind, dhx_dtype dt, int ndim,
                   const int64_t *shape);
int64_t dhx_tensor_elems(const dhx_tensor *t);
// Elements the arena gives it: a shard's piece, or a padded whole tensor's (>= its elements).
int64_t dhx_tensor_alloc_elems(const dhx_tensor *t);
int64_t dhx_tensor_rows(const dhx_tensor *t);  // product of all dims but the last
int64_t dhx_tensor_cols(const dhx_tensor *t);  // last dim
int dhx_node_new(dhx_graph *g, dhx_node_op op, const dhx_loc *loc, const char *scope);
int dhx_site_new(dhx_graph *g, const dhx_loc *call, const char *name, int parent);
dhx_lop *dhx_lop_push(dhx_oplist *l, dhx_lop_kind kind, int stream, const char *note);
dhx_operand dhx_buf(int tensor, int64_t elem);
dhx_operand dhx_i64(int64_t v);
dhx_operand dhx_f64(double v);
dhx_operand dhx_regarg(int reg);
const char *dhx_node_op_name(dhx_node_op op);
void dhx_graph_dump(const dhx_graph *g, void *file /* FILE* */);

// The parallel layout and training setup the lowering needs.
typedef struct dhx_lower_opts {
  int dp, dp_rank, accum_steps, zero;
  bool sp;                       // sequence parallelism: token-split gradients are summed
  double grad_clip, beta1, beta2, eps, weight_decay;
} dhx_lower_opts;

// lower.c: forward ops of the graph into `l` (loss forward included).
void dhx_lower_forward(dhx_graph *g, dhx_oplist *l);
// autodiff.c: the backward of every node, in reverse, into `l`; the loss gradient is seeded
// with `loss_scale` (1 / positions in the global batch).
void dhx_lower_backward(dhx_graph *g, dhx_oplist *l, double loss_scale);
// The same for a part of a model (a pipeline stage): when seed >= 0, tensor `seed` is an output
// whose gradient comes from outside (*seed_grad: the tensor to receive it into); when want >= 0,
// *want_grad is the gradient of input `want` once complete (-1 if nothing reaches it).
void dhx_lower_backward_from(dhx_graph *g, dhx_oplist *l, double loss_scale, int seed,
                             int *seed_grad, int want, int *want_grad);
// optimizer.c: gradient views, BEGIN (zeroing) and STEP (all-reduce, clipping, AdamW).
void dhx_lower_optimizer(dhx_graph *g, const dhx_lower_opts *o);
// fuse.c: merges chains of elementwise ops; returns how many ops it removed.
int dhx_fuse_elementwise(dhx_graph *g, dhx_oplist *l);
// shard_tp.c: turns the whole model's graph into what tensor-parallel rank `rank` of `tp`
// runs: @split linears, attention heads, vocabulary-parallel embedding and loss get this rank's
// slice. Reports unsupported combinations as errors at the op. Call before lowering.
bool dhx_shard_tensor_parallel(dhx_graph *g, int tp, int rank);
// shard_pp.c: keeps the nodes of pipeline stage `stage` of `pp`: the layer stack is cut into
// pp * chunks equal chunks, chunk c going to stage c % pp (chunks > 1: virtual stages); what
// comes before the layers goes with the first chunk, what comes after with the last. Finds the
// activation each of its chunks receives and sends. `micro` micro-batches of tokens, targets
// and losses are held at once (the pipeline's MICRO spans them).
// `layers` (pp * chunks counts, or NULL for equal counts) gives each chunk's layers.
// With by_cost (and no layers), the counts balance an estimate of each chunk's work instead.
bool dhx_shard_pipeline(dhx_graph *g, int pp, int chunks, const int *layers, bool by_cost,
                        int stage, int micro);
// The layer counts of k contiguous chunks of at least one layer each that minimise the largest
// chunk's cost (cost[l]: layer l's).
void dhx_balance_layers(const double *cost, int nlayers, int k, int *layers);
// pipeline.c: the stage's MICRO program as a 1F1B schedule over `micro` micro-batches
// (interleaved over its chunks when it has several), and its EVAL (one micro-batch's forward),
// from each chunk's one-micro-batch forward and backward.
void dhx_lower_pipeline(dhx_graph *g, int micro, double loss_scale);
// shard_sp.c: sequence parallelism on top of dhx_shard_tensor_parallel's rewrite: outside the
// split regions, activations hold this rank's token rows; column-split linears all-gather their
// input, row-split linears reduce-scatter their output. Reports what it cannot split at the op.
bool dhx_shard_sequence_parallel(dhx_graph *g);
// shard_sp.c: STEP ops on `stream` that sum the gradients of parameters used on token-split
// data over the tensor-parallel group (dhx_lower_optimizer calls it before the data-parallel
// reduction, on that reduction's stream).
void dhx_lower_sp_grad_sync(dhx_graph *g, int stream);
// memplan.c: offsets for every tensor; returns the arena size in bytes.
int64_t dhx_plan_memory(dhx_graph *g);

// zero.c: sharded data parallelism (g->dp, g->dp_rank, g->zero): gradients, moments and with
// zero 3 parameters cut into dp equal pieces per tensor, this rank keeping its own.
// True when this graph's state is sharded (zero >= 1 and dp > 1).
bool dhx_zero_sharded(const dhx_graph *g);
// The elements of each piece of a tensor of `elems` elements cut for `dp` ranks.
int64_t dhx_zero_piece(int64_t elems, int dp);
// Makes the state tensors this rank's pieces (and zero 1's whole gradients, which MICRO then
// accumulates into); with zero 2 and 3, MICRO (and EVAL with zero 3) read and write
// short-lived whole copies of sharded state instead: gradients reduce-scattered in buckets
// under the backward, weights all-gathered ahead of the layer that reads them (zero 3), on a
// data-parallel stream. After fusion, before the optimizer and memory planning.
void dhx_zero_shard(dhx_graph *g);
// dhx_lower_optimizer's sharded parts: BEGIN's zeroing of whole gradients (zero 1); STEP's
// reduce-scatter of them on `stream` (zero 1); AdamW on this rank's pieces and the in-place
// all-gather of the updated parameters (zero 1, 2).
void dhx_lower_zero_begin(dhx_graph *g);
void dhx_lower_zero_reduce(dhx_graph *g, int stream);
void dhx_lower_zero_update(dhx_graph *g, const dhx_lower_opts *o);

#endif
