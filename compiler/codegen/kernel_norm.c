// kernel_norm.c — layer normalisation: forward and input gradient one row per index (a warp
// per row in the PTX: the row loops and sums are ir_rows.c's), the parameter gradients one
// column per index (so no two indices write the same gamma/beta; a warp per column in the
// PTX, its lanes splitting the rows).
//
// Rows are read several times (mean, variance, write): a row of a few thousand floats stays
// in L1/L2 between the passes, and the two-pass variance avoids the cancellation of
// E[x^2] - E[x]^2. Every pass is a simple loop the vectoriser turns into SIMD code.
#include "codegen_internal.h"

// sum over c < C of x[base + c], or of (x[base + c] - center)^2 when center is given.
static LLVMValueRef row_sum(kb *k, LLVMValueRef x, LLVMValueRef base, LLVMValueRef C,
                            LLVMValueRef center) {
  LLVMValueRef acc = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "sum");
  LLVMValueRef v = kb_load(k, x, kb_iadd(k, base, c));
  if (center) {
    v = kb_sub(k, v, center);
    v = kb_mul(k, v, v);
  }
  kb_set(k, acc, kb_radd(k, kb_get(k, acc), v));
  kb_row_loop_end(k, &L, true);
  return kb_row_sum(k, kb_get(k, acc));
}

// (out, mean, rstd, x, gamma, beta, C, eps)   idx = row r
void dhx_emit_layernorm_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                            LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], mean = a[1], rstd = a[2], x = a[3], gamma = a[4], beta = a[5];
  LLVMValueRef C = a[6], eps = a[7];
  LLVMValueRef base = kb_imul(k, r, C), cf = kb_to_f(k, C);
  LLVMValueRef mu = kb_div(k, row_sum(k, x, base, C, NULL), cf);
  LLVMValueRef var = kb_div(k, row_sum(k, x, base, C, mu), cf);
  LLVMValueRef rs = kb_div(k, kb_fc(k, 1.0), kb_sqrt(k, kb_add(k, var, eps)));
  kb_row_if first;
  kb_row_owner_begin(k, &first, kb_i64c(k, 0));
  kb_store_s(k, mu, mean, r);
  kb_store_s(k, rs, rstd, r);
  kb_row_owner_end(k, &first);
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "norm");
  LLVMValueRef i = kb_iadd(k, base, c);
  LLVMValueRef xhat = kb_mul(k, kb_sub(k, kb_load(k, x, i), mu), rs);
  kb_store(k, kb_fma(k, xhat, kb_load(k, gamma, c), kb_load(k, beta, c)), out, i);
  kb_row_loop_end(k, &L, true);
}

// One write pass of the dx kernel; `acc` chooses += or = at build time so the hot loop has
// no branch and the overwriting version never reads dx.
static void dx_pass(kb *k, LLVMValueRef *a, LLVMValueRef base, LLVMValueRef mu, LLVMValueRef rs,
                    LLVMValueRef mg, LLVMValueRef mgx, bool acc) {
  LLVMValueRef dx = a[0], dout = a[1], x = a[2], gamma = a[5], C = a[6];
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, acc ? "dx_add" : "dx");
  LLVMValueRef i = kb_iadd(k, base, c);
  LLVMValueRef g = kb_mul(k, kb_load(k, dout, i), kb_load(k, gamma, c));
  LLVMValueRef xhat = kb_mul(k, kb_sub(k, kb_load(k, x, i), mu), rs);
  LLVMValueRef v = kb_mul(k, rs, kb_sub(k, kb_sub(k, g, mg), kb_mul(k, xhat, mgx)));
  if (acc) v = kb_add(k, kb_load(k, dx, i), v);
  kb_store(k, v, dx, i);
  kb_row_loop_end(k, &L, true);
}

// (dx, dout, x, mean, rstd, gamma, C, accumulate)   idx = row r
//   g = dout*gamma; dx (+)= rstd * (g - mean(g) - xhat * mean(g*xhat))
void dhx_emit_layernorm_bwd_dx(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                               LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dout = a[1], x = a[2], mean = a[3], rstd = a[4], gamma = a[5], C = a[6];
  LLVMValueRef base = kb_imul(k, r, C), cf = kb_to_f(k, C);
  LLVMValueRef mu = kb_load_s(k, mean, r), rs = kb_load_s(k, rstd, r);
  LLVMValueRef sg = kb_var(k, k->f, kb_fc(k, 0.0)), sgx = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "dots");
  LLVMValueRef i = kb_iadd(k, base, c);
  LLVMValueRef g = kb_mul(k, kb_load(k, dout, i), kb_load(k, gamma, c));
  LLVMValueRef xhat = kb_mul(k, kb_sub(k, kb_load(k, x, i), mu), rs);
  kb_set(k, sg, kb_radd(k, kb_get(k, sg), g));
  kb_set(k, sgx, kb_radd(k, kb_get(k, sgx), kb_mul(k, g, xhat)));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef mg = kb_div(k, kb_row_sum(k, kb_get(k, sg)), cf);
  LLVMValueRef mgx = kb_div(k, kb_row_sum(k, kb_get(k, sgx)), cf);
  kb_if acc;
  kb_if_begin(k, &acc, LLVMBuildICmp(k->b, LLVMIntNE, a[7], kb_i64c(k, 0), ""));
  dx_pass(k, a, base, mu, rs, mg, mgx, true);
  kb_if_else(k, &acc);
  dx_pass(k, a, base, mu, rs, mg, mgx, false);
  kb_if_end(k, &acc);
}

// (dgamma, dbeta, dout, x, mean, rstd, rows, C)   idx = column c
//   dgamma[c] += sum_r dout[r,c] * xhat[r,c];  dbeta[c] += sum_r dout[r,c]
// Sums over rows in registers (k->lanes columns at a time on the host), one store per column.
void dhx_emit_layernorm_bwd_dparams(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                    LLVMValueRef c, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dgamma = a[0], dbeta = a[1], dout = a[2], x = a[3], mean = a[4], rstd = a[5];
  LLVMValueRef rows = a[6], C = a[7];
  LLVMValueRef sg = kb_var(k, k->vt, kb_fc(k, 0.0)), sb = kb_var(k, k->vt, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef r = kb_row_loop_begin(k, &L, kb_i64c(k, 0), rows, "rows");
  LLVMValueRef i = kb_iadd(k, kb_imul(k, r, C), c);
  LLVMValueRef mu = kb_splat(k, kb_load_s(k, mean, r)), rs = kb_splat(k, kb_load_s(k, rstd, r));
  LLVMValueRef d = kb_load(k, dout, i);
  LLVMValueRef xhat = kb_mul(k, kb_sub(k, kb_load(k, x, i), mu), rs);
  kb_set(k, sg, kb_fma(k, d, xhat, kb_get(k, sg)));
  kb_set(k, sb, kb_add(k, kb_get(k, sb), d));
  kb_row_loop_end(k, &L, false);
  LLVMValueRef gsum = kb_row_sum(k, kb_get(k, sg)), bsum = kb_row_sum(k, kb_get(k, sb));
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store(k, kb_add(k, kb_load(k, dgamma, c), gsum), dgamma, c);
  kb_store(k, kb_add(k, kb_load(k, dbeta, c), bsum), dbeta, c);
  kb_row_owner_end(k, &lead);
}

// ---- RMS normalisation (Llama): no centring, no bias ----------------------------------------

// (out, rstd, x, gamma, C, eps)   idx = row r
void dhx_emit_rmsnorm_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                          LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = a[0], rstd = a[1], x = a[2], gamma = a[3], C = a[4], eps = a[5];
  LLVMValueRef base = kb_imul(k, r, C);
  LLVMValueRef ms = kb_div(k, row_sum(k, x, base, C, kb_fc(k, 0.0)), kb_to_f(k, C));  // mean(x^2)
  LLVMValueRef rs = kb_div(k, kb_fc(k, 1.0), kb_sqrt(k, kb_add(k, ms, eps)));
  kb_row_if first;
  kb_row_owner_begin(k, &first, kb_i64c(k, 0));
  kb_store_s(k, rs, rstd, r);
  kb_row_owner_end(k, &first);
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "scale");
  LLVMValueRef i = kb_iadd(k, base, c);
  kb_store(k, kb_mul(k, kb_mul(k, kb_load(k, x, i), rs), kb_load(k, gamma, c)), out, i);
  kb_row_loop_end(k, &L, true);
}

static void rms_dx_pass(kb *k, LLVMValueRef *a, LLVMValueRef base, LLVMValueRef rs,
                        LLVMValueRef mgx, bool acc) {
  LLVMValueRef dx = a[0], dout = a[1], x = a[2], gamma = a[4], C = a[5];
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, acc ? "dx_add" : "dx");
  LLVMValueRef i = kb_iadd(k, base, c);
  LLVMValueRef g = kb_mul(k, kb_load(k, dout, i), kb_load(k, gamma, c));
  LLVMValueRef xhat = kb_mul(k, kb_load(k, x, i), rs);
  LLVMValueRef v = kb_mul(k, rs, kb_sub(k, g, kb_mul(k, xhat, mgx)));
  if (acc) v = kb_add(k, kb_load(k, dx, i), v);
  kb_store(k, v, dx, i);
  kb_row_loop_end(k, &L, true);
}

// (dx, dout, x, rstd, gamma, C, accumulate)   idx = row r
//   y = x rstd gamma with rstd = (mean(x^2) + eps)^-1/2, so with g = dout gamma:
//   dx = rstd g - x rstd^3 mean(g x) = rstd (g - xhat mean(g xhat))
void dhx_emit_rmsnorm_bwd_dx(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                             LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dout = a[1], x = a[2], rstd = a[3], gamma = a[4], C = a[5];
  LLVMValueRef base = kb_imul(k, r, C), rs = kb_load_s(k, rstd, r);
  LLVMValueRef sgx = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef c = kb_row_loop_begin(k, &L, kb_i64c(k, 0), C, "dot");
  LLVMValueRef i = kb_iadd(k, base, c);
  LLVMValueRef g = kb_mul(k, kb_load(k, dout, i), kb_load(k, gamma, c));
  kb_set(k, sgx, kb_radd(k, kb_get(k, sgx), kb_mul(k, g, kb_mul(k, kb_load(k, x, i), rs))));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef mgx = kb_div(k, kb_row_sum(k, kb_get(k, sgx)), kb_to_f(k, C));
  kb_if acc;
  kb_if_begin(k, &acc, LLVMBuildICmp(k->b, LLVMIntNE, a[6], kb_i64c(k, 0), ""));
  rms_dx_pass(k, a, base, rs, mgx, true);
  kb_if_else(k, &acc);
  rms_dx_pass(k, a, base, rs, mgx, false);
  kb_if_end(k, &acc);
}

// (dgamma, dout, x, rstd, rows, C)   idx = column c:  dgamma[c] += sum_r dout x rstd
void dhx_emit_rmsnorm_bwd_dgamma(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a,
                                 LLVMValueRef c, LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dgamma = a[0], dout = a[1], x = a[2], rstd = a[3], rows = a[4], C = a[5];
  LLVMValueRef sg = kb_var(k, k->vt, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef r = kb_row_loop_begin(k, &L, kb_i64c(k, 0), rows, "rows");
  LLVMValueRef i = kb_iadd(k, kb_imul(k, r, C), c);
  LLVMValueRef xhat = kb_mul(k, kb_load(k, x, i), kb_splat(k, kb_load_s(k, rstd, r)));
  kb_set(k, sg, kb_fma(k, kb_load(k, dout, i), xhat, kb_get(k, sg)));
  kb_row_loop_end(k, &L, false);
  LLVMValueRef gsum = kb_row_sum(k, kb_get(k, sg));
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store(k, kb_add(k, kb_load(k, dgamma, c), gsum), dgamma, c);
  kb_row_owner_end(k, &lead);
}
