// plan_wire.c — what the communication of a plan puts on the wire: each collective's and
// transfer's purpose (the kind its bytes are counted under) and the bytes a member sends.
//
// Kinds, from the communicator (whose members differ in which coordinate of the layout) and
// the op:
//   tp         collectives among the ranks of a tensor-parallel group (tensor and sequence
//              parallelism, and the gradient sums of sequence parallelism)
//   pp         sends and receives between pipeline stages
//   dp_grads   data-parallel all-reduces, reduce-scatters and all-to-alls of gradients
//   dp_params  data-parallel all-gathers of parameters (ZeRO's, qWD's codes and scales)
//   other      the rest: the all-reduces of norm partial sums (scratch buffers that are no
//              gradients), collectives on communicators of no single coordinate
// The ring algorithms' bytes per member (count elements of `size` bytes, p members, count a
// multiple of p): all-gather, reduce-scatter, all-to-all (p-1)/p · count · size; all-reduce
// 2(p-1)/p · count · size; a send count · size; a receive nothing.
#include <string.h>

#include "plan_util.h"

const char *dhx_wire_kind_name(int kind) {
  static const char *names[] = {"tp", "pp", "dp_grads", "dp_params", "other"};
  return kind >= 0 && kind < DHX_WIRE_KINDS ? names[kind] : "?";
}

// Which coordinate the members of plan communicator c differ in: DHX_WIRE_TP, _PP, a DP kind
// (DHX_WIRE_DP_GRADS stands for "data-parallel"), or DHX_WIRE_OTHER.
static int comm_axis(const dhx_plan *p, int32_t c) {
  if (c < 0 || (uint32_t)c >= p->ncomms || p->comms[c].nranks < 2) return DHX_WIRE_OTHER;
  const dhx_plan_comm *pc = &p->comms[c];
  bool same_dp = true, same_tp = true, same_pp = true;
  const dhx_plan_rank *a = NULL;
  for (uint32_t i = 0; i < pc->nranks; i++) {
    if (pc->ranks[i] < 0 || (uint32_t)pc->ranks[i] >= p->nranks) return DHX_WIRE_OTHER;
    const dhx_plan_rank *b = &p->ranks[pc->ranks[i]];
    if (!a) a = b;
    same_dp &= a->dp_rank == b->dp_rank;
    same_tp &= a->tp_rank == b->tp_rank;
    same_pp &= a->pp_rank == b->pp_rank;
  }
  if (same_tp && same_pp) return DHX_WIRE_DP_GRADS;
  if (same_dp && same_pp) return DHX_WIRE_TP;
  if (same_dp && same_tp) return DHX_WIRE_PP;
  return DHX_WIRE_OTHER;
}

// Whether the region of argument 0 of `in` lies on a gradient buffer (a window over the
// gradients is a scratch buffer that overlaps them).
static bool on_gradients(const dhx_plan_rank *r, const dhx_plan_instr *in) {
  if (in->nargs < 1 || in->args[0].buf < 0 || (uint32_t)in->args[0].buf >= r->nbuffers)
    return false;
  const dhx_plan_buffer *b = &r->buffers[in->args[0].buf];
  if (b->kind != DHX_BUF_SCRATCH) return true;  // a gradient, an activation (a whole gradient)
  int64_t lo = b->offset + in->args[0].i;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *g = &r->buffers[i];
    if (g->kind == DHX_BUF_GRAD && g->offset < b->offset + b->nbytes && lo < g->offset + g->nbytes)
      return true;
  }
  return false;
}

int dhx_wire_kind_of(const dhx_plan *p, const dhx_plan_rank *r, const dhx_plan_instr *in) {
  if (!dhx_op_on_comm(in->op)) return DHX_WIRE_OTHER;
  int axis = comm_axis(p, dhx_rank_comm(r, in->comm));
  if (in->op == DHX_OP_SEND || in->op == DHX_OP_RECV)
    return axis == DHX_WIRE_OTHER ? DHX_WIRE_OTHER : DHX_WIRE_PP;
  if (in->op == DHX_OP_ALLREDUCE && !on_gradients(r, in)) return DHX_WIRE_OTHER;  // norm sums
  if (axis != DHX_WIRE_DP_GRADS) return axis;
  return in->op == DHX_OP_ALL_GATHER ? DHX_WIRE_DP_PARAMS : DHX_WIRE_DP_GRADS;
}

static int64_t count_arg(const dhx_plan_instr *in, uint32_t j) {
  return j < in->nargs && in->args[j].kind == DHX_ARG_I64 && in->args[j].i > 0 ? in->args[j].i : 0;
}

int64_t dhx_wire_bytes(const dhx_plan *p, const dhx_plan_rank *r, const dhx_plan_instr *in) {
  int32_t c = r ? dhx_rank_comm(r, in->comm) : in->comm;
  int64_t size = dhx_dtype_size(in->dtype);
  int64_t m = c >= 0 && (uint32_t)c < p->ncomms ? p->comms[c].nranks : 1;
  switch (in->op) {
    case DHX_OP_ALLREDUCE: return m > 1 ? 2 * (m - 1) * (count_arg(in, 1) / m) * size : 0;
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_ALL_GATHER: return m > 1 ? (m - 1) * (count_arg(in, 2) / m) * size : 0;
    case DHX_OP_SEND: return count_arg(in, 1) * size;
    default: return 0;
  }
}
