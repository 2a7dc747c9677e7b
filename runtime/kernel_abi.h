// kernel_abi.h — how the CPU backend calls a generated kernel in kernels.so.
//
// Every kernel is exported as
//     void dhxk_NAME(const dhx_slot *args, int64_t begin, int64_t end);
// and computes the indices [begin, end) of its index space (rows, elements or columns, as the
// kernel defines). Arguments arrive in the order of the kernel's signature: pointers in .p,
// integers in .i, and floating-point scalars in .f as double (an f32 kernel rounds them).
// The runtime splits [0, n) into disjoint ranges across its worker threads; a kernel is
// written so that distinct indices never write the same memory.
//
// On the GPU the same kernel is a PTX entry NAME(typed params..., i64 n) that computes one
// index per thread: idx = ctaid.x * ntid.x + tid.x, guarded by idx < n.
#ifndef DHX_KERNEL_ABI_H
#define DHX_KERNEL_ABI_H

#include <stdint.h>

typedef union dhx_slot {
  void *p;
  int64_t i;
  double f;
} dhx_slot;

typedef void (*dhx_kernel_fn)(const dhx_slot *args, int64_t begin, int64_t end);

#define DHX_KERNEL_PREFIX "dhxk_"

// Beside each kernel of one GPU thread per index, kernels.so holds the host's emulation of its
// PTX entry: every thread of blocks [ctaid_begin, ctaid_end) of a grid of nctaid blocks of
// ntid threads, over the index space [0, n), run one after the other through the PTX entry's
// thread code (grid-stride loop, wide path). The runtime never calls it; the GPU tests'
// emulated driver launches kernels through it.
typedef void (*dhx_grid_fn)(const dhx_slot *args, int64_t n, int64_t ntid, int64_t nctaid,
                            int64_t ctaid_begin, int64_t ctaid_end);

#define DHX_GRID_PREFIX "dhxg_"

#endif
