// data.c — llm.c token shards (dev/data/data_common.py): a header of 256 little-endian int32
// (magic, version, token count), then the tokens: GPT-2 shards (magic 20240520, version 1) hold
// uint16 tokens, Llama 3 shards (magic 20240801, version 7) uint32 tokens.
//
// A stream is one file or every file a glob pattern matches (llm.c's `fineweb_train_*.bin`),
// read in sorted order as one long sequence of tokens. Every file is mapped read-only and
// checked once when the stream is opened (size, magic, version, length, every token inside the
// vocabulary), so a bad shard is reported by name before any step runs and reading a row later
// cannot fail.
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dhxrt.h"

#define HEADER_BYTES (DHX_SHARD_HEADER_INTS * 4)

static int32_t header_int(const uint8_t *p, int i) {
  const uint8_t *b = p + 4 * i;
  return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}

// The token width of a (magic, version) pair, or 0 when the pair is not an llm.c shard.
static int token_bytes_of(const char *path, int32_t magic, int32_t version, char *err,
                          size_t errlen) {
  if (magic == DHX_SHARD_MAGIC && version == DHX_SHARD_VERSION) return 2;
  if (magic == DHX_SHARD_MAGIC_LLAMA3 && version == DHX_SHARD_VERSION_LLAMA3) return 4;
  if (magic == DHX_SHARD_MAGIC)
    snprintf(err, errlen, "%s: version %" PRId32 " (expected %d with magic %d: uint16 tokens)",
             path, version, DHX_SHARD_VERSION, DHX_SHARD_MAGIC);
  else if (magic == DHX_SHARD_MAGIC_LLAMA3)
    snprintf(err, errlen, "%s: version %" PRId32 " (expected %d with magic %d: uint32 tokens)",
             path, version, DHX_SHARD_VERSION_LLAMA3, DHX_SHARD_MAGIC_LLAMA3);
  else
    snprintf(err, errlen, "%s: bad magic %" PRId32 " (expected %d: an llm.c token shard, or %d: "
             "an llm.c Llama 3 shard)", path, magic, DHX_SHARD_MAGIC, DHX_SHARD_MAGIC_LLAMA3);
  return 0;
}

static uint32_t token_at(const dhx_shard_file *f, int64_t i) {
  // x86-64 and arm64 are little-endian; the tokens start 1024 bytes into a page-aligned map
  if (f->token_bytes == 2) return ((const uint16_t *)f->tokens)[i];
  return ((const uint32_t *)f->tokens)[i];
}

// Checks the header and length of a mapped file and sets its token fields.
static bool check_layout(dhx_shard_file *f, const char *path, char *err, size_t errlen) {
  if (f->map_bytes < HEADER_BYTES) {
    snprintf(err, errlen, "%s: truncated: %zu bytes, shorter than the %d-byte header of an llm.c "
             "token shard", path, f->map_bytes, HEADER_BYTES);
    return false;
  }
  const uint8_t *bytes = f->map;
  int32_t ntok = header_int(bytes, 2);
  f->token_bytes = token_bytes_of(path, header_int(bytes, 0), header_int(bytes, 1), err, errlen);
  if (!f->token_bytes) return false;
  int64_t body = (int64_t)(f->map_bytes - HEADER_BYTES), held = body / f->token_bytes;
  if (ntok < 0 || body != (int64_t)f->token_bytes * ntok) {
    snprintf(err, errlen, "%s: %s: header says %" PRId32 " tokens but the file holds %" PRId64
             "%s", path, held < ntok ? "truncated" : "bad length", ntok, held,
             body % f->token_bytes ? " and a partial token" : "");
    return false;
  }
  f->tokens = bytes + HEADER_BYTES;
  f->ntok = ntok;
  return true;
}

// Every token must index the embedding table; the largest is kept for the caller's report.
static bool check_tokens(const dhx_shard_file *f, const char *path, int64_t vocab,
                         int64_t *max_token, char *err, size_t errlen) {
  for (int64_t i = 0; i < f->ntok; i++) {
    uint32_t t = token_at(f, i);
    if ((int64_t)t >= vocab) {
      snprintf(err, errlen, "%s: token %" PRIu32 " at position %" PRId64 " is outside the "
               "vocabulary (%" PRId64 ")", path, t, i, vocab);
      return false;
    }
    if ((int64_t)t > *max_token) *max_token = t;
  }
  return true;
}

static bool map_file(dhx_shard_file *f, const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    close(fd);
    return false;
  }
  f->map_bytes = (size_t)st.st_size;
  if (f->map_bytes > 0) {
    f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
      snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
      f->map = NULL;
      close(fd);
      return false;
    }
  }
  close(fd);
  return true;
}

// Maps and checks one file and appends it to the stream.
static bool add_file(dhx_shard *s, const char *path, int64_t vocab, char *err, size_t errlen) {
  dhx_shard_file *f = &s->files[s->nfiles];
  memset(f, 0, sizeof *f);
  s->nfiles++;  // counted before the checks so that close unmaps it on failure
  if (!map_file(f, path, err, errlen) || !check_layout(f, path, err, errlen) ||
      !check_tokens(f, path, vocab, &s->max_token, err, errlen))
    return false;
  f->first = s->ntok;
  s->ntok += f->ntok;
  return true;
}

// A path that names an existing file, or has no glob characters, is one file; anything else is
// a pattern (a literal name with brackets still opens).
static bool is_pattern(const char *path) {
  struct stat st;
  return stat(path, &st) != 0 && strpbrk(path, "*?[") != NULL;
}

static bool add_files(dhx_shard *s, const char *path_or_glob, int64_t vocab, char *err,
                      size_t errlen) {
  if (!is_pattern(path_or_glob)) {
    s->files = calloc(1, sizeof *s->files);
    if (!s->files) {
      snprintf(err, errlen, "%s: out of memory", path_or_glob);
      return false;
    }
    return add_file(s, path_or_glob, vocab, err, errlen);
  }
  glob_t g;
  int rc = glob(path_or_glob, 0, NULL, &g);  // sorted (strcmp order in the C locale)
  if (rc != 0) {
    snprintf(err, errlen, "%s: %s", path_or_glob, rc == GLOB_NOMATCH ? "no file matches the "
             "pattern" : rc == GLOB_NOSPACE ? "out of memory" : "cannot read a folder of the "
             "pattern");
    if (rc != GLOB_NOMATCH) globfree(&g);
    return false;
  }
  s->files = calloc(g.gl_pathc, sizeof *s->files);
  bool ok = s->files != NULL;
  if (!ok) snprintf(err, errlen, "%s: out of memory", path_or_glob);
  for (size_t i = 0; ok && i < g.gl_pathc; i++)
    ok = add_file(s, g.gl_pathv[i], vocab, err, errlen);
  globfree(&g);
  return ok;
}

bool dhx_shard_open(dhx_shard *s, const char *path_or_glob, int64_t seq, int64_t vocab, char *err,
                    size_t errlen) {
  memset(s, 0, sizeof *s);
  s->max_token = -1;
  if (!add_files(s, path_or_glob, vocab, err, errlen)) {
    dhx_shard_close(s);
    return false;
  }
  // one sequence is seq inputs plus the token after the last of them (its target)
  if (s->ntok < seq + 1) {
    snprintf(err, errlen, "%s: %" PRId64 " tokens%s are too few for one sequence of %" PRId64
             " (needs at least %" PRId64 ")", path_or_glob, s->ntok,
             s->nfiles > 1 ? " in all its files" : "", seq, seq + 1);
    dhx_shard_close(s);
    return false;
  }
  return true;
}

void dhx_shard_close(dhx_shard *s) {
  for (int64_t i = 0; i < s->nfiles; i++)
    if (s->files[i].map) munmap(s->files[i].map, s->files[i].map_bytes);
  free(s->files);
  memset(s, 0, sizeof *s);
}

// The file that holds stream position pos (0 <= pos < ntok): the last one starting at or
// before pos (files without tokens start where the next one does, so they are never it).
static int64_t file_at(const dhx_shard *s, int64_t pos) {
  int64_t lo = 0, hi = s->nfiles - 1;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo + 1) / 2;
    if (s->files[mid].first <= pos) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Copies the n tokens of the stream from position pos on (pos + n <= ntok), across files.
static void copy_tokens(const dhx_shard *s, int64_t pos, int64_t n, int32_t *out) {
  for (int64_t f = file_at(s, pos); n > 0; f++) {
    const dhx_shard_file *file = &s->files[f];
    int64_t off = pos - file->first, take = file->ntok - off < n ? file->ntok - off : n;
    for (int64_t i = 0; i < take; i++) out[i] = (int32_t)token_at(file, off + i);
    out += take;
    pos += take;
    n -= take;
  }
}

// The stream is cut into nseq = (ntok-1)/seq windows of seq+1 tokens that overlap by one (the
// inputs and the next tokens); row g takes window g mod nseq, so any index is valid and runs
// simply wrap around. The last window ends at nseq*seq <= ntok-1, the last token.
void dhx_shard_row(const dhx_shard *s, int64_t g, int64_t seq, int32_t *tokens, int32_t *targets) {
  int64_t nseq = (s->ntok - 1) / seq;
  int64_t start = (g % nseq) * seq;
  copy_tokens(s, start, seq, tokens);
  copy_tokens(s, start + 1, seq, targets);
}
