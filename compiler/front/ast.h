// ast.h — the syntax tree of a .dhx file.
//
// Plain data, chibicc style: every node carries the source span it came from so that every
// later pass can report `file:line:col: error: ...` against the user's text. Nodes are
// allocated from the module's arena and freed with the module (dhx_module_free).
#ifndef DHX_AST_H
#define DHX_AST_H

#include <stdbool.h>
#include <stdint.h>

// A half-open source span; lines and columns are 1-based, columns count bytes.
typedef struct dhx_loc {
  const char *file;   // path as given by the user (owned by the module)
  int line, col;      // first character
  int end_line, end_col;  // one past the last character
} dhx_loc;

// Physical units a number literal may carry. The literal's value is converted to the SI base
// unit of its kind when parsed (bytes, bytes/s, seconds, FLOP/s), so `2 GB/s` is 2e9.
typedef enum {
  DHX_UNIT_NONE,
  DHX_UNIT_BYTES,      // B KB MB GB TB KiB MiB GiB TiB
  DHX_UNIT_BANDWIDTH,  // B/s KB/s MB/s GB/s TB/s Gb/s (bits: /8) Mb/s
  DHX_UNIT_TIME,       // s ms us ns
  DHX_UNIT_FLOPS,      // FLOP/s GFLOP/s TFLOP/s PFLOP/s
} dhx_unit;

typedef enum {
  EXPR_NUM,     // num, is_int, unit, unit_text
  EXPR_STR,     // str (unescaped)
  EXPR_BOOL,    // boolean (`true`/`false`/`on`/`off`)
  EXPR_IDENT,   // str = name; dotted names (`std.gpt`) are a single identifier with dots
  EXPR_BINOP,   // op in "+-*/%", lhs, rhs
  EXPR_NEG,     // lhs
  EXPR_CALL,    // str = callee name, args
  EXPR_TUPLE,   // args (all positional)
  EXPR_ANNOT,   // lhs @str(args): `linear(h, 3*hidden) @split(col)`
} dhx_expr_kind;

typedef struct dhx_expr dhx_expr;

typedef struct dhx_arg {
  char *name;        // NULL for a positional argument
  dhx_loc name_loc;  // span of the name (or of the value when positional)
  dhx_expr *value;
} dhx_arg;

struct dhx_expr {
  dhx_expr_kind kind;
  dhx_loc loc;       // span of the whole expression
  double num;        // EXPR_NUM: value in SI base units
  bool is_int;       // EXPR_NUM: written without '.', 'e' or a unit that scales to a fraction
  dhx_unit unit;     // EXPR_NUM
  char *unit_text;   // EXPR_NUM: the unit as written ("GB/s"), NULL when none
  bool boolean;      // EXPR_BOOL
  char *str;         // EXPR_STR, EXPR_IDENT, EXPR_CALL (callee), EXPR_ANNOT (annotation name)
  char op;           // EXPR_BINOP
  dhx_expr *lhs, *rhs;
  dhx_arg *args;     // EXPR_CALL, EXPR_TUPLE, EXPR_ANNOT
  int nargs;
  int depth;         // height of this tree (1 for a leaf); the parser keeps it <= 1000, so
                     // recursive walks over expressions are bounded
};

typedef enum {
  STMT_ASSIGN,  // name = value
  STMT_RETURN,  // return value
  STMT_REPEAT,  // repeat value { body }   or   repeat name in value { body }  (name may be NULL)
} dhx_stmt_kind;

typedef struct dhx_stmt {
  dhx_stmt_kind kind;
  dhx_loc loc;
  char *name;        // ASSIGN target; REPEAT loop variable (0-based index) or NULL
  dhx_loc name_loc;
  dhx_expr *value;   // ASSIGN/RETURN value; REPEAT count
  struct dhx_stmt **body;  // REPEAT
  int nbody;
} dhx_stmt;

typedef enum { TYPE_INT, TYPE_FLOAT, TYPE_BOOL, TYPE_STR, TYPE_TENSOR } dhx_type_kind;

// `name: int = 4`, `x: [B, S, hidden]`, `tokens: [B, seq] i32`
typedef struct dhx_param {
  char *name;
  dhx_loc loc;
  dhx_type_kind type;
  dhx_expr **dims;   // TYPE_TENSOR: each dim is an expression (identifiers may be symbolic)
  int ndims;
  char *dtype;       // TYPE_TENSOR: "f32" (default when NULL), "i32", "bf16", ...
  dhx_expr *default_value;  // NULL when required
} dhx_param;

// A block of fields: `data { train: "a.bin", val: "b.bin" }`, and nested blocks as in
// `schedule { parallel { dp: 2 } }`. A field has either a value or a sub-block.
typedef struct dhx_fields dhx_fields;
typedef struct dhx_field {
  char *name;
  dhx_loc loc;       // span of the name
  dhx_expr *value;   // `name: value`
  dhx_fields *block; // `name { ... }`
} dhx_field;

struct dhx_fields {
  dhx_loc loc;
  dhx_field *items;
  int n;
};

typedef enum {
  ITEM_USE,         // use std.gpt            name = "std.gpt"
  ITEM_LAYER,       // layer name(params) { body }
  ITEM_MODEL_DEF,   // model name(params) { body }
  ITEM_MODEL_INST,  // model name = call     (value is an EXPR_CALL)
  ITEM_DATA,        // data { fields }
  ITEM_CLUSTER,     // cluster = call | cluster = NAME   (value: EXPR_CALL, or EXPR_IDENT naming a preset)
  ITEM_CLUSTER_DEF, // cluster NAME = call   a named cluster preset (value is an EXPR_CALL)
  ITEM_GPU,         // gpu NAME { fields }   a GPU kind: flops, memory, bandwidth
  ITEM_SCHEDULE,    // schedule { fields }   (sub-blocks parallel/strands/compress/...)
  ITEM_TRAIN,       // train { fields }
} dhx_item_kind;

typedef struct dhx_item {
  dhx_item_kind kind;
  dhx_loc loc;       // span of the keyword through the end of the item
  char *name;        // USE module name; LAYER/MODEL_DEF/MODEL_INST/CLUSTER_DEF/GPU name
  dhx_loc name_loc;  // span of the name; for DATA/CLUSTER/SCHEDULE/TRAIN, of the keyword
  dhx_param *params; // LAYER, MODEL_DEF
  int nparams;
  dhx_stmt **body;   // LAYER, MODEL_DEF
  int nbody;
  dhx_expr *value;   // MODEL_INST, CLUSTER, CLUSTER_DEF
  dhx_fields *fields;  // DATA, SCHEDULE, TRAIN, GPU
  struct dhx_module *used;  // USE: the module it resolved to (set by the loader)
  bool use_path;     // USE: written as a string (`use "x.dhx"`), a path relative to the file
} dhx_item;

// A comment as written, `# ...` or `/* ... */` with its delimiters, for `dhxc fmt`: the lexer
// records every comment of a file; nothing else reads them.
typedef struct dhx_comment {
  dhx_loc loc;
  char *text;
} dhx_comment;

typedef struct dhx_module {
  char *path;        // file path as opened
  char *name;        // "std.gpt" for stdlib modules, the path for the main file
  char *source;      // whole file contents, NUL-terminated (for caret diagnostics)
  long source_len;
  dhx_item **items;
  int nitems;
  dhx_comment *comments;  // every comment in source order
  int ncomments;
  void *arena;       // allocation arena for every node of this module (opaque)
} dhx_module;

#endif
