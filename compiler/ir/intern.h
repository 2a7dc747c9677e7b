// intern.h — one shared, immutable copy of each distinct fused elementwise spec, GEMM
// description and note that low-level ops point to.
//
// A stage of a paper-scale pipeline holds hundreds of thousands of ops, copies of a few hundred
// distinct kernels, GEMMs and notes, and every pass walks all of them: carrying each inline
// made an op 752 bytes, most of it a fused spec's tables and a 96-byte note. Interned, an op holds a
// pointer, copies of an op share it, and a pass that changes an op's kernel or GEMM interns the
// changed value (never writes through the pointer).
//
// The copies live until the process exits and are shared by every graph and thread (stages
// are lowered concurrently): the functions are thread-safe. Two values are the same when every
// field the value uses is equal bit for bit (-0.0 is not 0.0; unused table entries do not
// count).
#ifndef DHX_INTERN_H
#define DHX_INTERN_H

#include <stddef.h>
#include <stdint.h>

#include "kernel_spec.h"
#include "plan_base.h"

const dhx_ew_spec *dhx_intern_ew(const dhx_ew_spec *s);
const dhx_plan_gemm *dhx_intern_gemm(const dhx_plan_gemm *g);
// An op's note: its first DHX_NAME_MAX - 1 bytes (a plan instruction's note holds no more),
// NUL-terminated; NULL is "".
const char *dhx_intern_note(const char *s);

// The 64-bit FNV-1a hash of n bytes (the interned values' keys, fused kernels' names).
uint64_t dhx_fnv1a(const uint8_t *p, size_t n);

// Distinct values interned so far (tests).
int dhx_intern_count(void);

#endif
