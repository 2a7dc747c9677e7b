// plan_tests — the plan validator bounds every access: `plan_tests NAME [ARG]`.
//
// Each bounds test builds a valid plan (the toy plan of tests/runtime/testlib, or a plan dhxc
// compiled from a sample, given as ARG), breaks one bound, and expects the validator to refuse
// it with a message that names the place and the field. The `plan_kernel_access_covers_*` tests
// run every kernel launch with each pointer in exactly the bytes its descriptor declares.
// `plan_loader_rejects_regression_inputs DIR` loads every input of a regression corpus: each
// must be refused with a message, or run cleanly with guarded buffers (plan_exec.h);
// `make_regress DIR` writes the hand-made inputs of that corpus.
// `plan_kernels_so_must_match_the_kernel_table DIR` alters the kernel table of a compiled plan
// and expects the kernel loader and dhxrun ($DHXRUN) to refuse it with its kernels.so.
#include <dirent.h>
#include <inttypes.h>

#include "plan_exec.h"
#include "testlib.h"

static char g_dir[512];

static const char *path_in(const char *name) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  return path;
}

// ---- helpers ----------------------------------------------------------------------------------

typedef void (*breaker)(dhx_plan *p);

// Valid plan p, broken by `brk`, must be refused with a message containing `want`; frees p.
static void expect_broken(dhx_plan *p, breaker brk, const char *want) {
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "the plan is invalid before it is broken: %s\n", err);
    exit(1);
  }
  brk(p);
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, want);
  printf("ok: %s\n", err);
  tb_free(p);
}

// The toy plan at `dp`, broken by `brk`, must be refused with a message containing `want`.
static void expect_toy_invalid(int dp, breaker brk, const char *want) {
  toy_opts o = toy_defaults();
  o.dp = dp;
  expect_broken(toy_plan(&o), brk, want);
}

static dhx_plan_instr *instr(dhx_plan *p, int rank, dhx_prog_kind prog, uint32_t i) {
  return &p->ranks[rank].programs[prog].instrs[i];
}

// The first instruction of `prog` on rank 0 that runs the kernel whose name starts with
// `prefix` (or the first of op `op` when prefix is NULL).
static dhx_plan_instr *find(dhx_plan *p, dhx_prog_kind prog, dhx_op op, const char *prefix) {
  dhx_plan_program *pr = &p->ranks[0].programs[prog];
  for (uint32_t i = 0; i < pr->ninstrs; i++) {
    dhx_plan_instr *in = &pr->instrs[i];
    if (in->op != (uint32_t)op) continue;
    if (!prefix || strncmp(p->kernels[in->kernel].name, prefix, strlen(prefix)) == 0) return in;
  }
  fprintf(stderr, "no %s instruction %s in program %s\n", dhx_op_name(op), prefix ? prefix : "",
          dhx_prog_name(prog));
  exit(1);
}

static int32_t find_buffer(const dhx_plan *p, dhx_buf_kind kind) {
  for (uint32_t i = 0; i < p->ranks[0].nbuffers; i++)
    if (p->ranks[0].buffers[i].kind == (uint32_t)kind) return (int32_t)i;
  fprintf(stderr, "no %s buffer\n", dhx_buf_kind_name(kind));
  exit(1);
}

static int64_t buffer_floats(const dhx_plan *p, const dhx_plan_arg *a) {
  return p->ranks[0].buffers[a->buf].nbytes / 4;
}

// ---- kernel index spaces (toy plan, test kernels) ---------------------------------------------
// MICRO: 0 onehot(x, tokens, V) over rows, 1 GEMM y = x W, 2 add_rows(y, b, V), 3 sqerr,
// 4 GEMM grad.w += x^T dy, 5 colsum_acc(grad.b, dy, rows, V) over V columns.

static void onehot_one_row_more(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 0)->n += 1; }
static void onehot_huge_index_space(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 0)->n = 1LL << 40; }
static void add_rows_zero_width(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 2)->args[2].i = 0; }
static void add_rows_overflowing_width(dhx_plan *p) {
  instr(p, 0, DHX_PROG_MICRO, 2)->args[2].i = INT64_MAX / 4;
}
static void colsum_one_column_more(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 5)->n += 1; }
static void colsum_rows_past_dy(dhx_plan *p) {
  dhx_plan_instr *in = instr(p, 0, DHX_PROG_MICRO, 5);
  in->args[1].i = 4 * 16;  // dy from its second row: the last column's rows run past it
}
static void adamw_one_element_more(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_KERNEL, "adamw");
  in->n += 1;
}
static void sumsq_count_past_gradient(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_KERNEL, "sumsq");
  in->args[2].i += 1;  // count and chunk: one element more than the gradient
  in->args[3].i += 1;
}
static void sumsq_chunk_overflows(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_KERNEL, "sumsq");
  in->n = 2;
  in->args[3].i = INT64_MAX / 2 + 1;  // chunk: (k+1)*chunk overflows in the kernel
}
static void kernel_arg_misaligned_for_f64(dhx_plan *p) {
  for (uint32_t k = 0; k < p->nkernels; k++)
    for (uint32_t j = 0; j < p->kernels[k].nargs; j++)
      if (p->kernels[k].arg_types[j] == DHX_KARG_PTR) p->kernels[k].access[j].elem_bytes = 8;
  instr(p, 0, DHX_PROG_MICRO, 0)->args[0].i = 4;
}

static void test_bounds_kernel_index_space(const char *unused) {
  (void)unused;
  const char *at = "rank 0 program MICRO instr 0 (x = onehot(tokens)): kernel 'onehot' argument 0: ";
  char want[512];
  snprintf(want, sizeof want, "%sindex space n = 33 reaches 528 elements (2112 bytes) from byte "
           "0, past the end of buffer 'x' (2048 bytes)", at);
  expect_toy_invalid(1, onehot_one_row_more, want);
  expect_toy_invalid(1, onehot_huge_index_space, "index space n = 1099511627776 reaches");
  expect_toy_invalid(1, add_rows_zero_width, "instr 2 (y += b): kernel 'add_rows' argument 2 = 0 "
                     "must be at least 1");
  expect_toy_invalid(1, add_rows_overflowing_width, "kernel 'add_rows' argument 0: the extent "
                     "over index space n = 32 overflows");
  expect_toy_invalid(1, colsum_one_column_more, "kernel 'colsum_acc' argument 0: index space "
                     "n = 17 reaches 17 elements");
  expect_toy_invalid(1, colsum_rows_past_dy, "kernel 'colsum_acc' argument 1: index space n = 16 "
                     "reaches 512 elements (2048 bytes) from byte 64, past the end of buffer 'dy'");
  expect_toy_invalid(1, adamw_one_element_more, "program STEP instr 3 (adamw w): kernel 'adamw' "
                     "argument 0: index space n = 257");
  expect_toy_invalid(1, sumsq_count_past_gradient, "kernel 'sumsq' argument 1: index space n = 1 "
                     "reaches 257 elements");
  expect_toy_invalid(1, sumsq_chunk_overflows, "kernel 'sumsq' argument 1: the extent over index "
                     "space n = 2 overflows");
  expect_toy_invalid(1, kernel_arg_misaligned_for_f64, "kernel 'onehot' argument 0: byte offset "
                     "4 in buffer 'x' is not a multiple of the kernel's 8-byte elements");
}

// ---- access descriptors in the kernel table ---------------------------------------------------

static void descriptor_unknown_form(dhx_plan *p) { p->kernels[0].access[0].form = 99; }
static void descriptor_names_a_pointer(dhx_plan *p) { p->kernels[0].access[0].x = 1; }
static void descriptor_on_a_scalar(dhx_plan *p) { p->kernels[0].access[2].form = DHX_ACC_ELEMS; }
static void descriptor_table_without_ids(dhx_plan *p) {
  p->kernels[1].access[1] = (dhx_plan_access){DHX_ACC_TABLE, 0, 4, 2, -1, -1, 0};
}

static void test_bounds_kernel_descriptors(const char *unused) {
  (void)unused;
  expect_toy_invalid(1, descriptor_unknown_form, "kernel 0 'onehot': pointer argument 0 has "
                     "unknown access form 99");
  expect_toy_invalid(1, descriptor_names_a_pointer, "kernel 0 'onehot': argument 0: access form "
                     "1 names arguments 1, -1, -1, which are not the i64 arguments it needs");
  expect_toy_invalid(1, descriptor_on_a_scalar, "kernel 0 'onehot': argument 2 (i64) is not a "
                     "pointer but has access form 1");
  expect_toy_invalid(1, descriptor_table_without_ids, "argument 1 is a table indexed by token "
                     "ids, but no argument holds the ids");
}

// ---- GEMM extents -----------------------------------------------------------------------------
// MICRO instr 1: y[32x16] = x[32x16] W[16x16].

// MICRO instr i's GEMM shape, its own to change.
static dhx_plan_gemm *gemm_of(dhx_plan *p, uint32_t i) {
  return dhx_plan_own_gemm(p, instr(p, 0, DHX_PROG_MICRO, i));
}

static void gemm_batches_overwrite_c(dhx_plan *p) {
  dhx_plan_gemm *g = gemm_of(p, 1);
  g->batch[0] = 536870913;  // every batch reads and writes the same matrices, in parallel
}
static void gemm_batch_stride_past_c(dhx_plan *p) {
  dhx_plan_gemm *g = gemm_of(p, 1);
  g->batch[0] = 536870913;
  g->stride_c[0] = 4096;
}
static void gemm_batch_stride_overflows(dhx_plan *p) {
  dhx_plan_gemm *g = gemm_of(p, 1);
  g->batch[0] = 2;
  g->stride_a[0] = INT64_MAX / 2;
}
static void gemm_columns_overlap(dhx_plan *p) {
  // Two column blocks 4 apart, each 8 wide: they share columns 4..7.
  dhx_plan_gemm *g = gemm_of(p, 1);
  g->batch[1] = 2;
  g->n = 8;
  g->stride_c[1] = 4;
}
static void gemm_one_row_more(dhx_plan *p) { gemm_of(p, 1)->m += 1; }
static void gemm_c_offset(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 1)->args[2].i = 4; }
static void gemm_transposed_short_ld(dhx_plan *p) {
  dhx_plan_gemm *g = gemm_of(p, 4);  // grad.w += x^T dy: A is x, k x m
  g->lda = g->m - 1;
}

// Epilogues (bias, bias + GeLU into a pre-activation) on the same GEMM, W as the bias.
static void epilogue_unknown(dhx_plan *p) { gemm_of(p, 1)->epilogue = 3; }
static void epilogue_without_bias(dhx_plan *p) { gemm_of(p, 1)->epilogue = 1; }
static dhx_plan_instr *with_epilogue(dhx_plan *p, uint32_t e) {
  dhx_plan_instr *in = instr(p, 0, DHX_PROG_MICRO, 1);
  dhx_plan_own_gemm(p, in)->epilogue = e;
  in->nargs = (uint32_t)dhx_gemm_nargs(e);
  in->args[3] = in->args[1];
  in->args[4] = in->args[1];
  return in;
}
static void epilogue_pre_is_c(dhx_plan *p) { with_epilogue(p, 2)->args[4] = instr(p, 0, DHX_PROG_MICRO, 1)->args[2]; }
static void epilogue_accumulates(dhx_plan *p) { dhx_plan_own_gemm(p, with_epilogue(p, 1))->beta = 1; }
static void epilogue_bias_past_end(dhx_plan *p) { with_epilogue(p, 1)->args[3].i = 1000; }

static void test_bounds_gemm_extents(const char *unused) {
  (void)unused;
  const char *at = "rank 0 program MICRO instr 1 (y = x W): ";
  char want[512];
  snprintf(want, sizeof want, "%sGEMM batches overlap in C: batch 536870913 x stride 0 neither "
           "steps over the 512 floats written before it", at);
  expect_toy_invalid(1, gemm_batches_overwrite_c, want);
  snprintf(want, sizeof want, "%sGEMM operand C extends past buffer 'y' (needs 8796093024256 "
           "bytes, has 2048): 32x16 (ld 16) from byte 0, batch 536870913 x stride 4096", at);
  expect_toy_invalid(1, gemm_batch_stride_past_c, want);
  expect_toy_invalid(1, gemm_batch_stride_overflows, "GEMM operand A: extent overflows: 32x16 "
                     "(ld 16), batch 2 x stride 4611686018427387903");
  expect_toy_invalid(1, gemm_columns_overlap, "GEMM batches overlap in C: batch 2 x stride 4");
  expect_toy_invalid(1, gemm_one_row_more, "GEMM operand A extends past buffer 'x' (needs 2112 "
                     "bytes, has 2048)");
  expect_toy_invalid(1, gemm_c_offset, "GEMM operand C extends past buffer 'y' (needs 2052");
  expect_toy_invalid(1, gemm_transposed_short_ld, "GEMM operand A: leading dimension 15 is "
                     "smaller than its row length 16");
  expect_toy_invalid(1, epilogue_unknown, "GEMM epilogue 3 is not one of 0 (none), 1 (bias), 2 "
                     "(bias and gelu)");
  expect_toy_invalid(1, epilogue_without_bias, "gemm takes 4 arguments (has 3)");
  expect_toy_invalid(1, epilogue_pre_is_c, "GEMM epilogue: the pre-activation in 'y' overlaps C "
                     "in 'y'");
  expect_toy_invalid(1, epilogue_accumulates, "a GEMM epilogue needs one batch, beta 0 and ldc a "
                     "multiple of 8 (batch 1x1, beta 1, ldc 16)");
  expect_toy_invalid(1, epilogue_bias_past_end, "gemm of 16 elements at byte 1000 extends past "
                     "buffer 'w'");
}

// ---- collective counts (toy plan at dp 2: STEP all-reduces grad.w, grad.b) ------------------

static void allreduce_one_more(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, NULL)->args[1].i += 1;
}
static void allreduce_count_overflows(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, NULL)->args[1].i = INT64_MAX / 2;
}
static void allreduce_negative_count(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, NULL)->args[1].i = -1;
}
static void allreduce_from_offset(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_ALLREDUCE, NULL)->args[0].i = 4;
}
static void allreduce_counts_differ(dhx_plan *p) {
  // Rank 1 sums one element less than rank 0: inside its buffer, but the ring would hang.
  dhx_plan_program *pr = &p->ranks[1].programs[DHX_PROG_STEP];
  for (uint32_t i = 0; i < pr->ninstrs; i++)
    if (pr->instrs[i].op == DHX_OP_ALLREDUCE) {
      pr->instrs[i].args[1].i -= 1;
      return;
    }
}
static void grad_norm_one_more(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL)->args[3].i += 1;
}
static void grad_norm_names_adamw(dhx_plan *p) {
  find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL)->kernel =
      find(p, DHX_PROG_STEP, DHX_OP_KERNEL, "adamw")->kernel;
}
static void grad_norm_two_threads(dhx_plan *p) { find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL)->n = 2; }
static void grad_norm_scale_on_norm(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL);
  in->args[1].i = in->args[0].i;
}
static void grad_norm_norm_past_buffer(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL);
  in->args[1] = in->args[2];  // the norm just past the end of the partials
  in->args[1].i = 8;
}
static void grad_norm_max_norm_in_a_register(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, NULL);
  in->args[4] = (dhx_plan_arg){.kind = DHX_ARG_REG, .buf = -1, .i = DHX_REG_CLIP_SCALE};
}
static void zero_one_byte_more(dhx_plan *p) {
  find(p, DHX_PROG_BEGIN, DHX_OP_ZERO, NULL)->args[1].i += 1;
}

static void test_bounds_collective_counts(const char *unused) {
  (void)unused;
  expect_toy_invalid(2, allreduce_one_more, "rank 0 program STEP instr 0 (all-reduce grad.w): "
                     "allreduce of 257 elements at byte 0 extends past buffer 'grad.w' (1024 bytes)");
  expect_toy_invalid(2, allreduce_count_overflows, "allreduce of 4611686018427387903 elements at "
                     "byte 0 extends past buffer 'grad.w'");
  expect_toy_invalid(2, allreduce_negative_count, "allreduce of -1 elements");
  expect_toy_invalid(2, allreduce_from_offset, "allreduce of 256 elements at byte 4 extends past "
                     "buffer 'grad.w'");
  expect_toy_invalid(2, allreduce_counts_differ, "rank 1 program STEP instr 0 (all-reduce grad.w): "
                     "all-reduce of 255 elements on communicator 0, but rank 0's matching "
                     "all-reduce has 256: the ranks would hang");
  expect_toy_invalid(2, grad_norm_one_more, "grad_norm of 3 elements at byte 0 extends past "
                     "buffer 'grad_norm.partials'");
  expect_toy_invalid(1, zero_one_byte_more, "zero of 1025 bytes at byte 0 extends past buffer "
                     "'grad.w'");
}

// GRAD_NORM writes one f32 scale and one f32 norm apart, and is a one-thread launch of the
// grad_norm kernel over the same arguments (what a GPU runs).
static void test_bounds_grad_norm(const char *unused) {
  (void)unused;
  expect_toy_invalid(1, grad_norm_names_adamw, "grad_norm must name the kernel grad_norm_f32");
  expect_toy_invalid(1, grad_norm_two_threads, "grad_norm launches its kernel with n = 2 (must be 1)");
  expect_toy_invalid(1, grad_norm_scale_on_norm, "grad_norm writes the clip scale and the norm "
                     "to the same place");
  expect_toy_invalid(1, grad_norm_norm_past_buffer, "argument 1: byte offset 8 lies outside buffer "
                     "'grad_norm.partials' (8 bytes)");
  expect_toy_invalid(1, grad_norm_max_norm_in_a_register, "grad_norm argument 4 must be an f64");
}

// ---- data-parallel replicas that share one program --------------------------------------------
// The toy plan at dp 2 with rank 1 running rank 0's buffers and programs (plan.h: shares).
// Makes rank 1 run rank 0's sections (plan.h: shares) instead of its own copies.
static void rank_1_shares_rank_0(dhx_plan *p) {
  dhx_plan_rank *r1 = &p->ranks[1];
  free(r1->buffers);
  for (int g = 0; g < DHX_PROG_COUNT; g++) free(r1->programs[g].instrs);
  uint32_t dp_rank = r1->dp_rank;
  *r1 = p->ranks[0];
  r1->dp_rank = dp_rank;
  r1->shares = 1;  // rank 0
}

static dhx_plan *shared_toy(void) {
  toy_opts o = toy_defaults();
  o.dp = 2;
  dhx_plan *p = toy_plan(&o);
  rank_1_shares_rank_0(p);
  return p;
}

static void shares_a_later_rank(dhx_plan *p) { p->ranks[1].shares = 2; }
static void shares_a_shard(dhx_plan *p) { p->ranks[0].buffers[3].shard_parts = 2; }
static void substitutes_a_smaller_comm(dhx_plan *p) {
  int32_t c = tb_comm(p, 1, (int32_t[]){0});
  p->ranks[1].nsubst = 1;
  p->ranks[1].subst_from[0] = 0;
  p->ranks[1].subst_to[0] = c;
}

static void test_replicas_share_programs(const char *unused) {
  (void)unused;
  dhx_plan *p = shared_toy();
  char err[1024];
  CHECK(dhx_plan_validate(p, err, sizeof err));
  // Written once: the file holds rank 0's sections; reading points rank 1 at them.
  CHECK(dhx_plan_write(path_in("shared.bin"), p, err, sizeof err));
  dhx_plan q;
  CHECK(dhx_plan_read(path_in("shared.bin"), &q, err, sizeof err));
  CHECK(q.ranks[1].shares == 1 && q.ranks[1].buffers == q.ranks[0].buffers);
  CHECK(q.ranks[1].programs[DHX_PROG_STEP].instrs == q.ranks[0].programs[DHX_PROG_STEP].instrs);
  CHECK(q.ranks[1].dp_rank == 1 && q.ranks[1].nbuffers == q.ranks[0].nbuffers);
  dhx_plan_free(&q);
  struct {
    breaker brk;
    const char *want;
  } cases[] = {
      {shares_a_later_rank, "rank 1: shares rank 1, which is not an earlier rank with its own "
                            "programs"},
      {substitutes_a_smaller_comm, "communicator substitution 0 -> 1: 1 members for 2"},
      {shares_a_shard, "rank 1: shares rank 0, whose buffer 3 'w' is ZeRO shard 0/2 (each "
                       "data-parallel rank holds its own shard: such ranks cannot share)"},
  };
  tb_free(p);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    p = shared_toy();
    cases[i].brk(p);
    CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, cases[i].want);
    printf("ok: %s\n", err);
    p->ranks[1].shares = 1;  // tb_free must leave rank 0's arrays to rank 0
    tb_free(p);
  }
}

// ---- reduce-scatter, all-gather, send and receive (the collectives plan at 4 ranks) -----------
// STEP on every rank: 0 reduce-scatter x -> part, 1 all-gather part -> whole; then rank r sends
// 5 and 3 floats (tags 1, 2) to r+1 and receives as many from r-1, even ranks sending first:
// 2..5 = send, send, recv, recv on even ranks, recv, recv, send, send on odd ones.

static dhx_plan_instr *step_instr(dhx_plan *p, uint32_t rank, uint32_t i) {
  return instr(p, (int)rank, DHX_PROG_STEP, i);
}

// The collectives plan at 4 ranks, broken by `brk`, must be refused with a message containing
// `want`.
static void expect_collectives_invalid(breaker brk, const char *want) {
  collectives_bufs b;
  expect_broken(collectives_plan(4, 64, 5, 3, &b), brk, want);
}

static void rs_count_past_input(dhx_plan *p) { step_instr(p, 0, 0)->args[2].i = 68; }
static void rs_count_not_multiple(dhx_plan *p) { step_instr(p, 0, 0)->args[2].i = 63; }
static void ag_output_past_buffer(dhx_plan *p) { step_instr(p, 0, 1)->args[1].i = 4; }
static void ag_output_over_input(dhx_plan *p) {
  dhx_plan_instr *in = step_instr(p, 0, 1);
  in->args[0] = in->args[1];  // the chunk read from where the gather writes, one element on
  in->args[0].i = 4;
}
// Member 0's input is member 1's chunk of the output: in place, but not its own chunk.
static void ag_input_another_chunk(dhx_plan *p) {
  dhx_plan_instr *in = step_instr(p, 0, 1);
  in->args[0] = in->args[1];
  in->args[0].i = 16 * 4;
}
static void send_count_past_buffer(dhx_plan *p) { step_instr(p, 0, 2)->args[1].i = 9; }
static void send_peer_outside(dhx_plan *p) { step_instr(p, 0, 2)->args[2].i = 4; }
static void send_to_itself(dhx_plan *p) { step_instr(p, 0, 2)->args[2].i = 0; }
static void send_tag_too_large(dhx_plan *p) { step_instr(p, 0, 2)->args[3].i = 40000; }
static void send_dtype_i32(dhx_plan *p) { step_instr(p, 0, 2)->dtype = DHX_I32; }
static void rs_dtype_i32(dhx_plan *p) { step_instr(p, 0, 0)->dtype = DHX_I32; }
static void rs_dtype_unknown(dhx_plan *p) { step_instr(p, 0, 0)->dtype = 7; }
static void recv_count_differs(dhx_plan *p) { step_instr(p, 1, 2)->args[1].i = 4; }
static void recvs_swapped(dhx_plan *p) {
  dhx_plan_instr t = *step_instr(p, 1, 2);
  *step_instr(p, 1, 2) = *step_instr(p, 1, 3);
  *step_instr(p, 1, 3) = t;
}
static void last_send_missing(dhx_plan *p) { p->ranks[1].programs[DHX_PROG_STEP].ninstrs--; }
static void gather_instead_of_scatter(dhx_plan *p) {
  dhx_plan_instr *in = step_instr(p, 1, 0);
  dhx_plan_arg x = in->args[0];
  in->op = DHX_OP_ALL_GATHER;
  in->args[0] = in->args[1];
  in->args[1] = x;
}

static void test_bounds_new_collectives(const char *unused) {
  (void)unused;
  expect_collectives_invalid(rs_count_past_input, "rank 0 program STEP instr 0 (sum x, keep a "
                             "chunk): reduce_scatter of 68 elements at byte 0 extends past "
                             "buffer 'x' (256 bytes)");
  expect_collectives_invalid(rs_count_not_multiple, "reduce_scatter of 63 elements: the count "
                             "must be a non-negative multiple of communicator 0's 4 members");
  expect_collectives_invalid(ag_output_past_buffer, "all_gather of 64 elements at byte 4 extends "
                             "past buffer 'whole'");
  expect_collectives_invalid(ag_output_over_input, "all_gather input and output overlap in the "
                             "arena (they must be disjoint, or the input exactly this member's "
                             "chunk of the output)");
  expect_collectives_invalid(ag_input_another_chunk, "rank 0 program STEP instr 1 (gather the "
                             "chunks): all_gather input and output overlap");
  expect_collectives_invalid(send_count_past_buffer, "rank 0 program STEP instr 2 (send): send "
                             "of 9 elements at byte 0 extends past buffer 'msg' (32 bytes)");
  expect_collectives_invalid(send_peer_outside, "send peer 4 is outside communicator 0 (ranks "
                             "0..3)");
  expect_collectives_invalid(send_to_itself, "send peer 0 is this rank itself");
  expect_collectives_invalid(send_tag_too_large, "send tag 40000 is outside 0..32767");
  // i32 travels as it is (packed codes) in the ops that only move data, in an i32 buffer
  expect_collectives_invalid(send_dtype_i32, "send buffer 'msg' is f32 (must be i32)");
  expect_collectives_invalid(rs_dtype_i32, "reduce_scatter with dtype i32 (2): the runtime "
                             "computes collectives and transfers on f32 and bf16 only");
  expect_collectives_invalid(rs_dtype_unknown, "reduce_scatter with dtype ? (7)");
  expect_collectives_invalid(recv_count_differs, "rank 0 program STEP instr 2 (send): send of 5 "
                             "elements to rank 1 of communicator 0 (tag 1) has no matching recv "
                             "in the same order: the ranks would hang");
  expect_collectives_invalid(recvs_swapped, "rank 0 program STEP instr 2 (send): send of 5 "
                             "elements to rank 1 of communicator 0 (tag 1) has no matching recv");
  expect_collectives_invalid(last_send_missing, "rank 2 program STEP instr 5 (recv): recv of 3 "
                             "elements from rank 1 of communicator 0 (tag 2) has no matching send");
  expect_collectives_invalid(gather_instead_of_scatter, "rank 1 program STEP instr 0 (sum x, keep "
                             "a chunk): all-gather of 64 elements on communicator 0, but rank 0's "
                             "matching reduce-scatter has 64: the ranks would hang");
}

// Instruction 0 of `rank` (the reduce-scatter) as an all-to-all of x into whole, 64 elements.
static dhx_plan_instr *scatter_as_all_to_all(dhx_plan *p, uint32_t rank) {
  dhx_plan_instr *in = step_instr(p, rank, 0);
  in->op = DHX_OP_ALL_TO_ALL;
  in->args[1] = step_instr(p, rank, 1)->args[1];  // the all-gather's output, "whole"
  return in;
}
static void a2a_everywhere(dhx_plan *p) {
  for (uint32_t r = 0; r < 4; r++) scatter_as_all_to_all(p, r);
}
static void a2a_count_not_multiple(dhx_plan *p) { scatter_as_all_to_all(p, 0)->args[2].i = 62; }
static void a2a_output_past_buffer(dhx_plan *p) { scatter_as_all_to_all(p, 0)->args[1].i = 16; }
static void a2a_output_over_input(dhx_plan *p) {
  dhx_plan_instr *in = scatter_as_all_to_all(p, 0);
  in->args[1] = in->args[0];  // in place: the blocks it sends are the ones it receives into
}
static void a2a_count_not_i64(dhx_plan *p) {
  dhx_plan_instr *in = scatter_as_all_to_all(p, 0);
  in->args[2].kind = DHX_ARG_F64;
  in->args[2].f = 64;
}
static void a2a_dtype_f64(dhx_plan *p) { scatter_as_all_to_all(p, 0)->dtype = DHX_F64; }
static void a2a_counts_differ(dhx_plan *p) {
  a2a_everywhere(p);
  step_instr(p, 2, 0)->args[2].i = 32;
}

// The all-to-all's arguments: a count that is a multiple of p inside both buffers, an input and
// an output apart, f32; and the same count on every member.
static void test_bounds_all_to_all(const char *unused) {
  (void)unused;
  collectives_bufs b;
  dhx_plan *p = collectives_plan(4, 64, 5, 3, &b);
  a2a_everywhere(p);
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) fprintf(stderr, "refused: %s\n", err);
  CHECK(dhx_plan_validate(p, err, sizeof err));
  tb_free(p);
  expect_collectives_invalid(a2a_count_not_multiple, "rank 0 program STEP instr 0 (sum x, keep a "
                             "chunk): all_to_all of 62 elements: the count must be a non-negative "
                             "multiple of communicator 0's 4 members");
  expect_collectives_invalid(a2a_output_past_buffer, "all_to_all of 64 elements at byte 16 "
                             "extends past buffer 'whole'");
  expect_collectives_invalid(a2a_output_over_input, "all_to_all input and output overlap in the "
                             "arena (they must be disjoint)");
  expect_collectives_invalid(a2a_count_not_i64, "all_to_all argument 2 must be an i64");
  expect_collectives_invalid(a2a_dtype_f64, "all_to_all with dtype f64 (3): the runtime computes "
                             "collectives and transfers on f32 and bf16 only");
  expect_collectives_invalid(a2a_counts_differ, "all-to-all of 32 elements on communicator 0, "
                             "but rank 0's matching all-to-all has 64");
}

// Every member's all-gather in place: its input is its own chunk of the output (NCCL's
// convention), which the validator accepts; any other overlap it refuses (above).
static void test_accepts_in_place_all_gather(const char *unused) {
  (void)unused;
  collectives_bufs b;
  dhx_plan *p = collectives_plan(4, 64, 5, 3, &b);
  for (uint32_t r = 0; r < 4; r++) {
    dhx_plan_instr *in = step_instr(p, r, 1);
    in->args[0] = in->args[1];
    in->args[0].i = r * 16 * 4;
  }
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) fprintf(stderr, "refused: %s\n", err);
  CHECK(dhx_plan_validate(p, err, sizeof err));
  step_instr(p, 3, 1)->args[0].i = 2 * 16 * 4;  // rank 3 on rank 2's chunk
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, "rank 3 program STEP instr 1 (gather "
              "the chunks): all_gather input and output overlap");
  step_instr(p, 3, 1)->args[0].i = 3 * 16 * 4;
  // Rank 1 running rank 0's programs would gather in place into rank 0's chunk.
  rank_1_shares_rank_0(p);
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, "rank 1: runs rank 0's all_gather on "
              "communicator 0 at member index 1, where rank 0 is 0 (its in-place input is the "
              "owner's chunk)");
  tb_free(p);
}

// ---- ZeRO shards ------------------------------------------------------------------------------
// Buffers 0..3: parameter "w" [7, 9] (63 elements), grad.w, adam_m.w, adam_v.w, each shard 1 of
// 3 (21 elements rounded up to 32, so 33 of padding in all).

static dhx_plan *sharded_plan(void) {
  dhx_plan *p = tb_new(1);
  tb_sharded_param(p, "w", 2, (int64_t[]){7, 9}, DHX_INIT_NORMAL, 0.02f, 3, 1);
  return p;
}

static void expect_sharded_invalid(breaker brk, const char *want) {
  expect_broken(sharded_plan(), brk, want);
}

static dhx_plan_buffer *buf(dhx_plan *p, int id) { return &p->ranks[0].buffers[id]; }
static void no_parts(dhx_plan *p) { buf(p, 2)->shard_parts = 0; }
static void too_many_parts(dhx_plan *p) { buf(p, 2)->shard_parts = 5000; }
static void index_past_parts(dhx_plan *p) { buf(p, 0)->shard_index = 3; }
static void shards_too_short(dhx_plan *p) { buf(p, 3)->nbytes = 4 * 16; }
static void bytes_not_elements(dhx_plan *p) { buf(p, 1)->nbytes = 130; }
static void absurd_padding(dhx_plan *p) {
  buf(p, 3)->shard_parts = 1;
  buf(p, 3)->shard_index = 0;
  buf(p, 3)->nbytes = 4 << 20;
}
static void moment_of_another_slice(dhx_plan *p) {  // [9, 7]: as many elements, another slice
  buf(p, 2)->shape[0] = buf(p, 2)->global_shape[0] = 9;
  buf(p, 2)->shape[1] = buf(p, 2)->global_shape[1] = 7;
}
static void whole_padded_param(dhx_plan *p) {  // ZeRO 1/2: the parameter whole, padded to 3*32
  dhx_plan_rank *r = &p->ranks[0];
  buf(p, 0)->shard_parts = 1;
  buf(p, 0)->shard_index = 0;
  buf(p, 0)->offset = (r->arena_bytes + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN;
  buf(p, 0)->nbytes = 4 * 96;
  r->arena_bytes = buf(p, 0)->offset + buf(p, 0)->nbytes;
}

static void test_validation_checks_zero_shards(const char *unused) {
  (void)unused;
  expect_sharded_invalid(no_parts, "rank 0: buffer 2 'adam_m.w': shard_parts 0 (must be 1..4096)");
  expect_sharded_invalid(too_many_parts, "buffer 2 'adam_m.w': shard_parts 5000 (must be 1..4096)");
  expect_sharded_invalid(index_past_parts, "buffer 0 'w': shard_index 3 is not below shard_parts 3");
  expect_sharded_invalid(shards_too_short, "buffer 3 'adam_v.w': nbytes 64 gives 3 shards of 16 "
                         "elements, short of the slice's 63");
  expect_sharded_invalid(bytes_not_elements, "buffer 1 'grad.w': nbytes 130 is not a positive "
                         "multiple of its f32 elements");
  expect_sharded_invalid(absurd_padding, "buffer 3 'adam_v.w': nbytes 4194304 pads its slice of "
                         "63 elements with 1048513 (at most 131104 in 1 shards)");
  expect_sharded_invalid(moment_of_another_slice, "buffer 0 'w': opt_m 'adam_m.w' describes "
                         "another slice than the parameter");
  // Valid: a padded whole parameter with sharded state, and the shards round trip the format.
  dhx_plan *p = sharded_plan();
  whole_padded_param(p);
  char err[1024];
  CHECK(dhx_plan_validate(p, err, sizeof err));
  CHECK(dhx_plan_write(path_in("sharded.bin"), p, err, sizeof err));
  dhx_plan q;
  CHECK(dhx_plan_read(path_in("sharded.bin"), &q, err, sizeof err));
  for (int id = 0; id < 4; id++)
    CHECK(q.ranks[0].buffers[id].shard_parts == buf(p, id)->shard_parts &&
          q.ranks[0].buffers[id].shard_index == buf(p, id)->shard_index &&
          q.ranks[0].buffers[id].nbytes == buf(p, id)->nbytes);
  CHECK(q.ranks[0].buffers[2].shard_parts == 3 && q.ranks[0].buffers[2].shard_index == 1);
  // The listing shows the shards and the padding.
  FILE *f = fopen(path_in("listing.txt"), "w+");
  CHECK(f);
  dhx_plan_print(&q, f);
  long size = ftell(f);
  char *text = calloc(1, (size_t)size + 1);
  rewind(f);
  CHECK(fread(text, 1, (size_t)size, f) == (size_t)size);
  fclose(f);
  printf("%s", text);
  CHECK(strstr(text, "adam_m.w shard 1/3 padded by 1\n"));
  CHECK(strstr(text, "std 0.02) padded by 33\n"));
  free(text);
  dhx_plan_free(&q);
  tb_free(p);
}

// The schedule listing names the new ops with their communicator and dtype.
static void test_print_lists_new_collectives(const char *unused) {
  (void)unused;
  collectives_bufs b;
  dhx_plan *p = collectives_plan(2, 8, 2, 1, &b);
  scatter_as_all_to_all(p, 1);
  FILE *f = fopen(path_in("schedule.txt"), "w+");
  CHECK(f);
  dhx_plan_print(p, f);
  long size = ftell(f);
  char *text = calloc(1, (size_t)size + 1);
  rewind(f);
  CHECK(fread(text, 1, (size_t)size, f) == (size_t)size);
  fclose(f);
  static const char *want[] = {"reduce_scatter comm 0 f32 ", "all_gather comm 0 f32 ",
                               "send       comm 0 f32 ", "recv       comm 0 f32 ",
                               "all_to_all comm 0 f32 "};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    if (!strstr(text, want[i])) fprintf(stderr, "listing lacks \"%s\":\n%s", want[i], text);
    CHECK(strstr(text, want[i]));
  }
  printf("%s", text);
  free(text);
  tb_free(p);
}

// ---- wire bytes by purpose (plan_wire.c) -----------------------------------------------------

// A collective of op on communicator c over rank 0's buffer `buf`, count elements of dtype.
static dhx_plan_instr *wire_instr(dhx_plan *p, dhx_op op, int32_t c, int32_t buf, int64_t count,
                                  dhx_dtype dtype) {
  dhx_plan_instr *in = tb_instr(p, DHX_PROG_STEP, op, 1, "wire");
  in->comm = c;
  in->dtype = dtype;
  tb_arg_buf(in, buf, 0);
  if (op == DHX_OP_ALLREDUCE || op == DHX_OP_SEND) {
    tb_arg_i64(in, count);
    if (op == DHX_OP_SEND) {
      tb_arg_i64(in, 1);
      tb_arg_i64(in, 0);
    }
  } else {
    tb_arg_buf(in, buf, 0);
    tb_arg_i64(in, count);
  }
  return in;
}

// Eight ranks, tp 2 fastest, then dp 2, then pp 2: each collective's kind follows from the
// coordinate its communicator's members differ in and from its op, and its bytes from the ring.
static void test_wire_kinds_and_bytes(const char *unused) {
  (void)unused;
  dhx_plan *p = tb_new(8);
  int64_t n = 64;
  int32_t w = tb_param(p, "w", 1, &n, DHX_INIT_ZEROS, 0, true);
  int32_t grad = p->ranks[0].buffers[w].grad;
  int32_t norm = tb_buffer(p, "grad_norm.partials", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  int32_t window = tb_buffer(p, "grads[all]", DHX_BUF_SCRATCH, DHX_F32, 1, &n);
  p->ranks[0].buffers[window].offset = p->ranks[0].buffers[grad].offset;  // over the gradient
  int32_t act = tb_buffer(p, "act", DHX_BUF_ACT, DHX_F32, 1, &n);
  int32_t codes = tb_buffer(p, "codes", DHX_BUF_ACT, DHX_I32, 1, &n);
  int32_t tp = tb_comm(p, 2, (int32_t[]){0, 1}), dp = tb_comm(p, 2, (int32_t[]){0, 2});
  int32_t pp = tb_comm(p, 2, (int32_t[]){0, 4}), mixed = tb_comm(p, 2, (int32_t[]){0, 3});
  for (uint32_t r = 0; r < 8; r++) {
    p->ranks[r].tp_rank = r % 2;
    p->ranks[r].dp_rank = r / 2 % 2;
    p->ranks[r].pp_rank = r / 4;
  }
  struct {
    dhx_op op;
    int32_t comm, buf;
    dhx_dtype dtype;
    int kind;
    int64_t bytes;  // 8 elements over 2 members
  } cases[] = {
      {DHX_OP_ALLREDUCE, tp, act, DHX_F32, DHX_WIRE_TP, 2 * 4 * 4},
      {DHX_OP_ALL_GATHER, tp, act, DHX_F32, DHX_WIRE_TP, 4 * 4},
      {DHX_OP_ALLREDUCE, dp, grad, DHX_F32, DHX_WIRE_DP_GRADS, 2 * 4 * 4},
      {DHX_OP_ALLREDUCE, dp, window, DHX_F32, DHX_WIRE_DP_GRADS, 2 * 4 * 4},
      {DHX_OP_REDUCE_SCATTER, dp, act, DHX_F32, DHX_WIRE_DP_GRADS, 4 * 4},
      {DHX_OP_ALL_TO_ALL, dp, act, DHX_F32, DHX_WIRE_DP_GRADS, 4 * 4},
      {DHX_OP_ALL_GATHER, dp, act, DHX_F32, DHX_WIRE_DP_PARAMS, 4 * 4},
      {DHX_OP_ALL_GATHER, dp, codes, DHX_I32, DHX_WIRE_DP_PARAMS, 4 * 4},
      {DHX_OP_ALLREDUCE, dp, norm, DHX_F32, DHX_WIRE_OTHER, 2 * 4 * 4},
      {DHX_OP_ALLREDUCE, pp, norm, DHX_F32, DHX_WIRE_OTHER, 2 * 4 * 4},
      {DHX_OP_SEND, pp, act, DHX_F32, DHX_WIRE_PP, 8 * 4},
      {DHX_OP_RECV, pp, act, DHX_F32, DHX_WIRE_PP, 0},
      {DHX_OP_ALL_GATHER, mixed, act, DHX_F32, DHX_WIRE_OTHER, 4 * 4},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dhx_plan_instr *in = wire_instr(p, cases[i].op, cases[i].comm, cases[i].buf, 8, cases[i].dtype);
    int kind = dhx_wire_kind_of(p, &p->ranks[0], in);
    int64_t bytes = dhx_wire_bytes(p, &p->ranks[0], in);
    printf("%s on comm %d: %s, %" PRId64 " bytes\n", dhx_op_name(in->op), in->comm,
           dhx_wire_kind_name(kind), bytes);
    CHECK(kind == cases[i].kind);
    CHECK(bytes == cases[i].bytes);
  }
  tb_free(p);
}

// ---- the tokens buffer ------------------------------------------------------------------------

static void second_tokens_buffer(dhx_plan *p) {
  int32_t t = find_buffer(p, DHX_BUF_TARGETS);
  p->ranks[0].buffers[t].kind = DHX_BUF_TOKENS;
}
static void buffer_over_tokens(dhx_plan *p) {
  dhx_plan_rank *r = &p->ranks[0];
  int32_t t = find_buffer(p, DHX_BUF_TOKENS), l = find_buffer(p, DHX_BUF_LOSSES);
  r->buffers[l].offset = r->buffers[t].offset;
}
static void kernel_writes_tokens(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_STEP, DHX_OP_KERNEL, "sumsq");
  in->args[0].buf = find_buffer(p, DHX_BUF_TOKENS);
  in->args[0].i = 0;
}
static void zero_tokens(dhx_plan *p) {
  find(p, DHX_PROG_BEGIN, DHX_OP_ZERO, NULL)->args[0].buf = find_buffer(p, DHX_BUF_TOKENS);
  find(p, DHX_PROG_BEGIN, DHX_OP_ZERO, NULL)->args[1].i = 4;
}

static void test_bounds_tokens_buffer(const char *unused) {
  (void)unused;
  expect_toy_invalid(1, second_tokens_buffer, "buffers 0 and 1 are both tokens buffers");
  expect_toy_invalid(1, buffer_over_tokens, "rank 0: buffer 2 'losses' [0, 128) overlaps the "
                     "tokens buffer 'tokens' [0, 128)");
  expect_toy_invalid(1, kernel_writes_tokens, "kernel 'sumsq' argument 0 writes the tokens "
                     "buffer 'tokens'");
  expect_toy_invalid(1, zero_tokens, "zero writes the tokens buffer 'tokens'");
}

// ---- plans compiled by dhxc -------------------------------------------------------------------

static dhx_plan read_compiled(const char *dir) {
  char path[1024], err[2048];
  snprintf(path, sizeof path, "%s/plan.bin", dir);
  dhx_plan p;
  if (!dhx_plan_read(path, &p, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  return p;
}

// Every pointer argument of every kernel carries an access form, and the plan survives a write
// and read unchanged.
static void test_accepts_compiled(const char *dir) {
  dhx_plan p = read_compiled(dir);
  int pointers = 0;
  for (uint32_t k = 0; k < p.nkernels; k++)
    for (uint32_t j = 0; j < p.kernels[k].nargs; j++)
      if (p.kernels[k].arg_types[j] == DHX_KARG_PTR) {
        CHECK(p.kernels[k].access[j].form != DHX_ACC_NONE);
        pointers++;
      }
  CHECK(pointers > 0 && p.train.skip_nonfinite <= 1);
  char err[1024];
  CHECK(dhx_plan_write(path_in("again.bin"), &p, err, sizeof err));
  dhx_plan q;
  CHECK(dhx_plan_read(path_in("again.bin"), &q, err, sizeof err));
  CHECK(q.nkernels == p.nkernels && memcmp(q.kernels, p.kernels, sizeof *q.kernels * q.nkernels) == 0);
  printf("ok: %s validates: %u kernels, %d pointer arguments with access forms\n", dir, p.nkernels,
         pointers);
  dhx_plan_free(&q);
  dhx_plan_free(&p);
}

typedef void (*compiled_breaker)(dhx_plan *p);

static void expect_compiled_invalid(const char *dir, compiled_breaker brk, const char *want) {
  dhx_plan p = read_compiled(dir);
  brk(&p);
  char err[1024];
  CHECK_FAILS(dhx_plan_validate(&p, err, sizeof err), err, want);
  printf("ok: %s\n", err);
  dhx_plan_free(&p);
}

static void softmax_one_row_more(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "softmax_causal_fwd")->n += 1;
}
static void softmax_zero_keys(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "softmax_causal_fwd")->args[2].i = 0;
}
static void rope_width_not_heads(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "rope")->args[3].i -= 2;
}
static void rope_odd_head(dhx_plan *p) { find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "rope")->args[4].i = 1; }
static void permute_zero_block(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "permute")->args[2].i = 0;
}
static void permute_one_row_more(dhx_plan *p) {
  dhx_plan_instr *in = find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "permute");
  in->n = buffer_floats(p, &in->args[0]) / in->args[4].i + 1;
}
static void embed_ids_from_targets(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "embed_fwd")->args[1].buf = find_buffer(p, DHX_BUF_TARGETS);
}
static void embed_table_short(dhx_plan *p) { p->train.vocab += 1; }
static void embed_bwd_one_column_more(dhx_plan *p) {
  find(p, DHX_PROG_MICRO, DHX_OP_KERNEL, "embed_bwd")->n += 1;
}
// A broadcast (MOD) input read from the last element of its buffer: min(n, modulus) elements
// do not fit.
static void broadcast_input_short(dhx_plan *p) {
  dhx_plan_program *pr = &p->ranks[0].programs[DHX_PROG_MICRO];
  for (uint32_t i = 0; i < pr->ninstrs; i++) {
    dhx_plan_instr *in = &pr->instrs[i];
    if (in->op != DHX_OP_KERNEL) continue;
    const dhx_plan_kernel *k = &p->kernels[in->kernel];
    for (uint32_t j = 0; j < k->nargs; j++)
      if (k->access[j].form == DHX_ACC_MOD && in->n > 1 && k->access[j].c > 1) {
        in->args[j].i = p->ranks[0].buffers[in->args[j].buf].nbytes - 4;
        return;
      }
  }
  fprintf(stderr, "no kernel with a broadcast input\n");
  exit(1);
}

static void test_bounds_compiled_gpt(const char *dir) {
  expect_compiled_invalid(dir, softmax_one_row_more, "kernel 'softmax_causal_fwd_f32' argument 0: "
                          "index space n = ");
  expect_compiled_invalid(dir, softmax_zero_keys, "kernel 'softmax_causal_fwd_f32' argument 2 = 0 "
                          "must be at least 1");
  expect_compiled_invalid(dir, embed_ids_from_targets, "kernel 'embed_fwd_f32' argument 1 indexes "
                          "a table with its values, so it must be the tokens buffer (buffer "
                          "'targets' is targets)");
  expect_compiled_invalid(dir, embed_table_short, "kernel 'embed_fwd_f32' argument 2: index space");
  expect_compiled_invalid(dir, embed_bwd_one_column_more, "kernel 'embed_bwd_f32' argument 0: "
                          "index space");
  expect_compiled_invalid(dir, broadcast_input_short, "past the end of buffer");
}

static void test_bounds_compiled_llama(const char *dir) {
  expect_compiled_invalid(dir, rope_width_not_heads, "kernel 'rope_f32': row width 126 (argument "
                          "3) must be a multiple of the even head size 32 (argument 4)");
  expect_compiled_invalid(dir, rope_odd_head, "kernel 'rope_f32': row width 128 (argument 3) must "
                          "be a multiple of the even head size 1");
  expect_compiled_invalid(dir, permute_zero_block, "kernel 'permute_f32' argument 2 = 0 must be "
                          "at least 1");
  expect_compiled_invalid(dir, permute_one_row_more, "kernel 'permute_f32' argument 0: index "
                          "space");
}

// Every kernel launch of a plan, alone, with each pointer argument in exactly the bytes its
// access descriptor declares and a guard page right after: no kernel reaches further.
static void expect_tight_runs(const dhx_plan *p, const char *kernels_so, const char *what) {
  char why[512];
  int launches = 0;
  plan_exec_result r = plan_exec_kernels_tight(p, kernels_so, &launches, why, sizeof why);
  if (r != PLAN_EXEC_RAN) fprintf(stderr, "%s\n", why);
  CHECK(r == PLAN_EXEC_RAN && launches > 0);
  printf("ok: %s: %d kernel launches within their declared extents\n", what, launches);
}

static void test_access_covers_compiled_kernels(const char *dir) {
  dhx_plan p = read_compiled(dir);
  char so[1024];
  snprintf(so, sizeof so, "%s/kernels.so", dir);
  expect_tight_runs(&p, so, dir);
  dhx_plan_free(&p);
}

static void test_access_covers_test_kernels(const char *unused) {
  (void)unused;
  toy_opts o = toy_defaults();
  dhx_plan *p = toy_plan(&o);
  expect_tight_runs(p, DHX_TEST_KERNELS_SO, "the toy plan");
  tb_free(p);
}

// ---- the kernel table against kernels.so ------------------------------------------------------

// PLAN_DIR for dhxrun: plan.bin written from `p`, kernels.so a copy of `so`.
static const char *write_plan_with(const dhx_plan *p, const char *so, const char *name) {
  static char dir[1024];
  char path[1200], err[1024];
  snprintf(dir, sizeof dir, "%s", path_in(name));
  fresh_dir(dir);
  snprintf(path, sizeof path, "%s/plan.bin", dir);
  CHECK(dhx_plan_write(path, p, err, sizeof err));  // a fresh checksum
  size_t n;
  uint8_t *bytes = read_file(so, &n);
  CHECK(bytes != NULL);
  snprintf(path, sizeof path, "%s/kernels.so", dir);
  write_file(path, bytes, n);
  free(bytes);
  return dir;
}

// The kernel loader (what dhxrun runs before anything else touches kernels.so) refuses `p`
// with `so`, with a message containing `want`.
static void expect_load_refused(const dhx_plan *p, const char *so, const char *want) {
  char err[1024];
  dhx_kernels k;
  CHECK_FAILS(dhx_kernels_load(&k, p, so, err, sizeof err), err, want);
  dhx_kernels_unload(&k);
  printf("ok: %s\n", err);
}

// `p` validates, but the kernel loader refuses it with `so`, and so does dhxrun ($DHXRUN, with
// mpirun) on a plan directory of the two: both messages contain `want`.
static void expect_kernels_refused(const dhx_plan *p, const char *so, const char *name,
                                   const char *want) {
  char err[1024], out[8192], cmd[2048];
  CHECK(dhx_plan_validate(p, err, sizeof err));
  expect_load_refused(p, so, want);
  const char *dhxrun = getenv("DHXRUN");
  CHECK(dhxrun != NULL);
  snprintf(cmd, sizeof cmd, "%s %s 2>&1", dhxrun, write_plan_with(p, so, name));
  FILE *f = popen(cmd, "r");
  CHECK(f != NULL);
  size_t got = fread(out, 1, sizeof out - 1, f);
  out[got] = 0;
  int status = pclose(f);
  if (status == 0 || !strstr(out, want) || !strstr(out, "/kernels.so: kernel '"))
    fprintf(stderr, "%s: exit status %d, expected a message with \"%s\":\n%s\n", cmd, status,
            want, out);
  CHECK(status != 0 && strstr(out, want) && strstr(out, "/kernels.so: kernel '"));
  printf("ok: dhxrun refuses %s\n", name);
}

static int32_t find_kernel(const dhx_plan *p, const char *prefix) {
  for (uint32_t k = 0; k < p->nkernels; k++)
    if (strncmp(p->kernels[k].name, prefix, strlen(prefix)) == 0) return (int32_t)k;
  fprintf(stderr, "no kernel %s\n", prefix);
  exit(1);
}

// A plan.bin altered after dhxc wrote it, checksum recomputed, next to its unchanged kernels.so:
// a descriptor that understates what softmax writes (the validator would then accept a buffer
// too short for the kernel), or an argument type the code does not take. And a kernels.so
// without signature exports (built before them): nothing vouches for its kernels.
static void test_kernels_so_must_match(const char *dir) {
  char so[1024], err[1024];
  snprintf(so, sizeof so, "%s/kernels.so", dir);
  dhx_plan p = read_compiled(dir);
  dhx_kernels k;
  CHECK(dhx_kernels_load(&k, &p, so, err, sizeof err));  // as compiled, they belong together
  dhx_kernels_unload(&k);
  dhx_plan_kernel *softmax = &p.kernels[find_kernel(&p, "softmax_causal_fwd_")];
  softmax->access[0].x = -1;
  expect_kernels_refused(&p, so, "descriptor", "kernel 'softmax_causal_fwd_f32' argument 0: the "
                         "plan says ptr[n] write, kernels.so was built for ptr[n*a2] write: "
                         "plan.bin and kernels.so do not belong together");
  softmax->access[0].x = 2;
  softmax->arg_types[3] = DHX_KARG_F64;
  expect_kernels_refused(&p, so, "arg_type", "kernel 'softmax_causal_fwd_f32' argument 3: the "
                         "plan says f64, kernels.so was built for f32: plan.bin and kernels.so "
                         "do not belong together");
  // Differences the extent formula does not show: element sizes are then named, other fields
  // given as encoded.
  softmax->arg_types[3] = DHX_KARG_F32;
  softmax->access[1].elem_bytes = 8;
  expect_load_refused(&p, so, "argument 1: the plan says ptr[n*a2] read, 8-byte elements, "
                      "kernels.so was built for ptr[n*a2] read, 4-byte elements");
  softmax->access[1].elem_bytes = 4;
  softmax->access[1].z = 3;
  expect_load_refused(&p, so, "argument 1: the plan says ptr:1:0:4:2:-1:3:0, kernels.so was "
                      "built for ptr:1:0:4:2:-1:-1:0");
  dhx_plan_free(&p);

  toy_opts o = toy_defaults();
  o.dp = 2;  // $DHXRUN starts two ranks
  dhx_plan *toy = toy_plan(&o);
  expect_kernels_refused(toy, DHX_KERNELS_WITHOUT_ABI_SO, "no_export", "kernel 'onehot' has no "
                         "signature export (symbol dhxabi_onehot): kernels.so was built by an "
                         "older dhxc; recompile the plan with dhxc");
  tb_free(toy);
}

// Every kernel of a compiled plan survives encoding and decoding; text the encoder would not
// have written (another version, a stray space, a field missing or spelled otherwise, too many
// arguments) is refused.
static void test_kernel_abi_round_trip(const char *dir) {
  dhx_plan p = read_compiled(dir);
  char text[DHX_KERNEL_ABI_MAX], why[256];
  for (uint32_t i = 0; i < p.nkernels; i++) {
    dhx_plan_kernel back = {.nargs = 0};
    CHECK(dhx_kernel_abi_encode(&p.kernels[i], text));
    CHECK(dhx_kernel_abi_decode(text, &back, why, sizeof why));
    CHECK(back.nargs == p.kernels[i].nargs);
    for (uint32_t j = 0; j < back.nargs; j++) {
      CHECK(back.arg_types[j] == p.kernels[i].arg_types[j]);
      if (back.arg_types[j] == DHX_KARG_PTR)
        CHECK(memcmp(&back.access[j], &p.kernels[i].access[j], sizeof back.access[j]) == 0);
    }
  }
  printf("ok: %u kernels of %s round-trip\n", p.nkernels, dir);
  dhx_plan_free(&p);
  static const struct { const char *text, *why; } BAD[] = {
      {"dhxabi2 i64", "does not start with 'dhxabi1'"},
      {"dhxabi1i64", "does not start with 'dhxabi1'"},
      {"dhxabi1 i64 ", "argument 1: '' is not i64, f32, f64 or ptr:"},
      {"dhxabi1  i64", "argument 0: '' is not i64, f32, f64 or ptr:"},
      {"dhxabi1 ptr:1:1:4:2:-1:-1", "argument 0: 'ptr:1:1:4:2:-1:-1' is not i64, f32, f64 or ptr:"},
      {"dhxabi1 ptr:1:1:4:2:-1:-1:0x", "argument 0: 'ptr:1:1:4:2:-1:-1:0x' is not i64, f32"},
      {"dhxabi1 u8", "argument 0: 'u8' is not i64, f32, f64 or ptr:"},
      {"dhxabi1 ptr:01:1:4:2:-1:-1:0", "not in the form dhxc writes"},
      {"dhxabi1 ptr:1:1:4:+2:-1:-1:0", "not in the form dhxc writes"},
      {"dhxabi1 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64",
       "it has more than 16 arguments"},
  };
  for (size_t b = 0; b < sizeof BAD / sizeof BAD[0]; b++) {
    dhx_plan_kernel k;
    CHECK_FAILS(dhx_kernel_abi_decode(BAD[b].text, &k, why, sizeof why), why, BAD[b].why);
    printf("ok: '%s': %s\n", BAD[b].text, why);
  }
}

// ---- the train section ------------------------------------------------------------------------

static void test_format_carries_skip_nonfinite(const char *unused) {
  (void)unused;
  toy_opts o = toy_defaults();
  dhx_plan *p = toy_plan(&o);
  char err[1024];
  CHECK(p->train.skip_nonfinite == 0);  // the default
  p->train.skip_nonfinite = 1;
  CHECK(dhx_plan_write(path_in("plan.bin"), p, err, sizeof err));
  dhx_plan q;
  CHECK(dhx_plan_read(path_in("plan.bin"), &q, err, sizeof err));
  CHECK(q.train.skip_nonfinite == 1);
  dhx_plan_free(&q);
  p->train.skip_nonfinite = 2;
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err,
              "train.skip_nonfinite must be 0 or 1 (got 2)");
  tb_free(p);
}

static void test_format_carries_zero(const char *unused) {
  (void)unused;
  toy_opts o = toy_defaults();
  dhx_plan *p = toy_plan(&o);
  char err[1024];
  CHECK(p->train.zero == 0);  // the default
  p->train.zero = 1;
  CHECK(dhx_plan_write(path_in("plan.bin"), p, err, sizeof err));
  dhx_plan q;
  CHECK(dhx_plan_read(path_in("plan.bin"), &q, err, sizeof err));
  CHECK(q.train.zero == 1);
  dhx_plan_free(&q);
  p->train.zero = 4;
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, "train.zero must be 0..3 (got 4)");
  tb_free(p);
}

// ---- regression corpus ------------------------------------------------------------------------

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_regress(const char *dir) {
  DIR *d = opendir(dir);
  CHECK(d);
  char *names[4096];
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < 4096;)
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp_str);
  int refused = 0, ran = 0;
  for (int i = 0; i < n; i++) {
    char path[1024], err[1024], why[256];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    dhx_plan p;
    if (!dhx_plan_read(path, &p, err, sizeof err)) {
      CHECK(err[0] && !strstr(err, "checksum"));  // each input reaches the field checks
      printf("refused %s\n", err);
      refused++;
    } else {
      plan_exec_result r = plan_exec_run(&p, DHX_TEST_KERNELS_SO, why, sizeof why);
      if (r == PLAN_EXEC_FAILED) fprintf(stderr, "%s: %s\n", names[i], why);
      CHECK(r != PLAN_EXEC_FAILED);
      printf("%s %s %s\n", r == PLAN_EXEC_RAN ? "ran" : "too big to run:", names[i], why);
      ran++;
      dhx_plan_free(&p);
    }
    free(names[i]);
  }
  printf("%d inputs: %d refused, %d valid\n", n, refused, ran);
  CHECK(n > 0);
}

// The hand-made inputs of the regression corpus: one per class of out-of-bounds plan, and two
// valid plans that must run.
static void write_broken(const char *dir, const char *name, int dp, breaker brk) {
  toy_opts o = toy_defaults();
  o.dp = dp;
  dhx_plan *p = toy_plan(&o);
  brk(p);
  char path[1024], err[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CHECK(dhx_plan_write(path, p, err, sizeof err));
  tb_free(p);
}

static void unchanged(dhx_plan *p) { (void)p; }

// The same for the collectives plan at 4 ranks.
static void write_broken_collectives(const char *dir, const char *name, breaker brk) {
  collectives_bufs b;
  dhx_plan *p = collectives_plan(4, 64, 5, 3, &b);
  brk(p);
  char path[1024], err[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  CHECK(dhx_plan_write(path, p, err, sizeof err));
  tb_free(p);
}

static void test_make_regress(const char *dir) {
  write_broken(dir, "valid_toy_dp1.bin", 1, unchanged);  // these two run cleanly
  write_broken(dir, "valid_toy_dp2.bin", 2, unchanged);
  write_broken(dir, "kernel_index_space_oversized.bin", 1, onehot_huge_index_space);
  write_broken(dir, "kernel_columns_past_buffer.bin", 1, colsum_rows_past_dy);
  write_broken(dir, "kernel_width_zero.bin", 1, add_rows_zero_width);
  write_broken(dir, "kernel_chunk_overflow.bin", 1, sumsq_chunk_overflows);
  write_broken(dir, "gemm_batch_overflow.bin", 1, gemm_batches_overwrite_c);
  write_broken(dir, "gemm_batch_stride_past_c.bin", 1, gemm_batch_stride_past_c);
  write_broken(dir, "gemm_extent_overflow.bin", 1, gemm_batch_stride_overflows);
  write_broken(dir, "allreduce_count_overflow.bin", 2, allreduce_count_overflows);
  write_broken(dir, "allreduce_count_past_buffer.bin", 2, allreduce_one_more);
  write_broken(dir, "grad_norm_count_past_buffer.bin", 2, grad_norm_one_more);
  write_broken(dir, "kernel_writes_tokens.bin", 1, kernel_writes_tokens);
  write_broken(dir, "buffer_over_tokens.bin", 1, buffer_over_tokens);
  write_broken_collectives(dir, "valid_collectives_4_ranks.bin", unchanged);
  write_broken_collectives(dir, "collective_count_not_multiple.bin", rs_count_not_multiple);
  write_broken_collectives(dir, "send_without_recv.bin", last_send_missing);
  write_broken_collectives(dir, "valid_all_to_all_4_ranks.bin", a2a_everywhere);
  write_broken_collectives(dir, "all_to_all_count_not_multiple.bin", a2a_count_not_multiple);
}

// ---- main -------------------------------------------------------------------------------------

static const struct {
  const char *name;
  void (*fn)(const char *arg);
  bool needs_arg;  // a compiled plan directory, or a folder of inputs
} TESTS[] = {
    {"plan_validation_bounds_kernel_index_space", test_bounds_kernel_index_space, false},
    {"plan_validation_checks_kernel_access_descriptors", test_bounds_kernel_descriptors, false},
    {"plan_validation_bounds_gemm_extents", test_bounds_gemm_extents, false},
    {"plan_validation_bounds_collective_counts", test_bounds_collective_counts, false},
    {"plan_validation_bounds_grad_norm", test_bounds_grad_norm, false},
    {"plan_replicas_share_one_program_on_their_own_communicators", test_replicas_share_programs,
     false},
    {"plan_validation_guards_the_tokens_buffer", test_bounds_tokens_buffer, false},
    {"plan_validation_bounds_new_collectives", test_bounds_new_collectives, false},
    {"plan_validation_bounds_all_to_all", test_bounds_all_to_all, false},
    {"plan_print_lists_new_collectives", test_print_lists_new_collectives, false},
    {"plan_format_carries_skip_nonfinite", test_format_carries_skip_nonfinite, false},
    {"plan_format_carries_zero", test_format_carries_zero, false},
    {"plan_validation_accepts_in_place_all_gather", test_accepts_in_place_all_gather, false},
    {"plan_validation_checks_zero_shards", test_validation_checks_zero_shards, false},
    {"plan_kernel_access_covers_test_kernels", test_access_covers_test_kernels, false},
    {"plan_wire_kinds_and_bytes_follow_communicator_and_op", test_wire_kinds_and_bytes, false},
    {"plan_validation_accepts_compiled_tiny", test_accepts_compiled, true},
    {"plan_validation_accepts_compiled_tiny_llama", test_accepts_compiled, true},
    {"plan_validation_bounds_compiled_gpt_kernels", test_bounds_compiled_gpt, true},
    {"plan_validation_bounds_compiled_llama_kernels", test_bounds_compiled_llama, true},
    {"plan_kernel_access_covers_compiled_tiny", test_access_covers_compiled_kernels, true},
    {"plan_kernel_access_covers_compiled_tiny_llama", test_access_covers_compiled_kernels, true},
    {"plan_kernel_access_covers_compiled_fused_attention_gpt", test_access_covers_compiled_kernels,
     true},
    {"plan_kernel_access_covers_compiled_fused_attention_llama",
     test_access_covers_compiled_kernels, true},
    {"plan_kernels_so_must_match_the_kernel_table", test_kernels_so_must_match, true},
    {"plan_kernel_abi_decodes_only_what_the_encoder_writes", test_kernel_abi_round_trip, true},
    {"plan_loader_rejects_regression_inputs", test_regress, true},
    {"make_regress", test_make_regress, true},
};

int main(int argc, char **argv) {
  const char *arg = argc > 2 ? argv[2] : NULL;
  for (size_t i = 0; argc >= 2 && i < sizeof TESTS / sizeof TESTS[0]; i++) {
    if (strcmp(argv[1], TESTS[i].name) != 0 || (TESTS[i].needs_arg && !arg)) continue;
    snprintf(g_dir, sizeof g_dir, "work_%s", TESTS[i].name);
    fresh_dir(g_dir);
    TESTS[i].fn(arg);
    return 0;
  }
  fprintf(stderr, "usage: plan_tests NAME [PLAN_DIR | FOLDER] (unknown test or missing argument)\n");
  return 2;
}
