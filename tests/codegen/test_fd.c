// test_fd.c — every backward kernel against central finite differences of its forward kernel.
//
// In f64: for an objective L = sum(w * out) with random weights w, the backward kernel given
// dout = w must produce dL/dinput; the test perturbs each input element by ±h (h = 1e-6),
// reruns the generated forward kernel and compares (L+ - L-)/2h with the generated gradient:
// max |grad - fd| / max |fd| < 1e-6 per input tensor. Covered: embedding (table), layernorm
// (x, gamma, beta through the dx and dparams kernels), causal softmax, cross-entropy, GELU
// (the GELU_GRAD node against the GELU node), and a broadcast add (its table gradient is the
// column sum), RMSNorm (x, gamma), rotary embedding (its inverse rotation), SiLU, and the
// vocabulary-parallel embedding and cross-entropy (shards of the vocabulary, the forward summed
// or combined over them). AdamW is an update rule, not a differentiable op, so it is not here.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"

#define H 1e-6
#define TOL 1e-6

static cgt T;

static dhx_kernel_fn kfn(dhx_kernel_kind kind) {
  dhx_kernel_spec s = cgt_spec(kind, DHX_KT_F64);
  return cgt_fn(&T, &s);
}
static dhx_kernel_fn efn(dhx_kernel_spec s) { return cgt_fn(&T, &s); }

static double *vec(int64_t n, double lo, double hi) {
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  CHECK(v != NULL, "out of memory");
  for (int64_t i = 0; i < n; i++) v[i] = rng_uniform(lo, hi);
  return v;
}
static double wsum(const double *w, const double *out, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += w[i] * out[i];
  return s;
}

typedef double (*objective)(void *ctx);

static int nchecks;

// Compares grad with central differences of f over the n elements of x.
static void check(const char *what, double *x, int64_t n, const double *grad, objective f,
                  void *ctx) {
  double maxfd = 0, maxerr = 0;
  int64_t worst = 0;
  double *fd = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    double save = x[i];
    x[i] = save + H;
    double lp = f(ctx);
    x[i] = save - H;
    double lm = f(ctx);
    x[i] = save;
    fd[i] = (lp - lm) / (2 * H);
    if (fabs(fd[i]) > maxfd) maxfd = fabs(fd[i]);
  }
  for (int64_t i = 0; i < n; i++) {
    double e = fabs(grad[i] - fd[i]);
    if (e > maxerr) maxerr = e, worst = i;
  }
  double rel = maxerr / (maxfd > 0 ? maxfd : 1);
  printf("  %s %-34s n=%-4lld max|grad-fd|/max|fd| = %.2e\n", rel < TOL ? "ok  " : "FAIL", what,
         (long long)n, rel);
  CHECK(maxfd > 0, "%s: the objective does not depend on the input", what);
  CHECK(rel < TOL, "%s: element %lld: grad %.12g, finite difference %.12g", what,
        (long long)worst, grad[worst], fd[worst]);
  free(fd);
  nchecks++;
}

// ---- embedding ----
typedef struct emb {
  int rows, C, V;
  int32_t *tok;
  double *table, *out, *w;
} emb;

static double emb_obj(void *p) {
  emb *e = p;
  dhx_slot a[] = {{.p = e->out}, {.p = e->tok}, {.p = e->table}, {.i = e->C}};
  kfn(DHX_K_EMBED_FWD)(a, 0, e->rows);
  return wsum(e->w, e->out, (int64_t)e->rows * e->C);
}

static void test_embedding(void) {
  emb e = {.rows = 6, .C = 7, .V = 5};
  e.tok = malloc(sizeof(int32_t) * 6);
  for (int r = 0; r < e.rows; r++) e.tok[r] = rng_int(e.V);
  e.tok[4] = e.tok[2];  // a repeated token
  e.table = vec(e.V * e.C, -1, 1);
  e.out = vec(e.rows * e.C, 0, 0);
  e.w = vec(e.rows * e.C, -1, 1);
  double *dtable = calloc((size_t)(e.V * e.C), sizeof(double));
  dhx_slot a[] = {{.p = dtable}, {.p = e.tok}, {.p = e.w}, {.i = e.rows}, {.i = e.C}};
  kfn(DHX_K_EMBED_BWD)(a, 0, e.C);
  check("embedding: dtable", e.table, e.V * e.C, dtable, emb_obj, &e);
  free(e.tok), free(e.table), free(e.out), free(e.w), free(dtable);
}

// ---- layernorm ----
typedef struct ln {
  int rows, C;
  double eps;
  double *x, *g, *b, *out, *mean, *rstd, *w;
} ln;

static double ln_obj(void *p) {
  ln *l = p;
  dhx_slot a[] = {{.p = l->out}, {.p = l->mean}, {.p = l->rstd}, {.p = l->x},
                  {.p = l->g},   {.p = l->b},    {.i = l->C},    {.f = l->eps}};
  kfn(DHX_K_LAYERNORM_FWD)(a, 0, l->rows);
  return wsum(l->w, l->out, (int64_t)l->rows * l->C);
}

static void test_layernorm(void) {
  ln l = {.rows = 4, .C = 9, .eps = 1e-5};
  int64_t n = (int64_t)l.rows * l.C;
  l.x = vec(n, -2, 2);
  l.g = vec(l.C, 0.5, 1.5);
  l.b = vec(l.C, -0.5, 0.5);
  l.out = vec(n, 0, 0);
  l.mean = vec(l.rows, 0, 0);
  l.rstd = vec(l.rows, 0, 0);
  l.w = vec(n, -1, 1);
  ln_obj(&l);  // mean and rstd of the unperturbed x, as the backward reads them
  double *dx = vec(n, 0, 0), *dg = calloc((size_t)l.C, sizeof(double));
  double *db = calloc((size_t)l.C, sizeof(double));
  dhx_slot a[] = {{.p = dx},     {.p = l.w}, {.p = l.x}, {.p = l.mean},
                  {.p = l.rstd}, {.p = l.g}, {.i = l.C}, {.i = 0}};
  kfn(DHX_K_LAYERNORM_BWD_DX)(a, 0, l.rows);
  dhx_slot b[] = {{.p = dg},       {.p = db},     {.p = l.w},    {.p = l.x},
                  {.p = l.mean},   {.p = l.rstd}, {.i = l.rows}, {.i = l.C}};
  kfn(DHX_K_LAYERNORM_BWD_DPARAMS)(b, 0, l.C);
  check("layernorm: dx", l.x, n, dx, ln_obj, &l);
  check("layernorm: dgamma", l.g, l.C, dg, ln_obj, &l);
  check("layernorm: dbeta", l.b, l.C, db, ln_obj, &l);
  free(l.x), free(l.g), free(l.b), free(l.out), free(l.mean), free(l.rstd), free(l.w);
  free(dx), free(dg), free(db);
}

// ---- causal softmax ----
typedef struct sm {
  int rows, T;
  double scale;
  double *S, *P, *w;
} sm;

static double sm_obj(void *p) {
  sm *s = p;
  dhx_slot a[] = {{.p = s->P}, {.p = s->S}, {.i = s->T}, {.f = s->scale}};
  kfn(DHX_K_SOFTMAX_CAUSAL_FWD)(a, 0, s->rows);
  return wsum(s->w, s->P, (int64_t)s->rows * s->T);
}

static void test_softmax(void) {
  sm s = {.rows = 2 * 6, .T = 6, .scale = 0.6};
  int64_t n = (int64_t)s.rows * s.T;
  s.S = vec(n, -3, 3);
  s.P = vec(n, 0, 0);
  s.w = vec(n, -1, 1);
  sm_obj(&s);
  double *dS = vec(n, 0, 0);
  dhx_slot a[] = {{.p = dS}, {.p = s.w}, {.p = s.P}, {.i = s.T}, {.f = s.scale}};
  kfn(DHX_K_SOFTMAX_CAUSAL_BWD)(a, 0, s.rows);
  check("causal softmax: dS", s.S, n, dS, sm_obj, &s);
  free(s.S), free(s.P), free(s.w), free(dS);
}

// ---- cross-entropy ----
typedef struct xe {
  int rows, V;
  double scale;
  int32_t *tg;
  double *logits, *loss;
} xe;

static double xe_obj(void *p) {
  xe *x = p;
  dhx_slot a[] = {{.p = x->loss}, {.p = x->logits}, {.p = x->tg}, {.i = x->V}};
  kfn(DHX_K_XENT_FWD)(a, 0, x->rows);
  double s = 0;
  for (int r = 0; r < x->rows; r++) s += x->scale * x->loss[r];
  return s;
}

static void test_xent(void) {
  xe x = {.rows = 4, .V = 9, .scale = 0.25};
  x.tg = malloc(sizeof(int32_t) * 4);
  for (int r = 0; r < x.rows; r++) x.tg[r] = rng_int(x.V);
  x.logits = vec(x.rows * x.V, -3, 3);
  x.loss = vec(x.rows, 0, 0);
  double *dl = vec(x.rows * x.V, 0, 0);
  dhx_slot a[] = {{.p = dl}, {.p = x.logits}, {.p = x.tg}, {.i = x.V}, {.f = x.scale}};
  kfn(DHX_K_XENT_BWD)(a, 0, x.rows);
  check("cross-entropy: dlogits", x.logits, x.rows * x.V, dl, xe_obj, &x);
  free(x.tg), free(x.logits), free(x.loss), free(dl);
}

// ---- vocabulary-parallel embedding: the output is the sum of P shards' EMBED_VP_FWD ----
typedef struct embvp {
  int rows, C, Vl, P;
  int32_t *tok;
  double *table, *out, *part, *w;
} embvp;

static double embvp_obj(void *p) {
  embvp *e = p;
  int64_t rc = (int64_t)e->rows * e->C;
  for (int64_t i = 0; i < rc; i++) e->out[i] = 0;
  for (int s = 0; s < e->P; s++) {
    dhx_slot a[] = {{.p = e->part}, {.p = e->tok}, {.p = e->table + (int64_t)s * e->Vl * e->C},
                    {.i = e->C}, {.i = (int64_t)s * e->Vl}, {.i = e->Vl}};
    kfn(DHX_K_EMBED_VP_FWD)(a, 0, e->rows);
    for (int64_t i = 0; i < rc; i++) e->out[i] += e->part[i];
  }
  return wsum(e->w, e->out, rc);
}

static void test_embedding_vp(void) {
  embvp e = {.rows = 7, .C = 6, .Vl = 3, .P = 2};
  int V = e.Vl * e.P;
  e.tok = malloc(sizeof(int32_t) * 7);
  for (int r = 0; r < e.rows; r++) e.tok[r] = rng_int(V);
  e.tok[0] = 1, e.tok[1] = 4, e.tok[3] = e.tok[1];  // both shards, a repeated token
  e.tok[5] = -1, e.tok[6] = V;                      // in no shard
  e.table = vec(V * e.C, -1, 1);
  e.out = vec(e.rows * e.C, 0, 0);
  e.part = vec(e.rows * e.C, 0, 0);
  e.w = vec(e.rows * e.C, -1, 1);
  double *dtable = calloc((size_t)(V * e.C), sizeof(double));
  for (int s = 0; s < e.P; s++) {
    dhx_slot a[] = {{.p = dtable + (int64_t)s * e.Vl * e.C}, {.p = e.tok}, {.p = e.w},
                    {.i = e.rows}, {.i = e.C}, {.i = (int64_t)s * e.Vl}, {.i = e.Vl}};
    kfn(DHX_K_EMBED_VP_BWD)(a, 0, e.C);
  }
  check("vocab-parallel embedding: dtable", e.table, V * e.C, dtable, embvp_obj, &e);
  free(e.tok), free(e.table), free(e.out), free(e.part), free(e.w), free(dtable);
}

// ---- vocabulary-parallel cross-entropy: STATS per shard, COMBINE; XENT_VP_BWD per shard ----
typedef struct xevp {
  int rows, Vl, P, K;
  double scale;
  int32_t *tg;
  double *lg, *parts, *loss, *lse;  // lg: P shards of [rows, Vl]
} xevp;

static double xevp_obj(void *p) {
  xevp *x = p;
  for (int s = 0; s < x->P; s++) {
    dhx_slot a[] = {{.p = x->parts + (int64_t)s * x->K * x->rows},
                    {.p = x->lg + (int64_t)s * x->rows * x->Vl}, {.p = x->tg}, {.i = x->Vl},
                    {.i = (int64_t)s * x->Vl}, {.i = x->K}, {.i = x->rows}};
    kfn(DHX_K_XENT_VP_STATS)(a, 0, x->rows);
  }
  dhx_slot c[] = {{.p = x->loss}, {.p = x->lse}, {.p = x->parts}, {.p = x->tg},
                  {.i = (int64_t)x->P * x->K}, {.i = x->rows}, {.i = x->K},
                  {.i = (int64_t)x->P * x->Vl}};
  kfn(DHX_K_XENT_VP_COMBINE)(c, 0, x->rows);
  double s = 0;
  for (int r = 0; r < x->rows; r++) s += x->scale * x->loss[r];
  return s;
}

static void test_xent_vp(void) {
  xevp x = {.rows = 5, .Vl = 4, .P = 3, .K = 4, .scale = 0.2};
  int64_t n = (int64_t)x.P * x.rows * x.Vl;
  x.tg = malloc(sizeof(int32_t) * 5);
  for (int r = 0; r < x.rows; r++) x.tg[r] = (r % x.P) * x.Vl + rng_int(x.Vl);
  x.lg = vec(n, -3, 3);
  x.parts = vec((int64_t)x.P * x.K * x.rows, 0, 0);
  x.loss = vec(x.rows, 0, 0);
  x.lse = vec(x.rows, 0, 0);
  xevp_obj(&x);  // lse of the unperturbed logits, as the backward reads it
  double *dl = vec(n, 0, 0);
  for (int s = 0; s < x.P; s++) {
    int64_t off = (int64_t)s * x.rows * x.Vl;
    dhx_slot a[] = {{.p = dl + off}, {.p = x.lg + off}, {.p = x.lse}, {.p = x.tg}, {.i = x.Vl},
                    {.i = (int64_t)s * x.Vl}, {.f = x.scale}};
    kfn(DHX_K_XENT_VP_BWD)(a, 0, x.rows);
  }
  check("vocab-parallel cross-entropy: dlogits", x.lg, n, dl, xevp_obj, &x);
  free(x.tg), free(x.lg), free(x.parts), free(x.loss), free(x.lse), free(dl);
}

// ---- GELU (fused elementwise) ----
typedef struct ge {
  int64_t n;
  double *x, *out, *w;
} ge;

static double ge_obj(void *p) {
  ge *g = p;
  dhx_slot a[] = {{.p = g->out}, {.p = g->x}};
  efn(spec_unary(DHX_KT_F64, DHX_EW_GELU))(a, 0, g->n);
  return wsum(g->w, g->out, g->n);
}

static void test_gelu(void) {
  ge g = {.n = 60};
  g.x = vec(g.n, -5, 5);
  g.x[0] = 0, g.x[1] = -0.75, g.x[2] = 1e-3;
  g.out = vec(g.n, 0, 0);
  g.w = vec(g.n, -1, 1);
  double *dx = vec(g.n, 0, 0);
  dhx_slot a[] = {{.p = dx}, {.p = g.x}, {.p = g.w}};
  efn(spec_gelu_grad(DHX_KT_F64, false))(a, 0, g.n);
  check("gelu: dx (GELU_GRAD node)", g.x, g.n, dx, ge_obj, &g);
  free(g.x), free(g.out), free(g.w), free(dx);
}

// ---- broadcast add: out = x + wpe[i % TC]; dwpe = colsum(dout), dx = dout ----
typedef struct ba {
  int B, TC;
  double *x, *wpe, *out, *w;
} ba;

static double ba_obj(void *p) {
  ba *b = p;
  dhx_slot a[] = {{.p = b->out}, {.p = b->x}, {.p = b->wpe}};
  efn(spec_pos_add(DHX_KT_F64, b->TC))(a, 0, (int64_t)b->B * b->TC);
  return wsum(b->w, b->out, (int64_t)b->B * b->TC);
}

static void test_broadcast(void) {
  ba b = {.B = 3, .TC = 5 * 7};
  int64_t n = (int64_t)b.B * b.TC;
  b.x = vec(n, -1, 1);
  b.wpe = vec(b.TC, -1, 1);
  b.out = vec(n, 0, 0);
  b.w = vec(n, -1, 1);
  double *dw = vec(b.TC, 5, 6);  // overwritten: accumulate = 0
  dhx_slot a[] = {{.p = dw}, {.p = b.w}, {.i = b.B}, {.i = b.TC}, {.i = 0}};
  kfn(DHX_K_COLSUM)(a, 0, b.TC);
  check("broadcast add: dwpe (colsum)", b.wpe, b.TC, dw, ba_obj, &b);
  check("broadcast add: dx (pass-through)", b.x, n, b.w, ba_obj, &b);
  free(b.x), free(b.wpe), free(b.out), free(b.w), free(dw);
}

// ---- rmsnorm ----
typedef struct rms {
  int rows, C;
  double eps;
  double *x, *g, *out, *rstd, *w;
} rms;

static double rms_obj(void *p) {
  rms *l = p;
  dhx_slot a[] = {{.p = l->out}, {.p = l->rstd}, {.p = l->x}, {.p = l->g}, {.i = l->C},
                  {.f = l->eps}};
  kfn(DHX_K_RMSNORM_FWD)(a, 0, l->rows);
  return wsum(l->w, l->out, (int64_t)l->rows * l->C);
}

static void test_rmsnorm(void) {
  rms l = {.rows = 4, .C = 9, .eps = 1e-5};
  int64_t n = (int64_t)l.rows * l.C;
  l.x = vec(n, -2, 2);
  l.g = vec(l.C, 0.5, 1.5);
  l.out = vec(n, 0, 0);
  l.rstd = vec(l.rows, 0, 0);
  l.w = vec(n, -1, 1);
  rms_obj(&l);
  double *dx = vec(n, 0, 0), *dg = calloc((size_t)l.C, sizeof(double));
  dhx_slot a[] = {{.p = dx}, {.p = l.w}, {.p = l.x}, {.p = l.rstd}, {.p = l.g}, {.i = l.C}, {.i = 0}};
  kfn(DHX_K_RMSNORM_BWD_DX)(a, 0, l.rows);
  dhx_slot b[] = {{.p = dg}, {.p = l.w}, {.p = l.x}, {.p = l.rstd}, {.i = l.rows}, {.i = l.C}};
  kfn(DHX_K_RMSNORM_BWD_DGAMMA)(b, 0, l.C);
  check("rmsnorm: dx", l.x, n, dx, rms_obj, &l);
  check("rmsnorm: dgamma", l.g, l.C, dg, rms_obj, &l);
  free(l.x), free(l.g), free(l.out), free(l.rstd), free(l.w), free(dx), free(dg);
}

// ---- rotary embedding: the backward is the same kernel with sign -1 ----
typedef struct rp {
  int rows, S, D, hs;
  double *x, *out, *w;
} rp;

static double rope_obj(void *p) {
  rp *r = p;
  dhx_slot a[] = {{.p = r->out}, {.p = r->x}, {.i = r->S}, {.i = r->D}, {.i = r->hs},
                  {.f = 10000}, {.f = 1}};
  kfn(DHX_K_ROPE)(a, 0, (int64_t)r->rows * r->D / 2);
  return wsum(r->w, r->out, (int64_t)r->rows * r->D);
}

static void test_rope(void) {
  rp r = {.rows = 10, .S = 5, .D = 12, .hs = 4};
  int64_t n = (int64_t)r.rows * r.D;
  r.x = vec(n, -1, 1);
  r.out = vec(n, 0, 0);
  r.w = vec(n, -1, 1);
  double *dx = vec(n, 0, 0);
  dhx_slot a[] = {{.p = dx}, {.p = r.w}, {.i = r.S}, {.i = r.D}, {.i = r.hs}, {.f = 10000}, {.f = -1}};
  kfn(DHX_K_ROPE)(a, 0, n / 2);
  check("rope: dx (inverse rotation)", r.x, n, dx, rope_obj, &r);
  free(r.x), free(r.out), free(r.w), free(dx);
}

// ---- SiLU (fused elementwise) ----
static double silu_obj(void *p) {
  ge *g = p;
  dhx_slot a[] = {{.p = g->out}, {.p = g->x}};
  efn(spec_unary(DHX_KT_F64, DHX_EW_SILU))(a, 0, g->n);
  return wsum(g->w, g->out, g->n);
}

static void test_silu(void) {
  ge g = {.n = 60};
  g.x = vec(g.n, -8, 8);
  g.x[0] = 0, g.x[1] = -1.2785, g.x[2] = 1e-3;
  g.out = vec(g.n, 0, 0);
  g.w = vec(g.n, -1, 1);
  double *dx = vec(g.n, 0, 0);
  dhx_slot a[] = {{.p = dx}, {.p = g.x}, {.p = g.w}};
  efn(spec_silu_grad(DHX_KT_F64, false))(a, 0, g.n);
  check("silu: dx (SILU_GRAD node)", g.x, g.n, dx, silu_obj, &g);
  free(g.x), free(g.out), free(g.w), free(dx);
}

int main(void) {
  rng_seed(5);
  cgt_init(&T);
  cgt_add_all(&T, DHX_KT_F64);
  cgt_build(&T);
  test_embedding();
  test_layernorm();
  test_softmax();
  test_xent();
  test_embedding_vp();
  test_xent_vp();
  test_gelu();
  test_broadcast();
  test_rmsnorm();
  test_rope();
  test_silu();
  cgt_done(&T);
  printf("%d gradients match finite differences\n", nchecks);
  return 0;
}
