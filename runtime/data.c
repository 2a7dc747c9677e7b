// data.c — llm.c token shards (dev/data/data_common.py): a header of 256 little-endian int32
// (magic 20240520, version 1, token count), then the tokens as little-endian uint16.
//
// The whole file is mapped read-only and checked once when it is opened (size, magic, version,
// length, every token inside the vocabulary), so a bad shard is reported by name before any
// step runs and reading a row later cannot fail.
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
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

static bool check_shard(const dhx_shard *s, const uint8_t *bytes, const char *path, int64_t seq,
                        int64_t vocab, char *err, size_t errlen) {
  if (s->map_bytes < HEADER_BYTES) {
    snprintf(err, errlen, "%s: truncated: %zu bytes, shorter than the %d-byte header of an llm.c "
             "token shard", path, s->map_bytes, HEADER_BYTES);
    return false;
  }
  int32_t magic = header_int(bytes, 0), version = header_int(bytes, 1), ntok = header_int(bytes, 2);
  if (magic != DHX_SHARD_MAGIC) {
    snprintf(err, errlen, "%s: bad magic %" PRId32 " (expected %d: an llm.c token shard)", path,
             magic, DHX_SHARD_MAGIC);
    return false;
  }
  if (version != DHX_SHARD_VERSION) {
    snprintf(err, errlen, "%s: version %" PRId32 " (expected %d: uint16 tokens)", path, version,
             DHX_SHARD_VERSION);
    return false;
  }
  int64_t held = (int64_t)(s->map_bytes - HEADER_BYTES) / 2;
  if (ntok < 0 || (int64_t)s->map_bytes != HEADER_BYTES + 2 * (int64_t)ntok) {
    snprintf(err, errlen, "%s: %s: header says %" PRId32 " tokens but the file holds %" PRId64
             "%s", path, held < ntok ? "truncated" : "bad length", ntok, held,
             (s->map_bytes - HEADER_BYTES) % 2 ? " and an odd byte" : "");
    return false;
  }
  if (ntok < seq + 2) {
    snprintf(err, errlen, "%s: %" PRId32 " tokens are too few for one sequence of %" PRId64
             " (needs at least %" PRId64 ")", path, ntok, seq, seq + 2);
    return false;
  }
  for (int64_t i = 0; i < s->ntok; i++)
    if (s->tokens[i] >= vocab) {
      snprintf(err, errlen, "%s: token %u at position %" PRId64 " is outside the vocabulary (%"
               PRId64 ")", path, s->tokens[i], i, vocab);
      return false;
    }
  return true;
}

bool dhx_shard_open(dhx_shard *s, const char *path, int64_t seq, int64_t vocab, char *err,
                    size_t errlen) {
  memset(s, 0, sizeof *s);
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
  s->map_bytes = (size_t)st.st_size;
  if (s->map_bytes > 0) {
    s->map = mmap(NULL, s->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (s->map == MAP_FAILED) {
      snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
      s->map = NULL;
      close(fd);
      return false;
    }
  }
  close(fd);
  const uint8_t *bytes = s->map;
  if (s->map_bytes >= HEADER_BYTES) {
    s->ntok = header_int(bytes, 2) < 0 ? 0 : header_int(bytes, 2);
    s->tokens = (const uint16_t *)(bytes + HEADER_BYTES);  // x86-64 and arm64 are little-endian
  }
  if (!check_shard(s, bytes, path, seq, vocab, err, errlen)) {
    dhx_shard_close(s);
    return false;
  }
  return true;
}

void dhx_shard_close(dhx_shard *s) {
  if (s->map) munmap(s->map, s->map_bytes);
  memset(s, 0, sizeof *s);
}

// The shard is cut into whole sequences of seq+1 overlapping tokens (inputs and the next
// tokens); row g takes sequence g mod nseq, so any index is valid and runs simply wrap around.
void dhx_shard_row(const dhx_shard *s, int64_t g, int64_t seq, int32_t *tokens, int32_t *targets) {
  int64_t nseq = (s->ntok - 1) / seq;
  int64_t start = (g % nseq) * seq;
  for (int64_t i = 0; i < seq; i++) {
    tokens[i] = s->tokens[start + i];
    targets[i] = s->tokens[start + i + 1];
  }
}
