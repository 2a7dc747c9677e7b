// kernel_quant.c — communication compression (SDP4Bit; docs/compression.md): symmetric
// group-wise quantization of floats into codes packed in i32 words, the 32-point orthonormal
// Walsh–Hadamard transform, and the fusions the compressed exchanges need. One group per
// kernel index; the format is kernel_spec.h's.
//
// A group is a row (DHX_KS_ROWS, ir_rows.c): on the host one thread walks its chunks; in the
// PTX a warp runs it, lane l taking chunks l, l+32, ... (a chunk is whole words, so no two
// lanes write one word), the group's max and its NaN sentinel combined across the warp, the
// scale written by lane 0. A max and a sum of +0/NaN partials are the same in any order, so
// the GPU's scales and codes are the host's bit for bit.
//
// A group is read in chunks (8 elements, or one 32-element Hadamard block) held in SSA
// values: a chunk is whole words at either bit width, so packing and unpacking are
// straight-line code and the transform is 80 butterflies on registers. The bit width is a
// run-time argument, but each kernel is emitted once per width (a branch on per_word), so
// shifts and masks are constants. Quantizing takes two passes over the group (the scale needs
// the group's max first); the second recomputes each chunk (reload, re-sum, re-transform)
// rather than keeping the group anywhere.
#include "codegen_internal.h"

#define CHUNK 8       // elements per chunk without the transform: a word of 4-bit codes
#define BLOCK 32      // elements per Hadamard block
#define MAX_CHUNK BLOCK

// ---- integers ----

static LLVMValueRef i32c(kb *k, int v) { return LLVMConstInt(k->i32, (unsigned long long)v, 1); }
static LLVMValueRef u64c(kb *k, uint64_t v) { return LLVMConstInt(k->i64, v, 0); }
static LLVMValueRef ieq(kb *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(k->b, LLVMIntEQ, a, b, "");
}
static LLVMValueRef ile(kb *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(k->b, LLVMIntSLE, a, b, "");
}
static LLVMValueRef nonzero(kb *k, LLVMValueRef v) {
  return LLVMBuildICmp(k->b, LLVMIntNE, v, kb_i64c(k, 0), "");
}
static LLVMValueRef both(kb *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAnd(k->b, a, b, "");
}
static LLVMValueRef iplus(kb *k, LLVMValueRef a, int64_t c) { return kb_iadd(k, a, kb_i64c(k, c)); }

// G is a positive multiple of n.
static LLVMValueRef whole_chunks(kb *k, LLVMValueRef G, int n) {
  LLVMValueRef pos = LLVMBuildICmp(k->b, LLVMIntSGT, G, kb_i64c(k, 0), "");
  return both(k, pos, ieq(k, LLVMBuildSRem(k->b, G, kb_i64c(k, n), ""), kb_i64c(k, 0)));
}

// ---- the counter-based generator ----

// splitmix64's output function.
static LLVMValueRef mix64(kb *k, LLVMValueRef z) {
  static const uint64_t mul[2] = {0xBF58476D1CE4E5B9ULL, 0x94D049BB133111EBULL};
  static const int shift[3] = {30, 27, 31};
  for (int i = 0; i < 3; i++) {
    z = LLVMBuildXor(k->b, z, LLVMBuildLShr(k->b, z, u64c(k, (uint64_t)shift[i]), ""), "");
    if (i < 2) z = LLVMBuildMul(k->b, z, u64c(k, mul[i]), "");
  }
  return z;
}

// u in [0, 1): output `counter` of the splitmix64 stream `seed`. No state: every element's
// number is computed where it is needed, on any target and in any order, so a plan's seed
// makes the roundings reproducible.
static LLVMValueRef uniform(kb *k, LLVMValueRef seed, LLVMValueRef counter) {
  LLVMValueRef step = LLVMBuildMul(k->b, iplus(k, counter, 1), u64c(k, 0x9E3779B97F4A7C15ULL), "");
  LLVMValueRef h = mix64(k, kb_iadd(k, seed, step));
  bool f64 = k->type == DHX_KT_F64;  // as many bits as the fraction holds exactly
  LLVMValueRef top = LLVMBuildLShr(k->b, h, u64c(k, f64 ? 11 : 40), "");
  return kb_mul(k, LLVMBuildUIToFP(k->b, top, k->f, ""), kb_fc(k, f64 ? 0x1p-53 : 0x1p-24));
}

// ---- codes ----

typedef struct quantizer {
  int bits;
  LLVMValueRef qmax;        // 2^(bits-1) - 1 as k->f
  LLVMValueRef stochastic;  // i1
  LLVMValueRef seed;        // i64
  LLVMValueRef counter0;    // i64: the counter of the group's element 0
} quantizer;

static quantizer make_quantizer(kb *k, int bits, LLVMValueRef stochastic, LLVMValueRef seed,
                                LLVMValueRef offset, LLVMValueRef first) {
  return (quantizer){bits, kb_fc(k, (double)((1 << (bits - 1)) - 1)), nonzero(k, stochastic),
                     seed, kb_iadd(k, offset, first)};
}

// The code (i32) of value v, element e of the group. The clamp also maps NaN to a code (minnum
// returns the number), so the conversion is always defined.
static LLVMValueRef code_of(kb *k, const quantizer *q, LLVMValueRef v, LLVMValueRef scale,
                            LLVMValueRef e) {
  LLVMValueRef pos = LLVMBuildFCmp(k->b, LLVMRealOGT, scale, kb_fc(k, 0.0), "");
  LLVMValueRef t = kb_select(k, pos, kb_div(k, v, scale), kb_fc(k, 0.0));
  LLVMValueRef u = uniform(k, q->seed, kb_iadd(k, q->counter0, e));
  LLVMValueRef r = kb_select(k, q->stochastic, kb_floor(k, kb_add(k, t, u)), kb_rint(k, t));
  r = kb_maxnum(k, kb_minnum(k, r, q->qmax), kb_neg(k, q->qmax));
  return LLVMBuildFPToSI(k->b, r, k->i32, "");
}

// codes[0 .. n) into one word, code c at bits [c*bits, (c+1)*bits).
static LLVMValueRef pack(kb *k, int bits, const LLVMValueRef *code, int n) {
  LLVMValueRef w = i32c(k, 0), mask = i32c(k, (1 << bits) - 1);
  for (int c = 0; c < n; c++) {
    LLVMValueRef m = LLVMBuildAnd(k->b, code[c], mask, "");
    w = LLVMBuildOr(k->b, w, LLVMBuildShl(k->b, m, i32c(k, c * bits), ""), "");
  }
  return w;
}

// Code c of word (i32), sign-extended, as k->f.
static LLVMValueRef unpack(kb *k, int bits, LLVMValueRef word, int c) {
  LLVMValueRef up = LLVMBuildShl(k->b, word, i32c(k, 32 - bits * (c + 1)), "");
  return LLVMBuildSIToFP(k->b, LLVMBuildAShr(k->b, up, i32c(k, 32 - bits), ""), k->f, "");
}

// ---- the transform ----

// v[0 .. 32) ← H32 v / sqrt(32): the fast Walsh–Hadamard butterflies (Sylvester order), then
// one scaling, so the transform is orthonormal and its own inverse.
static void hadamard32(kb *k, LLVMValueRef *v) {
  for (int h = 1; h < BLOCK; h *= 2)
    for (int i = 0; i < BLOCK; i += 2 * h)
      for (int j = i; j < i + h; j++) {
        LLVMValueRef a = v[j], b = v[j + h];
        v[j] = kb_add(k, a, b);
        v[j + h] = kb_sub(k, a, b);
      }
  LLVMValueRef norm = kb_fc(k, 0.17677669529663688110);  // 1/sqrt(32)
  for (int i = 0; i < BLOCK; i++) v[i] = kb_mul(k, v[i], norm);
}

// ---- where a group's values come from ----

typedef struct source {
  bool packed;
  bool hadamard;        // chunks are blocks, transformed after reading
  // floats: x[first + e] - ref[first + e] (ref NULL: x alone)
  LLVMValueRef x, ref, first;
  // packed: sum over q < p of code_e * scale of input q, whose words of this group start at
  // codes[word0 + q*word_stride] and whose scale is scales[scale0 + q*scale_stride]
  LLVMValueRef codes, scales, word0, scale0, word_stride, scale_stride, p;
  int bits;
} source;

static int chunk_of(const source *s) { return s->hadamard ? BLOCK : CHUNK; }

// for (e = first chunk of this thread; e < G; e += chunk · threads): the group's chunks this
// thread takes (all of them on the host); G is a positive multiple of the chunk.
static LLVMValueRef chunks_begin(kb *k, kb_loop *L, LLVMValueRef G, int chunk, const char *name) {
  LLVMValueRef n = LLVMBuildSDiv(k->b, G, kb_i64c(k, chunk), "chunks");
  return kb_imul(k, kb_row_loop_begin(k, L, kb_i64c(k, 0), n, name), kb_i64c(k, chunk));
}

static void fill_floats(kb *k, const source *s, LLVMValueRef e, int n, LLVMValueRef *v) {
  LLVMValueRef i0 = kb_iadd(k, s->first, e);
  for (int c = 0; c < n; c++) {
    LLVMValueRef i = iplus(k, i0, c);
    v[c] = kb_load_s(k, s->x, i);
    if (s->ref) v[c] = kb_sub(k, v[c], kb_load_s(k, s->ref, i));
  }
}

static void fill_packed(kb *k, const source *s, LLVMValueRef e, int n, LLVMValueRef *v) {
  int pw = 32 / s->bits;
  LLVMValueRef acc[MAX_CHUNK];
  for (int c = 0; c < n; c++) acc[c] = kb_var(k, k->f, kb_fc(k, 0.0));
  LLVMValueRef w0 = kb_iadd(k, s->word0, LLVMBuildSDiv(k->b, e, kb_i64c(k, pw), ""));
  kb_loop L;
  LLVMValueRef q = kb_loop_begin(k, &L, kb_i64c(k, 0), s->p, "inputs");
  LLVMValueRef scale =
      kb_load_s(k, s->scales, kb_iadd(k, s->scale0, kb_imul(k, q, s->scale_stride)));
  LLVMValueRef wq = kb_iadd(k, w0, kb_imul(k, q, s->word_stride));
  for (int w = 0; w < n / pw; w++) {
    LLVMValueRef word = LLVMBuildTrunc(k->b, kb_load_i32(k, s->codes, iplus(k, wq, w)), k->i32, "");
    for (int c = 0; c < pw; c++) {
      LLVMValueRef a = acc[w * pw + c];
      kb_set(k, a, kb_add(k, kb_get(k, a), kb_mul(k, unpack(k, s->bits, word, c), scale)));
    }
  }
  kb_loop_end(k, &L, false);
  for (int c = 0; c < n; c++) v[c] = kb_get(k, acc[c]);
}

// The values of the group's elements [e, e + chunk).
static void fill(kb *k, const source *s, LLVMValueRef e, LLVMValueRef *v) {
  int n = chunk_of(s);
  if (s->packed) fill_packed(k, s, e, n, v);
  else fill_floats(k, s, e, n, v);
  if (s->hadamard) hadamard32(k, v);
}

// ---- where they go ----

// The group's G values quantized: codes[word0 ...] and scales[g].
static void quantize_group(kb *k, const source *s, const quantizer *q, LLVMValueRef G,
                           LLVMValueRef codes, LLVMValueRef word0, LLVMValueRef scales,
                           LLVMValueRef g) {
  int n = chunk_of(s), pw = 32 / q->bits;
  LLVMValueRef v[MAX_CHUNK];
  LLVMValueRef amax = kb_var(k, k->f, kb_fc(k, 0.0)), poison = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef e = chunks_begin(k, &L, G, n, "amax");
  fill(k, s, e, v);
  LLVMValueRef m = kb_get(k, amax), z = kb_get(k, poison);
  for (int c = 0; c < n; c++) {
    m = kb_maxnum(k, m, kb_fabs(k, v[c]));
    z = kb_add(k, z, kb_mul(k, v[c], kb_fc(k, 0.0)));
  }
  kb_set(k, amax, m);
  kb_set(k, poison, z);
  kb_row_loop_end(k, &L, false);
  // v*0 is NaN exactly for NaN and infinities: such a group's scale is NaN, so all of it
  // dequantizes to NaN and an overflow stays visible after the exchange.
  LLVMValueRef scale = kb_add(k, kb_div(k, kb_row_max(k, kb_get(k, amax)), q->qmax),
                              kb_row_sum(k, kb_get(k, poison)));
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_s(k, scale, scales, g);
  kb_row_owner_end(k, &lead);

  kb_loop W;
  e = chunks_begin(k, &W, G, n, "codes");
  fill(k, s, e, v);
  LLVMValueRef wbase = kb_iadd(k, word0, LLVMBuildSDiv(k->b, e, kb_i64c(k, pw), ""));
  for (int w = 0; w < n / pw; w++) {
    LLVMValueRef code[8];
    for (int c = 0; c < pw; c++)
      code[c] = code_of(k, q, v[w * pw + c], scale, iplus(k, e, w * pw + c));
    kb_store_i32(k, pack(k, q->bits, code, pw), codes, iplus(k, wbase, w));
  }
  kb_row_loop_end(k, &W, false);
}

static void store_pass(kb *k, const source *s, LLVMValueRef G, LLVMValueRef out,
                       LLVMValueRef first, bool acc) {
  int n = chunk_of(s);
  LLVMValueRef v[MAX_CHUNK];
  kb_loop L;
  LLVMValueRef e = chunks_begin(k, &L, G, n, acc ? "add" : "store");
  fill(k, s, e, v);
  LLVMValueRef i0 = kb_iadd(k, first, e);
  for (int c = 0; c < n; c++) {
    LLVMValueRef i = iplus(k, i0, c);
    kb_store_s(k, acc ? kb_add(k, kb_load_s(k, out, i), v[c]) : v[c], out, i);
  }
  kb_row_loop_end(k, &L, false);
}

// out[first + e] (+)= the group's values (acc: an i1, or NULL to overwrite). The pass is
// emitted once per case so that the overwriting one never reads out.
static void store_group(kb *k, const source *s, LLVMValueRef G, LLVMValueRef out,
                        LLVMValueRef first, LLVMValueRef acc) {
  if (!acc) {
    store_pass(k, s, G, out, first, false);
    return;
  }
  kb_if a;
  kb_if_begin(k, &a, acc);
  store_pass(k, s, G, out, first, true);
  kb_if_else(k, &a);
  store_pass(k, s, G, out, first, false);
  kb_if_end(k, &a);
}

// ---- kernels ----

// Emits fn(k, ctx, bits) under `per_word == 32/bits` for each width (4 and 8 bits); any other
// per_word runs neither, leaving the group as it was.
typedef void (*bits_fn)(kb *k, void *ctx, int bits);
static void per_bits(kb *k, LLVMValueRef per_word, bits_fn fn, void *ctx) {
  static const int BITS[] = {4, 8};
  for (int i = 0; i < 2; i++) {
    kb_if s;
    kb_if_begin(k, &s, ieq(k, per_word, kb_i64c(k, 32 / BITS[i])));
    fn(k, ctx, BITS[i]);
    kb_if_end(k, &s);
  }
}

typedef struct kctx {
  LLVMValueRef *a, g;
  int bits_in;  // DEQUANTIZE_REDUCE_QUANTIZE: the inputs' width, chosen first
} kctx;

// The elements of a group of `words` words of `bits`-bit codes.
static LLVMValueRef group_elems(kb *k, LLVMValueRef words, int bits) {
  return kb_imul(k, words, kb_i64c(k, 32 / bits));
}

// QUANTIZE and HADAMARD_QUANTIZE share this: x (minus ref) quantized, transformed or not.
static void quantize_floats(kb *k, const kctx *c, int bits, bool hadamard, LLVMValueRef x,
                            LLVMValueRef ref, LLVMValueRef words, LLVMValueRef *rng) {
  LLVMValueRef *a = c->a, G = group_elems(k, words, bits);
  kb_if ok;
  kb_if_begin(k, &ok, whole_chunks(k, G, hadamard ? BLOCK : CHUNK));
  source s = {.hadamard = hadamard, .x = x, .ref = ref, .first = kb_imul(k, c->g, G)};
  quantizer q = make_quantizer(k, bits, rng[0], rng[1], rng[2], s.first);
  quantize_group(k, &s, &q, G, a[0], kb_imul(k, c->g, words), a[1], c->g);
  kb_if_end(k, &ok);
}

// (codes, scales, x, ref, words, per_word, subtract, stochastic, seed, offset)
static void quantize_bits(kb *k, void *ctx, int bits) {
  const kctx *c = ctx;
  LLVMValueRef *a = c->a;
  kb_if sub;
  kb_if_begin(k, &sub, nonzero(k, a[6]));
  quantize_floats(k, c, bits, false, a[2], a[3], a[4], a + 7);
  kb_if_else(k, &sub);
  quantize_floats(k, c, bits, false, a[2], NULL, a[4], a + 7);
  kb_if_end(k, &sub);
}

void dhx_emit_quantize(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef g,
                       LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[5], quantize_bits, &c);
}

// (codes, scales, x, words, per_word, stochastic, seed, offset)
static void hadamard_quantize_bits(kb *k, void *ctx, int bits) {
  const kctx *c = ctx;
  quantize_floats(k, c, bits, true, c->a[2], NULL, c->a[3], c->a + 5);
}

void dhx_emit_hadamard_quantize(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef g,
                                LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[4], hadamard_quantize_bits, &c);
}

// DEQUANTIZE and DEQUANTIZE_HADAMARD: (out, codes, scales, words, per_word, accumulate)
static void dequantize_group(kb *k, const kctx *c, int bits, bool hadamard) {
  LLVMValueRef *a = c->a, G = group_elems(k, a[3], bits);
  kb_if ok;
  kb_if_begin(k, &ok, whole_chunks(k, G, hadamard ? BLOCK : CHUNK));
  source s = {.packed = true, .hadamard = hadamard, .codes = a[1], .scales = a[2],
              .word0 = kb_imul(k, c->g, a[3]), .scale0 = c->g, .word_stride = kb_i64c(k, 0),
              .scale_stride = kb_i64c(k, 0), .p = kb_i64c(k, 1), .bits = bits};
  store_group(k, &s, G, a[0], kb_imul(k, c->g, G), nonzero(k, a[5]));
  kb_if_end(k, &ok);
}

static void dequantize_bits(kb *k, void *ctx, int bits) { dequantize_group(k, ctx, bits, false); }
static void dequantize_hadamard_bits(kb *k, void *ctx, int bits) {
  dequantize_group(k, ctx, bits, true);
}

void dhx_emit_dequantize(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef g,
                         LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[4], dequantize_bits, &c);
}

void dhx_emit_dequantize_hadamard(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                  LLVMValueRef g, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[4], dequantize_hadamard_bits, &c);
}

// (out, x, G)
void dhx_emit_hadamard32(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef g,
                         LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef G = a[2];
  kb_if ok;
  kb_if_begin(k, &ok, whole_chunks(k, G, BLOCK));
  source src = {.hadamard = true, .x = a[1], .first = kb_imul(k, g, G)};
  store_group(k, &src, G, a[0], src.first, NULL);  // each block is read before it is written
  kb_if_end(k, &ok);
}

// The p inputs of the reduce kernels: group g of every row, if the rows hold it.
static source reduce_inputs(kb *k, LLVMValueRef g, LLVMValueRef codes, LLVMValueRef scales,
                            LLVMValueRef p, LLVMValueRef row_words, LLVMValueRef row_groups,
                            LLVMValueRef words, int bits, LLVMValueRef *inside) {
  *inside = both(k, kb_ilt(k, g, row_groups), ile(k, kb_imul(k, iplus(k, g, 1), words), row_words));
  return (source){.packed = true, .codes = codes, .scales = scales,
                  .word0 = kb_imul(k, g, words), .scale0 = g, .word_stride = row_words,
                  .scale_stride = row_groups, .p = p, .bits = bits};
}

// (codes_out, scales_out, codes_in, scales_in, p, row_words, row_groups, words_in,
//  per_word_in, words_out, per_word_out, stochastic, seed, offset)
static void reduce_quantize_bits(kb *k, void *ctx, int bits_out) {
  const kctx *c = ctx;
  LLVMValueRef *a = c->a, g = c->g, inside;
  LLVMValueRef G = group_elems(k, a[7], c->bits_in);
  source s = reduce_inputs(k, g, a[2], a[3], a[4], a[5], a[6], a[7], c->bits_in, &inside);
  LLVMValueRef same = ieq(k, G, group_elems(k, a[9], bits_out));
  kb_if ok;
  kb_if_begin(k, &ok, both(k, both(k, inside, same), whole_chunks(k, G, CHUNK)));
  quantizer q = make_quantizer(k, bits_out, a[11], a[12], a[13], kb_imul(k, g, G));
  quantize_group(k, &s, &q, G, a[0], kb_imul(k, g, a[9]), a[1], g);
  kb_if_end(k, &ok);
}

static void reduce_quantize_in(kb *k, void *ctx, int bits_in) {
  kctx *c = ctx;
  c->bits_in = bits_in;
  per_bits(k, c->a[10], reduce_quantize_bits, c);
}

void dhx_emit_dequantize_reduce_quantize(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                         LLVMValueRef g, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[8], reduce_quantize_in, &c);
}

// (out, codes_in, scales_in, p, row_words, row_groups, words, per_word, accumulate)
static void reduce_hadamard_bits(kb *k, void *ctx, int bits) {
  const kctx *c = ctx;
  LLVMValueRef *a = c->a, g = c->g, inside;
  LLVMValueRef G = group_elems(k, a[6], bits);
  source s = reduce_inputs(k, g, a[1], a[2], a[3], a[4], a[5], a[6], bits, &inside);
  s.hadamard = true;
  kb_if ok;
  kb_if_begin(k, &ok, both(k, inside, whole_chunks(k, G, BLOCK)));
  store_group(k, &s, G, a[0], kb_imul(k, g, G), nonzero(k, a[8]));
  kb_if_end(k, &ok);
}

void dhx_emit_dequantize_reduce_hadamard(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                         LLVMValueRef g, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  kctx c = {a, g, 0};
  per_bits(k, a[7], reduce_hadamard_bits, &c);
}
