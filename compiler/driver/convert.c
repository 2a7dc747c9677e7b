// convert.c — `dhxc convert`: checkpoints to and from Hugging Face's GPT-2 and Llama names, so a
// run can start from weights other tools publish and publish weights they read.
//
//   dhxc convert --from dhx --to hf-gpt2|hf-llama IN.safetensors OUT.safetensors
//   dhxc convert --from hf-gpt2|hf-llama --to dhx IN.safetensors OUT.safetensors
//
// DHX names parameters by their place in the program (stdlib/gpt.dhx, stdlib/llama.dhx):
// "gpt_block.3.linear.0.w" is the first linear of the fourth block, stored [in, out]. The
// tables below pair each with its Hugging Face name and say whether the matrix is transposed:
// GPT-2's Conv1D weights are [in, out] like DHX's, Llama's (and every lm_head's) nn.Linear
// weights are [out, in]. What needs no work, and why:
//   - GPT-2's c_attn is q, k and v fused in that order, heads contiguous inside each: exactly
//     the layout of std.gpt's fused qkv projection, so it is copied whole.
//   - DHX's rope rotates the pairs (i, i + head/2) of each head with base^(-2i/head), which is
//     Hugging Face's rotate_half convention: q_proj and k_proj rows need no permutation.
//   - Grouped-query attention shares kv head h / (heads / kv_heads) in both.
// Hugging Face files may tie the output head to the embedding and leave lm_head out; DHX's
// head is its own parameter, so it is then made from the embedding (transposed). AdamW moments
// of a DHX checkpoint are left out. Tensors are written as F32; F32 input converts bit-exactly
// both ways, BF16 and F16 input is widened.
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "safetensors.h"

typedef enum { FMT_DHX, FMT_HF_GPT2, FMT_HF_LLAMA } format;

// One parameter in both namings; "%d" stands for the block index in per-block names.
typedef struct rule {
  const char *dhx, *hf;
  int ndim;         // 1 or 2
  bool transpose;   // 2-D: Hugging Face stores it [out, in]
} rule;

static const rule GPT2[] = {
    {"embedding.0.w", "transformer.wte.weight", 2, false},
    {"pos_embedding.0.w", "transformer.wpe.weight", 2, false},
    {"gpt_block.%d.layernorm.0.g", "transformer.h.%d.ln_1.weight", 1, false},
    {"gpt_block.%d.layernorm.0.b", "transformer.h.%d.ln_1.bias", 1, false},
    {"gpt_block.%d.linear.0.w", "transformer.h.%d.attn.c_attn.weight", 2, false},
    {"gpt_block.%d.linear.0.b", "transformer.h.%d.attn.c_attn.bias", 1, false},
    {"gpt_block.%d.linear.1.w", "transformer.h.%d.attn.c_proj.weight", 2, false},
    {"gpt_block.%d.linear.1.b", "transformer.h.%d.attn.c_proj.bias", 1, false},
    {"gpt_block.%d.layernorm.1.g", "transformer.h.%d.ln_2.weight", 1, false},
    {"gpt_block.%d.layernorm.1.b", "transformer.h.%d.ln_2.bias", 1, false},
    {"gpt_block.%d.linear.2.w", "transformer.h.%d.mlp.c_fc.weight", 2, false},
    {"gpt_block.%d.linear.2.b", "transformer.h.%d.mlp.c_fc.bias", 1, false},
    {"gpt_block.%d.linear.3.w", "transformer.h.%d.mlp.c_proj.weight", 2, false},
    {"gpt_block.%d.linear.3.b", "transformer.h.%d.mlp.c_proj.bias", 1, false},
    {"layernorm.0.g", "transformer.ln_f.weight", 1, false},
    {"layernorm.0.b", "transformer.ln_f.bias", 1, false},
    {"linear.0.w", "lm_head.weight", 2, true},
};

static const rule LLAMA[] = {
    {"embedding.0.w", "model.embed_tokens.weight", 2, false},
    {"llama_block.%d.rmsnorm.0.g", "model.layers.%d.input_layernorm.weight", 1, false},
    {"llama_block.%d.linear.0.w", "model.layers.%d.self_attn.q_proj.weight", 2, true},
    {"llama_block.%d.linear.1.w", "model.layers.%d.self_attn.k_proj.weight", 2, true},
    {"llama_block.%d.linear.2.w", "model.layers.%d.self_attn.v_proj.weight", 2, true},
    {"llama_block.%d.linear.3.w", "model.layers.%d.self_attn.o_proj.weight", 2, true},
    {"llama_block.%d.rmsnorm.1.g", "model.layers.%d.post_attention_layernorm.weight", 1, false},
    {"llama_block.%d.linear.4.w", "model.layers.%d.mlp.gate_proj.weight", 2, true},
    {"llama_block.%d.linear.5.w", "model.layers.%d.mlp.up_proj.weight", 2, true},
    {"llama_block.%d.linear.6.w", "model.layers.%d.mlp.down_proj.weight", 2, true},
    {"rmsnorm.0.g", "model.norm.weight", 1, false},
    {"linear.0.w", "lm_head.weight", 2, true},
};

#define NRULES(t) ((int)(sizeof t / sizeof t[0]))
#define EMBED_RULE 0  // both tables start with the token embedding
#define MAX_LAYERS 100000

typedef struct table {
  const char *name;  // "hf-gpt2"
  const rule *rules;
  int n;
  const char *hf_prefix;  // left out by some files (GPT-2 saved from GPT2Model): optional on input
  const char *ignored[3];  // suffixes of non-parameter buffers older files carry
} table;

static const table TABLES[] = {
    [FMT_HF_GPT2] = {"hf-gpt2", GPT2, NRULES(GPT2), "transformer.",
                     {".attn.bias", ".attn.masked_bias"}},
    [FMT_HF_LLAMA] = {"hf-llama", LLAMA, NRULES(LLAMA), NULL, {".rotary_emb.inv_freq"}},
};

// ---- names ------------------------------------------------------------------------------------

// Matches `name` against `pattern` (at most one "%d", a block index); *layer = -1 without one.
static bool match(const char *pattern, const char *name, int *layer) {
  const char *d = strstr(pattern, "%d");
  *layer = -1;
  if (!d) return strcmp(pattern, name) == 0;
  size_t head = (size_t)(d - pattern);
  if (strncmp(pattern, name, head) != 0) return false;
  const char *p = name + head;
  long v = 0;
  if (*p < '0' || *p > '9' || (*p == '0' && p[1] >= '0' && p[1] <= '9')) return false;
  for (; *p >= '0' && *p <= '9' && v < MAX_LAYERS; p++) v = 10 * v + (*p - '0');
  if (v >= MAX_LAYERS || strcmp(p, d + 2) != 0) return false;
  *layer = (int)v;
  return true;
}

// The name of block `layer` (NAME_N: the block index written as "N", for --help).
#define NAME_N (-2)
static void name_of(const char *pattern, int layer, char *out, size_t n) {
  const char *d = strstr(pattern, "%d");
  if (!d) snprintf(out, n, "%s", pattern);
  else if (layer == NAME_N) snprintf(out, n, "%.*sN%s", (int)(d - pattern), pattern, d + 2);
  else snprintf(out, n, "%.*s%d%s", (int)(d - pattern), pattern, layer, d + 2);
}

static const char *side(const rule *r, bool hf) { return hf ? r->hf : r->dhx; }

// The rule whose name on one side (hf or dhx) matches; NULL when none does.
static const rule *find_rule(const table *t, bool hf, const char *name, int *layer) {
  for (int i = 0; i < t->n; i++)
    if (match(side(&t->rules[i], hf), name, layer)) return &t->rules[i];
  return NULL;
}

static bool has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

// ---- the conversion ---------------------------------------------------------------------------

typedef struct out_tensor {
  char name[160];
  int ndim;
  int64_t shape[2];
  float *data;
  const rule *rule;
  int layer;
} out_tensor;

typedef struct conv {
  const table *t;
  bool to_hf;
  dhx_st_file in;
  out_tensor *out;
  int nout, layers;  // layers: 1 + the largest block index seen
  int moments;       // AdamW moments left out
  char err[2048];
} conv;

static bool cfail(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool cfail(conv *c, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(c->err, sizeof c->err, "%s: %s", c->in.path, msg);
  return false;
}

// A 2-D [rows, cols] matrix transposed into [cols, rows].
static float *transposed(const float *x, int64_t rows, int64_t cols) {
  float *y = malloc((size_t)(rows * cols) * sizeof *y + 1);
  if (!y) return NULL;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) y[j * rows + i] = x[i * cols + j];
  return y;
}

// Reads entry `e` as floats and stores it under `rule`'s name on the output side.
static bool add_tensor(conv *c, const dhx_st_entry *e, const rule *r, int layer) {
  char shape[160];
  dhx_st_shape_text(e->ndim, e->shape, shape, sizeof shape);
  if (e->ndim != r->ndim)
    return cfail(c, "tensor '%s': shape %s, expected %d dimensions", e->name, shape, r->ndim);
  int64_t elems = dhx_st_elems(e);
  float *x = malloc((size_t)elems * sizeof *x + 1);
  if (!x) return cfail(c, "tensor '%s': out of memory", e->name);
  if (!dhx_st_read_f32(&c->in, e, x, c->err, sizeof c->err)) {
    free(x);
    return false;
  }
  out_tensor *o = &c->out[c->nout++];
  name_of(side(r, c->to_hf), layer, o->name, sizeof o->name);
  o->rule = r;
  o->layer = layer;
  o->ndim = e->ndim;
  o->shape[0] = e->shape[0];
  o->shape[1] = e->ndim == 2 ? e->shape[1] : 0;
  o->data = x;
  if (r->transpose) {
    o->data = transposed(x, e->shape[0], e->shape[1]);
    o->shape[0] = e->shape[1];
    o->shape[1] = e->shape[0];
    free(x);
    if (!o->data) return cfail(c, "tensor '%s': out of memory", e->name);
  }
  if (layer + 1 > c->layers) c->layers = layer + 1;
  return true;
}

static const out_tensor *find_out(const conv *c, const rule *r, int layer) {
  for (int i = 0; i < c->nout; i++)
    if (c->out[i].rule == r && c->out[i].layer == layer) return &c->out[i];
  return NULL;
}

// Maps one input entry; AdamW moments (and qWD's master weights: the file's weights are the
// replicas') and known non-parameter buffers are left out.
static bool map_entry(conv *c, const dhx_st_entry *e) {
  const table *t = c->t;
  bool from_hf = !c->to_hf;
  const char *name = e->name;
  if (!from_hf && (has_suffix(name, ".adam_m") || has_suffix(name, ".adam_v") ||
                   has_suffix(name, ".master"))) {
    c->moments++;
    return true;
  }
  for (int i = 0; from_hf && i < 3 && t->ignored[i]; i++)
    if (has_suffix(name, t->ignored[i])) return true;
  char full[512];
  if (from_hf && t->hf_prefix && strncmp(name, t->hf_prefix, strlen(t->hf_prefix)) != 0 &&
      strncmp(name, "lm_head.", 8) != 0) {
    snprintf(full, sizeof full, "%s%s", t->hf_prefix, name);
    name = full;
  }
  int layer;
  const rule *r = find_rule(t, from_hf, name, &layer);
  if (!r)
    return cfail(c, "tensor '%s' is not a parameter of %s (%s)", e->name,
                 from_hf ? t->name : t->rules == GPT2 ? "std.gpt" : "std.llama",
                 from_hf ? "a different architecture, or a variant DHX does not model"
                         : "convert a model of that stdlib module, or pick the other --to");
  if (find_out(c, r, layer)) return cfail(c, "tensor '%s' appears twice", e->name);
  return add_tensor(c, e, r, layer);
}

// A Hugging Face file with a tied head has no lm_head: DHX's head is the embedding, [in, out].
static bool untie_head(conv *c) {
  const rule *head = &c->t->rules[c->t->n - 1], *embed = &c->t->rules[EMBED_RULE];
  const out_tensor *e = find_out(c, embed, -1);
  if (c->to_hf || find_out(c, head, -1) || !e) return true;
  out_tensor *o = &c->out[c->nout++];
  *o = (out_tensor){.ndim = 2, .shape = {e->shape[1], e->shape[0]}, .rule = head, .layer = -1};
  snprintf(o->name, sizeof o->name, "%s", head->dhx);
  o->data = transposed(e->data, e->shape[0], e->shape[1]);
  return o->data || cfail(c, "out of memory");
}

// Every parameter of every block, and every global one, must be there.
static bool check_complete(conv *c) {
  bool from_hf = !c->to_hf;
  for (int i = 0; i < c->t->n; i++) {
    const rule *r = &c->t->rules[i];
    bool per_block = strstr(r->dhx, "%d") != NULL;
    for (int l = per_block ? 0 : -1; l < (per_block ? c->layers : 0); l++) {
      if (find_out(c, r, l)) continue;
      char name[160];
      name_of(side(r, from_hf), l, name, sizeof name);
      return cfail(c, "tensor '%s' is missing", name);
    }
  }
  return true;
}

static bool convert(conv *c, const char *in, const char *out) {
  if (!dhx_st_open(&c->in, in, c->err, sizeof c->err) ||
      !dhx_st_verify(&c->in, c->err, sizeof c->err))
    return false;
  c->out = calloc((size_t)c->in.nentries + 2, sizeof *c->out);
  if (!c->out) return cfail(c, "out of memory");
  for (int i = 0; i < c->in.nentries; i++)
    if (!map_entry(c, &c->in.entries[i])) return false;
  if (c->nout == 0) return cfail(c, "no tensors to convert");
  if (!untie_head(c) || !check_complete(c)) return false;
  dhx_st_tensor *t = calloc((size_t)c->nout, sizeof *t);
  if (!t) return cfail(c, "out of memory");
  for (int i = 0; i < c->nout; i++) {
    const out_tensor *o = &c->out[i];
    t[i] = (dhx_st_tensor){.name = o->name, .dtype = "F32", .ndim = o->ndim, .data = o->data,
                           .shape = {o->shape[0], o->shape[1]},
                           .nbytes = 4 * o->shape[0] * (o->ndim == 2 ? o->shape[1] : 1)};
  }
  // Hugging Face's loaders want format "pt"; a DHX file says where it came from.
  dhx_st_pair hf[] = {{"format", "pt"}};
  dhx_st_pair dhx[] = {{"format", "dhx"}, {"converted_from", c->t->name}};
  bool ok = c->to_hf ? dhx_st_write(out, hf, 1, t, c->nout, c->err, sizeof c->err)
                     : dhx_st_write(out, dhx, 2, t, c->nout, c->err, sizeof c->err);
  free(t);
  return ok;
}

static void conv_free(conv *c) {
  for (int i = 0; i < c->nout; i++) free(c->out[i].data);
  free(c->out);
  dhx_st_close(&c->in);
}

// ---- the command line -------------------------------------------------------------------------

static bool parse_format(const char *s, format *f) {
  static const char *names[] = {"dhx", "hf-gpt2", "hf-llama"};
  for (int i = 0; i < 3; i++)
    if (s && strcmp(s, names[i]) == 0) {
      *f = (format)i;
      return true;
    }
  return false;
}

static const char USAGE[] =
    "usage: dhxc convert --from dhx --to hf-gpt2|hf-llama IN.safetensors OUT.safetensors\n"
    "       dhxc convert --from hf-gpt2|hf-llama --to dhx IN.safetensors OUT.safetensors\n";

// --help: the usage and both name tables, from the tables themselves.
static void help(FILE *f) {
  fprintf(f, "%s\nDHX stores matrices [in, out]; (T) marks those Hugging Face stores [out, in] "
          "(nn.Linear),\nwhich are transposed. N is a block index. AdamW moments are left out; "
          "an input without\nlm_head has its head tied to the embedding. F32, BF16 and F16 are "
          "read; F32 is written.\n", USAGE);
  for (format fmt = FMT_HF_GPT2; fmt <= FMT_HF_LLAMA; fmt++) {
    const table *t = &TABLES[fmt];
    fprintf(f, "\n%s (std.%s):\n", t->name, fmt == FMT_HF_GPT2 ? "gpt" : "llama");
    for (int i = 0; i < t->n; i++) {
      char dhx[96], hf[160];
      name_of(t->rules[i].dhx, NAME_N, dhx, sizeof dhx);
      name_of(t->rules[i].hf, NAME_N, hf, sizeof hf);
      fprintf(f, "  %-28s %s%s\n", dhx, hf, t->rules[i].transpose ? " (T)" : "");
    }
  }
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "dhxc convert: error: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n%s", USAGE);
  return 2;
}

int dhx_convert_main(int argc, char **argv) {
  const char *from = NULL, *to = NULL, *files[2] = {0};
  int nfiles = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      help(stdout);
      return 0;
    }
    if (strcmp(a, "--from") == 0 && i + 1 < argc) from = argv[++i];
    else if (strcmp(a, "--to") == 0 && i + 1 < argc) to = argv[++i];
    else if (a[0] == '-' && a[1]) return usage_error("unknown option '%s'", a);
    else if (nfiles == 2) return usage_error("more than two files ('%s')", a);
    else files[nfiles++] = a;
  }
  format f, g;
  if (!from || !to) return usage_error("--from and --to say what to convert");
  if (!parse_format(from, &f))
    return usage_error("--from takes dhx, hf-gpt2 or hf-llama (got '%s')", from);
  if (!parse_format(to, &g))
    return usage_error("--to takes dhx, hf-gpt2 or hf-llama (got '%s')", to);
  if ((f == FMT_DHX) == (g == FMT_DHX))
    return usage_error("one side of a conversion is dhx (got --from %s)", from);
  if (nfiles != 2) return usage_error("give IN.safetensors and OUT.safetensors");
  conv c = {.t = &TABLES[f == FMT_DHX ? g : f], .to_hf = f == FMT_DHX};
  bool ok = convert(&c, files[0], files[1]);
  if (!ok) fprintf(stderr, "dhxc convert: error: %s\n", c.err);
  if (ok && c.to_hf)
    fprintf(stderr, "dhxc convert: %s: %d tensors of %d blocks%s; DHX's output head is its own "
            "parameter: load with tie_word_embeddings false\n", files[1], c.nout, c.layers,
            c.moments ? " (AdamW moments left out)" : "");
  conv_free(&c);
  return ok ? 0 : 1;
}
