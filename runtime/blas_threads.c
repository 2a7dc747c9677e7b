// blas_threads.c — which GEMMs OpenBLAS's own threads may compute: those they compute bit for
// bit as one thread does.
//
// exec_cpu.c splits a GEMM over the worker pool, each worker calling single-threaded sgemm on
// its rows of C, so every worker packs all of B by itself. OpenBLAS's threaded driver packs each
// panel of B once and the threads share it: on two busy cores GPT-2-small's large GEMMs ran
// 15-35% faster that way, on quiet ones as fast (bench/cpu_train; architecture.md, "Runtime").
// But that driver cuts k into blocks differently from the single-threaded one for some k (when
// what is left of k lies between one and two blocks), which changes the order of the sums, and
// a run must be bitwise the same at any thread count (pool.c; the parity tests compare runs of
// 1 and 2 ranks on two cores). So each shape is computed once both ways on made-up operands
// the first time it runs, and only the shapes whose products come out bit for bit the same run
// on OpenBLAS's threads. A different order of sums shows in nearly every element of a product
// of pseudo-random operands; the same order gives the same bits whatever the operands.
//
// OpenBLAS's thread count is one setting for the whole process: a threaded call holds the write
// side of a lock whose read side every other sgemm call of the runtime holds, and sets the
// count back to one before it lets go.
//
// After a job OpenBLAS's threads spin (sched_yield) for 2^28 cycles before they sleep, and
// GEMMs come every few milliseconds, so they never slept and took the cores from the kernels
// between GEMMs (GPT-2-small's element-wise kernels ran 1.6x slower). OpenBLAS reads
// OPENBLAS_THREAD_TIMEOUT only as it loads, before main (and the C library sets up the
// environment it reads after an executable's preinit functions run, too late to set it there),
// so dhxrun runs itself again with 4 (2^4 cycles: sleep at once) unless the variable is set.
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhxrt.h"

static pthread_rwlock_t blas_mode = PTHREAD_RWLOCK_INITIALIZER;

bool dhx_blas_sleep_when_idle(char **argv) {
  if (getenv("OPENBLAS_THREAD_TIMEOUT")) return false;
  // The executable's path rather than /proc/self/exe itself: under valgrind that is valgrind's
  // own tool, which refuses to be run directly (the path read through it is this program's).
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0 || n >= (ssize_t)sizeof self - 1) return false;  // no /proc: OpenBLAS's threads spin
  self[n] = '\0';
  if (setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) != 0) return false;
  execv(self, argv);
  unsetenv("OPENBLAS_THREAD_TIMEOUT");  // not run again: as it was
  return false;
}

struct dhx_blas_shapes {
  int threads;
  pthread_mutex_t lock;  // the table: streams look shapes up, and add them, at once
  int n, cap;
  dhx_plan_gemm *shape;  // the single (unbatched) GEMM shapes tried
  bool *threaded;        // per shape: OpenBLAS's threads give the same bits
};

static void call_sgemm(const dhx_plan_gemm *g, int64_t m, int64_t n, const float *a,
                       const float *b, float *c) {
  cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
              g->trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)g->k, (float)g->alpha,
              a, (int)g->lda, b, (int)g->ldb, (float)g->beta, c, (int)g->ldc);
}

void dhx_blas_sgemm(const dhx_plan_gemm *g, int64_t m, int64_t n, const float *a,
                    const float *b, float *c) {
  pthread_rwlock_rdlock(&blas_mode);
  call_sgemm(g, m, n, a, b, c);
  pthread_rwlock_unlock(&blas_mode);
}

void dhx_blas_sgemm_threaded(const dhx_plan_gemm *g, int threads, const float *a,
                             const float *b, float *c) {
  pthread_rwlock_wrlock(&blas_mode);
  openblas_set_num_threads(threads);
  call_sgemm(g, g->m, g->n, a, b, c);
  openblas_set_num_threads(1);
  pthread_rwlock_unlock(&blas_mode);
}

// Only what decides how the product is computed: dimensions, transposes, strides, alpha and
// beta (their bits: a NaN is one shape too), field by field (a struct's padding is not its own).
static bool same_shape(const dhx_plan_gemm *a, const dhx_plan_gemm *b) {
  return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->m == b->m && a->n == b->n &&
         a->k == b->k && a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc &&
         !memcmp(&a->alpha, &b->alpha, sizeof a->alpha) &&
         !memcmp(&a->beta, &b->beta, sizeof a->beta);
}

static int find(const dhx_blas_shapes *s, const dhx_plan_gemm *g) {
  for (int i = 0; i < s->n; i++)
    if (same_shape(&s->shape[i], g)) return i;
  return -1;
}

static void fill(float *x, int64_t count, uint64_t seed) {
  uint64_t v = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < count; i++) {
    v ^= v << 13, v ^= v >> 7, v ^= v << 17;
    x[i] = (float)((double)(v >> 40) / (double)(1ull << 24)) - 0.5f;
  }
}

// Elements an operand of `rows` stored rows of stride ld spans (the last row only to its end).
static int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows > 0 ? (rows - 1) * ld + cols : 0;
}

// Both ways on made-up operands; false also when the scratch cannot be had.
static bool same_bits(const dhx_plan_gemm *g, int threads) {
  int64_t na = g->trans_a ? span(g->k, g->m, g->lda) : span(g->m, g->k, g->lda);
  int64_t nb = g->trans_b ? span(g->n, g->k, g->ldb) : span(g->k, g->n, g->ldb);
  int64_t nc = span(g->m, g->n, g->ldc);
  float *a = malloc(sizeof(float) * (size_t)na), *b = malloc(sizeof(float) * (size_t)nb);
  float *c1 = malloc(sizeof(float) * (size_t)nc), *c2 = malloc(sizeof(float) * (size_t)nc);
  bool same = false;
  if (a && b && c1 && c2) {
    fill(a, na, 1);
    fill(b, nb, 2);
    fill(c1, nc, 3);
    memcpy(c2, c1, sizeof(float) * (size_t)nc);
    dhx_blas_sgemm(g, g->m, g->n, a, b, c1);
    dhx_blas_sgemm_threaded(g, threads, a, b, c2);
    same = !memcmp(c1, c2, sizeof(float) * (size_t)nc);
  }
  free(a);
  free(b);
  free(c1);
  free(c2);
  return same;
}

// Tries the shape the first time it runs, so that a rank on a GPU, whose GEMMs never run
// here, tries none. False when the table cannot grow (the pool's split then runs it).
static bool add_shape(dhx_blas_shapes *s, const dhx_plan_gemm *g) {
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 16;
    dhx_plan_gemm *shape = realloc(s->shape, sizeof *shape * (size_t)cap);
    if (!shape) return false;
    s->shape = shape;
    bool *threaded = realloc(s->threaded, sizeof *threaded * (size_t)cap);
    if (!threaded) return false;
    s->threaded = threaded;
    s->cap = cap;
  }
  s->shape[s->n] = *g;
  s->threaded[s->n] = same_bits(g, s->threads);
  return s->threaded[s->n++];
}

dhx_blas_shapes *dhx_blas_shapes_new(int threads) {
  dhx_blas_shapes *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->threads = threads;
  pthread_mutex_init(&s->lock, NULL);
  return s;
}

void dhx_blas_shapes_free(dhx_blas_shapes *s) {
  if (!s) return;
  pthread_mutex_destroy(&s->lock);
  free(s->shape);
  free(s->threaded);
  free(s);
}

int dhx_blas_shapes_threaded(dhx_blas_shapes *s) {
  if (!s) return 0;
  pthread_mutex_lock(&s->lock);
  int n = 0;
  for (int i = 0; i < s->n; i++) n += s->threaded[i];
  pthread_mutex_unlock(&s->lock);
  return n;
}

bool dhx_blas_threaded(dhx_blas_shapes *s, const dhx_plan_gemm *g) {
  if (!s || s->threads < 2 || g->batch[0] * g->batch[1] != 1) return false;
  pthread_mutex_lock(&s->lock);
  int i = find(s, g);
  bool threaded = i >= 0 ? s->threaded[i] : add_shape(s, g);
  pthread_mutex_unlock(&s->lock);
  return threaded;
}

void dhx_blas_version(char *out, size_t len) {
  const char *timeout = getenv("OPENBLAS_THREAD_TIMEOUT");
  snprintf(out, len, "%s; idle threads: OPENBLAS_THREAD_TIMEOUT=%s\n",
           openblas_get_config(), timeout ? timeout : "unset (they spin)");
}
