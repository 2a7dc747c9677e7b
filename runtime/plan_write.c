// plan_write.c — dhx_plan_write: the header (plan_codec.c describes the layout), the payload
// from the visitor, and a file that appears whole or not at all.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// The writer serializes what it is given (dhxc validates before writing); it only refuses
// counts the format cannot hold. It writes a temporary file and renames it into place, so a
// reader never sees a half-written plan.
bool dhx_plan_write(const char *path, const dhx_plan *plan, char *err, size_t errlen) {
  plan_io s = {.reading = false, .err = err, .errlen = errlen};
  snprintf(s.where, sizeof s.where, "the plan");
  plan_io_plan(&s, (dhx_plan *)plan);  // write mode only reads through the pointer
  if (s.failed) {
    free(s.out);
    return false;
  }
  uint8_t header[DHX_PLAN_HEADER_BYTES] = {0};
  memcpy(header, DHX_PLAN_MAGIC, 8);
  le32(header + 8, DHX_PLAN_VERSION);
  le32(header + 12, 0);
  le64(header + 16, s.len);
  le32(header + 24, dhx_crc32(s.out, s.len));
  le32(header + 28, 0);

  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
    snprintf(err, errlen, "path too long");
    free(s.out);
    return false;
  }
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    free(s.out);
    return false;
  }
  bool ok = fwrite(header, 1, sizeof header, f) == sizeof header &&
            fwrite(s.out, 1, s.len, f) == s.len;
  ok = (fclose(f) == 0) && ok;
  free(s.out);
  if (!ok || rename(tmp, path) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}
