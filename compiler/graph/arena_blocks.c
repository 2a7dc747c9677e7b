// arena_blocks.c — paged, offset-sorted block lists for the memory planner (arena_blocks.h).
#include "arena_blocks.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "plan_base.h"

static int64_t align_up(int64_t x) { return (x + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN; }

// Adds block b, the page's next one (in offset order), to a summary begun with `begin`.
static void begin(dhx_block_page *p) {
  p->max_end = p->max_gap = p->bytes = 0;
  p->min_done = INT_MAX;
}

static void account(dhx_block_page *p, const dhx_block *b, bool first) {
  if (first) {
    p->first = b->offset;
    p->max_end = b->end;
  } else {
    if (b->offset - p->max_end > p->max_gap) p->max_gap = b->offset - p->max_end;
    if (b->end > p->max_end) p->max_end = b->end;
  }
  p->bytes += b->end - b->offset;
  if (b->done < p->min_done) p->min_done = b->done;
}

static void summarise(dhx_block_page *p) {
  begin(p);
  for (int i = 0; i < p->n; i++) account(p, &p->b[i], i == 0);
}

void dhx_blocks_init(dhx_blocks *s) { *s = (dhx_blocks){.min_done = INT_MAX}; }

void dhx_blocks_free(dhx_blocks *s) {
  for (int k = 0; k < s->npages; k++) free(s->pages[k].b);
  free(s->pages);
  dhx_blocks_init(s);
}

// Room for one more page at index k (pages k.. move up one).
static dhx_block_page *open_page(dhx_blocks *s, int k) {
  if (s->npages == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 8;
    s->pages = realloc(s->pages, sizeof *s->pages * (size_t)s->cap);
    if (!s->pages) abort();
  }
  memmove(s->pages + k + 1, s->pages + k, sizeof *s->pages * (size_t)(s->npages - k));
  s->npages++;
  dhx_block_page *p = &s->pages[k];
  *p = (dhx_block_page){.b = malloc(sizeof(dhx_block) * DHX_BLOCK_PAGE)};
  if (!p->b) abort();
  return p;
}

void dhx_blocks_insert(dhx_blocks *s, dhx_block b) {
  // The last page whose first block is at or below b (the first page when none is).
  int lo = 0, hi = s->npages;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (s->pages[mid].first <= b.offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  int k = lo > 0 ? lo - 1 : 0;
  if (s->npages == 0) open_page(s, 0);
  dhx_block_page *p = &s->pages[k];
  if (p->n == DHX_BLOCK_PAGE) {  // split: the upper half moves to a new page after it
    dhx_block_page *q = open_page(s, k + 1);
    p = &s->pages[k];
    int half = DHX_BLOCK_PAGE / 2;
    memcpy(q->b, p->b + half, sizeof(dhx_block) * (size_t)(p->n - half));
    q->n = p->n - half;
    p->n = half;
    summarise(p);
    summarise(q);
    if (q->first <= b.offset) p = q;
  }
  int pos = 0;  // after the blocks at a lower or equal offset
  for (int top = p->n; pos < top;) {
    int mid = pos + (top - pos) / 2;
    if (p->b[mid].offset <= b.offset)
      pos = mid + 1;
    else
      top = mid;
  }
  memmove(p->b + pos + 1, p->b + pos, sizeof(dhx_block) * (size_t)(p->n - pos));
  p->b[pos] = b;
  p->n++;
  // The summary in O(1): max_gap may stay above the true widest gap (a block added in the
  // middle only narrows gaps), which costs a skipped page, never a wrong fit; drop_done and
  // splits recompute it.
  if (p->n == 1) {
    summarise(p);
  } else {
    if (pos == p->n - 1 && b.offset - p->max_end > p->max_gap) p->max_gap = b.offset - p->max_end;
    if (pos == 0 && p->b[1].offset - b.end > p->max_gap) p->max_gap = p->b[1].offset - b.end;
    if (pos == 0) p->first = b.offset;
    if (b.end > p->max_end) p->max_end = b.end;
    p->bytes += b.end - b.offset;
    if (b.done < p->min_done) p->min_done = b.done;
  }
  if (b.done < s->min_done) s->min_done = b.done;
  s->count++;
}

void dhx_blocks_drop_done(dhx_blocks *s, int at) {
  if (s->min_done > at) return;
  int kept = 0;
  s->min_done = INT_MAX;
  for (int k = 0; k < s->npages; k++) {
    dhx_block_page *p = &s->pages[k];
    if (p->min_done <= at) {  // keep the blocks not done, summarising them on the way
      int j = 0;
      begin(p);
      for (int i = 0; i < p->n; i++) {
        if (p->b[i].done <= at) continue;
        p->b[j] = p->b[i];
        account(p, &p->b[j], j == 0);
        j++;
      }
      s->count -= p->n - j;
      p->n = j;
    }
    if (p->n == 0) {
      free(p->b);
      continue;
    }
    if (p->min_done < s->min_done) s->min_done = p->min_done;
    if (kept < k) s->pages[kept] = *p;
    kept++;
  }
  s->npages = kept;
}

int64_t dhx_blocks_bytes(const dhx_blocks *s) {
  int64_t sum = 0;
  for (int k = 0; k < s->npages; k++) sum += s->pages[k].bytes;
  return sum;
}

// A page no fit can fall inside, past its first block, for `size` bytes: every gap in it is
// narrower. Its blocks then only raise the running end to its highest.
static bool skippable(const dhx_block_page *p, int64_t size) { return p->max_gap < size; }

// A page scanned to its end without a fit gets its widest gap anew on the way (insertions leave
// it above the true one), so that the next fit skips the page unless it changed meanwhile.
int64_t dhx_blocks_first_fit(dhx_blocks *s, int64_t base, int64_t size) {
  int64_t at = base;
  for (int k = 0; k < s->npages; k++) {
    dhx_block_page *p = &s->pages[k];
    if (p->first >= at + size) break;  // later blocks start no lower
    if (skippable(p, size)) {
      if (p->max_end > at) at = align_up(p->max_end);
      continue;
    }
    int64_t reach = p->b[0].end, gap = 0;  // within the page: the highest end, the widest gap
    for (int i = 0; i < p->n; i++) {
      const dhx_block *b = &p->b[i];
      if (b->offset >= at + size) return at;
      if (b->offset - reach > gap) gap = b->offset - reach;
      if (b->end > reach) reach = b->end;
      if (b->end > at) at = align_up(b->end);
    }
    p->max_gap = gap;
  }
  return at;
}

// Last fit at a live block starting at `next` (or the ceiling): the highest place below it,
// kept as the best so far when it clears `reach`, the end of the live blocks below.
static void fit_below(int64_t next, int64_t size, int64_t reach, int64_t *best) {
  int64_t top = (next - size) / DHX_ALIGN * DHX_ALIGN;
  if (top >= reach) *best = top;
}

// The places below each block (and below the ceiling, above them all) only rise with the
// blocks' offsets, so the highest that fits is the first found from the top: the pages are
// searched downwards, each with the end of the blocks below it (`below`, from the pages'
// highest ends), and the search stops at the first page that holds a fit.
// A page scanned whole gets its widest gap anew on the way, as in first fit.
int64_t dhx_blocks_last_fit(dhx_blocks *s, int64_t base, int64_t ceiling, int64_t size) {
  int64_t small[64], *below = small;
  if (s->npages + 1 > 64 && !(below = malloc(sizeof(int64_t) * (size_t)(s->npages + 1)))) abort();
  below[0] = base;  // below[k]: the reach (aligned end of the blocks) below page k
  for (int k = 0; k < s->npages; k++)
    below[k + 1] = s->pages[k].max_end > below[k] ? align_up(s->pages[k].max_end) : below[k];
  int64_t best = -1, reach_all = below[s->npages];
  fit_below(ceiling, size, reach_all, &best);
  for (int k = s->npages - 1; k >= 0 && best < 0; k--) {
    dhx_block_page *p = &s->pages[k];
    int n = skippable(p, size) ? 1 : p->n;  // no fit lies in it past its first block
    int64_t reach[DHX_BLOCK_PAGE];  // reach[i]: the reach below block i
    int64_t top = p->b[0].end, gap = 0;  // within the page: the highest end, the widest gap
    reach[0] = below[k];
    for (int i = 1; i < n; i++) {
      reach[i] = p->b[i - 1].end > reach[i - 1] ? align_up(p->b[i - 1].end) : reach[i - 1];
      if (p->b[i].offset - top > gap) gap = p->b[i].offset - top;
      if (p->b[i].end > top) top = p->b[i].end;
    }
    if (n == p->n) p->max_gap = gap;
    for (int i = n - 1; i >= 0 && best < 0; i--) {
      const dhx_block *b = &p->b[i];
      fit_below(b->offset < ceiling ? b->offset : ceiling, size, reach[i], &best);
    }
  }
  if (below != small) free(below);
  return best >= 0 ? best : reach_all > ceiling ? reach_all : ceiling;
}

int64_t dhx_blocks_first_fit_if(const dhx_blocks *s, int64_t base, int64_t size,
                                dhx_block_live_fn live, const void *ctx) {
  int64_t at = base;
  for (int k = 0; k < s->npages; k++) {
    const dhx_block_page *p = &s->pages[k];
    for (int i = 0; i < p->n; i++) {
      if (p->b[i].offset >= at + size) return at;
      if (!live(ctx, p->b[i].tensor)) continue;
      if (p->b[i].end > at) at = align_up(p->b[i].end);
    }
  }
  return at;
}

int64_t dhx_blocks_last_fit_if(const dhx_blocks *s, int64_t base, int64_t ceiling, int64_t size,
                               dhx_block_live_fn live, const void *ctx) {
  int64_t best = -1, reach = base;
  for (int k = 0; k < s->npages; k++) {
    const dhx_block_page *p = &s->pages[k];
    for (int i = 0; i < p->n; i++) {
      const dhx_block *b = &p->b[i];
      if (!live(ctx, b->tensor)) continue;
      fit_below(b->offset < ceiling ? b->offset : ceiling, size, reach, &best);
      if (b->end > reach) reach = align_up(b->end);
    }
  }
  fit_below(ceiling, size, reach, &best);
  return best >= 0 ? best : reach > ceiling ? reach : ceiling;
}

int64_t dhx_blocks_bytes_if(const dhx_blocks *s, dhx_block_live_fn live, const void *ctx) {
  int64_t sum = 0;
  for (int k = 0; k < s->npages; k++)
    for (int i = 0; i < s->pages[k].n; i++)
      if (live(ctx, s->pages[k].b[i].tensor)) sum += s->pages[k].b[i].end - s->pages[k].b[i].offset;
  return sum;
}
