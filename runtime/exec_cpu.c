// exec_cpu.c — the CPU backend's instruction executor (a dhx_exec_fn, called by the streams,
// which complete its deferred collectives at their WAIT through dhx_exec_cpu_complete).
//
// The plan is validated before anything runs, so pointers computed here are inside the arena
// and every kernel, buffer and register id is in range.
#include <math.h>
#include <string.h>

#include "dhxrt.h"

// Kernels are split across the pool in ranges of at least this many indices. An index is a
// row or an element depending on the kernel; 16 keeps a kernel over a handful of rows inline
// while anything the size of a real layer is spread over every worker.
#define KERNEL_GRAIN 16
// ZERO clears memory in blocks of this many bytes, at least 4 blocks per worker.
#define ZERO_BLOCK (64 * 1024)

static void *arg_ptr(const dhx_rt *rt, const dhx_plan_arg *a) {
  return rt->arena.base + rt->rank->buffers[a->buf].offset + a->i;
}

static double arg_scalar(const dhx_rt *rt, const dhx_plan_arg *a) {
  return a->kind == DHX_ARG_REG ? rt->regs[a->i] : a->f;
}

typedef struct kernel_job {
  dhx_kernel_fn fn;
  dhx_slot args[DHX_MAX_ARGS];
} kernel_job;

static void kernel_range(void *ctx, int64_t begin, int64_t end) {
  kernel_job *job = ctx;
  job->fn(job->args, begin, end);
}

static void exec_kernel(dhx_rt *rt, const dhx_plan_instr *in) {
  const dhx_plan_kernel *k = &rt->plan->kernels[in->kernel];
  kernel_job job = {.fn = rt->kernels.fn[in->kernel]};
  for (uint32_t j = 0; j < k->nargs; j++) {
    const dhx_plan_arg *a = &in->args[j];
    switch (k->arg_types[j]) {
      case DHX_KARG_PTR: job.args[j].p = arg_ptr(rt, a); break;
      case DHX_KARG_I64:  // an integer register (validated) or a constant
        job.args[j].i = a->kind == DHX_ARG_REG ? (int64_t)rt->regs[a->i] : a->i;
        break;
      default: job.args[j].f = arg_scalar(rt, a); break;  // F32 / F64: passed as double
    }
  }
  dhx_pool_for(rt->pool, in->n, KERNEL_GRAIN, kernel_range, &job);
}

// A single GEMM runs on OpenBLAS's own threads when they compute its shape bit for bit as one
// thread does (blas_threads.c): they share the packed panels of B, which workers calling sgemm
// each on their rows of C pack once each. The other GEMMs are parallelised here, OpenBLAS
// single-threaded: over batches when there are several (attention's per-head products are too
// small to split well), otherwise over blocks of rows of C (or columns, for a short wide C).
// Each worker calls sgemm on a strided sub-matrix, so every element of C is computed exactly as
// the whole call would compute it.
#define GEMM_MIN_ROWS 32

typedef struct gemm_job {
  const dhx_plan_gemm *g;
  const float *a, *b;
  float *c;
  bool split_cols;  // single GEMM: split columns of C instead of rows
  int threads;      // OpenBLAS's threads, for a GEMM they run whole
} gemm_job;

// Batches [begin, end) of the flattened two-level batch index.
static void gemm_batches(void *ctx, int64_t begin, int64_t end) {
  gemm_job *j = ctx;
  const dhx_plan_gemm *g = j->g;
  for (int64_t t = begin; t < end; t++) {
    int64_t i = t / g->batch[1], l = t % g->batch[1];
    dhx_blas_sgemm(g, g->m, g->n, j->a + i * g->stride_a[0] + l * g->stride_a[1],
                   j->b + i * g->stride_b[0] + l * g->stride_b[1],
                   j->c + i * g->stride_c[0] + l * g->stride_c[1]);
  }
}

// Rows [begin, end) of C (or columns, when split_cols) of a single GEMM. Row r of op(A) starts
// at A + r*lda as stored, or at column r when A is transposed; likewise for columns of op(B).
static void gemm_block(void *ctx, int64_t begin, int64_t end) {
  gemm_job *j = ctx;
  const dhx_plan_gemm *g = j->g;
  if (j->split_cols)
    dhx_blas_sgemm(g, g->m, end - begin, j->a, j->b + (g->trans_b ? begin * g->ldb : begin),
                   j->c + begin);
  else
    dhx_blas_sgemm(g, end - begin, g->n, j->a + (g->trans_a ? begin : begin * g->lda), j->b,
                   j->c + begin * g->ldc);
}

// The GEMM's epilogue over C (m rows of n, ldc apart), after the product: the bias added to
// every row, and with BIAS_GELU the sum kept in `pre` and gelu of it in C (the tanh form, in
// double, as DHX_EW_GELU defines it; the generated kernel's IR differs by a few ulp).
void dhx_cpu_epilogue(const dhx_plan_gemm *g, float *c, const float *bias, float *pre) {
  bool gelu = g->epilogue == DHX_GEMM_BIAS_GELU;
  for (int64_t i = 0; i < g->m; i++) {
    float *row = c + i * g->ldc;
    for (int64_t j = 0; j < g->n; j++) row[j] += bias[j];
    if (!gelu) continue;
    float *pr = pre + i * g->ldc;
    for (int64_t j = 0; j < g->n; j++) {
      double x = pr[j] = row[j];
      row[j] = (float)(0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
    }
  }
}

static void gemm_threaded(void *ctx) {
  gemm_job *j = ctx;
  dhx_blas_sgemm_threaded(j->g, j->threads, j->a, j->b, j->c);
}

void dhx_cpu_gemm(dhx_rt *rt, const dhx_plan_gemm *g, const float *a, const float *b, float *c) {
  gemm_job job = {g, a, b, c, false, dhx_pool_threads(rt->pool)};
  int64_t batches = g->batch[0] * g->batch[1];
  if (dhx_blas_threaded(rt->blas, g)) {
    dhx_pool_alone(rt->pool, gemm_threaded, &job);
  } else if (batches > 1) {
    dhx_pool_for(rt->pool, batches, 1, gemm_batches, &job);
  } else if (g->m >= g->n || g->n < 2 * GEMM_MIN_ROWS) {
    dhx_pool_for(rt->pool, g->m, GEMM_MIN_ROWS, gemm_block, &job);
  } else {
    job.split_cols = true;
    dhx_pool_for(rt->pool, g->n, GEMM_MIN_ROWS, gemm_block, &job);
  }
}

typedef struct zero_job {
  uint8_t *p;
  int64_t bytes;
} zero_job;

static void zero_range(void *ctx, int64_t begin, int64_t end) {
  zero_job *job = ctx;
  int64_t from = begin * ZERO_BLOCK, to = end * ZERO_BLOCK;
  if (to > job->bytes) to = job->bytes;
  memset(job->p + from, 0, (size_t)(to - from));
}

static void exec_zero(dhx_rt *rt, const dhx_plan_instr *in) {
  zero_job job = {arg_ptr(rt, &in->args[0]), in->args[1].i};
  dhx_pool_for(rt->pool, (job.bytes + ZERO_BLOCK - 1) / ZERO_BLOCK, 4, zero_range, &job);
}

void dhx_grad_norm_of(const float *partials, int64_t count, double max_norm, double *norm,
                      double *scale) {
  double sum = 0;
  for (int64_t i = 0; i < count; i++) sum += partials[i];  // in double, in a fixed order
  *norm = sqrt(sum);
  *scale = max_norm > 0 ? fmin(1.0, max_norm / (*norm + 1e-6)) : 1.0;
}

// The global gradient norm and the clip scale the optimizer multiplies gradients by: into the
// registers (the training loop reports the norm) and into memory, where the AdamW kernels read
// the scale, as the plan's grad_norm kernel stores them on a GPU. A non-finite norm skips the
// rest of the program here (the NaN scale would make AdamW skip its update too).
static void exec_grad_norm(dhx_rt *rt, const dhx_plan_instr *in) {
  double norm, scale;
  dhx_grad_norm_of(arg_ptr(rt, &in->args[2]), in->args[3].i, in->args[4].f, &norm, &scale);
  rt->regs[DHX_REG_GRAD_NORM] = norm;
  rt->regs[DHX_REG_CLIP_SCALE] = scale;
  if (!isfinite(norm)) atomic_store(&rt->update_skipped, true);
  *(float *)arg_ptr(rt, &in->args[0]) = isfinite(norm) ? (float)scale : NAN;
  *(float *)arg_ptr(rt, &in->args[1]) = (float)norm;
}

void dhx_cpu_comm(dhx_rt *rt, const dhx_plan_instr *in, float *x, float *y) {
  dhx_comms *cs = rt->comms;
  int comm = dhx_rank_comm(rt->rank, in->comm), stream = (int)in->stream;
  switch ((dhx_op)in->op) {
    case DHX_OP_ALLREDUCE: dhx_allreduce_sum(cs, comm, stream, x, in->args[1].i); break;
    case DHX_OP_REDUCE_SCATTER: dhx_reduce_scatter_sum(cs, comm, stream, x, y, in->args[2].i); break;
    case DHX_OP_ALL_GATHER: dhx_all_gather(cs, comm, stream, x, y, in->args[2].i); break;
    case DHX_OP_ALL_TO_ALL: dhx_all_to_all(cs, comm, stream, x, y, in->args[2].i); break;
    case DHX_OP_SEND:
      dhx_send(cs, comm, stream, x, in->args[1].i, (int)in->args[2].i, (int)in->args[3].i);
      break;
    case DHX_OP_RECV:
      dhx_recv(cs, comm, stream, x, in->args[1].i, (int)in->args[2].i, (int)in->args[3].i);
      break;
    default: break;
  }
}

void *dhx_cpu_arg_ptr(const dhx_rt *rt, const dhx_plan_arg *a) { return arg_ptr(rt, a); }

// A GEMM on f32 operands in place, its epilogue after it; bf16 operands go through
// exec_bf16.c, which applies the epilogue to its f32 scratch.
static void exec_gemm(dhx_rt *rt, const dhx_plan_instr *in) {
  if (dhx_cpu_gemm_is_bf16(rt->rank, in)) {
    dhx_cpu_gemm_bf16(rt, in);
    return;
  }
  const dhx_plan_gemm *g = in->gemm;
  dhx_cpu_gemm(rt, g, arg_ptr(rt, &in->args[0]), arg_ptr(rt, &in->args[1]),
               arg_ptr(rt, &in->args[2]));
  if (g->epilogue)
    dhx_cpu_epilogue(g, arg_ptr(rt, &in->args[2]), arg_ptr(rt, &in->args[3]),
                     g->epilogue == DHX_GEMM_BIAS_GELU ? arg_ptr(rt, &in->args[4]) : NULL);
}

// A deferred f32 reduce-scatter or all-gather, posted: the streams complete it at its WAIT.
// The deferred all-reduce (a ring of two halves) and bf16 operands (widened into scratch that
// exec_bf16.c frees at once) run whole.
static bool posts(const dhx_plan_instr *in) {
  return dhx_instr_deferred(in) && in->dtype != DHX_BF16 &&
         (in->op == DHX_OP_REDUCE_SCATTER || in->op == DHX_OP_ALL_GATHER);
}

bool dhx_exec_cpu_post(void *ctx, const dhx_plan_instr *in) {
  dhx_rt *rt = ctx;
  // After a non-finite gradient norm only the norm itself is still computed (every rank sees
  // the same norm, so every rank skips the same instructions and no collective is left alone).
  if (atomic_load(&rt->update_skipped) && in->op != DHX_OP_GRAD_NORM) return false;
  if (dhx_op_on_comm(in->op)) dhx_comms_count_as(dhx_wire_kind_of(rt->plan, rt->rank, in));
  if (posts(in))
    return dhx_comms_post(rt->comms, dhx_rank_comm(rt->rank, in->comm), (int)in->stream,
                          (dhx_op)in->op, arg_ptr(rt, &in->args[0]), arg_ptr(rt, &in->args[1]),
                          in->args[2].i, in->event);
  switch ((dhx_op)in->op) {
    case DHX_OP_KERNEL: exec_kernel(rt, in); break;
    case DHX_OP_GEMM: exec_gemm(rt, in); break;
    case DHX_OP_ZERO: exec_zero(rt, in); break;
    case DHX_OP_ALLREDUCE:
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_GATHER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_SEND:
    case DHX_OP_RECV:
      if (in->dtype == DHX_BF16) dhx_cpu_comm_bf16(rt, in);
      else dhx_cpu_comm(rt, in, arg_ptr(rt, &in->args[0]),
                        in->nargs > 1 && in->args[1].kind == DHX_ARG_BUF ? arg_ptr(rt, &in->args[1]) : NULL);
      break;
    case DHX_OP_GRAD_NORM: exec_grad_norm(rt, in); break;
    case DHX_OP_LOAD_BATCH:
      if (rt->load_batch)
        rt->load_batch(rt->load_ctx, in->args[2].i, arg_ptr(rt, &in->args[0]),
                       arg_ptr(rt, &in->args[1]));
      break;
    case DHX_OP_RECORD:
    case DHX_OP_WAIT: break;  // handled by the streams
  }
  return false;
}

// A posted collective completes whatever update_skipped says: its peer posted it too.
void dhx_exec_cpu_complete(void *ctx, int32_t event) {
  dhx_rt *rt = ctx;
  dhx_comms_complete(rt->comms, event);
}

void dhx_exec_cpu(void *ctx, const dhx_plan_instr *in) {
  if (dhx_exec_cpu_post(ctx, in)) dhx_exec_cpu_complete(ctx, in->event);
}
