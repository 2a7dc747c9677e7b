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
//
// In the PTX, rows of up to ROW_REGS · 32 elements (head sizes up to 128) keep the row's own
// vectors in registers: each lane holds its elements (lane, lane + 32, ...) of q (or k and v)
// and of the output or gradients being summed, which are written once at the end. Per partner
// row that leaves the partner's loads, the FMAs and the shuffles of the dot products; the
// arithmetic, and so every bit of the result, is that of the memory form, which serves larger
// heads and the host (where a row is one thread and the rows' vectors stay in memory). The
// GPU's exponentials are the special function unit's (attn_exp).
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

// ---- a row's vector in registers (the PTX's warp form) ----

#define ROW_REGS 4

typedef struct regrow {
  LLVMValueRef v[ROW_REGS];  // kb_var allocas: this lane's elements lane + 32·c
} regrow;

// Whether this build can keep rows in registers: a warp per row (the PTX).
static bool regs_possible(const kb *k) { return k->row_threads > 1; }

// if (element c of this lane, lane + 32·c, is inside the row) { ... }; returns it.
static LLVMValueRef elem_begin(kb *k, const attn *a, int c, kb_if *s) {
  LLVMValueRef d = kb_iadd(k, k->lane, kb_i64c(k, (int64_t)k->row_threads * c));
  kb_if_begin(k, s, kb_ilt(k, d, a->hs));
  return d;
}

static regrow reg_zero(kb *k) {
  regrow r;
  for (int c = 0; c < ROW_REGS; c++) r.v[c] = kb_var(k, k->f, kb_fc(k, 0.0));
  return r;
}

// x[xi + d] for this lane's elements; with `keep` (an i1, or NULL for always) false, zeros.
static regrow reg_load(kb *k, const attn *a, LLVMValueRef x, LLVMValueRef xi, LLVMValueRef keep) {
  regrow r = reg_zero(k);
  kb_if load;
  if (keep) kb_if_begin(k, &load, keep);
  for (int c = 0; c < ROW_REGS; c++) {
    kb_if e;
    LLVMValueRef d = elem_begin(k, a, c, &e);
    kb_set(k, r.v[c], kb_load(k, x, kb_iadd(k, xi, d)));
    kb_if_end(k, &e);
  }
  if (keep) kb_if_end(k, &load);
  return r;
}

// sum over d < hs of x_d · y[yi + d], in every lane: dot() with x in registers.
static LLVMValueRef reg_dot(kb *k, const attn *a, const regrow *x, LLVMValueRef y,
                            LLVMValueRef yi) {
  LLVMValueRef acc = kb_var(k, k->f, kb_fc(k, 0.0));
  for (int c = 0; c < ROW_REGS; c++) {
    kb_if e;
    LLVMValueRef d = elem_begin(k, a, c, &e);
    LLVMValueRef p = kb_mul(k, kb_get(k, x->v[c]), kb_load(k, y, kb_iadd(k, yi, d)));
    kb_set(k, acc, kb_radd(k, kb_get(k, acc), p));
    kb_if_end(k, &e);
  }
  return kb_row_sum(k, kb_get(k, acc));
}

// o_d = o_d·c + w·x[xi + d] (c NULL: o_d + w·x[xi + d]): axpy() into registers.
static void reg_axpy(kb *k, const attn *a, regrow *o, LLVMValueRef cs, LLVMValueRef w,
                     LLVMValueRef x, LLVMValueRef xi) {
  for (int c = 0; c < ROW_REGS; c++) {
    kb_if e;
    LLVMValueRef d = elem_begin(k, a, c, &e), old = kb_get(k, o->v[c]);
    if (cs) old = kb_mul(k, old, cs);
    kb_set(k, o->v[c], kb_fma(k, w, kb_load(k, x, kb_iadd(k, xi, d)), old));
    kb_if_end(k, &e);
  }
}

// out[oi + d] = o_d · scale (scale NULL: o_d).
static void reg_store(kb *k, const attn *a, const regrow *o, LLVMValueRef scale,
                      LLVMValueRef out, LLVMValueRef oi) {
  for (int c = 0; c < ROW_REGS; c++) {
    kb_if e;
    LLVMValueRef d = elem_begin(k, a, c, &e), v = kb_get(k, o->v[c]);
    kb_store(k, scale ? kb_mul(k, v, scale) : v, out, kb_iadd(k, oi, d));
    kb_if_end(k, &e);
  }
}

// ---- a row's own vector, in either form ----

// The row's own q (or k, v, dout) and its output or gradient rows: in registers (regs, the
// PTX for heads up to 128) or where they lie in memory (base[at + d]), the kernels' bodies
// written once over both.
typedef struct rowvec {
  bool in_regs;
  regrow r;
  LLVMValueRef base, at;
} rowvec;

// A vector the row reads: x[xi + d].
static rowvec vec_source(kb *k, const attn *a, bool regs, LLVMValueRef x, LLVMValueRef xi) {
  rowvec v = {.in_regs = regs, .base = x, .at = xi};
  if (regs) v.r = reg_load(k, a, x, xi, NULL);
  return v;
}

// A vector the row sums into and writes at out[oi + d]: from zero, or (keep, an i1) from what
// out holds.
static rowvec vec_sum(kb *k, const attn *a, bool regs, LLVMValueRef out, LLVMValueRef oi,
                      LLVMValueRef keep) {
  rowvec v = {.in_regs = regs, .base = out, .at = oi};
  if (regs) v.r = keep ? reg_load(k, a, out, oi, keep) : reg_zero(k);
  else clear_unless(k, a, out, oi, keep ? keep : LLVMConstInt(k->i1, 0, 0));
  return v;
}

// sum over d < hs of x_d · y[yi + d], in every lane.
static LLVMValueRef vec_dot(kb *k, const attn *a, const rowvec *x, LLVMValueRef y,
                            LLVMValueRef yi) {
  return x->in_regs ? reg_dot(k, a, &x->r, y, yi) : dot(k, a, x->base, x->at, y, yi);
}

// o_d = o_d·c + w·x[xi + d] (c NULL: o_d + w·x[xi + d]).
static void vec_axpy(kb *k, const attn *a, rowvec *o, LLVMValueRef c, LLVMValueRef w,
                     LLVMValueRef x, LLVMValueRef xi) {
  if (o->in_regs) reg_axpy(k, a, &o->r, c, w, x, xi);
  else axpy(k, a, o->base, o->at, c, w, x, xi);
}

// The summed vector, times scale (NULL: 1), where it belongs.
static void vec_finish(kb *k, const attn *a, rowvec *o, LLVMValueRef scale) {
  if (o->in_regs) {
    reg_store(k, a, &o->r, scale, o->base, o->at);
  } else if (scale) {
    kb_loop L;
    LLVMValueRef d = kb_row_loop_begin(k, &L, kb_i64c(k, 0), a->hs, "normalise");
    LLVMValueRef e = kb_iadd(k, o->at, d);
    kb_store(k, kb_mul(k, kb_load(k, o->base, e), scale), o->base, e);
    kb_row_loop_end(k, &L, true);
  }
}

// A kernel's body over one form of its rows (row: the kernel's own description of its row).
typedef void (*attn_body)(kb *k, const attn *a, bool regs, const void *row);

// On the GPU the body in registers where the head fits (a test on hs, the same for the whole
// grid) and in memory beyond; on the host in memory alone.
static void each_form(kb *k, const attn *a, attn_body body, const void *row) {
  if (!regs_possible(k)) {
    body(k, a, false, row);
    return;
  }
  kb_if fits;
  kb_if_begin(k, &fits, kb_ilt(k, a->hs, kb_i64c(k, (int64_t)k->row_threads * ROW_REGS + 1)));
  body(k, a, true, row);
  kb_if_else(k, &fits);
  body(k, a, false, row);
  kb_if_end(k, &fits);
}

// exp(x) of a score: on the GPU (f32), the special function unit's 2^x of x·log2(e)
// (ex2.approx, 2 ulp; the product's rounding adds about 1e-6 relative for scores near 10), as
// flash attention does, where the polynomial of kb_exp was a third of a key step's
// instructions; on the host, and in f64, kb_exp.
static LLVMValueRef attn_exp(kb *k, LLVMValueRef x) {
  if (!regs_possible(k) || LLVMGetTypeKind(k->f) != LLVMFloatTypeKind) return kb_exp(k, x);
  LLVMValueRef arg = kb_mul(k, x, kb_fc(k, M_LOG2E));
  return kb_intrinsic(k, "llvm.nvvm.ex2.approx.ftz.f", NULL, 0, &arg, 1);
}

// One step of the online softmax: the running maximum m and sum l take score sc; returns
// p = exp(sc - m_new) and sets *rescale = exp(m_old - m_new). One of the two is exp(0), which
// is 1, so one exp suffices (with kb_exp, whose exp(0) is exactly 1, the same bits as
// computing both).
static LLVMValueRef online_step(kb *k, LLVMValueRef m, LLVMValueRef l, LLVMValueRef sc,
                                LLVMValueRef *rescale) {
  LLVMValueRef mo = kb_get(k, m), one = kb_fc(k, 1.0);
  LLVMValueRef up = LLVMBuildFCmp(k->b, LLVMRealOGT, sc, mo, "up");  // false for a NaN score
  LLVMValueRef e = attn_exp(k, kb_select(k, up, kb_sub(k, mo, sc), kb_sub(k, sc, mo)));
  LLVMValueRef p = kb_select(k, up, one, e);
  *rescale = kb_select(k, up, e, one);
  kb_set(k, l, kb_fma(k, kb_get(k, l), *rescale, p));
  kb_set(k, m, kb_select(k, up, sc, mo));
  return p;
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

// for (j = 0; j <= i; j++): the keys of query row q; *ki and *vi are where key j's k and v
// rows start (closed by kb_loop_end).
static void key_loop_begin(kb *k, const attn *a, const qrow *q, kb_loop *J, LLVMValueRef *ki,
                           LLVMValueRef *vi) {
  LLVMValueRef j = kb_loop_begin(k, J, kb_i64c(k, 0), kb_iadd(k, q->i, kb_i64c(k, 1)), "key");
  LLVMValueRef kt = kb_iadd(k, q->first, j);
  *ki = at(k, a, kt, a->ks, kb_iadd(k, a->kh0, q->g));
  *vi = at(k, a, kt, a->ks, kb_iadd(k, a->vh0, q->g));
}

static void store_lse(kb *k, LLVMValueRef lse, LLVMValueRef r, LLVMValueRef m, LLVMValueRef l) {
  kb_row_if lead;
  kb_row_owner_begin(k, &lead, kb_i64c(k, 0));
  kb_store_s(k, kb_add(k, kb_get(k, m), kb_log(k, kb_get(k, l))), lse, r);
  kb_row_owner_end(k, &lead);
}

typedef struct fwd_row {
  qrow q;
  LLVMValueRef out, lse, r;  // pointers, and the row
} fwd_row;

static void fwd_body(kb *k, const attn *a, bool regs, const void *row) {
  const fwd_row *f = row;
  const qrow *q = &f->q;
  rowvec qv = vec_source(k, a, regs, a->q, q->qi), o = vec_sum(k, a, regs, f->out, q->oi, NULL);
  LLVMValueRef m = kb_var(k, k->f, kb_fc(k, -INFINITY)), l = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop J;
  LLVMValueRef ki, vi;
  key_loop_begin(k, a, q, &J, &ki, &vi);
  LLVMValueRef sc = kb_mul(k, vec_dot(k, a, &qv, a->k, ki), a->scale);
  LLVMValueRef c, p = online_step(k, m, l, sc, &c);
  vec_axpy(k, a, &o, c, p, a->v, vi);
  kb_loop_end(k, &J, false);
  vec_finish(k, a, &o, kb_div(k, kb_fc(k, 1.0), kb_get(k, l)));
  store_lse(k, f->lse, f->r, m, l);
}

// (out, lse, q, k, v, S, H, G, hs, qs, ks, flags, scale)   query row r
void dhx_emit_attn_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                       LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  attn a = attn_of(k, arg[2], arg[3], arg[4], arg + 5);
  fwd_row f = {query_row(k, &a, r), arg[0], arg[1], r};
  each_form(k, &a, fwd_body, &f);
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

// The probability and the score gradient of a query row against a key row, from their
// dot products q·k and dout·v: P = exp(scale·q·k - lse), dS = P·(dout·v - dsum).
static void pair_grads(kb *k, const attn *a, LLVMValueRef qk, LLVMValueRef dov, LLVMValueRef lse,
                       LLVMValueRef dsum, LLVMValueRef *P, LLVMValueRef *dS) {
  *P = attn_exp(k, kb_sub(k, kb_mul(k, qk, a->scale), lse));
  *dS = kb_mul(k, *P, kb_sub(k, dov, dsum));
}

typedef struct dq_row {
  qrow q;
  LLVMValueRef dq, dout, lse, dsum;  // dq's pointer and dout's; the row's lse and dsum values
} dq_row;

static void dq_body(kb *k, const attn *a, bool regs, const void *row) {
  const dq_row *d = row;
  const qrow *q = &d->q;
  rowvec qv = vec_source(k, a, regs, a->q, q->qi), dov = vec_source(k, a, regs, d->dout, q->oi);
  rowvec g = vec_sum(k, a, regs, d->dq, q->qi, flag(k, a, FLAG_ACC0));
  kb_loop J;
  LLVMValueRef ki, vi, P, dS;
  key_loop_begin(k, a, q, &J, &ki, &vi);
  pair_grads(k, a, vec_dot(k, a, &qv, a->k, ki), vec_dot(k, a, &dov, a->v, vi), d->lse, d->dsum,
             &P, &dS);
  vec_axpy(k, a, &g, NULL, kb_mul(k, a->scale, dS), a->k, ki);
  kb_loop_end(k, &J, false);
  vec_finish(k, a, &g, NULL);
}

// (dq, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   query row r:
//   dq (+)= scale · sum over keys j <= i of dS_ij k_j   (flags & 1: accumulate)
void dhx_emit_attn_bwd_dq(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                          LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  attn a = attn_of(k, arg[1], arg[2], arg[3], arg + 7);
  dq_row d = {query_row(k, &a, r), arg[0], arg[4], kb_load_s(k, arg[5], r),
              kb_load_s(k, arg[6], r)};
  each_form(k, &a, dq_body, &d);
}

// Key row (b, g, j) of the key and value gradients: where its vectors start and the pointers.
typedef struct kv_row {
  LLVMValueRef dk, dv, dout, lse, dsum;  // pointers
  LLVMValueRef b, g, j, first, ki, vi;
} kv_row;

// Query i of query head h against the key row: the (lse, dsum) row and where q and dout start.
static void kv_partner(kb *k, const attn *a, const kv_row *kr, LLVMValueRef h, LLVMValueRef i,
                       LLVMValueRef *qi, LLVMValueRef *oi, LLVMValueRef *lse,
                       LLVMValueRef *dsum) {
  LLVMValueRef qt = kb_iadd(k, kr->first, i);
  *qi = at(k, a, qt, a->qs, h);
  *oi = out_at(k, a, qt, h);
  LLVMValueRef row = kb_iadd(k, kb_imul(k, kb_iadd(k, kb_imul(k, kr->b, a->H), h), a->S), i);
  *lse = kb_load_s(k, kr->lse, row);
  *dsum = kb_load_s(k, kr->dsum, row);
}

static void kv_body(kb *k, const attn *a, bool regs, const void *row) {
  const kv_row *kr = row;
  rowvec kv = vec_source(k, a, regs, a->k, kr->ki), vv = vec_source(k, a, regs, a->v, kr->vi);
  rowvec gk = vec_sum(k, a, regs, kr->dk, kr->ki, flag(k, a, FLAG_ACC0));
  rowvec gv = vec_sum(k, a, regs, kr->dv, kr->vi, flag(k, a, FLAG_ACC1));
  kb_loop T, I;
  LLVMValueRef t = kb_loop_begin(k, &T, kb_i64c(k, 0), a->per, "head");
  LLVMValueRef h = kb_iadd(k, kb_imul(k, kr->g, a->per), t);
  LLVMValueRef i = kb_loop_begin(k, &I, kr->j, a->S, "query");
  LLVMValueRef qi, oi, lse, dsum, P, dS;
  kv_partner(k, a, kr, h, i, &qi, &oi, &lse, &dsum);
  pair_grads(k, a, vec_dot(k, a, &kv, a->q, qi), vec_dot(k, a, &vv, kr->dout, oi), lse, dsum, &P,
             &dS);
  vec_axpy(k, a, &gv, NULL, P, kr->dout, oi);
  vec_axpy(k, a, &gk, NULL, kb_mul(k, a->scale, dS), a->q, qi);
  kb_loop_end(k, &I, false);
  kb_loop_end(k, &T, false);
  vec_finish(k, a, &gk, NULL);
  vec_finish(k, a, &gv, NULL);
}

// (dk, dv, q, k, v, dout, lse, dsum, S, H, G, hs, qs, ks, flags, scale)   key row
// r = (b·G + g)·S + j, over the queries i >= j of every query head h of kv head g:
//   dv (+)= sum P_ij dout_i   (flags & 2),   dk (+)= scale · sum dS_ij q_i   (flags & 1)
void dhx_emit_attn_bwd_dkv(kb *k, const dhx_kernel_spec *s, LLVMValueRef *arg, LLVMValueRef r,
                           LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  attn a = attn_of(k, arg[2], arg[3], arg[4], arg + 8);
  kv_row kr = {.dk = arg[0], .dv = arg[1], .dout = arg[5], .lse = arg[6], .dsum = arg[7]};
  LLVMValueRef bg = LLVMBuildSDiv(k->b, r, a.S, "");
  kr.j = LLVMBuildSRem(k->b, r, a.S, "j");
  kr.g = LLVMBuildSRem(k->b, bg, a.G, "g");
  kr.b = LLVMBuildSDiv(k->b, bg, a.G, "b");
  kr.first = kb_imul(k, kr.b, a.S);
  LLVMValueRef kt = kb_iadd(k, kr.first, kr.j);
  kr.ki = at(k, &a, kt, a.ks, kb_iadd(k, a.kh0, kr.g));
  kr.vi = at(k, &a, kt, a.ks, kb_iadd(k, a.vh0, kr.g));
  each_form(k, &a, kv_body, &kr);
}
