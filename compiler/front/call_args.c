// call_args.c — matching a call's arguments to parameter names, for every kind of callee
// (layers and models in the definition checker, primitive ops there and in elaboration), so
// misplaced, unknown and repeated arguments are judged and worded the same everywhere.
#include <string.h>

#include "internal.h"

#define FAIL(at, ...) dhx_error_at((at), dhx_source_for((at)->file), __VA_ARGS__)

bool dhx_match_call_args(const dhx_expr *call, const char *fname, const char *const *names,
                         int n, const dhx_loc *defined, const dhx_arg **slot) {
  bool ok = true, named = false;
  for (int i = 0; i < n; i++) slot[i] = NULL;
  for (int i = 0; i < call->nargs; i++) {
    const dhx_arg *a = &call->args[i];
    int k = -1;
    if (!a->name) {
      if (named) {
        FAIL(&a->name_loc, "positional argument after a named one");
        ok = false;
        continue;
      }
      if (i >= n) {
        FAIL(&a->name_loc, "'%s' takes at most %d arguments", fname, n);
        ok = false;
        continue;
      }
      k = i;
    } else {
      named = true;
      for (int j = 0; j < n; j++)
        if (strcmp(names[j], a->name) == 0) k = j;
      if (k < 0) {
        const char *hint = dhx_suggest(a->name, names);
        if (hint)
          FAIL(&a->name_loc, "'%s' has no parameter '%s'; did you mean '%s'?", fname, a->name, hint);
        else
          FAIL(&a->name_loc, "'%s' has no parameter '%s'", fname, a->name);
        if (defined) dhx_note_at(defined, dhx_source_for(defined->file), "'%s' is defined here", fname);
        ok = false;
        continue;
      }
    }
    if (slot[k]) {
      FAIL(&a->name_loc, "argument '%s' given twice", names[k]);
      ok = false;
      continue;
    }
    slot[k] = a;
  }
  return ok;
}
