// pipeline.c — a pipeline stage's programs: one static instruction list per step.
//
// Each layer chunk of the stage (one, or v with virtual stages) is lowered once, for one
// micro-batch, into a template of its forward and its backward. MICRO is then the 1F1B
// schedule of the step's M micro-batches written out: stage s first runs the forwards of
// min(pp-s-1, M) micro-batches (warm-up), then alternates one forward and one backward, then
// runs the remaining backwards (cool-down), so at most pp-s micro-batches are in flight and
// the last stage never waits between a forward and its backward. With v chunks per stage the
// schedule is Megatron-LM's interleaved 1F1B: the M·v (micro-batch, chunk) blocks run in groups
// of pp micro-batches per chunk, with a warm-up of 2(pp-s-1) + (v-1)pp blocks, which shrinks
// the pipeline's idle time by about v. Folded into a W (two chunks per stage, going down and
// coming back up), the blocks run in an order found by simulating the W (dhx_fold_order,
// below). With paired strands (schedule) the blocks of micro-batch m compute on strand
// m % 2's stream (in a W, (m / pp) % 2's: dhx_strand_of), so each forward runs beside a
// backward.
// Each block's copy of its template gets its own activation tensors (the memory planner lets
// copies whose lifetimes do not overlap share bytes), its slot of the token, target and loss
// buffers, and the transfers around it:
//
//   forward  m:  [LOAD m]  [RECV activation from s-1]  ops  [SEND activation to s+1]
//   backward m:            [RECV gradient from s+1]    ops  [SEND gradient to s-1]
//
// (in a W, the first chunk's; the second's come from s+1 and go to s-1, and a transfer
// between the two chunks of the bottom stage is none: the same tensor, or in place)
//
// Transfers run on streams of their own. A send starts after an event that says the data is
// ready, so a stage does not block on its neighbour while it could compute; the compute stream
// waits for it to finish before the sent tensor's bytes may be reused: for an activation when
// its gradient has come back (the neighbour received it long before); for a gradient when a
// message comes from the neighbour that it sent after receiving the gradient (in a W, the same
// micro-batch's gradient coming back down; in 1F1B with one chunk, a later activation), and
// otherwise at the end of the step. A receive starts when the compute stream reaches it and
// the compute stream waits for it. The cross-rank simulator proves that the ranks cannot hang.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "lower.h"

// Transfers run on streams of their own, picked so that on every rank the streams it sends on
// differ from those it receives on: a send blocked on its neighbour then never holds up a
// receive queued behind it (the runtime pairs a send with the receive on the same stream, so
// the stream of a transfer is the sender's). Stages are coloured so that neighbours differ:
// alternately 0 and 1, and 2 for the last of an odd count, whose next stage is stage 0 when
// the chunks wrap around (virtual stages). Activations use streams 1..3, gradients 4..6.
static int colour(const dhx_graph *g, int stage) {
  return g->pp % 2 == 1 && stage == g->pp - 1 ? 2 : stage % 2;
}
static int activation_stream(const dhx_graph *g, int sender) { return 1 + colour(g, sender); }
static int gradient_stream(const dhx_graph *g, int sender) { return 4 + colour(g, sender); }

// Folded into a W, a stage sends to and receives from both neighbours. The stream is then the
// receiver's, coloured by stage mod 3 so that a stage and its two neighbours differ: stage s
// receives activations on 1 + s mod 3 and gradients on 4 + s mod 3, and sends on its
// neighbours' streams, so its sends to the two neighbours never queue behind each other nor
// behind a receive. Its receives from the two neighbours share a stream: each starts when a
// compute stream reaches it, and that stream waits for it.
static int transfer_stream(const dhx_graph *g, int sender, int receiver, bool gradient) {
  if (g->fold) return (gradient ? 4 : 1) + receiver % 3;
  return gradient ? gradient_stream(g, sender) : activation_stream(g, sender);
}

typedef struct chunk_tmpl {
  dhx_oplist ops;           // one micro-batch: forward [0, nfwd), backward [nfwd, n)
  int nfwd;
  int d_in, d_out;          // gradients of the chunk's input and output (-1: none)
  // Paired strands with one chunk: the backward cut into segments (runs of ops of one layer),
  // segment s = ops [seg_first[s], seg_first[s + 1]). seg_dep[s]: the last segment of the
  // previous micro-batch's backward that touches state segment s touches (-1: none), which
  // must have ended before segment s starts.
  int nseg;
  int *seg_first, *seg_dep;
  // With chunks: the shared state each segment touches, each once, touch[touch_first[s] ..
  // touch_first[s + 1]) (NULL: a view of persistent tensors; whole backwards follow each other).
  int *touch_first, *touch;
  // Paired strands: the forward cut the same way, fseg_first[s] the first op of its segment s
  // (nfseg of them, fseg_first[nfseg] = nfwd).
  int nfseg;
  int *fseg_first;
} chunk_tmpl;

typedef struct pipe {
  dhx_graph *g;
  dhx_oplist *out;          // the program being written
  int prog;                 // DHX_PROG_MICRO or DHX_PROG_EVAL
  chunk_tmpl *tmpl;         // per chunk
  int ntmpl;                // tensors the templates may name
  int slots;                // micro-batches the inputs and losses hold
  int *clones;              // [micro][ntmpl]: template tensor → that micro-batch's copy, or -1
  int micro;                // the micro-batch being written
  int *sent_event;          // [micro][chunk]: the activation send of a forward block, or -1
  int *grad_event;          // [micro][chunk]: the gradient send of a backward block not yet
                            // waited for (-1: none, or waited for already)
  size_t nblocks;           // micro-batches · chunks: the length of sent_event and grad_event
  int *settle_head;         // [message key]: the first gradient send (its block index) to
  int *settle_next;         // wait for after receiving that message, chained by settle_next
                            // (-1: none; NULL in EVAL: see plan_gradient_settles)
  int compute;              // the stream the block's compute runs on (a strand's; 0 unpaired)
  int comm;                 // the stream the block's template collectives run on (async_comm.c)
  int ev_base;              // the block's first event: template event e becomes ev_base + e
  int *touch_event;         // paired with chunks, per shared tensor: the event recorded at the
  int *touch_stream;        // end of the latest backward segment that touched it, and its
                            // stream (-1: none yet; NULL: whole backwards follow each other)
  int *seg_event;           // paired, one chunk: per segment, the event recorded at its end by
                            // the latest backward (-1: none yet)
  int strand_comm[2];       // each strand's communication stream (async collectives)
  // Paired: per strand (0: the one on stream 0), its latest backward written, which forwards
  // written after it may run beside: the events it recorded as it left each of its layers
  // (ev[0 .. n-1], grown as needed; n 0: none yet); `latest`: the strand of the latest of the
  // two (-1: none yet). See hold_forward.
  struct left_marks {
    int n, cap;
    int *ev;
  } left[2];
  int latest;
  int block_end[2][2];      // paired in a W or with chunks: per strand, the events its latest
                            // two blocks recorded as they ended (-1: none; keep_strands_close)
  int alias_from, alias_to; // folded, stage pp-1: chunk 0's output gradient is chunk 1's input
                            // gradient, handed over in place (-1: none)
} pipe;

static dhx_tensor *T(pipe *p, int t) { return &p->g->tensors[t]; }

// This micro-batch's copy of activation t (other tensors are shared by all micro-batches).
static int copy_of(pipe *p, int t) {
  if (t >= 0 && t == p->alias_from) t = p->alias_to;
  if (t < 0 || t >= p->ntmpl || T(p, t)->kind != DHX_T_ACT) return t;
  int *c = &p->clones[(size_t)p->micro * (size_t)p->ntmpl + (size_t)t];
  if (*c < 0) {  // named "mb<micro>.<name>" ("eval..." in EVAL), the name cut at 80 bytes
    char name[DHX_NAME_MAX + 16], digits[12];
    int nd = 0, m = p->micro;
    do digits[nd++] = (char)('0' + m % 10); while ((m /= 10) > 0);
    const char *prefix = p->prog == DHX_PROG_EVAL ? "eval" : "mb";
    size_t at = strlen(prefix);
    memcpy(name, prefix, at);
    while (nd > 0) name[at++] = digits[--nd];
    name[at++] = '.';
    size_t len = strnlen(T(p, t)->name, 80);
    memcpy(name + at, T(p, t)->name, len);
    name[at + len] = '\0';
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

static void copy_ops(pipe *p, const dhx_oplist *l, int from, int to) {
  for (int i = from; i < to; i++) {
    if (l->ops[i].dead) continue;
    dhx_lop op = l->ops[i];
    for (int j = 0; j < op.nargs; j++) op.args[j] = remap(p, op.args[j]);
    op.at.micro = p->micro;
    if (op.stream == 0) op.stream = p->compute;
    else if (op.stream == DHX_TMPL_COMM_STREAM) op.stream = p->comm;
    bool evented = op.kind == DHX_L_RECORD || op.kind == DHX_L_WAIT ||
                   (dhx_lop_collective(op.kind) && op.event >= 0);  // deferred
    if (evented) op.event += p->ev_base;
    dhx_lop_append(p->out, &op);
  }
}

// A block's copy of template t gets events of its own.
static void new_block_events(pipe *p, const chunk_tmpl *t) {
  p->ev_base = p->out->nevents;
  p->out->nevents += t->ops.nevents;
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

// The compute stream waits for a send to finish before the sent tensor's bytes may be reused:
// the memory planner keeps them live until the ops after this wait, which the send happens
// before.
static void settle_send(pipe *p, int event) {
  event_op(p, DHX_L_WAIT, p->compute, event, "send done");
}

// A message this stage receives: the activation (gradient) of micro-batch m for its chunk c.
static size_t message_key(const dhx_graph *g, int m, int c, bool gradient) {
  return ((size_t)m * (size_t)g->chunks + (size_t)c) * 2 + gradient;
}

// Just received message (m, c, gradient): the compute stream waits for the gradient sends that
// plan_gradient_settles found its sender received before sending it. Those sends are done by
// now, so the waits add no dependency between the stages, and the gradients' bytes are free
// from here instead of at the end of the step.
static void settle_after(pipe *p, int m, int c, bool gradient) {
  if (!p->settle_head) return;
  for (int b = p->settle_head[message_key(p->g, m, c, gradient)]; b >= 0; b = p->settle_next[b])
    if (p->grad_event[b] >= 0) {
      settle_send(p, p->grad_event[b]);
      p->grad_event[b] = -1;
    }
}

// Ends a block by sending tensor t (made on the compute stream) to `peer` from `stream`
// (MICRO), or in line (EVAL: nothing to overlap). Returns the event the send records when
// done (-1 in line).
static int end_block(pipe *p, int stream, int t, int peer, int tag, const char *what) {
  if (p->prog == DHX_PROG_EVAL) {
    transfer(p, DHX_L_SEND, 0, t, peer, tag, what);
    return -1;
  }
  int ready = p->out->nevents++, done = p->out->nevents++;
  event_op(p, DHX_L_RECORD, p->compute, ready, "ready to send");
  event_op(p, DHX_L_WAIT, stream, ready, "ready to send");
  transfer(p, DHX_L_SEND, stream, t, peer, tag, what);
  event_op(p, DHX_L_RECORD, stream, done, "sent");
  return done;
}

// Receives into t before the compute stream goes on. The receive starts only when the compute
// stream reaches it, so t's bytes are free by then (the memory planner placed it there).
static void receive(pipe *p, int stream, int t, int peer, int tag, const char *what) {
  if (p->prog == DHX_PROG_EVAL) {
    transfer(p, DHX_L_RECV, 0, t, peer, tag, what);
    return;
  }
  int go = p->out->nevents++, got = p->out->nevents++;
  event_op(p, DHX_L_RECORD, p->compute, go, "ready to receive");
  event_op(p, DHX_L_WAIT, stream, go, "ready to receive");
  transfer(p, DHX_L_RECV, stream, t, peer, tag, what);
  event_op(p, DHX_L_RECORD, stream, got, "received");
  event_op(p, DHX_L_WAIT, p->compute, got, "received");
}

// Tags tell the transfers of one link apart: micro-batch, direction, and the global chunk
// (c·pp + stage) the activation goes into or the gradient comes out of.
static int tag_of(const pipe *p, int m, int global_chunk, int backward) {
  int total = p->g->chunks * p->g->pp;
  return ((m * total + global_chunk) * 2 + backward) % (DHX_MAX_TAG + 1);
}

static int next_stage(const dhx_graph *g) { return (g->pp_rank + 1) % g->pp; }
static int prev_stage(const dhx_graph *g) { return (g->pp_rank + g->pp - 1) % g->pp; }

// The stage of the chunk before (step -1) or after (+1) this stage's chunk c; this stage
// itself for the hand-off at the bottom of a W, which needs no transfer.
static int neighbour(const dhx_graph *g, int c, int step) {
  return dhx_chunk_stage(g, dhx_global_chunk(g, g->pp_rank, c) + step);
}

// With chunks (a W, or interleaved), a backward segment waits for the segments of the other
// strand that last touched the state it touches: the gradients of each weight accumulate in the
// order the stage lists its backwards, whichever chunk and strand they belong to, while
// backwards that touch different weights (another chunk's, or another layer's) run side by side.
// The other strand records its segments' events in stream order, ids rising, so waiting for
// the latest of them waits for all.
static void wait_for_touched(pipe *p, const chunk_tmpl *t, int s) {
  int latest = -1;
  for (int k = t->touch_first[s]; k < t->touch_first[s + 1]; k++) {
    int x = t->touch[k];
    if (p->touch_stream[x] != p->compute && p->touch_event[x] > latest) latest = p->touch_event[x];
  }
  if (latest >= 0)
    event_op(p, DHX_L_WAIT, p->compute, latest, "the other strand's backward left the state");
}

// A backward of paired strands, segment by segment: each waits for the segment of the
// previous backward that last touches the same weights and gradients, and records its own end
// when a later segment of the next backward may wait for it. So the gradients of each layer
// accumulate in micro-batch order, as unpaired, while the next backward may start on the top
// layers as soon as the previous one has left them: the two strands' backwards overlap like a
// wavefront instead of one waiting for the whole of the other.
//
// With chunks (p->touch_event) a segment waits instead for the other strand's segments that
// last touched the state it touches, since each chunk has weights of its own and the backward
// listed before may be another chunk's (wait_for_touched); where a view of persistent tensors
// hides what is touched, whole backwards follow each other (backward_block). Either way the
// segments record where the backward has got to, for the forwards beside it (hold_forward).
static void copy_segments(pipe *p, const chunk_tmpl *t) {
  struct left_marks *left = &p->left[p->compute != 0];
  if (left->cap < t->nseg) {
    left->cap = t->nseg;
    left->ev = realloc(left->ev, sizeof(int) * (size_t)left->cap);
    if (!left->ev) abort();
  }
  for (int s = 0; s < t->nseg; s++) {
    int dep = t->seg_dep[s];
    if (p->seg_event && dep >= 0 && p->seg_event[dep] >= 0)
      event_op(p, DHX_L_WAIT, p->compute, p->seg_event[dep], "previous backward left the layer");
    if (p->touch_event) wait_for_touched(p, t, s);
    copy_ops(p, &t->ops, t->seg_first[s], t->seg_first[s + 1]);
    int ev = p->out->nevents++;
    if (p->seg_event) p->seg_event[s] = ev;
    if (p->touch_event)
      for (int k = t->touch_first[s]; k < t->touch_first[s + 1]; k++) {
        p->touch_event[t->touch[k]] = ev;
        p->touch_stream[t->touch[k]] = p->compute;
      }
    left->ev[s] = ev;
    event_op(p, DHX_L_RECORD, p->compute, ev, "backward left the layer");
  }
  left->n = t->nseg;
  p->latest = p->compute != 0;
}

// A paired forward beside the backward of the other strand takes a layer's activations only
// as that backward frees a layer's: its segment s (s >= 1) waits until the backward has left
// its segment s - 1. Free, a forward (half a backward's work) runs ahead and both micro-batches'
// activations are live at once; held, the two together hold about one block's and two layers.
// The backward comes before the forward in the stage's order, so the wait is one the unpaired
// stream keeps anyway and adds no cycle. Which backward: in 1F1B and interleaved, the one
// written last before the forward, when the other strand runs it (the forward comes before
// the backward it runs beside, so none is held). In a W, the other strand's latest: a W stage
// lists several blocks of one strand in a row (dhx_strand_of), and a forward listed after a
// backward of its own strand would otherwise run free ahead of the other's.
static void hold_forward(pipe *p, const chunk_tmpl *t) {
  int beside = p->g->fold ? p->compute == 0 : p->latest;
  const struct left_marks *left = beside >= 0 ? &p->left[beside] : NULL;
  if (!left || beside == (p->compute != 0) || !t->nfseg || !left->n) {
    copy_ops(p, &t->ops, 0, t->nfwd);
    return;
  }
  for (int s = 0; s < t->nfseg; s++) {
    if (s >= 1)
      event_op(p, DHX_L_WAIT, p->compute, left->ev[s - 1 < left->n ? s - 1 : left->n - 1],
               "the backward beside left a layer");
    copy_ops(p, &t->ops, t->fseg_first[s], t->fseg_first[s + 1]);
  }
}

static void forward(pipe *p, int m, int c) {
  dhx_graph *g = p->g;
  const chunk_tmpl *t = &p->tmpl[c];
  int gc = dhx_global_chunk(g, g->pp_rank, c), last = g->pp * g->chunks - 1;
  p->micro = m;
  p->out->at = (dhx_origin){.node = -1, .layer = -1, .micro = m, .phase = DHX_PHASE_FORWARD};
  new_block_events(p, t);
  // The first chunk loads the tokens, the last the targets: one load when they share a stage.
  bool reads_inputs = gc == 0 || (gc == last && dhx_chunk_stage(g, 0) != g->pp_rank);
  if (p->prog == DHX_PROG_MICRO && reads_inputs) {
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "load micro-batch %d", m);
    dhx_lop *ld = dhx_lop_push(p->out, DHX_L_LOAD, p->compute, note);
    ld->args[0] = remap(p, dhx_buf(g->tokens, 0));
    ld->args[1] = remap(p, dhx_buf(g->targets, 0));
    ld->args[2] = dhx_i64(m);
    ld->nargs = 3;
  }
  int from = neighbour(g, c, -1), to = neighbour(g, c, +1);
  if (g->chunk_in[c] >= 0 && from != g->pp_rank) {
    receive(p, transfer_stream(g, from, g->pp_rank, false), copy_of(p, g->chunk_in[c]), from,
            tag_of(p, m, gc, 0), "activation of");
    settle_after(p, m, c, false);
  }
  hold_forward(p, t);
  if (g->chunk_out[c] < 0) return;
  size_t at = (size_t)m * (size_t)g->chunks + (size_t)c;
  p->sent_event[at] = -1;
  if (to == g->pp_rank) return;  // the next chunk reads the same tensor
  // The send is settled when the gradient of the same block comes back: the next stage has
  // received the activation by then, so waiting adds no dependency between the stages.
  int out = copy_of(p, g->chunk_out[c]);
  p->sent_event[at] = end_block(p, transfer_stream(g, g->pp_rank, to, false), out, to,
                                tag_of(p, m, gc + 1, 0), "activation of");
}

static void backward(pipe *p, int m, int c) {
  dhx_graph *g = p->g;
  const chunk_tmpl *t = &p->tmpl[c];
  p->micro = m;
  p->out->at = (dhx_origin){.node = -1, .layer = -1, .micro = m, .phase = DHX_PHASE_BACKWARD};
  new_block_events(p, t);
  int gc = dhx_global_chunk(g, g->pp_rank, c);
  int from = neighbour(g, c, +1), to = neighbour(g, c, -1);
  if (g->chunk_out[c] >= 0 && from != g->pp_rank) {  // else the gradient is here (alias_to)
    receive(p, transfer_stream(g, from, g->pp_rank, true), copy_of(p, t->d_out), from,
            tag_of(p, m, gc + 1, 1), "gradient of");
    size_t at = (size_t)m * (size_t)g->chunks + (size_t)c;
    settle_send(p, p->sent_event[at]);
    settle_after(p, m, c, true);
  }
  if (t->nseg)
    copy_segments(p, t);
  else
    copy_ops(p, &t->ops, t->nfwd, t->ops.n);
  if (g->chunk_in[c] < 0 || to == g->pp_rank) return;
  int din = copy_of(p, t->d_in);
  p->grad_event[(size_t)m * (size_t)g->chunks + (size_t)c] =
      end_block(p, transfer_stream(g, g->pp_rank, to, true), din, to, tag_of(p, m, gc, 1),
                "gradient of");
}

static void start(pipe *p, dhx_graph *g, int prog, chunk_tmpl *tmpl, int slots, int micro) {
  *p = (pipe){.g = g, .out = &g->prog[prog], .prog = prog, .tmpl = tmpl, .ntmpl = g->ntensors,
              .slots = slots, .alias_from = -1, .alias_to = -1};
  size_t blocks = p->nblocks = (size_t)micro * (size_t)g->chunks;
  p->clones = malloc(sizeof(int) * (size_t)micro * (size_t)g->ntensors);
  p->sent_event = malloc(sizeof(int) * blocks);
  p->grad_event = malloc(sizeof(int) * blocks);
  if (!p->clones || !p->sent_event || !p->grad_event) abort();
  for (size_t i = 0; i < blocks; i++) p->grad_event[i] = -1;
  for (size_t i = 0; i < (size_t)micro * (size_t)g->ntensors; i++) p->clones[i] = -1;
}

// Waits for the gradient sends, then frees the schedule's state.
static void finish(pipe *p) {
  for (size_t i = 0; i < p->nblocks; i++)
    if (p->grad_event[i] >= 0) settle_send(p, p->grad_event[i]);
  free(p->clones);
  free(p->sent_event);
  free(p->grad_event);
  free(p->settle_head);
  free(p->settle_next);
}

// State that all micro-batches share: weights, gradients, moments, scratch (activations are
// copied per micro-batch, and each micro-batch has its own slot of the inputs and losses).
static bool shared_state(const dhx_graph *g, int t) {
  dhx_tensor_kind k = g->tensors[t].kind;
  return k != DHX_T_ACT && k != DHX_T_TOKENS && k != DHX_T_TARGETS && k != DHX_T_LOSSES;
}

// Cuts ops [from, to) of l into runs of one layer each: first[k] is where run k starts, first[n]
// = to. Returns n. `first` has room for to - from + 1 entries. A run starts where a layer
// appears for the first time; an op of a layer already passed (a weight gradient moved past the
// next layer's first collective, weight_grads.c) or of none (layer -1: a collective the sharding
// added) stays in the run it is listed in. The ops of no layer before the first layer's and
// after the last one's (embedding, head, loss) are runs of their own. So a backward has as many
// runs as the forward, which hold_forward relies on.
static int cut_by_layer(const dhx_oplist *l, int from, int to, int *first) {
  int n = 0, last_layered = -1, seen_cap = 0;
  for (int i = from; i < to; i++) {
    if (l->ops[i].at.layer >= 0) last_layered = i;
    if (l->ops[i].at.layer >= seen_cap) seen_cap = l->ops[i].at.layer + 1;
  }
  unsigned char *seen = calloc((size_t)(seen_cap ? seen_cap : 1), 1);
  if (!seen) abort();
  for (int i = from; i < to; i++) {
    int layer = l->ops[i].at.layer;
    bool starts = n == 0;
    if (layer >= 0 && !seen[layer]) starts = true;  // a new layer
    if (layer < 0 && i > from && i > last_layered && l->ops[i - 1].at.layer >= 0)
      starts = true;  // the tail
    if (layer >= 0) seen[layer] = 1;
    if (starts) first[n++] = i;
  }
  free(seen);
  first[n] = to;
  return n;
}

// With chunks: the shared state each backward segment of t touches (chunk_tmpl.touch), each tensor
// once per segment.
static void list_touched_state(const dhx_graph *g, chunk_tmpl *t) {
  const dhx_oplist *l = &t->ops;
  int *seen = malloc(sizeof(int) * (size_t)g->ntensors), n = 0, cap = 16;
  t->touch_first = malloc(sizeof(int) * (size_t)(t->nseg + 1));
  t->touch = malloc(sizeof(int) * (size_t)cap);
  if (!seen || !t->touch_first || !t->touch) abort();
  for (int i = 0; i < g->ntensors; i++) seen[i] = -1;
  for (int s = 0; s < t->nseg; s++) {
    t->touch_first[s] = n;
    for (int i = t->seg_first[s]; i < t->seg_first[s + 1]; i++)
      for (int j = 0; j < l->ops[i].nargs; j++) {
        const dhx_operand *a = &l->ops[i].args[j];
        if (a->kind != DHX_ARG_BUF || l->ops[i].dead || !shared_state(g, a->tensor) ||
            seen[a->tensor] == s)
          continue;
        seen[a->tensor] = s;
        if (n == cap) {
          cap *= 2;
          t->touch = realloc(t->touch, sizeof(int) * (size_t)cap);
          if (!t->touch) abort();
        }
        t->touch[n++] = a->tensor;
      }
  }
  t->touch_first[t->nseg] = n;
  free(seen);
}

// Cuts t's backward into segments of one layer each and finds what each must wait for
// (chunk_tmpl). A view of persistent tensors (any of them) makes every segment wait for the
// whole previous backward, as if unsegmented.
static void segment_backward(const dhx_graph *g, chunk_tmpl *t) {
  const dhx_oplist *l = &t->ops;
  t->seg_first = malloc(sizeof(int) * (size_t)(l->n - t->nfwd + 1));
  t->seg_dep = malloc(sizeof(int) * (size_t)(l->n - t->nfwd + 1));
  int *last = malloc(sizeof(int) * (size_t)g->ntensors);
  if (!t->seg_first || !t->seg_dep || !last) abort();
  t->nseg = cut_by_layer(l, t->nfwd, l->n, t->seg_first);
  for (int i = 0; i < g->ntensors; i++) last[i] = -1;
  bool view = false;
  for (int s = 0; s < t->nseg; s++)
    for (int i = t->seg_first[s]; i < t->seg_first[s + 1]; i++)
      for (int j = 0; j < l->ops[i].nargs; j++) {
        const dhx_operand *a = &l->ops[i].args[j];
        if (a->kind != DHX_ARG_BUF || l->ops[i].dead) continue;
        view |= g->tensors[a->tensor].kind == DHX_T_VIEW;
        if (shared_state(g, a->tensor)) last[a->tensor] = s;
      }
  for (int s = 0; s < t->nseg; s++) {
    int dep = view ? t->nseg - 1 : -1;
    for (int i = t->seg_first[s]; i < t->seg_first[s + 1]; i++)
      for (int j = 0; j < l->ops[i].nargs; j++) {
        const dhx_operand *a = &l->ops[i].args[j];
        if (a->kind == DHX_ARG_BUF && !l->ops[i].dead && last[a->tensor] > dep)
          dep = last[a->tensor];
      }
    t->seg_dep[s] = dep;
  }
  free(last);
  if (g->chunks > 1 && !view) list_touched_state(g, t);
}

// Cuts t's forward into segments of one layer each (fseg_first), for hold_forward.
static void segment_forward(chunk_tmpl *t) {
  t->fseg_first = malloc(sizeof(int) * (size_t)(t->nfwd + 1));
  if (!t->fseg_first) abort();
  t->nfseg = cut_by_layer(&t->ops, 0, t->nfwd, t->fseg_first);
}

// Lowers chunk c's nodes (contiguous in the stage's list) into its template: the forward, and
// unless forward_only the backward from the gradient the next chunk sends (or from the loss).
static void lower_chunk(dhx_graph *g, int c, double loss_scale, bool forward_only,
                        chunk_tmpl *t) {
  dhx_node *all = g->nodes;
  int n = g->nnodes, first = 0;
  while (first < n && all[first].chunk != c) first++;
  int last = first;
  while (last < n && all[last].chunk == c) last++;
  g->nodes += first;  // the autodiff and the lowering walk g->nodes: show them this chunk only
  g->nnodes = last - first;
  g->node_base = first;
  *t = (chunk_tmpl){.d_in = -1, .d_out = -1};
  dhx_lower_forward(g, &t->ops);
  t->nfwd = t->ops.n;
  if (!forward_only)
    dhx_lower_backward_from(g, &t->ops, loss_scale, g->chunk_out[c], &t->d_out, g->chunk_in[c],
                            &t->d_in);
  g->nodes = all;
  g->nnodes = n;
  g->node_base = 0;
  if (!forward_only && g->chunk_in[c] >= 0 && t->d_in < 0)
    DHX_ICE("stage %d chunk %d: no gradient reaches the activation it receives", g->pp_rank, c);
}

// EVAL: one micro-batch's forward through the chunks, in slot 0 of the inputs (the runtime
// fills it); everything in line. Frees the templates.
static void eval_program(dhx_graph *g, double loss_scale, int micro, chunk_tmpl *tmpl) {
  int v = g->chunks;
  pipe p;
  for (int i = 0; i < v; i++) lower_chunk(g, i, loss_scale, true, &tmpl[i]);
  start(&p, g, DHX_PROG_EVAL, tmpl, micro, 1);
  for (int i = 0; i < v; i++) forward(&p, 0, i);
  finish(&p);
  for (int i = 0; i < v; i++) free(tmpl[i].ops.ops);
  free(tmpl);
}

// The order of a stage's (micro-batch, chunk) blocks: the k-th forward and k-th backward.
static void block_of(const dhx_graph *g, int k, bool backward, int *m, int *c) {
  int pp = g->pp, group = pp * g->chunks;
  *c = (k % group) / pp;
  if (backward) *c = g->chunks - 1 - *c;
  *m = (k / group) * pp + k % pp;
}

// The transfer streams of a W-folded stage (transfer_stream): true in used[1..6].
static void fold_streams(const dhx_graph *g, bool *used) {
  int s = g->pp_rank;
  for (int c = 0; c < g->chunks; c++)
    for (int step = -1; step <= 1; step += 2) {
      int peer = neighbour(g, c, step);
      if (peer == s || (step < 0 ? g->chunk_in[c] : g->chunk_out[c]) < 0) continue;
      used[transfer_stream(g, peer, s, step > 0)] = true;  // the activation or gradient in
      used[transfer_stream(g, s, peer, step < 0)] = true;  // and the other going out
    }
}

// Strand 1's compute stream: the first one this stage's transfers leave free (a stage uses at
// most four of the six transfer streams; a middle stage of a W of three or more stages all
// six), so the data-parallel stream of zero 2 and 3, the first stream after all of them, still
// fits in the runtime's streams.
static int second_strand_stream(const dhx_graph *g) {
  bool used[8] = {false};
  if (g->fold) {
    fold_streams(g, used);
  } else if (g->pp > 1) {
    used[activation_stream(g, prev_stage(g))] = used[activation_stream(g, g->pp_rank)] = true;
    used[gradient_stream(g, next_stage(g))] = used[gradient_stream(g, g->pp_rank)] = true;
  }
  int s = 1;
  while (used[s]) s++;
  return s;
}

// Paired strands: micro-batch m's strand. In 1F1B and interleaved, m % 2: with the warm-up
// rounded up to odd each forward runs beside the backward of the micro-batch before it. A W
// stage runs, in its steady state, the forward of micro-batch m + pp beside the backward of m
// (the bottom stage of pp 2: F(m+2) b(m) f(m+2) B(m)), so there micro-batches go to the strands
// in groups of pp: m % 2 would put the bottom stage's whole steady state on one strand, four
// blocks at a time. (A max cut of the graph joining the micro-batches of neighbouring blocks,
// stage by stage, parts more neighbours on the top stage but simulated up to 5% slower,
// docs/parallelism.md.)
int dhx_strand_of(const dhx_graph *g, int m) { return g->fold ? (m / g->pp) % 2 : m % 2; }

// Paired in a W: a block starts only once the other strand has ended every block listed
// before the latest one it has begun, the block this one runs beside. The strands of a W are
// not one forward and one backward in turn as in 1F1B: a strand may hold several forwards in a
// row, and with only the stream order and hold_forward between them one strand ran blocks
// ahead of the other while it waited for a transfer, holding their activations besides (a
// fifth more arena on a small W). Every wait is for a block listed earlier, as in the
// unpaired order, so it adds no cycle.
static void keep_strands_close(pipe *p, int m) {
  int other = !dhx_strand_of(p->g, m), ev = p->g->fold ? p->block_end[other][1] : -1;
  if (ev >= 0) event_op(p, DHX_L_WAIT, p->compute, ev, "the other strand ended the block before");
}

// Paired: micro-batch m's block computes on its strand's streams, kept close to the other.
static void enter_strand(pipe *p, int m, const int *strand) {
  p->compute = strand[dhx_strand_of(p->g, m)];
  p->comm = p->strand_comm[dhx_strand_of(p->g, m)];
  keep_strands_close(p, m);
}

// Records that micro-batch m's block ended (with event `ev`, or a new one when -1), in a W or
// with backwards side by side (end_strands).
static void block_ended(pipe *p, int m, int ev) {
  if (!p->g->fold && !p->touch_event) return;
  if (ev < 0) {
    ev = p->out->nevents++;
    event_op(p, DHX_L_RECORD, p->compute, ev, "block done");
  }
  int *end = p->block_end[dhx_strand_of(p->g, m)];
  end[1] = end[0];
  end[0] = ev;
}

// The forward block of micro-batch m through chunk c. Paired (strand: the two strands'
// streams), its micro-batch's strand computes it.
static void forward_block(pipe *p, int m, int c, const int *strand) {
  if (!strand) {
    forward(p, m, c);
    return;
  }
  enter_strand(p, m, strand);
  forward(p, m, c);
  block_ended(p, m, -1);
}

// The backward block of micro-batch m through chunk c. Paired, each backward waits for the
// one before it (`done`, the event recorded after it), so the gradients accumulate in the
// unpaired order whichever strand computes them.
static void backward_block(pipe *p, int m, int c, const int *strand, int *done) {
  if (!strand) {
    backward(p, m, c);
    return;
  }
  enter_strand(p, m, strand);
  if (*done >= 0 && !p->seg_event && !p->touch_event)  // else its segments wait instead
    event_op(p, DHX_L_WAIT, p->compute, *done, "previous backward done");
  backward(p, m, c);
  *done = p->out->nevents++;
  event_op(p, DHX_L_RECORD, p->compute, *done, "backward done");
  block_ended(p, m, *done);
}

// Paired, the compute stream waits for the other strand's last backward before the step goes on.
// With backwards side by side, that is strand 1's last block, whichever ends last.
static void end_strands(pipe *p, int done) {
  if (p->touch_event && p->block_end[1][0] >= 0)
    event_op(p, DHX_L_WAIT, 0, p->block_end[1][0], "the other strand done");
  else if (!p->touch_event && p->compute != 0)
    event_op(p, DHX_L_WAIT, 0, done, "the other strand done");
  p->compute = 0;
}

// 1F1B: warm-up forwards, one forward and one backward in turn, cool-down backwards.
//
// Paired strands: micro-batch m belongs to strand m % 2, and each strand computes on a stream
// of its own (strand 0 on stream 0), so the forward of one micro-batch runs beside the
// backward of another and each strand's communication hides behind the other's compute. The
// warm-up is rounded up to odd, so that (with one chunk, or an even pp) every "one forward,
// one backward" step pairs the two strands; a stage whose unpaired warm-up is even (the last)
// holds one block more in flight. A block's forward and backward are on one strand, in stream
// order; the backwards still run one after another in the unpaired order, so the losses are
// bitwise the same. Transfers keep their streams; only the compute moves.
//
//   one stage (warm-up 1):   strand 0:  F0      F2 ‖ B1(after B0)   ...
//                            strand 1:      F1  B0 ...
//   stage s of pp (1F1B):    (pp-s-1) | 1 forwards, then pairs [F m+warm ‖ B m], then the
//                            remaining backwards
static void push_block(const dhx_graph *g, dhx_fold_block *order, int *k, int nth,
                       bool backward) {
  order[*k].backward = backward;
  block_of(g, nth, backward, &order[*k].m, &order[*k].c);
  (*k)++;
}

// The blocks of stage `stage` in the order it runs them (*n of them; the caller frees them):
// 1F1B or interleaved as above, or the W (dhx_fold_order). Every stage's order is known on
// every rank, which is what lets a stage reason about its neighbours' (plan_gradient_settles).
static dhx_fold_block *stage_order(const dhx_graph *g, int stage, int micro, bool paired,
                                   int *n) {
  if (g->fold) {
    *n = 4 * micro;
    return dhx_fold_order(g->pp, micro, stage);
  }
  int v = g->chunks, total = micro * v, k = 0;
  int warm = v == 1 ? g->pp - 1 - stage : 2 * (g->pp - 1 - stage) + (v - 1) * g->pp;
  if (paired) warm |= 1;
  if (warm > total) warm = total;
  dhx_fold_block *order = malloc(sizeof *order * 2 * (size_t)total);
  if (!order) abort();
  for (int i = 0; i < warm; i++) push_block(g, order, &k, i, false);
  for (int i = 0; i < total - warm; i++) {
    push_block(g, order, &k, warm + i, false);
    push_block(g, order, &k, i, true);
  }
  for (int i = total - warm; i < total; i++) push_block(g, order, &k, i, true);
  *n = k;
  return order;
}

// Writes the stage's blocks in `order`.
static void run_blocks(pipe *p, const dhx_fold_block *order, int n, const int *strand) {
  int done = -1;
  for (int k = 0; k < n; k++) {
    if (order[k].backward)
      backward_block(p, order[k].m, order[k].c, strand, &done);
    else
      forward_block(p, order[k].m, order[k].c, strand);
  }
  end_strands(p, done);
}

// ---- the W-folded schedule ---------------------------------------------------------------------
// Stage s holds chunks s (going down) and 2pp-1-s (coming back up). Its order of blocks comes
// from running the whole W, every stage, on unit costs (a forward 1, a backward 2), the same
// way on every rank: a stage that is free runs the ready forward of the lowest micro-batch
// (the later chunk on a tie), else the ready backward of the lowest micro-batch. A forward of
// global chunk c waits while 2pp - c micro-batches are in flight through c (between its
// forward and its backward): 1F1B's rule for a pipeline of 2pp chunks, which bounds the
// activations a stage holds (2pp - s through its first chunk: 1F1B's pp - s, plus pp for the
// way back up; s + 1 through its second), as dhxc check estimates them. Each chunk runs its
// forwards and its backwards in micro-batch order, so each link's transfers come in the same
// order on both sides, and a stage's blocks run in an order that the simulated run shows
// possible, so no stage waits forever. pp = 2, four micro-batches (F, B: the stage's first
// chunk; f, b: its second; a backward takes two steps):
//
//   stage 0: F0 F1 F2 f0 F3 b0 b0 f1 b1 b1 f2 b2 b2 B0 B0 .  f3 b3 b3 B1 B1 .  B2 B2 .  .  B3 B3
//   stage 1: .  F0 f0 F1 f1 F2 .  b0 b0 f2 B0 B0 F3 b1 b1 f3 B1 B1 b2 b2 B2 B2 b3 b3 B3 B3
typedef struct fold_sim {
  int pp, micro, chunks;   // chunks: 2pp
  int *fwd_end, *bwd_end;  // [chunk · micro + m]: when the block ends (-1: not run yet)
  int *next_fwd, *next_bwd;  // per chunk: its next micro-batch in order
  int *in_flight;          // per chunk: micro-batches between its forward and its backward
  int *busy_until;         // per stage
} fold_sim;

static bool ended(const int *end, int at, int t) { return end[at] >= 0 && end[at] <= t; }

// Whether the next forward (backward) of global chunk gc may start on its stage at time t.
static bool fold_ready(const fold_sim *f, int gc, bool backward, int t) {
  int m = backward ? f->next_bwd[gc] : f->next_fwd[gc], at = gc * f->micro + m;
  if (m >= f->micro) return false;
  if (backward)
    return ended(f->fwd_end, at, t) &&
           (gc == f->chunks - 1 || ended(f->bwd_end, at + f->micro, t));
  if (f->in_flight[gc] >= 2 * f->pp - gc) return false;
  return gc == 0 || ended(f->fwd_end, at - f->micro, t);
}

// The block stage s starts at time t (false: none is ready).
static bool fold_pick(const fold_sim *f, int s, int t, dhx_fold_block *b) {
  for (int backward = 0; backward <= 1; backward++) {
    int best = -1;
    for (int c = 1; c >= 0; c--) {  // the later chunk first on a tie
      int gc = c == 0 ? s : 2 * f->pp - 1 - s;
      int m = backward ? f->next_bwd[gc] : f->next_fwd[gc];
      if (!fold_ready(f, gc, backward, t) || (best >= 0 && m >= best)) continue;
      best = m;
      *b = (dhx_fold_block){.backward = backward, .m = m, .c = c};
    }
    if (best >= 0) return true;
  }
  return false;
}

static void fold_run(fold_sim *f, int s, int t, const dhx_fold_block *b) {
  int gc = b->c == 0 ? s : 2 * f->pp - 1 - s, at = gc * f->micro + b->m;
  int length = b->backward ? 2 : 1;
  if (b->backward) {
    f->bwd_end[at] = t + length;
    f->next_bwd[gc]++;
  } else {
    f->fwd_end[at] = t + length;
    f->next_fwd[gc]++;
  }
  f->in_flight[gc] += b->backward ? -1 : 1;
  f->busy_until[s] = t + length;
}

dhx_fold_block *dhx_fold_order(int pp, int micro, int stage) {
  fold_sim f = {.pp = pp, .micro = micro, .chunks = 2 * pp};
  size_t blocks = (size_t)f.chunks * (size_t)micro;
  size_t counters = 3 * (size_t)f.chunks + (size_t)pp;
  int *mem = malloc(sizeof(int) * (2 * blocks + counters));
  dhx_fold_block *order = malloc(sizeof *order * 4 * (size_t)micro);
  if (!mem || !order) abort();
  f.fwd_end = mem;
  f.bwd_end = f.fwd_end + blocks;
  f.next_fwd = f.bwd_end + blocks;
  f.next_bwd = f.next_fwd + f.chunks;
  f.in_flight = f.next_bwd + f.chunks;
  f.busy_until = f.in_flight + f.chunks;
  for (size_t i = 0; i < 2 * blocks; i++) mem[i] = -1;
  for (size_t i = 2 * blocks; i < 2 * blocks + counters; i++) mem[i] = 0;
  int left = (int)(2 * blocks), n = 0;
  // Every block waits only for blocks of the same or earlier micro-batches, so the oldest
  // unfinished one can always go on: the run ends within the serial time of all blocks.
  for (int t = 0; left > 0; t++) {
    if (t > 3 * (int)blocks)
      DHX_ICE("the W-folded schedule does not finish (pp %d, %d micro-batches)", pp, micro);
    for (int s = 0; s < pp; s++) {
      dhx_fold_block b;
      if (f.busy_until[s] > t || !fold_pick(&f, s, t, &b)) continue;
      fold_run(&f, s, t, &b);
      left--;
      if (s == stage) order[n++] = b;
    }
  }
  free(mem);
  return order;
}

// When each gradient this stage sends may be waited for (settle_after): at the first message
// from the receiving stage that it sends after receiving the gradient, from a block on the
// same compute stream (unpaired: any; paired: the same strand), so that the message cannot
// have been sent before the gradient arrived. A gradient no such message follows is waited for
// at the end of the step (finish).
static void plan_gradient_settles(pipe *p, const dhx_fold_block *mine, int n, int micro,
                                  bool paired) {
  const dhx_graph *g = p->g;
  int s = g->pp_rank, last = g->pp * g->chunks - 1;
  size_t keys = (size_t)micro * (size_t)g->chunks * 2;
  p->settle_head = malloc(sizeof(int) * keys);
  p->settle_next = malloc(sizeof(int) * p->nblocks);
  if (!p->settle_head || !p->settle_next) abort();
  for (size_t i = 0; i < keys; i++) p->settle_head[i] = -1;
  for (size_t i = 0; i < p->nblocks; i++) p->settle_next[i] = -1;
  // The neighbours' orders (a W has two, the others one), and where each block is in them.
  struct {
    int stage, n;
    dhx_fold_block *order;
    int *pos;
  } peers[2] = {{.stage = -1}, {.stage = -1}};
  for (int k = 0; k < n; k++) {
    const dhx_fold_block *b = &mine[k];
    int gc = dhx_global_chunk(g, s, b->c);
    if (!b->backward || gc == 0 || dhx_chunk_stage(g, gc - 1) == s) continue;  // sends nothing
    int x = dhx_chunk_stage(g, gc - 1), j = peers[0].stage == x || peers[0].stage < 0 ? 0 : 1;
    if (peers[j].stage < 0) {
      peers[j].stage = x;
      peers[j].order = stage_order(g, x, micro, paired, &peers[j].n);
      peers[j].pos = malloc(sizeof(int) * keys);
      if (!peers[j].pos) abort();
      for (int i = 0; i < peers[j].n; i++) {
        const dhx_fold_block *o = &peers[j].order[i];
        peers[j].pos[message_key(g, o->m, o->c, o->backward)] = i;
      }
    }
    const dhx_fold_block *peer = peers[j].order;
    int npeer = peers[j].n;
    // x receives the gradient as its backward of (b->m, chunk gc - 1) starts; the first block
    // from there on the same stream that ends by sending to this stage settles it
    for (int i = peers[j].pos[message_key(g, b->m, dhx_chunk_local(g, gc - 1), true)]; i < npeer;
         i++) {
      const dhx_fold_block *o = &peer[i];
      if (paired && dhx_strand_of(g, o->m) != dhx_strand_of(g, b->m)) continue;
      int from = dhx_global_chunk(g, x, o->c), to = o->backward ? from - 1 : from + 1;
      if (to < 0 || to > last || dhx_chunk_stage(g, to) != s) continue;
      size_t key = message_key(g, o->m, dhx_chunk_local(g, to), o->backward);
      int at = b->m * g->chunks + b->c;
      p->settle_next[at] = p->settle_head[key];
      p->settle_head[key] = at;
      break;
    }
  }
  for (int j = 0; j < 2; j++) {
    free(peers[j].order);
    free(peers[j].pos);
  }
}

// The hand-off of the gradient at the bottom of a W: one tensor of the same shape, in place.
static void check_hand_off(const dhx_graph *g, int from, int to) {
  if (from < 0 || to < 0) DHX_ICE("stage %d: no gradient crosses the bottom of the W", g->pp_rank);
  const dhx_tensor *a = &g->tensors[from], *b = &g->tensors[to];
  if (a->kind != DHX_T_ACT || b->kind != DHX_T_ACT || a->dtype != b->dtype ||
      dhx_tensor_elems(a) != dhx_tensor_elems(b))
    DHX_ICE("stage %d: the gradients at the bottom of the W differ ('%s', '%s')", g->pp_rank,
            a->name, b->name);
}

void dhx_lower_pipeline(dhx_graph *g, int micro, double loss_scale) {
  int v = g->chunks;
  chunk_tmpl *tmpl = calloc((size_t)v, sizeof *tmpl);
  if (!tmpl) abort();
  for (int c = 0; c < v; c++) {
    lower_chunk(g, c, loss_scale, false, &tmpl[c]);
    if (!g->async_comm) continue;
    if (g->pp > 1) DHX_ICE("async collectives with %d stages", g->pp);
    tmpl[c].nfwd = dhx_async_collectives(g, &tmpl[c].ops, 0, tmpl[c].nfwd);
    dhx_async_collectives(g, &tmpl[c].ops, tmpl[c].nfwd, tmpl[c].ops.n);
  }
  pipe p;
  start(&p, g, DHX_PROG_MICRO, tmpl, micro, micro);
  for (int c = 0; c < v && g->strands; c++) {
    if (g->strands_free)  // the small ops too on one stage (weight_grads.c says why)
      dhx_defer_weight_grads(g, &tmpl[c].ops, tmpl[c].nfwd, tmpl[c].ops.n, g->pp == 1);
    segment_backward(g, &tmpl[c]);
    if (g->defer_collectives)
      dhx_defer_collectives(g, &tmpl[c].ops, tmpl[c].nseg, tmpl[c].seg_first);
    segment_forward(&tmpl[c]);
  }
  p.latest = -1;
  for (int i = 0; i < 4; i++) p.block_end[i / 2][i % 2] = -1;
  if (g->strands && v == 1) {  // chunks wait by state (below)
    p.seg_event = malloc(sizeof(int) * (size_t)(tmpl[0].nseg ? tmpl[0].nseg : 1));
    if (!p.seg_event) abort();
    for (int s = 0; s < tmpl[0].nseg; s++) p.seg_event[s] = -1;
  }
  bool side_by_side = g->strands && v > 1;  // backwards by state (wait_for_touched)
  for (int c = 0; c < v; c++) side_by_side &= tmpl[c].touch != NULL;
  if (side_by_side) {
    p.touch_event = malloc(sizeof(int) * (size_t)g->ntensors);
    p.touch_stream = malloc(sizeof(int) * (size_t)g->ntensors);
    if (!p.touch_event || !p.touch_stream) abort();
    for (int i = 0; i < g->ntensors; i++) p.touch_event[i] = p.touch_stream[i] = -1;
  }
  int streams[2] = {0, second_strand_stream(g)};
  const int *strand = g->strands ? streams : NULL;
  // Template collectives (g->async_comm, one stage only): each strand's on a stream of its own,
  // after the compute streams.
  p.strand_comm[0] = strand ? 2 : 1;
  p.strand_comm[1] = 3;
  p.comm = p.strand_comm[0];
  if (g->fold) {
    if (g->pp_rank == g->pp - 1) {  // the bottom of the W: chunk 1's input gradient feeds chunk 0
      p.alias_from = tmpl[0].d_out;
      p.alias_to = tmpl[1].d_in;
      check_hand_off(g, p.alias_from, p.alias_to);
    }
  }
  int n;
  dhx_fold_block *order = stage_order(g, g->pp_rank, micro, strand != NULL, &n);
  plan_gradient_settles(&p, order, n, micro, strand != NULL);
  // Every micro-batch copies each chunk's ops, with a tensor for at most each of them, besides
  // the transfers and events between blocks (a few per block).
  int64_t per_micro = 0;
  for (int c = 0; c < v; c++) per_micro += tmpl[c].ops.n + 16;
  dhx_oplist_reserve(&g->prog[DHX_PROG_MICRO], per_micro * micro);
  dhx_graph_reserve_tensors(g, per_micro * micro);
  run_blocks(&p, order, n, strand);
  free(order);
  finish(&p);
  free(p.seg_event);
  free(p.touch_event);
  free(p.touch_stream);
  free(p.left[0].ev);
  free(p.left[1].ev);
  for (int i = 0; i < v; i++) {
    free(tmpl[i].fseg_first);
    free(tmpl[i].ops.ops);
    free(tmpl[i].seg_first);
    free(tmpl[i].seg_dep);
    free(tmpl[i].touch_first);
    free(tmpl[i].touch);
    tmpl[i] = (chunk_tmpl){.d_in = tmpl[i].d_in, .d_out = tmpl[i].d_out};
  }
  eval_program(g, loss_scale, micro, tmpl);
}
