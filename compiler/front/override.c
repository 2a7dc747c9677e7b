// override.c — `--set schedule.parallel.dp=2`: edits the main module's field blocks.
//
// The value is parsed with the real expression parser, so `--set 'cluster.net=10 Gb/s'` or
// `--set data.train="x.bin"` mean exactly what they would in the file. Each --set is a source
// of its own, named by its place on the command line (`<--set #2>`), line 1, with columns
// counted in the whole assignment (whose text is registered as that source), so a later
// type error points at that --set's value with a caret like any other, and a note can say
// which --set gave a value. Missing blocks and fields are created; whether a field is known
// is decided later by config.c, which reports unknown ones as it does in files.
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_PATH_PARTS 16

typedef struct part {
  const char *name;  // in the arena
  dhx_loc loc;
} part;

typedef struct override {
  dhx_program *p;
  dhx_arena *arena;
  const char *text;  // the assignment as given
  int index;         // its place among the --set options, from 1
  part parts[MAX_PATH_PARTS];
  int nparts;
  dhx_expr *value;
} override;

static bool is_name_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

static void remember_source(dhx_program *p, const char *file) {
  dhx_program_priv *pv = p->priv;
  if (pv->nset_files == pv->capset_files) {
    pv->capset_files = pv->capset_files ? 2 * pv->capset_files : 8;
    pv->set_files = dhx_xrealloc(pv->set_files, (size_t)pv->capset_files * sizeof *pv->set_files);
  }
  pv->set_files[pv->nset_files++] = file;
}

// Splits PATH (the text before '=') into names; false if it is not `name(.name)*`.
static bool split_path(override *o, const char *file, long len) {
  long i = 0;
  while (i < len) {
    long start = i;
    if (!is_name_start(o->text[i])) return false;
    while (i < len && is_name_char(o->text[i])) i++;
    if (o->nparts == MAX_PATH_PARTS) return false;
    dhx_loc loc = {file, 1, (int)start + 1, 1, (int)i + 1};
    o->parts[o->nparts++] = (part){dhx_arena_strndup(o->arena, o->text + start, (size_t)(i - start)), loc};
    if (i < len && o->text[i++] != '.') return false;
    if (i == len && o->text[len - 1] == '.') return false;
  }
  return o->nparts > 0;
}

// ---- editing the tree ---------------------------------------------------------------------------

static dhx_field *find_field(dhx_fields *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (strcmp(f->items[i].name, name) == 0) return &f->items[i];
  return NULL;
}

static dhx_field *append_field(dhx_arena *a, dhx_fields *f, dhx_field field) {
  dhx_field *items = dhx_arena_alloc(a, (size_t)(f->n + 1) * sizeof *items);
  if (f->n) memcpy(items, f->items, (size_t)f->n * sizeof *items);
  items[f->n] = field;
  f->items = items;
  return &f->items[f->n++];
}

static dhx_fields *new_fields(dhx_arena *a, dhx_loc loc) {
  dhx_fields *f = dhx_arena_alloc(a, sizeof *f);
  f->loc = loc;
  return f;
}

// `name: value` as an argument of a call: replaced when present, appended when not.
static void set_arg(dhx_arena *a, dhx_expr *call, const part *name, dhx_expr *value) {
  for (int i = 0; i < call->nargs; i++)
    if (call->args[i].name && strcmp(call->args[i].name, name->name) == 0) {
      call->args[i].value = value;
      return;
    }
  dhx_arg *args = dhx_arena_alloc(a, (size_t)(call->nargs + 1) * sizeof *args);
  if (call->nargs) memcpy(args, call->args, (size_t)call->nargs * sizeof *args);
  args[call->nargs++] = (dhx_arg){(char *)name->name, name->loc, value};
  call->args = args;
}

static dhx_item *find_item(dhx_module *m, dhx_item_kind kind) {
  for (int i = 0; i < m->nitems; i++)
    if (m->items[i]->kind == kind) return m->items[i];
  return NULL;
}

static dhx_item *add_item(dhx_arena *a, dhx_module *m, dhx_item_kind kind, const part *at) {
  dhx_item *it = dhx_arena_alloc(a, sizeof *it);
  it->kind = kind;
  it->loc = at->loc;
  it->name_loc = at->loc;
  dhx_item **items = dhx_arena_alloc(a, (size_t)(m->nitems + 1) * sizeof *items);
  if (m->nitems) memcpy(items, m->items, (size_t)m->nitems * sizeof *items);
  items[m->nitems++] = it;
  m->items = items;
  return it;
}

// "schedule.parallel" for the first n parts, for messages.
static const char *prefix(const override *o, int n, char *buf, size_t size) {
  buf[0] = '\0';
  size_t len = 0;
  for (int i = 0; i < n && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "." : "", o->parts[i].name);
  return buf;
}

static bool set_in_call(override *o, dhx_expr *call, int i) {
  char buf[256];
  if (i != o->nparts - 1) {
    dhx_error("--set #%d '%s': '%s' is an argument of a call and has no fields", o->index, o->text,
              prefix(o, i + 1, buf, sizeof buf));
    return false;
  }
  set_arg(o->arena, call, &o->parts[i], o->value);
  return true;
}

// Walks parts[1..] through nested blocks, creating the blocks and the field that are missing.
static bool set_in_block(override *o, dhx_fields *f) {
  char buf[256];
  for (int i = 1; i < o->nparts; i++) {
    const part *pt = &o->parts[i];
    dhx_field *field = find_field(f, pt->name);
    bool leaf = i == o->nparts - 1;
    if (leaf) {
      if (field && field->block) {
        dhx_error("--set #%d '%s': '%s' is a block; set one of its fields, as in %s.NAME=VALUE",
                  o->index, o->text, prefix(o, i + 1, buf, sizeof buf), buf);
        return false;
      }
      if (field)
        field->value = o->value;
      else
        append_field(o->arena, f, (dhx_field){(char *)pt->name, pt->loc, o->value, NULL});
      return true;
    }
    if (!field && i == 1 && strcmp(o->parts[0].name, "train") == 0 &&
        strcmp(pt->name, "optimizer") == 0) {
      // train.optimizer.lr=1e-3 with no optimizer yet: the one optimizer there is
      dhx_expr *call = dhx_new_expr(o->arena, EXPR_CALL, pt->loc);
      call->str = dhx_arena_strdup(o->arena, "adamw");
      field = append_field(o->arena, f, (dhx_field){(char *)pt->name, pt->loc, call, NULL});
    }
    if (!field)
      field = append_field(o->arena, f,
                           (dhx_field){(char *)pt->name, pt->loc, NULL, new_fields(o->arena, pt->loc)});
    if (!field->block) {
      if (field->value && field->value->kind == EXPR_CALL) return set_in_call(o, field->value, i + 1);
      dhx_error("--set #%d '%s': '%s' is a value, not a block", o->index, o->text,
                prefix(o, i + 1, buf, sizeof buf));
      return false;
    }
    f = field->block;
  }
  return true;
}

static bool set_cluster(override *o, dhx_module *m) {
  dhx_item *it = find_item(m, ITEM_CLUSTER);
  if (o->nparts == 1) {
    if (o->value->kind != EXPR_CALL && o->value->kind != EXPR_IDENT) {
      dhx_error_at(&o->value->loc, o->text, "cluster must be a call such as cpu(ranks: 4), or "
                   "the name of a cluster preset");
      return false;
    }
    if (!it) it = add_item(o->arena, m, ITEM_CLUSTER, &o->parts[0]);
    it->value = o->value;
    return true;
  }
  if (!it) {
    it = add_item(o->arena, m, ITEM_CLUSTER, &o->parts[0]);
    it->value = dhx_new_expr(o->arena, EXPR_CALL, o->parts[0].loc);
    it->value->str = dhx_arena_strdup(o->arena, "cpu");
  }
  if (it->value && it->value->kind == EXPR_IDENT) {  // `cluster = preset`: now preset(FIELD: ...)
    dhx_expr *call = dhx_new_expr(o->arena, EXPR_CALL, it->value->loc);
    call->str = it->value->str;
    it->value = call;
  }
  if (!it->value || it->value->kind != EXPR_CALL) return false;  // a parse error said why
  return set_in_call(o, it->value, 1);
}

// `model.layers=8`: an argument of the model instance's call.
static bool set_model_arg(override *o, dhx_module *m) {
  dhx_item *it = find_item(m, ITEM_MODEL_INST);
  if (!it) {
    dhx_error("--set #%d '%s': the file has no model instance ('model NAME = ...') to set '%s' "
              "of", o->index, o->text, o->nparts > 1 ? o->parts[1].name : "an argument");
    return false;
  }
  if (o->nparts == 1) {
    dhx_error("--set #%d '%s': set an argument of the model, as in model.layers=8", o->index,
              o->text);
    return false;
  }
  if (!it->value || it->value->kind != EXPR_CALL) return false;  // a parse error said why
  return set_in_call(o, it->value, 1);
}

bool dhx_apply_override(dhx_program *p, const char *assignment) {
  dhx_program_priv *pv = p->priv;
  int index = ++pv->nsets;
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment) {
    dhx_error("--set #%d '%s': expected PATH=VALUE, as in schedule.parallel.dp=2", index,
              assignment);
    return false;
  }
  dhx_module *m = p->main;
  override o = {.p = p, .arena = m->arena, .text = dhx_arena_strdup(m->arena, assignment),
                .index = index};
  long path_len = eq - assignment, len = (long)strlen(assignment);
  char name[32];
  snprintf(name, sizeof name, "<--set #%d>", index);
  const char *file = dhx_arena_strdup(m->arena, name);
  if (!split_path(&o, file, path_len)) {
    dhx_error("--set #%d '%s': '%.*s' is not a field path (names joined by dots, as in "
              "train.steps)", index, assignment, (int)path_len, assignment);
    return false;
  }
  long voff = path_len + 1;
  if (strspn(assignment + voff, " \t") == (size_t)(len - voff)) {
    dhx_error("--set #%d '%s': no value after '='", index, assignment);
    return false;
  }
  dhx_register_source_n(file, o.text, len);
  remember_source(p, file);
  o.value = dhx_parse_expr(m, file, o.text, voff, len - voff, (int)voff + 1);
  if (!o.value) return false;

  const char *top = o.parts[0].name;
  if (strcmp(top, "cluster") == 0) return set_cluster(&o, m);
  if (strcmp(top, "model") == 0) return set_model_arg(&o, m);
  static const struct {
    const char *name;
    dhx_item_kind kind;
  } blocks[] = {{"data", ITEM_DATA}, {"schedule", ITEM_SCHEDULE}, {"train", ITEM_TRAIN}};
  for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
    if (strcmp(top, blocks[i].name) != 0) continue;
    if (o.nparts == 1) {
      dhx_error("--set #%d '%s': '%s' is a block; set one of its fields, as in %s.NAME=VALUE",
                index, assignment, top, top);
      return false;
    }
    dhx_item *it = find_item(m, blocks[i].kind);
    if (!it) {
      it = add_item(o.arena, m, blocks[i].kind, &o.parts[0]);
      it->fields = new_fields(o.arena, o.parts[0].loc);
    }
    if (!it->fields) return false;  // a parse error said why
    return set_in_block(&o, it->fields);
  }
  dhx_error("--set #%d '%s': no block '%s' (expected model, data, cluster, schedule or train)",
            index, assignment, top);
  return false;
}

// ---- where a value came from --------------------------------------------------------------------

int dhx_set_index(const char *file) {
  int index = 0, end = 0;
  if (!file || sscanf(file, "<--set #%d>%n", &index, &end) != 1 || file[end] != '\0') return 0;
  return index;
}

bool dhx_note_set_value(const dhx_loc *value, const char *path) {
  int index = value ? dhx_set_index(value->file) : 0;
  const char *text = index ? dhx_source_for(value->file) : NULL;
  if (!text) return false;
  char got[64];
  dhx_note_at(value, text, "'%s' was set to %s by --set #%d '%s'", path,
              dhx_loc_text(value, got, sizeof got), index, text);
  return true;
}
