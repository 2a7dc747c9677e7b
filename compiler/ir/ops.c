// ops.c — see ops.h.
#include "ops.h"

#include <string.h>

static const dhx_op_sig OPS[] = {
    {"embedding", {"tokens", "vocab", "dim"}, 3},
    {"pos_embedding", {"x"}, 1},
    {"layernorm", {"x", "eps"}, 2},
    {"rmsnorm", {"x", "eps"}, 2},
    {"linear", {"x", "out", "bias"}, 3},
    {"attention", {"q", "k", "v", "heads", "kv_heads", "causal"}, 6},
    {"rope", {"x", "heads", "base"}, 3},
    {"gelu", {"x"}, 1},
    {"silu", {"x"}, 1},
    {"cross_entropy", {"logits", "targets"}, 2},
};

const char *const dhx_op_names[] = {"embedding", "pos_embedding", "layernorm", "rmsnorm",
                                    "linear",    "attention",     "rope",      "gelu",
                                    "silu",      "cross_entropy", NULL};

const dhx_op_sig *dhx_find_op(const char *name) {
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
    if (strcmp(OPS[i].name, name) == 0) return &OPS[i];
  return NULL;
}
