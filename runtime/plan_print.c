// plan_print.c — the human-readable listing of a plan (`dhxc --emit=schedule`), and the
// printable names of the plan's enums that the rest of the runtime shares.
//
// The listing shows, per rank, the arena's buffers and, per program, one line per instruction:
// index, stream, op, then what the op does with its arguments named by buffer, and the note.
// Ranks whose buffers and programs equal rank 0's (data-parallel replicas) are summarised in a
// line, so a dp=64 plan stays readable.
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "plan.h"
#include "plan_util.h"

#define NAME_OF(table, i) ((i) < sizeof(table) / sizeof(table[0]) && table[i] ? table[i] : "?")

const char *dhx_dtype_name(uint32_t dtype) {
  static const char *t[] = {[DHX_F32] = "f32", [DHX_I32] = "i32", [DHX_F64] = "f64",
                            [DHX_BF16] = "bf16"};
  return NAME_OF(t, dtype);
}

const char *dhx_buf_kind_name(uint32_t kind) {
  static const char *t[] = {[DHX_BUF_PARAM] = "param",     [DHX_BUF_GRAD] = "grad",
                            [DHX_BUF_OPT_M] = "opt_m",     [DHX_BUF_OPT_V] = "opt_v",
                            [DHX_BUF_ACT] = "act",         [DHX_BUF_TOKENS] = "tokens",
                            [DHX_BUF_TARGETS] = "targets", [DHX_BUF_LOSSES] = "losses",
                            [DHX_BUF_SCRATCH] = "scratch", [DHX_BUF_MASTER] = "master"};
  return NAME_OF(t, kind);
}

const char *dhx_init_name(uint32_t init) {
  static const char *t[] = {[DHX_INIT_NONE] = "none", [DHX_INIT_ZEROS] = "zeros",
                            [DHX_INIT_ONES] = "ones", [DHX_INIT_NORMAL] = "normal"};
  return NAME_OF(t, init);
}

const char *dhx_op_name(uint32_t op) {
  static const char *t[] = {[DHX_OP_KERNEL] = "kernel",       [DHX_OP_GEMM] = "gemm",
                            [DHX_OP_ZERO] = "zero",           [DHX_OP_ALLREDUCE] = "allreduce",
                            [DHX_OP_RECORD] = "record",       [DHX_OP_WAIT] = "wait",
                            [DHX_OP_GRAD_NORM] = "grad_norm",
                            [DHX_OP_REDUCE_SCATTER] = "reduce_scatter",
                            [DHX_OP_ALL_GATHER] = "all_gather",
                            [DHX_OP_SEND] = "send",           [DHX_OP_RECV] = "recv",
                            [DHX_OP_LOAD_BATCH] = "load_batch",
                            [DHX_OP_ALL_TO_ALL] = "all_to_all"};
  return NAME_OF(t, op);
}

const char *dhx_prog_name(uint32_t prog) {
  static const char *t[] = {[DHX_PROG_BEGIN] = "BEGIN", [DHX_PROG_MICRO] = "MICRO",
                            [DHX_PROG_STEP] = "STEP", [DHX_PROG_EVAL] = "EVAL"};
  return NAME_OF(t, prog);
}

const char *dhx_karg_name(uint32_t type) {
  static const char *t[] = {[DHX_KARG_PTR] = "ptr", [DHX_KARG_I64] = "i64",
                            [DHX_KARG_F32] = "f32", [DHX_KARG_F64] = "f64"};
  return NAME_OF(t, type);
}

const char *dhx_reg_name(uint32_t reg) {
  static const char *t[] = {[DHX_REG_LR] = "lr", [DHX_REG_BC1] = "bc1", [DHX_REG_BC2] = "bc2",
                            [DHX_REG_CLIP_SCALE] = "clip_scale",
                            [DHX_REG_GRAD_NORM] = "grad_norm",
                            [DHX_REG_NOISE_SEED] = "noise_seed"};
  return NAME_OF(t, reg);
}

int64_t dhx_dtype_size(uint32_t dtype) { return dhx_dtype_bytes(dtype); }

// ---- the listing ------------------------------------------------------------------------------

static const char *buf_name(const dhx_plan_rank *r, int32_t id) {
  return id >= 0 && (uint32_t)id < r->nbuffers ? r->buffers[id].name : "?";
}

static void print_arg(FILE *f, const dhx_plan_rank *r, const dhx_plan_arg *a) {
  switch (a->kind) {
    case DHX_ARG_BUF:
      fprintf(f, "%s", buf_name(r, a->buf));
      if (a->i) fprintf(f, "+%" PRId64 "B", a->i);
      break;
    case DHX_ARG_I64: fprintf(f, "%" PRId64, a->i); break;
    case DHX_ARG_F64: fprintf(f, "%g", a->f); break;
    case DHX_ARG_REG: fprintf(f, "$%s", a->i >= 0 ? dhx_reg_name((uint32_t)a->i) : "?"); break;
    default: fprintf(f, "<arg kind %u>", a->kind);
  }
}

static void print_args(FILE *f, const dhx_plan_rank *r, const dhx_plan_instr *in) {
  fputc('(', f);
  for (uint32_t j = 0; j < in->nargs && j < DHX_MAX_ARGS; j++) {
    if (j) fputs(", ", f);
    print_arg(f, r, &in->args[j]);
  }
  fputc(')', f);
}

static void print_gemm(FILE *f, const dhx_plan_rank *r, const dhx_plan_instr *in) {
  const dhx_plan_gemm *g = in->gemm;
  fprintf(f, "m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " ", g->m, g->n, g->k);
  if (in->nargs >= 3) {
    fputs(g->trans_a ? "A^T=" : "A=", f);
    print_arg(f, r, &in->args[0]);
    fputs(g->trans_b ? " B^T=" : " B=", f);
    print_arg(f, r, &in->args[1]);
    fputs(" C=", f);
    print_arg(f, r, &in->args[2]);
  }
  if (g->epilogue && in->nargs >= 4) {
    fputs(g->epilogue == DHX_GEMM_BIAS_GELU ? " epilogue=bias_gelu bias=" : " epilogue=bias bias=", f);
    print_arg(f, r, &in->args[3]);
  }
  if (g->epilogue == DHX_GEMM_BIAS_GELU && in->nargs >= 5) {
    fputs(" pre=", f);
    print_arg(f, r, &in->args[4]);
  }
  fprintf(f, " alpha=%g beta=%g", g->alpha, g->beta);
  if (g->batch[0] > 1 || g->batch[1] > 1)
    fprintf(f, " batch=%" PRId64 "x%" PRId64, g->batch[0], g->batch[1]);
}

static void print_instr(FILE *f, const dhx_plan *p, const dhx_plan_rank *r, uint32_t i,
                        const dhx_plan_instr *in) {
  fprintf(f, "    %5u s%u %-10s ", i, in->stream, dhx_op_name(in->op));
  if (in->turn) fprintf(f, "turn %u ", in->turn);
  switch (in->op) {
    case DHX_OP_KERNEL:
    case DHX_OP_GRAD_NORM:  // the kernel a GPU launches for it
      if (in->kernel >= 0 && (uint32_t)in->kernel < p->nkernels)
        fprintf(f, "%s", p->kernels[in->kernel].name);
      else
        fprintf(f, "kernel#%d", in->kernel);
      fprintf(f, " n=%" PRId64 " ", in->n);
      print_args(f, r, in);
      break;
    case DHX_OP_GEMM: print_gemm(f, r, in); break;
    case DHX_OP_ALLREDUCE:
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_GATHER:
    case DHX_OP_ALL_TO_ALL:
    case DHX_OP_SEND:
    case DHX_OP_RECV:
      fprintf(f, "comm %d %s ", in->comm, dhx_dtype_name(in->dtype));
      if (dhx_instr_deferred(in)) fprintf(f, "deferred to event %d ", in->event);
      print_args(f, r, in);
      break;
    case DHX_OP_RECORD:
    case DHX_OP_WAIT: fprintf(f, "event %d", in->event); break;
    default: print_args(f, r, in);
  }
  if (dhx_instr_note(in)[0]) fprintf(f, "  # %s", dhx_instr_note(in));
  fputc('\n', f);
}

// " shard r/P" for a ZeRO shard, and the padding the buffer holds past the end of its slice.
static void print_shard(FILE *f, const dhx_plan_buffer *b) {
  int64_t c = dhx_buffer_elems(b), end = (int64_t)(b->shard_index + 1) * c;
  int64_t pad = end - dhx_buffer_slice_elems(b);
  if (b->shard_parts > 1) fprintf(f, " shard %u/%u", b->shard_index, b->shard_parts);
  if (pad > 0) fprintf(f, " padded by %" PRId64, pad < c ? pad : c);
}

static void print_buffers(FILE *f, const dhx_plan_rank *r) {
  fprintf(f, "  %5s %-8s %-5s %-22s %12s %12s  %s\n", "id", "kind", "dtype", "shape", "offset",
          "bytes", "name");
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    char shape[64] = "[";
    size_t n = 1;
    for (uint32_t d = 0; d < b->ndim && d < DHX_MAX_DIMS && n < sizeof shape; d++)
      n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%" PRId64, d ? ", " : "", b->shape[d]);
    if (n < sizeof shape - 1) strcat(shape, "]");
    fprintf(f, "  %5u %-8s %-5s %-22s %12" PRId64 " %12" PRId64 "  %.*s", i,
            dhx_buf_kind_name(b->kind), dhx_dtype_name(b->dtype), shape, b->offset, b->nbytes,
            DHX_NAME_MAX, b->name);
    if (b->kind == DHX_BUF_PARAM) {
      fprintf(f, " (init %s", dhx_init_name(b->init));
      if (b->init == DHX_INIT_NORMAL) fprintf(f, " std %g", (double)b->init_std);
      fprintf(f, "%s)", b->decay ? ", decay" : "");
    }
    if (b->split_dim >= 0)
      fprintf(f, " slice %u/%u of dim %d%s", b->split_index, b->split_parts, b->split_dim,
              b->split_groups > 1 ? " in each group" : "");
    print_shard(f, b);
    fputc('\n', f);
  }
}

static bool buffers_equal(const dhx_plan_buffer *a, const dhx_plan_buffer *b) {
  bool eq = strncmp(a->name, b->name, DHX_NAME_MAX) == 0 && a->kind == b->kind &&
            a->dtype == b->dtype && a->ndim == b->ndim && a->offset == b->offset &&
            a->nbytes == b->nbytes && a->init == b->init && a->init_std == b->init_std &&
            a->decay == b->decay && a->grad == b->grad && a->opt_m == b->opt_m &&
            a->opt_v == b->opt_v && a->master == b->master &&
            a->shard_parts == b->shard_parts &&
            a->shard_index == b->shard_index;
  for (int d = 0; d < DHX_MAX_DIMS && eq; d++) eq = a->shape[d] == b->shape[d];
  return eq;
}

// Communicators aside: data-parallel replicas run the same program on their own groups.
static bool instrs_equal(const dhx_plan_instr *a, const dhx_plan_instr *b) {
  bool eq = a->op == b->op && a->stream == b->stream && a->kernel == b->kernel &&
            a->event == b->event && a->dtype == b->dtype && a->n == b->n && a->nargs == b->nargs &&
            a->turn == b->turn &&
            strncmp(dhx_instr_note(a), dhx_instr_note(b), DHX_NAME_MAX) == 0 &&
            (a->gemm == b->gemm ||  // no padding in dhx_plan_gemm:
             (a->gemm && b->gemm && memcmp(a->gemm, b->gemm, sizeof *a->gemm) == 0));
  for (uint32_t j = 0; j < a->nargs && j < DHX_MAX_ARGS && eq; j++)
    eq = a->args[j].kind == b->args[j].kind && a->args[j].buf == b->args[j].buf &&
         memcmp(&a->args[j].i, &b->args[j].i, sizeof(int64_t)) == 0;  // i or f's bits
  return eq;
}

// Same buffers and programs (dp_rank and communicators aside): a data-parallel replica.
static bool ranks_equal(const dhx_plan_rank *a, const dhx_plan_rank *b) {
  if (a->arena_bytes != b->arena_bytes || a->nbuffers != b->nbuffers) return false;
  for (uint32_t i = 0; i < a->nbuffers; i++)
    if (!buffers_equal(&a->buffers[i], &b->buffers[i])) return false;
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_plan_program *x = &a->programs[p], *y = &b->programs[p];
    if (x->nstreams != y->nstreams || x->nevents != y->nevents || x->ninstrs != y->ninstrs)
      return false;
    for (uint32_t i = 0; i < x->ninstrs; i++)
      if (!instrs_equal(&x->instrs[i], &y->instrs[i])) return false;
  }
  return true;
}

// A kernel argument's access descriptor as a formula of n and its i64 arguments (aK = the
// value of argument K): "ptr[n*a3] w" is a pointer the kernel writes n*a3 elements through.
// The extent of an access form as a formula of n and the arguments aK (plan.h).
void dhx_access_extent_text(const dhx_plan_access *a, char *out, size_t len) {
  char x[16], y[16], z[16];
  snprintf(x, sizeof x, "a%d", a->x);
  snprintf(y, sizeof y, "a%d", a->y);
  snprintf(z, sizeof z, "a%d", a->z);
  switch (a->form) {
    case DHX_ACC_ELEMS:
      snprintf(out, len, "n%s%s%s%s", a->x >= 0 ? "*" : "", a->x >= 0 ? x : "",
               a->y >= 0 ? "*" : "", a->y >= 0 ? y : "");
      break;
    case DHX_ACC_FIXED:
      snprintf(out, len, "%s%s%s", a->x >= 0 ? x : "", a->x >= 0 && a->y >= 0 ? "*" : "",
               a->y >= 0 ? y : a->x >= 0 ? "" : "1");
      break;
    case DHX_ACC_COLUMNS: snprintf(out, len, "(%s-1)*%s+n", x, y); break;
    case DHX_ACC_MOD: snprintf(out, len, "min(n,%" PRId64 ")", a->c); break;
    case DHX_ACC_TABLE: snprintf(out, len, "(vocab-1)*%s+%s", x, a->y >= 0 ? y : "n"); break;
    case DHX_ACC_CHUNKS: snprintf(out, len, "min(%s,n*%s)", x, y); break;
    case DHX_ACC_PERMUTED: snprintf(out, len, "ceil(n/(%s*%s))*%s*%s*%s", x, y, x, y, z); break;
    case DHX_ACC_PAIRS: snprintf(out, len, "ceil(n/(%s/2))*%s", x, x); break;
    case DHX_ACC_ROWS:
      snprintf(out, len, "ceil(n/%s)*%s%s%s", x, y, a->z >= 0 ? "*" : "", a->z >= 0 ? z : "");
      break;
    default: snprintf(out, len, "form %u", a->form); break;
  }
}

static void print_access(FILE *f, const dhx_plan_access *a) {
  char extent[128];
  dhx_access_extent_text(a, extent, sizeof extent);
  fprintf(f, "%s]%s%s", extent, a->flags & DHX_ACC_WRITES ? " w" : "",
          a->flags & DHX_ACC_TOKEN_IDS ? " ids" : "");
}

static void print_header(FILE *f, const dhx_plan *p) {
  const dhx_plan_train *t = &p->train;
  fprintf(f, "plan '%.*s': %u ranks (dp %" PRId64 ", tp %" PRId64 ", pp %" PRId64 "), %u kernels, "
          "%u communicators, %" PRId64 " parameters\n", DHX_NAME_MAX, t->model_name, p->nranks,
          t->dp, t->tp, t->pp, p->nkernels, p->ncomms, t->n_params);
  fprintf(f, "train: %" PRId64 " steps; micro_batch %" PRId64 " x accum %" PRId64 " x dp %" PRId64
          " = global_batch %" PRId64 "; seq %" PRId64 ", vocab %" PRId64 ", seed %" PRIu64 "\n",
          t->steps, t->micro_batch, t->accum_steps, t->dp, t->global_batch, t->seq, t->vocab, t->seed);
  fprintf(f, "optimizer: adamw lr %g (warmup %" PRId64 ", cosine to %gx), betas (%g, %g), eps %g, "
          "weight_decay %g, clip %g\n", t->lr, t->warmup_steps, t->lr_min_ratio, t->beta1, t->beta2,
          t->eps, t->weight_decay, t->grad_clip);
  fprintf(f, "data: train \"%.*s\", val \"%.*s\"; val every %" PRId64 " steps x %" PRId64
          " batches; log every %" PRId64 "; checkpoint every %" PRId64 "\n", DHX_PATH_MAX,
          t->train_path, DHX_PATH_MAX, t->val_path, t->val_every, t->val_batches, t->log_every,
          t->checkpoint_every);
  if (t->skip_nonfinite) fputs("steps with a non-finite loss or gradient norm are skipped\n", f);
  if (t->zero) fprintf(f, "zero %u: optimizer state sharded over the data-parallel group\n", t->zero);
  if (t->net_bandwidth > 0)
    fprintf(f, "network (emulated): %g B/s, latency %g s\n", t->net_bandwidth, t->net_latency);
  for (uint32_t c = 0; c < p->ncomms; c++) {
    fprintf(f, "comm %u: ranks", c);
    for (uint32_t i = 0; i < p->comms[c].nranks; i++) fprintf(f, " %d", p->comms[c].ranks[i]);
    fputc('\n', f);
  }
  for (uint32_t k = 0; k < p->nkernels; k++) {
    const dhx_plan_kernel *kn = &p->kernels[k];
    fprintf(f, "kernel %u: %.*s(", k, DHX_NAME_MAX, kn->name);
    for (uint32_t j = 0; j < kn->nargs && j < DHX_MAX_ARGS; j++) {
      fprintf(f, "%s%s", j ? ", " : "", dhx_karg_name(kn->arg_types[j]));
      if (kn->arg_types[j] != DHX_KARG_PTR) continue;
      fputc('[', f);
      print_access(f, &kn->access[j]);
    }
    fputs(kn->threads_per_index > 1    ? "), a warp per index\n"
          : kn->indices_per_thread > 1 ? "), wide on the GPU\n"
                                       : ")\n",
          f);
  }
}

void dhx_plan_print(const dhx_plan *plan, void *file) {
  FILE *f = file;
  print_header(f, plan);
  for (uint32_t ri = 0; ri < plan->nranks; ri++) {
    const dhx_plan_rank *r = &plan->ranks[ri];
    fprintf(f, "\nrank %u: dp %u/%u, tp %u/%u, pp %u/%u, arena %" PRId64 " bytes (%.2f MiB), "
            "%u buffers", ri, r->dp_rank, r->dp_size, r->tp_rank, r->tp_size, r->pp_rank,
            r->pp_size, r->arena_bytes, (double)r->arena_bytes / (1 << 20), r->nbuffers);
    // Ranks are numbered tp fastest, then dp: the replica with dp_rank 0 comes first.
    uint32_t same = r->tp_rank + r->tp_size * (r->dp_size * r->pp_rank);
    if (same < ri && ranks_equal(r, &plan->ranks[same])) {
      fprintf(f, ": same buffers and programs as rank %u, on its own communicators\n", same);
      continue;
    }
    fputc('\n', f);
    print_buffers(f, r);
    for (int pi = 0; pi < DHX_PROG_COUNT; pi++) {
      const dhx_plan_program *p = &r->programs[pi];
      fprintf(f, "  program %s: %u streams, %u events, %u instructions\n",
              dhx_prog_name((uint32_t)pi), p->nstreams, p->nevents, p->ninstrs);
      for (uint32_t i = 0; i < p->ninstrs; i++) print_instr(f, plan, r, i, &p->instrs[i]);
    }
  }
}

void dhx_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}
