// verify_memory.h — proves that no two buffers that may be live at the same time share bytes.
//
// The memory planner lets tensors share arena bytes when every use of one happens before every
// use of the other, in the order of streams and RECORD/WAIT events (happens_before.h, whose
// clocks this checker uses too). This checker works on the plan alone (buffers, instructions,
// kernel access descriptors), so it judges what dhxrun will run whatever pass produced it.
#ifndef DHX_VERIFY_MEMORY_H
#define DHX_VERIFY_MEMORY_H

#include <stdbool.h>
#include <stddef.h>

#include "plan.h"

// Checks every rank of a plan that dhx_plan_validate accepted. Two buffers whose bytes overlap
// are allowed only when
//   * one is a window over persistent state (a scratch buffer such as "grads[all]" that covers
//     whole parameter, gradient or moment buffers and nothing else) and the other is one of the
//     buffers it covers, or both are such windows; or
//   * neither must keep its bytes (below) and they are used in different programs, or in the
//     same program with every access of one happening before every access of the other, the
//     later one starting with a write that happens before its other accesses.
// A buffer keeps its bytes to itself when its kind persists across programs (params, grads,
// optimizer moments, tokens, targets, losses), when more than one program uses it, or when a
// program reads it before writing it (it carries a value in from outside that program).
// Returns false at the first violation, with err naming the rank, program, both buffers and
// their byte ranges, and the two instructions that may run at the same time or in the wrong
// order.
bool dhx_plan_verify_memory(const dhx_plan *plan, char *err, size_t errlen);

#endif
