// exec_cuda.c — a rank's plan on one CUDA device (exec_cuda.h).
//
// One host thread issues a program's instructions to CUDA streams in an order where every
// RECORD comes before the WAITs on its event (dhx_cuda_issue_order); the plan's streams become
// CUDA streams and its events CUDA events, so the device keeps the cross-stream order the plan
// was verified with, and the host never waits inside a program. Kernels are the plan's PTX
// entries, launched over ceil(n · threads_per_index / 256) blocks of 256 threads: one thread
// per index, or a warp per row for row kernels (the entry computes its index from
// ctaid.x · ntid.x + tid.x and returns past n). GEMMs go to cuBLASLt: a row-major product
// C = op(A)·op(B) is the column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ, so the operands swap and
// every matrix is described by its row-major storage read column-major (rows and columns
// exchanged, the same leading dimension); the inner batch level is cuBLASLt's strided batch,
// the outer one a loop.
#include "exec_cuda.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec_nccl.h"

#define WORKSPACE_BYTES (32u << 20)  // cuBLASLt's scratch for its faster algorithms
#define CUBLAS_COMPUTE_32F 68
#define CUDA_R_32F 0
#define CUDA_R_16BF 14
#define CUBLAS_OP_N 0
#define CUBLAS_OP_T 1
#define DESC_TRANSA 3
#define DESC_TRANSB 4
#define DESC_EPILOGUE 7          // cublasLtMatmulDescAttributes_t
#define DESC_BIAS_POINTER 8
#define DESC_EPILOGUE_AUX_POINTER 11
#define DESC_EPILOGUE_AUX_LD 12
#define DESC_EPILOGUE_AUX_DATA_TYPE 22
#define DESC_BIAS_DATA_TYPE 26
#define EPILOGUE_BIAS 4          // cublasLtEpilogue_t
#define EPILOGUE_GELU_AUX_BIAS 164
#define LAYOUT_BATCH_COUNT 5
#define LAYOUT_STRIDED_BATCH_OFFSET 6
#define PREF_MAX_WORKSPACE_BYTES 1
#define JIT_ERROR_LOG_BUFFER 5
#define JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6
#define EVENT_DISABLE_TIMING 2
#define STREAM_NON_BLOCKING 1
#define ATTR_COMPUTE_CAPABILITY_MAJOR 75
#define ATTR_MULTIPROCESSOR_COUNT 16
#define WAIT_POLL_NS 100000  // between polls of the streams and of NCCL's asynchronous errors

typedef struct gemm_desc gemm_desc;
static void gemm_desc_free(dhx_cuda *c, gemm_desc *d);

struct dhx_cuda {
  dhx_cuda_api cu;
  dhx_cublaslt_api lt;
  const dhx_plan *plan;
  const dhx_plan_rank *rank;
  CUdevice dev;
  uint32_t max_grid;     // blocks of the largest launch (dhx_cuda_grid); 0 = uncapped
  CUcontext ctx;
  CUmodule module;
  CUfunction *fn;        // per kernel of the plan's table
  CUdeviceptr arena, workspace;
  uint32_t nstreams, nevents;
  CUstream streams[DHX_MAX_STREAMS];
  CUevent *events;
  // Programs run one after another on the device without the host waiting between them:
  // every stream starts a program after what stream 0 holds (fork), and stream 0 ends it after
  // every stream (join). Stream 0 also carries the copies, so they are ordered with programs.
  CUevent fork, join[DHX_MAX_STREAMS];
  cublasLtHandle_t blas;
  uint32_t *order[DHX_PROG_COUNT];  // issue order per program
  gemm_desc **gemms[DHX_PROG_COUNT];  // per program, per instruction: a GEMM's kept descriptors
  // LOAD_BATCH: the training loop's loader fills a page-locked slot per micro-batch of the
  // step, which is copied to the device on the instruction's stream (so the copy overlaps
  // whatever the other streams compute). A slot is not reused before the program has ended.
  dhx_cuda_loader loader;
  void *loader_ctx;
  int32_t *staging;  // slots × (tokens, targets), rows_per_batch values each
  int64_t staging_slots, batch_values;
  dhx_nccl *nccl;                   // NULL until dhx_cuda_connect
};

// ---- marshalling -------------------------------------------------------------------------------

static CUdeviceptr device_address(const dhx_plan_rank *rank, CUdeviceptr arena,
                                  const dhx_plan_arg *a) {
  return arena + (CUdeviceptr)rank->buffers[a->buf].offset + (CUdeviceptr)a->i;
}

static double scalar(const dhx_plan_arg *a, const double *regs) {
  return a->kind == DHX_ARG_REG ? regs[a->i] : a->f;
}

uint32_t dhx_cuda_grid(int64_t n, uint32_t threads_per_index, uint32_t indices_per_thread,
                       uint32_t max_grid) {
  if (n <= 0) return 0;
  uint64_t ipt = indices_per_thread ? indices_per_thread : 1;
  uint64_t threads = ((uint64_t)n + ipt - 1) / ipt * threads_per_index;
  uint64_t grid = (threads + DHX_CUDA_BLOCK - 1) / DHX_CUDA_BLOCK;
  uint64_t cap = max_grid ? max_grid : INT32_MAX;
  return (uint32_t)(grid < cap ? grid : cap);
}

void dhx_cuda_marshal(const dhx_plan *plan, const dhx_plan_rank *rank, const dhx_plan_instr *in,
                      CUdeviceptr arena, const double *regs, uint32_t max_grid,
                      dhx_cuda_launch *out) {
  const dhx_plan_kernel *k = &plan->kernels[in->kernel];
  memset(out, 0, sizeof *out);
  for (uint32_t j = 0; j < k->nargs; j++) {
    const dhx_plan_arg *a = &in->args[j];
    uint64_t *slot = &out->slots[j];
    switch (k->arg_types[j]) {
      case DHX_KARG_PTR: *slot = device_address(rank, arena, a); break;
      case DHX_KARG_I64: {
        int64_t v = a->kind == DHX_ARG_REG ? (int64_t)regs[a->i] : a->i;
        memcpy(slot, &v, sizeof v);
        break;
      }
      case DHX_KARG_F32: {
        float v = (float)scalar(a, regs);
        memcpy(slot, &v, sizeof v);
        break;
      }
      default: {
        double v = scalar(a, regs);
        memcpy(slot, &v, sizeof v);
      }
    }
  }
  memcpy(&out->slots[k->nargs], &in->n, sizeof in->n);
  out->nparams = k->nargs + 1;
  for (uint32_t j = 0; j < out->nparams; j++) out->params[j] = &out->slots[j];
  // A warp-per-row kernel runs threads_per_index threads per index (validated: 1 or 32, and
  // the block a multiple of 32, so a warp never straddles two blocks); a wide kernel takes
  // indices_per_thread indices per thread.
  out->block = DHX_CUDA_BLOCK;
  out->grid = dhx_cuda_grid(in->n, k->threads_per_index, k->indices_per_thread, max_grid);
}

// ---- issue order -------------------------------------------------------------------------------

bool dhx_cuda_issue_order(const dhx_plan_program *p, uint32_t *order) {
  uint8_t *recorded = calloc(p->nevents ? p->nevents : 1, 1);
  if (!recorded) return false;
  uint32_t pos[DHX_MAX_STREAMS] = {0}, n = 0;
  bool progress = true;
  while (progress) {
    progress = false;
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
      for (; pos[s] < p->ninstrs; pos[s]++) {
        const dhx_plan_instr *in = &p->instrs[pos[s]];
        if (in->stream != s) continue;
        if (in->op == DHX_OP_WAIT && !recorded[in->event]) break;
        if (dhx_instr_records(in)) recorded[in->event] = 1;
        order[n++] = pos[s];
        progress = true;
      }
  }
  free(recorded);
  return n == p->ninstrs;
}

// ---- the driver's errors -----------------------------------------------------------------------

static bool cu_ok(dhx_cuda *c, CUresult r, const char *call, char *err, size_t errlen) {
  if (r == 0) return true;
  const char *name = NULL, *text = NULL;
  if (c->cu.cuGetErrorName(r, &name) != 0) name = NULL;
  if (c->cu.cuGetErrorString(r, &text) != 0) text = NULL;
  snprintf(err, errlen, "%s failed: %s (%s)", call, name ? name : "CUDA error",
           text ? text : "no description");
  return false;
}

static bool lt_ok(dhx_cuda *c, cublasStatus_t r, const char *call, char *err, size_t errlen) {
  if (r == 0) return true;
  const char *s = c->lt.cublasLtGetStatusString(r);
  snprintf(err, errlen, "%s failed: %s", call, s ? s : "cuBLAS error");
  return false;
}

#define CU(call) \
  if (!cu_ok(c, c->cu.call, #call, err, errlen)) return false
#define LT(call) \
  if (!lt_ok(c, c->lt.call, #call, err, errlen)) goto done

// ---- opening -----------------------------------------------------------------------------------

static bool load_module(dhx_cuda *c, const char *ptx, char *err, size_t errlen) {
  char log[4096] = "";
  int opts[2] = {JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[2] = {log, (void *)(uintptr_t)sizeof log};
  CUresult r = c->cu.cuModuleLoadDataEx(&c->module, ptx, 2, opts, values);
  if (r != 0) {
    char why[512];
    cu_ok(c, r, "cuModuleLoadDataEx", why, sizeof why);
    snprintf(err, errlen, "the plan's PTX does not load: %s%s%s", why, log[0] ? "\n" : "", log);
    return false;
  }
  c->fn = calloc(c->plan->nkernels ? c->plan->nkernels : 1, sizeof(CUfunction));
  if (!c->fn) return false;
  for (uint32_t k = 0; k < c->plan->nkernels; k++) {
    CUresult rk = c->cu.cuModuleGetFunction(&c->fn[k], c->module, c->plan->kernels[k].name);
    if (rk != 0) {
      char why[512];
      cu_ok(c, rk, "cuModuleGetFunction", why, sizeof why);
      snprintf(err, errlen, "kernel '%s' is not in the plan's PTX: %s", c->plan->kernels[k].name,
               why);
      return false;
    }
  }
  return true;
}

static bool create_queues(dhx_cuda *c, char *err, size_t errlen) {
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_plan_program *prog = &c->rank->programs[p];
    if (prog->nstreams > c->nstreams) c->nstreams = prog->nstreams;
    if (prog->nevents > c->nevents) c->nevents = prog->nevents;
    c->order[p] = malloc(sizeof(uint32_t) * (prog->ninstrs ? prog->ninstrs : 1));
    c->gemms[p] = calloc(prog->ninstrs ? prog->ninstrs : 1, sizeof(gemm_desc *));
    if (!c->gemms[p]) return false;
    if (!c->order[p] || !dhx_cuda_issue_order(prog, c->order[p])) {
      snprintf(err, errlen, "program %d: no order issues every RECORD before its WAITs", p);
      return false;
    }
  }
  for (uint32_t s = 0; s < c->nstreams; s++) CU(cuStreamCreate(&c->streams[s], STREAM_NON_BLOCKING));
  c->events = calloc(c->nevents ? c->nevents : 1, sizeof(CUevent));
  if (!c->events) return false;
  for (uint32_t e = 0; e < c->nevents; e++) CU(cuEventCreate(&c->events[e], EVENT_DISABLE_TIMING));
  CU(cuEventCreate(&c->fork, EVENT_DISABLE_TIMING));
  for (uint32_t s = 1; s < c->nstreams; s++) CU(cuEventCreate(&c->join[s], EVENT_DISABLE_TIMING));
  return true;
}

static bool has_load_batch(const dhx_plan_rank *rank) {
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < rank->programs[p].ninstrs; i++)
      if (rank->programs[p].instrs[i].op == DHX_OP_LOAD_BATCH) return true;
  return false;
}

static bool create_staging(dhx_cuda *c, char *err, size_t errlen) {
  if (!has_load_batch(c->rank)) return true;
  c->staging_slots = c->plan->train.accum_steps > 0 ? c->plan->train.accum_steps : 1;
  c->batch_values = c->plan->train.micro_batch * c->plan->train.seq;
  size_t bytes = sizeof(int32_t) * 2 * (size_t)(c->staging_slots * c->batch_values);
  CU(cuMemHostAlloc((void **)&c->staging, bytes, 0));
  return true;
}

static bool open_device(dhx_cuda *c, int device, const char *ptx, char *err, size_t errlen) {
  if (!dhx_load_cuda(&c->cu, err, errlen) || !dhx_load_cublaslt(&c->lt, err, errlen)) return false;
  CU(cuInit(0));
  CU(cuDeviceGet(&c->dev, device));
  int sms = 0;
  CU(cuDeviceGetAttribute(&sms, ATTR_MULTIPROCESSOR_COUNT, c->dev));
  c->max_grid = sms > 0 ? (uint32_t)sms * DHX_CUDA_BLOCKS_PER_SM : 0;
  CU(cuDevicePrimaryCtxRetain(&c->ctx, c->dev));
  CU(cuCtxSetCurrent(c->ctx));
  if (!load_module(c, ptx, err, errlen)) return false;
  CU(cuMemAlloc_v2(&c->arena, (size_t)c->rank->arena_bytes));
  CU(cuMemAlloc_v2(&c->workspace, WORKSPACE_BYTES));
  if (!lt_ok(c, c->lt.cublasLtCreate(&c->blas), "cublasLtCreate", err, errlen)) return false;
  return create_queues(c, err, errlen) && create_staging(c, err, errlen);
}

dhx_cuda *dhx_cuda_open(const dhx_plan *plan, uint32_t r, int device, const char *ptx, char *err,
                        size_t errlen) {
  dhx_cuda *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->plan = plan;
  c->rank = &plan->ranks[r];
  if (!open_device(c, device, ptx, err, errlen)) {
    dhx_cuda_close(c);
    return NULL;
  }
  return c;
}

bool dhx_cuda_connect(dhx_cuda *c, dhx_comms *comms, char *err, size_t errlen) {
  c->nccl = dhx_nccl_open(c->plan, (uint32_t)(c->rank - c->plan->ranks), comms, err, errlen);
  return c->nccl != NULL;
}

void dhx_cuda_close(dhx_cuda *c) {
  if (!c) return;
  dhx_nccl_close(c->nccl);  // first: its communicators' work is on the streams
  if (c->cu.lib) {
    for (uint32_t e = 0; e < c->nevents && c->events; e++)
      if (c->events[e]) c->cu.cuEventDestroy_v2(c->events[e]);
    for (uint32_t s = 0; s < c->nstreams; s++)
      if (c->streams[s]) c->cu.cuStreamDestroy_v2(c->streams[s]);
    if (c->fork) c->cu.cuEventDestroy_v2(c->fork);
    for (uint32_t s = 1; s < c->nstreams; s++)
      if (c->join[s]) c->cu.cuEventDestroy_v2(c->join[s]);
    for (int p = 0; p < DHX_PROG_COUNT; p++)
      for (uint32_t i = 0; c->gemms[p] && i < c->rank->programs[p].ninstrs; i++)
        gemm_desc_free(c, c->gemms[p][i]);
    if (c->blas) c->lt.cublasLtDestroy(c->blas);
    if (c->staging) c->cu.cuMemFreeHost(c->staging);
    if (c->workspace) c->cu.cuMemFree_v2(c->workspace);
    if (c->arena) c->cu.cuMemFree_v2(c->arena);
    if (c->module) c->cu.cuModuleUnload(c->module);
    if (c->ctx) c->cu.cuDevicePrimaryCtxRelease_v2(c->dev);
  }
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    free(c->order[p]);
    free(c->gemms[p]);
  }
  free(c->events);
  free(c->fn);
  free(c);
}

// ---- instructions ------------------------------------------------------------------------------

// The cuBLASLt type of GEMM operand j (its buffer's: f32, or bf16 in mixed precision, where
// the product still accumulates in f32, CUBLAS_COMPUTE_32F) and its element size.
static int operand_type(const dhx_cuda *c, const dhx_plan_instr *in, int j) {
  return c->rank->buffers[in->args[j].buf].dtype == DHX_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}
static int64_t operand_bytes(const dhx_cuda *c, const dhx_plan_instr *in, int j) {
  return dhx_dtype_bytes(c->rank->buffers[in->args[j].buf].dtype);
}

// A row-major rows × cols matrix of `type` with row stride ld, as cuBLASLt's column-major
// layout (cols × rows, the same ld), batched `batch` times `stride` elements apart.
static cublasStatus_t layout(dhx_cuda *c, cublasLtMatrixLayout_t *l, int type, int64_t rows,
                             int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasStatus_t r = c->lt.cublasLtMatrixLayoutCreate(l, type, (uint64_t)cols, (uint64_t)rows,
                                                      ld);
  if (r != 0 || batch <= 1) return r;
  int32_t count = (int32_t)batch;
  r = c->lt.cublasLtMatrixLayoutSetAttribute(*l, LAYOUT_BATCH_COUNT, &count, sizeof count);
  if (r == 0)
    r = c->lt.cublasLtMatrixLayoutSetAttribute(*l, LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                               sizeof stride);
  return r;
}

// A GEMM's cuBLASLt descriptors and algorithm, made at its first run and kept: the
// heuristic query and the descriptors cost tens of microseconds, a small GEMM's whole time.
struct gemm_desc {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;  // B's storage is cuBLASLt's "A"
  uint8_t algo[96];  // cublasLtMatmulHeuristicResult_t: the algorithm is its first 64 bytes
};

static void gemm_desc_free(dhx_cuda *c, gemm_desc *d) {
  if (!d) return;
  if (d->lc) c->lt.cublasLtMatrixLayoutDestroy(d->lc);
  if (d->lb) c->lt.cublasLtMatrixLayoutDestroy(d->lb);
  if (d->la) c->lt.cublasLtMatrixLayoutDestroy(d->la);
  if (d->op) c->lt.cublasLtMatmulDescDestroy(d->op);
  free(d);
}

static gemm_desc *gemm_desc_make(dhx_cuda *c, const dhx_plan_instr *in, char *err,
                                 size_t errlen) {
  const dhx_plan_gemm *g = in->gemm;
  gemm_desc *d = calloc(1, sizeof *d);
  cublasLtMatmulPreference_t pref = NULL;
  int32_t ta = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  uint64_t ws = WORKSPACE_BYTES;
  int found = 0;
  bool ok = false;
  if (!d) {
    snprintf(err, errlen, "out of host memory");
    return NULL;
  }
  LT(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT(cublasLtMatmulDescSetAttribute(d->op, DESC_TRANSA, &ta, sizeof ta));
  LT(cublasLtMatmulDescSetAttribute(d->op, DESC_TRANSB, &tb, sizeof tb));
  if (g->epilogue) {
    // The bias runs along cuBLASLt's rows of D (the plan's columns of C); bias and
    // pre-activation are of D's type. The addresses are the plan's, fixed for the run.
    uint32_t epi = g->epilogue == DHX_GEMM_BIAS_GELU ? EPILOGUE_GELU_AUX_BIAS : EPILOGUE_BIAS;
    int32_t type = operand_type(c, in, 2);
    CUdeviceptr bias = device_address(c->rank, c->arena, &in->args[3]);
    LT(cublasLtMatmulDescSetAttribute(d->op, DESC_EPILOGUE, &epi, sizeof epi));
    LT(cublasLtMatmulDescSetAttribute(d->op, DESC_BIAS_POINTER, &bias, sizeof bias));
    LT(cublasLtMatmulDescSetAttribute(d->op, DESC_BIAS_DATA_TYPE, &type, sizeof type));
    if (g->epilogue == DHX_GEMM_BIAS_GELU) {
      CUdeviceptr pre = device_address(c->rank, c->arena, &in->args[4]);
      int64_t ld = g->ldc;
      LT(cublasLtMatmulDescSetAttribute(d->op, DESC_EPILOGUE_AUX_POINTER, &pre, sizeof pre));
      LT(cublasLtMatmulDescSetAttribute(d->op, DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
      LT(cublasLtMatmulDescSetAttribute(d->op, DESC_EPILOGUE_AUX_DATA_TYPE, &type, sizeof type));
    }
  }
  if (!lt_ok(c, layout(c, &d->la, operand_type(c, in, 1), g->trans_b ? g->n : g->k,
                       g->trans_b ? g->k : g->n, g->ldb, g->batch[1], g->stride_b[1]),
             "the layout of B", err, errlen) ||
      !lt_ok(c, layout(c, &d->lb, operand_type(c, in, 0), g->trans_a ? g->k : g->m,
                       g->trans_a ? g->m : g->k, g->lda, g->batch[1], g->stride_a[1]),
             "the layout of A", err, errlen) ||
      !lt_ok(c, layout(c, &d->lc, operand_type(c, in, 2), g->m, g->n, g->ldc, g->batch[1],
                       g->stride_c[1]), "the layout of C", err, errlen))
    goto done;
  LT(cublasLtMatmulPreferenceCreate(&pref));
  LT(cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  LT(cublasLtMatmulAlgoGetHeuristic(c->blas, d->op, d->la, d->lb, d->lc, d->lc, pref, 1,
                                    d->algo, &found));
  if (found < 1) {
    snprintf(err, errlen, "cuBLASLt has no algorithm for the %" PRId64 "x%" PRId64 "x%" PRId64
             " GEMM '%s'", g->m, g->n, g->k, dhx_instr_note(in));
    goto done;
  }
  ok = true;
done:
  if (pref) c->lt.cublasLtMatmulPreferenceDestroy(pref);
  if (!ok) {
    gemm_desc_free(c, d);
    return NULL;
  }
  return d;
}

// The kept descriptors of a GEMM of this rank's programs (made now if new); NULL for an
// instruction from elsewhere, which gets descriptors of its own for the call.
static gemm_desc **gemm_slot(dhx_cuda *c, const dhx_plan_instr *in) {
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_plan_program *prog = &c->rank->programs[p];
    if (c->gemms[p] && in >= prog->instrs && in < prog->instrs + prog->ninstrs)
      return &c->gemms[p][in - prog->instrs];
  }
  return NULL;
}

static bool gemm(dhx_cuda *c, const dhx_plan_instr *in, CUstream s, char *err, size_t errlen) {
  const dhx_plan_gemm *g = in->gemm;
  gemm_desc **slot = gemm_slot(c, in), *d = slot ? *slot : NULL;
  if (!d && !(d = gemm_desc_make(c, in, err, errlen))) return false;
  if (slot) *slot = d;
  bool ok = false;
  float alpha = (float)g->alpha, beta = (float)g->beta;
  for (int64_t b = 0; b < g->batch[0]; b++) {  // the outer batch level, one call each
    CUdeviceptr a = device_address(c->rank, c->arena, &in->args[0]) +
                    (CUdeviceptr)(b * g->stride_a[0] * operand_bytes(c, in, 0));
    CUdeviceptr bm = device_address(c->rank, c->arena, &in->args[1]) +
                     (CUdeviceptr)(b * g->stride_b[0] * operand_bytes(c, in, 1));
    CUdeviceptr cm = device_address(c->rank, c->arena, &in->args[2]) +
                     (CUdeviceptr)(b * g->stride_c[0] * operand_bytes(c, in, 2));
    LT(cublasLtMatmul(c->blas, d->op, &alpha, (const void *)(uintptr_t)bm, d->la,
                      (const void *)(uintptr_t)a, d->lb, &beta, (const void *)(uintptr_t)cm,
                      d->lc, (void *)(uintptr_t)cm, d->lc, d->algo,
                      (void *)(uintptr_t)c->workspace, WORKSPACE_BYTES, s));
  }
  ok = true;
done:
  if (!slot) gemm_desc_free(c, d);
  return ok;
}

void dhx_cuda_set_loader(dhx_cuda *c, dhx_cuda_loader loader, void *ctx) {
  c->loader = loader;
  c->loader_ctx = ctx;
}

// Micro-batch m's tokens and targets: filled by the loader on the host, copied on stream s.
static bool load_batch(dhx_cuda *c, const dhx_plan_instr *in, CUstream s, char *err,
                       size_t errlen) {
  int64_t m = in->args[2].i;
  if (!c->loader || !c->staging || m < 0 || m >= c->staging_slots) {
    snprintf(err, errlen, "LOAD_BATCH of micro-batch %" PRId64 " ('%s'): %s", m, dhx_instr_note(in),
             !c->loader ? "no loader is set" : "outside the step's micro-batches");
    return false;
  }
  int32_t *tokens = c->staging + 2 * m * c->batch_values, *targets = tokens + c->batch_values;
  c->loader(c->loader_ctx, m, tokens, targets);
  size_t bytes = sizeof(int32_t) * (size_t)c->batch_values;
  CU(cuMemcpyHtoDAsync_v2(device_address(c->rank, c->arena, &in->args[0]), tokens, bytes, s));
  CU(cuMemcpyHtoDAsync_v2(device_address(c->rank, c->arena, &in->args[1]), targets, bytes, s));
  return true;
}

static bool issue(dhx_cuda *c, const dhx_plan_instr *in, const double *regs, char *err,
                  size_t errlen) {
  CUstream s = c->streams[in->stream];
  const uint32_t alone = 0;  // a collective or transfer on its own: a group of one
  if (dhx_op_on_comm(in->op)) {
    if (!dhx_nccl_issue(c->nccl, c->rank, c->arena, in, &alone, 1, s, err, errlen)) return false;
    if (dhx_instr_deferred(in)) CU(cuEventRecord(c->events[in->event], s));  // stream order
    return true;
  }
  switch (in->op) {
    case DHX_OP_KERNEL:
    case DHX_OP_GRAD_NORM: {  // its grad_norm kernel, n = 1: the norm and clip scale stay on the device
      dhx_cuda_launch l;
      dhx_cuda_marshal(c->plan, c->rank, in, c->arena, regs, c->max_grid, &l);
      if (l.grid == 0) return true;
      CU(cuLaunchKernel(c->fn[in->kernel], l.grid, 1, 1, l.block, 1, 1, 0, s, l.params, NULL));
      return true;
    }
    case DHX_OP_GEMM: return gemm(c, in, s, err, errlen);
    case DHX_OP_LOAD_BATCH: return load_batch(c, in, s, err, errlen);
    case DHX_OP_ZERO:
      CU(cuMemsetD8Async(device_address(c->rank, c->arena, &in->args[0]), 0,
                         (size_t)in->args[1].i, s));
      return true;
    case DHX_OP_RECORD: CU(cuEventRecord(c->events[in->event], s)); return true;
    case DHX_OP_WAIT: CU(cuStreamWaitEvent(s, c->events[in->event], 0)); return true;
    default:  // every op a validated plan holds is above; a newer op would land here
      snprintf(err, errlen, "the CUDA backend does not run instructions of op %u ('%s')",
               in->op, dhx_instr_note(in));
      return false;
  }
}

// Waits for the first `n` streams, polling NCCL's asynchronous errors in between: a collective
// whose peer is gone never finishes, so a plain synchronize would hang where this fails.
static bool wait_streams(dhx_cuda *c, uint32_t n, char *err, size_t errlen) {
  struct timespec pause = {0, WAIT_POLL_NS};
  for (uint32_t done = 0;;) {  // streams [0, done) have finished
    if (!dhx_nccl_check(c->nccl, err, errlen)) return false;
    for (; done < n; done++) {
      CUresult r = c->cu.cuStreamQuery(c->streams[done]);
      if (r == DHX_CUDA_ERROR_NOT_READY) break;
      if (!cu_ok(c, r, "cuStreamQuery", err, errlen)) return false;
    }
    if (done == n) return true;
    nanosleep(&pause, NULL);
  }
}

bool dhx_cuda_wait(dhx_cuda *c, char *err, size_t errlen) {
  return wait_streams(c, 1, err, errlen);  // stream 0 has joined every program's streams
}

bool dhx_cuda_issue(dhx_cuda *c, const dhx_plan_instr *in, const double *regs, char *err,
                    size_t errlen) {
  return issue(c, in, regs, err, errlen);
}

bool dhx_cuda_sync(dhx_cuda *c, char *err, size_t errlen) {
  return wait_streams(c, c->nstreams, err, errlen);
}

// Copies go on stream 0 and wait for it: they happen between programs, when every stream is idle.
bool dhx_cuda_upload(dhx_cuda *c, uint64_t offset, const void *host, size_t bytes, char *err,
                     size_t errlen) {
  if (bytes == 0) return true;
  CU(cuMemcpyHtoDAsync_v2(c->arena + offset, host, bytes, c->streams[0]));
  return dhx_cuda_wait(c, err, errlen);
}

bool dhx_cuda_download(dhx_cuda *c, uint64_t offset, void *host, size_t bytes, char *err,
                       size_t errlen) {
  if (bytes == 0) return true;
  CU(cuMemcpyDtoHAsync_v2(host, c->arena + offset, bytes, c->streams[0]));
  return dhx_cuda_wait(c, err, errlen);
}

bool dhx_cuda_copy_async(dhx_cuda *c, uint64_t offset, void *host, size_t bytes, bool up,
                         char *err, size_t errlen) {
  if (bytes == 0) return true;
  if (up) {
    CU(cuMemcpyHtoDAsync_v2(c->arena + offset, host, bytes, c->streams[0]));
  } else {
    CU(cuMemcpyDtoHAsync_v2(host, c->arena + offset, bytes, c->streams[0]));
  }
  return true;
}

void *dhx_cuda_host_alloc(dhx_cuda *c, size_t bytes, char *err, size_t errlen) {
  void *p = NULL;
  return cu_ok(c, c->cu.cuMemHostAlloc(&p, bytes ? bytes : 1, 0), "cuMemHostAlloc", err, errlen)
             ? p : NULL;
}

void dhx_cuda_host_free(dhx_cuda *c, void *p) {
  if (c && p) c->cu.cuMemFreeHost(p);
}

// Stream s ≥ 1 starts the program after what stream 0 holds; stream 0 ends it after them all.
static bool fork_streams(dhx_cuda *c, uint32_t n, char *err, size_t errlen) {
  if (n < 2) return true;
  CU(cuEventRecord(c->fork, c->streams[0]));
  for (uint32_t s = 1; s < n; s++) CU(cuStreamWaitEvent(c->streams[s], c->fork, 0));
  return true;
}

static bool join_streams(dhx_cuda *c, uint32_t n, char *err, size_t errlen) {
  for (uint32_t s = 1; s < n; s++) {
    CU(cuEventRecord(c->join[s], c->streams[s]));
    CU(cuStreamWaitEvent(c->streams[0], c->join[s], 0));
  }
  return true;
}

bool dhx_cuda_issue_program(dhx_cuda *c, int prog, const double *regs, char *err,
                            size_t errlen) {
  const dhx_plan_program *p = &c->rank->programs[prog];
  const uint32_t *order = c->order[prog];
  if (!fork_streams(c, p->nstreams, err, errlen)) return false;
  for (uint32_t i = 0, k; i < p->ninstrs; i += k ? k : 1) {
    k = dhx_nccl_group_length(p, order, i, p->ninstrs);  // 0: not a collective or transfer
    if (k ? !dhx_nccl_issue(c->nccl, c->rank, c->arena, p->instrs, order + i, k,
                            c->streams[p->instrs[order[i]].stream], err, errlen)
          : !issue(c, &p->instrs[order[i]], regs, err, errlen))
      return false;
  }
  return join_streams(c, p->nstreams, err, errlen);
}

bool dhx_cuda_run(dhx_cuda *c, int prog, const double *regs, char *err, size_t errlen) {
  return dhx_cuda_issue_program(c, prog, regs, err, errlen) && dhx_cuda_wait(c, err, errlen);
}

// ---- the device of this process ---------------------------------------------------------------

int dhx_cuda_local_device(int devices) {
  static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    char *end = NULL;
    long r = v && *v ? strtol(v, &end, 10) : -1;
    if (v && *v && !*end && r >= 0) return devices > 0 ? (int)(r % devices) : 0;
  }
  return 0;
}

int dhx_cuda_compute_major(int device) {
  dhx_cuda_api cu;
  char err[256];
  CUdevice dev;
  int major = 0;
  if (!dhx_load_cuda(&cu, err, sizeof err) || cu.cuInit(0) != 0 ||
      cu.cuDeviceGet(&dev, device) != 0 ||
      cu.cuDeviceGetAttribute(&major, ATTR_COMPUTE_CAPABILITY_MAJOR, dev) != 0)
    return 0;
  return major;
}

// ---- for tools: the device's name, timing ------------------------------------------------------

bool dhx_cuda_device_name(dhx_cuda *c, char *name, size_t len, char *err, size_t errlen) {
  CU(cuDeviceGetName(name, (int)len, c->dev));
  return true;
}

// One repetition of what is timed (an instruction, or a copy), issued to stream s.
typedef bool (*issue_reps_fn)(dhx_cuda *c, const void *what, CUstream s, char *err, size_t errlen);

// Issues `reps` repetitions on stream s between two timing events and waits: *ms is the
// device's time for all of them.

static bool time_reps(dhx_cuda *c, issue_reps_fn fn, const void *what, CUstream s, int reps,
                      double *ms, char *err, size_t errlen) {
  CUevent start = NULL, end = NULL;
  float elapsed = 0;
  bool ok = cu_ok(c, c->cu.cuEventCreate(&start, 0), "cuEventCreate", err, errlen) &&
            cu_ok(c, c->cu.cuEventCreate(&end, 0), "cuEventCreate", err, errlen) &&
            cu_ok(c, c->cu.cuEventRecord(start, s), "cuEventRecord", err, errlen);
  for (int r = 0; ok && r < reps; r++) ok = fn(c, what, s, err, errlen);
  ok = ok && cu_ok(c, c->cu.cuEventRecord(end, s), "cuEventRecord", err, errlen) &&
       cu_ok(c, c->cu.cuEventSynchronize(end), "cuEventSynchronize", err, errlen) &&
       cu_ok(c, c->cu.cuEventElapsedTime(&elapsed, start, end), "cuEventElapsedTime", err, errlen);
  if (start) c->cu.cuEventDestroy_v2(start);
  if (end) c->cu.cuEventDestroy_v2(end);
  *ms = elapsed;
  return ok;
}

typedef struct timed_instr {
  const dhx_plan_instr *in;
  const double *regs;
} timed_instr;

static bool issue_instr(dhx_cuda *c, const void *what, CUstream s, char *err, size_t errlen) {
  (void)s;  // the instruction's own stream
  const timed_instr *t = what;
  return issue(c, t->in, t->regs, err, errlen);
}

bool dhx_cuda_time_instr(dhx_cuda *c, const dhx_plan_instr *in, const double *regs, int reps,
                         double *ms, char *err, size_t errlen) {
  timed_instr t = {in, regs};
  return time_reps(c, issue_instr, &t, c->streams[in->stream], reps, ms, err, errlen);
}

typedef struct timed_copy {
  CUdeviceptr dst, src;
  size_t bytes;
} timed_copy;

static bool issue_copy(dhx_cuda *c, const void *what, CUstream s, char *err, size_t errlen) {
  const timed_copy *t = what;
  CU(cuMemcpyDtoDAsync_v2(t->dst, t->src, t->bytes, s));
  return true;
}

bool dhx_cuda_time_copy(dhx_cuda *c, size_t bytes, int reps, double *ms, char *err,
                        size_t errlen) {
  timed_copy t = {0, 0, bytes};
  bool ok = cu_ok(c, c->cu.cuMemAlloc_v2(&t.src, bytes), "cuMemAlloc", err, errlen) &&
            cu_ok(c, c->cu.cuMemAlloc_v2(&t.dst, bytes), "cuMemAlloc", err, errlen) &&
            cu_ok(c, c->cu.cuMemsetD8Async(t.src, 1, bytes, c->streams[0]), "cuMemsetD8Async",
                  err, errlen) &&
            issue_copy(c, &t, c->streams[0], err, errlen) &&  // a first copy, not timed
            time_reps(c, issue_copy, &t, c->streams[0], reps, ms, err, errlen);
  if (t.dst) c->cu.cuMemFree_v2(t.dst);
  if (t.src) c->cu.cuMemFree_v2(t.src);
  return ok;
}

// ---- reading the PTX ---------------------------------------------------------------------------

char *dhx_cuda_read_ptx(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  long n = -1;
  if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
  char *text = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
  bool ok = text && fread(text, 1, (size_t)n, f) == (size_t)n;
  if (f) fclose(f);
  if (!ok) {
    snprintf(err, errlen, "%s: cannot read the PTX", path);
    free(text);
    return NULL;
  }
  text[n] = '\0';
  return text;
}
