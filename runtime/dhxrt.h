// dhxrt.h — the runtime library (libdhxrt): everything dhxrun needs to execute a plan on the
// CPU backend. One section per source file; each file has one job.
//
//   arena.c         the aligned block of memory that holds a rank's buffers
//   pool.c          worker threads that split a kernel's index range
//   kernels_host.c  kernels.so: dlopen and one symbol per kernel of the plan's table
//   streams.c       one thread per stream; events as flags with a condition variable
//   comm.c          communicators from the plan's table; the ring all-reduce
//   exec_cpu.c      executes one instruction
//   rt.c            a rank's runtime: arena + kernels + pool + streams + comms
//   data.c          llm.c token shards
//   init.c          parameter initialisation (identical on every rank and layout)
//   checkpoint.c    safetensors save and load (each rank reads its slice of every tensor)
//   checkpoint_gather.c  the whole model from the ranks' slices, for saving
//   schedule.c      learning rate and Adam bias corrections per step
//   metrics.c       the step log line and JSON-lines metrics
//   summary.c       the end-of-run summary: throughput, FLOP/s and MFU, memory, losses, paths
//   preflight.c     checks before step 1: outputs writable, memory, degenerate configurations
//   interrupt.c     SIGINT/SIGTERM/SIGUSR1: stop after the step, checkpoint, exit
//   watchdog.c      a stuck or dead rank ends the job, named, instead of hanging it
//   trace.c         --trace: measured start and end of every instruction, a Chrome trace file
//   train.c         the training loop (dhxrun)
//
// The plan format (plan.h, plan_util.h) is a library of its own, libdhx_plan, shared with dhxc:
//
//   plan_codec.c           the payload encoding: one visitor that writes or reads every field
//   plan_write.c           dhx_plan_write: header, payload, a file that appears whole
//   plan_read.c            dhx_plan_read / dhx_plan_decode: header, checksum, bounded decoding
//   plan_validate.c        dhx_plan_validate: train section, kernel table, buffers, programs
//   plan_validate_instr.c  one instruction: arguments, kernel launches through access descriptors
//   plan_validate_gemm.c   GEMM extents and disjoint batches
//   plan_validate_sync.c   what would hang: events, collectives that do not pair up
//   plan_print.c           the listing behind dhxc --emit=schedule
//   safetensors.c          safetensors files (checkpoints, dhxc convert)
#ifndef DHX_DHXRT_H
#define DHX_DHXRT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernel_abi.h"
#include "plan.h"
#include "plan_util.h"
#include "trace.h"

// ---- arena.c ----------------------------------------------------------------------------------
typedef struct dhx_rank_arena {
  uint8_t *base;  // aligned to 4096 (a page, and so to DHX_ALIGN), zero-filled
  int64_t bytes;
} dhx_rank_arena;

bool dhx_rank_arena_init(dhx_rank_arena *a, int64_t bytes, char *err, size_t errlen);
void dhx_rank_arena_free(dhx_rank_arena *a);

// ---- pool.c -----------------------------------------------------------------------------------
typedef struct dhx_pool dhx_pool;
typedef void (*dhx_range_fn)(void *ctx, int64_t begin, int64_t end);

// A pool of `nthreads` workers counting the caller (so nthreads-1 helper threads). Returns NULL
// if threads cannot be created.
dhx_pool *dhx_pool_new(int nthreads);
void dhx_pool_free(dhx_pool *pool);
int dhx_pool_threads(const dhx_pool *pool);
// Runs fn over [0, n) split into at most `threads` contiguous chunks of at least `grain`
// indices; the caller runs the first chunk. Returns when every chunk is done. Safe to call from
// several threads (streams): parallel-fors run one at a time.
void dhx_pool_for(dhx_pool *pool, int64_t n, int64_t grain, dhx_range_fn fn, void *ctx);
// Runs fn(ctx) on the caller while no parallel-for of the pool runs: for work that brings
// threads of its own (OpenBLAS's), so that the rank's cores still do one thing at a time.
void dhx_pool_alone(dhx_pool *pool, void (*fn)(void *ctx), void *ctx);

// ---- blas_threads.c ---------------------------------------------------------------------------
// The single GEMM shapes that OpenBLAS's own `threads` threads compute bit for bit as one
// thread does, each tried both ways the first time it runs; NULL if out of memory.
typedef struct dhx_blas_shapes dhx_blas_shapes;
dhx_blas_shapes *dhx_blas_shapes_new(int threads);
void dhx_blas_shapes_free(dhx_blas_shapes *s);
// Whether GEMM g runs on OpenBLAS's threads (an unbatched shape found the same bits); tries
// its shape if new. Safe to call from several threads.
bool dhx_blas_threaded(dhx_blas_shapes *s, const dhx_plan_gemm *g);
// How many of the shapes tried so far do.
int dhx_blas_shapes_threaded(dhx_blas_shapes *s);
// sgemm of rows [0, m) and columns [0, n) of g's C at a, b, c on the calling thread; and g whole
// on OpenBLAS's `threads` threads. The executors' sgemm calls all go through one of the two.
void dhx_blas_sgemm(const dhx_plan_gemm *g, int64_t m, int64_t n, const float *a, const float *b,
                    float *c);
void dhx_blas_sgemm_threaded(const dhx_plan_gemm *g, int threads, const float *a,
                             const float *b, float *c);
// Unless OPENBLAS_THREAD_TIMEOUT is set, sets it so that OpenBLAS's threads sleep as soon as a
// job is done and runs this executable again with `argv` (OpenBLAS reads it as it loads). Call
// it first in main; it returns (false) only where it did not run the executable again.
bool dhx_blas_sleep_when_idle(char **argv);
// "<OpenBLAS's build config>; idle threads: OPENBLAS_THREAD_TIMEOUT=<as it loaded>\n", for --version.
void dhx_blas_version(char *out, size_t len);

// ---- kernels_host.c ---------------------------------------------------------------------------
typedef struct dhx_kernels {
  void *handle;       // dlopen handle; NULL when the plan has no kernels
  dhx_kernel_fn *fn;  // one per entry of the plan's kernel table
  uint32_t n;
} dhx_kernels;

bool dhx_kernels_load(dhx_kernels *k, const dhx_plan *plan, const char *so_path, char *err,
                      size_t errlen);
void dhx_kernels_unload(dhx_kernels *k);

// ---- comm.c -----------------------------------------------------------------------------------
typedef struct dhx_comms dhx_comms;

// Builds this rank's communicators from the plan's table: one MPI communicator per (plan
// communicator, stream that exchanges on it), so concurrent streams never mix messages.
// Collective over the members of each communicator; call on every rank.
dhx_comms *dhx_comms_new(const dhx_plan *plan, int world_rank);
void dhx_comms_free(dhx_comms *c);
// In-place sum all-reduce of `count` floats over plan communicator `comm`, on the MPI
// communicator reserved for `stream`: a ring (reduce-scatter, then all-gather), so every member
// ends with bitwise-identical sums, and each rank sends 2(p-1)/p of the buffer. With an
// emulated network (train.net_bandwidth > 0) each message first waits latency + bytes/bandwidth.
void dhx_allreduce_sum(dhx_comms *c, int comm, int stream, float *data, int64_t count);
// Sum reduce-scatter of `count` floats of `in` (count a multiple of the communicator size p):
// the member of index i gets elements [i·count/p, (i+1)·count/p) of the sum in `out`. The same
// ring as the all-reduce's first half; `in` is left as it was.
void dhx_reduce_scatter_sum(dhx_comms *c, int comm, int stream, const float *in, float *out,
                            int64_t count);
// All-gather: `in` (count/p floats) of the member of index i lands at elements
// [i·count/p, (i+1)·count/p) of `out` (count floats) on every member. The all-reduce's second half.
void dhx_all_gather(dhx_comms *c, int comm, int stream, const float *in, float *out,
                    int64_t count);
// A deferred reduce-scatter or all-gather (plan.h: dhx_instr_deferred; op is
// DHX_OP_REDUCE_SCATTER or DHX_OP_ALL_GATHER, arguments as above) posted under its `event`:
// true when its messages are left in flight, for dhx_comms_complete(event) to finish on the
// same thread before anything reads `out` or writes `in`/`out`. That is the case on a
// communicator of 2 whose chunks fit in one message (and, on the emulated network, with every
// rank on this host). Otherwise it runs whole here and returns false. The result and the bytes
// counted are those of the synchronous call, bit for bit.
bool dhx_comms_post(dhx_comms *c, int comm, int stream, dhx_op op, const float *in, float *out,
                    int64_t count, int32_t event);
// Waits for the collective posted under `event` (emulated: until its messages would have
// arrived) and finishes it; nothing when none is in flight there.
void dhx_comms_complete(dhx_comms *c, int32_t event);
// All-to-all: `in` and `out` are count floats (count a multiple of p), disjoint; block j of
// count/p floats of the input of member i lands at block i of member j's output.
void dhx_all_to_all(dhx_comms *c, int comm, int stream, const float *in, float *out,
                    int64_t count);
// Point-to-point: `count` floats to / from the member of index `peer`, with `tag`, on the MPI
// communicator of (comm, stream). A send may block until the peer receives.
void dhx_send(dhx_comms *c, int comm, int stream, const float *x, int64_t count, int peer,
              int tag);
void dhx_recv(dhx_comms *c, int comm, int stream, float *x, int64_t count, int peer, int tag);
// The MPI side of (plan communicator comm, stream), for a backend that builds its own
// communicators over the same members (exec_nccl.c): the member count, with this rank's index
// among them in *rank, or 0 where this rank has no MPI communicator there (not a member, a
// communicator of one, or no exchange on that stream).
int dhx_comms_members(dhx_comms *c, int comm, int stream, int *rank);
// Broadcasts `bytes` bytes at `data` from member 0 of (comm, stream) to the other members
// (collective over them; only where dhx_comms_members is not 0).
void dhx_comms_bcast(dhx_comms *c, int comm, int stream, void *data, int bytes);
// The world's ranks on this rank's node (shared memory), this one included (collective).
int dhx_ranks_on_node(void);
// Bytes this rank has sent since the last call (and resets the counter).
uint64_t dhx_comms_take_bytes(dhx_comms *c);
// Counts the bytes instruction `in` sends from this rank as the CPU backend's exchanges would
// (the ring convention of dhx_wire_bytes, by kind and across nodes), for a backend whose
// collectives run elsewhere (NCCL on the GPU).
void dhx_comms_count_instr(dhx_comms *c, const dhx_plan *plan, const dhx_plan_rank *rank,
                           const dhx_plan_instr *in);
// The calling thread's exchanges from now on count under `kind` (DHX_WIRE_*, plan_util.h) as
// well; DHX_WIRE_OTHER until set.
void dhx_comms_count_as(int kind);
// Bytes this rank has sent under `kind` since the last call for it (and resets that counter).
uint64_t dhx_comms_take_kind_bytes(dhx_comms *c, int kind);
// The bytes of a kind sent to ranks on other nodes (plan train.per_node), since the last call.
uint64_t dhx_comms_take_inter_node_bytes(dhx_comms *c, int kind);

// ---- streams.c --------------------------------------------------------------------------------
typedef struct dhx_streams dhx_streams;
// Executes one instruction that is not RECORD / WAIT (those the streams handle themselves).
// Returns true when it left a deferred collective (plan.h: dhx_instr_deferred) in flight: its
// stream then calls the dhx_complete_fn at the WAIT on its event, and records the event after
// it. False for everything it ran whole (a deferred collective's event is then recorded at once).
typedef bool (*dhx_exec_fn)(void *ctx, const dhx_plan_instr *in);
// Finishes the collective left in flight under `event` (called by the stream that posted it).
typedef void (*dhx_complete_fn)(void *ctx, int32_t event);

// Threads for up to `nstreams` streams (stream 0 runs on the caller) and room for `max_events`.
// `complete` may be NULL where `exec` never leaves anything in flight.
dhx_streams *dhx_streams_new(uint32_t nstreams, uint32_t max_events, dhx_exec_fn exec,
                             dhx_complete_fn complete, void *ctx);
void dhx_streams_free(dhx_streams *s);
// Runs every stream of `prog` to completion; events start unrecorded.
void dhx_streams_run(dhx_streams *s, const dhx_plan_program *prog);
// Attaches a trace (NULL detaches): from then on dhx_streams_run asks it whether each run is
// recorded (trace.h). Call between runs.
void dhx_streams_trace(dhx_streams *s, dhx_trace *trace);

// ---- rt.c + exec_cpu.c ------------------------------------------------------------------------
typedef struct dhx_rt {
  const dhx_plan *plan;
  const dhx_plan_rank *rank;
  int world_rank;
  int threads;  // workers per rank (kernels and BLAS)
  dhx_rank_arena arena;
  dhx_kernels kernels;
  dhx_pool *pool;
  dhx_blas_shapes *blas;  // the GEMMs OpenBLAS's threads run (blas_threads.c)
  dhx_streams *streams;
  dhx_comms *comms;  // NULL until dhx_rt_connect
  double regs[DHX_REG_COUNT];  // read by DHX_ARG_REG when an instruction runs
  // Set when OP_GRAD_NORM finds a non-finite norm: the rest of the program (the optimizer
  // update) is skipped, so NaN never reaches the parameters. Reset when a program starts.
  _Atomic bool update_skipped;
  // LOAD_BATCH: fills micro-batch `micro` of the current step into tokens and targets
  // (micro_batch*seq values each); set by the training loop, which knows the data and the step.
  void (*load_batch)(void *ctx, int64_t micro, int32_t *tokens, int32_t *targets);
  void *load_ctx;
  struct dhx_cuda *cuda;  // the CUDA backend (backend.c); NULL: the CPU backend
} dhx_rt;

// Everything local to this rank: arena, kernels (so_path; unused when the plan has none),
// pool and stream threads. On failure returns false with err set and rt left freeable.
bool dhx_rt_init(dhx_rt *rt, const dhx_plan *plan, int world_rank, const char *so_path,
                 int threads, char *err, size_t errlen);
// Builds the communicators (collective: every rank of the plan calls it).
void dhx_rt_connect(dhx_rt *rt);
void dhx_rt_free(dhx_rt *rt);
// Runs program `prog` on the rank's backend (backend.c).
void dhx_rt_run(dhx_rt *rt, dhx_prog_kind prog);
// The address of buffer `id` in the arena.
void *dhx_rt_buffer(const dhx_rt *rt, int32_t id);
// First buffer of `kind` on this rank, or -1.
int32_t dhx_rt_find(const dhx_rt *rt, dhx_buf_kind kind);
// exec_cpu.c: the dhx_exec_fn and dhx_complete_fn of the CPU backend (ctx is the dhx_rt): a
// deferred f32 reduce-scatter or all-gather is posted (dhx_comms_post) and completed at its WAIT.
bool dhx_exec_cpu_post(void *ctx, const dhx_plan_instr *in);
void dhx_exec_cpu_complete(void *ctx, int32_t event);
// The same, one instruction run whole, a deferred collective completed before it returns: for
// callers that run instructions one by one without the streams (tests, benchmarks).
void dhx_exec_cpu(void *ctx, const dhx_plan_instr *in);
// exec_cpu.c, for exec_bf16.c: a GEMM on f32 operands at a, b, c; a collective or transfer
// of f32 elements at x (and y, its second buffer, where it has one); an argument's address.
void dhx_cpu_gemm(dhx_rt *rt, const dhx_plan_gemm *g, const float *a, const float *b, float *c);
// A GEMM's epilogue (plan_base.h: dhx_gemm_epilogue) over its f32 C, after dhx_cpu_gemm; pre
// is NULL unless BIAS_GELU.
void dhx_cpu_epilogue(const dhx_plan_gemm *g, float *c, const float *bias, float *pre);
void dhx_cpu_comm(dhx_rt *rt, const dhx_plan_instr *in, float *x, float *y);
void *dhx_cpu_arg_ptr(const dhx_rt *rt, const dhx_plan_arg *a);
// exec_bf16.c: the CPU backend's emulation of bf16 operands (mixed-precision plans). A GEMM
// with a bf16 operand widens its operands to f32, multiplies in f32 and rounds a bf16 C once;
// a bf16 collective or transfer widens, exchanges f32 and rounds the result once. The numbers
// are what a GPU computes up to its summation order; the bytes the emulated network carries
// are the f32 ones.
bool dhx_cpu_gemm_is_bf16(const dhx_plan_rank *rank, const dhx_plan_instr *in);
void dhx_cpu_gemm_bf16(dhx_rt *rt, const dhx_plan_instr *in);
void dhx_cpu_comm_bf16(dhx_rt *rt, const dhx_plan_instr *in);
// bf16 ⇄ f32 (round to nearest even; NaN stays a quiet NaN), as the generated kernels convert.
void dhx_bf16_widen(const uint16_t *in, float *out, int64_t n);
void dhx_bf16_narrow(const float *in, uint16_t *out, int64_t n);
// exec_cpu.c: GRAD_NORM's norm and clip scale (plan.h) from `count` partial sums of squares,
// as the CPU backend computes them (the plan's grad_norm kernel computes the same on a GPU).
void dhx_grad_norm_of(const float *partials, int64_t count, double max_norm, double *norm,
                      double *scale);

// ---- backend.c --------------------------------------------------------------------------------
// Where a rank's programs run. The CPU backend runs them in the host arena with the stream
// threads. The CUDA backend keeps the arena on the device: the host arena is then its mirror,
// which the training loop writes (parameters at start, a micro-batch's tokens) and reads
// (losses, checkpoints, the summary's digests), copying at exactly those points with the calls
// below; on the CPU backend they do nothing. A device error during a program ends the run on
// every rank (MPI_Abort) with the failing rank and the error named.
//
// Moves this rank onto CUDA device `device`, with the PTX of the plan in plan_dir (the sm_90
// file on a device of compute capability 9 or more, when the plan has one). False with err.
bool dhx_rt_use_cuda(dhx_rt *rt, int device, const char *plan_dir, char *err, size_t errlen);
bool dhx_rt_on_device(const dhx_rt *rt);
// After dhx_rt_connect, on the CUDA backend: the NCCL communicators, made from the MPI ones
// (collective over the ranks of the plan). True at once on the CPU backend.
bool dhx_rt_connect_device(dhx_rt *rt, char *err, size_t errlen);
void dhx_rt_leave_device(dhx_rt *rt);  // closes the CUDA backend (dhx_rt_free calls it)
// Programs run asynchronously on the CUDA backend: dhx_rt_run issues and returns, and the
// device runs programs and copies in the order they were issued. Only the downloads wait.
void dhx_rt_upload(dhx_rt *rt, int32_t buf);    // buffer `buf`: host mirror → device
void dhx_rt_download(dhx_rt *rt, int32_t buf);  // device → host mirror, waiting for it
void dhx_rt_upload_all(dhx_rt *rt);             // the whole arena (waits)
void dhx_rt_download_all(dhx_rt *rt);
// `bytes` of buffer `buf` from byte `offset` into dst, as they are when the programs issued so
// far have run: at once on the CPU backend; on the CUDA backend dst must come from
// dhx_rt_host_alloc and holds them after dhx_rt_finish, which waits for the device.
void dhx_rt_stash(dhx_rt *rt, int32_t buf, int64_t offset, int64_t bytes, void *dst);
void dhx_rt_finish(dhx_rt *rt);
// The peak FLOP/s of this rank's GPU for the plan's (f32) arithmetic, from its datasheet, with
// a line saying so in source; 0 (and why) for a GPU not in the table.
double dhx_rt_device_peak(dhx_rt *rt, char *source, size_t len);
void *dhx_rt_host_alloc(dhx_rt *rt, size_t bytes);  // page-locked on the CUDA backend; zeroed on the CPU
void dhx_rt_host_free(dhx_rt *rt, void *p);

// ---- data.c -----------------------------------------------------------------------------------
#define DHX_SHARD_MAGIC 20240520  // llm.c GPT-2 shards: uint16 tokens
#define DHX_SHARD_VERSION 1
#define DHX_SHARD_MAGIC_LLAMA3 20240801  // llm.c Llama 3 shards: uint32 tokens
#define DHX_SHARD_VERSION_LLAMA3 7
#define DHX_SHARD_HEADER_INTS 256

typedef struct dhx_shard_file {
  void *map;  // the whole file, mapped read-only
  size_t map_bytes;
  const uint8_t *tokens;  // just after the header
  int token_bytes;  // 2 (uint16) or 4 (uint32)
  int64_t first;  // position of its first token in the stream
  int64_t ntok;
} dhx_shard_file;

// A token stream: one shard, or every shard a glob pattern matches, in sorted order.
typedef struct dhx_shard {
  dhx_shard_file *files;
  int64_t nfiles;
  int64_t ntok;  // tokens in all files
  int64_t max_token;  // the largest token id in all files
} dhx_shard;

// Opens and checks a stream: path_or_glob is a file, or a glob(3) pattern such as
// "data/fineweb_train_*.bin" whose matches are read in sorted order as one stream. Each file:
// size, magic and version (GPT-2 uint16 or Llama 3 uint32 tokens), length, every token < vocab;
// in all, ntok >= seq+1. Errors start with the file's path, or the pattern that matches nothing.
bool dhx_shard_open(dhx_shard *s, const char *path_or_glob, int64_t seq, int64_t vocab, char *err,
                    size_t errlen);
void dhx_shard_close(dhx_shard *s);
// Row g (any non-negative index; wraps around the stream): tokens[0..seq) and the next tokens.
// Windows may span two files.
void dhx_shard_row(const dhx_shard *s, int64_t g, int64_t seq, int32_t *tokens, int32_t *targets);

// ---- init.c -----------------------------------------------------------------------------------
// Initialises every parameter from the plan (zeros, ones, or normal(0, std) from a counter-based
// generator keyed by (seed, name)), so every rank and every parallel layout starts from the same
// weights. Other buffers keep the arena's zeros.
void dhx_init_params(dhx_rt *rt, uint64_t seed);
// qWD: parameter buffer `param`'s master weights (plan.h: master) become a copy of this rank's
// shard of its weights, padding zero; nothing when it has none. After initialisation, after
// --init, and on resuming from a checkpoint without NAME.master.
void dhx_init_master(const dhx_plan_rank *r, uint8_t *arena, int32_t param);
// The i-th value of the standard normal stream of tensor `name` (exposed for tests).
double dhx_init_normal(uint64_t seed, const char *name, int64_t i);

// ---- checkpoint.c -----------------------------------------------------------------------------
// safetensors: every parameter under its name, its AdamW moments as NAME.adam_m / NAME.adam_v,
// and __metadata__ {"format": "dhx", "step": "N", "model": "...", "data_xxh64": "...",
// "header_xxh64": "..."} (runtime/safetensors.h). Save writes a temporary file and renames it.
// Every load checks the whole file (and its digests, when it has them) before it copies
// anything into the arena; errors start with the path ("ck/step_40.safetensors: checksum
// mismatch: the file is corrupt").
bool dhx_checkpoint_save(const dhx_plan *plan, uint32_t rank, const uint8_t *arena,
                         const char *path, int64_t step, char *err, size_t errlen);
// The same from a plan whose ranks hold slices of the model (tensor parallelism): collective
// over all ranks; rank 0 gathers the pieces and writes every tensor whole, so any layout can
// resume from the file. err is filled on rank 0 only; other ranks return true.
bool dhx_checkpoint_save_all(const dhx_plan *plan, uint32_t rank, const uint8_t *arena,
                             const char *path, int64_t step, char *err, size_t errlen);
// Resume: parameters and moments, all matching the plan; *step = the steps taken. A file
// without moments is refused with a message that points to --init.
bool dhx_checkpoint_load(const dhx_plan *plan, uint32_t rank, uint8_t *arena, const char *path,
                         int64_t *step, char *err, size_t errlen);
// The checks of dhx_checkpoint_load without touching an arena.
bool dhx_checkpoint_verify(const dhx_plan *plan, uint32_t rank, const char *path, int64_t *step,
                           char *err, size_t errlen);
// `--resume latest`: DIR/step_N.safetensors from the largest N down, the first that verifies
// (PATH.tmp.PID files are ignored). Each one skipped gets a line on `notes` (when not NULL):
// "dhxrun: skipping ck/step_40.safetensors: checksum mismatch: the file is corrupt".
bool dhx_checkpoint_latest(const char *dir, const dhx_plan *plan, uint32_t rank, char *path,
                           size_t pathlen, FILE *notes, char *err, size_t errlen);
// `--init FILE`: the parameters only, from any safetensors file that has every one of them
// under the plan's names and shapes (F32, BF16 or F16); moments in the file are ignored and
// the arena's are zeroed (fresh optimizer state), metadata and step are ignored.
bool dhx_checkpoint_load_weights(const dhx_plan *plan, uint32_t rank, uint8_t *arena,
                                 const char *path, char *err, size_t errlen);

// ---- schedule.c -------------------------------------------------------------------------------
// Learning rate of step t (0-based): linear warm-up to lr, then cosine to lr*lr_min_ratio at the
// plan's last step (train.steps, whatever --steps says).
double dhx_lr_at(const dhx_plan_train *t, int64_t step);
// Sets LR, BC1, BC2 for step t and resets CLIP_SCALE (1) and GRAD_NORM (0).
int64_t dhx_noise_seed(uint64_t seed, int64_t step);
void dhx_set_step_registers(const dhx_plan_train *t, int64_t step, double regs[DHX_REG_COUNT]);

// ---- metrics.c --------------------------------------------------------------------------------
typedef struct dhx_step_metrics {
  int64_t step;  // 1-based
  int64_t steps;  // of the run, for the log line
  double loss, val_loss;
  bool has_val;
  bool skipped;  // non-finite, and train.skip_nonfinite: the update was not applied
  double tokens_per_s, step_ms;
  double elapsed_s, eta_s;  // since the first step of this run; to its last step
  uint64_t comm_bytes;
  uint64_t kind_bytes[DHX_WIRE_KINDS];  // comm_bytes by purpose (plan_wire.c)
  uint64_t inter_node_bytes[DHX_WIRE_KINDS];  // of them, sent to other nodes: mean over ranks
  double lr, grad_norm;
} dhx_step_metrics;

// `step    1/300 | loss 5.5452 | lr 3.00e-04 | norm 1.234 | 120.3 ms | 34052 tok/s | val 2.345
//  | 12 s elapsed, ETA 3:20`
void dhx_log_step(FILE *out, const dhx_step_metrics *m);
// One JSON object per line: step, loss, val_loss (on eval steps), tokens_per_s, step_ms,
// comm_bytes, lr, grad_norm; NaN and infinities as null, listed in "nonfinite".
void dhx_metrics_write(FILE *out, const dhx_step_metrics *m);
// `,"key":value` with fmt, or `,"key":null` (and false) when x is not finite.
bool dhx_json_number(FILE *out, const char *key, double x, const char *fmt);
// Opens the metrics file: truncated for a new run; for a run resumed after step resumed_at
// (> 0), the lines of steps 1..resumed_at are kept and new lines are appended.
FILE *dhx_metrics_open(const char *path, int64_t resumed_at, char *err, size_t errlen);

// ---- summary.c --------------------------------------------------------------------------------
typedef struct dhx_run_summary {
  const char *outcome;  // "finished", "interrupted by SIGINT", "stopped: non-finite loss", ...
  int64_t last_step, steps_run, skipped;
  double wall_s, mean_tokens_per_s, median_tokens_per_s;
  double flops_per_s, peak_flops_per_s, mfu;  // whole job
  const char *peak_source;
  double peak_rss_bytes, arena_bytes;  // largest of the ranks
  double net_bandwidth, net_latency;   // the emulated network of the run (bandwidth 0: none)
  bool has_loss, has_val;
  double final_loss, final_val_loss;
  const char *paths[8];  // written by this run
  int npaths;
  uint64_t params_xxh64;  // XXH64 of rank 0's parameter buffers at the end
  bool replicated;        // dp > 1 and every rank holds whole parameters (not zero 3)
  bool replicas_equal;    // then: the data-parallel replicas' parameters are bitwise equal
} dhx_run_summary;

void dhx_summary_print(FILE *out, const dhx_run_summary *s);
// The same as one JSON line: {"summary":true,...}
void dhx_summary_write_json(FILE *out, const dhx_run_summary *s);
double dhx_median(const double *x, int64_t n);
// FLOP/s of single-precision GEMMs on every worker of the pool at once (about 0.2 s).
double dhx_measure_gemm_rate(dhx_pool *pool);
// "12 s", "4:05", "1:02:03"; "?" when unknown (negative or not finite).
void dhx_format_duration(double seconds, char *out, size_t len);

// ---- preflight.c ------------------------------------------------------------------------------
// mkdir -p, then proves the directory writable. `what` names it in errors ("checkpoint
// directory").
bool dhx_make_dirs(const char *dir, const char *what, char *err, size_t errlen);
// The directory of an output file exists (created if needed) and is writable; the path is not
// a directory.
bool dhx_prepare_output_file(const char *path, const char *what, char *err, size_t errlen);
int64_t dhx_host_memory_available(void);  // bytes, -1 when unknown
// False (with the numbers in err) when ranks_on_node arenas do not fit in available memory.
bool dhx_check_host_memory(int64_t arena_bytes, int ranks_on_node, char *err, size_t errlen);
// Warnings for configurations that train on something other than what was meant; returns how
// many were printed.
int dhx_warn_configuration(FILE *out, const dhx_plan_train *t, const dhx_shard *train,
                           const dhx_shard *val, bool has_val, int64_t steps_to_run);

// ---- interrupt.c ------------------------------------------------------------------------------
// SIGINT, SIGTERM and SIGUSR1 set a flag (a second SIGINT/SIGTERM kills as usual).
void dhx_interrupt_install(void);
int dhx_interrupt_pending(void);  // the signal received, 0 when none
// Collective: the signal to act on (0 when no rank received one) and the lowest rank that got it.
int dhx_interrupt_agree(int world_rank, int *from_rank);
const char *dhx_signal_name(int sig);

// ---- watchdog.c -------------------------------------------------------------------------------
typedef struct dhx_watchdog dhx_watchdog;
enum { DHX_PHASE_COMPUTE, DHX_PHASE_UPDATE, DHX_PHASE_EVAL, DHX_PHASE_DONE };
// Collective. Ends the job (MPI_Abort) naming the ranks that hold the others up when no rank
// has made progress for timeout_s seconds.
dhx_watchdog *dhx_watchdog_start(double timeout_s);
void dhx_watchdog_set_timeout(dhx_watchdog *w, double timeout_s);
// Every rank in a collective operation that may outlast the timeout (writing a checkpoint):
// no stall is reported until it ends.
void dhx_watchdog_busy(dhx_watchdog *w, bool busy);
// This rank reached `phase` of step (0-based) `step`.
void dhx_watchdog_mark(dhx_watchdog *w, int64_t step, int phase);
// Collective.
void dhx_watchdog_stop(dhx_watchdog *w);

// ---- train.c ----------------------------------------------------------------------------------
typedef struct dhx_run_opts {
  const char *plan_dir;
  const char *train_path, *val_path;  // NULL: the plan's data paths (files or globs)
  const char *metrics_path, *save_path, *checkpoint_dir;  // NULL when absent
  const char *resume_path;  // a checkpoint, or "latest": the newest good one in checkpoint_dir
  const char *init_path;    // weights only (fresh optimizer state); NULL when absent
  int64_t steps;  // 0: the plan's train.steps
  int threads;    // 0: cores / ranks on this node
  double step_timeout;  // seconds without progress before the run is ended; 0: automatic
  const char *trace_path;  // --trace: the Chrome trace file rank 0 writes; NULL when absent
  int64_t trace_first, trace_last;  // --trace-steps, 1-based and inclusive; 0: the default
                                    // window (the first 2 steps; with --profile, the steps
                                    // after the first, up to 8)
  const char *profile_path;  // --profile: the profile rank 0 writes (profile.c); NULL when absent
  bool net_override;  // --net-emulate: net_bandwidth and net_latency replace the plan's network
  double net_bandwidth, net_latency;  // bytes/s (0: no emulation) and seconds per message
  bool quiet;
  int cuda_device;  // the CUDA device this rank runs on; -1: the CPU backend
} dhx_run_opts;

// ---- profile.c --------------------------------------------------------------------------------
// Collective: rank 0 writes the profile of the recorded steps of `trace` to `path` (JSON: each
// instruction key's time alone, the interference and sharing factors, each rank's compute and
// communication time per step; docs/simulator.md). `bandwidth`/`latency`: the network the run
// emulated (0: none). False with err on rank 0 when the file cannot be written.
bool dhx_profile_write(dhx_trace *trace, const dhx_plan *plan, int rank, const char *path,
                       const char *plan_dir, double bandwidth, double latency, char *err,
                       size_t errlen);

// ---- netemu.c ---------------------------------------------------------------------------------
// The value of --net-emulate: BANDWIDTH,LATENCY with units (1GB/s,20us: B/s, KB/s, MB/s, GB/s,
// TB/s; s, ms, us, ns) or `off` (bandwidth 0). False with an error naming the option otherwise.
bool dhx_parse_net_emulate(const char *value, double *bandwidth, double *latency, char *err,
                           size_t errlen);
// The log line of the emulated network ("dhxrun: network emulated at 1 GB/s with 20 us latency
// per message (SOURCE)", or "dhxrun: network not emulated (SOURCE)" for bandwidth 0).
void dhx_describe_net(double bandwidth, double latency, const char *source, char *out,
                      size_t len);

// Runs the whole training on this rank (MPI already initialised with MPI_THREAD_MULTIPLE).
// Returns the process exit status; errors are printed once, by the lowest failing rank.
int dhx_train(const dhx_run_opts *opts);

#endif
