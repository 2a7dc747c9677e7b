// precision.c — bf16 mixed precision (train { precision: bf16 }): which tensors are stored as
// bf16, and the few ops that makes necessary. Lowering, fusion, sharding and the optimizer all
// work in f32; this pass runs after them, before memory planning, and changes storage only:
// every kernel still computes in f32 (the generated kernels widen what they load and round
// what they store, kernel_spec.h) and every GEMM accumulates in f32.
//
// What stays f32:
//  * everything that is not an activation: weights, their gradients (accumulated over the
//    micro-batches in f32), moments, master pieces, losses, scratch;
//  * the per-row statistics kernels keep (norm means and reciprocal deviations, log-sum-exps,
//    the loss's partial statistics, attention's dsum), which are tiny and feed every element;
//  * what a kernel reads back after writing it (dhx_kernel_f32_only: fused attention's running
//    output and gradients, the causal softmax's probabilities);
//  * what the compression kernels touch (their formats are defined on f32 values);
//  * whatever shares a collective with one of those (all of a collective's buffers have its one
//    element type), and what a ZERO clears (its byte count is the f32 one).
// Every other activation, and activation gradient, is bf16.
//
// A GEMM computes on one type: with a bf16 operand or a bf16 result its A and B must both be
// bf16, and an epilogue's bias and pre-activation are of C's type. A weight operand then reads the weight's bf16 copy (a persistent buffer refreshed from
// the f32 weight at the start of every step and of every evaluation forward), and an f32
// activation operand a bf16 cast made just before the GEMM.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "kernels.h"
#include "lower.h"
#include "passes.h"

typedef struct prec {
  dhx_graph *g;
  int *parent;      // union-find over tensors: the tensors of one collective share a type
  bool *force_f32;  // at a class's root
  bool *candidate;  // an f32 activation (the only tensors this pass may change)
  bool *moved;      // sent or received between stages (must come out bf16 on both sides)
  int *copy;        // weight -> its bf16 copy (-1 until a GEMM needs it)
} prec;

static int find(prec *p, int t) {
  while (p->parent[t] != t) t = p->parent[t] = p->parent[p->parent[t]];
  return t;
}

static void force(prec *p, int t) { p->force_f32[find(p, t)] = true; }

static void unite(prec *p, int a, int b) {
  a = find(p, a), b = find(p, b);
  if (a == b) return;
  p->parent[a] = b;
  p->force_f32[b] = p->force_f32[b] || p->force_f32[a];
}

// Kernel arguments kept f32 for accuracy: per-row statistics (bit j: argument j).
static uint32_t stats_args(const dhx_kernel_spec *s) {
  switch (s->kind) {
    case DHX_K_LAYERNORM_FWD: return 0x6;             // mean, rstd
    case DHX_K_LAYERNORM_BWD_DX: return 0x18;         // mean, rstd
    case DHX_K_LAYERNORM_BWD_DPARAMS: return 0x30;    // mean, rstd
    case DHX_K_RMSNORM_FWD: return 0x2;               // rstd
    case DHX_K_RMSNORM_BWD_DX: return 0x8;            // rstd
    case DHX_K_RMSNORM_BWD_DGAMMA: return 0x8;        // rstd
    case DHX_K_XENT_FWD: return 0x1;                  // loss
    case DHX_K_XENT_VP_STATS: return 0x1;             // stats
    case DHX_K_XENT_VP_COMBINE: return 0x7;           // loss, lse, parts
    case DHX_K_XENT_VP_BWD: return 0x4;               // lse
    case DHX_K_ATTN_FWD: return 0x2;                  // lse
    case DHX_K_ATTN_BWD_DOT: return 0x1;              // dsum
    case DHX_K_ATTN_BWD_DQ: return 0x60;              // lse, dsum
    case DHX_K_ATTN_BWD_DKV: return 0xc0;             // lse, dsum
    case DHX_K_SUMSQ:
    case DHX_K_GRAD_NORM:
    case DHX_K_ADAMW:
    case DHX_K_QUANTIZE:
    case DHX_K_DEQUANTIZE:
    case DHX_K_HADAMARD32:
    case DHX_K_HADAMARD_QUANTIZE:
    case DHX_K_DEQUANTIZE_HADAMARD:
    case DHX_K_DEQUANTIZE_REDUCE_QUANTIZE:
    case DHX_K_DEQUANTIZE_REDUCE_HADAMARD: return 0xffff;
    default: return 0;
  }
}

static bool is_collective(dhx_lop_kind k) {
  return k == DHX_L_ALLREDUCE || k == DHX_L_ALL_GATHER || k == DHX_L_REDUCE_SCATTER ||
         k == DHX_L_ALL_TO_ALL || k == DHX_L_SEND || k == DHX_L_RECV;
}

// The constraints of one op on the types of the tensors it touches.
static void constrain(prec *p, const dhx_lop *op) {
  if (op->dead) return;
  if (op->kind == DHX_L_KERNEL || op->kind == DHX_L_EW) {
    dhx_kernel_spec s = dhx_lop_spec(op);
    uint32_t keep = dhx_kernel_f32_only(&s) | stats_args(&s);
    for (int j = 0; j < op->nargs; j++)
      if (op->args[j].kind == DHX_ARG_BUF && (keep & (1u << j))) force(p, op->args[j].tensor);
  } else if (op->kind == DHX_L_ZERO) {
    force(p, op->args[0].tensor);
  } else if (op->kind == DHX_L_GEMM && op->gemm->epilogue == DHX_GEMM_BIAS_GELU) {
    unite(p, op->args[2].tensor, op->args[4].tensor);  // cuBLASLt: the pre-activation is D's type
  } else if (is_collective(op->kind)) {
    int first = -1;
    for (int j = 0; j < op->nargs; j++) {
      if (op->args[j].kind != DHX_ARG_BUF) continue;
      int t = op->args[j].tensor;
      if (op->kind == DHX_L_SEND || op->kind == DHX_L_RECV) p->moved[t] = true;
      if (first < 0) first = t;
      else unite(p, first, t);
    }
  }
}

static void decide(prec *p) {
  dhx_graph *g = p->g;
  int n = g->ntensors;
  for (int t = 0; t < n; t++) {
    p->parent[t] = t;
    p->candidate[t] = g->tensors[t].kind == DHX_T_ACT && g->tensors[t].dtype == DHX_F32;
    p->force_f32[t] = !p->candidate[t];
  }
  for (int prog = 0; prog < DHX_PROG_COUNT; prog++)
    for (int i = 0; i < g->prog[prog].n; i++) constrain(p, &g->prog[prog].ops[i]);
  for (int t = 0; t < n; t++) {
    if (!p->candidate[t]) continue;
    if (p->force_f32[find(p, t)]) {
      // A stage decides alone what it sends; its neighbour must decide the same.
      if (p->moved[t])
        DHX_ICE("mixed precision keeps '%s', which moves between pipeline stages, in f32",
                g->tensors[t].name);
      continue;
    }
    g->tensors[t].dtype = DHX_BF16;
  }
}

static bool is_bf16(const dhx_graph *g, const dhx_operand *o) {
  return o->kind == DHX_ARG_BUF && g->tensors[o->tensor].dtype == DHX_BF16;
}

// The bf16 copy of weight w, made on first use: refreshed by `refresh` (BEGIN, EVAL).
static int weight_copy(prec *p, int w) {
  dhx_graph *g = p->g;
  if (p->copy[w] >= 0) return p->copy[w];
  const dhx_tensor src = g->tensors[w];
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s.bf16", src.name);
  int c = dhx_tensor_new(g, name, DHX_T_SCRATCH, DHX_BF16, src.ndim, src.shape);
  p->copy = realloc(p->copy, sizeof(int) * (size_t)g->ntensors);
  if (!p->copy) abort();
  p->copy[c] = -1;
  return p->copy[w] = c;
}

// out = in over n elements: a conversion, its kernel's mask saying which side is bf16.
static void push_cast(const dhx_graph *g, dhx_oplist *l, int out, int in, int64_t n, int stream,
                      const char *note) {
  dhx_ewb b;
  dhx_ewb_init(&b);
  int x = dhx_ewb_load(&b, dhx_buf(in, 0), 0);
  dhx_ewb_store(&b, x, dhx_buf(out, 0), false);
  dhx_lop *op = dhx_emit_ew(l, &b, n, note);
  op->stream = stream;
  op->kspec.bf16 = (uint16_t)((g->tensors[out].dtype == DHX_BF16 ? 1 : 0) |
                              (g->tensors[in].dtype == DHX_BF16 ? 2 : 0));
}

// The GEMM's A or B (argument j) as bf16: a weight's copy, or a cast of an f32 activation
// pushed onto `out` just before the GEMM.
static void operand_to_bf16(prec *p, dhx_oplist *out, dhx_lop *gemm, int j, int prog) {
  dhx_graph *g = p->g;
  dhx_operand *o = &gemm->args[j];
  const dhx_tensor *t = &g->tensors[o->tensor];
  if (t->dtype == DHX_BF16) return;
  if (t->kind == DHX_T_PARAM && t->shard_parts == 1) {
    o->tensor = weight_copy(p, o->tensor);
    return;
  }
  char name[DHX_NAME_MAX + 8], note[DHX_NAME_MAX + 16];
  snprintf(name, sizeof name, "%s.bf16", t->name);
  dhx_tensor src = *t;
  int c = dhx_tensor_new(g, name, DHX_T_ACT, DHX_BF16, src.ndim, src.shape);
  g->tensors[c].program = prog;
  p->copy = realloc(p->copy, sizeof(int) * (size_t)g->ntensors);
  if (!p->copy) abort();
  p->copy[c] = -1;
  snprintf(note, sizeof note, "bf16 cast of %s", src.name);
  push_cast(g, out, c, o->tensor, dhx_tensor_elems(&src), gemm->stream, note);
  o->tensor = c;
}

// Program prog with its GEMMs' operands brought to one type and every kernel's bf16 mask and
// collective's element type set from its tensors.
static void rewrite_program(prec *p, int prog) {
  dhx_graph *g = p->g;
  dhx_oplist *l = &g->prog[prog];
  dhx_oplist out = {.nstreams = l->nstreams, .nevents = l->nevents, .at = l->at};
  for (int i = 0; i < l->n; i++) {
    dhx_lop op = l->ops[i];
    if (!op.dead && op.kind == DHX_L_GEMM &&
        (is_bf16(g, &op.args[0]) || is_bf16(g, &op.args[1]) || is_bf16(g, &op.args[2]))) {
      out.at = op.at;
      operand_to_bf16(p, &out, &op, 0, prog);
      operand_to_bf16(p, &out, &op, 1, prog);
      // cuBLASLt's bias is of D's type: a bf16 C reads the bias's bf16 copy.
      if (op.gemm->epilogue && is_bf16(g, &op.args[2])) operand_to_bf16(p, &out, &op, 3, prog);
    }
    if (op.kind == DHX_L_KERNEL || op.kind == DHX_L_EW) {
      dhx_kernel_spec s = dhx_lop_spec(&op);
      uint32_t floats = dhx_kernel_float_pointers(&s);
      op.kspec.bf16 = 0;
      for (int j = 0; j < op.nargs; j++)
        if ((floats & (1u << j)) && is_bf16(g, &op.args[j])) op.kspec.bf16 |= (uint16_t)(1u << j);
    }
    if (is_collective(op.kind) && is_bf16(g, &op.args[0])) op.dtype = DHX_BF16;
    dhx_lop_append(&out, &op);
  }
  out.at = l->at;
  free(l->ops);
  *l = out;
}

// At the start of program prog: every weight copy refreshed from its weight, on stream 0,
// which every other stream of the program waits for before its first op.
static void refresh_copies(prec *p, int prog, int nweights) {
  dhx_graph *g = p->g;
  dhx_oplist *l = &g->prog[prog];
  dhx_oplist head = {.nstreams = l->nstreams, .nevents = l->nevents, .at = l->at};
  head.at = (dhx_origin){.node = -1, .layer = -1, .phase = DHX_PHASE_NONE};
  for (int w = 0; w < nweights; w++)
    if (p->copy[w] >= 0)
      push_cast(g, &head, p->copy[w], w, dhx_tensor_elems(&g->tensors[w]), 0, "bf16 weight copy");
  if (head.n == 0) return;
  if (l->nstreams > 1) {
    int ready = head.nevents++;
    dhx_lop_push(&head, DHX_L_RECORD, 0, "bf16 weight copies made")->event = ready;
    for (int s = 1; s < l->nstreams; s++)
      dhx_lop_push(&head, DHX_L_WAIT, s, "after the bf16 weight copies")->event = ready;
  }
  for (int i = 0; i < l->n; i++) *dhx_lop_push(&head, l->ops[i].kind, 0, NULL) = l->ops[i];
  if (l->nstreams > head.nstreams) head.nstreams = l->nstreams;
  head.at = l->at;
  free(l->ops);
  *l = head;
}

void dhx_apply_precision(dhx_graph *g) {
  int n = g->ntensors;
  prec p = {.g = g};
  p.parent = malloc(sizeof(int) * (size_t)n);
  p.force_f32 = calloc((size_t)n, 1);
  p.candidate = calloc((size_t)n, 1);
  p.moved = calloc((size_t)n, 1);
  p.copy = malloc(sizeof(int) * (size_t)n);
  if (!p.parent || !p.force_f32 || !p.candidate || !p.moved || !p.copy) abort();
  for (int t = 0; t < n; t++) p.copy[t] = -1;
  decide(&p);
  for (int prog = 0; prog < DHX_PROG_COUNT; prog++) rewrite_program(&p, prog);
  refresh_copies(&p, DHX_PROG_BEGIN, n);
  refresh_copies(&p, DHX_PROG_EVAL, n);
  free(p.parent);
  free(p.force_f32);
  free(p.candidate);
  free(p.moved);
  free(p.copy);
}
