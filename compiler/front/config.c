// config.c — the typed configuration: data, cluster, schedule and train of the main module.
//
// Every field is checked against the list of known names (unknown ones are errors, with a
// "did you mean" when a known name is close), given its type, or defaulted. Everything the
// user wrote is checked even after a first error, so one run reports all the mistakes.
#include <limits.h>
#include <math.h>  // HUGE_VAL
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

// ---- data -------------------------------------------------------------------------------------

static void read_data(const dhx_item *it, dhx_config *cfg) {
  static const char *const known[] = {"train", "val", NULL};
  const dhx_loc *seen[2] = {0};
  for (int i = 0; i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'data'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    dhx_cfg_string(v, f->name, "a string (the path of a token shard)",
                   k == 0 ? &cfg->train_path : &cfg->val_path);
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
  dhx_cfg_read_args(v->args, v->nargs, "'adamw(...)'", "adamw(lr: 3e-4)", known, read_adamw_arg,
                    &cfg->adamw);
}

static const dhx_expr *read_train(const dhx_item *it, dhx_config *cfg) {
  static const char *const known[] = {"micro_batch", "global_batch", "steps", "seed", "optimizer",
                                      "warmup", "lr_min", "val_every", "val_batches", "log_every",
                                      "checkpoint_every", "precision", NULL};
  static const char *const precisions[] = {"f32", "bf16", NULL};
  const dhx_loc *seen[12] = {0};
  const dhx_expr *global_batch = NULL;
  for (int i = 0; i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'train'", known, seen);
    if (k == 4) {
      read_optimizer(f, cfg);
      continue;
    }
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    switch (k) {
      case 0: dhx_cfg_int(v, "micro_batch", 1, INT_MAX, &cfg->micro_batch); break;
      case 1:
        if (dhx_cfg_int(v, "global_batch", 1, INT_MAX, &cfg->global_batch)) global_batch = v;
        break;
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
    }
  }
  return global_batch;
}

// ---- the whole configuration --------------------------------------------------------------------

static void defaults(dhx_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->cluster_cpu = true;
  cfg->dp = cfg->tp = cfg->pp = 1;
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
  if (cfg->global_batch % per_step != 0)
    dhx_error_at(&global_batch->loc, src(&global_batch->loc),
                 "global_batch %d is not a multiple of micro_batch * dp = %d * %d = %lld",
                 cfg->global_batch, cfg->micro_batch, cfg->dp, per_step);
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
  if (data && data->fields) read_data(data, cfg);
  if (cluster) dhx_read_cluster(p, cluster, cfg);
  if (schedule && schedule->fields) {
    cfg->schedule_loc = schedule->name_loc;
    dhx_read_schedule(schedule, cfg);  // moves schedule_loc to `parallel` when there is one
  }
  const dhx_expr *global_batch = NULL;
  if (train && train->fields) {
    cfg->train_loc = train->name_loc;
    global_batch = read_train(train, cfg);
  }
  if (!cfg->precision_loc.file) cfg->precision = cfg->cluster_cpu ? DHX_PREC_F32 : DHX_PREC_BF16;
  if (dhx_diag.errors == errors) check_batches(cfg, global_batch);
  if (dhx_diag.errors == errors) dhx_check_schedule_fields(cfg);
  return dhx_diag.errors == errors;
}
