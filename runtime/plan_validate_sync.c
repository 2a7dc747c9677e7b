// plan_validate_sync.c — what would make a valid-looking plan hang: a WAIT that can never
// complete (events across a program's streams), and all-reduces that do not pair up in the same
// order on every member of a communicator.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan_internal.h"
#include "plan_util.h"

// Every WAIT must be able to complete: simulate the streams, letting each run until it reaches
// a WAIT whose event nobody has recorded yet; if all streams stop before their end, the event
// graph has a cycle (or waits for a RECORD that never comes) and the program would hang.
bool plan_check_events(plan_check_ctx *v, const dhx_plan_program *p) {
  bool ok = true;
  uint8_t *recorded = calloc(p->nevents ? p->nevents : 1, 1);
  uint8_t *ever = calloc(p->nevents ? p->nevents : 1, 1);
  if (!recorded || !ever) {
    free(recorded);
    free(ever);
    return plan_check_fail(v, "out of memory");
  }
  for (uint32_t i = 0; i < p->ninstrs; i++)
    if (p->instrs[i].op == DHX_OP_RECORD) ever[p->instrs[i].event] = 1;
  for (uint32_t i = 0; i < p->ninstrs && ok; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if (in->op == DHX_OP_WAIT && !ever[in->event]) {
      v->instr = i;
      v->note = in->note;
      ok = plan_check_fail(v, "WAIT on event %d, which no RECORD in this program records", in->event);
    }
  }
  uint32_t pos[DHX_MAX_STREAMS] = {0};  // next instruction index to look at, per stream
  bool progress = ok;
  while (progress) {
    progress = false;
    for (uint32_t s = 0; s < p->nstreams; s++) {
      for (; pos[s] < p->ninstrs; pos[s]++) {
        const dhx_plan_instr *in = &p->instrs[pos[s]];
        if (in->stream != s) continue;
        if (in->op == DHX_OP_WAIT && !recorded[in->event]) break;
        if (in->op == DHX_OP_RECORD) recorded[in->event] = 1;
        progress = true;
      }
    }
  }
  for (uint32_t s = 0; s < p->nstreams && ok; s++)
    if (pos[s] < p->ninstrs) {
      const dhx_plan_instr *in = &p->instrs[pos[s]];
      v->instr = pos[s];
      v->note = in->note;
      ok = plan_check_fail(v, "WAIT on event %d can never complete (it is recorded only after this wait, "
               "directly or through other streams): the program would hang", in->event);
    }
  v->instr = -1;
  free(recorded);
  free(ever);
  return ok;
}


// All-reduces on one communicator and stream must form the same sequence on every member,
// or the ring exchanges would pair the wrong messages and hang. The reference member's
// sequences are collected once per (communicator, program); each other member is compared in
// one pass over its program.
typedef struct collective_seq {
  int64_t *counts[DHX_MAX_STREAMS];  // element counts of the reference's all-reduces, in order
  uint32_t len[DHX_MAX_STREAMS];
} collective_seq;

static bool on_comm(const dhx_plan_instr *in, uint32_t c) {
  return in->op == DHX_OP_ALLREDUCE && in->comm == (int32_t)c;
}

static bool collect_sequence(const dhx_plan_program *p, uint32_t c, collective_seq *q) {
  memset(q, 0, sizeof *q);
  uint32_t total = 0;
  for (uint32_t i = 0; i < p->ninstrs; i++) total += on_comm(&p->instrs[i], c);
  int64_t *all = malloc(sizeof(int64_t) * (total ? total : 1));
  if (!all) return false;
  uint32_t start = 0;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {  // one block of `all` per stream
    q->counts[s] = all + start;
    for (uint32_t i = 0; i < p->ninstrs; i++)
      if (on_comm(&p->instrs[i], c) && p->instrs[i].stream == s)
        q->counts[s][q->len[s]++] = p->instrs[i].args[1].i;
    start += q->len[s];
  }
  return true;
}

static bool compare_sequence(plan_check_ctx *v, const collective_seq *q, uint32_t c,
                             int32_t ref, int32_t other, int prog) {
  const dhx_plan_program *b = &v->p->ranks[other].programs[prog];
  uint32_t pos[DHX_MAX_STREAMS] = {0};
  v->rank = other;
  v->prog = prog;
  for (uint32_t j = 0; j < b->ninstrs; j++) {
    const dhx_plan_instr *in = &b->instrs[j];
    if (!on_comm(in, c)) continue;
    uint32_t s = in->stream;
    v->instr = j;
    v->note = in->note;
    if (pos[s] == q->len[s])
      return plan_check_fail(v, "one all-reduce more on communicator %u stream %u than rank %d has: the "
                 "ranks would hang", c, s, ref);
    int64_t want = q->counts[s][pos[s]++];
    if (in->args[1].i != want)
      return plan_check_fail(v, "all-reduce of %" PRId64 " elements on communicator %u, but rank %d's "
                 "matching all-reduce has %" PRId64 ": the ranks would hang", in->args[1].i, c,
                 ref, want);
  }
  v->instr = -1;
  v->note = NULL;
  for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
    if (pos[s] != q->len[s])
      return plan_check_fail(v, "%u all-reduces on communicator %u stream %u, rank %d has %u: the ranks "
                 "would hang", pos[s], c, s, ref, q->len[s]);
  v->rank = v->prog = -1;
  return true;
}

bool plan_check_collectives(plan_check_ctx *v) {
  for (uint32_t c = 0; c < v->p->ncomms; c++) {
    const dhx_plan_comm *cm = &v->p->comms[c];
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      collective_seq q;
      if (!collect_sequence(&v->p->ranks[cm->ranks[0]].programs[p], c, &q)) return plan_check_fail(v, "out of memory");
      bool ok = true;
      for (uint32_t i = 1; i < cm->nranks && ok; i++)
        ok = compare_sequence(v, &q, c, cm->ranks[0], cm->ranks[i], p);
      free(q.counts[0]);
      if (!ok) return false;
    }
  }
  return true;
}
