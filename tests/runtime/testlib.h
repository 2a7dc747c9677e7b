// testlib.h — helpers for the runtime tests: assertions, a small builder for plans in memory,
// the toy linear-regression plan, plan directories and token shards on disk.
#ifndef DHX_TESTLIB_H
#define DHX_TESTLIB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

// An operation that must fail with a message containing `substr`.
#define CHECK_FAILS(ok, err, substr)                                                          \
  do {                                                                                        \
    bool ok_ = (ok);                                                                          \
    if (ok_ || !strstr((err), (substr))) {                                                    \
      fprintf(stderr, "%s:%d: expected failure mentioning \"%s\", got %s: %s\n", __FILE__,    \
              __LINE__, (substr), ok_ ? "success" : "failure", ok_ ? "" : (err));             \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

// ---- plan builder (rank 0; tb_replicate copies it to the other ranks) ------------------------
dhx_plan *tb_new(uint32_t nranks);
void tb_free(dhx_plan *p);
// A buffer appended to rank 0's arena at the next DHX_ALIGN offset; returns its id.
int32_t tb_buffer(dhx_plan *p, const char *name, dhx_buf_kind kind, dhx_dtype dtype, int ndim,
                  const int64_t *shape);
// A parameter with its gradient and both moments (named grad.NAME, adam_m.NAME, adam_v.NAME).
int32_t tb_param(dhx_plan *p, const char *name, int ndim, const int64_t *shape, dhx_init_kind init,
                 float std, bool decay);
// Makes buffer `id`, the last one appended, hold ZeRO shard `index` of `parts` of its slice
// (plan.h): C = ceil(S / parts) rounded up to 16 elements, the arena grown to fit.
void tb_shard(dhx_plan *p, int32_t id, uint32_t parts, uint32_t index);
// tb_param with the parameter, its gradient and both moments each held as shard `index` of
// `parts` (ZeRO-3).
int32_t tb_sharded_param(dhx_plan *p, const char *name, int ndim, const int64_t *shape,
                         dhx_init_kind init, float std, uint32_t parts, uint32_t index);
// Kernel table entry (deduplicated by name); `sig` spells argument types: p=ptr i=i64 f=f32 d=f64.
int32_t tb_kernel(dhx_plan *p, const char *name, const char *sig);
int32_t tb_comm(dhx_plan *p, int n, const int32_t *ranks);
// Appends an instruction to rank 0's program `prog`; the program's stream count grows to fit.
dhx_plan_instr *tb_instr(dhx_plan *p, dhx_prog_kind prog, dhx_op op, uint32_t stream,
                         const char *note);
// The same, on rank `rank` (after tb_replicate, for programs that differ between ranks).
dhx_plan_instr *tb_rank_instr(dhx_plan *p, uint32_t rank, dhx_prog_kind prog, dhx_op op,
                              uint32_t stream, const char *note);
dhx_plan_instr *tb_kernel_instr(dhx_plan *p, dhx_prog_kind prog, uint32_t stream, const char *kernel,
                                const char *sig, int64_t n, const char *note);
void tb_arg_buf(dhx_plan_instr *in, int32_t buf, int64_t byte_offset);
void tb_arg_i64(dhx_plan_instr *in, int64_t v);
void tb_arg_f64(dhx_plan_instr *in, double v);
void tb_arg_reg(dhx_plan_instr *in, dhx_reg r);
// An event: RECORD on `from` then WAIT on `to` (instructions appended in that order).
void tb_event(dhx_plan *p, dhx_prog_kind prog, uint32_t from, uint32_t to, const char *note);
// Copies rank 0 to every other rank (data-parallel replicas), setting dp_rank.
void tb_replicate(dhx_plan *p);

// ---- the toy plan -----------------------------------------------------------------------------
// Linear regression from one-hot tokens to one-hot next tokens: y = onehot(x) W + b, loss
// 0.5|y - onehot(target)|^2 per position, AdamW with clipping. GEMMs forward and backward, the
// test kernels, and at dp > 1 the gradient all-reduces on a communication stream with events.
typedef struct toy_opts {
  int dp;
  int64_t steps, micro_batch, global_batch, seq, vocab;
  int64_t val_every, val_batches, checkpoint_every, warmup;
  double lr, net_bandwidth, net_latency;
} toy_opts;

toy_opts toy_defaults(void);
dhx_plan *toy_plan(const toy_opts *o);

// ---- the collectives plan ---------------------------------------------------------------------
// Communicator 0 is every rank. STEP: on stream 0, a reduce-scatter of x (n floats, n a
// multiple of nranks) into part (n/nranks), then an all-gather of part into whole (n); on
// stream 1, each rank sends msg[0, first) with tag 1 and msg[first, first+second) with tag 2 to
// its right neighbour and receives its left neighbour's into inbox at the same places.
typedef struct collectives_bufs {
  int32_t x, part, whole, msg, inbox;  // buffer ids
  int64_t first, second;               // the two message lengths
} collectives_bufs;

dhx_plan *collectives_plan(uint32_t nranks, int64_t n, int64_t first, int64_t second,
                           collectives_bufs *b);

// ---- files ------------------------------------------------------------------------------------
// Writes PLAN_DIR/plan.bin and copies the test kernels as PLAN_DIR/kernels.so.
void write_plan_dir(const dhx_plan *p, const char *dir);
// Writes an llm.c shard with the given header fields and tokens.
void write_shard_raw(const char *path, int32_t magic, int32_t version, int32_t ntok_header,
                     const uint16_t *tokens, int64_t ntok);
// A learnable token stream: mostly next = (3 t + 1) mod vocab, sometimes random.
void write_toy_shard(const char *path, int64_t ntok, int64_t vocab, uint64_t seed);
// Reads a whole file; returns NULL if it cannot.
uint8_t *read_file(const char *path, size_t *size);
void write_file(const char *path, const void *data, size_t size);
// A fresh empty directory under the current directory.
void fresh_dir(const char *dir);

// ---- single-process test programs: `PROG NAME` runs one test -----------------------------------
typedef struct tl_test {
  const char *name;
  void (*fn)(void);
} tl_test;
extern char tl_dir[512];  // the running test's scratch folder, work_NAME
// tl_dir/name, in one of 8 rotating buffers (so a few can be used in one call).
const char *tl_path(const char *name);
// Runs the test named argv[1] in a fresh tl_dir and prints "NAME: passed"; on anything else
// lists the tests and returns 2.
int tl_main(const char *prog, const tl_test *tests, size_t n, int argc, char **argv);

#endif
