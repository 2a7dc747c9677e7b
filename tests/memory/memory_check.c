// memory_check.c — proves that `dhxc --emit=memory` reports the memory dhxrun allocates: the
// total of the report must equal the arena of every rank in plan.bin, which is what the
// runtime passes to its one allocation (rt.c: dhx_rank_arena_init(rank->arena_bytes)).
//
//   memory_check PLAN_DIR REPORT     REPORT: the stdout of `dhxc FILE --emit=memory`
//
// Exits 0 when they agree, 1 (saying both numbers) when not.
#include <inttypes.h>
#include <stdio.h>
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
  for (uint32_t r = 0; r < plan.nranks && !bad; r++)
    if (plan.ranks[r].arena_bytes != reported) {
      fprintf(stderr, "memory_check: the report says %" PRId64 " bytes per rank, rank %u of the "
              "plan allocates %" PRId64 "\n", reported, r, plan.ranks[r].arena_bytes);
      bad = 1;
    }
  if (!bad)
    printf("%u ranks, %" PRId64 " bytes each, as reported\n", plan.nranks, reported);
  dhx_plan_free(&plan);
  return bad;
}
