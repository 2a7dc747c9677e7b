// config_cluster.c — the cluster: `cpu(...)`, `gpus(...)`, GPU kinds and named presets.
//
//   gpu H100 { flops: 989 TFLOP/s, memory: 80 GB, bandwidth: 3.35 TB/s }
//   cluster h100x64 = gpus(nodes: 8, per_node: 8, gpu: H100, intra: 450 GB/s, inter: 400 GB/s)
//   cluster = h100x64                     # a preset
//   cluster = h100x64(nodes: 2)           # a preset with some arguments replaced
//
// GPU kinds and presets may be defined in any module of the program (stdlib/clusters.dhx has
// the common ones); the C code knows the fields, never the numbers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

#define MAX_PRESET_DEPTH 8
#define MAX_CLUSTER_ARGS 32

// The gpu kinds and cluster presets of every module, looked up by name. Built once per
// reading of the configuration: scanning every item of every module for each lookup is
// quadratic in a file of a million presets.
typedef struct named {
  const char *name;
  const dhx_item *item;
  int order;  // in the program: the first definition of a name is the one found
} named;

#define MAX_SUGGESTED 63  // names offered to did-you-mean

typedef struct named_index {
  named *by_name[2];  // [0] gpu kinds, [1] cluster presets: sorted by name, then order
  int n[2];
  const char *first[2][MAX_SUGGESTED];  // the first names of each, in program order
  int nfirst[2];
} named_index;

static int slot_of(dhx_item_kind kind) { return kind == ITEM_GPU ? 0 : 1; }

static int by_name_order(const void *a, const void *b) {
  const named *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void index_names(const dhx_program *p, named_index *ix) {
  memset(ix, 0, sizeof *ix);
  int cap[2] = {0, 0}, order = 0;
  for (int pass = 0; pass < 2; pass++) {  // count, then fill
    for (int m = 0; m < p->nmodules; m++)
      for (int i = 0; i < p->modules[m]->nitems; i++) {
        const dhx_item *it = p->modules[m]->items[i];
        if ((it->kind != ITEM_GPU && it->kind != ITEM_CLUSTER_DEF) || !it->name) continue;
        int s = slot_of(it->kind);
        if (pass == 0) {
          cap[s]++;
          continue;
        }
        ix->by_name[s][ix->n[s]++] = (named){it->name, it, order++};
        if (ix->nfirst[s] < MAX_SUGGESTED) ix->first[s][ix->nfirst[s]++] = it->name;
      }
    if (pass == 0)
      for (int s = 0; s < 2; s++) ix->by_name[s] = dhx_xmalloc((size_t)cap[s] * sizeof(named));
  }
  for (int s = 0; s < 2; s++)
    qsort(ix->by_name[s], (size_t)ix->n[s], sizeof(named), by_name_order);
}

static void free_index(named_index *ix) {
  for (int s = 0; s < 2; s++) free(ix->by_name[s]);
}

// The first item of `kind` with this name (NULL when none).
static const dhx_item *find_named(const named_index *ix, dhx_item_kind kind, const char *name) {
  const named *v = ix->by_name[slot_of(kind)];
  int lo = 0, hi = ix->n[slot_of(kind)];  // the first entry not below `name`
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (strcmp(v[mid].name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < ix->n[slot_of(kind)] && strcmp(v[lo].name, name) == 0 ? v[lo].item : NULL;
}

// The names of the first items of `kind` (for did-you-mean), NULL-terminated; out holds
// MAX_SUGGESTED + 1.
static int names_of(const named_index *ix, dhx_item_kind kind, const char **out) {
  int s = slot_of(kind);
  for (int k = 0; k < ix->nfirst[s]; k++) out[k] = ix->first[s][k];
  out[ix->nfirst[s]] = NULL;
  return ix->nfirst[s];
}

static void unknown_name(const named_index *ix, dhx_item_kind kind, const dhx_loc *at,
                         const char *name, const char *noun, const char *example) {
  const char *known[MAX_SUGGESTED + 1];
  int n = names_of(ix, kind, known);
  const char *hint = dhx_suggest(name, known);
  if (hint)
    dhx_error_at(at, src(at), "unknown %s '%s'; did you mean '%s'?", noun, name, hint);
  else if (n == 0)
    dhx_error_at(at, src(at), "unknown %s '%s' (no %ss are defined; 'use std.clusters' has the "
                 "common ones, or define one as in '%s')", noun, name, noun, example);
  else
    dhx_error_at(at, src(at), "unknown %s '%s'", noun, name);
}

// ---- gpu kinds --------------------------------------------------------------------------------

static bool read_gpu_kind(const dhx_item *it, dhx_gpu_kind *out) {
  static const char *const known[] = {"flops", "memory", "bandwidth", NULL};
  const dhx_loc *seen[3] = {0};
  memset(out, 0, sizeof *out);
  out->name = it->name;
  out->loc = it->name_loc;
  bool ok = true;
  for (int i = 0; it->fields && i < it->fields->n; i++) {
    const dhx_field *f = &it->fields->items[i];
    int k = dhx_cfg_field_index(f->name, &f->loc, "field", "'gpu'", known, seen);
    const dhx_expr *v = k >= 0 ? dhx_cfg_value_of(f) : NULL;
    if (!v) {
      ok = false;
      continue;
    }
    switch (k) {
      case 0: ok &= dhx_cfg_quantity(v, "flops", DHX_UNIT_FLOPS, "989 TFLOP/s", &out->flops); break;
      case 1: ok &= dhx_cfg_quantity(v, "memory", DHX_UNIT_BYTES, "80 GB", &out->memory); break;
      case 2: ok &= dhx_cfg_quantity(v, "bandwidth", DHX_UNIT_BANDWIDTH, "3.35 TB/s", &out->bandwidth); break;
    }
  }
  for (int k = 0; ok && known[k]; k++)
    if (!seen[k]) {
      dhx_error_at(&it->name_loc, src(&it->name_loc), "gpu '%s' needs '%s'", it->name, known[k]);
      ok = false;
    }
  for (int k = 0; ok && k < 3; k++) {
    double v = k == 0 ? out->flops : k == 1 ? out->memory : out->bandwidth;
    if (v <= 0) {
      dhx_error_at(seen[k], src(seen[k]), "'%s' of gpu '%s' must be positive", known[k], it->name);
      ok = false;
    }
  }
  return ok;
}

// ---- presets: the call behind `cluster = NAME(...)` -----------------------------------------

typedef struct cluster_call {
  const char *base;                    // "cpu" or "gpus"
  const dhx_arg *args[MAX_CLUSTER_ARGS];  // the preset's arguments, replaced by later ones
  int nargs;
} cluster_call;

static void merge_args(cluster_call *cc, const dhx_expr *call) {
  for (int i = 0; i < call->nargs; i++) {
    const dhx_arg *a = &call->args[i];
    int slot = -1;
    for (int j = 0; a->name && j < cc->nargs; j++)
      if (cc->args[j]->name && strcmp(cc->args[j]->name, a->name) == 0) slot = j;
    if (slot >= 0) {
      cc->args[slot] = a;
    } else if (cc->nargs < MAX_CLUSTER_ARGS) {
      cc->args[cc->nargs++] = a;
    } else {
      dhx_error_at(&a->name_loc, src(&a->name_loc), "more than %d cluster arguments", MAX_CLUSTER_ARGS);
      return;
    }
  }
}

// Follows presets down to cpu(...) or gpus(...), merging arguments (a later one replaces an
// earlier one of the same name). Reports unknown presets and cycles.
static bool resolve(const named_index *ix, const char *callee, const dhx_loc *at, const dhx_expr *call,
                    cluster_call *cc, int depth) {
  if (strcmp(callee, "cpu") == 0 || strcmp(callee, "gpus") == 0) {
    cc->base = callee;
    if (call) merge_args(cc, call);
    return true;
  }
  const dhx_item *def = find_named(ix, ITEM_CLUSTER_DEF, callee);
  if (!def) {
    unknown_name(ix, ITEM_CLUSTER_DEF, at, callee, "cluster",
                 "cluster mine = gpus(nodes: 2, per_node: 8, gpu: H100, intra: 450 GB/s, inter: 100 GB/s)");
    return false;
  }
  if (depth >= MAX_PRESET_DEPTH) {
    dhx_error_at(at, src(at), "cluster presets refer to each other more than %d deep (a cycle?)",
                 MAX_PRESET_DEPTH);
    dhx_note_at(&def->name_loc, src(&def->name_loc), "'%s' is defined here", callee);
    return false;
  }
  const dhx_expr *v = def->value;  // always a call (the grammar)
  dhx_loc cat = dhx_cfg_callee_loc(v);
  if (!resolve(ix, v->str, &cat, v, cc, depth + 1)) return false;
  if (call) merge_args(cc, call);
  return true;
}

// ---- cpu(...) ---------------------------------------------------------------------------------

static void read_cpu_arg(void *ctx, int k, const dhx_arg *a) {
  dhx_config *cfg = ctx;
  switch (k) {
    case 0: dhx_cfg_int(a->value, "ranks", 1, 1 << 20, &cfg->cluster_ranks); break;
    case 1: dhx_cfg_quantity(a->value, "net", DHX_UNIT_BANDWIDTH, "2 GB/s", &cfg->net_bandwidth); break;
    case 2: dhx_cfg_quantity(a->value, "latency", DHX_UNIT_TIME, "10 us", &cfg->net_latency); break;
    case 3:
      if (dhx_cfg_int(a->value, "per_node", 1, 1 << 20, &cfg->per_node))
        cfg->per_node_loc = a->value->loc;
      break;
  }
}

// per_node must cut the ranks into whole nodes (checked against the layout's rank count
// when ranks is not given: dhx_check_schedule_fields).
static void check_cpu_nodes(dhx_config *cfg) {
  if (!cfg->per_node || !cfg->cluster_ranks || cfg->cluster_ranks % cfg->per_node == 0) return;
  dhx_error_at(&cfg->per_node_loc, src(&cfg->per_node_loc), "per_node: %d does not divide the "
               "cluster's %d ranks into whole nodes", cfg->per_node, cfg->cluster_ranks);
}

int dhx_dp_per_node(const dhx_config *cfg) {
  int per = 0;
  for (int pp = 0; pp < cfg->pp; pp++)
    for (int t = 0; t < cfg->tp; t++) {
      int run = 1;  // members so far on the node of member d
      for (int d = 1; d <= cfg->dp; d++) {
        bool same = d < cfg->dp && dhx_node_of(cfg, dhx_world_rank(cfg, t, d, pp)) ==
                                       dhx_node_of(cfg, dhx_world_rank(cfg, t, d - 1, pp));
        if (same) {
          run++;
          continue;
        }
        if (per && run != per) return 0;
        per = run;
        run = 1;
      }
    }
  return per;
}

// ---- gpus(...) --------------------------------------------------------------------------------

typedef struct gpus_ctx {
  const named_index *ix;
  dhx_config *cfg;
  const dhx_arg *seen[9];
} gpus_ctx;

static const char *const gpus_known[] = {"nodes", "per_node", "gpu", "intra", "intra_latency",
                                         "inter", "inter_latency", "reserve", NULL};

static void read_gpus_arg(void *ctx, int k, const dhx_arg *a) {
  gpus_ctx *g = ctx;
  dhx_config *cfg = g->cfg;
  const dhx_expr *v = a->value;
  g->seen[k] = a;
  switch (k) {
    case 0: dhx_cfg_int(v, "nodes", 1, 1 << 16, &cfg->nodes); break;
    case 1: dhx_cfg_int(v, "per_node", 1, 1024, &cfg->per_node); break;
    case 2: {
      if (v->kind != EXPR_IDENT) {
        char got[64];
        dhx_error_at(&v->loc, src(&v->loc), "'gpu' must name a GPU kind such as H100, got %s",
                     dhx_cfg_got(v, got, sizeof got));
        break;
      }
      const dhx_item *kind = find_named(g->ix, ITEM_GPU, v->str);
      if (!kind)
        unknown_name(g->ix, ITEM_GPU, &v->loc, v->str, "gpu",
                     "gpu H100 { flops: 989 TFLOP/s, memory: 80 GB, bandwidth: 3.35 TB/s }");
      else
        read_gpu_kind(kind, &cfg->gpu);
      break;
    }
    case 3: dhx_cfg_quantity(v, "intra", DHX_UNIT_BANDWIDTH, "450 GB/s", &cfg->intra_bandwidth); break;
    case 4: dhx_cfg_quantity(v, "intra_latency", DHX_UNIT_TIME, "3 us", &cfg->intra_latency); break;
    case 5: dhx_cfg_quantity(v, "inter", DHX_UNIT_BANDWIDTH, "100 GB/s", &cfg->inter_bandwidth); break;
    case 6: dhx_cfg_quantity(v, "inter_latency", DHX_UNIT_TIME, "5 us", &cfg->inter_latency); break;
    case 7: dhx_cfg_quantity(v, "reserve", DHX_UNIT_BYTES, "2 GiB", &cfg->reserve); break;
  }
}

static void require(gpus_ctx *g, int k, const dhx_loc *at, const char *why) {
  if (g->seen[k]) return;
  dhx_error_at(at, src(at), "gpus(...) needs '%s' (%s)", gpus_known[k], why);
}

static void read_gpus(const named_index *ix, cluster_call *cc, const dhx_loc *at,
                      dhx_config *cfg) {
  gpus_ctx g = {.ix = ix, .cfg = cfg};
  int errors = dhx_diag.errors;
  cfg->cluster_cpu = false;
  cfg->intra_latency = 3e-6;   // NVLink-class hop
  cfg->inter_latency = 5e-6;   // InfiniBand-class hop
  cfg->reserve = 2.0 * (1 << 30);
  dhx_arg args[MAX_CLUSTER_ARGS];
  for (int i = 0; i < cc->nargs; i++) args[i] = *cc->args[i];
  dhx_cfg_read_args(args, cc->nargs, "'gpus(...)'", "gpus(nodes: 8, per_node: 8, gpu: H100)",
                    gpus_known, read_gpus_arg, &g);
  if (dhx_diag.errors != errors) return;
  require(&g, 0, at, "how many nodes, as in nodes: 8");
  require(&g, 1, at, "GPUs per node, as in per_node: 8");
  require(&g, 2, at, "the GPU kind, as in gpu: H100");
  require(&g, 3, at, "the bandwidth between the GPUs of a node, as in intra: 450 GB/s");
  if (cfg->nodes > 1) require(&g, 5, at, "the bandwidth between nodes, as in inter: 100 GB/s");
  if (dhx_diag.errors != errors) return;
  cfg->cluster_ranks = cfg->nodes * cfg->per_node;
  if (cfg->reserve >= cfg->gpu.memory) {
    const dhx_loc *r = g.seen[7] ? &g.seen[7]->value->loc : at;
    dhx_error_at(r, src(r), "the reserve of %.3g GiB leaves nothing of the %.3g GiB of a %s",
                 cfg->reserve / (1 << 30), cfg->gpu.memory / (1 << 30), cfg->gpu.name);
  }
}

static void read_cluster(const named_index *ix, const dhx_item *it, dhx_config *cfg) {
  const dhx_expr *v = it->value;
  if (!v) return;  // a parse error said why
  cfg->cluster_loc = it->name_loc;
  cluster_call cc = {0};
  dhx_loc at = v->kind == EXPR_CALL ? dhx_cfg_callee_loc(v) : v->loc;
  if (!resolve(ix, v->str, &at, v->kind == EXPR_CALL ? v : NULL, &cc, 0)) return;
  if (strcmp(cc.base, "cpu") == 0) {
    static const char *const known[] = {"ranks", "net", "latency", "per_node", NULL};
    dhx_arg args[MAX_CLUSTER_ARGS];
    for (int i = 0; i < cc.nargs; i++) args[i] = *cc.args[i];
    cfg->cluster_cpu = true;
    dhx_cfg_read_args(args, cc.nargs, "'cpu(...)'", "cpu(ranks: 4, net: 2 GB/s)", known,
                      read_cpu_arg, cfg);
    check_cpu_nodes(cfg);
  } else {
    read_gpus(ix, &cc, &at, cfg);
  }
}

void dhx_read_cluster(const dhx_program *p, const dhx_item *it, dhx_config *cfg) {
  named_index ix;
  index_names(p, &ix);
  read_cluster(&ix, it, cfg);
  free_index(&ix);
}

void dhx_check_cluster_items(const dhx_program *p) {
  const dhx_module *m = p->main;
  named_index ix;
  index_names(p, &ix);
  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    dhx_config scratch;
    memset(&scratch, 0, sizeof scratch);
    if (it->kind == ITEM_GPU) {
      read_gpu_kind(it, &scratch.gpu);
    } else if (it->kind == ITEM_CLUSTER_DEF) {
      dhx_item use = *it;
      use.kind = ITEM_CLUSTER;
      read_cluster(&ix, &use, &scratch);
    }
  }
  free_index(&ix);
}
