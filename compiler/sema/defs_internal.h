// defs_internal.h — what the definition checker's files (defs.c, defs_ops.c) share.
//
// Values are abstract: an integer is a symbolic polynomial (symbolic.h), a tensor is a rank,
// an element type and symbolic dimensions. An erroneous expression yields K_ERR, which every
// rule passes on without a word, so one mistake gives one message.
#ifndef DHX_DEFS_INTERNAL_H
#define DHX_DEFS_INTERNAL_H

#include "front.h"
#include "ops.h"
#include "plan_base.h"
#include "sema.h"
#include "symbolic.h"

typedef enum { K_ERR, K_INT, K_FLOAT, K_BOOL, K_STR, K_TENSOR, K_LOSS } sem_kind;

typedef struct sval {
  sem_kind k;
  const dhx_sym *i;                    // K_INT: its value (NULL = not known)
  int ndim;                            // K_TENSOR
  const dhx_sym *dims[DHX_MAX_DIMS];   // NULL = not known
  bool i32;                            // K_TENSOR of token ids
} sval;

typedef struct sem_var {
  const char *name;
  sval v;
  dhx_loc loc;       // where it was assigned (or declared)
  bool used, param, loop;
} sem_var;

typedef struct checker checker;

// The body being checked: a definition's scope.
typedef struct fn {
  checker *ck;
  const dhx_item *def;   // NULL for the model instance's arguments
  sem_var *vars;
  int nvars, cap;
  bool returned;
  sval ret;
  bool warn;             // report unused names (definitions of the main module)
} fn;

// Helpers of defs.c used by the op rules.
const char *sem_src(const dhx_loc *loc);
dhx_symtab *sem_syms(fn *f);
sval sem_eval(fn *f, const dhx_expr *e);
sval sem_err(void);
sval sem_int(const dhx_sym *v);
const char *sem_kind_name(sem_kind k);
const char *sem_shape_text(fn *f, const sval *v, char *buf, size_t n);
// dims equal where both are known
bool sem_same_dims(const sval *a, const sval *b, int from, int to);

// defs_ops.c: the primitive op `sig` applied at `call` (annotation `annot` or NULL).
sval sem_op(fn *f, const dhx_op_sig *sig, const dhx_expr *call, const dhx_expr *annot);

#endif
