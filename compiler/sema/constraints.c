// constraints.c — what the parallel layout requires of the model, checked on its graph.
//
// Tensor parallelism splits attention by heads and each @split linear by its split side, so
// those must divide by tp; sequence parallelism splits positions by tp; pipeline parallelism
// cuts the layer stack into pp stages (2*pp chunks when folded into a W). Each broken
// constraint is reported once per call site, however many layers repeat it.
#include <stdio.h>
#include <string.h>

#include "elaborate.h"
#include "ops.h"
#include "sema.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

#define MAX_SITES 256

typedef struct checker {
  const dhx_config *cfg;
  const dhx_graph *g;
  const dhx_loc *sched;           // where the layout is written
  const dhx_loc *reported[MAX_SITES];
  int nreported;
  bool sp_checked;                // the sequence length is one number: checked once
  bool ok;
} checker;

static bool same_site(const dhx_loc *a, const dhx_loc *b) {
  return a->file == b->file && a->line == b->line && a->col == b->col;
}

// Whether this call site was reported already (marks it when not).
static bool seen_site(checker *k, const dhx_loc *at) {
  for (int i = 0; i < k->nreported; i++)
    if (same_site(k->reported[i], at)) return true;
  if (k->nreported < MAX_SITES) k->reported[k->nreported++] = at;
  return false;
}

static void fail(checker *k, const dhx_node *n, const char *msg) {
  k->ok = false;
  if (seen_site(k, &n->loc)) return;
  dhx_error_at(&n->loc, src(&n->loc), "%s", msg);
  dhx_note_instantiation(k->g, n->site, n->from, &n->loc);
  if (k->sched->file) dhx_note_at(k->sched, src(k->sched), "the layout is set here");
  dhx_note_layout_overrides(k->cfg);
}

static void check_tp(checker *k, const dhx_graph *g, const dhx_node *n) {
  int tp = k->cfg->tp;
  char msg[256];
  const dhx_tensor *x = &g->tensors[n->in[0]];
  switch (dhx_op_info(n->op)->tp) {  // what the op's split rule (ops.def) must divide
    case DHX_TP_HEADS:
      if (n->heads % tp != 0) {
        snprintf(msg, sizeof msg, "attention has %d heads, which tensor parallelism of %d cannot "
                 "divide (%d %% %d = %d)", n->heads, tp, n->heads, tp, n->heads % tp);
        fail(k, n, msg);
      } else if (n->nin == 3 && n->kv_heads % tp != 0) {
        snprintf(msg, sizeof msg, "attention has %d key/value heads, which tensor parallelism of "
                 "%d cannot divide (%d %% %d = %d)", n->kv_heads, tp, n->kv_heads, tp,
                 n->kv_heads % tp);
        fail(k, n, msg);
      }
      break;
    case DHX_TP_SPLIT: {
      const dhx_tensor *w = &g->tensors[n->in[1]];
      int64_t side = n->split == 1 ? w->shape[1] : w->shape[0];
      if (n->split && side % tp != 0) {
        snprintf(msg, sizeof msg, "a %s-split linear divides its %lld %s by tp = %d, which leaves "
                 "a remainder of %lld", n->split == 1 ? "column" : "row", (long long)side,
                 n->split == 1 ? "outputs" : "inputs", tp, (long long)(side % tp));
        fail(k, n, msg);
      }
      break;
    }
    case DHX_TP_VOCAB: {
      const dhx_tensor *w = &g->tensors[n->in[1]];
      if (w->shape[0] % tp != 0) {
        snprintf(msg, sizeof msg, "tensor parallelism splits the embedding's %lld-token "
                 "vocabulary over tp = %d, which leaves a remainder of %lld",
                 (long long)w->shape[0], tp, (long long)(w->shape[0] % tp));
        fail(k, n, msg);
      }
      break;
    }
    default: break;
  }
  if (k->cfg->sp && !k->sp_checked && (n->op == DHX_N_LAYERNORM || n->op == DHX_N_RMSNORM) &&
      x->ndim == 3) {
    k->sp_checked = true;
    if (x->shape[1] % tp == 0) return;
    snprintf(msg, sizeof msg, "sequence parallelism splits the %lld positions over tp = %d, "
             "which leaves a remainder of %lld", (long long)x->shape[1], tp,
             (long long)(x->shape[1] % tp));
    fail(k, n, msg);
  }
}

static void check_pp(checker *k, const dhx_graph *g) {
  const dhx_config *cfg = k->cfg;
  int chunks = cfg->fold == DHX_FOLD_W ? 2 * cfg->pp : cfg->pp * cfg->virtual_stages;
  const dhx_loc *at = g->layers_loc.file ? &g->layers_loc : &cfg->model_inst->name_loc;
  if (g->nlayers == 0) {
    k->ok = false;
    dhx_error_at(&cfg->model_inst->name_loc, src(&cfg->model_inst->name_loc),
                 "pipeline parallelism (pp: %d) divides the model's layer stack, but model '%s' "
                 "has none (a 'repeat' in the model body)", cfg->pp, cfg->model_inst->name);
    return;
  }
  if (cfg->stages == DHX_STAGES_BY_COST && cfg->fold != DHX_FOLD_W) {  // any counts of >= 1 layer
    if (g->nlayers >= chunks) return;
    k->ok = false;
    dhx_error_at(at, src(at), "the model has %d layers, fewer than the %d pipeline %s", g->nlayers,
                 chunks, cfg->virtual_stages > 1 ? "chunks" : "stages");
    return;
  }
  if (cfg->nstage_layers > 0 && cfg->fold != DHX_FOLD_W) {  // the stages are given
    const dhx_loc *st = cfg->layout_locs[6].file ? &cfg->layout_locs[6] : k->sched;
    int sum = 0;
    for (int i = 0; i < cfg->nstage_layers; i++) sum += cfg->stage_layers[i];
    if (cfg->nstage_layers != chunks) {
      k->ok = false;
      dhx_error_at(st, src(st), "'stages' gives %d layer counts, but the pipeline has %d %s "
                   "(pp%s)", cfg->nstage_layers, chunks,
                   cfg->virtual_stages > 1 ? "chunks" : "stages",
                   cfg->virtual_stages > 1 ? " * virtual" : "");
    } else if (sum != g->nlayers) {
      k->ok = false;
      dhx_error_at(st, src(st), "'stages' places %d layers, but the model has %d", sum,
                   g->nlayers);
      dhx_note_instantiation(g, -1, g->layers_from, at);
    }
    return;
  }
  if (g->nlayers % chunks == 0) return;
  k->ok = false;
  if (cfg->fold == DHX_FOLD_W)
    dhx_error_at(at, src(at), "the model has %d layers, which a pipeline of %d stages folded into "
                 "a W (2 * pp = %d chunks) cannot divide (%d %% %d = %d)", g->nlayers, cfg->pp,
                 chunks, g->nlayers, chunks, g->nlayers % chunks);
  else if (cfg->virtual_stages > 1)
    dhx_error_at(at, src(at), "the model has %d layers, which pp * virtual = %d * %d = %d "
                 "chunks cannot divide (%d %% %d = %d)", g->nlayers, cfg->pp,
                 cfg->virtual_stages, chunks, g->nlayers, chunks, g->nlayers % chunks);
  else
    dhx_error_at(at, src(at), "the model has %d layers, which pp = %d cannot divide into equal "
                 "stages (%d %% %d = %d)", g->nlayers, cfg->pp, g->nlayers, cfg->pp,
                 g->nlayers % cfg->pp);
  dhx_note_instantiation(g, -1, g->layers_from, at);
  if (k->sched->file) dhx_note_at(k->sched, src(k->sched), "the layout is set here");
  dhx_note_layout_overrides(cfg);
}

bool dhx_check_layout(const dhx_graph *g, const dhx_config *cfg) {
  checker k = {.cfg = cfg, .g = g, .ok = true};
  k.sched = cfg->parallel_loc.file ? &cfg->parallel_loc : &cfg->schedule_loc;
  if (cfg->tp > 1 || cfg->sp)
    for (int i = 0; i < g->nnodes; i++) check_tp(&k, g, &g->nodes[i]);
  if (cfg->pp > 1 || cfg->fold == DHX_FOLD_W) check_pp(&k, g);
  return k.ok;
}
