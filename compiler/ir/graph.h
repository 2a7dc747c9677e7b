// graph.h — the IR: the operator graph and the low-level op list it lowers to (the passes over
// them are compiler/graph's, declared in passes.h).
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

#include "ast.h"          // dhx_loc, dhx_item (front end)
#include "intern.h"
#include "kernel_spec.h"
#include "plan_base.h"    // dtypes, argument kinds, registers, programs, GEMM shape

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
  DHX_T_MASTER,    // fp32 master weights of this rank's piece of a parameter (qWD)
} dhx_tensor_kind;

typedef struct dhx_tensor {
  char name[DHX_NAME_MAX];
  dhx_tensor_kind kind;
  int program;              // DHX_PROG_* owning an activation, -1 for persistent tensors
                            //   (beside the kind: the memory planner reads both of every tensor)
  dhx_dtype dtype;
  int ndim;
  int64_t shape[DHX_MAX_DIMS];
  // parameters
  dhx_init_kind init;
  float init_std;
  bool decay;
  int grad, opt_m, opt_v;   // tensor ids, -1 when absent
  int master;               // qWD: the master weights of this rank's piece, -1 otherwise
  // views: the first tensor of the run and the element count
  int view_of;
  int64_t view_elems;
  // memory planning
  int64_t offset;           // bytes in the rank arena, -1 until planned
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

// The ops of the graph, one per line of the op table (ops.def, ops.h), which says for each its
// inputs, output and saved tensors, parameters, backward effects and tensor-parallel split.
typedef enum {
#define DHX_OP(ID, name, call, nin_min, nin_max, grads, tp, params) DHX_N_##ID,
#include "ops.def"
#undef DHX_OP
} dhx_node_op;

// How many ops there are (not a dhx_node_op, so switches over the ops stay checked for cases).
enum {
  DHX_N_COUNT = 0
#define DHX_OP(ID, name, call, nin_min, nin_max, grads, tp, params) + 1
#include "ops.def"
#undef DHX_OP
};

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
  DHX_L_ALL_TO_ALL,  // args[0] input, args[1] output, args[2] count (of each; p blocks)
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
// 16 bytes (a lowered op holds DHX_MAX_ARGS of them, and a stage of a paper-scale pipeline
// hundreds of thousands of ops): the value its kind carries, then the tensor, the register
// (one of DHX_REG_COUNT) and the kind. Read only the value the kind names.
typedef struct dhx_operand {
  union {
    int64_t elem;   // DHX_ARG_BUF: element offset into the tensor
    int64_t i;      // DHX_ARG_I64 (and DHX_ARG_REG: the register)
    double f;       // DHX_ARG_F64
  };
  int tensor;       // -1 for scalars
  int16_t reg;      // DHX_ARG_REG: the register; -1 otherwise
  uint8_t kind;     // dhx_arg_kind
} dhx_operand;

// A kernel op's kernel (dhx_kernel_spec less the fused spec's tables, which are interned):
// dhx_lop_spec gives the whole spec.
typedef struct dhx_lop_kernel {
  dhx_kernel_kind kind;
  dhx_ktype type;
  uint16_t bf16;               // dhx_kernel_spec's mask
  const dhx_ew_spec *ew;       // DHX_K_ELTWISE: interned (intern.h); NULL otherwise
} dhx_lop_kernel;

// What the passes that walk every op read comes first, in one cache line: a stage of a
// paper-scale pipeline holds hundreds of thousands of ops, copies of a few hundred distinct
// kernels and GEMMs, whose descriptions are therefore shared (intern.h) rather than inline.
typedef struct dhx_lop {
  dhx_lop_kind kind;
  int stream;
  bool dead;                   // removed by a pass
  int nargs;
  int comm, event;
  dhx_dtype dtype;             // collectives: the elements moved (0: f32; all-gathers and
                               //   all-to-alls may move i32 code words)
  int64_t n;                   // index space (KERNEL/EW)
  dhx_origin at;               // where it comes from
  dhx_operand args[DHX_MAX_ARGS];
  union {                      // by kind, one or the other: read the one the kind carries
    dhx_lop_kernel kspec;      // KERNEL, EW, GRAD_NORM
    const dhx_plan_gemm *gemm; // GEMM (interned): args[0..2] = A, B, C
  };
  const char *note;            // interned (intern.h); never NULL in a list
} dhx_lop;

typedef struct dhx_oplist {
  dhx_lop *ops;
  int n, cap;
  int nstreams, nevents;
  dhx_origin at;               // stamped on the ops pushed from now on
} dhx_oplist;

// TLq-HS (compress_grads.c): the sharded gradient reduce-scatter as two quantized all-to-alls,
// first among the data ranks of a node (`per_node` of them), then among those with the same
// index on the other nodes.
typedef struct dhx_grad_tlq {
  int intra_bits, inter_bits;    // code widths of the two hops (4 or 8); intra_bits 0: off
  int group;                     // elements per scale
  bool hadamard;                 // 32-element Hadamard transform before quantizing
  int per_node;                  // data ranks of this rank's group on each node
} dhx_grad_tlq;

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
  bool fold;                     // the pipeline folded into a W: stage s holds chunks s and
                                 //   2pp-1-s (chunks = 2; dhx_chunk_stage)
  int node_base;                 // index of g->nodes[0] in the stage's node list (a pass that
                                 //   shows a window of the nodes sets it)
  int chunk_in[DHX_MAX_CHUNKS];  // per chunk: the activation it receives / sends (-1: none)
  int chunk_out[DHX_MAX_CHUNKS];
  dhx_oplist prog[DHX_PROG_COUNT];
  int dp, dp_rank, zero;         // data-parallel degree, this graph's rank, ZeRO stage
  int qwd_bits, qwd_group;       // qWD on the parameter all-gather (compress_params.c); 0 = off
  bool fused_attention;          // attention as fused kernels (GPU clusters; kernel_attn.c): each
                                 //   attention node saves a log-sum-exp [B, H, S], not the
                                 //   probabilities (dhx_use_fused_attention)
  bool strands;                  // paired strands: micro-batches alternate between two strands,
                                 //   one's forward running beside the other's backward
  bool strands_free;             // and no overlap search holds them (search: none;
                                 //   weight_grads.c)
  bool defer_collectives;        // free strands on a CPU cluster: the backward's collectives
                                 //   complete at a WAIT (defer_collectives.c)
  bool async_comm;               // the collectives of a stage's layers run on communication
                                 //   streams beside the compute (async_comm.c)
  dhx_grad_tlq tlq;              // compressed gradient reduce-scatter (intra_bits 0: off)
} dhx_graph;

// Communicators as lowering names them; compile.c maps them to each rank's plan communicator.
// DP_INTRA: the data-parallel group's members on this rank's node; DP_INTER: its members with
// the same index among those on their nodes (one per node).
enum { DHX_COMM_TP = 0, DHX_COMM_DP = 1, DHX_COMM_PP = 2, DHX_COMM_DP_INTRA = 3,
       DHX_COMM_DP_INTER = 4, DHX_COMM_ROLES };

// graph.c
void dhx_graph_init(dhx_graph *g);
void dhx_graph_free(dhx_graph *g);
int dhx_tensor_new(dhx_graph *g, const char *name, dhx_tensor_kind kind, dhx_dtype dt, int ndim,
                   const int64_t *shape);
// Room for `more` tensors (ops) beyond those there are, so that a pass that knows roughly how many
// it will make grows the array once rather than by doubling and copying. Room never written
// costs no memory, so an estimate on the high side is cheap.
void dhx_graph_reserve_tensors(dhx_graph *g, int64_t more);
void dhx_oplist_reserve(dhx_oplist *l, int64_t more);
int64_t dhx_tensor_elems(const dhx_tensor *t);
// Elements the arena gives it: a shard's piece, or a padded whole tensor's (>= its elements).
int64_t dhx_tensor_alloc_elems(const dhx_tensor *t);
int64_t dhx_tensor_alloc_bytes(const dhx_tensor *t);  // those elements' bytes
int64_t dhx_tensor_elem_bytes(const dhx_tensor *t);   // 2 (bf16), 4 (f32, i32) or 8 (f64)
int64_t dhx_tensor_rows(const dhx_tensor *t);  // product of all dims but the last
int64_t dhx_tensor_cols(const dhx_tensor *t);  // last dim
int dhx_node_new(dhx_graph *g, dhx_node_op op, const dhx_loc *loc, const char *scope);
int dhx_site_new(dhx_graph *g, const dhx_loc *call, const char *name, int parent);
dhx_lop *dhx_lop_push(dhx_oplist *l, dhx_lop_kind kind, int stream, const char *note);
// Copies src into a zeroed name field, cut at DHX_NAME_MAX - 1 bytes as snprintf would, without
// its formatting (a paper-scale pipeline names hundreds of thousands of tensors and ops).
void dhx_name_copy(char dst[DHX_NAME_MAX], const char *src);
// Appends a copy of op as it is (its origin and note included).
void dhx_lop_append(dhx_oplist *l, const dhx_lop *op);
// The whole kernel spec of a KERNEL, EW or GRAD_NORM op (its fused spec copied in).
dhx_kernel_spec dhx_lop_spec(const dhx_lop *op);
// Whether two ops' kernel descriptions are the same one, and a hash of it: the fused spec is
// interned, so its address names it (passes that look a kernel up once per description, not
// once per op, key on this).
bool dhx_lop_kernel_same(const dhx_lop_kernel *a, const dhx_lop_kernel *b);
uint64_t dhx_lop_kernel_hash(const dhx_lop_kernel *k);
dhx_operand dhx_buf(int tensor, int64_t elem);
dhx_operand dhx_i64(int64_t v);
dhx_operand dhx_f64(double v);
dhx_operand dhx_regarg(int reg);
const char *dhx_node_op_name(dhx_node_op op);
void dhx_graph_dump(const dhx_graph *g, void *file /* FILE* */);

#endif
