// turns.h — the order of a CPU rank's compute across its streams (turns.c, plan.h: turn).
#ifndef DHX_TURNS_H
#define DHX_TURNS_H

#include <stdbool.h>
#include <stddef.h>

#include "cost.h"
#include "plan.h"

// Gives every compute instruction of each program in which some rank computes on two or more
// streams its turn, from a lead-first simulation of that program under `m`. False with err
// when the program cannot run (a lowering bug: the simulator says where it hangs).
bool dhx_plan_assign_turns(dhx_plan *p, const dhx_cost_model *m, char *err, size_t errlen);

#endif
