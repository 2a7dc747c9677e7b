// cost_tests.c — the roofline of compiler/cost picks the bound that sets the time: a large
// square GEMM is compute bound on an H100, a matrix-vector product memory bound, and the GPU
// model of an instruction follows the same choice.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cost.h"

static int failures;
#define CHECK(c)                                                    \
  do {                                                              \
    if (!(c)) {                                                     \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      failures++;                                                   \
    }                                                               \
  } while (0)

static dhx_plan_instr gemm(int64_t m, int64_t n, int64_t k) {
  static dhx_plan_gemm shapes[8];  // the instructions point to their shapes: a few per test
  static int next;
  dhx_plan_instr in;
  memset(&in, 0, sizeof in);
  in.op = DHX_OP_GEMM;
  in.dtype = DHX_F32;
  in.comm = -1;
  in.kernel = -1;
  dhx_plan_gemm *g = &shapes[next++ % 8];
  *g = (dhx_plan_gemm){.m = m, .n = n, .k = k, .batch = {1, 1}};
  in.gemm = g;
  return in;
}

int main(void) {
  const double peak = 989e12, bw = 3.35e12;
  bool compute = false;
  // 8192^3: 1.1e12 FLOPs over 0.4 GB: about 1.1 ms of compute, 0.12 ms of memory.
  double t = dhx_roofline(2.0 * 8192 * 8192 * 8192, 3.0 * 8192 * 8192 * 2, peak, bw, &compute);
  CHECK(compute);
  CHECK(fabs(t - 2.0 * 8192 * 8192 * 8192 / peak) < 1e-12);
  // 8192x8192 by a vector: 134 MFLOPs over 134 MB: memory bound.
  t = dhx_roofline(2.0 * 8192 * 8192, (8192.0 * 8192 + 2 * 8192) * 2, peak, bw, &compute);
  CHECK(!compute);
  CHECK(fabs(t - (8192.0 * 8192 + 2 * 8192) * 2 / bw) < 1e-12);

  dhx_plan p;
  memset(&p, 0, sizeof p);
  dhx_cost_model m = {.gpu = true, .flops = peak, .mem_bandwidth = bw, .launch = 0,
                      .elem_bytes = 2, .interference = 1};
  dhx_plan_instr big = gemm(8192, 8192, 8192), thin = gemm(8192, 1, 8192);
  CHECK(fabs(dhx_cost_instr(&m, &p, &big) - 2.0 * 8192 * 8192 * 8192 / peak) < 1e-12);
  double thin_bytes = (8192.0 * 8192 + 8192 + 8192) * 2;
  CHECK(fabs(dhx_cost_instr(&m, &p, &thin) - thin_bytes / bw) < 1e-12);
  // The CPU model stays compute bound whatever the shape (the CPU backend's BLAS).
  dhx_cost_model cpu = dhx_cost_model_for(&p);
  CHECK(fabs(dhx_cost_instr(&cpu, &p, &thin) - cpu.launch - 2.0 * 8192 * 8192 / cpu.flops) < 1e-12);
  if (failures) return 1;
  puts("roofline: compute-bound GEMM and memory-bound matrix-vector product as expected");
  return 0;
}
