// dirs.c — mkdir -p (dirs.h).
#include "dirs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static dhx_dirs_result make_one(const char *path) {
  struct stat st;
  if (mkdir(path, 0755) != 0 && errno != EEXIST) return DHX_DIRS_FAILED;
  if (stat(path, &st) != 0) return DHX_DIRS_FAILED;
  return S_ISDIR(st.st_mode) ? DHX_DIRS_OK : DHX_DIRS_IN_THE_WAY;
}

dhx_dirs_result dhx_make_dir_path(const char *dir, char *at, size_t atlen) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
    snprintf(at, atlen, "%s", dir);
    errno = ENAMETOOLONG;
    return DHX_DIRS_FAILED;
  }
  for (char *p = path + 1;; p++) {
    bool last = *p == '\0';
    if (*p != '/' && !last) continue;
    *p = '\0';
    dhx_dirs_result r = make_one(path);
    if (r != DHX_DIRS_OK) {
      snprintf(at, atlen, "%s", path);
      return r;
    }
    if (last) return DHX_DIRS_OK;
    *p = '/';
  }
}
