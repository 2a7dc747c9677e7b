// recording_cublaslt.c — a stand-in cuBLASLt that records each matmul with the descriptors it
// was given (transposes; each layout's type, rows, columns, leading dimension, batch and
// stride), in
// the file FAKE_GPU_LOG names, so the backend's GEMM descriptors are checked without a GPU.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recording_log.h"

typedef struct desc { int32_t ta, tb; uint32_t epilogue; uint64_t bias, aux; int64_t aux_ld; } desc;
typedef struct layout { int type; uint64_t rows, cols; int64_t ld, stride; int32_t batch; } layout;


size_t cublasLtGetVersion(void) { return 130100; }
const char *cublasLtGetStatusString(int s) { (void)s; return "CUBLAS_STATUS_RECORDED"; }
int cublasLtCreate(void **h) { *h = (void *)0x3; logf_("cublasLtCreate"); return 0; }
int cublasLtDestroy(void *h) { (void)h; return 0; }
int cublasLtMatmulDescCreate(desc **d, int compute, int scale) {
  logf_("cublasLtMatmulDescCreate compute=%d scale=%d", compute, scale);
  *d = calloc(1, sizeof **d);
  return 0;
}
int cublasLtMatmulDescDestroy(desc *d) { free(d); return 0; }
int cublasLtMatmulDescSetAttribute(desc *d, int attr, const void *buf, size_t n) {
  if (attr == 3) memcpy(&d->ta, buf, n);
  if (attr == 4) memcpy(&d->tb, buf, n);
  if (attr == 7) memcpy(&d->epilogue, buf, n);   // epilogue
  if (attr == 8) memcpy(&d->bias, buf, n);       // bias pointer
  if (attr == 11) memcpy(&d->aux, buf, n);       // epilogue aux pointer
  if (attr == 12) memcpy(&d->aux_ld, buf, n);    // its leading dimension
  return 0;
}
int cublasLtMatrixLayoutCreate(layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = calloc(1, sizeof **l);
  (*l)->type = type;
  (*l)->rows = rows;
  (*l)->cols = cols;
  (*l)->ld = ld;
  (*l)->batch = 1;
  return 0;
}
int cublasLtMatrixLayoutDestroy(layout *l) { free(l); return 0; }
int cublasLtMatrixLayoutSetAttribute(layout *l, int attr, const void *buf, size_t n) {
  if (attr == 5) memcpy(&l->batch, buf, n);
  if (attr == 6) memcpy(&l->stride, buf, n);
  return 0;
}
int cublasLtMatmulPreferenceCreate(void **p) { *p = (void *)0x4; return 0; }
int cublasLtMatmulPreferenceDestroy(void *p) { (void)p; return 0; }
int cublasLtMatmulPreferenceSetAttribute(void *p, int a, const void *b, size_t n) { (void)p; (void)a; (void)b; (void)n; return 0; }
int cublasLtMatmulAlgoGetHeuristic(void *h, desc *op, layout *a, layout *b, layout *c, layout *d,
                                   void *pref, int requested, void *results, int *returned) {
  (void)h; (void)op; (void)a; (void)b; (void)c; (void)d; (void)pref; (void)requested;
  memset(results, 0, 96);
  *returned = 1;
  return 0;
}
// rows x cols / ld * batch + stride : type (cudaDataType_t: 0 f32, 14 bf16)
static void describe(char *out, size_t n, const layout *l) {
  snprintf(out, n, "%llux%llu/%lld*%d+%lld:%d", (unsigned long long)l->rows,
           (unsigned long long)l->cols, (long long)l->ld, l->batch, (long long)l->stride, l->type);
}
int cublasLtMatmul(void *h, desc *op, const float *alpha, const void *a, layout *la, const void *b,
                   layout *lb, const float *beta, const void *c, layout *lc, void *d, layout *ld,
                   const void *algo, void *ws, size_t wsn, void *stream) {
  (void)h; (void)c; (void)ld; (void)algo; (void)ws; (void)wsn;
  char sa[96], sb[96], sc[96];
  describe(sa, sizeof sa, la);
  describe(sb, sizeof sb, lb);
  describe(sc, sizeof sc, lc);
  logf_("cublasLtMatmul ta=%d tb=%d A=%s B=%s C=%s alpha=%g beta=%g a=%llx b=%llx d=%llx stream=%lu "
        "epilogue=%u bias=%llx aux=%llx auxld=%lld",
        op->ta, op->tb, sa, sb, sc, *alpha, *beta, (unsigned long long)(uintptr_t)a,
        (unsigned long long)(uintptr_t)b, (unsigned long long)(uintptr_t)d,
        (unsigned long)(uintptr_t)stream, op->epilogue, (unsigned long long)op->bias,
        (unsigned long long)op->aux, (long long)op->aux_ld);
  return 0;
}
