// verify_graph.c — the operator graph agrees with the op table (ops.def): every node is a known
// op with as many inputs as its entry allows, its tensors exist, and an input whose gradient
// the backward leaves alone ('-': token ids, targets) holds integers. Run after the passes that
// rewrite the graph (the parallel layouts), before lowering reads it.
#include "ice.h"
#include "lower.h"
#include "ops.h"

static bool tensor_ok(const dhx_graph *g, int t) { return t >= 0 && t < g->ntensors; }

void dhx_verify_graph(const dhx_graph *g, const char *pass) {
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    const dhx_op_sig *sig = dhx_op_info(n->op);
    if (!sig) DHX_ICE("after %s: node %d (%s) has op %d, not in the op table", pass, i, n->scope,
                      (int)n->op);
    if (n->nin < sig->nin_min || n->nin > sig->nin_max)
      DHX_ICE("after %s: node %d (%s, %s) has %d inputs; the op table allows %d to %d", pass, i,
              n->scope, sig->name, n->nin, sig->nin_min, sig->nin_max);
    if (!tensor_ok(g, n->out) || n->nsaved < 0 || n->nsaved > 2)
      DHX_ICE("after %s: node %d (%s, %s) has no output or %d saved tensors", pass, i, n->scope,
              sig->name, n->nsaved);
    for (int k = 0; k < n->nsaved; k++)
      if (!tensor_ok(g, n->saved[k]))
        DHX_ICE("after %s: node %d (%s, %s): saved tensor %d does not exist", pass, i, n->scope,
                sig->name, n->saved[k]);
    for (int j = 0; j < n->nin; j++) {
      if (!tensor_ok(g, n->in[j]))
        DHX_ICE("after %s: node %d (%s, %s): input %d is tensor %d, which does not exist", pass,
                i, n->scope, sig->name, j, n->in[j]);
      if (sig->grads[j] == '-' && g->tensors[n->in[j]].dtype != DHX_I32)
        DHX_ICE("after %s: node %d (%s, %s): input %d has no gradient in the op table but is "
                "not i32", pass, i, n->scope, sig->name, j);
    }
  }
}
