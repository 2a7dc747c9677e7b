// kernels_host.c — the CPU backend's kernels: PLAN/kernels.so, one exported function
// dhxk_NAME per entry of the plan's kernel table (runtime/kernel_abi.h), and beside it the
// string dhxabi_NAME: the signature and access descriptors the code was built for
// (runtime/plan_util.h).
//
// Every symbol is resolved when the plan is loaded, and every kernel table entry must equal
// what kernels.so says about the kernel, so a kernels.so that does not match its plan.bin fails
// at start-up naming the kernel (and the argument), not in the middle of a run. The validator
// bounds every launch through the plan's descriptors; this check is what makes them the code's.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "plan_util.h"

// ---- the signature export ---------------------------------------------------------------------

// One word of an encoding into argument j of k.
static bool decode_arg(const char *word, size_t len, dhx_plan_kernel *k, uint32_t j) {
  static const struct { const char *word; uint32_t type; } SCALARS[] = {
      {"i64", DHX_KARG_I64}, {"f32", DHX_KARG_F32}, {"f64", DHX_KARG_F64}};
  k->access[j] = (dhx_plan_access){.x = -1, .y = -1, .z = -1};
  for (size_t s = 0; s < sizeof SCALARS / sizeof SCALARS[0]; s++)
    if (len == strlen(SCALARS[s].word) && memcmp(word, SCALARS[s].word, len) == 0) {
      k->arg_types[j] = SCALARS[s].type;
      return true;
    }
  dhx_plan_access *a = &k->access[j];
  int used = 0;
  k->arg_types[j] = DHX_KARG_PTR;
  return sscanf(word, "ptr:%u:%u:%u:%d:%d:%d:%" SCNd64 "%n", &a->form, &a->flags, &a->elem_bytes,
                &a->x, &a->y, &a->z, &a->c, &used) == 7 && (size_t)used == len;
}

bool dhx_kernel_abi_decode(const char *text, dhx_plan_kernel *k, char *why, size_t whylen) {
  size_t n = strnlen(text, DHX_KERNEL_ABI_MAX), tag = strlen(DHX_KERNEL_ABI_TAG);
  if (n == DHX_KERNEL_ABI_MAX || strncmp(text, DHX_KERNEL_ABI_TAG, tag) != 0 ||
      (text[tag] != 0 && text[tag] != ' ')) {
    snprintf(why, whylen, "it does not start with '%s'", DHX_KERNEL_ABI_TAG);
    return false;
  }
  k->nargs = 0;
  for (const char *w = text + tag; *w == ' ';) {
    w++;
    size_t len = strcspn(w, " ");
    if (k->nargs == DHX_MAX_ARGS) {
      snprintf(why, whylen, "it has more than %d arguments", DHX_MAX_ARGS);
      return false;
    }
    if (!decode_arg(w, len, k, k->nargs)) {
      snprintf(why, whylen, "argument %u: '%.*s' is not i64, f32, f64 or "
               "ptr:FORM:FLAGS:ELEM_BYTES:X:Y:Z:C", k->nargs, (int)(len < 64 ? len : 64), w);
      return false;
    }
    k->nargs++;
    w += len;
  }
  // Only the encoder's own output is accepted: no other spelling of the same numbers.
  char again[DHX_KERNEL_ABI_MAX];
  if (!dhx_kernel_abi_encode(k, again) || strcmp(again, text) != 0) {
    snprintf(why, whylen, "it is not in the form dhxc writes");
    return false;
  }
  return true;
}

void dhx_kernel_arg_describe(const dhx_plan_kernel *k, uint32_t j, bool elem_bytes, char *out,
                             size_t len) {
  const dhx_plan_access *a = &k->access[j];
  if (k->arg_types[j] != DHX_KARG_PTR) {
    snprintf(out, len, "%s", dhx_karg_name(k->arg_types[j]));
    return;
  }
  char extent[128], elems[32] = "";
  dhx_access_extent_text(a, extent, sizeof extent);
  if (elem_bytes) snprintf(elems, sizeof elems, ", %u-byte elements", a->elem_bytes);
  snprintf(out, len, "ptr[%s] %s%s%s", extent, a->flags & DHX_ACC_WRITES ? "write" : "read",
           a->flags & DHX_ACC_TOKEN_IDS ? ", token ids" : "", elems);
}

// The plan's entry `want` equals what kernels.so exports in `text`, argument by argument.
static bool same_signature(const dhx_plan_kernel *want, const char *text, const char *so_path,
                           char *err, size_t errlen) {
  dhx_plan_kernel built = *want;
  char why[160];
  if (!dhx_kernel_abi_decode(text, &built, why, sizeof why)) {
    snprintf(err, errlen, "%s: kernel '%s': its signature export (%s%s) is unreadable: %s; "
             "recompile the plan with dhxc", so_path, want->name, DHX_KERNEL_ABI_PREFIX,
             want->name, why);
    return false;
  }
  uint32_t common = want->nargs < built.nargs ? want->nargs : built.nargs;
  for (uint32_t j = 0; j < common; j++) {
    char a[DHX_KERNEL_ABI_MAX], b[DHX_KERNEL_ABI_MAX], da[256], db[256];
    dhx_kernel_abi_arg(want, j, a, sizeof a);
    dhx_kernel_abi_arg(&built, j, b, sizeof b);
    if (strcmp(a, b) == 0) continue;
    bool sizes = want->access[j].elem_bytes != built.access[j].elem_bytes;
    dhx_kernel_arg_describe(want, j, sizes, da, sizeof da);
    dhx_kernel_arg_describe(&built, j, sizes, db, sizeof db);
    // A field the formula does not show (a PAIRS head size, say): the encoded words differ.
    bool shown = strcmp(da, db) != 0;
    snprintf(err, errlen, "%s: kernel '%s' argument %u: the plan says %s, kernels.so was built "
             "for %s: plan.bin and kernels.so do not belong together", so_path, want->name, j,
             shown ? da : a, shown ? db : b);
    return false;
  }
  if (want->nargs != built.nargs) {
    snprintf(err, errlen, "%s: kernel '%s': the plan says %u arguments, kernels.so was built for "
             "%u: plan.bin and kernels.so do not belong together", so_path, want->name,
             want->nargs, built.nargs);
    return false;
  }
  return true;
}

// ---- loading ----------------------------------------------------------------------------------

// Kernel i's function, after checking its signature export against the plan's entry.
static bool resolve_kernel(dhx_kernels *k, const dhx_plan_kernel *entry, uint32_t i,
                           const char *so_path, char *err, size_t errlen) {
  char sym[DHX_NAME_MAX + sizeof DHX_KERNEL_ABI_PREFIX];
  snprintf(sym, sizeof sym, DHX_KERNEL_PREFIX "%s", entry->name);
  void *fn = dlsym(k->handle, sym);
  if (!fn) {
    snprintf(err, errlen, "%s: kernel '%s' (symbol %s) is missing: kernels.so does not "
             "match plan.bin (recompile the plan)", so_path, entry->name, sym);
    return false;
  }
  snprintf(sym, sizeof sym, DHX_KERNEL_ABI_PREFIX "%s", entry->name);
  const char *abi = dlsym(k->handle, sym);
  if (!abi) {
    snprintf(err, errlen, "%s: kernel '%s' has no signature export (symbol %s): kernels.so was "
             "built by an older dhxc; recompile the plan with dhxc", so_path, entry->name, sym);
    return false;
  }
  if (!same_signature(entry, abi, so_path, err, errlen)) return false;
  // POSIX guarantees that a data pointer from dlsym converts to a function pointer.
  memcpy(&k->fn[i], &fn, sizeof fn);
  return true;
}

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
  for (uint32_t i = 0; i < plan->nkernels; i++)
    if (!resolve_kernel(k, &plan->kernels[i], i, so_path, err, errlen)) return false;
  return true;
}

void dhx_kernels_unload(dhx_kernels *k) {
  free(k->fn);
  if (k->handle) dlclose(k->handle);
  memset(k, 0, sizeof *k);
}
