// plan_base.h — the part of the plan format's vocabulary that the compiler's IR speaks too:
// size limits, element types, parameter initialisation, instruction argument kinds, the
// per-step registers, the programs, a GEMM's shape and kernel argument types.
//
// It lives apart from plan.h so that the compiler's lower layers (compiler/ir, compiler/graph)
// can name these without seeing the plan itself: only the code that writes or reads a plan
// includes plan.h. plan.h includes this file, so the plan library sees one definition.
#ifndef DHX_PLAN_BASE_H
#define DHX_PLAN_BASE_H

#include <stdint.h>

#define DHX_NAME_MAX 96               // buffer and kernel names, NUL-terminated
#define DHX_MAX_DIMS 4
#define DHX_MAX_ARGS 16
#define DHX_MAX_STREAMS 16
#define DHX_ALIGN 64                  // every buffer offset is a multiple of this

// bf16: the top half of an f32 (8-bit exponent, 7-bit mantissa), storage only: kernels and
// GEMMs compute in f32 and round to nearest even when they store (docs/architecture.md,
// "Mixed precision").
typedef enum { DHX_F32 = 1, DHX_I32 = 2, DHX_F64 = 3, DHX_BF16 = 4 } dhx_dtype;

// Bytes per element of a dtype (0 for an unknown one): the one table the compiler's IR and the
// plan library share (plan_util.h: dhx_dtype_size).
static inline int64_t dhx_dtype_bytes(uint32_t dtype) {
  switch (dtype) {
    case DHX_F32: return 4;
    case DHX_I32: return 4;
    case DHX_F64: return 8;
    case DHX_BF16: return 2;
  }
  return 0;
}

typedef enum { DHX_INIT_NONE = 0, DHX_INIT_ZEROS, DHX_INIT_ONES, DHX_INIT_NORMAL } dhx_init_kind;

typedef enum {
  DHX_ARG_BUF = 1,  // buf = buffer id, i = byte offset inside the buffer
  DHX_ARG_I64,      // i
  DHX_ARG_F64,      // f (also used for f32 kernel scalars; the kernel converts)
  DHX_ARG_REG,      // i = register id (dhx_reg); read as a double when the instruction runs
} dhx_arg_kind;

// Registers: per-step scalars computed by the runtime (or by OP_GRAD_NORM) and read by
// instructions through DHX_ARG_REG.
typedef enum {
  DHX_REG_LR = 0,      // learning rate of this step (warm-up, then cosine)
  DHX_REG_BC1,         // 1 - beta1^t   (t = step + 1)
  DHX_REG_BC2,         // 1 - beta2^t
  DHX_REG_CLIP_SCALE,  // min(1, clip / (norm + 1e-6)), 1 when clipping is off; set by OP_GRAD_NORM
                       // on the CPU (kernels read the scale OP_GRAD_NORM writes to memory)
  DHX_REG_GRAD_NORM,   // global gradient L2 norm; set by OP_GRAD_NORM on the CPU
  DHX_REG_NOISE_SEED,  // seed of this step's stochastic rounding: a 53-bit integer (exact in a
                       // double) mixed from the plan's seed and the step; may feed i64 kernel
                       // arguments that size no access (dhx_reg_is_integer)
  DHX_REG_COUNT
} dhx_reg;

// Registers whose values are whole numbers, which i64 kernel arguments may read.
static inline int dhx_reg_is_integer(int64_t reg) { return reg == DHX_REG_NOISE_SEED; }

#define DHX_MAX_TAG 32767  // the smallest tag bound MPI guarantees (SEND/RECV tags)

typedef struct dhx_plan_gemm {
  uint32_t trans_a, trans_b;     // 0 = as stored, 1 = transposed
  int64_t m, n, k;               // op(A) is m×k, op(B) is k×n, C is m×n
  int64_t lda, ldb, ldc;         // row strides in elements
  double alpha, beta;
  int64_t batch[2];              // outer and inner batch counts (1 when unused)
  int64_t stride_a[2], stride_b[2], stride_c[2];  // element strides per batch level
  uint32_t epilogue;             // dhx_gemm_epilogue (version 11)
} dhx_plan_gemm;

// What a GEMM does to its product before it stores C (cuBLASLt's epilogues, fused on GPU
// clusters): with BIAS, argument 3 is a bias of n elements of C's type added to every row;
// with BIAS_GELU also argument 4, the pre-activation (C's type, its rows ldc apart like C's,
// disjoint from C), which gets product + bias while C gets gelu of it (the tanh form of
// DHX_EW_GELU). Only unbatched GEMMs with beta 0, and ldc a multiple of 8 (cuBLASLt's rule for
// the pre-activation's leading dimension).
typedef enum { DHX_GEMM_PLAIN = 0, DHX_GEMM_BIAS = 1, DHX_GEMM_BIAS_GELU = 2 } dhx_gemm_epilogue;
// The arguments of a GEMM with epilogue e: 3 (A, B, C), 4 (+ bias) or 5 (+ pre-activation).
static inline int dhx_gemm_nargs(uint32_t e) { return e == DHX_GEMM_BIAS_GELU ? 5 : e ? 4 : 3; }

typedef enum {
  DHX_PROG_BEGIN = 0,  // once per step, before the micro-batches
  DHX_PROG_MICRO,      // forward + backward of one micro-batch, accumulating gradients
  DHX_PROG_STEP,       // gradient reduction, clipping, optimizer
  DHX_PROG_EVAL,       // forward + per-position loss of one micro-batch, no gradients
  DHX_PROG_COUNT
} dhx_prog_kind;

// Kernel signature types.
typedef enum { DHX_KARG_PTR = 1, DHX_KARG_I64, DHX_KARG_F32, DHX_KARG_F64 } dhx_karg_type;

#endif
