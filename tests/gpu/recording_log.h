// recording_log.h — the log both recording stand-ins (recording_cuda.c, recording_cublaslt.c)
// append their calls to: one line per call in the file FAKE_GPU_LOG names (none when unset).
#ifndef DHX_RECORDING_LOG_H
#define DHX_RECORDING_LOG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void logf_(const char *fmt, ...) {
  const char *path = getenv("FAKE_GPU_LOG");
  FILE *f = path ? fopen(path, "a") : NULL;
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

#endif
