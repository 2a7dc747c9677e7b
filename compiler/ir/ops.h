// ops.h — the primitive ops of the language and their parameters, in call order.
//
// One table for everything that binds a call's arguments to an op (elaborate.c, and the
// definition checker in compiler/sema), so an op's parameter names exist once.
#ifndef DHX_OPS_H
#define DHX_OPS_H

#define DHX_OP_MAX_PARAMS 8

typedef struct dhx_op_sig {
  const char *name;
  const char *params[DHX_OP_MAX_PARAMS];
  int nparams;
} dhx_op_sig;

// The op named `name`, or NULL when it is not a primitive op.
const dhx_op_sig *dhx_find_op(const char *name);
// Every op name, NULL-terminated (for did-you-mean).
extern const char *const dhx_op_names[];

#endif
