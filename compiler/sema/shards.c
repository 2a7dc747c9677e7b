// shards.c — `dhxc check` looks at the token shards a program names, when they exist already,
// and warns about what the configuration alone cannot see: a file that is not a shard, data
// shorter than one step, a validation shard too small for one evaluation, token ids too narrow
// for the vocabulary. Only the 1 KiB header is read (llm.c's layout: 256 int32, magic 20240520,
// version 1 for uint16 tokens or 2 for uint32, the token count), so this stays cheap for
// shards of billions of tokens; dhxrun checks the tokens themselves when it opens them.
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "sema.h"

#define SHARD_MAGIC 20240520
#define HEADER_INTS 256

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

typedef struct shard {
  int64_t ntok;
  int token_bytes;  // 2 (version 1) or 4 (version 2)
} shard;

// Reads the header of the shard at `path` into s. 0: a shard; 1: no such file (nothing to
// say yet); 2: not a shard, after a warning at `at`.
static int read_header(const char *path, const dhx_loc *at, shard *s) {
  struct stat st;
  if (stat(path, &st) != 0) return 1;
  FILE *f = fopen(path, "rb");
  int32_t h[HEADER_INTS];
  size_t got = f ? fread(h, sizeof h[0], HEADER_INTS, f) : 0;
  if (f) fclose(f);
  if (got < HEADER_INTS || h[0] != SHARD_MAGIC || (h[1] != 1 && h[1] != 2) || h[2] < 0) {
    dhx_warning_at(at, src(at), "this file is not an llm.c token shard (%s); dhxrun will refuse "
                   "it", got < HEADER_INTS ? "shorter than the 1024-byte header"
                         : h[0] != SHARD_MAGIC ? "no magic number 20240520 at its start"
                                               : "a version other than 1 or 2");
    return 2;
  }
  s->ntok = h[2];
  s->token_bytes = h[1] == 1 ? 2 : 4;
  int64_t want = (int64_t)sizeof h + s->ntok * s->token_bytes;
  if ((int64_t)st.st_size < want) {
    dhx_warning_at(at, src(at), "this shard says it holds %lld tokens but is %lld bytes long, "
                   "%lld too short; dhxrun will refuse it", (long long)s->ntok,
                   (long long)st.st_size, (long long)(want - st.st_size));
    return 2;
  }
  return 0;
}

// Sequences of seq+1 tokens (inputs and next tokens) starting at multiples of seq, as dhxrun
// cuts them.
static int64_t rows_in(const shard *s, int64_t seq) {
  return s->ntok > seq ? (s->ntok - 1) / seq : 0;
}

static void check_vocab(const dhx_loc *at, const shard *s, int vocab) {
  if (s->token_bytes != 2 || vocab <= 65536) return;
  dhx_warning_at(at, src(at), "this shard holds uint16 tokens (ids below 65536), but the "
                 "vocabulary has %d entries: %d embedding rows are never trained", vocab,
                 vocab - 65536);
}

void dhx_warn_data_shards(const dhx_config *cfg, int seq, int vocab) {
  shard s;
  const dhx_loc *at = &cfg->train_path_loc;
  if (cfg->train_path && cfg->train_path[0] && read_header(cfg->train_path, at, &s) == 0) {
    int64_t rows = rows_in(&s, seq);
    if (rows < cfg->global_batch)
      dhx_warning_at(at, src(at), "the training shard holds %lld tokens, %lld sequences of %d+1, "
                     "but one step reads %d sequences (global_batch): every step trains on the "
                     "same %lld sequences, repeated", (long long)s.ntok, (long long)rows,
                     seq, cfg->global_batch, (long long)rows);
    check_vocab(at, &s, vocab);
  }
  at = &cfg->val_path_loc;
  if (cfg->val_every > 0 && cfg->val_path && cfg->val_path[0] &&
      read_header(cfg->val_path, at, &s) == 0) {
    int64_t rows = rows_in(&s, seq), want = (int64_t)cfg->val_batches * cfg->micro_batch;
    if (rows < want)
      dhx_warning_at(at, src(at), "the validation shard holds %lld tokens, %lld sequences of "
                     "%d+1, but each evaluation reads %lld (val_batches x micro_batch = %d x %d): "
                     "the validation loss is measured on repeated rows", (long long)s.ntok,
                     (long long)rows, seq, (long long)want, cfg->val_batches, cfg->micro_batch);
    check_vocab(at, &s, vocab);
  }
}
