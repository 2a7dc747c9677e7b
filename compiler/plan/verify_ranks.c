// verify_ranks.c — every program kind through the simulator, with no durations: the run is a
// pure check of matching and deadlock (see simulate.h for the rules).
#include "verify_ranks.h"

#include "simulate.h"

bool dhx_plan_verify_ranks(const dhx_plan *p, char *err, size_t errlen) {
  for (int prog = 0; prog < DHX_PROG_COUNT; prog++)
    if (!dhx_simulate(p, prog, NULL, NULL, NULL, NULL, err, errlen)) return false;
  return true;
}
