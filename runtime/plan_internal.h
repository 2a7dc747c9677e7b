// plan_internal.h — what the plan library's own files share and nobody else needs: the two-way
// visitor that serializes a plan (plan_codec.c; plan_write.c and plan_read.c drive it) and the
// context through which the validator's checks report (plan_validate*.c).
#ifndef DHX_PLAN_INTERNAL_H
#define DHX_PLAN_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "plan.h"

// ---- the two-way visitor (plan_codec.c) -------------------------------------------------------
// One visitor serves both directions, so the writer and the reader cannot drift apart.

typedef struct plan_io {
  bool reading;
  // writing: a growing byte buffer
  uint8_t *out;
  size_t len, cap;
  // reading: a bounded cursor over the payload
  const uint8_t *in;
  size_t size, pos;
  // the first failure (out of bytes, a count over its limit, out of memory) stops everything
  bool failed;
  char *err;
  size_t errlen;
  char where[160];  // what is being read, for "payload ends early" messages
  dhx_plan *plan;   // reading: the plan whose pool takes the GEMM shapes and notes
} plan_io;

// Records the first failure in s->err; later ones are ignored.
void plan_io_fail(plan_io *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Writes every field of `p` to s->out, or reads them from s->in (allocating its arrays).
void plan_io_plan(plan_io *s, dhx_plan *p);

// ---- validation (plan_validate.c, plan_validate_instr.c, plan_validate_gemm.c,
//      plan_validate_sync.c) ----------------------------------------------------------------------
// Everything the runtime relies on is checked, so the executor can index buffers and kernels
// and compute pointers without checks of its own. Messages name the place: the plan field, or
// "rank R program P instr I (note)".

typedef struct plan_check_ctx {
  const dhx_plan *p;
  char *err;
  size_t errlen;
  int rank, prog;  // -1 when outside a rank / program
  int64_t instr;   // -1 when outside an instruction
  const char *note;  // the instruction's note, once known to be NUL-terminated
} plan_check_ctx;

// Formats the message, prefixed by the place the context names, into v->err; returns false.
bool plan_check_fail(plan_check_ctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// plan_validate_comm.c: a rank that runs another rank's programs on its own communicators.
bool plan_check_shared_rank(plan_check_ctx *v);

// Inside a check whose context is `v`: fail with the message unless `cond` holds.
#define CHECK(cond, ...) \
  do {                   \
    if (!(cond)) return plan_check_fail(v, __VA_ARGS__); \
  } while (0)

static inline bool terminated(const char *s, size_t n) { return memchr(s, 0, n) != NULL; }

static inline bool finite_nonneg(double x) { return isfinite(x) && x >= 0; }

// One instruction of program `p` of rank v->rank (plan_validate_instr.c).
bool plan_check_instr(plan_check_ctx *v, const dhx_plan_program *p, const dhx_plan_instr *in);
// A GEMM instruction: its operands inside their buffers, its batches disjoint in C
// (plan_validate_gemm.c).
bool plan_check_gemm(plan_check_ctx *v, const dhx_plan_instr *in);
// A collective or transfer: dtype, communicator membership, regions, peer and tag
// (plan_validate_comm.c).
bool plan_check_comm_instr(plan_check_ctx *v, const dhx_plan_instr *in);
// The region of argument j (a buffer argument), count elements of elem_size bytes from its
// byte offset, inside its buffer (plan_validate_instr.c).
bool plan_check_region(plan_check_ctx *v, const dhx_plan_instr *in, int j, int64_t count,
                       int64_t elem_size);
// Exactly the listed argument kinds (plan_validate_instr.c).
bool plan_check_arg_kinds(plan_check_ctx *v, const dhx_plan_instr *in, int n,
                          const uint32_t *kinds);
// What would hang (plan_validate_sync.c): a WAIT that can never complete in program `p`, and
// collectives and transfers that do not pair up across the members of a communicator.
bool plan_check_events(plan_check_ctx *v, const dhx_plan_program *p);
bool plan_check_collectives(plan_check_ctx *v);

#endif
