// bench_kernels.c — codegen_kernel_bench: effective bandwidth of the main generated kernels
// (f32, GPT-2-small-shaped tensors) next to memcpy moving the same number of bytes, on 1 and
// on all (up to 2) threads. A kernel's bytes are what it must read and write at least once
// (a row re-read from L1/L2 within a kernel counts once).
//
//   codegen_kernel_bench [rows] [threads]      default rows = 4096 (B*T = 4 x 1024)
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cg_test.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *fbuf(int64_t n, float lo, float hi) {
  float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
  CHECK(p != NULL, "out of memory (%lld floats)", (long long)n);
  for (int64_t i = 0; i < n; i++) p[i] = (float)rng_uniform(lo, hi);
  return p;
}

typedef struct job {
  dhx_kernel_fn fn;
  const dhx_slot *args;
  int64_t begin, end;
  void *dst;
  const void *src;
  size_t bytes;
} job;

static void *run_job(void *p) {
  job *j = p;
  if (j->fn) j->fn(j->args, j->begin, j->end);
  else memcpy(j->dst, j->src, j->bytes);
  return NULL;
}

// One timed call of fn over [0, n) (or a memcpy) split over `threads` threads.
static double once(int threads, dhx_kernel_fn fn, const dhx_slot *a, int64_t n, void *dst,
                   const void *src, size_t bytes) {
  job jobs[8];
  pthread_t th[8];
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job){fn, a, n * t / threads, n * (t + 1) / threads, NULL, NULL, 0};
    if (!fn) {
      size_t lo = bytes * (size_t)t / (size_t)threads, hi = bytes * (size_t)(t + 1) / (size_t)threads;
      jobs[t].dst = (char *)dst + lo, jobs[t].src = (const char *)src + lo, jobs[t].bytes = hi - lo;
    }
  }
  double t0 = now();
  for (int t = 1; t < threads; t++) pthread_create(&th[t], NULL, run_job, &jobs[t]);
  run_job(&jobs[0]);
  for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
  return now() - t0;
}

// Best of repeated runs for ~0.4 s (at least 3).
static double best(int threads, dhx_kernel_fn fn, const dhx_slot *a, int64_t n, void *dst,
                   const void *src, size_t bytes) {
  double b = 1e30, total = 0;
  for (int r = 0; r < 3 || total < 0.4; r++) {
    double t = once(threads, fn, a, n, dst, src, bytes);
    total += t;
    if (t < b) b = t;
    if (r > 200) break;
  }
  return b;
}

static int g_threads;
static char *g_cpy_src, *g_cpy_dst;
static size_t g_cpy_cap;

// memcpy buffers of at least `bytes` (touched, so page faults are not timed).
static void cpy_reserve(size_t bytes) {
  if (bytes <= g_cpy_cap) return;
  free(g_cpy_src), free(g_cpy_dst);
  g_cpy_cap = (bytes + 63) / 64 * 64;
  g_cpy_src = aligned_alloc(64, g_cpy_cap), g_cpy_dst = aligned_alloc(64, g_cpy_cap);
  CHECK(g_cpy_src && g_cpy_dst, "out of memory");
  memset(g_cpy_src, 1, g_cpy_cap), memset(g_cpy_dst, 2, g_cpy_cap);
}

static void report(const char *name, const char *shape, dhx_kernel_fn fn, const dhx_slot *a,
                   int64_t n, double bytes) {
  cpy_reserve((size_t)(bytes / 2));
  printf("%-29s %-13s %7.1f MB", name, shape, bytes / 1e6);
  for (int threads = 1; threads <= g_threads; threads++) {
    double tk = best(threads, fn, a, n, NULL, NULL, 0);
    double tm = best(threads, NULL, NULL, 0, g_cpy_dst, g_cpy_src, (size_t)(bytes / 2));
    printf(" | %dT %7.3f ms %6.1f GB/s (memcpy %6.1f, %3.0f%%)", threads, tk * 1e3,
           bytes / tk / 1e9, bytes / tm / 1e9, 100.0 * tm / tk);
  }
  printf("\n");
}

#define P(x) ((dhx_slot){.p = (x)})
#define I(v) ((dhx_slot){.i = (v)})
#define F(v) ((dhx_slot){.f = (v)})

int main(int argc, char **argv) {
  int64_t rows = argc > 1 ? atoll(argv[1]) : 4096;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  g_threads = argc > 2 ? atoi(argv[2]) : (ncpu >= 2 ? 2 : 1);
  if (g_threads < 1) g_threads = 1;
  if (g_threads > 8) g_threads = 8;
  const int64_t C = 768, FF = 3072, T = 1024, H = 12, V = 50257;
  const int64_t bh = rows / T > 0 ? rows / T * H : H;  // attention rows = B*H*T
  const int64_t xent_rows = rows < 1024 ? rows : 1024;

  cgt t;
  cgt_init(&t);
  dhx_kernel_kind kinds[] = {DHX_K_LAYERNORM_FWD,      DHX_K_LAYERNORM_BWD_DX,
                             DHX_K_LAYERNORM_BWD_DPARAMS, DHX_K_SOFTMAX_CAUSAL_FWD,
                             DHX_K_SOFTMAX_CAUSAL_BWD, DHX_K_ADAMW,
                             DHX_K_XENT_FWD,           DHX_K_XENT_BWD,
                             DHX_K_COLSUM,             DHX_K_EMBED_FWD,
                             DHX_K_EMBED_BWD,          DHX_K_SUMSQ,
                             DHX_K_EMBED_VP_FWD,       DHX_K_EMBED_VP_BWD,
                             DHX_K_XENT_VP_STATS,      DHX_K_XENT_VP_BWD};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    dhx_kernel_spec s = cgt_spec(kinds[i], DHX_KT_F32);
    cgt_add(&t, &s);
  }
  dhx_kernel_spec bg768 = spec_bias_gelu(DHX_KT_F32, C), bg3072 = spec_bias_gelu(DHX_KT_F32, FF);
  dhx_kernel_spec gg = spec_gelu_grad(DHX_KT_F32, false), pos = spec_pos_add(DHX_KT_F32, T * C);
  dhx_kernel_spec acc = spec_acc_add(DHX_KT_F32);
  dhx_kernel_spec ew[] = {bg768, bg3072, gg, pos, acc};
  for (size_t i = 0; i < sizeof ew / sizeof ew[0]; i++) cgt_add(&t, &ew[i]);
  double t0 = now();
  cgt_build(&t);
  printf("codegen: %d kernels -> kernels.so in %.2f s; rows = %lld, up to %d threads\n",
         dhx_codegen_count(t.cg), now() - t0, (long long)rows, g_threads);
#define FN(kk) cgt_fn(&t, &(dhx_kernel_spec){.kind = (kk), .type = DHX_KT_F32})

  // ---- layernorm ----
  int64_t n = rows * C;
  float *x = fbuf(n, -2, 2), *out = fbuf(n, 0, 0), *dout = fbuf(n, -1, 1), *dx = fbuf(n, 0, 0);
  float *mean = fbuf(rows, 0, 0), *rstd = fbuf(rows, 0, 0), *g = fbuf(C, 0.5, 1.5);
  float *b = fbuf(C, -1, 1), *dg = fbuf(C, 0, 0), *db = fbuf(C, 0, 0);
  char shape[64];
  snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)C);
  dhx_slot lf[] = {P(out), P(mean), P(rstd), P(x), P(g), P(b), I(C), F(1e-5)};
  report("layernorm_fwd", shape, FN(DHX_K_LAYERNORM_FWD), lf, rows, 2.0 * n * 4);
  dhx_slot lb[] = {P(dx), P(dout), P(x), P(mean), P(rstd), P(g), I(C), I(1)};
  report("layernorm_bwd_dx (+=)", shape, FN(DHX_K_LAYERNORM_BWD_DX), lb, rows, 4.0 * n * 4);
  dhx_slot lp[] = {P(dg), P(db), P(dout), P(x), P(mean), P(rstd), I(rows), I(C)};
  report("layernorm_bwd_dparams", shape, FN(DHX_K_LAYERNORM_BWD_DPARAMS), lp, C, 2.0 * n * 4);
  dhx_slot cs[] = {P(dg), P(dout), I(rows), I(C), I(1)};
  report("colsum (bias grad)", shape, FN(DHX_K_COLSUM), cs, C, 1.0 * n * 4);
  // pre = y + bias, out = gelu(pre): out of place, so repeated runs see the same inputs.
  dhx_slot bg[] = {P(dx), P(out), P(x), P(b)};
  report("bias+gelu", shape, cgt_fn(&t, &bg768), bg, n, 3.0 * n * 4);
  dhx_slot ac[] = {P(dx), P(dout)};
  report("ew out += a", shape, cgt_fn(&t, &acc), ac, n, 3.0 * n * 4);
  memset(dx, 0, (size_t)n * 4);
  int32_t *tok = malloc(sizeof(int32_t) * (size_t)rows);
  for (int64_t i = 0; i < rows; i++) tok[i] = rng_int((int)V);
  float *wte = fbuf(V * C, -1, 1);
  dhx_slot ef[] = {P(out), P(tok), P(wte), I(C)};
  report("embed_fwd", shape, FN(DHX_K_EMBED_FWD), ef, rows, 2.0 * n * 4);
  dhx_slot eb[] = {P(wte), P(tok), P(dout), I(rows), I(C)};
  report("embed_bwd", shape, FN(DHX_K_EMBED_BWD), eb, C, 3.0 * n * 4);
  // The vocabulary-parallel pair, with the whole table as one shard.
  dhx_slot vf[] = {P(out), P(tok), P(wte), I(C), I(0), I(V)};
  report("embed_vp_fwd", shape, FN(DHX_K_EMBED_VP_FWD), vf, rows, 2.0 * n * 4);
  dhx_slot vb[] = {P(wte), P(tok), P(dout), I(rows), I(C), I(0), I(V)};
  report("embed_vp_bwd", shape, FN(DHX_K_EMBED_VP_BWD), vb, C, 3.0 * n * 4);
  float *wpe = fbuf(T * C, -1, 1);
  dhx_slot pa[] = {P(out), P(x), P(wpe)};
  report("ew out = x + wpe[i%TC]", shape, cgt_fn(&t, &pos), pa, n, 2.0 * n * 4);
  free(x), free(out), free(dout), free(dx), free(wte);

  // ---- MLP-sized elementwise ----
  n = rows * FF;
  snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)FF);
  float *y = fbuf(n, -3, 3), *o = fbuf(n, 0, 0), *dy = fbuf(n, -1, 1), *bf = fbuf(FF, -1, 1);
  float *pre = fbuf(n, 0, 0);
  dhx_slot bg2[] = {P(pre), P(o), P(y), P(bf)};
  report("bias+gelu", shape, cgt_fn(&t, &bg3072), bg2, n, 3.0 * n * 4);
  dhx_slot gr[] = {P(o), P(y), P(dy)};
  report("gelu_grad", shape, cgt_fn(&t, &gg), gr, n, 3.0 * n * 4);
  free(y), free(o), free(dy), free(bf), free(pre);

  // ---- attention softmax (B*H*T rows of T, causal) ----
  int64_t srows = bh * T;
  n = srows * T;
  snprintf(shape, sizeof shape, "%lldx%lld", (long long)srows, (long long)T);
  float *S = fbuf(n, -4, 4), *dP = fbuf(n, -1, 1), *Pm = fbuf(n, 0, 0);
  double causal = (double)bh * (double)T * (double)(T + 1) / 2;  // elements with j <= t
  dhx_slot sf[] = {P(Pm), P(S), I(T), F(0.125)};
  report("softmax_causal_fwd", shape, FN(DHX_K_SOFTMAX_CAUSAL_FWD), sf, srows,
         (causal + (double)n) * 4);
  float *dS = fbuf(n, 0, 0);  // out of place: in place, repeated runs would shrink dP to 0
  dhx_slot sb[] = {P(dS), P(dP), P(Pm), I(T), F(0.125)};
  report("softmax_causal_bwd", shape, FN(DHX_K_SOFTMAX_CAUSAL_BWD), sb, srows,
         (2 * causal + (double)n) * 4);
  free(S), free(dP), free(Pm), free(dS);

  // ---- loss over the vocabulary ----
  n = xent_rows * V;
  snprintf(shape, sizeof shape, "%lldx%lld", (long long)xent_rows, (long long)V);
  float *lg = fbuf(n, -4, 4), *loss = fbuf(xent_rows, 0, 0);
  int32_t *tg = malloc(sizeof(int32_t) * (size_t)xent_rows);
  for (int64_t i = 0; i < xent_rows; i++) tg[i] = rng_int((int)V);
  dhx_slot xf[] = {P(loss), P(lg), P(tg), I(V)};
  report("xent_fwd", shape, FN(DHX_K_XENT_FWD), xf, xent_rows, 1.0 * n * 4);
  float *dl = fbuf(n, 0, 0);
  dhx_slot xb[] = {P(dl), P(lg), P(tg), I(V), F(1.0 / 4096)};
  report("xent_bwd", shape, FN(DHX_K_XENT_BWD), xb, xent_rows, 2.0 * n * 4);
  // The vocabulary-parallel statistics and gradient, with the whole row as one shard.
  float *st = fbuf(3 * xent_rows, 0, 0), *lse = fbuf(xent_rows, 0, 0);
  dhx_slot xs[] = {P(st), P(lg), P(tg), I(V), I(0), I(3), I(xent_rows)};
  report("xent_vp_stats", shape, FN(DHX_K_XENT_VP_STATS), xs, xent_rows, 1.0 * n * 4);
  for (int64_t i = 0; i < xent_rows; i++) lse[i] = st[i] + logf(st[xent_rows + i]);
  dhx_slot xv[] = {P(dl), P(lg), P(lse), P(tg), I(V), I(0), F(1.0 / 4096)};
  report("xent_vp_bwd", shape, FN(DHX_K_XENT_VP_BWD), xv, xent_rows, 2.0 * n * 4);
  free(lg), free(loss), free(tg), free(dl), free(st), free(lse);

  // ---- optimizer ----
  n = 16 << 20;
  snprintf(shape, sizeof shape, "%lld", (long long)n);
  float *pp = fbuf(n, -1, 1), *pg = fbuf(n, -1, 1), *pm = fbuf(n, -1, 1), *pv = fbuf(n, 0, 1);
  float clip = 1.0f;  // the clip scale GRAD_NORM leaves in memory
  dhx_slot aw[] = {P(pp), P(pg), P(pm), P(pv), F(1e-4), F(0.9), F(0.95), F(1e-8), F(0.1),
                   F(0.5), F(0.3), P(&clip)};
  report("adamw", shape, FN(DHX_K_ADAMW), aw, n, 7.0 * n * 4);
  int64_t chunk = 16384, nch = (n + chunk - 1) / chunk;
  float *part = fbuf(nch, 0, 0);
  dhx_slot sq[] = {P(part), P(pg), I(n), I(chunk)};
  report("sumsq (grad norm)", shape, FN(DHX_K_SUMSQ), sq, nch, 1.0 * n * 4);
  free(pp), free(pg), free(pm), free(pv), free(part), free(tok), free(wpe);
  free(mean), free(rstd), free(g), free(b), free(dg), free(db);
  free(g_cpy_src), free(g_cpy_dst);
  cgt_done(&t);
  return 0;
}
