// kernel_access.c — what each kernel of the catalogue reaches through its pointer arguments,
// written into the plan's kernel table (dhx_plan_access, runtime/plan.h) so that the plan
// validator can bound every launch by its index space and i64 arguments. Each row restates
// the access pattern kernels.h documents for the kind; the argument numbers are positions in
// the kernel's signature.
#include "codegen_internal.h"

#define W DHX_ACC_WRITES
#define IDS DHX_ACC_TOKEN_IDS
// Forms with the i64 argument positions they use (-1: none).
#define ELEMS(x, fl) {DHX_ACC_ELEMS, fl, 0, x, -1, -1, 0}
#define FIXED(x, fl) {DHX_ACC_FIXED, fl, 0, x, -1, -1, 0}
#define COLUMNS(rows, width) {DHX_ACC_COLUMNS, 0, 0, rows, width, -1, 0}
#define TABLE(width, span, fl) {DHX_ACC_TABLE, fl, 0, width, span, -1, 0}
#define NONE {DHX_ACC_NONE, 0, 0, -1, -1, -1, 0}
#define FIXED2(x, y, fl) {DHX_ACC_FIXED, fl, 0, x, y, -1, 0}
#define COLUMNS_W(rows, width) {DHX_ACC_COLUMNS, W, 0, rows, width, -1, 0}
#define ELEMS2(x, y, fl) {DHX_ACC_ELEMS, fl, 0, x, y, -1, 0}
#define ROWS(x, y, z, fl) {DHX_ACC_ROWS, fl, 0, x, y, z, 0}

static const dhx_plan_access CATALOGUE[DHX_K_COUNT][DHX_MAX_ARGS] = {
    // (out, tokens, table, C)   row r: out[r,:] = table[tokens[r],:]
    [DHX_K_EMBED_FWD] = {ELEMS(3, W), ELEMS(-1, IDS), TABLE(3, 3, 0), NONE},
    // (dtable, tokens, dout, rows, C)   column c < n: dtable[tokens[r], c] += dout[r, c]
    [DHX_K_EMBED_BWD] = {TABLE(4, -1, W), FIXED(3, IDS), COLUMNS(3, 4), NONE, NONE},
    // (out, mean, rstd, x, gamma, beta, C, eps)   row
    [DHX_K_LAYERNORM_FWD] = {ELEMS(6, W), ELEMS(-1, W), ELEMS(-1, W), ELEMS(6, 0), FIXED(6, 0),
                             FIXED(6, 0), NONE, NONE},
    // (dx, dout, x, mean, rstd, gamma, C, accumulate)   row
    [DHX_K_LAYERNORM_BWD_DX] = {ELEMS(6, W), ELEMS(6, 0), ELEMS(6, 0), ELEMS(-1, 0),
                                ELEMS(-1, 0), FIXED(6, 0), NONE, NONE},
    // (dgamma, dbeta, dout, x, mean, rstd, rows, C)   column
    [DHX_K_LAYERNORM_BWD_DPARAMS] = {ELEMS(-1, W), ELEMS(-1, W), COLUMNS(6, 7), COLUMNS(6, 7),
                                     FIXED(6, 0), FIXED(6, 0), NONE, NONE},
    // (P, S, T, scale)   row of T
    [DHX_K_SOFTMAX_CAUSAL_FWD] = {ELEMS(2, W), ELEMS(2, 0), NONE, NONE},
    // (dS, dP, P, T, scale)   row of T
    [DHX_K_SOFTMAX_CAUSAL_BWD] = {ELEMS(3, W), ELEMS(3, 0), ELEMS(3, 0), NONE, NONE},
    // (loss, logits, targets, V)   row of V; targets are range-checked by the kernel
    [DHX_K_XENT_FWD] = {ELEMS(-1, W), ELEMS(3, 0), ELEMS(-1, 0), NONE},
    // (dlogits, logits, targets, V, scale)   row of V
    [DHX_K_XENT_BWD] = {ELEMS(3, W), ELEMS(3, 0), ELEMS(-1, 0), NONE, NONE},
    // (param, grad, m, v, scalars..., clip)   element; clip: its one scale whatever n
    [DHX_K_ADAMW] = {ELEMS(-1, W), ELEMS(-1, 0), ELEMS(-1, W), ELEMS(-1, W), NONE, NONE, NONE,
                     NONE, NONE, NONE, NONE, FIXED(-1, 0)},
    // (out, x, count, chunk)   chunk k: x[k*chunk, min(count, (k+1)*chunk))
    [DHX_K_SUMSQ] = {ELEMS(-1, W), {DHX_ACC_CHUNKS, 0, 0, 2, 3, -1, 0}, NONE, NONE},
    // (scale, norm, partials, count, max_norm)   one index: one scale, one norm, all partials
    [DHX_K_GRAD_NORM] = {FIXED(-1, W), FIXED(-1, W), FIXED(3, 0), NONE, NONE},
    // (out, in, rows, m, accumulate)   column j
    [DHX_K_COLSUM] = {ELEMS(-1, W), COLUMNS(2, 3), NONE, NONE, NONE},
    // (out, rstd, x, gamma, C, eps)   row
    [DHX_K_RMSNORM_FWD] = {ELEMS(4, W), ELEMS(-1, W), ELEMS(4, 0), FIXED(4, 0), NONE, NONE},
    // (dx, dout, x, rstd, gamma, C, accumulate)   row
    [DHX_K_RMSNORM_BWD_DX] = {ELEMS(5, W), ELEMS(5, 0), ELEMS(5, 0), ELEMS(-1, 0), FIXED(5, 0),
                              NONE, NONE},
    // (dgamma, dout, x, rstd, rows, C)   column
    [DHX_K_RMSNORM_BWD_DGAMMA] = {ELEMS(-1, W), COLUMNS(4, 5), COLUMNS(4, 5), FIXED(4, 0), NONE,
                                  NONE},
    // (out, x, S, D, hs, base, sign)   pair p of rows of D
    [DHX_K_ROPE] = {{DHX_ACC_PAIRS, W, 0, 3, 4, 2, 0}, {DHX_ACC_PAIRS, 0, 0, 3, 4, 2, 0}, NONE,
                    NONE, NONE, NONE, NONE},
    // (out, in, X, Y, W)   out row r of W
    [DHX_K_PERMUTE] = {ELEMS(4, W), {DHX_ACC_PERMUTED, 0, 0, 2, 3, 4, 0}, NONE, NONE, NONE},
    // Vocabulary shards: ids are range-checked by the kernels (never table rows outside
    // [0, Vl)), so the tokens and targets are plain reads, not TOKEN_IDS.
    // (out, tokens, table, C, lo, Vl)   row r: out[r,:] = table[tokens[r] - lo,:] or 0
    [DHX_K_EMBED_VP_FWD] = {ELEMS(3, W), ELEMS(-1, 0), FIXED2(5, 3, 0), NONE, NONE, NONE},
    // (dtable, tokens, dout, rows, C, lo, Vl)   column c < n: dtable[tokens[r] - lo, c] += ...
    //   the last row reaches column n - 1, as EMBED_BWD's TABLE form: (Vl-1)·C + n, which is
    //   Vl·C for n = C (FIXED(Vl, C) would not bound a launch with n > C)
    [DHX_K_EMBED_VP_BWD] = {COLUMNS_W(6, 4), FIXED(3, 0), COLUMNS(3, 4), NONE, NONE, NONE, NONE},
    // (stats, logits, targets, V, lo, K, rows)   row r writes column r of planes 0..2 of the
    //   K planes of width rows (none when K < 3): (K-1)·rows + n
    [DHX_K_XENT_VP_STATS] = {COLUMNS_W(5, 6), ELEMS(3, 0), ELEMS(-1, 0), NONE, NONE, NONE, NONE},
    // (loss, lse, parts, targets, PK, rows, K, Vtotal)   row r reads column r of parts rows
    //   p·K + c (p < PK/K, c < 3), all below PK: (PK-1)·rows + n
    [DHX_K_XENT_VP_COMBINE] = {ELEMS(-1, W), ELEMS(-1, W), COLUMNS(4, 5), ELEMS(-1, 0), NONE,
                               NONE, NONE, NONE},
    // (dlogits, logits, lse, targets, V, lo, scale)   row of V
    [DHX_K_XENT_VP_BWD] = {ELEMS(4, W), ELEMS(4, 0), ELEMS(-1, 0), ELEMS(-1, 0), NONE, NONE,
                           NONE},
    // Compression: group g of G = words·per_word elements, `words` code words, one scale.
    // (codes, scales, x, ref, words, per_word, subtract, stochastic, seed, offset)
    [DHX_K_QUANTIZE] = {ELEMS(4, W), ELEMS(-1, W), ELEMS2(4, 5, 0), ELEMS2(4, 5, 0), NONE, NONE,
                        NONE, NONE, NONE, NONE},
    // (out, codes, scales, words, per_word, accumulate)
    [DHX_K_DEQUANTIZE] = {ELEMS2(3, 4, W), ELEMS(3, 0), ELEMS(-1, 0), NONE, NONE, NONE},
    // (out, x, G)
    [DHX_K_HADAMARD32] = {ELEMS(2, W), ELEMS(2, 0), NONE},
    // (codes, scales, x, words, per_word, stochastic, seed, offset)
    [DHX_K_HADAMARD_QUANTIZE] = {ELEMS(3, W), ELEMS(-1, W), ELEMS2(3, 4, 0), NONE, NONE, NONE,
                                 NONE, NONE},
    // (out, codes, scales, words, per_word, accumulate)
    [DHX_K_DEQUANTIZE_HADAMARD] = {ELEMS2(3, 4, W), ELEMS(3, 0), ELEMS(-1, 0), NONE, NONE, NONE},
    // (codes_out, scales_out, codes_in, scales_in, p, row_words, row_groups, words_in,
    //  per_word_in, words_out, per_word_out, stochastic, seed, offset): the inputs are p rows,
    //  whole whatever n (a group past a row reads nothing)
    [DHX_K_DEQUANTIZE_REDUCE_QUANTIZE] = {ELEMS(9, W), ELEMS(-1, W), FIXED2(4, 5, 0),
                                          FIXED2(4, 6, 0), NONE, NONE, NONE, NONE, NONE, NONE,
                                          NONE, NONE, NONE, NONE},
    // (out, codes_in, scales_in, p, row_words, row_groups, words, per_word, accumulate)
    [DHX_K_DEQUANTIZE_REDUCE_HADAMARD] = {ELEMS2(6, 7, W), FIXED2(3, 4, 0), FIXED2(3, 5, 0), NONE,
                                          NONE, NONE, NONE, NONE, NONE},
    // Attention (kernel_attn.c): q, k and v are [B·S, stride] projections, ROWS(heads, stride):
    // the n = B·heads·S rows of a launch reach B·S rows of `stride` elements.
    // (out, lse, q, k, v, S, H, G, hs, qs, ks, flags, scale)   n = B·H·S
    [DHX_K_ATTN_FWD] = {ELEMS(8, W), ELEMS(-1, W), ROWS(6, 9, -1, 0), ROWS(6, 10, -1, 0),
                        ROWS(6, 10, -1, 0), NONE, NONE, NONE, NONE, NONE, NONE, NONE, NONE},
    // (dsum, dout, out, S, H, hs)   n = B·H·S
    [DHX_K_ATTN_BWD_DOT] = {ELEMS(-1, W), ELEMS(5, 0), ELEMS(5, 0), NONE, NONE, NONE},
    // (dq, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   n = B·H·S
    [DHX_K_ATTN_BWD_DQ] = {ROWS(8, 11, -1, W), ROWS(8, 11, -1, 0), ROWS(8, 12, -1, 0),
                           ROWS(8, 12, -1, 0), ELEMS(10, 0), ELEMS(-1, 0), ELEMS(-1, 0), NONE,
                           NONE, NONE, NONE, NONE, NONE, NONE, NONE},
    // (dk, dv, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   n = B·G·S: dout
    // is B·S·H·hs, lse and dsum B·S·H
    [DHX_K_ATTN_BWD_DKV] = {ROWS(10, 13, -1, W), ROWS(10, 13, -1, W), ROWS(10, 12, -1, 0),
                            ROWS(10, 13, -1, 0), ROWS(10, 13, -1, 0), ROWS(10, 9, 11, 0),
                            ROWS(10, 9, -1, 0), ROWS(10, 9, -1, 0), NONE, NONE, NONE, NONE, NONE,
                            NONE, NONE, NONE},
};

// Fused elementwise kernels: outputs and full inputs by element, broadcast inputs modulo their
// baked-in modulus.
static void eltwise_access(const dhx_ew_spec *e, dhx_plan_access *out) {
  int n = 0;
  for (int k = 0; k < e->nout; k++) out[n++] = (dhx_plan_access)ELEMS(-1, W);
  for (int j = 0; j < e->nin; j++) {
    out[n] = (dhx_plan_access)ELEMS(-1, 0);
    if (e->in_mode[j] == DHX_EW_MOD) {
      out[n].form = DHX_ACC_MOD;
      out[n].c = e->in_mod[j];
    }
    n++;
  }
  for (int s = 0; s < e->nscalars; s++) out[n++] = (dhx_plan_access)NONE;
}

void dhx_kernel_access(const dhx_kernel_spec *spec, dhx_plan_access access[DHX_MAX_ARGS]) {
  for (int i = 0; i < DHX_MAX_ARGS; i++) access[i] = (dhx_plan_access)NONE;
  if (!dhx_kernel_spec_valid(spec, NULL, 0)) return;
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(spec, codes);
  if (spec->kind == DHX_K_ELTWISE) eltwise_access(&spec->ew, access);
  for (int i = 0; i < n; i++) {
    if (spec->kind != DHX_K_ELTWISE) access[i] = CATALOGUE[spec->kind][i];
    // Element sizes follow the signature: i32 pointers ('q') 4 bytes, bf16 ones 2, others the
    // kernel's type.
    if (codes[i] == 'p' || codes[i] == 'q')
      access[i].elem_bytes = codes[i] == 'q' || spec->type == DHX_KT_F32 ? 4 : 8;
    if (spec->bf16 & (1u << i)) access[i].elem_bytes = 2;
  }
}

bool dhx_kernel_arg_writes(const dhx_kernel_spec *spec, int j) {
  dhx_plan_access access[DHX_MAX_ARGS];
  if (j < 0 || j >= DHX_MAX_ARGS) return false;
  dhx_kernel_access(spec, access);
  return (access[j].flags & DHX_ACC_WRITES) != 0;
}
