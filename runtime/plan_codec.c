// plan_codec.c — the encoding of plan.bin's payload: one visitor that writes a plan's fields or
// reads them back, and the CRC-32 that guards them. plan_write.c and plan_read.c add the header.
//
// File layout (all integers little-endian):
//
//   offset  size  field
//        0     8  magic "DHXPLAN\0"
//        8     4  format version (DHX_PLAN_VERSION)
//       12     4  flags (0)
//       16     8  payload size in bytes
//       24     4  CRC-32 (IEEE) of the payload
//       28     4  reserved (0)
//       32     …  payload
//
// The payload is every field of the plan in declaration order, each written explicitly
// (never a struct image, so padding and host layout do not leak into the file): integers as
// 4 or 8 little-endian bytes, floats and doubles as their IEEE bits, names and paths as their
// fixed DHX_NAME_MAX / DHX_PATH_MAX byte arrays, fixed-size arrays (shape, arg_types, access)
// in full, and variable arrays as a u32 count followed by the elements. An instruction holds
// only its nargs arguments, its GEMM shape when it is a GEMM, and its note as a length and
// characters.
//
// One visitor (plan_io_plan and the io_* functions below it) serves both directions, so the
// writer and the reader cannot drift apart. The reader never trusts the input: it reads through
// a bounded cursor that fails cleanly at the end of the data, and bounds every count both by a
// format limit and by the bytes that remain before it allocates anything.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

// Serialized sizes of the fixed-size records (the reader uses them to bound counts).
#define BUFFER_BYTES (DHX_NAME_MAX + 3 * 4 + DHX_MAX_DIMS * 8 + 2 * 8 + 3 * 4 + 3 * 4 + \
                      DHX_MAX_DIMS * 8 + 4 * 4 + 2 * 4)
#define INSTR_BYTES (6 * 4 + 8 + 4 + 4 + 4)  // no arguments, no GEMM, an empty note
#define ACCESS_BYTES (3 * 4 + 3 * 4 + 8)
#define KERNEL_BYTES (DHX_NAME_MAX + 2 * 4 + DHX_MAX_ARGS * 4 + DHX_MAX_ARGS * ACCESS_BYTES)
#define PROGRAM_MIN_BYTES (3 * 4)
#define RANK_MIN_BYTES (7 * 4 + 4 + 4)  // a sharing rank: coordinates, shares, no substitutions
#define COMM_MIN_BYTES 4

// ---- CRC-32 -----------------------------------------------------------------------------------

uint32_t dhx_crc32(const uint8_t *data, size_t n) {
  // The table is rebuilt per call (2K operations, nothing next to a plan's payload) so that
  // concurrent callers share no mutable state.
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

// ---- the two-way visitor ----------------------------------------------------------------------

void plan_io_fail(plan_io *s, const char *fmt, ...) {
  if (s->failed) return;
  s->failed = true;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, s->errlen, fmt, ap);
  va_end(ap);
}

static void put(plan_io *s, const void *p, size_t n) {
  if (s->failed) return;
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + n) cap *= 2;
    uint8_t *out = realloc(s->out, cap);
    if (!out) {
      plan_io_fail(s, "out of memory while serializing the plan");
      return;
    }
    s->out = out;
    s->cap = cap;
  }
  memcpy(s->out + s->len, p, n);
  s->len += n;
}

static bool take(plan_io *s, void *p, size_t n) {
  if (s->failed) return false;
  if (n > s->size - s->pos) {
    plan_io_fail(s, "payload ends early (%zu of %zu bytes read) while reading %s", s->pos, s->size,
            s->where);
    return false;
  }
  memcpy(p, s->in + s->pos, n);
  s->pos += n;
  return true;
}

static void io_u32(plan_io *s, uint32_t *v) {
  uint8_t b[4];
  if (!s->reading) {
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(*v >> (8 * i));
    put(s, b, 4);
  } else if (take(s, b, 4)) {
    *v = 0;
    for (int i = 0; i < 4; i++) *v |= (uint32_t)b[i] << (8 * i);
  }
}

static void io_u64(plan_io *s, uint64_t *v) {
  uint8_t b[8];
  if (!s->reading) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(*v >> (8 * i));
    put(s, b, 8);
  } else if (take(s, b, 8)) {
    *v = 0;
    for (int i = 0; i < 8; i++) *v |= (uint64_t)b[i] << (8 * i);
  }
}

// Signed and floating-point values travel as the bits of their unsigned twins.
static void io_i32(plan_io *s, int32_t *v) {
  uint32_t u;
  memcpy(&u, v, 4);
  io_u32(s, &u);
  memcpy(v, &u, 4);
}

static void io_i64(plan_io *s, int64_t *v) {
  uint64_t u;
  memcpy(&u, v, 8);
  io_u64(s, &u);
  memcpy(v, &u, 8);
}

static void io_f32(plan_io *s, float *v) {
  uint32_t u;
  memcpy(&u, v, 4);
  io_u32(s, &u);
  memcpy(v, &u, 4);
}

static void io_f64(plan_io *s, double *v) {
  uint64_t u;
  memcpy(&u, v, 8);
  io_u64(s, &u);
  memcpy(v, &u, 8);
}

// A fixed-size character array, written in full (validation checks it holds a NUL).
static void io_chars(plan_io *s, char *p, size_t n) {
  if (!s->reading)
    put(s, p, n);
  else
    take(s, p, n);
}

// An instruction's note, as its length and characters (at most DHX_NAME_MAX - 1); reading
// puts it in the plan's pool.
static void io_note(plan_io *s, const char **note) {
  uint32_t len = 0;
  if (!s->reading) len = (uint32_t)strnlen(*note ? *note : "", DHX_NAME_MAX - 1);
  io_u32(s, &len);
  if (!s->reading) {
    put(s, *note ? *note : "", len);
    return;
  }
  if (s->failed) return;
  if (len >= DHX_NAME_MAX) {
    plan_io_fail(s, "%s: a text of %u bytes (at most %d)", s->where, len, DHX_NAME_MAX - 1);
    return;
  }
  char *p = dhx_plan_alloc(s->plan, len + 1);
  if (take(s, p, len)) *note = p;
}

// An element count. Reading bounds it by the format's limit and by the bytes left (each
// element takes at least `min_bytes`), so what is allocated stays proportional to the input.
static void io_count(plan_io *s, uint32_t *n, uint32_t max, size_t min_bytes, const char *what) {
  if (!s->reading && *n > max) {
    plan_io_fail(s, "%s: %u %s, the plan format allows at most %u", s->where, *n, what, max);
    return;
  }
  io_u32(s, n);
  if (!s->reading || s->failed) return;
  if (*n > max)
    plan_io_fail(s, "%s: %u %s, the plan format allows at most %u (corrupted plan?)", s->where, *n,
            what, max);
  else if ((uint64_t)*n * min_bytes > s->size - s->pos)
    plan_io_fail(s, "%s: %u %s do not fit in the %zu bytes left (corrupted plan?)", s->where, *n,
            what, s->size - s->pos);
}

// Reading: allocates `n` zeroed elements (at least one, so a valid plan never holds NULL).
static void io_alloc(plan_io *s, void **p, uint32_t n, size_t size) {
  if (!s->reading || s->failed) return;
  *p = calloc(n ? n : 1, size);
  if (!*p) plan_io_fail(s, "out of memory reading %s (%u elements)", s->where, n);
}

static void io_train(plan_io *s, dhx_plan_train *t) {
  snprintf(s->where, sizeof s->where, "the train section");
  io_i64(s, &t->steps);
  io_i64(s, &t->micro_batch);
  io_i64(s, &t->global_batch);
  io_i64(s, &t->accum_steps);
  io_i64(s, &t->seq);
  io_i64(s, &t->vocab);
  io_u64(s, &t->seed);
  io_f64(s, &t->lr);
  io_f64(s, &t->lr_min_ratio);
  io_f64(s, &t->beta1);
  io_f64(s, &t->beta2);
  io_f64(s, &t->eps);
  io_f64(s, &t->weight_decay);
  io_f64(s, &t->grad_clip);
  io_i64(s, &t->warmup_steps);
  io_i64(s, &t->val_every);
  io_i64(s, &t->val_batches);
  io_i64(s, &t->log_every);
  io_i64(s, &t->checkpoint_every);
  io_chars(s, t->train_path, DHX_PATH_MAX);
  io_chars(s, t->val_path, DHX_PATH_MAX);
  io_f64(s, &t->net_bandwidth);
  io_f64(s, &t->net_latency);
  io_i64(s, &t->dp);
  io_i64(s, &t->tp);
  io_i64(s, &t->pp);
  io_i64(s, &t->n_params);
  io_f64(s, &t->flops_per_token);
  io_chars(s, t->model_name, DHX_NAME_MAX);
  io_u32(s, &t->skip_nonfinite);
  io_i64(s, &t->micro_per_run);
  io_u32(s, &t->zero);
  io_i64(s, &t->per_node);
}

static void io_access(plan_io *s, dhx_plan_access *a) {
  io_u32(s, &a->form);
  io_u32(s, &a->flags);
  io_u32(s, &a->elem_bytes);
  io_i32(s, &a->x);
  io_i32(s, &a->y);
  io_i32(s, &a->z);
  io_i64(s, &a->c);
}

static void io_kernel(plan_io *s, dhx_plan_kernel *k) {
  io_chars(s, k->name, DHX_NAME_MAX);
  io_u32(s, &k->nargs);
  io_u32(s, &k->threads_per_index);
  io_u32(s, &k->indices_per_thread);
  for (int i = 0; i < DHX_MAX_ARGS; i++) io_u32(s, &k->arg_types[i]);
  for (int i = 0; i < DHX_MAX_ARGS; i++) io_access(s, &k->access[i]);
}

static void io_comm(plan_io *s, dhx_plan_comm *c) {
  io_count(s, &c->nranks, DHX_PLAN_MAX_RANKS, 4, "member ranks");
  io_alloc(s, (void **)&c->ranks, c->nranks, sizeof(int32_t));
  for (uint32_t i = 0; i < c->nranks && !s->failed; i++) io_i32(s, &c->ranks[i]);
}

static void io_buffer(plan_io *s, dhx_plan_buffer *b) {
  io_chars(s, b->name, DHX_NAME_MAX);
  io_u32(s, &b->kind);
  io_u32(s, &b->dtype);
  io_u32(s, &b->ndim);
  for (int d = 0; d < DHX_MAX_DIMS; d++) io_i64(s, &b->shape[d]);
  io_i64(s, &b->offset);
  io_i64(s, &b->nbytes);
  io_u32(s, &b->init);
  io_f32(s, &b->init_std);
  io_u32(s, &b->decay);
  io_i32(s, &b->grad);
  io_i32(s, &b->opt_m);
  io_i32(s, &b->opt_v);
  io_i32(s, &b->master);
  for (int d = 0; d < DHX_MAX_DIMS; d++) io_i64(s, &b->global_shape[d]);
  io_i32(s, &b->split_dim);
  io_u32(s, &b->split_groups);
  io_u32(s, &b->split_parts);
  io_u32(s, &b->split_index);
  io_u32(s, &b->shard_parts);
  io_u32(s, &b->shard_index);
}

static void io_arg(plan_io *s, dhx_plan_arg *a) {
  io_u32(s, &a->kind);
  io_i32(s, &a->buf);
  if (a->kind == DHX_ARG_F64) io_f64(s, &a->f);  // (version 13: one word, by kind)
  else io_i64(s, &a->i);
}

static void io_gemm(plan_io *s, dhx_plan_gemm *g) {
  io_u32(s, &g->trans_a);
  io_u32(s, &g->trans_b);
  io_i64(s, &g->m);
  io_i64(s, &g->n);
  io_i64(s, &g->k);
  io_i64(s, &g->lda);
  io_i64(s, &g->ldb);
  io_i64(s, &g->ldc);
  io_f64(s, &g->alpha);
  io_f64(s, &g->beta);
  for (int l = 0; l < 2; l++) io_i64(s, &g->batch[l]);
  for (int l = 0; l < 2; l++) io_i64(s, &g->stride_a[l]);
  for (int l = 0; l < 2; l++) io_i64(s, &g->stride_b[l]);
  for (int l = 0; l < 2; l++) io_i64(s, &g->stride_c[l]);
  io_u32(s, &g->epilogue);
}

static void io_instr(plan_io *s, dhx_plan_instr *in) {
  io_u32(s, &in->op);
  io_u32(s, &in->stream);
  io_i32(s, &in->kernel);
  io_i32(s, &in->comm);
  io_i32(s, &in->event);
  io_u32(s, &in->dtype);
  io_i64(s, &in->n);
  io_u32(s, &in->turn);
  io_u32(s, &in->nargs);
  if (in->nargs > DHX_MAX_ARGS) {
    plan_io_fail(s, "%s: an instruction with %u arguments (at most %d)", s->where, in->nargs,
                 DHX_MAX_ARGS);
    return;
  }
  // Only what the instruction uses: its arguments, the GEMM shape of a GEMM, and the note's
  // characters (most instructions use a few of the 16 argument slots and no GEMM).
  for (uint32_t i = 0; i < in->nargs; i++) io_arg(s, &in->args[i]);
  if (in->op == DHX_OP_GEMM) {
    if (s->reading) {
      if (!s->failed) io_gemm(s, dhx_plan_own_gemm(s->plan, in));
    } else if (!in->gemm) {
      plan_io_fail(s, "%s: a GEMM without its shape", s->where);
    } else {
      dhx_plan_gemm g = *in->gemm;
      io_gemm(s, &g);
    }
  }
  io_note(s, &in->note);
}

static void io_program(plan_io *s, dhx_plan_program *p, uint32_t rank, int kind) {
  snprintf(s->where, sizeof s->where, "rank %u program %s", rank, dhx_prog_name((uint32_t)kind));
  io_u32(s, &p->nstreams);
  io_u32(s, &p->nevents);
  io_count(s, &p->ninstrs, DHX_PLAN_MAX_INSTRS, INSTR_BYTES, "instructions");
  io_alloc(s, (void **)&p->instrs, p->ninstrs, sizeof(dhx_plan_instr));
  for (uint32_t i = 0; i < p->ninstrs && !s->failed; i++) io_instr(s, &p->instrs[i]);
}

// A rank that shares an earlier rank's sections: reading points it at the owner's arrays.
static bool io_sharing(plan_io *s, dhx_plan *p, dhx_plan_rank *r, uint32_t rank) {
  io_u32(s, &r->shares);
  io_count(s, &r->nsubst, DHX_MAX_COMM_SUBST, 8, "communicator substitutions");
  for (uint32_t i = 0; i < r->nsubst && !s->failed; i++) {
    io_i32(s, &r->subst_from[i]);
    io_i32(s, &r->subst_to[i]);
  }
  if (s->failed || r->shares == 0) return false;
  uint32_t owner = r->shares - 1;
  if (owner >= rank || p->ranks[owner].shares != 0) {
    plan_io_fail(s, "rank %u shares rank %u, which is not an earlier rank with its own programs",
                 rank, owner);
    r->shares = 0;  // nothing of its own to free, nothing shared
    return true;
  }
  if (s->reading) {
    const dhx_plan_rank *o = &p->ranks[owner];
    r->arena_bytes = o->arena_bytes;
    r->nbuffers = o->nbuffers;
    r->buffers = o->buffers;
    memcpy(r->programs, o->programs, sizeof r->programs);
  }
  return true;
}

static void io_rank(plan_io *s, dhx_plan *plan, dhx_plan_rank *r, uint32_t rank) {
  snprintf(s->where, sizeof s->where, "rank %u", rank);
  io_u32(s, &r->dp_rank);
  io_u32(s, &r->dp_size);
  io_u32(s, &r->tp_rank);
  io_u32(s, &r->tp_size);
  io_u32(s, &r->pp_rank);
  io_u32(s, &r->pp_size);
  io_u32(s, &r->reports_loss);
  if (io_sharing(s, plan, r, rank)) return;
  io_i64(s, &r->arena_bytes);
  io_count(s, &r->nbuffers, DHX_PLAN_MAX_BUFFERS, BUFFER_BYTES, "buffers");
  io_alloc(s, (void **)&r->buffers, r->nbuffers, sizeof(dhx_plan_buffer));
  snprintf(s->where, sizeof s->where, "rank %u buffers", rank);
  for (uint32_t i = 0; i < r->nbuffers && !s->failed; i++) io_buffer(s, &r->buffers[i]);
  for (int p = 0; p < DHX_PROG_COUNT; p++) io_program(s, &r->programs[p], rank, p);
}

void plan_io_plan(plan_io *s, dhx_plan *p) {
  s->plan = p;
  io_train(s, &p->train);
  snprintf(s->where, sizeof s->where, "the kernel table");
  io_count(s, &p->nkernels, DHX_PLAN_MAX_KERNELS, KERNEL_BYTES, "kernels");
  io_alloc(s, (void **)&p->kernels, p->nkernels, sizeof(dhx_plan_kernel));
  for (uint32_t i = 0; i < p->nkernels && !s->failed; i++) io_kernel(s, &p->kernels[i]);
  snprintf(s->where, sizeof s->where, "the communicator table");
  io_count(s, &p->ncomms, DHX_PLAN_MAX_COMMS, COMM_MIN_BYTES, "communicators");
  io_alloc(s, (void **)&p->comms, p->ncomms, sizeof(dhx_plan_comm));
  for (uint32_t i = 0; i < p->ncomms && !s->failed; i++) io_comm(s, &p->comms[i]);
  snprintf(s->where, sizeof s->where, "the rank table");
  io_count(s, &p->nranks, DHX_PLAN_MAX_RANKS, RANK_MIN_BYTES, "ranks");
  io_alloc(s, (void **)&p->ranks, p->nranks, sizeof(dhx_plan_rank));
  for (uint32_t i = 0; i < p->nranks && !s->failed; i++) io_rank(s, p, &p->ranks[i], i);
}
