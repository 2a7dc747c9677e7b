// test_bf16.c — mixed-precision kernels: a kernel whose floating pointers are stored as bf16
// computes in f32 exactly as the f32 kernel does, so its results are the f32 kernel's results
// on the same bf16 inputs, each rounded once to bf16 (nearest even). For every kind of the
// catalogue and the fused elementwise specs, with every floating pointer bf16 (except those a
// kind must keep f32, dhx_kernel_f32_only) and then with only the outputs bf16, this runs both
// kernels on random data and requires those bits. The rounding itself is checked against a
// plain C reference on edge values (ties, overflow, NaN, subnormals), through a copy kernel.
// The variants' names and table entries (2-byte elements) and the rule that some arguments
// must stay f32 are checked too. The PTX of the variants is ptxas-checked by test_ptx.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"
#include "plan_util.h"

#define VOCAB 8

// bf16 of an f32: round to nearest even; NaN keeps its sign and top payload, quieted.
static uint16_t bf16_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float f32_of(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// One launch of a kind: its index space and its i64 and floating scalar arguments, in
// signature order (values for the pointer positions are ignored).
typedef struct launch {
  dhx_kernel_kind kind;
  int64_t n;
  double a[DHX_MAX_ARGS];
} launch;

static const launch LAUNCHES[] = {
    {DHX_K_EMBED_FWD, 6, {0, 0, 0, 16}},
    {DHX_K_EMBED_BWD, 16, {0, 0, 0, 6, 16}},
    {DHX_K_LAYERNORM_FWD, 5, {0, 0, 0, 0, 0, 0, 40, 1e-5}},
    {DHX_K_LAYERNORM_BWD_DX, 5, {0, 0, 0, 0, 0, 0, 40, 1}},
    {DHX_K_LAYERNORM_BWD_DPARAMS, 40, {0, 0, 0, 0, 0, 0, 5, 40}},
    {DHX_K_SOFTMAX_CAUSAL_FWD, 24, {0, 0, 12, 0.3}},
    {DHX_K_SOFTMAX_CAUSAL_BWD, 24, {0, 0, 0, 12, 0.3}},
    {DHX_K_XENT_FWD, 6, {0, 0, 0, 20}},
    {DHX_K_XENT_BWD, 6, {0, 0, 0, 20, 0.25}},
    {DHX_K_ADAMW, 50, {0, 0, 0, 0, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.25}},
    {DHX_K_SUMSQ, 4, {0, 0, 50, 13}},
    {DHX_K_COLSUM, 16, {0, 0, 5, 16, 1}},
    {DHX_K_RMSNORM_FWD, 5, {0, 0, 0, 0, 40, 1e-5}},
    {DHX_K_RMSNORM_BWD_DX, 5, {0, 0, 0, 0, 0, 40, 0}},
    {DHX_K_RMSNORM_BWD_DGAMMA, 40, {0, 0, 0, 0, 5, 40}},
    {DHX_K_ROPE, 64, {0, 0, 4, 32, 16, 10000, 1}},
    {DHX_K_PERMUTE, 24, {0, 0, 4, 3, 8}},
    {DHX_K_EMBED_VP_FWD, 6, {0, 0, 0, 16, 2, 5}},
    {DHX_K_EMBED_VP_BWD, 16, {0, 0, 0, 6, 16, 2, 5}},
    {DHX_K_XENT_VP_STATS, 6, {0, 0, 0, 10, 3, 3, 6}},
    {DHX_K_XENT_VP_COMBINE, 6, {0, 0, 0, 0, 6, 6, 3, 20}},
    {DHX_K_XENT_VP_BWD, 6, {0, 0, 0, 0, 10, 3, 0.25}},
    {DHX_K_QUANTIZE, 4, {0, 0, 0, 0, 4, 8, 1, 0, 7, 0}},
    {DHX_K_DEQUANTIZE, 4, {0, 0, 0, 4, 8, 1}},
    {DHX_K_HADAMARD32, 3, {0, 0, 32}},
    {DHX_K_HADAMARD_QUANTIZE, 3, {0, 0, 0, 4, 8, 0, 7, 0}},
    {DHX_K_DEQUANTIZE_HADAMARD, 3, {0, 0, 0, 4, 8, 0}},
    {DHX_K_DEQUANTIZE_REDUCE_QUANTIZE, 3, {0, 0, 0, 0, 2, 12, 3, 4, 8, 4, 8, 0, 7, 0}},
    {DHX_K_DEQUANTIZE_REDUCE_HADAMARD, 3, {0, 0, 0, 2, 12, 3, 4, 8, 1}},
    {DHX_K_GRAD_NORM, 1, {0, 0, 0, 5, 1.0}},
    // B = 2, S = 6, H = 4, G = 2, hs = 8, separate projections (qs = H·hs, ks = G·hs)
    {DHX_K_ATTN_FWD, 48, {0, 0, 0, 0, 0, 6, 4, 2, 8, 32, 16, 0, 0.35}},
    {DHX_K_ATTN_BWD_DOT, 48, {0, 0, 0, 6, 4, 8}},
    {DHX_K_ATTN_BWD_DQ, 48, {0, 0, 0, 0, 0, 0, 0, 6, 4, 2, 8, 32, 16, 1, 0.35}},
    {DHX_K_ATTN_BWD_DKV, 24, {0, 0, 0, 0, 0, 0, 0, 0, 6, 4, 2, 8, 32, 16, 3, 0.35}},
};

static bool is_quant(dhx_kernel_kind k) {
  return k >= DHX_K_QUANTIZE && k <= DHX_K_DEQUANTIZE_REDUCE_HADAMARD;
}

// The arrays of one run: each pointer argument's elements, as many as its access extent.
typedef struct run_data {
  void *p[DHX_MAX_ARGS];
  int64_t elems[DHX_MAX_ARGS];
} run_data;

// Fills the arguments of a launch of spec s (table entry e) from `seed`, the same values
// whatever the element types: a floating array that s stores as bf16 gets those values
// rounded, and one that `round_mask` names holds them rounded in f32 (the f32 run's inputs).
static void make(const launch *L, const dhx_kernel_spec *s, const dhx_plan_kernel *e,
                 unsigned seed, uint32_t round_mask, run_data *d, dhx_slot *args) {
  dhx_plan_instr in;
  memset(&in, 0, sizeof in);
  in.n = L->n;
  in.nargs = e->nargs;
  for (uint32_t j = 0; j < e->nargs; j++)
    if (e->arg_types[j] == DHX_KARG_I64)
      in.args[j] = (dhx_plan_arg){.kind = DHX_ARG_I64, .i = (int64_t)L->a[j]};
  uint32_t floats = dhx_kernel_float_pointers(s);
  rng_seed(seed);
  for (uint32_t j = 0; j < e->nargs; j++) {
    if (e->arg_types[j] == DHX_KARG_I64) {
      args[j].i = (int64_t)L->a[j];
      continue;
    }
    if (e->arg_types[j] != DHX_KARG_PTR) {
      args[j].f = L->a[j];
      continue;
    }
    int64_t n = 0;
    CHECK(dhx_access_extent(&e->access[j], &in, VOCAB, &n), "%s: extent of argument %u",
          e->name, j);
    n += 1;  // never a zero-sized allocation
    d->elems[j] = n;
    d->p[j] = calloc((size_t)n, 4);
    for (int64_t i = 0; i < n; i++) {
      if (!(floats & (1u << j))) {  // i32: ids below the vocabulary, or any code word
        int32_t v = is_quant(s->kind) ? (int32_t)(rng_uniform(0, 1) * 4294967296.0 - 2147483648.0)
                                      : rng_int(VOCAB);
        ((int32_t *)d->p[j])[i] = v;
        continue;
      }
      float v = (float)rng_uniform(-1.5, 1.5);
      if (s->kind == DHX_K_ADAMW && j == 3) v = fabsf(v);  // the second moment
      if (s->bf16 & (1u << j)) ((uint16_t *)d->p[j])[i] = bf16_of(v);
      else ((float *)d->p[j])[i] = round_mask & (1u << j) ? f32_of(bf16_of(v)) : v;
    }
    args[j].p = d->p[j];
  }
}

static void release(run_data *d) {
  for (int j = 0; j < DHX_MAX_ARGS; j++) free(d->p[j]);
  memset(d, 0, sizeof *d);
}

static void run(cgt *t, const dhx_kernel_spec *s, int64_t n, dhx_slot *args) {
  cgt_run_split(cgt_fn(t, s), args, n, 1, 0);
}

// The bf16 variant v of f32 spec s against s itself on v's rounded inputs.
static void compare(cgt *t, const launch *L, const dhx_kernel_spec *s, int si,
                    const dhx_kernel_spec *v, int vi, unsigned seed) {
  dhx_plan_kernel es, ev;
  dhx_codegen_table_entry(t->cg, si, &es);
  dhx_codegen_table_entry(t->cg, vi, &ev);
  run_data want, got;
  memset(&want, 0, sizeof want);
  memset(&got, 0, sizeof got);
  dhx_slot wa[DHX_MAX_ARGS], ga[DHX_MAX_ARGS];
  make(L, s, &es, seed, v->bf16, &want, wa);
  make(L, v, &ev, seed, 0, &got, ga);
  run(t, s, L->n, wa);
  run(t, v, L->n, ga);
  for (uint32_t j = 0; j < ev.nargs; j++) {
    if (ev.arg_types[j] != DHX_KARG_PTR) continue;
    CHECK(ev.access[j].elem_bytes == ((v->bf16 >> j) & 1 ? 2u : 4u), "%s: argument %u has %u-byte "
          "elements", ev.name, j, ev.access[j].elem_bytes);
    for (int64_t i = 0; i < got.elems[j]; i++) {
      uint32_t w, g;
      if (v->bf16 & (1u << j)) {
        w = bf16_of(((float *)want.p[j])[i]);
        g = ((uint16_t *)got.p[j])[i];
      } else {
        memcpy(&w, (char *)want.p[j] + 4 * i, 4);
        memcpy(&g, (char *)got.p[j] + 4 * i, 4);
      }
      CHECK(w == g, "%s: argument %u element %lld is 0x%x, the f32 kernel's rounded 0x%x",
            ev.name, j, (long long)i, g, w);
    }
  }
  release(&want);
  release(&got);
}

// The fused elementwise specs of the comparison, as launches over 40 elements.
static int eltwise_specs(dhx_kernel_spec *out) {
  int n = 0;
  out[n++] = spec_bias_gelu(DHX_KT_F32, 8);
  out[n++] = spec_pos_add(DHX_KT_F32, 12);
  out[n++] = spec_gelu_grad(DHX_KT_F32, true);
  out[n++] = spec_silu_grad(DHX_KT_F32, false);
  out[n++] = spec_mix(DHX_KT_F32, true);
  out[n++] = spec_two_mods(DHX_KT_F32, 8, 12);
  return n;
}

// out = x, one f32 and one bf16 side: the conversions alone, on edge values.
static dhx_kernel_spec copy_spec(uint16_t bf16) {
  cgt_ew b;
  ew_init(&b, DHX_KT_F32);
  ew_store(&b, ew_load(&b, 0), false);
  b.k.bf16 = bf16;
  return b.k;
}

static void check_conversions(cgt *t) {
  dhx_kernel_spec narrow = copy_spec(1), widen = copy_spec(2), both = copy_spec(3);
  // Every bf16 bit pattern widens exactly, and rounds back to itself (NaNs quieted).
  enum { N = 65536 };
  uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
  float *f = malloc(N * 4);
  for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
  cgt_run_split(cgt_fn(t, &widen), (dhx_slot[]){{.p = f}, {.p = h}}, N, 3, 1);
  cgt_run_split(cgt_fn(t, &both), (dhx_slot[]){{.p = h2}, {.p = h}}, N, 3, 2);
  for (int i = 0; i < N; i++) {
    uint32_t u;
    memcpy(&u, &f[i], 4);
    CHECK(u == (uint32_t)i << 16, "bf16 0x%04x widens to 0x%08x", i, u);
    CHECK(h2[i] == bf16_of(f32_of(h[i])), "bf16 0x%04x copies to 0x%04x", i, h2[i]);
  }
  // Rounding: ties to even both ways, carries into the exponent, overflow to infinity,
  // subnormals, signed zeros, NaNs of both signs, and a spread of random values.
  static const uint32_t edge[] = {0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f80ffff,
                                  0x3fffffff, 0x7f7fffff, 0xff7fffff, 0x7f7f7fff, 0x7f800000,
                                  0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x00000001,
                                  0x00008000, 0x00018000, 0x807fffff, 0x00000000, 0x80000000};
  enum { M = 4096 };
  float *x = malloc(M * 4);
  uint16_t *y = malloc(M * 2);
  size_t ne = sizeof edge / sizeof edge[0];
  rng_seed(5);
  for (int i = 0; i < M; i++) {
    uint32_t u = i < (int)ne ? edge[i] : (uint32_t)(rng_uniform(0, 1) * 4294967296.0);
    memcpy(&x[i], &u, 4);
  }
  cgt_run_split(cgt_fn(t, &narrow), (dhx_slot[]){{.p = y}, {.p = x}}, M, 2, 3);
  for (int i = 0; i < M; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    CHECK(y[i] == bf16_of(x[i]), "f32 0x%08x rounds to bf16 0x%04x, not 0x%04x", u, y[i],
          bf16_of(x[i]));
  }
  CHECK(bf16_of(f32_of(0x3f80)) == 0x3f80 && y[1] == 0x3f80 && y[2] == 0x3f82 && y[6] == 0x7f80,
        "the reference itself: ties to even, overflow to infinity");
  free(h), free(h2), free(f), free(x), free(y);
}

// Names, table entries and the masks that are refused.
static void check_specs(void) {
  dhx_kernel_spec s = cgt_spec(DHX_K_LAYERNORM_FWD, DHX_KT_F32);
  s.bf16 = 0x9;  // out, x
  char name[DHX_NAME_MAX], err[256];
  CHECK(dhx_kernel_name(&s, name, sizeof name) && strcmp(name, "layernorm_fwd_f32_b0009") == 0,
        "name %s", name);
  s.bf16 = 1u << 6;  // C, an i64
  CHECK(!dhx_kernel_spec_valid(&s, err, sizeof err) && strstr(err, "argument 6"), "i64: %s", err);
  s = cgt_spec(DHX_K_EMBED_FWD, DHX_KT_F32);
  s.bf16 = 1u << 1;  // tokens, an i32 pointer
  CHECK(!dhx_kernel_spec_valid(&s, err, sizeof err), "an i32 pointer as bf16");
  s = cgt_spec(DHX_K_ATTN_FWD, DHX_KT_F32);
  s.bf16 = 1;  // out: the running output
  CHECK(!dhx_kernel_spec_valid(&s, err, sizeof err) && strstr(err, "must stay f32"), "%s", err);
  s = cgt_spec(DHX_K_PERMUTE, DHX_KT_F64);
  s.bf16 = 1;
  CHECK(!dhx_kernel_spec_valid(&s, err, sizeof err) && strstr(err, "f32 kernel"), "%s", err);
}

int main(void) {
  check_specs();
  cgt t;
  cgt_init(&t);
  enum { MAXK = 128 };
  static launch ls[MAXK];
  static dhx_kernel_spec f32[MAXK], var[MAXK];
  int nl = 0;
  for (size_t i = 0; i < sizeof LAUNCHES / sizeof LAUNCHES[0]; i++) ls[nl++] = LAUNCHES[i];
  dhx_kernel_spec ew[8];
  int new_ = eltwise_specs(ew);
  int base = nl;
  for (int i = 0; i < new_; i++) ls[nl++] = (launch){DHX_K_ELTWISE, 40, {0.75, 1.25, 0}};
  // For each launch two variants: every floating pointer bf16 (but those that must stay f32),
  // and the inputs only (f32 results from bf16 operands, as weight gradients are).
  int nv = 0, fi[MAXK], vi[MAXK], of[MAXK];
  for (int i = 0; i < nl; i++) {
    dhx_kernel_spec s = ls[i].kind == DHX_K_ELTWISE ? ew[i - base] : cgt_spec(ls[i].kind, DHX_KT_F32);
    if (ls[i].kind == DHX_K_ELTWISE) {  // scalars after the pointers
      int np = s.ew.nout + s.ew.nin;
      for (int j = 0; j < s.ew.nscalars; j++) ls[i].a[np + j] = 0.75 + 0.5 * j;
    }
    CHECK(dhx_kernel_float_pointers(&s) != 0, "kind %d has no floating pointer", (int)s.kind);
    uint32_t all = dhx_kernel_float_pointers(&s) & ~dhx_kernel_f32_only(&s);
    uint32_t writes = 0;
    for (int j = 0; j < DHX_MAX_ARGS; j++) writes |= dhx_kernel_arg_writes(&s, j) ? 1u << j : 0;
    int fidx = cgt_add(&t, &s);
    uint32_t masks[2] = {all, all & ~writes};
    for (int m = 0; m < 2; m++) {
      if (!masks[m] || (m == 1 && masks[1] == masks[0])) continue;
      f32[nv] = s;
      var[nv] = s;
      var[nv].bf16 = (uint16_t)masks[m];
      fi[nv] = fidx;
      vi[nv] = cgt_add(&t, &var[nv]);
      of[nv++] = i;
    }
  }
  dhx_kernel_spec conv[3] = {copy_spec(1), copy_spec(2), copy_spec(3)};
  for (int i = 0; i < 3; i++) cgt_add(&t, &conv[i]);
  cgt_build(&t);
  check_conversions(&t);
  for (int i = 0; i < nv; i++)
    for (unsigned seed = 1; seed <= 3; seed++) compare(&t, &ls[of[i]], &f32[i], fi[i], &var[i], vi[i], seed);
  printf("%d bf16 variants of %d kernels compute the f32 kernels' results rounded once\n", nv, nl);
  cgt_done(&t);
  return 0;
}
