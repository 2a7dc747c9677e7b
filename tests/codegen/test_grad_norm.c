// test_grad_norm.c — the generated grad_norm kernel (what a GPU runs for GRAD_NORM) computes
// bit for bit what the CPU backend computes on the host (dhx_grad_norm_of, runtime/exec_cpu.c)
// and stores in memory: the f32 clip scale and norm, on random partial sums of squares of
// several counts and clip thresholds (0.3 is not an f32: the threshold must stay a double),
// with no clipping, and with a NaN or an infinity among the partials (the NaN scale that makes
// the AdamW kernels skip their update).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"
#include "dhxrt.h"

static bool same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

// Runs the kernel on partials[0..count) and compares with the host code; returns 1 if equal.
static int check_case(dhx_kernel_fn fn, const float *partials, int64_t count, double max_norm) {
  float out[2] = {-1, -1};
  dhx_slot a[] = {{.p = &out[0]}, {.p = &out[1]}, {.p = (void *)partials}, {.i = count},
                  {.f = max_norm}};
  fn(a, 0, 1);
  double norm, scale;
  dhx_grad_norm_of(partials, count, max_norm, &norm, &scale);
  float want_scale = isfinite(norm) ? (float)scale : NAN, want_norm = (float)norm;
  bool ok = same_bits(out[1], want_norm) &&
            (isnan(want_scale) ? isnan(out[0]) : same_bits(out[0], want_scale));
  if (!ok)
    fprintf(stderr, "count %lld max_norm %g: kernel scale %.9g norm %.9g, host %.9g %.9g\n",
            (long long)count, max_norm, out[0], out[1], want_scale, want_norm);
  return ok;
}

int main(void) {
  cgt t;
  cgt_init(&t);
  dhx_kernel_spec s = cgt_spec(DHX_K_GRAD_NORM, DHX_KT_F32);
  cgt_add(&t, &s);
  cgt_build(&t);
  dhx_kernel_fn fn = cgt_fn(&t, &s);
  static const int64_t counts[] = {1, 2, 37, 1000};
  static const double max_norms[] = {0.0, 0.3, 1.0, 1e6};
  float *partials = malloc(sizeof(float) * 1000);
  CHECK(partials != NULL, "out of memory");
  int cases = 0, bad = 0;
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
    int64_t n = counts[c];
    for (int kind = 0; kind < 3; kind++) {  // finite, a NaN, an infinity
      for (int64_t i = 0; i < n; i++) partials[i] = (float)rng_uniform(0, kind ? 1 : 0.01);
      if (kind == 1) partials[rng_int((int)n)] = NAN;
      if (kind == 2) partials[rng_int((int)n)] = INFINITY;
      for (size_t m = 0; m < sizeof max_norms / sizeof max_norms[0]; m++, cases++)
        bad += !check_case(fn, partials, n, max_norms[m]);
    }
  }
  free(partials);
  cgt_done(&t);
  CHECK(bad == 0, "%d of %d cases differ from the CPU backend", bad, cases);
  printf("ok: %d cases bitwise equal to the CPU backend's norm and clip scale\n", cases);
  return 0;
}
