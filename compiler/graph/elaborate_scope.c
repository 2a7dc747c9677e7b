// elaborate_scope.c — frames of the elaboration: variables and the scope names of calls.
#include <stdlib.h>
#include <string.h>

#include "elaborate_internal.h"

value *elab_lookup(frame *f, const char *name) {
  for (int i = f->nvars - 1; i >= 0; i--)
    if (strcmp(f->vars[i].name, name) == 0) return &f->vars[i].v;
  return NULL;
}

void elab_bind(frame *f, const char *name, value v) {
  value *old = elab_lookup(f, name);
  if (old) {
    *old = v;
    return;
  }
  if (f->nvars == f->capvars) {
    f->capvars = f->capvars ? 2 * f->capvars : 16;
    f->vars = realloc(f->vars, (size_t)f->capvars * sizeof *f->vars);
    if (!f->vars) abort();
  }
  f->vars[f->nvars++] = (binding){name, v};
}

static int next_counter(frame *f, const char *name) {
  for (int i = 0; i < f->ncounters; i++)
    if (strcmp(f->counter_names[i], name) == 0) return f->counters[i]++;
  if (f->ncounters == 64) return 63;  // absurdly many distinct ops in one scope; names stay unique by index
  f->counter_names[f->ncounters] = name;
  f->counters[f->ncounters++] = 1;
  return 0;
}

// "scope.op.k" for the k-th call of `op` in this frame.
void elab_child_scope(frame *f, const char *op, char *out) {
  int k = next_counter(f, op);
  // Names longer than DHX_NAME_MAX are cut; they only label nodes and parameters.
  int n = f->scope[0] ? snprintf(out, DHX_NAME_MAX, "%s.%s.%d", f->scope, op, k)
                      : snprintf(out, DHX_NAME_MAX, "%s.%d", op, k);
  if (n >= DHX_NAME_MAX) out[DHX_NAME_MAX - 1] = '\0';
}
