// netemu.c — the emulated network of a run: `dhxrun --net-emulate BANDWIDTH,LATENCY` (or `off`)
// read with the units of the language's cluster declarations, and the log line that says what
// the run emulates.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

typedef struct net_unit {
  const char *text;
  double scale;  // to bytes/s or to seconds
} net_unit;

static const net_unit bandwidth_units[] = {
    {"B/s", 1}, {"KB/s", 1e3}, {"MB/s", 1e6}, {"GB/s", 1e9}, {"TB/s", 1e12}};
static const net_unit time_units[] = {{"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}};

// `text` (a number, optional spaces, then one of `units`) in base units; false when the
// number or the unit is not there.
static bool parse_quantity(const char *text, const net_unit *units, size_t nunits,
                           double *out) {
  char *end = NULL;
  double v = strtod(text, &end);
  if (end == text || !isfinite(v)) return false;
  while (*end == ' ') end++;
  for (size_t i = 0; i < nunits; i++)
    if (strcmp(end, units[i].text) == 0) {
      *out = v * units[i].scale;
      return true;
    }
  return false;
}

bool dhx_parse_net_emulate(const char *value, double *bandwidth, double *latency, char *err,
                           size_t errlen) {
  if (strcmp(value, "off") == 0) {
    *bandwidth = *latency = 0;
    return true;
  }
  const char *comma = strchr(value, ',');
  char bw[64];
  size_t n = comma ? (size_t)(comma - value) : 0;
  if (!comma || n >= sizeof bw) {
    snprintf(err, errlen, "--net-emulate: '%s' is not BANDWIDTH,LATENCY (as in 1GB/s,20us) or "
             "off", value);
    return false;
  }
  memcpy(bw, value, n);
  bw[n] = 0;
  if (!parse_quantity(bw, bandwidth_units, sizeof bandwidth_units / sizeof *bandwidth_units,
                      bandwidth) || !(*bandwidth > 0)) {
    snprintf(err, errlen, "--net-emulate: bandwidth '%s' is not a positive number with a unit "
             "B/s, KB/s, MB/s, GB/s or TB/s (as in 1GB/s)", bw);
    return false;
  }
  if (!parse_quantity(comma + 1, time_units, sizeof time_units / sizeof *time_units, latency) ||
      !(*latency >= 0 && *latency <= 60)) {
    snprintf(err, errlen, "--net-emulate: latency '%s' is not a time from 0 to 60 s with a unit "
             "s, ms, us or ns (as in 20us)", comma + 1);
    return false;
  }
  return true;
}

// `v` in the largest of `units` (ascending scales) that keeps it at 1 or more.
static void format_quantity(double v, const net_unit *units, size_t nunits, char *out,
                            size_t len) {
  size_t k = 0;
  while (k + 1 < nunits && v >= units[k + 1].scale) k++;
  snprintf(out, len, "%g %s", v / units[k].scale, units[k].text);
}

void dhx_describe_net(double bandwidth, double latency, const char *source, char *out,
                      size_t len) {
  if (!(bandwidth > 0)) {
    snprintf(out, len, "dhxrun: network not emulated (%s)", source);
    return;
  }
  static const net_unit times_ascending[] = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}};
  char bw[48], lat[48];
  format_quantity(bandwidth, bandwidth_units, sizeof bandwidth_units / sizeof *bandwidth_units,
                  bw, sizeof bw);
  format_quantity(latency, times_ascending, sizeof times_ascending / sizeof *times_ascending,
                  lat, sizeof lat);
  if (latency == 0) snprintf(lat, sizeof lat, "0 s");
  snprintf(out, len, "dhxrun: network emulated at %s with %s latency per message (%s)", bw, lat,
           source);
}
