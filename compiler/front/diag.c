// diag.c — diagnostics as gcc and clang print them, and the registry of source texts.
//
//   samples/bad.dhx:3:14: error: unknown field 'dpp' in 'parallel'
//       3 |   parallel { dpp: 2 }
//         |              ^~~
//
// Columns are bytes. The underline copies tabs from the source line so the caret stays under
// the right character whatever the tab width; UTF-8 continuation bytes take no column of
// their own in the underline, so a caret after non-ASCII text in a string still lines up.
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

_Thread_local dhx_diag_sink dhx_diag;

#define DEFAULT_MAX_ERRORS 50
#define SHOWN_LINE_MAX 120   // longer source lines are shown as a window around the caret
#define WINDOW_BEFORE 40     // bytes kept before the caret in such a window

// ---- source registry --------------------------------------------------------------------------

typedef struct source_entry {
  const char *file;
  const char *source;
  long len;
  uint32_t *lines;  // offset of each line's first byte, built on the first lookup of a line
  long nlines;
} source_entry;

static source_entry *registry;
static int nregistry, capregistry;

void dhx_register_source_n(const char *file, const char *source, long len) {
  if (!file || !source) return;
  if (nregistry == capregistry) {
    capregistry = capregistry ? 2 * capregistry : 16;
    registry = dhx_xrealloc(registry, (size_t)capregistry * sizeof *registry);
  }
  registry[nregistry++] = (source_entry){file, source, len, NULL, 0};
}

void dhx_register_source(const char *file, const char *source) {
  if (source) dhx_register_source_n(file, source, (long)strlen(source));
}

void dhx_unregister_source(const char *file) {
  for (int i = nregistry - 1; i >= 0; i--)
    if (registry[i].file == file) {
      free(registry[i].lines);
      memmove(&registry[i], &registry[i + 1], (size_t)(nregistry - i - 1) * sizeof *registry);
      nregistry--;
      break;
    }
  if (nregistry == 0) {  // leave nothing behind for leak checkers
    free(registry);
    registry = NULL;
    capregistry = 0;
  }
}

// Newest first, and the very same pointer before an equal name: a name registered twice (a
// file loaded again by a harness) is found by the pointer its locations hold.
static const source_entry *find_entry(const char *file) {
  if (!file) return NULL;
  for (int i = nregistry - 1; i >= 0; i--)
    if (registry[i].file == file) return &registry[i];
  for (int i = nregistry - 1; i >= 0; i--)
    if (strcmp(registry[i].file, file) == 0) return &registry[i];
  return NULL;
}

const char *dhx_source_for(const char *file) {
  const source_entry *e = find_entry(file);
  return e ? e->source : NULL;
}

long dhx_source_len(const char *source) {
  for (int i = nregistry - 1; i >= 0; i--)
    if (registry[i].source == source) return registry[i].len;
  return (long)strlen(source);
}

// ---- the source line and its underline --------------------------------------------------------

// The line index of a registered source, built on first use: a file with an error on each of
// a million lines would otherwise be scanned from the top a million times. NULL when `src` is
// not registered (or too large for 32-bit offsets); then lines are found by scanning.
static pthread_mutex_t index_lock = PTHREAD_MUTEX_INITIALIZER;  // threads may report at once

static const source_entry *build_line_index(const char *src, long len);

static const source_entry *line_index(const char *src, long len) {
  pthread_mutex_lock(&index_lock);
  const source_entry *e = build_line_index(src, len);
  pthread_mutex_unlock(&index_lock);
  return e;
}

static const source_entry *build_line_index(const char *src, long len) {
  source_entry *e = NULL;
  for (int i = nregistry - 1; i >= 0 && !e; i--)
    if (registry[i].source == src && registry[i].len == len) e = &registry[i];
  if (!e || len > (long)UINT32_MAX) return NULL;
  if (!e->lines) {
    long n = 1;
    for (const char *p = src; (p = memchr(p, '\n', (size_t)(src + len - p))); p++) n++;
    e->lines = dhx_xmalloc((size_t)n * sizeof *e->lines);
    e->lines[0] = 0;
    e->nlines = 1;
    for (const char *p = src; (p = memchr(p, '\n', (size_t)(src + len - p))); p++)
      e->lines[e->nlines++] = (uint32_t)(p - src + 1);
  }
  return e;
}

// Finds line `line` (1-based): its first byte and length without the newline (or "\r\n").
static bool find_line(const char *src, long len, int line, long *start, long *n) {
  if (line < 1) return false;
  long p = 0, e;
  const source_entry *ix = line_index(src, len);
  if (ix) {
    if (line > ix->nlines) return false;
    p = ix->lines[line - 1];
    if (p == len && line > 1) return false;  // past the last line
    e = line < ix->nlines ? (long)ix->lines[line] - 1 : len;
  } else {
    for (int l = 1; l < line; l++) {
      const char *nl = memchr(src + p, '\n', (size_t)(len - p));
      if (!nl) return false;
      p = nl - src + 1;
    }
    if (p > len || (p == len && line > 1)) return false;  // past the last line
    const char *nl = memchr(src + p, '\n', (size_t)(len - p));
    e = nl ? nl - src : len;
  }
  if (e > p && src[e - 1] == '\r') e--;
  *start = p;
  *n = e - p;
  return true;
}

static bool is_continuation(unsigned char c) { return c >= 0x80 && c < 0xc0; }

// Control bytes would upset the terminal and the caret; they are shown as spaces.
static void put_source_byte(FILE *f, unsigned char c) {
  fputc(c == '\t' || (c >= 0x20 && c != 0x7f) ? c : ' ', f);
}

static void put_pad(FILE *f, unsigned char c) {
  if (c == '\t')
    fputc('\t', f);
  else if (!is_continuation(c))
    fputc(' ', f);
}

static void show_source(FILE *f, const dhx_loc *loc, const char *src) {
  long len = dhx_source_len(src), ls, n;
  if (loc->line < 1 || !find_line(src, len, loc->line, &ls, &n)) return;
  const unsigned char *s = (const unsigned char *)src + ls;
  long c0 = loc->col > 0 ? loc->col - 1 : 0;  // caret, 0-based within the line
  if (c0 > n) c0 = n;
  long c1 = loc->end_line == loc->line ? loc->end_col - 1 : n;  // end of underline
  if (c1 > n) c1 = n;
  if (c1 <= c0) c1 = c0 + 1;

  long w0 = 0, w1 = n;  // the shown window of the line
  if (n > SHOWN_LINE_MAX) {
    w0 = c0 > WINDOW_BEFORE ? c0 - WINDOW_BEFORE : 0;
    w1 = w0 + SHOWN_LINE_MAX < n ? w0 + SHOWN_LINE_MAX : n;
    if (c1 > w1) c1 = w1 > c0 ? w1 : c0 + 1;
  }

  char num[16];
  int nw = snprintf(num, sizeof num, "%d", loc->line);
  int width = nw < 5 ? 5 : nw + 1;
  fprintf(f, "%*s | %s", width, num, w0 > 0 ? "..." : "");
  for (long i = w0; i < w1; i++) put_source_byte(f, s[i]);
  fprintf(f, "%s\n", w1 < n ? "..." : "");

  fprintf(f, "%*s | %s", width, "", w0 > 0 ? "   " : "");
  for (long i = w0; i < c0; i++) put_pad(f, s[i]);
  fputc('^', f);
  for (long i = c0 + 1; i < c1; i++)
    if (!is_continuation(s[i])) fputc('~', f);
  fputc('\n', f);
}

// ---- reporting --------------------------------------------------------------------------------

typedef enum { K_ERROR, K_WARNING, K_NOTE } kind;

static bool stopped;          // the error limit was reached
static bool last_suppressed;  // notes follow the fate of the error or warning they explain

static FILE *out(void) { return dhx_diag.out ? dhx_diag.out : stderr; }

// Errors and warnings already printed, by a hash of severity, place and text. A definition
// checked once on its own and again through each of its uses would otherwise repeat its
// mistakes; a repeat is still counted (callers judge success by the count) but not shown.
static uint64_t *shown;
static size_t nshown, capshown;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static bool seen_before(kind k, const dhx_loc *loc, const char *msg) {
  uint64_t h = fnv(14695981039346656037ull, &k, sizeof k);
  if (loc && loc->file) {
    h = fnv(h, loc->file, strlen(loc->file));
    h = fnv(h, &loc->line, sizeof loc->line);
    h = fnv(h, &loc->col, sizeof loc->col);
  }
  h = fnv(h, msg, strlen(msg));
  for (size_t i = 0; i < nshown; i++)
    if (shown[i] == h) return true;
  if (nshown == capshown) {
    capshown = capshown ? 2 * capshown : 64;
    shown = dhx_xrealloc(shown, capshown * sizeof *shown);
  }
  shown[nshown++] = h;
  return false;
}

// The state behind the counts belongs to one run. While both counts are zero nothing has been
// recorded yet, so a caller that zeroes them (a harness running many programs in one process)
// starts afresh, with the error limit and the record of shown diagnostics cleared too.
static void start_run_if_reset(void) {
  if (dhx_diag.errors || dhx_diag.warnings) return;
  stopped = last_suppressed = false;
  nshown = 0;
}

// Counts the diagnostic and says whether to print it. Past the error limit nothing is shown,
// so nothing is recorded either: a file of a million bad bytes must not search a million
// records per error.
static bool admit(kind k, const dhx_loc *loc, const char *msg) {
  if (k == K_NOTE) return !last_suppressed;
  start_run_if_reset();
  if (k == K_ERROR) dhx_diag.errors++;
  if (k == K_WARNING) dhx_diag.warnings++;
  int max = dhx_diag.max_errors > 0 ? dhx_diag.max_errors : DEFAULT_MAX_ERRORS;
  if (!stopped && k == K_ERROR && dhx_diag.errors > max) {
    stopped = true;
    fputs("dhxc: error: too many errors emitted, stopping now\n", out());
  }
  last_suppressed = stopped || seen_before(k, loc, msg);
  return !last_suppressed;
}

static void report(kind k, const dhx_loc *loc, const char *source, const char *fmt, va_list ap) {
  static const char *names[] = {"error", "warning", "note"};
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (!admit(k, loc, msg)) return;
  FILE *f = out();
  if (!loc || !loc->file)
    fprintf(f, "dhxc: %s: ", names[k]);
  else if (loc->line < 1)
    fprintf(f, "%s: %s: ", loc->file, names[k]);
  else
    fprintf(f, "%s:%d:%d: %s: ", loc->file, loc->line, loc->col, names[k]);
  fputs(msg, f);
  fputc('\n', f);
  if (loc && loc->file && source) show_source(f, loc, source);
  fflush(f);
}

void dhx_error_at(const dhx_loc *loc, const char *source, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  report(K_ERROR, loc, source, fmt, ap);
  va_end(ap);
}

void dhx_warning_at(const dhx_loc *loc, const char *source, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  report(K_WARNING, loc, source, fmt, ap);
  va_end(ap);
}

void dhx_note_at(const dhx_loc *loc, const char *source, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  report(K_NOTE, loc, source, fmt, ap);
  va_end(ap);
}

void dhx_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  report(K_ERROR, NULL, NULL, fmt, ap);
  va_end(ap);
}

// ---- the text under a span --------------------------------------------------------------------

const char *dhx_loc_text(const dhx_loc *loc, char *buf, size_t size) {
  if (!size) return buf;
  buf[0] = '\0';
  const char *src = loc ? dhx_source_for(loc->file) : NULL;
  long ls, n;
  if (!src || loc->end_line != loc->line || loc->end_col <= loc->col ||
      !find_line(src, dhx_source_len(src), loc->line, &ls, &n) || loc->end_col - 1 > n)
    return buf;
  long len = loc->end_col - loc->col;
  const char *s = src + ls + loc->col - 1;
  if ((size_t)len < size) {
    memcpy(buf, s, (size_t)len);
    buf[len] = '\0';
  } else if (size > 4) {  // too long: keep the start and say so
    memcpy(buf, s, size - 4);
    memcpy(buf + size - 4, "...", 4);
  }
  return buf;
}
