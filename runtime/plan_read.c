// plan_read.c — dhx_plan_read and dhx_plan_decode: the header (magic, version, size, checksum;
// plan_codec.c describes the layout), the payload through the visitor's bounded cursor, then
// dhx_plan_validate. And dhx_plan_free, which also undoes a decode that failed halfway.
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

static uint32_t rd32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}

static uint64_t rd64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

bool dhx_plan_decode(const uint8_t *data, size_t size, dhx_plan *plan, char *err, size_t errlen) {
  memset(plan, 0, sizeof *plan);
  if (size < DHX_PLAN_HEADER_BYTES) {
    snprintf(err, errlen, "truncated: %zu bytes, shorter than the %d-byte plan header", size,
             DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (memcmp(data, DHX_PLAN_MAGIC, 8) != 0) {
    snprintf(err, errlen, "not a DHX plan (bad magic; expected \"DHXPLAN\")");
    return false;
  }
  uint32_t version = rd32(data + 8), flags = rd32(data + 12), crc = rd32(data + 24);
  uint64_t payload = rd64(data + 16);
  if (version != DHX_PLAN_VERSION) {
    snprintf(err, errlen, "plan format version %u, but this build reads version %d (recompile "
             "the plan with the matching dhxc)", version, DHX_PLAN_VERSION);
    return false;
  }
  if (flags != 0 || rd32(data + 28) != 0) {
    snprintf(err, errlen, "unknown header flags 0x%x / reserved field 0x%x (expected 0)", flags,
             rd32(data + 28));
    return false;
  }
  uint64_t have = size - DHX_PLAN_HEADER_BYTES;
  if (payload > have) {
    snprintf(err, errlen, "truncated: %zu bytes, header says %" PRIu64, size,
             payload + DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (payload < have) {
    snprintf(err, errlen, "%zu bytes, but the header says %" PRIu64 " (trailing bytes)", size,
             payload + DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (dhx_crc32(data + DHX_PLAN_HEADER_BYTES, payload) != crc) {
    snprintf(err, errlen, "checksum mismatch (file is corrupted)");
    return false;
  }
  plan_io s = {.reading = true, .in = data + DHX_PLAN_HEADER_BYTES, .size = payload, .err = err,
          .errlen = errlen};
  snprintf(s.where, sizeof s.where, "the plan");
  plan_io_plan(&s, plan);
  if (!s.failed && s.pos != s.size)
    plan_io_fail(&s, "%zu unexpected bytes after the plan's last field", s.size - s.pos);
  if (s.failed) {
    dhx_plan_free(plan);
    return false;
  }
  plan->version = version;
  if (!dhx_plan_validate(plan, err, errlen)) {
    dhx_plan_free(plan);
    return false;
  }
  return true;
}

bool dhx_plan_read(const char *path, dhx_plan *plan, char *err, size_t errlen) {
  memset(plan, 0, sizeof *plan);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return false;
  }
  uint8_t *data = NULL;
  size_t len = 0, cap = 0;
  for (;;) {  // read whole file; works for pipes and files alike
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      uint8_t *d = realloc(data, cap);
      if (!d) {
        free(data);
        fclose(f);
        snprintf(err, errlen, "%s: out of memory reading the plan", path);
        return false;
      }
      data = d;
    }
    size_t got = fread(data + len, 1, cap - len, f);
    len += got;
    if (got == 0 || len > DHX_PLAN_MAX_FILE_BYTES) break;
  }
  int io_errno = ferror(f) ? errno : 0;
  fclose(f);
  if (io_errno || len > DHX_PLAN_MAX_FILE_BYTES) {
    free(data);
    if (io_errno)
      snprintf(err, errlen, "%s: read error: %s", path, strerror(io_errno));
    else
      snprintf(err, errlen, "%s: larger than %lld bytes: not a plan", path,
               (long long)DHX_PLAN_MAX_FILE_BYTES);
    return false;
  }
  char inner[1024];
  bool ok = dhx_plan_decode(data, len, plan, inner, sizeof inner);
  free(data);
  if (!ok) snprintf(err, errlen, "%s: %s", path, inner);
  return ok;
}

void dhx_plan_free(dhx_plan *plan) {
  if (!plan) return;
  free(plan->kernels);
  for (uint32_t i = 0; plan->comms && i < plan->ncomms; i++) free(plan->comms[i].ranks);
  free(plan->comms);
  for (uint32_t r = 0; plan->ranks && r < plan->nranks; r++) {
    if (plan->ranks[r].shares) continue;  // the owner's arrays
    free(plan->ranks[r].buffers);
    for (int p = 0; p < DHX_PROG_COUNT; p++) free(plan->ranks[r].programs[p].instrs);
  }
  free(plan->ranks);
  dhx_plan_pool_free(plan->pool);
  memset(plan, 0, sizeof *plan);
}
