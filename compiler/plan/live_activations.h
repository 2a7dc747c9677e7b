// live_activations.h — how many bytes of activations a simulated run holds at once, against the
// arena the memory planner laid out for them (dhxc --simulate: "activations").
//
// The planner gives two activations the same bytes only where the plan orders one's last use
// before the other's first use (streams and events), so its layout is safe for every order the
// runtime may run the plan in. The simulator runs one of those orders. The most activation
// bytes live at once in it is what a layout made for that one order would need: the arena's
// activation region above it is what the planner pays for orders the plan leaves open (two
// free paired strands, for example, are not ordered against each other at all).
#ifndef DHX_LIVE_ACTIVATIONS_H
#define DHX_LIVE_ACTIVATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"
#include "simulate.h"

// Working memory that one caller reuses across runs (a W-folded stage holds hundreds of
// thousands of activations, and fresh pages each time cost more than the count). Zero it to
// start; free it with dhx_live_scratch_free.
typedef struct dhx_live_scratch {
  int64_t *act_bytes;          // per buffer: its bytes if it holds activations, else 0
  int32_t *born_at, *dies_at;  // per buffer: the instruction of its first start, of its last end
  int64_t *born, *dead;        // per instruction: the bytes born at its start, dead at its end
  int32_t *next;               // per instruction: the next one on its stream, -1 at the end
  size_t cap_buffers, cap_instrs;
} dhx_live_scratch;

// The most bytes of activation buffers (DHX_BUF_ACT) of rank `rank` live at once in `res`, a
// run of program `prog`: a buffer is live from the start of the first instruction that names
// it to the end of the last. `first` is the index of the rank's first slice in res->slices.
int64_t dhx_live_activation_peak(const dhx_plan *p, int prog, uint32_t rank,
                                 const dhx_sim_result *res, size_t first, dhx_live_scratch *s);
void dhx_live_scratch_free(dhx_live_scratch *s);

// The bytes the arena of `r` spans with its activation buffers (from the lowest offset of one to
// the highest end), 0 when it has none.
int64_t dhx_activation_region_bytes(const dhx_plan_rank *r);

#endif
