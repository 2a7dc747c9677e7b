// test_vectorized.c — the host kernels are SIMD code, not scalar loops: `test_cg_vectorized
// OBJDUMP` builds kernels.so, disassembles it and requires packed 256/512-bit arithmetic in
// each hot kernel and, where a kernel computes exp (softmax, cross-entropy, GELU), a packed
// rounding instruction — the vectorised exp. The correctness tests cannot notice a kernel
// that silently falls back to scalar code (e.g. if the parallel-loop metadata stopped
// reaching the vectoriser); this one does. x86-64 with AVX2 only; skipped elsewhere.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"

typedef struct want {
  dhx_kernel_spec spec;
  bool exp;  // must contain a packed vroundps/vrndscaleps (the exp's rint)
} want;

int main(int argc, char **argv) {
  CHECK(argc == 2, "usage: test_cg_vectorized OBJDUMP");
#if !defined(__x86_64__)
  printf("skipped: not x86-64\n");
  return 0;
#else
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2")) {
    printf("skipped: no AVX2 on this CPU\n");
    return 0;
  }
  dhx_ktype f = DHX_KT_F32;
  want w[] = {
      {cgt_spec(DHX_K_LAYERNORM_FWD, f), false},   {cgt_spec(DHX_K_LAYERNORM_BWD_DX, f), false},
      {cgt_spec(DHX_K_LAYERNORM_BWD_DPARAMS, f), false}, {cgt_spec(DHX_K_COLSUM, f), false},
      {cgt_spec(DHX_K_EMBED_FWD, f), false},       {cgt_spec(DHX_K_EMBED_BWD, f), false},
      {cgt_spec(DHX_K_SOFTMAX_CAUSAL_FWD, f), true}, {cgt_spec(DHX_K_SOFTMAX_CAUSAL_BWD, f), false},
      {cgt_spec(DHX_K_XENT_FWD, f), true},         {cgt_spec(DHX_K_XENT_BWD, f), true},
      {cgt_spec(DHX_K_ADAMW, f), false},           {cgt_spec(DHX_K_SUMSQ, f), false},
      {spec_bias_gelu(f, 768), true},              {spec_gelu_grad(f, true), true},
      {spec_pos_add(f, 1024 * 768), false},        {spec_acc_add(f), false},
      {cgt_spec(DHX_K_EMBED_VP_FWD, f), false},    {cgt_spec(DHX_K_EMBED_VP_BWD, f), false},
      {cgt_spec(DHX_K_XENT_VP_STATS, f), true},    {cgt_spec(DHX_K_XENT_VP_BWD, f), true},
      {cgt_spec(DHX_K_LAYERNORM_FWD, DHX_KT_F64), false},
      {spec_bias_gelu(DHX_KT_F64, 768), true},
  };
  size_t nw = sizeof w / sizeof w[0];
  cgt t;
  cgt_init(&t);
  for (size_t i = 0; i < nw; i++) cgt_add(&t, &w[i].spec);
  cgt_build(&t);

  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' -d --no-show-raw-insn '%s'", argv[1], t.so_path);
  FILE *p = popen(cmd, "r");
  CHECK(p != NULL, "cannot run %s", cmd);
  int packed[32] = {0}, rounds[32] = {0}, cur = -1;
  char line[512], names[32][DHX_NAME_MAX + 8];
  for (size_t i = 0; i < nw; i++) {
    char n[DHX_NAME_MAX];
    CHECK(dhx_kernel_name(&w[i].spec, n, sizeof n), "name");
    snprintf(names[i], sizeof names[i], "<dhxk_%s>:", n);
  }
  while (fgets(line, sizeof line, p)) {
    if (strchr(line, '<') && strstr(line, ">:")) {  // a new function
      cur = -1;
      for (size_t i = 0; i < nw; i++)
        if (strstr(line, names[i])) cur = (int)i;
      continue;
    }
    if (cur < 0 || (!strstr(line, "%ymm") && !strstr(line, "%zmm"))) continue;
    const char *ops[] = {"vaddp", "vmulp", "vfmadd", "vsubp", "vmaxp", "vdivp", "vmovup",
                         "vcvtps2pd", "vsqrtp"};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
      if (strstr(line, ops[o])) packed[cur]++;
    if (strstr(line, "vroundp") || strstr(line, "vrndscalep")) rounds[cur]++;
  }
  CHECK(pclose(p) == 0, "%s failed", cmd);
  int bad = 0;
  for (size_t i = 0; i < nw; i++) {
    bool ok = packed[i] >= 4 && (!w[i].exp || rounds[i] > 0);
    printf("  %s %-40s %4d packed ops, %d packed roundings\n", ok ? "ok  " : "FAIL", names[i],
           packed[i], rounds[i]);
    bad += !ok;
  }
  cgt_done(&t);
  CHECK(bad == 0, "%d kernels are not vectorised", bad);
  return 0;
#endif
}
