// emit.c — turns the planned graph of one rank into a plan rank section, registering every
// kernel it launches with the code generator.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ice.h"
#include "compile.h"

static uint32_t buf_kind(dhx_tensor_kind k) {
  switch (k) {
    case DHX_T_PARAM: return DHX_BUF_PARAM;
    case DHX_T_GRAD: return DHX_BUF_GRAD;
    case DHX_T_OPT_M: return DHX_BUF_OPT_M;
    case DHX_T_OPT_V: return DHX_BUF_OPT_V;
    case DHX_T_MASTER: return DHX_BUF_MASTER;
    case DHX_T_TOKENS: return DHX_BUF_TOKENS;
    case DHX_T_TARGETS: return DHX_BUF_TARGETS;
    case DHX_T_LOSSES: return DHX_BUF_LOSSES;
    case DHX_T_ACT: return DHX_BUF_ACT;
    case DHX_T_SCRATCH:
    case DHX_T_VIEW: return DHX_BUF_SCRATCH;
  }
  return DHX_BUF_SCRATCH;
}

// Buffers: every tensor with a place in the arena. Returns tensor → buffer id.
static int *emit_buffers(const dhx_graph *g, dhx_plan_rank *r) {
  int *id = malloc(sizeof(int) * (size_t)g->ntensors);
  r->buffers = calloc((size_t)g->ntensors, sizeof(dhx_plan_buffer));
  if (!id || !r->buffers) abort();
  r->nbuffers = 0;
  for (int i = 0; i < g->ntensors; i++) {
    const dhx_tensor *t = &g->tensors[i];
    id[i] = -1;
    if (t->offset < 0 || (t->kind == DHX_T_VIEW && t->view_elems == 0)) continue;
    dhx_plan_buffer *b = &r->buffers[r->nbuffers];
    id[i] = (int)r->nbuffers++;
    dhx_name_copy(b->name, t->name);
    b->kind = buf_kind(t->kind);
    b->dtype = t->dtype;
    b->ndim = (uint32_t)t->ndim;
    memcpy(b->shape, t->shape, sizeof b->shape);
    b->offset = t->offset;
    b->nbytes = dhx_tensor_alloc_bytes(t);
    b->grad = b->opt_m = b->opt_v = b->master = -1;
    b->split_dim = t->split_dim;
    b->split_groups = (uint32_t)t->split_groups;
    b->split_parts = (uint32_t)t->split_parts;
    b->split_index = (uint32_t)t->split_index;
    b->shard_parts = (uint32_t)t->shard_parts;
    b->shard_index = (uint32_t)t->shard_index;
    memcpy(b->global_shape, t->split_dim >= 0 ? t->global_shape : t->shape, sizeof b->shape);
    if (t->kind == DHX_T_PARAM) {
      b->init = t->init;
      b->init_std = t->init_std;
      b->decay = t->decay;
    }
  }
  for (int i = 0; i < g->ntensors; i++) {  // link parameters to their state
    const dhx_tensor *t = &g->tensors[i];
    if (t->kind != DHX_T_PARAM || id[i] < 0) continue;
    dhx_plan_buffer *b = &r->buffers[id[i]];
    b->grad = t->grad >= 0 ? id[t->grad] : -1;
    b->opt_m = t->opt_m >= 0 ? id[t->opt_m] : -1;
    b->opt_v = t->opt_v >= 0 ? id[t->opt_v] : -1;
    b->master = t->master >= 0 ? id[t->master] : -1;
  }
  return id;
}

// Without buffers (buf_id NULL: the overlap search's cost queries) a buffer's operand is its
// kind alone.
static dhx_plan_arg arg_of(const dhx_graph *g, const dhx_operand *o, const int *buf_id,
                           const uint8_t *elem_bytes) {
  dhx_plan_arg a = {.kind = o->kind, .buf = -1};
  switch (o->kind) {
    case DHX_ARG_BUF:
      if (!buf_id) break;
      a.buf = buf_id[o->tensor];
      a.i = o->elem * (elem_bytes ? elem_bytes[o->tensor]
                                  : dhx_tensor_elem_bytes(&g->tensors[o->tensor]));
      break;
    case DHX_ARG_I64: a.i = o->i; break;
    case DHX_ARG_F64: a.f = o->f; break;
    case DHX_ARG_REG: a.i = o->reg; break;
  }
  return a;
}

static uint32_t op_of(dhx_lop_kind k) {
  switch (k) {
    case DHX_L_GEMM: return DHX_OP_GEMM;
    case DHX_L_KERNEL:
    case DHX_L_EW: return DHX_OP_KERNEL;
    case DHX_L_ZERO: return DHX_OP_ZERO;
    case DHX_L_ALLREDUCE: return DHX_OP_ALLREDUCE;
    case DHX_L_ALL_GATHER: return DHX_OP_ALL_GATHER;
    case DHX_L_SEND: return DHX_OP_SEND;
    case DHX_L_RECV: return DHX_OP_RECV;
    case DHX_L_LOAD: return DHX_OP_LOAD_BATCH;
    case DHX_L_REDUCE_SCATTER: return DHX_OP_REDUCE_SCATTER;
    case DHX_L_GRAD_NORM: return DHX_OP_GRAD_NORM;
    case DHX_L_RECORD: return DHX_OP_RECORD;
    case DHX_L_WAIT: return DHX_OP_WAIT;
    case DHX_L_ALL_TO_ALL: return DHX_OP_ALL_TO_ALL;
  }
  return 0;
}

// elem_bytes: per tensor, its element's bytes (NULL: read from the tensors; a paper-scale stage
// has hundreds of thousands, and their records are far apart).
static void emit_instr(const dhx_graph *g, const dhx_lop *op, const int *buf_id,
                       const uint8_t *elem_bytes, const int *comm_of, dhx_plan_instr *in) {
  memset(in, 0, sizeof *in);
  in->op = op_of(op->kind);
  in->stream = (uint32_t)op->stream;
  in->kernel = -1;
  in->comm = -1;
  in->event = op->event;
  if (dhx_op_on_comm(in->op)) {
    if (op->comm < 0 || op->comm >= DHX_COMM_ROLES || comm_of[op->comm] < 0)
      DHX_ICE("'%s' exchanges over communicator role %d, which this rank has no group for",
              op->note, op->comm);
    in->comm = comm_of[op->comm];
    in->dtype = op->dtype ? op->dtype : DHX_F32;  // i32: packed quantization codes
  }
  in->n = op->n;
  if (op->kind == DHX_L_GEMM) in->gemm = op->gemm;  // interned: outlives the plan
  in->nargs = (uint32_t)op->nargs;
  for (int j = 0; j < op->nargs; j++) {
    const dhx_operand *o = &op->args[j];
    in->args[j] = arg_of(g, o, buf_id, elem_bytes);
  }
  in->note = op->note;  // interned, and shorter than DHX_NAME_MAX (intern.c)
}

void dhx_emit_instr(const dhx_graph *g, const dhx_lop *op, const int *buf_id,
                    const int *comm_of, dhx_plan_instr *in) {
  emit_instr(g, op, buf_id, NULL, comm_of, in);
}

// The kernel table's index of each distinct kernel description seen: ops hold interned
// descriptions (a stage of a paper-scale pipeline: hundreds of thousands of ops, a few hundred
// kernels), so (kind, type, bf16 mask, fused spec's address) names one, and its entry is found
// without formatting its name per op.
#define KERNEL_SLOTS 1024
typedef struct kernel_ids {
  dhx_lop_kernel key[KERNEL_SLOTS];
  int id[KERNEL_SLOTS];  // -1: empty
} kernel_ids;

static int kernel_of(kernel_ids *ids, dhx_codegen *cg, const dhx_lop *op) {
  const dhx_lop_kernel *k = &op->kspec;
  uint32_t at = (uint32_t)dhx_lop_kernel_hash(k) % KERNEL_SLOTS;
  for (int probe = 0; probe < KERNEL_SLOTS; probe++, at = (at + 1) % KERNEL_SLOTS) {
    if (ids->id[at] >= 0 && dhx_lop_kernel_same(&ids->key[at], k)) return ids->id[at];
    if (ids->id[at] < 0) break;
  }
  dhx_kernel_spec spec = dhx_lop_spec(op);
  int id = dhx_codegen_add(cg, &spec);
  if (id >= 0 && ids->id[at] < 0) {  // (a full table: looked up by name each time)
    ids->key[at] = *k;
    ids->id[at] = id;
  }
  return id;
}

static bool emit_program(const dhx_graph *g, const dhx_oplist *l, const int *buf_id,
                         const uint8_t *elem_bytes, const int *comm_of, dhx_codegen *cg,
                         kernel_ids *ids, dhx_plan_program *p) {
  p->nstreams = l->nstreams ? (uint32_t)l->nstreams : 1;
  p->nevents = (uint32_t)l->nevents;
  p->instrs = calloc((size_t)(l->n ? l->n : 1), sizeof(dhx_plan_instr));
  if (!p->instrs) abort();
  p->ninstrs = 0;
  for (int i = 0; i < l->n; i++) {
    const dhx_lop *op = &l->ops[i];
    if (op->dead) continue;
    dhx_plan_instr *in = &p->instrs[p->ninstrs++];
    emit_instr(g, op, buf_id, elem_bytes, comm_of, in);
    // GRAD_NORM carries the kernel a GPU launches for it (the CPU computes it on the host).
    if (op->kind == DHX_L_KERNEL || op->kind == DHX_L_EW || op->kind == DHX_L_GRAD_NORM) {
      in->kernel = kernel_of(ids, cg, op);
      if (in->kernel < 0)
        DHX_ICE("invalid kernel for '%s': %s", op->note, dhx_codegen_error(cg));
    }
  }
  return true;
}

bool dhx_emit_rank(const dhx_graph *g, int64_t arena, const int comm_of[DHX_COMM_ROLES],
                   dhx_codegen *cg, dhx_plan_rank *r) {
  int *buf_id = emit_buffers(g, r);
  uint8_t *elem_bytes = malloc((size_t)g->ntensors + 1);
  if (!elem_bytes) abort();
  for (int t = 0; t < g->ntensors; t++)
    elem_bytes[t] = (uint8_t)dhx_tensor_elem_bytes(&g->tensors[t]);
  r->arena_bytes = arena;
  bool ok = true;
  kernel_ids *ids = malloc(sizeof *ids);
  if (!ids) abort();
  for (int i = 0; i < KERNEL_SLOTS; i++) ids->id[i] = -1;
  for (int p = 0; p < DHX_PROG_COUNT && ok; p++)
    ok = emit_program(g, &g->prog[p], buf_id, elem_bytes, comm_of, cg, ids, &r->programs[p]);
  free(ids);
  free(elem_bytes);
  free(buf_id);
  return ok;
}
