// elaborate.h — model instance → operator graph.
#ifndef DHX_ELABORATE_H
#define DHX_ELABORATE_H

#include "front.h"
#include "graph.h"

// Evaluates `model NAME = CALLEE(args)` with the given micro-batch size into `g` (initialized
// by the caller). Errors are reported with source locations; returns false on error.
bool dhx_elaborate(const dhx_program *prog, const dhx_item *inst, int micro_batch,
                   dhx_graph *g);

// Notes after an error in an elaborated model: each layer call from the innermost (`site`,
// an index into g->sites; -1 for the model body) out, then the model instance (unless the
// error `at` is on it), then each argument of the instance in `from` (bit i: argument i)
// that a --set gave.
void dhx_note_instantiation(const dhx_graph *g, int site, uint64_t from, const dhx_loc *at);

#endif
