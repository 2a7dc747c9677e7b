// pipeline.c — a pipeline stage's programs: one static instruction list per step.
//
// The stage's forward and backward are lowered once, for one micro-batch, into a template.
// MICRO is then the 1F1B schedule of the step's M micro-batches written out: stage s first runs
// the forwards of min(pp-s-1, M) micro-batches (warm-up), then alternates one forward and one
// backward, then runs the remaining backwards (cool-down), so at most pp-s micro-batches are in
// flight and the last stage never waits between a forward and its backward. Each micro-batch's
// copy of the template gets its own activation tensors (the memory planner lets copies whose
// lifetimes do not overlap share bytes), its slot of the token, target and loss buffers, and
// the transfers around it:
//
//   forward  m:  [LOAD m]  [RECV activation from s-1]  ops  [SEND activation to s+1]
//   backward m:            [RECV gradient from s+1]    ops  [SEND gradient to s-1]
//
// Transfers run on two streams, one per direction. A send starts after an event that says the
// data is ready, so a stage does not block on its neighbour while it could compute; the
// compute stream waits for it to finish one block later, before the sent tensor's bytes may be
// reused. A receive starts when the compute stream reaches it and the compute stream waits for
// it. The cross-rank simulator proves that the ranks cannot hang.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../front/ice.h"
#include "lower.h"

// Transfers on a link between two stages run on one stream per direction, so each stream
// carries one ordered sequence per neighbour (the runtime pairs a send with a receive on the
// same stream).
#define FORWARD_STREAM 1   // activations, stage s to s+1
#define BACKWARD_STREAM 2  // gradients, stage s to s-1

typedef struct pipe {
  dhx_graph *g;
  dhx_oplist *out;          // the program being written
  int prog;                 // DHX_PROG_MICRO or DHX_PROG_EVAL
  const dhx_oplist *tmpl;   // one micro-batch: forward [0, nfwd), backward [nfwd, n)
  int nfwd;
  int ntmpl;                // tensors the template may name
  int slots;                // micro-batches the inputs and losses hold
  int *clones;              // [micro][ntmpl]: template tensor → that micro-batch's copy, or -1
  int micro;                // the micro-batch being written
  int d_in, d_out;          // gradients of the stage's input and output in the template
  int sent_event, sent_tensor;  // the last block's send, not yet waited for (-1: none)
} pipe;

static dhx_tensor *T(pipe *p, int t) { return &p->g->tensors[t]; }

// This micro-batch's copy of activation t (other tensors are shared by all micro-batches).
static int copy_of(pipe *p, int t) {
  if (t < 0 || t >= p->ntmpl || T(p, t)->kind != DHX_T_ACT) return t;
  int *c = &p->clones[(size_t)p->micro * (size_t)p->ntmpl + (size_t)t];
  if (*c < 0) {
    char name[DHX_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%d.%.80s", p->prog == DHX_PROG_EVAL ? "eval" : "mb",
             p->micro, T(p, t)->name);
    dhx_tensor src = *T(p, t);
    *c = dhx_tensor_new(p->g, name, DHX_T_ACT, src.dtype, src.ndim, src.shape);
    T(p, *c)->program = p->prog;
  }
  return *c;
}

// Micro-batch m reads and writes slot m of the inputs and losses, and its own activations.
static dhx_operand remap(pipe *p, dhx_operand o) {
  if (o.kind != DHX_ARG_BUF) return o;
  dhx_tensor_kind k = T(p, o.tensor)->kind;
  if (k == DHX_T_TOKENS || k == DHX_T_TARGETS || k == DHX_T_LOSSES)
    o.elem += (int64_t)p->micro * (dhx_tensor_elems(T(p, o.tensor)) / p->slots);
  else
    o.tensor = copy_of(p, o.tensor);
  return o;
}

static void copy_ops(pipe *p, int from, int to) {
  for (int i = from; i < to; i++) {
    if (p->tmpl->ops[i].dead) continue;
    dhx_lop op = p->tmpl->ops[i];
    for (int j = 0; j < op.nargs; j++) op.args[j] = remap(p, op.args[j]);
    *dhx_lop_push(p->out, op.kind, op.stream, op.note) = op;
  }
}

static void transfer(pipe *p, dhx_lop_kind kind, int stream, int t, int peer, int tag,
                     const char *what) {
  char note[DHX_NAME_MAX];
  snprintf(note, sizeof note, "%s micro-batch %d", what, p->micro);
  dhx_lop *op = dhx_lop_push(p->out, kind, stream, note);
  op->args[0] = dhx_buf(t, 0);
  op->args[1] = dhx_i64(dhx_tensor_elems(T(p, t)));
  op->args[2] = dhx_i64(peer);
  op->args[3] = dhx_i64(tag);
  op->nargs = 4;
  op->comm = DHX_COMM_PP;
}

static void event_op(pipe *p, dhx_lop_kind kind, int stream, int event, const char *note) {
  dhx_lop *op = dhx_lop_push(p->out, kind, stream, note);
  op->event = event;
}

// The compute stream waits for the previous block's send; the sent tensor stays live (for
// the memory planner) until this wait.
static void settle_send(pipe *p) {
  if (p->sent_event < 0) return;
  event_op(p, DHX_L_WAIT, 0, p->sent_event, "send done");
  p->out->ops[p->out->n - 1].keeps = p->sent_tensor + 1;
  p->sent_event = -1;
}

// Ends a block: settles the previous block's send, then sends tensor t (made on the compute
// stream) to `peer` from `stream` (MICRO), or in line (EVAL: nothing to overlap).
static void end_block(pipe *p, int stream, int t, int peer, int tag, const char *what) {
  settle_send(p);
  if (t < 0) return;
  if (p->prog == DHX_PROG_EVAL) {
    transfer(p, DHX_L_SEND, 0, t, peer, tag, what);
    return;
  }
  int ready = p->out->nevents++, done = p->out->nevents++;
  event_op(p, DHX_L_RECORD, 0, ready, "ready to send");
  event_op(p, DHX_L_WAIT, stream, ready, "ready to send");
  transfer(p, DHX_L_SEND, stream, t, peer, tag, what);
  event_op(p, DHX_L_RECORD, stream, done, "sent");
  p->sent_event = done;
  p->sent_tensor = t;
}

// Receives into t before the compute stream goes on. The receive starts only when the compute
// stream reaches it, so t's bytes are free by then (the memory planner placed it there).
static void receive(pipe *p, int stream, int t, int peer, int tag, const char *what) {
  if (p->prog == DHX_PROG_EVAL) {
    transfer(p, DHX_L_RECV, 0, t, peer, tag, what);
    return;
  }
  int go = p->out->nevents++, got = p->out->nevents++;
  event_op(p, DHX_L_RECORD, 0, go, "ready to receive");
  event_op(p, DHX_L_WAIT, stream, go, "ready to receive");
  transfer(p, DHX_L_RECV, stream, t, peer, tag, what);
  event_op(p, DHX_L_RECORD, stream, got, "received");
  event_op(p, DHX_L_WAIT, 0, got, "received");
}

static int tag_of(int m, int backward) { return (2 * m + backward) % (DHX_MAX_TAG + 1); }

static void forward(pipe *p, int m) {
  dhx_graph *g = p->g;
  bool first = g->pp_rank == 0, last = g->pp_rank == g->pp - 1;
  p->micro = m;
  if (p->prog == DHX_PROG_MICRO && (first || last)) {  // the stages that read the inputs
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "load micro-batch %d", m);
    dhx_lop *ld = dhx_lop_push(p->out, DHX_L_LOAD, 0, note);
    ld->args[0] = remap(p, dhx_buf(g->tokens, 0));
    ld->args[1] = remap(p, dhx_buf(g->targets, 0));
    ld->args[2] = dhx_i64(m);
    ld->nargs = 3;
  }
  if (!first)
    receive(p, FORWARD_STREAM, copy_of(p, g->stage_in), g->pp_rank - 1, tag_of(m, 0),
            "activation of");
  copy_ops(p, 0, p->nfwd);
  end_block(p, FORWARD_STREAM, last ? -1 : copy_of(p, g->stage_out), g->pp_rank + 1,
            tag_of(m, 0), "activation of");
}

static void backward(pipe *p, int m) {
  dhx_graph *g = p->g;
  bool first = g->pp_rank == 0, last = g->pp_rank == g->pp - 1;
  p->micro = m;
  if (!last)
    receive(p, BACKWARD_STREAM, copy_of(p, p->d_out), g->pp_rank + 1, tag_of(m, 1),
            "gradient of");
  copy_ops(p, p->nfwd, p->tmpl->n);
  end_block(p, BACKWARD_STREAM, first ? -1 : copy_of(p, p->d_in), g->pp_rank - 1, tag_of(m, 1),
            "gradient of");
}

static void start(pipe *p, dhx_graph *g, int prog, const dhx_oplist *tmpl, int nfwd, int slots,
                  int micro) {
  *p = (pipe){.g = g, .out = &g->prog[prog], .prog = prog, .tmpl = tmpl, .nfwd = nfwd,
              .ntmpl = g->ntensors, .slots = slots, .sent_event = -1};
  p->clones = malloc(sizeof(int) * (size_t)micro * (size_t)g->ntensors);
  if (!p->clones) abort();
  for (size_t i = 0; i < (size_t)micro * (size_t)g->ntensors; i++) p->clones[i] = -1;
}

void dhx_lower_pipeline(dhx_graph *g, int micro, double loss_scale) {
  // One micro-batch of this stage: its forward, then its backward from the gradient that the
  // next stage sends (or from the loss, on the last stage).
  dhx_oplist tmpl = {0};
  dhx_lower_forward(g, &tmpl);
  int nfwd = tmpl.n, d_out = -1, d_in = -1;
  dhx_lower_backward_from(g, &tmpl, loss_scale, g->stage_out, &d_out, g->stage_in, &d_in);
  if (g->stage_in >= 0 && d_in < 0)
    DHX_ICE("stage %d: no gradient reaches the activation it receives", g->pp_rank);
  pipe p;
  start(&p, g, DHX_PROG_MICRO, &tmpl, nfwd, micro, micro);
  p.d_in = d_in;
  p.d_out = d_out;
  // 1F1B: warm-up forwards, one forward and one backward in turn, cool-down backwards.
  int warm = g->pp - 1 - g->pp_rank;
  if (warm > micro) warm = micro;
  for (int m = 0; m < warm; m++) forward(&p, m);
  for (int m = 0; m < micro - warm; m++) {
    forward(&p, warm + m);
    backward(&p, m);
  }
  for (int m = micro - warm; m < micro; m++) backward(&p, m);
  settle_send(&p);
  free(p.clones);
  free(tmpl.ops);

  // EVAL: one micro-batch's forward, in slot 0 of the inputs (the runtime fills it).
  dhx_oplist eval = {0};
  dhx_lower_forward(g, &eval);
  start(&p, g, DHX_PROG_EVAL, &eval, eval.n, micro, 1);
  forward(&p, 0);
  free(p.clones);
  free(eval.ops);
}
