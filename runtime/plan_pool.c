// plan_pool.c — the bytes a plan's instructions point to: their GEMM shapes and notes. A plan
// read from plan.bin (or built by hand in a test) keeps them here, in chunks freed with the plan;
// a plan compiled by dhxc points at the compiler's interned copies instead.
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define CHUNK_BYTES (64 * 1024)

typedef struct chunk {
  struct chunk *next;
  size_t used, size;
  _Alignas(8) unsigned char bytes[];
} chunk;

struct dhx_plan_pool {
  chunk *head;  // the chunk being filled; earlier ones follow it
};

void *dhx_plan_alloc(dhx_plan *plan, size_t size) {
  size = (size + 7) / 8 * 8;
  if (!plan->pool && !(plan->pool = calloc(1, sizeof *plan->pool))) abort();
  chunk *c = plan->pool->head;
  if (!c || c->size - c->used < size) {
    size_t bytes = size > CHUNK_BYTES ? size : CHUNK_BYTES;
    chunk *fresh = malloc(sizeof *fresh + bytes);
    if (!fresh) abort();
    *fresh = (chunk){.next = c, .size = bytes};
    plan->pool->head = c = fresh;
  }
  void *p = c->bytes + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

const char *dhx_plan_text(dhx_plan *plan, const char *text) {
  size_t n = strnlen(text, DHX_NAME_MAX - 1);
  char *copy = dhx_plan_alloc(plan, n + 1);
  memcpy(copy, text, n);
  return copy;
}

dhx_plan_gemm *dhx_plan_own_gemm(dhx_plan *plan, dhx_plan_instr *in) {
  dhx_plan_gemm *g = dhx_plan_alloc(plan, sizeof *g);
  if (in->gemm) *g = *in->gemm;
  in->gemm = g;
  return g;
}

void dhx_plan_pool_free(dhx_plan_pool *pool) {
  if (!pool) return;
  for (chunk *c = pool->head, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(pool);
}
