// ops.c — the op table of ops.def as data; see ops.h.
#include "ops.h"

#include <stddef.h>
#include <string.h>

#define DHX_PARAMS(...) {__VA_ARGS__}, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)
#define DHX_NO_PARAMS {NULL}, 0

static const dhx_op_sig OPS[] = {
#define DHX_OP(ID, name, call, nin_min, nin_max, grads, tp, params) \
  {#name, DHX_N_##ID, call, params, nin_min, nin_max, grads, tp},
#include "ops.def"
#undef DHX_OP
};

_Static_assert(sizeof OPS / sizeof OPS[0] == DHX_N_COUNT, "ops.def and dhx_node_op disagree");

const dhx_op_sig *dhx_op_info(dhx_node_op op) {
  return (unsigned)op < DHX_N_COUNT ? &OPS[op] : NULL;
}

const dhx_op_sig *dhx_find_op(const char *name) {
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
    if (OPS[i].call == DHX_CALL_FN && strcmp(OPS[i].name, name) == 0) return &OPS[i];
  return NULL;
}
