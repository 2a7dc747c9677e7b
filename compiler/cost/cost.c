// cost.c — the instruction cost model (see the header for the formulas).
#include "cost.h"

#include <string.h>

#include "plan_util.h"

dhx_cost_model dhx_cost_model_for(const dhx_plan *p) {
  dhx_cost_model m = {.flops = DHX_COST_FLOPS, .mem_bandwidth = DHX_COST_MEM_BANDWIDTH,
                      .launch = DHX_COST_LAUNCH, .net_bandwidth = DHX_COST_NET_BANDWIDTH,
                      .net_latency = DHX_COST_NET_LATENCY, .interference = 1};
  if (p->train.net_bandwidth > 0) {  // the emulated network replaces both defaults
    m.net_bandwidth = p->train.net_bandwidth;
    m.net_latency = p->train.net_latency > 0 ? p->train.net_latency : 0;
  }
  return m;
}

double dhx_roofline(double flops, double bytes, double flops_rate, double bandwidth,
                    bool *compute_bound) {
  double compute = flops_rate > 0 ? flops / flops_rate : 0;
  double memory = bandwidth > 0 ? bytes / bandwidth : 0;
  if (compute_bound) *compute_bound = compute >= memory;
  return compute >= memory ? compute : memory;
}

static int64_t i64_arg(const dhx_plan_instr *in, uint32_t j) {
  return j < in->nargs && in->args[j].kind == DHX_ARG_I64 && in->args[j].i > 0 ? in->args[j].i : 0;
}

// The communicator rank `rank` exchanges on (-1: as written; a rank that shares another's
// programs substitutes its own), or -1 when there is none.
static int32_t comm_of(const dhx_plan *p, int64_t rank, const dhx_plan_instr *in) {
  int32_t c = rank >= 0 && (uint64_t)rank < p->nranks ? dhx_rank_comm(&p->ranks[rank], in->comm)
                                                      : in->comm;
  return c >= 0 && (uint32_t)c < p->ncomms ? c : -1;
}

static uint32_t members(const dhx_plan *p, int32_t c) { return c >= 0 ? p->comms[c].nranks : 1; }

int64_t dhx_cost_bytes_sent(const dhx_plan *p, const dhx_plan_instr *in) {
  return dhx_wire_bytes(p, NULL, in);
}

// Bytes per element of `dtype` as the model counts them: f32 data at m->elem_bytes when set.
static double elem_size(const dhx_cost_model *m, uint32_t dtype) {
  return dtype == DHX_F32 && m->elem_bytes > 0 ? m->elem_bytes : (double)dhx_dtype_size(dtype);
}

// Bytes a kernel launch reaches through its pointer arguments; 8 per index when the kernel
// table does not say (a plan from an older dhxc).
static double kernel_bytes(const dhx_cost_model *m, const dhx_plan *p, const dhx_plan_instr *in) {
  if (in->kernel < 0 || (uint32_t)in->kernel >= p->nkernels) return 8.0 * (double)in->n;
  const dhx_plan_kernel *k = &p->kernels[in->kernel];
  double bytes = 0;
  for (uint32_t j = 0; j < k->nargs && j < DHX_MAX_ARGS; j++) {
    int64_t elems = 0;
    if (k->arg_types[j] != DHX_KARG_PTR) continue;
    double size = k->access[j].elem_bytes == 4 && m->elem_bytes > 0 ? m->elem_bytes
                                                                     : k->access[j].elem_bytes;
    if (dhx_access_extent(&k->access[j], in, p->train.vocab, &elems))
      bytes += (double)elems * size;
    else
      bytes += 8.0 * (double)in->n;
  }
  return bytes;
}

// The multiply-adds of the fused attention kernels (kernel_attn.c), which bytes alone would
// make look free: a query row of position i meets i + 1 keys, 4·hs FLOPs each forward (two
// dot products), 6·hs for the query gradient, and a key row meets the queries after it in
// each of its per = H/G query heads, 8·hs each (two dot products, two updates); on average
// (S + 1)/2 partners. 0 for every other kernel.
static double kernel_flops(const dhx_plan *p, const dhx_plan_instr *in) {
  if (in->kernel < 0 || (uint32_t)in->kernel >= p->nkernels) return 0;
  const char *name = p->kernels[in->kernel].name;
  double n = (double)in->n;
  static const struct {
    const char *prefix;
    int s, hs, h, g;    // argument positions of S, hs, H, G (h, g -1: per = 1)
    double per_pair;    // FLOPs per (row, partner) per head element
  } K[] = {{"attn_fwd_", 5, 8, -1, -1, 4}, {"attn_bwd_dq_", 7, 10, -1, -1, 6},
           {"attn_bwd_dkv_", 8, 11, 9, 10, 8}};
  for (size_t i = 0; i < sizeof K / sizeof K[0]; i++) {
    if (strncmp(name, K[i].prefix, strlen(K[i].prefix)) != 0) continue;
    double S = (double)i64_arg(in, (uint32_t)K[i].s), hs = (double)i64_arg(in, (uint32_t)K[i].hs);
    double per = K[i].h >= 0 && i64_arg(in, (uint32_t)K[i].g) > 0
                     ? (double)i64_arg(in, (uint32_t)K[i].h) / (double)i64_arg(in, (uint32_t)K[i].g)
                     : 1;
    return n * per * (S + 1) / 2 * K[i].per_pair * hs;
  }
  return 0;
}

static double gemm_time(const dhx_cost_model *m, const dhx_plan_gemm *g, double size) {
  double batches = (double)g->batch[0] * (double)g->batch[1];
  double flops = 2.0 * (double)g->m * (double)g->n * (double)g->k * batches;
  if (!m->gpu) return flops / m->flops;  // the CPU backend's BLAS: compute bound
  double bytes = ((double)g->m * (double)g->k + (double)g->k * (double)g->n +
                  (double)g->m * (double)g->n) * batches * size;
  return dhx_roofline(flops, bytes, m->flops, m->mem_bandwidth, NULL);
}

// The links a message step crosses: inside a node, or the nodes' network.
typedef struct link {
  double latency, bandwidth;
} link;

static int64_t node_of(const dhx_cost_model *m, int64_t rank) {
  return m->per_node > 0 ? rank / m->per_node : rank;
}

static link intra_link(const dhx_cost_model *m) {
  if (m->intra_bandwidth > 0) return (link){m->intra_latency, m->intra_bandwidth};
  return (link){m->net_latency, m->net_bandwidth};
}

// A node's network, shared by `flows` transfers that leave the node at once.
static link inter_link(const dhx_cost_model *m, double flows) {
  link l = {m->net_latency, m->net_bandwidth / (flows > 1 ? flows : 1)};
  link in = intra_link(m);
  if (in.bandwidth < l.bandwidth) l.bandwidth = in.bandwidth;  // the slower hop sets the pace
  return l;
}

// The ring of communicator c: inside one node, or across k nodes, where every node holds
// members/k of it and the per_node/(members/k) rings of the same collective (the other groups
// of the layout) leave each node at the same time.
static link ring_link(const dhx_cost_model *m, const dhx_plan *p, int32_t c) {
  const dhx_plan_comm *cm = &p->comms[c];
  if (m->per_node <= 0 && m->intra_bandwidth <= 0) return intra_link(m);
  int64_t nodes = 0;
  for (uint32_t i = 0; i < cm->nranks; i++) {
    bool seen = false;
    for (uint32_t j = 0; j < i && !seen; j++)
      seen = node_of(m, cm->ranks[j]) == node_of(m, cm->ranks[i]);
    nodes += !seen;
  }
  if (nodes <= 1) return intra_link(m);
  double per_node_members = (double)cm->nranks / (double)nodes;
  return inter_link(m, m->per_node > 0 ? m->per_node / per_node_members : 1);
}

// A SEND or RECV: the link between the two peers. Across nodes, every rank of the node is taken
// to send at once (the tensor-parallel ranks of a pipeline stage do).
static link pair_link(const dhx_cost_model *m, const dhx_plan *p, int64_t rank, int32_t c,
                      const dhx_plan_instr *in) {
  int64_t peer = i64_arg(in, 2), self = rank >= 0 ? rank : 0;
  if (c < 0 || peer >= (int64_t)p->comms[c].nranks) return intra_link(m);
  int64_t other = p->comms[c].ranks[peer];
  if (rank < 0) self = p->comms[c].ranks[peer == 0 && p->comms[c].nranks > 1 ? 1 : 0];
  if (node_of(m, self) == node_of(m, other)) return intra_link(m);
  return inter_link(m, m->per_node > 0 ? m->per_node : 1);
}

// A ring of `steps` message steps, each one chunk of `chunk_bytes`.
static double ring_time(link l, int64_t steps, double chunk_bytes) {
  return (double)steps * (l.latency + chunk_bytes / l.bandwidth);
}

static double instr_time(const dhx_cost_model *m, const dhx_plan *p, int64_t rank,
                         const dhx_plan_instr *in) {
  double size = elem_size(m, in->dtype);
  int32_t c = dhx_op_on_comm(in->op) ? comm_of(p, rank, in) : -1;
  int64_t n = members(p, c);
  switch (in->op) {
    case DHX_OP_GEMM: return m->launch + gemm_time(m, in->gemm, elem_size(m, DHX_F32));
    case DHX_OP_KERNEL: {
      double flops = kernel_flops(p, in), bytes = kernel_bytes(m, p, in);
      if (flops <= 0) return m->launch + bytes / m->mem_bandwidth;
      if (!m->gpu) return m->launch + flops / m->flops;
      return m->launch + dhx_roofline(flops, bytes, m->flops, m->mem_bandwidth, NULL);
    }
    case DHX_OP_ZERO: return (double)i64_arg(in, 1) / m->mem_bandwidth;
    case DHX_OP_GRAD_NORM:  // reads the partials (args[3] of them)
      return elem_size(m, DHX_F32) * (double)i64_arg(in, 3) / m->mem_bandwidth;
    case DHX_OP_ALLREDUCE:
      return n > 1 ? ring_time(ring_link(m, p, c), 2 * (n - 1),
                               (double)i64_arg(in, 1) / (double)n * size) : 0;
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_ALL_GATHER:
      return n > 1 ? ring_time(ring_link(m, p, c), n - 1,
                               (double)i64_arg(in, 2) / (double)n * size) : 0;
    case DHX_OP_SEND:
    case DHX_OP_RECV: return ring_time(pair_link(m, p, rank, c, in), 1, (double)i64_arg(in, 1) * size);
    default: return 0;  // RECORD, WAIT
  }
}

double dhx_cost_instr(const dhx_cost_model *m, const dhx_plan *p, const dhx_plan_instr *in) {
  return instr_time(m, p, -1, in);
}

double dhx_cost_instr_on(const dhx_cost_model *m, const dhx_plan *p, uint32_t rank,
                         const dhx_plan_instr *in) {
  return instr_time(m, p, rank, in);
}

double dhx_cost_link_hold(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                          const dhx_plan_instr *in) {
  (void)prog;
  return instr_time(ctx, p, rank, in);
}

double dhx_cost_duration(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                         const dhx_plan_instr *in) {
  const dhx_cost_model *m = ctx;
  double measured;
  if (m->profile && (m->profile_comm || !dhx_op_on_comm(in->op)) &&
      dhx_profile_seconds(m->profile, p, rank, in, &measured))
    return measured;
  // The optimizer updates f32 master weights and moments even in mixed precision: its local
  // work counts at the dtype's size; its communication (gradients) at the model's.
  if (prog == DHX_PROG_STEP && m->elem_bytes > 0 && !dhx_op_on_comm(in->op)) {
    dhx_cost_model f32 = *m;
    f32.elem_bytes = 0;
    return instr_time(&f32, p, rank, in);
  }
  return instr_time(m, p, rank, in);
}
