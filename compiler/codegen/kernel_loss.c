// kernel_loss.c — softmax cross-entropy over a vocabulary row, one row per index.
//
// A target outside [0, V) (a corrupt shard or a vocabulary mismatch) must not read out of
// bounds: the forward then writes NaN as the loss, so the run's loss shows it, and the
// backward leaves out the one-hot term.
#include <math.h>

#include "codegen_internal.h"

static LLVMValueRef row_max(kb *k, LLVMValueRef x, LLVMValueRef base, LLVMValueRef V) {
  LLVMValueRef mx = kb_var(k, k->f, kb_fc(k, -INFINITY));
  kb_loop L;
  LLVMValueRef j = kb_loop_begin(k, &L, kb_i64c(k, 0), V, "max");
  kb_set(k, mx, kb_rmax(k, kb_get(k, mx), kb_load(k, x, kb_iadd(k, base, j))));
  kb_loop_end(k, &L, true);
  return kb_get(k, mx);
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
  LLVMValueRef j = kb_loop_begin(k, &L, kb_i64c(k, 0), V, "sumexp");
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_load(k, logits, kb_iadd(k, base, j)), m));
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_loop_end(k, &L, true);
  LLVMValueRef lse = kb_add(k, m, kb_log(k, kb_get(k, sum)));
  LLVMValueRef t = kb_load_i32(k, targets, r);
  LLVMValueRef ok = target_valid(k, t, V);
  LLVMValueRef tc = kb_select(k, ok, t, kb_i64c(k, 0));
  LLVMValueRef lt = kb_load_s(k, logits, kb_iadd(k, base, tc));
  kb_store_s(k, kb_select(k, ok, kb_sub(k, lse, lt), kb_fc(k, NAN)), loss, r);
}

// (dlogits, logits, targets:i32, V, scale)
//   dlogits[r,j] = scale * (softmax(logits[r,:])[j] - (j == targets[r]))
// The exp values are stored into dlogits (which may be logits) and rescaled in a second
// pass, so each element costs one exp; the one-hot term is a single scalar update after.
void dhx_emit_xent_bwd(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef r,
                       LLVMValueRef *mod_idx) {
  (void)s, (void)mod_idx;
  LLVMValueRef dl = a[0], logits = a[1], targets = a[2], V = a[3], scale = a[4];
  LLVMValueRef base = kb_imul(k, r, V);
  LLVMValueRef zero = kb_i64c(k, 0);
  LLVMValueRef m = row_max(k, logits, base, V);
  LLVMValueRef sum = kb_var(k, k->f, kb_fc(k, 0.0));
  kb_loop L;
  LLVMValueRef j = kb_loop_begin(k, &L, zero, V, "exp");
  LLVMValueRef i = kb_iadd(k, base, j);
  LLVMValueRef e = kb_exp(k, kb_sub(k, kb_load(k, logits, i), m));
  kb_store(k, e, dl, i);
  kb_set(k, sum, kb_radd(k, kb_get(k, sum), e));
  kb_loop_end(k, &L, true);
  LLVMValueRef f = kb_div(k, scale, kb_get(k, sum));
  j = kb_loop_begin(k, &L, zero, V, "scale");
  i = kb_iadd(k, base, j);
  kb_store(k, kb_mul(k, kb_load(k, dl, i), f), dl, i);
  kb_loop_end(k, &L, true);
  LLVMValueRef t = kb_load_i32(k, targets, r);
  kb_if ok;
  kb_if_begin(k, &ok, target_valid(k, t, V));
  LLVMValueRef it = kb_iadd(k, base, t);
  kb_store_s(k, kb_sub(k, kb_load_s(k, dl, it), scale), dl, it);
  kb_if_end(k, &ok);
}
