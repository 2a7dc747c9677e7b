// plan_validate.c — dhx_plan_validate: the plan's tables (train section, kernels and their
// access descriptors, communicators), each rank's buffers, and each program instruction by
// instruction (plan_validate_instr.c), then what would hang (plan_validate_sync.c).
//
// Everything the runtime relies on is checked, so the executor can index buffers and kernels
// and compute pointers without checks of its own. Messages name the place: the plan field, or
// "rank R program P instr I (note)".
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_abi.h"
#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

bool plan_check_fail(plan_check_ctx *v, const char *fmt, ...) {
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

static bool check_train(plan_check_ctx *v) {
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
  CHECK(t->micro_per_run == 1 || t->micro_per_run == t->accum_steps, "train.micro_per_run "
        "must be 1 or accum_steps %" PRId64 " (got %" PRId64 ")", t->accum_steps,
        t->micro_per_run);
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
  CHECK(t->zero <= 3, "train.zero must be 0..3 (got %u)", t->zero);
  CHECK(t->per_node >= 0 && t->per_node <= (1 << 24), "train.per_node must be in [0, 2^24] (got "
        "%" PRId64 ")", t->per_node);
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
static bool check_access(plan_check_ctx *v, uint32_t i, uint32_t a) {
  const dhx_plan_kernel *k = &v->p->kernels[i];
  const dhx_plan_access *acc = &k->access[a];
  if (k->arg_types[a] != DHX_KARG_PTR) {
    CHECK(acc->form == DHX_ACC_NONE && acc->flags == 0 && acc->elem_bytes == 0,
          "kernel %u '%s': argument %u (%s) is not a pointer but has access form %u", i, k->name, a,
          dhx_karg_name(k->arg_types[a]), acc->form);
    return true;
  }
  CHECK(acc->form >= DHX_ACC_ELEMS && acc->form <= DHX_ACC_ROWS,
        "kernel %u '%s': pointer argument %u has unknown access form %u", i, k->name, a, acc->form);
  CHECK(acc->elem_bytes == 2 || acc->elem_bytes == 4 || acc->elem_bytes == 8,
        "kernel %u '%s': argument %u: element size %u (must be 2, 4 or 8)", i, k->name, a,
        acc->elem_bytes);
  CHECK((acc->flags & ~(DHX_ACC_WRITES | DHX_ACC_TOKEN_IDS)) == 0 &&
            !((acc->flags & DHX_ACC_TOKEN_IDS) && (acc->flags & DHX_ACC_WRITES)) &&
            !((acc->flags & DHX_ACC_TOKEN_IDS) && acc->elem_bytes != 4),
        "kernel %u '%s': argument %u: access flags 0x%x are not valid", i, k->name, a, acc->flags);
  // Which of x, y, z each form needs (the others are optional factors or unused).
  static const uint8_t needs[] = {[DHX_ACC_COLUMNS] = 3, [DHX_ACC_TABLE] = 1,
                                  [DHX_ACC_CHUNKS] = 3, [DHX_ACC_PERMUTED] = 7, [DHX_ACC_PAIRS] = 7,
                                  [DHX_ACC_ROWS] = 3};
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

static bool check_kernels(plan_check_ctx *v) {
  for (uint32_t i = 0; i < v->p->nkernels; i++) {
    const dhx_plan_kernel *k = &v->p->kernels[i];
    CHECK(terminated(k->name, DHX_NAME_MAX), "kernel %u: name is not NUL-terminated", i);
    CHECK(k->name[0], "kernel %u: empty name", i);
    for (const char *c = k->name; *c; c++)
      CHECK(is_ident_char(*c), "kernel %u '%s': name is not a C identifier (it becomes the "
            "symbol " DHX_KERNEL_PREFIX "%s)", i, k->name, k->name);
    CHECK(k->nargs <= DHX_MAX_ARGS, "kernel %u '%s': %u arguments (at most %d)", i, k->name,
          k->nargs, DHX_MAX_ARGS);
    CHECK(k->threads_per_index == 1 || k->threads_per_index == DHX_PLAN_WARP,
          "kernel %u '%s': threads_per_index %u (must be 1 or %d)", i, k->name,
          k->threads_per_index, DHX_PLAN_WARP);
    CHECK(k->indices_per_thread == 1 ||
              (k->indices_per_thread == DHX_PLAN_WIDE && k->threads_per_index == 1),
          "kernel %u '%s': indices_per_thread %u (must be 1, or %d for a kernel of one thread "
          "per index)", i, k->name, k->indices_per_thread, DHX_PLAN_WIDE);
    for (uint32_t a = 0; a < k->nargs; a++)
      CHECK(k->arg_types[a] >= DHX_KARG_PTR && k->arg_types[a] <= DHX_KARG_F64,
            "kernel %u '%s': argument %u has unknown type %u", i, k->name, a, k->arg_types[a]);
    for (uint32_t a = 0; a < k->nargs; a++)
      if (!check_access(v, i, a)) return false;
  }
  return true;
}

static bool check_comms(plan_check_ctx *v) {
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

// Whether two buffers describe the same tensor-parallel slice (each may hold its own shard of
// it). `a` is validated; `b` may not be yet, so only its first a->ndim dims are read.
static bool same_slice(const dhx_plan_buffer *a, const dhx_plan_buffer *b) {
  bool eq = a->dtype == b->dtype && a->ndim == b->ndim && a->split_dim == b->split_dim &&
            a->split_groups == b->split_groups && a->split_parts == b->split_parts &&
            a->split_index == b->split_index;
  for (uint32_t d = 0; d < a->ndim && eq; d++)
    eq = a->shape[d] == b->shape[d] && a->global_shape[d] == b->global_shape[d];
  return eq;
}

static bool check_param_link(plan_check_ctx *v, uint32_t id, int32_t link, uint32_t kind,
                             const char *field) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const dhx_plan_buffer *b = &r->buffers[id];
  if (link == -1) return true;
  CHECK(link >= 0 && (uint32_t)link < r->nbuffers, "buffer %u '%s': %s id %d is not a buffer",
        id, b->name, field, link);
  const dhx_plan_buffer *o = &r->buffers[link];
  CHECK(o->kind == kind, "buffer %u '%s': %s is buffer '%s' of kind %s (expected %s)", id,
        b->name, field, o->name, dhx_buf_kind_name(o->kind), dhx_buf_kind_name(kind));
  CHECK(same_slice(b, o), "buffer %u '%s': %s '%s' describes another slice than the parameter "
        "(dtype, shape, global_shape and split fields must match)", id, b->name, field, o->name);
  return true;
}

// The ZeRO shard of its slice a buffer holds (plan.h): piece shard_index of shard_parts, of
// C = nbytes / dtype size elements, the pieces together covering the slice's S elements with
// at most a little padding (pieces rounded up to 16 elements, a whole tensor padded to the
// data-parallel pieces).
static bool check_shard(plan_check_ctx *v, uint32_t id, int64_t slice_bytes) {
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[id];
  int64_t size = dhx_dtype_size(b->dtype), s = slice_bytes / size;
  CHECK(b->shard_parts >= 1 && b->shard_parts <= DHX_PLAN_MAX_RANKS, "buffer %u '%s': "
        "shard_parts %u (must be 1..%d)", id, b->name, b->shard_parts, DHX_PLAN_MAX_RANKS);
  CHECK(b->shard_index < b->shard_parts, "buffer %u '%s': shard_index %u is not below "
        "shard_parts %u", id, b->name, b->shard_index, b->shard_parts);
  CHECK(b->nbytes > 0 && b->nbytes % size == 0 && b->nbytes <= (1LL << 48),
        "buffer %u '%s': nbytes %" PRId64 " is not a positive multiple of its %s elements", id,
        b->name, b->nbytes, dhx_dtype_name(b->dtype));
  int64_t c = b->nbytes / size, covered = c * b->shard_parts;  // at most 2^60: no overflow
  if (b->shard_parts == 1 && c == s) return true;  // the whole slice
  CHECK(b->shard_parts > 1 || c > s, "buffer %u '%s': nbytes %" PRId64 " but its shape holds %"
        PRId64 " bytes", id, b->name, b->nbytes, slice_bytes);
  CHECK(covered >= s, "buffer %u '%s': nbytes %" PRId64 " gives %u shards of %" PRId64
        " elements, short of the slice's %" PRId64, id, b->name, b->nbytes, b->shard_parts, c, s);
  int64_t most = 32 * ((int64_t)b->shard_parts + DHX_PLAN_MAX_RANKS);
  CHECK(covered - s <= most, "buffer %u '%s': nbytes %" PRId64 " pads its slice of %" PRId64
        " elements with %" PRId64 " (at most %" PRId64 " in %u shards)", id, b->name, b->nbytes,
        s, covered - s, most, b->shard_parts);
  return true;
}

// The slice of the whole tensor a buffer holds (plan.h): a whole tensor, or slice
// split_index of split_parts along split_dim, in split_groups groups.
static bool check_split(plan_check_ctx *v, uint32_t id) {
  const dhx_plan_buffer *b = &v->p->ranks[v->rank].buffers[id];
  int32_t sd = b->split_dim;
  CHECK(sd >= -1 && sd < (int32_t)b->ndim, "buffer %u '%s': split_dim %d is not -1 or a "
        "dimension below %u", id, b->name, sd, b->ndim);
  CHECK(b->split_parts >= 1 && b->split_parts <= DHX_PLAN_MAX_RANKS && b->split_groups >= 1 &&
        b->split_index < b->split_parts, "buffer %u '%s': split %u of %u parts in %u groups is "
        "out of range", id, b->name, b->split_index, b->split_parts, b->split_groups);
  CHECK(sd >= 0 || (b->split_parts == 1 && b->split_groups == 1),
        "buffer %u '%s': %u parts in %u groups without a split_dim", id, b->name, b->split_parts,
        b->split_groups);
  for (int32_t d = 0; d < (int32_t)b->ndim; d++) {
    int64_t want = b->shape[d];
    if (d == sd) {
      CHECK(b->shape[d] % b->split_groups == 0, "buffer %u '%s': dimension %d of %" PRId64
            " does not divide into %u groups", id, b->name, d, b->shape[d], b->split_groups);
      want = b->shape[d] * b->split_parts;  // shape is checked positive and bounded above
    }
    CHECK(b->global_shape[d] == want, "buffer %u '%s': global dimension %d is %" PRId64
          ", its slice says %" PRId64, id, b->name, d, b->global_shape[d], want);
  }
  return true;
}

static bool check_buffer(plan_check_ctx *v, uint32_t id) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const dhx_plan_train *t = &v->p->train;
  const dhx_plan_buffer *b = &r->buffers[id];
  CHECK(terminated(b->name, DHX_NAME_MAX), "buffer %u: name is not NUL-terminated", id);
  CHECK(b->name[0], "buffer %u: empty name", id);
  CHECK(b->kind >= DHX_BUF_PARAM && b->kind <= DHX_BUF_MASTER, "buffer %u '%s': unknown kind %u",
        id, b->name, b->kind);
  CHECK(dhx_dtype_size(b->dtype) > 0, "buffer %u '%s': unknown dtype %u", id, b->name, b->dtype);
  CHECK(b->ndim >= 1 && b->ndim <= DHX_MAX_DIMS, "buffer %u '%s': ndim %u (must be 1..%d)", id,
        b->name, b->ndim, DHX_MAX_DIMS);
  for (uint32_t d = 0; d < b->ndim; d++)
    CHECK(b->shape[d] >= 1, "buffer %u '%s': dimension %u is %" PRId64 " (must be positive)", id,
          b->name, d, b->shape[d]);
  int64_t bytes = shape_bytes(b);
  CHECK(bytes >= 0, "buffer %u '%s': shape is too large", id, b->name);
  if (!check_shard(v, id, bytes)) return false;
  CHECK(b->offset >= 0 && b->offset % DHX_ALIGN == 0,
        "buffer %u '%s': offset %" PRId64 " is not a non-negative multiple of %d", id, b->name,
        b->offset, DHX_ALIGN);
  CHECK(b->offset <= r->arena_bytes && b->nbytes <= r->arena_bytes - b->offset,
        "buffer %u '%s': [%" PRId64 ", %" PRId64 ") lies outside the arena of %" PRId64 " bytes",
        id, b->name, b->offset, b->offset + b->nbytes, r->arena_bytes);
  if (!check_split(v, id)) return false;
  if (b->kind == DHX_BUF_TOKENS || b->kind == DHX_BUF_TARGETS || b->kind == DHX_BUF_LOSSES) {
    uint32_t want = b->kind == DHX_BUF_LOSSES ? DHX_F32 : DHX_I32;
    CHECK(b->dtype == want, "buffer %u '%s': a %s buffer must be %s", id, b->name,
          dhx_buf_kind_name(b->kind), dhx_dtype_name(want));
    int64_t values = t->micro_per_run * t->micro_batch * t->seq;
    CHECK(b->nbytes == 4 * values, "buffer %u '%s': a %s buffer must hold micro_per_run*"
          "micro_batch*seq = %" PRId64 " values (holds %" PRId64 ")", id, b->name,
          dhx_buf_kind_name(b->kind), values, b->nbytes / 4);
  }
  if (b->kind == DHX_BUF_PARAM || b->kind == DHX_BUF_GRAD || b->kind == DHX_BUF_OPT_M ||
      b->kind == DHX_BUF_OPT_V || b->kind == DHX_BUF_MASTER)
    CHECK(b->dtype == DHX_F32, "buffer %u '%s': %s buffers must be f32", id, b->name,
          dhx_buf_kind_name(b->kind));
  if (b->kind != DHX_BUF_PARAM) return true;
  CHECK(b->init <= DHX_INIT_NORMAL, "buffer %u '%s': unknown init %u", id, b->name, b->init);
  CHECK(isfinite(b->init_std) && b->init_std >= 0, "buffer %u '%s': init_std %g is not a "
        "non-negative number", id, b->name, (double)b->init_std);
  CHECK(b->decay <= 1, "buffer %u '%s': decay must be 0 or 1 (got %u)", id, b->name, b->decay);
  return check_param_link(v, id, b->grad, DHX_BUF_GRAD, "grad") &&
         check_param_link(v, id, b->opt_m, DHX_BUF_OPT_M, "opt_m") &&
         check_param_link(v, id, b->opt_v, DHX_BUF_OPT_V, "opt_v") &&
         check_param_link(v, id, b->master, DHX_BUF_MASTER, "master");
}

// Kernels use the tokens buffer's values as row indices, trusting that they are the runtime's
// (below the vocabulary). So a rank has at most one tokens buffer and no other buffer shares
// its bytes: nothing can write other values into it.
static bool check_tokens_alone(plan_check_ctx *v) {
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
static bool check_param_names(plan_check_ctx *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  const char **names = malloc(sizeof(char *) * (r->nbuffers ? r->nbuffers : 1));
  if (!names) return plan_check_fail(v, "out of memory");
  uint32_t n = 0;
  for (uint32_t i = 0; i < r->nbuffers; i++)
    if (r->buffers[i].kind == DHX_BUF_PARAM) names[n++] = r->buffers[i].name;
  qsort(names, n, sizeof(char *), cmp_name_ptr);
  for (uint32_t i = 1; i < n; i++)
    if (strcmp(names[i], names[i - 1]) == 0) {
      bool ok = plan_check_fail(v, "two parameters are named '%s' (names must be distinct: they are "
                    "checkpoint tensor names)", names[i]);
      free(names);
      return ok;
    }
  free(names);
  return true;
}

static bool check_program(plan_check_ctx *v, const dhx_plan_program *p) {
  CHECK(p->nstreams >= 1 && p->nstreams <= DHX_MAX_STREAMS, "%u streams (must be 1..%d)",
        p->nstreams, DHX_MAX_STREAMS);
  CHECK(p->nevents <= DHX_PLAN_MAX_EVENTS, "%u events (at most %d)", p->nevents, DHX_PLAN_MAX_EVENTS);
  CHECK(p->ninstrs <= DHX_PLAN_MAX_INSTRS, "%u instructions (at most %d)", p->ninstrs,
        DHX_PLAN_MAX_INSTRS);
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    v->instr = i;
    v->note = NULL;
    if (!plan_check_instr(v, p, &p->instrs[i])) return false;
  }
  v->instr = -1;
  v->note = NULL;
  return plan_check_events(v, p);
}

static bool check_rank(plan_check_ctx *v) {
  const dhx_plan_rank *r = &v->p->ranks[v->rank];
  CHECK(r->dp_size == v->p->train.dp, "dp_size %u differs from train.dp %" PRId64, r->dp_size,
        v->p->train.dp);
  CHECK(r->dp_rank < r->dp_size, "dp_rank %u is not below dp_size %u", r->dp_rank, r->dp_size);
  CHECK(r->tp_size == v->p->train.tp && r->tp_rank < r->tp_size, "tp_rank %u of tp_size %u "
        "(train.tp is %" PRId64 ")", r->tp_rank, r->tp_size, v->p->train.tp);
  CHECK(r->pp_size == v->p->train.pp && r->pp_rank < r->pp_size, "pp_rank %u of pp_size %u "
        "(train.pp is %" PRId64 ")", r->pp_rank, r->pp_size, v->p->train.pp);
  CHECK(r->reports_loss <= 1, "reports_loss must be 0 or 1 (got %u)", r->reports_loss);
  if (r->shares) return plan_check_shared_rank(v);  // its sections are the owner's, checked
  CHECK(r->nsubst == 0, "%u communicator substitutions without a rank it shares", r->nsubst);
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

bool dhx_plan_validate(const dhx_plan *plan, char *err, size_t errlen) {
  plan_check_ctx ctx = {.p = plan, .err = err, .errlen = errlen, .rank = -1, .prog = -1,
                        .instr = -1};
  plan_check_ctx *v = &ctx;
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
  return plan_check_collectives(v);
}
