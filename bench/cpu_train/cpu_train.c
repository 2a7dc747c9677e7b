// cpu_train — the CPU training-throughput report.
//
//   cpu_train PLAN_DIR METRICS.jsonl
// Reads the plan's training FLOPs per token (GEMM FLOPs of forward + backward, attention
// included) and the measured tokens/s of the run (median over steps after the first two),
// measures OpenBLAS sgemm on shapes of the model's largest GEMMs in the same process, and
// prints achieved FLOP/s and its ratio to that ceiling.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plan.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// Best-of-5 sgemm FLOP/s for C[m×n] = A[m×k] B[k×n].
static double sgemm_flops(int m, int n, int k) {
  float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)k * n),
        *c = malloc(sizeof(float) * (size_t)m * n);
  for (long i = 0; i < (long)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
  for (long i = 0; i < (long)k * n; i++) b[i] = (float)(i % 5) * 0.1f;
  double best = 0;
  for (int r = 0; r < 6; r++) {
    double t = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    double f = 2.0 * m * n * k / (now() - t);
    if (r > 0 && f > best) best = f;  // the first call warms up threads and caches
  }
  free(a);
  free(b);
  free(c);
  return best;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: cpu_train PLAN_DIR METRICS.jsonl\n");
    return 2;
  }
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/plan.bin", argv[1]);
  dhx_plan plan;
  if (!dhx_plan_read(path, &plan, err, sizeof err)) {
    fprintf(stderr, "cpu_train: %s\n", err);
    return 1;
  }
  FILE *f = fopen(argv[2], "r");
  if (!f) {
    fprintf(stderr, "cpu_train: cannot open %s\n", argv[2]);
    return 1;
  }
  double tps[4096];
  int n = 0;
  char line[8192];
  while (fgets(line, sizeof line, f) && n < 4096) {
    char *s = strstr(line, "\"step\":"), *t = strstr(line, "\"tokens_per_s\":");
    if (s && t && strtol(s + 7, NULL, 10) > 2) tps[n++] = strtod(t + 15, NULL);
  }
  fclose(f);
  if (n == 0) {
    fprintf(stderr, "cpu_train: no steps after warm-up in %s\n", argv[2]);
    return 1;
  }
  qsort(tps, (size_t)n, sizeof(double), cmp);
  double tok_s = tps[n / 2];
  double fpt = plan.train.flops_per_token;
  int rows = (int)(plan.train.micro_batch * plan.train.seq);
  double ceiling = sgemm_flops(rows, 3072, 768);
  double ceiling2 = sgemm_flops(rows, 768, 3072);
  if (ceiling2 > ceiling) ceiling = ceiling2;
  double achieved = tok_s * fpt;
  printf("model            %s: %.1fM parameters, %.2f GFLOP per token (fwd+bwd)\n",
         plan.train.model_name, plan.train.n_params / 1e6, fpt / 1e9);
  printf("training         %.0f tokens/s (median of %d steps)\n", tok_s, n);
  printf("achieved         %.1f GFLOP/s\n", achieved / 1e9);
  printf("sgemm ceiling    %.1f GFLOP/s (OpenBLAS, %dx3072x768 / %dx768x3072)\n", ceiling / 1e9,
         rows, rows);
  printf("ratio            %.1f%% of the sgemm ceiling (target: 60%%)\n", 100 * achieved / ceiling);
  dhx_plan_free(&plan);
  return 0;
}
