// preflight.c — what dhxrun checks before step 1, so a run never loses finished work to a
// mistake that could have been caught before it started: every output location is created and
// proven writable, the arena fits in this machine's memory, and configurations that train on
// something other than what the user meant (data shorter than a step, a vocabulary far larger
// than the data's tokens, a warm-up longer than the run) are reported with their numbers.
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dhxrt.h"
#include "dirs.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

// Creates a file in `dir` and removes it: the only check of writability that cannot be fooled
// by permissions, read-only mounts or quotas-at-create.
static bool dir_writable(const char *dir, const char *what, char *err, size_t errlen) {
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.dhxrun-probe.%d", dir, (int)getpid());
  int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s is not writable: %s", dir, what, strerror(errno));
    return false;
  }
  close(fd);
  unlink(probe);
  return true;
}

bool dhx_make_dirs(const char *dir, const char *what, char *err, size_t errlen) {
  char at[4096];
  switch (dhx_make_dir_path(dir, at, sizeof at)) {
    case DHX_DIRS_OK: return dir_writable(dir, what, err, errlen);
    case DHX_DIRS_IN_THE_WAY:
      if (strcmp(at, dir) == 0)
        snprintf(err, errlen, "%s: the %s is not a directory", dir, what);
      else
        snprintf(err, errlen, "%s: cannot create the %s: '%s' is a file", dir, what, at);
      return false;
    case DHX_DIRS_FAILED:
      snprintf(err, errlen, "%s: cannot create the %s: %s", dir, what, strerror(errno));
      return false;
  }
  return false;
}

bool dhx_prepare_output_file(const char *path, const char *what, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "%s: the %s is a directory (give a file name)", path, what);
    return false;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = 0;
  else *slash = 0;
  char what_dir[96];
  snprintf(what_dir, sizeof what_dir, "directory of the %s", what);
  return dhx_make_dirs(dir, what_dir, err, errlen);
}

// MemAvailable from /proc/meminfo in bytes, or -1 where it cannot be read.
int64_t dhx_host_memory_available(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  int64_t kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %" SCNd64 " kB", &kib) == 1) break;
  fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}

bool dhx_check_host_memory(int64_t arena_bytes, int ranks_on_node, char *err, size_t errlen) {
  int64_t avail = dhx_host_memory_available();
  double need = (double)arena_bytes * ranks_on_node;
  if (avail < 0 || need <= (double)avail) return true;
  snprintf(err, errlen, "not enough host memory: each rank needs %.2f GiB for its arena, %d "
           "ranks on this machine need %.2f GiB, and %.2f GiB are available (lower "
           "train.micro_batch, use fewer ranks per machine, or a machine with more memory)",
           (double)arena_bytes / GIB, ranks_on_node, need / GIB, (double)avail / GIB);
  return false;
}

static void warn(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(FILE *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("dhxrun: warning: ", out);
  vfprintf(out, fmt, ap);
  fputc('\n', out);
  va_end(ap);
}

// Sequences of seq+1 tokens (inputs and the next tokens) that start at multiples of seq.
static int64_t rows_in(const dhx_shard *s, int64_t seq) { return s->ntok > seq ? (s->ntok - 1) / seq : 0; }

int dhx_warn_configuration(FILE *out, const dhx_plan_train *t, const dhx_shard *train,
                           const dhx_shard *val, bool has_val, int64_t steps_to_run) {
  int n = 0;
  int64_t rows = rows_in(train, t->seq);
  if (rows < t->global_batch) {
    warn(out, "the training data holds %" PRId64 " tokens, %" PRId64 " sequences of %" PRId64
         "+1, but one step reads %" PRId64 " sequences (global_batch): every step trains on "
         "the same %" PRId64 " sequences, repeated", train->ntok, rows, t->seq, t->global_batch,
         rows);
    n++;
  } else if (steps_to_run * t->global_batch > rows) {
    fprintf(out, "dhxrun: note: the run reads %" PRId64 " sequences and the training data holds "
            "%" PRId64 ": %.1f passes over the data (epochs)\n", steps_to_run * t->global_batch,
            rows, (double)(steps_to_run * t->global_batch) / (double)rows);
  }
  // The vocabulary the data could use: all 256 byte values for byte-level data, else the
  // largest token rounded up to a multiple of 128 (llm.c pads GPT-2's 50257 to 50304).
  int64_t range = train->max_token < 256 ? 256 : (train->max_token + 1 + 127) / 128 * 128;
  if (t->vocab > range) {
    warn(out, "the vocabulary has %" PRId64 " entries but the largest token in the training "
         "data is %" PRId64 ": %" PRId64 " embedding rows are never trained (is the data "
         "tokenized for this model?)", t->vocab, train->max_token, t->vocab - train->max_token - 1);
    n++;
  }
  if (t->warmup_steps > t->steps) {
    warn(out, "warmup (%" PRId64 " steps) is longer than the run (%" PRId64 " steps): the "
         "learning rate never reaches lr", t->warmup_steps, t->steps);
    n++;
  }
  if (has_val && t->val_every > 0 && t->val_batches > 0) {
    int64_t want = t->val_batches * t->micro_batch, have = rows_in(val, t->seq);
    if (have < want) {
      warn(out, "the validation data holds %" PRId64 " tokens, %" PRId64 " sequences of %"
           PRId64 "+1, but each evaluation reads %" PRId64 " (val_batches x micro_batch): the "
           "validation loss is measured on repeated rows", val->ntok, have, t->seq, want);
      n++;
    }
  }
  fflush(out);
  return n;
}
