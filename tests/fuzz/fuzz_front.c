// fuzz_front — libFuzzer target for the whole front end: lexer, parser, loader, --set and the
// typed configuration, run on each input as the main file of a program.
//
// The input is the file's bytes, as dhxc would read them. `use std.gpt` and `use std.clusters`
// resolve in the real stdlib directory (DHX_STDLIB_DIR), so the loader, duplicate definitions
// and the cluster presets see real modules. The main file is named inside a directory that
// does not exist, so a relative `use "x.dhx"` fails instead of reading whatever lies in the
// fuzzer's working directory. A few fixed --set overrides are applied whatever the file holds,
// and a last line `#set PATH=VALUE` (a comment to the lexer) adds one taken from the input, so
// mutations reach the override parser too. Everything runs even after errors: the tree the
// parser returns after recovering must be as safe to walk as a correct one. An input that
// parses must also format to text that parses and formats to itself.
//
// Needs clang's libFuzzer, so it is not part of the gcc build: fuzz_front.sh compiles it with
// clang directly (-fsanitize=fuzzer,address,undefined) and runs it over a seed corpus; the
// CTest test front_fuzz_parse_and_config calls that script and is skipped where clang cannot
// link it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"

#ifndef DHX_STDLIB_DIR
#define DHX_STDLIB_DIR "stdlib"
#endif

#define MAIN_PATH "/dhx-fuzz-nonexistent/input.dhx"

static const char *const overrides[] = {
    "schedule.parallel.dp=2",
    "train.optimizer.lr=1e-3",
    "cluster.net=10 Gb/s",
    "model.layers=2",
    "data.train=\"t.bin\"",
};

// The text after a last line's "#set ", NUL-terminated in a new buffer (NULL when none).
static char *input_override(const char *data, size_t size) {
  size_t start = size;
  while (start > 0 && data[start - 1] != '\n') start--;
  static const char tag[] = "#set ";
  size_t n = size - start;
  if (n <= sizeof tag - 1 || memcmp(data + start, tag, sizeof tag - 1) != 0) return NULL;
  n -= sizeof tag - 1;
  if (memchr(data + start + sizeof tag - 1, '\0', n)) return NULL;  // not a C string
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, data + start + sizeof tag - 1, n);
  s[n] = '\0';
  return s;
}

// The formatter's contract on every input that parses: its output parses without errors and
// formats to itself (dhxc fmt is idempotent). Anything else is a crash for the fuzzer.
static void check_format(const dhx_module *m) {
  size_t len;
  char *text = dhx_format_module(m, &len);
  int errors = dhx_diag.errors;
  dhx_module *again = dhx_parse_buffer("<formatted>", text, (long)len);
  if (dhx_diag.errors != errors) abort();  // the canonical form does not parse
  size_t len2;
  char *text2 = dhx_format_module(again, &len2);
  if (len2 != len || memcmp(text, text2, len) != 0) abort();  // not idempotent
  free(text2);
  dhx_module_free(again);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  if (!sink) abort();
  memset(&dhx_diag, 0, sizeof dhx_diag);  // each input is a run of its own
  dhx_diag.out = sink;

  const char *dirs[] = {DHX_STDLIB_DIR};
  dhx_program *p = dhx_load_program_source(MAIN_PATH, (const char *)data, (long)size, dirs, 1);
  if (!p) abort();  // documented never to fail
  for (int i = 0; i < p->nmodules; i++) dhx_dump_module(p->modules[i], sink);
  if (dhx_diag.errors == 0) check_format(p->main);

  for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++)
    dhx_apply_override(p, overrides[i]);
  char *extra = input_override((const char *)data, size);
  if (extra) dhx_apply_override(p, extra);

  dhx_config cfg;
  if (!dhx_read_config(p, &cfg)) dhx_note_layout_overrides(&cfg);
  if (cfg.model_inst && cfg.model_inst->value && cfg.model_inst->value->str)
    dhx_find_definition(p, cfg.model_inst->value->str);
  dhx_dump_module(p->main, sink);  // the tree as the overrides left it

  dhx_program_free(p);
  free(extra);
  // Freeing the program unregisters every source it registered.
  if (dhx_source_for(MAIN_PATH) || dhx_source_for("<--set #1>")) abort();
  return 0;
}
