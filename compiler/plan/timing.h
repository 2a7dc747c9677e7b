// timing.h — wall time per compiler pass, for `dhxc --time-passes` and bench/plan_scale.
#ifndef DHX_TIMING_H
#define DHX_TIMING_H

#include <stdbool.h>
#include <stdio.h>

// Off by default; when off, the calls below cost one branch.
void dhx_timing_enable(bool on);
bool dhx_timing_enabled(void);
// Starts charging wall time to pass `name` (a string literal), ending the previous pass.
void dhx_timing_pass(const char *name);
// Ends the current pass.
void dhx_timing_stop(void);
// One line per pass, in first-use order, with its share of the total.
void dhx_timing_report(FILE *f);

#endif
