// cost.c — the instruction cost model (see the header for the formulas).
#include "cost.h"

#include "plan_util.h"

dhx_cost_model dhx_cost_model_for(const dhx_plan *p) {
  dhx_cost_model m = {.flops = DHX_COST_FLOPS, .mem_bandwidth = DHX_COST_MEM_BANDWIDTH,
                      .launch = DHX_COST_LAUNCH, .net_bandwidth = DHX_COST_NET_BANDWIDTH,
                      .net_latency = DHX_COST_NET_LATENCY};
  if (p->train.net_bandwidth > 0) {  // the emulated network replaces both defaults
    m.net_bandwidth = p->train.net_bandwidth;
    m.net_latency = p->train.net_latency > 0 ? p->train.net_latency : 0;
  }
  return m;
}

static int64_t i64_arg(const dhx_plan_instr *in, uint32_t j) {
  return j < in->nargs && in->args[j].kind == DHX_ARG_I64 && in->args[j].i > 0 ? in->args[j].i : 0;
}

static uint32_t members(const dhx_plan *p, const dhx_plan_instr *in) {
  return in->comm >= 0 && (uint32_t)in->comm < p->ncomms ? p->comms[in->comm].nranks : 1;
}

int64_t dhx_cost_bytes_sent(const dhx_plan *p, const dhx_plan_instr *in) {
  int64_t size = dhx_dtype_size(in->dtype), m = members(p, in);
  switch (in->op) {
    case DHX_OP_ALLREDUCE: return m > 1 ? 2 * (m - 1) * (i64_arg(in, 1) / m) * size : 0;
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_ALL_GATHER: return m > 1 ? (m - 1) * (i64_arg(in, 2) / m) * size : 0;
    case DHX_OP_SEND: return i64_arg(in, 1) * size;
    default: return 0;
  }
}

// Bytes a kernel launch reaches through its pointer arguments; 8 per index when the kernel
// table does not say (a plan from an older dhxc).
static double kernel_bytes(const dhx_plan *p, const dhx_plan_instr *in) {
  if (in->kernel < 0 || (uint32_t)in->kernel >= p->nkernels) return 8.0 * (double)in->n;
  const dhx_plan_kernel *k = &p->kernels[in->kernel];
  double bytes = 0;
  for (uint32_t j = 0; j < k->nargs && j < DHX_MAX_ARGS; j++) {
    int64_t elems = 0;
    if (k->arg_types[j] != DHX_KARG_PTR) continue;
    if (dhx_access_extent(&k->access[j], in, p->train.vocab, &elems))
      bytes += (double)elems * k->access[j].elem_bytes;
    else
      bytes += 8.0 * (double)in->n;
  }
  return bytes;
}

static double gemm_flops(const dhx_plan_gemm *g) {
  return 2.0 * (double)g->m * (double)g->n * (double)g->k * (double)g->batch[0] *
         (double)g->batch[1];
}

// A ring of `steps` message steps, each one chunk of `chunk_bytes`.
static double ring_time(const dhx_cost_model *m, int64_t steps, double chunk_bytes) {
  return (double)steps * (m->net_latency + chunk_bytes / m->net_bandwidth);
}

double dhx_cost_instr(const dhx_cost_model *m, const dhx_plan *p, const dhx_plan_instr *in) {
  double size = (double)dhx_dtype_size(in->dtype);
  int64_t n = members(p, in);
  switch (in->op) {
    case DHX_OP_GEMM: return m->launch + gemm_flops(&in->gemm) / m->flops;
    case DHX_OP_KERNEL: return m->launch + kernel_bytes(p, in) / m->mem_bandwidth;
    case DHX_OP_ZERO: return (double)i64_arg(in, 1) / m->mem_bandwidth;
    case DHX_OP_GRAD_NORM: return 4.0 * (double)i64_arg(in, 1) / m->mem_bandwidth;
    case DHX_OP_ALLREDUCE:
      return n > 1 ? ring_time(m, 2 * (n - 1), (double)i64_arg(in, 1) / (double)n * size) : 0;
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_ALL_GATHER:
      return n > 1 ? ring_time(m, n - 1, (double)i64_arg(in, 2) / (double)n * size) : 0;
    case DHX_OP_SEND:
    case DHX_OP_RECV: return ring_time(m, 1, (double)i64_arg(in, 1) * size);
    default: return 0;  // RECORD, WAIT
  }
}

double dhx_cost_duration(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                         const dhx_plan_instr *in) {
  (void)rank;
  (void)prog;
  return dhx_cost_instr(ctx, p, in);
}
