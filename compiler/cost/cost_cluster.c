// cost_cluster.c — the cost model of a configured cluster (dhx_cost_model_of_cluster).
#include "cost.h"

dhx_cost_model dhx_cost_model_of_cluster(const dhx_config *cfg, const dhx_plan *p) {
  dhx_cost_model m = dhx_cost_model_for(p);
  if (cfg->precision == DHX_PREC_BF16) m.elem_bytes = 2;
  if (cfg->cluster_cpu) {
    if (cfg->net_bandwidth > 0) {
      m.net_bandwidth = cfg->net_bandwidth;
      m.net_latency = cfg->net_latency > 0 ? cfg->net_latency : 0;
    }
    return m;  // every rank a node of its own: all links are the network
  }
  m.gpu = true;
  m.flops = cfg->gpu.flops * DHX_COST_GPU_GEMM_EFFICIENCY;
  m.mem_bandwidth = cfg->gpu.bandwidth * DHX_COST_GPU_MEM_EFFICIENCY;
  m.launch = DHX_COST_GPU_LAUNCH;
  m.per_node = cfg->per_node > 0 ? cfg->per_node : 1;
  m.intra_bandwidth = cfg->intra_bandwidth > 0 ? cfg->intra_bandwidth : DHX_COST_NET_BANDWIDTH;
  m.intra_latency = cfg->intra_latency > 0 ? cfg->intra_latency : DHX_COST_GPU_INTRA_LATENCY;
  // One node: no network; the intra-node figures stand in so that nothing divides by zero.
  m.net_bandwidth = cfg->inter_bandwidth > 0 ? cfg->inter_bandwidth : m.intra_bandwidth;
  m.net_latency = cfg->inter_latency > 0 ? cfg->inter_latency : DHX_COST_GPU_INTER_LATENCY;
  m.interference = DHX_COST_INTERFERENCE;
  return m;
}
