// verify_ops.c — checks an op list after each pass that builds or rewrites it, the way QBE
// checks its SSA after every transform: a pass that breaks the IR is caught where it did it,
// named in the internal error, instead of as a wrong plan three passes later (or as a plan
// the validator refuses without saying which pass made it).
//
// What holds after every pass: ops of known kinds on streams that exist; operands that name
// existing tensors, inside them (GEMM windows with their strides and batches, collective and
// transfer counts); kernels whose spec is valid and whose arguments match its signature;
// collectives on a known communicator role; events in range and every WAIT with a RECORD.
// After memory planning, also: every tensor an op touches has a place in the arena.
#include <stdio.h>
#include <stdlib.h>

#include "ice.h"
#include "kernels.h"
#include "lower.h"

// A kernel description found valid, with its signature: ops hold interned descriptions (a
// stage of a paper-scale pipeline: hundreds of thousands of ops, a few hundred kernels), so
// each is checked once per list, not once per op.
#define SIGNATURE_SLOTS 256
typedef struct signature {
  dhx_lop_kernel key;
  bool used;
  int n;
  uint32_t types[DHX_MAX_ARGS];
} signature;

typedef struct check {
  const dhx_graph *g;
  const dhx_oplist *l;
  const char *pass;
  bool placed;
  int op;
  signature *seen;  // SIGNATURE_SLOTS, by hash; a collision checks the newcomer anew
} check;

#define FAIL(c, ...)                                                                        \
  do {                                                                                      \
    char what_[256];                                                                        \
    snprintf(what_, sizeof what_, __VA_ARGS__);                                             \
    DHX_ICE("after %s: op %d ('%s'): %s", (c)->pass, (c)->op, (c)->l->ops[(c)->op].note,     \
            what_);                                                                         \
  } while (0)

static int64_t elems_of(const dhx_tensor *t) {
  return t->kind == DHX_T_VIEW ? t->view_elems : dhx_tensor_alloc_elems(t);
}

// Operand j is a buffer whose elements [elem, elem + count) lie inside its tensor.
// Whether check_window passes.
static bool window_fits(const check *c, const dhx_operand *o, int64_t count) {
  const dhx_graph *g = c->g;
  if (o->kind != DHX_ARG_BUF || o->tensor < 0 || o->tensor >= g->ntensors) return false;
  const dhx_tensor *t = &g->tensors[o->tensor];
  if (t->kind == DHX_T_VIEW && t->view_elems == 0) return true;
  return o->elem >= 0 && count >= 0 && o->elem + count <= elems_of(t) &&
         !(c->placed && t->offset < 0);
}

static void check_window(check *c, const dhx_operand *o, int64_t count, const char *what) {
  const dhx_graph *g = c->g;
  if (o->kind != DHX_ARG_BUF) FAIL(c, "%s is not a tensor", what);
  if (o->tensor < 0 || o->tensor >= g->ntensors)
    FAIL(c, "%s names tensor %d of %d", what, o->tensor, g->ntensors);
  const dhx_tensor *t = &g->tensors[o->tensor];
  if (t->kind == DHX_T_VIEW && t->view_elems == 0) return;  // sized by the memory planner
  if (o->elem < 0 || count < 0 || o->elem + count > elems_of(t))
    FAIL(c, "%s reaches elements [%lld, %lld) of '%s', which has %lld", what,
         (long long)o->elem, (long long)(o->elem + count), t->name, (long long)elems_of(t));
  if (c->placed && t->offset < 0) FAIL(c, "%s '%s' has no place in the arena", what, t->name);
}

// The elements a row-major rows × cols window with leading dimension ld and the GEMM's
// batches spans from its first element.
static int64_t gemm_span(const dhx_plan_gemm *gm, int64_t rows, int64_t cols, int64_t ld,
                         const int64_t stride[2]) {
  if (rows <= 0 || cols <= 0) return 0;
  int64_t span = (rows - 1) * ld + cols;
  for (int b = 0; b < 2; b++)
    if (gm->batch[b] > 1) span += (gm->batch[b] - 1) * stride[b];
  return span;
}

static void check_gemm(check *c, const dhx_lop *op) {
  if (!op->gemm) FAIL(c, "a GEMM without its description");
  const dhx_plan_gemm *gm = op->gemm;
  if (gm->epilogue > DHX_GEMM_BIAS_GELU || op->nargs != dhx_gemm_nargs(gm->epilogue))
    FAIL(c, "a GEMM with epilogue %u has %d operands", gm->epilogue, op->nargs);
  if (gm->m < 1 || gm->n < 1 || gm->k < 1 || gm->batch[0] < 1 || gm->batch[1] < 1)
    FAIL(c, "GEMM shape %lldx%lldx%lld, batches %lld, %lld", (long long)gm->m, (long long)gm->n,
         (long long)gm->k, (long long)gm->batch[0], (long long)gm->batch[1]);
  int64_t ar = gm->trans_a ? gm->k : gm->m, ac = gm->trans_a ? gm->m : gm->k;
  int64_t br = gm->trans_b ? gm->n : gm->k, bc = gm->trans_b ? gm->k : gm->n;
  if (gm->lda < ac || gm->ldb < bc || gm->ldc < gm->n) FAIL(c, "GEMM leading dimension too small");
  check_window(c, &op->args[0], gemm_span(gm, ar, ac, gm->lda, gm->stride_a), "A");
  check_window(c, &op->args[1], gemm_span(gm, br, bc, gm->ldb, gm->stride_b), "B");
  check_window(c, &op->args[2], gemm_span(gm, gm->m, gm->n, gm->ldc, gm->stride_c), "C");
  if (gm->epilogue) check_window(c, &op->args[3], gm->n, "the bias");
  if (gm->epilogue == DHX_GEMM_BIAS_GELU)
    check_window(c, &op->args[4], gemm_span(gm, gm->m, gm->n, gm->ldc, gm->stride_c),
                 "the pre-activation");
}

// Arguments against the kernel's signature; pointer windows are bounded by the plan validator
// through the access descriptors, here only their tensors and offsets.
static void check_kernel(check *c, const dhx_lop *op) {
  char err[200];
  if ((op->kspec.kind == DHX_K_ELTWISE) != (op->kspec.ew != NULL))
    FAIL(c, "a kernel of kind %d %s a fused spec", (int)op->kspec.kind,
         op->kspec.ew ? "with" : "without");
  const dhx_lop_kernel *k = &op->kspec;
  signature *sig = &c->seen[dhx_lop_kernel_hash(k) % SIGNATURE_SLOTS];
  if (!sig->used || !dhx_lop_kernel_same(&sig->key, k)) {
    dhx_kernel_spec spec = dhx_lop_spec(op);
    if (!dhx_kernel_spec_valid(&spec, err, sizeof err)) FAIL(c, "invalid kernel: %s", err);
    *sig = (signature){.key = *k, .used = true};
    sig->n = dhx_kernel_signature(&spec, sig->types);
  }
  const uint32_t *types = sig->types;
  int n = sig->n;
  if (n != op->nargs) FAIL(c, "the kernel takes %d arguments, the op has %d", n, op->nargs);
  if (op->n < 0) FAIL(c, "index space %lld", (long long)op->n);
  for (int j = 0; j < n; j++) {
    const dhx_operand *o = &op->args[j];
    bool ok = types[j] == DHX_KARG_PTR ? o->kind == DHX_ARG_BUF
              : types[j] == DHX_KARG_I64 ? o->kind == DHX_ARG_I64 ||  // or a whole-number register
                                               (o->kind == DHX_ARG_REG && dhx_reg_is_integer(o->reg))
                                         : o->kind == DHX_ARG_F64 || o->kind == DHX_ARG_REG;
    if (!ok) FAIL(c, "argument %d does not match the kernel's signature", j);
    if (o->kind == DHX_ARG_BUF && !window_fits(c, o, 0)) {  // (named only to report it)
      char what[32];
      snprintf(what, sizeof what, "argument %d", j);
      check_window(c, o, 0, what);
    }
  }
}

static void check_comm(check *c, const dhx_lop *op) {
  if (op->comm < 0 || op->comm >= DHX_COMM_ROLES) FAIL(c, "communicator role %d", op->comm);
  if (dhx_lop_collective(op->kind) && op->event >= c->l->nevents)  // >= 0: deferred
    FAIL(c, "deferred to event %d of %d", op->event, c->l->nevents);
  switch (op->kind) {
    case DHX_L_ALLREDUCE: check_window(c, &op->args[0], op->args[1].i, "the region"); break;
    case DHX_L_ALL_GATHER:
      check_window(c, &op->args[1], op->args[2].i, "the output");
      check_window(c, &op->args[0], 0, "the input");
      break;
    case DHX_L_REDUCE_SCATTER:
      check_window(c, &op->args[0], op->args[2].i, "the input");
      check_window(c, &op->args[1], 0, "the output");
      break;
    case DHX_L_ALL_TO_ALL:
      check_window(c, &op->args[0], op->args[2].i, "the input");
      check_window(c, &op->args[1], op->args[2].i, "the output");
      if (op->args[0].tensor == op->args[1].tensor) FAIL(c, "all-to-all in place");
      break;
    case DHX_L_SEND:
    case DHX_L_RECV:
      check_window(c, &op->args[0], op->args[1].i, "the region");
      if (op->args[2].i < 0 || op->args[3].i < 0 || op->args[3].i > DHX_MAX_TAG)
        FAIL(c, "peer %lld, tag %lld", (long long)op->args[2].i, (long long)op->args[3].i);
      break;
    default: break;
  }
}

static void check_op(check *c, const dhx_lop *op, const bool *recorded) {
  if (op->stream < 0 || op->stream >= DHX_MAX_STREAMS) FAIL(c, "stream %d", op->stream);
  if (op->nargs < 0 || op->nargs > DHX_MAX_ARGS) FAIL(c, "%d operands", op->nargs);
  switch (op->kind) {
    case DHX_L_GEMM: check_gemm(c, op); break;
    case DHX_L_KERNEL:
    case DHX_L_EW: check_kernel(c, op); break;
    case DHX_L_ZERO: check_window(c, &op->args[0], op->args[1].i / 4, "the region"); break;
    case DHX_L_ALLREDUCE:
    case DHX_L_ALL_GATHER:
    case DHX_L_REDUCE_SCATTER:
    case DHX_L_ALL_TO_ALL:
    case DHX_L_SEND:
    case DHX_L_RECV: check_comm(c, op); break;
    case DHX_L_GRAD_NORM:  // the kernel a GPU launches for it, and the regions the CPU's code uses
      if (op->kspec.kind != DHX_K_GRAD_NORM) FAIL(c, "GRAD_NORM does not carry the grad_norm kernel");
      check_kernel(c, op);
      check_window(c, &op->args[0], 1, "the clip scale");
      check_window(c, &op->args[1], 1, "the norm");
      check_window(c, &op->args[2], op->args[3].i, "the partial sums");
      break;
    case DHX_L_LOAD:
      check_window(c, &op->args[0], c->g->micro_batch * c->g->seq, "the tokens");
      check_window(c, &op->args[1], c->g->micro_batch * c->g->seq, "the targets");
      break;
    case DHX_L_RECORD:
    case DHX_L_WAIT:
      if (op->event < 0 || op->event >= c->l->nevents)
        FAIL(c, "event %d of %d", op->event, c->l->nevents);
      if (op->kind == DHX_L_WAIT && !recorded[op->event])
        FAIL(c, "WAIT on event %d, which no RECORD records", op->event);
      break;
    default: FAIL(c, "unknown op kind %d", (int)op->kind);
  }
  if (op->at.phase > DHX_PHASE_OPTIMIZER || op->at.micro < 0)
    FAIL(c, "origin: phase %d, micro-batch %d", (int)op->at.phase, op->at.micro);
}

void dhx_verify_ops(const dhx_graph *g, const dhx_oplist *l, const char *pass, bool placed) {
  check c = {.g = g, .l = l, .pass = pass, .placed = placed,
             .seen = calloc(SIGNATURE_SLOTS, sizeof(signature))};
  bool *recorded = calloc((size_t)l->nevents + 1, 1);
  if (!recorded || !c.seen) abort();
  for (int i = 0; i < l->n; i++) {  // a RECORD, or a deferred collective as it completes
    const dhx_lop *op = &l->ops[i];
    bool records = op->kind == DHX_L_RECORD || dhx_lop_collective(op->kind);
    if (!op->dead && records && op->event >= 0 && op->event < l->nevents)
      recorded[op->event] = true;
  }
  for (c.op = 0; c.op < l->n; c.op++)
    if (!l->ops[c.op].dead) check_op(&c, &l->ops[c.op], recorded);
  free(recorded);
  free(c.seen);
}

void dhx_verify_programs(const dhx_graph *g, const char *pass, bool placed) {
  for (int p = 0; p < DHX_PROG_COUNT; p++) dhx_verify_ops(g, &g->prog[p], pass, placed);
}
