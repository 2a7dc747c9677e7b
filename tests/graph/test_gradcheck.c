// test_gradcheck.c — the compiler's derived backward pass against finite differences, in f64.
//
//   test_gradcheck MODEL.dhx STDLIB_DIR
//
// The kernel tests (tests/codegen/test_fd.c) check each backward *kernel*; this checks what
// autodiff.c composes from them: every primitive op of a real model (linear and attention
// are GEMMs plus kernels wired by the lowering), the residual fan-out, and the fusion pass.
// The model is compiled exactly as dhxc does (elaborate → lower forward → derive backward →
// fuse), then the op list is run by a small f64 interpreter: GEMMs as plain double loops,
// kernels as the generated f64 variants of the very kernels the plan would launch. With
// random weights, the gradient of L = (1/positions) Σ losses with respect to every element
// of every parameter is compared with (L(p+h) - L(p-h)) / 2h:
//   max |grad - fd| / max |fd| < 1e-6   per parameter tensor.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"
#include "compile.h"
#include "elaborate.h"
#include "front.h"
#include "lower.h"

#define H 1e-5
#define TOL 1e-6

typedef struct interp {
  const dhx_graph *g;
  void **mem;            // per tensor: double[] (f32 tensors) or int32_t[] (i32 tensors)
  cgt cg;
} interp;

static size_t elem_size(const dhx_tensor *t) { return t->dtype == DHX_I32 ? 4 : 8; }

static void *ptr(interp *it, const dhx_operand *o) {
  const dhx_tensor *t = &it->g->tensors[o->tensor];
  CHECK(it->mem[o->tensor] != NULL, "tensor '%s' has no storage", t->name);
  return (char *)it->mem[o->tensor] + (size_t)o->elem * elem_size(t);
}

// C = alpha op(A) op(B) + beta C over both batch levels, in double.
static void gemm(interp *it, const dhx_lop *op) {
  const dhx_plan_gemm *g = op->gemm;
  const double *A0 = ptr(it, &op->args[0]), *B0 = ptr(it, &op->args[1]);
  double *C0 = ptr(it, &op->args[2]);
  for (int64_t b0 = 0; b0 < g->batch[0]; b0++)
    for (int64_t b1 = 0; b1 < g->batch[1]; b1++) {
      const double *A = A0 + b0 * g->stride_a[0] + b1 * g->stride_a[1];
      const double *B = B0 + b0 * g->stride_b[0] + b1 * g->stride_b[1];
      double *C = C0 + b0 * g->stride_c[0] + b1 * g->stride_c[1];
      for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->n; j++) {
          double s = 0;
          for (int64_t k = 0; k < g->k; k++) {
            double a = g->trans_a ? A[k * g->lda + i] : A[i * g->lda + k];
            double b = g->trans_b ? B[j * g->ldb + k] : B[k * g->ldb + j];
            s += a * b;
          }
          double *c = &C[i * g->ldc + j];
          *c = g->alpha * s + (g->beta != 0 ? g->beta * *c : 0);
        }
    }
}

static void kernel(interp *it, const dhx_lop *op) {
  dhx_kernel_spec s = dhx_lop_spec(op);
  s.type = DHX_KT_F64;
  dhx_slot args[DHX_MAX_ARGS];
  for (int j = 0; j < op->nargs; j++) {
    const dhx_operand *a = &op->args[j];
    switch (a->kind) {
      case DHX_ARG_BUF: args[j].p = ptr(it, a); break;
      case DHX_ARG_I64: args[j].i = a->i; break;
      case DHX_ARG_F64: args[j].f = a->f; break;
      default: CHECK(false, "register operand in '%s'", op->note);
    }
  }
  cgt_fn(&it->cg, &s)(args, 0, op->n);
}

static void run(interp *it, const dhx_oplist *l) {
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead) continue;
    switch (op->kind) {
      case DHX_L_GEMM: gemm(it, op); break;
      case DHX_L_KERNEL:
      case DHX_L_EW: kernel(it, op); break;
      default: CHECK(false, "unexpected op kind %d ('%s') in a single-rank micro-batch", op->kind, op->note);
    }
  }
}

static void add_kernels(interp *it, const dhx_oplist *l) {
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead || (op->kind != DHX_L_KERNEL && op->kind != DHX_L_EW)) continue;
    dhx_kernel_spec s = dhx_lop_spec(op);
    s.type = DHX_KT_F64;
    cgt_add(&it->cg, &s);
  }
}

static double loss(interp *it, const dhx_oplist *fwd, double scale) {
  run(it, fwd);
  const dhx_tensor *t = &it->g->tensors[it->g->losses];
  const double *v = it->mem[it->g->losses];
  double s = 0;
  for (int64_t i = 0; i < dhx_tensor_elems(t); i++) s += v[i];
  return s * scale;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_gradcheck MODEL.dhx STDLIB_DIR\n");
    return 2;
  }
  const char *dirs[] = {argv[2]};
  dhx_program *prog = dhx_load_program(argv[1], dirs, 1);
  CHECK(prog && dhx_diag.errors == 0, "cannot load %s", argv[1]);
  dhx_config cfg;
  CHECK(dhx_read_config(prog, &cfg) && cfg.model_inst, "%s: no model instance", argv[1]);

  dhx_graph g;
  dhx_graph_init(&g);
  CHECK(dhx_elaborate(prog, cfg.model_inst, cfg.micro_batch, &g), "elaboration failed");
  dhx_create_param_state(&g);
  double scale = 1.0 / ((double)cfg.micro_batch * g.seq);
  dhx_oplist micro = {0}, fwd = {0};
  dhx_lower_forward(&g, &micro);
  dhx_lower_backward(&g, &micro, scale);
  dhx_lower_forward(&g, &fwd);
  int fused = dhx_fuse_elementwise(&g, &micro);
  dhx_fuse_elementwise(&g, &fwd);

  interp it = {.g = &g};
  cgt_init(&it.cg);
  add_kernels(&it, &micro);
  add_kernels(&it, &fwd);
  cgt_build(&it.cg);

  // Storage and random values: weights around 0, norm gains around 1, token ids in range.
  rng_seed(7);
  it.mem = calloc((size_t)g.ntensors, sizeof(void *));
  for (int i = 0; i < g.ntensors; i++) {
    const dhx_tensor *t = &g.tensors[i];
    if (t->kind == DHX_T_OPT_M || t->kind == DHX_T_OPT_V || t->kind == DHX_T_VIEW ||
        t->kind == DHX_T_SCRATCH)
      continue;
    int64_t n = dhx_tensor_elems(t);
    it.mem[i] = calloc((size_t)(n ? n : 1), elem_size(t));
    CHECK(it.mem[i] != NULL, "out of memory");
    if (t->dtype == DHX_I32) {
      for (int64_t k = 0; k < n; k++) ((int32_t *)it.mem[i])[k] = rng_int(g.vocab);
    } else if (t->kind == DHX_T_PARAM) {
      double lo = t->init == DHX_INIT_ONES ? 0.5 : -0.5, hi = t->init == DHX_INIT_ONES ? 1.5 : 0.5;
      for (int64_t k = 0; k < n; k++) ((double *)it.mem[i])[k] = rng_uniform(lo, hi);
    }
  }

  run(&it, &micro);  // gradients accumulate into zeroed grad tensors
  int nparams = 0, nchecked = 0;
  double worst = 0;
  for (int i = 0; i < g.ntensors; i++) {
    const dhx_tensor *p = &g.tensors[i];
    if (p->kind != DHX_T_PARAM) continue;
    double *w = it.mem[i], *grad = it.mem[p->grad];
    int64_t n = dhx_tensor_elems(p);
    double maxfd = 0, maxerr = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < n; k++) {
      double save = w[k];
      w[k] = save + H;
      double lp = loss(&it, &fwd, scale);
      w[k] = save - H;
      double lm = loss(&it, &fwd, scale);
      w[k] = save;
      double fd = (lp - lm) / (2 * H);
      if (fabs(fd) > maxfd) maxfd = fabs(fd);
      if (fabs(fd - grad[k]) > maxerr) {
        maxerr = fabs(fd - grad[k]);
        at = k;
      }
    }
    double rel = maxerr / (maxfd > 1e-12 ? maxfd : 1e-12);
    if (rel > worst) worst = rel;
    if (rel > TOL)
      fprintf(stderr, "gradient of %s: element %lld: derived %.10g, finite difference differs by %.3g (max |fd| %.3g)\n",
              p->name, (long long)at, grad[at], maxerr, maxfd);
    CHECK(maxfd > 0, "parameter %s has a zero gradient everywhere (does it reach the loss?)", p->name);
    CHECK(rel <= TOL, "gradient of %s off by %.3g relative", p->name, rel);
    nparams++;
    nchecked += (int)n;
  }
  printf("%s: %d parameter tensors, %d elements, every gradient within %.1e of finite differences "
         "(worst %.2e); %d elementwise ops fused\n",
         argv[1], nparams, nchecked, TOL, worst, fused);

  for (int i = 0; i < g.ntensors; i++) free(it.mem[i]);
  free(it.mem);
  free(micro.ops);
  free(fwd.ops);
  cgt_done(&it.cg);
  dhx_graph_free(&g);
  dhx_program_free(prog);
  return 0;
}
