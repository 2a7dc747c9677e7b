// metrics_check — assertions over dhxrun --metrics files (JSON lines).
//
//   metrics_check same A.jsonl B.jsonl RELTOL [FIRST LAST]   losses agree step by step
//   metrics_check below A.jsonl FIRST LAST MAX                mean loss of steps FIRST..LAST < MAX
//   metrics_check falls A.jsonl                               last loss < first loss
// Steps are the 1-based "step" values dhxrun writes. Exits 1 with a message on failure.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 100000

static int load(const char *path, double *loss, int *present) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "metrics_check: cannot open %s\n", path);
    return -1;
  }
  char line[8192];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    char *s = strstr(line, "\"step\":"), *l = strstr(line, "\"loss\":");
    if (!s || !l) continue;
    long step = strtol(s + 7, NULL, 10);
    if (step < 1 || step >= MAX_STEPS) continue;
    loss[step] = strtod(l + 7, NULL);
    present[step] = 1;
    n++;
  }
  fclose(f);
  return n;
}

static double la[MAX_STEPS], lb[MAX_STEPS];
static int pa[MAX_STEPS], pb[MAX_STEPS];

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "same") == 0) {
    if (load(argv[2], la, pa) <= 0 || load(argv[3], lb, pb) <= 0) return 1;
    double tol = atof(argv[4]);
    int first = argc > 5 ? atoi(argv[5]) : 1, last = argc > 6 ? atoi(argv[6]) : MAX_STEPS - 1;
    int compared = 0;
    for (int s = first; s <= last; s++) {
      if (!pa[s] && !pb[s]) continue;
      if (pa[s] != pb[s]) {
        fprintf(stderr, "step %d is in only one of the runs\n", s);
        return 1;
      }
      double rel = fabs(la[s] - lb[s]) / fmax(fabs(la[s]), 1e-30);
      printf("step %3d  %.9f  %.9f  rel %.2e\n", s, la[s], lb[s], rel);
      if (!(rel <= tol)) {
        fprintf(stderr, "step %d: losses differ by %.3e relative (tolerance %.1e)\n", s, rel, tol);
        return 1;
      }
      compared++;
    }
    if (compared == 0) {
      fprintf(stderr, "no steps to compare\n");
      return 1;
    }
    printf("%d steps agree within %.1e\n", compared, tol);
    return 0;
  }
  if (argc == 6 && strcmp(argv[1], "below") == 0) {
    if (load(argv[2], la, pa) <= 0) return 1;
    int first = atoi(argv[3]), last = atoi(argv[4]);
    double max = atof(argv[5]), sum = 0;
    int n = 0;
    for (int s = first; s <= last && s < MAX_STEPS; s++)
      if (pa[s]) sum += la[s], n++;
    if (n != last - first + 1) {
      fprintf(stderr, "expected steps %d..%d, found %d of them\n", first, last, n);
      return 1;
    }
    printf("mean loss of steps %d..%d: %.4f (must be below %.4f)\n", first, last, sum / n, max);
    return sum / n < max ? 0 : 1;
  }
  if (argc == 3 && strcmp(argv[1], "falls") == 0) {
    if (load(argv[2], la, pa) <= 0) return 1;
    int first = -1, last = -1;
    for (int s = 1; s < MAX_STEPS; s++)
      if (pa[s]) {
        if (first < 0) first = s;
        last = s;
      }
    printf("loss %.4f at step %d, %.4f at step %d\n", la[first], first, la[last], last);
    return last > first && la[last] < la[first] ? 0 : 1;
  }
  fprintf(stderr, "usage: see the comment at the top of metrics_check.c\n");
  return 2;
}
