// planner_tests — the memory planner's liveness follows happens-before, not list positions:
// `planner_tests NAME`.
//
// Each test builds a MICRO op list by hand over two streams: activation `a` is written on
// stream 0 and read by a send on stream 1; activation `b` is written and read on stream 0
// after the send in list order. By position a's last use comes before b's first, so they may
// share bytes; whether they may really depends on what orders the send before b's ops.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define N 64  // elements of each activation

typedef struct two_streams {
  dhx_graph g;
  int a, b;
} two_streams;

static int activation(dhx_graph *g, const char *name) {
  int64_t shape[1] = {N};
  int t = dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 1, shape);
  g->tensors[t].program = DHX_PROG_MICRO;
  return t;
}

// An op on `stream` whose only operand is tensor t (ZERO writes it, SEND reads it).
static void use(dhx_oplist *l, dhx_lop_kind kind, int stream, int t, const char *note) {
  dhx_lop *op = dhx_lop_push(l, kind, stream, note);
  op->args[0] = dhx_buf(t, 0);
  op->args[1] = dhx_i64(N);
  op->nargs = 2;
}

static void event(dhx_oplist *l, dhx_lop_kind kind, int stream, int e, const char *note) {
  dhx_lop_push(l, kind, stream, note)->event = e;
  if (e + 1 > l->nevents) l->nevents = e + 1;
}

// s0: a = 0; c = 0; RECORD ready     s1: WAIT ready; SEND a; [SEND c]; [RECORD sent]
// s0: [WAIT sent]; b = 0; send b
// `settled` adds the RECORD/WAIT pair that orders the send of a before b's ops; `via_later`
// records `sent` after a second send on stream 1 (of c), so only program order on stream 1
// carries the send of a to the WAIT.
static two_streams plan(bool settled, bool via_later) {
  two_streams k;
  dhx_graph_init(&k.g);
  k.g.dp = 1;
  k.a = activation(&k.g, "a");
  k.b = activation(&k.g, "b");
  int c = activation(&k.g, "c");
  dhx_oplist *l = &k.g.prog[DHX_PROG_MICRO];
  use(l, DHX_L_ZERO, 0, k.a, "a = 0");
  use(l, DHX_L_ZERO, 0, c, "c = 0");
  event(l, DHX_L_RECORD, 0, 0, "ready");
  event(l, DHX_L_WAIT, 1, 0, "ready");
  use(l, DHX_L_SEND, 1, k.a, "send a");
  if (via_later) use(l, DHX_L_SEND, 1, c, "send c");
  if (settled) {
    event(l, DHX_L_RECORD, 1, 1, "sent");
    event(l, DHX_L_WAIT, 0, 1, "sent");
  }
  use(l, DHX_L_ZERO, 0, k.b, "b = 0");
  use(l, DHX_L_SEND, 0, k.b, "send b");
  dhx_plan_memory(&k.g);
  return k;
}

static bool overlap(const dhx_graph *g, int x, int y) {
  int64_t bytes = N * 4;
  return g->tensors[x].offset < g->tensors[y].offset + bytes &&
         g->tensors[y].offset < g->tensors[x].offset + bytes;
}

static void expect(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "FAIL: %s\n", what);
    exit(1);
  }
  printf("ok: %s\n", what);
}

// Nothing orders "send a" on stream 1 before b's ops on stream 0: they may run at the same
// time, so a keeps its bytes though its last use comes first in the list.
static void keeps_bytes_an_unordered_stream_may_still_read(void) {
  two_streams k = plan(false, false);
  expect(!overlap(&k.g, k.a, k.b), "a send on stream 1 that nothing orders keeps a's bytes");
  dhx_graph_free(&k.g);
}

// The compute stream waits for the send before b's ops: b may take a's bytes, also when the
// event is recorded after a later op of the sending stream.
static void shares_bytes_across_streams_ordered_by_an_event(void) {
  two_streams k = plan(true, false);
  expect(overlap(&k.g, k.a, k.b), "b takes a's bytes after the WAIT for a's send");
  dhx_graph_free(&k.g);
  k = plan(true, true);
  expect(overlap(&k.g, k.a, k.b), "b takes a's bytes after a WAIT for a later send");
  dhx_graph_free(&k.g);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: planner_tests NAME\n");
    return 2;
  }
  if (strcmp(argv[1], "memplan_planner_keeps_bytes_an_unordered_stream_may_still_read") == 0)
    keeps_bytes_an_unordered_stream_may_still_read();
  else if (strcmp(argv[1], "memplan_planner_shares_bytes_across_streams_ordered_by_an_event") ==
           0)
    shares_bytes_across_streams_ordered_by_an_event();
  else {
    fprintf(stderr, "unknown test %s\n", argv[1]);
    return 2;
  }
  return 0;
}
