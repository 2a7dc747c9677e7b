// gemm_epilogue.c — on GPU clusters, a linear's bias (and the GeLU after it) as the GEMM's
// epilogue (cuBLASLt's BIAS and GELU_AUX_BIAS; plan_base.h: dhx_gemm_epilogue) instead of an
// elementwise pass over the GEMM's output.
//
// After fusion a linear with a bias is a GEMM writing y and, next to touch y, an elementwise
// op `out = y + b[i % n]` or `pre = y + b[i % n]; out = gelu(pre)` (fuse.c merges the GeLU
// into the bias add). When nothing else reads y, the GEMM takes the bias (and writes pre as
// its auxiliary output) and writes out itself: one pass over the activation less, and y is
// never stored. Anything else (a residual added in the same pass, an accumulated output, a
// batched GEMM) is left alone.
#include <stdlib.h>

#include "lower.h"
#include "passes.h"

// The elementwise op's inputs: which is y (read in full) and which the bias (read modulo n).
typedef struct bias_add {
  int full, mod;   // input indices
  int add;         // the node y + b
  int gelu;        // the node gelu(y + b), -1 for a plain bias
  int pre, out;    // output indices: the sum and what the GEMM's C becomes (pre = out: no GeLU)
} bias_add;

static bool is_load(const dhx_ew_spec *s, int node, int input) {
  return s->nodes[node].op == DHX_EW_LOAD && s->nodes[node].a == input;
}

// Whether spec s is exactly a bias add (with a GeLU after it) of a full input and one read
// modulo n; fills *b.
static bool match_bias(const dhx_ew_spec *s, int64_t n, bias_add *b) {
  if (s->nin != 2 || s->nscalars != 0 || s->nout < 1 || s->nout > 2) return false;
  b->full = s->in_mode[0] == DHX_EW_FULL ? 0 : 1;
  b->mod = 1 - b->full;
  if (s->in_mode[b->full] != DHX_EW_FULL || s->in_mode[b->mod] != DHX_EW_MOD ||
      s->in_mod[b->mod] != n)
    return false;
  for (int k = 0; k < s->nout; k++)
    if (s->out_accumulate[k]) return false;
  b->add = b->gelu = b->pre = b->out = -1;
  for (int k = 0; k < s->nout; k++) {
    const dhx_ew_node *nd = &s->nodes[s->out_node[k]];
    if (nd->op == DHX_EW_ADD &&
        ((is_load(s, nd->a, b->full) && is_load(s, nd->b, b->mod)) ||
         (is_load(s, nd->a, b->mod) && is_load(s, nd->b, b->full)))) {
      b->add = s->out_node[k];
      b->pre = k;
    } else if (nd->op == DHX_EW_GELU) {
      b->gelu = s->out_node[k];
      b->out = k;
    } else {
      return false;
    }
  }
  if (b->add < 0) return false;
  if (s->nout == 1) {
    b->out = b->pre;
    return b->gelu < 0;
  }
  return b->gelu >= 0 && s->nodes[b->gelu].a == b->add;
}

static bool refers(const dhx_lop *op, int t) {
  for (int j = 0; j < op->nargs; j++)
    if (op->args[j].kind == DHX_ARG_BUF && op->args[j].tensor == t) return true;
  return false;
}

// An operand that is the whole of a tensor of `elems` elements, from its start.
static bool whole(const dhx_graph *g, const dhx_operand *o, int64_t elems) {
  return o->kind == DHX_ARG_BUF && o->elem == 0 && dhx_tensor_elems(&g->tensors[o->tensor]) == elems;
}

// Folds the bias op at index e into the GEMM at index i when that is safe.
static bool fold(dhx_graph *g, dhx_oplist *l, int i, int e, const int *refs) {
  dhx_lop *gm = &l->ops[i], *ew = &l->ops[e];
  const dhx_plan_gemm *p = gm->gemm;
  int y = gm->args[2].tensor;
  int64_t elems = p->m * p->n;
  bias_add b;
  if (ew->dead || ew->kind != DHX_L_EW || ew->stream != gm->stream || ew->n != elems ||
      !match_bias(ew->kspec.ew, p->n, &b))
    return false;
  const dhx_ew_spec *s = ew->kspec.ew;
  const dhx_operand *in_y = &ew->args[s->nout + b.full], *bias = &ew->args[s->nout + b.mod];
  const dhx_operand *out = &ew->args[b.out], *pre = &ew->args[b.pre];
  if (in_y->tensor != y || !whole(g, in_y, elems) || !whole(g, out, elems) ||
      !whole(g, pre, elems) || !whole(g, bias, p->n))
    return false;
  // y is read by nothing else, unless the op overwrites it (then later reads see the new y).
  bool overwritten = out->tensor == y || pre->tensor == y;
  if (refs[y] != 2 && !overwritten) return false;
  if (b.gelu >= 0 && out->tensor == pre->tensor) return false;
  // The outputs move up to the GEMM: nothing between may touch them.
  for (int k = i + 1; k < e; k++)
    if (!l->ops[k].dead && (refers(&l->ops[k], out->tensor) || refers(&l->ops[k], pre->tensor)))
      return false;
  dhx_operand o = *out, bo = *bias, po = *pre;
  gm->args[2] = o;
  gm->args[3] = bo;
  if (b.gelu >= 0) gm->args[4] = po;
  dhx_plan_gemm with = *gm->gemm;
  with.epilogue = b.gelu >= 0 ? DHX_GEMM_BIAS_GELU : DHX_GEMM_BIAS;
  gm->gemm = dhx_intern_gemm(&with);
  gm->nargs = dhx_gemm_nargs(with.epilogue);
  ew->dead = true;
  return true;
}

int dhx_fuse_gemm_epilogues(dhx_graph *g, dhx_oplist *l) {
  int *refs = calloc((size_t)g->ntensors + 1, sizeof(int));
  int *next = malloc(sizeof(int) * ((size_t)g->ntensors + 1));  // next op to refer to a tensor
  if (!refs || !next) abort();
  for (int i = 0; i < l->n; i++) {
    if (l->ops[i].dead) continue;
    for (int j = 0; j < l->ops[i].nargs; j++)  // ops that refer to each tensor (once per op)
      if (l->ops[i].args[j].kind == DHX_ARG_BUF) {
        int t = l->ops[i].args[j].tensor;
        bool seen = false;
        for (int k = 0; k < j; k++)
          seen |= l->ops[i].args[k].kind == DHX_ARG_BUF && l->ops[i].args[k].tensor == t;
        refs[t] += !seen;
      }
  }
  for (int t = 0; t <= g->ntensors; t++) next[t] = -1;
  int folded = 0;
  // Backwards, so next[t] is the first op after i that refers to t.
  for (int i = l->n - 1; i >= 0; i--) {
    dhx_lop *op = &l->ops[i];
    if (op->dead) continue;
    const dhx_plan_gemm *p = op->gemm;
    if (op->kind == DHX_L_GEMM && p->epilogue == DHX_GEMM_PLAIN && p->beta == 0 &&
        p->batch[0] == 1 && p->batch[1] == 1 && p->ldc == p->n && p->n % 8 == 0 &&
        op->args[2].elem == 0 && next[op->args[2].tensor] >= 0 &&
        fold(g, l, i, next[op->args[2].tensor], refs))
      folded++;
    for (int j = 0; j < op->nargs; j++)
      if (op->args[j].kind == DHX_ARG_BUF) next[op->args[j].tensor] = i;
  }
  free(refs);
  free(next);
  return folded;
}
