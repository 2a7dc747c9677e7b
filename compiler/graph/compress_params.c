// compress_params.c — qWD, SDP4Bit's quantized weight differences, on the parameter all-gather
// of sharded data parallelism (zero 1 and 2; zero.c cuts the state into pieces).
//
// Without qWD, STEP runs AdamW on this rank's piece of the whole parameters and all-gathers
// the updated pieces in place. With qWD each rank keeps fp32 master weights of its piece (a
// persistent tensor like the moments, checkpointed as NAME.master) and STEP runs:
//
//   AdamW on the master piece (not on the model's weights)
//   quantize: v = master piece - this rank's piece of the whole weights, stochastic rounding
//             (seed: the step's noise_seed register; counter: the element's place among the
//             stage's parameters, so no two elements of a step share a number) → i32 codes and
//             f32 scales, written into this rank's chunk of whole-sized code and scale buffers
//   two in-place all-gathers over the data-parallel group for the whole step: every
//             parameter's codes (i32) in one, the scales in the other
//   dequantize with accumulate on every rank, the sender too: whole weights += every rank's
//             dequantized difference
//
// So every replica adds the same numbers and stays bitwise identical, and the rounding error
// does not accumulate: the next difference is taken against the weights as they are.
//
// Groups: a piece is a whole number of groups of `qwd_group` elements, padded with zeros (which
// stay zero: their difference is 0, whose code is 0 with either rounding). A tensor whose piece
// is shorter than a group is one smaller group (its piece rounded up to 16 elements), so small
// tensors (biases, norms) are not padded to a whole group of 2048.
#include <stdio.h>
#include <stdlib.h>

#include "lower.h"

#define PIECE_ALIGN 16  // elements: every piece starts on a DHX_ALIGN boundary (as in zero.c)

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int64_t dhx_qwd_piece(int64_t elems, int dp, int group) {
  int64_t per = (elems + dp - 1) / dp;
  if (per < group) return round_up(per, PIECE_ALIGN);
  return round_up(per, group > PIECE_ALIGN ? group : PIECE_ALIGN);  // both powers of two: the lcm
}

// The group of a piece: qwd_group, or the whole piece when it is shorter.
static int64_t group_of(const dhx_graph *g, int64_t piece) {
  return piece < g->qwd_group ? piece : g->qwd_group;
}

void dhx_qwd_add_masters(dhx_graph *g) {
  int n = g->ntensors;
  for (int i = 0; i < n; i++) {
    if (g->tensors[i].kind != DHX_T_PARAM || g->tensors[i].opt_m < 0) continue;
    int m = dhx_add_param_state(g, i, "master.", DHX_T_MASTER);  // (moves g->tensors)
    const dhx_tensor *like = &g->tensors[g->tensors[i].opt_m];    // this rank's piece
    g->tensors[m].shard_parts = like->shard_parts;
    g->tensors[m].shard_index = like->shard_index;
    g->tensors[m].alloc_elems = like->alloc_elems;
    g->tensors[i].master = m;
  }
}

// One parameter's share of the exchange: its piece, groups, and where this parameter's codes
// and scales sit in each rank's chunk of the shared code and scale buffers.
typedef struct qwd_param {
  int param;
  int64_t piece, group, words, groups;  // words per group, groups per piece
  int64_t word_at, scale_at;            // offsets in a rank's chunk
} qwd_param;

// The codes and scales of every parameter, rank r's chunk at r · (words or scales) elements:
// one all-gather each for the whole step (two collectives, not two per parameter: the
// latency of a ring step would otherwise dominate small tensors).
typedef struct qwd_bucket {
  qwd_param *ps;
  int n;
  int64_t words, scales;  // per rank chunk
  int codes_t, scales_t;
} qwd_bucket;

static int step_tensor(dhx_graph *g, const char *name, dhx_dtype dt, int64_t elems) {
  int t = dhx_tensor_new(g, name, DHX_T_ACT, dt, 1, &elems);
  g->tensors[t].program = DHX_PROG_STEP;
  return t;
}

static void plan_bucket(dhx_graph *g, qwd_bucket *b) {
  int64_t per_word = 32 / g->qwd_bits;
  b->ps = calloc((size_t)g->ntensors + 1, sizeof *b->ps);
  if (!b->ps) abort();
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *p = &g->tensors[i];
    if (p->kind != DHX_T_PARAM || p->master < 0) continue;
    qwd_param q = {.param = i, .piece = dhx_tensor_alloc_elems(&g->tensors[p->master])};
    q.group = group_of(g, q.piece);
    q.words = q.group / per_word;
    q.groups = q.piece / q.group;
    q.word_at = b->words;
    q.scale_at = b->scales;
    b->words += q.groups * q.words;
    b->scales += q.groups;
    b->ps[b->n++] = q;
  }
  b->codes_t = step_tensor(g, "qwd.codes", DHX_I32, g->dp * b->words);
  b->scales_t = step_tensor(g, "qwd.scales", DHX_F32, g->dp * b->scales);
}

// quantize(codes, scales, x = master piece, ref = this rank's piece of the weights, words,
// per_word, subtract 1, stochastic 1, seed, offset) over the piece's groups.
static void emit_quantize(dhx_graph *g, const qwd_bucket *b, const qwd_param *q,
                          int64_t counter) {
  const dhx_tensor *p = &g->tensors[q->param];
  int64_t r = g->dp_rank;
  dhx_operand a[] = {dhx_buf(b->codes_t, r * b->words + q->word_at),
                     dhx_buf(b->scales_t, r * b->scales + q->scale_at), dhx_buf(p->master, 0),
                     dhx_buf(q->param, r * q->piece), dhx_i64(q->words),
                     dhx_i64(32 / g->qwd_bits), dhx_i64(1), dhx_i64(1),
                     dhx_regarg(DHX_REG_NOISE_SEED), dhx_i64(counter + r * q->piece)};
  char note[DHX_NAME_MAX];
  snprintf(note, sizeof note, "qwd: quantize %.60s's update", p->name);
  dhx_emit_kernel(&g->prog[DHX_PROG_STEP], DHX_K_QUANTIZE, q->groups, note, 10, a);
}

// An in-place all-gather of this rank's chunk of `t` (`chunk` elements of type dt).
static void emit_gather(dhx_graph *g, int t, int64_t chunk, dhx_dtype dt, const char *note) {
  dhx_lop *ag = dhx_emit_all_gather(&g->prog[DHX_PROG_STEP], 1, DHX_COMM_DP, t, t,
                                    chunk * g->dp, note);
  ag->args[0] = dhx_buf(t, (int64_t)g->dp_rank * chunk);
  ag->dtype = dt;
}

// dequantize(out = rank q's piece of the whole weights, its codes, its scales, words,
// per_word, accumulate 1): every element is added to once, so the order does not matter.
static void emit_dequantize(dhx_graph *g, const qwd_bucket *b, const qwd_param *p, int q) {
  dhx_operand a[] = {dhx_buf(p->param, q * p->piece),
                     dhx_buf(b->codes_t, q * b->words + p->word_at),
                     dhx_buf(b->scales_t, q * b->scales + p->scale_at), dhx_i64(p->words),
                     dhx_i64(32 / g->qwd_bits), dhx_i64(1)};
  char note[DHX_NAME_MAX];
  snprintf(note, sizeof note, "qwd: add rank %d's update into %.50s", q,
           g->tensors[p->param].name);
  dhx_emit_kernel(&g->prog[DHX_PROG_STEP], DHX_K_DEQUANTIZE, p->groups, note, 6, a);
}

void dhx_lower_qwd_gather(dhx_graph *g) {
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];
  qwd_bucket b = {0};
  plan_bucket(g, &b);
  int64_t counter = 0;  // the stage's parameters one after another, each dp pieces long
  for (int k = 0; k < b.n; k++) {
    emit_quantize(g, &b, &b.ps[k], counter);
    counter += g->dp * b.ps[k].piece;
  }
  int go = step->nevents++, done = step->nevents++;
  dhx_lop_push(step, DHX_L_RECORD, 0, "parameter updates quantized")->event = go;
  dhx_lop_push(step, DHX_L_WAIT, 1, "parameter updates quantized")->event = go;
  emit_gather(g, b.codes_t, b.words, DHX_I32, "qwd: gather the updates' codes");
  emit_gather(g, b.scales_t, b.scales, DHX_F32, "qwd: gather the updates' scales");
  dhx_lop_push(step, DHX_L_RECORD, 1, "parameter updates gathered")->event = done;
  dhx_lop_push(step, DHX_L_WAIT, 0, "parameter updates gathered")->event = done;
  for (int k = 0; k < b.n; k++)
    for (int q = 0; q < g->dp; q++) emit_dequantize(g, &b, &b.ps[k], q);
  free(b.ps);
}
