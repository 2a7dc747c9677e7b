// cg_test.c — see cg_test.h.
#include "cg_test.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cgt_init(cgt *t) {
  memset(t, 0, sizeof *t);
  t->cg = dhx_codegen_new();
  CHECK(t->cg != NULL, "dhx_codegen_new");
  const char *tmp = getenv("TMPDIR");
  snprintf(t->dir, sizeof t->dir, "%s/dhx-cgtest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CHECK(mkdtemp(t->dir) != NULL, "mkdtemp %s", t->dir);
  snprintf(t->so_path, sizeof t->so_path, "%s/kernels.so", t->dir);
}

int cgt_add(cgt *t, const dhx_kernel_spec *s) {
  int i = dhx_codegen_add(t->cg, s);
  CHECK(i >= 0, "dhx_codegen_add: %s", dhx_codegen_error(t->cg));
  return i;
}

void cgt_build(cgt *t) {
  char err[1024] = "";
  bool ok = dhx_codegen_emit_host_so(t->cg, t->so_path, err, sizeof err);
  CHECK(ok, "emit_host_so: %s", err);
  t->so = dlopen(t->so_path, RTLD_NOW | RTLD_LOCAL);
  CHECK(t->so != NULL, "dlopen: %s", dlerror());
}

dhx_kernel_fn cgt_fn(cgt *t, const dhx_kernel_spec *s) {
  char name[DHX_NAME_MAX], sym[DHX_NAME_MAX + 8];
  CHECK(dhx_kernel_name(s, name, sizeof name), "kernel name");
  snprintf(sym, sizeof sym, "%s%s", DHX_KERNEL_PREFIX, name);
  void *p = dlsym(t->so, sym);
  CHECK(p != NULL, "symbol %s not in kernels.so", sym);
  dhx_kernel_fn fn;
  memcpy(&fn, &p, sizeof fn);
  return fn;
}

dhx_grid_fn cgt_grid_fn(cgt *t, const char *name) {
  char sym[DHX_NAME_MAX + 8];
  snprintf(sym, sizeof sym, "%s%s", DHX_GRID_PREFIX, name);
  void *p = dlsym(t->so, sym);
  CHECK(p != NULL, "symbol %s not in kernels.so", sym);
  dhx_grid_fn fn;
  memcpy(&fn, &p, sizeof fn);
  return fn;
}

char *cgt_entry_text(const char *ptx, const char *name) {
  char head[DHX_NAME_MAX + 16];
  snprintf(head, sizeof head, ".entry %s(", name);
  const char *start = strstr(ptx, head);
  CHECK(start != NULL, "no %s in the PTX", head);
  const char *end = strstr(start + 1, ".entry ");
  size_t n = end ? (size_t)(end - start) : strlen(start);
  char *text = malloc(n + 1);
  CHECK(text != NULL, "out of memory");
  memcpy(text, start, n);
  text[n] = 0;
  return text;
}

void cgt_done(cgt *t) {
  if (t->so) dlclose(t->so);
  unlink(t->so_path);
  rmdir(t->dir);
  dhx_codegen_free(t->cg);
  memset(t, 0, sizeof *t);
}

void cgt_run_split(dhx_kernel_fn fn, const dhx_slot *args, int64_t n, int pieces, unsigned seed) {
  if (pieces <= 1 || n < 2) {
    fn(args, 0, n);
    return;
  }
  // Cut points: 1 (a one-index first range), then uneven ones; an empty range in between.
  int64_t cuts[16];
  int nc = 0;
  cuts[nc++] = 0;
  cuts[nc++] = 1;
  cuts[nc++] = 1;  // empty range [1, 1)
  unsigned s = seed * 2654435761u + 12345u;
  for (int p = 2; p < pieces && nc < 15; p++) {
    s = s * 1103515245u + 12345u;
    int64_t prev = cuts[nc - 1];
    int64_t c = prev + 1 + (int64_t)((s >> 8) % (uint64_t)(n - prev > 1 ? n - prev : 1));
    if (c >= n) break;
    cuts[nc++] = c;
  }
  cuts[nc++] = n;
  for (int i = 0; i + 1 < nc; i++) fn(args, cuts[i], cuts[i + 1]);
}

dhx_kernel_spec cgt_spec(dhx_kernel_kind kind, dhx_ktype type) {
  dhx_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.type = type;
  return s;
}

void ew_init(cgt_ew *b, dhx_ktype type) { b->k = cgt_spec(DHX_K_ELTWISE, type); }

static int push(cgt_ew *b, dhx_ew_node n) {
  CHECK(b->k.ew.nnodes < DHX_EW_MAX_NODES, "too many nodes");
  b->k.ew.nodes[b->k.ew.nnodes] = n;
  return b->k.ew.nnodes++;
}

int ew_load(cgt_ew *b, int64_t mod) {
  int j = b->k.ew.nin++;
  b->k.ew.in_mode[j] = mod ? DHX_EW_MOD : DHX_EW_FULL;
  b->k.ew.in_mod[j] = mod;
  return push(b, (dhx_ew_node){.op = DHX_EW_LOAD, .a = (uint8_t)j});
}
int ew_scalar(cgt_ew *b) {
  int j = b->k.ew.nscalars++;
  return push(b, (dhx_ew_node){.op = DHX_EW_SCALAR, .a = (uint8_t)j});
}
int ew_const(cgt_ew *b, double v) {
  CHECK(b->k.ew.nconsts < DHX_EW_MAX_CONSTS, "too many constants");
  b->k.ew.consts[b->k.ew.nconsts] = v;
  return push(b, (dhx_ew_node){.op = DHX_EW_CONST, .a = b->k.ew.nconsts++});
}
int ew_op(cgt_ew *b, dhx_ew_op op, int a, int c) {
  return push(b, (dhx_ew_node){.op = (uint8_t)op, .a = (uint8_t)a, .b = (uint8_t)c});
}
void ew_store(cgt_ew *b, int node, bool accumulate) {
  int k = b->k.ew.nout++;
  b->k.ew.out_node[k] = (uint8_t)node;
  b->k.ew.out_accumulate[k] = accumulate;
}

dhx_kernel_spec spec_bias_gelu(dhx_ktype t, int64_t C) {
  cgt_ew b;
  ew_init(&b, t);
  int y = ew_load(&b, 0), bias = ew_load(&b, C);
  int pre = ew_op(&b, DHX_EW_ADD, y, bias);
  ew_store(&b, pre, false);
  ew_store(&b, ew_op(&b, DHX_EW_GELU, pre, 0), false);
  return b.k;
}

dhx_kernel_spec spec_pos_add(dhx_ktype t, int64_t TC) {
  cgt_ew b;
  ew_init(&b, t);
  int x = ew_load(&b, 0), p = ew_load(&b, TC);
  ew_store(&b, ew_op(&b, DHX_EW_ADD, x, p), false);
  return b.k;
}

dhx_kernel_spec spec_gelu_grad(dhx_ktype t, bool acc) {
  cgt_ew b;
  ew_init(&b, t);
  int x = ew_load(&b, 0), dy = ew_load(&b, 0);
  ew_store(&b, ew_op(&b, DHX_EW_GELU_GRAD, x, dy), acc);
  return b.k;
}

dhx_kernel_spec spec_silu_grad(dhx_ktype t, bool acc) {
  cgt_ew b;
  ew_init(&b, t);
  int x = ew_load(&b, 0), dy = ew_load(&b, 0);
  ew_store(&b, ew_op(&b, DHX_EW_SILU_GRAD, x, dy), acc);
  return b.k;
}

dhx_kernel_spec spec_acc_add(dhx_ktype t) {
  cgt_ew b;
  ew_init(&b, t);
  ew_store(&b, ew_load(&b, 0), true);
  return b.k;
}

dhx_kernel_spec spec_mix(dhx_ktype t, bool acc) {
  cgt_ew b;
  ew_init(&b, t);
  int a = ew_load(&b, 0), c = ew_load(&b, 0), s0 = ew_scalar(&b), s1 = ew_scalar(&b);
  int o0 = ew_op(&b, DHX_EW_SUB,
                 ew_op(&b, DHX_EW_ADD, ew_op(&b, DHX_EW_MUL, a, s0), ew_op(&b, DHX_EW_DIV, c, s1)),
                 ew_const(&b, 0.5));
  int e = ew_op(&b, DHX_EW_EXP, ew_op(&b, DHX_EW_NEG, c, 0), 0);
  int sq = ew_op(&b, DHX_EW_SQRT, ew_op(&b, DHX_EW_ADD, ew_op(&b, DHX_EW_MUL, c, c), s1), 0);
  int o1 = ew_op(&b, DHX_EW_ADD, ew_op(&b, DHX_EW_MUL, ew_op(&b, DHX_EW_TANH, a, 0), e), sq);
  int lg = ew_op(&b, DHX_EW_LOG,
                 ew_op(&b, DHX_EW_ADD, ew_op(&b, DHX_EW_MUL, a, a), ew_const(&b, 1.0)), 0);
  int o2 = ew_op(&b, DHX_EW_SUB, lg, ew_op(&b, DHX_EW_NEG, c, 0));
  ew_store(&b, o0, false);
  ew_store(&b, o1, acc);
  ew_store(&b, o2, false);
  return b.k;
}

dhx_kernel_spec spec_two_mods(dhx_ktype t, int64_t m1, int64_t m2) {
  cgt_ew b;
  ew_init(&b, t);
  int x = ew_load(&b, 0), u = ew_load(&b, m1), v = ew_load(&b, m2);
  ew_store(&b, ew_op(&b, DHX_EW_ADD, x, ew_op(&b, DHX_EW_MUL, u, v)), false);
  return b.k;
}

dhx_kernel_spec spec_unary(dhx_ktype t, dhx_ew_op op) {
  cgt_ew b;
  ew_init(&b, t);
  ew_store(&b, ew_op(&b, op, ew_load(&b, 0), 0), false);
  return b.k;
}

// Every floating pointer a kind allows as bf16.
static void add_spec(cgt *t, dhx_kernel_spec s, bool bf16) {
  if (bf16) s.bf16 = (uint16_t)(dhx_kernel_float_pointers(&s) & ~dhx_kernel_f32_only(&s));
  cgt_add(t, &s);
}

void cgt_add_all(cgt *t, dhx_ktype type) {
  bool bf16 = type == DHX_KT_BF16_MIXED;
  if (bf16) type = DHX_KT_F32;
  for (int k = 0; k < DHX_K_ELTWISE; k++) add_spec(t, cgt_spec((dhx_kernel_kind)k, type), bf16);
  dhx_kernel_spec e[] = {spec_bias_gelu(type, 37),   spec_bias_gelu(type, 768),
                         spec_pos_add(type, 5 * 7),  spec_gelu_grad(type, false),
                         spec_gelu_grad(type, true), spec_acc_add(type),
                         spec_mix(type, false),      spec_mix(type, true),
                         spec_two_mods(type, 10, 4), spec_unary(type, DHX_EW_EXP),
                         spec_unary(type, DHX_EW_LOG), spec_unary(type, DHX_EW_TANH),
                         spec_unary(type, DHX_EW_GELU), spec_unary(type, DHX_EW_SQRT),
                         spec_unary(type, DHX_EW_SILU), spec_silu_grad(type, false),
                         spec_silu_grad(type, true)};
  for (size_t i = 0; i < sizeof e / sizeof e[0]; i++) add_spec(t, e[i], bf16);
}

static uint64_t rng_state = 88172645463325252ULL;
void rng_seed(uint64_t s) { rng_state = s ? s : 88172645463325252ULL; }
static uint64_t rng_next(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
double rng_uniform(double lo, double hi) {
  return lo + (hi - lo) * (double)(rng_next() >> 11) * 0x1p-53;
}
int rng_int(int n) { return (int)(rng_next() % (uint64_t)n); }

char *cgt_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  CHECK(f != NULL, "open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  CHECK(s && fread(s, 1, (size_t)n, f) == (size_t)n, "read %s", path);
  s[n] = 0;
  fclose(f);
  return s;
}
