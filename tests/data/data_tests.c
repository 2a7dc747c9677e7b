// data_tests — token streams of the runtime (runtime/data.c): `data_tests NAME` runs one test in
// a fresh folder work_NAME of the current directory; `data_tests cat PATTERN` writes the tokens
// of a stream of byte-level shards to stdout as bytes (for the `dhxc data` tests).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"  // CHECK, CHECK_FAILS



// An llm.c shard: header (magic, version, count) and n tokens of token_bytes (2 or 4) each.
static void write_shard(const char *path, int32_t magic, int32_t version, int32_t count,
                        const uint32_t *tokens, int64_t n, int token_bytes) {
  int32_t header[DHX_SHARD_HEADER_INTS] = {magic, version, count};
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fwrite(header, sizeof header, 1, f) == 1);
  for (int64_t i = 0; i < n; i++) {
    uint16_t t16 = (uint16_t)tokens[i];
    CHECK(fwrite(token_bytes == 2 ? (const void *)&t16 : (const void *)&tokens[i],
                 (size_t)token_bytes, 1, f) == 1);
  }
  CHECK(fclose(f) == 0);
}

static void write_gpt2(const char *path, const uint32_t *tokens, int64_t n) {
  write_shard(path, DHX_SHARD_MAGIC, DHX_SHARD_VERSION, (int32_t)n, tokens, n, 2);
}

static void write_llama3(const char *path, const uint32_t *tokens, int64_t n) {
  write_shard(path, DHX_SHARD_MAGIC_LLAMA3, DHX_SHARD_VERSION_LLAMA3, (int32_t)n, tokens, n, 4);
}

// Every row g in [0, 3 nseq) is window g mod nseq of `all` (the expected stream), and the last
// window ends on the last token.
static void check_rows(const dhx_shard *s, const uint32_t *all, int64_t ntok, int64_t seq) {
  CHECK(s->ntok == ntok);
  int64_t nseq = (ntok - 1) / seq;
  int32_t *in = malloc(sizeof(int32_t) * (size_t)seq), *out = malloc(sizeof(int32_t) * (size_t)seq);
  CHECK(in && out);
  for (int64_t g = 0; g < 3 * nseq; g++) {
    dhx_shard_row(s, g, seq, in, out);
    int64_t start = (g % nseq) * seq;
    CHECK(start + seq < ntok);
    for (int64_t i = 0; i < seq; i++)
      CHECK(in[i] == (int32_t)all[start + i] && out[i] == (int32_t)all[start + i + 1]);
  }
  free(in);
  free(out);
}

// ---- tests ------------------------------------------------------------------------------------

static void test_shard_of_exactly_seq_plus_one_tokens_gives_one_row(void) {
  char err[1024];
  uint32_t tok[64];
  for (int i = 0; i < 64; i++) tok[i] = (uint32_t)(100 + i);
  write_gpt2(tl_path("nine.bin"), tok, 9);
  dhx_shard s;
  CHECK(dhx_shard_open(&s, tl_path("nine.bin"), 8, 256, err, sizeof err));
  CHECK(s.ntok == 9 && s.nfiles == 1 && s.max_token == 108);
  int32_t in[8], out[8];
  for (int64_t g = 0; g < 4; g++) {  // every row is the one window: tokens 0..7, targets 1..8
    dhx_shard_row(&s, g, 8, in, out);
    CHECK(in[0] == 100 && in[7] == 107 && out[0] == 101 && out[7] == 108);
  }
  dhx_shard_close(&s);
  // every length from seq+1 to 3 seq + 2: rows wrap and never go past the last token
  for (int64_t n = 9; n <= 26; n++) {
    write_gpt2(tl_path("n.bin"), tok, n);
    CHECK(dhx_shard_open(&s, tl_path("n.bin"), 8, 256, err, sizeof err));
    check_rows(&s, tok, n, 8);
    dhx_shard_close(&s);
  }
  write_gpt2(tl_path("eight.bin"), tok, 8);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("eight.bin"), 8, 256, err, sizeof err), err,
              "eight.bin: 8 tokens are too few for one sequence of 8 (needs at least 9)");
}

static void test_shard_glob_reads_files_in_sorted_order_as_one_stream(void) {
  char err[1024], pattern[1024];
  uint32_t all[1000];
  for (int i = 0; i < 1000; i++) all[i] = (uint32_t)((i * 7 + 3) % 250);
  // written out of order, with sizes that put window boundaries inside files and across them
  write_gpt2(tl_path("part_000002.bin"), all + 300 + 250, 450);
  write_gpt2(tl_path("part_000000.bin"), all, 300);
  write_gpt2(tl_path("part_000001.bin"), all + 300, 250);
  write_gpt2(tl_path("other_000000.bin"), all, 20);  // not matched
  snprintf(pattern, sizeof pattern, "%s/part_*.bin", tl_dir);
  dhx_shard s;
  CHECK(dhx_shard_open(&s, pattern, 16, 256, err, sizeof err));
  CHECK(s.nfiles == 3 && s.ntok == 1000 && s.max_token == 249);
  check_rows(&s, all, 1000, 16);
  check_rows(&s, all, 1000, 7);  // rows are cut by the row call's seq: any width works
  dhx_shard_close(&s);
  // a shard without tokens in the middle changes nothing
  write_gpt2(tl_path("part_000001a.bin"), all, 0);
  CHECK(dhx_shard_open(&s, pattern, 16, 256, err, sizeof err));
  CHECK(s.nfiles == 4 && s.ntok == 1000);
  check_rows(&s, all, 1000, 16);
  dhx_shard_close(&s);
  // a plain path is one file even among matching neighbours
  CHECK(dhx_shard_open(&s, tl_path("part_000001.bin"), 16, 256, err, sizeof err));
  CHECK(s.nfiles == 1 && s.ntok == 250);
  check_rows(&s, all + 300, 250, 16);
  dhx_shard_close(&s);
}

static void test_shard_llama3_uint32_tokens_are_read(void) {
  char err[1024], pattern[1024];
  enum { N = 500, VOCAB = 128256 };
  uint32_t tok[N];
  for (int i = 0; i < N; i++) tok[i] = (uint32_t)((i * 40009u + 11u) % VOCAB);
  tok[123] = VOCAB - 1;
  write_llama3(tl_path("llama_000000.bin"), tok, 200);
  write_llama3(tl_path("llama_000001.bin"), tok + 200, N - 200);
  snprintf(pattern, sizeof pattern, "%s/llama_*.bin", tl_dir);
  dhx_shard s;
  CHECK(dhx_shard_open(&s, pattern, 32, VOCAB, err, sizeof err));
  CHECK(s.nfiles == 2 && s.ntok == N && s.max_token == VOCAB - 1);
  check_rows(&s, tok, N, 32);
  dhx_shard_close(&s);
  // GPT-2 and Llama 3 shards mix in one stream
  write_gpt2(tl_path("mixed_000000.bin"), (const uint32_t[]){1, 2, 3, 4}, 4);
  write_llama3(tl_path("mixed_000001.bin"), (const uint32_t[]){70000, 5, 6}, 3);
  snprintf(pattern, sizeof pattern, "%s/mixed_*.bin", tl_dir);
  CHECK(dhx_shard_open(&s, pattern, 3, VOCAB, err, sizeof err));
  check_rows(&s, (const uint32_t[]){1, 2, 3, 4, 70000, 5, 6}, 7, 3);
  CHECK(s.max_token == 70000);
  dhx_shard_close(&s);
  // tokens are checked against the model's vocabulary
  CHECK_FAILS(dhx_shard_open(&s, tl_path("llama_000000.bin"), 32, 50257, err, sizeof err), err,
              "llama_000000.bin: token 80029 at position 2 is outside the vocabulary (50257)");
  write_shard(tl_path("odd.bin"), DHX_SHARD_MAGIC_LLAMA3, DHX_SHARD_VERSION_LLAMA3, 100, tok, 100, 2);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("odd.bin"), 32, VOCAB, err, sizeof err), err,
              "odd.bin: truncated: header says 100 tokens but the file holds 50");
}

static void test_shard_errors_name_the_file_or_pattern(void) {
  char err[1024], pattern[1024], want[1200];
  uint32_t tok[100] = {0};
  dhx_shard s;
  write_shard(tl_path("magic.bin"), 12345, 1, 100, tok, 100, 2);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("magic.bin"), 8, 256, err, sizeof err), err,
              "magic.bin: bad magic 12345 (expected 20240520: an llm.c token shard, or 20240801: "
              "an llm.c Llama 3 shard)");
  write_shard(tl_path("v2.bin"), DHX_SHARD_MAGIC, 2, 100, tok, 100, 4);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("v2.bin"), 8, 256, err, sizeof err), err,
              "v2.bin: version 2 (expected 1 with magic 20240520: uint16 tokens)");
  write_shard(tl_path("v1.bin"), DHX_SHARD_MAGIC_LLAMA3, 1, 100, tok, 100, 2);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("v1.bin"), 8, 256, err, sizeof err), err,
              "v1.bin: version 1 (expected 7 with magic 20240801: uint32 tokens)");
  snprintf(pattern, sizeof pattern, "%s/fineweb_train_*.bin", tl_dir);
  snprintf(want, sizeof want, "%s: no file matches the pattern", pattern);
  CHECK_FAILS(dhx_shard_open(&s, pattern, 8, 256, err, sizeof err), err, want);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("missing.bin"), 8, 256, err, sizeof err), err,
              "missing.bin: cannot open: No such file or directory");
  // a bad file among the matches is named, not the pattern
  write_gpt2(tl_path("s_000000.bin"), tok, 100);
  write_shard(tl_path("s_000001.bin"), DHX_SHARD_MAGIC, DHX_SHARD_VERSION, 100, tok, 60, 2);
  write_gpt2(tl_path("s_000002.bin"), tok, 100);
  snprintf(pattern, sizeof pattern, "%s/s_*.bin", tl_dir);
  CHECK_FAILS(dhx_shard_open(&s, pattern, 8, 256, err, sizeof err), err,
              "s_000001.bin: truncated: header says 100 tokens but the file holds 60");
  CHECK(mkdir(tl_path("s_000001d.bin"), 0755) == 0 || errno == EEXIST);
  write_gpt2(tl_path("s_000001.bin"), tok, 100);
  CHECK_FAILS(dhx_shard_open(&s, pattern, 8, 256, err, sizeof err), err,
              "s_000001d.bin: not a regular file");
  // too few tokens in all the files together: the pattern is named
  write_gpt2(tl_path("few_0.bin"), tok, 3);
  write_gpt2(tl_path("few_1.bin"), tok, 4);
  snprintf(pattern, sizeof pattern, "%s/few_*.bin", tl_dir);
  snprintf(want, sizeof want, "%s: 7 tokens in all its files are too few for one sequence of 8 "
           "(needs at least 9)", pattern);
  CHECK_FAILS(dhx_shard_open(&s, pattern, 8, 256, err, sizeof err), err, want);
  write_gpt2(tl_path("few_2.bin"), tok, 2);
  CHECK(dhx_shard_open(&s, pattern, 8, 256, err, sizeof err));
  CHECK(s.nfiles == 3 && s.ntok == 9 && s.max_token == 0);
  dhx_shard_close(&s);
}

// ---- main -------------------------------------------------------------------------------------

// Writes every token of the stream as one byte (byte-level shards only).
static int cat_stream(const char *pattern) {
  char err[1024];
  dhx_shard s;
  if (!dhx_shard_open(&s, pattern, 1, 256, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  for (int64_t f = 0; f < s.nfiles; f++)
    for (int64_t i = 0; i < s.files[f].ntok; i++) {
      const uint8_t *t = s.files[f].tokens + i * s.files[f].token_bytes;
      putchar(t[0]);  // little-endian: the low byte; the vocabulary check ensured < 256
    }
  fprintf(stderr, "%lld files, %lld tokens\n", (long long)s.nfiles, (long long)s.ntok);
  dhx_shard_close(&s);
  return 0;
}

static const tl_test tests[] = {
    {"shard_of_exactly_seq_plus_one_tokens_gives_one_row",
     test_shard_of_exactly_seq_plus_one_tokens_gives_one_row},
    {"shard_glob_reads_files_in_sorted_order_as_one_stream",
     test_shard_glob_reads_files_in_sorted_order_as_one_stream},
    {"shard_llama3_uint32_tokens_are_read", test_shard_llama3_uint32_tokens_are_read},
    {"shard_errors_name_the_file_or_pattern", test_shard_errors_name_the_file_or_pattern},
};

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "cat") == 0) return cat_stream(argv[2]);  // dhxc_data.sh
  return tl_main("data_tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
