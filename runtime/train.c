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
//       the ranks agree on whether a stop signal arrived: if so, checkpoint and stop
//   print the summary (and append it to the metrics file)
//
// Which rows a rank reads depends only on (step, micro-batch, dp rank), so runs at different
// data-parallel degrees see the same global batch, and a resumed run reads exactly what the
// uninterrupted one would have. --steps N stops early but the learning-rate schedule keeps
// the plan's length, so a short run is exactly a prefix of the full one.
//
// Errors: every rank reads the same files, so they usually all fail together; after each stage
// that can fail, the ranks agree (an all-reduce) and the lowest failing rank prints the message,
// so a problem is reported once and every rank exits 1. Everything that can fail before
// training (outputs, memory, inputs) is checked before step 1 (preflight.c); a rank that stops
// responding during training is the watchdog's (watchdog.c).
//
// Exit status: 0 when the run finished; 1 on an error (a non-finite loss included); 128+N when
// stopped by signal N (130 for SIGINT), after the checkpoint was written.
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dhxrt.h"
#include "safetensors.h"  // XXH64

#define ERR_MAX 8192

#define ERR_MAX 8192
#define MIN_STEP_TIMEOUT 300.0  // seconds; the automatic timeout is never shorter
#define STEP_TIMEOUT_FACTOR 20  // ... and at least this many times the slowest step so far

typedef struct run {
  const dhx_run_opts *opts;
  int rank, world, ranks_on_node;
  dhx_plan plan;
  const dhx_plan_train *t;
  dhx_rt rt;
  bool rt_ready;
  dhx_shard train, val;
  bool has_val;
  int32_t *tokens, *targets;  // this rank's TOKENS / TARGETS buffers (NULL if absent)
  const float *losses;        // LOSSES buffer (NULL if absent)
  int32_t tokens_buf, targets_buf, losses_buf;  // their ids (-1 if absent), for the device copies
  // A step's losses, copied out after each MICRO and added up after STEP, so the host does not
  // wait for the device inside a step (page-locked on the CUDA backend).
  float *loss_stash;
  // On the CUDA backend the gradient norm stays on the device: the GRAD_NORM instruction's norm
  // slot (buffer, byte offset), copied out after STEP for the metrics.
  float *norm_stash;
  int32_t norm_buf;
  int64_t norm_at;
  int64_t step;               // the step being run (LOAD_BATCH reads its rows)
  FILE *metrics;
  char checkpoint_dir[4096];  // "" when no periodic checkpoints
  char resume_path[4096];     // the checkpoint resumed from ("" when none)
  int64_t first_step, end_step;  // steps [first, end) run here (0-based)
  dhx_watchdog *watchdog;
  dhx_trace *trace;  // --trace; NULL when absent
  // what the summary reports
  int64_t done_step;  // steps completed (0-based end of what was run)
  int64_t skipped;
  double *step_tokens_per_s;
  double train_seconds, last_loss, last_val;
  bool has_last_val;
  char written[8][4096];
  int nwritten;
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

static void note_written(run *R, const char *path) {
  for (int i = 0; i < R->nwritten; i++)
    if (strcmp(R->written[i], path) == 0) return;
  if (R->nwritten < 8) snprintf(R->written[R->nwritten++], sizeof R->written[0], "%s", path);
}

// ---- set-up -----------------------------------------------------------------------------------

static bool read_plan(run *R) {
  char path[4096];
  snprintf(path, sizeof path, "%s/plan.bin", R->opts->plan_dir);
  if (!dhx_plan_read(path, &R->plan, R->err, sizeof R->err)) return false;
  R->t = &R->plan.train;
  if (R->opts->net_override) {  // before the communicators read it
    R->plan.train.net_bandwidth = R->opts->net_bandwidth;
    R->plan.train.net_latency = R->opts->net_latency;
  }
  if ((uint32_t)R->world != R->plan.nranks) {
    snprintf(R->err, sizeof R->err, "%s: the plan is for %u ranks, but %d were started (run "
             "it with mpirun -np %u)", path, R->plan.nranks, R->world, R->plan.nranks);
    return false;
  }
  return true;
}

// Worker threads per rank: the cores this process may use when it is bound to a subset (mpirun
// binds small jobs to cores), otherwise the node's cores shared among its ranks.
static int default_threads(const run *R) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online < 1) online = 1;
  cpu_set_t set;
  long allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
  long threads = allowed < online ? allowed : online / R->ranks_on_node;
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

// LOAD_BATCH of the step being run (a pipeline's MICRO loads its own micro-batches).
static void load_batch(void *ctx, int64_t m, int32_t *tokens, int32_t *targets) {
  run *R = ctx;
  const dhx_plan_train *tr = R->t;
  int64_t dp = R->rt.rank->dp_size, dp_rank = R->rt.rank->dp_rank, seq = tr->seq;
  int64_t row = R->step * tr->global_batch + (m * dp + dp_rank) * tr->micro_batch;
  for (int64_t b = 0; b < tr->micro_batch; b++)
    dhx_shard_row(&R->train, row + b, seq, tokens + b * seq, targets + b * seq);
}

static void find_io_buffers(run *R) {
  int32_t tok = dhx_rt_find(&R->rt, DHX_BUF_TOKENS), tgt = dhx_rt_find(&R->rt, DHX_BUF_TARGETS);
  int32_t loss = dhx_rt_find(&R->rt, DHX_BUF_LOSSES);
  R->tokens = tok >= 0 && tgt >= 0 ? dhx_rt_buffer(&R->rt, tok) : NULL;
  R->targets = tok >= 0 && tgt >= 0 ? dhx_rt_buffer(&R->rt, tgt) : NULL;
  R->losses = loss >= 0 ? dhx_rt_buffer(&R->rt, loss) : NULL;
  R->tokens_buf = R->tokens ? tok : -1;
  R->targets_buf = R->tokens ? tgt : -1;
  R->losses_buf = loss;
  const dhx_plan_train *tr = R->t;
  if (loss >= 0)
    R->loss_stash = dhx_rt_host_alloc(&R->rt, sizeof(float) * (size_t)(tr->accum_steps *
                                                                      tr->micro_batch * tr->seq));
  R->norm_buf = -1;
  const dhx_plan_program *step = &R->rt.rank->programs[DHX_PROG_STEP];
  for (uint32_t i = 0; i < step->ninstrs && dhx_rt_on_device(&R->rt); i++)
    if (step->instrs[i].op == DHX_OP_GRAD_NORM) {
      R->norm_buf = step->instrs[i].args[1].buf;
      R->norm_at = step->instrs[i].args[1].i;
      R->norm_stash = dhx_rt_host_alloc(&R->rt, sizeof(float));
    }
}

// Periodic checkpoints go to --checkpoint-dir, or to PLAN_DIR/checkpoints when the plan asks
// for them (train.checkpoint_every) and no directory was given: asked-for checkpoints are
// never silently dropped.
static void choose_checkpoint_dir(run *R) {
  const dhx_run_opts *o = R->opts;
  bool latest = o->resume_path && strcmp(o->resume_path, "latest") == 0;
  if (o->checkpoint_dir)
    snprintf(R->checkpoint_dir, sizeof R->checkpoint_dir, "%s", o->checkpoint_dir);
  else if (R->t->checkpoint_every > 0 || latest)
    snprintf(R->checkpoint_dir, sizeof R->checkpoint_dir, "%s/checkpoints", o->plan_dir);
}

// Every location this run will write is created and proven writable before any work is done.
// Rank 0 alone writes metrics and checkpoints.
static bool check_outputs(run *R) {
  const dhx_run_opts *o = R->opts;
  if (R->rank != 0) return true;
  if (o->save_path && !dhx_prepare_output_file(o->save_path, "--save checkpoint", R->err, sizeof R->err))
    return false;
  if (o->metrics_path && !dhx_prepare_output_file(o->metrics_path, "metrics file", R->err, sizeof R->err))
    return false;
  if (o->trace_path &&
      !dhx_prepare_output_file(o->trace_path, "trace file", R->err, sizeof R->err))
    return false;
  if (o->profile_path &&
      !dhx_prepare_output_file(o->profile_path, "profile", R->err, sizeof R->err))
    return false;
  return !R->checkpoint_dir[0] ||
         dhx_make_dirs(R->checkpoint_dir, "checkpoint directory", R->err, sizeof R->err);
}

static bool check_memory(run *R) {
  return dhx_check_host_memory(R->plan.ranks[R->rank].arena_bytes, R->ranks_on_node, R->err,
                               sizeof R->err);
}

// --resume latest: the newest checkpoint of the directory that verifies (rank 0 looks, and
// tells the others which one, so every rank loads the same file).
static bool find_latest(run *R) {
  bool ok = true;
  if (R->rank == 0)
    ok = dhx_checkpoint_latest(R->checkpoint_dir, &R->plan, 0, R->resume_path,
                               sizeof R->resume_path, stderr, R->err, sizeof R->err);
  if (!agree(R, ok)) return false;
  MPI_Bcast(R->resume_path, (int)sizeof R->resume_path, MPI_CHAR, 0, MPI_COMM_WORLD);
  return true;
}

// A checkpoint with NaN or infinite parameters would train on garbage: refused by name.
static bool params_finite(run *R) {
  const dhx_plan_rank *r = R->rt.rank;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    if (b->kind != DHX_BUF_PARAM || b->dtype != DHX_F32) continue;
    const float *p = dhx_rt_buffer(&R->rt, (int32_t)i);
    for (int64_t k = 0; k < b->nbytes / 4; k++)
      if (!isfinite(p[k])) {
        snprintf(R->err, sizeof R->err, "%s: parameter '%s' holds a non-finite value (%g at "
                 "element %" PRId64 "): the checkpoint comes from a diverged run",
                 R->resume_path[0] ? R->resume_path : R->opts->init_path, b->name, (double)p[k], k);
        return false;
      }
  }
  return true;
}

// Parameters: initialised from the plan's seed, then --init (weights only) or --resume
// (weights, moments and the step).
static bool load_state(run *R) {
  const dhx_run_opts *o = R->opts;
  dhx_init_params(&R->rt, R->t->seed);
  R->first_step = 0;
  if (o->init_path && o->resume_path) {
    snprintf(R->err, sizeof R->err, "--init and --resume exclude each other (--init starts a "
             "new run from weights; --resume continues one)");
    return agree(R, false);
  }
  if (o->resume_path && strcmp(o->resume_path, "latest") == 0) {
    if (!find_latest(R)) return false;
  } else if (o->resume_path) {
    snprintf(R->resume_path, sizeof R->resume_path, "%s", o->resume_path);
  }
  bool ok = true;
  if (R->resume_path[0])
    ok = dhx_checkpoint_load(&R->plan, (uint32_t)R->rank, R->rt.arena.base, R->resume_path,
                             &R->first_step, R->err, sizeof R->err);
  else if (o->init_path)
    ok = dhx_checkpoint_load_weights(&R->plan, (uint32_t)R->rank, R->rt.arena.base,
                                     o->init_path, R->err, sizeof R->err);
  if (!agree(R, ok)) return false;
  if ((R->resume_path[0] || o->init_path) && !agree(R, params_finite(R))) return false;
  return true;
}

static bool open_metrics(run *R) {
  if (R->rank != 0 || !R->opts->metrics_path) return true;
  R->metrics = dhx_metrics_open(R->opts->metrics_path, R->resume_path[0] ? R->first_step : 0,
                                R->err, sizeof R->err);
  if (R->metrics) note_written(R, R->opts->metrics_path);
  return R->metrics != NULL;
}

// --trace and --profile: buffers sized for the window, attached to the streams (trace.c does
// the rest). A profile's default window leaves out the first step, whose first touches of
// memory and cold caches are not what the plan's instructions cost.
static bool start_trace(run *R) {
  const dhx_run_opts *o = R->opts;
  int64_t first = o->trace_first, last = o->trace_last;
  if (!first && o->profile_path) {
    first = R->end_step - R->first_step >= 2 ? R->first_step + 2 : R->first_step + 1;
    last = first + 7 < R->end_step ? first + 7 : R->end_step;
  }
  R->trace = dhx_trace_new(&R->plan, R->rank, first, last, R->first_step, R->end_step,
                           R->has_val, R->err, sizeof R->err);
  if (R->trace) dhx_streams_trace(R->rt.streams, R->trace);
  return R->trace != NULL;
}

// Collective: rank 0 writes every rank's records, whatever way the loop ended.
static bool write_trace(run *R) {
  const dhx_run_opts *o = R->opts;
  bool ok = true;
  if (o->trace_path) {
    ok = dhx_trace_write(R->trace, o->trace_path, R->err, sizeof R->err);
    if (ok && R->rank == 0) note_written(R, o->trace_path);
  }
  if (o->profile_path) {
    bool wrote = dhx_profile_write(R->trace, &R->plan, R->rank, o->profile_path, o->plan_dir,
                                   R->plan.train.net_bandwidth, R->plan.train.net_latency,
                                   R->err, sizeof R->err);
    if (wrote && R->rank == 0) note_written(R, o->profile_path);
    ok = ok && wrote;
  }
  return agree(R, ok);
}

static bool setup(run *R) {
  if (!agree(R, read_plan(R))) return false;
  R->ranks_on_node = dhx_ranks_on_node();
  choose_checkpoint_dir(R);
  if (!agree(R, check_outputs(R))) return false;
  if (!agree(R, check_memory(R))) return false;
  int threads = R->opts->threads > 0 ? R->opts->threads : default_threads(R);
  char so[4096];
  snprintf(so, sizeof so, "%s/kernels.so", R->opts->plan_dir);
  R->rt_ready = true;  // dhx_rt_free is safe on a partly initialised runtime
  bool ok = dhx_rt_init(&R->rt, &R->plan, R->rank, so, threads, R->err, sizeof R->err);
  R->rt.load_batch = load_batch;
  R->rt.load_ctx = R;
  if (ok && R->opts->cuda_device >= 0)
    ok = dhx_rt_use_cuda(&R->rt, R->opts->cuda_device, R->opts->plan_dir, R->err, sizeof R->err);
  if (!agree(R, ok && open_data(R))) return false;
  dhx_rt_connect(&R->rt);
  if (!agree(R, dhx_rt_connect_device(&R->rt, R->err, sizeof R->err))) return false;
  find_io_buffers(R);
  if (!load_state(R)) return false;
  dhx_rt_upload_all(&R->rt);  // the initial state, on the device when the plan runs on one
  R->end_step = R->opts->steps > 0 ? R->opts->steps : R->t->steps;
  if (R->first_step >= R->end_step) {
    snprintf(R->err, sizeof R->err, "%s holds %" PRId64 " steps: nothing is left to run up to "
             "step %" PRId64, R->resume_path, R->first_step, R->end_step);
    return agree(R, false);
  }
  R->step_tokens_per_s = calloc((size_t)(R->end_step - R->first_step), sizeof(double));
  if (!R->step_tokens_per_s) MPI_Abort(MPI_COMM_WORLD, 1);
  if (!agree(R, open_metrics(R))) return false;
  if ((R->opts->trace_path || R->opts->profile_path) && !agree(R, start_trace(R))) return false;
  if (R->rank == 0)
    dhx_warn_configuration(stderr, R->t, &R->train, &R->val, R->has_val,
                           R->end_step - R->first_step);
  return true;
}

static void print_header(const run *R) {
  if (R->rank != 0 || R->opts->quiet) return;
  printf("dhxrun: %s | %u ranks x %d threads | %" PRId64 " params | %" PRId64 " tokens/step | "
         "steps %" PRId64 "..%" PRId64 " of %" PRId64 "\n", R->t->model_name, R->plan.nranks,
         R->rt.threads, R->t->n_params, R->t->global_batch * R->t->seq, R->first_step + 1,
         R->end_step, R->t->steps);
  if ((R->t->net_bandwidth > 0 || R->opts->net_override) && !dhx_rt_on_device(&R->rt)) {
    char net[160];
    const char *source = !R->opts->net_override  ? "the plan's cluster"
                         : R->t->net_bandwidth > 0 ? "--net-emulate"
                                                   : "--net-emulate off";
    dhx_describe_net(R->t->net_bandwidth, R->t->net_latency, source, net, sizeof net);
    printf("%s\n", net);
  }
  if (R->resume_path[0]) printf("dhxrun: resuming from %s\n", R->resume_path);
  if (R->opts->init_path) printf("dhxrun: weights from %s (fresh optimizer state)\n", R->opts->init_path);
  if (R->checkpoint_dir[0] && R->t->checkpoint_every > 0)
    printf("dhxrun: a checkpoint every %" PRId64 " steps in %s\n", R->t->checkpoint_every,
           R->checkpoint_dir);
  fflush(stdout);
}

// ---- one step ---------------------------------------------------------------------------------

// Fills TOKENS/TARGETS with micro_batch consecutive rows starting at global row `row`.
static void load_rows(run *R, const dhx_shard *s, int64_t row) {
  if (!R->tokens) return;
  int64_t seq = R->t->seq;
  for (int64_t b = 0; b < R->t->micro_batch; b++)
    dhx_shard_row(s, row + b, seq, R->tokens + b * seq, R->targets + b * seq);
  dhx_rt_upload(&R->rt, R->tokens_buf);
  dhx_rt_upload(&R->rt, R->targets_buf);
}

// The sum of the first `batches` micro-batches' per-position losses.
static double sum_losses(run *R, int64_t batches) {
  dhx_rt_download(&R->rt, R->losses_buf);
  double sum = 0;
  if (R->losses)
    for (int64_t i = 0; i < batches * R->t->micro_batch * R->t->seq; i++) sum += R->losses[i];
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
  dhx_watchdog_mark(R->watchdog, t, DHX_PHASE_COMPUTE);
  dhx_rt_run(&R->rt, DHX_PROG_BEGIN);
  R->step = t;
  int64_t per_run = tr->micro_per_run * tr->micro_batch * tr->seq, runs = 0;
  bool losses = R->rt.rank->reports_loss && R->loss_stash;
  for (int64_t m = 0; m < tr->accum_steps; m += tr->micro_per_run, runs++) {
    if (tr->micro_per_run == 1)
      load_rows(R, &R->train, t * tr->global_batch + (m * dp + dp_rank) * tr->micro_batch);
    dhx_rt_run(&R->rt, DHX_PROG_MICRO);
    if (losses)
      dhx_rt_stash(&R->rt, R->losses_buf, 0, per_run * (int64_t)sizeof(float),
                   R->loss_stash + runs * per_run);
  }
  dhx_watchdog_mark(R->watchdog, t, DHX_PHASE_UPDATE);
  dhx_rt_run(&R->rt, DHX_PROG_STEP);
  if (R->norm_stash) dhx_rt_stash(&R->rt, R->norm_buf, R->norm_at, sizeof(float), R->norm_stash);
  dhx_rt_finish(&R->rt);  // the device has done the step: its losses and norm are here
  if (R->norm_stash) R->rt.regs[DHX_REG_GRAD_NORM] = *R->norm_stash;
  double loss = 0;
  for (int64_t r = 0; r < runs && losses; r++) {  // per run in double, as the runs came
    double sum = 0;
    for (int64_t i = 0; i < per_run; i++) sum += R->loss_stash[r * per_run + i];
    loss += sum;
  }
  return all_sum(loss) / (double)(tr->global_batch * tr->seq);
}

// Mean loss over the first val_batches micro-batches of the validation shard. They are dealt
// round-robin to the data-parallel ranks, so the same rows are evaluated at every dp degree
// and val_loss does not depend on the layout. Data-parallel replicas may run different counts:
// EVAL's only collectives are inside a tensor-parallel group, whose ranks share a dp_rank,
// except with sharded parameters (zero 3), whose EVAL gathers them over the data-parallel
// group: then every replica runs the same number of EVALs, the extra ones on batch 0 and not
// counted.
static double evaluate(run *R, int64_t t) {
  const dhx_plan_train *tr = R->t;
  int64_t dp = R->rt.rank->dp_size, dp_rank = R->rt.rank->dp_rank;
  int64_t end = tr->zero >= 3 ? (tr->val_batches + dp - 1) / dp * dp : tr->val_batches;
  dhx_watchdog_mark(R->watchdog, t, DHX_PHASE_EVAL);
  double loss = 0;
  for (int64_t v = dp_rank; v < end; v += dp) {
    bool counted = v < tr->val_batches;
    load_rows(R, &R->val, (counted ? v : 0) * tr->micro_batch);
    dhx_rt_run(&R->rt, DHX_PROG_EVAL);
    if (counted && R->rt.rank->reports_loss) loss += sum_losses(R, 1);
  }
  return all_sum(loss) / (double)(tr->val_batches * tr->micro_batch * tr->seq);
}

static bool eval_due(const run *R, int64_t t) {
  const dhx_plan_train *tr = R->t;
  return R->has_val && tr->val_every > 0 && tr->val_batches > 0 &&
         ((t + 1) % tr->val_every == 0 || t == R->end_step - 1);
}

// Once a stop signal is pending, stdout may be a pipe that mpirun no longer reads: the rest of
// the way to the checkpoint writes nothing there.
static bool log_due(const run *R, int64_t t, bool evaluated) {
  int64_t every = R->t->log_every;
  return R->rank == 0 && !R->opts->quiet && !dhx_interrupt_pending() &&
         (every <= 1 || (t + 1) % every == 0 || t == R->first_step || t == R->end_step - 1 ||
          evaluated);
}

// The state after `steps` steps goes to `path` (rank 0 writes it, gathering the other ranks'
// slices of the model); collective, so a failure on rank 0 stops every rank.
static bool save_to(run *R, const char *path, int64_t steps) {
  bool ok = true;
  dhx_watchdog_busy(R->watchdog, true);  // a large checkpoint may take longer than a step
  dhx_rt_download_all(&R->rt);
  ok = dhx_checkpoint_save_all(&R->plan, (uint32_t)R->rank, R->rt.arena.base, path, steps,
                               R->err, sizeof R->err);
  if (ok && R->rank == 0) note_written(R, path);
  ok = agree(R, ok);
  dhx_watchdog_busy(R->watchdog, false);
  return ok;
}

static void checkpoint_path(const run *R, int64_t steps, char *path, size_t len) {
  snprintf(path, len, "%s/step_%" PRId64 ".safetensors", R->checkpoint_dir, steps);
}

// Checkpoints after step t (t+1 steps done): every checkpoint_every steps.
static bool save_periodic(run *R, int64_t t) {
  int64_t every = R->t->checkpoint_every;
  if (!R->checkpoint_dir[0] || every <= 0 || (t + 1) % every != 0) return true;
  char path[4200];
  checkpoint_path(R, t + 1, path, sizeof path);
  return save_to(R, path, t + 1);
}

// Stopped by a signal after `steps` steps: the state goes to the checkpoint directory and to
// --save, wherever the user asked for one.
static bool save_on_interrupt(run *R, int64_t steps, int sig, int from_rank) {
  char path[4200] = "";
  bool ok = true;
  if (R->checkpoint_dir[0]) {
    checkpoint_path(R, steps, path, sizeof path);
    bool periodic = R->t->checkpoint_every > 0 && steps % R->t->checkpoint_every == 0;
    if (!periodic) ok = save_to(R, path, steps);
  }
  if (ok && R->opts->save_path) ok = save_to(R, R->opts->save_path, steps);
  if (R->rank == 0) {
    const char *where = R->opts->save_path ? R->opts->save_path : path;
    if (ok && where[0])
      fprintf(stderr, "dhxrun: stopped by %s (rank %d) after step %" PRId64 "; checkpoint "
              "written to %s (resume with --resume %s)\n", dhx_signal_name(sig), from_rank, steps,
              where, R->checkpoint_dir[0] && !R->opts->save_path ? "latest" : where);
    else if (ok)
      fprintf(stderr, "dhxrun: stopped by %s (rank %d) after step %" PRId64 "; no checkpoint "
              "written (give --checkpoint-dir or --save to keep the work)\n",
              dhx_signal_name(sig), from_rank, steps);
  }
  return ok;
}

// The automatic watchdog timeout: generous, and growing with the slowest step seen.
static void update_timeout(run *R, double slowest) {
  if (R->opts->step_timeout > 0) return;
  double timeout = STEP_TIMEOUT_FACTOR * slowest;
  dhx_watchdog_set_timeout(R->watchdog, timeout > MIN_STEP_TIMEOUT ? timeout : MIN_STEP_TIMEOUT);
}

// The mean over ranks of the bytes of each kind that each sent to other nodes this step, for
// rank 0's metrics: a ring's hops cross nodes at some ranks only, so one rank's count says
// little. Every rank calls it after every step (a collective); with one node there is nothing.
static void inter_node_mean(const dhx_plan_train *tr, dhx_comms *cs,
                            uint64_t out[DHX_WIRE_KINDS]) {
  uint64_t mine[DHX_WIRE_KINDS];
  for (int k = 0; k < DHX_WIRE_KINDS; k++) {
    mine[k] = dhx_comms_take_inter_node_bytes(cs, k);
    out[k] = 0;
  }
  if (tr->per_node <= 0) return;
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  MPI_Reduce(mine, out, DHX_WIRE_KINDS, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  for (int k = 0; k < DHX_WIRE_KINDS; k++) out[k] /= (uint64_t)n;
}

typedef enum { LOOP_DONE, LOOP_ERROR, LOOP_SIGNAL } loop_end;

static loop_end train_loop(run *R, int *signal_out) {
  const dhx_plan_train *tr = R->t;
  double run_start = now(), slowest = 0;
  for (int64_t t = R->first_step; t < R->end_step; t++) {
    double start = now();
    dhx_step_metrics m = {.step = t + 1, .steps = R->end_step};
    m.loss = train_step(R, t);
    double seconds = now() - start;
    m.step_ms = 1e3 * seconds;
    m.tokens_per_s = (double)(tr->global_batch * tr->seq) / seconds;
    m.comm_bytes = dhx_comms_take_bytes(R->rt.comms);
    for (int k = 0; k < DHX_WIRE_KINDS; k++)
      m.kind_bytes[k] = dhx_comms_take_kind_bytes(R->rt.comms, k);
    inter_node_mean(tr, R->rt.comms, m.inter_node_bytes);
    m.lr = R->rt.regs[DHX_REG_LR];
    m.grad_norm = R->rt.regs[DHX_REG_GRAD_NORM];
    bool nonfinite = !isfinite(m.loss) || !isfinite(m.grad_norm);
    m.skipped = nonfinite && tr->skip_nonfinite;
    if (eval_due(R, t)) {
      m.val_loss = evaluate(R, t);
      m.has_val = true;
      R->last_val = m.val_loss;
      R->has_last_val = true;
    }
    R->train_seconds += seconds;
    R->step_tokens_per_s[t - R->first_step] = m.tokens_per_s;
    if (seconds > slowest) slowest = seconds;
    m.elapsed_s = now() - run_start;
    m.eta_s = m.elapsed_s / (double)(t + 1 - R->first_step) * (double)(R->end_step - t - 1);
    if (R->metrics) dhx_metrics_write(R->metrics, &m);
    if (log_due(R, t, m.has_val) || (nonfinite && R->rank == 0 && !R->opts->quiet))
      dhx_log_step(stdout, &m);
    if (nonfinite && !tr->skip_nonfinite) {
      snprintf(R->err, sizeof R->err, "step %" PRId64 ": the %s is not finite (loss %g, gradient "
               "norm %g); the run stops here. The last checkpoint holds the state before it; "
               "lower the learning rate, or set train.skip_nonfinite to skip such steps",
               t + 1, isfinite(m.loss) ? "gradient norm" : "loss", m.loss, m.grad_norm);
      R->done_step = t;  // the update of step t+1 was withheld (runtime: update_skipped)
      agree(R, R->rank != 0);
      return LOOP_ERROR;
    }
    R->skipped += m.skipped;
    if (!m.skipped) R->last_loss = m.loss;
    R->done_step = t + 1;
    if (!save_periodic(R, t)) return LOOP_ERROR;
    dhx_watchdog_mark(R->watchdog, t, DHX_PHASE_DONE);
    update_timeout(R, slowest);
    int from = -1, sig = dhx_interrupt_agree(R->rank, &from);
    if (sig) {
      *signal_out = sig;
      return save_on_interrupt(R, t + 1, sig, from) ? LOOP_SIGNAL : LOOP_ERROR;
    }
  }
  if (R->opts->save_path && !save_to(R, R->opts->save_path, R->done_step)) return LOOP_ERROR;
  return LOOP_DONE;
}

// ---- summary ----------------------------------------------------------------------------------

static double max_over_ranks(double x) {
  double top = 0;
  MPI_Allreduce(&x, &top, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return top;
}

// XXH64 of this rank's parameter buffers, in buffer order.
static uint64_t params_digest(const run *R) {
  dhx_xxh64 h;
  dhx_xxh64_init(&h);
  for (uint32_t i = 0; i < R->rt.rank->nbuffers; i++) {
    const dhx_plan_buffer *b = &R->rt.rank->buffers[i];
    if (b->kind == DHX_BUF_PARAM) dhx_xxh64_update(&h, R->rt.arena.base + b->offset, (size_t)b->nbytes);
  }
  return dhx_xxh64_digest(&h);
}

// Collective. Whether every data-parallel replica ends with bitwise the same weights: the
// ranks of each (tensor rank, stage) hold the same parameter buffers unless they are ZeRO
// shards (zero 3), which *replicated says. Also gives rank 0's digest.
static bool replicas_equal(const run *R, bool *replicated, uint64_t *rank0) {
  const dhx_plan *p = &R->plan;
  *replicated = p->train.dp > 1;
  for (uint32_t i = 0; i < R->rt.rank->nbuffers; i++)
    if (R->rt.rank->buffers[i].kind == DHX_BUF_PARAM && R->rt.rank->buffers[i].shard_parts > 1)
      *replicated = false;
  uint64_t mine = params_digest(R), *all = calloc((size_t)R->world, sizeof *all);
  if (!all) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  bool same = true;
  for (int a = 0; a < R->world; a++)
    for (int b = 0; b < a; b++)
      if (p->ranks[a].tp_rank == p->ranks[b].tp_rank && p->ranks[a].pp_rank == p->ranks[b].pp_rank)
        same &= all[a] == all[b];
  *rank0 = all[0];
  free(all);
  return same;
}

// Collective: every rank measures its GEMM rate at the same time, as they trained.
static void summarize(run *R, const char *outcome) {
  int64_t steps_run = R->done_step - R->first_step;
  if (steps_run <= 0) return;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  dhx_run_summary s = {.outcome = outcome, .last_step = R->done_step, .steps_run = steps_run,
                       .skipped = R->skipped, .peak_source = "measured sgemm rate of the ranks' cores"};
  s.peak_rss_bytes = max_over_ranks((double)ru.ru_maxrss * 1024.0);
  s.arena_bytes = max_over_ranks((double)R->rt.arena.bytes);
  s.net_bandwidth = R->t->net_bandwidth;
  s.net_latency = R->t->net_latency;
  char peak_source[160];
  if (dhx_rt_on_device(&R->rt)) {  // the GPUs' datasheet peak: the cores' rate says nothing here
    s.peak_flops_per_s = all_sum(dhx_rt_device_peak(&R->rt, peak_source, sizeof peak_source));
    s.peak_source = peak_source;
  } else {
    s.peak_flops_per_s = all_sum(dhx_measure_gemm_rate(R->rt.pool));
  }
  double tokens = (double)(steps_run * R->t->global_batch * R->t->seq);
  s.wall_s = R->train_seconds;
  s.mean_tokens_per_s = R->train_seconds > 0 ? tokens / R->train_seconds : 0;
  s.median_tokens_per_s = dhx_median(R->step_tokens_per_s, steps_run);
  s.flops_per_s = s.mean_tokens_per_s * R->t->flops_per_token;
  s.mfu = s.peak_flops_per_s > 0 ? s.flops_per_s / s.peak_flops_per_s : 0;
  s.has_loss = steps_run > R->skipped;
  s.final_loss = R->last_loss;
  s.has_val = R->has_last_val;
  s.final_val_loss = R->last_val;
  for (int i = 0; i < R->nwritten; i++) s.paths[s.npaths++] = R->written[i];
  dhx_rt_download_all(&R->rt);
  s.replicas_equal = replicas_equal(R, &s.replicated, &s.params_xxh64);
  if (R->rank != 0) return;
  if (R->metrics) dhx_summary_write_json(R->metrics, &s);  // first: stdout may block (above)
  if (!R->opts->quiet) dhx_summary_print(stdout, &s);
}

static void teardown(run *R) {
  if (R->metrics) fclose(R->metrics);
  dhx_shard_close(&R->train);
  dhx_shard_close(&R->val);
  if (R->rt_ready) {
    dhx_rt_host_free(&R->rt, R->loss_stash);
    dhx_rt_host_free(&R->rt, R->norm_stash);
    dhx_rt_free(&R->rt);
  }
  dhx_trace_free(R->trace);  // after the stream threads that write it
  dhx_plan_free(&R->plan);
  free(R->step_tokens_per_s);
}

int dhx_train(const dhx_run_opts *opts) {
  run *R = calloc(1, sizeof *R);
  if (!R) MPI_Abort(MPI_COMM_WORLD, 1);
  R->opts = opts;
  MPI_Comm_rank(MPI_COMM_WORLD, &R->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &R->world);
  dhx_interrupt_install();
  int status = 1;
  if (setup(R)) {
    print_header(R);
    R->watchdog = dhx_watchdog_start(opts->step_timeout > 0 ? opts->step_timeout : MIN_STEP_TIMEOUT);
    int sig = 0;
    char outcome[64];
    loop_end end = train_loop(R, &sig);
    dhx_watchdog_stop(R->watchdog);
    bool traced = !R->trace || write_trace(R);
    if (end == LOOP_SIGNAL)
      snprintf(outcome, sizeof outcome, "interrupted by %s", dhx_signal_name(sig));
    else
      snprintf(outcome, sizeof outcome, "%s", end == LOOP_DONE ? "finished" : "stopped on an error");
    summarize(R, outcome);
    status = end == LOOP_DONE && traced ? 0 : end == LOOP_SIGNAL ? 128 + sig : 1;
  }
  teardown(R);
  free(R);
  return status;
}
