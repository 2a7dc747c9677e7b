// load.c — a program: the main file plus every module reached through `use`.
//
// `use std.gpt` finds gpt.dhx in the stdlib directories (in order; `std.nn.attn` is
// nn/attn.dhx); `use "layers/mine.dhx"` is relative to the directory of the using file. Each
// file is loaded once, identified by its canonical path. Loading is depth-first, so a `use`
// that reaches a module still being loaded closes a cycle: that is an error at the `use`,
// with a note that spells out the chain.
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

// ---- files --------------------------------------------------------------------------------------

// Reads a whole file. On failure returns NULL and describes why in `err`.
static char *read_file(const char *path, long *len, char *err, size_t errsize) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errsize, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(err, errsize, "cannot open '%s': %s", path, strerror(EISDIR));
    fclose(f);
    return NULL;
  }
  // Read in chunks (the file may be a pipe) but never more than the limit plus one byte.
  size_t cap = 1 << 16, n = 0;
  char *buf = dhx_xmalloc(cap);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = dhx_xrealloc(buf, cap);
    }
    size_t want = cap - n;
    if (n + want > (size_t)DHX_MAX_FILE_SIZE + 1) want = (size_t)DHX_MAX_FILE_SIZE + 1 - n;
    size_t got = fread(buf + n, 1, want, f);
    n += got;
    if (n > (size_t)DHX_MAX_FILE_SIZE) {
      snprintf(err, errsize, "'%s' is larger than %ld MiB", path, DHX_MAX_FILE_SIZE >> 20);
      break;
    }
    if (got < want) {
      if (ferror(f)) snprintf(err, errsize, "cannot read '%s': %s", path, strerror(errno));
      else {
        fclose(f);
        *len = (long)n;
        return buf;
      }
      break;
    }
  }
  fclose(f);
  free(buf);
  return NULL;
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *canonical(const char *path) {
  char *r = realpath(path, NULL);
  return r ? r : dhx_xstrdup(path);
}

static char *join(const char *a, const char *b, const char *ext) {
  size_t n = strlen(a) + strlen(b) + strlen(ext) + 2;
  char *s = dhx_xmalloc(n);
  snprintf(s, n, "%s%s%s%s", a, *a ? "/" : "", b, ext);
  return s;
}

// ---- the module table ---------------------------------------------------------------------------

static dhx_program_priv *priv(dhx_program *p) { return p->priv; }

static int find_module(dhx_program *p, const char *key) {
  for (int i = 0; i < p->nmodules; i++)
    if (strcmp(priv(p)->keys[i], key) == 0) return i;
  return -1;
}

static int add_module(dhx_program *p, dhx_module *m, char *key) {
  dhx_program_priv *pv = priv(p);
  if (p->nmodules == pv->cap) {
    pv->cap = pv->cap ? 2 * pv->cap : 8;
    p->modules = dhx_xrealloc(p->modules, (size_t)pv->cap * sizeof *p->modules);
    pv->keys = dhx_xrealloc(pv->keys, (size_t)pv->cap * sizeof *pv->keys);
  }
  p->modules[p->nmodules] = m;
  pv->keys[p->nmodules] = key;
  return p->nmodules++;
}

// Parses `len` bytes of `src` as the module at `path` and adds it to the table under `key`.
static int add_source(dhx_program *p, const char *path, const char *name, char *key,
                      const char *src, long len) {
  dhx_module *m = dhx_parse_buffer(path, src, len);
  m->name = dhx_arena_strdup(m->arena, name);
  return add_module(p, m, key);
}

// Reads and parses `path`; errors go to `use` (or have no location for the main file).
static int load_file(dhx_program *p, const char *path, const char *name, char *key,
                     const dhx_item *use, const dhx_module *from) {
  char err[PATH_MAX + 128];
  long len = 0;
  char *src = read_file(path, &len, err, sizeof err);
  if (!src) {
    if (use)
      dhx_error_at(&use->name_loc, from->source, "%s", err);
    else
      dhx_error("%s", err);
    free(key);
    return -1;
  }
  int i = add_source(p, path, name, key, src, len);
  free(src);
  return i;
}

// ---- resolving a `use` ------------------------------------------------------------------------

// The file a `use` names, or NULL after reporting why there is none.
static char *resolve(dhx_program *p, const dhx_module *from, const dhx_item *use, char **name) {
  const char *what = use->name;
  if (use->use_path) {
    if (!what[0]) {
      dhx_error_at(&use->name_loc, from->source, "empty module path");
      return NULL;
    }
    const char *slash = strrchr(from->path, '/');
    char *dir = dhx_xstrdup(from->path);
    dir[slash ? (slash == from->path ? 1 : slash - from->path) : 0] = '\0';  // keep a root '/'
    char *path = what[0] == '/' ? dhx_xstrdup(what) : join(dir, what, "");
    free(dir);
    *name = dhx_xstrdup(path);
    return path;
  }
  if (strncmp(what, "std.", 4) != 0) {
    dhx_error_at(&use->name_loc, from->source,
                 "no module '%s': library modules are named std.NAME; a local file is used with "
                 "a string, as in use \"%s.dhx\"",
                 what, what);
    return NULL;
  }
  char *rel = dhx_xstrdup(what + 4);
  for (char *c = rel; *c; c++)
    if (*c == '.') *c = '/';
  for (int i = 0; i < p->nstdlib_dirs; i++) {
    char *path = join(p->stdlib_dirs[i], rel, ".dhx");
    if (is_file(path)) {
      free(rel);
      *name = dhx_xstrdup(what);
      return path;
    }
    free(path);
  }
  free(rel);
  // The search path, for the message.
  size_t n = 32;
  for (int i = 0; i < p->nstdlib_dirs; i++) n += strlen(p->stdlib_dirs[i]) + 2;
  char *dirs = dhx_xmalloc(n);
  dirs[0] = '\0';
  for (int i = 0; i < p->nstdlib_dirs; i++) {
    if (i) strcat(dirs, ", ");
    strcat(dirs, p->stdlib_dirs[i]);
  }
  dhx_error_at(&use->name_loc, from->source, "no module '%s' (searched: %s)", what,
               p->nstdlib_dirs ? dirs : "no stdlib directories");
  free(dirs);
  return NULL;
}

// ---- depth-first loading ------------------------------------------------------------------------

typedef struct frame {
  int module;
  const dhx_item *use;  // the use being followed out of this module
} frame;

static void report_cycle(dhx_program *p, frame *stack, int depth, int target, const dhx_item *use,
                         const dhx_module *from) {
  int k = 0;
  while (stack[k].module != target) k++;
  dhx_error_at(&use->name_loc, from->source, "import cycle: '%s' is still being loaded",
               p->modules[target]->name);
  size_t n = 1;
  for (int i = k; i <= depth; i++) n += strlen(p->modules[stack[i].module]->name) + 4;
  n += strlen(p->modules[target]->name);
  char *chain = dhx_xmalloc(n);
  chain[0] = '\0';
  for (int i = k; i <= depth; i++) {
    strcat(chain, p->modules[stack[i].module]->name);
    strcat(chain, " -> ");
  }
  strcat(chain, p->modules[target]->name);
  if (k < depth)  // a file that uses itself needs no chain
    dhx_note_at(&stack[k].use->name_loc, p->modules[stack[k].module]->source, "the cycle is %s",
                chain);
  free(chain);
}

// Each `use` costs file-system calls (stat, realpath, open); real modules have a handful, and
// a file of a million uses would take that many calls.
#define MAX_USES_PER_MODULE 1000

static void follow_uses(dhx_program *p, frame *stack, int depth) {
  int mi = stack[depth].module, nuses = 0;
  for (int i = 0; i < p->modules[mi]->nitems; i++) {
    dhx_module *from = p->modules[mi];  // re-read: loading may grow the table
    dhx_item *use = from->items[i];
    if (use->kind != ITEM_USE) continue;
    if (++nuses > MAX_USES_PER_MODULE) {
      dhx_error_at(&use->name_loc, from->source, "a module may use at most %d modules",
                   MAX_USES_PER_MODULE);
      return;
    }
    stack[depth].use = use;
    char *name = NULL;
    char *path = resolve(p, from, use, &name);
    if (!path) continue;
    char *key = canonical(path);
    int j = find_module(p, key);
    if (j >= 0) {
      free(key);
      bool loading = false;
      for (int k = 0; k <= depth; k++) loading |= stack[k].module == j;
      if (loading)
        report_cycle(p, stack, depth, j, use, from);
      else
        use->used = p->modules[j];
    } else if (depth + 1 >= DHX_MAX_USE_DEPTH) {
      free(key);
      dhx_error_at(&use->name_loc, from->source, "modules are nested too deeply (more than %d levels of 'use')",
                   DHX_MAX_USE_DEPTH);
    } else if ((j = load_file(p, path, name, key, use, from)) >= 0) {
      use->used = p->modules[j];
      stack[depth + 1] = (frame){j, NULL};
      follow_uses(p, stack, depth + 1);
    }
    free(path);
    free(name);
  }
}

// Layer and model names are global across modules: a second definition is an error.
typedef struct def_ref {
  const dhx_item *item;
  const dhx_module *module;
  int order;
} def_ref;

static int by_name(const void *a, const void *b) {
  const def_ref *x = a, *y = b;
  int c = strcmp(x->item->name, y->item->name);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void check_duplicates(dhx_program *p) {
  int n = 0;
  for (int i = 0; i < p->nmodules; i++)
    for (int j = 0; j < p->modules[i]->nitems; j++) {
      dhx_item_kind k = p->modules[i]->items[j]->kind;
      n += k == ITEM_LAYER || k == ITEM_MODEL_DEF;
    }
  if (n < 2) return;
  def_ref *defs = dhx_xmalloc((size_t)n * sizeof *defs);
  n = 0;
  for (int i = 0; i < p->nmodules; i++)
    for (int j = 0; j < p->modules[i]->nitems; j++) {
      const dhx_item *it = p->modules[i]->items[j];
      if (it->kind == ITEM_LAYER || it->kind == ITEM_MODEL_DEF)
        defs[n] = (def_ref){it, p->modules[i], n}, n++;
    }
  qsort(defs, (size_t)n, sizeof *defs, by_name);
  // `first` is the start of the current run of equal names (found as the runs go by: walking
  // back from each duplicate would be quadratic in a file that defines 'a' a million times).
  for (int i = 1, first = 0; i < n; i++) {
    if (strcmp(defs[i].item->name, defs[i - 1].item->name) != 0) {
      first = i;
      continue;
    }
    const def_ref *a = &defs[first], *b = &defs[i];
    if (a->module == b->module) {
      dhx_error_at(&b->item->name_loc, b->module->source, "'%s' is already defined", b->item->name);
      dhx_note_at(&a->item->name_loc, a->module->source, "the first definition of '%s' is here",
                  a->item->name);
    } else {
      // Across modules the error goes to the one nearer the main file: that is the user's.
      dhx_error_at(&a->item->name_loc, a->module->source, "'%s' is also defined in module '%s'",
                   a->item->name, b->module->name);
      dhx_note_at(&b->item->name_loc, b->module->source, "the other definition of '%s' is here",
                  b->item->name);
    }
  }
  free(defs);
}

// ---- public -----------------------------------------------------------------------------------

static dhx_program *new_program(const char *const *stdlib_dirs, int ndirs) {
  dhx_program *p = dhx_xmalloc(sizeof *p);
  memset(p, 0, sizeof *p);
  p->priv = dhx_xmalloc(sizeof(dhx_program_priv));
  memset(p->priv, 0, sizeof(dhx_program_priv));
  if (ndirs > 0) {
    p->stdlib_dirs = dhx_xmalloc((size_t)ndirs * sizeof *p->stdlib_dirs);
    for (int i = 0; i < ndirs; i++) p->stdlib_dirs[i] = dhx_xstrdup(stdlib_dirs[i]);
    p->nstdlib_dirs = ndirs;
  }
  return p;
}

// The main module is modules[0]: loads what it uses and checks the definitions.
static dhx_program *load_uses(dhx_program *p) {
  p->main = p->modules[0];
  frame *stack = dhx_xmalloc(DHX_MAX_USE_DEPTH * sizeof *stack);
  stack[0] = (frame){0, NULL};
  follow_uses(p, stack, 0);
  free(stack);
  check_duplicates(p);
  return p;
}

dhx_program *dhx_load_program(const char *path, const char *const *stdlib_dirs, int ndirs) {
  dhx_program *p = new_program(stdlib_dirs, ndirs);
  if (load_file(p, path, path, canonical(path), NULL, NULL) < 0) {
    dhx_program_free(p);
    return NULL;
  }
  return load_uses(p);
}

dhx_program *dhx_load_program_source(const char *path, const char *source, long len,
                                     const char *const *stdlib_dirs, int ndirs) {
  dhx_program *p = new_program(stdlib_dirs, ndirs);
  add_source(p, path, path, canonical(path), source, len);
  return load_uses(p);
}

void dhx_program_free(dhx_program *p) {
  if (!p) return;
  dhx_program_priv *pv = priv(p);
  for (int i = 0; i < pv->nset_files; i++) dhx_unregister_source(pv->set_files[i]);
  free(pv->set_files);
  for (int i = 0; i < p->nmodules; i++) {
    dhx_module_free(p->modules[i]);
    free(pv->keys[i]);
  }
  free(pv->keys);
  free(pv);
  free(p->modules);
  for (int i = 0; i < p->nstdlib_dirs; i++) free(p->stdlib_dirs[i]);
  free(p->stdlib_dirs);
  free(p);
}

const dhx_item *dhx_find_definition(const dhx_program *p, const char *name) {
  for (int i = 0; i < p->nmodules; i++)
    for (int j = 0; j < p->modules[i]->nitems; j++) {
      const dhx_item *it = p->modules[i]->items[j];
      if ((it->kind == ITEM_LAYER || it->kind == ITEM_MODEL_DEF) && strcmp(it->name, name) == 0)
        return it;
    }
  return NULL;
}
