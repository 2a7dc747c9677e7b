// plan.h — the compiled plan: what dhxc writes and dhxrun executes.
//
// A plan is a directory: plan.bin (this structure, serialized by plan_write.c and read back by
// plan_read.c, which validates it with plan_validate*.c), kernels.so (the
// generated kernels for the CPU backend) and kernels.ptx (the same kernels for NVIDIA GPUs).
//
// Every rank has its own section: a static arena of buffers (offsets from the memory planner)
// and a few programs. A program is a list of instructions, each tagged with the stream that
// runs it; a stream runs its instructions in order, and events (record/wait) are the only
// ordering across streams. The runtime's training loop is fixed and simple:
//
//   for each step:   run BEGIN           (zero gradients)
//                    for each micro-batch: load tokens/targets, run MICRO (forward+backward)
//                    run STEP            (gradient all-reduce, clipping, optimizer)
//
// (A pipeline's MICRO spans all micro-batches of the step and loads them itself: then it runs
// once per step; train.micro_per_run says which.)
//   every val_every: run EVAL over val_batches micro-batches (forward and loss only)
//
// Scalars that change per step (learning rate, bias corrections, the clip scale) are
// registers the runtime computes from the train section; instructions refer to them.
#ifndef DHX_PLAN_H
#define DHX_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/plan_base.h"  // limits, element types, argument kinds, registers, programs

#define DHX_PLAN_MAGIC "DHXPLAN\0"   // 8 bytes at offset 0 of plan.bin
#define DHX_PLAN_VERSION 13
#define DHX_PATH_MAX 512
#define DHX_PLAN_WARP 32              // GPU threads per index of a warp-per-row kernel
#define DHX_PLAN_WIDE 4               // indices per GPU thread of a wide kernel (16 bytes of f32)
#define DHX_MAX_COMM_SUBST 8          // communicators a sharing rank substitutes

typedef enum {
  DHX_BUF_PARAM = 1,  // trained weights; checkpointed
  DHX_BUF_GRAD,       // gradient of a parameter (same shape)
  DHX_BUF_OPT_M,      // AdamW first moment; checkpointed
  DHX_BUF_OPT_V,      // AdamW second moment; checkpointed
  DHX_BUF_ACT,        // activations and their gradients
  DHX_BUF_TOKENS,     // [micro_batch, seq] i32 inputs, filled by the runtime
  DHX_BUF_TARGETS,    // [micro_batch, seq] i32 next tokens, filled by the runtime
  DHX_BUF_LOSSES,     // [micro_batch*seq] f32 per-position loss, summed by the runtime
  DHX_BUF_SCRATCH,    // anything else (norm partials, ...)
  DHX_BUF_MASTER,     // fp32 master weights of a parameter's ZeRO shard (qWD); checkpointed
} dhx_buf_kind;

typedef struct dhx_plan_buffer {
  char name[DHX_NAME_MAX];  // params: the checkpoint tensor name ("h.0.attn.qkv.w")
  uint32_t kind;            // dhx_buf_kind
  uint32_t dtype;           // dhx_dtype
  uint32_t ndim;
  int64_t shape[DHX_MAX_DIMS];
  int64_t offset;           // bytes from the arena start; multiple of DHX_ALIGN
  int64_t nbytes;           // = C * sizeof(dtype), C elements (below: the shard)
  // parameters only (ignored otherwise):
  uint32_t init;            // dhx_init_kind
  float init_std;           // DHX_INIT_NORMAL
  uint32_t decay;           // 1 when weight decay applies
  int32_t grad, opt_m, opt_v;  // buffer ids, -1 when absent
  int32_t master;           // qWD: the master weights of this rank's shard (a buffer id), -1
  // Which part of the whole model's tensor `name` this buffer holds (parameters and their
  // moments; a layout that splits a tensor gives each rank a slice). Dimension split_dim of the
  // whole tensor, global_shape[split_dim] = shape[split_dim] * split_parts, is cut into
  // split_groups equal groups (the q, k and v of a fused projection are 3), and each group
  // into split_parts equal slices; this buffer holds slice split_index of every group, groups
  // one after another. split_dim = -1 (and parts 1) when the buffer holds the whole tensor.
  int64_t global_shape[DHX_MAX_DIMS];
  int32_t split_dim;
  uint32_t split_groups, split_parts, split_index;
  // A flat shard of the slice above (ZeRO): with S = product(shape) elements of the slice in
  // row-major order and C = nbytes / dtype size, the buffer holds slice elements
  // [shard_index*C, shard_index*C + C); those at or past S are padding (zero after
  // initialisation and loading, never saved). shard_parts 1, shard_index 0 and C = S: the
  // whole slice, as before; shard_parts 1 with C > S: the whole slice followed by padding.
  uint32_t shard_parts, shard_index;
} dhx_plan_buffer;

typedef struct dhx_plan_arg {
  uint32_t kind;   // dhx_arg_kind
  int32_t buf;
  union {          // by kind: an F64 argument's value is f; the others' is i (a buffer's byte
    int64_t i;     //   offset, an integer, a register) — one word, since a paper-scale plan
    double f;      //   holds hundreds of thousands of instructions of 16 arguments in memory
  };
} dhx_plan_arg;

typedef enum {
  // Run a generated kernel over the index space [0, n): the CPU backend splits it across its
  // worker threads; the GPU backend launches up to ceil(ceil(n / indices_per_thread) ·
  // threads_per_index / block) blocks of its grid-stride entries. args
  // match the kernel's signature in the kernel table.
  DHX_OP_KERNEL = 1,
  // C = alpha * op(A) * op(B) + beta * C, row-major, f32; args[0..2] = A, B, C (DHX_ARG_BUF).
  // Batched over up to two nested batch dimensions with element strides.
  DHX_OP_GEMM,
  // args[0] = buffer region (DHX_ARG_BUF), args[1] = byte count (DHX_ARG_I64): set to zero.
  DHX_OP_ZERO,
  // Collectives and transfers over communicator `comm`, on elements of type `dtype` (the CPU
  // runtime computes on f32 only). Peers are ranks within the communicator (0..nranks-1).
  // In-place sum all-reduce: args[0] = buffer region, args[1] = element count. After it every
  // member holds the sum.
  DHX_OP_ALLREDUCE,
  DHX_OP_RECORD,   // record event `event` on this stream
  DHX_OP_WAIT,     // wait on this stream until `event` has been recorded (in this program run)
  // The global gradient norm and the clip scale, into device memory: args[0] = the clip scale
  // (one f32, DHX_ARG_BUF), args[1] = the norm (one f32), args[2] = f32 partial sums of
  // squares, args[3] = their count (I64, >= 1), args[4] = max norm (F64; 0 = no clipping).
  // norm = sqrt(sum of the partials, in f64, in index order); scale = min(1, max / (norm +
  // 1e-6)) when clipping, 1 otherwise, and NaN when the norm is not finite (the AdamW kernels,
  // which read the scale there, then leave every parameter and moment as it was). `kernel` is
  // the grad_norm kernel of the kernel table, whose arguments these are, launched with n = 1:
  // what a GPU runs. The CPU backend computes the same on the host and also sets
  // DHX_REG_GRAD_NORM and DHX_REG_CLIP_SCALE; on a non-finite norm it skips the rest of the
  // program.
  DHX_OP_GRAD_NORM,
  // Sum reduce-scatter: args[0] = input region (count elements), args[1] = output region
  // (count/p elements, disjoint from the input), args[2] = count, a multiple of the
  // communicator size p. Member i gets the sum of elements [i*count/p, (i+1)*count/p).
  DHX_OP_REDUCE_SCATTER,
  // All-gather: args[0] = input region (count/p elements), args[1] = output region (count
  // elements), args[2] = count, a multiple of p. Member i's input lands at elements
  // [i*count/p, (i+1)*count/p) of every member's output. The input is disjoint from the
  // output, or exactly member i's chunk of it (in place, as NCCL allows).
  DHX_OP_ALL_GATHER,
  // Point-to-point: args[0] = buffer region, args[1] = element count, args[2] = peer (I64, rank
  // within the communicator, not this rank), args[3] = tag (I64, 0..DHX_MAX_TAG). A SEND is
  // matched by the peer's RECV from this rank with the same count and tag, in the same order.
  DHX_OP_SEND,
  DHX_OP_RECV,
  // Fills micro-batch args[2] (I64, 0..accum_steps-1) of this step into args[0] (a TOKENS
  // region of micro_batch*seq i32) and args[1] (a TARGETS region of as many): the runtime reads
  // this rank's rows of the shard. Programs that span micro-batches (pipelines) load their own.
  DHX_OP_LOAD_BATCH,
  // All-to-all: args[0] = input region (count elements), args[1] = output region (count
  // elements, disjoint from the input), args[2] = count, a multiple of p. Member i's input is p
  // blocks of count/p elements, block j going to member j; its output block j is member j's
  // input block i.
  DHX_OP_ALL_TO_ALL,
} dhx_op;

// Ops that exchange data over a communicator (they carry `comm` and `dtype`).
static inline bool dhx_op_on_comm(uint32_t op) {
  return op == DHX_OP_ALLREDUCE || op == DHX_OP_REDUCE_SCATTER || op == DHX_OP_ALL_GATHER ||
         op == DHX_OP_ALL_TO_ALL || op == DHX_OP_SEND || op == DHX_OP_RECV;
}

// Ops that compute on the rank's device: neither communication nor a RECORD or WAIT. These
// take the rank's core one at a time, in turns where the program has them (turn, below).
static inline bool dhx_op_computes(uint32_t op) {
  return !dhx_op_on_comm(op) && op != DHX_OP_RECORD && op != DHX_OP_WAIT;
}

// The argument holding the element count of an op on a communicator: args[2] for the ops with
// an input and an output region, args[1] for the all-reduce and the transfers.
static inline int dhx_op_count_arg(uint32_t op) {
  return op == DHX_OP_REDUCE_SCATTER || op == DHX_OP_ALL_GATHER || op == DHX_OP_ALL_TO_ALL ? 2 : 1;
}

typedef struct dhx_plan_instr {
  uint32_t op;        // dhx_op
  uint32_t stream;    // < DHX_MAX_STREAMS; 0 = compute, 1 = communication
  int32_t kernel;     // OP_KERNEL, OP_GRAD_NORM: index in the kernel table; -1 otherwise
  int32_t comm;       // collectives and transfers: communicator id; -1 otherwise
  int32_t event;      // OP_RECORD / OP_WAIT: event id < program's nevents. An all-reduce,
                      // reduce-scatter or all-gather with an event is deferred: its stream may
                      // go on once it is posted, and it records the event when it completes;
                      // one WAIT on the same stream completes it (dhx_instr_deferred). -1
                      // otherwise
  uint32_t dtype;     // collectives and transfers: element type (dhx_dtype); 0 otherwise
  int64_t n;          // OP_KERNEL: index-space size; OP_GRAD_NORM: 1
  // A CPU rank whose program computes on two or more streams (free paired strands) runs its
  // compute instructions one at a time in the order dhxc chose: turn k (1, 2, ...) takes the
  // core once turn k-1 has ended. 0: no turn (every instruction of other programs, and every
  // RECORD, WAIT and communicating instruction).
  uint32_t turn;
  uint32_t nargs;
  dhx_plan_arg args[DHX_MAX_ARGS];
  // Held by reference, not inline: a paper-scale stage has hundreds of thousands of
  // instructions and few are GEMMs. Each points into the plan's pool (dhx_plan_alloc: a plan
  // read from a file, or built by hand) or at dhxc's interned copy (a compiled plan), which
  // outlives the plan.
  const dhx_plan_gemm *gemm;  // OP_GEMM: its shape; NULL otherwise
  const char *note;   // what the instruction is for ("h.0.attn: softmax fwd"), for humans:
                      // shorter than DHX_NAME_MAX; NULL reads as "" (dhx_instr_note)
} dhx_plan_instr;

static inline const char *dhx_instr_note(const dhx_plan_instr *in) {
  return in->note ? in->note : "";
}

// A collective that completes later, at the WAIT on its event (plan_instr.event).
static inline bool dhx_instr_deferred(const dhx_plan_instr *in) {
  return in->event >= 0 && (in->op == DHX_OP_ALLREDUCE || in->op == DHX_OP_REDUCE_SCATTER ||
                            in->op == DHX_OP_ALL_GATHER);
}

// Whether the instruction records its event: a RECORD, or a deferred collective as it completes.
static inline bool dhx_instr_records(const dhx_plan_instr *in) {
  return in->op == DHX_OP_RECORD || dhx_instr_deferred(in);
}

typedef struct dhx_plan_program {
  uint32_t nstreams;   // streams used (1..DHX_MAX_STREAMS)
  uint32_t nevents;
  uint32_t ninstrs;
  dhx_plan_instr *instrs;
} dhx_plan_program;

typedef struct dhx_plan_rank {
  uint32_t dp_rank, dp_size;   // this rank's slice of the global batch
  uint32_t tp_rank, tp_size;   // its place in its tensor-parallel group
  uint32_t pp_rank, pp_size;   // its pipeline stage
  uint32_t reports_loss;       // 1: its LOSSES count towards the logged loss (one rank per
                               //   data-parallel replica: tensor rank 0 of the last stage)
  // A data-parallel replica runs the same buffers and programs as another rank on its own
  // communicators: shares = 1 + that (earlier) rank, which has its own, and communicator
  // subst_from[i] of those programs is subst_to[i] for this rank. The file and the reader keep
  // one copy: a sharing rank's arena_bytes, buffers and programs are the owner's (the same
  // arrays). shares = 0 and nsubst = 0 for a rank with its own.
  uint32_t shares;
  uint32_t nsubst;
  int32_t subst_from[DHX_MAX_COMM_SUBST], subst_to[DHX_MAX_COMM_SUBST];
  int64_t arena_bytes;
  uint32_t nbuffers;
  dhx_plan_buffer *buffers;
  dhx_plan_program programs[DHX_PROG_COUNT];
} dhx_plan_rank;

typedef struct dhx_plan_comm {
  uint32_t nranks;
  int32_t *ranks;     // world ranks, ascending
} dhx_plan_comm;

// How far a kernel reaches through one pointer argument, as a function of the index space n
// and of its i64 arguments, so that the validator can bound every launch without knowing the
// kernel. The extent E is in elements of `elem_bytes` from the argument's byte offset; X, Y, Z
// are the values of the i64 arguments at indices x, y, z (a factor 1 where the index is -1).
// Every i64 argument a form names must be at least 1 (kernels divide by some of them), and the
// extent must be computable without overflow. With n = 0 a kernel touches nothing.
typedef enum {
  DHX_ACC_NONE = 0,  // not a pointer argument
  DHX_ACC_ELEMS,     // E = n·X·Y: index i covers elements [i·X·Y, (i+1)·X·Y)
  DHX_ACC_FIXED,     // E = X·Y whatever n (a per-column table, the rows of a column kernel)
  DHX_ACC_COLUMNS,   // E = (X-1)·Y + n: index j reads column j of X rows of width Y
  DHX_ACC_MOD,       // E = min(n, c): a broadcast input read at i % c (c baked into the kernel)
  DHX_ACC_TABLE,     // E = (vocab-1)·X + (Y, or n when y = -1): rows picked by token ids
  DHX_ACC_CHUNKS,    // E = min(X, n·Y): index k sums [k·Y, (k+1)·Y) below X
  DHX_ACC_PERMUTED,  // E = ceil(n / (X·Y))·X·Y·Z: rows of Z elements permuted in blocks of X·Y
  DHX_ACC_PAIRS,     // E = ceil(n / (X/2))·X: rotary pairs in rows of X = heads·Y; X and Y even,
                     //   Y divides X, Z (the positions) >= 1
  DHX_ACC_ROWS,      // E = ceil(n / X)·Y·Z: X indices per row of a matrix whose rows are Y·Z
                     //   elements apart (attention: a row per head and position, heads side
                     //   by side in the rows of a [tokens, stride] projection)
} dhx_access_form;

#define DHX_ACC_WRITES 1u     // the kernel writes through this pointer
#define DHX_ACC_TOKEN_IDS 2u  // the kernel uses these values as row indices into a TABLE
                              //   argument: it must be a tokens buffer (values below vocab)

typedef struct dhx_plan_access {
  uint32_t form;        // dhx_access_form
  uint32_t flags;       // DHX_ACC_WRITES | DHX_ACC_TOKEN_IDS
  uint32_t elem_bytes;  // 4 (f32, i32) or 8 (f64); 0 for non-pointers
  int32_t x, y, z;      // indices of i64 arguments, -1 when unused
  int64_t c;            // DHX_ACC_MOD: the modulus; 0 otherwise
} dhx_plan_access;

typedef struct dhx_plan_kernel {
  char name[DHX_NAME_MAX];  // symbol in kernels.so is "dhxk_" name, its signature and access
                            // descriptors "dhxabi_" name; PTX entry has the same name
  uint32_t nargs;
  uint32_t threads_per_index;  // GPU threads that share one index of the kernel's index space:
                               // 1, or DHX_PLAN_WARP for a warp-per-row kernel (its PTX entry
                               // runs row = global thread / 32 on lane tid.x % 32)
  uint32_t indices_per_thread;  // indices one GPU thread takes at a time: 1, or DHX_PLAN_WIDE
                                // for a wide kernel (16-byte loads and stores where every
                                // pointer is 16-byte aligned); the launch needs
                                // ceil(n / indices_per_thread) threads
  uint32_t arg_types[DHX_MAX_ARGS];  // dhx_karg_type
  dhx_plan_access access[DHX_MAX_ARGS];  // per argument; form DHX_ACC_NONE for non-pointers
} dhx_plan_kernel;

typedef struct dhx_plan_train {
  int64_t steps, micro_batch, global_batch, accum_steps;  // accum = global/(micro*dp)
  int64_t seq, vocab;
  uint64_t seed;
  double lr, lr_min_ratio, beta1, beta2, eps, weight_decay, grad_clip;
  int64_t warmup_steps, val_every, val_batches, log_every, checkpoint_every;
  char train_path[DHX_PATH_MAX], val_path[DHX_PATH_MAX];  // "" when absent
  double net_bandwidth, net_latency;   // emulated network; 0 = none
  int64_t dp, tp, pp;
  int64_t n_params;                    // trained parameters (whole model)
  double flops_per_token;              // training FLOPs per token (fwd+bwd), for logs/MFU
  char model_name[DHX_NAME_MAX];
  uint32_t skip_nonfinite;             // 1: a step whose loss or gradient norm is not finite is
                                       //   skipped (no optimizer update); 0 or 1
  int64_t micro_per_run;               // micro-batches one MICRO run covers: 1 (the runtime
                                       //   loads each and runs MICRO accum_steps times) or
                                       //   accum_steps (MICRO loads its own with LOAD_BATCH and
                                       //   runs once: a pipeline schedule). TOKENS, TARGETS and
                                       //   LOSSES hold micro_per_run micro-batches.
  uint32_t zero;                       // ZeRO stage 0..3: from 1 on, each data-parallel rank
                                       //   keeps the AdamW moments of its share of the parameters
  int64_t per_node;                    // ranks per node (world ranks r and r' share one when
                                       //   r / per_node == r' / per_node); 0: all on one node
} dhx_plan_train;

typedef struct dhx_plan_pool dhx_plan_pool;

typedef struct dhx_plan {
  uint32_t version;
  dhx_plan_train train;
  uint32_t nkernels;
  dhx_plan_kernel *kernels;
  uint32_t ncomms;
  dhx_plan_comm *comms;    // comm 0 is the data-parallel group of rank 0, etc.
  uint32_t nranks;
  dhx_plan_rank *ranks;
  dhx_plan_pool *pool;     // what the instructions' GEMM shapes and notes point into (NULL:
                           // none; dhx_plan_free frees it)
} dhx_plan;

// ---- plan_pool.c ------------------------------------------------------------------------------
// Zeroed, 8-byte aligned bytes that live as long as the plan (dhx_plan_free frees them).
void *dhx_plan_alloc(dhx_plan *plan, size_t size);
// A copy of text (at most DHX_NAME_MAX - 1 bytes of it) in the plan's pool.
const char *dhx_plan_text(dhx_plan *plan, const char *text);
// Gives `in` a copy of its GEMM shape (zeroed if it has none) of its own in the plan's pool
// and returns it to be changed.
dhx_plan_gemm *dhx_plan_own_gemm(dhx_plan *plan, dhx_plan_instr *in);
void dhx_plan_pool_free(dhx_plan_pool *pool);

// ---- plan_write.c, plan_read.c, plan_validate.c ---------------------------------------------
// Writes `plan` to `path` (plan.bin). Returns false and fills err on failure.
bool dhx_plan_write(const char *path, const dhx_plan *plan, char *err, size_t errlen);
// Reads and validates a plan.bin: magic, version, size, checksum, then every field (kinds in
// range, ids in range, buffers inside the arena, arguments matching kernel signatures, every
// kernel launch inside its buffers through the access descriptors, GEMM extents inside their
// buffers and batches writing disjoint parts of C, counts inside their buffers, events recorded
// before use...). On failure returns false and err names the field that is wrong; `plan` is
// left empty.
bool dhx_plan_read(const char *path, dhx_plan *plan, char *err, size_t errlen);
// Same checks on an in-memory image (used by the fuzzer and by dhx_plan_read).
bool dhx_plan_decode(const uint8_t *data, size_t size, dhx_plan *plan, char *err, size_t errlen);
// Validates a plan that is in memory (dhxc runs it before writing).
bool dhx_plan_validate(const dhx_plan *plan, char *err, size_t errlen);
void dhx_plan_free(dhx_plan *plan);

// Human-readable listing for `dhxc --emit=schedule`.
void dhx_plan_print(const dhx_plan *plan, void *file /* FILE* */);

#endif
