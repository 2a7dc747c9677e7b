// kernel_attn.c — fused causal attention (flash-style): no [S, S] score matrix in memory.
//
// One index is one row of the attention: a (batch, head, position) of the queries for the
// forward and the query gradient, a (batch, kv head, position) of the keys for the key and
// value gradients. Each row walks its partner rows (keys 0..i for query i, queries j..S-1 of
// every query head of the group for key j) and keeps what it needs in its own output row, so
// the memory is that of q, k, v and out plus two floats per query row (the log-sum-exp of its
// scores and, for the backward, dot(dout, out)). In the PTX a warp runs a row (ir_rows.c): its
// lanes split the head dimension, a dot product is a warp sum.
//
// Layout: q, k and v are the rows of [B·S, stride] projections, head h of q at column h·hs,
// kv head g of k and v at g·hs (stride qs for q and its gradient, ks for k, v and theirs);
// with the `fused` flag all three are one [B·S, 3·H·hs] projection passed three times, k's
// heads after q's (column (H + g)·hs) and v's after k's ((2H + g)·hs). out and dout are
// [B, S, H, hs]; lse and dsum [B, H, S]. Query head h reads kv head h / (H / G).
//
// The online softmax (forward): m = max score so far, l = sum of exp(score - m), o = sum of
// exp(score - m)·v; a new score s rescales both by exp(m - max(m, s)). At the end o / l is the
// row's output and m + log l its log-sum-exp, from which the backward recomputes each
// probability P = exp(s - lse) without normalising again.
#include "codegen_internal.h"

#include <math.h>

enum { FLAG_ACC0 = 1, FLAG_ACC1 = 2, FLAG_FUSED = 4 };

typedef struct attn {
  LLVMValueRef q, k, v;        // pointers
  LLVMValueRef S, H, G, hs, qs, ks, flags, scale;
  LLVMValueRef kh0, vh0;       // k's and v's first head column, in heads (0, or H and 2H)
  LLVMValueRef per;            // H / G
} attn;

static attn attn_of(kb *k, LLVMValueRef q, LLVMValueRef kp, LLVMValueRef v, LLVMValueRef *dims) {
  attn a = {.q = q, .k = kp, .v = v, .S = dims[0], .H = dims[1], .G = dims[2], .hs = dims[3],
            .qs = dims[4], .ks = dims[5], .flags = dims[6], .scale = dims[7]};
  LLVMValueRef fused = LLVMBuildICmp(k->b, LLVMIntNE,
                                     LLVMBuildAnd(k->b, a.flags, kb_i64c(k, FLAG_FUSED), ""),
                                     kb_i64c(k, 0), "fused");
  a.kh0 = kb_select(k, fused, a.H, kb_i64c(k, 0));
  a.vh0 = kb_select(k, fused, kb_imul(k, a.H, kb_i64c(k, 2)), kb_i64c(k, 0));
  a.per = LLVMBuildSDiv(k->b, a.H, a.G, "per");
  return a;
}

static LLVMValueRef flag(kb *k, const attn *a, int bit) {
  return LLVMBuildICmp(k->b, LLVMIntNE, LLVMBuildAnd(k->b, a->flags, kb_i64c(k, bit), ""),
                       kb_i64c(k, 0), "");
}

// Element index of head `head` (in units of hs) of row `tok` (= b·S + position) of a
// projection with `stride` elements per row.
static LLVMValueRef at(kb *k, const attn *a, LLVMValueRef tok, LLVMValueRef stride,
                       LLVMValueRef head) {
  return kb_iadd(k, kb_imul(k, tok, stride), kb_imul(k, head, a->hs));
}

// Row `h` (a query head) of position tok in out/dout [B, S, H, hs].
static LLVMValueRef out_at(kb *k, const attn *a, LLVMValueRef tok, LLVMValueRef h) {
  return kb_imul(k, kb_iadd(k, kb_imul(k, tok, a->H), h), a->hs);
}

// sum over d < hs of x[xi + d]·y[yi + d], in every lane of the row.
static LLVMValueRef dot(kb *k, const attn *a, LLVMValueRef x, LLVMValueRef xi, LLVMValueRef y,
                        LLVMValueRef yi) {
  LLVMValueRef acc = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef d = kb_row_loop_begin(k, &L, kb_i64c(k, 0), a->hs, "dot");
  LLVMValueRef p = kb_mul(k, kb_load(k, x, kb_iadd(k, xi, d)), kb_load(k, y, kb_iadd(k, yi, d)));
  kb_set(k, acc, kb_radd(k, kb_get(k, acc), p));
  kb_row_loop_end(k, &L, true);
  return kb_row_sum(k, kb_get(k, acc));
}

// out[oi + d] = out[oi + d]·c + w·x[xi + d] for d < hs (c NULL: out[oi + d] + w·x[xi + d]).
static void axpy(kb *k, const attn *a, LLVMValueRef out, LLVMValueRef oi, LLVMValueRef c,
                 LLVMValueRef w, LLVMValueRef x, LLVMValueRef xi) {
  kb_loop L;
  LLVMValueRef d = kb_row_loop_begin(k, &L, kb_i64c(k, 0), a->hs, "axpy");
  LLVMValueRef o = kb_iadd(k, oi, d), old = kb_load(k, out, o);
  if (c) old = kb_mul(k, old, c);
  kb_store(k, kb_fma(k, w, kb_load(k, x, kb_iadd(k, xi, d)), old), out, o);
  kb_row_loop_end(k, &L, true);
}

// out[oi + d] = 0 for d < hs, unless `keep` (an i1): the start of a gradient that is
// overwritten rather than accumulated.
static void clear_unless(kb *k, const attn *a, LLVMValueRef out, LLVMValueRef oi,
                         LLVMValueRef keep) {
  kb_if s;
  kb_if_begin(k, &s, LLVMBuildNot(k->b, keep, ""));
  kb_loop L;
  LLVMValueRef d = kb_row_loop_begin(k, &L, kb_i64c(k, 0), a->hs, "clear");
  kb_store(k, kb_fc(k, 0.0), out, kb_iadd(k, oi, d));
  kb_row_loop_end(k, &L, true);
  kb_if_end(k, &s);
}

// A query row r = (b·H + h)·S + i.
typedef struct qrow {
  LLVMValueRef tok;    // its row of the projections: b·S + i
  LLVMValueRef first;  // the batch's first row, b·S
  LLVMValueRef h, i, g;  // head, position, kv head
  LLVMValueRef qi, oi;   // where its q and its out (dout) rows start
} qrow;

static qrow query_row(kb *k, const attn *a, LLVMValueRef r) {
  qrow q;
  LLVMValueRef bh = LLVMBuildSDiv(k->b, r, a->S, "");
  q.i = LLVMBuildSRem(k->b, r, a->S, "i");
  q.h = LLVMBuildSRem(k->b, bh, a->H, "h");
  q.first = kb_imul(k, LLVMBuildSDiv(k->b, bh, a->H, "b"), a->S);
  q.tok = kb_iadd(k, q.first, q.i);
  q.g = LLVMBuildSDiv(k->b, q.h, a->per, "g");
  q.qi = at(k, a, q.tok, a->qs, q.h);
  q.oi = out_at(k, a, q.tok, q.h);
  return q;
}

// (out, lse, q, k, v, S, H, G, hs, qs, ks, flags, scale)   query row r
void dhx_emit_attn_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                       LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef out = arg[0], lse = arg[1];
  attn a = attn_of(k, arg[2], arg[3], arg[4], arg + 5);
  qrow q = query_row(k, &a, r);
  LLVMValueRef oi = q.oi;
  clear_unless(k, &a, out, oi, LLVMConstInt(k->i1, 0, 0));
  LLVMValueRef m = kb_var(k, k->f, kb_fc(k, -INFINITY)), l = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop J;
  LLVMValueRef j = kb_loop_begin(k, &J, kb_i64c(k, 0), kb_iadd(k, q.i, kb_i64c(k, 1)), "key");
  LLVMValueRef kt = kb_iadd(k, q.first, j);
  LLVMValueRef sc = kb_mul(
      k, dot(k, &a, a.q, q.qi, a.k, at(k, &a, kt, a.ks, kb_iadd(k, a.kh0, q.g))), a.scale);
  LLVMValueRef mo = kb_get(k, m), mn = kb_maxnum(k, mo, sc);
  LLVMValueRef c = kb_exp(k, kb_sub(k, mo, mn)), p = kb_exp(k, kb_sub(k, sc, mn));
  kb_set(k, l, kb_fma(k, kb_get(k, l), c, p));
  axpy(k, &a, out, oi, c, p, a.v, at(k, &a, kt, a.ks, kb_iadd(k, a.vh0, q.g)));
  kb_set(k, m, mn);
  kb_loop_end(k, &J, false);
  LLVMValueRef inv = kb_div(k, kb_fc(k, 1.0), kb_get(k, l));
  kb_loop L;
  LLVMValueRef d = kb_row_loop_begin(k, &L, kb_i64c(k, 0), a.hs, "normalise");
  LLVMValueRef o = kb_iadd(k, oi, d);
  kb_store(k, kb_mul(k, kb_load(k, out, o), inv), out, o);
  kb_row_loop_end(k, &L, true);
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_s(k, kb_add(k, kb_get(k, m), kb_log(k, kb_get(k, l))), lse, r);
  kb_row_owner_end(k, &lead);
}

// (dsum, dout, out, S, H, hs)   query row r: dsum[r] = dot(dout row, out row)
void dhx_emit_attn_bwd_dot(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                           LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dims[8] = {arg[3], arg[4], arg[4], arg[5], arg[5], arg[5], kb_i64c(k, 0), NULL};
  attn a = attn_of(k, NULL, NULL, NULL, dims);
  LLVMValueRef oi = query_row(k, &a, r).oi;
  LLVMValueRef v = dot(k, &a, arg[1], oi, arg[2], oi);
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_s(k, v, arg[0], r);
  kb_row_owner_end(k, &lead);
}

// The probability and the score gradient of query row (tok_q, h) against key row (tok_k, g):
// P = exp(scale·q·k - lse), dS = P·(dout·v - dsum).
static void pair_grads(kb *k, const attn *a, LLVMValueRef dout, LLVMValueRef qi,
                       LLVMValueRef oi, LLVMValueRef ki, LLVMValueRef vi, LLVMValueRef lse,
                       LLVMValueRef dsum, LLVMValueRef *P, LLVMValueRef *dS) {
  LLVMValueRef sc = kb_mul(k, dot(k, a, a->q, qi, a->k, ki), a->scale);
  *P = kb_exp(k, kb_sub(k, sc, lse));
  *dS = kb_mul(k, *P, kb_sub(k, dot(k, a, dout, oi, a->v, vi), dsum));
}

// (dq, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   query row r:
//   dq (+)= scale · sum over keys j <= i of dS_ij k_j   (flags & 1: accumulate)
void dhx_emit_attn_bwd_dq(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                          LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dq = arg[0], dout = arg[4];
  attn a = attn_of(k, arg[1], arg[2], arg[3], arg + 7);
  qrow q = query_row(k, &a, r);
  LLVMValueRef lse = kb_load_s(k, arg[5], r), dsum = kb_load_s(k, arg[6], r);
  clear_unless(k, &a, dq, q.qi, flag(k, &a, FLAG_ACC0));
  kb_loop J;
  LLVMValueRef j = kb_loop_begin(k, &J, kb_i64c(k, 0), kb_iadd(k, q.i, kb_i64c(k, 1)), "key");
  LLVMValueRef kt = kb_iadd(k, q.first, j);
  LLVMValueRef ki = at(k, &a, kt, a.ks, kb_iadd(k, a.kh0, q.g));
  LLVMValueRef P, dS;
  pair_grads(k, &a, dout, q.qi, q.oi, ki, at(k, &a, kt, a.ks, kb_iadd(k, a.vh0, q.g)), lse, dsum,
             &P, &dS);
  axpy(k, &a, dq, q.qi, NULL, kb_mul(k, a.scale, dS), a.k, ki);
  kb_loop_end(k, &J, false);
}

// (dk, dv, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   key row
// r = (b·G + g)·S + j, over the queries i >= j of every query head h of kv head g:
//   dv (+)= sum P_ij dout_i   (flags & 2),   dk (+)= scale · sum dS_ij q_i   (flags & 1)
void dhx_emit_attn_bwd_dkv(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                           LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dk = arg[0], dv = arg[1], dout = arg[5], lse = arg[6], dsum = arg[7];
  attn a = attn_of(k, arg[2], arg[3], arg[4], arg + 8);
  LLVMValueRef bg = LLVMBuildSDiv(k->b, r, a.S, "");
  LLVMValueRef j = LLVMBuildSRem(k->b, r, a.S, "j"), g = LLVMBuildSRem(k->b, bg, a.G, "g");
  LLVMValueRef b = LLVMBuildSDiv(k->b, bg, a.G, "b"), first = kb_imul(k, b, a.S);
  LLVMValueRef kt = kb_iadd(k, first, j);
  LLVMValueRef ki = at(k, &a, kt, a.ks, kb_iadd(k, a.kh0, g));
  LLVMValueRef vi = at(k, &a, kt, a.ks, kb_iadd(k, a.vh0, g));
  clear_unless(k, &a, dk, ki, flag(k, &a, FLAG_ACC0));
  clear_unless(k, &a, dv, vi, flag(k, &a, FLAG_ACC1));
  kb_loop T, I;
  LLVMValueRef t = kb_loop_begin(k, &T, kb_i64c(k, 0), a.per, "head");
  LLVMValueRef h = kb_iadd(k, kb_imul(k, g, a.per), t);
  LLVMValueRef i = kb_loop_begin(k, &I, j, a.S, "query");
  LLVMValueRef qt = kb_iadd(k, first, i);
  LLVMValueRef qi = at(k, &a, qt, a.qs, h), oi = out_at(k, &a, qt, h);
  LLVMValueRef row = kb_iadd(k, kb_imul(k, kb_iadd(k, kb_imul(k, b, a.H), h), a.S), i);
  LLVMValueRef P, dS;
  pair_grads(k, &a, dout, qi, oi, ki, vi, kb_load_s(k, lse, row), kb_load_s(k, dsum, row), &P,
             &dS);
  axpy(k, &a, dv, vi, NULL, P, dout, oi);
  axpy(k, &a, dk, ki, NULL, kb_mul(k, a.scale, dS), a.q, qi);
  kb_loop_end(k, &I, false);
  kb_loop_end(k, &T, false);
}
