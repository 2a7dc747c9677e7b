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
#include <string.h>

#include "internal.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

#define MAX_PRESET_DEPTH 8
#define MAX_CLUSTER_ARGS 32

// Every item of `kind` across the program's modules, by name (NULL when none).
static const dhx_item *find_named(const dhx_program *p, dhx_item_kind kind, const char *name) {
  for (int m = 0; m < p->nmodules; m++)
    for (int i = 0; i < p->modules[m]->nitems; i++) {
      const dhx_item *it = p->modules[m]->items[i];
      if (it->kind == kind && it->name && strcmp(it->name, name) == 0) return it;
    }
  return NULL;
}

// The names of every item of `kind` (for did-you-mean), NULL-terminated, at most n-1.
static int names_of(const dhx_program *p, dhx_item_kind kind, const char **out, int n) {
  int k = 0;
  for (int m = 0; m < p->nmodules; m++)
    for (int i = 0; i < p->modules[m]->nitems && k < n - 1; i++)
      if (p->modules[m]->items[i]->kind == kind) out[k++] = p->modules[m]->items[i]->name;
  out[k] = NULL;
  return k;
}

static void unknown_name(const dhx_program *p, dhx_item_kind kind, const dhx_loc *at,
                         const char *name, const char *noun, const char *example) {
  const char *known[64];
  int n = names_of(p, kind, known, 64);
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
static bool resolve(const dhx_program *p, const char *callee, const dhx_loc *at, const dhx_expr *call,
                    cluster_call *cc, int depth) {
  if (strcmp(callee, "cpu") == 0 || strcmp(callee, "gpus") == 0) {
    cc->base = callee;
    if (call) merge_args(cc, call);
    return true;
  }
  const dhx_item *def = find_named(p, ITEM_CLUSTER_DEF, callee);
  if (!def) {
    unknown_name(p, ITEM_CLUSTER_DEF, at, callee, "cluster",
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
  if (!resolve(p, v->str, &cat, v, cc, depth + 1)) return false;
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
  }
}

// ---- gpus(...) --------------------------------------------------------------------------------

typedef struct gpus_ctx {
  const dhx_program *p;
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
      const dhx_item *kind = find_named(g->p, ITEM_GPU, v->str);
      if (!kind)
        unknown_name(g->p, ITEM_GPU, &v->loc, v->str, "gpu",
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

static void read_gpus(const dhx_program *p, cluster_call *cc, const dhx_loc *at, dhx_config *cfg) {
  gpus_ctx g = {.p = p, .cfg = cfg};
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

void dhx_read_cluster(const dhx_program *p, const dhx_item *it, dhx_config *cfg) {
  const dhx_expr *v = it->value;
  if (!v) return;  // a parse error said why
  cfg->cluster_loc = it->name_loc;
  cluster_call cc = {0};
  dhx_loc at = v->kind == EXPR_CALL ? dhx_cfg_callee_loc(v) : v->loc;
  if (!resolve(p, v->str, &at, v->kind == EXPR_CALL ? v : NULL, &cc, 0)) return;
  if (strcmp(cc.base, "cpu") == 0) {
    static const char *const known[] = {"ranks", "net", "latency", NULL};
    dhx_arg args[MAX_CLUSTER_ARGS];
    for (int i = 0; i < cc.nargs; i++) args[i] = *cc.args[i];
    cfg->cluster_cpu = true;
    dhx_cfg_read_args(args, cc.nargs, "'cpu(...)'", "cpu(ranks: 4, net: 2 GB/s)", known,
                      read_cpu_arg, cfg);
  } else {
    read_gpus(p, &cc, &at, cfg);
  }
}

void dhx_check_cluster_items(const dhx_program *p) {
  const dhx_module *m = p->main;
  for (int i = 0; i < m->nitems; i++) {
    const dhx_item *it = m->items[i];
    dhx_config scratch;
    memset(&scratch, 0, sizeof scratch);
    if (it->kind == ITEM_GPU) {
      read_gpu_kind(it, &scratch.gpu);
    } else if (it->kind == ITEM_CLUSTER_DEF) {
      dhx_item use = *it;
      use.kind = ITEM_CLUSTER;
      dhx_read_cluster(p, &use, &scratch);
    }
  }
}
