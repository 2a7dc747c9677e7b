// overlap_search_tests.c — the alignment of the overlap search on hand-made group costs.
//   brute   on random small cases the dp alignment is legal, covers every group once in order,
//           and its modelled cost is the least over every alignment (enumerated), and no more
//           than greedy's or the unaligned sum
//   legal   two tensor-parallel collectives are never paired, even where pairing would pay
//   greedy  a case where pairing the next two groups is worse than what dp finds
//   memory  with a limit on the activations the two micro-batches hold, dp's alignment stays
//           within it at every step and is the least over the alignments that do (enumerated),
//           greedy's stays within it too and is never faster; a forward that would run ahead
//           of the backward's freeing is held back
//   ties    compute beside compute gains nothing, so dp does not pair it, and among equal
//           alignments runs the backward first
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlap_search.h"

#define X 1.15  // interference
#define MAXG 6

static int fails;
#define CHECK(c, ...)                     \
  do {                                    \
    if (!(c)) {                           \
      fprintf(stderr, __VA_ARGS__);       \
      fputc('\n', stderr);                \
      fails++;                            \
    }                                     \
  } while (0)

static dhx_ovl_group compute(double s) { return (dhx_ovl_group){.compute = s}; }
static dhx_ovl_group comm(double s, int tp) { return (dhx_ovl_group){.comm = s, .tp = tp}; }

// Every group once, in order, and no illegal pair.
static int valid(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                 const dhx_ovl_step *st, int n) {
  int i = 0, j = 0;
  for (int s = 0; s < n; s++) {
    if (st[s].f < 0 && st[s].b < 0) return 0;
    if (st[s].f >= 0 && st[s].f != i++) return 0;
    if (st[s].b >= 0 && st[s].b != j++) return 0;
    if (st[s].f >= 0 && st[s].b >= 0 && !dhx_ovl_legal(&F[st[s].f], &B[st[s].b])) return 0;
  }
  return i == nf && j == nb;
}

// What the two micro-batches hold once i forward and j backward groups have run.
static double held(const dhx_ovl_group *F, const dhx_ovl_group *B, const dhx_ovl_memory *m,
                   int i, int j) {
  return (i ? F[i - 1].held : 0) + (j ? B[j - 1].held : m->b_start);
}

// The least cost over every legal alignment (within `limit`, when set), each costed whole by
// dhx_ovl_cost.
static double best;
static const dhx_ovl_memory *limit;
static void enumerate(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb, int i,
                      int j, dhx_ovl_step *st, int n) {
  if (limit && held(F, B, limit, i, j) > limit->limit) return;
  if (i == nf && j == nb) {
    double c = dhx_ovl_cost(F, B, st, n, X);
    if (c < best) best = c;
    return;
  }
  if (i < nf) {
    st[n] = (dhx_ovl_step){i, -1};
    enumerate(F, nf, B, nb, i + 1, j, st, n + 1);
  }
  if (j < nb) {
    st[n] = (dhx_ovl_step){-1, j};
    enumerate(F, nf, B, nb, i, j + 1, st, n + 1);
  }
  if (i < nf && j < nb && dhx_ovl_legal(&F[i], &B[j])) {
    st[n] = (dhx_ovl_step){i, j};
    enumerate(F, nf, B, nb, i + 1, j + 1, st, n + 1);
  }
}

static dhx_ovl_group random_group(void) {
  double s = 0.1 + (rand() % 100) / 10.0;
  return rand() % 2 ? compute(s) : comm(s, rand() % 3 != 0);
}

static double aligned(const dhx_ovl_group *F, int nf, const dhx_ovl_group *B, int nb,
                      dhx_strand_search search, dhx_ovl_step *st, int *n) {
  *n = dhx_ovl_align(F, nf, B, nb, search, X, st);
  return dhx_ovl_cost(F, B, st, *n, X);
}

static void brute(void) {
  srand(7);
  for (int trial = 0; trial < 400; trial++) {
    int nf = 1 + rand() % MAXG, nb = 1 + rand() % MAXG, n;
    dhx_ovl_group F[MAXG], B[MAXG];
    dhx_ovl_step st[2 * MAXG], tmp[2 * MAXG];
    for (int i = 0; i < nf; i++) F[i] = random_group();
    for (int j = 0; j < nb; j++) B[j] = random_group();
    double dp = aligned(F, nf, B, nb, DHX_SEARCH_DP, st, &n);
    CHECK(valid(F, nf, B, nb, st, n), "trial %d: the dp alignment is not valid", trial);
    best = INFINITY;
    enumerate(F, nf, B, nb, 0, 0, tmp, 0);
    CHECK(fabs(dp - best) <= 1e-9 * best, "trial %d: dp %g, brute force %g", trial, dp, best);
    double greedy = aligned(F, nf, B, nb, DHX_SEARCH_GREEDY, tmp, &n);
    CHECK(valid(F, nf, B, nb, tmp, n), "trial %d: the greedy alignment is not valid", trial);
    double none = aligned(F, nf, B, nb, DHX_SEARCH_NONE, tmp, &n);
    CHECK(dp <= greedy + 1e-12 && dp <= none + 1e-12, "trial %d: dp %g, greedy %g, none %g",
          trial, dp, greedy, none);
  }
  printf("dp equals brute force on 400 random cases, never above greedy or the unaligned sum\n");
}

static void legal(void) {
  // Pairing the two long tensor-parallel collectives would take 10 instead of 20.
  dhx_ovl_group F[] = {comm(10, 1), compute(1)}, B[] = {comm(10, 1), compute(1)};
  dhx_ovl_step st[4];
  int n = dhx_ovl_align(F, 2, B, 2, DHX_SEARCH_DP, X, st);
  CHECK(valid(F, 2, B, 2, st, n), "the alignment pairs two tensor-parallel collectives");
  for (int s = 0; s < n; s++)
    CHECK(!(st[s].f == 0 && st[s].b == 0), "step %d pairs the two collectives", s);
  // A data-parallel collective beside a tensor-parallel one is legal, and taken.
  B[0].tp = false;
  n = dhx_ovl_align(F, 2, B, 2, DHX_SEARCH_DP, X, st);
  CHECK(n >= 1 && st[0].f == 0 && st[0].b == 0, "the legal pair of collectives is not taken");
  printf("two tensor-parallel collectives are never paired; other collectives are\n");
}

static void greedy(void) {
  // Greedy pairs the short compute with the long collective, then the long collective with the
  // short compute: 10 + 10. Dp runs the first compute alone, then the two collectives together,
  // then the last compute: 1 + 10 + 1.
  dhx_ovl_group F[] = {compute(1), comm(10, 0)}, B[] = {comm(10, 1), compute(1)};
  dhx_ovl_step st[4];
  int n;
  double g = aligned(F, 2, B, 2, DHX_SEARCH_GREEDY, st, &n);
  double d = aligned(F, 2, B, 2, DHX_SEARCH_DP, st, &n);
  CHECK(fabs(g - 20) < 1e-9 && fabs(d - 12) < 1e-9, "greedy %g (want 20), dp %g (want 12)", g, d);
  printf("greedy %g, dp %g\n", g, d);
}

static void memory(void) {
  srand(11);
  int held_back = 0;
  for (int trial = 0; trial < 400; trial++) {
    int nf = 1 + rand() % MAXG, nb = 1 + rand() % MAXG, n;
    dhx_ovl_group F[MAXG], B[MAXG];
    dhx_ovl_step st[2 * MAXG], tmp[2 * MAXG];
    // The forward fills (with a transient now and then), the backward frees from 10.
    double f = 0, b = 10;
    for (int i = 0; i < nf; i++) {
      F[i] = random_group();
      f += rand() % 4;
      F[i].held = f + (rand() % 5 == 0 ? 2 : 0);
    }
    for (int j = 0; j < nb; j++) {
      B[j] = random_group();
      b -= rand() % 4;
      if (b < 0) b = 0;
      B[j].held = b + (rand() % 5 == 0 ? 2 : 0);
    }
    dhx_ovl_memory mem = dhx_ovl_memory_of(F, nf, B, nb, 10, 0.02);
    n = dhx_ovl_align_within(F, nf, B, nb, DHX_SEARCH_DP, X, &mem, st);
    CHECK(valid(F, nf, B, nb, st, n), "trial %d: the alignment within the limit is not valid",
          trial);
    for (int s = 0, i = 0, j = 0; s < n; s++) {
      i += st[s].f >= 0;
      j += st[s].b >= 0;
      CHECK(held(F, B, &mem, i, j) <= mem.limit, "trial %d: step %d holds %g, limit %g", trial,
            s, held(F, B, &mem, i, j), mem.limit);
    }
    double within = dhx_ovl_cost(F, B, st, n, X);
    best = INFINITY;
    limit = &mem;
    enumerate(F, nf, B, nb, 0, 0, tmp, 0);
    limit = NULL;
    CHECK(fabs(within - best) <= 1e-9 * best, "trial %d: dp %g, brute force within the limit %g",
          trial, within, best);
    double free_dp = aligned(F, nf, B, nb, DHX_SEARCH_DP, tmp, &n);
    CHECK(within >= free_dp - 1e-9, "trial %d: the limit made dp faster (%g < %g)", trial,
          within, free_dp);
    held_back += within > free_dp + 1e-9;
    n = dhx_ovl_align_within(F, nf, B, nb, DHX_SEARCH_GREEDY, X, &mem, tmp);
    CHECK(valid(F, nf, B, nb, tmp, n), "trial %d: greedy within the limit is not valid", trial);
    for (int s = 0, i = 0, j = 0; s < n; s++) {
      i += tmp[s].f >= 0;
      j += tmp[s].b >= 0;
      CHECK(held(F, B, &mem, i, j) <= mem.limit, "trial %d: greedy's step %d holds %g, limit %g",
            trial, s, held(F, B, &mem, i, j), mem.limit);
    }
    CHECK(within <= dhx_ovl_cost(F, B, tmp, n, X) + 1e-9, "trial %d: dp %g above greedy %g",
          trial, within, dhx_ovl_cost(F, B, tmp, n, X));
  }
  CHECK(held_back > 0, "the limit never changed an alignment");
  // A forward of two computes beside a backward of two collectives, the forward's first
  // group filling 8 where the backward's first frees 2: unlimited, dp pairs the first groups
  // and holds 16; limited (10.2), the backward's first collective runs alone.
  dhx_ovl_group F[] = {compute(1), compute(1)}, B[] = {comm(1, 0), comm(1, 0)};
  F[0].held = 8, F[1].held = 10, B[0].held = 8, B[1].held = 0;
  dhx_ovl_memory mem = dhx_ovl_memory_of(F, 2, B, 2, 10, 0.02);
  dhx_ovl_step st[4];
  int n = dhx_ovl_align(F, 2, B, 2, DHX_SEARCH_DP, X, st);
  CHECK(n >= 1 && st[0].f == 0 && st[0].b == 0, "unlimited, dp does not pair the first groups");
  n = dhx_ovl_align_within(F, 2, B, 2, DHX_SEARCH_DP, X, &mem, st);
  CHECK(n >= 1 && st[0].f < 0 && st[0].b == 0, "the limited alignment does not free first");
  printf("dp within a memory limit equals brute force on 400 random cases (%d held back)\n",
         held_back);
}

static void ties(void) {
  dhx_ovl_group F[] = {compute(2)}, B[] = {compute(3)};
  dhx_ovl_step st[2];
  int n = dhx_ovl_align(F, 1, B, 1, DHX_SEARCH_DP, X, st);
  CHECK(n == 2 && st[0].f < 0 && st[0].b == 0 && st[1].f == 0 && st[1].b < 0,
        "two computes: want the backward alone, then the forward (%d steps)", n);
  printf("two computes run one after the other, the backward first\n");
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  if (!strcmp(argv[1], "brute")) brute();
  else if (!strcmp(argv[1], "legal")) legal();
  else if (!strcmp(argv[1], "greedy")) greedy();
  else if (!strcmp(argv[1], "memory")) memory();
  else if (!strcmp(argv[1], "ties")) ties();
  else return 2;
  return fails ? 1 : 0;
}
