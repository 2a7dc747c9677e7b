// cg_test.h — shared by the code generator tests and the kernel benchmark: build kernels.so
// from specs into a temporary directory, load it, look kernels up, run them over index
// ranges split the way the runtime's threads would, and build elementwise specs.
#ifndef DHX_CG_TEST_H
#define DHX_CG_TEST_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel_abi.h"
#include "kernels.h"
#include "plan.h"  // the kernel table entries the tests read

typedef struct cgt {
  dhx_codegen *cg;
  char dir[256];
  char so_path[300];
  void *so;
} cgt;

// Creates the code generator and a temporary directory.
void cgt_init(cgt *t);
// Adds a kernel; aborts the test on failure. Returns its table index.
int cgt_add(cgt *t, const dhx_kernel_spec *s);
// Emits kernels.so and dlopens it; aborts on failure.
void cgt_build(cgt *t);
// The host function of a spec (added before cgt_build).
dhx_kernel_fn cgt_fn(cgt *t, const dhx_kernel_spec *s);
// The GPU thread code dhxg_NAME of kernel `name` (built with DHX_CODEGEN_GRID_ENTRIES=1).
dhx_grid_fn cgt_grid_fn(cgt *t, const char *name);
// The text of PTX entry `name` (up to the next entry) in a copy to free; aborts the test when
// the PTX has no such entry.
char *cgt_entry_text(const char *ptx, const char *name);
// Unloads, removes the temporary files.
void cgt_done(cgt *t);
// A file's whole text, NUL-terminated, to free; aborts the test when it cannot be read.
char *cgt_slurp(const char *path);

// Runs fn over [0, n) as `pieces` consecutive ranges (1 = one call), including an empty range,
// with uneven cut points (deterministic from `seed`).
void cgt_run_split(dhx_kernel_fn fn, const dhx_slot *args, int64_t n, int pieces, unsigned seed);

// Specs.
dhx_kernel_spec cgt_spec(dhx_kernel_kind kind, dhx_ktype type);
typedef struct cgt_ew {
  dhx_kernel_spec k;
} cgt_ew;
void ew_init(cgt_ew *b, dhx_ktype type);
int ew_load(cgt_ew *b, int64_t mod /* 0 = full */);
int ew_scalar(cgt_ew *b);
int ew_const(cgt_ew *b, double v);
int ew_op(cgt_ew *b, dhx_ew_op op, int a, int c);
void ew_store(cgt_ew *b, int node, bool accumulate);

// The fused elementwise specs the tests use (shapes of what the graph lowering produces).
//   bias_gelu:  pre = y + bias[i % C];  out = gelu(pre)        (outputs: pre, out; in: y, bias)
//   pos_add:    out = x + wpe[i % TC]                          (in: x, wpe)
//   gelu_grad:  dx (+)= gelu_grad(x, dy)                       (in: x, dy)
//   silu_grad:  dx (+)= silu_grad(x, dy)                       (in: x, dy)
//   acc_add:    out += a                                       (in: a)
//   mix:        o0 = a*s0 + b/s1 - 0.5;  o1 (+)= tanh(a) * exp(-b) + sqrt(b*b + s1);
//               o2 = log(a*a + 1) - neg(b)                     (in: a, b; scalars s0, s1)
//   two_mods:   out = x + u[i % m1] * v[i % m2]                (in: x, u, v)
dhx_kernel_spec spec_bias_gelu(dhx_ktype t, int64_t C);
dhx_kernel_spec spec_pos_add(dhx_ktype t, int64_t TC);
dhx_kernel_spec spec_gelu_grad(dhx_ktype t, bool acc);
dhx_kernel_spec spec_silu_grad(dhx_ktype t, bool acc);  // dx (+)= silu_grad(x, dy)
dhx_kernel_spec spec_acc_add(dhx_ktype t);
dhx_kernel_spec spec_mix(dhx_ktype t, bool acc);
dhx_kernel_spec spec_two_mods(dhx_ktype t, int64_t m1, int64_t m2);
dhx_kernel_spec spec_unary(dhx_ktype t, dhx_ew_op op);  // out = op(x)
// Adds every catalogue kind and the specs above (a few parameterisations) for type t; with
// DHX_KT_BF16_MIXED, their f32 kernels with every floating pointer they allow stored as bf16.
#define DHX_KT_BF16_MIXED ((dhx_ktype)100)
void cgt_add_all(cgt *t, dhx_ktype type);

// Deterministic random numbers (xorshift), uniform in [lo, hi).
void rng_seed(uint64_t s);
double rng_uniform(double lo, double hi);
int rng_int(int n);

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                       \
      fprintf(stderr, "\n");                                              \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

#endif
