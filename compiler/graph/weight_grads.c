// weight_grads.c — paired strands that run free: a backward's weight-gradient ops moved past
// the collective that follows them.
//
// With `search: none` each strand's collectives stay on its compute stream, where a collective
// starts only once everything listed before it has run. In a layer's backward the weight
// gradient (dW += x^T dy) often sits between the input gradient and that gradient's collective
// (a sequence-parallel reduce-scatter, a tensor-parallel all-reduce), though the collective does
// not need it. Moved after the collective, the collective starts a GEMM earlier and the GEMM
// runs while it is on the link; the other strand, which would otherwise have waited for the
// core and left the link idle, is the one that gains. bench/strands_cpu at parity
// (docs/simulator.md): simulated 637 → 613 ms; measured in four alternated runs, 0.755 of the
// unpaired step against 0.77 and 1.17 of the limit against 1.185.
//
// On one stage the small ops that write only weight gradients (a bias's column sums, a norm's
// parameter gradients) move too. A norm's parameter gradient then holds the gradient of the
// norm's output across the collective; in a pipeline, whose paired strands keep within 3% of
// the unpaired memory (parallelism.md), that took the W-folded paper samples 4–7% over, so
// there only the GEMMs move. One stage's free strands are bounded by no such figure: they hold
// two micro-batches either way.
//
// An op moves past another only when no tensor both touch is written by either (any view counts
// as every tensor), on its own stream, and never past an event, a transfer or a batch load. The
// same ops then run on the same values in the same micro-batch order: the backward's segments,
// and what each waits for in the previous backward, are found after this pass (pipeline.c), so
// the losses stay bitwise those of `pair: off`.
#include <string.h>

#include "lower.h"
#include "passes.h"

// Whether a (listed before b) must stay before b.
static bool ordered(const dhx_graph *g, const dhx_lop *a, const dhx_lop *b) {
  if (b->dead) return false;
  return a->stream != b->stream || dhx_lop_barrier(b) || dhx_lops_conflict(g, a, b);
}

// dW += x^T dy; with `small`, also a kernel that writes weight gradients and nothing else.
static bool weight_gradient(const dhx_graph *g, const dhx_lop *op, bool small) {
  if (op->dead) return false;
  if (op->kind == DHX_L_GEMM)
    return op->args[2].kind == DHX_ARG_BUF && g->tensors[op->args[2].tensor].kind == DHX_T_GRAD;
  if (!small || (op->kind != DHX_L_KERNEL && op->kind != DHX_L_EW)) return false;
  bool writes = false;
  for (int j = 0; j < op->nargs; j++) {
    if (op->args[j].kind != DHX_ARG_BUF || !(dhx_lop_arg_effect(op, j) & 2)) continue;
    if (g->tensors[op->args[j].tensor].kind != DHX_T_GRAD) return false;
    writes = true;
  }
  return writes;
}

int dhx_defer_weight_grads(const dhx_graph *g, dhx_oplist *l, int from, int to, bool small) {
  int moved = 0;
  for (int i = to - 1; i >= from; i--) {  // from the end, so a moved op is not seen again
    if (!weight_gradient(g, &l->ops[i], small)) continue;
    int k = i + 1;
    while (k < to && !dhx_lop_collective(l->ops[k].kind) && !ordered(g, &l->ops[i], &l->ops[k]))
      k++;
    if (k == to || !dhx_lop_collective(l->ops[k].kind) || l->ops[k].dead ||
        ordered(g, &l->ops[i], &l->ops[k]))
      continue;
    dhx_lop op = l->ops[i];  // to just after the collective at k
    memmove(&l->ops[i], &l->ops[i + 1], sizeof(dhx_lop) * (size_t)(k - i));
    l->ops[k] = op;
    moved++;
  }
  return moved;
}
