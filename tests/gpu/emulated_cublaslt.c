// emulated_cublaslt.c — a stand-in cuBLASLt that computes on the host (device pointers are host
// addresses, as with tests/gpu/emulated_cuda.c), written from cuBLASLt's definitions rather
// than from the backend's use of them, so that it checks the backend's row-major to
// column-major translation:
//
//   D = alpha · op(A) · op(B) + beta · C, every matrix column-major: element (i, j) of a layout
//   of rows × cols with leading dimension ld is at i + j·ld; op(X) = X, or Xᵀ for
//   CUBLAS_OP_T (matmul descriptor attributes TRANSA / TRANSB); op(A) is m × k, op(B) k × n,
//   C and D m × n; with CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = b, matrix l of each operand starts
//   STRIDED_BATCH_OFFSET · l elements after the first. C is not read when beta is 0.
//
// Only what the backend needs is supported (fp32 data, or bf16 A and B with a bf16 or fp32 C
// and D as cuBLASLt's mixed-precision GEMMs; fp32 compute and scale, column order, host-pointer
// scalars; the BIAS and GELU_AUX_BIAS epilogues, unbatched, bias and aux of D's type: the bias
// is added to each column of D, aux gets the sum and D gelu of it, in the tanh form); anything
// else is refused with CUBLAS_STATUS_NOT_SUPPORTED rather than ignored.
// Sums accumulate in double; a bf16 D is rounded to nearest even once.
//
// DHX_EMULATED_CUBLASLT_FAULT=flip-transa (or flip-transb) inverts that transpose of every
// matmul: a backend with a wrong GEMM layout, for the tests that prove the checks catch one.
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {  // cublasStatus_t
  OK = 0,
  NOT_INITIALIZED = 1,
  ALLOC_FAILED = 3,
  INVALID_VALUE = 7,
  NOT_SUPPORTED = 15,
};

#define CUBLAS_COMPUTE_32F 68
#define CUDA_R_32F 0
#define CUDA_R_16BF 14
#define OP_N 0
#define OP_T 1
enum { DESC_COMPUTE_TYPE = 0, DESC_SCALE_TYPE = 1, DESC_POINTER_MODE = 2, DESC_TRANSA = 3,
       DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8, DESC_EPILOGUE_AUX_POINTER = 11,
       DESC_EPILOGUE_AUX_LD = 12, DESC_EPILOGUE_AUX_DATA_TYPE = 22, DESC_BIAS_DATA_TYPE = 26 };
enum { EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4, EPILOGUE_GELU_AUX_BIAS = 164 };
enum { LAYOUT_TYPE = 0, LAYOUT_ORDER = 1, LAYOUT_ROWS = 2, LAYOUT_COLS = 3, LAYOUT_LD = 4,
       LAYOUT_BATCH_COUNT = 5, LAYOUT_STRIDED_BATCH_OFFSET = 6 };
#define ORDER_COL 0
#define PREF_MAX_WORKSPACE_BYTES 1
#define HEURISTIC_RESULT_BYTES 96

typedef struct desc {
  int32_t transa, transb;
  uint32_t epilogue;             // EPILOGUE_DEFAULT, _BIAS or _GELU_AUX_BIAS
  const void *bias;              // a vector of D's rows
  void *aux;                     // GELU_AUX_BIAS: the GeLU's input, ld aux_ld
  int64_t aux_ld;
  int32_t bias_type, aux_type;   // -1: D's type
} desc;

typedef struct layout {
  int type;  // CUDA_R_32F or CUDA_R_16BF
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch;
  int64_t stride;  // elements between consecutive matrices of the batch
} layout;

typedef struct handle {
  int matmuls;
} handle;

size_t cublasLtGetVersion(void) { return 120800; }

const char *cublasLtGetStatusString(int s) {
  switch (s) {
    case OK: return "CUBLAS_STATUS_SUCCESS";
    case NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

int cublasLtCreate(handle **h) {
  *h = calloc(1, sizeof **h);
  return *h ? OK : ALLOC_FAILED;
}
int cublasLtDestroy(handle *h) {
  if (!h) return NOT_INITIALIZED;
  free(h);
  return OK;
}

int cublasLtMatmulDescCreate(desc **d, int compute, int scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return NOT_SUPPORTED;
  *d = calloc(1, sizeof **d);
  if (!*d) return ALLOC_FAILED;
  (*d)->epilogue = EPILOGUE_DEFAULT;
  (*d)->bias_type = (*d)->aux_type = -1;
  return OK;
}
int cublasLtMatmulDescDestroy(desc *d) {
  free(d);
  return OK;
}

// A 32-bit attribute value (the size must be the attribute's, as cuBLASLt checks).
static int int32_value(const void *buf, size_t size, int32_t *out) {
  if (!buf || size != sizeof *out) return INVALID_VALUE;
  memcpy(out, buf, sizeof *out);
  return OK;
}

static int operation(const void *buf, size_t size, int32_t *out) {
  int r = int32_value(buf, size, out);
  return r != OK ? r : *out == OP_N || *out == OP_T ? OK : NOT_SUPPORTED;
}

int cublasLtMatmulDescSetAttribute(desc *d, int attr, const void *buf, size_t size) {
  int32_t v;
  if (!d) return INVALID_VALUE;
  switch (attr) {
    case DESC_TRANSA: return operation(buf, size, &d->transa);
    case DESC_TRANSB: return operation(buf, size, &d->transb);
    case DESC_POINTER_MODE:  // host scalars only
      return int32_value(buf, size, &v) != OK ? INVALID_VALUE : v == 0 ? OK : NOT_SUPPORTED;
    case DESC_EPILOGUE:
      if (int32_value(buf, size, &v) != OK) return INVALID_VALUE;
      if (v != EPILOGUE_DEFAULT && v != EPILOGUE_BIAS && v != EPILOGUE_GELU_AUX_BIAS)
        return NOT_SUPPORTED;
      d->epilogue = (uint32_t)v;
      return OK;
    case DESC_BIAS_POINTER:
    case DESC_EPILOGUE_AUX_POINTER: {
      void *p;
      if (!buf || size != sizeof p) return INVALID_VALUE;
      memcpy(&p, buf, sizeof p);
      if (attr == DESC_BIAS_POINTER) d->bias = p;
      else d->aux = p;
      return OK;
    }
    case DESC_EPILOGUE_AUX_LD:
      if (!buf || size != sizeof d->aux_ld) return INVALID_VALUE;
      memcpy(&d->aux_ld, buf, sizeof d->aux_ld);
      return OK;
    case DESC_BIAS_DATA_TYPE:
    case DESC_EPILOGUE_AUX_DATA_TYPE:
      if (int32_value(buf, size, &v) != OK) return INVALID_VALUE;
      if (v != -1 && v != CUDA_R_32F && v != CUDA_R_16BF) return NOT_SUPPORTED;
      if (attr == DESC_BIAS_DATA_TYPE) d->bias_type = v;
      else d->aux_type = v;
      return OK;
    default: return NOT_SUPPORTED;  // epilogues, scales...: not emulated, so not accepted
  }
}

int cublasLtMatrixLayoutCreate(layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F && type != CUDA_R_16BF) return NOT_SUPPORTED;
  // Column-major: a column of `rows` elements must fit in the leading dimension.
  if (ld < 1 || (uint64_t)ld < rows) return INVALID_VALUE;
  *l = calloc(1, sizeof **l);
  if (!*l) return ALLOC_FAILED;
  **l = (layout){type, rows, cols, ld, 1, 0};
  return OK;
}
int cublasLtMatrixLayoutDestroy(layout *l) {
  free(l);
  return OK;
}

int cublasLtMatrixLayoutSetAttribute(layout *l, int attr, const void *buf, size_t size) {
  int32_t v;
  if (!l || !buf) return INVALID_VALUE;
  switch (attr) {
    case LAYOUT_BATCH_COUNT:
      if (int32_value(buf, size, &v) != OK || v < 1) return INVALID_VALUE;
      l->batch = v;
      return OK;
    case LAYOUT_STRIDED_BATCH_OFFSET:
      if (size != sizeof l->stride) return INVALID_VALUE;
      memcpy(&l->stride, buf, sizeof l->stride);
      return OK;
    case LAYOUT_ORDER:
      return int32_value(buf, size, &v) != OK ? INVALID_VALUE : v == ORDER_COL ? OK : NOT_SUPPORTED;
    default: return NOT_SUPPORTED;
  }
}

int cublasLtMatmulPreferenceCreate(void **p) {
  *p = malloc(1);
  return *p ? OK : ALLOC_FAILED;
}
int cublasLtMatmulPreferenceDestroy(void *p) {
  free(p);
  return OK;
}
int cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t size) {
  if (!p || !buf) return INVALID_VALUE;
  if (attr != PREF_MAX_WORKSPACE_BYTES) return NOT_SUPPORTED;
  return size == sizeof(uint64_t) ? OK : INVALID_VALUE;
}

// The transposes in effect: the descriptor's, or one inverted by the fault under test.
static void transposes(const desc *op, int32_t *ta, int32_t *tb) {
  const char *fault = getenv("DHX_EMULATED_CUBLASLT_FAULT");
  *ta = op->transa;
  *tb = op->transb;
  if (fault && strcmp(fault, "flip-transa") == 0) *ta = !*ta;
  if (fault && strcmp(fault, "flip-transb") == 0) *tb = !*tb;
}

// Whether the four layouts describe one product: op(A) m × k, op(B) k × n, C and D m × n,
// with one batch count.
static int shapes_agree(const desc *op, const layout *a, const layout *b, const layout *c,
                        const layout *d) {
  int32_t ta, tb;
  transposes(op, &ta, &tb);
  uint64_t m = c->rows, n = c->cols, k = ta ? a->rows : a->cols;
  uint64_t am = ta ? a->cols : a->rows, bk = tb ? b->cols : b->rows, bn = tb ? b->rows : b->cols;
  return am == m && bk == k && bn == n && d->rows == m && d->cols == n && a->batch == c->batch &&
         b->batch == c->batch && d->batch == c->batch;
}

int cublasLtMatmulAlgoGetHeuristic(handle *h, desc *op, layout *a, layout *b, layout *c,
                                   layout *d, void *pref, int requested, void *results,
                                   int *returned) {
  if (!h || !op || !a || !b || !c || !d || !pref || requested < 1 || !results || !returned)
    return INVALID_VALUE;
  if (!shapes_agree(op, a, b, c, d)) return INVALID_VALUE;
  memset(results, 0, HEURISTIC_RESULT_BYTES);  // one algorithm, no workspace, state success
  *returned = 1;
  return OK;
}

static size_t type_size(const layout *l) { return l->type == CUDA_R_16BF ? 2 : 4; }

// Element idx of a matrix of l's type.
static double load(const void *x, const layout *l, uint64_t idx) {
  float f;
  if (l->type == CUDA_R_16BF) {
    uint16_t h;
    memcpy(&h, (const char *)x + 2 * idx, 2);
    uint32_t u = (uint32_t)h << 16;
    memcpy(&f, &u, 4);
  } else {
    memcpy(&f, (const char *)x + 4 * idx, 4);
  }
  return f;
}

// v into element idx: f32, or bf16 rounded to nearest even (a NaN stays a quiet NaN).
static void store(void *x, const layout *l, uint64_t idx, double v) {
  float f = (float)v;
  if (l->type != CUDA_R_16BF) {
    memcpy((char *)x + 4 * idx, &f, 4);
    return;
  }
  uint32_t u;
  memcpy(&u, &f, 4);
  uint16_t h = f != f ? (uint16_t)((u >> 16) | 0x40) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  memcpy((char *)x + 2 * idx, &h, 2);
}

// Element (i, j) of op(X) for a column-major layout.
static double at(const float *x, const layout *l, int32_t trans, uint64_t i, uint64_t j) {
  return trans ? x[j + i * (uint64_t)l->ld] : x[i + j * (uint64_t)l->ld];
}

// Column j of op(A)·op(B) into sum[0..m): by columns of op(A) when A is stored as op(A) (its
// columns are contiguous), else by dot products along the stored columns.
static void product_column(const float *a, const layout *la, int32_t ta, const float *b,
                           const layout *lb, int32_t tb, uint64_t m, uint64_t k, uint64_t j,
                           double *sum) {
  memset(sum, 0, sizeof *sum * m);
  for (uint64_t p = 0; p < k; p++) {
    double bpj = at(b, lb, tb, p, j);
    if (ta) continue;
    const float *col = a + p * (uint64_t)la->ld;
    for (uint64_t i = 0; i < m; i++) sum[i] += (double)col[i] * bpj;
  }
  if (!ta) return;
  for (uint64_t i = 0; i < m; i++) {
    const float *row = a + i * (uint64_t)la->ld;  // column i of the stored A: row i of op(A)
    double s = 0;
    for (uint64_t p = 0; p < k; p++) s += (double)row[p] * at(b, lb, tb, p, j);
    sum[i] = s;
  }
}

// One matrix of a batch as f32: itself, or (bf16) widened into *tmp, which the caller frees.
static const float *as_f32(const void *x, const layout *l, float **tmp) {
  *tmp = NULL;
  if (l->type != CUDA_R_16BF) return x;
  uint64_t n = l->cols ? (l->cols - 1) * (uint64_t)l->ld + l->rows : 0;
  *tmp = malloc(sizeof(float) * (n ? n : 1));
  if (!*tmp) return NULL;
  for (uint64_t i = 0; i < n; i++) (*tmp)[i] = (float)load(x, l, i);
  return *tmp;
}

// cuBLASLt's type rules for the forms emulated: A and B of one type, C and D of one type,
// fp32 A and B with fp32 C.
static int types_supported(const layout *a, const layout *b, const layout *c, const layout *d) {
  return a->type == b->type && c->type == d->type &&
         (a->type == CUDA_R_16BF || c->type == CUDA_R_32F);
}

int cublasLtMatmul(handle *h, desc *op, const float *alpha, const void *a, layout *la,
                   const void *b, layout *lb, const float *beta, const void *c, layout *lc,
                   void *d, layout *ld, const void *algo, void *ws, size_t wsn, void *stream) {
  (void)algo;
  (void)ws;
  (void)wsn;
  (void)stream;
  if (!h || !op || !alpha || !beta || !a || !b || !d || !la || !lb || !lc || !ld ||
      (*beta != 0 && !c))
    return INVALID_VALUE;
  if (!shapes_agree(op, la, lb, lc, ld)) return INVALID_VALUE;
  if (!types_supported(la, lb, lc, ld)) return NOT_SUPPORTED;
  // Epilogues: bias and auxiliary matrix of D's type (the forms emulated), a bias pointer, and
  // for GELU_AUX_BIAS an aux pointer with a leading dimension of at least D's rows, divisible by 8.
  bool biased = op->epilogue != EPILOGUE_DEFAULT, gelu = op->epilogue == EPILOGUE_GELU_AUX_BIAS;
  if (biased && (!op->bias || (op->bias_type != -1 && op->bias_type != ld->type)))
    return INVALID_VALUE;
  if (gelu && (!op->aux || op->aux_ld < (int64_t)ld->rows || op->aux_ld % 8 != 0 ||
               (op->aux_type != -1 && op->aux_type != ld->type)))
    return INVALID_VALUE;
  if (biased && lc->batch != 1) return NOT_SUPPORTED;
  layout vec = {ld->type, ld->rows, 1, (int64_t)ld->rows, 1, 0};  // the bias: D's rows
  int32_t ta, tb;
  transposes(op, &ta, &tb);
  uint64_t m = lc->rows, n = lc->cols, k = ta ? la->rows : la->cols;
  double *sum = malloc(sizeof *sum * (m ? m : 1));
  if (!sum) return ALLOC_FAILED;
  for (int32_t l = 0; l < lc->batch; l++) {
    float *ta_tmp, *tb_tmp;
    const float *al = as_f32((const char *)a + (size_t)(l * la->stride) * type_size(la), la, &ta_tmp);
    const float *bl = as_f32((const char *)b + (size_t)(l * lb->stride) * type_size(lb), lb, &tb_tmp);
    const char *cl = c ? (const char *)c + (size_t)(l * lc->stride) * type_size(lc) : NULL;
    char *dl = (char *)d + (size_t)(l * ld->stride) * type_size(ld);
    if (!al || !bl) {
      free(ta_tmp), free(tb_tmp), free(sum);
      return ALLOC_FAILED;
    }
    for (uint64_t j = 0; j < n; j++) {
      product_column(al, la, ta, bl, lb, tb, m, k, j, sum);
      for (uint64_t i = 0; i < m; i++) {
        double v = (double)*alpha * sum[i];
        if (*beta != 0) v += (double)*beta * load(cl, lc, i + j * (uint64_t)lc->ld);
        if (biased) v += load(op->bias, &vec, i);  // broadcast over D's columns
        if (gelu) {  // the GeLU's input to aux, rounded to D's type, then GeLU (tanh form)
          store(op->aux, ld, i + j * (uint64_t)op->aux_ld, v);
          v = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        }
        store(dl, ld, i + j * (uint64_t)ld->ld, v);
      }
    }
    free(ta_tmp);
    free(tb_tmp);
  }
  free(sum);
  h->matmuls++;
  return OK;
}
