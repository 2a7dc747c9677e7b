// plan_validate_comm.c — one collective or transfer instruction: a dtype the runtime computes
// on, a communicator this rank belongs to, counts inside their buffers (and divisible by the
// communicator size where each member owns a chunk), peers inside the communicator. Whether the
// members' instructions pair up is plan_validate_sync.c's.
#include <inttypes.h>
#include <stdio.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

// Index of world rank `rank` in communicator c, or -1 when it is not a member.
static int member_index(const dhx_plan_comm *c, int rank) {
  for (uint32_t i = 0; i < c->nranks; i++)
    if (c->ranks[i] == rank) return (int)i;
  return -1;
}

// Whether op only moves its elements (no arithmetic on them): then i32 payloads (packed codes)
// travel as they are.
static bool moves_only(uint32_t op) {
  return op == DHX_OP_ALL_GATHER || op == DHX_OP_ALL_TO_ALL || op == DHX_OP_SEND ||
         op == DHX_OP_RECV;
}

// The dtype (the runtime sums f32 and bf16, and moves those or i32; f64 exists in the format
// for later backends) and a communicator that exists and has this rank as a member.
static bool check_dtype_and_comm(plan_check_ctx *v, const dhx_plan_instr *in) {
  CHECK(in->dtype == DHX_F32 || in->dtype == DHX_BF16 ||
            (in->dtype == DHX_I32 && moves_only(in->op)),
        "%s with dtype %s (%u): the runtime computes collectives and transfers on f32 and bf16 "
        "only (all-gathers, all-to-alls and transfers may move i32)", dhx_op_name(in->op),
        dhx_dtype_name(in->dtype), in->dtype);
  CHECK(in->comm >= 0 && (uint32_t)in->comm < v->p->ncomms, "communicator %d does not exist "
        "(the plan has %u)", in->comm, v->p->ncomms);
  CHECK(member_index(&v->p->comms[in->comm], v->rank) >= 0, "%s on communicator %d, which rank "
        "%d is not a member of", dhx_op_name(in->op), in->comm, v->rank);
  return true;
}

// Argument j: `count` elements of the instruction's dtype, inside a buffer of that dtype.
static bool check_typed_region(plan_check_ctx *v, const dhx_plan_instr *in, int j, int64_t count) {
  if (!plan_check_region(v, in, j, count, dhx_dtype_size(in->dtype))) return false;
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[j].buf];
  CHECK(b->dtype == in->dtype, "%s buffer '%s' is %s (must be %s)", dhx_op_name(in->op), b->name,
        dhx_dtype_name(b->dtype), dhx_dtype_name(in->dtype));
  return true;
}

// Arena byte range of argument j holding `count` elements (already checked inside its buffer).
static void arena_range(const plan_check_ctx *v, const dhx_plan_instr *in, int j, int64_t count,
                        int64_t *lo, int64_t *hi) {
  const dhx_plan_arg *a = &in->args[j];
  *lo = v->p->ranks[v->rank].buffers[a->buf].offset + a->i;
  *hi = *lo + count * dhx_dtype_size(in->dtype);
}

// Whether all-gather `in` (its regions checked inside their buffers) of rank section r has
// its input inside its output: then it must be in place, the input exactly this member's chunk.
static bool gathers_in_place(const dhx_plan_rank *r, const dhx_plan_instr *in) {
  if (in->op != DHX_OP_ALL_GATHER) return false;
  int64_t size = dhx_dtype_size(in->dtype), count = in->args[2].i;
  int64_t ilo = r->buffers[in->args[0].buf].offset + in->args[0].i;
  int64_t olo = r->buffers[in->args[1].buf].offset + in->args[1].i;
  return count > 0 && ilo >= olo && ilo < olo + count * size;
}

// Reduce-scatter, all-gather and all-to-all: input and output (one of them a 1/p chunk of count
// for the first two; both count for all-to-all) in
// disjoint parts of the arena (the ring reads the input while it writes the output); or an
// all-gather in place, its input this member's chunk of its output (plan.h).
static bool check_chunked(plan_check_ctx *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_I64};
  if (!plan_check_arg_kinds(v, in, 3, kinds) || !check_dtype_and_comm(v, in)) return false;
  int64_t count = in->args[2].i;
  uint32_t p = v->p->comms[in->comm].nranks;
  CHECK(count >= 0 && count % p == 0, "%s of %" PRId64 " elements: the count must be a "
        "non-negative multiple of communicator %d's %u members", dhx_op_name(in->op), count,
        in->comm, p);
  bool scatter = in->op == DHX_OP_REDUCE_SCATTER, gather = in->op == DHX_OP_ALL_GATHER;
  int64_t in_count = gather ? count / p : count, out_count = scatter ? count / p : count;
  if (!check_typed_region(v, in, 0, in_count) || !check_typed_region(v, in, 1, out_count))
    return false;
  int64_t ilo, ihi, olo, ohi;
  arena_range(v, in, 0, in_count, &ilo, &ihi);
  arena_range(v, in, 1, out_count, &olo, &ohi);
  if (gathers_in_place(&v->p->ranks[v->rank], in) &&
      ilo == olo + member_index(&v->p->comms[in->comm], v->rank) * (ihi - ilo))
    return true;  // in place: the input is exactly this member's chunk of the output
  CHECK(ihi <= olo || ohi <= ilo || in_count == 0 || out_count == 0, "%s input and output "
        "overlap in the arena (they must be disjoint%s)", dhx_op_name(in->op),
        in->op == DHX_OP_ALL_GATHER ? ", or the input exactly this member's chunk of the output"
                                    : "");
  return true;
}

static bool check_transfer(plan_check_ctx *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64, DHX_ARG_I64, DHX_ARG_I64};
  if (!plan_check_arg_kinds(v, in, 4, kinds) || !check_dtype_and_comm(v, in) ||
      !check_typed_region(v, in, 0, in->args[1].i))
    return false;
  const dhx_plan_comm *c = &v->p->comms[in->comm];
  int64_t peer = in->args[2].i, tag = in->args[3].i;
  CHECK(peer >= 0 && peer < c->nranks, "%s peer %" PRId64 " is outside communicator %d (ranks "
        "0..%u)", dhx_op_name(in->op), peer, in->comm, c->nranks - 1);
  CHECK(peer != member_index(c, v->rank), "%s peer %" PRId64 " is this rank itself",
        dhx_op_name(in->op), peer);
  CHECK(tag >= 0 && tag <= DHX_MAX_TAG, "%s tag %" PRId64 " is outside 0..%d", dhx_op_name(in->op),
        tag, DHX_MAX_TAG);
  return true;
}

bool plan_check_comm_instr(plan_check_ctx *v, const dhx_plan_instr *in) {
  switch (in->op) {
    case DHX_OP_ALLREDUCE: {
      static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64};
      return plan_check_arg_kinds(v, in, 2, kinds) && check_dtype_and_comm(v, in) &&
             check_typed_region(v, in, 0, in->args[1].i);
    }
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_GATHER:
    case DHX_OP_ALL_TO_ALL: return check_chunked(v, in);
    case DHX_OP_SEND:
    case DHX_OP_RECV: return check_transfer(v, in);
    default: return plan_check_fail(v, "%s is not a collective", dhx_op_name(in->op));
  }
}

// A rank that runs another rank's programs (plan.h: shares) on substituted communicators: each
// substitution names existing communicators of the same size with this rank in the new one,
// and every communicator the programs use, once substituted, has this rank as a member, and
// at the same index as the owner where the programs send or receive (peers are indices).
bool plan_check_shared_rank(plan_check_ctx *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  uint32_t owner = r->shares - 1;
  CHECK(owner < (uint32_t)v->rank && v->p->ranks[owner].shares == 0, "shares rank %u, which is "
        "not an earlier rank with its own programs", owner);
  CHECK(r->nsubst <= DHX_MAX_COMM_SUBST, "%u communicator substitutions (at most %d)", r->nsubst,
        DHX_MAX_COMM_SUBST);
  for (uint32_t i = 0; i < r->nsubst; i++) {
    int32_t from = r->subst_from[i], to = r->subst_to[i];
    CHECK(from >= 0 && (uint32_t)from < v->p->ncomms && to >= 0 && (uint32_t)to < v->p->ncomms,
          "communicator substitution %d -> %d: no such communicator (the plan has %u)", from, to,
          v->p->ncomms);
    CHECK(v->p->comms[from].nranks == v->p->comms[to].nranks, "communicator substitution %d -> "
          "%d: %u members for %u", from, to, v->p->comms[to].nranks, v->p->comms[from].nranks);
  }
  const dhx_plan_rank *o = &v->p->ranks[owner];
  for (uint32_t i = 0; i < o->nbuffers; i++)  // the buffers are the owner's, shard_index too
    CHECK(o->buffers[i].shard_parts == 1, "shares rank %u, whose buffer %u '%s' is ZeRO shard "
          "%u/%u (each data-parallel rank holds its own shard: such ranks cannot share)", owner,
          i, o->buffers[i].name, o->buffers[i].shard_index, o->buffers[i].shard_parts);
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < o->programs[p].ninstrs; i++) {
      const dhx_plan_instr *in = &o->programs[p].instrs[i];
      if (!dhx_op_on_comm(in->op)) continue;
      int32_t c = dhx_rank_comm(r, in->comm);
      int mine = member_index(&v->p->comms[c], v->rank);
      CHECK(mine >= 0, "runs rank %u's %s on communicator %d, which it is not a member of", owner,
            dhx_op_name(in->op), c);
      // Peers are indices, and an in-place all-gather's input is its member's chunk.
      bool by_index = in->op == DHX_OP_SEND || in->op == DHX_OP_RECV || gathers_in_place(o, in);
      CHECK(!by_index || mine == member_index(&v->p->comms[in->comm], (int)owner), "runs rank "
            "%u's %s on communicator %d at member index %d, where rank %u is %d (%s)", owner,
            dhx_op_name(in->op), c, mine, owner, member_index(&v->p->comms[in->comm], (int)owner),
            in->op == DHX_OP_ALL_GATHER ? "its in-place input is the owner's chunk"
                                        : "peers are indices");
    }
  return true;
}
