// pool.c — worker threads for kernels: a parallel-for over an index range [0, n).
//
// The range is cut into at most T contiguous chunks (T = threads, counting the caller, which
// runs chunk 0). Kernels are written so that distinct indices never write the same memory,
// so the split cannot change results: a run is bitwise identical at any thread count. Ranges
// shorter than two grains run inline, because waking a thread costs more than a tiny kernel.
//
// Several streams may call in at once; parallel-fors then run one after another (the submit
// lock), which keeps the machine from being oversubscribed.
#include <pthread.h>
#include <stdlib.h>

#include "dhxrt.h"

struct dhx_pool {
  int nthreads;  // counting the caller
  pthread_t *helpers;
  pthread_mutex_t submit;  // one parallel-for at a time
  pthread_mutex_t lock;    // guards everything below
  pthread_cond_t wake, done;
  uint64_t generation;  // incremented for each job
  int pending;          // helper chunks of the current job still running
  bool stop;
  dhx_range_fn fn;
  void *ctx;
  int64_t n;
  int nchunks;
};

typedef struct helper_arg {
  dhx_pool *pool;
  int index;  // 1..nthreads-1: the chunk this helper runs
} helper_arg;

static void chunk_bounds(int64_t n, int nchunks, int c, int64_t *begin, int64_t *end) {
  *begin = n / nchunks * c + (c < n % nchunks ? c : n % nchunks);
  *end = *begin + n / nchunks + (c < n % nchunks ? 1 : 0);
}

static void *helper_main(void *p) {
  helper_arg *arg = p;
  dhx_pool *pool = arg->pool;
  int index = arg->index;
  free(arg);
  uint64_t seen = 0;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (pool->generation == seen && !pool->stop) pthread_cond_wait(&pool->wake, &pool->lock);
    if (pool->stop) break;
    seen = pool->generation;
    if (index >= pool->nchunks) continue;  // this job has fewer chunks than threads
    dhx_range_fn fn = pool->fn;
    void *ctx = pool->ctx;
    int64_t begin, end;
    chunk_bounds(pool->n, pool->nchunks, index, &begin, &end);
    pthread_mutex_unlock(&pool->lock);
    fn(ctx, begin, end);
    pthread_mutex_lock(&pool->lock);
    if (--pool->pending == 0) pthread_cond_signal(&pool->done);
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

dhx_pool *dhx_pool_new(int nthreads) {
  dhx_pool *pool = calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->nthreads = nthreads < 1 ? 1 : nthreads;
  pthread_mutex_init(&pool->submit, NULL);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pthread_cond_init(&pool->done, NULL);
  pool->helpers = calloc((size_t)pool->nthreads, sizeof(pthread_t));
  if (!pool->helpers) {
    free(pool);
    return NULL;
  }
  for (int i = 1; i < pool->nthreads; i++) {
    helper_arg *arg = malloc(sizeof *arg);
    if (!arg) break;
    *arg = (helper_arg){pool, i};
    if (pthread_create(&pool->helpers[i], NULL, helper_main, arg) != 0) {
      free(arg);
      pool->nthreads = i;  // run with the helpers we have
      break;
    }
  }
  return pool;
}

void dhx_pool_free(dhx_pool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->lock);
  pool->stop = true;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 1; i < pool->nthreads; i++) pthread_join(pool->helpers[i], NULL);
  pthread_cond_destroy(&pool->wake);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->submit);
  free(pool->helpers);
  free(pool);
}

int dhx_pool_threads(const dhx_pool *pool) { return pool ? pool->nthreads : 1; }

void dhx_pool_for(dhx_pool *pool, int64_t n, int64_t grain, dhx_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t nchunks = n / grain;
  int threads = dhx_pool_threads(pool);
  if (nchunks > threads) nchunks = threads;
  if (nchunks <= 1) {
    fn(ctx, 0, n);
    return;
  }
  pthread_mutex_lock(&pool->submit);
  pthread_mutex_lock(&pool->lock);
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  pool->nchunks = (int)nchunks;
  pool->pending = (int)nchunks - 1;
  pool->generation++;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);

  int64_t begin, end;
  chunk_bounds(n, (int)nchunks, 0, &begin, &end);
  fn(ctx, begin, end);

  pthread_mutex_lock(&pool->lock);
  while (pool->pending > 0) pthread_cond_wait(&pool->done, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  pthread_mutex_unlock(&pool->submit);
}

void dhx_pool_alone(dhx_pool *pool, void (*fn)(void *ctx), void *ctx) {
  pthread_mutex_lock(&pool->submit);
  fn(ctx);
  pthread_mutex_unlock(&pool->submit);
}
