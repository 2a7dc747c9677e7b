// test_reference.c — every generated kernel against a plain C reference in double precision.
//
// `test_cg_reference f32|f64` builds kernels.so with every catalogue kind and several fused
// elementwise specs (broadcast inputs, several outputs, accumulation, scalars, every op),
// loads it, and runs each kernel on random inputs of odd sizes (rows 7, C 37, T 5, ... so
// vector loops have remainders). Each kernel runs twice from the same inputs: over [0, n) in
// one call and over uneven pieces (including a one-index and an empty range), as the
// runtime's threads would split it; the two results must be bitwise identical (the index-range
// contract, and determinism whatever the thread count). The result is then compared with the
// reference: |got - ref| <= rtol (|ref| + max|ref|), rtol 1e-5 for f32 and 1e-12 for f64.
// In-place cases (softmax over its scores, the loss gradient over the logits, an elementwise
// output over its input) run with the aliasing the catalogue allows. The vocabulary-parallel
// kernels also run over P shards of a vocabulary and are compared with the whole-vocabulary
// kernels on the same data.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_test.h"

static dhx_ktype TY;
static size_t ES;     // element size
static double RTOL;
static cgt T;
static int nchecks;

// ---- buffers: a reference copy in double and the kernel's copy in its dtype ----

typedef struct buf {
  int64_t n;
  double *r;
  void *d;
} buf;

static double rnd(double v) { return TY == DHX_KT_F32 ? (double)(float)v : v; }

static buf bnew(int64_t n) {
  buf b = {n, calloc((size_t)n + 1, sizeof(double)), calloc((size_t)n + 1, ES)};
  CHECK(b.r && b.d, "out of memory");
  return b;
}
static void bfree(buf *b) {
  free(b->r);
  free(b->d);
}
static double dget(const buf *b, int64_t i) {
  return TY == DHX_KT_F32 ? (double)((float *)b->d)[i] : ((double *)b->d)[i];
}
static void bset(buf *b, int64_t i, double v) {
  v = rnd(v);
  b->r[i] = v;
  if (TY == DHX_KT_F32) ((float *)b->d)[i] = (float)v;
  else ((double *)b->d)[i] = v;
}
static void brand(buf *b, double lo, double hi) {
  for (int64_t i = 0; i < b->n; i++) bset(b, i, rng_uniform(lo, hi));
}
static void bcopy_dev(buf *dst, const buf *src) {  // the device copy of src into dst (same n)
  memcpy(dst->d, src->d, (size_t)src->n * ES);
  memcpy(dst->r, src->r, (size_t)src->n * sizeof(double));
}
static int32_t *tokens(int n, int V) {
  int32_t *t = malloc(sizeof(int32_t) * (size_t)n);
  CHECK(t != NULL, "out of memory");
  for (int i = 0; i < n; i++) t[i] = rng_int(V);
  return t;
}

static void expect_close(const char *what, const buf *b, const double *ref, int64_t n) {
  double maxabs = 0, worst = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(ref[i]) && fabs(ref[i]) > maxabs) maxabs = fabs(ref[i]);
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    double got = dget(b, i);
    if (isnan(ref[i])) {
      if (!isnan(got) && bad++ < 5) fprintf(stderr, "  %s[%lld] = %.17g, want NaN\n", what,
                                            (long long)i, got);
      continue;
    }
    double err = fabs(got - ref[i]), tol = RTOL * (fabs(ref[i]) + maxabs);
    if (!(err <= tol)) {
      if (bad++ < 5)
        fprintf(stderr, "  %s[%lld] = %.17g, want %.17g (err %.3g, tol %.3g)\n", what,
                (long long)i, got, ref[i], err, tol);
    }
    double rel = err / (fabs(ref[i]) + maxabs + 1e-300);
    if (rel > worst) worst = rel;
  }
  CHECK(bad == 0, "%s: %d of %lld elements differ from the reference", what, bad, (long long)n);
  printf("  ok %-44s n=%-5lld worst err/(|ref|+max|ref|) = %.2e\n", what, (long long)n, worst);
  nchecks++;
}

// Runs fn over [0, n) in one call and, from the same starting contents of bufs, in uneven
// pieces; requires bitwise equal results. Leaves bufs holding the result.
static void run(const char *what, dhx_kernel_fn fn, const dhx_slot *a, int64_t n, buf **bufs,
                int nb) {
  void *start[16], *whole[16];
  for (int i = 0; i < nb; i++) {
    size_t sz = (size_t)bufs[i]->n * ES;
    start[i] = malloc(sz + 1);
    whole[i] = malloc(sz + 1);
    memcpy(start[i], bufs[i]->d, sz);
  }
  fn(a, 0, n);
  for (int i = 0; i < nb; i++) memcpy(whole[i], bufs[i]->d, (size_t)bufs[i]->n * ES);
  for (unsigned seed = 1; seed <= 2; seed++) {
    for (int i = 0; i < nb; i++) memcpy(bufs[i]->d, start[i], (size_t)bufs[i]->n * ES);
    cgt_run_split(fn, a, n, 3 + (int)seed, seed);
    for (int i = 0; i < nb; i++)
      CHECK(memcmp(whole[i], bufs[i]->d, (size_t)bufs[i]->n * ES) == 0,
            "%s: buffer %d differs between one call and split ranges", what, i);
  }
  for (int i = 0; i < nb; i++) {
    free(start[i]);
    free(whole[i]);
  }
}

static dhx_kernel_fn fn_of(dhx_kernel_kind kind) {
  dhx_kernel_spec s = cgt_spec(kind, TY);
  return cgt_fn(&T, &s);
}

#define P(b) ((dhx_slot){.p = (b).d})
#define I(v) ((dhx_slot){.i = (v)})
#define F(v) ((dhx_slot){.f = (v)})

// ---- catalogue kernels ----

static void test_embed(int rows, int C, int V) {
  int32_t *tok = tokens(rows, V);
  if (rows > 3) tok[3] = tok[1];  // a repeated token: its gradient rows add up
  buf table = bnew((int64_t)V * C), out = bnew((int64_t)rows * C);
  brand(&table, -1, 1);
  brand(&out, 50, 60);
  double *ref = malloc(sizeof(double) * (size_t)rows * C);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < C; c++) ref[r * C + c] = table.r[tok[r] * C + c];
  dhx_slot a[] = {P(out), {.p = tok}, P(table), I(C)};
  run("embed_fwd", fn_of(DHX_K_EMBED_FWD), a, rows, (buf *[]){&out, &table}, 2);
  char what[64];
  snprintf(what, sizeof what, "embed_fwd rows=%d C=%d", rows, C);
  expect_close(what, &out, ref, (int64_t)rows * C);
  free(ref);

  buf dtable = bnew((int64_t)V * C), dout = bnew((int64_t)rows * C);
  brand(&dtable, -1, 1);
  brand(&dout, -1, 1);
  ref = malloc(sizeof(double) * (size_t)V * C);
  memcpy(ref, dtable.r, sizeof(double) * (size_t)V * C);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < C; c++) ref[tok[r] * C + c] += dout.r[r * C + c];
  dhx_slot b[] = {P(dtable), {.p = tok}, P(dout), I(rows), I(C)};
  run("embed_bwd", fn_of(DHX_K_EMBED_BWD), b, C, (buf *[]){&dtable, &dout}, 2);
  snprintf(what, sizeof what, "embed_bwd rows=%d C=%d", rows, C);
  expect_close(what, &dtable, ref, (int64_t)V * C);
  free(ref);
  bfree(&table), bfree(&out), bfree(&dtable), bfree(&dout);
  free(tok);
}

static void ln_stats(const double *x, int rows, int C, double eps, double *mean, double *rstd) {
  for (int r = 0; r < rows; r++) {
    double s = 0, v = 0;
    for (int c = 0; c < C; c++) s += x[r * C + c];
    double m = s / C;
    for (int c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    mean[r] = m;
    rstd[r] = 1.0 / sqrt(v / C + eps);
  }
}

static void test_layernorm(int rows, int C) {
  const double eps = 1e-5;
  int64_t n = (int64_t)rows * C;
  buf out = bnew(n), mean = bnew(rows), rstd = bnew(rows), x = bnew(n), g = bnew(C), be = bnew(C);
  brand(&x, 2, 4);  // a large mean: the variance must not come from E[x^2] - E[x]^2
  brand(&g, 0.5, 1.5);
  brand(&be, -0.5, 0.5);
  brand(&out, 9, 10);
  double *rm = malloc(sizeof(double) * rows), *rr = malloc(sizeof(double) * rows);
  double *ref = malloc(sizeof(double) * (size_t)n);
  ln_stats(x.r, rows, C, eps, rm, rr);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < C; c++)
      ref[r * C + c] = (x.r[r * C + c] - rm[r]) * rr[r] * g.r[c] + be.r[c];
  dhx_slot a[] = {P(out), P(mean), P(rstd), P(x), P(g), P(be), I(C), F(eps)};
  run("layernorm_fwd", fn_of(DHX_K_LAYERNORM_FWD), a, rows, (buf *[]){&out, &mean, &rstd, &x}, 4);
  char what[80];
  snprintf(what, sizeof what, "layernorm_fwd out rows=%d C=%d", rows, C);
  expect_close(what, &out, ref, n);
  expect_close("layernorm_fwd mean", &mean, rm, rows);
  expect_close("layernorm_fwd rstd", &rstd, rr, rows);

  // Backward, from the statistics as stored (rounded to the dtype).
  for (int r = 0; r < rows; r++) {
    bset(&mean, r, rm[r]);
    bset(&rstd, r, rr[r]);
  }
  buf dout = bnew(n), dx = bnew(n);
  brand(&dout, -1, 1);
  for (int acc = 0; acc <= 1; acc++) {
    brand(&dx, -1, 1);
    for (int r = 0; r < rows; r++) {
      double sg = 0, sgx = 0, mu = mean.r[r], rs = rstd.r[r];
      for (int c = 0; c < C; c++) {
        double gg = dout.r[r * C + c] * g.r[c], xh = (x.r[r * C + c] - mu) * rs;
        sg += gg;
        sgx += gg * xh;
      }
      for (int c = 0; c < C; c++) {
        double gg = dout.r[r * C + c] * g.r[c], xh = (x.r[r * C + c] - mu) * rs;
        double v = rs * (gg - sg / C - xh * sgx / C);
        ref[r * C + c] = acc ? dx.r[r * C + c] + v : v;
      }
    }
    dhx_slot b[] = {P(dx), P(dout), P(x), P(mean), P(rstd), P(g), I(C), I(acc)};
    run("layernorm_bwd_dx", fn_of(DHX_K_LAYERNORM_BWD_DX), b, rows, (buf *[]){&dx, &dout}, 2);
    snprintf(what, sizeof what, "layernorm_bwd_dx rows=%d C=%d acc=%d", rows, C, acc);
    expect_close(what, &dx, ref, n);
  }

  buf dg = bnew(C), db = bnew(C);
  brand(&dg, -1, 1);
  brand(&db, -1, 1);
  double *rg = malloc(sizeof(double) * C), *rb = malloc(sizeof(double) * C);
  for (int c = 0; c < C; c++) {
    rg[c] = dg.r[c];
    rb[c] = db.r[c];
    for (int r = 0; r < rows; r++) {
      rg[c] += dout.r[r * C + c] * (x.r[r * C + c] - mean.r[r]) * rstd.r[r];
      rb[c] += dout.r[r * C + c];
    }
  }
  dhx_slot d[] = {P(dg), P(db), P(dout), P(x), P(mean), P(rstd), I(rows), I(C)};
  run("layernorm_bwd_dparams", fn_of(DHX_K_LAYERNORM_BWD_DPARAMS), d, C, (buf *[]){&dg, &db}, 2);
  snprintf(what, sizeof what, "layernorm_bwd_dparams dgamma rows=%d C=%d", rows, C);
  expect_close(what, &dg, rg, C);
  snprintf(what, sizeof what, "layernorm_bwd_dparams dbeta rows=%d C=%d", rows, C);
  expect_close(what, &db, rb, C);
  free(rm), free(rr), free(ref), free(rg), free(rb);
  bfree(&out), bfree(&mean), bfree(&rstd), bfree(&x), bfree(&g), bfree(&be), bfree(&dout);
  bfree(&dx), bfree(&dg), bfree(&db);
}

static void softmax_ref(const double *S, int rows, int T_, double scale, double *P) {
  for (int r = 0; r < rows; r++) {
    int t = r % T_;
    double m = -INFINITY, s = 0;
    for (int j = 0; j <= t; j++) m = fmax(m, scale * S[r * T_ + j]);
    for (int j = 0; j <= t; j++) s += exp(scale * S[r * T_ + j] - m);
    for (int j = 0; j < T_; j++) P[r * T_ + j] = j <= t ? exp(scale * S[r * T_ + j] - m) / s : 0;
  }
}

static void test_softmax(int bh, int T_) {
  const double scale = 0.37;
  int rows = bh * T_;
  int64_t n = (int64_t)rows * T_;
  double *ref = malloc(sizeof(double) * (size_t)n);
  char what[80];
  for (int inplace = 0; inplace <= 1; inplace++) {
    buf S = bnew(n), Pb = bnew(n);
    brand(&S, -6, 6);
    brand(&Pb, 7, 8);
    softmax_ref(S.r, rows, T_, scale, ref);
    buf *out = inplace ? &S : &Pb;
    dhx_slot a[] = {P(*out), P(S), I(T_), F(scale)};
    run("softmax_causal_fwd", fn_of(DHX_K_SOFTMAX_CAUSAL_FWD), a, rows, (buf *[]){&S, &Pb}, 2);
    snprintf(what, sizeof what, "softmax_causal_fwd rows=%d T=%d%s", rows, T_,
             inplace ? " in place" : "");
    expect_close(what, out, ref, n);
    bfree(&S), bfree(&Pb);
  }
  // Backward from valid probabilities; dP has garbage in the masked part, which must not leak.
  buf S = bnew(n), Pr = bnew(n);
  brand(&S, -6, 6);
  softmax_ref(S.r, rows, T_, scale, Pr.r);
  for (int64_t i = 0; i < n; i++) bset(&Pr, i, Pr.r[i]);
  for (int inplace = 0; inplace <= 1; inplace++) {
    buf dP = bnew(n), dS = bnew(n);
    brand(&dP, -1, 1);
    brand(&dS, 7, 8);
    for (int r = 0; r < rows; r++) {
      int t = r % T_;
      double dot = 0;
      for (int j = 0; j <= t; j++) dot += Pr.r[r * T_ + j] * dP.r[r * T_ + j];
      for (int j = 0; j < T_; j++)
        ref[r * T_ + j] = j <= t ? scale * Pr.r[r * T_ + j] * (dP.r[r * T_ + j] - dot) : 0;
    }
    buf *out = inplace ? &dP : &dS;
    dhx_slot a[] = {P(*out), P(dP), P(Pr), I(T_), F(scale)};
    run("softmax_causal_bwd", fn_of(DHX_K_SOFTMAX_CAUSAL_BWD), a, rows, (buf *[]){&dP, &dS}, 2);
    snprintf(what, sizeof what, "softmax_causal_bwd rows=%d T=%d%s", rows, T_,
             inplace ? " in place" : "");
    expect_close(what, out, ref, n);
    bfree(&dP), bfree(&dS);
  }
  // A NaN score makes its row NaN (j <= t) and leaves the other rows alone.
  brand(&S, -6, 6);
  int r0 = T_ > 1 ? T_ - 1 : 0;  // a row with keys 0..T-1
  bset(&S, (int64_t)r0 * T_, NAN);
  buf Pn = bnew(n);
  dhx_slot a[] = {P(Pn), P(S), I(T_), F(scale)};
  fn_of(DHX_K_SOFTMAX_CAUSAL_FWD)(a, 0, rows);
  for (int j = 0; j < T_; j++) CHECK(isnan(dget(&Pn, (int64_t)r0 * T_ + j)), "softmax: no NaN");
  if (rows > 1) CHECK(!isnan(dget(&Pn, (int64_t)(r0 == 0 ? 1 : 0) * T_)), "softmax: NaN leaked");
  bfree(&Pn);
  bfree(&S), bfree(&Pr);
  free(ref);
}

static void test_xent(int rows, int V) {
  int32_t *tg = tokens(rows, V);
  int64_t n = (int64_t)rows * V;
  const double scale = 1.0 / rows;
  buf logits = bnew(n), loss = bnew(rows);
  brand(&logits, -4, 4);
  brand(&loss, 5, 6);
  double *ref = malloc(sizeof(double) * (size_t)n), *lse = malloc(sizeof(double) * rows);
  for (int r = 0; r < rows; r++) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < V; j++) m = fmax(m, logits.r[r * V + j]);
    for (int j = 0; j < V; j++) s += exp(logits.r[r * V + j] - m);
    lse[r] = m + log(s);
  }
  char what[80];
  for (int invalid = 0; invalid <= 1; invalid++) {
    // The second round puts out-of-range targets in two rows: NaN loss, no one-hot term.
    if (invalid) tg[1] = V, tg[rows - 1] = -1;
    for (int r = 0; r < rows; r++) {
      bool ok = tg[r] >= 0 && tg[r] < V;
      ref[r] = ok ? lse[r] - logits.r[r * V + tg[r]] : NAN;
    }
    dhx_slot a[] = {P(loss), P(logits), {.p = tg}, I(V)};
    run("xent_fwd", fn_of(DHX_K_XENT_FWD), a, rows, (buf *[]){&loss, &logits}, 2);
    snprintf(what, sizeof what, "xent_fwd rows=%d V=%d%s", rows, V, invalid ? " bad targets" : "");
    expect_close(what, &loss, ref, rows);

    for (int inplace = 0; inplace <= 1; inplace++) {
      buf lg = bnew(n), dl = bnew(n);
      bcopy_dev(&lg, &logits);
      brand(&dl, 7, 8);
      for (int r = 0; r < rows; r++)
        for (int j = 0; j < V; j++)
          ref[r * V + j] = scale * (exp(logits.r[r * V + j] - lse[r]) - (j == tg[r]));
      buf *out = inplace ? &lg : &dl;
      dhx_slot b[] = {P(*out), P(lg), {.p = tg}, I(V), F(scale)};
      run("xent_bwd", fn_of(DHX_K_XENT_BWD), b, rows, (buf *[]){&lg, &dl}, 2);
      snprintf(what, sizeof what, "xent_bwd rows=%d V=%d%s%s", rows, V,
               inplace ? " in place" : "", invalid ? " bad targets" : "");
      expect_close(what, out, ref, n);
      bfree(&lg), bfree(&dl);
    }
  }
  // A NaN logit must surface as a NaN loss (the max reduction is vectorised with nnan; the
  // sum of exp() still carries the NaN) and as NaN gradients for that row only.
  for (int r = 0; r < rows; r++) tg[r] = rng_int(V);
  bset(&logits, 2 * V + V / 2, NAN);
  for (int r = 0; r < rows; r++) ref[r] = r == 2 ? NAN : lse[r] - logits.r[r * V + tg[r]];
  dhx_slot a[] = {P(loss), P(logits), {.p = tg}, I(V)};
  fn_of(DHX_K_XENT_FWD)(a, 0, rows);
  snprintf(what, sizeof what, "xent_fwd rows=%d V=%d NaN logit", rows, V);
  expect_close(what, &loss, ref, rows);
  buf dl = bnew(n);
  dhx_slot b[] = {P(dl), P(logits), {.p = tg}, I(V), F(scale)};
  fn_of(DHX_K_XENT_BWD)(b, 0, rows);
  for (int j = 0; j < V; j++) CHECK(isnan(dget(&dl, 2 * V + j)), "xent_bwd: no NaN at %d", j);
  for (int j = 0; j < V; j++) CHECK(!isnan(dget(&dl, 1 * V + j)), "xent_bwd: NaN leaked");
  bfree(&dl);
  free(ref), free(lse), free(tg);
  bfree(&logits), bfree(&loss);
}

// ---- vocabulary-parallel embedding and cross-entropy ----
// A vocabulary of V = P·Vl ids split into P shards (shard s holds ids [s·Vl, (s+1)·Vl)): each
// kernel against the double reference, and the shards together against the whole-vocabulary
// kernels (EMBED_FWD/BWD, XENT_FWD/BWD). Ids outside the vocabulary and shards with extreme lo
// (where id - lo overflows i64) must contribute nothing.

static bool in_shard(int64_t id, int64_t lo, int64_t n, int64_t *row) {
  int64_t d;
  if (id < lo || __builtin_sub_overflow(id, lo, &d) || d >= n) return false;
  *row = d;
  return true;
}
// A pointer to element `off` of b's kernel copy.
static dhx_slot PO(const buf *b, int64_t off) { return (dhx_slot){.p = (char *)b->d + off * ES}; }

static const int64_t FAR_LO[] = {-2, INT64_MIN, INT64_MIN + 1, INT64_MAX - 1, INT64_MAX};

static void test_embed_vp(int rows, int C, int Vl, int P_) {
  int V = Vl * P_, nfar = (int)(sizeof FAR_LO / sizeof FAR_LO[0]);
  CHECK(rows >= P_ + 4, "test_embed_vp: rows %d < P + 4", rows);
  int32_t *tok = tokens(rows, V);
  for (int s = 0; s < P_; s++) tok[s] = s * Vl + rng_int(Vl);  // a token in every shard
  tok[P_] = tok[0];                                            // a repeated token
  tok[rows - 1] = -1, tok[rows - 2] = V, tok[rows - 3] = INT32_MIN;  // in no shard
  int64_t rc = (int64_t)rows * C;
  buf table = bnew((int64_t)V * C), outs = bnew((P_ + nfar) * rc);
  brand(&table, -1, 1);
  brand(&outs, 50, 60);  // overwritten, with zeros where the token is not in the shard
  double *ref = malloc(sizeof(double) * (size_t)((P_ + nfar) * rc));
  dhx_kernel_fn fwd = fn_of(DHX_K_EMBED_VP_FWD);
  for (int s = 0; s < P_ + nfar; s++) {  // the P shards, then far shards over table rows 0..Vl-1
    int64_t lo = s < P_ ? (int64_t)s * Vl : FAR_LO[s - P_], toff = s < P_ ? lo * C : 0, row;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < C; c++)
        ref[s * rc + r * C + c] = in_shard(tok[r], lo, Vl, &row) ? table.r[toff + row * C + c] : 0;
    dhx_slot a[] = {PO(&outs, s * rc), {.p = tok}, PO(&table, toff), I(C), I(lo), I(Vl)};
    run("embed_vp_fwd", fwd, a, rows, (buf *[]){&outs, &table}, 2);
  }
  char what[96];
  snprintf(what, sizeof what, "embed_vp_fwd rows=%d C=%d Vl=%d P=%d", rows, C, Vl, P_);
  expect_close(what, &outs, ref, (P_ + nfar) * rc);
  for (int64_t i = P_ * rc; i < (P_ + nfar) * rc; i++)
    if (ref[i] == 0) CHECK(dget(&outs, i) == 0, "embed_vp_fwd: element %lld not zero", (long long)i);

  // The shards summed: EMBED_FWD's rows for ids in the vocabulary (exactly), zeros elsewhere.
  int32_t *tv = malloc(sizeof(int32_t) * (size_t)rows);
  for (int r = 0; r < rows; r++) tv[r] = tok[r] >= 0 && tok[r] < V ? tok[r] : 0;
  buf full = bnew(rc);
  dhx_slot f[] = {P(full), {.p = tv}, P(table), I(C)};
  fn_of(DHX_K_EMBED_FWD)(f, 0, rows);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < C; c++) {
      double sum = 0, want = tok[r] == tv[r] ? dget(&full, r * C + c) : 0;
      for (int s = 0; s < P_; s++) sum += dget(&outs, s * rc + r * C + c);
      CHECK(sum == want, "embed_vp_fwd: shards sum to %.17g at [%d,%d], embed_fwd %.17g", sum, r,
            c, want);
    }
  printf("  ok %-44s P=%d\n", "embed_vp_fwd shards sum to embed_fwd", P_);

  // Backward: each shard's slice of one dtable, then the far shards over rows 0..Vl-1 (only
  // lo = -2 holds ids there: tokens -1 and -2 would land in rows 1 and 0).
  int64_t vc = (int64_t)V * C;
  buf dtable = bnew(vc), dout = bnew(rc), dt0 = bnew(vc);
  brand(&dtable, -1, 1);
  brand(&dout, -1, 1);
  bcopy_dev(&dt0, &dtable);
  double *rt = malloc(sizeof(double) * (size_t)vc);
  memcpy(rt, dtable.r, sizeof(double) * (size_t)vc);
  dhx_kernel_fn bwd = fn_of(DHX_K_EMBED_VP_BWD);
  for (int s = 0; s < P_; s++) {
    int64_t lo = (int64_t)s * Vl, row;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < C; c++)
        if (in_shard(tok[r], lo, Vl, &row)) rt[lo * C + row * C + c] += dout.r[r * C + c];
    dhx_slot b[] = {PO(&dtable, lo * C), {.p = tok}, P(dout), I(rows), I(C), I(lo), I(Vl)};
    run("embed_vp_bwd", bwd, b, C, (buf *[]){&dtable, &dout}, 2);
  }
  snprintf(what, sizeof what, "embed_vp_bwd rows=%d C=%d Vl=%d P=%d", rows, C, Vl, P_);
  expect_close(what, &dtable, rt, vc);
  // EMBED_BWD over the rows whose ids are in the vocabulary, in the same order: bitwise equal.
  int32_t *tc = malloc(sizeof(int32_t) * (size_t)rows);
  buf dc = bnew(rc);
  int nv = 0;
  for (int r = 0; r < rows; r++) {
    if (tok[r] < 0 || tok[r] >= V) continue;
    for (int c = 0; c < C; c++) bset(&dc, (int64_t)nv * C + c, dout.r[r * C + c]);
    tc[nv++] = tok[r];
  }
  dhx_slot e[] = {P(dt0), {.p = tc}, P(dc), I(nv), I(C)};
  fn_of(DHX_K_EMBED_BWD)(e, 0, C);
  CHECK(memcmp(dt0.d, dtable.d, (size_t)vc * ES) == 0, "embed_vp_bwd over %d shards differs "
        "from embed_bwd", P_);
  printf("  ok %-44s P=%d\n", "embed_vp_bwd shards equal embed_bwd", P_);
  for (int f2 = 0; f2 < nfar; f2++) {
    int64_t lo = FAR_LO[f2], row;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < C; c++)
        if (in_shard(tok[r], lo, Vl, &row)) rt[row * C + c] += dout.r[r * C + c];
    dhx_slot b[] = {P(dtable), {.p = tok}, P(dout), I(rows), I(C), I(lo), I(Vl)};
    run("embed_vp_bwd", bwd, b, C, (buf *[]){&dtable, &dout}, 2);
  }
  snprintf(what, sizeof what, "embed_vp_bwd far lo, rows=%d C=%d", rows, C);
  expect_close(what, &dtable, rt, vc);
  free(ref), free(tv), free(rt), free(tc);
  bfree(&table), bfree(&outs), bfree(&full), bfree(&dtable), bfree(&dout), bfree(&dt0);
  bfree(&dc);
  free(tok);
}

// Same values (NaN where want is NaN), |got - want| <= rtol |want| element by element.
static void expect_rel(const char *what, const buf *got, const buf *want, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double g = dget(got, i), w = dget(want, i);
    if (isnan(w)) {
      CHECK(isnan(g), "%s[%lld] = %.17g, want NaN", what, (long long)i, g);
      continue;
    }
    double rel = fabs(g - w) / fabs(w);
    CHECK(rel <= RTOL, "%s[%lld] = %.17g, want %.17g (relative error %.3g)", what, (long long)i,
          g, w, rel);
    if (rel > worst) worst = rel;
  }
  printf("  ok %-44s n=%-5lld worst relative err = %.2e\n", what, (long long)n, worst);
  nchecks++;
}

static void test_xent_vp(int rows, int Vl, int P_, int K) {
  int V = Vl * P_;
  CHECK(rows >= P_ + 3 && K >= 3, "test_xent_vp: rows %d, P %d, K %d", rows, P_, K);
  int32_t *tg = tokens(rows, V);
  for (int r = 0; r < rows; r++) tg[r] = (r % P_) * Vl + rng_int(Vl);  // targets in every shard
  tg[rows - 1] = -1, tg[rows - 2] = V, tg[rows - 3] = INT32_MAX;         // and in none
  int64_t n = (int64_t)rows * V, sh = (int64_t)rows * Vl, kr = (int64_t)K * rows;
  buf logits = bnew(n), lgs = bnew(n), parts = bnew(P_ * kr);
  brand(&logits, -4, 4);
  for (int s = 0; s < P_; s++)  // shard s: the columns [s·Vl, (s+1)·Vl) of every row
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < Vl; j++) bset(&lgs, s * sh + r * Vl + j, logits.r[r * V + s * Vl + j]);
  brand(&parts, 100, 200);  // planes 3..K-1 must keep these
  buf parts0 = bnew(P_ * kr);
  bcopy_dev(&parts0, &parts);
  for (int s = 0; s < P_; s++) {
    dhx_slot a[] = {PO(&parts, s * kr), PO(&lgs, s * sh), {.p = tg}, I(Vl), I((int64_t)s * Vl),
                    I(K), I(rows)};
    run("xent_vp_stats", fn_of(DHX_K_XENT_VP_STATS), a, rows, (buf *[]){&parts, &lgs}, 2);
  }
  // m and the target logit are exact; the sums against the reference.
  buf sums = bnew(P_ * rows);
  double *rs = malloc(sizeof(double) * (size_t)(P_ * rows));
  for (int s = 0; s < P_; s++)
    for (int r = 0; r < rows; r++) {
      const double *x = lgs.r + s * sh + r * Vl;
      double m = -INFINITY, sum = 0, t = 0;
      for (int j = 0; j < Vl; j++) m = fmax(m, x[j]);
      for (int j = 0; j < Vl; j++) sum += exp(x[j] - m);
      int64_t row;
      if (in_shard(tg[r], (int64_t)s * Vl, Vl, &row)) t = x[row];
      const int64_t at = s * kr + r;
      CHECK(dget(&parts, at) == m, "xent_vp_stats: max of shard %d row %d", s, r);
      CHECK(dget(&parts, at + 2 * rows) == t, "xent_vp_stats: target logit of shard %d row %d", s,
            r);
      for (int c = 3; c < K; c++)
        CHECK(dget(&parts, at + c * rows) == dget(&parts0, at + c * rows),
              "xent_vp_stats wrote plane %d of shard %d", c, s);
      bset(&sums, s * rows + r, dget(&parts, at + rows));
      rs[s * rows + r] = sum;
    }
  char what[96];
  snprintf(what, sizeof what, "xent_vp_stats sums rows=%d Vl=%d P=%d K=%d", rows, Vl, P_, K);
  expect_close(what, &sums, rs, P_ * rows);

  // Combine: against the reference, and the key property, against XENT_FWD on whole rows.
  buf loss = bnew(rows), lse = bnew(rows), lossf = bnew(rows);
  brand(&loss, 5, 6);
  brand(&lse, 5, 6);
  double *rl = malloc(sizeof(double) * rows), *rlse = malloc(sizeof(double) * rows);
  for (int r = 0; r < rows; r++) {
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++) m = fmax(m, logits.r[r * V + j]);
    for (int j = 0; j < V; j++) sum += exp(logits.r[r * V + j] - m);
    rlse[r] = m + log(sum);
    rl[r] = tg[r] >= 0 && tg[r] < V ? rlse[r] - logits.r[r * V + tg[r]] : NAN;
  }
  dhx_slot c[] = {P(loss), P(lse), P(parts), {.p = tg}, I(P_ * K), I(rows), I(K), I(V)};
  run("xent_vp_combine", fn_of(DHX_K_XENT_VP_COMBINE), c, rows, (buf *[]){&loss, &lse}, 2);
  snprintf(what, sizeof what, "xent_vp_combine lse rows=%d V=%d P=%d", rows, V, P_);
  expect_close(what, &lse, rlse, rows);
  snprintf(what, sizeof what, "xent_vp_combine loss rows=%d V=%d P=%d", rows, V, P_);
  expect_close(what, &loss, rl, rows);
  dhx_slot f[] = {P(lossf), P(logits), {.p = tg}, I(V)};
  fn_of(DHX_K_XENT_FWD)(f, 0, rows);
  snprintf(what, sizeof what, "xent_vp loss = xent_fwd loss, P=%d K=%d", P_, K);
  expect_rel(what, &loss, &lossf, rows);

  // Backward per shard with that lse, out of place and in place over the shard's logits.
  const double scale = 1.0 / rows;
  double *rd = malloc(sizeof(double) * (size_t)n), *rx = malloc(sizeof(double) * (size_t)n);
  buf dfull = bnew(n), got = bnew(n);
  dhx_slot b[] = {P(dfull), P(logits), {.p = tg}, I(V), F(scale)};
  fn_of(DHX_K_XENT_BWD)(b, 0, rows);
  for (int64_t i = 0; i < n; i++) rx[i] = dget(&dfull, i);
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < V; j++)
      rd[r * V + j] = scale * (exp(logits.r[r * V + j] - dget(&lse, r)) - (j == tg[r]));
  for (int inplace = 0; inplace <= 1; inplace++) {
    buf lg = bnew(n), dl = bnew(n);
    bcopy_dev(&lg, &lgs);
    brand(&dl, 7, 8);
    buf *out = inplace ? &lg : &dl;
    for (int s = 0; s < P_; s++) {
      dhx_slot d[] = {PO(out, s * sh), PO(&lg, s * sh), P(lse), {.p = tg}, I(Vl),
                      I((int64_t)s * Vl), F(scale)};
      run("xent_vp_bwd", fn_of(DHX_K_XENT_VP_BWD), d, rows, (buf *[]){&lg, &dl}, 2);
    }
    for (int s = 0; s < P_; s++)  // concatenated back into whole rows
      for (int r = 0; r < rows; r++)
        for (int j = 0; j < Vl; j++)
          bset(&got, (int64_t)r * V + s * Vl + j, dget(out, s * sh + r * Vl + j));
    snprintf(what, sizeof what, "xent_vp_bwd rows=%d V=%d P=%d%s", rows, V, P_,
             inplace ? " in place" : "");
    expect_close(what, &got, rd, n);
    snprintf(what, sizeof what, "xent_vp_bwd = xent_bwd, P=%d%s", P_, inplace ? " in place" : "");
    expect_close(what, &got, rx, n);
    bfree(&lg), bfree(&dl);
  }

  // Too few planes: STATS writes nothing, COMBINE writes NaN (also with fewer than K rows of
  // parts); a shard at an extreme lo holds no target.
  bcopy_dev(&parts0, &parts);
  dhx_slot k2[] = {P(parts), P(lgs), {.p = tg}, I(Vl), I(0), I(2), I(rows)};
  fn_of(DHX_K_XENT_VP_STATS)(k2, 0, rows);
  CHECK(memcmp(parts0.d, parts.d, (size_t)(P_ * kr) * ES) == 0, "xent_vp_stats with K = 2 wrote");
  for (int bad = 0; bad < 2; bad++) {
    dhx_slot k3[] = {P(loss), P(lse), P(parts), {.p = tg}, I(bad ? K - 1 : 2 * P_), I(rows),
                     I(bad ? K : 2), I(V)};
    fn_of(DHX_K_XENT_VP_COMBINE)(k3, 0, rows);
    for (int r = 0; r < rows; r++)
      CHECK(isnan(dget(&loss, r)) && isnan(dget(&lse, r)), "xent_vp_combine: no NaN (%d)", bad);
  }
  for (int f2 = 1; f2 < (int)(sizeof FAR_LO / sizeof FAR_LO[0]); f2++) {
    dhx_slot k4[] = {P(parts), P(lgs), {.p = tg}, I(Vl), I(FAR_LO[f2]), I(K), I(rows)};
    fn_of(DHX_K_XENT_VP_STATS)(k4, 0, rows);
    for (int r = 0; r < rows; r++)
      CHECK(dget(&parts, 2 * rows + r) == 0, "xent_vp_stats: lo %lld holds target %d",
            (long long)FAR_LO[f2], tg[r]);
  }
  printf("  ok %-44s\n", "xent_vp K < 3, PK < K, extreme lo");
  free(rs), free(rl), free(rlse), free(rd), free(rx), free(tg);
  bfree(&logits), bfree(&lgs), bfree(&parts), bfree(&parts0), bfree(&sums), bfree(&loss);
  bfree(&lse), bfree(&lossf), bfree(&dfull), bfree(&got);
}

static void test_adamw(int64_t n) {
  buf p = bnew(n), g = bnew(n), m = bnew(n), v = bnew(n);
  brand(&p, -1, 1);
  brand(&g, -0.1, 0.1);
  brand(&m, -0.01, 0.01);
  brand(&v, 0, 1e-3);
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, gs = 0.5;
  const double bc1 = 1 - pow(b1, 3), bc2 = 1 - pow(b2, 3);
  double *rp = malloc(sizeof(double) * (size_t)n), *rm = malloc(sizeof(double) * (size_t)n);
  double *rv = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    double gg = g.r[i] * gs;
    rm[i] = b1 * m.r[i] + (1 - b1) * gg;
    rv[i] = b2 * v.r[i] + (1 - b2) * gg * gg;
    rp[i] = p.r[i] - lr * ((rm[i] / bc1) / (sqrt(rv[i] / bc2) + eps) + wd * p.r[i]);
  }
  buf clip = bnew(1);
  bset(&clip, 0, gs);
  dhx_slot a[] = {P(p), P(g), P(m), P(v), F(lr), F(b1), F(b2), F(eps), F(wd), F(bc1), F(bc2), P(clip)};
  run("adamw", fn_of(DHX_K_ADAMW), a, n, (buf *[]){&p, &g, &m, &v}, 4);
  expect_close("adamw param", &p, rp, n);
  expect_close("adamw m", &m, rm, n);
  expect_close("adamw v", &v, rv, n);
  // A NaN clip scale (a non-finite gradient norm) leaves parameters and moments as they were.
  buf before = bnew(3 * n);
  memcpy(before.d, p.d, (size_t)n * ES);
  memcpy((char *)before.d + (size_t)n * ES, m.d, (size_t)n * ES);
  memcpy((char *)before.d + 2 * (size_t)n * ES, v.d, (size_t)n * ES);
  bset(&clip, 0, NAN);
  run("adamw, NaN clip scale", fn_of(DHX_K_ADAMW), a, n, (buf *[]){&p, &g, &m, &v}, 4);
  CHECK(memcmp(before.d, p.d, (size_t)n * ES) == 0 &&
            memcmp((char *)before.d + (size_t)n * ES, m.d, (size_t)n * ES) == 0 &&
            memcmp((char *)before.d + 2 * (size_t)n * ES, v.d, (size_t)n * ES) == 0,
        "adamw with a NaN clip scale changed the parameters or moments");
  printf("  ok %-44s\n", "adamw, NaN clip scale: nothing written");
  free(rp), free(rm), free(rv);
  bfree(&p), bfree(&g), bfree(&m), bfree(&v), bfree(&clip), bfree(&before);
}

// One index: the norm of `count` partial sums and the clip scale, against the same formula in
// double (with max_norm 0, no clipping; a NaN or an infinity in the partials, the NaN scale).
static void test_grad_norm(int64_t count) {
  buf partials = bnew(count), out = bnew(2);
  brand(&partials, 0, 4);
  for (int c = 0; c < 4; c++) {
    double max_norm = c == 1 ? 0.0 : 1.5;
    if (c == 2) bset(&partials, count / 2, NAN);
    if (c == 3) bset(&partials, count / 2, 1.0), bset(&partials, count / 3, INFINITY);
    double sum = 0;
    for (int64_t i = 0; i < count; i++) sum += partials.r[i];
    double norm = sqrt(sum), ref[2] = {max_norm > 0 ? fmin(1, max_norm / (norm + 1e-6)) : 1, norm};
    if (!isfinite(norm)) ref[0] = NAN;
    bset(&out, 0, -1), bset(&out, 1, -1);
    dhx_slot a[] = {{.p = out.d}, {.p = (char *)out.d + ES}, P(partials), I(count), F(max_norm)};
    run("grad_norm", fn_of(DHX_K_GRAD_NORM), a, 1, (buf *[]){&out}, 1);
    if (isinf(norm)) {  // infinite norm: the scale is the skip mark, the norm stays infinite
      CHECK(isnan(dget(&out, 0)) && isinf(dget(&out, 1)), "grad_norm with an infinite partial");
      printf("  ok %-44s\n", "grad_norm, infinite partial: NaN scale");
      continue;
    }
    char what[64];
    snprintf(what, sizeof what, "grad_norm (scale, norm), case %d", c);
    expect_close(what, &out, ref, 2);
  }
  bfree(&partials), bfree(&out);
}

static void test_sumsq(int64_t count, int64_t chunk) {
  int64_t nch = (count + chunk - 1) / chunk;
  buf x = bnew(count), out = bnew(nch);
  brand(&x, -3, 3);
  bset(&x, 5, 1e-4);  // small values must still count (f64 accumulation)
  double *ref = calloc((size_t)nch, sizeof(double));
  for (int64_t i = 0; i < count; i++) ref[i / chunk] += x.r[i] * x.r[i];
  dhx_slot a[] = {P(out), P(x), I(count), I(chunk)};
  run("sumsq", fn_of(DHX_K_SUMSQ), a, nch, (buf *[]){&out, &x}, 2);
  expect_close("sumsq", &out, ref, nch);
  free(ref);
  bfree(&x), bfree(&out);
}

static void test_colsum(int rows, int m) {
  buf in = bnew((int64_t)rows * m), out = bnew(m);
  brand(&in, -1, 1);
  double *ref = malloc(sizeof(double) * m);
  char what[64];
  for (int acc = 0; acc <= 1; acc++) {
    brand(&out, -1, 1);
    for (int j = 0; j < m; j++) {
      ref[j] = acc ? out.r[j] : 0;
      for (int r = 0; r < rows; r++) ref[j] += in.r[r * m + j];
    }
    dhx_slot a[] = {P(out), P(in), I(rows), I(m), I(acc)};
    run("colsum", fn_of(DHX_K_COLSUM), a, m, (buf *[]){&out, &in}, 2);
    snprintf(what, sizeof what, "colsum rows=%d m=%d acc=%d", rows, m, acc);
    expect_close(what, &out, ref, m);
  }
  free(ref);
  bfree(&in), bfree(&out);
}

// ---- fused elementwise kernels ----

static long double gelu_l(long double x) {
  return 0.5L * x * (1.0L + tanhl(0.7978845608028654L * (x + 0.044715L * x * x * x)));
}
static long double gelu_grad_l(long double x) {
  long double u = 0.7978845608028654L * (x + 0.044715L * x * x * x);
  long double th = tanhl(u);
  return 0.5L * (1 + th) + 0.5L * x * (1 - th * th) * 0.7978845608028654L * (1 + 3 * 0.044715L * x * x);
}

static void test_bias_gelu(int rows, int C) {
  dhx_kernel_spec s = spec_bias_gelu(TY, C);
  dhx_kernel_fn fn = cgt_fn(&T, &s);
  int64_t n = (int64_t)rows * C;
  double *rpre = malloc(sizeof(double) * (size_t)n), *rout = malloc(sizeof(double) * (size_t)n);
  char what[80];
  for (int inplace = 0; inplace <= 1; inplace++) {
    buf y = bnew(n), bias = bnew(C), pre = bnew(n), out = bnew(n);
    brand(&y, -4, 4);
    brand(&bias, -1, 1);
    brand(&pre, 9, 10);
    brand(&out, 9, 10);
    for (int64_t i = 0; i < n; i++) {
      rpre[i] = rnd(y.r[i] + bias.r[i % C]);
      rout[i] = (double)gelu_l(rpre[i]);
    }
    buf *po = inplace ? &y : &pre;  // "y = y + bias" in place, as lower.c emits it
    dhx_slot a[] = {P(*po), P(out), P(y), P(bias)};
    run("ew bias+gelu", fn, a, n, (buf *[]){&y, &pre, &out}, 3);
    snprintf(what, sizeof what, "ew pre = y + bias[i%%%d]%s", C, inplace ? " in place" : "");
    expect_close(what, po, rpre, n);
    snprintf(what, sizeof what, "ew out = gelu(pre) C=%d", C);
    expect_close(what, &out, rout, n);
    bfree(&y), bfree(&bias), bfree(&pre), bfree(&out);
  }
  free(rpre), free(rout);
}

static void test_pos_add(int B, int TC) {
  dhx_kernel_spec s = spec_pos_add(TY, TC);
  int64_t n = (int64_t)B * TC;
  buf x = bnew(n), w = bnew(TC), out = bnew(n);
  brand(&x, -1, 1);
  brand(&w, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) ref[i] = x.r[i] + w.r[i % TC];
  dhx_slot a[] = {P(out), P(x), P(w)};
  run("ew pos", cgt_fn(&T, &s), a, n, (buf *[]){&out, &x}, 2);
  expect_close("ew out = x + wpe[i % (T*C)]", &out, ref, n);
  free(ref);
  bfree(&x), bfree(&w), bfree(&out);
}

static void test_gelu_grad(int64_t n) {
  buf x = bnew(n), dy = bnew(n), dx = bnew(n);
  brand(&x, -5, 5);
  brand(&dy, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int acc = 0; acc <= 1; acc++) {
    dhx_kernel_spec s = spec_gelu_grad(TY, acc);
    brand(&dx, -1, 1);
    for (int64_t i = 0; i < n; i++)
      ref[i] = (acc ? dx.r[i] : 0) + (double)(dy.r[i] * gelu_grad_l(x.r[i]));
    dhx_slot a[] = {P(dx), P(x), P(dy)};
    run("ew gelu_grad", cgt_fn(&T, &s), a, n, (buf *[]){&dx}, 1);
    expect_close(acc ? "ew dx += gelu_grad(x, dy)" : "ew dx = gelu_grad(x, dy)", &dx, ref, n);
  }
  free(ref);
  bfree(&x), bfree(&dy), bfree(&dx);
}

static void test_acc_add(int64_t n) {
  dhx_kernel_spec s = spec_acc_add(TY);
  buf a_ = bnew(n), out = bnew(n);
  brand(&a_, -1, 1);
  brand(&out, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) ref[i] = out.r[i] + a_.r[i];
  dhx_slot a[] = {P(out), P(a_)};
  run("ew acc", cgt_fn(&T, &s), a, n, (buf *[]){&out}, 1);
  expect_close("ew out += a", &out, ref, n);
  free(ref);
  bfree(&a_), bfree(&out);
}

static void test_mix(int64_t n) {
  const double s0 = rnd(1.7), s1 = rnd(0.8);
  buf A = bnew(n), Bv = bnew(n), o0 = bnew(n), o1 = bnew(n), o2 = bnew(n);
  brand(&A, -2, 2);
  brand(&Bv, -2, 2);
  double *r0 = malloc(sizeof(double) * (size_t)n), *r1 = malloc(sizeof(double) * (size_t)n);
  double *r2 = malloc(sizeof(double) * (size_t)n);
  for (int acc = 0; acc <= 1; acc++) {
    dhx_kernel_spec s = spec_mix(TY, acc);
    brand(&o0, 5, 6);
    brand(&o1, -1, 1);
    brand(&o2, 5, 6);
    for (int64_t i = 0; i < n; i++) {
      double a = A.r[i], b = Bv.r[i];
      r0[i] = a * s0 + b / s1 - 0.5;
      r1[i] = (acc ? o1.r[i] : 0) + tanh(a) * exp(-b) + sqrt(b * b + s1);
      r2[i] = log(a * a + 1) + b;
    }
    dhx_slot a[] = {P(o0), P(o1), P(o2), P(A), P(Bv), F(s0), F(s1)};
    run("ew mix", cgt_fn(&T, &s), a, n, (buf *[]){&o0, &o1, &o2}, 3);
    expect_close("ew o0 = a*s0 + b/s1 - 0.5", &o0, r0, n);
    expect_close(acc ? "ew o1 += tanh(a) exp(-b) + sqrt(b*b+s1)" : "ew o1 = tanh(a) exp(-b) + sqrt(b*b+s1)",
                 &o1, r1, n);
    expect_close("ew o2 = log(a*a+1) - neg(b)", &o2, r2, n);
  }
  free(r0), free(r1), free(r2);
  bfree(&A), bfree(&Bv), bfree(&o0), bfree(&o1), bfree(&o2);
}

static void test_two_mods(int64_t n, int m1, int m2) {
  dhx_kernel_spec s = spec_two_mods(TY, m1, m2);
  buf x = bnew(n), u = bnew(m1), v = bnew(m2), out = bnew(n);
  brand(&x, -1, 1);
  brand(&u, -1, 1);
  brand(&v, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) ref[i] = x.r[i] + u.r[i % m1] * v.r[i % m2];
  dhx_slot a[] = {P(out), P(x), P(u), P(v)};
  run("ew two mods", cgt_fn(&T, &s), a, n, (buf *[]){&out}, 1);
  char what[64];
  snprintf(what, sizeof what, "ew out = x + u[i%%%d] * v[i%%%d]", m1, m2);
  expect_close(what, &out, ref, n);
  free(ref);
  bfree(&x), bfree(&u), bfree(&v), bfree(&out);
}

static void test_rmsnorm(int rows, int C) {
  const double eps = 1e-5;
  int64_t n = (int64_t)rows * C;
  buf out = bnew(n), rstd = bnew(rows), x = bnew(n), g = bnew(C);
  brand(&x, -2, 3);
  brand(&g, 0.5, 1.5);
  brand(&out, 9, 10);
  double *rr = malloc(sizeof(double) * rows), *ref = malloc(sizeof(double) * (size_t)n);
  for (int r = 0; r < rows; r++) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += x.r[r * C + c] * x.r[r * C + c];
    rr[r] = 1 / sqrt(ss / C + eps);
    for (int c = 0; c < C; c++) ref[r * C + c] = x.r[r * C + c] * rr[r] * g.r[c];
  }
  dhx_slot a[] = {P(out), P(rstd), P(x), P(g), I(C), F(eps)};
  run("rmsnorm_fwd", fn_of(DHX_K_RMSNORM_FWD), a, rows, (buf *[]){&out, &rstd}, 2);
  char what[80];
  snprintf(what, sizeof what, "rmsnorm_fwd out rows=%d C=%d", rows, C);
  expect_close(what, &out, ref, n);
  expect_close("rmsnorm_fwd rstd", &rstd, rr, rows);

  for (int r = 0; r < rows; r++) bset(&rstd, r, rr[r]);
  buf dout = bnew(n), dx = bnew(n);
  brand(&dout, -1, 1);
  for (int acc = 0; acc <= 1; acc++) {
    brand(&dx, -1, 1);
    for (int r = 0; r < rows; r++) {
      double sgx = 0, rs = rstd.r[r];
      for (int c = 0; c < C; c++) sgx += dout.r[r * C + c] * g.r[c] * x.r[r * C + c] * rs;
      for (int c = 0; c < C; c++) {
        double v = rs * (dout.r[r * C + c] * g.r[c] - x.r[r * C + c] * rs * sgx / C);
        ref[r * C + c] = acc ? dx.r[r * C + c] + v : v;
      }
    }
    dhx_slot b[] = {P(dx), P(dout), P(x), P(rstd), P(g), I(C), I(acc)};
    run("rmsnorm_bwd_dx", fn_of(DHX_K_RMSNORM_BWD_DX), b, rows, (buf *[]){&dx}, 1);
    snprintf(what, sizeof what, "rmsnorm_bwd_dx rows=%d C=%d acc=%d", rows, C, acc);
    expect_close(what, &dx, ref, n);
  }
  buf dg = bnew(C);
  brand(&dg, -1, 1);
  double *rg = malloc(sizeof(double) * C);
  for (int c = 0; c < C; c++) {
    rg[c] = dg.r[c];
    for (int r = 0; r < rows; r++) rg[c] += dout.r[r * C + c] * x.r[r * C + c] * rstd.r[r];
  }
  dhx_slot d[] = {P(dg), P(dout), P(x), P(rstd), I(rows), I(C)};
  run("rmsnorm_bwd_dgamma", fn_of(DHX_K_RMSNORM_BWD_DGAMMA), d, C, (buf *[]){&dg}, 1);
  snprintf(what, sizeof what, "rmsnorm_bwd_dgamma rows=%d C=%d", rows, C);
  expect_close(what, &dg, rg, C);
  free(rr), free(ref), free(rg);
  bfree(&out), bfree(&rstd), bfree(&x), bfree(&g), bfree(&dout), bfree(&dx), bfree(&dg);
}

// Rotary embedding over B sequences of S positions, `heads` heads of size hs, both
// directions; positions up to S test the sine and cosine far from zero.
static void test_rope(int B, int S, int heads, int hs, double base) {
  int D = heads * hs, rows = B * S;
  int64_t n = (int64_t)rows * D;
  buf x = bnew(n), out = bnew(n);
  brand(&x, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int sign = 1; sign >= -1; sign -= 2) {
    for (int r = 0; r < rows; r++)
      for (int h = 0; h < heads; h++)
        for (int i = 0; i < hs / 2; i++) {
          double th = (r % S) * pow(base, -2.0 * i / hs), c = cos(th), sn = sign * sin(th);
          int64_t ia = (int64_t)r * D + h * hs + i, ib = ia + hs / 2;
          ref[ia] = x.r[ia] * c - x.r[ib] * sn;
          ref[ib] = x.r[ia] * sn + x.r[ib] * c;
        }
    brand(&out, 5, 6);
    dhx_slot a[] = {P(out), P(x), I(S), I(D), I(hs), F(base), F(sign)};
    run("rope", fn_of(DHX_K_ROPE), a, n / 2, (buf *[]){&out}, 1);
    char what[96];
    snprintf(what, sizeof what, "rope B=%d S=%d heads=%d hs=%d sign=%d", B, S, heads, hs, sign);
    expect_close(what, &out, ref, n);
  }
  // in place: out aliases x (the catalogue allows it)
  buf y = bnew(n);
  bcopy_dev(&y, &x);
  dhx_slot a[] = {P(y), P(y), I(S), I(D), I(hs), F(base), F(1.0)};
  fn_of(DHX_K_ROPE)(a, 0, n / 2);
  for (int r = 0; r < rows; r++)
    for (int h = 0; h < heads; h++)
      for (int i = 0; i < hs / 2; i++) {
        double th = (r % S) * pow(base, -2.0 * i / hs), c = cos(th), sn = sin(th);
        int64_t ia = (int64_t)r * D + h * hs + i, ib = ia + hs / 2;
        ref[ia] = x.r[ia] * c - x.r[ib] * sn;
        ref[ib] = x.r[ia] * sn + x.r[ib] * c;
      }
  expect_close("rope in place", &y, ref, n);
  free(ref);
  bfree(&x), bfree(&out), bfree(&y);
}

static void test_permute(int B, int X, int Y, int W) {
  int64_t n = (int64_t)B * X * Y * W;
  buf in = bnew(n), out = bnew(n);
  brand(&in, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int b = 0; b < B; b++)
    for (int x = 0; x < X; x++)
      for (int y = 0; y < Y; y++)
        for (int w = 0; w < W; w++)
          ref[(((int64_t)b * Y + y) * X + x) * W + w] = in.r[(((int64_t)b * X + x) * Y + y) * W + w];
  dhx_slot a[] = {P(out), P(in), I(X), I(Y), I(W)};
  run("permute", fn_of(DHX_K_PERMUTE), a, (int64_t)B * Y * X, (buf *[]){&out}, 1);
  char what[80];
  snprintf(what, sizeof what, "permute B=%d X=%d Y=%d W=%d", B, X, Y, W);
  expect_close(what, &out, ref, n);
  free(ref);
  bfree(&in), bfree(&out);
}

static double silu_l(double x) { return x / (1 + exp(-x)); }
static double silu_grad_l(double x) {
  double s = 1 / (1 + exp(-x));
  return s * (1 + x * (1 - s));
}

static void test_silu(int64_t n) {
  buf x = bnew(n), y = bnew(n), dy = bnew(n), dx = bnew(n);
  brand(&x, -20, 20);
  brand(&dy, -1, 1);
  double *ref = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) ref[i] = silu_l(x.r[i]);
  dhx_kernel_spec s = spec_unary(TY, DHX_EW_SILU);
  dhx_slot a[] = {P(y), P(x)};
  run("ew silu", cgt_fn(&T, &s), a, n, (buf *[]){&y}, 1);
  expect_close("ew y = silu(x)", &y, ref, n);
  for (int acc = 0; acc <= 1; acc++) {
    dhx_kernel_spec g = spec_silu_grad(TY, acc);
    brand(&dx, -1, 1);
    for (int64_t i = 0; i < n; i++) ref[i] = (acc ? dx.r[i] : 0) + dy.r[i] * silu_grad_l(x.r[i]);
    dhx_slot b[] = {P(dx), P(x), P(dy)};
    run("ew silu_grad", cgt_fn(&T, &g), b, n, (buf *[]){&dx}, 1);
    expect_close(acc ? "ew dx += silu_grad(x, dy)" : "ew dx = silu_grad(x, dy)", &dx, ref, n);
  }
  free(ref);
  bfree(&x), bfree(&y), bfree(&dy), bfree(&dx);
}

// Fused causal attention against the unfused definition in double: scores = scale q k^T
// (keys j <= i), P = softmax, out = P v, lse = log sum exp; the backward by the chain rule
// through P. B batches of S positions, H query heads of size hs sharing G kv heads; `fused`:
// q, k, v one [B·S, 3·H·hs] projection (then G = H), else three, q [B·S, H·hs], k and v
// [B·S, G·hs]. Every gradient runs twice, overwriting and accumulating onto a random start.
static void test_attention(int B, int S, int H, int G, int hs, bool fused) {
  int per = H / G, D = H * hs, qs = fused ? 3 * D : D, ks = fused ? 3 * D : G * hs;
  int kh0 = fused ? H : 0, vh0 = fused ? 2 * H : 0;
  double scale = 1.0 / sqrt((double)hs);
  int64_t rows = (int64_t)B * H * S, nq = (int64_t)B * S * qs, nk = (int64_t)B * S * ks;
  buf q = bnew(nq), kk = bnew(fused ? 1 : nk), v = bnew(fused ? 1 : nk);
  brand(&q, -1, 1), brand(&kk, -1, 1), brand(&v, -1, 1);
  buf *K = fused ? &q : &kk, *V = fused ? &q : &v;
  buf out = bnew(rows * hs), lse = bnew(rows), dout = bnew(rows * hs), dsum = bnew(rows);
  brand(&dout, -1, 1);
  // Reference, per (b, h, i): scores, P, out, lse; then dP, dS and the gradients.
  double *rout = calloc((size_t)(rows * hs), sizeof(double)), *rlse = calloc((size_t)rows, 8);
  double *rdq = calloc((size_t)nq, 8), *rdk = calloc((size_t)(fused ? nq : nk), 8);
  double *rdv = calloc((size_t)(fused ? nq : nk), 8), *rds = calloc((size_t)rows, 8);
  double *sc = calloc((size_t)S, 8), *dp = calloc((size_t)S, 8);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < S; i++) {
        int64_t r = ((int64_t)b * H + h) * S + i, g = h / per;
        const double *qr = q.r + (int64_t)(b * S + i) * qs + h * hs;
        double m = -INFINITY, l = 0;
        for (int j = 0; j <= i; j++) {
          const double *kr = K->r + (int64_t)(b * S + j) * ks + (kh0 + g) * hs;
          double d = 0;
          for (int c = 0; c < hs; c++) d += qr[c] * kr[c];
          sc[j] = scale * d;
          if (sc[j] > m) m = sc[j];
        }
        for (int j = 0; j <= i; j++) l += exp(sc[j] - m);
        rlse[r] = m + log(l);
        double *o = rout + (((int64_t)b * S + i) * H + h) * hs;
        const double *go = dout.r + (((int64_t)b * S + i) * H + h) * hs;
        for (int j = 0; j <= i; j++) {
          double p = exp(sc[j] - rlse[r]);
          const double *vr = V->r + (int64_t)(b * S + j) * ks + (vh0 + g) * hs;
          for (int c = 0; c < hs; c++) o[c] += p * vr[c];
        }
        for (int c = 0; c < hs; c++) rds[r] += go[c] * o[c];
        for (int j = 0; j <= i; j++) {
          double p = exp(sc[j] - rlse[r]);
          const double *vr = V->r + (int64_t)(b * S + j) * ks + (vh0 + g) * hs;
          const double *kr = K->r + (int64_t)(b * S + j) * ks + (kh0 + g) * hs;
          double d = 0;
          for (int c = 0; c < hs; c++) d += go[c] * vr[c];
          double ds = p * (d - rds[r]);
          double *dq = rdq + (int64_t)(b * S + i) * qs + h * hs;
          double *dk = rdk + (int64_t)(b * S + j) * ks + (kh0 + g) * hs;
          double *dv = rdv + (int64_t)(b * S + j) * ks + (vh0 + g) * hs;
          for (int c = 0; c < hs; c++) {
            dq[c] += scale * ds * kr[c];
            dk[c] += scale * ds * qr[c];
            dv[c] += p * go[c];
          }
        }
        (void)dp;
      }
  int64_t flags = fused ? 4 : 0;
  dhx_slot fa[] = {P(out), P(lse), P(q), P(*K), P(*V), I(S), I(H), I(G), I(hs), I(qs), I(ks),
                   I(flags), F(scale)};
  run("attn_fwd", fn_of(DHX_K_ATTN_FWD), fa, rows, (buf *[]){&out, &lse}, 2);
  char what[96];
  snprintf(what, sizeof what, "attn_fwd out %s B%d S%d H%d G%d hs%d", fused ? "fused" : "gqa", B,
           S, H, G, hs);
  expect_close(what, &out, rout, rows * hs);
  expect_close("attn_fwd lse", &lse, rlse, rows);
  // The backward from the reference's forward values, as a plan's would be (rounded).
  for (int64_t x = 0; x < rows * hs; x++) bset(&out, x, rout[x]);
  for (int64_t x = 0; x < rows; x++) bset(&lse, x, rlse[x]);
  dhx_slot da[] = {P(dsum), P(dout), P(out), I(S), I(H), I(hs)};
  run("attn_bwd_dot", fn_of(DHX_K_ATTN_BWD_DOT), da, rows, (buf *[]){&dsum}, 1);
  expect_close("attn_bwd_dot", &dsum, rds, rows);
  for (int acc = 0; acc <= 1; acc++) {
    // The gradients of q, k and v: one buffer each (the fused layout: one for all three,
    // each kernel writing its own columns).
    buf dq = bnew(nq), dk = bnew(fused ? 1 : nk), dv = bnew(fused ? 1 : nk);
    brand(&dq, -1, 1), brand(&dk, -1, 1), brand(&dv, -1, 1);
    buf *DK = fused ? &dq : &dk, *DV = fused ? &dq : &dv;
    int64_t nd = fused ? nq : nk;
    double *wq = malloc((size_t)nq * 8), *wk = malloc((size_t)nd * 8), *wv = malloc((size_t)nd * 8);
    for (int64_t x = 0; x < nq; x++) wq[x] = rdq[x] + (acc ? dq.r[x] : 0);
    for (int64_t x = 0; x < nd; x++) {
      wk[x] = rdk[x] + (acc ? DK->r[x] : 0);
      wv[x] = rdv[x] + (acc ? DV->r[x] : 0);
    }
    if (fused) {  // one buffer: each third from its own gradient (the rest untouched)
      for (int64_t x = 0; x < nq; x++) {
        int col = (int)(x % qs);
        double start = acc ? dq.r[x] : 0;
        wq[x] = col < D ? rdq[x] + start : col < 2 * D ? rdk[x] + start : rdv[x] + start;
      }
    }
    int64_t f = flags | (acc ? 3 : 0);
    dhx_slot qa[] = {P(dq), P(q), P(*K), P(*V), P(dout), P(lse), P(dsum), I(S), I(H), I(G),
                     I(hs), I(qs), I(ks), I(f), F(scale)};
    dhx_slot ka[] = {P(*DK), P(*DV), P(q), P(*K), P(*V), P(dout), P(lse), P(dsum), I(S), I(H),
                     I(G), I(hs), I(qs), I(ks), I(f), F(scale)};
    if (fused) {
      run("attn_bwd_dq", fn_of(DHX_K_ATTN_BWD_DQ), qa, rows, (buf *[]){&dq}, 1);
      run("attn_bwd_dkv", fn_of(DHX_K_ATTN_BWD_DKV), ka, (int64_t)B * G * S, (buf *[]){&dq}, 1);
      snprintf(what, sizeof what, "attn_bwd d(qkv) fused%s", acc ? " accumulated" : "");
      expect_close(what, &dq, wq, nq);
    } else {
      run("attn_bwd_dq", fn_of(DHX_K_ATTN_BWD_DQ), qa, rows, (buf *[]){&dq}, 1);
      run("attn_bwd_dkv", fn_of(DHX_K_ATTN_BWD_DKV), ka, (int64_t)B * G * S,
          (buf *[]){&dk, &dv}, 2);
      snprintf(what, sizeof what, "attn_bwd dq G%d%s", G, acc ? " accumulated" : "");
      expect_close(what, &dq, wq, nq);
      snprintf(what, sizeof what, "attn_bwd dk G%d%s", G, acc ? " accumulated" : "");
      expect_close(what, &dk, wk, nk);
      snprintf(what, sizeof what, "attn_bwd dv G%d%s", G, acc ? " accumulated" : "");
      expect_close(what, &dv, wv, nk);
    }
    free(wq), free(wk), free(wv);
    bfree(&dq), bfree(&dk), bfree(&dv);
  }
  free(rout), free(rlse), free(rdq), free(rdk), free(rdv), free(rds), free(sc), free(dp);
  bfree(&q), bfree(&kk), bfree(&v), bfree(&out), bfree(&lse), bfree(&dout), bfree(&dsum);
}

int main(int argc, char **argv) {
  CHECK(argc == 2 && (!strcmp(argv[1], "f32") || !strcmp(argv[1], "f64")),
        "usage: test_cg_reference f32|f64");
  TY = strcmp(argv[1], "f64") == 0 ? DHX_KT_F64 : DHX_KT_F32;
  ES = TY == DHX_KT_F64 ? 8 : 4;
  RTOL = TY == DHX_KT_F64 ? 1e-12 : 1e-5;
  rng_seed(TY == DHX_KT_F64 ? 7 : 3);

  cgt_init(&T);
  cgt_add_all(&T, TY);
  // Shapes used below that cgt_add_all does not cover.
  dhx_kernel_spec extra[] = {spec_bias_gelu(TY, 5), spec_pos_add(TY, 3 * 11),
                             spec_two_mods(TY, 7, 33)};
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) cgt_add(&T, &extra[i]);
  cgt_build(&T);
  printf("kernels.so with %d kernels (%s)\n", dhx_codegen_count(T.cg), argv[1]);

  test_embed(7, 37, 11);
  test_embed(9, 70, 5);
  test_layernorm(7, 37);
  test_layernorm(3, 130);
  test_layernorm(2, 1);
  test_softmax(3, 5);
  test_softmax(2, 37);
  test_softmax(1, 1);
  test_xent(7, 37);
  test_xent(3, 101);
  test_embed_vp(9, 37, 5, 2);
  test_embed_vp(11, 70, 3, 4);
  test_xent_vp(7, 37, 2, 3);
  test_xent_vp(9, 26, 4, 4);
  test_xent_vp(6, 101, 2, 5);
  test_adamw(7 * 37 + 3);
  test_grad_norm(1);
  test_grad_norm(37);
  test_sumsq(1000, 64);
  test_sumsq(37, 1000);
  test_colsum(7, 37);
  test_colsum(5, 70);
  test_colsum(3, 3);
  test_bias_gelu(7, 37);
  test_bias_gelu(3, 768);
  test_bias_gelu(9, 5);
  test_pos_add(3, 5 * 7);
  test_pos_add(4, 3 * 11);
  test_gelu_grad(7 * 37);
  test_acc_add(7 * 37);
  test_mix(7 * 37);
  test_two_mods(3 * 37, 10, 4);
  test_two_mods(200, 7, 33);
  test_rmsnorm(7, 37);
  test_rmsnorm(3, 130);
  test_rmsnorm(5, 3);  // (C = 1 is degenerate: the output is +-gamma and dx cancels to ~eps)
  test_rope(2, 7, 3, 8, 10000);
  test_attention(2, 7, 3, 3, 5, true);
  test_attention(1, 37, 2, 2, 40, true);
  test_attention(2, 9, 4, 2, 6, false);
  test_attention(1, 5, 6, 1, 3, false);
  test_attention(1, 1, 1, 1, 1, false);
  test_rope(1, 3000, 2, 6, 500000);  // angles of thousands of radians
  test_permute(2, 7, 3, 5);
  test_permute(3, 1, 4, 9);
  test_silu(7 * 37);

  cgt_done(&T);
  printf("%d checks passed\n", nchecks);
  return 0;
}
