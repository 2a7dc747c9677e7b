// compile.c — the pipeline: schedule checks → elaborate → lower (forward, backward,
// optimizer) → fuse → plan memory → emit one section per rank + the kernel set.
#include "compile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ice.h"
#include "elaborate.h"
#include "lower.h"
#include "overlap_search.h"
#include "sema.h"
#include "dirs.h"
#include "verify_memory.h"
#include "timing.h"
#include "turns.h"
#include "verify_ranks.h"

static const char *src_of(const dhx_loc *loc) { return dhx_source_for(loc->file); }

// MICRO runs the step's micro-batches itself (a pipeline schedule, or paired strands), loading
// each with LOAD_BATCH, instead of being run once per micro-batch by the runtime.
static bool micro_spans_step(const dhx_config *cfg) { return cfg->pp > 1 || cfg->strands_pair; }

const char *dhx_unlowered(const dhx_config *cfg, const dhx_loc **at, char *buf, size_t n) {
  const dhx_loc *sched = cfg->parallel_loc.file ? &cfg->parallel_loc : &cfg->schedule_loc;
  *at = sched;
  if (cfg->strands_pair && cfg->pp > 1 && cfg->strands_search != DHX_SEARCH_NONE) {
    // The search's events hold the two strands together step by step; in a pipeline a step
    // may hold a receive that waits for the neighbour stage, which waits in turn for this one.
    *at = cfg->strands_search_loc.file ? &cfg->strands_search_loc
          : cfg->strands_loc.file       ? &cfg->strands_loc
                                        : sched;
    snprintf(buf, n, "the overlap search of paired strands in a pipeline (search: %s with pp > "
             "1; search: none, the default there, pairs pipelined strands)",
             cfg->strands_search == DHX_SEARCH_DP ? "dp" : "greedy");
  } else if (cfg->tlq_intra && cfg->tlq_hadamard != 0 && cfg->tlq_hadamard != 32) {
    *at = cfg->tlq_loc.file ? &cfg->tlq_loc : sched;  // the kernels transform blocks of 32
    snprintf(buf, n, "tlq's Hadamard transform of %d (this build transforms blocks of 32, or "
             "none with hadamard: off)", cfg->tlq_hadamard);
  } else if (cfg->offload_optimizer) {
    *at = cfg->offload_loc.file ? &cfg->offload_loc : sched;
    snprintf(buf, n, "optimizer offload (the offload block)");
  } else if (cfg->seq_adaptive) {
    *at = cfg->sequence_loc.file ? &cfg->sequence_loc : sched;
    snprintf(buf, n, "length-adaptive sequence parallelism (the sequence block)");
  } else {
    return NULL;
  }
  return buf;
}

bool dhx_analyze(const dhx_program *prog, const dhx_config *cfg, dhx_graph *g) {
  dhx_graph_init(g);
  if (!cfg->model_inst) {
    dhx_error("no model instance ('model NAME = ...') in the main file");
    return false;
  }
  if (!dhx_elaborate(prog, cfg->model_inst, cfg->micro_batch, g)) return false;
  bool ok = dhx_check_layout(g, cfg);
  return dhx_check_memory(g, cfg) && ok;
}

// EVAL runs the forward again with no gradients: give it its own activation tensors so that
// each activation belongs to exactly one program and the planner can reuse memory per program.
static void own_activations(dhx_graph *g) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_ACT) g->tensors[i].program = DHX_PROG_MICRO;
  int n = g->ntensors;
  int *clone = malloc(sizeof(int) * (size_t)n);
  if (!clone) abort();
  for (int i = 0; i < n; i++) clone[i] = -1;
  dhx_oplist *l = &g->prog[DHX_PROG_EVAL];
  for (int i = 0; i < l->n; i++)
    for (int j = 0; j < l->ops[i].nargs; j++) {
      dhx_operand *a = &l->ops[i].args[j];
      if (a->kind != DHX_ARG_BUF || a->tensor >= n || g->tensors[a->tensor].kind != DHX_T_ACT)
        continue;
      if (clone[a->tensor] < 0) {
        char name[DHX_NAME_MAX + 8];
        snprintf(name, sizeof name, "eval.%s", g->tensors[a->tensor].name);
        dhx_tensor src = g->tensors[a->tensor];
        clone[a->tensor] = dhx_tensor_new(g, name, DHX_T_ACT, src.dtype, src.ndim, src.shape);
        g->tensors[clone[a->tensor]].program = DHX_PROG_EVAL;
      }
      a->tensor = clone[a->tensor];
    }
  free(clone);
}

static double flops_per_token(const dhx_graph *g) {
  double f = 0;
  const dhx_oplist *l = &g->prog[DHX_PROG_MICRO];
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    // Fused attention counts what its GEMMs would (the whole S·S scores, forward and
    // backward: 12·hs·S per query row), the usual convention for a model's FLOPs, so that
    // MFU does not depend on how attention is lowered.
    if (op->kind == DHX_L_KERNEL && !op->dead && op->kspec.kind == DHX_K_ATTN_FWD)
      f += 12.0 * (double)op->n * (double)op->args[5].i * (double)op->args[8].i;
    if (op->kind != DHX_L_GEMM || op->dead) continue;
    f += 2.0 * (double)op->gemm->m * (double)op->gemm->n * (double)op->gemm->k *
         (double)op->gemm->batch[0] * (double)op->gemm->batch[1];
  }
  return f / ((double)g->micro_batch * g->seq);
}

static void fill_train(const dhx_config *cfg, const dhx_graph *g, dhx_plan_train *t) {
  memset(t, 0, sizeof *t);
  t->steps = cfg->steps;
  t->micro_batch = cfg->micro_batch;
  t->global_batch = cfg->global_batch;
  t->accum_steps = cfg->global_batch / (cfg->micro_batch * cfg->dp);
  t->seq = g->seq;
  t->vocab = g->vocab;
  t->seed = cfg->seed;
  t->lr = cfg->adamw.lr;
  t->lr_min_ratio = cfg->lr_min_ratio;
  t->beta1 = cfg->adamw.beta1;
  t->beta2 = cfg->adamw.beta2;
  t->eps = cfg->adamw.eps;
  t->weight_decay = cfg->adamw.weight_decay;
  t->grad_clip = cfg->adamw.grad_clip;
  t->warmup_steps = cfg->warmup_steps;
  t->val_every = cfg->val_every;
  t->val_batches = cfg->val_batches;
  t->log_every = cfg->log_every;
  t->checkpoint_every = cfg->checkpoint_every;
  t->skip_nonfinite = cfg->skip_nonfinite;
  t->micro_per_run = micro_spans_step(cfg) ? t->accum_steps : 1;
  snprintf(t->train_path, sizeof t->train_path, "%s", cfg->train_path ? cfg->train_path : "");
  snprintf(t->val_path, sizeof t->val_path, "%s", cfg->val_path ? cfg->val_path : "");
  t->net_bandwidth = cfg->net_bandwidth;
  t->net_latency = cfg->net_latency;
  t->dp = cfg->dp;
  t->tp = cfg->tp;
  t->pp = cfg->pp;
  t->zero = cfg->dp > 1 ? (uint32_t)cfg->zero : 0;  // one data rank: nothing to shard
  t->per_node = cfg->per_node;  // where bytes leave a node (the metrics count them)
  t->n_params = g->n_params;  // (flops_per_token: the stages' sum, set by the caller)
  snprintf(t->model_name, sizeof t->model_name, "%s", g->model_name);
}

// Rank dst runs rank src's buffers and programs (the same arrays) on its own communicators:
// src_comm[role] becomes dst_comm[role] (plan.h: shares).
static void share_rank(const dhx_plan_rank *src, uint32_t src_index, const int *src_comm,
                       const int *dst_comm, dhx_plan_rank *dst) {
  *dst = *src;
  dst->shares = src_index + 1;
  dst->nsubst = 0;
  for (int role = 0; role < DHX_COMM_ROLES; role++)
    if (src_comm[role] >= 0 && src_comm[role] != dst_comm[role]) {
      dst->subst_from[dst->nsubst] = src_comm[role];
      dst->subst_to[dst->nsubst++] = dst_comm[role];
    }
}

// The plan holds data paths in fixed fields; a longer (resolved, absolute) path is an error.
static bool paths_fit(const dhx_config *cfg) {
  const char *paths[] = {cfg->train_path, cfg->val_path};
  bool ok = true;
  for (int i = 0; i < 2; i++)
    if (paths[i] && strlen(paths[i]) >= DHX_PATH_MAX) {
      dhx_error("the %s data path is %zu bytes long once resolved; a plan holds at most %d: "
                "'%s'", i ? "val" : "train", strlen(paths[i]), DHX_PATH_MAX - 1, paths[i]);
      ok = false;
    }
  return ok;
}

static int world_rank(const dhx_config *cfg, int tp_rank, int dp_rank, int pp_rank) {
  return dhx_world_rank(cfg, tp_rank, dp_rank, pp_rank);
}

static int add_comm(dhx_plan *p, int n) {
  p->comms = realloc(p->comms, sizeof(dhx_plan_comm) * (p->ncomms + 1));
  if (!p->comms) abort();
  dhx_plan_comm *c = &p->comms[p->ncomms];
  c->nranks = (uint32_t)n;
  c->ranks = malloc(sizeof(int32_t) * (size_t)n);
  if (!c->ranks) abort();
  return (int)p->ncomms++;
}

// Whether the gradient reduce-scatter is lowered as TLq-HS (compress_grads.c).
static bool tlq_on(const dhx_config *cfg) {
  return cfg->tlq_intra && cfg->dp > 1 && cfg->zero >= 1;
}

// A communicator of the data ranks first, first + stride, ... (n of them) of the group of
// (tensor rank t, stage pp), which each of them uses for `role`.
static void add_dp_subgroup(const dhx_config *cfg, dhx_plan *p, int (*comm_of)[DHX_COMM_ROLES],
                            int t, int pp, int first, int stride, int n, int role) {
  int c = add_comm(p, n);
  for (int k = 0; k < n; k++) {
    int r = world_rank(cfg, t, first + k * stride, pp);
    p->comms[c].ranks[k] = r;
    comm_of[r][role] = c;
  }
}

// TLq-HS's communicators: each data-parallel group cut by node into `per` consecutive members
// (the intra-node groups), and the members with the same index in each cut (the inter-node
// groups); groups of one are left out, as above.
static void derive_node_comms(const dhx_config *cfg, dhx_plan *p,
                              int (*comm_of)[DHX_COMM_ROLES]) {
  int per = dhx_dp_per_node(cfg), nodes = cfg->dp / per;
  for (int pp = 0; pp < cfg->pp; pp++)
    for (int t = 0; t < cfg->tp; t++) {
      for (int n = 0; n < nodes && per > 1; n++)
        add_dp_subgroup(cfg, p, comm_of, t, pp, n * per, 1, per, DHX_COMM_DP_INTRA);
      for (int j = 0; j < per && nodes > 1; j++)
        add_dp_subgroup(cfg, p, comm_of, t, pp, j, per, nodes, DHX_COMM_DP_INTER);
    }
}

// The communicators of the layout: one per tensor-parallel group, one per data-parallel group
// and one per pipeline (groups of one rank exchange nothing and are left out). comm_of[rank][role] says
// which one each rank uses for each role.
static void derive_comms(const dhx_config *cfg, dhx_plan *p, int (*comm_of)[DHX_COMM_ROLES]) {
  for (uint32_t r = 0; r < p->nranks; r++)
    for (int role = 0; role < DHX_COMM_ROLES; role++) comm_of[r][role] = -1;
  for (int pp = 0; pp < cfg->pp; pp++) {
    for (int d = 0; d < cfg->dp && cfg->tp > 1; d++) {
      int c = add_comm(p, cfg->tp);
      for (int t = 0; t < cfg->tp; t++) {
        int r = world_rank(cfg, t, d, pp);
        p->comms[c].ranks[t] = r;
        comm_of[r][DHX_COMM_TP] = c;
      }
    }
    for (int t = 0; t < cfg->tp && cfg->dp > 1; t++) {
      int c = add_comm(p, cfg->dp);
      for (int d = 0; d < cfg->dp; d++) {
        int r = world_rank(cfg, t, d, pp);
        p->comms[c].ranks[d] = r;
        comm_of[r][DHX_COMM_DP] = c;
      }
    }
  }
  if (tlq_on(cfg)) derive_node_comms(cfg, p, comm_of);
  for (int d = 0; d < cfg->dp && cfg->pp > 1; d++)  // member index = stage
    for (int t = 0; t < cfg->tp; t++) {
      int c = add_comm(p, cfg->pp);
      for (int s = 0; s < cfg->pp; s++) {
        int r = world_rank(cfg, t, d, s);
        p->comms[c].ranks[s] = r;
        comm_of[r][DHX_COMM_PP] = c;
      }
    }
}

// The forward and backward of the micro-batches (MICRO) and the evaluation forward (EVAL).
static void lower_micro(const dhx_config *cfg, dhx_graph *g, int accum) {
  double loss_scale = 1.0 / ((double)cfg->global_batch * g->seq);
  if (micro_spans_step(cfg)) {
    dhx_lower_pipeline(g, accum, loss_scale);
    return;
  }
  dhx_oplist *micro = &g->prog[DHX_PROG_MICRO];
  dhx_lower_forward(g, micro);
  int nfwd = micro->n;
  dhx_lower_backward(g, micro, loss_scale);
  if (g->async_comm) dhx_async_collectives_program(g, micro, nfwd);
  dhx_lower_forward(g, &g->prog[DHX_PROG_EVAL]);
  own_activations(g);
}

static void fuse(dhx_graph *g) {
  dhx_fuse_elementwise(g, &g->prog[DHX_PROG_MICRO]);
  dhx_fuse_elementwise(g, &g->prog[DHX_PROG_EVAL]);
}

static void lower_step(const dhx_config *cfg, dhx_graph *g, int accum) {
  dhx_plan_persistent(g);  // sizes the optimizer's views
  dhx_lower_opts o = {.dp = cfg->dp, .dp_rank = g->dp_rank, .zero = cfg->zero, .sp = cfg->sp,
                      .accum_steps = accum, .grad_clip = cfg->adamw.grad_clip,
                      .beta1 = cfg->adamw.beta1, .beta2 = cfg->adamw.beta2,
                      .eps = cfg->adamw.eps, .weight_decay = cfg->adamw.weight_decay};
  dhx_origin opt = {.node = -1, .layer = -1, .phase = DHX_PHASE_OPTIMIZER};
  g->prog[DHX_PROG_BEGIN].at = g->prog[DHX_PROG_STEP].at = opt;
  dhx_lower_optimizer(g, &o);
}

// What the overlap search of paired strands needs of the plan being built: the cost model, the
// communicators, the kernel table, and the stage's alignments (one rank searches, all follow).
typedef struct search_ctx {
  const dhx_cost_model *model;
  const dhx_plan *plan;
  const int *comm_of;  // this rank's plan communicator per role
  dhx_codegen *cg;
  dhx_ovl_memo *memo;
  bool every_pass;  // verify the op lists after every pass, not only the last (see lower_graph)
} search_ctx;

static void overlap_search(dhx_graph *g, dhx_strand_search search, const search_ctx *sc) {
  dhx_ovl_costs costs = {.model = sc->model, .plan = sc->plan, .comm_of = sc->comm_of,
                         .cg = sc->cg, .vocab = g->vocab};
  dhx_overlap_search(g, search, &costs, sc->memo);
}

// Checks the op lists after `pass`: after every pass for a plan, so that a broken invariant
// names the pass that broke it; a simulation, whose long programs take a good part of its time
// to check, checks the final lists only (the same passes run for a plan and are checked there).
static void verify_after(const search_ctx *sc, const dhx_graph *g, const char *pass) {
  if (sc->every_pass) dhx_verify_programs(g, pass, false);
}

// Everything from the whole model's graph to the planned op lists of the rank at (tensor
// rank, data rank, stage): the passes in order, the op lists checked after each pass that
// writes them.
static bool lower_graph(const dhx_config *cfg, int tp_rank, int dp_rank, int pp_rank,
                        dhx_graph *g, int64_t *arena, const search_ctx *sc) {
  int accum = cfg->global_batch / (cfg->micro_batch * cfg->dp);
  g->dp = cfg->dp;
  g->dp_rank = dp_rank;
  g->zero = cfg->zero;
  g->qwd_bits = cfg->dp > 1 && (cfg->zero == 1 || cfg->zero == 2) ? cfg->qwd_bits : 0;
  g->qwd_group = cfg->qwd_group;
  g->strands = cfg->strands_pair;
  g->strands_free = cfg->strands_pair && cfg->strands_search == DHX_SEARCH_NONE;
  // Collectives beside the compute: one stage (the transfer streams leave no room for two more
  // streams), ZeRO 0 or 1 (2 and 3 find a run's strand from its first op), and unpaired: the
  // other strand already fills a strand's waits, and on the CPU backend two more threads per
  // rank made paired steps slower (bench/strands_cpu at parity, with turns: 730 against 622
  // ms), though the simulator expected them faster.
  g->async_comm = cfg->pp == 1 && cfg->zero <= 1 && !cfg->strands_pair;
  // Free strands on a CPU cluster post their backward's collectives and go on (the CPU runtime
  // completes them at a WAIT; a GPU stream would run the NCCL call in its order anyway). The
  // runtime completes bf16 operands where they are posted, so bf16 plans are not deferred.
  g->defer_collectives = g->strands_free && cfg->cluster_cpu &&
                         cfg->precision != DHX_PREC_BF16;
  if (tlq_on(cfg))
    g->tlq = (dhx_grad_tlq){.intra_bits = cfg->tlq_intra, .inter_bits = cfg->tlq_inter,
                            .group = cfg->tlq_group, .hadamard = cfg->tlq_hadamard != 0,
                            .per_node = dhx_dp_per_node(cfg)};
  g->fold = cfg->fold == DHX_FOLD_W;
  // GPU clusters run attention as fused kernels (no score matrix in memory); the CPU backend
  // keeps the batched BLAS GEMMs around the softmax kernel, which are faster there.
  if (!cfg->cluster_cpu) dhx_use_fused_attention(g);
  dhx_timing_pass("shard the layouts");
  if (!dhx_shard_tensor_parallel(g, cfg->tp, tp_rank)) return false;
  if (cfg->sp && !dhx_shard_sequence_parallel(g)) return false;
  // A W has equal chunks (`stages: auto` means equal there; given counts are refused).
  const int *layers = cfg->stages == DHX_STAGES_GIVEN && !g->fold ? cfg->stage_layers : NULL;
  bool by_cost = cfg->stages == DHX_STAGES_BY_COST && !g->fold;
  bool asked = cfg->layout_locs[6].file != NULL;
  int chunks = g->fold ? 2 : cfg->virtual_stages;
  if (!dhx_shard_pipeline(g, cfg->pp, chunks, layers, by_cost, by_cost && asked, pp_rank,
                          micro_spans_step(cfg) ? accum : 1))
    return false;
  dhx_verify_graph(g, "the parallel layouts");
  dhx_create_param_state(g);
  dhx_create_views(g);
  dhx_create_norm_scratch(g);
  dhx_timing_pass("lower micro-batches");
  lower_micro(cfg, g, accum);   verify_after(sc, g, "lowering");
  dhx_timing_pass("fuse");
  fuse(g);                      verify_after(sc, g, "fusion");
  if (!cfg->cluster_cpu) {  // cuBLASLt adds biases (and GeLU) as it stores; OpenBLAS cannot
    dhx_fuse_gemm_epilogues(g, &g->prog[DHX_PROG_MICRO]);
    dhx_fuse_gemm_epilogues(g, &g->prog[DHX_PROG_EVAL]);
    verify_after(sc, g, "GEMM epilogues");
  }
  dhx_timing_pass("shard optimizer state");
  dhx_zero_shard(g);            verify_after(sc, g, "sharding");
  // In a pipeline the strands run free (dhx_unlowered refuses the search there), and the search
  // would run only to report what it models for regions it may not align.
  if (cfg->strands_pair && cfg->pp == 1) {
    dhx_timing_pass("overlap search");
    overlap_search(g, cfg->strands_search, sc); verify_after(sc, g, "the overlap search");
  }
  dhx_timing_pass("lower the optimizer");
  lower_step(cfg, g, accum);    verify_after(sc, g, "the optimizer");
  if (cfg->precision == DHX_PREC_BF16) {
    dhx_apply_precision(g);     verify_after(sc, g, "mixed precision");
  }
  dhx_timing_pass("plan memory");
  *arena = dhx_plan_memory(g);
  dhx_timing_pass("verify programs");
  dhx_verify_programs(g, "memory planning", true);
  return true;
}

// Data-parallel replica d of (tensor rank t, stage s) lowered on its own (sharded optimizer
// state: each replica updates, and keeps the moments of, its own share of the parameters).
static bool lower_replica(const dhx_program *prog, const dhx_config *cfg, int t, int d, int s,
                          const search_ctx *sc, dhx_plan_rank *r) {
  dhx_graph g;
  dhx_graph_init(&g);
  int64_t arena = 0;
  bool ok = dhx_elaborate(prog, cfg->model_inst, cfg->micro_batch, &g) &&
            lower_graph(cfg, t, d, s, &g, &arena, sc) &&
            dhx_emit_rank(&g, arena, sc->comm_of, sc->cg, r);
  dhx_graph_free(&g);
  return ok;
}

static void set_coords(const dhx_config *cfg, int t, int d, int pp, dhx_plan_rank *r) {
  r->dp_rank = (uint32_t)d;
  r->dp_size = (uint32_t)cfg->dp;
  r->tp_rank = (uint32_t)t;
  r->tp_size = (uint32_t)cfg->tp;
  r->pp_rank = (uint32_t)pp;
  r->pp_size = (uint32_t)cfg->pp;
  // The stage of the last layer chunk computes the loss: the last, or folded into a W, the first.
  r->reports_loss = t == 0 && pp == (cfg->fold == DHX_FOLD_W ? 0 : cfg->pp - 1);
}

// The model FLOPs per token of one rank of the stage `g` was lowered for.
static double stage_flops_of(const dhx_config *cfg, const dhx_graph *g) {
  return flops_per_token(g) / (micro_spans_step(cfg) ? (double)(cfg->global_batch /
                                (cfg->micro_batch * cfg->dp)) : 1.0);
}

// A simulation lowers each stage once, for tensor rank 0 of replica 0: the tensor ranks of a
// stage run the same ops on equal slices and the replicas differ in their communicators and
// their share of the batch (and of the optimizer state, whose counts are the same), so all of
// them share its programs on their own communicators and are timed alike. The stages are
// lowered apart from each other, on threads of their own where there are cores for them: each
// with its own kernel table and diagnostics, merged afterwards in stage order, so that the
// kernel numbering, the plan and any error are what one stage after the other gives. A thread
// holds one stage's lowered programs (a W-folded stage of a paper model: about a gigabyte),
// hence at most STAGE_THREADS of them by default.
#define STAGE_THREADS 4
#define MAX_STAGE_THREADS 64

typedef struct stage_job {
  const dhx_program *prog;
  const dhx_config *cfg, *lowering;
  dhx_plan *p;
  int (*comm_of)[DHX_COMM_ROLES];
  const dhx_cost_model *model;
  dhx_ovl_memo *memo;         // this stage's
  dhx_graph *g;               // stage 0: the compiled graph; others lower a graph of their own
  int stage;
  dhx_codegen *cg;            // this stage's kernels
  double flops;
  bool ok;
  char *report;               // what a thread of its own reported, for the main thread to print
  size_t nreport;
  int errors, warnings;
} stage_job;

static void lower_stage(stage_job *j, bool timed) {
  const dhx_config *cfg = j->cfg;
  dhx_graph own, *gt = j->g ? j->g : &own;
  j->ok = true;
  if (timed) dhx_timing_pass("elaborate");
  if (!j->g) {
    dhx_graph_init(gt);
    j->ok = dhx_elaborate(j->prog, cfg->model_inst, cfg->micro_batch, gt);
  }
  int64_t arena = 0;
  int r0 = world_rank(cfg, 0, 0, j->stage);
  search_ctx sc = {j->model, j->p, j->comm_of[r0], j->cg, &j->memo[j->stage], false};
  j->ok = j->ok && lower_graph(j->lowering, 0, 0, j->stage, gt, &arena, &sc);
  if (timed) dhx_timing_pass("emit ranks");
  j->ok = j->ok && dhx_emit_rank(gt, arena, j->comm_of[r0], j->cg, &j->p->ranks[r0]);
  if (j->ok) j->flops = stage_flops_of(cfg, gt);
  if (!j->g) dhx_graph_free(gt);
}

typedef struct stage_pool {
  stage_job *jobs;
  int n, next;
  pthread_mutex_t lock;
} stage_pool;

static void *stage_worker(void *arg) {
  stage_pool *pool = arg;
  for (;;) {
    pthread_mutex_lock(&pool->lock);
    int k = pool->next++;
    pthread_mutex_unlock(&pool->lock);
    if (k >= pool->n) return NULL;
    stage_job *j = &pool->jobs[k];
    FILE *report = open_memstream(&j->report, &j->nreport);
    dhx_diag = (dhx_diag_sink){.out = report};  // this thread's sink
    lower_stage(j, false);
    j->errors = dhx_diag.errors;
    j->warnings = dhx_diag.warnings;
    if (report) fclose(report);
  }
}

// Threads for n stages: one per core, at most STAGE_THREADS; DHX_STAGE_THREADS in the
// environment sets another number (1: one stage after the other, holding one at a time).
static int stage_threads(int n) {
  long want = sysconf(_SC_NPROCESSORS_ONLN);
  if (want > STAGE_THREADS) want = STAGE_THREADS;
  const char *env = getenv("DHX_STAGE_THREADS");
  if (env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end == 0 && v >= 1 && v <= MAX_STAGE_THREADS)
      want = v;
    else
      dhx_warning_at(NULL, NULL, "DHX_STAGE_THREADS='%s' is not a number from 1 to %d; "
                     "lowering on %ld threads", env, MAX_STAGE_THREADS, want < n ? want : (long)n);
  }
  return (int)(want < n ? want : n);
}

// Runs the jobs: on threads (stage_threads) unless that is one or passes are timed (on one
// clock), else one after the other until one fails. Returns whether all lowered.
static bool run_stage_jobs(stage_job *jobs, int n) {
  int threads = stage_threads(n);
  pthread_t tid[MAX_STAGE_THREADS];
  stage_pool pool = {.jobs = jobs, .n = n};
  int started = 0;
  if (threads >= 2 && !dhx_timing_enabled()) {
    pthread_mutex_init(&pool.lock, NULL);
    while (started < threads && pthread_create(&tid[started], NULL, stage_worker, &pool) == 0)
      started++;
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&pool.lock);
  }
  if (started == 0) {
    for (int k = 0; k < n; k++) {
      lower_stage(&jobs[k], true);
      if (!jobs[k].ok) return false;
    }
    return true;
  }
  // What the stages reported, in stage order up to the first that failed (as one after the
  // other would have stopped there).
  FILE *out = dhx_diag.out ? dhx_diag.out : stderr;
  bool ok = true;
  for (int k = 0; k < n && ok; k++) {
    if (jobs[k].nreport) fwrite(jobs[k].report, 1, jobs[k].nreport, out);
    dhx_diag.errors += jobs[k].errors;
    dhx_diag.warnings += jobs[k].warnings;
    ok = jobs[k].ok;
  }
  for (int k = 0; k < n; k++) free(jobs[k].report);
  return ok;
}

// Gives the stage's kernels their places in the plan's table (`into`), in the stage's order.
static void merge_kernels(dhx_codegen *into, const stage_job *j, dhx_plan_rank *r) {
  int *map = malloc(sizeof(int) * (size_t)(dhx_codegen_count(j->cg) + 1));
  if (!map) abort();
  if (!dhx_codegen_merge(into, j->cg, map))
    DHX_ICE("stage %d: a kernel does not join the plan's table: %s", j->stage,
            dhx_codegen_error(into));
  bool same = true;  // (the first stage's kernels keep their places)
  for (int k = 0; k < dhx_codegen_count(j->cg) && same; k++) same = map[k] == k;
  for (int g = 0; g < DHX_PROG_COUNT && !same; g++)
    for (uint32_t i = 0; i < r->programs[g].ninstrs; i++) {
      dhx_plan_instr *in = &r->programs[g].instrs[i];
      if (in->kernel >= 0) in->kernel = map[in->kernel];
    }
  free(map);
}

static bool simulate_stages(const dhx_program *prog, const dhx_config *cfg,
                            const dhx_config *lowering, dhx_plan *p,
                            int (*comm_of)[DHX_COMM_ROLES], const dhx_cost_model *model,
                            dhx_ovl_memo *memo, dhx_graph *g, dhx_codegen *cg, double *flops) {
  stage_job *jobs = calloc((size_t)cfg->pp, sizeof *jobs);
  if (!jobs) abort();
  for (int s = 0; s < cfg->pp; s++) {
    jobs[s] = (stage_job){.prog = prog, .cfg = cfg, .lowering = lowering, .p = p,
                          .comm_of = comm_of, .model = model, .memo = memo,
                          .g = s == 0 ? g : NULL, .stage = s, .cg = dhx_codegen_new()};
    if (!jobs[s].cg) abort();
  }
  bool ok = run_stage_jobs(jobs, cfg->pp);
  for (int s = 0; s < cfg->pp && ok; s++) {
    int r00 = world_rank(cfg, 0, 0, s);
    merge_kernels(cg, &jobs[s], &p->ranks[r00]);
    for (int t = 0; t < cfg->tp; t++)
      for (int d = 0; d < cfg->dp; d++) {
        int r = world_rank(cfg, t, d, s);
        if (r != r00) share_rank(&p->ranks[r00], (uint32_t)r00, comm_of[r00], comm_of[r],
                                 &p->ranks[r]);
        set_coords(cfg, t, d, s, &p->ranks[r]);
      }
    *flops += cfg->tp * jobs[s].flops;
  }
  for (int s = 0; s < cfg->pp; s++) dhx_codegen_free(jobs[s].cg);
  free(jobs);
  return ok;
}

// What compiling `cfg` cannot lower; a simulation lowers bf16 precision as the f32 plan (the
// per-rank programs do not depend on the backend, and the cost model counts bf16's bytes).
static const char *refused(const dhx_config *cfg, bool simulating, const dhx_loc **at, char *buf,
                           size_t n) {
  dhx_config c = *cfg;
  if (simulating) {
    c.cluster_cpu = true;
    c.precision = DHX_PREC_F32;
  }
  const char *what = dhx_unlowered(&c, at, buf, n);
  const char *lo = (const char *)&c, *p = (const char *)*at;
  if (p >= lo && p < lo + sizeof c)  // a location inside the copy: the same field of cfg
    *at = (const dhx_loc *)((const char *)cfg + (p - lo));
  return what;
}

static bool compile(const dhx_program *prog, const dhx_config *cfg, bool simulating,
                    dhx_compiled *out) {
  memset(out, 0, sizeof *out);
  dhx_graph *g = &out->graph;
  dhx_timing_pass("analyze");
  if (!dhx_analyze(prog, cfg, g) || !paths_fit(cfg)) return false;
  char what[160];
  const dhx_loc *at;
  if (refused(cfg, simulating, &at, what, sizeof what)) {
    dhx_error_at(at, src_of(at), "%s is not implemented yet: this build lowers data, tensor, "
                 "sequence and pipeline parallelism, sharded data parallelism (zero: 1..3), paired "
                 "strands and compression in f32 or bf16, on CPU and GPU clusters ('dhxc check' checks "
                 "the program without lowering it)", what);
    return false;
  }

  dhx_plan *p = &out->plan;
  p->version = DHX_PLAN_VERSION;
  p->nranks = (uint32_t)(cfg->dp * cfg->tp * cfg->pp);
  p->ranks = calloc(p->nranks, sizeof(dhx_plan_rank));
  int (*comm_of)[DHX_COMM_ROLES] = malloc(sizeof *comm_of * p->nranks);
  out->cg = dhx_codegen_new();
  if (!p->ranks || !comm_of || !out->cg) abort();
  derive_comms(cfg, p, comm_of);

  // Each (tensor rank, stage) has its own program; the data-parallel replicas of it differ
  // only in their communicators and their slice of the batch, unless the optimizer state is
  // sharded (zero >= 1): then each replica updates its own share and is lowered on its own.
  double flops = 0;
  bool ok = true;
  dhx_cost_model model = dhx_cost_model_of_cluster(cfg, p);
  // A simulation lowers a bf16 program as the f32 plan: its cost model counts bf16's bytes
  // (cost_cluster.c), and its figures stay comparable with the published f32-lowered ones.
  dhx_config lowering = *cfg;
  if (simulating) lowering.precision = DHX_PREC_F32;
  dhx_ovl_memo *memo = calloc((size_t)cfg->pp, sizeof *memo);  // per stage
  if (!memo) abort();
  if (simulating) {
    ok = simulate_stages(prog, cfg, &lowering, p, comm_of, &model, memo, g, out->cg, &flops);
  } else {
    for (int s = 0; s < cfg->pp && ok; s++)
      for (int t = 0; t < cfg->tp && ok; t++) {
        bool first = s == 0 && t == 0;
        dhx_graph other, *gt = first ? g : &other;
        dhx_timing_pass("elaborate");
        if (!first) {
          dhx_graph_init(gt);
          ok = dhx_elaborate(prog, cfg->model_inst, cfg->micro_batch, gt);
        }
        int64_t arena = 0;
        int r0 = world_rank(cfg, t, 0, s);
        search_ctx sc = {&model, p, comm_of[r0], out->cg, &memo[s], true};
        ok = ok && lower_graph(&lowering, t, 0, s, gt, &arena, &sc);
        dhx_timing_pass("emit ranks");
        ok = ok && dhx_emit_rank(gt, arena, comm_of[r0], out->cg, &p->ranks[r0]);
        if (ok) {
          set_coords(cfg, t, 0, s, &p->ranks[r0]);
          for (int d = 1; d < cfg->dp && ok; d++) {
            int r = world_rank(cfg, t, d, s);
            // Each replica updates its own share, lowered on its own.
            search_ctx rsc = {&model, p, comm_of[r], out->cg, &memo[s], true};
            if (cfg->zero >= 1)
              ok = lower_replica(prog, &lowering, t, d, s, &rsc, &p->ranks[r]);
            else
              share_rank(&p->ranks[r0], (uint32_t)r0, comm_of[r0], comm_of[r], &p->ranks[r]);
            set_coords(cfg, t, d, s, &p->ranks[r]);
          }
          flops += stage_flops_of(cfg, gt);
        }
        if (!first) dhx_graph_free(gt);
      }
  }
  free(comm_of);
  for (int s = 0; s < cfg->pp; s++) {
    for (int k = 0; k < 3; k++) out->overlap_modelled_s[k] += memo[s].modelled[k];
    dhx_ovl_memo_free(&memo[s]);
  }
  free(memo);
  if (!ok) return false;
  fill_train(cfg, g, &p->train);
  p->train.flops_per_token = flops;
  p->nkernels = (uint32_t)dhx_codegen_count(out->cg);
  p->kernels = calloc(p->nkernels ? p->nkernels : 1, sizeof(dhx_plan_kernel));
  for (uint32_t k = 0; k < p->nkernels; k++) dhx_codegen_table_entry(out->cg, (int)k, &p->kernels[k]);
  char err[512];
  // A CPU rank has one core: where paired strands run free (search: none), dhxc orders their
  // compute. The overlap search's events order it already; turns on top of them made
  // bench/strands_cpu's aligned step 8% slower.
  dhx_timing_pass("turns");
  bool turns = cfg->cluster_cpu && cfg->strands_pair && cfg->strands_search == DHX_SEARCH_NONE;
  if (turns && !dhx_plan_assign_turns(p, &model, err, sizeof err))
    DHX_ICE("the ranks would hang: %s", err);

  // A simulation writes no plan: the format's limits and the checks of a runnable plan
  // (its replicas share programs a runnable plan cannot) are left to dhxc -o; the simulator
  // checks what it relies on and reports a hang itself.
  if (simulating) {
    dhx_timing_stop();
    return true;
  }
  dhx_timing_pass("validate");
  if (!dhx_plan_validate(p, err, sizeof err)) DHX_ICE("the compiled plan is invalid: %s", err);
  char overlap[1024];  // live buffers in shared bytes would corrupt each other at run time
  dhx_timing_pass("verify memory");
  if (!dhx_plan_verify_memory(p, overlap, sizeof overlap))
    DHX_ICE("the memory plan is unsafe: %s", overlap);
  char hang[2048];  // ranks that wait for each other forever: a lowering bug, not the user's
  dhx_timing_pass("verify ranks");
  if (!dhx_plan_verify_ranks(p, hang, sizeof hang)) DHX_ICE("the ranks would hang: %s", hang);
  dhx_timing_stop();
  dhx_rank_memory m;  // the ranks of a cpu cluster allocate their arenas in host memory
  dhx_plan_memory_of(g, p, &m);
  dhx_warn_host_memory(&m, cfg);
  return true;
}

bool dhx_compile(const dhx_program *prog, const dhx_config *cfg, dhx_compiled *out) {
  return compile(prog, cfg, false, out);
}

bool dhx_compile_for_simulation(const dhx_program *prog, const dhx_config *cfg,
                                dhx_compiled *out) {
  return compile(prog, cfg, true, out);
}

void dhx_compiled_free(dhx_compiled *c) {
  dhx_plan_free(&c->plan);
  if (c->cg) dhx_codegen_free(c->cg);
  dhx_graph_free(&c->graph);
}

// mkdir -p: the plan directory and any missing parents.
static bool make_dir(const char *dir) {
  char at[4096];
  switch (dhx_make_dir_path(dir, at, sizeof at)) {
    case DHX_DIRS_OK: return true;
    case DHX_DIRS_IN_THE_WAY: dhx_error("cannot create '%s': a file of that name is in the way", at); break;
    case DHX_DIRS_FAILED: dhx_error("cannot create '%s': %s", at, strerror(errno)); break;
  }
  return false;
}

typedef struct plan_writer {
  const dhx_plan *plan;
  char path[4096], err[1024];
  bool ok;
} plan_writer;

static void *write_plan_file(void *arg) {
  plan_writer *w = arg;
  w->ok = dhx_plan_write(w->path, w->plan, w->err, sizeof w->err);
  return NULL;
}

// The kernels for every target and plan.bin are written at the same time: at scale each takes
// a good part of dhxc's time, and they share nothing.
bool dhx_write_plan_dir(dhx_compiled *c, const char *dir) {
  if (!make_dir(dir)) return false;
  dhx_codegen_target targets[] = {{.cg = c->cg}, {.cg = c->cg, .sm = "sm_80"},
                                  {.cg = c->cg, .sm = "sm_90"}};
  snprintf(targets[0].path, sizeof targets[0].path, "%s/kernels.so", dir);
  snprintf(targets[1].path, sizeof targets[1].path, "%s/kernels.ptx", dir);
  snprintf(targets[2].path, sizeof targets[2].path, "%s/kernels.sm_90.ptx", dir);
  plan_writer w = {.plan = &c->plan};
  snprintf(w.path, sizeof w.path, "%s/plan.bin", dir);
  dhx_timing_pass("kernels (host, PTX) and plan.bin");
  pthread_t writer;
  bool threaded = pthread_create(&writer, NULL, write_plan_file, &w) == 0;
  if (!threaded) write_plan_file(&w);
  bool ok = dhx_codegen_emit_targets(targets, 3);
  if (threaded) pthread_join(writer, NULL);
  dhx_timing_stop();
  for (int i = 0; i < 3; i++)
    if (!targets[i].ok) dhx_error("%s: %s", targets[i].path, targets[i].err);
  if (!w.ok) dhx_error("%s: %s", w.path, w.err);
  return ok && w.ok;
}
