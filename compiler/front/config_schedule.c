// config_schedule.c — the schedule block and what its parts require of each other.
//
//   schedule {
//     parallel { dp: 4, tp: 8, pp: 2, sp: on, zero: 1 }
//     strands  { pair: on, search: dp, fold: w }    # DHelix; search: dp | greedy | none (off)
//     compress { params: qwd(bits: 4, group: 2048),                    # SDP4Bit
//                grads: tlq(intra: 8, inter: 4, group: 128, hadamard: 32) }
//     offload  { optimizer: on, stride: 2, subgroup: 100000000 }       # Deep Optimizer States
//     sequence { adaptive: on, max_group: 32, buckets: 16, time_limit: 10 s }  # FlexSP
//   }
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

static bool power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// ---- parallel ---------------------------------------------------------------------------------

static const char *const parallel_fields[] = {"dp",      "tp",     "pp", "sp", "zero",
                                              "virtual", "stages", NULL};

// stages: (4, 5, 5, 2): layers per pipeline chunk, each a positive integer; or auto (the
// default) or equal.
static void read_stage_layers(const dhx_expr *v, dhx_config *cfg) {
  cfg->nstage_layers = 0;
  cfg->stages = DHX_STAGES_BY_COST;
  if (v->kind == EXPR_IDENT && strcmp(v->str, "auto") == 0) return;
  if (v->kind == EXPR_IDENT && strcmp(v->str, "equal") == 0) {
    cfg->stages = DHX_STAGES_EQUAL;
    return;
  }
  if (v->kind != EXPR_TUPLE || v->nargs < 1) {
    dhx_error_at(&v->loc, src(&v->loc), "'stages' gives the layers of each pipeline stage, as in "
                 "(4, 5, 5, 2), or is auto (balanced by an estimate of their cost, the default) "
                 "or equal (the same number of layers on each)");
    return;
  }
  cfg->stages = DHX_STAGES_GIVEN;
  if (v->nargs > DHX_MAX_STAGE_CHUNKS) {
    dhx_error_at(&v->loc, src(&v->loc), "'stages' has %d entries; at most %d", v->nargs,
                 DHX_MAX_STAGE_CHUNKS);
    return;
  }
  for (int i = 0; i < v->nargs; i++)
    if (dhx_cfg_int(v->args[i].value, "stages", 1, 1 << 20, &cfg->stage_layers[i]))
      cfg->nstage_layers++;
  if (cfg->nstage_layers != v->nargs) {  // reported; not used
    cfg->nstage_layers = 0;
    cfg->stages = DHX_STAGES_BY_COST;
  }
}

static void read_parallel(const dhx_fields *fs, dhx_config *cfg) {
  const dhx_loc *seen[7] = {0};
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *f = &fs->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'parallel'", parallel_fields, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    cfg->layout_locs[k] = v->loc;
    switch (k) {
      case 0: dhx_cfg_int(v, "dp", 1, 1 << 20, &cfg->dp); break;
      case 1: dhx_cfg_int(v, "tp", 1, 1 << 20, &cfg->tp); break;
      case 2: dhx_cfg_int(v, "pp", 1, 1 << 20, &cfg->pp); break;
      case 3: dhx_cfg_bool(v, "sp", &cfg->sp); break;
      case 4:
        if (dhx_cfg_int(v, "zero", 0, INT_MAX, &cfg->zero) && cfg->zero > 3) {
          char got[64];
          dhx_error_at(&v->loc, src(&v->loc), "'zero' must be 0, 1, 2 or 3, got %s",
                       dhx_cfg_got(v, got, sizeof got));
        }
        break;
      case 5: dhx_cfg_int(v, "virtual", 1, 1 << 10, &cfg->virtual_stages); break;
      case 6: read_stage_layers(v, cfg); break;
    }
  }
}

// ---- strands ----------------------------------------------------------------------------------

static void read_strands(const dhx_fields *fs, dhx_config *cfg) {
  static const char *const known[] = {"pair", "search", "fold", NULL};
  static const char *const searches[] = {"dp", "greedy", "none", "off", NULL};
  static const char *const folds[] = {"off", "w", NULL};
  const dhx_loc *seen[3] = {0};
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *f = &fs->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'strands'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    int c;
    switch (k) {
      case 0: dhx_cfg_bool(v, "pair", &cfg->strands_pair); break;
      case 1:
        if ((c = dhx_cfg_choice(v, "search", searches)) >= 0) {
          cfg->strands_search = c == 0 ? DHX_SEARCH_DP : c == 1 ? DHX_SEARCH_GREEDY : DHX_SEARCH_NONE;
          cfg->strands_search_loc = v->loc;
        }
        break;
      case 2:
        if ((c = dhx_cfg_choice(v, "fold", folds)) >= 0) cfg->fold = c == 1 ? DHX_FOLD_W : DHX_FOLD_OFF;
        break;
    }
  }
}

// ---- compress ---------------------------------------------------------------------------------

static void read_bits(const dhx_expr *v, const char *name, int *out) {
  if (!dhx_cfg_int(v, name, 1, 64, out)) return;
  if (*out != 4 && *out != 8) {
    char got[64];
    dhx_error_at(&v->loc, src(&v->loc), "'%s' must be 4 or 8 bits, got %s", name,
                 dhx_cfg_got(v, got, sizeof got));
  }
}

static void read_group(const dhx_expr *v, int *out) {
  if (!dhx_cfg_int(v, "group", 1, 1 << 24, out)) return;
  if (!power_of_two(*out)) {
    char got[64];
    dhx_error_at(&v->loc, src(&v->loc), "'group' must be a power of two, got %s",
                 dhx_cfg_got(v, got, sizeof got));
  }
}

static void read_qwd_arg(void *ctx, int k, const dhx_arg *a) {
  dhx_config *cfg = ctx;
  if (k == 0) {
    read_bits(a->value, "bits", &cfg->qwd_bits);
  } else {
    read_group(a->value, &cfg->qwd_group);
    if (cfg->qwd_group < 8)  // the kernels pack whole 32-bit words of codes per group
      dhx_error_at(&a->value->loc, src(&a->value->loc), "qwd's 'group' must be at least 8 "
                   "(a group fills whole 32-bit words of codes), got %d", cfg->qwd_group);
  }
}

typedef struct tlq_ctx {
  dhx_config *cfg;
  const dhx_expr *hadamard, *group;
} tlq_ctx;

static void read_tlq_arg(void *ctx, int k, const dhx_arg *a) {
  tlq_ctx *t = ctx;
  dhx_config *cfg = t->cfg;
  const dhx_expr *v = a->value;
  switch (k) {
    case 0: read_bits(v, "intra", &cfg->tlq_intra); break;
    case 1: read_bits(v, "inter", &cfg->tlq_inter); break;
    case 2:
      t->group = v;
      read_group(v, &cfg->tlq_group);
      break;
    case 3:
      t->hadamard = v;
      if (v->kind == EXPR_BOOL && !v->boolean) {
        cfg->tlq_hadamard = 0;
      } else if (dhx_cfg_int(v, "hadamard", 1, 1 << 16, &cfg->tlq_hadamard) &&
                 !power_of_two(cfg->tlq_hadamard)) {
        char got[64];
        dhx_error_at(&v->loc, src(&v->loc), "'hadamard' must be a power of two (the transform "
                     "size) or off, got %s", dhx_cfg_got(v, got, sizeof got));
      }
      break;
  }
}

// `params: qwd(...)`, `grads: tlq(...)`, or `off`.
static const dhx_expr *compress_call(const dhx_expr *v, const char *field, const char *callee,
                                     const char *example) {
  if (v->kind == EXPR_BOOL && !v->boolean) return NULL;
  if (v->kind == EXPR_CALL && strcmp(v->str, callee) == 0) return v;
  char got[64];
  dhx_error_at(&v->loc, src(&v->loc), "'%s' must be %s or off, got %s", field, example,
               dhx_cfg_got(v, got, sizeof got));
  return NULL;
}

static void read_compress(const dhx_fields *fs, dhx_config *cfg) {
  static const char *const known[] = {"params", "grads", NULL};
  const dhx_loc *seen[2] = {0};
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *f = &fs->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'compress'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    if (k == 0) {
      const dhx_expr *c = compress_call(v, "params", "qwd", "qwd(bits: 4, group: 2048)");
      if (!c) continue;
      static const char *const args[] = {"bits", "group", NULL};
      cfg->qwd_bits = 4;
      cfg->qwd_group = 2048;
      cfg->qwd_loc = f->loc;
      dhx_cfg_read_args(c->args, c->nargs, "'qwd(...)'", "qwd(bits: 4, group: 2048)", args,
                        read_qwd_arg, cfg);
    } else {
      const dhx_expr *c = compress_call(v, "grads", "tlq", "tlq(intra: 8, inter: 4)");
      if (!c) continue;
      static const char *const args[] = {"intra", "inter", "group", "hadamard", NULL};
      cfg->tlq_intra = 8;
      cfg->tlq_inter = 4;
      cfg->tlq_group = 128;
      cfg->tlq_hadamard = 32;
      cfg->tlq_loc = c->loc;
      tlq_ctx t = {.cfg = cfg};
      int errors = dhx_diag.errors;
      dhx_cfg_read_args(c->args, c->nargs, "'tlq(...)'", "tlq(intra: 8, inter: 4)", args,
                        read_tlq_arg, &t);
      if (dhx_diag.errors == errors && cfg->tlq_hadamard > cfg->tlq_group) {
        const dhx_expr *at = t.hadamard ? t.hadamard : c;
        dhx_error_at(&at->loc, src(&at->loc), "a Hadamard transform of %d does not fit in "
                     "quantization groups of %d", cfg->tlq_hadamard, cfg->tlq_group);
      }
    }
  }
}

// ---- offload and sequence ---------------------------------------------------------------------

static void read_offload(const dhx_fields *fs, dhx_config *cfg) {
  static const char *const known[] = {"optimizer", "stride", "subgroup", NULL};
  const dhx_loc *seen[3] = {0};
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *f = &fs->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'offload'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    int sub = 0;
    switch (k) {
      case 0: dhx_cfg_bool(v, "optimizer", &cfg->offload_optimizer); break;
      case 1: dhx_cfg_int(v, "stride", 1, 1 << 20, &cfg->offload_stride); break;
      case 2:
        if (dhx_cfg_int(v, "subgroup", 1, INT_MAX, &sub)) cfg->offload_subgroup = sub;
        break;
    }
  }
}

static void read_sequence(const dhx_fields *fs, dhx_config *cfg) {
  static const char *const known[] = {"adaptive", "max_group", "buckets", "time_limit", NULL};
  const dhx_loc *seen[4] = {0};
  for (int i = 0; i < fs->n; i++) {
    const dhx_field *f = &fs->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'sequence'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) continue;
    switch (k) {
      case 0: dhx_cfg_bool(v, "adaptive", &cfg->seq_adaptive); break;
      case 1:
        if (dhx_cfg_int(v, "max_group", 1, 1 << 20, &cfg->seq_max_group) &&
            !power_of_two(cfg->seq_max_group)) {
          char got[64];
          dhx_error_at(&v->loc, src(&v->loc), "'max_group' must be a power of two, got %s",
                       dhx_cfg_got(v, got, sizeof got));
        }
        break;
      case 2: dhx_cfg_int(v, "buckets", 1, 4096, &cfg->seq_buckets); break;
      case 3: dhx_cfg_quantity(v, "time_limit", DHX_UNIT_TIME, "10 s", &cfg->seq_time_limit); break;
    }
  }
}

// ---- the block --------------------------------------------------------------------------------

void dhx_read_schedule(const dhx_item *it, dhx_config *cfg) {
  static const char *const known[] = {"parallel", "strands", "compress", "offload", "sequence", NULL};
  static const char *const examples[] = {"parallel { dp: 2 }", "strands { pair: on }",
                                         "compress { grads: tlq(intra: 8, inter: 4) }",
                                         "offload { optimizer: on }", "sequence { adaptive: on }"};
  typedef void (*reader)(const dhx_fields *, dhx_config *);
  static const reader readers[] = {read_parallel, read_strands, read_compress, read_offload,
                                   read_sequence};
  dhx_loc *locs[] = {&cfg->parallel_loc, &cfg->strands_loc, &cfg->compress_loc,
                     &cfg->offload_loc, &cfg->sequence_loc};
  const dhx_loc *seen[5] = {0};
  for (int i = 0; i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    // `schedule { dp: 2 }` is a common slip for `schedule { parallel { dp: 2 } }`.
    const char *hint = NULL;
    for (int j = 0; parallel_fields[j]; j++)
      if (strcmp(f->name, parallel_fields[j]) == 0) hint = parallel_fields[j];
    if (hint) {
      dhx_error_at(&f->loc, src(&f->loc),
                   "unknown field '%s' in 'schedule'; did you mean 'parallel { %s: ... }'?", hint, hint);
      continue;
    }
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'schedule'", known, seen);
    if (k < 0) continue;
    const dhx_fields *b = dhx_cfg_block_of(f, examples[k]);
    if (!b) continue;
    *locs[k] = f->loc;
    readers[k](b, cfg);
  }
  if (cfg->parallel_loc.file) cfg->schedule_loc = cfg->parallel_loc;
}

// ---- checks between fields --------------------------------------------------------------------

void dhx_note_layout_overrides(const dhx_config *cfg) {
  static const char *const names[] = {"dp", "tp", "pp", "sp", "zero", "virtual", "stages"};
  const dhx_loc *block = cfg->parallel_loc.file ? &cfg->parallel_loc : &cfg->schedule_loc;
  for (int i = 0; i < 7; i++) {
    const dhx_loc *v = &cfg->layout_locs[i];
    if (!v->file || (block->file && strcmp(v->file, block->file) == 0)) continue;
    char path[64];
    snprintf(path, sizeof path, "schedule.parallel.%s", names[i]);
    if (!dhx_note_set_value(v, path)) dhx_note_at(v, src(v), "%s is set here", names[i]);
  }
}

static const dhx_loc *first_loc(const dhx_loc *a, const dhx_loc *b) { return a->file ? a : b; }

// The nodes of a cpu cluster whose rank count comes from the layout.
static void check_cpu_nodes(const dhx_config *cfg, long long ranks) {
  if (!cfg->cluster_cpu || !cfg->per_node || cfg->cluster_ranks || ranks % cfg->per_node == 0)
    return;
  dhx_error_at(&cfg->per_node_loc, src(&cfg->per_node_loc), "per_node: %d does not divide the "
               "layout's dp*tp*pp = %d*%d*%d = %lld ranks into whole nodes", cfg->per_node,
               cfg->dp, cfg->tp, cfg->pp, ranks);
}

// What TLq-HS (compress_grads.c) needs: a sharded data-parallel gradient (the reduce-scatter
// it replaces), groups of whole code words, and data-parallel groups spread evenly over their
// nodes (the two all-to-alls form a grid).
static void check_tlq(const dhx_config *cfg, const dhx_loc *par) {
  if (!cfg->tlq_intra || cfg->dp == 1) return;
  const dhx_loc *at = first_loc(&cfg->tlq_loc, first_loc(&cfg->compress_loc, par));
  if (cfg->zero == 0)
    dhx_error_at(at, src(at), "tlq replaces the gradient reduce-scatter of sharded data "
                 "parallelism, which needs zero: 1 or more (zero is 0: the gradients are "
                 "all-reduced)");
  if (cfg->tlq_group < 8)
    dhx_error_at(at, src(at), "tlq's groups of %d elements do not fill whole 32-bit code words "
                 "(a group of 8 or more)", cfg->tlq_group);
  long long ranks = (long long)cfg->dp * cfg->tp * cfg->pp;
  if ((!cfg->per_node || ranks % cfg->per_node == 0) && dhx_dp_per_node(cfg) == 0)
    dhx_error_at(at, src(at), "tlq exchanges within nodes, then across them, so every "
                 "data-parallel group needs the same number of ranks on each of its nodes; "
                 "with dp*tp*pp = %d*%d*%d and %d ranks per node it has not", cfg->dp, cfg->tp,
                 cfg->pp, cfg->per_node);
}

// qWD compresses the all-gather that brings every rank's updated piece of the parameters into
// its whole replica after the step: zero 1 and 2 with dp > 1. Zero 3 keeps no whole replica to
// take the difference against (weights are gathered per use and dropped), so there is nothing
// sound to compress; zero 0 has no parameter all-gather at all. With dp 1 there is no
// data-parallel traffic: like zero with dp 1, a warning that it has no effect.
static void check_qwd(const dhx_config *cfg, const dhx_loc *at) {
  if (cfg->zero == 0 || cfg->zero >= 3)
    dhx_error_at(at, src(at), "qwd compresses the all-gather of the updated parameter pieces "
                 "into every rank's whole replica after the step, which zero: 1 and 2 have; "
                 "zero: %d %s", cfg->zero, cfg->zero == 0 ? "shards no parameters (use zero: 1 "
                 "or 2)" : "keeps no whole replica to take the difference against (weights are "
                 "gathered per use): use zero: 1 or 2");
}

void dhx_check_schedule_fields(dhx_config *cfg) {
  const dhx_loc *par = first_loc(&cfg->parallel_loc, &cfg->schedule_loc);
  long long ranks = (long long)cfg->dp * cfg->tp * cfg->pp;
  if (cfg->cluster_ranks && cfg->cluster_ranks != ranks) {
    dhx_error_at(par, src(par), "the layout needs dp*tp*pp = %d*%d*%d = %lld ranks but the "
                 "cluster has %d", cfg->dp, cfg->tp, cfg->pp, ranks, cfg->cluster_ranks);
    dhx_note_layout_overrides(cfg);
    if (cfg->cluster_loc.file)
      dhx_note_at(&cfg->cluster_loc, src(&cfg->cluster_loc), cfg->cluster_cpu
                  ? "the cluster is defined here" : "%d nodes of %d GPUs", cfg->nodes, cfg->per_node);
  }
  check_cpu_nodes(cfg, ranks);
  if (cfg->sp && cfg->tp == 1) {
    dhx_error_at(par, src(par), "sequence parallelism (sp: on) splits along the tensor-parallel "
                 "group, but tp is 1");
    dhx_note_layout_overrides(cfg);
  }
  if (cfg->zero > 0 && cfg->dp == 1)
    dhx_warning_at(par, src(par), "zero: %d shards over the data-parallel group, which has one "
                   "rank: it has no effect", cfg->zero);
  long long per_step = (long long)cfg->micro_batch * cfg->dp;
  long long micro = per_step ? cfg->global_batch / per_step : 0;
  if (cfg->strands_pair && micro < 2) {
    const dhx_loc *at = first_loc(&cfg->strands_loc, par);
    dhx_error_at(at, src(at), "strand pairing runs two micro-batches side by side, but each rank "
                 "has %lld per step (global_batch / (micro_batch * dp) = %d / (%d * %d))", micro,
                 cfg->global_batch, cfg->micro_batch, cfg->dp);
  }
  if (cfg->virtual_stages > 1) {
    const dhx_loc *at = cfg->layout_locs[5].file ? &cfg->layout_locs[5] : par;
    if (cfg->pp < 2)
      dhx_error_at(at, src(at), "virtual: %d interleaves layer chunks over pipeline stages, which "
                   "needs pp of 2 or more (pp is %d)", cfg->virtual_stages, cfg->pp);
    else if (cfg->fold == DHX_FOLD_W)
      dhx_error_at(at, src(at), "virtual stages and fold: w both place several layer chunks on "
                   "each stage; use one of them");
    else if (micro % cfg->pp != 0)
      dhx_error_at(at, src(at), "the interleaved pipeline runs micro-batches in groups of pp = %d, "
                   "but each rank has %lld per step (global_batch / (micro_batch * dp) = %d / "
                   "(%d * %d))", cfg->pp, micro, cfg->global_batch, cfg->micro_batch, cfg->dp);
  }
  if (cfg->fold == DHX_FOLD_W && cfg->pp < 2) {
    const dhx_loc *at = first_loc(&cfg->strands_loc, par);
    dhx_error_at(at, src(at), "fold: w folds the pipeline into a W, which needs pp of 2 or more "
                 "(pp is %d)", cfg->pp);
  }
  if (cfg->fold == DHX_FOLD_W && cfg->stages == DHX_STAGES_GIVEN) {  // auto means equal here
    const dhx_loc *at = first_loc(&cfg->layout_locs[6], par);
    dhx_error_at(at, src(at), "'stages' sizes the stages of a plain pipeline; fold: w cuts the "
                 "layers into 2 * pp equal chunks (leave 'stages' out, or make it equal)");
  }
  if (cfg->qwd_bits) check_qwd(cfg, first_loc(&cfg->qwd_loc, first_loc(&cfg->compress_loc, par)));
  check_tlq(cfg, par);
  if ((cfg->qwd_bits || cfg->tlq_intra) && cfg->dp == 1) {
    const dhx_loc *at = first_loc(&cfg->compress_loc, par);
    dhx_warning_at(at, src(at), "compression applies to data-parallel traffic, and dp is 1: it "
                   "has no effect");
  }
  if (cfg->offload_optimizer && cfg->cluster_cpu) {
    const dhx_loc *at = first_loc(&cfg->offload_loc, par);
    dhx_error_at(at, src(at), "offload moves optimizer state between GPU and host memory; a cpu "
                 "cluster has no GPU memory");
  }
  if (cfg->seq_adaptive && cfg->seq_max_group > ranks) {
    const dhx_loc *at = first_loc(&cfg->sequence_loc, par);
    dhx_error_at(at, src(at), "max_group %d is larger than the %lld ranks", cfg->seq_max_group,
                 ranks);
  }
}
