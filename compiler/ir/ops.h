// ops.h — the op table (ops.def) as data: for each op of the operator graph its name, how a
// program makes it, its parameters in call order, its inputs and what the backward does to
// their gradients, and how tensor parallelism splits it.
//
// Everything that binds a call's arguments to an op (elaboration, and the definition checker
// in compiler/sema) reads the parameters here, so an op's parameter names exist once; the
// passes build their per-op dispatch from ops.def itself.
#ifndef DHX_OPS_H
#define DHX_OPS_H

#include "graph.h"

#define DHX_OP_MAX_PARAMS 8

typedef enum {
  DHX_CALL_FN,        // name(args) in the language
  DHX_CALL_OPERATOR,  // tensor + tensor, tensor * tensor
  DHX_CALL_PASS,      // inserted by a pass, never written
} dhx_op_call;

// How tensor parallelism (shard_tp.c) splits an op.
typedef enum {
  DHX_TP_SPLIT,        // by its @split annotation: column- or row-split weight (linear)
  DHX_TP_HEADS,        // over its heads (attention)
  DHX_TP_VOCAB,        // its table's rows: a slice of the vocabulary per rank (embedding)
  DHX_TP_VOCAB_LOSS,   // over the vocabulary when its logits are split (cross_entropy)
  DHX_TP_ELEMENTWISE,  // follows its inputs: split if they are (all alike)
  DHX_TP_REPLICATED,   // needs whole rows: its input must not be split
  DHX_TP_INSERTED,     // inserted after tensor parallelism (sequence parallelism)
} dhx_tp_rule;

typedef struct dhx_op_sig {
  const char *name;
  dhx_node_op op;
  dhx_op_call call;
  const char *params[DHX_OP_MAX_PARAMS];
  int nparams;
  int nin_min, nin_max;
  const char *grads;   // per input: 'a' the backward accumulates its gradient, '-' none
  dhx_tp_rule tp;
} dhx_op_sig;

// The entry of node op `op` (every value of dhx_node_op has one).
const dhx_op_sig *dhx_op_info(dhx_node_op op);
// The op called `name` in the language, or NULL when it is not a primitive op.
const dhx_op_sig *dhx_find_op(const char *name);

#endif
