// optimizer.c — the once-per-step programs: BEGIN zeroes the gradients; STEP reduces them
// across data-parallel ranks, measures their global norm for clipping, and applies AdamW.
//
// The memory planner lays parameters out in two contiguous groups (with weight decay, then
// without), and gradients and both moments mirror that order, so each of these is one op over
// one window ("view") of the arena instead of one op per tensor.
#include <stdio.h>
#include <string.h>

#include "lower.h"

#define SUMSQ_CHUNK 16384  // fixed, so the norm's summation order does not depend on threads

int dhx_add_param_state(dhx_graph *g, int p, const char *prefix, dhx_tensor_kind kind) {
  char name[DHX_NAME_MAX + 8];
  snprintf(name, sizeof name, "%s%s", prefix, g->tensors[p].name);
  int64_t shape[DHX_MAX_DIMS];
  memcpy(shape, g->tensors[p].shape, sizeof shape);
  int t = dhx_tensor_new(g, name, kind, DHX_F32, g->tensors[p].ndim, shape);
  dhx_tensor *x = &g->tensors[t];
  const dhx_tensor *param = &g->tensors[p];  // the same slice of the whole tensor
  memcpy(x->global_shape, param->global_shape, sizeof x->global_shape);
  x->split_dim = param->split_dim;
  x->split_groups = param->split_groups;
  x->split_parts = param->split_parts;
  x->split_index = param->split_index;
  return t;
}

void dhx_create_param_state(dhx_graph *g) {
  int n = g->ntensors;
  for (int i = 0; i < n; i++) {
    if (g->tensors[i].kind != DHX_T_PARAM) continue;
    int d = dhx_add_param_state(g, i, "grad.", DHX_T_GRAD);
    int m = dhx_add_param_state(g, i, "adam_m.", DHX_T_OPT_M);
    int v = dhx_add_param_state(g, i, "adam_v.", DHX_T_OPT_V);
    g->tensors[i].grad = d;
    g->tensors[i].opt_m = m;
    g->tensors[i].opt_v = v;
  }
}

// A view over the run of `kind` tensors in the planner's order, restricted to decay or not.
// Its extent is fixed later by the memory planner (dhx_plan_memory); here it only records
// which run it covers through its name and kind.
static int new_view(dhx_graph *g, const char *name) {
  int64_t one = 1;
  int v = dhx_tensor_new(g, name, DHX_T_VIEW, DHX_F32, 1, &one);
  return v;
}

int dhx_view_id(const dhx_graph *g, const char *name) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_VIEW && strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

void dhx_create_views(dhx_graph *g) {
  static const char *names[] = {"params[decay]",  "params[no_decay]", "grads[decay]",
                                "grads[no_decay]", "adam_m[decay]",    "adam_m[no_decay]",
                                "adam_v[decay]",  "adam_v[no_decay]", "grads[all]",
                                "grads[split]", "grads[whole,decay]", "grads[whole,no_decay]"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) new_view(g, names[i]);
}

static void emit_adamw(dhx_graph *g, dhx_oplist *l, const dhx_lower_opts *o, const char *group,
                       double wd) {
  char pn[64], gn[64], mn[64], vn[64];
  snprintf(pn, sizeof pn, "params[%s]", group);
  snprintf(gn, sizeof gn, "grads[%s]", group);
  snprintf(mn, sizeof mn, "adam_m[%s]", group);
  snprintf(vn, sizeof vn, "adam_v[%s]", group);
  int p = dhx_view_id(g, pn);
  if (g->tensors[p].view_elems == 0) return;  // no tensors in this group
  char note[DHX_NAME_MAX];
  snprintf(note, sizeof note, "adamw %s", group);
  dhx_emit_adamw_op(l, o, p, dhx_buf(dhx_view_id(g, gn), 0), dhx_view_id(g, mn), dhx_view_id(g, vn),
                    g->tensors[p].view_elems, wd, dhx_clip_scale_id(g), note);
}

dhx_lop *dhx_emit_adamw_op(dhx_oplist *l, const dhx_lower_opts *o, int param, dhx_operand grad,
                           int m, int v, int64_t count, double wd, int clip, const char *note) {
  dhx_operand a[] = {dhx_buf(param, 0),       grad,
                     dhx_buf(m, 0),           dhx_buf(v, 0),
                     dhx_regarg(DHX_REG_LR),  dhx_f64(o->beta1),
                     dhx_f64(o->beta2),       dhx_f64(o->eps),
                     dhx_f64(wd),             dhx_regarg(DHX_REG_BC1),
                     dhx_regarg(DHX_REG_BC2), dhx_buf(clip, 0)};
  return dhx_emit_kernel(l, DHX_K_ADAMW, count, note, 12, a);
}

static int scratch_id(const dhx_graph *g, const char *name) {
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_SCRATCH && strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

int dhx_clip_scale_id(const dhx_graph *g) { return scratch_id(g, "grad_norm"); }

// Partial sums of squares of view v's chunks into partials[at...]; returns the chunk count.
static int64_t sum_squares(dhx_graph *g, dhx_oplist *l, int partials, int64_t at, int v,
                           const char *note) {
  int64_t count = g->tensors[v].view_elems;
  if (count == 0) return 0;
  int64_t chunks = (count + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
  dhx_operand sq[] = {dhx_buf(partials, at), dhx_buf(v, 0), dhx_i64(count), dhx_i64(SUMSQ_CHUNK)};
  dhx_emit_kernel(l, DHX_K_SUMSQ, chunks, note, 4, sq);
  return chunks;
}

// Needs the views sized: call after dhx_plan_memory has placed the persistent tensors.
void dhx_lower_optimizer(dhx_graph *g, const dhx_lower_opts *o) {
  int all = dhx_view_id(g, "grads[all]");
  int64_t count = g->tensors[all].view_elems;

  dhx_oplist *begin = &g->prog[DHX_PROG_BEGIN];
  dhx_lop *z = dhx_lop_push(begin, DHX_L_ZERO, 0, "zero all gradients");
  z->args[0] = dhx_buf(all, 0);
  z->args[1] = dhx_i64(count * 4);
  z->nargs = 2;

  bool sharded = dhx_zero_sharded(g);
  if (sharded) dhx_lower_zero_begin(g);
  dhx_oplist *step = &g->prog[DHX_PROG_STEP];
  if (o->dp > 1) {
    // The reductions run on the communication stream; compute waits for them by event.
    if (sharded) dhx_lower_zero_reduce(g, 1);
    if (o->sp) dhx_lower_sp_grad_sync(g, 1);
    if (!sharded)
      dhx_emit_allreduce(step, 1, DHX_COMM_DP, all, count, "data-parallel gradient sum");
    int reduced = step->nevents++;  // after the reduction's own events (compress_grads.c)
    dhx_lop *rec = dhx_lop_push(step, DHX_L_RECORD, 1, "gradients reduced");
    rec->event = reduced;
    dhx_lop *w = dhx_lop_push(step, DHX_L_WAIT, 0, "gradients reduced");
    w->event = reduced;
  } else if (o->sp) {
    dhx_lower_sp_grad_sync(g, 0);
  }
  int partials = scratch_id(g, "grad_norm.partials");
  int64_t chunks = 0;
  if (g->tp == 1) {
    chunks = sum_squares(g, step, partials, 0, all, "gradient sum of squares");
  } else {
    // Split gradients hold different elements on each tensor rank: their partial sums are
    // added over the group. Whole ones are the same on every rank and count once.
    chunks = sum_squares(g, step, partials, 0, dhx_view_id(g, "grads[split]"),
                         "sum of squares of split gradients");
    if (chunks > 0)
      dhx_emit_allreduce(step, 0, DHX_COMM_TP, partials, chunks, "add split sums over tensor ranks");
    chunks += sum_squares(g, step, partials, chunks, dhx_view_id(g, "grads[whole,decay]"),
                          "sum of squares of whole gradients");
    chunks += sum_squares(g, step, partials, chunks, dhx_view_id(g, "grads[whole,no_decay]"),
                          "sum of squares of whole gradients");
  }
  if (sharded && chunks > 0)  // each data rank holds a different piece of every gradient
    dhx_emit_allreduce(step, 0, DHX_COMM_DP, partials, chunks, "add the pieces' sums over data ranks");
  int sums = partials;
  if (g->pp > 1) {
    // Each stage holds different parameters: add the stages' sums of squares into one total.
    // The stages' chunk counts differ, so each first sums its chunks to one number.
    int total = scratch_id(g, "grad_norm.total");
    dhx_lop *z = dhx_lop_push(step, DHX_L_ZERO, 0, "no gradients on this stage yet");
    z->args[0] = dhx_buf(total, 0);
    z->args[1] = dhx_i64(4);
    z->nargs = 2;
    if (chunks > 0) {
      dhx_operand cs[] = {dhx_buf(total, 0), dhx_buf(partials, 0), dhx_i64(chunks), dhx_i64(1),
                          dhx_i64(0)};
      dhx_emit_kernel(step, DHX_K_COLSUM, 1, "this stage's sum of squares", 5, cs);
    }
    dhx_emit_allreduce(step, 0, DHX_COMM_PP, total, 1, "add the stages' sums of squares");
    sums = total;
    chunks = 1;
  }
  // The norm and the clip scale go to device memory ("grad_norm": scale, norm), where the
  // AdamW kernels read the scale: a GPU step clips without a round trip to the host.
  int out = dhx_clip_scale_id(g);
  dhx_lop *gn = dhx_lop_push(step, DHX_L_GRAD_NORM, 0, "global norm and clip scale");
  gn->kspec.kind = DHX_K_GRAD_NORM;
  gn->kspec.type = DHX_KT_F32;
  gn->n = 1;
  gn->args[0] = dhx_buf(out, 0);
  gn->args[1] = dhx_buf(out, 1);
  gn->args[2] = dhx_buf(sums, 0);
  gn->args[3] = dhx_i64(chunks);
  gn->args[4] = dhx_f64(o->grad_clip);
  gn->nargs = 5;
  if (sharded) {
    dhx_lower_zero_update(g, o);
    return;
  }
  emit_adamw(g, step, o, "decay", o->weight_decay);
  emit_adamw(g, step, o, "no_decay", 0.0);
}

// The norm partials buffer is persistent scratch; its size depends only on the gradient count.
// "grad_norm" holds what GRAD_NORM finds: [0] the clip scale (NaN: skip the update), [1] the
// norm, f32 as the kernels that read them.
void dhx_create_norm_scratch(dhx_graph *g) {
  int64_t count = 0;
  for (int i = 0; i < g->ntensors; i++)
    if (g->tensors[i].kind == DHX_T_PARAM) count += dhx_tensor_elems(&g->tensors[i]);
  // Padding between tensors is counted too; bound it generously (64 bytes per tensor).
  int64_t ntensors = g->ntensors;
  int64_t chunks = (count + ntensors * 16 + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK + 3;  // 3 windows
  dhx_tensor_new(g, "grad_norm.partials", DHX_T_SCRATCH, DHX_F32, 1, &chunks);
  int64_t one = 1, two = 2;
  dhx_tensor_new(g, "grad_norm", DHX_T_SCRATCH, DHX_F32, 1, &two);
  if (g->pp > 1) dhx_tensor_new(g, "grad_norm.total", DHX_T_SCRATCH, DHX_F32, 1, &one);
}
