// timeline_svg.h — a simulated step as an SVG picture a person can read in any browser: a row
// per stream of each rank (compute, communication), time left to right, a colour per phase
// (BEGIN, MICRO compute, STEP compute, collectives, point-to-point). Each pixel column of a row
// shows the phase busiest in it, so the file stays small however long the step.
#ifndef DHX_TIMELINE_SVG_H
#define DHX_TIMELINE_SVG_H

#include <stdio.h>

#include "plan.h"
#include "simulate.h"

typedef struct dhx_svg_timeline dhx_svg_timeline;

// Starts the picture of `p`'s step of `step_time_s` seconds on `f` (title: `title`).
dhx_svg_timeline *dhx_svg_timeline_begin(const dhx_plan *p, double step_time_s,
                                         const char *title, FILE *f);
// Adds one program run (a dhx_step_run_fn; ctx is the timeline).
void dhx_svg_timeline_run(void *ctx, int prog, const char *run, const dhx_sim_result *res);
// Writes what is left and the closing tag; frees the timeline.
void dhx_svg_timeline_end(dhx_svg_timeline *t);

#endif
