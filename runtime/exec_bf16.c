// exec_bf16.c — the CPU backend's emulation of bf16 operands, so that mixed-precision plans
// (train { precision: bf16 }) run and are tested where there is no GPU. The generated kernels
// read and write bf16 themselves; what is left is the instructions the backend computes in C:
// GEMMs (OpenBLAS has no bf16 sgemm on these machines) and collectives (MPI has no bf16 type).
// Each widens its bf16 operands into f32 scratch, runs the f32 path and rounds its bf16
// results once. The scratch is allocated per instruction: this is a test path, not the one a
// GPU takes (cuBLASLt and NCCL take bf16 directly, exec_cuda.c and exec_nccl.c).
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

void dhx_bf16_widen(const uint16_t *in, float *out, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)in[i] << 16;
    memcpy(&out[i], &u, 4);
  }
}

// Round to nearest even, as the kernels' kb_to_bf16: add 0x7fff plus the kept part's lowest
// bit; a NaN keeps its sign and top payload with the quiet bit set.
void dhx_bf16_narrow(const float *in, uint16_t *out, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &in[i], 4);
    out[i] = isnan(in[i]) ? (uint16_t)((u >> 16) | 0x40)
                          : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

static const dhx_plan_buffer *buffer_of(const dhx_rt *rt, const dhx_plan_arg *a) {
  return &rt->rank->buffers[a->buf];
}

// An f32 copy of n elements at argument a: the bytes themselves for an f32 buffer, a widened
// copy (to free) for a bf16 one.
static float *widened(const dhx_rt *rt, const dhx_plan_arg *a, int64_t n, bool bf16) {
  void *p = dhx_cpu_arg_ptr(rt, a);
  if (!bf16) return p;
  float *w = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  if (!w) {
    fprintf(stderr, "dhxrun: error: rank %d: out of memory widening %lld bf16 elements\n",
            rt->world_rank, (long long)n);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  dhx_bf16_widen(p, w, n);
  return w;
}

// Rounds an f32 result back into its bf16 argument and frees the scratch.
static void narrowed(const dhx_rt *rt, const dhx_plan_arg *a, float *w, int64_t n, bool bf16) {
  if (!bf16) return;
  dhx_bf16_narrow(w, dhx_cpu_arg_ptr(rt, a), n);
  free(w);
}

// Elements from an operand's first to its last over every batch (the validator's extent).
static int64_t span(int64_t rows, int64_t cols, int64_t ld, const dhx_plan_gemm *g,
                    const int64_t stride[2]) {
  int64_t last = (rows - 1) * ld + cols - 1;
  for (int l = 0; l < 2; l++) last += (g->batch[l] - 1) * stride[l];
  return last + 1;
}

bool dhx_cpu_gemm_is_bf16(const dhx_plan_rank *rank, const dhx_plan_instr *in) {
  for (int j = 0; j < 3; j++)
    if (rank->buffers[in->args[j].buf].dtype == DHX_BF16) return true;
  return false;
}

void dhx_cpu_gemm_bf16(dhx_rt *rt, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = in->gemm;
  int64_t n[3] = {
      span(g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda, g, g->stride_a),
      span(g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb, g, g->stride_b),
      span(g->m, g->n, g->ldc, g, g->stride_c)};
  bool half[3];
  float *w[3];
  for (int j = 0; j < 3; j++) {
    half[j] = buffer_of(rt, &in->args[j])->dtype == DHX_BF16;
    w[j] = widened(rt, &in->args[j], n[j], half[j]);  // C too: beta may read it
  }
  dhx_cpu_gemm(rt, g, w[0], w[1], w[2]);
  for (int j = 0; j < 2; j++)
    if (half[j]) free(w[j]);
  if (g->epilogue) {  // bias and pre-activation are of C's type
    float *bias = widened(rt, &in->args[3], g->n, half[2]);
    float *pre = g->epilogue == DHX_GEMM_BIAS_GELU ? widened(rt, &in->args[4], n[2], half[2])
                                                   : NULL;
    dhx_cpu_epilogue(g, w[2], bias, pre);
    if (half[2]) free(bias);
    if (pre) narrowed(rt, &in->args[4], pre, n[2], half[2]);
  }
  narrowed(rt, &in->args[2], w[2], n[2], half[2]);
}

// The collective's element counts: of its first buffer and of its second (0 where none).
static void comm_counts(const dhx_rt *rt, const dhx_plan_instr *in, int64_t *n0, int64_t *n1) {
  int32_t c = dhx_rank_comm(rt->rank, in->comm);
  int64_t p = c >= 0 && (uint32_t)c < rt->plan->ncomms ? rt->plan->comms[c].nranks : 1;
  *n1 = 0;
  switch ((dhx_op)in->op) {
    case DHX_OP_ALLREDUCE:
    case DHX_OP_SEND:
    case DHX_OP_RECV: *n0 = in->args[1].i; break;
    case DHX_OP_REDUCE_SCATTER: *n0 = in->args[2].i, *n1 = in->args[2].i / p; break;
    case DHX_OP_ALL_GATHER: *n0 = in->args[2].i / p, *n1 = in->args[2].i; break;
    default: *n0 = *n1 = in->args[2].i; break;  // all-to-all
  }
}

void dhx_cpu_comm_bf16(dhx_rt *rt, const dhx_plan_instr *in) {
  int64_t n0, n1;
  comm_counts(rt, in, &n0, &n1);
  bool two = in->op != DHX_OP_ALLREDUCE && in->op != DHX_OP_SEND && in->op != DHX_OP_RECV;
  float *x = widened(rt, &in->args[0], n0, true);
  float *y = two ? widened(rt, &in->args[1], n1, true) : NULL;
  dhx_cpu_comm(rt, in, x, y);
  if (two) {
    narrowed(rt, &in->args[1], y, n1, true);
    free(x);
  } else if (in->op == DHX_OP_SEND) {
    free(x);
  } else {  // the all-reduce's sums, the received elements
    narrowed(rt, &in->args[0], x, n0, true);
  }
}
