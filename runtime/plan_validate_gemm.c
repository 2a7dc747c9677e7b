// plan_validate_gemm.c — a GEMM instruction: operand types a backend computes (f32, or bf16
// A and B with a bf16 or f32 C: cuBLASLt's mixed-precision forms, f32 arithmetic), every
// operand's extent over all batches inside its buffer, and batches that write disjoint parts
// of C (they run in parallel).
#include <inttypes.h>
#include <stdio.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

// The last element index a row-major operand touches over all batches: `rows`×`cols` as
// stored, row stride `ld`. False on overflow.
static bool last_element(int64_t rows, int64_t cols, int64_t ld, const int64_t batch[2],
                         const int64_t stride[2], int64_t *last) {
  int64_t x, y;
  if (__builtin_mul_overflow(rows - 1, ld, &x) || __builtin_add_overflow(x, cols - 1, &x))
    return false;
  for (int l = 0; l < 2; l++) {
    if (__builtin_mul_overflow(batch[l] - 1, stride[l], &y) || __builtin_add_overflow(x, y, &x))
      return false;
  }
  *last = x;
  return true;
}

static bool check_gemm_operand(plan_check_ctx *v, const dhx_plan_instr *in, int which,
                               int64_t rows, int64_t cols, int64_t ld, const int64_t stride[2]) {
  static const char *names = "ABC";
  const dhx_plan_gemm *g = in->gemm;
  const dhx_plan_arg *a = &in->args[which];
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[a->buf];
  CHECK(b->dtype == DHX_F32 || b->dtype == DHX_BF16, "GEMM operand %c: buffer '%s' is %s (must "
        "be f32 or bf16)", names[which], b->name, dhx_dtype_name(b->dtype));
  int64_t size = dhx_dtype_size(b->dtype);
  CHECK(ld >= cols && ld <= INT32_MAX, "GEMM operand %c: leading dimension %" PRId64
        " is smaller than its row length %" PRId64, names[which], ld, cols);
  for (int l = 0; l < 2; l++)
    CHECK(stride[l] >= 0, "GEMM operand %c: negative batch stride %" PRId64, names[which], stride[l]);
  int64_t last, need;
  bool ok = last_element(rows, cols, ld, g->batch, stride, &last) &&
            !__builtin_mul_overflow(last + 1, size, &need) &&
            !__builtin_add_overflow(need, a->i, &need);
  CHECK(ok, "GEMM operand %c: extent overflows: %" PRId64 "x%" PRId64 " (ld %" PRId64 "), batch %"
        PRId64 " x stride %" PRId64 ", batch %" PRId64 " x stride %" PRId64 " in buffer '%s'",
        names[which], rows, cols, ld, g->batch[0], stride[0], g->batch[1], stride[1], b->name);
  CHECK(need <= b->nbytes, "GEMM operand %c extends past buffer '%s' (needs %" PRId64 " bytes, "
        "has %" PRId64 "): %" PRId64 "x%" PRId64 " (ld %" PRId64 ") from byte %" PRId64 ", batch %"
        PRId64 " x stride %" PRId64 ", batch %" PRId64 " x stride %" PRId64, names[which], b->name,
        need, b->nbytes, rows, cols, ld, a->i, g->batch[0], stride[0], g->batch[1], stride[1]);
  return true;
}

// Batches run in parallel, so distinct batches must write distinct parts of C. Taking the
// levels by increasing stride, each must either step over everything written so far (blocks
// one after another) or, while that is still a rectangle, set copies of it side by side within
// a row of ldc (attention's heads as column blocks). Besides the race this rules out, it bounds
// the batch count by the size of C. C's extent is checked first, so nothing here overflows.
static bool check_gemm_batches_disjoint(plan_check_ctx *v, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = in->gemm;
  const char *name = v->p->ranks[v->rank].buffers[in->args[2].buf].name;
  int inner = g->stride_c[0] <= g->stride_c[1] ? 0 : 1;
  int64_t cols = g->n;  // width of the rectangle written so far; -1 once it is not one
  int64_t span = (g->m - 1) * g->ldc + g->n;  // elements from the first written to the last
  for (int pass = 0; pass < 2; pass++) {
    int l = pass == 0 ? inner : 1 - inner;
    int64_t b = g->batch[l], s = g->stride_c[l];
    if (b == 1) continue;
    if (s >= span) {
      span += (b - 1) * s;
      cols = -1;
      continue;
    }
    CHECK(cols >= 0 && s >= cols && (b - 1) * s + cols <= g->ldc,
          "GEMM batches overlap in C: batch %" PRId64 " x stride %" PRId64 " neither steps over "
          "the %" PRId64 " floats written before it nor sets them side by side within ldc %" PRId64
          " (buffer '%s')", b, s, span, g->ldc, name);
    cols += (b - 1) * s;
    span = (g->m - 1) * g->ldc + cols;
  }
  return true;
}

// The epilogue's bias (n elements) and pre-activation (C's extent, disjoint from C), both of C's
// type; an unbatched GEMM with beta 0 and ldc a multiple of 8.
static bool check_gemm_epilogue(plan_check_ctx *v, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = in->gemm;
  const dhx_plan_buffer *bufs = v->p->ranks[v->rank].buffers;
  uint32_t tc = bufs[in->args[2].buf].dtype;
  CHECK(g->batch[0] == 1 && g->batch[1] == 1 && g->beta == 0 && g->ldc % 8 == 0,
        "a GEMM epilogue needs one batch, beta 0 and ldc a multiple of 8 (batch %" PRId64 "x%"
        PRId64 ", beta %g, ldc %" PRId64 ")", g->batch[0], g->batch[1], g->beta, g->ldc);
  for (int j = 3; j < dhx_gemm_nargs(g->epilogue); j++) {
    const dhx_plan_buffer *b = &bufs[in->args[j].buf];
    CHECK(b->dtype == tc, "GEMM epilogue %s: buffer '%s' is %s, C is %s", j == 3 ? "bias" :
          "pre-activation", b->name, dhx_dtype_name(b->dtype), dhx_dtype_name(tc));
    int64_t elems = j == 3 ? g->n : (g->m - 1) * g->ldc + g->n;
    if (!plan_check_region(v, in, j, elems, dhx_dtype_size(tc))) return false;
  }
  if (g->epilogue == DHX_GEMM_BIAS_GELU) {
    const dhx_plan_buffer *c = &bufs[in->args[2].buf], *p = &bufs[in->args[4].buf];
    int64_t size = dhx_dtype_size(tc), span = ((g->m - 1) * g->ldc + g->n) * size;
    int64_t c0 = c->offset + in->args[2].i, p0 = p->offset + in->args[4].i;
    CHECK(c0 + span <= p0 || p0 + span <= c0, "GEMM epilogue: the pre-activation in '%s' "
          "overlaps C in '%s'", p->name, c->name);
  }
  return true;
}

bool plan_check_gemm(plan_check_ctx *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_BUF,
                                   DHX_ARG_BUF};
  const dhx_plan_gemm *g = in->gemm;
  CHECK(g != NULL, "a GEMM without its shape");
  CHECK(g->epilogue <= DHX_GEMM_BIAS_GELU, "GEMM epilogue %u is not one of 0 (none), 1 (bias), "
        "2 (bias and gelu)", g->epilogue);
  if (!plan_check_arg_kinds(v, in, dhx_gemm_nargs(g->epilogue), kinds)) return false;
  CHECK(g->trans_a <= 1 && g->trans_b <= 1, "GEMM trans flags must be 0 or 1 (got %u, %u)",
        g->trans_a, g->trans_b);
  CHECK(g->m >= 1 && g->n >= 1 && g->k >= 1 && g->m <= INT32_MAX && g->n <= INT32_MAX &&
            g->k <= INT32_MAX,
        "GEMM dimensions m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " must be in 1..2^31-1", g->m,
        g->n, g->k);
  CHECK(g->batch[0] >= 1 && g->batch[1] >= 1 && g->batch[0] <= INT32_MAX &&
            g->batch[1] <= INT32_MAX,
        "GEMM batch counts %" PRId64 "x%" PRId64 " must be positive", g->batch[0], g->batch[1]);
  CHECK(isfinite(g->alpha) && isfinite(g->beta), "GEMM alpha and beta must be finite");
  const dhx_plan_buffer *bufs = v->p->ranks[v->rank].buffers;
  uint32_t ta = bufs[in->args[0].buf].dtype, tb = bufs[in->args[1].buf].dtype;
  uint32_t tc = bufs[in->args[2].buf].dtype;
  CHECK(ta == tb && (ta == DHX_BF16 || tc == ta), "GEMM operand types %s x %s -> %s: A and B "
        "must have one type, and f32 A and B an f32 C", dhx_dtype_name(ta), dhx_dtype_name(tb),
        dhx_dtype_name(tc));
  // Stored shapes: op(A) is m×k, so A is k×m when transposed; likewise B.
  return check_gemm_operand(v, in, 0, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda,
                            g->stride_a) &&
         check_gemm_operand(v, in, 1, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb,
                            g->stride_b) &&
         check_gemm_operand(v, in, 2, g->m, g->n, g->ldc, g->stride_c) &&
         check_gemm_batches_disjoint(v, in) && (!g->epilogue || check_gemm_epilogue(v, in));
}
