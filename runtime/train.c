// train.c — the training loop of dhxrun, the same on every rank:
//
//   read and validate the plan; check that the world has plan.nranks ranks
//   set up this rank: arena, kernels.so, worker and stream threads, token shards, communicators
//   initialise the parameters (or load them and the AdamW moments from --resume)
//   for each step t:
//       registers: learning rate and bias corrections of step t
//       run BEGIN                                   (zero gradients)
//       for each micro-batch m:
//           fill TOKENS/TARGETS with this rank's rows, run MICRO, add up LOSSES
//       run STEP                                    (all-reduce, clip, AdamW)
//       loss = sum over micro-batches and ranks / (global_batch * seq)
//       every val_every steps (and at the last): run EVAL over the first val_batches
//           micro-batches of the validation shard, dealt round-robin to the dp ranks
//       log, metrics, checkpoints
//
// Which rows a rank reads depends only on (step, micro-batch, dp rank), so runs at different
// data-parallel degrees see the same global batch, and a resumed run reads exactly what the
// uninterrupted one would have. --steps N stops early but the learning-rate schedule keeps
// the plan's length, so a short run is exactly a prefix of the full one.
//
// Errors: every rank reads the same files, so they usually all fail together; after each stage
// that can fail, the ranks agree (an all-reduce) and the lowest failing rank prints the message,
// so a problem is reported once and every rank exits 1.
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dhxrt.h"

#define ERR_MAX 8192

typedef struct run {
  const dhx_run_opts *opts;
  int rank, world;
  dhx_plan plan;
  const dhx_plan_train *t;
  dhx_rt rt;
  bool rt_ready;
  dhx_shard train, val;
  bool has_val;
  int32_t *tokens, *targets;  // this rank's TOKENS / TARGETS buffers (NULL if absent)
  const float *losses;        // LOSSES buffer (NULL if absent)
  FILE *metrics;
  int64_t first_step, end_step;  // steps [first, end) run here (0-based)
  char err[ERR_MAX];
} run;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// All ranks call this at the same points. If any rank failed, the lowest failing one prints
// its message and every rank gets false.
static bool agree(run *R, bool ok) {
  int mine = ok ? INT_MAX : R->rank, first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == INT_MAX) return true;
  if (first == R->rank) fprintf(stderr, "dhxrun: error: %s\n", R->err);
  return false;
}

// ---- set-up -----------------------------------------------------------------------------------

static bool read_plan(run *R) {
  char path[4096];
  snprintf(path, sizeof path, "%s/plan.bin", R->opts->plan_dir);
  if (!dhx_plan_read(path, &R->plan, R->err, sizeof R->err)) return false;
  R->t = &R->plan.train;
  if ((uint32_t)R->world != R->plan.nranks) {
    snprintf(R->err, sizeof R->err, "%s: the plan is for %u ranks, but %d were started (run "
             "it with mpirun -np %u)", path, R->plan.nranks, R->world, R->plan.nranks);
    return false;
  }
  return true;
}

// Worker threads per rank: the cores this process may use when it is bound to a subset (mpirun
// binds small jobs to cores), otherwise the node's cores shared among its ranks.
static int default_threads(void) {
  MPI_Comm node;
  int local = 1;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online < 1) online = 1;
  cpu_set_t set;
  long allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
  long threads = allowed < online ? allowed : online / local;
  return threads < 1 ? 1 : (int)threads;
}

static bool open_data(run *R) {
  const char *train = R->opts->train_path ? R->opts->train_path : R->t->train_path;
  const char *val = R->opts->val_path ? R->opts->val_path : R->t->val_path;
  if (!train[0]) {
    snprintf(R->err, sizeof R->err, "no training data: the plan names none and --train was not "
             "given");
    return false;
  }
  if (!dhx_shard_open(&R->train, train, R->t->seq, R->t->vocab, R->err, sizeof R->err))
    return false;
  R->has_val = val[0] != 0;
  return !R->has_val || dhx_shard_open(&R->val, val, R->t->seq, R->t->vocab, R->err, sizeof R->err);
}

static void find_io_buffers(run *R) {
  int32_t tok = dhx_rt_find(&R->rt, DHX_BUF_TOKENS), tgt = dhx_rt_find(&R->rt, DHX_BUF_TARGETS);
  int32_t loss = dhx_rt_find(&R->rt, DHX_BUF_LOSSES);
  R->tokens = tok >= 0 && tgt >= 0 ? dhx_rt_buffer(&R->rt, tok) : NULL;
  R->targets = tok >= 0 && tgt >= 0 ? dhx_rt_buffer(&R->rt, tgt) : NULL;
  R->losses = loss >= 0 ? dhx_rt_buffer(&R->rt, loss) : NULL;
}

static bool make_dirs(const char *dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(path, 0755) != 0 && errno != EEXIST) break;
    *p = '/';
  }
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "%s: cannot create the checkpoint directory: %s", dir, strerror(errno));
    return false;
  }
  return true;
}

// Rank 0 alone writes metrics and checkpoints.
static bool open_outputs(run *R) {
  if (R->rank != 0) return true;
  if (R->opts->metrics_path) {
    R->metrics = fopen(R->opts->metrics_path, "w");
    if (!R->metrics) {
      snprintf(R->err, sizeof R->err, "%s: cannot create the metrics file: %s",
               R->opts->metrics_path, strerror(errno));
      return false;
    }
  }
  return !R->opts->checkpoint_dir || make_dirs(R->opts->checkpoint_dir, R->err, sizeof R->err);
}

static bool setup(run *R) {
  if (!agree(R, read_plan(R))) return false;
  int threads = R->opts->threads > 0 ? R->opts->threads : default_threads();
  char so[4096];
  snprintf(so, sizeof so, "%s/kernels.so", R->opts->plan_dir);
  R->rt_ready = true;  // dhx_rt_free is safe on a partly initialised runtime
  bool ok = dhx_rt_init(&R->rt, &R->plan, R->rank, so, threads, R->err, sizeof R->err);
  if (!agree(R, ok && open_data(R))) return false;
  dhx_rt_connect(&R->rt);
  find_io_buffers(R);

  dhx_init_params(&R->rt, R->t->seed);
  R->first_step = 0;
  R->end_step = R->opts->steps > 0 ? R->opts->steps : R->t->steps;
  ok = !R->opts->resume_path ||
       dhx_checkpoint_load(&R->plan, (uint32_t)R->rank, R->rt.arena.base, R->opts->resume_path,
                           &R->first_step, R->err, sizeof R->err);
  return agree(R, ok) && agree(R, open_outputs(R));
}

static void print_header(const run *R) {
  if (R->rank != 0 || R->opts->quiet) return;
  printf("dhxrun: %s | %u ranks x %d threads | %" PRId64 " params | %" PRId64 " tokens/step | "
         "steps %" PRId64 "..%" PRId64 " of %" PRId64 "\n", R->t->model_name, R->plan.nranks,
         R->rt.threads, R->t->n_params, R->t->global_batch * R->t->seq, R->first_step + 1,
         R->end_step, R->t->steps);
  fflush(stdout);
}

// ---- one step ---------------------------------------------------------------------------------

// Fills TOKENS/TARGETS with micro_batch consecutive rows starting at global row `row`.
static void load_rows(run *R, const dhx_shard *s, int64_t row) {
  if (!R->tokens) return;
  int64_t seq = R->t->seq;
  for (int64_t b = 0; b < R->t->micro_batch; b++)
    dhx_shard_row(s, row + b, seq, R->tokens + b * seq, R->targets + b * seq);
}

static double sum_losses(const run *R) {
  double sum = 0;
  if (R->losses)
    for (int64_t i = 0; i < R->t->micro_batch * R->t->seq; i++) sum += R->losses[i];
  return sum;
}

static double all_sum(double x) {
  double total = 0;
  MPI_Allreduce(&x, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

// Forward, backward and update of step t; returns the mean loss over the global batch.
static double train_step(run *R, int64_t t) {
  const dhx_plan_train *tr = R->t;
  int64_t dp = R->rt.rank->dp_size, dp_rank = R->rt.rank->dp_rank;
  dhx_set_step_registers(tr, t, R->rt.regs);
  dhx_rt_run(&R->rt, DHX_PROG_BEGIN);
  double loss = 0;
  for (int64_t m = 0; m < tr->accum_steps; m++) {
    load_rows(R, &R->train, t * tr->global_batch + (m * dp + dp_rank) * tr->micro_batch);
    dhx_rt_run(&R->rt, DHX_PROG_MICRO);
    loss += sum_losses(R);
  }
  dhx_rt_run(&R->rt, DHX_PROG_STEP);
  return all_sum(loss) / (double)(tr->global_batch * tr->seq);
}

// Mean loss over the first val_batches micro-batches of the validation shard. They are dealt
// round-robin to the data-parallel ranks, so the same rows are evaluated at every dp degree
// and val_loss does not depend on the layout (EVAL holds no collectives, so ranks may run
// different counts).
static double evaluate(run *R) {
  const dhx_plan_train *tr = R->t;
  int64_t dp = R->rt.rank->dp_size, dp_rank = R->rt.rank->dp_rank;
  double loss = 0;
  for (int64_t v = dp_rank; v < tr->val_batches; v += dp) {
    load_rows(R, &R->val, v * tr->micro_batch);
    dhx_rt_run(&R->rt, DHX_PROG_EVAL);
    loss += sum_losses(R);
  }
  return all_sum(loss) / (double)(tr->val_batches * tr->micro_batch * tr->seq);
}

static bool eval_due(const run *R, int64_t t) {
  const dhx_plan_train *tr = R->t;
  return R->has_val && tr->val_every > 0 && tr->val_batches > 0 &&
         ((t + 1) % tr->val_every == 0 || t == R->end_step - 1);
}

static bool log_due(const run *R, int64_t t, bool evaluated) {
  int64_t every = R->t->log_every;
  return R->rank == 0 && !R->opts->quiet &&
         (every <= 1 || (t + 1) % every == 0 || t == R->first_step || t == R->end_step - 1 ||
          evaluated);
}

// Checkpoints after step t (t+1 steps done): every checkpoint_every steps into
// --checkpoint-dir. Collective so a failure on rank 0 stops every rank.
static bool save_checkpoints(run *R, int64_t t) {
  int64_t every = R->t->checkpoint_every;
  if (!R->opts->checkpoint_dir || every <= 0 || (t + 1) % every != 0) return true;
  bool ok = true;
  if (R->rank == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/step_%" PRId64 ".safetensors", R->opts->checkpoint_dir, t + 1);
    ok = dhx_checkpoint_save(&R->plan, 0, R->rt.arena.base, path, t + 1, R->err, sizeof R->err);
  }
  return agree(R, ok);
}

static bool train_loop(run *R) {
  const dhx_plan_train *tr = R->t;
  for (int64_t t = R->first_step; t < R->end_step; t++) {
    double start = now();
    dhx_step_metrics m = {.step = t + 1, .steps = R->end_step};
    m.loss = train_step(R, t);
    double seconds = now() - start;
    m.step_ms = 1e3 * seconds;
    m.tokens_per_s = (double)(tr->global_batch * tr->seq) / seconds;
    m.comm_bytes = dhx_comms_take_bytes(R->rt.comms);
    m.lr = R->rt.regs[DHX_REG_LR];
    m.grad_norm = R->rt.regs[DHX_REG_GRAD_NORM];
    if (eval_due(R, t)) {
      m.val_loss = evaluate(R);
      m.has_val = true;
    }
    if (R->metrics) dhx_metrics_write(R->metrics, &m);
    if (log_due(R, t, m.has_val)) dhx_log_step(stdout, &m);
    if (!save_checkpoints(R, t)) return false;
  }
  bool ok = true;
  if (R->opts->save_path && R->rank == 0)
    ok = dhx_checkpoint_save(&R->plan, 0, R->rt.arena.base, R->opts->save_path,
                             R->end_step > R->first_step ? R->end_step : R->first_step, R->err,
                             sizeof R->err);
  return agree(R, ok);
}

static void teardown(run *R) {
  if (R->metrics) fclose(R->metrics);
  dhx_shard_close(&R->train);
  dhx_shard_close(&R->val);
  if (R->rt_ready) dhx_rt_free(&R->rt);
  dhx_plan_free(&R->plan);
}

int dhx_train(const dhx_run_opts *opts) {
  run *R = calloc(1, sizeof *R);
  if (!R) MPI_Abort(MPI_COMM_WORLD, 1);
  R->opts = opts;
  MPI_Comm_rank(MPI_COMM_WORLD, &R->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &R->world);
  bool ok = setup(R);
  if (ok) {
    print_header(R);
    ok = train_loop(R);
  }
  teardown(R);
  free(R);
  return ok ? 0 : 1;
}
