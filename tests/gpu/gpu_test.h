// gpu_test.h — what the GPU backend's host-side test programs share: a check that counts
// failures (each printed) so that one run reports all of them, and a file's text.
#ifndef DHX_GPU_TEST_H
#define DHX_GPU_TEST_H

#include <stdio.h>
#include <stdlib.h>

static int fails;
static int check_rank = -1;  // a test under mpirun sets its rank: failures are prefixed with it
#define CHECK(c, ...)                                            \
  do {                                                           \
    if (!(c)) {                                                  \
      if (check_rank >= 0) fprintf(stderr, "rank %d: ", check_rank); \
      fprintf(stderr, __VA_ARGS__);                              \
      fputc('\n', stderr);                                       \
      fails++;                                                   \
    }                                                            \
  } while (0)


// The whole file, NUL-terminated, to free; NULL when it cannot be read.
static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

#endif
