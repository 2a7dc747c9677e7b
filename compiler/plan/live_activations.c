// live_activations.c — the activation bytes a simulated run holds at once (live_activations.h).
//
// A buffer is born at the start of the first instruction that names it and dies at the end of
// the last. Each stream runs its instructions one after another, so along a stream both the
// starts and the ends rise: the births in time order are a merge of the streams by start, the
// deaths a merge by end, and the peak follows from walking the two merges together (deaths
// first at the same time: a buffer whose last use ends as another's first use starts may share
// its bytes). No sort: a W-folded stage has hundreds of thousands of activations.
#include "live_activations.h"

#include <stdlib.h>

// Grows the scratch to `nbuffers` buffers and `ninstrs` instructions.
static void reserve(dhx_live_scratch *s, size_t nbuffers, size_t ninstrs) {
  if (s->cap_buffers < nbuffers) {
    free(s->born_at);
    free(s->dies_at);
    free(s->act_bytes);
    s->cap_buffers = nbuffers;
    s->born_at = malloc(sizeof(int32_t) * nbuffers);
    s->dies_at = malloc(sizeof(int32_t) * nbuffers);
    s->act_bytes = malloc(sizeof(int64_t) * nbuffers);
    if (!s->born_at || !s->dies_at || !s->act_bytes) abort();
  }
  if (s->cap_instrs < ninstrs) {
    free(s->born);
    free(s->dead);
    free(s->next);
    s->cap_instrs = ninstrs;
    s->born = malloc(sizeof(int64_t) * ninstrs);
    s->dead = malloc(sizeof(int64_t) * ninstrs);
    s->next = malloc(sizeof(int32_t) * ninstrs);
    if (!s->born || !s->dead || !s->next) abort();
  }
}

// One merge of the streams: per stream the next instruction not yet taken (-1: none left).
typedef struct merge {
  int32_t head[DHX_MAX_STREAMS];
  uint32_t nstreams;  // the program's
  const int32_t *next;
  const dhx_sim_slice *sl;
  bool by_end;
} merge;

static double key(const merge *m, int32_t i) { return m->by_end ? m->sl[i].end : m->sl[i].start; }

// The instruction that comes next in time (ties: the lower stream), or -1 when all are taken.
static int32_t peek(const merge *m, uint32_t *stream) {
  int32_t best = -1;
  for (uint32_t s = 0; s < m->nstreams; s++)
    if (m->head[s] >= 0 && (best < 0 || key(m, m->head[s]) < key(m, best)))
      best = m->head[s], *stream = s;
  return best;
}

int64_t dhx_live_activation_peak(const dhx_plan *p, int prog, uint32_t rank,
                                 const dhx_sim_result *res, size_t first, dhx_live_scratch *s) {
  const dhx_plan_rank *R = &p->ranks[rank];
  const dhx_plan_program *pr = &R->programs[prog];
  if (!R->nbuffers || !pr->ninstrs) return 0;
  reserve(s, R->nbuffers, pr->ninstrs);
  const dhx_sim_slice *sl = &res->slices[first];
  for (uint32_t b = 0; b < R->nbuffers; b++) {  // the buffer records are large: read them once
    s->born_at[b] = s->dies_at[b] = -1;
    s->act_bytes[b] = R->buffers[b].kind == DHX_BUF_ACT ? R->buffers[b].nbytes : 0;
  }
  for (uint32_t i = 0; i < pr->ninstrs; i++) {
    const dhx_plan_instr *in = &pr->instrs[i];
    s->born[i] = s->dead[i] = 0;
    for (uint32_t a = 0; a < in->nargs; a++) {
      int32_t b = in->args[a].buf;
      if (in->args[a].kind != DHX_ARG_BUF || b < 0 || (uint32_t)b >= R->nbuffers ||
          !s->act_bytes[b])
        continue;
      if (s->born_at[b] < 0 || sl[i].start < sl[s->born_at[b]].start) s->born_at[b] = (int32_t)i;
      if (s->dies_at[b] < 0 || sl[i].end > sl[s->dies_at[b]].end) s->dies_at[b] = (int32_t)i;
    }
  }
  for (uint32_t b = 0; b < R->nbuffers; b++)
    if (s->born_at[b] >= 0) {
      s->born[s->born_at[b]] += s->act_bytes[b];
      s->dead[s->dies_at[b]] += s->act_bytes[b];
    }
  uint32_t nstreams = pr->nstreams < DHX_MAX_STREAMS ? pr->nstreams : DHX_MAX_STREAMS;
  merge births = {.nstreams = nstreams, .next = s->next, .sl = sl, .by_end = false};
  merge deaths = births;
  deaths.by_end = true;
  int32_t last[DHX_MAX_STREAMS];
  for (uint32_t k = 0; k < DHX_MAX_STREAMS; k++) births.head[k] = last[k] = -1;
  for (uint32_t i = 0; i < pr->ninstrs; i++) {  // link each stream's instructions in order
    uint32_t k = pr->instrs[i].stream < nstreams ? pr->instrs[i].stream : 0;  // validated
    s->next[i] = -1;
    if (last[k] >= 0) s->next[last[k]] = (int32_t)i;
    else births.head[k] = (int32_t)i;
    last[k] = (int32_t)i;
  }
  for (uint32_t k = 0; k < DHX_MAX_STREAMS; k++) deaths.head[k] = births.head[k];
  int64_t live = 0, peak = 0;
  for (;;) {
    uint32_t bs = 0, ds = 0;
    int32_t b = peek(&births, &bs), d = peek(&deaths, &ds);
    if (b < 0) break;  // every birth is counted: the peak is known
    if (d >= 0 && sl[d].end <= sl[b].start) {
      live -= s->dead[d];
      deaths.head[ds] = s->next[d];
      continue;
    }
    live += s->born[b];
    if (live > peak) peak = live;
    births.head[bs] = s->next[b];
  }
  return peak;
}

void dhx_live_scratch_free(dhx_live_scratch *s) {
  free(s->act_bytes);
  free(s->born_at);
  free(s->dies_at);
  free(s->born);
  free(s->dead);
  free(s->next);
  *s = (dhx_live_scratch){0};
}

int64_t dhx_activation_region_bytes(const dhx_plan_rank *r) {
  int64_t lo = INT64_MAX, hi = 0;
  for (uint32_t b = 0; b < r->nbuffers; b++) {
    const dhx_plan_buffer *x = &r->buffers[b];
    if (x->kind != DHX_BUF_ACT || x->nbytes <= 0) continue;
    if (x->offset < lo) lo = x->offset;
    if (x->offset + x->nbytes > hi) hi = x->offset + x->nbytes;
  }
  return hi > lo ? hi - lo : 0;
}
