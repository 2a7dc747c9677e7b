// happens_before.c — vector clocks of a program's ops (see the header for the order).
#include "happens_before.h"

#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

void dhx_hb_init(dhx_hb *h, uint32_t n, uint32_t nstreams, uint32_t nevents) {
  *h = (dhx_hb){.n = n, .nstreams = nstreams, .nevents = nevents};
  h->stream = xcalloc(n, 1);
  h->records = malloc(sizeof(int32_t) * (n ? n : 1));
  h->waits = malloc(sizeof(int32_t) * (n ? n : 1));
  if (!h->records || !h->waits) abort();
  for (uint32_t i = 0; i < n; i++) h->records[i] = h->waits[i] = -1;
  h->clock = xcalloc((size_t)n * (nstreams ? nstreams : 1), sizeof(uint32_t));
  h->pos = xcalloc(n, sizeof(uint32_t));
  h->seq = xcalloc(n, sizeof(uint32_t));
}

void dhx_hb_free(dhx_hb *h) {
  free(h->stream);
  free(h->records);
  free(h->waits);
  free(h->clock);
  free(h->pos);
  free(h->seq);
}

// The RECORD of each event when there is exactly one; -1 otherwise.
static int32_t *single_records(const dhx_hb *h) {
  int32_t *rec = xcalloc(h->nevents, sizeof(int32_t));
  uint32_t *count = xcalloc(h->nevents, sizeof(uint32_t));
  for (uint32_t i = 0; i < h->n; i++) {
    int32_t e = h->records[i];
    if (e < 0 || (uint32_t)e >= h->nevents) continue;
    rec[e] = (int32_t)i;
    count[e]++;
  }
  for (uint32_t e = 0; e < h->nevents; e++)
    if (count[e] != 1) rec[e] = -1;
  free(count);
  return rec;
}

// The RECORD op i is ordered after (a WAIT's only RECORD), or -1.
static int32_t released_by(const dhx_hb *h, const int32_t *rec, uint32_t i) {
  int32_t e = h->waits[i];
  return e >= 0 && (uint32_t)e < h->nevents ? rec[e] : -1;
}

// The linear extension runs each stream as far as the events allow before the next one
// (round-robin), or with `listed`, takes the ready stream head listed first. When no head is
// ready, some WAIT can never be released: from then on every WAIT is taken as ordering nothing
// unless its RECORD has run.
void dhx_hb_order(dhx_hb *h) {
  uint32_t ns = h->nstreams, n = h->n;
  for (uint32_t i = 0; i < n; i++)
    if (h->stream[i] >= ns) abort();  // it would never run: the caller sizes the streams
  int32_t *rec = single_records(h);
  uint8_t *done = xcalloc(n, 1);
  uint32_t *next = xcalloc(n, sizeof(uint32_t));  // per op: the next op of its stream, or n
  uint32_t head[DHX_MAX_STREAMS], tail[DHX_MAX_STREAMS];
  uint32_t cur[DHX_MAX_STREAMS][DHX_MAX_STREAMS] = {{0}};
  for (uint32_t s = 0; s < ns; s++) head[s] = tail[s] = n;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t s = h->stream[i];
    next[i] = n;
    if (tail[s] < n) next[tail[s]] = i;
    else head[s] = i;
    tail[s] = i;
  }
  uint32_t at = 0;  // round-robin: the stream being run
  for (uint32_t ndone = 0; ndone < n;) {
    uint32_t pick = n;
    for (uint32_t k = 0; k < ns; k++) {
      uint32_t s = h->listed ? k : (at + k) % ns, i = head[s];
      if (i >= n || (h->listed && pick < n && i > pick)) continue;
      int32_t r = released_by(h, rec, i);
      if (r >= 0 && !done[r] && !h->hangs) continue;
      pick = i;
      if (!h->listed) break;
    }
    if (pick == n) {
      h->hangs = true;  // nothing can run: the waits left order nothing
      continue;
    }
    uint32_t s = h->stream[pick];
    int32_t r = released_by(h, rec, pick);
    at = s;
    cur[s][s]++;
    if (r >= 0 && done[r])
      for (uint32_t t = 0; t < ns; t++) {
        uint32_t c = dhx_hb_clock(h, (uint32_t)r)[t];
        if (c > cur[s][t]) cur[s][t] = c;
      }
    memcpy(&h->clock[(size_t)pick * ns], cur[s], sizeof(uint32_t) * ns);
    h->pos[pick] = cur[s][s];
    h->seq[pick] = ndone++;
    done[pick] = 1;
    head[s] = next[pick];
  }
  free(next);
  free(done);
  free(rec);
}

void dhx_hb_span_clear(dhx_hb_span *s) {
  for (uint32_t t = 0; t < DHX_MAX_STREAMS; t++) {
    s->last_on[t] = 0;
    s->min_past[t] = UINT32_MAX;
  }
}

void dhx_hb_span_add(const dhx_hb *h, dhx_hb_span *s, uint32_t op) {
  uint32_t own = h->stream[op];
  if (h->pos[op] > s->last_on[own]) s->last_on[own] = h->pos[op];
  for (uint32_t t = 0; t < h->nstreams; t++) {
    uint32_t past = dhx_hb_past(h, op, t);
    if (past < s->min_past[t]) s->min_past[t] = past;
  }
}
