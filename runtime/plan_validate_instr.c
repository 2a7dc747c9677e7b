// plan_validate_instr.c — one instruction of a program: its arguments, a kernel launch against
// the kernel's signature and access descriptors (every index of the launch inside its buffers),
// the regions of ZERO and GRAD_NORM. GEMMs are plan_validate_gemm.c's, collectives and
// transfers plan_validate_comm.c's.
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"


// An argument that names a region of a buffer: id valid, byte offset inside, aligned to the
// buffer's element size.
static bool check_buf_arg(plan_check_ctx *v, const dhx_plan_arg *a, int idx) {
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

static bool check_args_generic(plan_check_ctx *v, const dhx_plan_instr *in) {
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
bool plan_check_arg_kinds(plan_check_ctx *v, const dhx_plan_instr *in, int n,
                          const uint32_t *kinds) {
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
    case DHX_ACC_ROWS:
      return !__builtin_mul_overflow((n - 1) / X + 1, Y, &e) && !__builtin_mul_overflow(e, Z, elems);
    case DHX_ACC_NONE: break;
  }
  return false;
}

// The i64 arguments a pointer's access form names: at least 1 (extents are products of them
// and kernels divide by some), and for rotary pairs rows that split into whole even-sized heads.
static bool check_form_values(plan_check_ctx *v, const dhx_plan_instr *in,
                              const dhx_plan_kernel *k, uint32_t j) {
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
static bool check_kernel_access(plan_check_ctx *v, const dhx_plan_instr *in,
                                const dhx_plan_kernel *k, uint32_t j) {
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
  // 2-byte elements are bf16 and only bf16 buffers hold them: the kernel would read any other
  // buffer's bytes as the wrong numbers.
  CHECK((acc->elem_bytes == 2) == (b->dtype == DHX_BF16), "kernel '%s' argument %u: the kernel "
        "reads %s elements, buffer '%s' is %s", k->name, j, acc->elem_bytes == 2 ? "bf16" :
        "4- or 8-byte", b->name, dhx_dtype_name(b->dtype));
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

// Whether argument j sizes what some pointer argument of kernel k reaches.
static bool sizes_access(const dhx_plan_kernel *k, uint32_t j) {
  for (uint32_t p = 0; p < k->nargs; p++)
    if (k->arg_types[p] == DHX_KARG_PTR &&
        (k->access[p].x == (int32_t)j || k->access[p].y == (int32_t)j || k->access[p].z == (int32_t)j))
      return true;
  return false;
}

static bool check_kernel_instr(plan_check_ctx *v, const dhx_plan_instr *in) {
  CHECK(in->kernel >= 0 && (uint32_t)in->kernel < v->p->nkernels,
        "kernel id %d is not in the kernel table (%u kernels)", in->kernel, v->p->nkernels);
  const dhx_plan_kernel *k = &v->p->kernels[in->kernel];
  CHECK(in->nargs == k->nargs, "kernel '%s' takes %u arguments, the instruction passes %u",
        k->name, k->nargs, in->nargs);
  for (uint32_t j = 0; j < k->nargs; j++) {
    uint32_t t = k->arg_types[j], a = in->args[j].kind;
    bool ok = (t == DHX_KARG_PTR && a == DHX_ARG_BUF) || (t == DHX_KARG_I64 && a == DHX_ARG_I64) ||
              ((t == DHX_KARG_F32 || t == DHX_KARG_F64) && (a == DHX_ARG_F64 || a == DHX_ARG_REG));
    CHECK(ok || (t == DHX_KARG_I64 && a == DHX_ARG_REG), "kernel '%s' argument %u is %s, the "
          "instruction passes kind %u", k->name, j, dhx_karg_name(t), a);
    if (!ok)  // a register read by an i64 argument: a whole number that sizes no access
      CHECK(dhx_reg_is_integer(in->args[j].i) && !sizes_access(k, j), "kernel '%s' argument %u "
            "reads register %s, which is not a whole number or sizes what a pointer reaches",
            k->name, j, dhx_reg_name((uint32_t)in->args[j].i));
  }
  CHECK(in->n >= 0 && in->n <= (1LL << 48), "index space n = %" PRId64 " is out of range",
        in->n);
  for (uint32_t j = 0; j < k->nargs; j++)
    if (k->arg_types[j] == DHX_KARG_PTR && !check_kernel_access(v, in, k, j)) return false;
  return true;
}

// ZERO never writes the tokens buffer (GEMM and all-reduce cannot: they need f32, tokens are
// i32), so that only the runtime does.
static bool check_writes_not_tokens(plan_check_ctx *v, const dhx_plan_instr *in, int j) {
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[j].buf];
  CHECK(b->kind != DHX_BUF_TOKENS, "%s writes the tokens buffer '%s' (kernels index tables with "
        "its values)", dhx_op_name(in->op), b->name);
  return true;
}

// The region of argument j, [arg.i, arg.i + count·elem_size), inside its buffer.
bool plan_check_region(plan_check_ctx *v, const dhx_plan_instr *in, int j, int64_t count,
                       int64_t elem_size) {
  const dhx_plan_arg *a = &in->args[j];
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[a->buf];
  int64_t bytes;
  CHECK(count >= 0 && !__builtin_mul_overflow(count, elem_size, &bytes) &&
            bytes <= b->nbytes - a->i,
        "%s of %" PRId64 " %s at byte %" PRId64 " extends past buffer '%s' (%" PRId64 " bytes)",
        dhx_op_name(in->op), count, elem_size == 1 ? "bytes" : "elements", a->i, b->name, b->nbytes);
  return true;
}

static bool check_region(plan_check_ctx *v, const dhx_plan_instr *in, int64_t count,
                         int64_t elem_size) {
  return plan_check_region(v, in, 0, count, elem_size);
}

// The runtime writes micro-batch args[2]'s rows into a TOKENS and a TARGETS region.
static bool check_load_batch(plan_check_ctx *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_I64};
  if (!plan_check_arg_kinds(v, in, 3, kinds)) return false;
  const dhx_plan_train *t = &v->p->train;
  const dhx_plan_buffer *tok = &v->p->ranks[v->rank].buffers[in->args[0].buf];
  const dhx_plan_buffer *tgt = &v->p->ranks[v->rank].buffers[in->args[1].buf];
  CHECK(tok->kind == DHX_BUF_TOKENS && tgt->kind == DHX_BUF_TARGETS, "load_batch writes '%s' "
        "and '%s', which must be the tokens and the targets buffer", tok->name, tgt->name);
  CHECK(in->args[2].i >= 0 && in->args[2].i < t->accum_steps, "load_batch micro-batch %" PRId64
        " is not below accum_steps %" PRId64, in->args[2].i, t->accum_steps);
  return plan_check_region(v, in, 0, t->micro_batch * t->seq, 4) &&
         plan_check_region(v, in, 1, t->micro_batch * t->seq, 4);
}

// The clip scale, the norm (one f32 each, apart) and the f32 partials, as the CPU backend reads
// and writes them; and a launch of the grad_norm kernel over the same arguments, n = 1, as a GPU
// runs it.
static bool check_grad_norm(plan_check_ctx *v, const dhx_plan_instr *in) {
  static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_BUF, DHX_ARG_I64, DHX_ARG_F64};
  static const char *what[] = {"clip scale", "norm", "partials"};
  if (!plan_check_arg_kinds(v, in, 5, kinds)) return false;
  CHECK(in->args[3].i >= 1, "grad_norm of %" PRId64 " partial sums (at least 1)", in->args[3].i);
  if (!plan_check_region(v, in, 0, 1, 4) || !plan_check_region(v, in, 1, 1, 4) ||
      !plan_check_region(v, in, 2, in->args[3].i, 4))
    return false;
  for (int j = 0; j < 3; j++) {
    const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[in->args[j].buf];
    CHECK(b->dtype == DHX_F32, "grad_norm %s buffer '%s' is %s (must be f32)", what[j], b->name,
          dhx_dtype_name(b->dtype));
  }
  CHECK(in->args[0].buf != in->args[1].buf || in->args[0].i != in->args[1].i,
        "grad_norm writes the clip scale and the norm to the same place");
  CHECK(finite_nonneg(in->args[4].f), "grad_norm max norm %g must be a non-negative number",
        in->args[4].f);
  CHECK(in->kernel >= 0 && (uint32_t)in->kernel < v->p->nkernels &&
            strcmp(v->p->kernels[in->kernel].name, "grad_norm_f32") == 0,
        "grad_norm must name the kernel grad_norm_f32 (kernel id %d)", in->kernel);
  CHECK(in->n == 1, "grad_norm launches its kernel with n = %" PRId64 " (must be 1)", in->n);
  return check_kernel_instr(v, in);
}

bool plan_check_instr(plan_check_ctx *v, const dhx_plan_program *p, const dhx_plan_instr *in) {
  CHECK(terminated(dhx_instr_note(in), DHX_NAME_MAX), "note is longer than %d bytes",
        DHX_NAME_MAX - 1);
  v->note = dhx_instr_note(in);
  CHECK(in->op >= DHX_OP_KERNEL && in->op <= DHX_OP_ALL_TO_ALL, "unknown op %u", in->op);
  CHECK(in->stream < p->nstreams, "stream %u, but the program has %u streams", in->stream,
        p->nstreams);
  if (!check_args_generic(v, in)) return false;
  switch ((dhx_op)in->op) {
    case DHX_OP_KERNEL: return check_kernel_instr(v, in);
    case DHX_OP_GEMM: return plan_check_gemm(v, in);
    case DHX_OP_ZERO: {
      static const uint32_t kinds[] = {DHX_ARG_BUF, DHX_ARG_I64};
      return plan_check_arg_kinds(v, in, 2, kinds) && check_region(v, in, in->args[1].i, 1) &&
             check_writes_not_tokens(v, in, 0);
    }
    case DHX_OP_ALLREDUCE:
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_GATHER:
      CHECK(in->event < 0 || (uint32_t)in->event < p->nevents, "deferred to event %d, but the "
            "program has %u events", in->event, p->nevents);
      return plan_check_comm_instr(v, in);
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_SEND:
    case DHX_OP_RECV: return plan_check_comm_instr(v, in);
    case DHX_OP_RECORD:
    case DHX_OP_WAIT:
      CHECK(in->nargs == 0, "%s takes no arguments", dhx_op_name(in->op));
      CHECK(in->event >= 0 && (uint32_t)in->event < p->nevents, "event %d, but the program has "
            "%u events", in->event, p->nevents);
      return true;
    case DHX_OP_GRAD_NORM: return check_grad_norm(v, in);
    case DHX_OP_LOAD_BATCH: return check_load_batch(v, in);
  }
  return true;
}
