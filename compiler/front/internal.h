// internal.h — what the front end's own files share and nobody else needs: the node arena,
// growable lists, the state the lexer and parser pass between them, and the entry points
// the loader and --set use to run the parser.
#ifndef DHX_FRONT_INTERNAL_H
#define DHX_FRONT_INTERNAL_H

#include <stddef.h>

#include "front.h"

// Limits that keep every recursive walk and every buffer bounded.
#define DHX_MAX_NESTING 1000        // open brackets at once: ( [ {
#define DHX_MAX_EXPR_DEPTH 1000     // depth of one expression tree
#define DHX_MAX_FILE_SIZE (64L << 20)
#define DHX_MAX_USE_DEPTH 256       // a uses b uses c ... (bounds the loader's recursion)

// ---- arena (arena.c) --------------------------------------------------------------------------
// Every node of a module lives in its arena and is freed at once with the module. Allocation
// failure is reported ("out of memory") and exits: a compiler cannot do anything useful
// without memory, and callers stay free of NULL checks.
typedef struct dhx_arena dhx_arena;

dhx_arena *dhx_arena_new(void);
void dhx_arena_free(dhx_arena *a);
void *dhx_arena_alloc(dhx_arena *a, size_t size);  // zeroed
char *dhx_arena_strndup(dhx_arena *a, const char *s, size_t n);
char *dhx_arena_strdup(dhx_arena *a, const char *s);
void *dhx_xmalloc(size_t size);                      // malloc that exits on failure
void *dhx_xrealloc(void *p, size_t size);
char *dhx_xstrdup(const char *s);
_Noreturn void dhx_out_of_memory(void);

// A growable array whose storage lives in an arena; items are copied in by value.
typedef struct dhx_list {
  void *items;
  int n, cap;
} dhx_list;

void dhx_list_push(dhx_arena *a, dhx_list *l, const void *item, size_t size);

// ---- diagnostics helpers (diag.c) -------------------------------------------------------------
// Like dhx_register_source, but for sources that may hold NUL bytes.
void dhx_register_source_n(const char *file, const char *source, long len);
void dhx_unregister_source(const char *file);
// Length of a registered source (strlen when it is not registered).
long dhx_source_len(const char *source);

// ---- units (units.c) ---------------------------------------------------------------------------
typedef struct dhx_unit_def {
  const char *text;  // as written: "GB/s"
  dhx_unit unit;
  double scale;      // multiply the written number by this to get SI base units
} dhx_unit_def;

const dhx_unit_def *dhx_unit_lookup(const char *text, size_t len);
const char *dhx_unit_kind_name(dhx_unit u);  // "a bandwidth", "a time", ...

// ---- AST construction (ast.c) -----------------------------------------------------------------
typedef struct dhx_parse_state dhx_parse_state;

dhx_expr *dhx_new_expr(dhx_arena *a, dhx_expr_kind kind, dhx_loc loc);
// Sets e->depth from its children. An expression deeper than DHX_MAX_EXPR_DEPTH is reported
// once per parse and replaced by a leaf, so no tree the parser returns is deeper than that.
dhx_expr *dhx_finish_expr(dhx_parse_state *ps, dhx_expr *e);
// The span from the start of `a` to the end of `b`.
dhx_loc dhx_loc_span(dhx_loc a, dhx_loc b);

// ---- the lexer/parser pair (lexer.l, parser.y) ------------------------------------------------
// One parse: the lexer reads `text` (which starts at byte `off` of `source`, the text that
// carets are drawn from) and the parser collects items or a single expression.
struct dhx_parse_state {
  dhx_arena *arena;
  const char *file;       // loc.file of every node
  const char *source;     // the whole text the locations refer to (for diagnostics)
  int first_token;        // START_FILE or START_EXPR, handed to the parser before any input
  int line, col;          // position of the next unread byte
  dhx_loc start;          // where the input starts (location of the first token)
  dhx_loc last_end;       // zero-width location just after the last token returned
  const char *tok;        // text of the last token returned (for "unexpected identifier 'x'")
  int tok_len;
  bool expr_mode;         // parsing a single expression (a --set value), not a file
  bool dropped;           // the lexer reported and skipped input since the last token
  bool after_dropped;     // ... just before the current token: a syntax error there is no news
  int nesting;            // brackets open now
  bool stop;              // a fatal problem was reported: lex end of file, report nothing more
  bool deep_reported;     // "too deeply nested" was said already
  dhx_list items;         // dhx_item *, in source order
  dhx_list comments;      // dhx_comment, in source order (kept for dhxc fmt)
  dhx_expr *expr;         // the result of an expression parse
};

// Parses `len` bytes at `source + off` as one expression. Locations say `file`, line 1, and
// count columns from `col` (so a --set value's caret lands under the value in the whole
// assignment). Nodes go to m's arena. Returns NULL after reporting a syntax error.
dhx_expr *dhx_parse_expr(dhx_module *m, const char *file, const char *source, long off, long len,
                         int col);

// ---- program bookkeeping (load.c, override.c) -------------------------------------------------
typedef struct dhx_program_priv {
  char **keys;             // canonical path of modules[i], so each file is loaded once
  int cap;                 // capacity of keys and of the program's modules array
  const char **set_files;  // the "<--set #N>" file names --set registered as sources
  int nset_files, capset_files;
  int nsets;               // --set options applied so far (numbers them from 1)
} dhx_program_priv;

// ---- typed configuration values (config_values.c) ----------------------------------------------
// Each reader reports a type error at the value and returns false.
typedef struct dhx_qty {
  bool ok;       // a constant number (possibly with a unit)
  double v;      // in SI base units
  bool is_int;
  dhx_unit unit;
} dhx_qty;

dhx_qty dhx_cfg_fold(const dhx_expr *e);
const char *dhx_cfg_got(const dhx_expr *e, char *buf, size_t size);
bool dhx_cfg_int(const dhx_expr *e, const char *name, int lo, int hi, int *out);
bool dhx_cfg_u64(const dhx_expr *e, const char *name, uint64_t *out);
// A plain number in the range lo..hi (each end open or closed); `what` words the range.
bool dhx_cfg_number(const dhx_expr *e, const char *name, const char *what, double lo, bool lo_open,
                    double hi, bool hi_open, double *out);
bool dhx_cfg_quantity(const dhx_expr *e, const char *name, dhx_unit unit, const char *example,
                      double *out);
bool dhx_cfg_bool(const dhx_expr *e, const char *name, bool *out);
bool dhx_cfg_string(const dhx_expr *e, const char *name, const char *what, char **out);
dhx_loc dhx_cfg_callee_loc(const dhx_expr *call);

// Fields and named arguments, checked against a NULL-terminated list of known names (at most
// DHX_CFG_MAX_KNOWN). dhx_cfg_field_index returns the name's index, or -1 after reporting it as
// unknown (with a did-you-mean) or as set twice (with a note at the first); `seen` holds one
// slot per known name.
#define DHX_CFG_MAX_KNOWN 16
int dhx_cfg_field_index(const char *name, const dhx_loc *loc, const char *noun, const char *what,
                        const char *const *known, const dhx_loc **seen);
const dhx_expr *dhx_cfg_value_of(const dhx_field *f);          // NULL after an error
const dhx_fields *dhx_cfg_block_of(const dhx_field *f, const char *example);  // ditto
typedef void (*dhx_arg_reader)(void *ctx, int index, const dhx_arg *arg);
void dhx_cfg_read_args(const dhx_arg *args, int nargs, const char *what, const char *example,
                       const char *const *known, dhx_arg_reader read, void *ctx);
// A word among `choices` (an identifier, or on/off); its index, or -1 after an error.
int dhx_cfg_choice(const dhx_expr *e, const char *name, const char *const *choices);

// ---- configuration parts (config_cluster.c, config_schedule.c) -------------------------------
void dhx_read_cluster(const dhx_program *p, const dhx_item *it, dhx_config *cfg);
// Checks the `gpu` kinds and `cluster NAME = ...` presets of the main module, used or not.
void dhx_check_cluster_items(const dhx_program *p);
void dhx_read_schedule(const dhx_item *it, dhx_config *cfg);
// Checks between fields (ranks against the layout, what each schedule block needs).
void dhx_check_schedule_fields(dhx_config *cfg);


#endif
