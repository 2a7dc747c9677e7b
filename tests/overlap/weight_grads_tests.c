// weight_grads_tests.c — free paired strands' weight gradients moved past the next collective
// (compiler/graph/weight_grads.c), on hand-made op lists: a sequence-parallel linear's backward
// with dW before dX ends with dW just after the reduce-scatter of dX, the rest in order, and a
// bias's column sums move with it only when the small ops are asked for (one stage); dW does
// not move past an op that writes what it reads or reads what it writes, a collective on what
// it reads, an event, an op of another stream, nor when no collective follows.
#include "lower.h"
#include "passes.h"
#include "testlib.h"

// Fails with what was found when `ok` is false.
static void expect(bool ok, const char *what, const char *got) {
  if (!ok) fprintf(stderr, "%s: %s\n", what, got);
  CHECK(ok);
}

#define N 64  // elements of every tensor

typedef struct linear {
  dhx_graph g;
  int xg, dy, w, dw, db, dxp, dx, out;
} linear;

static int tensor(dhx_graph *g, const char *name, dhx_tensor_kind kind) {
  int64_t shape[1] = {N};
  return dhx_tensor_new(g, name, kind, DHX_F32, 1, shape);
}

static dhx_lop *gemm(dhx_oplist *l, const char *note, int a, int b, int c, double beta) {
  return dhx_emit_gemm(l, note, false, false, 8, 8, 8, dhx_buf(a, 0), 8, dhx_buf(b, 0), 8, dhx_buf(c, 0),
                8, beta);
}

static void tensors(linear *t) {
  dhx_graph_init(&t->g);
  t->xg = tensor(&t->g, "x", DHX_T_ACT);
  t->dy = tensor(&t->g, "dy", DHX_T_ACT);
  t->w = tensor(&t->g, "w", DHX_T_PARAM);
  t->dw = tensor(&t->g, "dw", DHX_T_GRAD);
  t->db = tensor(&t->g, "db", DHX_T_GRAD);
  t->dxp = tensor(&t->g, "dx.partial", DHX_T_ACT);
  t->dx = tensor(&t->g, "dx", DHX_T_ACT);
  t->out = tensor(&t->g, "out", DHX_T_ACT);
}

// The notes of l's ops joined by '|'.
static const char *order(const dhx_oplist *l) {
  static char buf[512];
  buf[0] = 0;
  for (int i = 0; i < l->n; i++) {
    if (i) strcat(buf, "|");
    strcat(buf, l->ops[i].note);
  }
  return buf;
}

static void test_moves(void) {
  linear t;
  tensors(&t);
  dhx_oplist l = {0};
  gemm(&l, "grad w", t.xg, t.dy, t.dw, 1.0);
  gemm(&l, "grad x", t.dy, t.w, t.dxp, 0.0);
  dhx_emit_reduce_scatter(&l, 0, DHX_COMM_TP, t.dxp, t.dx, N, "rs dx");
  gemm(&l, "use dx", t.dx, t.w, t.out, 0.0);
  int moved = dhx_defer_weight_grads(&t.g, &l, 0, l.n, false);
  expect(moved == 1 && strcmp(order(&l), "grad x|rs dx|grad w|use dx") == 0, "order", order(&l));
  // Only within [from, to): with the collective outside it, nothing moves.
  dhx_oplist m = {0};
  gemm(&m, "grad w", t.xg, t.dy, t.dw, 1.0);
  gemm(&m, "grad x", t.dy, t.w, t.dxp, 0.0);
  dhx_emit_reduce_scatter(&m, 0, DHX_COMM_TP, t.dxp, t.dx, N, "rs dx");
  expect(dhx_defer_weight_grads(&t.g, &m, 0, 2, false) == 0, "moved past the end of its range",
         order(&m));
  free(l.ops);
  free(m.ops);
  dhx_graph_free(&t.g);
}

// "grad w" and "grad b" (a bias's column sums) before "grad x", an op that writes an
// activation, and the reduce-scatter of dx: the column sums move too only with `small`.
static void test_small_ops(void) {
  for (int small = 0; small < 2; small++) {
    linear t;
    tensors(&t);
    dhx_oplist l = {0};
    gemm(&l, "grad w", t.xg, t.dy, t.dw, 1.0);
    dhx_operand colsum[] = {dhx_buf(t.db, 0), dhx_buf(t.dy, 0), dhx_i64(8), dhx_i64(8),
                            dhx_i64(1)};
    dhx_emit_kernel(&l, DHX_K_COLSUM, 8, "grad b", 5, colsum);
    gemm(&l, "grad x", t.dy, t.w, t.dxp, 0.0);
    gemm(&l, "x again", t.dy, t.w, t.out, 0.0);  // writes an activation: stays
    dhx_emit_reduce_scatter(&l, 0, DHX_COMM_TP, t.dxp, t.dx, N, "rs dx");
    int moved = dhx_defer_weight_grads(&t.g, &l, 0, l.n, small);
    const char *want = small ? "grad x|x again|rs dx|grad w|grad b"
                             : "grad b|grad x|x again|rs dx|grad w";
    expect(moved == 1 + small && strcmp(order(&l), want) == 0,
           small ? "small ops asked for" : "GEMMs only", order(&l));
    free(l.ops);
    dhx_graph_free(&t.g);
  }
}

// "grad w", then `between` (if any), then "grad x" and the reduce-scatter of dx; returns how
// many moved.
static int with_between(void (*between)(linear *, dhx_oplist *), const char **got) {
  linear t;
  tensors(&t);
  dhx_oplist l = {0};
  gemm(&l, "grad w", t.xg, t.dy, t.dw, 1.0);
  if (between) between(&t, &l);
  gemm(&l, "grad x", t.dy, t.w, t.dxp, 0.0);
  dhx_emit_reduce_scatter(&l, 0, DHX_COMM_TP, t.dxp, t.dx, N, "rs dx");
  int moved = dhx_defer_weight_grads(&t.g, &l, 0, l.n, false);
  *got = order(&l);
  free(l.ops);
  dhx_graph_free(&t.g);
  return moved;
}

static void writes_dy(linear *t, dhx_oplist *l) { gemm(l, "dy = x w", t->xg, t->w, t->dy, 0.0); }
static void reads_dw(linear *t, dhx_oplist *l) { gemm(l, "out = dw w", t->dw, t->w, t->out, 0.0); }
static void sums_dy(linear *t, dhx_oplist *l) {
  dhx_emit_allreduce(l, 0, DHX_COMM_TP, t->dy, N, "sum dy");
}
static void waits(linear *t, dhx_oplist *l) {
  (void)t;
  dhx_lop_push(l, DHX_L_WAIT, 0, "wait")->event = 0;
  l->nevents = 1;
}
static void other_stream(linear *t, dhx_oplist *l) {
  gemm(l, "elsewhere", t->xg, t->w, t->out, 0.0)->stream = 1;
}

static void test_stays(void) {
  const char *got;
  struct {
    void (*between)(linear *, dhx_oplist *);
    const char *what;
  } cases[] = {{writes_dy, "an op that writes dy"},
               {reads_dw, "an op that reads dw"},
               {sums_dy, "an all-reduce of dy"},
               {waits, "a wait"},
               {other_stream, "an op of another stream"}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    int moved = with_between(cases[c].between, &got);
    expect(moved == 0 && strncmp(got, "grad w|", 7) == 0, cases[c].what, got);
  }
  expect(with_between(NULL, &got) == 1, "nothing between", got);
  // No collective after it: it stays.
  linear t;
  tensors(&t);
  dhx_oplist l = {0};
  gemm(&l, "grad w", t.xg, t.dy, t.dw, 1.0);
  gemm(&l, "grad x", t.dy, t.w, t.dxp, 0.0);
  expect(dhx_defer_weight_grads(&t.g, &l, 0, l.n, false) == 0, "no collective after it", order(&l));
  free(l.ops);
  dhx_graph_free(&t.g);
}

int main(int argc, char **argv) {
  static const tl_test tests[] = {
      {"weight_grads_move_past_the_next_collective", test_moves},
      {"weight_grads_stay_where_an_op_between_orders_them", test_stays},
      {"weight_grads_move_the_small_ops_only_when_asked", test_small_ops},
  };
  return tl_main("weight_grads_tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
