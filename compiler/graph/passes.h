// passes.h — the passes over the graph and its op lists (compiler/graph), in pipeline order:
// lowering, autodiff, the optimizer, fusion, the parallel layouts and memory planning. The
// types they work on are the IR's (compiler/ir/graph.h).
#ifndef DHX_PASSES_H
#define DHX_PASSES_H

#include "graph.h"

// The parallel layout and training setup the lowering needs.
typedef struct dhx_lower_opts {
  int dp, dp_rank, accum_steps, zero;
  bool sp;                       // sequence parallelism: token-split gradients are summed
  double grad_clip, beta1, beta2, eps, weight_decay;
} dhx_lower_opts;

// lower.c: forward ops of the graph into `l` (loss forward included).
void dhx_lower_forward(dhx_graph *g, dhx_oplist *l);
// Attention as fused kernels (GPU clusters): each attention node's saved probabilities
// [B, H, S, S] become a log-sum-exp [B, H, S] (and GQA's saved heads-first query goes), and
// g->fused_attention is set, which the forward and backward lowering follow. Before sharding.
void dhx_use_fused_attention(dhx_graph *g);
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
// gemm_epilogue.c (GPU clusters, after fusion): a GEMM's bias add, or bias add and GeLU, that
// nothing else separates from it becomes the GEMM's epilogue; returns how many it folded.
int dhx_fuse_gemm_epilogues(dhx_graph *g, dhx_oplist *l);
// weight_grads.c (paired strands running free): each weight-gradient GEMM of ops [from, to)
// (with `small`, each op that writes only weight gradients) moved to just after the collective
// that follows it, when nothing between orders them; returns how many moved.
int dhx_defer_weight_grads(const dhx_graph *g, dhx_oplist *l, int from, int to, bool small);
// defer_collectives.c (free strands on a CPU cluster, g->defer_collectives): each collective of
// the backward's segments that the CPU runtime completes at a WAIT (two-member tensor-parallel
// reduce-scatters and all-gathers) gets an event, and a WAIT on it goes before the first op of
// its segment that needs it done, or at the segment's end; seg_first[0 .. nseg] are moved to
// match. Returns how many were deferred.
int dhx_defer_collectives(const dhx_graph *g, dhx_oplist *l, int nseg, int *seg_first);
// shard_tp.c: turns the whole model's graph into what tensor-parallel rank `rank` of `tp`
// runs: @split linears, attention heads, vocabulary-parallel embedding and loss get this rank's
// slice. Reports unsupported combinations as errors at the op. Call before lowering.
bool dhx_shard_tensor_parallel(dhx_graph *g, int tp, int rank);
// shard_pp.c: keeps the nodes of pipeline stage `stage` of `pp`: the layer stack is cut into
// pp * chunks equal chunks, chunk c going to stage c % pp (chunks > 1: virtual stages), or
// with g->fold (set before, chunks = 2) to stage c for c < pp and 2pp-1-c after; what
// comes before the layers goes with the first chunk, what comes after with the last. Finds the
// activation each of its chunks receives and sends. `micro` micro-batches of tokens, targets
// and losses are held at once (the pipeline's MICRO spans them).
// `layers` (pp * chunks counts, or NULL for equal counts) gives each chunk's layers.
// With by_cost (and no layers), the counts balance an estimate of each chunk's work instead
// (dhx_layers_by_cost), and with `report` a note says which they are.
bool dhx_shard_pipeline(dhx_graph *g, int pp, int chunks, const int *layers, bool by_cost,
                        bool report, int stage, int micro);
// The stage that holds global layer chunk c (0 .. pp·chunks-1), c's index among that stage's
// chunks, and the global chunk of the stage's i-th chunk (g->pp, g->chunks and g->fold set).
int dhx_chunk_stage(const dhx_graph *g, int c);
int dhx_chunk_local(const dhx_graph *g, int c);
int dhx_global_chunk(const dhx_graph *g, int stage, int i);
// The layer counts of k contiguous chunks of at least one layer each that minimise the largest
// chunk's cost (cost[l]: layer l's).
void dhx_balance_layers(const double *cost, int nlayers, int k, int *layers);
// Those counts for `chunks` chunks of g's layer stack, each layer costed by an estimate of its
// ops' work (what comes before the stack counted with layer 0, what comes after with the last).
void dhx_layers_by_cost(const dhx_graph *g, int chunks, int *layers);
// pipeline.c: the stage's MICRO program as a 1F1B schedule over `micro` micro-batches
// (interleaved over its chunks when it has several), and its EVAL (one micro-batch's forward),
// from each chunk's one-micro-batch forward and backward.
void dhx_lower_pipeline(dhx_graph *g, int micro, double loss_scale);
// A block of a pipeline stage: the forward or backward of micro-batch m through the stage's
// chunk c (in a W, 0: going down, 1: coming back up).
typedef struct dhx_fold_block {
  bool backward;
  int m, c;
} dhx_fold_block;
// The 4·micro blocks of stage `stage` of a W of pp stages in the order it runs them (pipeline.c
// explains the order); the caller frees it.
dhx_fold_block *dhx_fold_order(int pp, int micro, int stage);
// Paired strands: the strand (0 or 1) micro-batch m computes on, on every stage (pipeline.c).
int dhx_strand_of(const dhx_graph *g, int m);
// shard_sp.c: sequence parallelism on top of dhx_shard_tensor_parallel's rewrite: outside the
// split regions, activations hold this rank's token rows; column-split linears all-gather their
// input, row-split linears reduce-scatter their output. Reports what it cannot split at the op.
bool dhx_shard_sequence_parallel(dhx_graph *g);
// shard_sp.c: STEP ops on `stream` that sum the gradients of parameters used on token-split
// data over the tensor-parallel group (dhx_lower_optimizer calls it before the data-parallel
// reduction, on that reduction's stream).
void dhx_lower_sp_grad_sync(dhx_graph *g, int stream);
// precision.c: bf16 mixed precision: activations and their gradients stored as bf16 where
// nothing needs them f32, kernels' bf16 masks and collectives' types set to match, GEMM
// operands brought to one type (weights through bf16 copies refreshed in BEGIN and EVAL,
// f32 activations through casts). After the optimizer, before memory planning.
void dhx_apply_precision(dhx_graph *g);
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

// compress_grads.c: the gradient reduce-scatter of sharded data parallelism, plain or, with
// g->tlq on, as TLq-HS (two quantized all-to-alls, docs/compression.md).
bool dhx_tlq_on(const dhx_graph *g);
// The elements of each data rank's piece of a parameter (and of its gradient and optimizer
// state) of `elems` elements: dhx_zero_piece, or dhx_qwd_piece with qWD, rounded up to whole
// TLq groups when TLq is on (the padding stays zero).
int64_t dhx_grad_piece(const dhx_graph *g, int64_t elems);
// Reduces parameter `param`'s whole gradient `whole` (dp pieces) over the data-parallel group
// into this rank's piece `piece`, on `stream` of op list l (program prog, which owns the
// scratch tensors), for micro-batch `micro` of the step (0 when the step's sum is reduced).
// TLq-HS's second hop runs on `inter_stream` (may be `stream`); after the last reduction,
// dhx_grad_reduce_join orders `stream` after it.
void dhx_emit_grad_reduce(dhx_graph *g, dhx_oplist *l, int stream, int inter_stream, int prog,
                          int param, int micro, int whole, int piece, const char *note);
void dhx_grad_reduce_join(const dhx_graph *g, dhx_oplist *l, int stream, int inter_stream);

// optimizer.c: a state tensor of parameter p (its shape and tensor-parallel slice), named
// prefix + the parameter's name.
int dhx_add_param_state(dhx_graph *g, int p, const char *prefix, dhx_tensor_kind kind);

// compress_params.c: qWD, SDP4Bit's quantized weight differences, on the parameter all-gather
// of zero 1 and 2 (g->qwd_bits; docs/compression.md).
// The piece of a tensor of `elems` elements cut for `dp` ranks: a whole number of groups of
// `group` (or one group of at least 16 elements for a small tensor), 16-element aligned.
int64_t dhx_qwd_piece(int64_t elems, int dp, int group);
// Gives each parameter its piece of fp32 master weights (sized like its moments).
void dhx_qwd_add_masters(dhx_graph *g);
// STEP after AdamW has updated the masters: the difference between this rank's master piece
// and its piece of the model's weights quantized (stochastic rounding), the codes and scales
// all-gathered over the data-parallel group, and every rank's dequantized differences added
// into the whole weights.
void dhx_lower_qwd_gather(dhx_graph *g);

#endif
