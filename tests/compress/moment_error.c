// moment_error — how far the first AdamW moments of checkpoint A are from checkpoint B's:
//
//   moment_error A B LO HI     the relative L2 error ||m_A - m_B|| / ||m_B|| over every
//                              '.adam_m' tensor lies in [LO, HI]; prints it
//
// After one step without clipping m = (1 - beta1) * g, so this measures the error of the
// reduced gradient of one run (a compressed reduction) against another's (the f32 sum).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static char err[2048];

static void open_or_die(dhx_st_file *s, const char *path) {
  if (!dhx_st_open(s, path, err, sizeof err) || !dhx_st_verify(s, err, sizeof err)) {
    fprintf(stderr, "moment_error: %s\n", err);
    exit(1);
  }
}

static float *read_f32(dhx_st_file *s, const dhx_st_entry *e) {
  float *p = malloc(sizeof(float) * (size_t)(dhx_st_elems(e) + 1));
  if (!p || !dhx_st_read_f32(s, e, p, err, sizeof err)) {
    fprintf(stderr, "moment_error: %s\n", err);
    exit(1);
  }
  return p;
}

static int ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), m = strlen(tail);
  return n > m && strcmp(s + n - m, tail) == 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: moment_error A B LO HI\n");
    return 2;
  }
  dhx_st_file a, b;
  open_or_die(&a, argv[1]);
  open_or_die(&b, argv[2]);
  double diff = 0, ref = 0;
  int tensors = 0;
  for (int i = 0; i < b.nentries; i++) {
    const dhx_st_entry *y = &b.entries[i];
    if (!ends_with(y->name, ".adam_m")) continue;
    const dhx_st_entry *x = dhx_st_find(&a, y->name);
    if (!x || dhx_st_elems(x) != dhx_st_elems(y)) {
      fprintf(stderr, "moment_error: '%s' is missing from %s or has another size\n", y->name,
              argv[1]);
      return 1;
    }
    float *p = read_f32(&a, x), *q = read_f32(&b, y);
    for (int64_t k = 0; k < dhx_st_elems(y); k++) {
      double d = (double)p[k] - (double)q[k];
      diff += d * d;
      ref += (double)q[k] * (double)q[k];
    }
    free(p);
    free(q);
    tensors++;
  }
  double rel = ref > 0 ? sqrt(diff / ref) : INFINITY;
  double lo = atof(argv[3]), hi = atof(argv[4]);
  printf("relative error of the first moments over %d tensors: %.4g (expected %g..%g)\n",
         tensors, rel, lo, hi);
  dhx_st_close(&a);
  dhx_st_close(&b);
  return tensors > 0 && rel >= lo && rel <= hi ? 0 : 1;
}
