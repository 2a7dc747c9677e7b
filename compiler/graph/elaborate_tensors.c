// elaborate_tensors.c — the tensors elaboration creates (parameters, activations) within the
// size limits, and the checks of a primitive op's arguments.
#include <stdio.h>

#include "elaborate_internal.h"

// The shape, or all ones after reporting it when it is too large (elaboration then stops).
static const int64_t *checked_shape(ctx *c, const char *name, int ndim, const int64_t *shape,
                                    int64_t *ones) {
  int64_t n = 1;
  bool ok = true;
  for (int i = 0; i < ndim; i++)
    ok = ok && shape[i] >= 0 && !__builtin_mul_overflow(n, shape[i], &n) && n <= MAX_TENSOR_ELEMS;
  if (ok) return shape;
  if (!c->failed && c->site)
    FAIL(c, &c->site->loc, "tensor '%s' would have more than 2^40 elements", name);
  c->failed = true;
  for (int i = 0; i < ndim; i++) ones[i] = 1;
  return ones;
}

static int new_tensor(ctx *c, const char *name, dhx_tensor_kind kind, int ndim,
                      const int64_t *shape) {
  int64_t ones[DHX_MAX_DIMS];
  return dhx_tensor_new(c->g, name, kind, DHX_F32, ndim, checked_shape(c, name, ndim, shape, ones));
}

int elab_new_param(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape,
                     dhx_init_kind init, float std, bool decay) {
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s.%s", scope, leaf);
  int t = new_tensor(c, name, DHX_T_PARAM, ndim, shape);
  dhx_tensor *p = &c->g->tensors[t];
  p->init = init;
  p->init_std = std;
  p->decay = decay;
  c->g->n_params += dhx_tensor_elems(p);
  return t;
}

int elab_new_act(ctx *c, const char *scope, const char *leaf, int ndim, const int64_t *shape) {
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s.%s", scope, leaf);
  return new_tensor(c, name, DHX_T_ACT, ndim, shape);
}


bool elab_want_tensor(ctx *c, const dhx_expr *call, const char *what, value v) {
  if (v.k == V_TENSOR) return true;
  FAIL(c, &call->loc, "'%s' of '%s' must be a tensor, got %s", what, call->str, kind_name(v.k));
  return false;
}

bool elab_want_int(ctx *c, const dhx_expr *call, const char *what, value v, int64_t lo) {
  if (v.k == V_INT && v.i >= lo) return true;
  if (v.k == V_INT)
    FAIL(c, &call->loc, "'%s' of '%s' must be at least %lld, got %lld", what, call->str,
         (long long)lo, (long long)v.i);
  else
    FAIL(c, &call->loc, "'%s' of '%s' must be an integer, got %s", what, call->str,
         kind_name(v.k));
  return false;
}

bool elab_want_last_dim(ctx *c, const dhx_expr *call, int t, const char *what) {
  if (T(c, t)->ndim >= 2) return true;
  FAIL(c, &call->loc, "'%s' of '%s' must have at least 2 dimensions", what, call->str);
  return false;
}

// Copies t's shape with the last dim replaced by `last`.
int elab_shape_with_last(ctx *c, int t, int64_t last, int64_t *shape) {
  const dhx_tensor *x = T(c, t);
  for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
  shape[x->ndim - 1] = last;
  return x->ndim;
}
