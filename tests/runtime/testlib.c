// testlib.c — see testlib.h.
#include "testlib.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plan_util.h"

#ifndef DHX_TEST_KERNELS_SO
#error "CMake defines DHX_TEST_KERNELS_SO: the path of the built test kernels"
#endif

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  CHECK(p != NULL);
  return p;
}

dhx_plan *tb_new(uint32_t nranks) {
  dhx_plan *p = calloc(1, sizeof *p);
  CHECK(p != NULL);
  p->version = DHX_PLAN_VERSION;
  p->nranks = nranks;
  p->ranks = calloc(nranks, sizeof(dhx_plan_rank));
  CHECK(p->ranks != NULL);
  for (uint32_t r = 0; r < nranks; r++) {
    p->ranks[r].dp_rank = r;
    p->ranks[r].dp_size = nranks;
    p->ranks[r].tp_size = p->ranks[r].pp_size = 1;
    p->ranks[r].reports_loss = 1;
    for (int g = 0; g < DHX_PROG_COUNT; g++) p->ranks[r].programs[g].nstreams = 1;
  }
  dhx_plan_train *t = &p->train;
  t->steps = 10;
  t->micro_batch = 1;
  t->global_batch = nranks;
  t->accum_steps = 1;
  t->micro_per_run = 1;
  t->seq = 4;
  t->vocab = 16;
  t->seed = 1;
  t->lr = 1e-2;
  t->lr_min_ratio = 0.1;
  t->beta1 = 0.9;
  t->beta2 = 0.95;
  t->eps = 1e-8;
  t->dp = nranks;
  t->tp = t->pp = 1;
  t->log_every = 1;
  snprintf(t->model_name, sizeof t->model_name, "test");
  return p;
}

void tb_free(dhx_plan *p) {
  if (!p) return;
  dhx_plan_free(p);
  free(p);
}

int32_t tb_buffer(dhx_plan *p, const char *name, dhx_buf_kind kind, dhx_dtype dtype, int ndim,
                  const int64_t *shape) {
  dhx_plan_rank *r = &p->ranks[0];
  r->buffers = xrealloc(r->buffers, sizeof(dhx_plan_buffer) * (r->nbuffers + 1));
  dhx_plan_buffer *b = &r->buffers[r->nbuffers];
  memset(b, 0, sizeof *b);
  snprintf(b->name, sizeof b->name, "%s", name);
  b->kind = kind;
  b->dtype = dtype;
  b->ndim = (uint32_t)ndim;
  int64_t n = dhx_dtype_size(dtype);
  for (int d = 0; d < ndim; d++) n *= (b->global_shape[d] = b->shape[d] = shape[d]);
  b->split_dim = -1;  // the whole tensor
  b->split_groups = b->split_parts = 1;
  b->shard_parts = 1;  // the whole slice, no padding
  b->nbytes = n;
  b->offset = (r->arena_bytes + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN;
  r->arena_bytes = b->offset + n;
  b->grad = b->opt_m = b->opt_v = b->master = -1;
  return (int32_t)r->nbuffers++;
}

void tb_shard(dhx_plan *p, int32_t id, uint32_t parts, uint32_t index) {
  dhx_plan_rank *r = &p->ranks[0];
  CHECK(id >= 0 && (uint32_t)id + 1 == r->nbuffers && index < parts);
  dhx_plan_buffer *b = &r->buffers[id];
  int64_t c = (dhx_buffer_slice_elems(b) + parts - 1) / parts;
  c = (c + 15) / 16 * 16;
  b->shard_parts = parts;
  b->shard_index = index;
  b->nbytes = c * dhx_dtype_size(b->dtype);
  r->arena_bytes = b->offset + b->nbytes;
}

// The parameter's buffers, each made shard `index` of `parts` when parts > 0.
static int32_t param_buffers(dhx_plan *p, const char *name, int ndim, const int64_t *shape,
                             dhx_init_kind init, float std, bool decay, uint32_t parts,
                             uint32_t index) {
  static const dhx_buf_kind kinds[4] = {DHX_BUF_PARAM, DHX_BUF_GRAD, DHX_BUF_OPT_M, DHX_BUF_OPT_V};
  static const char *prefix[4] = {"", "grad.", "adam_m.", "adam_v."};
  int32_t ids[4];
  for (int k = 0; k < 4; k++) {
    char n[DHX_NAME_MAX + 16];
    snprintf(n, sizeof n, "%s%s", prefix[k], name);
    ids[k] = tb_buffer(p, n, kinds[k], DHX_F32, ndim, shape);
    if (parts) tb_shard(p, ids[k], parts, index);
  }
  int32_t id = ids[0], g = ids[1], m = ids[2], v = ids[3];
  dhx_plan_buffer *b = &p->ranks[0].buffers[id];
  b->init = init;
  b->init_std = std;
  b->decay = decay;
  b->grad = g;
  b->opt_m = m;
  b->opt_v = v;
  return id;
}

int32_t tb_param(dhx_plan *p, const char *name, int ndim, const int64_t *shape, dhx_init_kind init,
                 float std, bool decay) {
  return param_buffers(p, name, ndim, shape, init, std, decay, 0, 0);
}

int32_t tb_sharded_param(dhx_plan *p, const char *name, int ndim, const int64_t *shape,
                         dhx_init_kind init, float std, uint32_t parts, uint32_t index) {
  return param_buffers(p, name, ndim, shape, init, std, false, parts, index);
}

// The test kernels' library, loaded once and kept: testlib takes each kernel's table entry
// from its signature export, so test_kernels.c is the one description of those kernels.
static void *test_kernels_library(void) {
  static void *handle;
  if (!handle) handle = dlopen(DHX_TEST_KERNELS_SO, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    fprintf(stderr, "%s: %s\n", DHX_TEST_KERNELS_SO, dlerror());
    exit(1);
  }
  return handle;
}

// Argument types and access descriptors of test kernel k->name, as its export says; `sig`
// (tb_kernel's) must agree.
static void tb_kernel_abi(dhx_plan_kernel *k, const char *sig) {
  char sym[DHX_NAME_MAX + sizeof DHX_KERNEL_ABI_PREFIX], why[256];
  snprintf(sym, sizeof sym, DHX_KERNEL_ABI_PREFIX "%s", k->name);
  const char *abi = dlsym(test_kernels_library(), sym);
  if (!abi || !dhx_kernel_abi_decode(abi, k, why, sizeof why)) {
    fprintf(stderr, "test kernel '%s': %s\n", k->name, abi ? why : "no signature export");
    exit(1);
  }
  for (const char *c = sig; *c; c++) {
    uint32_t j = (uint32_t)(c - sig);
    uint32_t type = *c == 'p' ? DHX_KARG_PTR : *c == 'i' ? DHX_KARG_I64
                    : *c == 'f' ? DHX_KARG_F32 : DHX_KARG_F64;
    CHECK(j < k->nargs && k->arg_types[j] == type);
  }
  CHECK(strlen(sig) == k->nargs);
}

int32_t tb_kernel(dhx_plan *p, const char *name, const char *sig) {
  for (uint32_t k = 0; k < p->nkernels; k++)
    if (strcmp(p->kernels[k].name, name) == 0) return (int32_t)k;
  p->kernels = xrealloc(p->kernels, sizeof(dhx_plan_kernel) * (p->nkernels + 1));
  dhx_plan_kernel *k = &p->kernels[p->nkernels];
  memset(k, 0, sizeof *k);
  snprintf(k->name, sizeof k->name, "%s", name);
  k->threads_per_index = 1;
  k->indices_per_thread = 1;
  tb_kernel_abi(k, sig);
  return (int32_t)p->nkernels++;
}

int32_t tb_comm(dhx_plan *p, int n, const int32_t *ranks) {
  p->comms = xrealloc(p->comms, sizeof(dhx_plan_comm) * (p->ncomms + 1));
  dhx_plan_comm *c = &p->comms[p->ncomms];
  c->nranks = (uint32_t)n;
  c->ranks = xrealloc(NULL, sizeof(int32_t) * (size_t)n);
  memcpy(c->ranks, ranks, sizeof(int32_t) * (size_t)n);
  return (int32_t)p->ncomms++;
}

dhx_plan_instr *tb_instr(dhx_plan *p, dhx_prog_kind prog, dhx_op op, uint32_t stream,
                         const char *note) {
  return tb_rank_instr(p, 0, prog, op, stream, note);
}

dhx_plan_instr *tb_rank_instr(dhx_plan *p, uint32_t rank, dhx_prog_kind prog, dhx_op op,
                              uint32_t stream, const char *note) {
  dhx_plan_program *g = &p->ranks[rank].programs[prog];
  g->instrs = xrealloc(g->instrs, sizeof(dhx_plan_instr) * (g->ninstrs + 1));
  dhx_plan_instr *in = &g->instrs[g->ninstrs++];
  memset(in, 0, sizeof *in);
  in->op = op;
  in->stream = stream;
  in->kernel = in->comm = in->event = -1;
  if (op == DHX_OP_GEMM) {
    dhx_plan_gemm *g = dhx_plan_own_gemm(p, in);
    g->batch[0] = g->batch[1] = 1;
  }
  if (dhx_op_on_comm(op)) in->dtype = DHX_F32;
  in->note = dhx_plan_text(p, note);
  if (stream + 1 > g->nstreams) g->nstreams = stream + 1;
  return in;
}

dhx_plan_instr *tb_kernel_instr(dhx_plan *p, dhx_prog_kind prog, uint32_t stream, const char *kernel,
                                const char *sig, int64_t n, const char *note) {
  int32_t k = tb_kernel(p, kernel, sig);
  dhx_plan_instr *in = tb_instr(p, prog, DHX_OP_KERNEL, stream, note);
  in->kernel = k;
  in->n = n;
  return in;
}

void tb_arg_buf(dhx_plan_instr *in, int32_t buf, int64_t byte_offset) {
  in->args[in->nargs++] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = buf, .i = byte_offset};
}

void tb_arg_i64(dhx_plan_instr *in, int64_t v) {
  in->args[in->nargs++] = (dhx_plan_arg){.kind = DHX_ARG_I64, .buf = -1, .i = v};
}

void tb_arg_f64(dhx_plan_instr *in, double v) {
  in->args[in->nargs++] = (dhx_plan_arg){.kind = DHX_ARG_F64, .buf = -1, .f = v};
}

void tb_arg_reg(dhx_plan_instr *in, dhx_reg r) {
  in->args[in->nargs++] = (dhx_plan_arg){.kind = DHX_ARG_REG, .buf = -1, .i = r};
}

void tb_event(dhx_plan *p, dhx_prog_kind prog, uint32_t from, uint32_t to, const char *note) {
  dhx_plan_program *g = &p->ranks[0].programs[prog];
  int32_t e = (int32_t)g->nevents++;
  tb_instr(p, prog, DHX_OP_RECORD, from, note)->event = e;
  tb_instr(p, prog, DHX_OP_WAIT, to, note)->event = e;
}

void tb_replicate(dhx_plan *p) {
  const dhx_plan_rank *src = &p->ranks[0];
  for (uint32_t r = 1; r < p->nranks; r++) {
    dhx_plan_rank *dst = &p->ranks[r];
    free(dst->buffers);
    for (int g = 0; g < DHX_PROG_COUNT; g++) free(dst->programs[g].instrs);
    uint32_t dp_rank = dst->dp_rank;
    *dst = *src;
    dst->dp_rank = dp_rank;
    dst->buffers = xrealloc(NULL, sizeof(dhx_plan_buffer) * (src->nbuffers + 1));
    if (src->nbuffers) memcpy(dst->buffers, src->buffers, sizeof(dhx_plan_buffer) * src->nbuffers);
    for (int g = 0; g < DHX_PROG_COUNT; g++) {
      const dhx_plan_program *sp = &src->programs[g];
      dst->programs[g].instrs = xrealloc(NULL, sizeof(dhx_plan_instr) * (sp->ninstrs + 1));
      if (sp->ninstrs) memcpy(dst->programs[g].instrs, sp->instrs, sizeof(dhx_plan_instr) * sp->ninstrs);
    }
  }
}

// ---- the collectives plan ---------------------------------------------------------------------

// A transfer of `count` floats of `buf` from byte `at`, to or from `peer` with `tag`.
static void add_transfer(dhx_plan *p, uint32_t rank, dhx_op op, int32_t buf, int64_t at,
                         int64_t count, int64_t peer, int64_t tag) {
  dhx_plan_instr *in = tb_rank_instr(p, rank, DHX_PROG_STEP, op, 1, op == DHX_OP_SEND ? "send" : "recv");
  in->comm = 0;
  tb_arg_buf(in, buf, at);
  tb_arg_i64(in, count);
  tb_arg_i64(in, peer);
  tb_arg_i64(in, tag);
}

// Rank r's two messages to its right neighbour, and the two it receives from its left one.
// Even ranks send first and odd ranks receive first, so no member waits on a member that waits
// on it (with an odd ring size the last even rank's send meets rank 0, which has sent by then).
static void add_ring_transfers(dhx_plan *p, uint32_t r, const collectives_bufs *b) {
  uint32_t n = p->nranks, right = (r + 1) % n, left = (r + n - 1) % n;
  for (int phase = 0; phase < 2; phase++) {
    bool sending = (phase == 0) == (r % 2 == 0);
    int32_t buf = sending ? b->msg : b->inbox;
    dhx_op op = sending ? DHX_OP_SEND : DHX_OP_RECV;
    int64_t peer = sending ? right : left;
    add_transfer(p, r, op, buf, 0, b->first, peer, 1);
    add_transfer(p, r, op, buf, b->first * 4, b->second, peer, 2);
  }
}

dhx_plan *collectives_plan(uint32_t nranks, int64_t n, int64_t first, int64_t second,
                           collectives_bufs *b) {
  dhx_plan *p = tb_new(nranks);
  int64_t chunk = n / nranks, msg = first + second;
  b->first = first;
  b->second = second;
  b->x = tb_buffer(p, "x", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  b->part = tb_buffer(p, "part", DHX_BUF_SCRATCH, DHX_F32, 1, &chunk);
  b->whole = tb_buffer(p, "whole", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  b->msg = tb_buffer(p, "msg", DHX_BUF_SCRATCH, DHX_F32, 1, &msg);
  b->inbox = tb_buffer(p, "inbox", DHX_BUF_SCRATCH, DHX_F32, 1, &msg);
  int32_t *everyone = xrealloc(NULL, sizeof(int32_t) * nranks);
  for (uint32_t r = 0; r < nranks; r++) everyone[r] = (int32_t)r;
  tb_comm(p, (int)nranks, everyone);
  free(everyone);
  dhx_plan_instr *in = tb_instr(p, DHX_PROG_STEP, DHX_OP_REDUCE_SCATTER, 0, "sum x, keep a chunk");
  in->comm = 0;
  tb_arg_buf(in, b->x, 0);
  tb_arg_buf(in, b->part, 0);
  tb_arg_i64(in, n);
  in = tb_instr(p, DHX_PROG_STEP, DHX_OP_ALL_GATHER, 0, "gather the chunks");
  in->comm = 0;
  tb_arg_buf(in, b->part, 0);
  tb_arg_buf(in, b->whole, 0);
  tb_arg_i64(in, n);
  tb_replicate(p);
  for (uint32_t r = 0; r < nranks; r++) add_ring_transfers(p, r, b);
  return p;
}

// ---- the toy plan -----------------------------------------------------------------------------

toy_opts toy_defaults(void) {
  return (toy_opts){.dp = 1, .steps = 30, .micro_batch = 4, .global_batch = 8, .seq = 8,
                    .vocab = 16, .val_every = 10, .val_batches = 2, .checkpoint_every = 0,
                    .warmup = 3, .lr = 0.05};
}

static dhx_plan_instr *gemm(dhx_plan *p, dhx_prog_kind prog, const char *note, int32_t a,
                            int32_t b, int32_t c, bool ta, int64_t m, int64_t n, int64_t k,
                            double beta) {
  dhx_plan_instr *in = tb_instr(p, prog, DHX_OP_GEMM, 0, note);
  tb_arg_buf(in, a, 0);
  tb_arg_buf(in, b, 0);
  tb_arg_buf(in, c, 0);
  dhx_plan_gemm *g = dhx_plan_own_gemm(p, in);
  g->trans_a = ta;
  g->m = m;
  g->n = n;
  g->k = k;
  g->lda = ta ? m : k;
  g->ldb = n;
  g->ldc = n;
  g->alpha = 1;
  g->beta = beta;
  return in;
}

typedef struct toy_bufs {
  int32_t tokens, targets, losses, w, b, x, y, dy, partials, norm;
} toy_bufs;

// Forward pass (MICRO and EVAL): y = onehot(tokens) W + b; losses and dy.
static void toy_forward(dhx_plan *p, dhx_prog_kind prog, const toy_bufs *t, int64_t rows,
                        int64_t V, double scale) {
  dhx_plan_instr *in = tb_kernel_instr(p, prog, 0, "onehot", "ppi", rows, "x = onehot(tokens)");
  tb_arg_buf(in, t->x, 0);
  tb_arg_buf(in, t->tokens, 0);
  tb_arg_i64(in, V);
  gemm(p, prog, "y = x W", t->x, t->w, t->y, false, rows, V, V, 0.0);
  in = tb_kernel_instr(p, prog, 0, "add_rows", "ppi", rows, "y += b");
  tb_arg_buf(in, t->y, 0);
  tb_arg_buf(in, t->b, 0);
  tb_arg_i64(in, V);
  in = tb_kernel_instr(p, prog, 0, "sqerr", "ppppif", rows, "squared error and dy");
  tb_arg_buf(in, t->losses, 0);
  tb_arg_buf(in, t->dy, 0);
  tb_arg_buf(in, t->y, 0);
  tb_arg_buf(in, t->targets, 0);
  tb_arg_i64(in, V);
  tb_arg_f64(in, scale);
}

static void toy_adamw(dhx_plan *p, int32_t param, int32_t clip, double wd, const char *note) {
  const dhx_plan_buffer *b = &p->ranks[0].buffers[param];
  int32_t g = b->grad, m = b->opt_m, v = b->opt_v;
  dhx_plan_instr *in = tb_kernel_instr(p, DHX_PROG_STEP, 0, "adamw", "ppppfffffffp", b->nbytes / 4, note);
  tb_arg_buf(in, param, 0);
  tb_arg_buf(in, g, 0);
  tb_arg_buf(in, m, 0);
  tb_arg_buf(in, v, 0);
  tb_arg_reg(in, DHX_REG_LR);
  tb_arg_f64(in, p->train.beta1);
  tb_arg_f64(in, p->train.beta2);
  tb_arg_f64(in, p->train.eps);
  tb_arg_f64(in, wd);
  tb_arg_reg(in, DHX_REG_BC1);
  tb_arg_reg(in, DHX_REG_BC2);
  tb_arg_buf(in, clip, 0);
}

static void toy_sumsq(dhx_plan *p, int32_t partials, int slot, int32_t grad, const char *note) {
  int64_t n = p->ranks[0].buffers[grad].nbytes / 4;
  dhx_plan_instr *in = tb_kernel_instr(p, DHX_PROG_STEP, 0, "sumsq", "ppii", 1, note);
  tb_arg_buf(in, partials, 4 * slot);
  tb_arg_buf(in, grad, 0);
  tb_arg_i64(in, n);
  tb_arg_i64(in, n);
}

dhx_plan *toy_plan(const toy_opts *o) {
  dhx_plan *p = tb_new((uint32_t)o->dp);
  dhx_plan_train *t = &p->train;
  t->steps = o->steps;
  t->micro_batch = o->micro_batch;
  t->global_batch = o->global_batch;
  t->accum_steps = o->global_batch / (o->micro_batch * o->dp);
  t->seq = o->seq;
  t->vocab = o->vocab;
  t->seed = 7;
  t->lr = o->lr;
  t->lr_min_ratio = 0.1;
  t->weight_decay = 0.01;
  t->grad_clip = 1.0;
  t->warmup_steps = o->warmup;
  t->val_every = o->val_every;
  t->val_batches = o->val_batches;
  t->checkpoint_every = o->checkpoint_every;
  t->net_bandwidth = o->net_bandwidth;
  t->net_latency = o->net_latency;
  snprintf(t->model_name, sizeof t->model_name, "toy");

  int64_t V = o->vocab, rows = o->micro_batch * o->seq;
  int64_t bt[2] = {o->micro_batch, o->seq}, rv[2] = {rows, V}, vv[2] = {V, V}, two = 2;
  toy_bufs b;
  b.tokens = tb_buffer(p, "tokens", DHX_BUF_TOKENS, DHX_I32, 2, bt);
  b.targets = tb_buffer(p, "targets", DHX_BUF_TARGETS, DHX_I32, 2, bt);
  b.losses = tb_buffer(p, "losses", DHX_BUF_LOSSES, DHX_F32, 1, &rows);
  b.w = tb_param(p, "w", 2, vv, DHX_INIT_NORMAL, 0.1f, true);
  b.b = tb_param(p, "b", 1, &V, DHX_INIT_ONES, 0, false);
  b.x = tb_buffer(p, "x", DHX_BUF_ACT, DHX_F32, 2, rv);
  b.y = tb_buffer(p, "y", DHX_BUF_ACT, DHX_F32, 2, rv);
  b.dy = tb_buffer(p, "dy", DHX_BUF_ACT, DHX_F32, 2, rv);
  b.partials = tb_buffer(p, "grad_norm.partials", DHX_BUF_SCRATCH, DHX_F32, 1, &two);
  b.norm = tb_buffer(p, "grad_norm", DHX_BUF_SCRATCH, DHX_F32, 1, &two);
  int32_t gw = p->ranks[0].buffers[b.w].grad, gb = p->ranks[0].buffers[b.b].grad;
  p->train.n_params = V * V + V;

  dhx_plan_instr *in = tb_instr(p, DHX_PROG_BEGIN, DHX_OP_ZERO, 0, "zero grad.w");
  tb_arg_buf(in, gw, 0);
  tb_arg_i64(in, V * V * 4);
  in = tb_instr(p, DHX_PROG_BEGIN, DHX_OP_ZERO, 0, "zero grad.b");
  tb_arg_buf(in, gb, 0);
  tb_arg_i64(in, V * 4);

  double scale = 1.0 / (double)(o->global_batch * o->seq);  // mean over the global batch
  toy_forward(p, DHX_PROG_MICRO, &b, rows, V, scale);
  gemm(p, DHX_PROG_MICRO, "grad.w += x^T dy", b.x, b.dy, gw, true, V, V, rows, 1.0);
  in = tb_kernel_instr(p, DHX_PROG_MICRO, 0, "colsum_acc", "ppii", V, "grad.b += colsum(dy)");
  tb_arg_buf(in, gb, 0);
  tb_arg_buf(in, b.dy, 0);
  tb_arg_i64(in, rows);
  tb_arg_i64(in, V);

  if (o->dp > 1) {
    // Reduce on the communication stream; each gradient's norm starts once it has arrived.
    int32_t members[DHX_PLAN_MAX_RANKS];
    for (int r = 0; r < o->dp; r++) members[r] = r;
    int32_t comm = tb_comm(p, o->dp, members);
    dhx_plan_program *step = &p->ranks[0].programs[DHX_PROG_STEP];
    step->nevents = 2;
    in = tb_instr(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, 1, "all-reduce grad.w");
    in->comm = comm;
    tb_arg_buf(in, gw, 0);
    tb_arg_i64(in, V * V);
    tb_instr(p, DHX_PROG_STEP, DHX_OP_RECORD, 1, "grad.w reduced")->event = 0;
    in = tb_instr(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, 1, "all-reduce grad.b");
    in->comm = comm;
    tb_arg_buf(in, gb, 0);
    tb_arg_i64(in, V);
    tb_instr(p, DHX_PROG_STEP, DHX_OP_RECORD, 1, "grad.b reduced")->event = 1;
    tb_instr(p, DHX_PROG_STEP, DHX_OP_WAIT, 0, "grad.w reduced")->event = 0;
    toy_sumsq(p, b.partials, 0, gw, "sum of squares of grad.w");
    tb_instr(p, DHX_PROG_STEP, DHX_OP_WAIT, 0, "grad.b reduced")->event = 1;
    toy_sumsq(p, b.partials, 1, gb, "sum of squares of grad.b");
  } else {
    toy_sumsq(p, b.partials, 0, gw, "sum of squares of grad.w");
    toy_sumsq(p, b.partials, 1, gb, "sum of squares of grad.b");
  }
  in = tb_instr(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, 0, "global norm and clip scale");
  in->kernel = tb_kernel(p, "grad_norm_f32", "pppid");
  in->n = 1;
  tb_arg_buf(in, b.norm, 0);
  tb_arg_buf(in, b.norm, 4);
  tb_arg_buf(in, b.partials, 0);
  tb_arg_i64(in, 2);
  tb_arg_f64(in, p->train.grad_clip);
  toy_adamw(p, b.w, b.norm, p->train.weight_decay, "adamw w");
  toy_adamw(p, b.b, b.norm, 0.0, "adamw b");

  toy_forward(p, DHX_PROG_EVAL, &b, rows, V, scale);
  tb_replicate(p);
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "toy plan is invalid: %s\n", err);
    exit(1);
  }
  return p;
}

// ---- files ------------------------------------------------------------------------------------

void fresh_dir(const char *dir) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  CHECK(system(cmd) == 0);
}

char tl_dir[512];

const char *tl_path(const char *name) {
  static char buf[8][1024];
  static int next;
  char *p = buf[next++ % 8];
  snprintf(p, 1024, "%s/%s", tl_dir, name);
  return p;
}

int tl_main(const char *prog, const tl_test *tests, size_t n, int argc, char **argv) {
  for (size_t i = 0; argc == 2 && i < n; i++) {
    if (strcmp(argv[1], tests[i].name) != 0) continue;
    snprintf(tl_dir, sizeof tl_dir, "work_%s", tests[i].name);
    fresh_dir(tl_dir);
    tests[i].fn();
    printf("%s: passed\n", tests[i].name);
    return 0;
  }
  fprintf(stderr, "usage: %s NAME (one of:", prog);
  for (size_t i = 0; i < n; i++) fprintf(stderr, " %s", tests[i].name);
  fprintf(stderr, ")\n");
  return 2;
}

uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *d = malloc((size_t)n + 1);
  CHECK(d != NULL);
  CHECK(fread(d, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return d;
}

void write_file(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fwrite(data, 1, size, f) == size);
  CHECK(fclose(f) == 0);
}

void write_plan_dir(const dhx_plan *p, const char *dir) {
  char path[4096], err[1024];
  if (mkdir(dir, 0755) != 0) CHECK(errno == EEXIST);
  snprintf(path, sizeof path, "%s/plan.bin", dir);
  if (!dhx_plan_write(path, p, err, sizeof err)) {
    fprintf(stderr, "%s: %s\n", path, err);
    exit(1);
  }
  size_t n;
  uint8_t *so = read_file(DHX_TEST_KERNELS_SO, &n);
  CHECK(so != NULL);
  snprintf(path, sizeof path, "%s/kernels.so", dir);
  write_file(path, so, n);
  free(so);
}

void write_shard_raw(const char *path, int32_t magic, int32_t version, int32_t ntok_header,
                     const uint16_t *tokens, int64_t ntok) {
  int32_t header[DHX_SHARD_HEADER_INTS] = {magic, version, ntok_header};
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fwrite(header, sizeof header, 1, f) == 1);
  if (ntok > 0) CHECK(fwrite(tokens, 2, (size_t)ntok, f) == (size_t)ntok);
  CHECK(fclose(f) == 0);
}

void write_toy_shard(const char *path, int64_t ntok, int64_t vocab, uint64_t seed) {
  uint16_t *t = malloc(sizeof(uint16_t) * (size_t)ntok);
  CHECK(t != NULL);
  uint64_t s = seed * 2654435761u + 1;
  t[0] = 0;
  for (int64_t i = 1; i < ntok; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift64
    t[i] = (s % 5 == 0) ? (uint16_t)((s >> 8) % (uint64_t)vocab)
                        : (uint16_t)((3 * t[i - 1] + 1) % vocab);
  }
  write_shard_raw(path, DHX_SHARD_MAGIC, DHX_SHARD_VERSION, (int32_t)ntok, t, ntok);
  free(t);
}
