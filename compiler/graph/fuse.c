// fuse.c — merges chains of elementwise ops into one kernel.
//
// Two elementwise ops that follow each other on the same stream over the same index space
// become one expression: the second op's loads of what the first stored become references to
// the stored value, and a store whose tensor nothing reads afterwards is dropped. A chain
// like `y = gemm; y += bias; x2 = x + y` therefore becomes one pass over memory instead of
// two, and the intermediate never touches memory. The merge is refused when it could change
// results: a broadcast (i % m) read of something the other op writes, a read of an
// accumulated output, or an expression that would not fit the kernel limits.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

static bool same_operand(const dhx_operand *a, const dhx_operand *b) {
  return a->kind == b->kind && a->tensor == b->tensor && a->reg == b->reg &&
         (a->kind == DHX_ARG_F64 ? a->f == b->f : a->i == b->i);
}

// last_read[t]: the position of the last op that reads tensor t (-1: none), so "does any op
// after `from` read t" is one comparison: scanning the rest of the list instead made fusion
// quadratic in the ops of a program, which for a pipeline spanning a hundred micro-batches
// took minutes. Reads at position `at` of op `op`:
static void note_reads(int *last_read, const dhx_lop *op, int at) {
  int first_input = 0;
  if (op->kind == DHX_L_EW) first_input = op->kspec.ew->nout;
  // Kernels and GEMMs may read any buffer argument (outputs of accumulate-style kernels
  // are read too), so count them all.
  for (int j = first_input; j < op->nargs; j++)
    if (op->args[j].kind == DHX_ARG_BUF && last_read[op->args[j].tensor] < at)
      last_read[op->args[j].tensor] = at;
  if (op->kind == DHX_L_EW)
    for (int j = 0; j < op->kspec.ew->nout; j++)
      if (op->kspec.ew->out_accumulate[j] && last_read[op->args[j].tensor] < at)
        last_read[op->args[j].tensor] = at;
}

static bool writes_tensor(const dhx_lop *op, int t) {
  for (int j = 0; j < op->kspec.ew->nout; j++)
    if (op->args[j].tensor == t) return true;
  return false;
}

static bool reads_broadcast(const dhx_lop *op, int t) {
  const dhx_ew_spec *s = op->kspec.ew;
  for (int j = 0; j < s->nin; j++)
    if (op->args[s->nout + j].tensor == t && s->in_mode[j] == DHX_EW_MOD) return true;
  return false;
}

// Does `op` touch tensor t at an element offset other than `elem`? Then index i of one op
// meets index i+d of the other, which a fused loop would order wrongly.
static bool touches_shifted(const dhx_lop *op, int t, int64_t elem) {
  for (int j = 0; j < op->kspec.ew->nout + op->kspec.ew->nin; j++)
    if (op->args[j].tensor == t && op->args[j].elem != elem) return true;
  return false;
}

static bool hazard(const dhx_lop *a, const dhx_lop *b) {
  for (int j = 0; j < a->kspec.ew->nout; j++)
    if (touches_shifted(b, a->args[j].tensor, a->args[j].elem)) return true;
  for (int j = 0; j < b->kspec.ew->nout; j++)
    if (touches_shifted(a, b->args[j].tensor, b->args[j].elem)) return true;
  for (int j = 0; j < a->kspec.ew->nout; j++)
    if (reads_broadcast(b, a->args[j].tensor)) return true;
  for (int j = 0; j < b->kspec.ew->nout; j++)
    if (reads_broadcast(a, b->args[j].tensor)) return true;
  // b reading an accumulated output of a would need the sum, not a's value.
  const dhx_ew_spec *sb = b->kspec.ew;
  for (int j = 0; j < a->kspec.ew->nout; j++) {
    if (!a->kspec.ew->out_accumulate[j]) continue;
    for (int k = 0; k < sb->nin; k++)
      if (b->args[sb->nout + k].tensor == a->args[j].tensor) return true;
  }
  return false;
}

// Builds the merged expression of a then b into m. Returns false if it does not fit.
static bool merge(const dhx_graph *g, const dhx_lop *a, const dhx_lop *b, const int *last_read,
                  int after, dhx_ewb *m) {
  const dhx_ew_spec *sa = a->kspec.ew, *sb = b->kspec.ew;
  const dhx_operand *oa, *ia, *ca, *ob, *ib, *cb;
  dhx_ew_operands(a, &oa, &ia, &ca);
  dhx_ew_operands(b, &ob, &ib, &cb);
  if (sa->nnodes + sb->nnodes > DHX_EW_MAX_NODES) return false;
  dhx_ewb_init(m);
  int map_a[DHX_EW_MAX_NODES], map_b[DHX_EW_MAX_NODES];
  for (int i = 0; i < sa->nnodes; i++) {
    dhx_ew_node n = sa->nodes[i];
    if (n.op == DHX_EW_LOAD) {
      if (m->s.nin >= DHX_EW_MAX_IO) return false;
      map_a[i] = dhx_ewb_load(m, ia[n.a], sa->in_mode[n.a] ? sa->in_mod[n.a] : 0);
    } else if (n.op == DHX_EW_SCALAR) {
      if (m->s.nscalars >= DHX_EW_MAX_IO) return false;
      map_a[i] = dhx_ewb_scalar(m, ca[n.a]);
    } else if (n.op == DHX_EW_CONST) {
      if ((map_a[i] = dhx_ewb_try_const(m, sa->consts[n.a])) < 0) return false;
    } else {
      map_a[i] = dhx_ewb_op(m, (dhx_ew_op)n.op, map_a[n.a], map_a[n.b]);
    }
  }
  for (int i = 0; i < sb->nnodes; i++) {
    dhx_ew_node n = sb->nodes[i];
    if (n.op == DHX_EW_LOAD) {
      int found = -1;
      for (int k = 0; k < sa->nout; k++)
        if (same_operand(&oa[k], &ib[n.a]) && sb->in_mode[n.a] == DHX_EW_FULL) found = k;
      if (found >= 0) {
        map_b[i] = map_a[sa->out_node[found]];
        continue;
      }
      int reuse = -1;  // the same input loaded by a: share the load
      for (int k = 0; k < m->s.nin; k++)
        if (same_operand(&m->ins[k], &ib[n.a]) && m->s.in_mode[k] == sb->in_mode[n.a] &&
            m->s.in_mod[k] == sb->in_mod[n.a])
          reuse = k;
      if (reuse >= 0) {
        for (int k = 0; k < m->s.nnodes; k++)
          if (m->s.nodes[k].op == DHX_EW_LOAD && m->s.nodes[k].a == reuse) map_b[i] = k;
        continue;
      }
      if (m->s.nin >= DHX_EW_MAX_IO) return false;
      map_b[i] = dhx_ewb_load(m, ib[n.a], sb->in_mode[n.a] ? sb->in_mod[n.a] : 0);
    } else if (n.op == DHX_EW_SCALAR) {
      if (m->s.nscalars >= DHX_EW_MAX_IO) return false;
      map_b[i] = dhx_ewb_scalar(m, cb[n.a]);
    } else if (n.op == DHX_EW_CONST) {
      if ((map_b[i] = dhx_ewb_try_const(m, sb->consts[n.a])) < 0) return false;
    } else {
      map_b[i] = dhx_ewb_op(m, (dhx_ew_op)n.op, map_b[n.a], map_b[n.b]);
    }
  }
  // a's stores survive unless b overwrites them, or they are activations nobody reads after
  // b: then the value lives only inside the kernel.
  for (int k = 0; k < sa->nout; k++) {
    int t = oa[k].tensor;
    bool plain = !sa->out_accumulate[k];
    if (plain && writes_tensor(b, t)) continue;
    if (plain && g->tensors[t].kind == DHX_T_ACT && last_read[t] < after) continue;
    if (m->s.nout >= DHX_EW_MAX_IO) return false;
    dhx_ewb_store(m, map_a[sa->out_node[k]], oa[k], sa->out_accumulate[k]);
  }
  for (int k = 0; k < sb->nout; k++) {
    if (m->s.nout >= DHX_EW_MAX_IO) return false;
    dhx_ewb_store(m, map_b[sb->out_node[k]], ob[k], sb->out_accumulate[k]);
  }
  return true;
}

int dhx_fuse_elementwise(dhx_graph *g, dhx_oplist *l) {
  int removed = 0;
  int *last_read = malloc(sizeof(int) * (size_t)(g->ntensors + 1));
  if (!last_read) abort();
  for (int t = 0; t < g->ntensors; t++) last_read[t] = -1;
  for (int i = 0; i < l->n; i++)
    if (!l->ops[i].dead) note_reads(last_read, &l->ops[i], i);
  for (int i = 0; i < l->n; i++) {
    dhx_lop *a = &l->ops[i];
    if (a->dead || a->kind != DHX_L_EW) continue;
    int j = i + 1;
    while (j < l->n && l->ops[j].dead) j++;
    if (j >= l->n) break;
    dhx_lop *b = &l->ops[j];
    if (b->kind != DHX_L_EW || b->stream != a->stream || b->n != a->n || hazard(a, b)) continue;
    dhx_ewb m;
    if (!merge(g, a, b, last_read, j + 1, &m)) continue;
    char note[DHX_NAME_MAX];
    snprintf(note, sizeof note, "%.45s + %.45s", a->note, b->note);
    dhx_lop fused = *b;
    fused.kspec.ew = dhx_intern_ew(&m.s);
    int k = 0;
    for (int x = 0; x < m.s.nout; x++) fused.args[k++] = m.outs[x];
    for (int x = 0; x < m.s.nin; x++) fused.args[k++] = m.ins[x];
    for (int x = 0; x < m.s.nscalars; x++) fused.args[k++] = m.scalars[x];
    fused.nargs = k;
    fused.note = dhx_intern_note(note);
    *b = fused;
    a->dead = true;
    note_reads(last_read, b, j);  // a's reads now happen at j; later queries start after j
    removed++;
  }
  free(last_read);
  return removed;
}
