// arena_blocks.h — the memory planner's set of placed blocks that may still be live, sorted by
// offset, with the queries first fit needs.
//
// A program of a paper-scale pipeline places hundreds of thousands of activations beside
// thousands of live blocks, so a flat sorted array (a scan and a move per tensor) made the
// planner quadratic. The blocks are kept in pages of at most DHX_BLOCK_PAGE, each summarising
// its widest gap and its highest end: a fit skips every page it cannot fall into, and an
// insertion moves one page.
#ifndef DHX_ARENA_BLOCKS_H
#define DHX_ARENA_BLOCKS_H

#include <stdbool.h>
#include <stdint.h>

#define DHX_BLOCK_PAGE 128

typedef struct dhx_block {
  int64_t offset, end;  // [offset, end), both multiples of DHX_ALIGN
  int tensor;
  int done;             // the list position from which on the block is free for every tensor
} dhx_block;

typedef struct dhx_block_page {
  dhx_block *b;
  int n;
  int64_t first;    // b[0].offset, here so that a walk over the pages stays in this array
  int64_t max_end;  // the highest end of its blocks
  int64_t max_gap;  // the widest gap in it: b[i].offset - max end of b[0..i-1], over i >= 1
  int64_t bytes;    // the sum of its blocks' sizes
  int min_done;     // the least `done` of its blocks
} dhx_block_page;

typedef struct dhx_blocks {
  dhx_block_page *pages;
  int npages, cap;
  int min_done;     // the least `done` of all blocks (INT_MAX: none)
  int count;
} dhx_blocks;

void dhx_blocks_init(dhx_blocks *s);
void dhx_blocks_free(dhx_blocks *s);
// Adds a block after those at a lower or equal offset.
void dhx_blocks_insert(dhx_blocks *s, dhx_block b);
// Removes the blocks done at or before list position `at`.
void dhx_blocks_drop_done(dhx_blocks *s, int at);
// The sum of the sizes of all blocks.
int64_t dhx_blocks_bytes(const dhx_blocks *s);

// With every block taken as live: the lowest offset >= base where `size` bytes fit between them
// (first fit), and the highest offset in [base, ceiling - size] where they fit, or, when none
// does, the first fit above them all or the ceiling, whichever is higher (last fit). Neither
// changes the set's blocks; a page each scans whole gets its true widest gap recorded.
int64_t dhx_blocks_first_fit(dhx_blocks *s, int64_t base, int64_t size);
int64_t dhx_blocks_last_fit(dhx_blocks *s, int64_t base, int64_t ceiling, int64_t size);

// The same fits where a block is live only when live(ctx, tensor) says so: every block is
// visited (no page is skipped).
typedef bool (*dhx_block_live_fn)(const void *ctx, int tensor);
int64_t dhx_blocks_first_fit_if(const dhx_blocks *s, int64_t base, int64_t size,
                                dhx_block_live_fn live, const void *ctx);
int64_t dhx_blocks_last_fit_if(const dhx_blocks *s, int64_t base, int64_t ceiling, int64_t size,
                               dhx_block_live_fn live, const void *ctx);
// The sum of the sizes of the blocks live() keeps.
int64_t dhx_blocks_bytes_if(const dhx_blocks *s, dhx_block_live_fn live, const void *ctx);

#endif
