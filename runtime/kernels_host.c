// kernels_host.c — the CPU backend's kernels: PLAN/kernels.so, one exported function
// dhxk_NAME per entry of the plan's kernel table (runtime/kernel_abi.h).
//
// Every symbol is resolved when the plan is loaded, so a kernels.so that does not match its
// plan.bin fails at start-up with the missing kernel's name, not in the middle of a run.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

bool dhx_kernels_load(dhx_kernels *k, const dhx_plan *plan, const char *so_path, char *err,
                      size_t errlen) {
  memset(k, 0, sizeof *k);
  if (plan->nkernels == 0) return true;
  k->handle = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (!k->handle) {
    const char *why = dlerror();
    snprintf(err, errlen, "%s: cannot load the plan's kernels: %s", so_path, why ? why : "?");
    return false;
  }
  k->fn = calloc(plan->nkernels, sizeof(dhx_kernel_fn));
  if (!k->fn) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  k->n = plan->nkernels;
  for (uint32_t i = 0; i < plan->nkernels; i++) {
    char sym[DHX_NAME_MAX + sizeof DHX_KERNEL_PREFIX];
    snprintf(sym, sizeof sym, DHX_KERNEL_PREFIX "%s", plan->kernels[i].name);
    void *fn = dlsym(k->handle, sym);
    if (!fn) {
      snprintf(err, errlen, "%s: kernel '%s' (symbol %s) is missing: kernels.so does not "
               "match plan.bin (recompile the plan)", so_path, plan->kernels[i].name, sym);
      return false;
    }
    // POSIX guarantees that a data pointer from dlsym converts to a function pointer.
    memcpy(&k->fn[i], &fn, sizeof fn);
  }
  return true;
}

void dhx_kernels_unload(dhx_kernels *k) {
  free(k->fn);
  if (k->handle) dlclose(k->handle);
  memset(k, 0, sizeof *k);
}
