// plan_exec.h — runs a validated plan's programs once on the CPU backend with every buffer in
// a guarded place of its own, so that an access outside a buffer faults (a PROT_NONE page after
// each buffer) or is reported by AddressSanitizer (the slack before the guard is poisoned).
// The plan-loader fuzzer and the regression test use it to show that what the validator
// accepts stays inside its buffers when it runs.
#ifndef DHX_PLAN_EXEC_H
#define DHX_PLAN_EXEC_H

#include <stdbool.h>
#include <stddef.h>

#include "plan.h"

// Plans bigger than this are not run (a validated plan may legitimately be huge; the point is
// memory safety, not endurance): bytes of all buffers of a rank, the index space of a kernel,
// multiply-adds of a GEMM.
#define PLAN_EXEC_MAX_BYTES (64LL << 20)
#define PLAN_EXEC_MAX_INDICES (1LL << 22)
#define PLAN_EXEC_MAX_FLOPS (1LL << 28)

typedef enum { PLAN_EXEC_RAN, PLAN_EXEC_TOO_BIG, PLAN_EXEC_FAILED } plan_exec_result;

// Runs BEGIN, MICRO, STEP and EVAL of every rank (one after another, each program's
// instructions in their order; an all-reduce touches its region on this rank only) with the
// kernels of `kernels_so`. The tokens and targets buffers hold valid token ids, as the runtime
// keeps them. `why` says why a plan was not run.
plan_exec_result plan_exec_run(const dhx_plan *plan, const char *kernels_so, char *why,
                               size_t whylen);

// Runs every kernel launch of rank 0 on its own, each pointer argument in a buffer of exactly
// the bytes its access descriptor declares, ending right at a guard page: a kernel that reaches
// further than its descriptor says faults. Counts the launches run.
plan_exec_result plan_exec_kernels_tight(const dhx_plan *plan, const char *kernels_so,
                                         int *launches, char *why, size_t whylen);

#endif
