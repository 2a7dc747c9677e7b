// kernel_loss.c — softmax cross-entropy over a vocabulary row, one row per index (a warp per
// row in the PTX: lane 0 writes a row's scalars, the lane that owns the target element its
// one-hot update; ir_rows.c).
//
// A target outside [0, V) (a corrupt shard or a vocabulary mismatch) must not read out of
// bounds: the forward then writes NaN as the loss, so the run's loss shows it, and the
// backward leaves out the one-hot term.
#include <math.h>

#include "codegen_internal.h"

static LLVMValueRef row_max(kb *k, LLVMValueRef x, LLVMValueRef base, LLVMValueRef V) {
  LLVMValueRef mx = kb_var(k, k->f, kb_fc(k, -INFINITY));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, kb_i64c(k, 0), V, "max");
  kb_set(k, mx, kb_rmax(k, kb_get(k, mx), kb_load(k, x, kb_iadd(k, base, j))));
  kb_row_loop_end(k, &L, true);
  return kb_row_max(k, kb_get(k, mx));
}

static LLVMValueRef target_valid(kb *k, LLVMValueRef t, LLVMValueRef V) {
  LLVMValueRef ge0 = LLVMBuildICmp(k->b, LLVMIntSGE, t, kb_i64c(k, 0), "");
  return LLVMBuildAnd(k->b, ge0, kb_ilt(k, t, V), "");
}

// (loss, logits, targets:i32, V)   loss[r] = logsumexp(logits[r,:]) - logits[r, targets[r]]
void dhx_emit_xent_fwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                       LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef loss = a[0], logits = a[1], targets = a[2], V = a[3];
  LLVMValueRef base = kb_imul(k, r, V);
  LLVMValueRef m = row_max(k, logits, base, V);
  LLVMValueRef sum = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, kb_i64c(k, 0), V, "sumexp");
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_load(k, logits, kb_iadd(k, base, j)), m));
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef lse = kb_add(k, m, kb_log(k, kb_row_sum(k, kb_get(k, sum))));
  LLVMValueRef t = kb_load_i32(k, targets, r);
  LLVMValueRef ok = target_valid(k, t, V);
  LLVMValueRef tc = kb_select(k, ok, t, kb_i64c(k, 0));
  LLVMValueRef lt = kb_load_s(k, logits, kb_iadd(k, base, tc));
  kb_row_if first;
  kb_row_owner_begin(k, &first, kb_i64c(k, 0));
  kb_store_s(k, kb_select(k, ok, kb_sub(k, lse, lt), kb_fc(k, NAN)), loss, r);
  kb_row_owner_end(k, &first);
}

// v - scale where element j is the row's one-hot target t (ok: t is in the row), else v.
static LLVMValueRef one_hot(kb *k, LLVMValueRef v, LLVMValueRef j, LLVMValueRef t,
                            LLVMValueRef ok, LLVMValueRef scale) {
  LLVMValueRef hit = LLVMBuildAnd(k->b, ok, LLVMBuildICmp(k->b, LLVMIntEQ, j, t, ""), "");
  return kb_select(k, hit, kb_sub(k, v, scale), v);
}

// (dlogits, logits, targets:i32, V, scale)
//   dlogits[r,j] = scale * (softmax(logits[r,:])[j] - (j == targets[r]))
// The exp values are stored into dlogits (which may be logits) and rescaled in a second
// pass, so each element costs one exp; the one-hot term is a single scalar update after.
// A bf16 dlogits must be stored once (each store rounds): the second pass computes the exp
// again and folds the one-hot term in.
void dhx_emit_xent_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                       LLVMValueRef *mod_idx) {
  (void)mod_idx;
  LLVMValueRef dl = a[0], logits = a[1], targets = a[2], V = a[3], scale = a[4];
  bool once = s->bf16 & 1u;
  LLVMValueRef base = kb_imul(k, r, V);
  LLVMValueRef zero = kb_i64c(k, 0);
  LLVMValueRef m = row_max(k, logits, base, V);
  LLVMValueRef sum = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, zero, V, "exp");
  LLVMValueRef i = kb_iadd(k, base, j);
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_load(k, logits, i), m));
  if (!once) kb_store(k, e, dl, i);
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef f = kb_div(k, scale, kb_row_sum(k, kb_get(k, sum)));
  LLVMValueRef t = kb_load_i32(k, targets, r), ok = target_valid(k, t, V);
  j = kb_row_loop_begin(k, &L, zero, V, "scale");
  i = kb_iadd(k, base, j);
  if (once) {
    e = kb_exp(k, kb_sub(k, kb_load(k, logits, i), m));
    kb_store(k, one_hot(k, kb_mul(k, e, f), j, t, ok, scale), dl, i);
  } else {
    kb_store(k, kb_mul(k, kb_load(k, dl, i), f), dl, i);
  }
  kb_row_loop_end(k, &L, true);
  if (once) return;
  kb_if valid;
  kb_if_begin(k, &valid, ok);
  kb_row_if owner;  // the lane that scaled element t
  kb_row_owner_begin(k, &owner, t);
  LLVMValueRef it = kb_iadd(k, base, t);
  kb_store_s(k, kb_sub(k, kb_load_s(k, dl, it), scale), dl, it);
  kb_row_owner_end(k, &owner);
  kb_if_end(k, &valid);
}

// ---- vocabulary-parallel cross-entropy: this rank holds the logits of ids [lo, lo + V) ----
//
// STATS gives each row's (max, sum of exp relative to it, target logit or 0) for the shard,
// written to planes 0..2 of K; an all-gather puts the P shards' stats one after another and
// COMBINE merges them into the row's logsumexp and loss; BWD needs only that logsumexp.
// K < 3 (too few planes for the statistics): STATS writes nothing, COMBINE writes NaN to both
// loss and lse, and so it does when PK < K (no rank's statistics). Neither ever touches more
// than planes 0..2 of the K given, so the access descriptors (COLUMNS of K planes) hold for
// any K.

static LLVMValueRef at_least(kb *k, LLVMValueRef v, int64_t min) {
  return LLVMBuildICmp(k->b, LLVMIntSGE, v, kb_i64c(k, min), "");
}

// (stats, logits, targets:i32, V, lo, K, rows)   idx = row r
void dhx_emit_xent_vp_stats(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                            LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef stats = a[0], logits = a[1], targets = a[2], V = a[3], lo = a[4], K = a[5];
  LLVMValueRef rows = a[6];
  kb_if planes;
  kb_if_begin(k, &planes, at_least(k, K, 3));
  LLVMValueRef base = kb_imul(k, r, V);
  LLVMValueRef m = row_max(k, logits, base, V);
  LLVMValueRef sum = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, kb_i64c(k, 0), V, "sumexp");
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_load(k, logits, kb_iadd(k, base, j)), m));
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_row_loop_end(k, &L, true);
  LLVMValueRef ok, jt = dhx_shard_row(k, kb_load_i32(k, targets, r), lo, V, &ok);
  LLVMValueRef lt = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_if mine;
  kb_if_begin(k, &mine, ok);
  kb_set(k, lt, kb_load_s(k, logits, kb_iadd(k, base, jt)));
  kb_if_end(k, &mine);
  LLVMValueRef total = kb_row_sum(k, kb_get(k, sum));
  kb_row_if first;
  kb_row_owner_begin(k, &first, kb_i64c(k, 0));
  kb_store_s(k, m, stats, r);
  kb_store_s(k, total, stats, kb_iadd(k, rows, r));
  kb_store_s(k, kb_get(k, lt), stats, kb_iadd(k, kb_imul(k, kb_i64c(k, 2), rows), r));
  kb_row_owner_end(k, &first);
  kb_if_end(k, &planes);
}

// (loss, lse, parts, targets:i32, PK, rows, K, Vtotal)   idx = row r
//   over p < P = PK / K: M = max m_p;  S = sum s_p exp(m_p - M);  lse = M + log S;
//   loss = lse - sum t_p (only the target's shard has a non-zero t_p, so the sum is exact).
// The max is llvm.maxnum without nnan (P is small, nothing to vectorise): a NaN m_p is then
// passed over by the max but still reaches S through exp(m_p - M), as in XENT_FWD.
void dhx_emit_xent_vp_combine(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                              LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef loss = a[0], lse = a[1], parts = a[2], targets = a[3], PK = a[4], rows = a[5];
  LLVMValueRef K = a[6], Vtotal = a[7];
  LLVMValueRef zero = kb_i64c(k, 0);
  kb_if some;
  kb_if_begin(k, &some, LLVMBuildAnd(k->b, at_least(k, K, 3),
                                     LLVMBuildICmp(k->b, LLVMIntSGE, PK, K, ""), ""));
  LLVMValueRef P = LLVMBuildSDiv(k->b, PK, K, "");  // K >= 3 here
  LLVMValueRef stride = kb_imul(k, K, rows);        // from one rank's stats to the next
  LLVMValueRef M = kb_var(k, k->f, kb_fc(k, -INFINITY));
  kb_loop L;
  LLVMValueRef p = kb_loop_begin(k, &L, zero, P, "max");
  LLVMValueRef at = kb_iadd(k, kb_imul(k, p, stride), r);
  kb_set(k, M, kb_maxnum(k, kb_get(k, M), kb_load_s(k, parts, at)));
  kb_loop_end(k, &L, false);
  LLVMValueRef Mv = kb_get(k, M);
  LLVMValueRef S = kb_var(k, k->f, kb_fc(k, 0.0)), Tt = kb_var(k, k->f, kb_fc(k, 0.0));
  p = kb_loop_begin(k, &L, zero, P, "merge");
  at = kb_iadd(k, kb_imul(k, p, stride), r);
  LLVMValueRef mp = kb_load_s(k, parts, at);
  LLVMValueRef sp = kb_load_s(k, parts, kb_iadd(k, at, rows));
  LLVMValueRef tp = kb_load_s(k, parts, kb_iadd(k, at, kb_imul(k, kb_i64c(k, 2), rows)));
  kb_set(k, S, kb_fma(k, sp, kb_exp(k, kb_sub(k, mp, Mv)), kb_get(k, S)));
  kb_set(k, Tt, kb_add(k, kb_get(k, Tt), tp));
  kb_loop_end(k, &L, false);
  LLVMValueRef l = kb_add(k, Mv, kb_log(k, kb_get(k, S)));
  kb_store_s(k, l, lse, r);
  LLVMValueRef ok = target_valid(k, kb_load_i32(k, targets, r), Vtotal);
  kb_store_s(k, kb_select(k, ok, kb_sub(k, l, kb_get(k, Tt)), kb_fc(k, NAN)), loss, r);
  kb_if_else(k, &some);
  kb_store_s(k, kb_fc(k, NAN), lse, r);
  kb_store_s(k, kb_fc(k, NAN), loss, r);
  kb_if_end(k, &some);
}

// (dlogits, logits, lse, targets:i32, V, lo, scale)   idx = row r
//   dlogits[r,j] = scale * exp(logits[r,j] - lse[r]), then scale less at the target if it is
//   in this shard. One pass, each element read before it is written (dlogits may be logits).
void dhx_emit_xent_vp_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                          LLVMValueRef *mod_idx) {
  (void)mod_idx;
  LLVMValueRef dl = a[0], logits = a[1], lse = a[2], targets = a[3], V = a[4], lo = a[5];
  LLVMValueRef scale = a[6];
  bool once = s->bf16 & 1u;  // a bf16 dlogits: the one-hot term in the one store
  LLVMValueRef base = kb_imul(k, r, V);
  LLVMValueRef l = kb_load_s(k, lse, r);
  LLVMValueRef ok, jt = dhx_shard_row(k, kb_load_i32(k, targets, r), lo, V, &ok);
  kb_loop L;
  LLVMValueRef j = kb_row_loop_begin(k, &L, kb_i64c(k, 0), V, "grad");
  LLVMValueRef i = kb_iadd(k, base, j);
  LLVMValueRef v = kb_mul(k, scale, kb_exp(k, kb_sub(k, kb_load(k, logits, i), l)));
  kb_store(k, once ? one_hot(k, v, j, jt, ok, scale) : v, dl, i);
  kb_row_loop_end(k, &L, true);
  if (once) return;
  kb_if mine;
  kb_if_begin(k, &mine, ok);
  kb_row_if owner;  // the lane that wrote element jt
  kb_row_owner_begin(k, &owner, jt);
  LLVMValueRef it = kb_iadd(k, base, jt);
  kb_store_s(k, kb_sub(k, kb_load_s(k, dl, it), scale), dl, it);
  kb_row_owner_end(k, &owner);
  kb_if_end(k, &mine);
}
