// memory.c — how much memory each GPU needs under the schedule, from the model's graph.
//
// Model state per parameter held by a stage (after tensor parallelism divides the @split
// linears and the vocabulary-parallel embeddings):
//   bf16: weights 2 B, gradients 4 B (fp32 accumulation), optimizer 12 B (fp32 master + m + v)
//   f32:  weights 4 B, gradients 4 B,                     optimizer  8 B (m + v)
// ZeRO 1 shards the optimizer state over dp, ZeRO 2 also the gradients, ZeRO 3 also the
// weights; an offloaded optimizer keeps one subgroup of its state on the GPU.
//
// Activations: the tensors the backward pass reads (each counted once), per micro-batch.
// Tensor parallelism divides those inside the split region (from a column-split linear to the
// row-split one); sequence parallelism divides the rest too. On GPUs attention is taken to be
// fused (flash): it keeps its output and row statistics instead of the S×S probabilities.
// A 1F1B pipeline holds min(chunks - c, micro-batches) micro-batches at chunk c, where the
// layer stack is cut into pp chunks (2*pp when folded, chunk c and 2pp-1-c sharing a GPU).
// Strand pairing adds one layer's activations (the other strand's forward runs beside the
// backward that frees them). Transient buffers: twice the largest activation (one tensor and
// its gradient). The runtime reserve (CUDA context, NCCL and BLAS workspaces) comes from the
// cluster.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"
#include "plan.h"
#include "sema.h"

static const char *src(const dhx_loc *loc) { return dhx_source_for(loc->file); }

#define GIB (1024.0 * 1024.0 * 1024.0)

typedef struct layout {
  int pp, chunks, nlayers, micro_per_step;
  bool folded;
  int *chunk_of_layer;  // NULL: equal counts (by position in the stack)
} layout;

// The pipeline chunk of a node: layers by position in the stack, what comes before it with
// the first chunk and what comes after it with the last.
static int chunk_of(const layout *l, const dhx_node *n, bool after_stack) {
  if (n->layer < 0 || l->nlayers == 0) return after_stack ? l->chunks - 1 : 0;
  if (l->chunk_of_layer) return l->chunk_of_layer[n->layer];
  int c = (int)((int64_t)n->layer * l->chunks / l->nlayers);
  return c < l->chunks ? c : l->chunks - 1;
}

// The stages' layer counts as the lowering will choose them (shard_pp.c), when they are not
// equal: given, or balanced by cost (then estimated on the whole model; the lowering balances
// each tensor rank's share, which may differ slightly). Folded pipelines have equal chunks.
static int *stage_counts(const dhx_graph *g, const dhx_config *cfg, const layout *l) {
  if (l->folded || l->pp < 2 || cfg->virtual_stages > 1 || cfg->stages == DHX_STAGES_EQUAL ||
      g->nlayers < l->chunks || l->chunks > DHX_MAX_STAGE_CHUNKS)
    return NULL;
  int counts[DHX_MAX_STAGE_CHUNKS];
  if (cfg->stages == DHX_STAGES_GIVEN && cfg->nstage_layers != l->chunks) return NULL;
  if (cfg->stages == DHX_STAGES_GIVEN)
    memcpy(counts, cfg->stage_layers, sizeof(int) * (size_t)l->chunks);
  else
    dhx_layers_by_cost(g, l->chunks, counts);
  int *of = malloc(sizeof(int) * (size_t)g->nlayers);
  if (!of) abort();
  int at = 0;
  for (int c = 0; c < l->chunks; c++)
    for (int k = 0; k < counts[c] && at < g->nlayers; k++) of[at++] = c;
  while (at < g->nlayers) of[at++] = l->chunks - 1;  // counts that fall short (reported)
  return of;
}

static int stage_of_chunk(const layout *l, int c) {
  return l->folded && c >= l->pp ? 2 * l->pp - 1 - c : c;
}

static int in_flight(const layout *l, int c) {
  int n = l->chunks - c;
  return n < l->micro_per_step ? n : l->micro_per_step;
}

// Which tensors tensor parallelism splits: from a column-split linear through the ops that
// keep the split (attention over heads, elementwise ops) up to the row-split linear.
static void mark_sharded(const dhx_graph *g, bool *sharded) {
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    bool s = false;
    switch (n->op) {
      case DHX_N_LINEAR: s = n->split == 1; break;
      case DHX_N_ATTENTION:
      case DHX_N_GELU:
      case DHX_N_SILU:
      case DHX_N_ROPE: s = sharded[n->in[0]]; break;
      case DHX_N_ADD:
      case DHX_N_MUL: s = sharded[n->in[0]] && sharded[n->in[1]]; break;
      default: s = false; break;
    }
    if (n->out >= 0) sharded[n->out] = s;
    for (int k = 0; k < n->nsaved; k++) sharded[n->saved[k]] = s;
  }
}

// Parameters split by tensor parallelism.
static bool param_split(const dhx_graph *g, const dhx_node *n, int t) {
  if (n->op == DHX_N_EMBEDDING) return true;
  if (n->op != DHX_N_LINEAR || !n->split) return false;
  (void)g;
  return t == n->in[1] || (n->split == 1 && n->nin > 2 && t == n->in[2]);
}

typedef struct saved {
  int t;
  double elem_bytes;  // 0 = the activation width
} saved;

// The tensors a node's backward reads, apart from weights.
static int saved_tensors(const dhx_graph *g, const dhx_node *n, bool flash, saved *out) {
  int k = 0;
  switch (n->op) {
    case DHX_N_EMBEDDING: out[k++] = (saved){n->in[0], 4}; break;
    case DHX_N_LAYERNORM:
      out[k++] = (saved){n->in[0], 0};
      out[k++] = (saved){n->saved[0], 4};
      out[k++] = (saved){n->saved[1], 4};
      break;
    case DHX_N_RMSNORM:
      out[k++] = (saved){n->in[0], 0};
      out[k++] = (saved){n->saved[0], 4};
      break;
    case DHX_N_LINEAR:
    case DHX_N_GELU:
    case DHX_N_SILU: out[k++] = (saved){n->in[0], 0}; break;
    case DHX_N_MUL:
      out[k++] = (saved){n->in[0], 0};
      out[k++] = (saved){n->in[1], 0};
      break;
    case DHX_N_ATTENTION:
      for (int j = 0; j < n->nin; j++) out[k++] = (saved){n->in[j], 0};  // qkv, or q, k, v
      if (flash) {
        out[k++] = (saved){n->out, 0};
        out[k++] = (saved){-1, 0};  // row statistics: B*H*S f32, added by the caller
      } else {
        out[k++] = (saved){n->saved[0], 4};  // the probabilities
        if (n->nsaved > 1) out[k++] = (saved){n->saved[1], 4};  // q with heads first
      }
      break;
    case DHX_N_CROSS_ENTROPY: out[k++] = (saved){n->in[0], 4}; break;  // logits, in fp32
    default: break;
  }
  (void)g;
  return k;
}

void dhx_estimate_memory(const dhx_graph *g, const dhx_config *cfg, dhx_memory *out) {
  memset(out, 0, sizeof *out);
  layout l = {.pp = cfg->pp, .folded = cfg->fold == DHX_FOLD_W, .nlayers = g->nlayers};
  l.chunks = l.folded ? 2 * cfg->pp : cfg->pp;
  l.chunk_of_layer = stage_counts(g, cfg, &l);
  long long per_step = (long long)cfg->micro_batch * cfg->dp;
  l.micro_per_step = per_step ? (int)(cfg->global_batch / per_step) : 1;
  if (l.micro_per_step < 1) l.micro_per_step = 1;
  out->nstages = cfg->pp;
  out->stage = calloc((size_t)cfg->pp, sizeof *out->stage);

  bool bf16 = cfg->precision == DHX_PREC_BF16, flash = !cfg->cluster_cpu;
  double act_bytes = bf16 ? 2 : 4, w_bytes = bf16 ? 2 : 4, g_bytes = 4, o_bytes = bf16 ? 12 : 8;
  int tp = cfg->tp, dp = cfg->dp;

  bool *sharded = calloc((size_t)g->ntensors + 1, sizeof(bool));
  bool *counted = calloc((size_t)g->ntensors + 1, sizeof(bool));
  double (*chunk_act)[2] = calloc((size_t)l.chunks, sizeof *chunk_act);  // [0] total, [1] max layer
  double *layer_act = calloc((size_t)g->nlayers + 1, sizeof(double));
  if (!out->stage || !sharded || !counted || !chunk_act || !layer_act) abort();
  mark_sharded(g, sharded);

  double largest = 0;
  bool after_stack = false;
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    if (n->layer >= 0) after_stack = true;
    int c = chunk_of(&l, n, after_stack && n->layer < 0);
    dhx_stage_memory *st = &out->stage[stage_of_chunk(&l, c) ];
    // weights this node uses
    for (int j = 0; j < n->nin; j++) {
      int t = n->in[j];
      const dhx_tensor *x = &g->tensors[t];
      if (x->kind != DHX_T_PARAM || counted[t]) continue;
      counted[t] = true;
      double e = (double)dhx_tensor_elems(x) / (param_split(g, n, t) ? tp : 1);
      st->params += (int64_t)e;
    }
    // activations the backward will read
    saved sv[8];
    int ns = saved_tensors(g, n, flash, sv);
    double bytes = 0;
    for (int j = 0; j < ns; j++) {
      if (sv[j].t < 0) {  // attention's row statistics (log-sum-exp per head and position)
        const dhx_tensor *q = &g->tensors[n->in[0]];
        bytes += 4.0 * (double)q->shape[0] * n->heads * (double)q->shape[1] / tp;
        continue;
      }
      if (counted[sv[j].t]) continue;
      counted[sv[j].t] = true;
      const dhx_tensor *x = &g->tensors[sv[j].t];
      int div = cfg->sp || sharded[sv[j].t] ? tp : 1;
      bytes += (double)dhx_tensor_elems(x) * (sv[j].elem_bytes ? sv[j].elem_bytes : act_bytes) / div;
    }
    chunk_act[c][0] += bytes * in_flight(&l, c);
    if (n->layer >= 0) layer_act[n->layer] += bytes;
    if (n->out >= 0 && g->tensors[n->out].kind == DHX_T_ACT) {
      int div = cfg->sp || sharded[n->out] ? tp : 1;
      double b = (double)dhx_tensor_elems(&g->tensors[n->out]) * act_bytes / div;
      if (b > largest) largest = b;
    }
  }
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    if (n->layer < 0) continue;
    int c = chunk_of(&l, n, false);
    if (layer_act[n->layer] > chunk_act[c][1]) chunk_act[c][1] = layer_act[n->layer];
  }
  for (int c = 0; c < l.chunks; c++) {
    dhx_stage_memory *st = &out->stage[stage_of_chunk(&l, c) ];
    st->activations += chunk_act[c][0];
    if (cfg->strands_pair && chunk_act[c][1] > 0) st->activations += chunk_act[c][1];
    st->in_flight = in_flight(&l, c) > st->in_flight ? in_flight(&l, c) : st->in_flight;
  }
  for (int i = 0; i < g->nlayers; i++) {
    dhx_node probe = {.layer = i};
    out->stage[stage_of_chunk(&l, chunk_of(&l, &probe, false)) ].layers++;
  }

  out->worst = 0;
  for (int s = 0; s < out->nstages; s++) {
    dhx_stage_memory *st = &out->stage[s];
    double p = (double)st->params;
    st->weights = p * w_bytes / (cfg->zero >= 3 ? dp : 1);
    st->grads = p * g_bytes / (cfg->zero >= 2 ? dp : 1);
    st->optimizer = p * o_bytes / (cfg->zero >= 1 ? dp : 1);
    if (cfg->offload_optimizer) {
      double resident = (double)cfg->offload_subgroup * o_bytes;
      if (resident < st->optimizer) st->optimizer = resident;
    }
    st->transient = 2 * largest;
    st->reserve = cfg->cluster_cpu ? 0 : cfg->reserve;
    st->total = st->weights + st->grads + st->optimizer + st->activations + st->transient + st->reserve;
    if (st->total > out->stage[out->worst].total) out->worst = s;
  }
  free(sharded);
  free(counted);
  free(chunk_act);
  free(layer_act);
  free(l.chunk_of_layer);
}

void dhx_print_memory(const dhx_memory *m, const dhx_config *cfg, FILE *f) {
  fprintf(f, "memory per %s (GiB), %s, dp %d tp %d pp %d%s zero %d%s%s\n",
          cfg->cluster_cpu ? "rank (host memory, estimated)" : "GPU",
          cfg->precision == DHX_PREC_BF16 ? "bf16 mixed precision" : "f32", cfg->dp, cfg->tp,
          cfg->pp, cfg->sp ? " sp" : "", cfg->zero, cfg->fold == DHX_FOLD_W ? ", folded (W)" : "",
          cfg->offload_optimizer ? ", optimizer offloaded" : "");
  fprintf(f, "%5s %7s %12s %8s %8s %9s %11s %9s %8s %8s\n", "stage", "layers", "params",
          "weights", "grads", "optimizer", "activations", "transient", "reserve", "total");
  for (int s = 0; s < m->nstages; s++) {
    const dhx_stage_memory *st = &m->stage[s];
    fprintf(f, "%5d %7d %12lld %8.2f %8.2f %9.2f %11.2f %9.2f %8.2f %8.2f\n", s, st->layers,
            (long long)st->params, st->weights / GIB, st->grads / GIB, st->optimizer / GIB,
            st->activations / GIB, st->transient / GIB, st->reserve / GIB, st->total / GIB);
  }
  if (cfg->gpu.name)
    fprintf(f, "one %s has %.2f GiB; the fullest stage (%d) uses %.0f%% of it\n", cfg->gpu.name,
            cfg->gpu.memory / GIB, m->worst, 100 * m->stage[m->worst].total / cfg->gpu.memory);
}

void dhx_memory_free(dhx_memory *m) {
  free(m->stage);
  memset(m, 0, sizeof *m);
}

bool dhx_check_memory(const dhx_graph *g, const dhx_config *cfg) {
  if (cfg->cluster_cpu || !cfg->gpu.name) return true;
  dhx_memory m;
  dhx_estimate_memory(g, cfg, &m);
  dhx_stage_memory worst = m.stage[m.worst];
  int worst_stage = m.worst;
  dhx_memory_free(&m);
  const dhx_stage_memory *st = &worst;
  if (st->total <= cfg->gpu.memory) return true;
  const dhx_loc *at = &cfg->model_inst->name_loc;
  char stage[64] = "";
  if (cfg->pp > 1) snprintf(stage, sizeof stage, "pipeline stage %d ", worst_stage);
  dhx_error_at(at, src(at), "model '%s' does not fit: %sneeds %.1f GiB per GPU, but one %s has "
               "%.1f GiB: %.1f GiB too much", cfg->model_inst->name, stage, st->total / GIB,
               cfg->gpu.name, cfg->gpu.memory / GIB, (st->total - cfg->gpu.memory) / GIB);
  const dhx_loc *sched = cfg->parallel_loc.file ? &cfg->parallel_loc : &cfg->schedule_loc;
  dhx_note_at(sched->file ? sched : at, src(sched->file ? sched : at),
              "weights %.1f, gradients %.1f, optimizer %.1f, activations %.1f (%d in flight of "
              "micro-batches of %d), transient %.1f, reserve %.1f GiB; more tp or pp, a higher "
              "zero stage or a smaller micro_batch would lower it", st->weights / GIB,
              st->grads / GIB, st->optimizer / GIB, st->activations / GIB, st->in_flight,
              cfg->micro_batch,
              st->transient / GIB, st->reserve / GIB);
  dhx_note_layout_overrides(cfg);
  return false;
}

// ---- the planned arena of a rank ------------------------------------------------------------

// What the arena gives t: a sharded tensor's piece (ZeRO), not the whole.
static int64_t aligned_bytes(const dhx_tensor *t) {
  int64_t b = dhx_tensor_alloc_bytes(t);
  return (b + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN;
}

// The persistent tensors come first in the arena (memplan.c), activations after them.
void dhx_rank_memory_of(const dhx_graph *g, int64_t arena, int nranks, dhx_rank_memory *out) {
  memset(out, 0, sizeof *out);
  int64_t persistent_end = 0;
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *t = &g->tensors[i];
    if (t->kind == DHX_T_ACT || t->kind == DHX_T_VIEW || t->offset < 0) continue;
    int64_t b = aligned_bytes(t);
    if (t->kind == DHX_T_PARAM) {
      out->weights += b;
      out->params += dhx_tensor_elems(t);
    }
    if (t->kind == DHX_T_GRAD) out->grads += b;
    if (t->kind == DHX_T_OPT_M || t->kind == DHX_T_OPT_V || t->kind == DHX_T_MASTER)
      out->optimizer += b;
    if (t->offset + b > persistent_end) persistent_end = t->offset + b;
  }
  out->io = persistent_end - out->weights - out->grads - out->optimizer;
  out->activations = arena - persistent_end;
  out->total = out->largest = arena;
  out->nranks = nranks;
  out->all_ranks = arena * nranks;
  out->runs[0].first = 0;
  out->runs[0].last = nranks - 1;
  out->runs[0].bytes = arena;
  out->nruns = 1;
}

void dhx_plan_memory_of(const dhx_graph *g, const dhx_plan *plan, dhx_rank_memory *out) {
  dhx_rank_memory_of(g, plan->ranks[0].arena_bytes, (int)plan->nranks, out);
  out->all_ranks = 0;
  out->nruns = 0;
  for (uint32_t r = 0; r < plan->nranks; r++) {
    int64_t a = plan->ranks[r].arena_bytes;
    out->all_ranks += a;
    if (a > out->largest) {
      out->largest = a;
      out->largest_rank = (int)r;
    }
    if (out->nruns > 0 && out->runs[out->nruns - 1].bytes == a) {
      out->runs[out->nruns - 1].last = (int)r;
    } else if (out->nruns < DHX_MEMORY_RUNS) {
      out->runs[out->nruns].first = out->runs[out->nruns].last = (int)r;
      out->runs[out->nruns++].bytes = a;
    } else {
      out->more = true;
    }
  }
}

typedef struct size_unit {
  const char *name;
  double bytes;
} size_unit;

static void row(FILE *f, size_unit u, const char *what, int64_t bytes, const char *why) {
  fprintf(f, "  %-12s %9.3f %s%s%s\n", what, (double)bytes / u.bytes, u.name, why[0] ? "  " : "",
          why);
}

void dhx_print_rank_memory(const dhx_rank_memory *m, const dhx_config *cfg, FILE *f) {
  size_unit u = m->total < GIB ? (size_unit){"MiB", 1024.0 * 1024.0} : (size_unit){"GiB", GIB};
  const char *prec = cfg->precision == DHX_PREC_BF16 ? "bf16" : "f32";
  if (m->nruns > 1)
    fprintf(f, "memory per rank (host memory), %s, dp %d: the arena dhxrun allocates on rank 0 "
            "(the %d ranks' arenas differ: listed below)\n", prec, cfg->dp, m->nranks);
  else
    fprintf(f, "memory per rank (host memory), %s, dp %d: the arena dhxrun allocates on each of "
            "the %d ranks\n", prec, cfg->dp, m->nranks);
  char why[96];
  snprintf(why, sizeof why, "%lld parameters", (long long)m->params);
  row(f, u, "weights", m->weights, why);
  row(f, u, "gradients", m->grads, "");
  row(f, u, "optimizer", m->optimizer, "Adam moments (and qWD master weights)");
  row(f, u, "inputs", m->io, "token ids, targets, losses, scratch");
  row(f, u, "activations", m->activations, "shared by the programs, sized for the largest");
  snprintf(why, sizeof why, "(%lld bytes)", (long long)m->total);
  row(f, u, "total", m->total, why);
  if (m->nruns > 1) {  // the layout gives ranks different parts of the model
    fprintf(f, "arena per rank (rank %d has the largest):\n", m->largest_rank);
    for (int k = 0; k < m->nruns; k++) {
      char ranks[32];
      if (m->runs[k].first == m->runs[k].last)
        snprintf(ranks, sizeof ranks, "rank %d", m->runs[k].first);
      else
        snprintf(ranks, sizeof ranks, "ranks %d-%d", m->runs[k].first, m->runs[k].last);
      fprintf(f, "  %-14s %lld bytes\n", ranks, (long long)m->runs[k].bytes);
    }
    if (m->more) fprintf(f, "  (and further ranks, in more runs than listed)\n");
  }
  double avail = dhx_host_memory_available();
  if (avail > 0)
    fprintf(f, "this machine has %.1f GiB of memory available; the %d ranks need %.3f GiB "
            "together when they run on it\n", avail / GIB, m->nranks,
            (double)m->all_ranks / GIB);
}

// MemAvailable from /proc/meminfo (MemTotal on kernels without it), in bytes; 0 if unknown.
double dhx_host_memory_available(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  double total = 0, avail = 0, kb;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) avail = kb * 1024;
    if (sscanf(line, "MemTotal: %lf kB", &kb) == 1) total = kb * 1024;
  }
  fclose(f);
  return avail > 0 ? avail : total;
}

void dhx_warn_host_memory(const dhx_rank_memory *m, const dhx_config *cfg) {
  double avail = dhx_host_memory_available(), need = (double)m->largest;
  double together = (double)m->all_ranks;
  // A GPU cluster's arenas live on its GPUs (and their hosts' mirrors), not on this machine.
  if (!cfg->model_inst || avail <= 0 || !cfg->cluster_cpu) return;
  const dhx_loc *at = &cfg->model_inst->name_loc;
  if (need > avail)
    dhx_warning_at(at, src(at), "each rank needs %.1f GiB of host memory; this machine has %.1f "
                   "GiB available", need / GIB, avail / GIB);
  else if (together > avail)
    dhx_warning_at(at, src(at), "the %d ranks need %.1f GiB of host memory together (up to %.1f "
                   "GiB each); this machine has %.1f GiB available (enough only if they run on "
                   "several machines)", m->nranks, together / GIB, need / GIB, avail / GIB);
  else
    return;
  dhx_note_at(NULL, NULL, "per rank: weights %.2f, gradients %.2f, optimizer %.2f, inputs %.2f, "
              "activations %.2f GiB ('dhxc --emit=memory' has the table)",
              (double)m->weights / GIB, (double)m->grads / GIB, (double)m->optimizer / GIB,
              (double)m->io / GIB, (double)m->activations / GIB);
}
