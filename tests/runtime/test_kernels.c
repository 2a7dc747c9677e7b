// test_kernels.c — hand-written kernels for the runtime tests, following runtime/kernel_abi.h
// (the generated ones come from dhxc). Built as a shared library that tests copy into their
// plan directories as kernels.so. Each comment gives the signature and the index space.
//
// Like a kernels.so from dhxc, the library exports beside each kernel dhxk_NAME its signature
// and access descriptors as dhxabi_NAME (runtime/plan_util.h), encoded when the library is
// loaded from the table at the end of this file. That table is the one description of these
// kernels: testlib's plans take their kernel table entries from the exports. Built with
// DHX_TEST_KERNELS_WITHOUT_ABI, the library stands for a kernels.so from before the exports.
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kernel_abi.h"
#include "plan_util.h"

#define EXPORT __attribute__((visibility("default")))

// (out f32[rows, V], tokens i32[rows], i64 V)   idx = row: out[r] = one-hot(tokens[r])
EXPORT void dhxk_onehot(const dhx_slot *a, int64_t begin, int64_t end) {
  float *out = a[0].p;
  const int32_t *tok = a[1].p;
  int64_t V = a[2].i;
  for (int64_t r = begin; r < end; r++)
    for (int64_t j = 0; j < V; j++) out[r * V + j] = j == tok[r] ? 1.0f : 0.0f;
}

// (y f32[rows, V], b f32[V], i64 V)   idx = row: y[r] += b
EXPORT void dhxk_add_rows(const dhx_slot *a, int64_t begin, int64_t end) {
  float *y = a[0].p;
  const float *b = a[1].p;
  int64_t V = a[2].i;
  for (int64_t r = begin; r < end; r++)
    for (int64_t j = 0; j < V; j++) y[r * V + j] += b[j];
}

// (loss f32[rows], dy f32[rows, V], y f32[rows, V], targets i32[rows], i64 V, f scale)
//   idx = row: loss[r] = 0.5 |y[r] - onehot(t[r])|^2;  dy[r] = scale (y[r] - onehot(t[r]))
EXPORT void dhxk_sqerr(const dhx_slot *a, int64_t begin, int64_t end) {
  float *loss = a[0].p, *dy = a[1].p;
  const float *y = a[2].p;
  const int32_t *t = a[3].p;
  int64_t V = a[4].i;
  float scale = (float)a[5].f;
  for (int64_t r = begin; r < end; r++) {
    double sum = 0;
    for (int64_t j = 0; j < V; j++) {
      float d = y[r * V + j] - (j == t[r] ? 1.0f : 0.0f);
      sum += 0.5 * (double)d * d;
      dy[r * V + j] = scale * d;
    }
    loss[r] = (float)sum;
  }
}

// (db f32[V], dy f32[rows, V], i64 rows, i64 V)   idx = column j: db[j] += sum_r dy[r, j]
EXPORT void dhxk_colsum_acc(const dhx_slot *a, int64_t begin, int64_t end) {
  float *db = a[0].p;
  const float *dy = a[1].p;
  int64_t rows = a[2].i, V = a[3].i;
  for (int64_t j = begin; j < end; j++) {
    float s = 0;
    for (int64_t r = 0; r < rows; r++) s += dy[r * V + j];
    db[j] += s;
  }
}

// (out f32[chunks], x f32[count], i64 count, i64 chunk)   idx = chunk k: sum of squares
EXPORT void dhxk_sumsq(const dhx_slot *a, int64_t begin, int64_t end) {
  float *out = a[0].p;
  const float *x = a[1].p;
  int64_t count = a[2].i, chunk = a[3].i;
  for (int64_t k = begin; k < end; k++) {
    double s = 0;
    for (int64_t i = k * chunk; i < (k + 1) * chunk && i < count; i++) s += (double)x[i] * x[i];
    out[k] = (float)s;
  }
}

// (p, g, m, v, f lr, f b1, f b2, f eps, f wd, f bc1, f bc2, clip f32[1])   idx = element;
// a NaN clip scale leaves everything as it is
EXPORT void dhxk_adamw(const dhx_slot *a, int64_t begin, int64_t end) {
  float *p = a[0].p, *g = a[1].p, *m = a[2].p, *v = a[3].p;
  float lr = (float)a[4].f, b1 = (float)a[5].f, b2 = (float)a[6].f, eps = (float)a[7].f;
  float wd = (float)a[8].f, bc1 = (float)a[9].f, bc2 = (float)a[10].f;
  float gs = *(const float *)a[11].p;
  if (isnan(gs)) return;
  for (int64_t i = begin; i < end; i++) {
    float gi = g[i] * gs;
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] -= lr * ((m[i] / bc1) / (sqrtf(v[i] / bc2) + eps) + wd * p[i]);
  }
}

// (scale f32[1], norm f32[1], partials f32[count], i64 count, d max_norm)   idx 0: what GRAD_NORM
// defines (plan.h); the CPU backend computes it itself, a plan only names the kernel
EXPORT void dhxk_grad_norm_f32(const dhx_slot *a, int64_t begin, int64_t end) {
  const float *partials = a[2].p;
  for (int64_t k = begin; k < end; k++) {
    double sum = 0;
    for (int64_t i = 0; i < a[3].i; i++) sum += partials[i];
    double norm = sqrt(sum), max_norm = a[4].f;
    double scale = max_norm > 0 ? fmin(1.0, max_norm / (norm + 1e-6)) : 1.0;
    *(float *)a[0].p = isfinite(norm) ? (float)scale : NAN;
    *(float *)a[1].p = (float)norm;
  }
}

// (y f32[n], x f32[n], f alpha)   idx = element: y += alpha x
EXPORT void dhxk_axpy(const dhx_slot *a, int64_t begin, int64_t end) {
  float *y = a[0].p;
  const float *x = a[1].p;
  float alpha = (float)a[2].f;
  for (int64_t i = begin; i < end; i++) y[i] += alpha * x[i];
}

// (y f32[n], f value)   idx = element: y = value
EXPORT void dhxk_fill(const dhx_slot *a, int64_t begin, int64_t end) {
  float *y = a[0].p;
  for (int64_t i = begin; i < end; i++) y[i] = (float)a[1].f;
}

// (flag f32[1], i64 ms)   idx 0: sleeps `ms` milliseconds, then sets flag = 1. Stands in for a
// long computation without using a core, so overlap tests do not depend on machine load.
EXPORT void dhxk_sleep_ms(const dhx_slot *a, int64_t begin, int64_t end) {
  float *flag = a[0].p;
  for (int64_t i = begin; i < end; i++) {
    struct timespec ts = {a[1].i / 1000, (a[1].i % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    flag[0] = 1.0f;
  }
}

#ifndef DHX_TEST_KERNELS_WITHOUT_ABI
// ---- what each kernel reaches through its pointer arguments -----------------------------------
// Argument numbers are positions in the signatures; signature codes as testlib's tb_kernel:
// p pointer, i i64, f f32 scalar, d f64 scalar.

#define ABI(name) EXPORT char dhxabi_##name[DHX_KERNEL_ABI_MAX];
ABI(onehot) ABI(add_rows) ABI(sqerr) ABI(colsum_acc) ABI(sumsq) ABI(adamw) ABI(axpy) ABI(fill)
ABI(sleep_ms) ABI(grad_norm_f32)

#define ACC(form, flags, x, y) {form, flags, 4, x, y, -1, 0}
#define ELEMS(x, flags) ACC(DHX_ACC_ELEMS, flags, x, -1)
#define W DHX_ACC_WRITES
static const struct {
  char *abi;  // the export this entry fills
  const char *sig;
  dhx_plan_access access[DHX_MAX_ARGS];  // of the pointer arguments
} TEST_KERNELS[] = {
    {dhxabi_onehot, "ppi", {ELEMS(2, W), ELEMS(-1, 0)}},
    {dhxabi_add_rows, "ppi", {ELEMS(2, W), ACC(DHX_ACC_FIXED, 0, 2, -1)}},
    {dhxabi_sqerr, "ppppif", {ELEMS(-1, W), ELEMS(4, W), ELEMS(4, 0), ELEMS(-1, 0)}},
    {dhxabi_colsum_acc, "ppii", {ELEMS(-1, W), ACC(DHX_ACC_COLUMNS, 0, 2, 3)}},
    {dhxabi_sumsq, "ppii", {ELEMS(-1, W), ACC(DHX_ACC_CHUNKS, 0, 2, 3)}},
    {dhxabi_adamw, "ppppfffffffp", {ELEMS(-1, W), ELEMS(-1, 0), ELEMS(-1, W), ELEMS(-1, W),
                                    [11] = ACC(DHX_ACC_FIXED, 0, -1, -1)}},
    {dhxabi_axpy, "ppf", {ELEMS(-1, W), ELEMS(-1, 0)}},
    {dhxabi_fill, "pf", {ELEMS(-1, W)}},
    {dhxabi_sleep_ms, "pi", {ACC(DHX_ACC_FIXED, W, -1, -1)}},
    {dhxabi_grad_norm_f32, "pppid", {ACC(DHX_ACC_FIXED, W, -1, -1), ACC(DHX_ACC_FIXED, W, -1, -1),
                                     ACC(DHX_ACC_FIXED, 0, 3, -1)}},
};

__attribute__((constructor)) static void encode_exports(void) {
  for (size_t i = 0; i < sizeof TEST_KERNELS / sizeof TEST_KERNELS[0]; i++) {
    dhx_plan_kernel k;
    memset(&k, 0, sizeof k);
    for (const char *c = TEST_KERNELS[i].sig; *c; c++, k.nargs++) {
      k.arg_types[k.nargs] = *c == 'p' ? DHX_KARG_PTR : *c == 'i' ? DHX_KARG_I64
                             : *c == 'f' ? DHX_KARG_F32 : DHX_KARG_F64;
      k.access[k.nargs] = *c == 'p' ? TEST_KERNELS[i].access[k.nargs]
                                    : (dhx_plan_access){.x = -1, .y = -1, .z = -1};
    }
    if (!dhx_kernel_abi_encode(&k, TEST_KERNELS[i].abi)) TEST_KERNELS[i].abi[0] = 0;
  }
}
#endif
