// metrics.c — what a run reports per step: the log line on stdout (rank 0) and, with
// --metrics, one JSON object per line. Losses are printed with 9 significant digits so two
// runs can be compared far below the 1e-5 the parity tests allow.
//
// One run, one file: a resumed run keeps the lines of the steps its checkpoint contains and
// appends after them (lines of steps that were lost with the interruption are dropped).
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhxrt.h"

void dhx_log_step(FILE *out, const dhx_step_metrics *m) {
  fprintf(out, "step %4" PRId64 "/%" PRId64 " | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s",
          m->step, m->steps, m->loss, m->lr, m->grad_norm, m->step_ms, m->tokens_per_s);
  if (m->has_val) fprintf(out, " | val %.4f", m->val_loss);
  char elapsed[32], eta[32];
  dhx_format_duration(m->elapsed_s, elapsed, sizeof elapsed);
  dhx_format_duration(m->eta_s, eta, sizeof eta);
  fprintf(out, " | %s elapsed, ETA %s", elapsed, eta);
  if (m->skipped) fputs(" | skipped (non-finite)", out);
  fputc('\n', out);
  fflush(out);
}

// A number for a JSON line. NaN and infinities are not JSON: they are written as null, and
// the caller lists the key under "nonfinite" so a diverged run is still visible.
bool dhx_json_number(FILE *out, const char *key, double x, const char *fmt) {
  fprintf(out, ",\"%s\":", key);
  if (!isfinite(x)) {
    fputs("null", out);
    return false;
  }
  fprintf(out, fmt, x);
  return true;
}

void dhx_metrics_write(FILE *out, const dhx_step_metrics *m) {
  const char *bad[4];
  int nbad = 0;
  fprintf(out, "{\"step\":%" PRId64, m->step);
  if (!dhx_json_number(out, "loss", m->loss, "%.9g")) bad[nbad++] = "loss";
  if (m->has_val && !dhx_json_number(out, "val_loss", m->val_loss, "%.9g")) bad[nbad++] = "val_loss";
  dhx_json_number(out, "tokens_per_s", m->tokens_per_s, "%.1f");
  dhx_json_number(out, "step_ms", m->step_ms, "%.3f");
  fprintf(out, ",\"comm_bytes\":%" PRIu64, m->comm_bytes);
  for (int k = 0; k < DHX_WIRE_KINDS; k++)
    fprintf(out, ",\"comm_bytes_%s\":%" PRIu64, dhx_wire_kind_name(k), m->kind_bytes[k]);
  uint64_t inter = 0;
  for (int k = 0; k < DHX_WIRE_KINDS; k++) inter += m->inter_node_bytes[k];
  fprintf(out, ",\"comm_bytes_inter_node\":%" PRIu64, inter);
  for (int k = 0; k < DHX_WIRE_KINDS; k++)
    fprintf(out, ",\"comm_bytes_inter_node_%s\":%" PRIu64, dhx_wire_kind_name(k),
            m->inter_node_bytes[k]);
  if (!dhx_json_number(out, "lr", m->lr, "%.9g")) bad[nbad++] = "lr";
  if (!dhx_json_number(out, "grad_norm", m->grad_norm, "%.9g")) bad[nbad++] = "grad_norm";
  if (m->skipped) fputs(",\"skipped\":true", out);
  if (nbad) {
    fputs(",\"nonfinite\":[", out);
    for (int i = 0; i < nbad; i++) fprintf(out, "%s\"%s\"", i ? "," : "", bad[i]);
    fputc(']', out);
  }
  fputs("}\n", out);
  fflush(out);
}

// The step of a metrics line ({"step":N,...}), or -1 for any other line (a summary).
static int64_t line_step(const char *line) {
  const char *p = strstr(line, "{\"step\":");
  if (p != line) return -1;
  char *end = NULL;
  long long v = strtoll(line + 8, &end, 10);
  return end && (*end == ',' || *end == '}') ? v : -1;
}

// Rewrites `path` keeping the lines of steps <= keep_steps, through a temporary file renamed
// over it, so the history is never half-written.
static bool keep_history(const char *path, int64_t keep_steps, char *err, size_t errlen) {
  FILE *in = fopen(path, "r");
  if (!in) return errno == ENOENT;  // nothing to keep
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *out = fopen(tmp, "w");
  if (!out) {
    snprintf(err, errlen, "%s: cannot rewrite the metrics file: %s", path, strerror(errno));
    fclose(in);
    return false;
  }
  char *line = NULL;
  size_t cap = 0;
  bool ok = true;
  while (getline(&line, &cap, in) > 0) {
    int64_t step = line_step(line);
    if (step >= 1 && step <= keep_steps && strchr(line, '\n')) ok = fputs(line, out) >= 0 && ok;
  }
  free(line);
  fclose(in);
  ok = fclose(out) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    snprintf(err, errlen, "%s: cannot rewrite the metrics file: %s", path, strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

FILE *dhx_metrics_open(const char *path, int64_t resumed_at, char *err, size_t errlen) {
  if (resumed_at > 0 && !keep_history(path, resumed_at, err, errlen)) return NULL;
  FILE *f = fopen(path, resumed_at > 0 ? "a" : "w");
  if (!f) snprintf(err, errlen, "%s: cannot create the metrics file: %s", path, strerror(errno));
  return f;
}
