// verify_ranks.h — proves that the ranks of a plan cannot hang waiting for each other.
//
// The validator checks each rank's programs, and each communicator's sequence of collectives,
// on its own. A plan can pass all of that and still hang when waits cross ranks and streams: a
// WAIT on an event recorded after a receive whose send sits behind a collective the waiting
// rank never reaches, two communicators used in opposite orders, two peers that both send
// first. This verifier runs every program kind on all ranks together (simulate.h) with the
// runtime's rules, sends blocking until their receives start.
#ifndef DHX_VERIFY_RANKS_H
#define DHX_VERIFY_RANKS_H

#include <stdbool.h>
#include <stddef.h>

#include "plan.h"

// Checks every program kind of a plan that dhx_plan_validate accepted: each collective meets
// the same kind, count and dtype on every member, each SEND its RECV, and no set of ranks and
// streams waits on itself. Returns false at the first program that fails, with err naming the
// program, the two instructions (rank, stream, index, what, note) and why.
bool dhx_plan_verify_ranks(const dhx_plan *p, char *err, size_t errlen);

#endif
