// emulated_tests.c — the emulated driver and cuBLASLt (tests/gpu/emulated_*.c) against the
// vendors' definitions, through the runtime's tables (DHX_CUDA_LIBRARY, DHX_CUBLASLT_LIBRARY and
// DHX_EMULATED_KERNELS set by the harness), so that the parity checks built on them rest on
// something checked by hand.
//   emulated_tests PLAN_DIR   (a compiled plan: its PTX and kernels.so)
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_api.h"
#include "gpu_test.h"
#include "kernel_abi.h"
#include "plan.h"


#define INVALID_VALUE 7
#define NOT_SUPPORTED 15

static dhx_cublaslt_api lt;

typedef struct product {
  int ta, tb;
  uint64_t arows, acols, brows, bcols, m, n;  // the layouts as given (column-major)
  int32_t batch;
  int64_t stride_a, stride_b, stride_c;
  float alpha, beta;
} product;

static cublasLtMatrixLayout_t make_layout(uint64_t rows, uint64_t cols, int32_t batch,
                                          int64_t stride) {
  cublasLtMatrixLayout_t l = NULL;
  CHECK(lt.cublasLtMatrixLayoutCreate(&l, 0, rows, cols, (int64_t)rows) == 0, "layout");
  if (batch > 1) {
    CHECK(lt.cublasLtMatrixLayoutSetAttribute(l, 5, &batch, sizeof batch) == 0, "batch count");
    CHECK(lt.cublasLtMatrixLayoutSetAttribute(l, 6, &stride, sizeof stride) == 0, "stride");
  }
  return l;
}

// Runs one matmul with tight leading dimensions; returns cuBLASLt's status.
static int matmul(const product *p, const float *a, const float *b, float *c) {
  cublasLtHandle_t h = NULL;
  cublasLtMatmulDesc_t op = NULL;
  lt.cublasLtCreate(&h);
  lt.cublasLtMatmulDescCreate(&op, 68, 0);
  int32_t ta = p->ta, tb = p->tb;
  lt.cublasLtMatmulDescSetAttribute(op, 3, &ta, sizeof ta);
  lt.cublasLtMatmulDescSetAttribute(op, 4, &tb, sizeof tb);
  cublasLtMatrixLayout_t la = make_layout(p->arows, p->acols, p->batch, p->stride_a);
  cublasLtMatrixLayout_t lb = make_layout(p->brows, p->bcols, p->batch, p->stride_b);
  cublasLtMatrixLayout_t lc = make_layout(p->m, p->n, p->batch, p->stride_c);
  int r = lt.cublasLtMatmul(h, op, &p->alpha, a, la, b, lb, &p->beta, c, lc, c, lc, NULL, NULL, 0,
                            NULL);
  lt.cublasLtMatrixLayoutDestroy(lc);
  lt.cublasLtMatrixLayoutDestroy(lb);
  lt.cublasLtMatrixLayoutDestroy(la);
  lt.cublasLtMatmulDescDestroy(op);
  lt.cublasLtDestroy(h);
  return r;
}

static void expect(const char *what, const float *got, const float *want, int n) {
  for (int i = 0; i < n; i++)
    CHECK(got[i] == want[i], "%s: element %d is %g, expected %g", what, i, got[i], want[i]);
}

// Worked by hand from cuBLASLt's definition: column-major, op(A) m × k, op(B) k × n.
static void test_cublaslt(void) {
  // A = [1 3 5; 2 4 6] (2 × 3, stored by columns), B = [1 0; 0 1; 1 1] (3 × 2).
  const float a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 0, 1, 0, 1, 1};
  float c[4] = {0};
  product nn = {0, 0, 2, 3, 3, 2, 2, 2, 1, 0, 0, 0, 1, 0};
  CHECK(matmul(&nn, a, b, c) == 0, "N N refused");
  expect("A·B", c, (const float[]){6, 8, 8, 10}, 4);  // columns [1+5, 2+6], [3+5, 4+6]
  // Aᵀ·B with A stored 3 × 2 (the same six numbers): Aᵀ = [1 2 3; 4 5 6].
  product tn = {1, 0, 3, 2, 3, 2, 2, 2, 1, 0, 0, 0, 1, 0};
  CHECK(matmul(&tn, a, b, c) == 0, "T N refused");
  expect("Aᵀ·B", c, (const float[]){4, 10, 5, 11}, 4);
  // A·Bᵀ with B stored 2 × 3 = [1 1 1; 0 0 1]... by columns {1,0, 1,0, 1,1}: Bᵀ = [1 0; 1 0; 1 1].
  product nt = {0, 1, 2, 3, 2, 3, 2, 2, 1, 0, 0, 0, 1, 0};
  CHECK(matmul(&nt, a, b, c) == 0, "N T refused");
  expect("A·Bᵀ", c, (const float[]){9, 12, 5, 6}, 4);
  // Two batches 6 and 4 elements apart, alpha 2, beta 1 onto C = 1: batch 1 uses A' = 2A.
  float a2[12], b2[8] = {1, 0, 0, 1, 2, 0, 0, 2}, c2[8];
  for (int i = 0; i < 6; i++) a2[i] = a[i], a2[6 + i] = 2 * a[i];
  for (int i = 0; i < 8; i++) c2[i] = 1;
  product batched = {0, 0, 2, 2, 2, 2, 2, 2, 2, 6, 4, 4, 2, 1};  // A's first 2 × 2 block
  CHECK(matmul(&batched, a2, b2, c2) == 0, "batched refused");
  expect("batched", c2, (const float[]){3, 5, 7, 9, 9, 17, 25, 33}, 8);
  // beta 0: C is not read, so NaN in it does not reach D.
  float cn[4] = {NAN, NAN, NAN, NAN};
  CHECK(matmul(&nn, a, b, cn) == 0, "beta 0 refused");
  expect("beta 0 over NaN", cn, (const float[]){6, 8, 8, 10}, 4);
  // Shapes that do not agree, and attributes it does not emulate, are refused.
  product bad = nn;
  bad.brows = 2;
  CHECK(matmul(&bad, a, b, c) == INVALID_VALUE, "a 2 × 3 by 2 × 2 product was accepted");
  cublasLtMatmulDesc_t op = NULL;
  int32_t epilogue = 2;
  lt.cublasLtMatmulDescCreate(&op, 68, 0);
  CHECK(lt.cublasLtMatmulDescSetAttribute(op, 7, &epilogue, sizeof epilogue) == NOT_SUPPORTED,
        "an epilogue was accepted");
  lt.cublasLtMatmulDescDestroy(op);
  cublasLtMatrixLayout_t l = NULL;
  CHECK(lt.cublasLtMatrixLayoutCreate(&l, 0, 4, 2, 3) == INVALID_VALUE,
        "a leading dimension below the rows was accepted");
}

// ---- the driver --------------------------------------------------------------------------------

static dhx_cuda_api cu;

static void test_memory_and_events(void) {
  CUdeviceptr p = 0;
  char host[64] = {0};
  CHECK(cu.cuMemAlloc_v2(&p, 32) == 0, "cuMemAlloc");
  CHECK(cu.cuMemcpyHtoDAsync_v2(p, host, 32, NULL) == 0, "a copy of the whole allocation");
  CHECK(cu.cuMemcpyHtoDAsync_v2(p + 8, host, 32, NULL) == 1, "a copy past the end was accepted");
  CHECK(cu.cuMemsetD8Async(p - 1, 0, 1, NULL) == 1, "a memset before the start was accepted");
  CHECK(cu.cuMemFree_v2(p) == 0 && cu.cuMemFree_v2(p) == 1, "a second free was accepted");
  CUevent untimed = NULL, start = NULL, end = NULL;
  float ms = -1;
  cu.cuEventCreate(&untimed, 2);  // CU_EVENT_DISABLE_TIMING
  cu.cuEventCreate(&start, 0);
  cu.cuEventCreate(&end, 0);
  CHECK(cu.cuEventElapsedTime(&ms, start, end) == 400, "unrecorded events were timed");
  cu.cuEventRecord(untimed, NULL);
  cu.cuEventRecord(start, NULL);
  cu.cuEventRecord(end, NULL);
  CHECK(cu.cuEventElapsedTime(&ms, untimed, end) == 400, "a DISABLE_TIMING event was timed");
  CHECK(cu.cuEventElapsedTime(&ms, start, end) == 0 && ms >= 0, "elapsed time %g", ms);
  cu.cuEventDestroy_v2(untimed);
  cu.cuEventDestroy_v2(start);
  cu.cuEventDestroy_v2(end);
}

static void test_bad_ptx(void) {
  const char *ptx = ".visible .entry k(\n\t.param .align 8 .b8 k_param_0[16]\n)\n{\n}\n";
  char log[512] = "";
  int opts[2] = {5, 6};
  void *values[2] = {log, (void *)(uintptr_t)sizeof log};
  CUmodule m = NULL;
  CHECK(cu.cuModuleLoadDataEx(&m, ptx, 2, opts, values) == 218 &&
        strstr(log, "parameter type '.align'"), "an aggregate parameter: log '%s'", log);
}

// The host kernel PREFIX NAME (dhxk_, or dhxg_ for the GPU thread code; a pointer to call
// only as what it is) of the plan's kernels.so (the library stays loaded).
static dhx_kernel_fn host_kernel(const char *dir, const char *name, const char *prefix) {
  char path[1024];
  snprintf(path, sizeof path, "%s/kernels.so", dir);
  void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!so) return NULL;
  snprintf(path, sizeof path, "%s%s", prefix, name);
  void *sym = dlsym(so, path);
  dhx_kernel_fn fn = NULL;
  if (sym) memcpy(&fn, &sym, sizeof fn);  // a data pointer's bits, POSIX
  return fn;
}

// An elementwise kernel of the plan (two pointers, the first written, n elements each) launched
// over grids of every size, from more threads than indices to one warp for 1000 indices (the
// PTX entry's grid-stride loop), with 16-byte aligned pointers (its wide path, four indices a
// thread) and with pointers one element off (its scalar path): every launch computes every
// index, and the same bits as the host kernel.
static void test_launch_covers_any_grid(const char *dir) {
  char path[1024], err[1024];
  snprintf(path, sizeof path, "%s/plan.bin", dir);
  dhx_plan plan;
  if (!dhx_plan_read(path, &plan, err, sizeof err)) {
    CHECK(0, "%s", err);
    return;
  }
  const dhx_plan_kernel *k = NULL;
  for (uint32_t i = 0; i < plan.nkernels && !k; i++) {
    const dhx_plan_kernel *c = &plan.kernels[i];
    if (c->nargs == 2 && c->arg_types[0] == DHX_KARG_PTR && c->arg_types[1] == DHX_KARG_PTR &&
        c->access[0].form == DHX_ACC_ELEMS && c->access[0].x < 0 && c->access[0].y < 0 &&
        c->access[1].form == DHX_ACC_ELEMS && c->access[1].x < 0 && c->access[1].y < 0 &&
        (c->access[0].flags & DHX_ACC_WRITES) && !(c->access[1].flags & DHX_ACC_WRITES))
      k = c;
  }
  snprintf(path, sizeof path, "%s/kernels.ptx", dir);
  char *ptx = read_text(path);
  CHECK(k && ptx, "no elementwise kernel of two arguments, or no PTX");
  CUmodule m = NULL;
  CUfunction fn = NULL;
  if (k && ptx && cu.cuModuleLoadDataEx(&m, ptx, 0, NULL, NULL) == 0 &&
      cu.cuModuleGetFunction(&fn, m, k->name) == 0) {
    enum { N = 1003 };
    float in[N + 1], want[N + 1], got[N + 1];
    for (int i = 0; i <= N; i++) in[i] = 0.001f * (float)i - 0.3f;
    CUdeviceptr dout = 0, din = 0;
    cu.cuMemAlloc_v2(&dout, sizeof got);
    cu.cuMemAlloc_v2(&din, sizeof in);
    cu.cuMemcpyHtoDAsync_v2(din, in, sizeof in, NULL);
    CHECK(k->indices_per_thread == 4, "%s: %u indices per thread (an elementwise kernel is wide)",
          k->name, k->indices_per_thread);
    static const unsigned grids[][2] = {{4, 256}, {1, 256}, {3, 64}, {1, 32}};
    for (int off = 0; off <= 1; off++) {  // elements: 0 leaves the pointers 16-byte aligned
      CUdeviceptr o = dout + 4 * (CUdeviceptr)off, x = din + 4 * (CUdeviceptr)off;
      dhx_slot args[2] = {{.p = (void *)(uintptr_t)o}, {.p = (void *)(uintptr_t)x}};
      cu.cuMemsetD8Async(dout, 0xff, sizeof want, NULL);  // NaN sentinels
      cu.cuCtxSynchronize();
      dhx_kernel_fn host = host_kernel(dir, k->name, DHX_KERNEL_PREFIX);
      CHECK(host_kernel(dir, k->name, DHX_GRID_PREFIX) != NULL, "kernels.so has no %s%s: the "
            "launches would not run the PTX entry's thread code", DHX_GRID_PREFIX, k->name);
      CHECK(host != NULL, "no host kernel %s", k->name);
      if (!host) break;
      host(args, 0, N);
      memcpy(want, (const void *)(uintptr_t)dout, sizeof want);
      for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        int64_t n = N;
        void *params[3] = {&o, &x, &n};
        cu.cuMemsetD8Async(dout, 0xff, sizeof got, NULL);
        CHECK(cu.cuLaunchKernel(fn, grids[g][0], 1, 1, grids[g][1], 1, 1, 0, NULL, params, NULL) == 0,
              "launch");
        cu.cuMemcpyDtoHAsync_v2(got, dout, sizeof got, NULL);
        int bad = 0;
        for (int i = 0; i < N + 1 && bad < 5; i++) {
          bool inside = i >= off && i < off + N;
          bool ok = inside ? memcmp(&got[i], &want[i], 4) == 0 && !isnan(got[i]) : isnan(got[i]);
          if (!ok) bad++;
          CHECK(ok, "%s, %u blocks of %u, pointers %d element(s) off: element %d is %g, the host "
                "kernel's %g", k->name, grids[g][0], grids[g][1], off, i, got[i], want[i]);
        }
      }
    }
    cu.cuMemFree_v2(din);
    cu.cuMemFree_v2(dout);
  } else {
    CHECK(0, "the kernel does not load");
  }
  if (m) cu.cuModuleUnload(m);
  free(ptx);
  dhx_plan_free(&plan);
}

int main(int argc, char **argv) {
  char err[1024];
  if (argc != 2) {
    fprintf(stderr, "usage: emulated_tests PLAN_DIR\n");
    return 2;
  }
  if (!dhx_load_cublaslt(&lt, err, sizeof err) || !dhx_load_cuda(&cu, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  cu.cuInit(0);
  test_cublaslt();
  test_memory_and_events();
  test_bad_ptx();
  test_launch_covers_any_grid(argv[1]);
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  else printf("the emulated driver and cuBLASLt follow the definitions checked\n");
  return fails ? 1 : 0;
}
