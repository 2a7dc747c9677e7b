// config.c — the typed configuration: data, cluster, schedule and train of the main module.
//
// Every field is checked against the list of known names (unknown ones are errors, with a
// "did you mean" when a known name is close), given its type, or defaulted. Everything the
// user wrote is checked even after a first error, so one run reports all the mistakes.
#include <limits.h>
#include <math.h>  // HUGE_VAL
#include <stdio.h>
#include <stdlib.h>  // realpath
#include <string.h>
#include <unistd.h>  // getcwd

#include "internal.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

// ---- data -------------------------------------------------------------------------------------

// Drops "." and "" components and folds "name/.." in an absolute path, in place. The folder
// a relative path starts from has its links resolved already, so this gives the file that
// opening the joined path would.
static void normalize_path(char *path) {
  char *out = path + 1;  // path[0] is '/'; out never passes the component being read
  for (char *in = path + 1, *next; in; in = next) {
    char *end = strchr(in, '/');
    size_t n = end ? (size_t)(end - in) : strlen(in);
    next = end ? end + 1 : NULL;
    if (n == 2 && in[0] == '.' && in[1] == '.') {
      if (out > path + 1) {  // back to the start of the previous component
        out--;
        while (out > path + 1 && out[-1] != '/') out--;
      }
    } else if (n && !(n == 1 && in[0] == '.')) {
      memmove(out, in, n);
      out += n;
      *out++ = '/';
    }
  }
  if (out > path + 1) out--;  // no trailing slash
  *out = '\0';
}

// The folder relative data paths start from: the working directory for a --set (as any path
// on a command line), the folder of the file that wrote the path otherwise (so a program
// means the same data wherever dhxc runs). Written into dir; false when it cannot be found.
static bool base_folder(const dhx_loc *written, char *dir, size_t size) {
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return false;
  if (!written->file || dhx_set_index(written->file))
    return snprintf(dir, size, "%s", cwd) < (int)size;
  char file_dir[PATH_MAX];
  snprintf(file_dir, sizeof file_dir, "%s", written->file);
  char *slash = strrchr(file_dir, '/');
  if (!slash) return snprintf(dir, size, "%s", cwd) < (int)size;
  slash[slash == file_dir] = '\0';  // "/x.dhx" lives in "/"
  char *real = realpath(file_dir, NULL);
  int n = real ? snprintf(dir, size, "%s", real)
               : file_dir[0] == '/' ? snprintf(dir, size, "%s", file_dir)
                                    : snprintf(dir, size, "%s/%s", cwd, file_dir);
  free(real);
  return n < (int)size;
}

// A data path as the plan stores it: absolute, and "" stays "" (no data). NULL after an error.
static char *resolve_data_path(const dhx_program *p, const dhx_expr *v) {
  char *path = v->str;
  if (!path[0] || path[0] == '/') return path;
  char dir[PATH_MAX], full[2 * PATH_MAX];
  if (!base_folder(&v->loc, dir, sizeof dir)) {
    dhx_error_at(&v->loc, src(&v->loc), "cannot resolve '%s': the folder it is relative to is "
                 "not known", path);
    return NULL;
  }
  snprintf(full, sizeof full, "%s/%s", dir, path);
  normalize_path(full);
  return dhx_arena_strdup(p->main->arena, full);
}

static void read_data(const dhx_program *p, const dhx_item *it, dhx_config *cfg) {
  static const char *const known[] = {"train", "val", NULL};
  const dhx_loc *seen[2] = {0};
  for (int i = 0; i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'data'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    char **out = k == 0 ? &cfg->train_path : &cfg->val_path;
    if (v && dhx_cfg_string(v, f->name, "a string (the path of a token shard)", out)) {
      *out = resolve_data_path(p, v);
      *(k == 0 ? &cfg->train_path_loc : &cfg->val_path_loc) = v->loc;
    }
  }
}

// ---- train ------------------------------------------------------------------------------------

static void read_betas(const dhx_expr *e, dhx_adamw *o) {
  double b[2];
  bool ok = e->kind == EXPR_TUPLE && e->nargs == 2;
  for (int i = 0; ok && i < 2; i++) {
    dhx_qty q = dhx_cfg_fold(e->args[i].value);
    ok = q.ok && !q.unit && q.v >= 0 && q.v < 1;
    b[i] = q.v;
  }
  if (!ok) {
    char got[64];
    dhx_error_at(&e->loc, src(&e->loc), "'betas' must be two numbers in [0, 1), as in (0.9, 0.95), got %s",
                 dhx_cfg_got(e, got, sizeof got));
    return;
  }
  o->beta1 = b[0];
  o->beta2 = b[1];
}

static void read_adamw_arg(void *ctx, int k, const dhx_arg *a) {
  dhx_adamw *o = ctx;
  const dhx_expr *v = a->value;
  switch (k) {
    case 0: dhx_cfg_number(v, "lr", "a positive number", 0, true, HUGE_VAL, false, &o->lr); break;
    case 1: read_betas(v, o); break;
    case 2: dhx_cfg_number(v, "eps", "a positive number", 0, true, HUGE_VAL, false, &o->eps); break;
    case 3:
      dhx_cfg_number(v, "weight_decay", "a non-negative number", 0, false, HUGE_VAL, false,
                     &o->weight_decay);
      break;
    case 4:
      dhx_cfg_number(v, "clip", "a non-negative number (0 turns clipping off)", 0, false, HUGE_VAL,
                     false, &o->grad_clip);
      break;
  }
}

static void read_optimizer(const dhx_field *f, dhx_config *cfg) {
  static const char *const known[] = {"lr", "betas", "eps", "weight_decay", "clip", NULL};
  const dhx_expr *v = dhx_cfg_value_of(f);
  if (!v) return;
  if (v->kind != EXPR_CALL) {
    char got[64];
    dhx_error_at(&v->loc, src(&v->loc), "'optimizer' must be a call such as adamw(lr: 3e-4), got %s",
                 dhx_cfg_got(v, got, sizeof got));
    return;
  }
  if (strcmp(v->str, "adamw") != 0) {
    dhx_loc at = dhx_cfg_callee_loc(v);
    dhx_error_at(&at, src(&at), "unknown optimizer '%s'; this build has adamw(...)", v->str);
    return;
  }
  cfg->optimizer_loc = v->loc;
  dhx_cfg_read_args(v->args, v->nargs, "'adamw(...)'", "adamw(lr: 3e-4)", known, read_adamw_arg,
                    &cfg->adamw);
}

// The train fields, in the order of read_train's list (for the checks between them).
enum { T_MICRO_BATCH, T_GLOBAL_BATCH, T_STEPS, T_SEED, T_OPTIMIZER, T_WARMUP, T_LR_MIN,
       T_VAL_EVERY, T_VAL_BATCHES, T_LOG_EVERY, T_CHECKPOINT_EVERY, T_PRECISION,
       T_SKIP_NONFINITE, T_FIELDS };

// Reads the train block; written[k] is the value of field k when it was read without error.
static void read_train(const dhx_item *it, dhx_config *cfg, const dhx_expr **written) {
  static const char *const known[] = {"micro_batch", "global_batch", "steps", "seed", "optimizer",
                                      "warmup", "lr_min", "val_every", "val_batches", "log_every",
                                      "checkpoint_every", "precision", "skip_nonfinite", NULL};
  static const char *const precisions[] = {"f32", "bf16", NULL};
  const dhx_loc *seen[T_FIELDS] = {0};
  for (int i = 0; i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'train'", known, seen);
    if (k == T_OPTIMIZER) {
      read_optimizer(f, cfg);
      continue;
    }
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    int errors = dhx_diag.errors;
    switch (k) {
      case 0:
        if (dhx_cfg_int(v, "micro_batch", 1, INT_MAX, &cfg->micro_batch))
          cfg->micro_batch_loc = v->loc;
        break;
      case 1: dhx_cfg_int(v, "global_batch", 1, INT_MAX, &cfg->global_batch); break;
      case 2: dhx_cfg_int(v, "steps", 1, INT_MAX, &cfg->steps); break;
      case 3: dhx_cfg_u64(v, "seed", &cfg->seed); break;
      case 5: dhx_cfg_int(v, "warmup", 0, INT_MAX, &cfg->warmup_steps); break;
      case 6:
        dhx_cfg_number(v, "lr_min", "a ratio of lr between 0 and 1", 0, false, 1, false,
                       &cfg->lr_min_ratio);
        break;
      case 7: dhx_cfg_int(v, "val_every", 0, INT_MAX, &cfg->val_every); break;
      case 8: dhx_cfg_int(v, "val_batches", 1, INT_MAX, &cfg->val_batches); break;
      case 9: dhx_cfg_int(v, "log_every", 1, INT_MAX, &cfg->log_every); break;
      case 10: dhx_cfg_int(v, "checkpoint_every", 0, INT_MAX, &cfg->checkpoint_every); break;
      case 11: {
        int c = dhx_cfg_choice(v, "precision", precisions);
        if (c >= 0) {
          cfg->precision = c == 0 ? DHX_PREC_F32 : DHX_PREC_BF16;
          cfg->precision_loc = v->loc;
        }
        break;
      }
      case 12: dhx_cfg_bool(v, "skip_nonfinite", &cfg->skip_nonfinite); break;
    }
    if (dhx_diag.errors == errors) written[k] = v;
  }
}

// ---- the whole configuration --------------------------------------------------------------------

static void defaults(dhx_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->cluster_cpu = true;
  cfg->dp = cfg->tp = cfg->pp = cfg->virtual_stages = 1;
  cfg->micro_batch = 4;
  cfg->steps = 100;
  cfg->seed = 1;
  cfg->adamw = (dhx_adamw){.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                           .weight_decay = 0.1, .grad_clip = 1.0};
  cfg->lr_min_ratio = 1.0;
  cfg->val_batches = 4;
  cfg->log_every = 1;
  cfg->offload_stride = 2;
  cfg->offload_subgroup = 100000000;
  cfg->seq_buckets = 16;
  cfg->seq_time_limit = 10;
}

// The one item of a kind; a second is an error with a note at the first.
static const dhx_item *single(const dhx_item *first, const dhx_item *it, const char *what) {
  if (!first) return it;
  dhx_error_at(&it->name_loc, src(&it->name_loc), "%s", what);
  dhx_note_at(&first->name_loc, src(&first->name_loc), "the first one is here");
  return first;
}

// Where a batch error goes: the value a --set changed last among global_batch, micro_batch
// and dp (what the user just tried), else global_batch in the file.
static const dhx_loc *batch_error_site(const dhx_config *cfg, const dhx_loc *global_batch) {
  const dhx_loc *at = global_batch;
  const dhx_loc *others[] = {&cfg->micro_batch_loc, &cfg->layout_locs[0]};
  for (int i = 0; i < 2; i++)
    if (dhx_set_index(others[i]->file) > dhx_set_index(at->file)) at = others[i];
  return at;
}

// What would make the batches divide, with the numbers: a micro_batch that keeps global_batch
// (the same training, split differently), or the global_batch multiples that fit.
static void batch_hint(const dhx_config *cfg, long long per_step) {
  int m = 0;  // the largest divisor of global_batch / dp up to micro_batch
  int q = cfg->global_batch % cfg->dp == 0 ? cfg->global_batch / cfg->dp : 0;
  for (int d = 1; q && (long long)d * d <= q; d++) {
    if (q % d != 0) continue;
    if (d <= cfg->micro_batch && d > m) m = d;
    if (q / d <= cfg->micro_batch && q / d > m) m = q / d;
  }
  long long next = (cfg->global_batch / per_step + 1) * per_step;
  if (m)
    dhx_note_at(NULL, NULL, "micro_batch %d keeps global_batch %d with dp = %d (--set "
                "train.micro_batch=%d); or make global_batch a multiple of %lld, such as %lld", m,
                cfg->global_batch, cfg->dp, m, per_step, next);
  else
    dhx_note_at(NULL, NULL, "make global_batch a multiple of %lld, such as %lld", per_step, next);
}

static void check_batches(dhx_config *cfg, const dhx_expr *global_batch) {
  long long per_step = (long long)cfg->micro_batch * cfg->dp;
  if (!global_batch) {
    if (per_step > INT_MAX) {
      dhx_error_at(&cfg->train_loc, src(&cfg->train_loc),
                   "micro_batch * dp = %d * %d is too large", cfg->micro_batch, cfg->dp);
      return;
    }
    cfg->global_batch = (int)per_step;
    return;
  }
  if (cfg->global_batch % per_step == 0) return;
  const dhx_loc *gb = &global_batch->loc, *at = batch_error_site(cfg, gb);
  dhx_error_at(at, src(at), "global_batch %d is not a multiple of micro_batch * dp = %d * %d = "
               "%lld", cfg->global_batch, cfg->micro_batch, cfg->dp, per_step);
  if (at != gb && !dhx_note_set_value(gb, "train.global_batch"))
    dhx_note_at(gb, src(gb), "global_batch is %d here", cfg->global_batch);
  if (at != &cfg->micro_batch_loc) dhx_note_set_value(&cfg->micro_batch_loc, "train.micro_batch");
  if (at != &cfg->layout_locs[0]) dhx_note_set_value(&cfg->layout_locs[0], "schedule.parallel.dp");
  batch_hint(cfg, per_step);
}

// ---- training that would not do what it says -------------------------------------------------

// Where a warning about two fields goes: the one a --set changed last (what the user just
// tried), else the first that is written. The other gets a note when a --set gave it, or when
// the warning is at a --set (so the file's value is shown too).
typedef struct field_ref {
  const dhx_expr *v;  // NULL when defaulted
  const char *path;   // "train.steps"
} field_ref;

static int set_index_of(field_ref r) { return r.v ? dhx_set_index(r.v->loc.file) : 0; }

static void warn_two(const dhx_config *cfg, field_ref a, field_ref b, const char *msg) {
  field_ref at = set_index_of(b) > set_index_of(a) || !a.v ? b : a, other = at.v == a.v ? b : a;
  const dhx_loc *loc = at.v ? &at.v->loc : &cfg->train_loc;
  dhx_warning_at(loc, src(loc), "%s", msg);
  char got[64];
  if (other.v && !dhx_note_set_value(&other.v->loc, other.path) && set_index_of(at))
    dhx_note_at(&other.v->loc, src(&other.v->loc), "'%s' is %s here", other.path,
                dhx_cfg_got(other.v, got, sizeof got));
}

static void warn_degenerate_training(const dhx_config *cfg, const dhx_expr *const *w) {
  char msg[512];
  field_ref steps = {w[T_STEPS], "train.steps"};
  if (cfg->warmup_steps > cfg->steps) {
    snprintf(msg, sizeof msg, "warmup (%d steps) is longer than the run (%d steps): the learning "
             "rate never reaches lr", cfg->warmup_steps, cfg->steps);
    warn_two(cfg, (field_ref){w[T_WARMUP], "train.warmup"}, steps, msg);
  }
  if (cfg->checkpoint_every > cfg->steps) {
    snprintf(msg, sizeof msg, "checkpoint_every (%d steps) is longer than the run (%d steps): no "
             "periodic checkpoint is written", cfg->checkpoint_every, cfg->steps);
    warn_two(cfg, (field_ref){w[T_CHECKPOINT_EVERY], "train.checkpoint_every"}, steps, msg);
  }
  if (cfg->val_every > 0 && !(cfg->val_path && cfg->val_path[0])) {
    snprintf(msg, sizeof msg, "val_every is %d, but 'data' names no 'val' shard: the validation "
             "loss is never measured (unless dhxrun --val gives one)", cfg->val_every);
    warn_two(cfg, (field_ref){w[T_VAL_EVERY], "train.val_every"}, (field_ref){0}, msg);
  }
  if (w[T_VAL_BATCHES] && cfg->val_every == 0)
    warn_two(cfg, (field_ref){w[T_VAL_BATCHES], "train.val_batches"},
             (field_ref){w[T_VAL_EVERY], "train.val_every"},
             "val_batches has no effect: val_every is 0, so the model is never evaluated");
  double decay = cfg->adamw.lr * cfg->adamw.weight_decay;
  if (decay >= 1) {  // AdamW multiplies each decayed weight by 1 - lr * weight_decay per step
    snprintf(msg, sizeof msg, "lr * weight_decay = %g * %g = %g: each step multiplies the decayed "
             "weights by 1 - %g = %g, which wipes them out", cfg->adamw.lr,
             cfg->adamw.weight_decay, decay, decay, 1 - decay);
    const dhx_loc *loc = cfg->optimizer_loc.file ? &cfg->optimizer_loc : &cfg->train_loc;
    dhx_warning_at(loc, src(loc), "%s", msg);
  }
}

bool dhx_read_config(const dhx_program *p, dhx_config *cfg) {
  defaults(cfg);
  int errors = dhx_diag.errors;
  const dhx_module *m = p->main;
  const dhx_item *data = NULL, *cluster = NULL, *schedule = NULL, *train = NULL;
  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    switch (it->kind) {
      case ITEM_MODEL_INST:
        if (cfg->model_inst) {
          dhx_error_at(&it->name_loc, src(&it->name_loc),
                       "a program trains one model, but '%s' is a second model instance", it->name);
          dhx_note_at(&cfg->model_inst->name_loc, src(&cfg->model_inst->name_loc),
                      "the first is '%s'", cfg->model_inst->name);
        } else {
          cfg->model_inst = it;
        }
        break;
      case ITEM_DATA: data = single(data, it, "a second 'data' block"); break;
      case ITEM_CLUSTER: cluster = single(cluster, it, "a second 'cluster'"); break;
      case ITEM_SCHEDULE: schedule = single(schedule, it, "a second 'schedule' block"); break;
      case ITEM_TRAIN: train = single(train, it, "a second 'train' block"); break;
      default: break;
    }
  }
  dhx_check_cluster_items(p);
  if (data && data->fields) read_data(p, data, cfg);
  if (cluster) dhx_read_cluster(p, cluster, cfg);
  if (schedule && schedule->fields) {
    cfg->schedule_loc = schedule->name_loc;
    dhx_read_schedule(schedule, cfg);  // moves schedule_loc to `parallel` when there is one
  }
  const dhx_expr *written[T_FIELDS] = {0};
  if (train && train->fields) {
    cfg->train_loc = train->name_loc;
    read_train(train, cfg, written);
  }
  if (!cfg->precision_loc.file) cfg->precision = cfg->cluster_cpu ? DHX_PREC_F32 : DHX_PREC_BF16;
  // The overlap search is not lowered in a pipeline (compile.c, dhx_unlowered): unless asked
  // for by name there, paired strands run free, as `search: none` says.
  if (!cfg->strands_search_loc.file)
    cfg->strands_search = cfg->pp > 1 ? DHX_SEARCH_NONE : DHX_SEARCH_DP;
  if (dhx_diag.errors == errors) check_batches(cfg, written[T_GLOBAL_BATCH]);
  if (dhx_diag.errors == errors) dhx_check_schedule_fields(cfg);
  if (dhx_diag.errors == errors) warn_degenerate_training(cfg, written);
  return dhx_diag.errors == errors;
}
