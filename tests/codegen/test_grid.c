// test_grid.c — the GPU's thread code, run on the host. Every PTX entry is a grid-stride loop,
// and wide kernels (elementwise chains, AdamW; f32, some with bf16 pointers) take four indices
// a thread with one vector load or store per pointer (16 bytes, 8 for bf16) where every
// pointer is so aligned. kernels.so holds the same thread code as dhxg_NAME (kernel_entry.c);
// this test runs it for grids of many shapes (more threads than indices, one warp for a
// thousand indices), index spaces of every length modulo 4 and pointers 0 to 3 f32 elements
// off alignment, and requires the bits of the host kernel dhxk_NAME over the whole index
// space. It also checks the PTX: every entry reads the grid's size (%nctaid.x: the stride),
// and the entries of wide kernels, only they, have vector loads and stores (ld.global.v4.f32,
// or .v4 of 16-bit words for bf16).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_test.h"

#define MAXN 1031
#define PAD 4  // elements before each array, so a pointer can sit 0..3 elements off alignment

typedef struct arrays {
  float *f[DHX_MAX_ARGS];
  double *d[DHX_MAX_ARGS];
  size_t len[DHX_MAX_ARGS];
} arrays;

// Pointer argument j's array length: the index space, or a broadcast input's modulus.
static size_t arg_len(const dhx_kernel_spec *s, int j, size_t n) {
  if (s->kind == DHX_K_ADAMW) return j == 11 ? 1 : n;
  int in = j - s->ew.nout;
  if (in >= 0 && in < s->ew.nin && s->ew.in_mode[in] == DHX_EW_MOD) return (size_t)s->ew.in_mod[in];
  return n;
}

// Fills the slots of a spec for index space n: pointers into 16-byte aligned arrays shifted by
// `off` elements, filled from a fixed seed (so two calls give the same data), scalars fixed.
static void make_args(const dhx_kernel_spec *s, const dhx_plan_kernel *e, size_t n, int off,
                      unsigned seed, arrays *a, dhx_slot *args) {
  rng_seed(seed);
  bool f64 = s->type == DHX_KT_F64;
  for (uint32_t j = 0; j < e->nargs; j++) {
    if (e->arg_types[j] != DHX_KARG_PTR) {
      double v = s->kind == DHX_K_ADAMW ? (double[]){0, 0, 0, 0, 1e-3, 0.9, 0.95, 1e-8, 0.1,
                                                     0.5, 0.25}[j]
                                        : 0.75 + 0.5 * j;
      if (e->arg_types[j] == DHX_KARG_I64) args[j].i = (int64_t)v;
      else args[j].f = v;
      continue;
    }
    size_t len = arg_len(s, (int)j, n) + PAD;
    a->len[j] = len;
    if (f64) {
      a->d[j] = aligned_alloc(16, sizeof(double) * ((len + 1) & ~(size_t)1));
      for (size_t i = 0; i < len; i++) a->d[j][i] = rng_uniform(0.1, 1.5);
      if (s->kind == DHX_K_ADAMW && j == 11) a->d[j][0] = 0.8;  // the clip scale
      args[j].p = a->d[j] + off;
    } else {
      a->f[j] = aligned_alloc(16, sizeof(float) * ((len + 3) & ~(size_t)3));
      for (size_t i = 0; i < len; i++) a->f[j][i] = (float)rng_uniform(0.1, 1.5);
      if (s->kind == DHX_K_ADAMW && j == 11) a->f[j][0] = 0.8f;
      args[j].p = a->f[j] + off;
    }
  }
}

static void free_args(arrays *a) {
  for (int j = 0; j < DHX_MAX_ARGS; j++) {
    free(a->f[j]);
    free(a->d[j]);
  }
  memset(a, 0, sizeof *a);
}

// Runs host and grid versions on the same inputs and compares every array bit for bit.
static void compare(cgt *t, const dhx_kernel_spec *s, int index, size_t n, int off,
                   unsigned blocks, unsigned threads) {
  dhx_plan_kernel e;
  dhx_codegen_table_entry(t->cg, index, &e);
  arrays want = {0}, got = {0};
  dhx_slot wa[DHX_MAX_ARGS], ga[DHX_MAX_ARGS];
  unsigned seed = (unsigned)(n * 131 + (size_t)off * 7 + 1);
  make_args(s, &e, n, off, seed, &want, wa);
  make_args(s, &e, n, off, seed, &got, ga);
  cgt_fn(t, s)(wa, 0, (int64_t)n);
  cgt_grid_fn(t, e.name)(ga, (int64_t)n, threads, blocks, 0, blocks);
  for (uint32_t j = 0; j < e.nargs; j++) {
    if (e.arg_types[j] != DHX_KARG_PTR) continue;
    size_t bytes = want.len[j] * (s->type == DHX_KT_F64 ? 8 : 4);
    const void *w = want.f[j] ? (const void *)want.f[j] : (const void *)want.d[j];
    const void *g = got.f[j] ? (const void *)got.f[j] : (const void *)got.d[j];
    CHECK(memcmp(w, g, bytes) == 0, "%s: argument %u differs from the host kernel's (n = %zu, "
          "%d elements off, %u blocks of %u)", e.name, j, n, off, blocks, threads);
  }
  free_args(&want);
  free_args(&got);
}

int main(void) {
  cgt t;
  cgt_init(&t);
  dhx_kernel_spec specs[32];
  int nspecs = 0;
  for (int ty = 0; ty < 2; ty++) {
    dhx_ktype type = ty ? DHX_KT_F64 : DHX_KT_F32;
    specs[nspecs++] = cgt_spec(DHX_K_ADAMW, type);
    specs[nspecs++] = spec_bias_gelu(type, 768);
    specs[nspecs++] = spec_bias_gelu(type, 37);  // a modulus not a multiple of 4: not wide
    specs[nspecs++] = spec_pos_add(type, 64 * 12);
    specs[nspecs++] = spec_gelu_grad(type, true);
    specs[nspecs++] = spec_silu_grad(type, false);
    specs[nspecs++] = spec_acc_add(type);
    specs[nspecs++] = spec_mix(type, true);
    specs[nspecs++] = spec_two_mods(type, 8, 12);
  }
  // Mixed precision: bf16 pointers take the wide path where their 8 bytes are aligned.
  specs[nspecs] = spec_bias_gelu(DHX_KT_F32, 768);
  specs[nspecs++].bf16 = 0xf;  // pre, out, y, bias
  specs[nspecs] = spec_mix(DHX_KT_F32, true);
  specs[nspecs++].bf16 = 0x18;  // the inputs a and b
  specs[nspecs] = cgt_spec(DHX_K_ADAMW, DHX_KT_F32);
  specs[nspecs++].bf16 = 0x1;   // a bf16 parameter
  int index[32];
  for (int i = 0; i < nspecs; i++) index[i] = cgt_add(&t, &specs[i]);
  setenv("DHX_CODEGEN_GRID_ENTRIES", "1", 1);
  cgt_build(&t);

  static const unsigned grids[][2] = {{64, 256}, {1, 256}, {3, 64}, {1, 32}};
  static const size_t lens[] = {0, 1, 3, 4, 5, 6, 7, 64, 257, 1000, MAXN};
  int runs = 0, wide = 0;
  for (int i = 0; i < nspecs; i++) {
    dhx_plan_kernel e;
    dhx_codegen_table_entry(t.cg, index[i], &e);
    bool want_wide = specs[i].type == DHX_KT_F32 &&
                     !(specs[i].kind == DHX_K_ELTWISE && specs[i].ew.nin > 1 &&
                       specs[i].ew.in_mode[1] == DHX_EW_MOD && specs[i].ew.in_mod[1] % 4 != 0);
    CHECK(e.indices_per_thread == (want_wide ? 4u : 1u), "%s: %u indices per thread", e.name,
          e.indices_per_thread);
    wide += e.indices_per_thread == 4;
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
      for (int off = 0; off < 4; off++)
        for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
          compare(&t, &specs[i], index[i], lens[l], off, grids[g][0], grids[g][1]);
          runs++;
        }
  }
  printf("%d grid runs of %d kernels (%d wide) equal the host kernels bit for bit\n", runs, nspecs,
         wide);

  char ptx[400], err[1024] = "";
  snprintf(ptx, sizeof ptx, "%s/grid.ptx", t.dir);
  CHECK(dhx_codegen_emit_ptx(t.cg, "sm_90", ptx, err, sizeof err), "emit_ptx: %s", err);
  char *text = cgt_slurp(ptx);
  for (int i = 0; i < nspecs; i++) {
    dhx_plan_kernel e;
    dhx_codegen_table_entry(t.cg, index[i], &e);
    char *body = cgt_entry_text(text, e.name);
    bool v4 = (strstr(body, "ld.global.v4.f32") || strstr(body, "ld.global.v4.u16") ||
               strstr(body, "ld.global.v4.b16")) &&
              (strstr(body, "st.global.v4.f32") || strstr(body, "st.global.v4.u16") ||
               strstr(body, "st.global.v4.b16"));
    CHECK(strstr(body, "%nctaid.x") != NULL, "%s: the PTX entry does not read the grid's size",
          e.name);
    CHECK(v4 == (e.indices_per_thread == 4), "%s: %s 16-byte loads and stores, %u indices per "
          "thread", e.name, v4 ? "has" : "lacks", e.indices_per_thread);
    free(body);
  }
  free(text);
  unlink(ptx);
  cgt_done(&t);
  return 0;
}
