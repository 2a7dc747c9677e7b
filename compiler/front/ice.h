// ice.h — internal compiler errors: states that dhxc's own invariants rule out, whatever the
// program. They are not the user's mistake, so they are not worded as diagnostics:
//
//   dhxc: internal error (compiler/plan/compile.c:218): the compiled plan is invalid: ...
//   dhxc: please report this bug in dhxc with the .dhx files and the command line
//
// and dhxc exits with DHX_ICE_EXIT instead of 1. Mistakes in a program are reported through
// diag.c (front.h) and never through this.
//
// Header-only so that every compiler library, the code generator included (it does not link
// the front end), raises them the same way without sharing a library.
#ifndef DHX_ICE_H
#define DHX_ICE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DHX_ICE_EXIT 70  // EX_SOFTWARE (sysexits.h): an internal software error

// Reports an internal error at the place it is raised, then exits: DHX_ICE("...", ...).
#define DHX_ICE(...) dhx_ice_at(__FILE__, __LINE__, __VA_ARGS__)

// `file` from its "compiler/" component on, so that the place reads the same whatever folder
// the sources were built from; unchanged when it has none.
static inline const char *dhx_ice_source_path(const char *file) {
  const char *from = file;
  for (const char *p = file; (p = strstr(p, "compiler/")); p++)
    if (p == file || p[-1] == '/') from = p;
  return from;
}

// Both lines of the report, newline-terminated, into out (truncated to fit). Returns what
// snprintf returns for the whole text.
static inline int dhx_ice_vformat(char *out, size_t len, const char *file, int line,
                                  const char *fmt, va_list ap) {
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  return snprintf(out, len,
                  "dhxc: internal error (%s:%d): %s\n"
                  "dhxc: please report this bug in dhxc with the .dhx files and the command "
                  "line\n",
                  dhx_ice_source_path(file), line, msg);
}

static inline int dhx_ice_format(char *out, size_t len, const char *file, int line,
                                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static inline int dhx_ice_format(char *out, size_t len, const char *file, int line,
                                 const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = dhx_ice_vformat(out, len, file, line, fmt, ap);
  va_end(ap);
  return n;
}

static inline _Noreturn void dhx_ice_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline _Noreturn void dhx_ice_at(const char *file, int line, const char *fmt, ...) {
  char report[2048];
  va_list ap;
  va_start(ap, fmt);
  dhx_ice_vformat(report, sizeof report, file, line, fmt, ap);
  va_end(ap);
  fflush(stdout);  // what was printed before the error stays before it
  fputs(report, stderr);
  exit(DHX_ICE_EXIT);
}

#endif
