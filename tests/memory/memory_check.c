// memory_check.c — proves that `dhxc --emit=memory` reports the memory dhxrun allocates: the
// total of the report must equal the arena of every rank in plan.bin, which is what the
// runtime passes to its one allocation (rt.c: dhx_rank_arena_init(rank->arena_bytes)); where
// the report lists the arena per rank ("  ranks A-B  N bytes", "  rank A  N bytes"), the total
// is rank 0's and each rank's arena must be the one listed for it, every rank listed.
//
//   memory_check PLAN_DIR REPORT     REPORT: the stdout of `dhxc FILE --emit=memory`
//
// Exits 0 when they agree, 1 (saying both numbers) when not.
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

// The byte count of the report's "total ... (N bytes)" line; -1 when there is none.
static int64_t reported_total(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[512];
  int64_t total = -1;
  while (fgets(line, sizeof line, f)) {
    const char *open = strchr(line, '(');
    long long n;
    if (strncmp(line, "  total", 7) == 0 && open && sscanf(open, "(%lld bytes)", &n) == 1)
      total = n;
  }
  fclose(f);
  return total;
}

// Fills want[r] from the report's per-rank lines; false when it has none.
static bool listed_arenas(const char *path, int64_t *want, uint32_t nranks) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[512];
  bool any = false;
  for (uint32_t r = 0; r < nranks; r++) want[r] = -1;
  while (fgets(line, sizeof line, f)) {
    int a, b;
    long long n;
    if (sscanf(line, "  ranks %d-%d %lld bytes", &a, &b, &n) != 3) {
      if (sscanf(line, "  rank %d %lld bytes", &a, &n) != 2) continue;
      b = a;
    }
    for (int r = a; r <= b && r >= 0 && (uint32_t)r < nranks; r++) want[r] = n;
    any = true;
  }
  fclose(f);
  return any;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: memory_check PLAN_DIR REPORT\n");
    return 2;
  }
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/plan.bin", argv[1]);
  dhx_plan plan;
  if (!dhx_plan_read(path, &plan, err, sizeof err)) {
    fprintf(stderr, "memory_check: %s: %s\n", path, err);
    return 1;
  }
  int64_t reported = reported_total(argv[2]);
  int bad = reported < 0;
  if (bad) fprintf(stderr, "memory_check: %s has no 'total ... (N bytes)' line\n", argv[2]);
  int64_t *want = calloc(plan.nranks ? plan.nranks : 1, sizeof *want);
  if (!want) return 1;
  bool listed = !bad && listed_arenas(argv[2], want, plan.nranks);
  if (!listed)
    for (uint32_t r = 0; r < plan.nranks; r++) want[r] = reported;
  if (listed && plan.nranks && want[0] != reported) {
    fprintf(stderr, "memory_check: the total (%" PRId64 ") is not rank 0's listed arena (%" PRId64
            ")\n", reported, want[0]);
    bad = 1;
  }
  for (uint32_t r = 0; r < plan.nranks && !bad; r++)
    if (plan.ranks[r].arena_bytes != want[r]) {
      fprintf(stderr, "memory_check: the report says %" PRId64 " bytes for rank %u, the plan "
              "allocates %" PRId64 "\n", want[r], r, plan.ranks[r].arena_bytes);
      bad = 1;
    }
  if (!bad && listed)
    printf("%u ranks, each the arena listed for it (rank 0: %" PRId64 " bytes)\n", plan.nranks,
           reported);
  else if (!bad)
    printf("%u ranks, %" PRId64 " bytes each, as reported\n", plan.nranks, reported);
  free(want);
  dhx_plan_free(&plan);
  return bad;
}
