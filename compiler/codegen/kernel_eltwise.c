// kernel_eltwise.c — a fused chain of elementwise operations (dhx_ew_spec), one element per
// index: load the inputs, evaluate the nodes in order, store the outputs.
//
// All loads (including the old value of accumulated outputs) come before any store, so an
// output computed in place over one of its full-size inputs reads the old value, as if the
// kernel had a separate output buffer.
#include "ice.h"
#include "codegen_internal.h"

static LLVMValueRef node_value(kb *k, const dhx_ew_spec *e, const dhx_ew_node *n,
                               const LLVMValueRef *v, LLVMValueRef *ins, LLVMValueRef *in_idx,
                               LLVMValueRef *scalars) {
  switch ((dhx_ew_op)n->op) {
  case DHX_EW_LOAD: return kb_load(k, ins[n->a], in_idx[n->a]);
  case DHX_EW_SCALAR: return kb_splat(k, scalars[n->a]);
  case DHX_EW_CONST: return kb_fc(k, e->consts[n->a]);
  case DHX_EW_ADD: return kb_add(k, v[n->a], v[n->b]);
  case DHX_EW_SUB: return kb_sub(k, v[n->a], v[n->b]);
  case DHX_EW_MUL: return kb_mul(k, v[n->a], v[n->b]);
  case DHX_EW_DIV: return kb_div(k, v[n->a], v[n->b]);
  case DHX_EW_NEG: return kb_neg(k, v[n->a]);
  case DHX_EW_EXP: return kb_exp(k, v[n->a]);
  case DHX_EW_LOG: return kb_log(k, v[n->a]);
  case DHX_EW_TANH: return kb_tanh(k, v[n->a]);
  case DHX_EW_SQRT: return kb_sqrt(k, v[n->a]);
  case DHX_EW_GELU: return kb_gelu(k, v[n->a]);
  case DHX_EW_GELU_GRAD: return kb_gelu_grad(k, v[n->a], v[n->b]);
  case DHX_EW_SILU: return kb_silu(k, v[n->a]);
  case DHX_EW_SILU_GRAD: return kb_silu_grad(k, v[n->a], v[n->b]);
  }
  DHX_ICE("elementwise node with unknown op %u (specs are validated before code generation)",
          (unsigned)n->op);
}

// (outputs..., inputs..., scalars...)   idx = element i; input j read at i (FULL) or at
// mod_idx (= i % in_mod[j], MOD).
void dhx_emit_eltwise(kb *k, const dhx_kernel_spec *s, LLVMValueRef *a, LLVMValueRef i,
                      LLVMValueRef *mod_idx) {
  const dhx_ew_spec *e = &s->ew;
  LLVMValueRef *outs = a, *ins = a + e->nout, *scalars = a + e->nout + e->nin;
  LLVMValueRef in_idx[DHX_EW_MAX_IO];
  int m = 0;
  for (int j = 0; j < e->nin; j++) in_idx[j] = e->in_mode[j] == DHX_EW_MOD ? mod_idx[m++] : i;
  LLVMValueRef v[DHX_EW_MAX_NODES];
  for (int n = 0; n < e->nnodes; n++) v[n] = node_value(k, e, &e->nodes[n], v, ins, in_idx, scalars);
  LLVMValueRef res[DHX_EW_MAX_IO];
  for (int o = 0; o < e->nout; o++) {
    res[o] = v[e->out_node[o]];
    if (e->out_accumulate[o]) res[o] = kb_add(k, kb_load(k, outs[o], i), res[o]);
  }
  for (int o = 0; o < e->nout; o++) kb_store(k, res[o], outs[o], i);
}
