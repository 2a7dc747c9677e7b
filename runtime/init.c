// init.c — parameter initialisation.
//
// Each value comes from a counter-based generator: element i of tensor NAME is a function of
// (train.seed, FNV-1a(NAME), i) only — splitmix64 for uniform bits, Box-Muller for the normal —
// so every rank computes the same weights without communicating, in any order, with any number
// of threads, and a layout that splits a tensor differently still starts from the same model
// (a slice or a ZeRO shard initialises its elements by their index in the whole tensor, and
// its padding to zero).
#include <math.h>

#include "dhxrt.h"

#define INIT_GRAIN 4096

static uint64_t fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

// The k-th output of a splitmix64 sequence that starts at `key`.
static uint64_t splitmix64_at(uint64_t key, uint64_t k) {
  uint64_t z = key + (k + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name) {
  return splitmix64_at(seed ^ fnv1a64(name), 0);
}

// Element i uses the uniform pair (2j, 2j+1) with j = i/2: the cosine branch for even i, the
// sine branch for odd i, so each pair yields two independent normals.
static double normal_at(uint64_t key, int64_t i) {
  uint64_t j = (uint64_t)i / 2;
  double u1 = (double)((splitmix64_at(key, 2 * j) >> 11) + 1) * 0x1.0p-53;  // (0, 1]
  double u2 = (double)(splitmix64_at(key, 2 * j + 1) >> 11) * 0x1.0p-53;    // [0, 1)
  double radius = sqrt(-2.0 * log(u1)), angle = 2.0 * M_PI * u2;
  return (i & 1) ? radius * sin(angle) : radius * cos(angle);
}

double dhx_init_normal(uint64_t seed, const char *name, int64_t i) {
  return normal_at(tensor_key(seed, name), i);
}

typedef struct init_job {
  float *p;
  uint64_t key;
  float std;
  const dhx_plan_buffer *b;  // its part of the whole tensor
  bool whole;                // b is the whole tensor: element i is element i
} init_job;

// Element i takes the value of its whole-tensor element, padding 0.
static void init_range(void *ctx, int64_t begin, int64_t end) {
  init_job *job = ctx;
  const dhx_plan_buffer *b = job->b;
  for (int64_t i = begin; i < end; i++) {
    int64_t w = job->whole ? i : dhx_buffer_whole_index(b, i);
    if (w < 0) job->p[i] = 0.0f;
    else if (b->init == DHX_INIT_NORMAL) job->p[i] = (float)(job->std * normal_at(job->key, w));
    else job->p[i] = b->init == DHX_INIT_ONES ? 1.0f : 0.0f;
  }
}

void dhx_init_params(dhx_rt *rt, uint64_t seed) {
  for (uint32_t id = 0; id < rt->rank->nbuffers; id++) {
    const dhx_plan_buffer *b = &rt->rank->buffers[id];
    if (b->kind != DHX_BUF_PARAM) continue;
    init_job job = {dhx_rt_buffer(rt, (int32_t)id), tensor_key(seed, b->name), b->init_std, b,
                    b->split_dim < 0 && dhx_buffer_is_slice(b)};
    dhx_pool_for(rt->pool, dhx_buffer_elems(b), INIT_GRAIN, init_range, &job);
    dhx_init_master(rt->rank, rt->arena.base, (int32_t)id);
  }
}

// The master holds slice elements [shard_index*C, (shard_index+1)*C) (C its element count);
// the parameter holds the whole slice (zero 1 and 2), element j being slice element j.
void dhx_init_master(const dhx_plan_rank *r, uint8_t *arena, int32_t param) {
  const dhx_plan_buffer *p = &r->buffers[param];
  if (p->master < 0) return;
  const dhx_plan_buffer *m = &r->buffers[p->master];
  const float *w = (const float *)(arena + p->offset);
  float *dst = (float *)(arena + m->offset);
  int64_t n = dhx_buffer_elems(m), first = (int64_t)m->shard_index * n;
  int64_t have = dhx_buffer_elems(p);  // the slice and its padding (zero)
  for (int64_t i = 0; i < n; i++) dst[i] = first + i < have ? w[first + i] : 0.0f;
}
