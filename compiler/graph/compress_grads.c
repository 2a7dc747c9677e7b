// compress_grads.c — TLq-HS (SDP4Bit): the sharded gradient reduce-scatter as two quantized
// all-to-alls (docs/compression.md).
//
// The data ranks of a group sit on N nodes, L on each: rank d = n·L + j is member j of its
// node's intra-node communicator and member n of the inter-node one of index j. The whole
// gradient of a parameter is dp pieces of c elements (c a multiple of the group G), piece d'
// ending up, summed, on rank d'. Then
//
//   1. each piece is Hadamard-transformed (per 32-block) and quantized to `intra` bits, in the
//      order the first all-to-all sends: block j' (for member j') is the pieces of the ranks
//      with local index j', node by node, [piece(0·L+j'), piece(1·L+j'), ...]   (hadamard_quantize)
//   2. all-to-all among the node's L ranks: rank (n, j) holds L rows of N pieces, row l being
//      member l's pieces of the ranks with index j;
//   3. the L rows dequantized, summed, requantized to `inter` bits, still in the transformed
//      domain (the transform is linear): N pieces, piece n' the node's partial sum of the
//      piece of rank (n', j)                                           (dequantize_reduce_quantize)
//   4. all-to-all among the N ranks of index j: rank (n, j) holds N rows, row n' node n''s
//      partial sum of its own piece;
//   5. the N rows dequantized, summed and transformed back into the piece   (dequantize_reduce_hadamard)
//
// One node (N = 1) or one rank per node (L = 1) is one all-to-all, at `intra` or `inter` bits.
// Codes move as i32 words, scales as f32, each in an all-to-all of its own. Steps 4 and 5 may
// run on a stream of their own, so that one parameter's exchange across nodes overlaps the
// next one's exchange within the node (zero 1's reduction in STEP).
//
// Stochastic rounding everywhere: seed = the step's noise register; counter = a range per hop
// and data rank, plus the element's position in the whole gradient (all parameters' pieces in
// tensor order), so no two roundings of a reduction on a rank or across the data-parallel
// group share a number. Zero 2 and 3 reduce each micro-batch's gradient with the same numbers:
// the runtime runs MICRO once per micro-batch unless it spans the step (paired strands,
// pipelines), so only a counter that ignores the micro-batch keeps paired and unpaired runs
// bitwise alike (each reduction is unbiased on its own; zero 1 reduces once per step).
#include <stdio.h>

#include "lower.h"

#define PIECE_ALIGN 16  // elements: as zero.c's pieces, each starting on a DHX_ALIGN boundary

bool dhx_tlq_on(const dhx_graph *g) { return g->tlq.intra_bits > 0 && dhx_zero_sharded(g); }

static int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

static int64_t gcd(int64_t a, int64_t b) { return b ? gcd(b, a % b) : a; }

int64_t dhx_grad_piece(const dhx_graph *g, int64_t elems) {
  int64_t c = g->qwd_bits ? dhx_qwd_piece(elems, g->dp, g->qwd_group) : dhx_zero_piece(elems, g->dp);
  if (!dhx_tlq_on(g) || g->tlq.group <= PIECE_ALIGN) return c;
  int64_t r = round_up(c, g->tlq.group), q = g->qwd_group;
  // qWD cuts a piece longer than its group into whole groups: keep both whole.
  if (g->qwd_bits && r > q && r % q) r = round_up(r, g->tlq.group / gcd(g->tlq.group, q) * q);
  return r;
}

// The position of a parameter's whole gradient among all of them, and their total, in
// elements (pieces padded as the lowering cuts them).
static int64_t gradient_position(const dhx_graph *g, int param, int64_t *total) {
  int64_t at = 0, pos = 0;
  for (int i = 0; i < g->ntensors; i++) {
    if (g->tensors[i].kind != DHX_T_PARAM) continue;
    if (i == param) pos = at;
    at += dhx_grad_piece(g, dhx_tensor_elems(&g->tensors[i])) * g->dp;
  }
  *total = at;
  return pos;
}

// What one reduction needs: the shape of the group, the tensors, the counters.
typedef struct tlq_job {
  dhx_graph *g;
  dhx_oplist *l;
  int stream, prog;
  int inter_stream;      // the stream of steps 4 and 5
  int64_t c, G;          // piece and group elements
  int L, N;              // data ranks per node, nodes
  int64_t pos, total;    // the parameter's position in the whole gradient, the total
  int micro;
  const char *name;      // the parameter
} tlq_job;

static int per_word(int bits) { return 32 / bits; }

static int scratch(const tlq_job *t, const char *what, dhx_dtype dt, int64_t elems) {
  char name[DHX_NAME_MAX];
  snprintf(name, sizeof name, "tlq.%.50s.%s[%d]", t->name, what, t->micro);
  int id = dhx_tensor_new(t->g, name, DHX_T_ACT, dt, 1, &elems);
  t->g->tensors[id].program = t->prog;
  return id;
}

// The first counter of hop `hop` (0, 1) on this rank for element 0 of the whole gradient.
static int64_t counter_base(const tlq_job *t, int hop) {
  return ((int64_t)hop * t->g->dp + t->g->dp_rank) * t->total;
}

// Codes and scales of `elems` elements at `bits`: a pair of tensors.
typedef struct packed {
  int codes, scales;
  int64_t elems;
  int bits;
} packed;

static packed packed_new(const tlq_job *t, const char *what, int64_t elems, int bits) {
  char c[32], s[32];
  snprintf(c, sizeof c, "%s.codes", what);
  snprintf(s, sizeof s, "%s.scales", what);
  return (packed){scratch(t, c, DHX_I32, elems / per_word(bits)),
                  scratch(t, s, DHX_F32, elems / t->G), elems, bits};
}

static void note(char *buf, size_t n, const tlq_job *t, const char *what) {
  snprintf(buf, n, "%s %.60s", what, t->name);
}

// Step 1: the pieces in the first all-to-all's order, transformed and quantized.
static void quantize_pieces(const tlq_job *t, int whole, const packed *q, int members,
                            int rows) {
  int pw = per_word(q->bits);
  char msg[DHX_NAME_MAX];
  note(msg, sizeof msg, t, "quantize the pieces of");
  // With one level the pieces are already in order: one launch over them all.
  int runs = members > 1 && rows > 1 ? members * rows : 1;
  int64_t len = runs == 1 ? t->c * t->g->dp : t->c;
  for (int k = 0; k < runs; k++) {
    int dest = runs == 1 ? 0 : (k % rows) * t->L + k / rows;  // block k/rows, row k%rows
    int64_t src = (int64_t)dest * t->c, at = (int64_t)k * t->c;
    int64_t offset = counter_base(t, 0) + t->pos + src;
    dhx_operand seed = dhx_regarg(DHX_REG_NOISE_SEED);
    dhx_operand codes = dhx_buf(q->codes, at / pw), scales = dhx_buf(q->scales, at / t->G);
    if (t->g->tlq.hadamard) {
      dhx_operand a[] = {codes, scales, dhx_buf(whole, src), dhx_i64(t->G / pw), dhx_i64(pw),
                         dhx_i64(1), seed, dhx_i64(offset)};
      dhx_emit_kernel(t->l, DHX_K_HADAMARD_QUANTIZE, len / t->G, msg, 8, a)->stream = t->stream;
    } else {
      dhx_operand a[] = {codes, scales, dhx_buf(whole, src), dhx_buf(whole, src),
                         dhx_i64(t->G / pw), dhx_i64(pw), dhx_i64(0), dhx_i64(1), seed,
                         dhx_i64(offset)};
      dhx_emit_kernel(t->l, DHX_K_QUANTIZE, len / t->G, msg, 10, a)->stream = t->stream;
    }
  }
}

// An all-to-all of the codes and of the scales over communicator role `comm`.
static void exchange(const tlq_job *t, int stream, int comm, const packed *in,
                     const packed *out) {
  char msg[DHX_NAME_MAX];
  note(msg, sizeof msg, t, comm == DHX_COMM_DP_INTRA ? "exchange in the node" :
                           "exchange across nodes");
  dhx_emit_all_to_all(t->l, stream, comm, in->codes, out->codes,
                      in->elems / per_word(in->bits), msg)->dtype = DHX_I32;
  dhx_emit_all_to_all(t->l, stream, comm, in->scales, out->scales, in->elems / t->G, msg);
}

// Step 3: the L rows summed and requantized at `inter` bits.
static void reduce_requantize(const tlq_job *t, const packed *in, const packed *out) {
  int64_t row = in->elems / t->L;
  int pi = per_word(in->bits), po = per_word(out->bits);
  char msg[DHX_NAME_MAX];
  note(msg, sizeof msg, t, "sum the node's pieces of");
  dhx_operand a[] = {dhx_buf(out->codes, 0), dhx_buf(out->scales, 0), dhx_buf(in->codes, 0),
                     dhx_buf(in->scales, 0), dhx_i64(t->L), dhx_i64(row / pi),
                     dhx_i64(row / t->G), dhx_i64(t->G / pi), dhx_i64(pi), dhx_i64(t->G / po),
                     dhx_i64(po), dhx_i64(1), dhx_regarg(DHX_REG_NOISE_SEED),
                     dhx_i64(counter_base(t, 1) + t->pos)};
  dhx_emit_kernel(t->l, DHX_K_DEQUANTIZE_REDUCE_QUANTIZE, row / t->G, msg, 14, a)->stream =
      t->stream;
}

// Step 5: the p rows of one piece each summed (and transformed back) into `piece`.
static void reduce_into(const tlq_job *t, int stream, const packed *in, int p, int piece) {
  int pw = per_word(in->bits);
  int64_t words = t->c / pw, groups = t->c / t->G;
  char msg[DHX_NAME_MAX];
  note(msg, sizeof msg, t, "sum this rank's piece of");
  if (t->g->tlq.hadamard) {
    dhx_operand a[] = {dhx_buf(piece, 0), dhx_buf(in->codes, 0), dhx_buf(in->scales, 0),
                       dhx_i64(p), dhx_i64(words), dhx_i64(groups), dhx_i64(t->G / pw),
                       dhx_i64(pw), dhx_i64(0)};
    dhx_emit_kernel(t->l, DHX_K_DEQUANTIZE_REDUCE_HADAMARD, groups, msg, 9, a)->stream = stream;
    return;
  }
  for (int q = 0; q < p; q++) {  // no transform to undo: the rows added one by one
    dhx_operand a[] = {dhx_buf(piece, 0), dhx_buf(in->codes, q * words),
                       dhx_buf(in->scales, q * groups), dhx_i64(t->G / pw), dhx_i64(pw),
                       dhx_i64(q > 0)};
    dhx_emit_kernel(t->l, DHX_K_DEQUANTIZE, groups, msg, 6, a)->stream = stream;
  }
}

// Orders `to` after what `from` has issued so far (nothing when they are one stream).
static void join(dhx_oplist *l, int from, int to, const char *note) {
  if (from == to) return;
  int ev = l->nevents++;
  dhx_lop_push(l, DHX_L_RECORD, from, note)->event = ev;
  dhx_lop_push(l, DHX_L_WAIT, to, note)->event = ev;
}

void dhx_emit_grad_reduce(dhx_graph *g, dhx_oplist *l, int stream, int inter_stream, int prog,
                          int param, int micro, int whole, int piece, const char *note) {
  int64_t c = dhx_grad_piece(g, dhx_tensor_elems(&g->tensors[param]));
  if (!dhx_tlq_on(g)) {
    dhx_emit_reduce_scatter(l, stream, DHX_COMM_DP, whole, piece, c * g->dp, note);
    return;
  }
  char name[DHX_NAME_MAX];
  snprintf(name, sizeof name, "%s", g->tensors[param].name);
  int L = g->tlq.per_node;
  tlq_job t = {.g = g, .l = l, .stream = stream, .inter_stream = inter_stream, .prog = prog,
               .c = c, .G = g->tlq.group, .L = L, .N = g->dp / L, .micro = micro, .name = name};
  t.pos = gradient_position(g, param, &t.total);
  int64_t all = c * g->dp;
  if (t.N == 1 || L == 1) {  // one level: one all-to-all, at `intra` bits within a node
    bool intra = t.N == 1;
    int bits = intra ? g->tlq.intra_bits : g->tlq.inter_bits;
    packed q = packed_new(&t, "send", all, bits), r = packed_new(&t, "recv", all, bits);
    quantize_pieces(&t, whole, &q, 1, 1);
    exchange(&t, stream, intra ? DHX_COMM_DP_INTRA : DHX_COMM_DP_INTER, &q, &r);
    reduce_into(&t, stream, &r, g->dp, piece);
    return;
  }
  packed q1 = packed_new(&t, "send1", all, g->tlq.intra_bits);
  packed r1 = packed_new(&t, "recv1", all, g->tlq.intra_bits);
  packed q2 = packed_new(&t, "send2", c * t.N, g->tlq.inter_bits);
  packed r2 = packed_new(&t, "recv2", c * t.N, g->tlq.inter_bits);
  quantize_pieces(&t, whole, &q1, L, t.N);
  exchange(&t, stream, DHX_COMM_DP_INTRA, &q1, &r1);
  reduce_requantize(&t, &r1, &q2);
  join(l, stream, inter_stream, "the node's sums may cross nodes");
  exchange(&t, inter_stream, DHX_COMM_DP_INTER, &q2, &r2);
  reduce_into(&t, inter_stream, &r2, t.N, piece);
}

void dhx_grad_reduce_join(const dhx_graph *g, dhx_oplist *l, int stream, int inter_stream) {
  if (dhx_tlq_on(g) && g->tlq.per_node > 1 && g->tlq.per_node < g->dp)  // two levels
    join(l, inter_stream, stream, "gradients reduced across nodes");
}
