// units.c — the physical units a number literal may carry, and their SI scale.
//
// Decimal prefixes are powers of 1000, binary ones (KiB) powers of 1024. In bandwidths an
// upper-case B is bytes and a lower-case b is bits, so `10 Gb/s` is 1.25e9 bytes/s.
#include <string.h>

#include "internal.h"

static const dhx_unit_def units[] = {
    {"B", DHX_UNIT_BYTES, 1},
    {"KB", DHX_UNIT_BYTES, 1e3},
    {"MB", DHX_UNIT_BYTES, 1e6},
    {"GB", DHX_UNIT_BYTES, 1e9},
    {"TB", DHX_UNIT_BYTES, 1e12},
    {"KiB", DHX_UNIT_BYTES, 1024.0},
    {"MiB", DHX_UNIT_BYTES, 1024.0 * 1024},
    {"GiB", DHX_UNIT_BYTES, 1024.0 * 1024 * 1024},
    {"TiB", DHX_UNIT_BYTES, 1024.0 * 1024 * 1024 * 1024},
    {"B/s", DHX_UNIT_BANDWIDTH, 1},
    {"KB/s", DHX_UNIT_BANDWIDTH, 1e3},
    {"MB/s", DHX_UNIT_BANDWIDTH, 1e6},
    {"GB/s", DHX_UNIT_BANDWIDTH, 1e9},
    {"TB/s", DHX_UNIT_BANDWIDTH, 1e12},
    {"Kb/s", DHX_UNIT_BANDWIDTH, 1e3 / 8},
    {"Mb/s", DHX_UNIT_BANDWIDTH, 1e6 / 8},
    {"Gb/s", DHX_UNIT_BANDWIDTH, 1e9 / 8},
    {"Tb/s", DHX_UNIT_BANDWIDTH, 1e12 / 8},
    {"s", DHX_UNIT_TIME, 1},
    {"ms", DHX_UNIT_TIME, 1e-3},
    {"us", DHX_UNIT_TIME, 1e-6},
    {"ns", DHX_UNIT_TIME, 1e-9},
    {"FLOP/s", DHX_UNIT_FLOPS, 1},
    {"GFLOP/s", DHX_UNIT_FLOPS, 1e9},
    {"TFLOP/s", DHX_UNIT_FLOPS, 1e12},
    {"PFLOP/s", DHX_UNIT_FLOPS, 1e15},
};

const dhx_unit_def *dhx_unit_lookup(const char *text, size_t len) {
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strlen(units[i].text) == len && memcmp(units[i].text, text, len) == 0) return &units[i];
  return NULL;
}

const char *dhx_unit_kind_name(dhx_unit u) {
  switch (u) {
    case DHX_UNIT_NONE: return "a plain number";
    case DHX_UNIT_BYTES: return "a size";
    case DHX_UNIT_BANDWIDTH: return "a bandwidth";
    case DHX_UNIT_TIME: return "a time";
    case DHX_UNIT_FLOPS: return "a compute rate";
  }
  return "a number";
}
