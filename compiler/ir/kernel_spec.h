// kernel_spec.h — what a kernel launch of the op list names: a catalogue kernel or a fused
// elementwise expression, and its element type. The code generator (compiler/codegen/kernels.h)
// builds each of these; the IR only names them, so this is all of the catalogue it needs.
//
// Conventions below: row-major, `idx` is the index a kernel instance computes, n the size of
// the index space the plan launches. "(+)=" means: add when `accumulate` is non-zero,
// otherwise overwrite. Pointer arguments are to the kernel's dtype unless marked i32.
// Aliasing: an output may share memory with another argument only where an entry below says
// so (always element for element: the same buffer at the same offset); otherwise the code
// generator declares the pointers noalias. Fused elementwise kernels may compute in place:
// an output may be the same buffer as a DHX_EW_FULL input (never as a DHX_EW_MOD one).
#ifndef DHX_KERNEL_SPEC_H
#define DHX_KERNEL_SPEC_H

#include <stdint.h>

typedef enum { DHX_KT_F32 = 0, DHX_KT_F64 = 1 } dhx_ktype;

typedef enum {
  // (out, tokens:i32, table, i64 C)             idx = row r < rows
  //   out[r,c] = table[tokens[r], c]
  DHX_K_EMBED_FWD,
  // (dtable, tokens:i32, dout, i64 rows, i64 C)  idx = column c < C
  //   for r < rows: dtable[tokens[r], c] += dout[r, c]
  DHX_K_EMBED_BWD,
  // (out, mean, rstd, x, gamma, beta, i64 C, f eps)   idx = row
  //   mean[r] = mean(x[r,:]); rstd[r] = 1/sqrt(var(x[r,:]) + eps)  (biased variance)
  //   out[r,c] = (x[r,c] - mean[r]) * rstd[r] * gamma[c] + beta[c]
  DHX_K_LAYERNORM_FWD,
  // (dx, dout, x, mean, rstd, gamma, i64 C, i64 accumulate)   idx = row
  //   xhat = (x-mean)*rstd; g = dout*gamma;
  //   dx[r,c] (+)= rstd * (g[c] - mean(g) - xhat[c] * mean(g*xhat))
  DHX_K_LAYERNORM_BWD_DX,
  // (dgamma, dbeta, dout, x, mean, rstd, i64 rows, i64 C)   idx = column c
  //   dgamma[c] += sum_r dout[r,c]*xhat[r,c];  dbeta[c] += sum_r dout[r,c]
  DHX_K_LAYERNORM_BWD_DPARAMS,
  // (P, S, i64 T, f scale)   idx = row r of a [*, T, T] score tensor; t = r % T
  //   P[r,j] = exp(scale*S[r,j] - max) / sum for j <= t, 0 for j > t.  P may alias S.
  DHX_K_SOFTMAX_CAUSAL_FWD,
  // (dS, dP, P, i64 T, f scale)   idx = row
  //   dS[r,j] = scale * P[r,j] * (dP[r,j] - sum_k P[r,k]*dP[r,k]).  dS may alias dP.
  DHX_K_SOFTMAX_CAUSAL_BWD,
  // (loss, logits, targets:i32, i64 V)   idx = row
  //   loss[r] = logsumexp(logits[r,:]) - logits[r, targets[r]]
  //   A target outside [0, V) gives loss NaN (and no one-hot term in XENT_BWD), never an
  //   out-of-bounds read.
  DHX_K_XENT_FWD,
  // (dlogits, logits, targets:i32, i64 V, f scale)   idx = row
  //   dlogits[r,j] = scale * (softmax(logits[r,:])[j] - (j == targets[r]))
  //   dlogits may alias logits.
  DHX_K_XENT_BWD,
  // (param, grad, m, v, f lr, f beta1, f beta2, f eps, f wd, f bc1, f bc2, clip)
  //   idx = element:  s = clip[0] (the clip scale GRAD_NORM wrote, read on the device, so no
  //   host round trip); s NaN: nothing is read or written (a non-finite gradient norm skips
  //   the update). Otherwise g = grad*s; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
  //   param -= lr * ((m/bc1) / (sqrt(v/bc2) + eps) + wd*param)
  DHX_K_ADAMW,
  // (out, x, i64 count, i64 chunk)   idx = chunk k
  //   out[k] = sum of x[i]^2 for i in [k*chunk, min(count, (k+1)*chunk)), accumulated in f64
  DHX_K_SUMSQ,
  // (out, in, i64 rows, i64 m, i64 accumulate)   idx = j < m
  //   out[j] (+)= sum_r in[r*m + j]
  DHX_K_COLSUM,
  // (out, rstd, x, gamma, i64 C, f eps)   idx = row
  //   rstd[r] = 1/sqrt(mean(x[r,:]^2) + eps);  out[r,c] = x[r,c] * rstd[r] * gamma[c]
  DHX_K_RMSNORM_FWD,
  // (dx, dout, x, rstd, gamma, i64 C, i64 accumulate)   idx = row
  //   xhat = x*rstd; g = dout*gamma;  dx[r,c] (+)= rstd * (g[c] - xhat[c] * mean(g*xhat))
  DHX_K_RMSNORM_BWD_DX,
  // (dgamma, dout, x, rstd, i64 rows, i64 C)   idx = column c
  //   dgamma[c] += sum_r dout[r,c] * x[r,c] * rstd[r]
  DHX_K_RMSNORM_BWD_DGAMMA,
  // (out, x, i64 S, i64 D, i64 hs, f base, f sign)   idx = pair p < rows * D/2
  //   Rotary position embedding over rows of D = heads*hs, position s = row % S, pairs
  //   (i, i + hs/2) of every head (the half-split convention of GPT-NeoX and Llama in HF):
  //   theta = s * base^(-2i/hs), computed in f64;  with sn = sign * sin(theta):
  //   out[a] = x[a] cos - x[b] sn,  out[b] = x[a] sn + x[b] cos.  sign -1 is the inverse
  //   rotation (the backward).  out may alias x.
  DHX_K_ROPE,
  // (out, in, i64 X, i64 Y, i64 W)   idx = out row r < B*Y*X
  //   in is [B, X, Y, W], out is [B, Y, X, W]: out[b, y, x, :] = in[b, x, y, :]
  //   (heads to the front for attention and back; the same kernel with X, Y swapped undoes it)
  DHX_K_PERMUTE,
  // ---- vocabulary-parallel embedding and cross-entropy (tensor parallelism) -----------------
  // The table or the logits hold the vocabulary rows [lo, lo + Vl) of the whole model; token
  // and target ids are global. An id outside the shard contributes nothing on this rank.
  // (out, tokens:i32, table, i64 C, i64 lo, i64 Vl)   idx = row r
  //   out[r,c] = table[tokens[r] - lo, c] if lo <= tokens[r] < lo + Vl, else 0
  DHX_K_EMBED_VP_FWD,
  // (dtable, tokens:i32, dout, i64 rows, i64 C, i64 lo, i64 Vl)   idx = column c < C
  //   for r < rows with lo <= tokens[r] < lo + Vl: dtable[tokens[r] - lo, c] += dout[r, c]
  DHX_K_EMBED_VP_BWD,
  // (stats, logits, targets:i32, i64 V, i64 lo, i64 K, i64 rows)   idx = row r < rows
  //   Statistics of this rank's slice of the row (logits [rows, V] hold the vocabulary ids
  //   [lo, lo + V)), stored planar, K >= 3 planes of `rows` values:
  //   stats[0*rows + r] = m = max_j logits[r,j];  stats[1*rows + r] = sum_j exp(logits[r,j] - m)
  //   stats[2*rows + r] = logits[r, targets[r] - lo] if lo <= targets[r] < lo + V, else 0
  //   (K < 3: writes nothing.)
  DHX_K_XENT_VP_STATS,
  // (loss, lse, parts, targets:i32, i64 PK, i64 rows, i64 K, i64 Vtotal)   idx = row r
  //   parts holds P = PK / K ranks' stats one after another ([P][K][rows], as an all-gather
  //   leaves them): M = max_p m_p;  S = sum_p s_p exp(m_p - M);  lse[r] = M + log S;
  //   loss[r] = lse[r] - sum_p t_p, or NaN when targets[r] is outside [0, Vtotal).
  //   (K < 3 or PK < K: loss[r] and lse[r] are NaN.)
  DHX_K_XENT_VP_COMBINE,
  // (dlogits, logits, lse, targets:i32, i64 V, i64 lo, f scale)   idx = row r
  //   dlogits[r,j] = scale * (exp(logits[r,j] - lse[r]) - (j == targets[r] - lo))
  //   dlogits may alias logits.
  DHX_K_XENT_VP_BWD,
  // ---- communication compression (SDP4Bit; docs/compression.md) ------------------------------
  // Symmetric group-wise quantization, one group of G elements per index g. A group's codes
  // are packed into `words` i32 words, `per_word` codes each: per_word 8 gives 4-bit codes,
  // 4 gives 8-bit codes (bits = 32 / per_word), so G = words * per_word. Code c of a word sits
  // in bits [c*bits, (c+1)*bits) (little end first), two's complement, in [-qmax, qmax] with
  // qmax = 2^(bits-1) - 1; element j of group g is code j % per_word of word g*words +
  // j / per_word. scales[g] = max_j |v_j| / qmax (0 for an all-zero group; NaN when a value is
  // NaN or infinite, so the whole group dequantizes to NaN). A value v becomes
  // t = v / scale (0 when scale is 0) rounded to nearest even (stochastic = 0) or to
  // floor(t + u) (stochastic != 0), then clamped to [-qmax, qmax]; u in [0, 1) is
  // counter-based: u = top 24 (f32) or 53 (f64) bits of splitmix64(seed, counter) as a
  // fraction, counter = offset + g*G + j (the value's element index in the launch, plus
  // offset), splitmix64(s, c) = mix(s + (c + 1) * 0x9E3779B97F4A7C15) in 64-bit wrap-around
  // arithmetic, mix = splitmix64's finaliser. Dequantized: code * scale. Hadamard kernels transform each block of 32 elements with H32/sqrt(32)
  // (Sylvester order, orthonormal and its own inverse) and need G % 32 == 0; the others need
  // G % 8 == 0. A group whose arguments break these rules (per_word not 4 or 8, words < 1, G
  // not a multiple, or as a kind says) is left as it was: nothing is read or written.
  // (codes:i32, scales, x, ref, i64 words, i64 per_word, i64 subtract, i64 stochastic,
  //  i64 seed, i64 offset)   idx = group g
  //   v_j = x[g*G + j] - ref[g*G + j] if subtract != 0, else x[g*G + j] (ref not read);
  //   quantized into the group's words of codes and scales[g]
  DHX_K_QUANTIZE,
  // (out, codes:i32, scales, i64 words, i64 per_word, i64 accumulate)   idx = group g
  //   out[g*G + j] (+)= code_j * scales[g]
  DHX_K_DEQUANTIZE,
  // (out, x, i64 G)   idx = group g (G % 32 == 0)
  //   out[g*G + 32b + i] = sum_j H32[i,j] x[g*G + 32b + j] / sqrt(32) for every block b,
  //   H32[i,j] = (-1)^popcount(i & j).
  //   out may alias x.
  DHX_K_HADAMARD32,
  // (codes:i32, scales, x, i64 words, i64 per_word, i64 stochastic, i64 seed, i64 offset)
  //   idx = group g:  v = the HADAMARD32 transform of x's group, quantized as QUANTIZE does
  //   (the counter of v_j is offset + g*G + j)
  DHX_K_HADAMARD_QUANTIZE,
  // (out, codes:i32, scales, i64 words, i64 per_word, i64 accumulate)   idx = group g
  //   out[g*G + ...] (+)= the HADAMARD32 transform of the group's dequantized values
  DHX_K_DEQUANTIZE_HADAMARD,
  // (codes_out:i32, scales_out, codes_in:i32, scales_in, i64 p, i64 row_words,
  //  i64 row_groups, i64 words_in, i64 per_word_in, i64 words_out, i64 per_word_out,
  //  i64 stochastic, i64 seed, i64 offset)   idx = group g
  //   p packed inputs, input q's words from codes_in[q*row_words], its scales from
  //   scales_in[q*row_groups] (as an all-to-all leaves p rows of groups):
  //   v_j = sum_q code_qj * scale_q, requantized (G = words_in*per_word_in must equal
  //   words_out*per_word_out) into codes_out's group g and scales_out[g]. Needs
  //   g < row_groups and (g+1)*words_in <= row_words.
  DHX_K_DEQUANTIZE_REDUCE_QUANTIZE,
  // (out, codes_in:i32, scales_in, i64 p, i64 row_words, i64 row_groups, i64 words,
  //  i64 per_word, i64 accumulate)   idx = group g
  //   out[g*G + ...] (+)= the HADAMARD32 transform of v_j = sum_q code_qj * scale_q, the
  //   inputs as in DEQUANTIZE_REDUCE_QUANTIZE (with the same conditions)
  DHX_K_DEQUANTIZE_REDUCE_HADAMARD,
  // (scale, norm, partials, i64 count, d max_norm)   idx = 0 only (launched with n = 1)
  //   The global gradient norm and the clip scale, as OP_GRAD_NORM defines them: sum =
  //   partials[0] + ... + partials[count-1] in f64, in index order; norm[0] = sqrt(sum);
  //   scale[0] = min(1, max_norm / (norm + 1e-6)) when max_norm > 0, else 1; scale[0] = NaN
  //   when the norm is not finite (ADAMW then leaves everything as it is).
  //   max_norm is an f64 argument in both variants ('d'), so the f32 kernel computes the
  //   scale from the same double as the CPU backend's host code.
  DHX_K_GRAD_NORM,
  // Fused causal attention (kernel_attn.c; a row per query or key position and head, the
  // layouts there): flags bit 0 = the (first) gradient accumulates, bit 1 = the second does,
  // bit 2 = q, k and v are one fused [B·S, 3·H·hs] projection.
  // (out, lse, q, k, v, S, H, G, hs, qs, ks, flags, f scale)   query row r = (b·H + h)·S + i:
  //   out = softmax(scale · q_i k_j^T over keys j <= i) v, lse = log-sum-exp of those scores
  DHX_K_ATTN_FWD,
  // (dsum, dout, out, S, H, hs)   query row r: dsum[r] = dot(dout row, out row)
  DHX_K_ATTN_BWD_DOT,
  // (dq, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, f scale)   query row r:
  //   dq (+)= scale · sum_j P_ij (dout_i · v_j - dsum_i) k_j,  P_ij = exp(scale q_i·k_j - lse_i)
  DHX_K_ATTN_BWD_DQ,
  // (dk, dv, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, f scale)   key row
  //   r = (b·G + g)·S + j over queries i >= j of the heads of kv head g:
  //   dv (+)= sum P_ij dout_i, dk (+)= scale · sum P_ij (dout_i · v_j - dsum_i) q_i
  DHX_K_ATTN_BWD_DKV,
  // A fused chain of elementwise operations, described by a dhx_ew_spec.
  DHX_K_ELTWISE,
  DHX_K_COUNT
} dhx_kernel_kind;

// ---- fused elementwise kernels --------------------------------------------------------------
// Signature: (outputs..., inputs..., scalars as f) ; idx = element i < n.
// Input k is read at i (mode DHX_EW_FULL) or at i % mod (DHX_EW_MOD: a bias broadcast over
// rows uses mod = C; a positional table broadcast over the batch uses mod = T*C).
#define DHX_EW_MAX_NODES 32
#define DHX_EW_MAX_IO 8
#define DHX_EW_MAX_CONSTS 16

typedef enum {
  DHX_EW_LOAD,      // a = input index
  DHX_EW_SCALAR,    // a = scalar index
  DHX_EW_CONST,     // a = index into the spec's consts
  DHX_EW_ADD, DHX_EW_SUB, DHX_EW_MUL, DHX_EW_DIV,  // a, b = node indices
  DHX_EW_NEG, DHX_EW_EXP, DHX_EW_LOG, DHX_EW_TANH, DHX_EW_SQRT,  // a
  // (exp, log, tanh, gelu are computed in IR, no libm: a few ulp in f32, ~1e-15 relative in
  // f64; exp flushes results below the smallest normal number to zero — ir_math.c)
  DHX_EW_GELU,      // a: 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))
  DHX_EW_GELU_GRAD, // a = x, b = dy: dy * d gelu(x)/dx
  DHX_EW_SILU,      // a: a sigma(a)
  DHX_EW_SILU_GRAD, // a = x, b = dy: dy * d silu(x)/dx
} dhx_ew_op;

typedef enum { DHX_EW_FULL = 0, DHX_EW_MOD = 1 } dhx_ew_mode;

// Three bytes: a lowered op carries a whole spec, and a paper-scale stage holds hundreds of
// thousands of ops, so constants live in the spec's table rather than in every node.
typedef struct dhx_ew_node {
  uint8_t op;   // dhx_ew_op
  uint8_t a, b; // operands (node indices; input/scalar/constant index for LOAD/SCALAR/CONST)
} dhx_ew_node;

typedef struct dhx_ew_spec {
  uint8_t nin, nout, nscalars, nnodes;
  uint8_t in_mode[DHX_EW_MAX_IO];    // dhx_ew_mode
  int64_t in_mod[DHX_EW_MAX_IO];     // DHX_EW_MOD: the modulus (baked into the kernel)
  dhx_ew_node nodes[DHX_EW_MAX_NODES];  // in evaluation order; operands precede users
  uint8_t out_node[DHX_EW_MAX_IO];   // node stored to output k
  uint8_t out_accumulate[DHX_EW_MAX_IO];  // 1: out[i] += value; 0: out[i] = value
  uint8_t nconsts;
  double consts[DHX_EW_MAX_CONSTS];  // the CONST nodes' values, each distinct value once
} dhx_ew_spec;

typedef struct dhx_kernel_spec {
  dhx_kernel_kind kind;
  dhx_ktype type;
  // Mixed precision (f32 kernels only): bit j set stores pointer argument j (a floating one,
  // never an i32 'q' pointer) as bf16. The kernel computes in f32 as ever: it widens what it
  // loads from such an argument and rounds what it stores to it to nearest even (NaN stays
  // NaN). A kind's arguments that the kernel reads back after writing them within one index
  // (dhx_kernel_f32_only) cannot be bf16.
  uint16_t bf16;
  dhx_ew_spec ew;  // DHX_K_ELTWISE only (zeroed otherwise)
} dhx_kernel_spec;

#endif
