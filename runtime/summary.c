// summary.c — what a run reports at its end: wall time, tokens/s (mean and median), achieved
// FLOP/s and MFU, peak memory, the final losses and the paths written; printed for the user and
// appended to the metrics file as one last JSON line ("summary": true).
//
// MFU needs a peak to compare with. On the CPU backend that is the rate at which this rank's
// worker threads run single-precision GEMMs (OpenBLAS, one thread each, as the runtime uses
// it), measured here for a fraction of a second; a cluster that declares its peak would use that.
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhxrt.h"

#define GEMM_PROBE_DIM 384
#define GEMM_PROBE_SECONDS 0.2

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double dhx_median(const double *x, int64_t n) {
  if (n <= 0) return 0;
  double *s = malloc((size_t)n * sizeof *s);
  if (!s) return x[0];
  memcpy(s, x, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  free(s);
  return m;
}

typedef struct probe {
  double seconds;
  _Atomic int64_t gemms;
} probe;

// One worker's share: GEMMs on its own matrices until the time is up.
static void probe_range(void *ctx, int64_t begin, int64_t end) {
  probe *p = ctx;
  const int n = GEMM_PROBE_DIM;
  float *m = calloc(3 * (size_t)n * n, sizeof *m);
  if (!m) return;
  for (int64_t i = 0; i < 2 * (int64_t)n * n; i++) m[i] = (float)(i % 7) * 0.25f;
  for (int64_t w = begin; w < end; w++) {
    double stop = now() + p->seconds;
    while (now() < stop) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, m, n, m + n * n, n,
                  0.0f, m + 2 * n * n, n);
      atomic_fetch_add(&p->gemms, 1);
    }
  }
  free(m);
}

double dhx_measure_gemm_rate(dhx_pool *pool) {
  int threads = dhx_pool_threads(pool);
  probe p = {.seconds = GEMM_PROBE_SECONDS};
  atomic_init(&p.gemms, 0);
  double start = now();
  dhx_pool_for(pool, threads, 1, probe_range, &p);
  double elapsed = now() - start;
  double n = GEMM_PROBE_DIM;
  return elapsed > 0 ? 2.0 * n * n * n * (double)atomic_load(&p.gemms) / elapsed : 0;
}

// "1:02:03", "4:05", "12 s"
void dhx_format_duration(double s, char *out, size_t len) {
  if (!(s >= 0) || s > 1e9) {
    snprintf(out, len, "?");
    return;
  }
  int64_t t = (int64_t)(s + 0.5);
  if (t < 60)
    snprintf(out, len, "%" PRId64 " s", t);
  else if (t < 3600)
    snprintf(out, len, "%" PRId64 ":%02" PRId64, t / 60, t % 60);
  else
    snprintf(out, len, "%" PRId64 ":%02" PRId64 ":%02" PRId64, t / 3600, t / 60 % 60, t % 60);
}

static void human_flops(double f, char *out, size_t len) {
  if (f >= 1e12)
    snprintf(out, len, "%.2f TFLOP/s", f / 1e12);
  else
    snprintf(out, len, "%.1f GFLOP/s", f / 1e9);
}

void dhx_summary_print(FILE *out, const dhx_run_summary *s) {
  char wall[32], flops[32], peak[32];
  dhx_format_duration(s->wall_s, wall, sizeof wall);
  human_flops(s->flops_per_s, flops, sizeof flops);
  human_flops(s->peak_flops_per_s, peak, sizeof peak);
  fprintf(out, "dhxrun: %s after step %" PRId64 " (%" PRId64 " steps run here", s->outcome,
          s->last_step, s->steps_run);
  if (s->skipped) fprintf(out, ", %" PRId64 " skipped as non-finite", s->skipped);
  fprintf(out, ") in %s\n", wall);
  fprintf(out, "  throughput  %.0f tokens/s mean, %.0f median\n", s->mean_tokens_per_s,
          s->median_tokens_per_s);
  if (s->peak_flops_per_s > 0)
    fprintf(out, "  compute     %s achieved, MFU %.1f%% of %s (%s)\n", flops, 100 * s->mfu, peak,
            s->peak_source);
  else
    fprintf(out, "  compute     %s achieved (MFU: %s)\n", flops, s->peak_source);
  fprintf(out, "  memory      %.1f MiB peak resident per rank (arena %.1f MiB)\n",
          s->peak_rss_bytes / (1 << 20), s->arena_bytes / (1 << 20));
  if (s->has_loss) fprintf(out, "  loss        %.4f train", s->final_loss);
  if (s->has_loss && s->has_val) fprintf(out, ", %.4f val", s->final_val_loss);
  if (s->has_loss) fputc('\n', out);
  for (int i = 0; i < s->npaths; i++) fprintf(out, "  wrote       %s\n", s->paths[i]);
  fflush(out);
}

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c < 0x20)
      fprintf(out, "\\u%04x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

void dhx_summary_write_json(FILE *out, const dhx_run_summary *s) {
  fprintf(out, "{\"summary\":true,\"outcome\":");
  json_string(out, s->outcome);
  fprintf(out, ",\"last_step\":%" PRId64 ",\"steps_run\":%" PRId64 ",\"skipped_steps\":%" PRId64,
          s->last_step, s->steps_run, s->skipped);
  dhx_json_number(out, "wall_s", s->wall_s, "%.3f");
  dhx_json_number(out, "mean_tokens_per_s", s->mean_tokens_per_s, "%.1f");
  dhx_json_number(out, "median_tokens_per_s", s->median_tokens_per_s, "%.1f");
  dhx_json_number(out, "flops_per_s", s->flops_per_s, "%.6g");
  dhx_json_number(out, "peak_flops_per_s", s->peak_flops_per_s, "%.6g");
  fprintf(out, ",\"peak_source\":");
  json_string(out, s->peak_source);
  dhx_json_number(out, "mfu", s->mfu, "%.6g");
  dhx_json_number(out, "peak_rss_bytes", s->peak_rss_bytes, "%.0f");
  dhx_json_number(out, "arena_bytes", s->arena_bytes, "%.0f");
  dhx_json_number(out, "net_bandwidth", s->net_bandwidth, "%.6g");
  dhx_json_number(out, "net_latency", s->net_latency, "%.6g");
  if (s->has_loss) dhx_json_number(out, "final_loss", s->final_loss, "%.9g");
  if (s->has_val) dhx_json_number(out, "final_val_loss", s->final_val_loss, "%.9g");
  fprintf(out, ",\"params_xxh64\":\"%016" PRIx64 "\"", s->params_xxh64);
  if (s->replicated) fprintf(out, ",\"replicas_equal\":%s", s->replicas_equal ? "true" : "false");
  fprintf(out, ",\"paths\":[");
  for (int i = 0; i < s->npaths; i++) {
    if (i) fputc(',', out);
    json_string(out, s->paths[i]);
  }
  fputs("]}\n", out);
  fflush(out);
}
