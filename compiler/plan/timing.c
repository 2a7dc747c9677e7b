// timing.c — wall time per compiler pass (dhxc --time-passes).
#include "timing.h"

#include <string.h>
#include <time.h>

#define MAX_PASSES 32

static bool enabled;
static struct {
  const char *name;
  double seconds;
} passes[MAX_PASSES];
static int npasses, current = -1;
static double started;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void dhx_timing_enable(bool on) { enabled = on; }
bool dhx_timing_enabled(void) { return enabled; }

void dhx_timing_stop(void) {
  if (!enabled || current < 0) return;
  passes[current].seconds += now() - started;
  current = -1;
}

void dhx_timing_pass(const char *name) {
  if (!enabled) return;
  dhx_timing_stop();
  int i = 0;
  while (i < npasses && strcmp(passes[i].name, name) != 0) i++;
  if (i == npasses) {
    if (npasses == MAX_PASSES) return;
    passes[npasses++].name = name;
  }
  current = i;
  started = now();
}

void dhx_timing_report(FILE *f) {
  if (!enabled) return;
  dhx_timing_stop();
  double total = 0;
  for (int i = 0; i < npasses; i++) total += passes[i].seconds;
  for (int i = 0; i < npasses; i++)
    fprintf(f, "dhxc: pass %-22s %9.3f s  %5.1f%%\n", passes[i].name, passes[i].seconds,
            total > 0 ? 100 * passes[i].seconds / total : 0);
  fprintf(f, "dhxc: pass %-22s %9.3f s\n", "total", total);
}
