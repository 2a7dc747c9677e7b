// plan_exec.c — runs a validated plan with guarded buffers (plan_exec.h).
//
// The plan's own offsets pack buffers back to back (and let them share bytes), so an access
// past one buffer would land in the next one unnoticed. Here each buffer gets pages of its own
// in one mapping, placed so that it ends (rounded up to DHX_ALIGN) where a PROT_NONE page
// starts; the bytes before it and its rounding tail are poisoned for AddressSanitizer. The
// executor computes pointers from the relocated offsets exactly as it does from the plan's.
#include "plan_exec.h"

#include <inttypes.h>
#include <sanitizer/asan_interface.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dhxrt.h"

typedef struct guarded {
  uint8_t *base;
  size_t bytes;
  dhx_plan_rank rank;  // the plan's rank with buffers at their guarded offsets
} guarded;

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Pages for a buffer: its bytes rounded up to `align`, at least one page.
static size_t buffer_pages(const dhx_plan_buffer *b, size_t align, size_t page) {
  size_t n = round_up(round_up((size_t)b->nbytes, align), page) / page;
  return n ? n : 1;
}

static void guarded_free(guarded *g) {
  if (g->base) {
    ASAN_UNPOISON_MEMORY_REGION(g->base, g->bytes);  // the shadow outlives the mapping
    munmap(g->base, g->bytes);
  }
  free(g->rank.buffers);
  memset(g, 0, sizeof *g);
}

// Lays out the rank's buffers: a guard page, then per buffer its pages and a guard page. Each
// buffer ends `align` bytes rounded up before its guard page (1: right at it).
static bool guarded_layout(const dhx_plan_rank *r, size_t align, guarded *g) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  memset(g, 0, sizeof *g);
  g->rank = *r;
  g->rank.buffers = malloc(sizeof(dhx_plan_buffer) * (r->nbuffers ? r->nbuffers : 1));
  if (!g->rank.buffers) return false;
  memcpy(g->rank.buffers, r->buffers, sizeof(dhx_plan_buffer) * r->nbuffers);
  g->bytes = page;
  for (uint32_t i = 0; i < r->nbuffers; i++)
    g->bytes += (buffer_pages(&r->buffers[i], align, page) + 1) * page;
  void *m = mmap(NULL, g->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    free(g->rank.buffers);
    return false;
  }
  g->base = m;
  mprotect(g->base, page, PROT_NONE);
  size_t at = page;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    dhx_plan_buffer *b = &g->rank.buffers[i];
    size_t end = at + buffer_pages(b, align, page) * page;
    size_t start = end - round_up((size_t)b->nbytes, align);
    b->offset = (int64_t)start;
    ASAN_POISON_MEMORY_REGION(g->base + at, start - at);
    ASAN_POISON_MEMORY_REGION(g->base + start + b->nbytes, end - start - (size_t)b->nbytes);
    mprotect(g->base + end, page, PROT_NONE);
    at = end + page;
  }
  return true;
}

// The runtime keeps token ids below the vocabulary; parameters get small varied values so that
// the kernels compute something.
static void fill_inputs(const dhx_plan *plan, guarded *g) {
  for (uint32_t i = 0; i < g->rank.nbuffers; i++) {
    const dhx_plan_buffer *b = &g->rank.buffers[i];
    uint8_t *p = g->base + b->offset;
    int64_t n = b->nbytes / 4;
    if (b->kind == DHX_BUF_TOKENS || b->kind == DHX_BUF_TARGETS)
      for (int64_t j = 0; j < n; j++) ((int32_t *)p)[j] = (int32_t)((j * 7 + 3) % plan->train.vocab);
    else if (b->kind == DHX_BUF_PARAM)
      for (int64_t j = 0; j < n; j++) ((float *)p)[j] = 0.01f * (float)(j % 13) - 0.05f;
  }
}

static int64_t mul_cap(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

// Whether a rank is small enough to run; `why` says what is too big.
static bool small_enough(const dhx_plan_rank *r, char *why, size_t whylen) {
  int64_t bytes = 0;
  for (uint32_t i = 0; i < r->nbuffers; i++) bytes += r->buffers[i].nbytes;
  if (bytes > PLAN_EXEC_MAX_BYTES) {
    snprintf(why, whylen, "buffers of %" PRId64 " bytes", bytes);
    return false;
  }
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++) {
      const dhx_plan_instr *in = &r->programs[p].instrs[i];
      const dhx_plan_gemm *g = in->gemm;
      if (in->op == DHX_OP_KERNEL && in->n > PLAN_EXEC_MAX_INDICES) {
        snprintf(why, whylen, "a kernel over %" PRId64 " indices", in->n);
        return false;
      }
      if (in->op != DHX_OP_GEMM) continue;
      int64_t flops = mul_cap(mul_cap(mul_cap(g->m, g->n), mul_cap(g->k, g->batch[0])), g->batch[1]);
      if (flops > PLAN_EXEC_MAX_FLOPS) {
        snprintf(why, whylen, "a GEMM of %" PRId64 " multiply-adds", flops);
        return false;
      }
    }
  return true;
}

static float *operand(const dhx_rt *rt, const dhx_plan_arg *a) {
  return (float *)(rt->arena.base + rt->rank->buffers[a->buf].offset + a->i);
}

// Reads the first and last element of every row of a GEMM operand in every batch, in
// instrumented code: BLAS itself is not instrumented, and a row that ends in a buffer's
// rounding tail would not reach its guard page.
// Elements are `size` bytes (the operand buffer's dtype: 4, or 2 for bf16).
static float touch_operand(const uint8_t *p, int64_t size, int64_t rows, int64_t cols,
                           int64_t ld, const dhx_plan_gemm *g, const int64_t stride[2]) {
  float sum = 0;
  for (int64_t i = 0; i < g->batch[0]; i++)
    for (int64_t l = 0; l < g->batch[1]; l++)
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = p + (i * stride[0] + l * stride[1] + r * ld) * size;
        sum += (float)(row[0] + row[(cols - 1) * size]);
      }
  return sum;
}

static volatile float touched;

static int64_t operand_size(const dhx_rt *rt, const dhx_plan_arg *a) {
  return dhx_dtype_size(rt->rank->buffers[a->buf].dtype);
}

static void touch_gemm(const dhx_rt *rt, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = in->gemm;
  const dhx_plan_arg *a = in->args;
  touched = touch_operand((const uint8_t *)operand(rt, &a[0]), operand_size(rt, &a[0]),
                          g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda, g,
                          g->stride_a) +
            touch_operand((const uint8_t *)operand(rt, &a[1]), operand_size(rt, &a[1]),
                          g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb, g,
                          g->stride_b) +
            touch_operand((const uint8_t *)operand(rt, &a[2]), operand_size(rt, &a[2]), g->m,
                          g->n, g->ldc, g, g->stride_c);
}

// One rank of the ring: the all-reduce reads and writes its whole region on every member.
// Collectives' elements are of the instruction's dtype (f32, i32 or bf16): touched as bytes.
static void touch_allreduce(const dhx_rt *rt, const dhx_plan_instr *in) {
  uint8_t *x = (uint8_t *)operand(rt, &in->args[0]);
  int64_t bytes = in->args[1].i * dhx_dtype_size(in->dtype);
  for (int64_t i = 0; i < bytes; i++) x[i] = (uint8_t)(x[i] + 0);
}

// Reduce-scatter, all-gather and all-to-all read their input and write their output; the sizes come from
// the communicator, as the ring's would.
static void touch_chunked(const dhx_rt *rt, const dhx_plan_instr *in) {
  int64_t count = in->args[2].i, p = rt->plan->comms[in->comm].nranks;
  bool scatter = in->op == DHX_OP_REDUCE_SCATTER, gather = in->op == DHX_OP_ALL_GATHER;
  const uint8_t *src = (const uint8_t *)operand(rt, &in->args[0]);
  uint8_t *dst = (uint8_t *)operand(rt, &in->args[1]);
  int64_t size = dhx_dtype_size(in->dtype);
  int64_t n_in = (gather ? count / p : count) * size, n_out = (scatter ? count / p : count) * size;
  uint8_t sum = 0;
  for (int64_t i = 0; i < n_in; i++) sum = (uint8_t)(sum + src[i] * 0);
  for (int64_t i = 0; i < n_out; i++) dst[i] = sum;
}

// A send reads its region, a receive writes it (there is no peer here).
static void touch_transfer(const dhx_rt *rt, const dhx_plan_instr *in) {
  uint8_t *x = (uint8_t *)operand(rt, &in->args[0]);
  int64_t bytes = in->args[1].i * dhx_dtype_size(in->dtype);
  for (int64_t i = 0; i < bytes; i++) x[i] = in->op == DHX_OP_RECV ? 0 : x[i];
}

static void run_program(dhx_rt *rt, const dhx_plan_program *prog) {
  for (uint32_t i = 0; i < prog->ninstrs; i++) {
    const dhx_plan_instr *in = &prog->instrs[i];
    if (in->op == DHX_OP_GEMM) touch_gemm(rt, in);
    if (in->op == DHX_OP_ALLREDUCE)
      touch_allreduce(rt, in);
    else if (in->op == DHX_OP_REDUCE_SCATTER || in->op == DHX_OP_ALL_GATHER ||
             in->op == DHX_OP_ALL_TO_ALL)
      touch_chunked(rt, in);
    else if (in->op == DHX_OP_SEND || in->op == DHX_OP_RECV)
      touch_transfer(rt, in);
    else
      dhx_exec_cpu(rt, in);
    atomic_store(&rt->update_skipped, false);  // keep running whatever the gradient norm
  }
}

// A runtime over the guarded buffers, as dhx_rt_init would make it (without streams or
// communicators: instructions run here one after another).
static void rt_init(dhx_rt *rt, const dhx_plan *plan, const guarded *g, dhx_pool *pool) {
  memset(rt, 0, sizeof *rt);
  rt->plan = plan;
  rt->rank = &g->rank;
  rt->threads = dhx_pool_threads(pool);
  rt->arena.base = g->base;
  rt->arena.bytes = (int64_t)g->bytes;
  rt->pool = pool;
  rt->regs[DHX_REG_LR] = 1e-3;
  rt->regs[DHX_REG_BC1] = 0.1;
  rt->regs[DHX_REG_BC2] = 0.001;
  rt->regs[DHX_REG_CLIP_SCALE] = 1.0;
  atomic_init(&rt->update_skipped, false);
}

static plan_exec_result run_rank(const dhx_plan *plan, uint32_t r, dhx_pool *pool,
                                 const char *kernels_so, char *why, size_t whylen) {
  guarded g;
  if (!guarded_layout(&plan->ranks[r], DHX_ALIGN, &g)) {
    snprintf(why, whylen, "cannot map the guarded buffers");
    return PLAN_EXEC_FAILED;
  }
  fill_inputs(plan, &g);
  dhx_rt rt;
  rt_init(&rt, plan, &g, pool);
  plan_exec_result res = PLAN_EXEC_RAN;
  if (!dhx_kernels_load(&rt.kernels, plan, kernels_so, why, whylen)) {
    res = PLAN_EXEC_FAILED;
  } else {
    for (int p = 0; p < DHX_PROG_COUNT; p++) run_program(&rt, &g.rank.programs[p]);
  }
  dhx_kernels_unload(&rt.kernels);
  guarded_free(&g);
  return res;
}

plan_exec_result plan_exec_run(const dhx_plan *plan, const char *kernels_so, char *why,
                               size_t whylen) {
  why[0] = 0;
  for (uint32_t r = 0; r < plan->nranks; r++)
    if (!small_enough(&plan->ranks[r], why, whylen)) return PLAN_EXEC_TOO_BIG;
  dhx_pool *pool = dhx_pool_new(2);
  if (!pool) {
    snprintf(why, whylen, "cannot start the worker threads");
    return PLAN_EXEC_FAILED;
  }
  plan_exec_result res = PLAN_EXEC_RAN;
  for (uint32_t r = 0; r < plan->nranks && res == PLAN_EXEC_RAN; r++)
    res = run_rank(plan, r, pool, kernels_so, why, whylen);
  dhx_pool_free(pool);
  return res;
}

// ---- each kernel launch in exactly the bytes its descriptors declare -------------------------

// One launch as a rank of its own: a buffer per pointer argument, holding exactly the extent
// the argument's access descriptor declares (none when the launch touches nothing).
static bool tight_rank(const dhx_plan *plan, const dhx_plan_rank *r, const dhx_plan_instr *in,
                       dhx_plan_rank *out, dhx_plan_instr *copy) {
  const dhx_plan_kernel *k = &plan->kernels[in->kernel];
  memset(out, 0, sizeof *out);
  *copy = *in;
  out->buffers = calloc(DHX_MAX_ARGS, sizeof(dhx_plan_buffer));
  if (!out->buffers) return false;
  for (uint32_t j = 0; j < k->nargs; j++) {
    if (k->arg_types[j] != DHX_KARG_PTR) continue;
    int64_t elems;
    if (!dhx_access_extent(&k->access[j], in, plan->train.vocab, &elems) || elems == 0) {
      free(out->buffers);
      return false;
    }
    dhx_plan_buffer *b = &out->buffers[out->nbuffers];
    *b = r->buffers[in->args[j].buf];
    b->nbytes = elems * k->access[j].elem_bytes;
    copy->args[j].buf = (int32_t)out->nbuffers++;
    copy->args[j].i = 0;
  }
  out->programs[0] = (dhx_plan_program){.nstreams = 1, .ninstrs = 1, .instrs = copy};
  return true;
}

// Token ids (and targets) where the kernel reads them, small values elsewhere.
static void fill_tight(const dhx_plan *plan, const guarded *g) {
  for (uint32_t i = 0; i < g->rank.nbuffers; i++) {
    const dhx_plan_buffer *b = &g->rank.buffers[i];
    uint8_t *p = g->base + b->offset;
    int64_t n = b->nbytes / 4;
    bool ids = b->kind == DHX_BUF_TOKENS || b->kind == DHX_BUF_TARGETS;
    for (int64_t j = 0; j < n; j++) {
      if (ids)
        ((int32_t *)p)[j] = (int32_t)((j * 7 + 3) % plan->train.vocab);
      else
        ((float *)p)[j] = 0.5f + 0.01f * (float)(j % 13);
    }
  }
}

plan_exec_result plan_exec_kernels_tight(const dhx_plan *plan, const char *kernels_so,
                                         int *launches, char *why, size_t whylen) {
  why[0] = 0;
  *launches = 0;
  dhx_pool *pool = dhx_pool_new(2);
  dhx_kernels kernels;
  if (!pool || !dhx_kernels_load(&kernels, plan, kernels_so, why, whylen)) {
    dhx_pool_free(pool);
    return PLAN_EXEC_FAILED;
  }
  const dhx_plan_rank *r = &plan->ranks[0];
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++) {
      const dhx_plan_instr *in = &r->programs[p].instrs[i];
      dhx_plan_rank one;
      dhx_plan_instr copy;
      guarded g;
      if (in->op != DHX_OP_KERNEL || !tight_rank(plan, r, in, &one, &copy)) continue;
      bool mapped = guarded_layout(&one, 1, &g);
      free(one.buffers);
      if (!mapped) continue;
      fill_tight(plan, &g);
      dhx_rt rt;
      rt_init(&rt, plan, &g, pool);
      rt.kernels = kernels;
      dhx_exec_cpu(&rt, &copy);
      guarded_free(&g);
      ++*launches;
    }
  dhx_kernels_unload(&kernels);
  dhx_pool_free(pool);
  return PLAN_EXEC_RAN;
}
