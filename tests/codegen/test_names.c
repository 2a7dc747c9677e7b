// test_names.c — the code generator's bookkeeping: canonical kernel names (fixed kernels by
// kind, fused kernels by a hash of the meaningful bytes of their spec, so padding and unused
// fields do not matter), signatures in the order kernels.h documents, deduplication, the
// plan kernel-table entries, rejection of invalid specs, the .ll output, and link errors
// reported through err rather than crashes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_test.h"

static void expect_sig(dhx_kernel_kind kind, dhx_ktype type, const char *name, const char *sig) {
  dhx_kernel_spec s = cgt_spec(kind, type);
  char got[DHX_NAME_MAX];
  CHECK(dhx_kernel_name(&s, got, sizeof got), "name of kind %d", kind);
  CHECK(strcmp(got, name) == 0, "kind %d is named %s, want %s", kind, got, name);
  uint32_t at[DHX_MAX_ARGS];
  int n = dhx_kernel_signature(&s, at);
  CHECK(n == (int)strlen(sig), "%s has %d arguments, want %zu", name, n, strlen(sig));
  for (int i = 0; i < n; i++) {
    uint32_t want = sig[i] == 'p' ? DHX_KARG_PTR : sig[i] == 'i' ? DHX_KARG_I64
                    : sig[i] == 'd' || type == DHX_KT_F64 ? DHX_KARG_F64 : DHX_KARG_F32;
    CHECK(at[i] == want, "%s argument %d has type %u, want %u", name, i, at[i], want);
  }
}

static void expect_invalid(const char *what, dhx_kernel_spec s) {
  char err[256] = "";
  CHECK(!dhx_kernel_spec_valid(&s, err, sizeof err), "%s: accepted", what);
  CHECK(err[0] != 0, "%s: no message", what);
  dhx_codegen *cg = dhx_codegen_new();
  CHECK(dhx_codegen_add(cg, &s) == -1, "%s: dhx_codegen_add accepted it", what);
  CHECK(strlen(dhx_codegen_error(cg)) > 0, "%s: no error from dhx_codegen_add", what);
  CHECK(dhx_codegen_count(cg) == 0, "%s: added anyway", what);
  uint32_t at[DHX_MAX_ARGS];
  CHECK(dhx_kernel_signature(&s, at) == -1, "%s: has a signature", what);
  char name[DHX_NAME_MAX];
  CHECK(!dhx_kernel_name(&s, name, sizeof name), "%s: has a name", what);
  dhx_codegen_free(cg);
  printf("  ok rejects %-40s (%s)\n", what, err);
}

int main(void) {
  // ---- fixed kernels: names and signatures exactly as kernels.h documents them ----
  for (int t = 0; t < 2; t++) {
    dhx_ktype ty = (dhx_ktype)t;
    const char *sfx = t ? "_f64" : "_f32";
    struct {
      dhx_kernel_kind kind;
      const char *base, *sig;
    } want[] = {
        {DHX_K_EMBED_FWD, "embed_fwd", "pppi"},
        {DHX_K_EMBED_BWD, "embed_bwd", "pppii"},
        {DHX_K_LAYERNORM_FWD, "layernorm_fwd", "ppppppif"},
        {DHX_K_LAYERNORM_BWD_DX, "layernorm_bwd_dx", "ppppppii"},
        {DHX_K_LAYERNORM_BWD_DPARAMS, "layernorm_bwd_dparams", "ppppppii"},
        {DHX_K_SOFTMAX_CAUSAL_FWD, "softmax_causal_fwd", "ppif"},
        {DHX_K_SOFTMAX_CAUSAL_BWD, "softmax_causal_bwd", "pppif"},
        {DHX_K_XENT_FWD, "xent_fwd", "pppi"},
        {DHX_K_XENT_BWD, "xent_bwd", "pppif"},
        {DHX_K_ADAMW, "adamw", "ppppfffffffp"},
        {DHX_K_SUMSQ, "sumsq", "ppii"},
        {DHX_K_COLSUM, "colsum", "ppiii"},
        {DHX_K_EMBED_VP_FWD, "embed_vp_fwd", "pppiii"},
        {DHX_K_EMBED_VP_BWD, "embed_vp_bwd", "pppiiii"},
        {DHX_K_XENT_VP_STATS, "xent_vp_stats", "pppiiii"},
        {DHX_K_XENT_VP_COMBINE, "xent_vp_combine", "ppppiiii"},
        {DHX_K_XENT_VP_BWD, "xent_vp_bwd", "ppppiif"},
        {DHX_K_QUANTIZE, "quantize", "ppppiiiiii"},
        {DHX_K_DEQUANTIZE, "dequantize", "pppiii"},
        {DHX_K_HADAMARD32, "hadamard32", "ppi"},
        {DHX_K_HADAMARD_QUANTIZE, "hadamard_quantize", "pppiiiii"},
        {DHX_K_DEQUANTIZE_HADAMARD, "dequantize_hadamard", "pppiii"},
        {DHX_K_DEQUANTIZE_REDUCE_QUANTIZE, "dequantize_reduce_quantize", "ppppiiiiiiiiii"},
        {DHX_K_DEQUANTIZE_REDUCE_HADAMARD, "dequantize_reduce_hadamard", "pppiiiiii"},
        {DHX_K_GRAD_NORM, "grad_norm", "pppid"},  // max_norm is f64 in both variants
        {DHX_K_ATTN_FWD, "attn_fwd", "pppppiiiiiiif"},
        {DHX_K_ATTN_BWD_DOT, "attn_bwd_dot", "pppiii"},
        {DHX_K_ATTN_BWD_DQ, "attn_bwd_dq", "pppppppiiiiiiif"},
        {DHX_K_ATTN_BWD_DKV, "attn_bwd_dkv", "ppppppppiiiiiiif"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
      char name[64];
      snprintf(name, sizeof name, "%s%s", want[i].base, sfx);
      expect_sig(want[i].kind, ty, name, want[i].sig);
    }
  }
  printf("  ok fixed kernel names and signatures (f32, f64)\n");

  // ---- fused kernels: deterministic, padding-blind names; signature outs, ins, scalars ----
  dhx_kernel_spec a = spec_mix(DHX_KT_F32, true);
  dhx_kernel_spec b;
  memset(&b, 0xA5, sizeof b);  // garbage in padding and in every field the spec leaves unused
  b.kind = a.kind;
  b.type = a.type;
  b.bf16 = a.bf16;
  b.ew.nin = a.ew.nin, b.ew.nout = a.ew.nout, b.ew.nscalars = a.ew.nscalars;
  b.ew.nnodes = a.ew.nnodes;
  for (int j = 0; j < a.ew.nin; j++) b.ew.in_mode[j] = a.ew.in_mode[j];  // FULL: in_mod unused
  for (int i = 0; i < a.ew.nnodes; i++) {
    b.ew.nodes[i].op = a.ew.nodes[i].op;
    b.ew.nodes[i].a = a.ew.nodes[i].a;
    if (a.ew.nodes[i].op >= DHX_EW_ADD && a.ew.nodes[i].op <= DHX_EW_DIV)
      b.ew.nodes[i].b = a.ew.nodes[i].b;
  }
  b.ew.nconsts = a.ew.nconsts;  // the constants in use; the table's tail keeps the garbage
  for (int k = 0; k < a.ew.nconsts; k++) b.ew.consts[k] = a.ew.consts[k];
  for (int k = 0; k < a.ew.nout; k++) {
    b.ew.out_node[k] = a.ew.out_node[k];
    b.ew.out_accumulate[k] = a.ew.out_accumulate[k];
  }
  char na[DHX_NAME_MAX], nb[DHX_NAME_MAX];
  CHECK(dhx_kernel_name(&a, na, sizeof na) && dhx_kernel_name(&b, nb, sizeof nb), "ew names");
  CHECK(strcmp(na, nb) == 0, "padding changes the name: %s vs %s", na, nb);
  CHECK(strlen(na) == 3 + 16 + 4 && strncmp(na, "ew_", 3) == 0 && strcmp(na + 19, "_f32") == 0,
        "fused name format: %s", na);
  for (int i = 3; i < 19; i++) CHECK(strchr("0123456789abcdef", na[i]) != NULL, "hex: %s", na);
  char small[10];
  CHECK(!dhx_kernel_name(&a, small, sizeof small), "a too short buffer is accepted");
  uint32_t at[DHX_MAX_ARGS];
  CHECK(dhx_kernel_signature(&a, at) == 7, "mix has 3 outputs, 2 inputs, 2 scalars");
  for (int i = 0; i < 7; i++) CHECK(at[i] == (i < 5 ? DHX_KARG_PTR : DHX_KARG_F32), "mix arg %d", i);
  printf("  ok fused kernel %s: same name whatever the padding\n", na);

  // Every meaningful difference changes the name.
  struct {
    const char *what;
    dhx_kernel_spec s;
  } diff[] = {
      {"type", spec_mix(DHX_KT_F64, true)},
      {"accumulate", spec_mix(DHX_KT_F32, false)},
      {"modulus", spec_bias_gelu(DHX_KT_F32, 38)},
      {"const", a},
      {"op", a},
  };
  int cnode = -1, mnode = -1;  // node order depends on argument evaluation order: search
  for (int i = 0; i < a.ew.nnodes; i++) {
    if (a.ew.nodes[i].op == DHX_EW_CONST) cnode = i;
    if (a.ew.nodes[i].op == DHX_EW_MUL) mnode = i;
  }
  CHECK(cnode >= 0 && mnode >= 0, "spec_mix has a constant and a product");
  diff[3].s.ew.consts[diff[3].s.ew.nodes[cnode].a] = 0.25;
  diff[4].s.ew.nodes[mnode].op = DHX_EW_SUB;
  char ref37[DHX_NAME_MAX];
  dhx_kernel_spec bg37 = spec_bias_gelu(DHX_KT_F32, 37);
  CHECK(dhx_kernel_name(&bg37, ref37, sizeof ref37), "name");
  for (size_t i = 0; i < sizeof diff / sizeof diff[0]; i++) {
    char n2[DHX_NAME_MAX];
    CHECK(dhx_kernel_name(&diff[i].s, n2, sizeof n2), "name");
    const char *base = i == 2 ? ref37 : na;
    CHECK(strcmp(n2, base) != 0, "changing the %s keeps the name %s", diff[i].what, n2);
  }
  printf("  ok type, accumulate, modulus, constant and op each change the name\n");

  // ---- the table: dedup, entries ----
  dhx_codegen *cg = dhx_codegen_new();
  dhx_kernel_spec ln = cgt_spec(DHX_K_LAYERNORM_FWD, DHX_KT_F32);
  dhx_kernel_spec ln64 = cgt_spec(DHX_K_LAYERNORM_FWD, DHX_KT_F64);
  int i0 = dhx_codegen_add(cg, &ln), i1 = dhx_codegen_add(cg, &a), i2 = dhx_codegen_add(cg, &b);
  int i3 = dhx_codegen_add(cg, &ln64), i4 = dhx_codegen_add(cg, &ln);
  CHECK(i0 == 0 && i1 == 1 && i2 == 1 && i3 == 2 && i4 == 0 && dhx_codegen_count(cg) == 3,
        "dedup: %d %d %d %d %d count %d", i0, i1, i2, i3, i4, dhx_codegen_count(cg));
  dhx_kernel_spec ln_junk = ln;
  ln_junk.ew.nnodes = 3;  // ignored for catalogue kinds
  CHECK(dhx_codegen_add(cg, &ln_junk) == 0, "a non-eltwise spec's ew field matters");
  dhx_plan_kernel e;
  dhx_codegen_table_entry(cg, 0, &e);
  CHECK(strcmp(e.name, "layernorm_fwd_f32") == 0 && e.nargs == 8 &&
            e.arg_types[6] == DHX_KARG_I64 && e.arg_types[7] == DHX_KARG_F32,
        "table entry 0: %s %u", e.name, e.nargs);
  dhx_codegen_table_entry(cg, 1, &e);
  CHECK(strcmp(e.name, na) == 0 && e.nargs == 7, "table entry 1: %s %u", e.name, e.nargs);
  dhx_codegen_table_entry(cg, 2, &e);
  CHECK(strcmp(e.name, "layernorm_fwd_f64") == 0 && e.arg_types[7] == DHX_KARG_F64, "entry 2");
  printf("  ok table: deduplicated by name, entries without the dhxk_ prefix\n");

  // ---- invalid specs ----
  dhx_kernel_spec bad;
  bad = cgt_spec(DHX_K_COUNT, DHX_KT_F32);
  expect_invalid("unknown kind", bad);
  bad = cgt_spec(DHX_K_ADAMW, (dhx_ktype)2);
  expect_invalid("unknown type", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nodes[2].b = 2;  // uses itself
  expect_invalid("operand not before its user", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nodes[1].a = 2;
  expect_invalid("load of a missing input", bad);
  bad = spec_mix(DHX_KT_F32, false);
  bad.ew.nodes[2].a = 2;
  expect_invalid("missing scalar", bad);
  bad = spec_mix(DHX_KT_F32, false);
  for (int i = 0; i < bad.ew.nnodes; i++)
    if (bad.ew.nodes[i].op == DHX_EW_CONST) bad.ew.nodes[i].a = bad.ew.nconsts;
  expect_invalid("constant past the table", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.in_mod[1] = 0;
  expect_invalid("modulus 0", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.in_mode[1] = 7;
  expect_invalid("unknown input mode", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nodes[2].op = 99;
  expect_invalid("unknown op", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.out_node[0] = 3;
  expect_invalid("output of a missing node", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nout = 0;
  expect_invalid("no outputs", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nnodes = 0;
  expect_invalid("no nodes", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nnodes = DHX_EW_MAX_NODES + 1;
  expect_invalid("too many nodes", bad);
  bad = spec_pos_add(DHX_KT_F32, 35);
  bad.ew.nin = DHX_EW_MAX_IO + 1;
  expect_invalid("too many inputs", bad);
  bad = spec_mix(DHX_KT_F32, false);
  bad.ew.nscalars = 8;  // 3 + 2 + 8 > DHX_MAX_ARGS... and scalars 2..7 unused: still too many
  bad.ew.nin = 8;
  for (int j = 0; j < 8; j++) bad.ew.in_mode[j] = DHX_EW_FULL;
  expect_invalid("more arguments than a plan instruction holds", bad);

  // ---- the .ll, and errors from the host link ----
  cgt t;
  cgt_init(&t);
  cgt_add(&t, &ln);
  cgt_add(&t, &a);
  char path[400], err[1024] = "";
  snprintf(path, sizeof path, "%s/kernels.ll", t.dir);
  CHECK(dhx_codegen_emit_llvm(t.cg, path, err, sizeof err), "emit_llvm: %s", err);
  char *ll = cgt_slurp(path);
  CHECK(strstr(ll, "define void @dhxk_layernorm_fwd_f32(ptr") != NULL, "no host entry in .ll");
  CHECK(strstr(ll, "define internal void @dhxb_layernorm_fwd_f32(") != NULL, "no body in .ll");
  CHECK(strstr(ll, "llvm.loop.parallel_accesses") != NULL, "no parallel loops in .ll");
  CHECK(strstr(ll, "declare float @expf") == NULL && strstr(ll, "@exp(") == NULL, "libm in .ll");
  free(ll);
  unlink(path);
  printf("  ok .ll has bodies, host entries, parallel loop metadata and no libm\n");

  setenv("CC", "/bin/false", 1);
  CHECK(!dhx_codegen_emit_host_so(t.cg, t.so_path, err, sizeof err), "link with /bin/false");
  CHECK(strstr(err, "failed") != NULL, "link error message: %s", err);
  setenv("CC", "/nonexistent/cc", 1);
  CHECK(!dhx_codegen_emit_host_so(t.cg, t.so_path, err, sizeof err), "link with no compiler");
  CHECK(strstr(err, "cannot run") != NULL || strstr(err, "failed") != NULL, "message: %s", err);
  unsetenv("CC");
  CHECK(!dhx_codegen_emit_llvm(t.cg, "/nonexistent/dir/k.ll", err, sizeof err), "bad .ll path");
  CHECK(!dhx_codegen_emit_ptx(t.cg, "sm_80", "/nonexistent/dir/k.ptx", err, sizeof err),
        "bad .ptx path");
  printf("  ok link and write failures come back as errors (%s)\n", err);
  cgt_done(&t);
  dhx_codegen_free(cg);
  return 0;
}
