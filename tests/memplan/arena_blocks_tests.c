// arena_blocks_tests — the planner's paged block lists (compiler/graph/arena_blocks.c) answer
// every fit exactly as a flat scan of the same blocks sorted by offset does: the scan the
// planner used before the pages, kept here as the reference.
//
// Blocks are drawn at random (overlapping, as blocks not live with each other may be), added
// and dropped by `done` over thousands of steps so that pages split, empty and vanish, and
// after every step each query is asked for sizes from one alignment unit to wider than any gap.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena_blocks.h"
#include "plan_base.h"

#define MAX_BLOCKS 4096

typedef struct flat {
  dhx_block b[MAX_BLOCKS];
  int n;
} flat;

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t draw(uint32_t below) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % below);
}

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

static void flat_insert(flat *f, dhx_block b) {
  int pos = f->n;
  while (pos > 0 && f->b[pos - 1].offset > b.offset) pos--;
  memmove(f->b + pos + 1, f->b + pos, sizeof(dhx_block) * (size_t)(f->n - pos));
  f->b[pos] = b;
  f->n++;
}

static void flat_drop(flat *f, int at) {
  int j = 0;
  for (int i = 0; i < f->n; i++)
    if (f->b[i].done > at) f->b[j++] = f->b[i];
  f->n = j;
}

// A live set that keeps the blocks of even tensors and of tensors divisible by 3.
static bool some_live(const void *ctx, int tensor) {
  (void)ctx;
  return tensor % 2 == 0 || tensor % 3 == 0;
}
static bool all_live(const void *ctx, int tensor) {
  (void)ctx;
  (void)tensor;
  return true;
}

static int64_t flat_first_fit(const flat *f, int64_t base, int64_t size, dhx_block_live_fn live) {
  int64_t at = base;
  for (int i = 0; i < f->n; i++) {
    if (f->b[i].offset >= at + size) break;
    if (!live(NULL, f->b[i].tensor)) continue;
    if (f->b[i].end > at) at = align_up(f->b[i].end);
  }
  return at;
}

static int64_t flat_last_fit(const flat *f, int64_t base, int64_t ceiling, int64_t size,
                             dhx_block_live_fn live) {
  int64_t best = -1, reach = base;
  for (int i = 0; i <= f->n; i++) {
    int64_t next = ceiling;
    if (i < f->n) {
      if (!live(NULL, f->b[i].tensor)) continue;
      next = f->b[i].offset < ceiling ? f->b[i].offset : ceiling;
    }
    int64_t top = (next - size) / DHX_ALIGN * DHX_ALIGN;
    if (top >= reach) best = top;
    if (i < f->n && f->b[i].end > reach) reach = align_up(f->b[i].end);
  }
  return best >= 0 ? best : reach > ceiling ? reach : ceiling;
}

static int64_t flat_bytes(const flat *f, dhx_block_live_fn live) {
  int64_t sum = 0;
  for (int i = 0; i < f->n; i++)
    if (live(NULL, f->b[i].tensor)) sum += f->b[i].end - f->b[i].offset;
  return sum;
}

static int failures;
static void expect(int64_t got, int64_t want, const char *what, int step, int64_t size) {
  if (got == want) return;
  if (failures++ < 10)
    fprintf(stderr, "step %d, size %lld: %s gave %lld, the flat scan %lld\n", step,
            (long long)size, what, (long long)got, (long long)want);
}

static void check(dhx_blocks *s, const flat *f, int step) {
  int64_t base = DHX_ALIGN * (int64_t)draw(4);
  int64_t ceiling = DHX_ALIGN * (int64_t)(2000 + draw(40000));
  expect(dhx_blocks_bytes(s), flat_bytes(f, all_live), "bytes", step, 0);
  expect(dhx_blocks_bytes_if(s, some_live, NULL), flat_bytes(f, some_live), "bytes_if", step, 0);
  for (int64_t size = DHX_ALIGN; size <= DHX_ALIGN * 4096; size *= 2) {
    expect(dhx_blocks_first_fit(s, base, size), flat_first_fit(f, base, size, all_live),
           "first_fit", step, size);
    expect(dhx_blocks_last_fit(s, base, ceiling, size),
           flat_last_fit(f, base, ceiling, size, all_live), "last_fit", step, size);
    expect(dhx_blocks_first_fit_if(s, base, size, some_live, NULL),
           flat_first_fit(f, base, size, some_live), "first_fit_if", step, size);
    expect(dhx_blocks_last_fit_if(s, base, ceiling, size, some_live, NULL),
           flat_last_fit(f, base, ceiling, size, some_live), "last_fit_if", step, size);
  }
}

int main(void) {
  static flat f;
  dhx_blocks s;
  dhx_blocks_init(&s);
  int tensor = 0;
  for (int step = 0; step < 6000; step++) {
    // Mostly additions, some in bursts at one offset; now and then a drop by `done`, so the
    // list grows past many pages, then shrinks.
    int adds = step % 500 < 400 ? 1 + (int)draw(3) : 0;
    for (int a = 0; a < adds && f.n < MAX_BLOCKS; a++) {
      int64_t off = DHX_ALIGN * (int64_t)(draw(8) == 0 ? 100 : draw(40000));
      int64_t len = DHX_ALIGN * (int64_t)(1 + draw(draw(4) == 0 ? 2000 : 40));
      dhx_block b = {.offset = off, .end = off + len, .tensor = tensor++,
                     .done = step + 1 + (int)draw(1500)};
      dhx_blocks_insert(&s, b);
      flat_insert(&f, b);
    }
    if (step % 7 == 0) {
      dhx_blocks_drop_done(&s, step);
      flat_drop(&f, step);
    }
    if (s.count != f.n && failures++ < 10)
      fprintf(stderr, "step %d: %d blocks, the flat list %d\n", step, s.count, f.n);
    if (step % 3 == 0) check(&s, &f, step);
  }
  dhx_blocks_free(&s);
  if (failures) {
    fprintf(stderr, "FAIL: %d answers differ from the flat scan\n", failures);
    return 1;
  }
  printf("ok: paged fits equal the flat scan over 6000 steps\n");
  return 0;
}
