// cost.h — how long each plan instruction takes, for the simulator (simulate.h), the planned
// timeline (dhxc --emit=trace) and dhxc --simulate. docs/simulator.md has the model.
//
// Compute on a GPU cluster is a roofline on the cluster's GPU kind: a GEMM or kernel takes
// max(FLOPs / (peak · efficiency), bytes / memory bandwidth) plus a launch overhead. On a CPU
// cluster it is the first-order model of the CPU backend (FLOPs over a rate, bytes over a
// bandwidth). Communication is the ring algorithms of runtime/comm.c (and NCCL's rings): per
// message step a latency plus a chunk over the bandwidth of the slowest link the ring crosses
// (alpha-beta); a ring whose members sit on more than one node crosses the nodes' network, whose
// bandwidth is shared by the rings of the same collective that leave the node at once. Every
// constant is a field of dhx_cost_model, so a caller can calibrate it.
#ifndef DHX_COST_H
#define DHX_COST_H

#include <stdbool.h>
#include <stdint.h>

#include "front.h"
#include "plan.h"

#define DHX_COST_FLOPS 100e9         // compute rate of one CPU rank, FLOP/s
#define DHX_COST_MEM_BANDWIDTH 20e9  // memory bandwidth of one CPU rank, bytes/s
#define DHX_COST_LAUNCH 2e-6         // fixed cost of a kernel or GEMM launch on a CPU, s
#define DHX_COST_NET_BANDWIDTH 10e9  // network bandwidth when the plan sets none, bytes/s
#define DHX_COST_NET_LATENCY 5e-6    // latency of one message when the plan sets none, s

#define DHX_COST_GPU_GEMM_EFFICIENCY 0.75  // share of the datasheet peak a large GEMM reaches
#define DHX_COST_GPU_MEM_EFFICIENCY 0.85   // share of the memory bandwidth a kernel streams at
#define DHX_COST_GPU_LAUNCH 5e-6           // kernel launch and tail, s
#define DHX_COST_GPU_INTRA_LATENCY 3e-6    // one message step inside a node when unset, s
#define DHX_COST_GPU_INTER_LATENCY 10e-6   // one message step across nodes when unset, s
#define DHX_COST_INTERFERENCE 1.15         // compute slowdown while communication runs (GPU)

typedef struct dhx_profile dhx_profile;

typedef struct dhx_cost_model {
  double flops;          // FLOP/s a GEMM reaches (the peak times the efficiency on a GPU)
  double mem_bandwidth;  // bytes/s a kernel streams at
  double launch;         // s per kernel or GEMM
  double net_bandwidth;  // bytes/s between nodes (per node; a CPU cluster: per rank)
  double net_latency;    // s per message step between nodes
  double intra_bandwidth;  // bytes/s between ranks of one node (per rank); 0: as the network
  double intra_latency;    // s per message step inside a node
  int per_node;            // ranks per node; 0: every rank is a node of its own
  double elem_bytes;       // bytes per element the data is counted at (bf16: 2); 0: the dtype's
  double interference;     // factor on a compute instruction that starts while the same
                           // rank communicates (1: none); applied by the simulator
  bool gpu;                // a GPU roofline (else the CPU model)
  const dhx_profile *profile;  // measured times (dhxrun --profile) that replace the model's
                               // wherever the profile has the instruction's key; NULL: none
  bool profile_comm;           // communication too (the profile's network is the plan's)
} dhx_cost_model;

// The CPU defaults above, with the network of plan->train (net_bandwidth, net_latency) when it
// sets one (a plan that emulates a slower network is modelled with that network).
dhx_cost_model dhx_cost_model_for(const dhx_plan *p);

// The model of cfg's cluster: the roofline of its GPU kind with its intra- and inter-node links,
// or for a CPU cluster the defaults with its network (cpu(net:, latency:)) between ranks. Data
// counts at 2 bytes per element when cfg trains in bf16 (the lowered plan is f32 either way).
dhx_cost_model dhx_cost_model_of_cluster(const dhx_config *cfg, const dhx_plan *p);

// The roofline: seconds for `flops` FLOPs reading and writing `bytes` at `flops_rate` and
// `bandwidth`; *compute_bound (may be NULL) says which side set it.
double dhx_roofline(double flops, double bytes, double flops_rate, double bandwidth,
                    bool *compute_bound);

// Bytes this rank sends for a communicating instruction (ring algorithms: an all-reduce sends
// 2(m-1)/m of the buffer over m members, a reduce-scatter, an all-gather or an all-to-all
// (m-1)/m of the whole count, a SEND its count; a RECV sends nothing). 0 for other instructions.
int64_t dhx_cost_bytes_sent(const dhx_plan *p, const dhx_plan_instr *in);

// Seconds instruction `in` takes under model `m` (size: m->elem_bytes, or the dtype's):
//   GEMM       launch + roofline(2·m·n·k·batches, (mk + kn + mn)·batches·size)   (CPU: no bytes)
//   KERNEL     launch + bytes its pointer arguments reach (access descriptors) / mem_bandwidth
//   ZERO       bytes / mem_bandwidth;  GRAD_NORM  count·size / mem_bandwidth
//   ALLREDUCE  2(m-1) · (latency + count/m·size / bandwidth) over m members (0 when m = 1)
//   REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL  (m-1) · (latency + count/m·size / bandwidth)
//   SEND, RECV latency + count·size / bandwidth
//   RECORD, WAIT  0
// with the latency and bandwidth of the links the ring (or the pair) crosses as rank `rank`'s
// communicator places it (dhx_cost_instr: the communicator as written).
double dhx_cost_instr(const dhx_cost_model *m, const dhx_plan *p, const dhx_plan_instr *in);
double dhx_cost_instr_on(const dhx_cost_model *m, const dhx_plan *p, uint32_t rank,
                         const dhx_plan_instr *in);

// dhx_cost_instr_on in the simulator's dhx_sim_duration_fn shape; ctx is a dhx_cost_model. With
// a profile, an instruction whose key it holds takes the measured time instead.
double dhx_cost_duration(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                         const dhx_plan_instr *in);
// How long a collective holds its links (dhx_sim_options.link_hold): the model's time for it.
// A measured collective that took longer held them only that long; the rest of its time (its
// peers arriving late, the exchange's own software time) delays its stream, not the links.
double dhx_cost_link_hold(void *ctx, const dhx_plan *p, uint32_t rank, int prog,
                          const dhx_plan_instr *in);

// ---- measured profiles (profile.c) ------------------------------------------------------------
// A profile written by dhxrun --profile: NULL with err naming the file (and the field) when it
// cannot be read or is not one.
dhx_profile *dhx_profile_load(const char *path, char *err, size_t errlen);
void dhx_profile_free(dhx_profile *p);
size_t dhx_profile_size(const dhx_profile *p);  // instruction keys it times
// Compute beside a collective over compute alone, as measured; 0 when the run had no overlap.
double dhx_profile_interference(const dhx_profile *p);
// The network the profiled run emulated; false when it emulated none.
bool dhx_profile_network(const dhx_profile *p, double *bandwidth, double *latency);
// The measured time of instruction `in` of rank `rank`; false when the profile lacks its key.
bool dhx_profile_seconds(const dhx_profile *p, const dhx_plan *plan, uint32_t rank,
                         const dhx_plan_instr *in, double *seconds);
// How many of the plan's timed instructions (all ranks and programs) the profile covers.
void dhx_profile_coverage(const dhx_profile *p, const dhx_plan *plan, int64_t *covered,
                          int64_t *total);

#endif
