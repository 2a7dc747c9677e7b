// data.c — `dhxc data`: text files → byte-level token shards in llm.c's .bin layout
// (256 int32 header: magic 20240520, version 1, token count; then uint16 tokens).
//
// The files are concatenated in the order given; the last --val-fraction of the bytes (default
// 0.1) become the validation shard, so train and validation text never overlap.
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define MAX_INPUT (1LL << 31)  // tokens are counted in an int32 header field

static int fail(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "dhxc data: error: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  return 1;
}

static int write_shard(const char *path, const unsigned char *bytes, int64_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return fail("cannot write '%s': %s", path, strerror(errno));
  int32_t header[256] = {SHARD_MAGIC, SHARD_VERSION, (int32_t)n};
  uint16_t *tok = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
  if (!tok) {
    fclose(f);
    return fail("out of memory for '%s'%s", path, "");
  }
  for (int64_t i = 0; i < n; i++) tok[i] = bytes[i];
  bool ok = fwrite(header, sizeof header, 1, f) == 1 &&
            fwrite(tok, sizeof(uint16_t), (size_t)n, f) == (size_t)n;
  free(tok);
  if (fclose(f) != 0 || !ok) return fail("cannot write '%s': %s", path, strerror(errno));
  printf("wrote %s: %lld tokens\n", path, (long long)n);
  return 0;
}

static int read_all(const char *path, unsigned char **buf, int64_t *len, int64_t *cap) {
  FILE *f = fopen(path, "rb");
  if (!f) return fail("cannot open '%s': %s", path, strerror(errno));
  unsigned char chunk[1 << 16];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (*len + (int64_t)got > MAX_INPUT) {
      fclose(f);
      return fail("input too large at '%s' (more than 2^31 bytes)%s", path, "");
    }
    if (*len + (int64_t)got > *cap) {
      *cap = (*len + (int64_t)got) * 2;
      unsigned char *nb = realloc(*buf, (size_t)*cap);
      if (!nb) {
        fclose(f);
        return fail("out of memory reading '%s'%s", path, "");
      }
      *buf = nb;
    }
    memcpy(*buf + *len, chunk, got);
    *len += (int64_t)got;
  }
  bool err = ferror(f);
  fclose(f);
  return err ? fail("cannot read '%s': %s", path, strerror(errno)) : 0;
}

int dhx_data_main(int argc, char **argv) {
  const char *prefix = NULL;
  double val_fraction = 0.1;
  const char *inputs[4096];
  int ninputs = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
      prefix = argv[++i];
    } else if (strcmp(argv[i], "--val-fraction") == 0 && i + 1 < argc) {
      char *end;
      val_fraction = strtod(argv[++i], &end);
      if (*end || val_fraction < 0 || val_fraction >= 1)
        return fail("--val-fraction must be a number in [0, 1), got '%s'%s", argv[i], "");
    } else if (argv[i][0] == '-') {
      return fail("unknown option '%s'%s", argv[i], "");
    } else if (ninputs < 4096) {
      inputs[ninputs++] = argv[i];
    }
  }
  if (!prefix || ninputs == 0)
    return fail("usage: dhxc data -o PREFIX [--val-fraction F] FILE...%s%s", "", "");
  unsigned char *buf = NULL;
  int64_t len = 0, cap = 0;
  for (int i = 0; i < ninputs; i++)
    if (read_all(inputs[i], &buf, &len, &cap)) {
      free(buf);
      return 1;
    }
  int64_t nval = (int64_t)((double)len * val_fraction);
  char path[4096];
  int rc = 0;
  snprintf(path, sizeof path, "%s_train.bin", prefix);
  rc |= write_shard(path, buf, len - nval);
  snprintf(path, sizeof path, "%s_val.bin", prefix);
  if (!rc && nval > 0) rc |= write_shard(path, buf + (len - nval), nval);
  free(buf);
  return rc;
}
