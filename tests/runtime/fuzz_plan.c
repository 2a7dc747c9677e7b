// fuzz_plan — libFuzzer target for the plan reader (dhx_plan_decode) and the listing.
//
// Random bytes almost never carry a valid CRC, which would keep the fuzzer at the checksum, so
// each input is decoded twice: as is, and with the header's payload size and CRC recomputed,
// which sends mutations into the field parser and the validator.
//
// Needs clang's libFuzzer, so it is not part of the gcc build: fuzz_plan.sh compiles it with
// clang directly (-fsanitize=fuzzer,address,undefined) and runs it over a seed corpus; the
// CTest test plan_fuzz_decode calls that script and is skipped where clang cannot link it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_util.h"

static void decode(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  dhx_plan plan;
  char err[1024];
  if (dhx_plan_decode(data, size, &plan, err, sizeof err)) {
    if (!dhx_plan_validate(&plan, err, sizeof err)) abort();  // decode validated it already
    dhx_plan_print(&plan, sink);
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
  decode(copy, size);
  free(copy);
  return 0;
}
