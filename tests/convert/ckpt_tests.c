// ckpt_tests — checkpoint integrity, `--resume latest` and weights-only loading, on the runtime
// tests' toy plan (parameters w [16, 16] and b [16] with their AdamW moments). `ckpt_tests NAME`
// runs one test in a fresh folder named after it.
#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

#include "safetensors.h"
#include "testlib.h"



static bool is_state(const dhx_plan_buffer *b) {
  return b->kind == DHX_BUF_PARAM || b->kind == DHX_BUF_OPT_M || b->kind == DHX_BUF_OPT_V;
}

// Parameters and moments of a distinctive value each (exact in BF16 and F16 for small `base`).
static void fill_state(const dhx_plan *p, uint8_t *arena, float base) {
  const dhx_plan_rank *r = &p->ranks[0];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    float *x = (float *)(arena + b->offset);
    for (int64_t j = 0; is_state(b) && j < b->nbytes / 4; j++)
      x[j] = base + (float)i + 0.125f * (float)(j % 64) - 4.0f;
  }
}

static bool same_bytes(const dhx_plan *p, const uint8_t *a, const uint8_t *b, bool moments) {
  const dhx_plan_rank *r = &p->ranks[0];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *x = &r->buffers[i];
    bool want = x->kind == DHX_BUF_PARAM || (moments && is_state(x));
    if (want && memcmp(a + x->offset, b + x->offset, (size_t)x->nbytes) != 0) return false;
  }
  return true;
}

static bool moments_zero(const dhx_plan *p, const uint8_t *arena) {
  const dhx_plan_rank *r = &p->ranks[0];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    if (b->kind != DHX_BUF_OPT_M && b->kind != DHX_BUF_OPT_V) continue;
    for (int64_t j = 0; j < b->nbytes; j++)
      if (arena[b->offset + j]) return false;
  }
  return true;
}

static uint64_t header_len(const uint8_t *d) {
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)d[i] << (8 * i);
  return n;
}

typedef struct fixture {
  dhx_plan *plan;
  dhx_rank_arena saved, loaded;
  char err[2048];
} fixture;

static void setup(fixture *f) {
  toy_opts o = toy_defaults();
  f->plan = toy_plan(&o);
  CHECK(dhx_rank_arena_init(&f->saved, f->plan->ranks[0].arena_bytes, f->err, sizeof f->err));
  CHECK(dhx_rank_arena_init(&f->loaded, f->plan->ranks[0].arena_bytes, f->err, sizeof f->err));
  fill_state(f->plan, f->saved.base, 1.0f);
}

static void teardown(fixture *f) {
  dhx_rank_arena_free(&f->saved);
  dhx_rank_arena_free(&f->loaded);
  tb_free(f->plan);
}

// The load fails, says `want` after the path, and leaves the arena as it was.
static void expect_refused(fixture *f, const char *path, const char *want) {
  int64_t step = -1;
  fill_state(f->plan, f->loaded.base, 7.0f);
  uint8_t *before = malloc((size_t)f->plan->ranks[0].arena_bytes);
  memcpy(before, f->loaded.base, (size_t)f->plan->ranks[0].arena_bytes);
  CHECK_FAILS(dhx_checkpoint_load(f->plan, 0, f->loaded.base, path, &step, f->err, sizeof f->err),
              f->err, want);
  CHECK(!strncmp(f->err, path, strlen(path)) && f->err[strlen(path)] == ':');
  CHECK(memcmp(before, f->loaded.base, (size_t)f->plan->ranks[0].arena_bytes) == 0);
  CHECK(step == -1);
  free(before);
}

// ---- integrity --------------------------------------------------------------------------------

static void test_checkpoint_detects_truncation_and_bit_flips(void) {
  fixture f;
  setup(&f);
  const char *ck = tl_path("step_40.safetensors"), *bad = tl_path("bad.safetensors");
  CHECK(dhx_checkpoint_save(f.plan, 0, f.saved.base, ck, 40, f.err, sizeof f.err));
  int64_t step = 0;
  CHECK(dhx_checkpoint_load(f.plan, 0, f.loaded.base, ck, &step, f.err, sizeof f.err));
  CHECK(step == 40 && same_bytes(f.plan, f.saved.base, f.loaded.base, true));

  // The digests are in __metadata__, as 16 hex digits; the data digest is plain XXH64 of the
  // data section, so other tools can check it.
  size_t n;
  uint8_t *d = read_file(ck, &n);
  uint64_t hlen = header_len(d), data = 8 + hlen;
  cJSON *root = cJSON_ParseWithLength((char *)d + 8, hlen);
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
  const char *data_hex = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "data_xxh64"));
  CHECK(data_hex && strlen(data_hex) == 16);
  CHECK(strlen(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "header_xxh64"))) == 16);
  dhx_xxh64 h;
  dhx_xxh64_init(&h);
  dhx_xxh64_update(&h, d + data, n - data);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)dhx_xxh64_digest(&h));
  CHECK(!strcmp(hex, data_hex));
  // Published XXH64 values (seed 0), short input and the four-lane path.
  const struct { const char *in; unsigned long long want; } vectors[] = {
      {"", 0xef46db3751d8e999ULL}, {"abc", 0x44bc2cf5ad770999ULL},
      {"Nobody inspects the spammish repetition", 0xfbcea83c8a378bf1ULL}};
  for (int i = 0; i < 3; i++) {
    dhx_xxh64_init(&h);
    dhx_xxh64_update(&h, vectors[i].in, strlen(vectors[i].in));
    CHECK(dhx_xxh64_digest(&h) == vectors[i].want);
  }

  // One flipped bit anywhere in the data: refused before anything reaches the arena.
  uint8_t *copy = malloc(n);
  size_t spots[] = {data, data + 1, data + 777, (data + n) / 2, n - 5, n - 1};
  for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++)
    for (int bit = 0; bit < 8; bit += 3) {
      memcpy(copy, d, n);
      copy[spots[i]] ^= (uint8_t)(1u << bit);
      write_file(bad, copy, n);
      expect_refused(&f, bad, "checksum mismatch: the file is corrupt");
    }
  // A changed value in the header that still parses (the step, the model name): refused too.
  const char *edits[][2] = {{"\"step\":\"40\"", "\"step\":\"41\""},
                            {"\"model\":\"toy\"", "\"model\":\"toz\""}};
  for (int i = 0; i < 2; i++) {
    memcpy(copy, d, n);
    char *at = memmem(copy + 8, hlen, edits[i][0], strlen(edits[i][0]));
    CHECK(at != NULL);
    memcpy(at, edits[i][1], strlen(edits[i][1]));
    write_file(bad, copy, n);
    expect_refused(&f, bad, i == 0 ? "checksum mismatch" : "model 'toz'");
  }
  // Every truncation is refused.
  for (size_t len = 0; len < n; len += len < data + 64 ? 5 : 331) {
    write_file(bad, d, len);
    expect_refused(&f, bad, "");
  }
  write_file(bad, d, n - 1);
  expect_refused(&f, bad, "(truncated file?)");
  // A digest that is not 16 hex digits is damage, not an absent digest.
  memcpy(copy, d, n);
  char *at = memmem(copy + 8, hlen, data_hex, 16);
  at[3] = 'x';
  write_file(bad, copy, n);
  expect_refused(&f, bad, "checksum mismatch");

  // A file without digests (an older checkpoint, another tool) still loads.
  cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
  cJSON_DeleteItemFromObject(m, "data_xxh64");
  cJSON_DeleteItemFromObject(m, "header_xxh64");
  char *json = cJSON_PrintUnformatted(root);
  size_t len = strlen(json);
  FILE *out = fopen(bad, "wb");
  for (int i = 0; i < 8; i++) fputc((int)(((uint64_t)len >> (8 * i)) & 0xFF), out);
  fwrite(json, 1, len, out);
  fwrite(d + data, 1, n - data, out);
  fclose(out);
  fill_state(f.plan, f.loaded.base, 7.0f);
  CHECK(dhx_checkpoint_load(f.plan, 0, f.loaded.base, bad, &step, f.err, sizeof f.err));
  CHECK(step == 40 && same_bytes(f.plan, f.saved.base, f.loaded.base, true));
  free(json);
  cJSON_Delete(root);
  free(copy);
  free(d);
  teardown(&f);
}

// ---- --resume latest --------------------------------------------------------------------------

static void corrupt_copy(const char *src, const char *dst, long flip_from_end, size_t keep) {
  size_t n;
  uint8_t *d = read_file(src, &n);
  if (flip_from_end) d[n - (size_t)flip_from_end] ^= 0x10;
  write_file(dst, d, keep ? keep : n);
  free(d);
}

static char *notes_of(FILE *f) {
  long n = ftell(f);
  char *s = calloc((size_t)n + 1, 1);
  rewind(f);
  CHECK(fread(s, 1, (size_t)n, f) == (size_t)n);
  return s;
}

static void test_checkpoint_latest_skips_corrupt_files(void) {
  fixture f;
  setup(&f);
  char path[4096], dir[600];
  snprintf(dir, sizeof dir, "%s/ck", tl_dir);
  fresh_dir(dir);
  // Nothing there yet (and no folder at all): a clear error.
  FILE *notes = tmpfile();
  CHECK_FAILS(dhx_checkpoint_latest(dir, f.plan, 0, path, sizeof path, notes, f.err, sizeof f.err),
              f.err, "/ck: no complete checkpoint (step_N.safetensors) to resume from");
  CHECK_FAILS(dhx_checkpoint_latest(tl_path("nowhere"), f.plan, 0, path, sizeof path, notes, f.err,
                                    sizeof f.err),
              f.err, "nowhere: cannot read the checkpoint directory");

  // Good checkpoints at 10 and 20; newer ones are damaged or belong to another model; a
  // temporary file of an interrupted save and unrelated files lie around.
  const char *good10 = tl_path("ck/step_10.safetensors");
  const char *good20 = tl_path("ck/step_20.safetensors");
  CHECK(dhx_checkpoint_save(f.plan, 0, f.saved.base, good10, 10, f.err, sizeof f.err));
  fill_state(f.plan, f.saved.base, 2.0f);
  CHECK(dhx_checkpoint_save(f.plan, 0, f.saved.base, good20, 20, f.err, sizeof f.err));
  corrupt_copy(good20, tl_path("ck/step_30.safetensors"), 100, 0);      // a flipped bit
  corrupt_copy(good20, tl_path("ck/step_40.safetensors"), 0, 3000);     // truncated
  toy_opts wide = toy_defaults();
  wide.vocab = 32;
  dhx_plan *other = toy_plan(&wide);
  dhx_rank_arena oa;
  CHECK(dhx_rank_arena_init(&oa, other->ranks[0].arena_bytes, f.err, sizeof f.err));
  CHECK(dhx_checkpoint_save(other, 0, oa.base, tl_path("ck/step_50.safetensors"), 50, f.err,
                            sizeof f.err));
  corrupt_copy(good20, tl_path("ck/step_90.safetensors.tmp.1234"), 100, 0);
  write_file(tl_path("ck/step_x.safetensors"), "junk", 4);
  write_file(tl_path("ck/notes.txt"), "junk", 4);

  CHECK(dhx_checkpoint_latest(dir, f.plan, 0, path, sizeof path, notes, f.err, sizeof f.err));
  CHECK(!strcmp(path, good20));
  char *text = notes_of(notes);
  printf("%s", text);
  char want30[1200], want40[1200], want50[1200];
  snprintf(want30, sizeof want30, "dhxrun: skipping %s/step_30.safetensors: checksum mismatch: "
           "the file is corrupt\n", dir);
  snprintf(want40, sizeof want40, "dhxrun: skipping %s/step_40.safetensors: ", dir);
  snprintf(want50, sizeof want50, "dhxrun: skipping %s/step_50.safetensors: tensor 'w': shape",
           dir);
  char *p50 = strstr(text, want50), *p40 = strstr(text, want40), *p30 = strstr(text, want30);
  CHECK(p50 && p40 && p30 && p50 < p40 && p40 < p30);  // newest first, one line each
  CHECK(!strstr(text, "step_20") && !strstr(text, "step_10") && !strstr(text, "tmp"));
  int lines = 0;
  for (char *c = text; *c; c++) lines += *c == '\n';
  CHECK(lines == 3);
  free(text);
  int64_t step = 0;
  CHECK(dhx_checkpoint_load(f.plan, 0, f.loaded.base, path, &step, f.err, sizeof f.err));
  CHECK(step == 20 && same_bytes(f.plan, f.saved.base, f.loaded.base, true));

  // A trailing slash does not double; with every good one gone, the error says so.
  snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/");
  CHECK(dhx_checkpoint_latest(dir, f.plan, 0, path, sizeof path, NULL, f.err, sizeof f.err));
  CHECK(!strcmp(path, good20));
  corrupt_copy(good20, good20, 9, 0);
  corrupt_copy(good10, good10, 0, 100);
  CHECK_FAILS(dhx_checkpoint_latest(dir, f.plan, 0, path, sizeof path, NULL, f.err, sizeof f.err),
              f.err, "no complete checkpoint (step_N.safetensors) to resume from: all 5 are "
              "unusable");
  fclose(notes);
  dhx_rank_arena_free(&oa);
  tb_free(other);
  teardown(&f);
}

// ---- weights only (--init) --------------------------------------------------------------------

static uint16_t to_bf16(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  return (uint16_t)(bits >> 16);  // the test values are exact in BF16
}

static uint16_t to_f16(float x) {  // normal numbers that are exact in F16
  uint32_t bits;
  memcpy(&bits, &x, 4);
  if ((bits & 0x7FFFFFFF) == 0) return (uint16_t)(bits >> 16);
  uint32_t sign = bits >> 31, exp = (bits >> 23) & 0xFF, mant = bits & 0x7FFFFF;
  return (uint16_t)(sign << 15 | (exp - 112) << 10 | mant >> 13);
}

typedef struct weights_file {
  const char *names[4];
  const char *dtype;
  int64_t wshape[2];
  int nmeta;
} weights_file;

// The toy's parameters (from `arena`) under the given names and dtype.
static void write_weights(const dhx_plan *p, const uint8_t *arena, const char *path,
                          const weights_file *w) {
  const dhx_plan_rank *r = &p->ranks[0];
  dhx_st_tensor t[4];
  void *data[4] = {0};
  int n = 0, k = 0;
  bool half = strcmp(w->dtype, "F32") != 0;
  for (uint32_t i = 0; i < r->nbuffers && w->names[k]; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    if (b->kind != DHX_BUF_PARAM) continue;
    const float *x = (const float *)(arena + b->offset);
    int64_t count = b->nbytes / 4;
    uint16_t *h = half ? malloc((size_t)count * 2) : NULL;
    for (int64_t j = 0; half && j < count; j++)
      h[j] = strcmp(w->dtype, "BF16") == 0 ? to_bf16(x[j]) : to_f16(x[j]);
    data[n] = h;
    t[n] = (dhx_st_tensor){.name = w->names[k++], .dtype = w->dtype, .ndim = (int)b->ndim,
                           .data = half ? (const void *)h : (const void *)x,
                           .nbytes = half ? count * 2 : b->nbytes};
    memcpy(t[n].shape, b->shape, sizeof b->shape);
    if (b->ndim == 2 && w->wshape[0]) memcpy(t[n].shape, w->wshape, sizeof w->wshape);
    n++;
  }
  if (w->names[k]) {  // one more: a copy of the first under a name the plan does not have
    t[n] = t[0];
    t[n++].name = w->names[k];
  }
  dhx_st_pair meta[] = {{"format", "pt"}};
  char err[1024];
  CHECK(dhx_st_write(path, meta, w->nmeta, t, n, err, sizeof err));
  for (int i = 0; i < n; i++) free(data[i]);
}

static void expect_init_fails(fixture *f, const char *path, const char *want) {
  fill_state(f->plan, f->loaded.base, 7.0f);
  uint8_t *before = malloc((size_t)f->plan->ranks[0].arena_bytes);
  memcpy(before, f->loaded.base, (size_t)f->plan->ranks[0].arena_bytes);
  CHECK_FAILS(dhx_checkpoint_load_weights(f->plan, 0, f->loaded.base, path, f->err, sizeof f->err),
              f->err, want);
  CHECK(!strncmp(f->err, path, strlen(path)));
  CHECK(memcmp(before, f->loaded.base, (size_t)f->plan->ranks[0].arena_bytes) == 0);
  free(before);
}

static void test_checkpoint_init_loads_weights_in_f32_bf16_f16(void) {
  fixture f;
  setup(&f);
  const char *file = tl_path("weights.safetensors");
  // F32 without moments and with foreign metadata, BF16 and F16 without metadata: the
  // parameters arrive (converted to float) and the moments start at zero.
  const char *dtypes[] = {"F32", "BF16", "F16"};
  for (int i = 0; i < 3; i++) {
    weights_file w = {{"w", "b"}, dtypes[i], {0, 0}, i == 0};
    write_weights(f.plan, f.saved.base, file, &w);
    fill_state(f.plan, f.loaded.base, 7.0f);
    CHECK(dhx_checkpoint_load_weights(f.plan, 0, f.loaded.base, file, f.err, sizeof f.err));
    CHECK(same_bytes(f.plan, f.saved.base, f.loaded.base, false));
    CHECK(moments_zero(f.plan, f.loaded.base));
  }
  // A full checkpoint: its moments are ignored.
  const char *ck = tl_path("step_7.safetensors");
  CHECK(dhx_checkpoint_save(f.plan, 0, f.saved.base, ck, 7, f.err, sizeof f.err));
  fill_state(f.plan, f.loaded.base, 7.0f);
  CHECK(dhx_checkpoint_load_weights(f.plan, 0, f.loaded.base, ck, f.err, sizeof f.err));
  CHECK(same_bytes(f.plan, f.saved.base, f.loaded.base, false));
  CHECK(moments_zero(f.plan, f.loaded.base));

  // Resuming from a weights-only file points to --init.
  weights_file plain = {{"w", "b"}, "F32", {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &plain);
  expect_refused(&f, file,
                 "a weights-only file cannot be resumed; start from its weights with --init");

  // Mistakes name the tensor; Hugging Face names get the conversion to run.
  weights_file gpt2 = {{"transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias"},
                       "F32", {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &gpt2);
  expect_init_fails(&f, file, "tensor 'w' is missing; its names are Hugging Face GPT-2's: convert "
                    "it first with dhxc convert --from hf-gpt2 --to dhx");
  weights_file llama = {{"model.layers.0.self_attn.q_proj.weight", "model.norm.weight"}, "F32",
                        {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &llama);
  expect_init_fails(&f, file, "tensor 'w' is missing; its names are Hugging Face Llama's: "
                    "convert it first with dhxc convert --from hf-llama --to dhx");
  weights_file only_w = {{"w", NULL}, "F32", {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &only_w);
  expect_init_fails(&f, file, "tensor 'b' is missing");
  weights_file shape = {{"w", "b"}, "F32", {8, 32}, 1};
  write_weights(f.plan, f.saved.base, file, &shape);
  expect_init_fails(&f, file, "tensor 'w': shape [8, 32], the plan's is [16, 16]");
  weights_file ints = {{"w", "b"}, "I32", {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &ints);
  expect_init_fails(&f, file, "tensor 'w': dtype I32 (expected F32, BF16 or F16)");
  weights_file extra = {{"w", "b", "w.ema"}, "F32", {0, 0}, 1};
  write_weights(f.plan, f.saved.base, file, &extra);
  expect_init_fails(&f, file, "tensor 'w.ema' is not in the plan");
  // A damaged weights file is refused like a checkpoint.
  corrupt_copy(ck, file, 3, 0);
  expect_init_fails(&f, file, "checksum mismatch: the file is corrupt");
  expect_init_fails(&f, tl_path("none.safetensors"), "cannot open");
  teardown(&f);
}

// ---- main -------------------------------------------------------------------------------------

static const tl_test tests[] = {
    {"checkpoint_detects_truncation_and_bit_flips",
     test_checkpoint_detects_truncation_and_bit_flips},
    {"checkpoint_latest_skips_corrupt_files", test_checkpoint_latest_skips_corrupt_files},
    {"checkpoint_init_loads_weights_in_f32_bf16_f16",
     test_checkpoint_init_loads_weights_in_f32_bf16_f16},
};

int main(int argc, char **argv) {
  return tl_main("ckpt_tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
