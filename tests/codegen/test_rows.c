// test_rows.c — the row kernels run a warp per row in the PTX (and the column sums a warp per
// column), and only they: for every catalogue kind (f32 and f64) and a fused elementwise
// kernel, the kernel table says 32 threads per index exactly for the kinds listed below as
// rows (1 for the others), and the PTX
// entry of each reducing row kernel combines its lanes with warp shuffles (shfl.sync.bfly)
// while no other entry has a shuffle; attention's f32 entries, and only they, take their
// exponentials from ex2.approx; every row kernel's entry takes its row as the global
// thread / 32 (a shift by 5) and its lane from tid.x. Whether the warp versions compute the
// right numbers needs a GPU (docs/gpu-validation.md); the host kernels, which the same bodies
// build serially, are checked against references by test_reference.c and test_fd.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_test.h"

// The kinds whose index is a row that the body loops over, and whether the body reduces the
// row (a sum or a max) or only maps it elementwise.
static const struct {
  dhx_kernel_kind kind;
  bool reduces;
} ROWS[] = {
    {DHX_K_EMBED_FWD, false},         {DHX_K_EMBED_VP_FWD, false},
    {DHX_K_LAYERNORM_FWD, true},      {DHX_K_LAYERNORM_BWD_DX, true},
    {DHX_K_RMSNORM_FWD, true},        {DHX_K_RMSNORM_BWD_DX, true},
    {DHX_K_SOFTMAX_CAUSAL_FWD, true}, {DHX_K_SOFTMAX_CAUSAL_BWD, true},
    {DHX_K_XENT_FWD, true},           {DHX_K_XENT_BWD, true},
    {DHX_K_XENT_VP_STATS, true},      {DHX_K_XENT_VP_BWD, false},
    {DHX_K_SUMSQ, true},  // a chunk of the gradients' sum of squares
    // A quantization group: the max and the NaN sentinel of the group are reduced where the
    // group is quantized; a dequantizing or transforming kernel only maps it chunk by chunk.
    {DHX_K_QUANTIZE, true},           {DHX_K_HADAMARD_QUANTIZE, true},
    {DHX_K_DEQUANTIZE_REDUCE_QUANTIZE, true},
    {DHX_K_DEQUANTIZE, false},        {DHX_K_DEQUANTIZE_HADAMARD, false},
    {DHX_K_DEQUANTIZE_REDUCE_HADAMARD, false}, {DHX_K_HADAMARD32, false},
    // Fused attention: a row per query (or key) and head, its dot products warp sums.
    {DHX_K_ATTN_FWD, true},           {DHX_K_ATTN_BWD_DOT, true},
    {DHX_K_ATTN_BWD_DQ, true},        {DHX_K_ATTN_BWD_DKV, true},
    // Column sums (DHX_KS_COLUMN_SUMS): a warp per column, its lanes splitting the rows.
    {DHX_K_COLSUM, true},             {DHX_K_LAYERNORM_BWD_DPARAMS, true},
    {DHX_K_RMSNORM_BWD_DGAMMA, true},
};

// -1: not a row kind; else whether it reduces.
static int row_kind(dhx_kernel_kind kind) {
  for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++)
    if (ROWS[i].kind == kind) return ROWS[i].reduces;
  return -1;
}

typedef struct added {
  int index;
  dhx_kernel_kind kind;
} added;

int main(void) {
  cgt t;
  cgt_init(&t);
  added ks[2 * DHX_K_COUNT];
  int n = 0, warps = 0;
  for (int ty = 0; ty < 2; ty++) {
    dhx_ktype type = ty ? DHX_KT_F64 : DHX_KT_F32;
    for (int k = 0; k < DHX_K_ELTWISE; k++) {
      dhx_kernel_spec s = cgt_spec((dhx_kernel_kind)k, type);
      ks[n++] = (added){cgt_add(&t, &s), (dhx_kernel_kind)k};
    }
    dhx_kernel_spec e = spec_bias_gelu(type, 37);
    ks[n++] = (added){cgt_add(&t, &e), DHX_K_ELTWISE};
  }

  char ptx[400], err[1024] = "";
  snprintf(ptx, sizeof ptx, "%s/rows.ptx", t.dir);
  CHECK(dhx_codegen_emit_ptx(t.cg, "sm_80", ptx, err, sizeof err), "emit_ptx: %s", err);
  char *text = cgt_slurp(ptx);
  for (int i = 0; i < n; i++) {
    dhx_plan_kernel e;
    dhx_codegen_table_entry(t.cg, ks[i].index, &e);
    int row = row_kind(ks[i].kind);
    uint32_t want = row >= 0 ? 32 : 1;
    CHECK(e.threads_per_index == want, "%s: %u threads per index, expected %u", e.name,
          e.threads_per_index, want);
    char *body = cgt_entry_text(text, e.name);
    bool shuffles = strstr(body, "shfl.sync.bfly") != NULL;
    CHECK(shuffles == (row == 1), "%s: %s warp shuffle", e.name, shuffles ? "a" : "no");
    // Attention's exponentials of scores are the special function unit's in f32 (and only
    // there: f64, and every other kernel, keep the polynomial).
    bool scores = ks[i].kind == DHX_K_ATTN_FWD || ks[i].kind == DHX_K_ATTN_BWD_DQ ||
                  ks[i].kind == DHX_K_ATTN_BWD_DKV;
    bool ex2 = strstr(body, "ex2.approx") != NULL;
    CHECK(ex2 == (scores && strstr(e.name, "_f32") != NULL), "%s: %s ex2.approx", e.name,
          ex2 ? "an" : "no");
    if (row >= 0) {
      CHECK(strstr(body, "%tid.x") && strstr(body, ", 5;") && strstr(body, ", 31;"),
            "%s: the entry does not take row = global thread >> 5 and lane = tid.x & 31",
            e.name);
      warps++;
    }
    free(body);
  }
  free(text);
  CHECK(warps == 2 * (int)(sizeof ROWS / sizeof ROWS[0]), "%d warp-per-row kernels", warps);
  printf("%d kernels: %d a warp per row\n", n, warps);
  unlink(ptx);
  cgt_done(&t);
  return 0;
}
