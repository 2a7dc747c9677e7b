// fuzz_plan — libFuzzer target for the plan loader: the reader (dhx_plan_decode), the validator,
// the listing, and the CPU backend running what the validator accepts.
//
// Random bytes almost never carry a valid CRC, which would keep the fuzzer at the checksum, so
// each input is decoded twice: as is, and with the header's payload size and CRC recomputed,
// which sends mutations into the field parser and the validator. A plan that validates is then
// run (tests/plan/plan_exec.h: every program once, each buffer followed by a guard page and
// poisoned for AddressSanitizer), so an access the validator should have refused crashes here.
//
// Running needs the kernels the plan names: FUZZ_KERNELS_SO lists kernel libraries (the test
// kernels built with ASan; the kernels.so of small plans dhxc compiled) and FUZZ_KERNEL_TABLE,
// in the same order, a plan.bin whose kernel table describes each, both separated by ':'. A plan
// runs with the first library that has all its kernels with the same signature and access
// descriptors; others are only validated, as dhxrun requires kernels.so to match its plan.bin.
// Without the two variables the target only decodes.
//
// Needs clang's libFuzzer, so it is not part of the gcc build: fuzz_plan.sh compiles it with
// clang directly (-fsanitize=fuzzer,address,undefined) and runs it over a seed corpus; the
// CTest test plan_fuzz_decode calls that script and is skipped where clang cannot link it.
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_exec.h"
#include "plan_util.h"

#define MAX_LIBS 4
static dhx_plan g_table[MAX_LIBS];    // plans whose kernel tables describe g_so
static char *g_so[MAX_LIBS];
static int g_nlibs;                   // 0: decode only
static uint64_t g_valid, g_ran;       // plans that validated; plans run

static void report(void) {
  fprintf(stderr, "fuzz_plan: %llu inputs validated, %llu plans run\n",
          (unsigned long long)g_valid, (unsigned long long)g_ran);
}

static bool same_kernel(const dhx_plan_kernel *a, const dhx_plan_kernel *b) {
  if (strcmp(a->name, b->name) != 0 || a->nargs != b->nargs ||
      a->threads_per_index != b->threads_per_index ||
      a->indices_per_thread != b->indices_per_thread)
    return false;
  for (uint32_t j = 0; j < a->nargs; j++)
    if (a->arg_types[j] != b->arg_types[j] ||
        memcmp(&a->access[j], &b->access[j], sizeof a->access[j]) != 0)
      return false;
  return true;
}

// Every kernel the plan names is one of the library's, with the same signature and access.
static bool kernels_match(const dhx_plan *p, const dhx_plan *table) {
  for (uint32_t k = 0; k < p->nkernels; k++) {
    bool found = false;
    for (uint32_t i = 0; i < table->nkernels && !found; i++)
      found = same_kernel(&p->kernels[k], &table->kernels[i]);
    if (!found) return false;
  }
  return true;
}

// The library whose kernels the plan names, or NULL.
static const char *library_of(const dhx_plan *p) {
  for (int l = 0; l < g_nlibs; l++)
    if (kernels_match(p, &g_table[l])) return g_so[l];
  return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *sos = getenv("FUZZ_KERNELS_SO"), *tables = getenv("FUZZ_KERNEL_TABLE");
  if (!sos || !tables) return 0;
  char *so_list = strdup(sos), *table_list = strdup(tables), *s1, *s2;
  char *so = strtok_r(so_list, ":", &s1), *table = strtok_r(table_list, ":", &s2);
  for (; so && table && g_nlibs < MAX_LIBS; g_nlibs++) {
    char err[1024];
    if (!dhx_plan_read(table, &g_table[g_nlibs], err, sizeof err)) {
      fprintf(stderr, "fuzz_plan: %s\n", err);
      exit(1);
    }
    // Loaded once for the whole run, so each plan's own dlopen only takes a reference.
    if (!dlopen(so, RTLD_NOW | RTLD_LOCAL)) {
      fprintf(stderr, "fuzz_plan: %s\n", dlerror());
      exit(1);
    }
    g_so[g_nlibs] = so;
    so = strtok_r(NULL, ":", &s1);
    table = strtok_r(NULL, ":", &s2);
  }
  free(table_list);  // so_list stays: g_so points into it
  atexit(report);
  return 0;
}

static void decode(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  dhx_plan plan;
  char err[1024];
  if (dhx_plan_decode(data, size, &plan, err, sizeof err)) {
    if (!dhx_plan_validate(&plan, err, sizeof err)) abort();  // decode validated it already
    dhx_plan_print(&plan, sink);
    g_valid++;
    const char *so = library_of(&plan);
    if (so) {
      plan_exec_result r = plan_exec_run(&plan, so, err, sizeof err);
      if (r == PLAN_EXEC_FAILED) {
        fprintf(stderr, "fuzz_plan: a valid plan did not run: %s\n", err);
        abort();
      }
      g_ran += r == PLAN_EXEC_RAN;
    }
    dhx_plan_free(&plan);
  } else if (!err[0]) {
    abort();  // every failure explains itself
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  decode(data, size);
  if (size < DHX_PLAN_HEADER_BYTES) return 0;
  uint8_t *copy = malloc(size);
  memcpy(copy, data, size);
  uint64_t payload = size - DHX_PLAN_HEADER_BYTES;
  uint32_t crc = dhx_crc32(copy + DHX_PLAN_HEADER_BYTES, payload);
  for (int i = 0; i < 8; i++) copy[16 + i] = (uint8_t)(payload >> (8 * i));
  for (int i = 0; i < 4; i++) copy[24 + i] = (uint8_t)(crc >> (8 * i));
  if (memcmp(copy, data, DHX_PLAN_HEADER_BYTES) != 0) decode(copy, size);  // else done above
  free(copy);
  return 0;
}
