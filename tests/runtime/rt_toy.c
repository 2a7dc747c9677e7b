// rt_toy — the command-line side of the dhxrun tests (runtime_cli.sh):
//
//   rt_toy plan DIR [--dp N] [--steps N] [--micro N] [--global N] [--val-every N]
//                   [--checkpoint-every N] [--bandwidth B/s] [--latency S]
//                                     writes the toy plan (testlib.h) to DIR with the test kernels
//   rt_toy shard FILE NTOK [SEED]     writes a learnable token shard over the toy vocabulary
//   rt_toy same A.jsonl B.jsonl TOL [FIRST LAST]
//                                     losses of the steps both runs have agree within TOL
//                                     (relative); every step of A in [FIRST, LAST] must be in B
//   rt_toy falls A.jsonl              the last loss is below half the first
#include <math.h>

#include "testlib.h"

#define MAX_STEPS 10000

static int load_losses(const char *path, double *loss, bool *present) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "rt_toy: cannot open %s\n", path);
    exit(1);
  }
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    char *s = strstr(line, "\"step\":"), *l = strstr(line, "\"loss\":");
    if (!s || !l) continue;
    long step = strtol(s + 7, NULL, 10);
    if (step < 1 || step >= MAX_STEPS) continue;
    loss[step] = strtod(l + 7, NULL);
    present[step] = true;
    n++;
  }
  fclose(f);
  return n;
}

static int cmd_same(int argc, char **argv) {
  static double a[MAX_STEPS], b[MAX_STEPS];
  static bool pa[MAX_STEPS], pb[MAX_STEPS];
  if (argc < 5) return 2;
  load_losses(argv[2], a, pa);
  load_losses(argv[3], b, pb);
  double tol = atof(argv[4]);
  long first = argc > 5 ? atol(argv[5]) : 1, last = argc > 6 ? atol(argv[6]) : MAX_STEPS - 1;
  int compared = 0;
  for (long s = first; s <= last; s++) {
    if (!pa[s]) continue;
    if (!pb[s]) {
      fprintf(stderr, "step %ld is missing from %s\n", s, argv[3]);
      return 1;
    }
    double rel = fabs(a[s] - b[s]) / fmax(fabs(a[s]), 1e-30);
    printf("step %3ld  %.9g  %.9g  rel %.2e\n", s, a[s], b[s], rel);
    if (!(rel <= tol)) {
      fprintf(stderr, "step %ld: losses differ by %.3e relative (tolerance %g)\n", s, rel, tol);
      return 1;
    }
    compared++;
  }
  if (!compared) fprintf(stderr, "no steps to compare\n");
  return compared ? 0 : 1;
}

static int cmd_falls(const char *path) {
  static double a[MAX_STEPS];
  static bool pa[MAX_STEPS];
  load_losses(path, a, pa);
  int first = 0, last = 0;
  for (int s = 1; s < MAX_STEPS; s++)
    if (pa[s]) {
      if (!first) first = s;
      last = s;
    }
  printf("loss %.4f at step %d, %.4f at step %d\n", a[first], first, a[last], last);
  return first && last > first && a[last] < 0.5 * a[first] ? 0 : 1;
}

static int cmd_plan(int argc, char **argv) {
  toy_opts o = toy_defaults();
  for (int i = 3; i + 1 < argc; i += 2) {
    const char *k = argv[i];
    double v = atof(argv[i + 1]);
    if (!strcmp(k, "--dp")) o.dp = (int)v;
    else if (!strcmp(k, "--steps")) o.steps = (int64_t)v;
    else if (!strcmp(k, "--micro")) o.micro_batch = (int64_t)v;
    else if (!strcmp(k, "--global")) o.global_batch = (int64_t)v;
    else if (!strcmp(k, "--val-every")) o.val_every = (int64_t)v;
    else if (!strcmp(k, "--checkpoint-every")) o.checkpoint_every = (int64_t)v;
    else if (!strcmp(k, "--bandwidth")) o.net_bandwidth = v;
    else if (!strcmp(k, "--latency")) o.net_latency = v;
    else {
      fprintf(stderr, "rt_toy: unknown plan option %s\n", k);
      return 2;
    }
  }
  dhx_plan *p = toy_plan(&o);
  write_plan_dir(p, argv[2]);
  tb_free(p);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "plan")) return cmd_plan(argc, argv);
  if (argc >= 4 && !strcmp(argv[1], "shard")) {
    write_toy_shard(argv[2], atol(argv[3]), toy_defaults().vocab, argc > 4 ? strtoull(argv[4], 0, 10) : 1);
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "same")) return cmd_same(argc, argv);
  if (argc == 3 && !strcmp(argv[1], "falls")) return cmd_falls(argv[2]);
  fprintf(stderr, "usage: see the comment at the top of rt_toy.c\n");
  return 2;
}
