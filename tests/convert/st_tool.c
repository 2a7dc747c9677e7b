// st_tool — safetensors helpers for the convert tests (convert.sh):
//
//   st_tool same A B            B holds exactly A's parameters (AdamW moments aside), each with
//                               the same dtype, shape and bytes
//   st_tool hub-gpt2 IN OUT     IN (hf-gpt2 names, F32) as the Hugging Face hub publishes GPT-2:
//                               names without "transformer.", no lm_head (tied to wte), BF16,
//                               and the attention-mask buffers older files carry
//   st_tool check-hub DHX OUT   OUT (converted back from the hub-style file) holds DHX's
//                               parameters rounded to BF16, with the head equal to the embedding
//                               transposed
//   st_tool drop IN OUT NAME    IN without tensor NAME
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static char err[2048];

static void die(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "st_tool: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  exit(1);
}

static void open_or_die(dhx_st_file *s, const char *path) {
  if (!dhx_st_open(s, path, err, sizeof err) || !dhx_st_verify(s, err, sizeof err))
    die("%s%s", err, "");
}

static void *read_or_die(dhx_st_file *s, const dhx_st_entry *e) {
  void *p = malloc((size_t)(e->end - e->begin) + 1);
  if (!p || !dhx_st_read(s, e, p, err, sizeof err)) die("%s%s", err, "");
  return p;
}

static bool is_moment(const char *name) {
  size_t n = strlen(name);
  return n > 7 && (!strcmp(name + n - 7, ".adam_m") || !strcmp(name + n - 7, ".adam_v"));
}

static int same(const char *a_path, const char *b_path) {
  dhx_st_file a, b;
  open_or_die(&a, a_path);
  open_or_die(&b, b_path);
  int params = 0;
  for (int i = 0; i < a.nentries; i++) {
    const dhx_st_entry *x = &a.entries[i];
    if (is_moment(x->name)) continue;
    const dhx_st_entry *y = dhx_st_find(&b, x->name);
    if (!y) die("tensor '%s' is missing from %s", x->name, b_path);
    if (strcmp(x->dtype, y->dtype) || x->ndim != y->ndim ||
        memcmp(x->shape, y->shape, sizeof x->shape) || x->end - x->begin != y->end - y->begin)
      die("tensor '%s' differs in dtype or shape in %s", x->name, b_path);
    void *p = read_or_die(&a, x), *q = read_or_die(&b, y);
    if (memcmp(p, q, (size_t)(x->end - x->begin)))
      die("tensor '%s' differs in %s", x->name, b_path);
    free(p);
    free(q);
    params++;
  }
  if (params != b.nentries) die("%s has tensors that %s does not", b_path, a_path);
  printf("%s and %s: %d tensors, bitwise identical\n", a_path, b_path, params);
  dhx_st_close(&a);
  dhx_st_close(&b);
  return 0;
}

static uint16_t bf16_round(float x) {  // round to nearest even (finite inputs)
  uint32_t bits;
  memcpy(&bits, &x, 4);
  return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

static float bf16_value(float x) {
  uint32_t bits = (uint32_t)bf16_round(x) << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static int hub_gpt2(const char *in_path, const char *out_path) {
  dhx_st_file in;
  open_or_die(&in, in_path);
  dhx_st_tensor *t = calloc((size_t)in.nentries + 1, sizeof *t);
  char (*names)[256] = calloc((size_t)in.nentries + 1, sizeof *names);
  int n = 0;
  for (int i = 0; i < in.nentries; i++) {
    const dhx_st_entry *e = &in.entries[i];
    if (!strcmp(e->name, "lm_head.weight")) continue;
    if (strcmp(e->dtype, "F32")) die("%s: tensor '%s' is not F32", in_path, e->name);
    const float *x = read_or_die(&in, e);
    int64_t count = dhx_st_elems(e);
    uint16_t *h = malloc((size_t)count * 2 + 1);
    for (int64_t j = 0; j < count; j++) h[j] = bf16_round(x[j]);
    free((void *)x);
    const char *short_name = strncmp(e->name, "transformer.", 12) ? e->name : e->name + 12;
    snprintf(names[n], sizeof names[n], "%s", short_name);
    t[n] = (dhx_st_tensor){.name = names[n], .dtype = "BF16", .ndim = e->ndim, .data = h,
                           .nbytes = 2 * count};
    memcpy(t[n++].shape, e->shape, sizeof e->shape);
  }
  static const float mask[16] = {1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1};
  t[n++] = (dhx_st_tensor){.name = "h.0.attn.bias", .dtype = "F32", .ndim = 4,
                           .shape = {1, 1, 4, 4}, .data = mask, .nbytes = sizeof mask};
  dhx_st_pair meta[] = {{"format", "pt"}};
  if (!dhx_st_write(out_path, meta, 1, t, n, err, sizeof err)) die("%s%s", err, "");
  for (int i = 0; i < n - 1; i++) free((void *)t[i].data);
  free(t);
  free(names);
  dhx_st_close(&in);
  return 0;
}

static float *floats(dhx_st_file *s, const char *name, const dhx_st_entry **e) {
  *e = dhx_st_find(s, name);
  if (!*e) die("tensor '%s' is missing from %s", name, s->path);
  float *x = malloc((size_t)dhx_st_elems(*e) * 4 + 1);
  if (!x || !dhx_st_read_f32(s, *e, x, err, sizeof err)) die("%s%s", err, "");
  return x;
}

static int check_hub(const char *dhx_path, const char *out_path) {
  dhx_st_file a, b;
  open_or_die(&a, dhx_path);
  open_or_die(&b, out_path);
  const dhx_st_entry *emb;
  float *wte = floats(&a, "embedding.0.w", &emb);
  int64_t vocab = emb->shape[0], dim = emb->shape[1];
  int checked = 0;
  for (int i = 0; i < a.nentries; i++) {
    const dhx_st_entry *x = &a.entries[i], *y;
    if (is_moment(x->name)) continue;
    float *want = floats(&a, x->name, &x), *got = floats(&b, x->name, &y);
    bool head = !strcmp(x->name, "linear.0.w");
    if (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof x->shape))
      die("tensor '%s' has another shape in %s", x->name, out_path);
    for (int64_t j = 0; j < dhx_st_elems(x); j++) {
      float w = head ? wte[(j % vocab) * dim + j / vocab] : want[j];  // head [dim, vocab]
      if (got[j] != bf16_value(w)) die("tensor '%s' has a wrong value in %s", x->name, out_path);
    }
    free(want);
    free(got);
    checked++;
  }
  if (checked != b.nentries) die("%s has tensors that %s does not", out_path, dhx_path);
  printf("%s: %d tensors, the BF16 values of %s with the head tied to the embedding\n", out_path,
         checked, dhx_path);
  free(wte);
  dhx_st_close(&a);
  dhx_st_close(&b);
  return 0;
}

static int drop(const char *in_path, const char *out_path, const char *name) {
  dhx_st_file in;
  open_or_die(&in, in_path);
  dhx_st_tensor *t = calloc((size_t)in.nentries + 1, sizeof *t);
  int n = 0;
  for (int i = 0; i < in.nentries; i++) {
    const dhx_st_entry *e = &in.entries[i];
    if (!strcmp(e->name, name)) continue;
    t[n] = (dhx_st_tensor){.name = e->name, .dtype = e->dtype, .ndim = e->ndim,
                           .data = read_or_die(&in, e), .nbytes = e->end - e->begin};
    memcpy(t[n++].shape, e->shape, sizeof e->shape);
  }
  if (n == in.nentries) die("%s has no tensor '%s'", in_path, name);
  dhx_st_pair meta[] = {{"format", "pt"}};
  if (!dhx_st_write(out_path, meta, 1, t, n, err, sizeof err)) die("%s%s", err, "");
  for (int i = 0; i < n; i++) free((void *)t[i].data);
  free(t);
  dhx_st_close(&in);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "same")) return same(argv[2], argv[3]);
  if (argc == 4 && !strcmp(argv[1], "hub-gpt2")) return hub_gpt2(argv[2], argv[3]);
  if (argc == 4 && !strcmp(argv[1], "check-hub")) return check_hub(argv[2], argv[3]);
  if (argc == 5 && !strcmp(argv[1], "drop")) return drop(argv[2], argv[3], argv[4]);
  fprintf(stderr,
          "usage: st_tool same A B | hub-gpt2 IN OUT | check-hub DHX OUT | drop IN OUT NAME\n");
  return 2;
}
