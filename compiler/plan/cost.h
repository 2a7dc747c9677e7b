// cost.h — a simple model of how long each plan instruction takes, for the simulator
// (simulate.h) and the planned timeline (dhxc --emit=trace).
//
// It is a first-order model of the CPU backend, meant for comparing schedules, not for
// predicting wall time: compute is FLOPs over a rate, memory-bound kernels are bytes over a
// bandwidth, and communication is the ring algorithms of runtime/comm.c, a latency per message
// step plus bytes over the network bandwidth. Every constant is a field of dhx_cost_model, so a
// caller can calibrate it.
#ifndef DHX_COST_H
#define DHX_COST_H

#include <stdint.h>

#include "plan.h"

#define DHX_COST_FLOPS 100e9         // compute rate of one rank, FLOP/s
#define DHX_COST_MEM_BANDWIDTH 20e9  // memory bandwidth of one rank, bytes/s
#define DHX_COST_LAUNCH 2e-6         // fixed cost of a kernel or GEMM launch, s
#define DHX_COST_NET_BANDWIDTH 10e9  // network bandwidth when the plan sets none, bytes/s
#define DHX_COST_NET_LATENCY 5e-6    // latency of one message when the plan sets none, s

typedef struct dhx_cost_model {
  double flops;          // FLOP/s
  double mem_bandwidth;  // bytes/s
  double launch;         // s per kernel or GEMM
  double net_bandwidth;  // bytes/s
  double net_latency;    // s per message step
} dhx_cost_model;

// The defaults above, with the network of plan->train (net_bandwidth, net_latency) when it sets
// one (a plan that emulates a slower network is modelled with that network).
dhx_cost_model dhx_cost_model_for(const dhx_plan *p);

// Bytes this rank sends for a communicating instruction (ring algorithms: an all-reduce sends
// 2(m-1)/m of the buffer over m members, a reduce-scatter, an all-gather or an all-to-all
// (m-1)/m of the whole count, a SEND its count; a RECV sends nothing). 0 for other instructions.
int64_t dhx_cost_bytes_sent(const dhx_plan *p, const dhx_plan_instr *in);

// Seconds instruction `in` takes under model `m`:
//   GEMM       launch + 2·m·n·k·batches / flops
//   KERNEL     launch + bytes its pointer arguments reach (access descriptors) / mem_bandwidth
//   ZERO       bytes / mem_bandwidth;  GRAD_NORM  count·4 / mem_bandwidth
//   ALLREDUCE  2(m-1) · (latency + count/m·size / bandwidth) over m members (0 when m = 1)
//   REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL  (m-1) · (latency + count/m·size / bandwidth)
//   SEND, RECV latency + count·size / bandwidth
//   RECORD, WAIT  0
double dhx_cost_instr(const dhx_cost_model *m, const dhx_plan *p, const dhx_plan_instr *in);

// dhx_cost_instr in the simulator's dhx_sim_duration_fn shape; ctx is a dhx_cost_model.
double dhx_cost_duration(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                         const dhx_plan_instr *in);

#endif
