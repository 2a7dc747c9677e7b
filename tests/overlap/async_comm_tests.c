// async_comm_tests.c — the async collectives pass (compiler/graph/async_comm.c) on hand-made op
// lists.
//   linear  a sequence-parallel linear's backward: the saved input's gather is issued first,
//           the input gradient is computed before the weight gradient so that its
//           reduce-scatter runs beside the weight gradient, and each result is waited for
//           just before its first reader
//   random  on random op lists over a few tensors: every op once; two ops that touch a common
//           tensor, one writing, in their order (a compute op after a collective it depends on
//           only after a WAIT for it, a collective after the compute it depends on only after
//           a RECORD the collective waits for); the collectives in their order; every
//           collective waited for by the end of its run
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

static int fails;
#define CHECK(c, ...)               \
  do {                              \
    if (!(c)) {                     \
      fprintf(stderr, __VA_ARGS__); \
      fputc('\n', stderr);          \
      fails++;                      \
    }                               \
  } while (0)

#define N 64  // elements of every tensor

static int tensor(dhx_graph *g, const char *name) {
  int64_t shape[1] = {N};
  return dhx_tensor_new(g, name, DHX_T_ACT, DHX_F32, 1, shape);
}

static bool is_coll(dhx_lop_kind k) {
  return k == DHX_L_ALLREDUCE || k == DHX_L_ALL_GATHER || k == DHX_L_REDUCE_SCATTER;
}

// c = a · b (8×8 by 8×8), accumulating when beta is 1.
static void gemm(dhx_oplist *l, const char *note, int a, int b, int c, double beta) {
  dhx_emit_gemm(l, note, false, false, 8, 8, 8, dhx_buf(a, 0), 8, dhx_buf(b, 0), 8, dhx_buf(c, 0),
                8, beta);
}

// Position of the op whose note is `note` in l (-1 if absent).
static int find(const dhx_oplist *l, const char *note) {
  for (int i = 0; i < l->n; i++)
    if (l->ops[i].kind != DHX_L_RECORD && l->ops[i].kind != DHX_L_WAIT &&
        strcmp(l->ops[i].note, note) == 0)
      return i;
  return -1;
}

// The WAIT on the compute stream for the event collective at position c records after it.
static int wait_for(const dhx_oplist *l, int c) {
  int ev = -1;
  for (int i = c + 1; i < l->n && ev < 0; i++)
    if (l->ops[i].kind == DHX_L_RECORD && l->ops[i].stream == l->ops[c].stream) ev = l->ops[i].event;
  for (int i = c + 1; i < l->n; i++)
    if (l->ops[i].kind == DHX_L_WAIT && l->ops[i].stream == 0 && l->ops[i].event == ev) return i;
  return -1;
}

static void test_linear(void) {
  dhx_graph g = {0};
  int x = tensor(&g, "x"), xg = tensor(&g, "x.gathered"), dy = tensor(&g, "dy");
  int w = tensor(&g, "w"), dw = tensor(&g, "dw"), dxp = tensor(&g, "dx.partial");
  int dx = tensor(&g, "dx"), out = tensor(&g, "out");
  dhx_oplist l = {0};
  dhx_emit_all_gather(&l, 0, DHX_COMM_TP, x, xg, N, "gather x");
  gemm(&l, "grad w", xg, dy, dw, 1.0);
  gemm(&l, "grad x", dy, w, dxp, 0.0);
  dhx_emit_reduce_scatter(&l, 0, DHX_COMM_TP, dxp, dx, N, "reduce-scatter dx");
  gemm(&l, "use dx", dx, w, out, 0.0);
  int end = dhx_async_collectives(&g, &l, 0, l.n);
  CHECK(end == l.n, "the range ends at %d of %d ops", end, l.n);
  int ag = find(&l, "gather x"), gw = find(&l, "grad w"), gx = find(&l, "grad x");
  int rs = find(&l, "reduce-scatter dx"), use = find(&l, "use dx");
  CHECK(ag >= 0 && gw >= 0 && gx >= 0 && rs >= 0 && use >= 0, "an op is missing");
  CHECK(l.ops[ag].stream == DHX_TMPL_COMM_STREAM && l.ops[rs].stream == DHX_TMPL_COMM_STREAM,
        "the collectives are not on the communication stream");
  CHECK(ag < gx && gx < rs && rs < gw && gw < use,
        "order: gather %d, grad x %d, reduce-scatter %d, grad w %d, use %d", ag, gx, rs, gw, use);
  int wag = wait_for(&l, ag), wrs = wait_for(&l, rs);
  CHECK(wag > rs && wag < gw, "the gather is waited for at %d, not just before grad w (%d)", wag, gw);
  CHECK(wrs > gw && wrs < use, "the reduce-scatter is waited for at %d, not just before its "
        "reader (%d)", wrs, use);
  free(l.ops);
  dhx_graph_free(&g);
}

// Reads and writes of a hand-made op: bit 0 reads, bit 1 writes (the pass's rules).
static int effect(const dhx_lop *op, int j) {
  switch (op->kind) {
    case DHX_L_GEMM: return j < 2 ? 1 : op->gemm->beta != 0 ? 3 : 2;
    case DHX_L_ZERO: return 2;
    case DHX_L_ALLREDUCE: return 3;
    default: return j == 0 ? 1 : 2;
  }
}

static bool conflict(const dhx_lop *a, const dhx_lop *b) {
  for (int i = 0; i < a->nargs; i++)
    for (int j = 0; j < b->nargs; j++)
      if (a->args[i].kind == DHX_ARG_BUF && b->args[j].kind == DHX_ARG_BUF &&
          a->args[i].tensor == b->args[j].tensor && ((effect(a, i) | effect(b, j)) & 2))
        return true;
  return false;
}

// Whether a WAIT on the compute stream for `ev` sits in (from, to).
static bool waited(const dhx_oplist *l, int ev, int from, int to) {
  for (int i = from + 1; i < to; i++)
    if (l->ops[i].kind == DHX_L_WAIT && l->ops[i].stream == 0 && l->ops[i].event == ev) return true;
  return false;
}

static void check_random(const dhx_oplist *in, const dhx_oplist *out, int seed) {
  int pos[64], nc = 0, ncol = 0;
  for (int i = 0; i < in->n; i++) {
    char note[16];
    snprintf(note, sizeof note, "op%d", i);
    pos[i] = find(out, note);
    CHECK(pos[i] >= 0, "seed %d: op %d is missing", seed, i);
    if (pos[i] < 0) return;
  }
  for (int i = 0; i < out->n; i++) {
    const dhx_lop *op = &out->ops[i];
    if (op->kind == DHX_L_RECORD || op->kind == DHX_L_WAIT) continue;
    nc++;
    CHECK(is_coll(op->kind) == (op->stream == DHX_TMPL_COMM_STREAM), "seed %d: op '%s' is on "
          "stream %d", seed, op->note, op->stream);
  }
  CHECK(nc == in->n, "seed %d: %d ops out of %d", seed, nc, in->n);
  for (int i = 0; i < in->n; i++) {
    const dhx_lop *a = &in->ops[i];
    if (is_coll(a->kind)) {  // the collectives keep their order
      for (int j = i + 1; j < in->n; j++)
        if (is_coll(in->ops[j].kind)) {
          CHECK(pos[i] < pos[j], "seed %d: collectives %d and %d swapped", seed, i, j);
          break;
        }
      ncol++;
    }
    for (int j = i + 1; j < in->n; j++) {
      const dhx_lop *b = &in->ops[j];
      if (!conflict(a, b)) continue;
      if (!is_coll(a->kind) && !is_coll(b->kind)) {
        CHECK(pos[i] < pos[j], "seed %d: ops %d and %d swapped", seed, i, j);
      } else if (is_coll(a->kind) && !is_coll(b->kind)) {  // b waits for a's done event
        int ev = out->ops[pos[i] + 1].event;
        CHECK(out->ops[pos[i] + 1].kind == DHX_L_RECORD && waited(out, ev, pos[i], pos[j]),
              "seed %d: op %d runs without waiting for collective %d", seed, j, i);
      } else if (!is_coll(a->kind)) {  // b starts after a RECORD that follows a
        int ev = out->ops[pos[j] - 1].event;
        bool ok = out->ops[pos[j] - 1].kind == DHX_L_WAIT;
        int rec = -1;
        for (int k = 0; k < out->n && ok; k++)
          if (out->ops[k].kind == DHX_L_RECORD && out->ops[k].event == ev) rec = k;
        CHECK(ok && rec > pos[i], "seed %d: collective %d may start before op %d", seed, j, i);
      } else {
        CHECK(pos[i] < pos[j], "seed %d: collectives %d and %d swapped", seed, i, j);
      }
    }
  }
  for (int i = 0; i < in->n; i++)  // every collective is waited for in the run
    if (is_coll(in->ops[i].kind))
      CHECK(waited(out, out->ops[pos[i] + 1].event, pos[i], out->n), "seed %d: collective %d "
            "is never waited for", seed, i);
  (void)ncol;
}

static void test_random(void) {
  for (int seed = 1; seed <= 300; seed++) {
    srand((unsigned)seed);
    dhx_graph g = {0};
    int t[6];
    for (int k = 0; k < 6; k++) {
      char name[16];
      snprintf(name, sizeof name, "t%d", k);
      t[k] = tensor(&g, name);
    }
    dhx_oplist in = {0};
    int n = 4 + rand() % 20;
    for (int i = 0; i < n; i++) {
      char note[16];
      snprintf(note, sizeof note, "op%d", i);
      int a = t[rand() % 6], b = t[rand() % 6], c = t[rand() % 6];
      switch (rand() % 5) {
        case 0: if (a != b) { dhx_emit_all_gather(&in, 0, DHX_COMM_TP, a, b, N, note); break; }
                /* fall through */
        case 1: dhx_emit_allreduce(&in, 0, DHX_COMM_TP, a, N, note); break;
        case 2: if (a != b) { dhx_emit_reduce_scatter(&in, 0, DHX_COMM_TP, a, b, N, note); break; }
                /* fall through */
        case 3: gemm(&in, note, a, b, c, rand() % 2); break;
        default: {
          dhx_lop *z = dhx_lop_push(&in, DHX_L_ZERO, 0, note);
          z->args[0] = dhx_buf(c, 0);
          z->args[1] = dhx_i64(N * 4);
          z->nargs = 2;
        }
      }
    }
    dhx_oplist out = in;
    out.ops = malloc(sizeof(dhx_lop) * (size_t)in.n);
    memcpy(out.ops, in.ops, sizeof(dhx_lop) * (size_t)in.n);
    out.cap = in.n;
    dhx_async_collectives(&g, &out, 0, out.n);
    check_random(&in, &out, seed);
    free(in.ops);
    free(out.ops);
    dhx_graph_free(&g);
  }
}

int main(int argc, char **argv) {
  const char *which = argc > 1 ? argv[1] : "";
  if (strcmp(which, "linear") == 0) test_linear();
  else if (strcmp(which, "random") == 0) test_random();
  else {
    fprintf(stderr, "usage: async_comm_tests linear|random\n");
    return 2;
  }
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  return fails ? 1 : 0;
}
