// lower_util.c — emitting GEMMs, kernels and elementwise expressions into an op list.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "kernels.h"  // dhx_kernel_arg_writes
#include "lower.h"

dhx_lop *dhx_emit_gemm(dhx_oplist *l, const char *note, bool ta, bool tb, int64_t m, int64_t n,
                       int64_t k, dhx_operand a, int64_t lda, dhx_operand b, int64_t ldb,
                       dhx_operand c, int64_t ldc, double beta) {
  dhx_lop *op = dhx_lop_push(l, DHX_L_GEMM, 0, note);
  dhx_plan_gemm gm = {.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .lda = lda,
                      .ldb = ldb, .ldc = ldc, .alpha = 1.0, .beta = beta, .batch = {1, 1}};
  op->gemm = dhx_intern_gemm(&gm);
  op->args[0] = a;
  op->args[1] = b;
  op->args[2] = c;
  op->nargs = 3;
  return op;
}

void dhx_gemm_batch(dhx_lop *op, int level, int64_t count, int64_t sa, int64_t sb, int64_t sc) {
  dhx_plan_gemm gm = *op->gemm;
  gm.batch[level] = count;
  gm.stride_a[level] = sa;
  gm.stride_b[level] = sb;
  gm.stride_c[level] = sc;
  op->gemm = dhx_intern_gemm(&gm);
}

dhx_lop *dhx_emit_kernel(dhx_oplist *l, dhx_kernel_kind kind, int64_t n, const char *note,
                         int nargs, const dhx_operand *args) {
  dhx_lop *op = dhx_lop_push(l, DHX_L_KERNEL, 0, note);
  op->kspec.kind = kind;
  op->kspec.type = DHX_KT_F32;
  op->n = n;
  op->nargs = nargs;
  memcpy(op->args, args, sizeof(dhx_operand) * (size_t)nargs);
  return op;
}

dhx_lop *dhx_emit_allreduce(dhx_oplist *l, int stream, int comm, int t, int64_t count,
                            const char *note) {
  dhx_lop *op = dhx_lop_push(l, DHX_L_ALLREDUCE, stream, note);
  op->args[0] = dhx_buf(t, 0);
  op->args[1] = dhx_i64(count);
  op->nargs = 2;
  op->comm = comm;
  return op;
}

// A collective from tensor `in` to tensor `out` (both from their start) over `count` elements.
static dhx_lop *emit_in_out(dhx_oplist *l, dhx_lop_kind kind, int stream, int comm, int in,
                            int out, int64_t count, const char *note) {
  dhx_lop *op = dhx_lop_push(l, kind, stream, note);
  op->args[0] = dhx_buf(in, 0);
  op->args[1] = dhx_buf(out, 0);
  op->args[2] = dhx_i64(count);
  op->nargs = 3;
  op->comm = comm;
  return op;
}

dhx_lop *dhx_emit_all_gather(dhx_oplist *l, int stream, int comm, int in, int out, int64_t count,
                             const char *note) {
  return emit_in_out(l, DHX_L_ALL_GATHER, stream, comm, in, out, count, note);
}

dhx_lop *dhx_emit_reduce_scatter(dhx_oplist *l, int stream, int comm, int in, int out,
                                 int64_t count, const char *note) {
  return emit_in_out(l, DHX_L_REDUCE_SCATTER, stream, comm, in, out, count, note);
}

dhx_lop *dhx_emit_all_to_all(dhx_oplist *l, int stream, int comm, int in, int out, int64_t count,
                             const char *note) {
  return emit_in_out(l, DHX_L_ALL_TO_ALL, stream, comm, in, out, count, note);
}

void dhx_ewb_init(dhx_ewb *b) { memset(b, 0, sizeof *b); }

static int push_node(dhx_ewb *b, dhx_ew_node n) {
  if (b->s.nnodes >= DHX_EW_MAX_NODES)
    DHX_ICE("elementwise expression of more than %d nodes", DHX_EW_MAX_NODES);
  b->s.nodes[b->s.nnodes] = n;
  return b->s.nnodes++;
}

int dhx_ewb_load(dhx_ewb *b, dhx_operand in, int64_t mod) {
  int k = b->s.nin++;
  b->ins[k] = in;
  b->s.in_mode[k] = mod ? DHX_EW_MOD : DHX_EW_FULL;
  b->s.in_mod[k] = mod;
  return push_node(b, (dhx_ew_node){.op = DHX_EW_LOAD, .a = (uint8_t)k});
}

int dhx_ewb_scalar(dhx_ewb *b, dhx_operand s) {
  int k = b->s.nscalars++;
  b->scalars[k] = s;
  return push_node(b, (dhx_ew_node){.op = DHX_EW_SCALAR, .a = (uint8_t)k});
}

int dhx_ewb_try_const(dhx_ewb *b, double v) {
  int k = 0;
  while (k < b->s.nconsts && memcmp(&b->s.consts[k], &v, sizeof v) != 0) k++;  // -0 is not 0
  if (k == DHX_EW_MAX_CONSTS) return -1;
  if (k == b->s.nconsts) b->s.consts[b->s.nconsts++] = v;
  return push_node(b, (dhx_ew_node){.op = DHX_EW_CONST, .a = (uint8_t)k});
}

int dhx_ewb_const(dhx_ewb *b, double v) {
  int node = dhx_ewb_try_const(b, v);
  if (node < 0) DHX_ICE("elementwise expression of more than %d distinct constants", DHX_EW_MAX_CONSTS);
  return node;
}

int dhx_ewb_op(dhx_ewb *b, dhx_ew_op op, int a, int c) {
  return push_node(b, (dhx_ew_node){.op = (uint8_t)op, .a = (uint8_t)a, .b = (uint8_t)c});
}

void dhx_ewb_store(dhx_ewb *b, int node, dhx_operand out, bool accumulate) {
  int k = b->s.nout++;
  b->outs[k] = out;
  b->s.out_node[k] = (uint8_t)node;
  b->s.out_accumulate[k] = accumulate;
}

dhx_lop *dhx_emit_ew(dhx_oplist *l, const dhx_ewb *b, int64_t n, const char *note) {
  dhx_lop *op = dhx_lop_push(l, DHX_L_EW, 0, note);
  op->kspec.kind = DHX_K_ELTWISE;
  op->kspec.type = DHX_KT_F32;
  op->kspec.ew = dhx_intern_ew(&b->s);
  op->n = n;
  int k = 0;
  for (int i = 0; i < b->s.nout; i++) op->args[k++] = b->outs[i];
  for (int i = 0; i < b->s.nin; i++) op->args[k++] = b->ins[i];
  for (int i = 0; i < b->s.nscalars; i++) op->args[k++] = b->scalars[i];
  op->nargs = k;
  return op;
}

int dhx_lop_arg_effect(const dhx_lop *op, int j) {
  switch (op->kind) {
    case DHX_L_GEMM: return j < 2 || j == 3 ? 1 : j == 4 ? 2 : op->gemm->beta != 0 ? 3 : 2;
    case DHX_L_KERNEL: {
      dhx_kernel_spec s = dhx_lop_spec(op);
      return dhx_kernel_arg_writes(&s, j) ? 3 : 1;
    }
    case DHX_L_EW: return j < op->kspec.ew->nout ? 3 : 1;
    case DHX_L_ZERO: return 2;
    case DHX_L_GRAD_NORM: return j < 2 ? 2 : 1;
    case DHX_L_ALLREDUCE: return 3;
    case DHX_L_ALL_GATHER:
    case DHX_L_REDUCE_SCATTER:
    case DHX_L_ALL_TO_ALL: return j == 0 ? 1 : 2;
    default: return 3;
  }
}

bool dhx_lops_conflict(const dhx_graph *g, const dhx_lop *a, const dhx_lop *b) {
  for (int i = 0; i < a->nargs; i++) {
    if (a->args[i].kind != DHX_ARG_BUF) continue;
    int ta = a->args[i].tensor, ea = dhx_lop_arg_effect(a, i);
    for (int j = 0; j < b->nargs; j++) {
      if (b->args[j].kind != DHX_ARG_BUF) continue;
      int tb = b->args[j].tensor;
      bool same = ta == tb || g->tensors[ta].kind == DHX_T_VIEW ||
                  g->tensors[tb].kind == DHX_T_VIEW;
      if (same && ((ea | dhx_lop_arg_effect(b, j)) & 2)) return true;
    }
  }
  return false;
}

bool dhx_lop_barrier(const dhx_lop *op) {
  switch (op->kind) {
    case DHX_L_RECORD:
    case DHX_L_WAIT:
    case DHX_L_SEND:
    case DHX_L_RECV:
    case DHX_L_LOAD: return true;
    default: return false;
  }
}

bool dhx_lop_collective(dhx_lop_kind k) {
  return k == DHX_L_ALLREDUCE || k == DHX_L_ALL_GATHER || k == DHX_L_REDUCE_SCATTER ||
         k == DHX_L_ALL_TO_ALL;
}

void dhx_ew_operands(const dhx_lop *op, const dhx_operand **outs, const dhx_operand **ins,
                     const dhx_operand **scalars) {
  *outs = &op->args[0];
  *ins = &op->args[op->kspec.ew->nout];
  *scalars = &op->args[op->kspec.ew->nout + op->kspec.ew->nin];
}
