// elaborate_internal.h — what the files of elaboration share: the interpreter's values, frames
// and context, and the functions one file offers the others.
//
//   elaborate.c          the model instance: its arguments and inputs, the entry point, and
//                        the notes that say where an error came from
//   elaborate_scope.c    frames: variables and the scope names of calls ("block.2.linear.1")
//   elaborate_tensors.c  new parameters and activations (size limits), argument checks
//   elaborate_ops.c      the primitive ops: one node (and its weights) per call
//   elaborate_expr.c     expressions and binding a call's arguments
//   elaborate_layers.c   statements, `repeat` (the layer stack) and layer calls
#ifndef DHX_ELABORATE_INTERNAL_H
#define DHX_ELABORATE_INTERNAL_H

#include <stdint.h>

#include "elaborate.h"
#include "front.h"

typedef enum { V_NONE, V_INT, V_FLOAT, V_BOOL, V_STR, V_TENSOR, V_SYMBOL } vkind;

typedef struct value {
  vkind k;
  int64_t i;      // V_INT
  double f;       // V_FLOAT
  bool b;         // V_BOOL
  const char *s;  // V_STR, V_SYMBOL (an unbound identifier, e.g. `col` in @split(col))
  int t;          // V_TENSOR
  // Bit i: the value depends on argument i of the model instance (a tensor: its last, feature
  // dimension does). An error can then name the --set options behind the numbers it quotes.
  uint64_t from;
} value;

typedef struct binding {
  const char *name;
  value v;
} binding;

// One activation record: a layer or model body. `repeat` bodies share their caller's frame.
typedef struct frame {
  binding *vars;
  int nvars, capvars;
  char scope[DHX_NAME_MAX];
  // per-op-name call counters, so the k-th linear of a scope is "linear.k"
  const char *counter_names[64];
  int counters[64];
  int ncounters;
  bool returned;
  value ret;
} frame;

typedef struct ctx {
  dhx_graph *g;
  const dhx_program *prog;
  int micro_batch;
  int depth;
  int layer;      // the layer-stack iteration being elaborated, -1 outside one
  const dhx_expr *site;  // the op call being elaborated (for size errors)
  int call_site;  // the layer call being elaborated (c->g->sites), -1 in the model body
  uint64_t from;  // the instance arguments behind the values the current call or operator reads
  const dhx_expr *inst_call;  // the model instance's call
  bool failed;
} ctx;

#define MAX_CALL_DEPTH 64
// Tensors stay below 2^40 elements and models below MAX_NODES ops, so every size the later
// passes compute fits in 64 bits (and absurd programs fail fast instead of eating memory).
#define MAX_TENSOR_ELEMS (1LL << 40)
#define MAX_NODES 200000

static inline const char *src_of(const dhx_loc *loc) { return dhx_source_for(loc->file); }

// An error, then the chain of calls that led to it, as "in layer ... called here" notes.
#define FAIL(c, loc, ...)                                              \
  do {                                                                 \
    dhx_error_at((loc), src_of(loc), __VA_ARGS__);                     \
    dhx_note_instantiation((c)->g, (c)->call_site, (c)->from, (loc));  \
    (c)->failed = true;                                                \
  } while (0)

static inline const char *kind_name(vkind k) {
  static const char *n[] = {"nothing", "an integer", "a number", "a boolean", "a string",
                            "a tensor", "a name"};
  return n[k];
}

static inline const dhx_tensor *T(ctx *c, int t) { return &c->g->tensors[t]; }

static inline value tensor_value(int t, uint64_t from) {
  return (value){.k = V_TENSOR, .t = t, .from = from};
}

// elaborate_scope.c
value *elab_lookup(frame *f, const char *name);
void elab_bind(frame *f, const char *name, value v);
// "scope.op.k" for the k-th call of `op` in this frame.
void elab_child_scope(frame *f, const char *op, char *out);

// elaborate_tensors.c
int elab_new_param(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape,
                   dhx_init_kind init, float std, bool decay);
int elab_new_act(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape);
bool elab_want_tensor(ctx *c, const dhx_expr *call, const char *what, value v);
bool elab_want_int(ctx *c, const dhx_expr *call, const char *what, value v, int64_t lo);
bool elab_want_last_dim(ctx *c, const dhx_expr *call, int t, const char *what);
// Copies t's shape with the last dim replaced by `last`.
int elab_shape_with_last(ctx *c, int t, int64_t last, int64_t *shape);

// elaborate_ops.c
// Elaborates the primitive op that `e` calls into *out; false when e->str names no primitive op.
bool elab_primitive_op(ctx *c, frame *f, const dhx_expr *e, const dhx_expr *annot, value *out);
// tensor + tensor, tensor * tensor: elementwise, same shapes.
value elab_elementwise(ctx *c, frame *f, const dhx_expr *e, value l, value r);

// elaborate_expr.c
value elab_eval(ctx *c, frame *f, const dhx_expr *e);
// Matches a call's arguments to `names` (positional first, then named). Missing arguments keep
// the V_NONE kind so callers can apply defaults.
bool elab_bind_call_args(ctx *c, frame *f, const dhx_expr *call, const char *const *names,
                         int n, value *out);

// elaborate_layers.c
bool elab_type_ok(const dhx_param *p, value v);
// Runs a definition's body in `callee`; its return value.
value elab_run_body(ctx *c, frame *callee, const dhx_item *def, const dhx_expr *site);
value elab_call_layer(ctx *c, frame *f, const dhx_expr *call, const dhx_item *def);

#endif
