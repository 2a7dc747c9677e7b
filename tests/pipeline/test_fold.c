// The W-folded pipeline's block order (compiler/graph/pipeline.c, dhx_fold_order): the
// documented timeline for pp 2, and for other sizes every stage's order complete, in
// micro-batch order per chunk, within its cap of micro-batches in flight, and runnable by all
// stages together whatever the blocks' durations.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "testlib.h"

// "F0 f0 b0 B0 ...": F/B a forward/backward of the stage's first chunk, f/b of its second.
static void describe(const dhx_fold_block *order, int n, char *out, size_t size) {
  size_t at = 0;
  out[0] = '\0';
  for (int k = 0; k < n && at < size; k++) {
    const dhx_fold_block *b = &order[k];
    char kind = b->backward ? (b->c ? 'b' : 'B') : (b->c ? 'f' : 'F');
    at += (size_t)snprintf(out + at, size - at, "%s%c%d", k ? " " : "", kind, b->m);
  }
}

static void matches_the_documented_timeline(void) {
  static const char *const want[2] = {"F0 F1 F2 f0 F3 b0 f1 b1 f2 b2 B0 f3 b3 B1 B2 B3",
                                      "F0 f0 F1 f1 F2 b0 f2 B0 F3 b1 f3 B1 b2 B2 b3 B3"};
  for (int s = 0; s < 2; s++) {
    dhx_fold_block *order = dhx_fold_order(2, 4, s);
    char got[256];
    describe(order, 16, got, sizeof got);
    if (strcmp(got, want[s]) != 0) {
      fprintf(stderr, "stage %d: %s\n   wanted: %s\n", s, got, want[s]);
      CHECK(false);
    }
    free(order);
  }
}

// The global chunk of stage s's chunk c in a W of pp stages.
static int global_chunk(int pp, int s, int c) { return c == 0 ? s : 2 * pp - 1 - s; }

// Each stage's order on its own: every block once, each chunk's forwards and backwards in
// micro-batch order, at most 2pp - c micro-batches in flight through global chunk c (2pp - s
// through the stage's first chunk, s + 1 through its second), as dhxc check estimates.
static void check_stage(const dhx_fold_block *order, int pp, int micro, int s) {
  int next[2][2] = {{0, 0}, {0, 0}}, in_flight[2] = {0, 0};  // next: [backward][chunk]
  for (int k = 0; k < 4 * micro; k++) {
    const dhx_fold_block *b = &order[k];
    CHECK(b->c == 0 || b->c == 1);
    CHECK(b->m == next[b->backward][b->c]);
    next[b->backward][b->c]++;
    if (b->backward) CHECK(next[0][b->c] > b->m);  // after its own forward
    in_flight[b->c] += b->backward ? -1 : 1;
    CHECK(in_flight[b->c] <= 2 * pp - global_chunk(pp, s, b->c));
  }
  for (int i = 0; i < 4; i++) CHECK(next[i / 2][i % 2] == micro);
}

// All stages run their orders, each block once what it needs is done: the forward of the
// chunk before, or the chunk's forward and the backward of the chunk after. Whatever the
// durations, the stages finish exactly when this fixpoint finishes every block.
static void check_runnable(dhx_fold_block **orders, int pp, int micro) {
  int chunks = 2 * pp;
  bool *fwd = calloc((size_t)(chunks * micro), 1), *bwd = calloc((size_t)(chunks * micro), 1);
  int *pos = calloc((size_t)pp, sizeof(int));
  if (!fwd || !bwd || !pos) abort();
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < pp; s++) {
      if (pos[s] == 4 * micro) continue;
      const dhx_fold_block *b = &orders[s][pos[s]];
      int gc = global_chunk(pp, s, b->c), at = gc * micro + b->m;
      bool ready = b->backward ? fwd[at] && (gc == chunks - 1 || bwd[at + micro])
                               : gc == 0 || fwd[at - micro];
      if (!ready) continue;
      (b->backward ? bwd : fwd)[at] = true;
      pos[s]++;
      moved = true;
    }
  }
  for (int s = 0; s < pp; s++)
    if (pos[s] != 4 * micro) {
      fprintf(stderr, "pp %d, %d micro-batches: stage %d stops at block %d\n", pp, micro, s,
              pos[s]);
      CHECK(false);
    }
  free(fwd);
  free(bwd);
  free(pos);
}

static void orders_are_complete_bounded_and_runnable(void) {
  for (int pp = 2; pp <= 8; pp++)
    for (int micro = 1; micro <= 20; micro++) {
      dhx_fold_block *orders[8];
      for (int s = 0; s < pp; s++) {
        orders[s] = dhx_fold_order(pp, micro, s);
        check_stage(orders[s], pp, micro, s);
      }
      check_runnable(orders, pp, micro);
      for (int s = 0; s < pp; s++) free(orders[s]);
    }
}

// Paired strands in a W (dhx_strand_of): micro-batches go to the strands in groups of pp. On
// the bottom stage each forward of the leg going down listed just before the backward of the
// leg coming up that it runs beside, F(m + pp) b(m), is on the other strand, and from the
// first backward to the last forward at least three blocks in four run on the other strand
// than the block before them, where m % 2 parts at most half (the whole steady state of pp 2
// on one strand four blocks at a time).
static void strands_part_neighbouring_blocks(void) {
  for (int pp = 2; pp <= 8; pp++)
    for (int micro = 2 * pp; micro <= 40; micro += 3) {
      dhx_graph g = {.fold = true, .pp = pp};
      int n = 4 * micro, s = pp - 1;
      dhx_fold_block *order = dhx_fold_order(pp, micro, s);
      int first_b = 0, last_f = n - 1, parted = 0, mod2 = 0, pairs = 0;
      while (!order[first_b].backward) first_b++;
      while (order[last_f].backward) last_f--;
      for (int k = 1; k < n; k++) {
        const dhx_fold_block *a = &order[k - 1], *b = &order[k];
        int sa = dhx_strand_of(&g, a->m), sb = dhx_strand_of(&g, b->m);
        CHECK(sa == 0 || sa == 1);
        if (!a->backward && a->c == 0 && b->backward && b->c == 1 && a->m == b->m + pp) {
          CHECK(sa != sb);
          pairs++;
        }
        if (k < first_b || k > last_f) continue;
        parted += sa != sb;
        mod2 += a->m % 2 != b->m % 2;
      }
      CHECK(pairs >= micro - pp);
      CHECK(4 * parted >= 3 * (last_f - first_b + 1));
      if (pp == 2) CHECK(4 * mod2 <= 2 * (last_f - first_b + 1));
      free(order);
    }
}

int main(int argc, char **argv) {
  static const tl_test tests[] = {
      {"pipeline_fold_order_matches_the_documented_timeline", matches_the_documented_timeline},
      {"pipeline_fold_orders_are_complete_bounded_and_runnable",
       orders_are_complete_bounded_and_runnable},
      {"pipeline_fold_strands_part_neighbouring_blocks", strands_part_neighbouring_blocks},
  };
  return tl_main("test_fold", tests, sizeof tests / sizeof tests[0], argc, argv);
}
