// plan_io.c — plan.bin: writing, reading, and validating a plan.
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
// fixed DHX_NAME_MAX / DHX_PATH_MAX byte arrays, fixed-size arrays (shape, args, arg_types,
// access) in full, and variable arrays as a u32 count followed by the elements.
//
// One visitor (io_plan and the io_* functions below it) serves both directions, so the writer
// and the reader cannot drift apart. The reader never trusts the input: it reads through a
// bounded cursor that fails cleanly at the end of the data, and bounds every count both by a
// format limit and by the bytes that remain before it allocates anything.
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_abi.h"
#include "plan.h"
#include "plan_util.h"

// Serialized sizes of the fixed-size records (the reader uses them to bound counts).
#define BUFFER_BYTES (DHX_NAME_MAX + 3 * 4 + DHX_MAX_DIMS * 8 + 2 * 8 + 3 * 4 + 3 * 4)
#define ARG_BYTES (4 + 4 + 8 + 8)
#define GEMM_BYTES (2 * 4 + 6 * 8 + 2 * 8 + 8 * 8)
#define INSTR_BYTES (5 * 4 + 8 + 4 + DHX_MAX_ARGS * ARG_BYTES + GEMM_BYTES + DHX_NAME_MAX)
#define ACCESS_BYTES (3 * 4 + 3 * 4 + 8)
#define KERNEL_BYTES (DHX_NAME_MAX + 4 + DHX_MAX_ARGS * 4 + DHX_MAX_ARGS * ACCESS_BYTES)
#define PROGRAM_MIN_BYTES (3 * 4)
#define RANK_MIN_BYTES (2 * 4 + 8 + 4 + DHX_PROG_COUNT * PROGRAM_MIN_BYTES)
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

typedef struct io {
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
} io;

static void io_fail(io *s, const char *fmt, ...) {
  if (s->failed) return;
  s->failed = true;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, s->errlen, fmt, ap);
  va_end(ap);
}

static void put(io *s, const void *p, size_t n) {
  if (s->failed) return;
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + n) cap *= 2;
    uint8_t *out = realloc(s->out, cap);
    if (!out) {
      io_fail(s, "out of memory while serializing the plan");
      return;
    }
    s->out = out;
    s->cap = cap;
  }
  memcpy(s->out + s->len, p, n);
  s->len += n;
}

static bool take(io *s, void *p, size_t n) {
  if (s->failed) return false;
  if (n > s->size - s->pos) {
    io_fail(s, "payload ends early (%zu of %zu bytes read) while reading %s", s->pos, s->size,
            s->where);
    return false;
  }
  memcpy(p, s->in + s->pos, n);
  s->pos += n;
  return true;
}

static void io_u32(io *s, uint32_t *v) {
  uint8_t b[4];
  if (!s->reading) {
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(*v >> (8 * i));
    put(s, b, 4);
  } else if (take(s, b, 4)) {
    *v = 0;
    for (int i = 0; i < 4; i++) *v |= (uint32_t)b[i] << (8 * i);
  }
}

static void io_u64(io *s, uint64_t *v) {
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
static void io_i32(io *s, int32_t *v) {
  uint32_t u;
  memcpy(&u, v, 4);
  io_u32(s, &u);
  memcpy(v, &u, 4);
}

static void io_i64(io *s, int64_t *v) {
  uint64_t u;
  memcpy(&u, v, 8);
  io_u64(s, &u);
  memcpy(v, &u, 8);
}

static void io_f32(io *s, float *v) {
  uint32_t u;
  memcpy(&u, v, 4);
  io_u32(s, &u);
  memcpy(v, &u, 4);
}

static void io_f64(io *s, double *v) {
  uint64_t u;
  memcpy(&u, v, 8);
  io_u64(s, &u);
  memcpy(v, &u, 8);
}

// A fixed-size character array, written in full (validation checks it holds a NUL).
static void io_chars(io *s, char *p, size_t n) {
  if (!s->reading)
    put(s, p, n);
  else
    take(s, p, n);
}

// An element count. Reading bounds it by the format's limit and by the bytes left (each
// element takes at least `min_bytes`), so what is allocated stays proportional to the input.
static void io_count(io *s, uint32_t *n, uint32_t max, size_t min_bytes, const char *what) {
  if (!s->reading && *n > max) {
    io_fail(s, "%s: %u %s, the plan format allows at most %u", s->where, *n, what, max);
    return;
  }
  io_u32(s, n);
  if (!s->reading || s->failed) return;
  if (*n > max)
    io_fail(s, "%s: %u %s, the plan format allows at most %u (corrupted plan?)", s->where, *n,
            what, max);
  else if ((uint64_t)*n * min_bytes > s->size - s->pos)
    io_fail(s, "%s: %u %s do not fit in the %zu bytes left (corrupted plan?)", s->where, *n,
            what, s->size - s->pos);
}

// Reading: allocates `n` zeroed elements (at least one, so a valid plan never holds NULL).
static void io_alloc(io *s, void **p, uint32_t n, size_t size) {
  if (!s->reading || s->failed) return;
  *p = calloc(n ? n : 1, size);
  if (!*p) io_fail(s, "out of memory reading %s (%u elements)", s->where, n);
}

static void io_train(io *s, dhx_plan_train *t) {
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
}

static void io_access(io *s, dhx_plan_access *a) {
  io_u32(s, &a->form);
  io_u32(s, &a->flags);
  io_u32(s, &a->elem_bytes);
  io_i32(s, &a->x);
  io_i32(s, &a->y);
  io_i32(s, &a->z);
  io_i64(s, &a->c);
}

static void io_kernel(io *s, dhx_plan_kernel *k) {
  io_chars(s, k->name, DHX_NAME_MAX);
  io_u32(s, &k->nargs);
  for (int i = 0; i < DHX_MAX_ARGS; i++) io_u32(s, &k->arg_types[i]);
  for (int i = 0; i < DHX_MAX_ARGS; i++) io_access(s, &k->access[i]);
}

static void io_comm(io *s, dhx_plan_comm *c) {
  io_count(s, &c->nranks, DHX_PLAN_MAX_RANKS, 4, "member ranks");
  io_alloc(s, (void **)&c->ranks, c->nranks, sizeof(int32_t));
  for (uint32_t i = 0; i < c->nranks && !s->failed; i++) io_i32(s, &c->ranks[i]);
}

static void io_buffer(io *s, dhx_plan_buffer *b) {
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
}

static void io_arg(io *s, dhx_plan_arg *a) {
  io_u32(s, &a->kind);
  io_i32(s, &a->buf);
  io_i64(s, &a->i);
  io_f64(s, &a->f);
}

static void io_gemm(io *s, dhx_plan_gemm *g) {
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
}

static void io_instr(io *s, dhx_plan_instr *in) {
  io_u32(s, &in->op);
  io_u32(s, &in->stream);
  io_i32(s, &in->kernel);
  io_i32(s, &in->comm);
  io_i32(s, &in->event);
  io_i64(s, &in->n);
  io_u32(s, &in->nargs);
  for (int i = 0; i < DHX_MAX_ARGS; i++) io_arg(s, &in->args[i]);
  io_gemm(s, &in->gemm);
  io_chars(s, in->note, DHX_NAME_MAX);
}

static void io_program(io *s, dhx_plan_program *p, uint32_t rank, int kind) {
  snprintf(s->where, sizeof s->where, "rank %u program %s", rank, dhx_prog_name((uint32_t)kind));
  io_u32(s, &p->nstreams);
  io_u32(s, &p->nevents);
  io_count(s, &p->ninstrs, DHX_PLAN_MAX_INSTRS, INSTR_BYTES, "instructions");
  io_alloc(s, (void **)&p->instrs, p->ninstrs, sizeof(dhx_plan_instr));
  for (uint32_t i = 0; i < p->ninstrs && !s->failed; i++) io_instr(s, &p->instrs[i]);
}

static void io_rank(io *s, dhx_plan_rank *r, uint32_t rank) {
  snprintf(s->where, sizeof s->where, "rank %u", rank);
  io_u32(s, &r->dp_rank);
  io_u32(s, &r->dp_size);
  io_i64(s, &r->arena_bytes);
  io_count(s, &r->nbuffers, DHX_PLAN_MAX_BUFFERS, BUFFER_BYTES, "buffers");
  io_alloc(s, (void **)&r->buffers, r->nbuffers, sizeof(dhx_plan_buffer));
  snprintf(s->where, sizeof s->where, "rank %u buffers", rank);
  for (uint32_t i = 0; i < r->nbuffers && !s->failed; i++) io_buffer(s, &r->buffers[i]);
  for (int p = 0; p < DHX_PROG_COUNT; p++) io_program(s, &r->programs[p], rank, p);
}

static void io_plan(io *s, dhx_plan *p) {
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
  for (uint32_t i = 0; i < p->nranks && !s->failed; i++) io_rank(s, &p->ranks[i], i);
}

// ---- writing ----------------------------------------------------------------------------------

static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}

static uint64_t rd64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

// The writer serializes what it is given (dhxc validates before writing); it only refuses
// counts the format cannot hold. It writes a temporary file and renames it into place, so a
// reader never sees a half-written plan.
bool dhx_plan_write(const char *path, const dhx_plan *plan, char *err, size_t errlen) {
  io s = {.reading = false, .err = err, .errlen = errlen};
  snprintf(s.where, sizeof s.where, "the plan");
  io_plan(&s, (dhx_plan *)plan);  // write mode only reads through the pointer
  if (s.failed) {
    free(s.out);
    return false;
  }
  uint8_t header[DHX_PLAN_HEADER_BYTES] = {0};
  memcpy(header, DHX_PLAN_MAGIC, 8);
  le32(header + 8, DHX_PLAN_VERSION);
  le32(header + 12, 0);
  le64(header + 16, s.len);
  le32(header + 24, dhx_crc32(s.out, s.len));
  le32(header + 28, 0);

  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
    snprintf(err, errlen, "path too long");
    free(s.out);
    return false;
  }
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    free(s.out);
    return false;
  }
  bool ok = fwrite(header, 1, sizeof header, f) == sizeof header &&
            fwrite(s.out, 1, s.len, f) == s.len;
  ok = (fclose(f) == 0) && ok;
  free(s.out);
  if (!ok || rename(tmp, path) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

// ---- reading ----------------------------------------------------------------------------------

bool dhx_plan_decode(const uint8_t *data, size_t size, dhx_plan *plan, char *err, size_t errlen) {
  memset(plan, 0, sizeof *plan);
  if (size < DHX_PLAN_HEADER_BYTES) {
    snprintf(err, errlen, "truncated: %zu bytes, shorter than the %d-byte plan header", size,
             DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (memcmp(data, DHX_PLAN_MAGIC, 8) != 0) {
    snprintf(err, errlen, "not a DHX plan (bad magic; expected \"DHXPLAN\")");
    return false;
  }
  uint32_t version = rd32(data + 8), flags = rd32(data + 12), crc = rd32(data + 24);
  uint64_t payload = rd64(data + 16);
  if (version != DHX_PLAN_VERSION) {
    snprintf(err, errlen, "plan format version %u, but this build reads version %d (recompile "
             "the plan with the matching dhxc)", version, DHX_PLAN_VERSION);
    return false;
  }
  if (flags != 0 || rd32(data + 28) != 0) {
    snprintf(err, errlen, "unknown header flags 0x%x / reserved field 0x%x (expected 0)", flags,
             rd32(data + 28));
    return false;
  }
  uint64_t have = size - DHX_PLAN_HEADER_BYTES;
  if (payload > have) {
    snprintf(err, errlen, "truncated: %zu bytes, header says %" PRIu64, size,
             payload + DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (payload < have) {
    snprintf(err, errlen, "%zu bytes, but the header says %" PRIu64 " (trailing bytes)", size,
             payload + DHX_PLAN_HEADER_BYTES);
    return false;
  }
  if (dhx_crc32(data + DHX_PLAN_HEADER_BYTES, payload) != crc) {
    snprintf(err, errlen, "checksum mismatch (file is corrupted)");
    return false;
  }
  io s = {.reading = true, .in = data + DHX_PLAN_HEADER_BYTES, .size = payload, .err = err,
          .errlen = errlen};
  snprintf(s.where, sizeof s.where, "the plan");
  io_plan(&s, plan);
  if (!s.failed && s.pos != s.size)
    io_fail(&s, "%zu unexpected bytes after the plan's last field", s.size - s.pos);
  if (s.failed) {
    dhx_plan_free(plan);
    return false;
  }
  plan->version = version;
  if (!dhx_plan_validate(plan, err, errlen)) {
    dhx_plan_free(plan);
    return false;
  }
  return true;
}

bool dhx_plan_read(const char *path, dhx_plan *plan, char *err, size_t errlen) {
  memset(plan, 0, sizeof *plan);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return false;
  }
  uint8_t *data = NULL;
  size_t len = 0, cap = 0;
  for (;;) {  // read whole file; works for pipes and files alike
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      uint8_t *d = realloc(data, cap);
      if (!d) {
        free(data);
        fclose(f);
        snprintf(err, errlen, "%s: out of memory reading the plan", path);
        return false;
      }
      data = d;
    }
    size_t got = fread(data + len, 1, cap - len, f);
    len += got;
    if (got == 0 || len > DHX_PLAN_MAX_FILE_BYTES) break;
  }
  int io_errno = ferror(f) ? errno : 0;
  fclose(f);
  if (io_errno || len > DHX_PLAN_MAX_FILE_BYTES) {
    free(data);
    if (io_errno)
      snprintf(err, errlen, "%s: read error: %s", path, strerror(io_errno));
    else
      snprintf(err, errlen, "%s: larger than %lld bytes: not a plan", path,
               (long long)DHX_PLAN_MAX_FILE_BYTES);
    return false;
  }
  char inner[1024];
  bool ok = dhx_plan_decode(data, len, plan, inner, sizeof inner);
  free(data);
  if (!ok) snprintf(err, errlen, "%s: %s", path, inner);
  return ok;
}

void dhx_plan_free(dhx_plan *plan) {
  if (!plan) return;
  free(plan->kernels);
  for (uint32_t i = 0; plan->comms && i < plan->ncomms; i++) free(plan->comms[i].ranks);
  free(plan->comms);
  for (uint32_t r = 0; plan->ranks && r < plan->nranks; r++) {
    free(plan->ranks[r].buffers);
    for (int p = 0; p < DHX_PROG_COUNT; p++) free(plan->ranks[r].programs[p].instrs);
  }
  free(plan->ranks);
  memset(plan, 0, sizeof *plan);
}

// ---- validation -------------------------------------------------------------------------------
//
// Everything the runtime relies on is checked here, so the executor can index buffers and
// kernels and compute pointers without checks of its own. Messages name the place: the plan
// field, or "rank R program P instr I (note)".

typedef struct vc {
  const dhx_plan *p;
  char *err;
  size_t errlen;
  int rank, prog;  // -1 when outside a rank / program
  int64_t instr;   // -1 when outside an instruction
  const char *note;  // the instruction's note, once known to be NUL-terminated
} vc;

static bool terminated(const char *s, size_t n) { return memchr(s, 0, n) != NULL; }

static bool bad(vc *v, const char *fmt, ...) {
  char where[256] = "";
  size_t n = 0;
  if (v->rank >= 0) n += (size_t)snprintf(where + n, sizeof where - n, "rank %d", v->rank);
  if (v->prog >= 0 && n < sizeof where)
    n += (size_t)snprintf(where + n, sizeof where - n, " program %s", dhx_prog_name((uint32_t)v->prog));
  if (v->instr >= 0 && n < sizeof where) {
    if (v->note && v->note[0])
      snprintf(where + n, sizeof where - n, " instr %" PRId64 " (%s)", v->instr, v->note);
    else
      snprintf(where + n, sizeof where - n, " instr %" PRId64, v->instr);
  }
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (where[0])
    snprintf(v->err, v->errlen, "%s: %s", where, msg);
  else
    snprintf(v->err, v->errlen, "%s", msg);
  return false;
}

static bool finite_nonneg(double x) { return isfinite(x) && x >= 0; }

#define CHECK(cond, ...) \
  do {                   \
    if (!(cond)) return bad(v, __VA_ARGS__); \
  } while (0)

static bool check_train(vc *v) {
  const dhx_plan_train *t = &v->p->train;
  CHECK(t->steps >= 1 && t->steps <= (1LL << 32), "train.steps must be in 1..2^32 (got %" PRId64 ")", t->steps);
  CHECK(t->micro_batch >= 1 && t->micro_batch <= (1 << 24),
        "train.micro_batch must be in 1..2^24 (got %" PRId64 ")", t->micro_batch);
  CHECK(t->global_batch >= 1 && t->global_batch <= (1 << 24),
        "train.global_batch must be in 1..2^24 (got %" PRId64 ")", t->global_batch);
  CHECK(t->accum_steps >= 1, "train.accum_steps must be positive (got %" PRId64 ")", t->accum_steps);
  CHECK(t->seq >= 1 && t->seq <= (1 << 24), "train.seq must be in 1..2^24 (got %" PRId64 ")", t->seq);
  CHECK(t->vocab >= 1 && t->vocab <= INT32_MAX, "train.vocab must be positive (got %" PRId64 ")", t->vocab);
  CHECK(t->dp >= 1 && t->tp >= 1 && t->pp >= 1 && t->dp <= DHX_PLAN_MAX_RANKS &&
            t->tp <= DHX_PLAN_MAX_RANKS && t->pp <= DHX_PLAN_MAX_RANKS,
        "train.dp, tp and pp must be in 1..%d (got %" PRId64 ", %" PRId64 ", %" PRId64 ")",
        DHX_PLAN_MAX_RANKS, t->dp, t->tp, t->pp);
  CHECK(t->dp * t->tp * t->pp == (int64_t)v->p->nranks,
        "train.dp*tp*pp = %" PRId64 " but the plan has %u ranks", t->dp * t->tp * t->pp, v->p->nranks);
  CHECK(t->accum_steps <= t->global_batch &&
            t->accum_steps * t->micro_batch * t->dp == t->global_batch,
        "train.accum_steps*micro_batch*dp = %" PRId64 "*%" PRId64 "*%" PRId64 " must equal "
        "train.global_batch = %" PRId64, t->accum_steps, t->micro_batch, t->dp, t->global_batch);
  CHECK(isfinite(t->lr) && t->lr >= 0, "train.lr must be a non-negative number (got %g)", t->lr);
  CHECK(finite_nonneg(t->lr_min_ratio), "train.lr_min_ratio must be non-negative (got %g)", t->lr_min_ratio);
  CHECK(isfinite(t->beta1) && t->beta1 >= 0 && t->beta1 < 1, "train.beta1 must be in [0, 1) (got %g)", t->beta1);
  CHECK(isfinite(t->beta2) && t->beta2 >= 0 && t->beta2 < 1, "train.beta2 must be in [0, 1) (got %g)", t->beta2);
  CHECK(finite_nonneg(t->eps), "train.eps must be non-negative (got %g)", t->eps);
  CHECK(finite_nonneg(t->weight_decay), "train.weight_decay must be non-negative (got %g)", t->weight_decay);
  CHECK(finite_nonneg(t->grad_clip), "train.grad_clip must be non-negative (got %g)", t->grad_clip);
  CHECK(t->warmup_steps >= 0, "train.warmup_steps must not be negative (got %" PRId64 ")", t->warmup_steps);
  CHECK(t->val_every >= 0, "train.val_every must not be negative (got %" PRId64 ")", t->val_every);
  CHECK(t->val_batches >= 0 && t->val_batches <= (1 << 24),
        "train.val_batches must be in 0..2^24 (got %" PRId64 ")", t->val_batches);
  CHECK(t->log_every >= 0, "train.log_every must not be negative (got %" PRId64 ")", t->log_every);
  CHECK(t->checkpoint_every >= 0, "train.checkpoint_every must not be negative (got %" PRId64 ")",
        t->checkpoint_every);
  CHECK(terminated(t->train_path, DHX_PATH_MAX), "train.train_path is not NUL-terminated");
  CHECK(terminated(t->val_path, DHX_PATH_MAX), "train.val_path is not NUL-terminated");
  CHECK(terminated(t->model_name, DHX_NAME_MAX), "train.model_name is not NUL-terminated");
  CHECK(finite_nonneg(t->net_bandwidth), "train.net_bandwidth must be non-negative (got %g)", t->net_bandwidth);
  CHECK(finite_nonneg(t->net_latency) && t->net_latency <= 60,
        "train.net_latency must be in [0, 60] seconds (got %g)", t->net_latency);
  CHECK(t->n_params >= 0, "train.n_params must not be negative (got %" PRId64 ")", t->n_params);
  CHECK(finite_nonneg(t->flops_per_token), "train.flops_per_token must be non-negative (got %g)",
        t->flops_per_token);
  CHECK(t->skip_nonfinite <= 1, "train.skip_nonfinite must be 0 or 1 (got %u)", t->skip_nonfinite);
  return true;
}

static bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// An argument index a form uses: -1, or an i64 argument of the kernel.
static bool form_index_ok(const dhx_plan_kernel *k, int32_t idx, bool required) {
  if (idx == -1) return !required;
  return idx >= 0 && (uint32_t)idx < k->nargs && k->arg_types[idx] == DHX_KARG_I64;
}

// The access descriptor of argument `a` of kernel `i` is well-formed: pointers have a form whose
// argument indices name i64 arguments, scalars have none.
static bool check_access(vc *v, uint32_t i, uint32_t a) {
  const dhx_plan_kernel *k = &v->p->kernels[i];
  const dhx_plan_access *acc = &k->access[a];
  if (k->arg_types[a] != DHX_KARG_PTR) {
    CHECK(acc->form == DHX_ACC_NONE && acc->flags == 0 && acc->elem_bytes == 0,
          "kernel %u '%s': argument %u (%s) is not a pointer but has access form %u", i, k->name, a,
          dhx_karg_name(k->arg_types[a]), acc->form);
    return true;
  }
  CHECK(acc->form >= DHX_ACC_ELEMS && acc->form <= DHX_ACC_PAIRS,
        "kernel %u '%s': pointer argument %u has unknown access form %u", i, k->name, a, acc->form);
  CHECK(acc->elem_bytes == 4 || acc->elem_bytes == 8,
        "kernel %u '%s': argument %u: element size %u (must be 4 or 8)", i, k->name, a,
        acc->elem_bytes);
  CHECK((acc->flags & ~(DHX_ACC_WRITES | DHX_ACC_TOKEN_IDS)) == 0 &&
            !((acc->flags & DHX_ACC_TOKEN_IDS) && (acc->flags & DHX_ACC_WRITES)) &&
            !((acc->flags & DHX_ACC_TOKEN_IDS) && acc->elem_bytes != 4),
        "kernel %u '%s': argument %u: access flags 0x%x are not valid", i, k->name, a, acc->flags);
  // Which of x, y, z each form needs (the others are optional factors or unused).
  static const uint8_t needs[] = {[DHX_ACC_COLUMNS] = 3, [DHX_ACC_TABLE] = 1,
                                  [DHX_ACC_CHUNKS] = 3, [DHX_ACC_PERMUTED] = 7, [DHX_ACC_PAIRS] = 7};
  uint8_t need = acc->form < sizeof needs ? needs[acc->form] : 0;
  CHECK(form_index_ok(k, acc->x, need & 1) && form_index_ok(k, acc->y, need & 2) &&
            form_index_ok(k, acc->z, need & 4),
        "kernel %u '%s': argument %u: access form %u names arguments %d, %d, %d, which are not "
        "the i64 arguments it needs", i, k->name, a, acc->form, acc->x, acc->y, acc->z);
  CHECK(acc->form == DHX_ACC_MOD ? acc->c >= 1 : acc->c == 0,
        "kernel %u '%s': argument %u: modulus %" PRId64 " (only a MOD form has one, at least 1)",
        i, k->name, a, acc->c);
  if (acc->form == DHX_ACC_TABLE) {
    bool ids = false;
    for (uint32_t j = 0; j < k->nargs; j++) ids |= (k->access[j].flags & DHX_ACC_TOKEN_IDS) != 0;
    CHECK(ids, "kernel %u '%s': argument %u is a table indexed by token ids, but no argument "
          "holds the ids", i, k->name, a);
  }
  return true;
}

static bool check_kernels(vc *v) {
  for (uint32_t i = 0; i < v->p->nkernels; i++) {
    const dhx_plan_kernel *k = &v->p->kernels[i];
    CHECK(terminated(k->name, DHX_NAME_MAX), "kernel %u: name is not NUL-terminated", i);
    CHECK(k->name[0], "kernel %u: empty name", i);
    for (const char *c = k->name; *c; c++)
      CHECK(is_ident_char(*c), "kernel %u '%s': name is not a C identifier (it becomes the "
            "symbol " DHX_KERNEL_PREFIX "%s)", i, k->name, k->name);
    CHECK(k->nargs <= DHX_MAX_ARGS, "kernel %u '%s': %u arguments (at most %d)", i, k->name,
          k->nargs, DHX_MAX_ARGS);
    for (uint32_t a = 0; a < k->nargs; a++)
      CHECK(k->arg_types[a] >= DHX_KARG_PTR && k->arg_types[a] <= DHX_KARG_F64,
            "kernel %u '%s': argument %u has unknown type %u", i, k->name, a, k->arg_types[a]);
    for (uint32_t a = 0; a < k->nargs; a++)
      if (!check_access(v, i, a)) return false;
  }
  return true;
}

static bool check_comms(vc *v) {
  for (uint32_t c = 0; c < v->p->ncomms; c++) {
    const dhx_plan_comm *cm = &v->p->comms[c];
    CHECK(cm->nranks >= 1 && cm->nranks <= v->p->nranks,
          "communicator %u has %u members (the plan has %u ranks)", c, cm->nranks, v->p->nranks);
    for (uint32_t i = 0; i < cm->nranks; i++) {
      CHECK(cm->ranks[i] >= 0 && (uint32_t)cm->ranks[i] < v->p->nranks,
            "communicator %u: member %d is not a rank of the plan (0..%u)", c, cm->ranks[i],
            v->p->nranks - 1);
      CHECK(i == 0 || cm->ranks[i] > cm->ranks[i - 1],
            "communicator %u: member ranks must be ascending and distinct (%d after %d)", c,
            cm->ranks[i], cm->ranks[i - 1]);
    }
  }
  return true;
}

// Product of a buffer's dims times its element size, or -1 if it overflows 2^48.
static int64_t shape_bytes(const dhx_plan_buffer *b) {
  int64_t n = dhx_dtype_size(b->dtype);
  for (uint32_t d = 0; d < b->ndim; d++)
    if (__builtin_mul_overflow(n, b->shape[d], &n) || n > (1LL << 48)) return -1;
  return n;
}

static bool check_param_link(vc *v, uint32_t id, int32_t link, uint32_t kind, const char *field) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const dhx_plan_buffer *b = &r->buffers[id];
  if (link == -1) return true;
  CHECK(link >= 0 && (uint32_t)link < r->nbuffers, "buffer %u '%s': %s id %d is not a buffer",
        id, b->name, field, link);
  const dhx_plan_buffer *o = &r->buffers[link];
  CHECK(o->kind == kind, "buffer %u '%s': %s is buffer '%s' of kind %s (expected %s)", id,
        b->name, field, o->name, dhx_buf_kind_name(o->kind), dhx_buf_kind_name(kind));
  CHECK(o->nbytes == b->nbytes && o->dtype == b->dtype,
        "buffer %u '%s': %s '%s' has %" PRId64 " bytes, the parameter %" PRId64, id, b->name,
        field, o->name, o->nbytes, b->nbytes);
  return true;
}

static bool check_buffer(vc *v, uint32_t id) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const dhx_plan_train *t = &v->p->train;
  const dhx_plan_buffer *b = &r->buffers[id];
  CHECK(terminated(b->name, DHX_NAME_MAX), "buffer %u: name is not NUL-terminated", id);
  CHECK(b->name[0], "buffer %u: empty name", id);
  CHECK(b->kind >= DHX_BUF_PARAM && b->kind <= DHX_BUF_SCRATCH, "buffer %u '%s': unknown kind %u",
        id, b->name, b->kind);
  CHECK(dhx_dtype_size(b->dtype) > 0, "buffer %u '%s': unknown dtype %u", id, b->name, b->dtype);
  CHECK(b->ndim >= 1 && b->ndim <= DHX_MAX_DIMS, "buffer %u '%s': ndim %u (must be 1..%d)", id,
        b->name, b->ndim, DHX_MAX_DIMS);
  for (uint32_t d = 0; d < b->ndim; d++)
    CHECK(b->shape[d] >= 1, "buffer %u '%s': dimension %u is %" PRId64 " (must be positive)", id,
          b->name, d, b->shape[d]);
  int64_t bytes = shape_bytes(b);
  CHECK(bytes >= 0, "buffer %u '%s': shape is too large", id, b->name);
  CHECK(b->nbytes == bytes, "buffer %u '%s': nbytes %" PRId64 " but its shape holds %" PRId64
        " bytes", id, b->name, b->nbytes, bytes);
  CHECK(b->offset >= 0 && b->offset % DHX_ALIGN == 0,
        "buffer %u '%s': offset %" PRId64 " is not a non-negative multiple of %d", id, b->name,
        b->offset, DHX_ALIGN);
  CHECK(b->offset <= r->arena_bytes && b->nbytes <= r->arena_bytes - b->offset,
        "buffer %u '%s': [%" PRId64 ", %" PRId64 ") lies outside the arena of %" PRId64 " bytes",
        id, b->name, b->offset, b->offset + b->nbytes, r->arena_bytes);
  if (b->kind == DHX_BUF_TOKENS || b->kind == DHX_BUF_TARGETS || b->kind == DHX_BUF_LOSSES) {
    uint32_t want = b->kind == DHX_BUF_LOSSES ? DHX_F32 : DHX_I32;
    CHECK(b->dtype == want, "buffer %u '%s': a %s buffer must be %s", id, b->name,
          dhx_buf_kind_name(b->kind), dhx_dtype_name(want));
    CHECK(b->nbytes == 4 * t->micro_batch * t->seq,
          "buffer %u '%s': a %s buffer must hold micro_batch*seq = %" PRId64 " values (holds %"
          PRId64 ")", id, b->name, dhx_buf_kind_name(b->kind), t->micro_batch * t->seq, b->nbytes / 4);
  }
  if (b->kind == DHX_BUF_PARAM || b->kind == DHX_BUF_GRAD || b->kind == DHX_BUF_OPT_M ||
      b->kind == DHX_BUF_OPT_V)
    CHECK(b->dtype == DHX_F32, "buffer %u '%s': %s buffers must be f32", id, b->name,
          dhx_buf_kind_name(b->kind));
  if (b->kind != DHX_BUF_PARAM) return true;
  CHECK(b->init <= DHX_INIT_NORMAL, "buffer %u '%s': unknown init %u", id, b->name, b->init);
  CHECK(isfinite(b->init_std) && b->init_std >= 0, "buffer %u '%s': init_std %g is not a "
        "non-negative number", id, b->name, (double)b->init_std);
  CHECK(b->decay <= 1, "buffer %u '%s': decay must be 0 or 1 (got %u)", id, b->name, b->decay);
  return check_param_link(v, id, b->grad, DHX_BUF_GRAD, "grad") &&
         check_param_link(v, id, b->opt_m, DHX_BUF_OPT_M, "opt_m") &&
         check_param_link(v, id, b->opt_v, DHX_BUF_OPT_V, "opt_v");
}

// Kernels use the tokens buffer's values as row indices, trusting that they are the runtime's
// (below the vocabulary). So a rank has at most one tokens buffer and no other buffer shares
// its bytes: nothing can write other values into it.
static bool check_tokens_alone(vc *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  int64_t tok = -1;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    if (r->buffers[i].kind != DHX_BUF_TOKENS) continue;
    CHECK(tok < 0, "buffers %" PRId64 " and %u are both tokens buffers (at most one)", tok, i);
    tok = i;
  }
  if (tok < 0) return true;
  const dhx_plan_buffer *t = &r->buffers[tok];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    CHECK(i == tok || b->offset >= t->offset + t->nbytes || t->offset >= b->offset + b->nbytes,
          "buffer %u '%s' [%" PRId64 ", %" PRId64 ") overlaps the tokens buffer '%s' [%" PRId64
          ", %" PRId64 ")", i, b->name, b->offset, b->offset + b->nbytes, t->name, t->offset,
          t->offset + t->nbytes);
  }
  return true;
}

static int cmp_name_ptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Parameter names are checkpoint tensor names, so they must be distinct.
static bool check_param_names(vc *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const char **names = malloc(sizeof(char *) * (r->nbuffers ? r->nbuffers : 1));
  if (!names) return bad(v, "out of memory");
  uint32_t n = 0;
  for (uint32_t i = 0; i < r->nbuffers; i++)
    if (r->buffers[i].kind == DHX_BUF_PARAM) names[n++] = r->buffers[i].name;
  qsort(names, n, sizeof(char *), cmp_name_ptr);
  for (uint32_t i = 1; i < n; i++)
    if (strcmp(names[i], names[i - 1]) == 0) {
      bool ok = bad(v, "two parameters are named '%s' (names must be distinct: they are "
                    "checkpoint tensor names)", names[i]);
      free(names);
      return ok;
    }
  free(names);
  return true;
}

// An argument that names a region of a buffer: id valid, byte offset inside, aligned to the
// buffer's element size.
static bool check_buf_arg(vc *v, const dhx_plan_arg *a, int idx) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  CHECK(a->buf >= 0 && (uint32_t)a->buf < r->nbuffers, "argument %d: buffer id %d is not a "
        "buffer of this rank (it has %u)", idx, a->buf, r->nbuffers);
  const dhx_plan_buffer *b = &r->buffers[a->buf];
  CHECK(a->i >= 0 && a->i < b->nbytes, "argument %d: byte offset %" PRId64 " lies outside "
        "buffer '%s' (%" PRId64 " bytes)", idx, a->i, b->name, b->nbytes);
  CHECK(a->i % dhx_dtype_size(b->dtype) == 0, "argument %d: byte offset %" PRId64 " in buffer "
        "'%s' is not a multiple of its element size", idx, a->i, b->name);
  return true;
}

static bool check_args_generic(vc *v, const dhx_plan_instr *in) {
  CHECK(in->nargs <= DHX_MAX_ARGS, "%u arguments (at most %d)", in->nargs, DHX_MAX_ARGS);
  for (uint32_t j = 0; j < in->nargs; j++) {
    const dhx_plan_arg *a = &in->args[j];
    CHECK(a->kind >= DHX_ARG_BUF && a->kind <= DHX_ARG_REG, "argument %u has unknown kind %u",
          j, a->kind);
    if (a->kind == DHX_ARG_BUF && !check_buf_arg(v, a, (int)j)) return false;
    if (a->kind == DHX_ARG_REG)
      CHECK(a->i >= 0 && a->i < DHX_REG_COUNT, "argument %u: register %" PRId64 " does not "
            "exist (0..%d)", j, a->i, DHX_REG_COUNT - 1);
  }
  return true;
}

// Exactly the listed argument kinds.
static bool check_arg_kinds(vc *v, const dhx_plan_instr *in, int n, const uint32_t *kinds) {
  static const char *kn[] = {"?", "a buffer", "an i64", "an f64", "a register"};
  CHECK(in->nargs == (uint32_t)n, "%s takes %d arguments (has %u)", dhx_op_name(in->op), n, in->nargs);
  for (int j = 0; j < n; j++)
    CHECK(in->args[j].kind == kinds[j], "%s argument %d must be %s", dhx_op_name(in->op), j,
          kn[kinds[j]]);
  return true;
}

// The value of the i64 argument an access form names (1 when it names none).
static int64_t form_value(const dhx_plan_instr *in, int32_t idx) {
  return idx < 0 ? 1 : in->args[idx].i;
}

bool dhx_access_extent(const dhx_plan_access *acc, const dhx_plan_instr *in, int64_t vocab,
                       int64_t *elems) {
  int64_t n = in->n, X = form_value(in, acc->x), Y = form_value(in, acc->y);
  int64_t Z = form_value(in, acc->z), e, block;
  if (X < 1 || Y < 1 || Z < 1 || (acc->form == DHX_ACC_PAIRS && X < 2)) return false;
  if (n == 0) {
    *elems = 0;
    return true;
  }
  switch ((dhx_access_form)acc->form) {
    case DHX_ACC_ELEMS:
      return !__builtin_mul_overflow(n, X, &e) && !__builtin_mul_overflow(e, Y, elems);
    case DHX_ACC_FIXED: return !__builtin_mul_overflow(X, Y, elems);
    case DHX_ACC_COLUMNS:
      return !__builtin_mul_overflow(X - 1, Y, &e) && !__builtin_add_overflow(e, n, elems);
    case DHX_ACC_MOD: *elems = n < acc->c ? n : acc->c; return true;
    case DHX_ACC_TABLE:
      return !__builtin_mul_overflow(vocab - 1, X, &e) &&
             !__builtin_add_overflow(e, acc->y < 0 ? n : Y, elems);
    case DHX_ACC_CHUNKS:  // the kernel computes (k+1)·Y for k < n, so n·Y must not overflow
      if (__builtin_mul_overflow(n, Y, &e)) return false;
      *elems = e < X ? e : X;
      return true;
    case DHX_ACC_PERMUTED:
      return !__builtin_mul_overflow(X, Y, &block) &&
             !__builtin_mul_overflow((n - 1) / block + 1, block, &e) &&
             !__builtin_mul_overflow(e, Z, elems);
    case DHX_ACC_PAIRS: return !__builtin_mul_overflow((n - 1) / (X / 2) + 1, X, elems);
    case DHX_ACC_NONE: break;
  }
  return false;
}

// The i64 arguments a pointer's access form names: at least 1 (extents are products of them
// and kernels divide by some), and for rotary pairs rows that split into whole even-sized heads.
static bool check_form_values(vc *v, const dhx_plan_instr *in, const dhx_plan_kernel *k,
                              uint32_t j) {
  const dhx_plan_access *acc = &k->access[j];
  const int32_t idx[3] = {acc->x, acc->y, acc->z};
  for (int t = 0; t < 3; t++)
    CHECK(idx[t] < 0 || in->args[idx[t]].i >= 1, "kernel '%s' argument %d = %" PRId64
          " must be at least 1 (it sizes what argument %u reaches)", k->name, idx[t],
          idx[t] < 0 ? 0 : in->args[idx[t]].i, j);
  if (acc->form == DHX_ACC_PAIRS) {
    int64_t width = in->args[acc->x].i, head = in->args[acc->y].i;
    CHECK(width % 2 == 0 && head % 2 == 0 && width % head == 0,
          "kernel '%s': row width %" PRId64 " (argument %d) must be a multiple of the even head "
          "size %" PRId64 " (argument %d)", k->name, width, acc->x, head, acc->y);
  }
  return true;
}

// What kernel argument j reaches over the index space lies inside its buffer, and token ids
// come from the tokens buffer (whose values the runtime keeps below the vocabulary).
static bool check_kernel_access(vc *v, const dhx_plan_instr *in, const dhx_plan_kernel *k,
                                uint32_t j) {
  if (!check_form_values(v, in, k, j)) return false;
  const dhx_plan_access *acc = &k->access[j];
  const dhx_plan_arg *a = &in->args[j];
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[a->buf];
  int64_t elems, bytes;
  bool ok = dhx_access_extent(acc, in, v->p->train.vocab, &elems) &&
            !__builtin_mul_overflow(elems, (int64_t)acc->elem_bytes, &bytes);
  CHECK(ok, "kernel '%s' argument %u: the extent over index space n = %" PRId64 " overflows",
        k->name, j, in->n);
  CHECK(a->i % acc->elem_bytes == 0, "kernel '%s' argument %u: byte offset %" PRId64 " in "
        "buffer '%s' is not a multiple of the kernel's %u-byte elements", k->name, j, a->i,
        b->name, acc->elem_bytes);
  CHECK(bytes <= b->nbytes - a->i, "kernel '%s' argument %u: index space n = %" PRId64
        " reaches %" PRId64 " elements (%" PRId64 " bytes) from byte %" PRId64 ", past the end "
        "of buffer '%s' (%" PRId64 " bytes)", k->name, j, in->n, elems, bytes, a->i, b->name,
        b->nbytes);
  if (acc->flags & DHX_ACC_TOKEN_IDS)
    CHECK(b->kind == DHX_BUF_TOKENS, "kernel '%s' argument %u indexes a table with its values, "
          "so it must be the tokens buffer (buffer '%s' is %s)", k->name, j, b->name,
          dhx_buf_kind_name(b->kind));
  if (acc->flags & DHX_ACC_WRITES)
    CHECK(b->kind != DHX_BUF_TOKENS, "kernel '%s' argument %u writes the tokens buffer '%s' "
          "(kernels index tables with its values)", k->name, j, b->name);
  return true;
}

static bool check_kernel_instr(vc *v, const dhx_plan_instr *in) {
  CHECK(in->kernel >= 0 && (uint32_t)in->kernel < v->p->nkernels,
        "kernel id %d is not in the kernel table (%u kernels)", in->kernel, v->p->nkernels);
  const dhx_plan_kernel *k = &v->p->kernels[in->kernel];
  CHECK(in->nargs == k->nargs, "kernel '%s' takes %u arguments, the instruction passes %u",
        k->name, k->nargs, in->nargs);
  for (uint32_t j = 0; j < k->nargs; j++) {
    uint32_t t = k->arg_types[j], a = in->args[j].kind;
    bool ok = (t == DHX_KARG_PTR && a == DHX_ARG_BUF) || (t == DHX_KARG_I64 && a == DHX_ARG_I64) ||
              ((t == DHX_KARG_F32 || t == DHX_KARG_F64) && (a == DHX_ARG_F64 || a == DHX_ARG_REG));
    CHECK(ok, "kernel '%s' argument %u is %s, the instruction passes kind %u", k->name, j,
          dhx_karg_name(t), a);
  }
  CHECK(in->n >= 0 && in->n <= (1LL << 48), "index space n = %" PRId64 " is out of range",
        in->n);
  for (uint32_t j = 0; j < k->nargs; j++)
    if (k->arg_types[j] == DHX_KARG_PTR && !check_kernel_access(v, in, k, j)) return false;
  return true;
}

// ZERO never writes the tokens buffer (GEMM and all-reduce cannot: they need f32, tokens are
// i32), so that only the runtime does.
static bool check_writes_not_tokens(vc *v, const dhx_plan_instr *in, int j) {
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[j].buf];
  CHECK(b->kind != DHX_BUF_TOKENS, "%s writes the tokens buffer '%s' (kernels index tables with "
        "its values)", dhx_op_name(in->op), b->name);
  return true;
}

// The last element index a row-major operand touches over all batches: `rows`×`cols` as
// stored, row stride `ld`. False on overflow.
static bool last_element(int64_t rows, int64_t cols, int64_t ld, const int64_t batch[2],
                         const int64_t stride[2], int64_t *last) {
  int64_t x, y;
  if (__builtin_mul_overflow(rows - 1, ld, &x) || __builtin_add_overflow(x, cols - 1, &x))
    return false;
  for (int l = 0; l < 2; l++) {
    if (__builtin_mul_overflow(batch[l] - 1, stride[l], &y) || __builtin_add_overflow(x, y, &x))
      return false;
  }
  *last = x;
  return true;
}

static bool check_gemm_operand(vc *v, const dhx_plan_instr *in, int which, int64_t rows,
                               int64_t cols, int64_t ld, const int64_t stride[2]) {
  static const char *names = "ABC";
  const dhx_plan_gemm *g = &in->gemm;
  const dhx_plan_arg *a = &in->args[which];
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[a->buf];
  CHECK(b->dtype == DHX_F32, "GEMM operand %c: buffer '%s' is %s (must be f32)", names[which],
        b->name, dhx_dtype_name(b->dtype));
  CHECK(ld >= cols && ld <= INT32_MAX, "GEMM operand %c: leading dimension %" PRId64
        " is smaller than its row length %" PRId64, names[which], ld, cols);
  for (int l = 0; l < 2; l++)
    CHECK(stride[l] >= 0, "GEMM operand %c: negative batch stride %" PRId64, names[which], stride[l]);
  int64_t last, need;
  bool ok = last_element(rows, cols, ld, g->batch, stride, &last) &&
            !__builtin_mul_overflow(last + 1, (int64_t)4, &need) &&
            !__builtin_add_overflow(need, a->i, &need);
  CHECK(ok, "GEMM operand %c: extent overflows: %" PRId64 "x%" PRId64 " (ld %" PRId64 "), batch %"
        PRId64 " x stride %" PRId64 ", batch %" PRId64 " x stride %" PRId64 " in buffer '%s'",
        names[which], rows, cols, ld, g->batch[0], stride[0], g->batch[1], stride[1], b->name);
  CHECK(need <= b->nbytes, "GEMM operand %c extends past buffer '%s' (needs %" PRId64 " bytes, "
        "has %" PRId64 "): %" PRId64 "x%" PRId64 " (ld %" PRId64 ") from byte %" PRId64 ", batch %"
        PRId64 " x stride %" PRId64 ", batch %" PRId64 " x stride %" PRId64, names[which], b->name,
        need, b->nbytes, rows, cols, ld, a->i, g->batch[0], stride[0], g->batch[1], stride[1]);
  return true;
}

// Batches run in parallel, so distinct batches must write distinct parts of C. Taking the
// levels by increasing stride, each must either step over everything written so far (blocks
// one after another) or, while that is still a rectangle, set copies of it side by side within
// a row of ldc (attention's heads as column blocks). Besides the race this rules out, it bounds
// the batch count by the size of C. C's extent is checked first, so nothing here overflows.
static bool check_gemm_batches_disjoint(vc *v, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = &in->gemm;
  const char *name = v->p->ranks[v->rank].buffers[in->args[2].buf].name;
  int inner = g->stride_c[0] <= g->stride_c[1] ? 0 : 1;
  int64_t cols = g->n;  // width of the rectangle written so far; -1 once it is not one
  int64_t span = (g->m - 1) * g->ldc + g->n;  // elements from the first written to the last
  for (int pass = 0; pass < 2; pass++) {
    int l = pass == 0 ? inner : 1 - inner;
    int64_t b = g->batch[l], s = g->stride_c[l];
    if (b == 1) continue;
    if (s >= span) {
      span += (b - 1) * s;
      cols = -1;
      continue;
    }
    CHECK(cols >= 0 && s >= cols && (b - 1) * s + cols <= g->ldc,
          "GEMM batches overlap in C: batch %" PRId64 " x stride %" PRId64 " neither steps over "
          "the %" PRId64 " floats written before it nor sets them side by side within ldc %" PRId64
          " (buffer '%s')", b, s, span, g->ldc, name);
    cols += (b - 1) * s;
    span = (g->m - 1) * g->ldc + cols;
  }
  return true;
}

static bool check_gemm(vc *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_BUF};
  if (!check_arg_kinds(v, in, 3, kinds)) return false;
  const dhx_plan_gemm *g = &in->gemm;
  CHECK(g->trans_a <= 1 && g->trans_b <= 1, "GEMM trans flags must be 0 or 1 (got %u, %u)",
        g->trans_a, g->trans_b);
  CHECK(g->m >= 1 && g->n >= 1 && g->k >= 1 && g->m <= INT32_MAX && g->n <= INT32_MAX &&
            g->k <= INT32_MAX,
        "GEMM dimensions m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " must be in 1..2^31-1", g->m,
        g->n, g->k);
  CHECK(g->batch[0] >= 1 && g->batch[1] >= 1 && g->batch[0] <= INT32_MAX &&
            g->batch[1] <= INT32_MAX,
        "GEMM batch counts %" PRId64 "x%" PRId64 " must be positive", g->batch[0], g->batch[1]);
  CHECK(isfinite(g->alpha) && isfinite(g->beta), "GEMM alpha and beta must be finite");
  // Stored shapes: op(A) is m×k, so A is k×m when transposed; likewise B.
  return check_gemm_operand(v, in, 0, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda,
                            g->stride_a) &&
         check_gemm_operand(v, in, 1, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb,
                            g->stride_b) &&
         check_gemm_operand(v, in, 2, g->m, g->n, g->ldc, g->stride_c) &&
         check_gemm_batches_disjoint(v, in);
}

// A buffer region [arg.i, arg.i + bytes) inside its buffer.
static bool check_region(vc *v, const dhx_plan_instr *in, int64_t count, int64_t elem_size) {
  const dhx_plan_arg *a = &in->args[0];
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[a->buf];
  int64_t bytes;
  CHECK(count >= 0 && !__builtin_mul_overflow(count, elem_size, &bytes) &&
            bytes <= b->nbytes - a->i,
        "%s of %" PRId64 " %s at byte %" PRId64 " extends past buffer '%s' (%" PRId64 " bytes)",
        dhx_op_name(in->op), count, elem_size == 1 ? "bytes" : "elements", a->i, b->name, b->nbytes);
  return true;
}

static bool check_allreduce(vc *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64};
  if (!check_arg_kinds(v, in, 2, kinds) || !check_region(v, in, in->args[1].i, 4)) return false;
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[0].buf];
  CHECK(b->dtype == DHX_F32, "allreduce buffer '%s' is %s (must be f32)", b->name,
        dhx_dtype_name(b->dtype));
  CHECK(in->comm >= 0 && (uint32_t)in->comm < v->p->ncomms, "communicator %d does not exist "
        "(the plan has %u)", in->comm, v->p->ncomms);
  const dhx_plan_comm *c = &v->p->comms[in->comm];
  bool member = false;
  for (uint32_t i = 0; i < c->nranks; i++) member |= c->ranks[i] == v->rank;
  CHECK(member, "all-reduce on communicator %d, which rank %d is not a member of", in->comm, v->rank);
  return true;
}

static bool check_grad_norm(vc *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64, DHX_ARG_F64};
  if (!check_arg_kinds(v, in, 3, kinds) || !check_region(v, in, in->args[1].i, 4)) return false;
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[0].buf];
  CHECK(b->dtype == DHX_F32, "grad_norm partials buffer '%s' is %s (must be f32)", b->name,
        dhx_dtype_name(b->dtype));
  CHECK(finite_nonneg(in->args[2].f), "grad_norm max norm %g must be a non-negative number",
        in->args[2].f);
  return true;
}

static bool check_instr(vc *v, const dhx_plan_program *p, const dhx_plan_instr *in) {
  CHECK(terminated(in->note, DHX_NAME_MAX), "note is not NUL-terminated");
  v->note = in->note;
  CHECK(in->op >= DHX_OP_KERNEL && in->op <= DHX_OP_GRAD_NORM, "unknown op %u", in->op);
  CHECK(in->stream < p->nstreams, "stream %u, but the program has %u streams", in->stream,
        p->nstreams);
  if (!check_args_generic(v, in)) return false;
  switch ((dhx_op)in->op) {
    case DHX_OP_KERNEL: return check_kernel_instr(v, in);
    case DHX_OP_GEMM: return check_gemm(v, in);
    case DHX_OP_ZERO: {
      static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64};
      return check_arg_kinds(v, in, 2, kinds) && check_region(v, in, in->args[1].i, 1) &&
             check_writes_not_tokens(v, in, 0);
    }
    case DHX_OP_ALLREDUCE: return check_allreduce(v, in);
    case DHX_OP_RECORD:
    case DHX_OP_WAIT:
      CHECK(in->nargs == 0, "%s takes no arguments", dhx_op_name(in->op));
      CHECK(in->event >= 0 && (uint32_t)in->event < p->nevents, "event %d, but the program has "
            "%u events", in->event, p->nevents);
      return true;
    case DHX_OP_GRAD_NORM: return check_grad_norm(v, in);
  }
  return true;
}

// Every WAIT must be able to complete: simulate the streams, letting each run until it reaches
// a WAIT whose event nobody has recorded yet; if all streams stop before their end, the event
// graph has a cycle (or waits for a RECORD that never comes) and the program would hang.
static bool check_events(vc *v, const dhx_plan_program *p) {
  bool ok = true;
  uint8_t *recorded = calloc(p->nevents ? p->nevents : 1, 1);
  uint8_t *ever = calloc(p->nevents ? p->nevents : 1, 1);
  if (!recorded || !ever) {
    free(recorded);
    free(ever);
    return bad(v, "out of memory");
  }
  for (uint32_t i = 0; i < p->ninstrs; i++)
    if (p->instrs[i].op == DHX_OP_RECORD) ever[p->instrs[i].event] = 1;
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if (in->op == DHX_OP_WAIT && !ever[in->event]) {
      v->instr = i;
      v->note = in->note;
      ok = bad(v, "WAIT on event %d, which no RECORD in this program records", in->event);
    }
  }
  uint32_t pos[DHX_MAX_STREAMS] = {0};  // next instruction index to look at, per stream
  bool progress = ok;
  while (progress) {
    progress = false;
    for (uint32_t s = 0; s < p->nstreams; s++) {
      for (; pos[s] < p->ninstrs; pos[s]++) {
        const dhx_plan_instr *in = &p->instrs[pos[s]];
        if (in->stream != s) continue;
        if (in->op == DHX_OP_WAIT && !recorded[in->event]) break;
        if (in->op == DHX_OP_RECORD) recorded[in->event] = 1;
        progress = true;
      }
    }
  }
  for (uint32_t s = 0; s < p->nstreams && ok; s++)
    if (pos[s] < p->ninstrs) {
      const dhx_plan_instr *in = &p->instrs[pos[s]];
      v->instr = pos[s];
      v->note = in->note;
      ok = bad(v, "WAIT on event %d can never complete (it is recorded only after this wait, "
               "directly or through other streams): the program would hang", in->event);
    }
  v->instr = -1;
  free(recorded);
  free(ever);
  return ok;
}

static bool check_program(vc *v, const dhx_plan_program *p) {
  CHECK(p->nstreams >= 1 && p->nstreams <= DHX_MAX_STREAMS, "%u streams (must be 1..%d)",
        p->nstreams, DHX_MAX_STREAMS);
  CHECK(p->nevents <= DHX_PLAN_MAX_EVENTS, "%u events (at most %d)", p->nevents, DHX_PLAN_MAX_EVENTS);
  CHECK(p->ninstrs <= DHX_PLAN_MAX_INSTRS, "%u instructions (at most %d)", p->ninstrs,
        DHX_PLAN_MAX_INSTRS);
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    v->instr = i;
    v->note = NULL;
    if (!check_instr(v, p, &p->instrs[i])) return false;
  }
  v->instr = -1;
  v->note = NULL;
  return check_events(v, p);
}

static bool check_rank(vc *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  CHECK(r->dp_size == v->p->train.dp, "dp_size %u differs from train.dp %" PRId64, r->dp_size,
        v->p->train.dp);
  CHECK(r->dp_rank < r->dp_size, "dp_rank %u is not below dp_size %u", r->dp_rank, r->dp_size);
  CHECK(r->arena_bytes >= 0 && r->arena_bytes <= (1LL << 48), "arena_bytes %" PRId64
        " is out of range", r->arena_bytes);
  CHECK(r->nbuffers <= DHX_PLAN_MAX_BUFFERS, "%u buffers (at most %d)", r->nbuffers,
        DHX_PLAN_MAX_BUFFERS);
  for (uint32_t i = 0; i < r->nbuffers; i++)
    if (!check_buffer(v, i)) return false;
  if (!check_param_names(v) || !check_tokens_alone(v)) return false;
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    v->prog = p;
    if (!check_program(v, &r->programs[p])) return false;
  }
  v->prog = -1;
  return true;
}

// All-reduces on one communicator and stream must form the same sequence on every member,
// or the ring exchanges would pair the wrong messages and hang. The reference member's
// sequences are collected once per (communicator, program); each other member is compared in
// one pass over its program.
typedef struct collective_seq {
  int64_t *counts[DHX_MAX_STREAMS];  // element counts of the reference's all-reduces, in order
  uint32_t len[DHX_MAX_STREAMS];
} collective_seq;

static bool on_comm(const dhx_plan_instr *in, uint32_t c) {
  return in->op == DHX_OP_ALLREDUCE && in->comm == (int32_t)c;
}

static bool collect_sequence(const dhx_plan_program *p, uint32_t c, collective_seq *q) {
  memset(q, 0, sizeof *q);
  uint32_t total = 0;
  for (uint32_t i = 0; i < p->ninstrs; i++) total += on_comm(&p->instrs[i], c);
  int64_t *all = malloc(sizeof(int64_t) * (total ? total : 1));
  if (!all) return false;
  uint32_t start = 0;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {  // one block of `all` per stream
    q->counts[s] = all + start;
    for (uint32_t i = 0; i < p->ninstrs; i++)
      if (on_comm(&p->instrs[i], c) && p->instrs[i].stream == s)
        q->counts[s][q->len[s]++] = p->instrs[i].args[1].i;
    start += q->len[s];
  }
  return true;
}

static bool compare_sequence(vc *v, const collective_seq *q, uint32_t c, int32_t ref,
                             int32_t other, int prog) {
  const dhx_plan_program *b = &v->p->ranks[other].programs[prog];
  uint32_t pos[DHX_MAX_STREAMS] = {0};
  v->rank = other;
  v->prog = prog;
  for (uint32_t j = 0; j < b->ninstrs; j++) {
    const dhx_plan_instr *in = &b->instrs[j];
    if (!on_comm(in, c)) continue;
    uint32_t s = in->stream;
    v->instr = j;
    v->note = in->note;
    if (pos[s] == q->len[s])
      return bad(v, "one all-reduce more on communicator %u stream %u than rank %d has: the "
                 "ranks would hang", c, s, ref);
    int64_t want = q->counts[s][pos[s]++];
    if (in->args[1].i != want)
      return bad(v, "all-reduce of %" PRId64 " elements on communicator %u, but rank %d's "
                 "matching all-reduce has %" PRId64 ": the ranks would hang", in->args[1].i, c,
                 ref, want);
  }
  v->instr = -1;
  v->note = NULL;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
    if (pos[s] != q->len[s])
      return bad(v, "%u all-reduces on communicator %u stream %u, rank %d has %u: the ranks "
                 "would hang", pos[s], c, s, ref, q->len[s]);
  v->rank = v->prog = -1;
  return true;
}

static bool check_collectives(vc *v) {
  for (uint32_t c = 0; c < v->p->ncomms; c++) {
    const dhx_plan_comm *cm = &v->p->comms[c];
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      collective_seq q;
      if (!collect_sequence(&v->p->ranks[cm->ranks[0]].programs[p], c, &q)) return bad(v, "out of memory");
      bool ok = true;
      for (uint32_t i = 1; i < cm->nranks && ok; i++)
        ok = compare_sequence(v, &q, c, cm->ranks[0], cm->ranks[i], p);
      free(q.counts[0]);
      if (!ok) return false;
    }
  }
  return true;
}

bool dhx_plan_validate(const dhx_plan *plan, char *err, size_t errlen) {
  vc ctx = {.p = plan, .err = err, .errlen = errlen, .rank = -1, .prog = -1, .instr = -1};
  vc *v = &ctx;
  CHECK(plan->nranks >= 1 && plan->nranks <= DHX_PLAN_MAX_RANKS, "the plan has %u ranks (must "
        "be 1..%d)", plan->nranks, DHX_PLAN_MAX_RANKS);
  CHECK(plan->nkernels <= DHX_PLAN_MAX_KERNELS, "%u kernels (at most %d)", plan->nkernels,
        DHX_PLAN_MAX_KERNELS);
  CHECK(plan->ncomms <= DHX_PLAN_MAX_COMMS, "%u communicators (at most %d)", plan->ncomms,
        DHX_PLAN_MAX_COMMS);
  if (!check_train(v) || !check_kernels(v) || !check_comms(v)) return false;
  for (uint32_t r = 0; r < plan->nranks; r++) {
    v->rank = (int)r;
    if (!check_rank(v)) return false;
  }
  v->rank = -1;
  return check_collectives(v);
}
