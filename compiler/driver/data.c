// data.c — `dhxc data`: text files → byte-level token shards in llm.c's .bin layout
// (256 int32 header: magic 20240520, version 1, token count; then uint16 tokens).
//
// The files are concatenated in the order given; the last --val-fraction of the bytes (default
// 0.1) become the validation split, so train and validation text never overlap. A split that
// fits in one shard is PREFIX_train.bin / PREFIX_val.bin. The header counts tokens in an int32,
// so a larger split is cut, like llm.c's fineweb.py does, into shards of --shard-tokens tokens
// (default 100M) named PREFIX_train_000000.bin, PREFIX_train_000001.bin, ..., which dhxrun reads
// back as one stream through the pattern PREFIX_train_*.bin.
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dirs.h"
#include "driver.h"

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256
#define DEFAULT_SHARD_TOKENS 100000000LL  // llm.c's fineweb shard size
#define MAX_SHARD_TOKENS INT32_MAX         // the header's token count is an int32

typedef struct data_opts {
  const char *prefix;
  double val_fraction;
  int64_t shard_tokens;  // most tokens in one shard
  const char **inputs;   // the text files, in order
  int ninputs;
} data_opts;

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "dhxc data: error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return 1;
}

// Writes n bytes as n uint16 tokens after the header, a block at a time.
static bool write_tokens(FILE *f, const unsigned char *bytes, int64_t n) {
  uint16_t block[1 << 15];
  for (int64_t done = 0; done < n;) {
    size_t take = n - done < (int64_t)(sizeof block / sizeof *block)
                      ? (size_t)(n - done) : sizeof block / sizeof *block;
    for (size_t i = 0; i < take; i++) block[i] = bytes[done + (int64_t)i];
    if (fwrite(block, sizeof *block, take, f) != take) return false;
    done += (int64_t)take;
  }
  return true;
}

static int write_shard(const char *path, const unsigned char *bytes, int64_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return fail("cannot write '%s': %s", path, strerror(errno));
  int32_t header[SHARD_HEADER_INTS] = {SHARD_MAGIC, SHARD_VERSION, (int32_t)n};
  bool ok = fwrite(header, sizeof header, 1, f) == 1 && write_tokens(f, bytes, n);
  if (fclose(f) != 0 || !ok) return fail("cannot write '%s': %s", path, strerror(errno));
  printf("wrote %s: %" PRId64 " tokens\n", path, n);
  return 0;
}

// Shards needed for n tokens at most `per` to a shard (one, even when n is 0).
static int64_t shard_count(int64_t n, int64_t per) {
  return n <= per ? 1 : (n + per - 1) / per;
}

// A numbered shard this run did not write (index `next`) is left from an earlier, larger run;
// the pattern PREFIX_SPLIT_*.bin would read it too, so it is pointed out (never deleted).
static void warn_stale_shard(const data_opts *o, const char *split, int64_t next) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s_%s_%06" PRId64 ".bin", o->prefix, split, next);
  if (stat(path, &st) == 0)
    fprintf(stderr, "dhxc data: warning: '%s' is from an earlier run: the pattern '%s_%s_*.bin' "
            "would read it too; delete it\n", path, o->prefix, split);
}

// One split (train or val): PREFIX_SPLIT.bin when it fits in one shard, else numbered shards.
static int write_split(const data_opts *o, const char *split, const unsigned char *bytes,
                       int64_t n) {
  char path[4096];
  int64_t count = shard_count(n, o->shard_tokens);
  for (int64_t k = 0; k < count; k++) {
    int64_t begin = k * o->shard_tokens;
    int64_t len = n - begin < o->shard_tokens ? n - begin : o->shard_tokens;
    int w = count == 1 ? snprintf(path, sizeof path, "%s_%s.bin", o->prefix, split)
                       : snprintf(path, sizeof path, "%s_%s_%06" PRId64 ".bin", o->prefix, split, k);
    if (w >= (int)sizeof path) return fail("output prefix is too long: '%s'", o->prefix);
    if (write_shard(path, bytes + begin, len)) return 1;
  }
  if (count > 1)
    printf("%s: %" PRId64 " shards of at most %" PRId64 " tokens; read them as '%s_%s_*.bin'\n",
           split, count, o->shard_tokens, o->prefix, split);
  warn_stale_shard(o, split, count == 1 ? 0 : count);
  return 0;
}

static int read_all(const char *path, unsigned char **buf, int64_t *len, int64_t *cap) {
  FILE *f = fopen(path, "rb");
  if (!f) return fail("cannot open '%s': %s", path, strerror(errno));
  unsigned char chunk[1 << 16];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (*len + (int64_t)got > *cap) {
      *cap = (*len + (int64_t)got) * 2;
      unsigned char *nb = realloc(*buf, (size_t)*cap);
      if (!nb) {
        fclose(f);
        return fail("out of memory reading '%s'", path);
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

// mkdir -p of the folder part of the prefix, so `-o new/dir/name` works.
static int make_parent_dirs(const char *prefix) {
  char parent[4096], at[4096];
  if (snprintf(parent, sizeof parent, "%s", prefix) >= (int)sizeof parent)
    return fail("output prefix is too long: '%s'", prefix);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return 0;  // the current folder, or the root
  *slash = '\0';
  switch (dhx_make_dir_path(parent, at, sizeof at)) {
    case DHX_DIRS_OK: return 0;
    case DHX_DIRS_IN_THE_WAY: return fail("cannot create folder '%s': a file of that name is in the way", at);
    case DHX_DIRS_FAILED: return fail("cannot create folder '%s': %s", at, strerror(errno));
  }
  return 1;
}

// The value after option argv[*i]; NULL (with the error printed) when it is missing.
static const char *option_value(int argc, char **argv, int *i) {
  if (*i + 1 < argc) return argv[++*i];
  fail("%s needs a value", argv[*i]);
  return NULL;
}

static int parse_shard_tokens(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 1 || v > MAX_SHARD_TOKENS)
    return fail("--shard-tokens must be a whole number in [1, %d] (the shard header counts "
                "tokens in an int32), got '%s'", MAX_SHARD_TOKENS, s);
  *out = v;
  return 0;
}

#define SMALL_SPLIT_TOKENS 4096  // a handful of sequences of 1024 tokens

static int parse_val_fraction(const char *s, double *out) {
  char *end;
  *out = strtod(s, &end);
  if (end == s || *end || !(*out >= 0 && *out < 1))
    return fail("--val-fraction must be a number in [0, 1), got '%s'", s);
  return 0;
}

// Fills o from argv; o->inputs has room for argc entries (the caller frees it).
static int parse_data_args(int argc, char **argv, data_opts *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    bool has_value = strcmp(a, "-o") == 0 || strcmp(a, "--val-fraction") == 0 ||
                     strcmp(a, "--shard-tokens") == 0;
    if (has_value && !(v = option_value(argc, argv, &i))) return 1;
    if (strcmp(a, "-o") == 0) {
      o->prefix = v;
    } else if (strcmp(a, "--val-fraction") == 0) {
      if (parse_val_fraction(v, &o->val_fraction)) return 1;
    } else if (strcmp(a, "--shard-tokens") == 0) {
      if (parse_shard_tokens(v, &o->shard_tokens)) return 1;
    } else if (a[0] == '-') {
      return fail("unknown option '%s'", a);
    } else {
      o->inputs[o->ninputs++] = a;
    }
  }
  if (!o->prefix || o->ninputs == 0)
    return fail("usage: dhxc data -o PREFIX [--val-fraction F] [--shard-tokens N] FILE...");
  return 0;
}

// A shard smaller than one sequence cannot be trained or evaluated on (dhxrun needs seq+1
// tokens); one of a few sequences gives a noisy validation loss. Said here, with the numbers,
// rather than discovered when a run starts.
static void warn_small_splits(int64_t ntrain, int64_t nval) {
  if (ntrain < SMALL_SPLIT_TOKENS)
    fprintf(stderr, "dhxc data: warning: the training split has %lld tokens: fewer than a few "
            "sequences of a typical length (%d)\n", (long long)ntrain, SMALL_SPLIT_TOKENS);
  if (nval > 0 && nval < SMALL_SPLIT_TOKENS)
    fprintf(stderr, "dhxc data: warning: the validation split has %lld tokens: too few to "
            "evaluate sequences of a typical length (%d); raise --val-fraction or give more "
            "text\n", (long long)nval, SMALL_SPLIT_TOKENS);
}

static int make_shards(const data_opts *o) {
  unsigned char *buf = NULL;
  int64_t len = 0, cap = 0;
  int rc = 0;
  for (int i = 0; i < o->ninputs && !rc; i++) rc = read_all(o->inputs[i], &buf, &len, &cap);
  if (!rc && len == 0) rc = fail("the input files hold no text (%d files, all empty)", o->ninputs);
  if (!rc) rc = make_parent_dirs(o->prefix);
  int64_t nval = (int64_t)((double)len * o->val_fraction);
  if (!rc) rc = write_split(o, "train", buf, len - nval);
  if (!rc && nval > 0) rc = write_split(o, "val", buf + (len - nval), nval);
  if (!rc) warn_small_splits(len - nval, nval);
  free(buf);
  return rc;
}

int dhx_data_main(int argc, char **argv) {
  data_opts o = {.val_fraction = 0.1, .shard_tokens = DEFAULT_SHARD_TOKENS};
  o.inputs = malloc(sizeof *o.inputs * (size_t)argc);
  if (!o.inputs) return fail("out of memory for %d arguments", argc);
  int rc = parse_data_args(argc, argv, &o);
  if (!rc) rc = make_shards(&o);
  free(o.inputs);
  return rc;
}
