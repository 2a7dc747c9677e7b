// elaborate.h — model instance → operator graph.
#ifndef DHX_ELABORATE_H
#define DHX_ELABORATE_H

#include "../front/front.h"
#include "graph.h"

// Evaluates `model NAME = CALLEE(args)` with the given micro-batch size into `g` (initialized
// by the caller). Errors are reported with source locations; returns false on error.
bool dhx_elaborate(const dhx_program *prog, const dhx_item *inst, int micro_batch,
                   dhx_graph *g);

#endif
