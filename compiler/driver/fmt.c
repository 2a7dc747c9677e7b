// fmt.c — `dhxc fmt [-i | --check] FILE...`: the canonical form of .dhx files.
//
// Formatting only parses: no `use` is loaded and nothing past the syntax is checked, so any
// single file can be formatted on its own. A file with syntax errors gets the diagnostics
// dhxc prints for it and is never written. -i rewrites a file only when its text changes,
// through a temporary file in the same directory renamed over it, so an interrupted run
// leaves the old file or the new one, never half of one.
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "front.h"
#include "driver.h"

// As in the loader (DHX_MAX_FILE_SIZE): larger files are refused, so reading stops there.
#define MAX_FILE_SIZE (64L << 20)

typedef enum { PRINT, IN_PLACE, CHECK } fmt_mode;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dhxc fmt FILE...            print the canonical form of each file\n"
          "       dhxc fmt -i FILE...         rewrite the files that are not canonical\n"
          "       dhxc fmt --check FILE...    name the files that are not canonical (exit 1)\n");
}

// Usage mistakes exit 2, so scripts can tell them from files that need formatting.
static int usage_error(const char *msg, const char *arg) {
  if (arg) dhx_error("%s '%s' (see dhxc fmt --help)", msg, arg);
  else dhx_error("%s (see dhxc fmt --help)", msg);
  return 2;
}

// The whole file, as the loader reads it, with the loader's messages when it cannot be read.
static char *read_source(const char *path, long *len) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))) {
    dhx_error("cannot open '%s': %s", path, f ? strerror(EISDIR) : strerror(errno));
    if (f) fclose(f);
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) break;
      buf = nb;
    }
    size_t want = cap - n;
    if (n + want > (size_t)MAX_FILE_SIZE + 1) want = (size_t)MAX_FILE_SIZE + 1 - n;
    size_t got = fread(buf + n, 1, want, f);
    n += got;
    if (n > (size_t)MAX_FILE_SIZE) {
      dhx_error("'%s' is larger than %ld MiB", path, MAX_FILE_SIZE >> 20);
      break;
    }
    if (got < want) {
      if (ferror(f)) {
        dhx_error("cannot read '%s': %s", path, strerror(errno));
        break;
      }
      fclose(f);
      *len = (long)n;
      return buf;
    }
  }
  if (!buf) dhx_error("out of memory reading '%s'", path);
  fclose(f);
  free(buf);
  return NULL;
}

// Replaces the file (through a symbolic link: its target) with `text`, keeping its mode.
static bool write_in_place(const char *path, const char *text, size_t n) {
  char *real = realpath(path, NULL);
  const char *target = real ? real : path;
  const char *slash = strrchr(target, '/');
  int dirlen = slash ? (int)(slash - target + 1) : 0;
  size_t size = strlen(target) + 16;
  char *tmp = malloc(size);
  bool ok = tmp != NULL;
  int fd = -1;
  if (ok) {
    snprintf(tmp, size, "%.*s.%s.fmt-XXXXXX", dirlen, target, target + dirlen);
    fd = mkstemp(tmp);
    ok = fd >= 0;
  }
  if (ok) {
    struct stat st;
    if (stat(target, &st) == 0) (void)fchmod(fd, st.st_mode & 07777);
    for (size_t done = 0; ok && done < n;) {
      ssize_t w = write(fd, text + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      if (ok) done += (size_t)w;
    }
    if (close(fd) != 0) ok = false;
    if (ok) ok = rename(tmp, target) == 0;
    if (!ok) {
      int e = errno;
      unlink(tmp);
      errno = e;
    }
  }
  if (!ok) dhx_error("cannot write '%s': %s", path, strerror(errno ? errno : EIO));
  free(tmp);
  free(real);
  return ok;
}

// Formats one file; returns 0, or 1 when it has errors or (--check) is not canonical.
static int format_file(const char *path, fmt_mode mode) {
  long len = 0;
  char *src = read_source(path, &len);
  if (!src) return 1;
  int errors = dhx_diag.errors;
  dhx_module *m = dhx_parse_buffer(path, src, len);
  int rc = 0;
  if (dhx_diag.errors > errors) {
    rc = 1;
  } else {
    size_t n;
    char *text = dhx_format_module(m, &n);
    bool same = n == (size_t)len && memcmp(text, src, n) == 0;
    if (mode == PRINT) {
      fwrite(text, 1, n, stdout);
    } else if (mode == IN_PLACE) {
      if (!same && !write_in_place(path, text, n)) rc = 1;
    } else if (!same) {
      printf("%s\n", path);
      rc = 1;
    }
    free(text);
  }
  dhx_module_free(m);
  free(src);
  return rc;
}

int dhx_fmt_main(int argc, char **argv) {
  fmt_mode mode = PRINT;
  bool options = true;
  int nfiles = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!options || a[0] != '-' || !a[1]) {
      nfiles++;
    } else if (strcmp(a, "--") == 0) {
      options = false;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "-i") == 0 || strcmp(a, "--check") == 0) {
      fmt_mode m = a[1] == 'i' ? IN_PLACE : CHECK;
      if (mode != PRINT && mode != m) return usage_error("-i and --check exclude each other", NULL);
      mode = m;
    } else {
      return usage_error("unknown option", a);
    }
  }
  if (nfiles == 0) return usage_error("no input file", NULL);

  int rc = 0;
  options = true;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (options && strcmp(a, "--") == 0) options = false;
    else if (!options || a[0] != '-' || !a[1]) rc |= format_file(a, mode);
  }
  if (fflush(stdout) != 0 || ferror(stdout)) {
    dhx_error("cannot write to standard output: %s", strerror(errno));
    rc = 1;
  }
  return rc;
}
