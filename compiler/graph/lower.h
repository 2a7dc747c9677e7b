// lower.h — helpers shared by the passes that append low-level ops (lower.c, autodiff.c,
// optimizer.c): GEMMs, catalogue kernels, and a small builder for elementwise expressions.
#ifndef DHX_LOWER_H
#define DHX_LOWER_H

#include "passes.h"

// C[m×n] = alpha * op(A) op(B) + beta * C, row-major, unbatched.
dhx_lop *dhx_emit_gemm(dhx_oplist *l, const char *note, bool ta, bool tb, int64_t m, int64_t n,
                       int64_t k, dhx_operand a, int64_t lda, dhx_operand b, int64_t ldb,
                       dhx_operand c, int64_t ldc, double beta);
// Sets the two batch levels of a GEMM: counts and element strides of A, B, C.
void dhx_gemm_batch(dhx_lop *op, int level, int64_t count, int64_t sa, int64_t sb, int64_t sc);

// A catalogue kernel in f32 over index space n with `nargs` operands.
dhx_lop *dhx_emit_kernel(dhx_oplist *l, dhx_kernel_kind kind, int64_t n, const char *note,
                         int nargs, const dhx_operand *args);

// Elementwise expression builder.
typedef struct dhx_ewb {
  dhx_ew_spec s;
  dhx_operand outs[DHX_EW_MAX_IO], ins[DHX_EW_MAX_IO], scalars[DHX_EW_MAX_IO];
} dhx_ewb;

void dhx_ewb_init(dhx_ewb *b);
int dhx_ewb_load(dhx_ewb *b, dhx_operand in, int64_t mod /* 0 = full */);
int dhx_ewb_scalar(dhx_ewb *b, dhx_operand s);
int dhx_ewb_const(dhx_ewb *b, double v);
// dhx_ewb_const, or -1 (b unchanged) when v is new and the table of constants is full
// (DHX_EW_MAX_CONSTS); the same bits share a slot.
int dhx_ewb_try_const(dhx_ewb *b, double v);
int dhx_ewb_op(dhx_ewb *b, dhx_ew_op op, int a, int c);
void dhx_ewb_store(dhx_ewb *b, int node, dhx_operand out, bool accumulate);
dhx_lop *dhx_emit_ew(dhx_oplist *l, const dhx_ewb *b, int64_t n, const char *note);

// Shapes of grouped-query attention (lower.c), shared with its backward (autodiff.c).
typedef struct dhx_gqa {
  int64_t B, S, H, G, hs, Dq, Dk, per;  // per = H / G query heads per key/value head
} dhx_gqa;
void dhx_gqa_dims(const dhx_graph *g, const dhx_node *n, dhx_gqa *d);
// The arguments the fused attention kernels share (kernel_attn.c): S, H, G, hs, qs, ks, flags
// (the fused-projection bit, or the gradients' accumulate bits added by the caller), scale.
typedef struct dhx_attn_dims {
  int64_t B, S, H, G, hs, qs, ks, layout;
  double scale;
} dhx_attn_dims;
void dhx_attn_dims_of(const dhx_graph *g, const dhx_node *n, dhx_attn_dims *d);
// The kernel's arguments from `first` on: S, H, G, hs, qs, ks, flags (layout | acc), scale.
void dhx_attn_args(const dhx_attn_dims *d, int64_t acc, dhx_operand *first);
void dhx_gqa_batch(dhx_lop *op, const dhx_gqa *d, int64_t a_b, int64_t a_g, int64_t b_b,
                   int64_t b_g, int64_t c_b, int64_t c_g);
// out[b, y, x, :] = in[b, x, y, :] for `in` of shape [B, X, Y, W].
void dhx_emit_permute_op(dhx_oplist *l, const char *note, int out, int in, int64_t B, int64_t X,
                      int64_t Y, int64_t W);
// Rotary embedding of `in` (shape of x) into out; sign -1 rotates back (the backward).
void dhx_emit_rope_op(dhx_oplist *l, const char *note, int out, int in, const dhx_tensor *x,
                   int heads, double base, double sign);

// Collectives over communicator role `comm` (DHX_COMM_TP, ...) on `stream`, f32 elements.
// In-place sum all-reduce of `count` elements of tensor t.
dhx_lop *dhx_emit_allreduce(dhx_oplist *l, int stream, int comm, int t, int64_t count,
                            const char *note);
// All-gather: `count` / (group size) elements of `in` from every member into `out` (count).
dhx_lop *dhx_emit_all_gather(dhx_oplist *l, int stream, int comm, int in, int out, int64_t count,
                             const char *note);
// Sum reduce-scatter: `count` elements of `in` summed over the group; member i gets elements
// [i·count/p, (i+1)·count/p) of the sum in `out` (count / group size).
dhx_lop *dhx_emit_reduce_scatter(dhx_oplist *l, int stream, int comm, int in, int out,
                                 int64_t count, const char *note);
// All-to-all: `in` and `out` hold `count` elements (a multiple of the group size p) as p blocks;
// block j of member i's input lands at block i of member j's output. Disjoint tensors.
dhx_lop *dhx_emit_all_to_all(dhx_oplist *l, int stream, int comm, int in, int out, int64_t count,
                             const char *note);

// optimizer.c: AdamW over `count` elements of param (from its start), its gradient at `grad`
// and its moments m and v, with the per-step registers (learning rate, bias corrections) and
// the clip scale GRAD_NORM writes into tensor `clip` (dhx_clip_scale_id).
dhx_lop *dhx_emit_adamw_op(dhx_oplist *l, const dhx_lower_opts *o, int param, dhx_operand grad,
                           int m, int v, int64_t count, double wd, int clip, const char *note);
// The scratch tensor "grad_norm" (clip scale, norm) that GRAD_NORM writes.
int dhx_clip_scale_id(const dhx_graph *g);

// verify_ops.c: the op list after pass `pass` is well formed (ops, operands inside their
// tensors, kernel signatures, roles, events; with placed, every touched tensor has an arena
// offset); an internal error naming the pass otherwise.
void dhx_verify_ops(const dhx_graph *g, const dhx_oplist *l, const char *pass, bool placed);
void dhx_verify_programs(const dhx_graph *g, const char *pass, bool placed);
// verify_graph.c: the graph after pass `pass` agrees with the op table (known ops, input counts,
// existing tensors, integer inputs where the backward makes no gradient); an internal error
// naming the pass otherwise.
void dhx_verify_graph(const dhx_graph *g, const char *pass);

// Reduce-scatter: the sum of `count` elements of `in` over the group; member i gets elements
// [i·count/p, (i+1)·count/p) of it in `out`.
dhx_lop *dhx_emit_reduce_scatter(dhx_oplist *l, int stream, int comm, int in, int out,
                                 int64_t count, const char *note);

// What op does to its operand j's tensor: bit 0 reads, bit 1 writes (3 when unknown).
int dhx_lop_arg_effect(const dhx_lop *op, int j);
// An all-reduce, all-gather, reduce-scatter or all-to-all (not a point-to-point transfer).
bool dhx_lop_collective(dhx_lop_kind k);
// Whether a and b touch a common tensor and one of them writes it (a view may be any tensor):
// then neither may move past the other.
bool dhx_lops_conflict(const dhx_graph *g, const dhx_lop *a, const dhx_lop *b);
// An event, a transfer or a batch load: what orders streams or touches what other streams see,
// so the passes that move ops never move one past it.
bool dhx_lop_barrier(const dhx_lop *op);

// Recovers the operand lists of an elementwise op (outputs, inputs, scalars in arg order).
void dhx_ew_operands(const dhx_lop *op, const dhx_operand **outs, const dhx_operand **ins,
                     const dhx_operand **scalars);

// async_comm.c: the collectives of ops [from, to) of a one-stream template (each run of one
// layer) on stream DHX_TMPL_COMM_STREAM, issued as early as their inputs allow, with the compute
// reordered to run beside them and RECORD/WAIT events of the template's own; returns the new end
// of the range. pipeline.c maps the stream and the events per copy.
#define DHX_TMPL_COMM_STREAM (-1)
int dhx_async_collectives(const dhx_graph *g, dhx_oplist *l, int from, int to);
// The same for a program of one micro-batch (forward [0, nfwd), then backward), its
// collectives on stream 1.
void dhx_async_collectives_program(const dhx_graph *g, dhx_oplist *l, int nfwd);

#endif
