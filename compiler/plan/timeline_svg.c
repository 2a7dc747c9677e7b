// timeline_svg.c — the simulated step as SVG (see the header).
#include "timeline_svg.h"

#include <stdlib.h>

#define WIDTH 1600.0  // pixels for the step
#define LEFT 120.0    // the row labels
#define TOP 50.0
#define ROW 12.0
#define GAP 4.0       // between ranks

enum { PH_BEGIN, PH_MICRO, PH_STEP, PH_COLLECTIVE, PH_P2P, PH_COUNT };
static const char *const phase_colour[PH_COUNT] = {"#9e9e9e", "#3f7fbf", "#3a9a4a", "#e08a1e",
                                                   "#9b4fb0"};
static const char *const phase_name[PH_COUNT] = {"BEGIN", "MICRO compute", "STEP compute",
                                                 "collective", "send / receive"};

struct dhx_svg_timeline {
  const dhx_plan *p;
  FILE *f;
  double scale;  // pixels per second
  float *busy;   // per row (rank, compute or comm), pixel column and phase: seconds busy
};

// Two rows per rank: its compute stream, then its communication streams together.
static double row_y(uint32_t rank, uint32_t stream) {
  return TOP + rank * (2 * ROW + GAP) + (stream ? ROW : 0);
}

static float *bin(dhx_svg_timeline *t, uint32_t rank, uint32_t stream, int column) {
  return &t->busy[(((size_t)rank * 2 + stream) * (size_t)WIDTH + (size_t)column) * PH_COUNT];
}

// One row as rectangles: each pixel column takes the phase busiest in it, and neighbouring
// columns of one phase make one rectangle.
static void draw_row(dhx_svg_timeline *t, uint32_t rank, uint32_t stream) {
  int open = -1, from = 0;
  for (int c = 0; c <= (int)WIDTH; c++) {
    int best = -1;
    if (c < (int)WIDTH) {
      float *b = bin(t, rank, stream, c), most = 0;
      for (int k = 0; k < PH_COUNT; k++)
        if (b[k] > most) most = b[best = k];
    }
    if (best == open) continue;
    if (open >= 0)
      fprintf(t->f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%d\" height=\"%.0f\" fill=\"%s\"/>\n",
              LEFT + from, row_y(rank, stream), c - from, ROW - 1, phase_colour[open]);
    open = best;
    from = c;
  }
}

static void axis_and_legend(dhx_svg_timeline *t, double step, double bottom) {
  double tick = 1e-6;  // a round tick near a tenth of the step
  while (tick * 10 < step) tick *= 10;
  if (step / tick < 4) tick /= 2;
  for (double s = 0; s <= step * 1.0001 && tick > 0; s += tick) {
    double x = LEFT + s * t->scale;
    fprintf(t->f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n"
            "<text x=\"%.1f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"middle\">%.3g s</text>\n",
            x, TOP - 4, x, bottom, x, TOP - 8, s);
  }
  for (int k = 0; k < PH_COUNT; k++)
    fprintf(t->f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"10\" fill=\"%s\"/>"
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">%s</text>\n", LEFT + k * 160.0,
            bottom + 10, phase_colour[k], LEFT + k * 160.0 + 14, bottom + 19, phase_name[k]);
}

dhx_svg_timeline *dhx_svg_timeline_begin(const dhx_plan *p, double step_time_s,
                                         const char *title, FILE *f) {
  dhx_svg_timeline *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->p = p;
  t->f = f;
  t->scale = step_time_s > 0 ? WIDTH / step_time_s : 0;
  t->busy = calloc((size_t)(p->nranks ? p->nranks : 1) * 2 * (size_t)WIDTH * PH_COUNT,
                   sizeof(float));
  if (!t->busy) abort();
  double bottom = row_y(p->nranks, 0);
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
          "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
          "<text x=\"%.0f\" y=\"18\" font-size=\"14\">", LEFT + WIDTH + 20, bottom + 40, LEFT);
  for (const char *c = title; *c; c++)  // the title is a path: escape what XML would read
    if (*c == '<') fputs("&lt;", f);
    else if (*c == '&') fputs("&amp;", f);
    else fputc(*c, f);
  fprintf(f, ": one simulated step, %.4g s</text>\n", step_time_s);
  axis_and_legend(t, step_time_s, bottom);
  for (uint32_t r = 0; r < p->nranks; r++)
    fprintf(f, "<text x=\"4\" y=\"%.0f\" font-size=\"9\">rank %u compute</text>"
            "<text x=\"4\" y=\"%.0f\" font-size=\"9\">rank %u comm</text>\n",
            row_y(r, 0) + ROW - 3, r, row_y(r, 1) + ROW - 3, r);
  return t;
}

static int phase_of(int prog, uint32_t op) {
  if (op == DHX_OP_SEND || op == DHX_OP_RECV) return PH_P2P;
  if (dhx_op_on_comm(op)) return PH_COLLECTIVE;
  return prog == DHX_PROG_BEGIN ? PH_BEGIN : prog == DHX_PROG_STEP ? PH_STEP : PH_MICRO;
}

void dhx_svg_timeline_run(void *ctx, int prog, const char *run, const dhx_sim_result *res) {
  dhx_svg_timeline *t = ctx;
  (void)run;
  for (size_t i = 0; i < res->nslices; i++) {
    const dhx_sim_slice *sl = &res->slices[i];
    if (sl->end <= sl->start) continue;
    uint32_t stream = sl->stream ? 1 : 0;  // every communication stream on one row
    int ph = phase_of(prog, t->p->ranks[sl->rank].programs[prog].instrs[sl->instr].op);
    double x0 = sl->start * t->scale, x1 = sl->end * t->scale;
    for (int c = (int)x0; c <= (int)x1 && c < (int)WIDTH; c++) {  // its share of each column
      double lo = x0 > c ? x0 : c, hi = x1 < c + 1 ? x1 : c + 1;
      if (c >= 0 && hi > lo) bin(t, sl->rank, stream, c)[ph] += (float)(hi - lo);
    }
  }
}

void dhx_svg_timeline_end(dhx_svg_timeline *t) {
  for (uint32_t r = 0; r < t->p->nranks; r++)
    for (uint32_t s = 0; s < 2; s++) draw_row(t, r, s);
  fputs("</svg>\n", t->f);
  free(t->busy);
  free(t);
}
