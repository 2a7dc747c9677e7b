// passes.h — the passes over the graph and its op lists (compiler/graph), in pipeline order:
// lowering, autodiff, the optimizer, fusion, the parallel layouts and memory planning. The
// types they work on are the IR's (compiler/ir/graph.h).
#ifndef DHX_PASSES_H
#define DHX_PASSES_H

#include "graph.h"

// The parallel layout and training setup the lowering needs.
typedef struct dhx_lower_opts {
  int dp, dp_rank, accum_steps, zero;
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
// shard_sp.c: STEP ops that sum the gradients of parameters used on token-split data over the
// tensor-parallel group (on the data-parallel reduction's stream when dp > 1). Call right
// before dhx_lower_optimizer.
void dhx_lower_sp_grad_sync(dhx_graph *g, const dhx_lower_opts *o);
// memplan.c: offsets for every tensor; returns the arena size in bytes.
int64_t dhx_plan_memory(dhx_graph *g);

// zero.c: sharded optimizer state over the data-parallel group (g->dp, g->dp_rank, g->zero).
// True when this graph's optimizer state is sharded (zero >= 1 and dp > 1).
bool dhx_zero_sharded(const dhx_graph *g);
// The parameters in the planner's order (decay whole, decay split, no-decay split, no-decay
// whole); returns the count.
int dhx_zero_order(const dhx_graph *g, int *order);
// Assigns every parameter an owner rank, drops the moments of parameters this rank does not
// own, sizes the chunks (g->zc) and creates the STEP's scratch buffers. After the state
// tensors exist, before memory planning.
void dhx_zero_partition(dhx_graph *g);
// STEP with sharded state: reduce-scatter, norm over the shard, AdamW on this rank's chunk,
// all-gather of the updated parameters. Called by dhx_lower_optimizer.
void dhx_lower_zero_step(dhx_graph *g, const dhx_lower_opts *o);

#endif
