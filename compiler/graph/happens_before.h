// happens_before.h — the order that streams and events guarantee among the ops of one program.
//
// An op happens before another when a run finishes it before the other starts: program order
// within a stream, plus RECORD e → WAIT e (everything before the RECORD on its stream happens
// before everything after the WAIT on the waiting one). An event recorded more than once orders
// nothing: any of its records may release the wait. The order is kept as one vector clock per
// op with an entry per stream, so "a before b" is one comparison. Used by the memory planner
// (memplan.c, on op lists) and by the memory verifier (verify_memory.c, on plans).
#ifndef DHX_HAPPENS_BEFORE_H
#define DHX_HAPPENS_BEFORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan_base.h"

typedef struct dhx_hb {
  uint32_t n, nstreams, nevents;
  // Filled by the caller between dhx_hb_init and dhx_hb_order:
  uint8_t *stream;   // per op, < nstreams
  int32_t *records;  // per op: the event a RECORD records, -1 for other ops
  int32_t *waits;    // per op: the event a WAIT waits for, -1 for other ops
  // Computed by dhx_hb_order:
  uint32_t *clock;   // [op * nstreams + s]: ops of stream s that happen before op or are it
  uint32_t *pos;     // 1-based position of an op in its stream
  uint32_t *seq;     // place in a linear extension (a before b ⇒ seq a < seq b)
  bool listed;       // set by the caller: seq keeps to the list's order where events allow
  bool hangs;        // some WAIT could never be released (the order took it as nothing)
} dhx_hb;

// Room for n ops on nstreams (<= DHX_MAX_STREAMS) streams and nevents events; every op on
// stream 0, recording and waiting for nothing.
void dhx_hb_init(dhx_hb *h, uint32_t n, uint32_t nstreams, uint32_t nevents);
// The clocks. Runs the streams in an order the events allow (a stream stops at a WAIT whose
// RECORD has not run yet; with `listed`, the ready op listed first goes next); should a WAIT
// never be released (a plan that could hang: `hangs`), it is taken as ordering nothing.
void dhx_hb_order(dhx_hb *h);
void dhx_hb_free(dhx_hb *h);

// Op's clock: nstreams entries.
static inline const uint32_t *dhx_hb_clock(const dhx_hb *h, uint32_t op) {
  return &h->clock[(size_t)op * h->nstreams];
}

// The ops of stream s that happen strictly before op.
static inline uint32_t dhx_hb_past(const dhx_hb *h, uint32_t op, uint32_t s) {
  return s == h->stream[op] ? h->pos[op] - 1 : dhx_hb_clock(h, op)[s];
}

// Op a happens before op b (a != b).
static inline bool dhx_hb_before(const dhx_hb *h, uint32_t a, uint32_t b) {
  return a != b && dhx_hb_clock(h, b)[h->stream[a]] >= h->pos[a];
}

// A set of ops, summarised so that "every op of A happens before every op of B" is one
// comparison per stream.
typedef struct dhx_hb_span {
  uint32_t last_on[DHX_MAX_STREAMS];   // stream position of its latest op there, 0: none
  uint32_t min_past[DHX_MAX_STREAMS];  // over its ops, the fewest ops of each stream that
                                       //   happen strictly before one
} dhx_hb_span;

void dhx_hb_span_clear(dhx_hb_span *s);
void dhx_hb_span_add(const dhx_hb *h, dhx_hb_span *s, uint32_t op);
// Every op of a happens before every op of b (false when an op is in both).
static inline bool dhx_hb_span_before(const dhx_hb *h, const dhx_hb_span *a,
                                      const dhx_hb_span *b) {
  for (uint32_t s = 0; s < h->nstreams; s++)
    if (a->last_on[s] > b->min_past[s]) return false;
  return true;
}

#endif
