// strands_report — the numbers bench/strands_cpu/run.sh reads from dhxrun's and dhxc's JSON.
//
//   strands_report step-ms METRICS.jsonl     median step time (ms) over the steps after the first
//   strands_report bytes METRICS.jsonl       median bytes rank 0 sent per step
//   strands_report limit PROFILE.json        "COMPUTE_MS COMM_MS": per step, measured alone, the
//                                            largest over ranks (dhxrun --profile)
//   strands_report sim-ms SIMULATE.json      step_time_s of dhxc --simulate --json, in ms
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "strands_report: cannot open %s\n", path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) exit(1);
  s[n] = '\0';
  fclose(f);
  return s;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// The median of `field` over the step lines of a metrics file, leaving out step 1.
static double metrics_median(const char *path, const char *field) {
  char *text = slurp(path);
  double v[100000];
  int n = 0;
  for (char *line = strtok(text, "\n"); line && n < 100000; line = strtok(NULL, "\n")) {
    cJSON *o = cJSON_Parse(line);
    const cJSON *step = cJSON_GetObjectItem(o, "step"), *x = cJSON_GetObjectItem(o, field);
    if (cJSON_IsNumber(step) && step->valuedouble > 1 && cJSON_IsNumber(x)) v[n++] = x->valuedouble;
    cJSON_Delete(o);
  }
  free(text);
  if (!n) {
    fprintf(stderr, "strands_report: no steps after the first in %s\n", path);
    exit(1);
  }
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static cJSON *load(const char *path) {
  char *text = slurp(path);
  cJSON *o = cJSON_Parse(text);
  free(text);
  if (!o) {
    fprintf(stderr, "strands_report: %s is not JSON\n", path);
    exit(1);
  }
  return o;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: strands_report step-ms|bytes|limit|sim-ms FILE\n");
    return 2;
  }
  const char *what = argv[1], *path = argv[2];
  if (strcmp(what, "step-ms") == 0) {
    printf("%.3f\n", metrics_median(path, "step_ms"));
  } else if (strcmp(what, "bytes") == 0) {
    printf("%.0f\n", metrics_median(path, "comm_bytes"));
  } else if (strcmp(what, "limit") == 0) {
    cJSON *o = load(path);
    double compute = 0, comm = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "per_rank")) {
      double c = cJSON_GetObjectItem(r, "compute_s_per_step")->valuedouble;
      double m = cJSON_GetObjectItem(r, "comm_s_per_step")->valuedouble;
      if (c > compute) compute = c;
      if (m > comm) comm = m;
    }
    printf("%.3f %.3f\n", 1e3 * compute, 1e3 * comm);
    cJSON_Delete(o);
  } else if (strcmp(what, "sim-ms") == 0) {
    cJSON *o = load(path);
    const cJSON *t = cJSON_GetObjectItem(o, "step_time_s");
    if (!cJSON_IsNumber(t)) return 1;
    printf("%.3f\n", 1e3 * t->valuedouble);
    cJSON_Delete(o);
  } else {
    fprintf(stderr, "strands_report: unknown report '%s'\n", what);
    return 2;
  }
  return 0;
}
