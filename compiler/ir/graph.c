// graph.c — construction helpers for tensors, nodes and low-level ops, and the text dump
// behind `dhxc --emit=graph`.
#include "graph.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

// Room for `need` elements, doubling the capacity; the new capacity is left unwritten. The
// tensors and ops grow this way (each is written whole when made): a stage of a paper-scale
// pipeline makes hundreds of thousands of each, and pages never written are never faulted in.
static void *reserve(void *p, int *cap, int need, size_t elem) {
  if (need <= *cap) return p;
  int c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *q = realloc(p, (size_t)c * elem);
  if (!q) {
    fprintf(stderr, "dhxc: error: out of memory\n");
    exit(1);
  }
  *cap = c;
  return q;
}

// Room for `need` elements, the new capacity zeroed.
static void *grow(void *p, int *cap, int need, size_t elem) {
  int old = *cap;
  p = reserve(p, cap, need, elem);
  memset((char *)p + (size_t)old * elem, 0, (size_t)(*cap - old) * elem);
  return p;
}

static int room_for(int n, int64_t more) {
  int64_t need = (int64_t)n + (more > 0 ? more : 0);
  return need < INT_MAX / 2 ? (int)need : INT_MAX / 2;
}

void dhx_graph_reserve_tensors(dhx_graph *g, int64_t more) {
  g->tensors = reserve(g->tensors, &g->captensors, room_for(g->ntensors, more), sizeof(dhx_tensor));
}

void dhx_oplist_reserve(dhx_oplist *l, int64_t more) {
  l->ops = reserve(l->ops, &l->cap, room_for(l->n, more), sizeof(dhx_lop));
}

void dhx_graph_init(dhx_graph *g) {
  memset(g, 0, sizeof *g);
  g->tokens = g->targets = g->losses = -1;
  g->tp = g->pp = g->chunks = 1;
  for (int c = 0; c < DHX_MAX_CHUNKS; c++) g->chunk_in[c] = g->chunk_out[c] = -1;
}

void dhx_graph_free(dhx_graph *g) {
  free(g->tensors);
  free(g->nodes);
  free(g->sites);
  for (int i = 0; i < DHX_PROG_COUNT; i++) free(g->prog[i].ops);
  memset(g, 0, sizeof *g);
}

int dhx_tensor_new(dhx_graph *g, const char *name, dhx_tensor_kind kind, dhx_dtype dt, int ndim,
                   const int64_t *shape) {
  // The name and shape may be another tensor's, which growing the array would move: copied
  // first.
  char own_name[DHX_NAME_MAX] = {0};
  int64_t own_shape[DHX_MAX_DIMS];
  if (ndim < 0 || ndim > DHX_MAX_DIMS) abort();
  dhx_name_copy(own_name, name);
  for (int i = 0; i < ndim; i++) own_shape[i] = shape[i];
  g->tensors = reserve(g->tensors, &g->captensors, g->ntensors + 1, sizeof(dhx_tensor));
  int id = g->ntensors++;
  dhx_tensor *t = &g->tensors[id];
  memset(t, 0, sizeof *t);
  dhx_name_copy(t->name, own_name);
  t->kind = kind;
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = t->global_shape[i] = own_shape[i];
  t->split_dim = -1;
  t->split_groups = t->split_parts = 1;
  t->grad = t->opt_m = t->opt_v = t->view_of = t->work = t->master = -1;
  t->shard_parts = 1;
  t->offset = -1;
  t->program = -1;
  return id;
}

void dhx_name_copy(char dst[DHX_NAME_MAX], const char *src) {
  memcpy(dst, src, strnlen(src, DHX_NAME_MAX - 1));
}

int64_t dhx_tensor_elems(const dhx_tensor *t) {
  if (t->kind == DHX_T_VIEW) return t->view_elems;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

int64_t dhx_tensor_alloc_elems(const dhx_tensor *t) {
  return t->alloc_elems > 0 ? t->alloc_elems : dhx_tensor_elems(t);
}

int64_t dhx_tensor_elem_bytes(const dhx_tensor *t) {
  return dhx_dtype_bytes(t->dtype);
}

int64_t dhx_tensor_alloc_bytes(const dhx_tensor *t) {
  return dhx_tensor_alloc_elems(t) * dhx_tensor_elem_bytes(t);
}

int64_t dhx_tensor_cols(const dhx_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

int64_t dhx_tensor_rows(const dhx_tensor *t) { return dhx_tensor_elems(t) / dhx_tensor_cols(t); }

int dhx_node_new(dhx_graph *g, dhx_node_op op, const dhx_loc *loc, const char *scope) {
  g->nodes = grow(g->nodes, &g->capnodes, g->nnodes + 1, sizeof(dhx_node));
  int id = g->nnodes++;
  dhx_node *n = &g->nodes[id];
  n->op = op;
  n->out = -1;
  n->layer = -1;
  n->site = -1;
  if (loc) n->loc = *loc;
  snprintf(n->scope, sizeof n->scope, "%s", scope ? scope : "");
  return id;
}

int dhx_site_new(dhx_graph *g, const dhx_loc *call, const char *name, int parent) {
  g->sites = grow(g->sites, &g->capsites, g->nsites + 1, sizeof(dhx_site));
  g->sites[g->nsites] = (dhx_site){*call, name, parent};
  return g->nsites++;
}

// Room for one more op (written whole by the caller).
static dhx_lop *lop_slot(dhx_oplist *l) {
  l->ops = reserve(l->ops, &l->cap, l->n + 1, sizeof(dhx_lop));
  return &l->ops[l->n++];
}

void dhx_lop_append(dhx_oplist *l, const dhx_lop *op) {
  *lop_slot(l) = *op;
  if (op->stream + 1 > l->nstreams) l->nstreams = op->stream + 1;
}

dhx_kernel_spec dhx_lop_spec(const dhx_lop *op) {
  dhx_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.kind = op->kspec.kind;
  s.type = op->kspec.type;
  s.bf16 = op->kspec.bf16;
  if (op->kspec.ew) s.ew = *op->kspec.ew;
  return s;
}

bool dhx_lop_kernel_same(const dhx_lop_kernel *a, const dhx_lop_kernel *b) {
  return a->kind == b->kind && a->type == b->type && a->bf16 == b->bf16 && a->ew == b->ew;
}

uint64_t dhx_lop_kernel_hash(const dhx_lop_kernel *k) {
  uint64_t h = ((uint64_t)(uintptr_t)k->ew >> 4) * 0x9E3779B97F4A7C15ull ^
               ((uint64_t)k->kind << 32 | (uint64_t)k->type << 16 | k->bf16);
  return h ^ h >> 29;
}

dhx_lop *dhx_lop_push(dhx_oplist *l, dhx_lop_kind kind, int stream, const char *note) {
  dhx_lop *op = lop_slot(l);
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->stream = stream;
  op->comm = op->event = -1;
  op->at = l->at;
  if (stream + 1 > l->nstreams) l->nstreams = stream + 1;
  op->note = dhx_intern_note(note);
  return op;
}

dhx_operand dhx_buf(int tensor, int64_t elem) {
  return (dhx_operand){.tensor = tensor, .elem = elem, .reg = -1, .kind = DHX_ARG_BUF};
}
dhx_operand dhx_i64(int64_t v) {
  return (dhx_operand){.tensor = -1, .i = v, .reg = -1, .kind = DHX_ARG_I64};
}
dhx_operand dhx_f64(double v) {
  return (dhx_operand){.tensor = -1, .f = v, .reg = -1, .kind = DHX_ARG_F64};
}
dhx_operand dhx_regarg(int reg) {
  return (dhx_operand){.tensor = -1, .i = reg, .reg = (int16_t)reg, .kind = DHX_ARG_REG};
}

const char *dhx_node_op_name(dhx_node_op op) {
  const dhx_op_sig *sig = dhx_op_info(op);
  return sig ? sig->name : "?";
}

static void dump_shape(FILE *f, const dhx_tensor *t) {
  fprintf(f, "[");
  for (int i = 0; i < t->ndim; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  fprintf(f, "]");
}

static const char *prog_name(int p) {
  static const char *names[] = {"BEGIN", "MICRO", "STEP", "EVAL"};
  return names[p];
}

static const char *lop_name(dhx_lop_kind k) {
  static const char *names[] = {
      [DHX_L_GEMM] = "gemm",           [DHX_L_KERNEL] = "kernel",
      [DHX_L_EW] = "ew",               [DHX_L_ZERO] = "zero",
      [DHX_L_ALLREDUCE] = "allreduce", [DHX_L_ALL_GATHER] = "all_gather",
      [DHX_L_SEND] = "send",           [DHX_L_RECV] = "recv",
      [DHX_L_LOAD] = "load_batch",     [DHX_L_REDUCE_SCATTER] = "reduce_scatter",
      [DHX_L_GRAD_NORM] = "grad_norm", [DHX_L_RECORD] = "record",
      [DHX_L_WAIT] = "wait",           [DHX_L_ALL_TO_ALL] = "all_to_all"};
  if ((unsigned)k >= sizeof names / sizeof names[0] || !names[k]) return "?";
  return names[k];
}

void dhx_graph_dump(const dhx_graph *g, void *file) {
  FILE *f = file;
  fprintf(f, "graph %s: %d nodes, %d tensors, %lld parameters\n", g->model_name, g->nnodes,
          g->ntensors, (long long)g->n_params);
  for (int i = 0; i < g->nnodes; i++) {
    const dhx_node *n = &g->nodes[i];
    const dhx_tensor *o = &g->tensors[n->out];
    fprintf(f, "  %%%d = %s(", n->out, dhx_node_op_name(n->op));
    for (int j = 0; j < n->nin; j++) fprintf(f, "%s%%%d", j ? ", " : "", n->in[j]);
    fprintf(f, ") ");
    dump_shape(f, o);
    fprintf(f, "  # %s\n", n->scope);
  }
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_oplist *l = &g->prog[p];
    if (l->n == 0) continue;  // not lowered (--emit=graph of a program dhxc cannot lower yet)
    fprintf(f, "program %s: %d ops, %d streams\n", prog_name(p), l->n, l->nstreams);
    for (int i = 0; i < l->n; i++) {
      const dhx_lop *op = &l->ops[i];
      if (op->dead) continue;
      static const char *phases[] = {"", "fwd", "bwd", "opt"};
      fprintf(f, "  [s%d] %-4s", op->stream, phases[op->at.phase]);
      if (op->at.phase == DHX_PHASE_FORWARD || op->at.phase == DHX_PHASE_BACKWARD)
        fprintf(f, op->at.layer >= 0 ? "L%-3d" : "    ", op->at.layer);
      else
        fprintf(f, "    ");
      if (p == DHX_PROG_MICRO && g->pp > 1) fprintf(f, "mb%-3d", op->at.micro);
      fprintf(f, " %-9s", lop_name(op->kind));
      for (int j = 0; j < op->nargs; j++) {
        const dhx_operand *a = &op->args[j];
        if (a->kind == DHX_ARG_BUF) {
          fprintf(f, " %s", g->tensors[a->tensor].name);
          if (a->elem) fprintf(f, "+%lld", (long long)a->elem);
        } else if (a->kind == DHX_ARG_I64) {
          fprintf(f, " %lld", (long long)a->i);
        } else if (a->kind == DHX_ARG_REG) {
          fprintf(f, " r%d", a->reg);
        } else {
          fprintf(f, " %g", a->f);
        }
      }
      fprintf(f, "   # %s\n", op->note);
    }
  }
}
