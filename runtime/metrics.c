// metrics.c — what a run reports per step: the log line on stdout (rank 0) and, with
// --metrics, one JSON object per line. Losses are printed with 9 significant digits so two
// runs can be compared far below the 1e-5 the parity tests allow.
#include <inttypes.h>
#include <math.h>

#include "dhxrt.h"

void dhx_log_step(FILE *out, const dhx_step_metrics *m) {
  fprintf(out, "step %4" PRId64 "/%" PRId64 " | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s",
          m->step, m->steps, m->loss, m->lr, m->grad_norm, m->step_ms, m->tokens_per_s);
  if (m->has_val) fprintf(out, " | val %.4f", m->val_loss);
  fputc('\n', out);
  fflush(out);
}

// A number for the JSON line. A diverged run's NaN or infinity is written the way Python's
// json module and JavaScript spell them (NaN, Infinity), which strtod also reads, so checks
// fail loudly instead of seeing a null or a 0.
static void number(FILE *out, const char *key, double x, const char *fmt) {
  fprintf(out, ",\"%s\":", key);
  if (isnan(x))
    fputs("NaN", out);
  else if (isinf(x))
    fputs(x > 0 ? "Infinity" : "-Infinity", out);
  else
    fprintf(out, fmt, x);
}

void dhx_metrics_write(FILE *out, const dhx_step_metrics *m) {
  fprintf(out, "{\"step\":%" PRId64, m->step);
  number(out, "loss", m->loss, "%.9g");
  if (m->has_val) number(out, "val_loss", m->val_loss, "%.9g");
  number(out, "tokens_per_s", m->tokens_per_s, "%.1f");
  number(out, "step_ms", m->step_ms, "%.3f");
  fprintf(out, ",\"comm_bytes\":%" PRIu64, m->comm_bytes);
  number(out, "lr", m->lr, "%.9g");
  number(out, "grad_norm", m->grad_norm, "%.9g");
  fputs("}\n", out);
  fflush(out);
}
