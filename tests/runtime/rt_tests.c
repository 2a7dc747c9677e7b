// rt_tests — the runtime's single-process tests: `rt_tests NAME` runs one (CTest registers each
// name). They run in the current directory, where they create a folder named after the test.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "testlib.h"



// ---- plan: round trip -------------------------------------------------------------------------

#define EQ(f) CHECK(a->f == b->f)
#define SAME_BYTES(f) CHECK(memcmp(&a->f, &b->f, sizeof a->f) == 0)

static void check_train_equal(const dhx_plan_train *a, const dhx_plan_train *b) {
  EQ(steps); EQ(micro_batch); EQ(global_batch); EQ(accum_steps); EQ(seq); EQ(vocab); EQ(seed);
  SAME_BYTES(lr); SAME_BYTES(lr_min_ratio); SAME_BYTES(beta1); SAME_BYTES(beta2); SAME_BYTES(eps);
  SAME_BYTES(weight_decay); SAME_BYTES(grad_clip);
  EQ(warmup_steps); EQ(val_every); EQ(val_batches); EQ(log_every); EQ(checkpoint_every);
  SAME_BYTES(train_path); SAME_BYTES(val_path); SAME_BYTES(net_bandwidth); SAME_BYTES(net_latency);
  EQ(dp); EQ(tp); EQ(pp); EQ(n_params); SAME_BYTES(flops_per_token); SAME_BYTES(model_name);
}

static void check_buffer_equal(const dhx_plan_buffer *a, const dhx_plan_buffer *b) {
  SAME_BYTES(name); EQ(kind); EQ(dtype); EQ(ndim); SAME_BYTES(shape); EQ(offset); EQ(nbytes);
  EQ(init); SAME_BYTES(init_std); EQ(decay); EQ(grad); EQ(opt_m); EQ(opt_v);
  SAME_BYTES(global_shape); EQ(split_dim); EQ(split_groups); EQ(split_parts); EQ(split_index);
  EQ(shard_parts); EQ(shard_index);
}

static void check_instr_equal(const dhx_plan_instr *a, const dhx_plan_instr *b) {
  EQ(op); EQ(stream); EQ(kernel); EQ(comm); EQ(event); EQ(dtype); EQ(n); EQ(turn); EQ(nargs);
  CHECK(strcmp(dhx_instr_note(a), dhx_instr_note(b)) == 0);
  for (uint32_t j = 0; j < a->nargs; j++) {  // the format holds the arguments an instruction has
    EQ(args[j].kind); EQ(args[j].buf); SAME_BYTES(args[j].i);  // or f's bits
  }
  if (a->op != DHX_OP_GEMM) return;  // and a GEMM shape only for a GEMM
  CHECK(a->gemm && b->gemm);
  EQ(gemm->trans_a); EQ(gemm->trans_b); EQ(gemm->m); EQ(gemm->n); EQ(gemm->k); EQ(gemm->lda);
  EQ(gemm->ldb); EQ(gemm->ldc); SAME_BYTES(gemm->alpha); SAME_BYTES(gemm->beta);
  SAME_BYTES(gemm->batch); SAME_BYTES(gemm->stride_a); SAME_BYTES(gemm->stride_b);
  SAME_BYTES(gemm->stride_c);
}

static void check_plans_equal(const dhx_plan *a, const dhx_plan *b) {
  EQ(version);
  check_train_equal(&a->train, &b->train);
  EQ(nkernels);
  for (uint32_t k = 0; k < a->nkernels; k++) {
    SAME_BYTES(kernels[k].name); EQ(kernels[k].nargs); EQ(kernels[k].threads_per_index);
    EQ(kernels[k].indices_per_thread);
    SAME_BYTES(kernels[k].arg_types);
  }
  EQ(ncomms);
  for (uint32_t c = 0; c < a->ncomms; c++) {
    EQ(comms[c].nranks);
    CHECK(memcmp(a->comms[c].ranks, b->comms[c].ranks, 4 * a->comms[c].nranks) == 0);
  }
  EQ(nranks);
  for (uint32_t r = 0; r < a->nranks; r++) {
    EQ(ranks[r].dp_rank); EQ(ranks[r].dp_size); EQ(ranks[r].arena_bytes); EQ(ranks[r].nbuffers);
    for (uint32_t i = 0; i < a->ranks[r].nbuffers; i++)
      check_buffer_equal(&a->ranks[r].buffers[i], &b->ranks[r].buffers[i]);
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      const dhx_plan_program *x = &a->ranks[r].programs[p], *y = &b->ranks[r].programs[p];
      CHECK(x->nstreams == y->nstreams && x->nevents == y->nevents && x->ninstrs == y->ninstrs);
      for (uint32_t i = 0; i < x->ninstrs; i++) check_instr_equal(&x->instrs[i], &y->instrs[i]);
    }
  }
}

static void append_instr(dhx_plan_program *g, const dhx_plan_instr *in) {
  g->instrs = realloc(g->instrs, sizeof(dhx_plan_instr) * (g->ninstrs + 1));
  CHECK(g->instrs != NULL);
  g->instrs[g->ninstrs++] = *in;
}

// Gives a program's compute instructions turns first..first+k-1 in program order; returns k.
static uint32_t number_turns(dhx_plan_program *g, uint32_t first) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < g->ninstrs; i++)
    if (dhx_op_computes(g->instrs[i].op)) g->instrs[i].turn = first + k++;
  return k;
}

// The toy plan at dp 2 with every train field set to a distinctive value and a batched,
// transposed GEMM, so every field of the format carries something.
static dhx_plan *rich_plan(void) {
  toy_opts o = toy_defaults();
  o.dp = 2;
  o.net_bandwidth = 1.5e9;
  o.net_latency = 2.5e-5;
  o.checkpoint_every = 5;
  dhx_plan *p = toy_plan(&o);
  dhx_plan_train *t = &p->train;
  t->seed = 0x123456789abcdefull;
  t->eps = 1.25e-7;
  t->log_every = 3;
  t->flops_per_token = 12345.5;
  snprintf(t->train_path, sizeof t->train_path, "data/train.bin");
  snprintf(t->val_path, sizeof t->val_path, "data/val.bin");
  memset(t->model_name + 4, 'z', 8);  // bytes after the NUL must survive too
  dhx_plan_instr g = {.op = DHX_OP_GEMM, .kernel = -1, .comm = -1, .event = -1, .nargs = 3};
  int32_t x = 11, w = 3, dy = 13;  // buffer ids in the toy plan (see toy_plan)
  CHECK(!strcmp(p->ranks[0].buffers[x].name, "x") && !strcmp(p->ranks[0].buffers[dy].name, "dy"));
  g.args[0] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = x, .i = 0};
  g.args[1] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = w, .i = 64};
  g.args[2] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = dy, .i = 4};
  g.args[5] = (dhx_plan_arg){.kind = DHX_ARG_F64, .buf = -1, .f = 3.5};  // beyond nargs: ignored
  *dhx_plan_own_gemm(p, &g) = (dhx_plan_gemm){
      .trans_a = 0, .trans_b = 1, .m = 2, .n = 4, .k = 4, .lda = 16, .ldb = 16, .ldc = 16,
      .alpha = 0.5, .beta = 0.25, .batch = {2, 2}, .stride_a = {64, 16}, .stride_b = {0, 16},
      .stride_c = {128, 32}};
  g.note = dhx_plan_text(p, "batched gemm");
  for (uint32_t r = 0; r < p->nranks; r++) {
    append_instr(&p->ranks[r].programs[DHX_PROG_EVAL], &g);
    number_turns(&p->ranks[r].programs[DHX_PROG_EVAL], 1);  // turns survive the file too
  }
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "rich plan invalid: %s\n", err);
    exit(1);
  }
  return p;
}

static void test_plan_roundtrip_preserves_every_field(void) {
  dhx_plan *p = rich_plan();
  p->kernels[0].threads_per_index = DHX_PLAN_WARP;  // a warp-per-row kernel (GPU launch shape)
  char err[1024];
  CHECK(dhx_plan_write(tl_path("plan.bin"), p, err, sizeof err));
  dhx_plan q;
  if (!dhx_plan_read(tl_path("plan.bin"), &q, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  check_plans_equal(p, &q);
  // Writing what was read gives the same bytes.
  CHECK(dhx_plan_write(tl_path("again.bin"), &q, err, sizeof err));
  size_t n1, n2;
  uint8_t *b1 = read_file(tl_path("plan.bin"), &n1), *b2 = read_file(tl_path("again.bin"), &n2);
  CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
  CHECK(access(tl_path("plan.bin.tmp"), F_OK) != 0);  // the temporary file was renamed away
  // The listing names buffers and ops.
  FILE *f = fopen(tl_path("listing.txt"), "w");
  dhx_plan_print(&q, f);
  fclose(f);
  size_t ln;
  char *listing = (char *)read_file(tl_path("listing.txt"), &ln);
  listing[ln] = 0;
  CHECK(strstr(listing, "allreduce") && strstr(listing, "grad.w") && strstr(listing, "onehot") &&
        strstr(listing, "program STEP") && strstr(listing, "batch=2x2") &&
        strstr(listing, "rank 1: dp 1/2"));
  free(listing);
  free(b1);
  free(b2);
  dhx_plan_free(&q);
  tb_free(p);
}

// ---- plan: damaged files ----------------------------------------------------------------------

static uint8_t *toy_plan_bytes(size_t *n) {
  dhx_plan *p = rich_plan();
  char err[1024];
  CHECK(dhx_plan_write(tl_path("plan.bin"), p, err, sizeof err));
  tb_free(p);
  return read_file(tl_path("plan.bin"), n);
}

static void test_plan_rejects_truncated_file(void) {
  size_t n;
  uint8_t *data = toy_plan_bytes(&n);
  char err[1024];
  dhx_plan q;
  CHECK(dhx_plan_decode(data, n, &q, err, sizeof err));
  dhx_plan_free(&q);
  for (size_t len = 0; len < n; len++) {
    uint8_t *copy = malloc(len ? len : 1);  // exact size, so ASan sees any read past the end
    memcpy(copy, data, len);
    CHECK_FAILS(dhx_plan_decode(copy, len, &q, err, sizeof err), err, "truncated");
    CHECK(q.ranks == NULL && q.kernels == NULL);  // left empty
    free(copy);
  }
  write_file(tl_path("short.bin"), data, 812);
  char want[256];
  snprintf(want, sizeof want, "%s: truncated: 812 bytes, header says %zu", tl_path("short.bin"), n);
  CHECK_FAILS(dhx_plan_read(tl_path("short.bin"), &q, err, sizeof err), err, want);
  CHECK_FAILS(dhx_plan_read(tl_path("missing.bin"), &q, err, sizeof err), err, "cannot open");
  free(data);
}

static void fix_crc(uint8_t *d, size_t n) {
  uint32_t crc = dhx_crc32(d + DHX_PLAN_HEADER_BYTES, n - DHX_PLAN_HEADER_BYTES);
  for (int i = 0; i < 4; i++) d[24 + i] = (uint8_t)(crc >> (8 * i));
}

static void test_plan_rejects_corrupted_bytes(void) {
  size_t n;
  uint8_t *data = toy_plan_bytes(&n), *copy = malloc(n);
  char err[1024];
  dhx_plan q;
  // Any flipped byte is caught: in the payload by the checksum, in the header by its checks.
  for (size_t i = 0; i < n; i++) {
    memcpy(copy, data, n);
    copy[i] ^= 0xFF;
    CHECK_FAILS(dhx_plan_decode(copy, n, &q, err, sizeof err), err, "");
    if (i >= DHX_PLAN_HEADER_BYTES) CHECK(strstr(err, "checksum mismatch (file is corrupted)"));
  }
  // With the checksum recomputed the fields themselves are checked: every mutation either
  // decodes to a valid plan (bytes nobody reads, like string tails) or fails with a message.
  static const int mutations = 5;
  int failed = 0, decoded = 0;
  for (size_t i = DHX_PLAN_HEADER_BYTES; i < n; i++) {
    memcpy(copy, data, n);
    switch (i % mutations) {
      case 0: copy[i] ^= 0x01; break;
      case 1: copy[i] ^= 0x80; break;
      case 2: copy[i] ^= 0xFF; break;
      case 3: copy[i] = 0x00; break;
      case 4: copy[i] = 0xFF; break;
    }
    fix_crc(copy, n);
    err[0] = 0;
    if (dhx_plan_decode(copy, n, &q, err, sizeof err)) {
      CHECK(dhx_plan_validate(&q, err, sizeof err));
      dhx_plan_free(&q);
      decoded++;
    } else {
      CHECK(err[0] && !strstr(err, "checksum"));
      failed++;
    }
  }
  printf("%d mutations rejected with a message, %d harmless\n", failed, decoded);
  CHECK(failed > 0);
  // Counts that would allocate far more than the file holds are refused before allocating.
  memcpy(copy, data, n);
  size_t nkernels_at = DHX_PLAN_HEADER_BYTES + 19 * 8 + 2 * DHX_PATH_MAX + 2 * 8 + 3 * 8 + 8 + 8 +
                       DHX_NAME_MAX + 4 + 8 + 4 + 8;  // just after the train section
  for (int i = 0; i < 4; i++) copy[nkernels_at + i] = 0xFF;
  fix_crc(copy, n);
  CHECK_FAILS(dhx_plan_decode(copy, n, &q, err, sizeof err), err, "kernels, the plan format allows");
  copy[nkernels_at + 3] = 0;  // 16M kernels: under no limit but far beyond the bytes left
  copy[nkernels_at + 2] = 0;
  fix_crc(copy, n);
  CHECK_FAILS(dhx_plan_decode(copy, n, &q, err, sizeof err), err, "do not fit");
  free(copy);
  free(data);
}

// ---- plan: validation messages ----------------------------------------------------------------

typedef void (*breaker)(dhx_plan *p);

static void expect_invalid(int dp, breaker brk, const char *want) {
  toy_opts o = toy_defaults();
  o.dp = dp;
  dhx_plan *p = toy_plan(&o);
  brk(p);
  char err[1024];
  CHECK_FAILS(dhx_plan_validate(p, err, sizeof err), err, want);
  printf("ok: %s\n", err);
  tb_free(p);
}

static dhx_plan_instr *instr(dhx_plan *p, int rank, dhx_prog_kind prog, uint32_t i) {
  return &p->ranks[rank].programs[prog].instrs[i];
}

static dhx_plan_instr *find_op(dhx_plan *p, int rank, dhx_prog_kind prog, dhx_op op) {
  dhx_plan_program *g = &p->ranks[rank].programs[prog];
  for (uint32_t i = 0; i < g->ninstrs; i++)
    if (g->instrs[i].op == op) return &g->instrs[i];
  CHECK(!"no such op");
  return NULL;
}

static void b_gemm_b(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 1)->args[1].i = 4; }
static void b_gemm_ld(dhx_plan *p) { dhx_plan_own_gemm(p, instr(p, 0, DHX_PROG_MICRO, 1))->lda = 8; }
static void b_gemm_shape(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 1)->gemm = NULL; }
static void b_gemm_batch(dhx_plan *p) {
  dhx_plan_gemm *g = dhx_plan_own_gemm(p, instr(p, 0, DHX_PROG_MICRO, 1));
  g->batch[0] = 3;
  g->stride_c[0] = 1LL << 62;
}
static void b_offset(dhx_plan *p) { p->ranks[0].buffers[3].offset += 4; }
static void b_nbytes(dhx_plan *p) { p->ranks[0].buffers[0].nbytes = 12; }
static void b_arena(dhx_plan *p) { p->ranks[0].arena_bytes -= 64; }
static void b_name(dhx_plan *p) { memset(p->ranks[0].buffers[0].name, 'a', DHX_NAME_MAX); }
static void b_kernel_arg(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 0)->args[2].kind = DHX_ARG_F64; }
static void b_kernel_id(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 0)->kernel = 77; }
static void b_kernel_threads(dhx_plan *p) { p->kernels[0].threads_per_index = 16; }
static void b_kernel_wide(dhx_plan *p) { p->kernels[0].indices_per_thread = 8; }
static void b_kernel_wide_rows(dhx_plan *p) {
  p->kernels[0].threads_per_index = DHX_PLAN_WARP;
  p->kernels[0].indices_per_thread = DHX_PLAN_WIDE;
}
static void b_op(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 2)->op = 99; }
static void b_stream(dhx_plan *p) { instr(p, 0, DHX_PROG_MICRO, 2)->stream = 3; }
static void b_accum(dhx_plan *p) { p->train.accum_steps = 3; }
static void b_seq(dhx_plan *p) { p->train.seq = 0; }
static void b_reg(dhx_plan *p) { find_op(p, 0, DHX_PROG_STEP, DHX_OP_KERNEL)[0].args[0].kind = DHX_ARG_REG; }
static void b_adamw_reg(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_STEP];
  g->instrs[g->ninstrs - 1].args[4].i = 9;
}
static void b_param_link(dhx_plan *p) { p->ranks[0].buffers[3].grad = p->ranks[0].buffers[7].grad; }
static void b_tokens_dtype(dhx_plan *p) { p->ranks[0].buffers[0].dtype = DHX_F32; }
static void b_zero(dhx_plan *p) { instr(p, 0, DHX_PROG_BEGIN, 0)->args[1].i += 1; }
static void b_no_record(dhx_plan *p) { find_op(p, 0, DHX_PROG_STEP, DHX_OP_RECORD)->event = 1; }
static void b_member(dhx_plan *p) { p->comms[0].nranks = 1; }
static void b_ascending(dhx_plan *p) { p->comms[0].ranks[0] = 1; }
static void b_count(dhx_plan *p) { find_op(p, 1, DHX_PROG_STEP, DHX_OP_ALLREDUCE)->args[1].i -= 1; }
static void b_count_streams(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[1].programs[DHX_PROG_STEP];
  g->instrs[2].stream = 0;  // rank 1 reduces grad.b on the compute stream instead
}
static void b_allreduce_region(dhx_plan *p) {
  find_op(p, 0, DHX_PROG_STEP, DHX_OP_ALLREDUCE)->args[1].i += 1;
  find_op(p, 1, DHX_PROG_STEP, DHX_OP_ALLREDUCE)->args[1].i += 1;
}
static void b_dp_size(dhx_plan *p) { p->ranks[1].dp_size = 3; }
static void b_duplicate_param(dhx_plan *p) { snprintf(p->ranks[0].buffers[7].name, DHX_NAME_MAX, "w"); }
static void b_note(dhx_plan *p) {
  char *note = dhx_plan_alloc(p, DHX_NAME_MAX + 1);
  memset(note, 'n', DHX_NAME_MAX);
  instr(p, 0, DHX_PROG_MICRO, 2)->note = note;
}

// Two streams that each wait for the other's event before recording their own.
static void b_cycle(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_EVAL];
  dhx_plan_instr w0 = {.op = DHX_OP_WAIT, .stream = 0, .kernel = -1, .comm = -1, .event = 0};
  dhx_plan_instr r1 = {.op = DHX_OP_RECORD, .stream = 0, .kernel = -1, .comm = -1, .event = 1};
  dhx_plan_instr w1 = {.op = DHX_OP_WAIT, .stream = 1, .kernel = -1, .comm = -1, .event = 1};
  dhx_plan_instr r0 = {.op = DHX_OP_RECORD, .stream = 1, .kernel = -1, .comm = -1, .event = 0};
  append_instr(g, &w0);
  append_instr(g, &r1);
  append_instr(g, &w1);
  append_instr(g, &r0);
  g->nstreams = 2;
  g->nevents = 2;
}

// A record that comes after the wait on the same stream.
static void b_late_record(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_EVAL];
  dhx_plan_instr w = {.op = DHX_OP_WAIT, .stream = 0, .kernel = -1, .comm = -1, .event = 0};
  dhx_plan_instr r = {.op = DHX_OP_RECORD, .stream = 0, .kernel = -1, .comm = -1, .event = 0};
  append_instr(g, &w);
  append_instr(g, &r);
  g->nevents = 1;
}

// Turns (plan.h): one missing, one given twice, falling along a stream, and one that never
// comes because the instruction holding the turn before it waits for what follows.
static dhx_plan_instr *nth_compute(dhx_plan_program *g, uint32_t k) {
  for (uint32_t i = 0; i < g->ninstrs; i++)
    if (dhx_op_computes(g->instrs[i].op) && k-- == 0) return &g->instrs[i];
  CHECK(!"no such compute instruction");
  return NULL;
}
static void b_turn_missing(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_MICRO];
  nth_compute(g, number_turns(g, 1) - 1)->turn = 0;
}
static void b_turn_twice(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_MICRO];
  number_turns(g, 1);
  nth_compute(g, 1)->turn = 1;
}
static void b_turn_falls(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_MICRO];
  number_turns(g, 1);
  nth_compute(g, 0)->turn = 2;
  nth_compute(g, 1)->turn = 1;
}
static void b_turn_on_record(dhx_plan *p) {
  b_late_record(p);
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_EVAL];
  number_turns(g, 1);
  g->instrs[g->ninstrs - 1].turn = 99;
}
static void b_turn_hang(dhx_plan *p) {
  dhx_plan_program *g = &p->ranks[0].programs[DHX_PROG_EVAL];
  number_turns(g, 2);  // stream 0 computes from turn 2 on ...
  dhx_plan_instr first = *nth_compute(g, 0);
  dhx_plan_instr w = {.op = DHX_OP_WAIT, .stream = 1, .kernel = -1, .comm = -1, .event = 0};
  dhx_plan_instr r = {.op = DHX_OP_RECORD, .stream = 0, .kernel = -1, .comm = -1, .event = 0};
  first.stream = 1;
  first.turn = 1;  // ... after turn 1, which stream 1 takes only once stream 0 has recorded
  append_instr(g, &w);
  append_instr(g, &first);
  append_instr(g, &r);
  g->nstreams = 2;
  g->nevents = 1;
}

static void test_plan_validation_names_the_field(void) {
  expect_invalid(1, b_turn_missing, "program MICRO instr");
  expect_invalid(1, b_turn_missing, "needs a turn from 1 to");
  expect_invalid(1, b_turn_twice, "turn 1 is given twice");
  expect_invalid(1, b_turn_falls, "turn 1 comes after turn 2 on stream 0");
  expect_invalid(1, b_turn_on_record, "turn 99 on an instruction that does not compute");
  expect_invalid(1, b_turn_hang, "turn 2 never comes");
  expect_invalid(1, b_gemm_b, "rank 0 program MICRO instr 1 (y = x W): GEMM operand B extends "
                 "past buffer 'w' (needs 1028 bytes, has 1024)");
  expect_invalid(1, b_gemm_ld, "GEMM operand A: leading dimension 8 is smaller than its row length 16");
  expect_invalid(1, b_gemm_batch, "GEMM operand C: extent overflows");
  expect_invalid(1, b_gemm_shape, "rank 0 program MICRO instr 1 (y = x W): a GEMM without its shape");
  expect_invalid(1, b_offset, "rank 0: buffer 3 'w': offset");
  expect_invalid(1, b_nbytes, "buffer 0 'tokens': nbytes 12 but its shape holds 128 bytes");
  expect_invalid(1, b_arena, "lies outside the arena");
  expect_invalid(1, b_name, "buffer 0: name is not NUL-terminated");
  expect_invalid(1, b_kernel_arg, "instr 0 (x = onehot(tokens)): kernel 'onehot' argument 2 is i64");
  expect_invalid(1, b_kernel_id, "kernel id 77 is not in the kernel table");
  expect_invalid(1, b_kernel_threads, "kernel 0 'onehot': threads_per_index 16 (must be 1 or 32)");
  expect_invalid(1, b_kernel_wide, "kernel 0 'onehot': indices_per_thread 8 (must be 1, or 4 "
                 "for a kernel of one thread per index)");
  expect_invalid(1, b_kernel_wide_rows, "kernel 0 'onehot': indices_per_thread 4 (must be 1, or "
                 "4 for a kernel of one thread per index)");
  expect_invalid(1, b_op, "instr 2 (y += b): unknown op 99");
  expect_invalid(1, b_stream, "stream 3, but the program has 1 streams");
  expect_invalid(1, b_accum, "train.accum_steps*micro_batch*dp = 3*4*1 must equal train.global_batch = 8");
  expect_invalid(1, b_seq, "train.seq must be in 1..2^24 (got 0)");
  expect_invalid(1, b_reg, "kernel 'sumsq' argument 0 is ptr");
  expect_invalid(1, b_adamw_reg, "register 9 does not exist");
  expect_invalid(1, b_param_link, "buffer 3 'w': grad 'grad.b' describes another slice than the "
                 "parameter");
  expect_invalid(1, b_tokens_dtype, "a tokens buffer must be i32");
  expect_invalid(1, b_zero, "zero of 1025 bytes at byte 0 extends past buffer 'grad.w'");
  expect_invalid(1, b_cycle, "program EVAL instr 4: WAIT on event 0 can never complete");
  expect_invalid(1, b_late_record, "WAIT on event 0 can never complete");
  expect_invalid(1, b_duplicate_param, "two parameters are named 'w'");
  expect_invalid(1, b_note, "rank 0 program MICRO instr 2: note is longer than 95 bytes");
  expect_invalid(2, b_no_record, "WAIT on event 0, which no RECORD in this program records");
  expect_invalid(2, b_member, "which rank 1 is not a member");
  expect_invalid(2, b_ascending, "member ranks must be ascending");
  expect_invalid(2, b_count, "rank 1 program STEP instr 0 (all-reduce grad.w): all-reduce of 255 "
                 "elements on communicator 0, but rank 0's matching all-reduce has 256");
  expect_invalid(2, b_count_streams, "rank 1 program STEP instr 2 (all-reduce grad.b): one "
                 "all-reduce more on communicator 0 stream 0 than rank 0 has");
  expect_invalid(2, b_allreduce_region, "allreduce of 257 elements at byte 0 extends past buffer 'grad.w'");
  expect_invalid(2, b_dp_size, "rank 1: dp_size 3 differs from train.dp 2");
  // Through a file, the message starts with the path.
  toy_opts o = toy_defaults();
  dhx_plan *p = toy_plan(&o);
  b_gemm_b(p);
  char err[1024], want[512];
  CHECK(dhx_plan_write(tl_path("plan.bin"), p, err, sizeof err));
  snprintf(want, sizeof want, "%s: rank 0 program MICRO instr 1 (y = x W): GEMM operand B",
           tl_path("plan.bin"));
  dhx_plan q;
  CHECK_FAILS(dhx_plan_read(tl_path("plan.bin"), &q, err, sizeof err), err, want);
  tb_free(p);
}

// ---- data -------------------------------------------------------------------------------------

static void test_data_rejects_bad_shards(void) {
  char err[1024];
  dhx_shard s;
  uint16_t tok[1000];
  for (int i = 0; i < 1000; i++) tok[i] = (uint16_t)(i % 200);
  const char *good = tl_path("good.bin");
  write_shard_raw(good, DHX_SHARD_MAGIC, 1, 1000, tok, 1000);
  CHECK(dhx_shard_open(&s, good, 8, 256, err, sizeof err));
  int32_t in[8], out[8];
  dhx_shard_row(&s, 3, 8, in, out);  // rows are consecutive windows of seq tokens
  CHECK(in[0] == 24 && out[0] == 25 && in[7] == 31 && out[7] == 32);
  dhx_shard_row(&s, 124, 8, in, out);  // nseq = 999/8 = 124: row 124 wraps to row 0
  CHECK(in[0] == 0 && out[7] == 8);
  dhx_shard_close(&s);

  CHECK_FAILS(dhx_shard_open(&s, tl_path("missing.bin"), 8, 256, err, sizeof err), err,
              "missing.bin: cannot open: No such file or directory");
  write_shard_raw(tl_path("magic.bin"), 12345, 1, 1000, tok, 1000);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("magic.bin"), 8, 256, err, sizeof err), err,
              "magic.bin: bad magic 12345 (expected 20240520: an llm.c token shard");
  write_shard_raw(tl_path("version.bin"), DHX_SHARD_MAGIC, 7, 1000, tok, 1000);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("version.bin"), 8, 256, err, sizeof err), err, "version 7");
  write_shard_raw(tl_path("short.bin"), DHX_SHARD_MAGIC, 1, 1000, tok, 400);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("short.bin"), 8, 256, err, sizeof err), err,
              "short.bin: truncated: header says 1000 tokens but the file holds 400");
  write_shard_raw(tl_path("long.bin"), DHX_SHARD_MAGIC, 1, 400, tok, 1000);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("long.bin"), 8, 256, err, sizeof err), err,
              "header says 400 tokens but the file holds 1000");
  write_file(tl_path("tiny.bin"), tok, 100);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("tiny.bin"), 8, 256, err, sizeof err), err,
              "truncated: 100 bytes, shorter than the 1024-byte header");
  write_file(tl_path("empty.bin"), tok, 0);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("empty.bin"), 8, 256, err, sizeof err), err, "truncated");
  tok[17] = 300;
  write_shard_raw(tl_path("vocab.bin"), DHX_SHARD_MAGIC, 1, 1000, tok, 1000);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("vocab.bin"), 8, 256, err, sizeof err), err,
              "vocab.bin: token 300 at position 17 is outside the vocabulary (256)");
  write_shard_raw(tl_path("few.bin"), DHX_SHARD_MAGIC, 1, 8, tok, 8);
  CHECK_FAILS(dhx_shard_open(&s, tl_path("few.bin"), 8, 256, err, sizeof err), err,
              "8 tokens are too few for one sequence of 8 (needs at least 9)");
  CHECK_FAILS(dhx_shard_open(&s, tl_dir, 8, 256, err, sizeof err), err, "not a regular file");
}

// ---- checkpoints ------------------------------------------------------------------------------

static void fill_state(const dhx_plan *p, uint8_t *arena, float base) {
  const dhx_plan_rank *r = &p->ranks[0];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    float *x = (float *)(arena + b->offset);
    for (int64_t j = 0; j < b->nbytes / 4; j++)
      if (b->kind == DHX_BUF_PARAM || b->kind == DHX_BUF_OPT_M || b->kind == DHX_BUF_OPT_V)
        x[j] = base + (float)i + 0.001f * (float)j;
  }
}

static bool state_equal(const dhx_plan *p, const uint8_t *a, const uint8_t *b) {
  const dhx_plan_rank *r = &p->ranks[0];
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *x = &r->buffers[i];
    if ((x->kind == DHX_BUF_PARAM || x->kind == DHX_BUF_OPT_M || x->kind == DHX_BUF_OPT_V) &&
        memcmp(a + x->offset, b + x->offset, (size_t)x->nbytes) != 0)
      return false;
  }
  return true;
}

// Rewrites a checkpoint with its JSON header edited by `edit` (data section unchanged).
static void rewrite_header(const char *src, const char *dst, void (*edit)(cJSON *)) {
  size_t n;
  uint8_t *d = read_file(src, &n);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)d[i] << (8 * i);
  cJSON *root = cJSON_ParseWithLength((char *)d + 8, hlen);
  CHECK(root != NULL);
  edit(root);
  char *json = cJSON_PrintUnformatted(root);
  size_t len = strlen(json);
  FILE *f = fopen(dst, "wb");
  uint8_t size[8];
  for (int i = 0; i < 8; i++) size[i] = (uint8_t)((uint64_t)len >> (8 * i));
  fwrite(size, 1, 8, f);
  fwrite(json, 1, len, f);
  fwrite(d + 8 + hlen, 1, n - 8 - hlen, f);
  fclose(f);
  free(json);
  cJSON_Delete(root);
  free(d);
}

static cJSON *entry(cJSON *root, const char *name) {
  cJSON *e = cJSON_GetObjectItemCaseSensitive(root, name);
  CHECK(e != NULL);
  return e;
}
static void e_dtype(cJSON *r) {
  cJSON_ReplaceItemInObject(entry(r, "w"), "dtype", cJSON_CreateString("F16"));
}
static void e_shape(cJSON *r) {
  cJSON_ReplaceItemInArray(entry(entry(r, "w"), "shape"), 1, cJSON_CreateNumber(15));
}
static void e_missing(cJSON *r) { cJSON_DeleteItemFromObject(r, "b.adam_v"); }
static void e_extra(cJSON *r) {
  cJSON_AddItemToObject(r, "extra", cJSON_Duplicate(entry(r, "b"), true));
}
static void e_offsets(cJSON *r) {
  cJSON_ReplaceItemInArray(entry(entry(r, "b"), "data_offsets"), 1, cJSON_CreateNumber(1e8));
}
static void e_size(cJSON *r) {
  cJSON *off = entry(entry(r, "b"), "data_offsets");
  double end = cJSON_GetArrayItem(off, 1)->valuedouble;
  cJSON_ReplaceItemInArray(off, 0, cJSON_CreateNumber(end - 60));
}
static void e_format(cJSON *r) {
  cJSON_ReplaceItemInObject(entry(r, "__metadata__"), "format", cJSON_CreateString("pt"));
}
static void e_model(cJSON *r) {
  cJSON_ReplaceItemInObject(entry(r, "__metadata__"), "model", cJSON_CreateString("gpt2"));
}
static void e_step(cJSON *r) {
  cJSON_ReplaceItemInObject(entry(r, "__metadata__"), "step", cJSON_CreateString("-3"));
}

static void test_checkpoint_roundtrip_and_rejects_corruption(void) {
  toy_opts o = toy_defaults();
  dhx_plan *p = toy_plan(&o);
  char err[1024];
  dhx_rank_arena a, b;
  CHECK(dhx_rank_arena_init(&a, p->ranks[0].arena_bytes, err, sizeof err));
  CHECK(dhx_rank_arena_init(&b, p->ranks[0].arena_bytes, err, sizeof err));
  fill_state(p, a.base, 1.0f);
  const char *ck = tl_path("ck.safetensors");
  CHECK(dhx_checkpoint_save(p, 0, a.base, ck, 42, err, sizeof err));
  int64_t step = -1;
  CHECK(dhx_checkpoint_load(p, 0, b.base, ck, &step, err, sizeof err));
  CHECK(step == 42 && state_equal(p, a.base, b.base));

  // A standard safetensors layout: header length, a JSON object padded to 8 bytes, the data.
  size_t n;
  uint8_t *d = read_file(ck, &n);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)d[i] << (8 * i);
  CHECK(hlen % 8 == 0 && 8 + hlen + (16 * 16 + 16) * 4 * 3 == n);
  cJSON *root = cJSON_ParseWithLength((char *)d + 8, hlen);
  CHECK(root && cJSON_GetArraySize(root) == 7);  // metadata + 2 params x 3
  cJSON *meta = entry(root, "__metadata__");
  CHECK(!strcmp(cJSON_GetStringValue(entry(meta, "step")), "42"));
  CHECK(!strcmp(cJSON_GetStringValue(entry(meta, "format")), "dhx"));
  CHECK(!strcmp(cJSON_GetStringValue(entry(entry(root, "w.adam_m"), "dtype")), "F32"));
  cJSON_Delete(root);

  // Every kind of damage is refused with a message naming the file and the problem.
  struct { void (*edit)(cJSON *); const char *want; } cases[] = {
      {e_dtype, "tensor 'w': dtype F16 (expected F32)"},
      {e_shape, "tensor 'w': shape differs from the plan's [16, 16]"},
      {e_missing, "tensor 'b.adam_v' is missing"},
      {e_extra, "tensor 'extra' is not in the plan"},
      {e_offsets, "lie outside the"},
      {e_size, "tensor 'b': 60 bytes of data, the plan's buffer has 64"},
      {e_format, "not \"dhx\""},
      {e_model, "checkpoint of model 'gpt2', but the plan trains 'toy'"},
      {e_step, "__metadata__.step is not a step count"},
  };
  const char *bad = tl_path("bad.safetensors");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rewrite_header(ck, bad, cases[i].edit);
    CHECK_FAILS(dhx_checkpoint_load(p, 0, b.base, bad, &step, err, sizeof err), err, cases[i].want);
    CHECK(!strncmp(err, bad, strlen(bad)));
  }
  for (size_t len = 0; len < n; len += (len < 600 ? 7 : 997)) {  // every truncation fails
    write_file(bad, d, len);
    CHECK_FAILS(dhx_checkpoint_load(p, 0, b.base, bad, &step, err, sizeof err), err, bad);
  }
  uint8_t *copy = malloc(n);
  memcpy(copy, d, n);
  copy[5] = 0x7F;  // a header length of terabytes
  write_file(bad, copy, n);
  CHECK_FAILS(dhx_checkpoint_load(p, 0, b.base, bad, &step, err, sizeof err), err, "header length");
  memcpy(copy, d, n);
  copy[8] = '[';
  write_file(bad, copy, n);
  CHECK_FAILS(dhx_checkpoint_load(p, 0, b.base, bad, &step, err, sizeof err), err, "not valid JSON");
  CHECK_FAILS(dhx_checkpoint_load(p, 0, b.base, tl_path("none.safetensors"), &step, err, sizeof err),
              err, "cannot open");
  // Saving into a directory that does not exist fails cleanly and leaves nothing behind.
  CHECK_FAILS(dhx_checkpoint_save(p, 0, a.base, tl_path("no/such/dir.safetensors"), 1, err,
                                  sizeof err), err, "cannot write");
  DIR *dir = opendir(tl_dir);
  for (struct dirent *e; (e = readdir(dir));) CHECK(!strstr(e->d_name, ".tmp"));
  closedir(dir);
  free(copy);
  free(d);
  dhx_rank_arena_free(&a);
  dhx_rank_arena_free(&b);
  tb_free(p);
}

// ---- schedule and init ------------------------------------------------------------------------

static bool close_to(double a, double b) { return fabs(a - b) <= 1e-12 * fmax(1, fabs(b)); }

static void test_lr_schedule_warmup_and_cosine(void) {
  dhx_plan_train t = {.lr = 1.0, .lr_min_ratio = 0.1, .warmup_steps = 10, .steps = 110,
                      .beta1 = 0.9, .beta2 = 0.95};
  CHECK(close_to(dhx_lr_at(&t, 0), 0.1));   // warm-up: lr (t+1)/warmup
  CHECK(close_to(dhx_lr_at(&t, 4), 0.5));
  CHECK(close_to(dhx_lr_at(&t, 9), 1.0));
  CHECK(close_to(dhx_lr_at(&t, 10), 1.0));  // cosine starts at lr
  CHECK(close_to(dhx_lr_at(&t, 60), 0.1 + 0.9 * 0.5));  // halfway
  CHECK(close_to(dhx_lr_at(&t, 109), 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 99.0 / 100.0))));
  for (int64_t s = 10; s < 109; s++) CHECK(dhx_lr_at(&t, s + 1) < dhx_lr_at(&t, s));
  CHECK(dhx_lr_at(&t, 500) >= 0.1 - 1e-12);  // past the plan's end: stays at the floor
  t.warmup_steps = 0;
  CHECK(close_to(dhx_lr_at(&t, 0), 1.0));
  t.lr_min_ratio = 1.0;
  CHECK(close_to(dhx_lr_at(&t, 77), 1.0));  // ratio 1: constant
  double regs[DHX_REG_COUNT] = {0};
  regs[DHX_REG_CLIP_SCALE] = 0.5;
  dhx_set_step_registers(&t, 2, regs);
  CHECK(close_to(regs[DHX_REG_BC1], 1 - 0.9 * 0.9 * 0.9) && close_to(regs[DHX_REG_BC2], 1 - pow(0.95, 3)));
  CHECK(regs[DHX_REG_CLIP_SCALE] == 1.0 && regs[DHX_REG_GRAD_NORM] == 0.0);
}

static void test_init_is_deterministic_and_normal(void) {
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double z = dhx_init_normal(1, "h.0.attn.qkv.w", i);
    sum += z;
    sq += z * z;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  printf("mean %.4f variance %.4f\n", mean, var);
  CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.02);
  CHECK(dhx_init_normal(1, "a", 5) == dhx_init_normal(1, "a", 5));
  CHECK(dhx_init_normal(1, "a", 5) != dhx_init_normal(1, "b", 5));
  CHECK(dhx_init_normal(1, "a", 5) != dhx_init_normal(2, "a", 5));
}

// ---- ZeRO shards: where a buffer's elements sit in the whole tensor --------------------------

// A buffer of `ndim` dims `shape` that is the whole tensor, as tb_buffer makes them.
static dhx_plan_buffer whole_buffer(int ndim, const int64_t *shape) {
  dhx_plan_buffer b = {.kind = DHX_BUF_PARAM, .dtype = DHX_F32, .ndim = (uint32_t)ndim,
                       .split_dim = -1, .split_groups = 1, .split_parts = 1, .shard_parts = 1};
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= (b.shape[d] = b.global_shape[d] = shape[d]);
  b.nbytes = 4 * n;
  return b;
}

// Makes b tensor-parallel slice `index` of `parts` along `dim`, in `groups` groups.
static void split(dhx_plan_buffer *b, int dim, uint32_t groups, uint32_t parts, uint32_t index) {
  b->split_dim = dim;
  b->split_groups = groups;
  b->split_parts = parts;
  b->split_index = index;
  b->shape[dim] /= parts;
  b->nbytes /= parts;
}

// Makes b ZeRO shard `index` of `parts` of its slice, C elements each.
static void shard(dhx_plan_buffer *b, uint32_t parts, uint32_t index, int64_t c) {
  b->shard_parts = parts;
  b->shard_index = index;
  b->nbytes = 4 * c;
}

// Every element of the whole tensor is held exactly once by the tensor-parallel slices and ZeRO
// shards of `b` (a template: parts and indices vary), padding aside.
static void check_covers_once(dhx_plan_buffer b, uint32_t tp, uint32_t dp) {
  int64_t whole = dhx_buffer_global_elems(&b);
  int *hits = calloc((size_t)whole, sizeof *hits);
  int64_t padding = 0;
  for (uint32_t t = 0; t < tp; t++)
    for (uint32_t z = 0; z < dp; z++) {
      b.split_index = t;
      b.shard_index = z;
      for (int64_t i = 0; i < dhx_buffer_elems(&b); i++) {
        int64_t w = dhx_buffer_whole_index(&b, i);
        CHECK(w >= -1 && w < whole);
        if (w < 0) padding++;
        else hits[w]++;
      }
    }
  for (int64_t w = 0; w < whole; w++) CHECK(hits[w] == 1);
  CHECK(padding == (int64_t)tp * dp * dhx_buffer_elems(&b) - whole);
  free(hits);
}

static void test_buffer_whole_index_maps_slices_shards_and_padding(void) {
  int64_t s35[2] = {3, 5}, s610[2] = {6, 10}, s310[2] = {3, 10}, qkv[2] = {12, 4};
  dhx_plan_buffer b = whole_buffer(2, s35);  // the whole tensor: the identity
  for (int64_t i = 0; i < 15; i++) CHECK(dhx_buffer_whole_index(&b, i) == i);
  CHECK(dhx_buffer_is_slice(&b));

  shard(&b, 1, 0, 32);  // the whole tensor followed by 17 elements of padding
  CHECK(!dhx_buffer_is_slice(&b));
  for (int64_t i = 0; i < 32; i++) CHECK(dhx_buffer_whole_index(&b, i) == (i < 15 ? i : -1));

  b = whole_buffer(2, s310);  // columns 5..9 of a [3, 10] tensor
  split(&b, 1, 1, 2, 1);
  CHECK(dhx_buffer_whole_index(&b, 0) == 5 && dhx_buffer_whole_index(&b, 4) == 9 &&
        dhx_buffer_whole_index(&b, 5) == 15 && dhx_buffer_whole_index(&b, 14) == 29);

  b = whole_buffer(2, s610);  // 60 elements in 2 shards of 32: the second holds 28 and 4 padding
  shard(&b, 2, 1, 32);
  for (int64_t i = 0; i < 32; i++) CHECK(dhx_buffer_whole_index(&b, i) == (i < 28 ? 32 + i : -1));
  check_covers_once(b, 1, 2);

  // A fused q, k, v projection [12, 4] (3 groups of 4 rows) cut into 2 tensor-parallel slices
  // of 2 rows per group, each slice (24 elements) into 2 shards of 16.
  b = whole_buffer(2, qkv);
  split(&b, 0, 3, 2, 1);
  shard(&b, 2, 0, 16);
  static const int64_t rows[4] = {2, 3, 6, 7};  // slice rows 0..3 of shard 0: rows 2, 3, 6, 7
  for (int64_t i = 0; i < 16; i++) CHECK(dhx_buffer_whole_index(&b, i) == rows[i / 4] * 4 + i % 4);
  b.shard_index = 1;  // slice rows 4, 5 (group 2): rows 10, 11, then padding
  for (int64_t i = 0; i < 16; i++) CHECK(dhx_buffer_whole_index(&b, i) == (i < 8 ? 40 + i : -1));
  check_covers_once(b, 2, 2);
  shard(&b, 3, 0, 16);  // 3 shards of 16 for 24 elements: the last is all padding
  check_covers_once(b, 2, 3);
}

// Fills every buffer of rank 0 with a NaN pattern, so that a value left unwritten shows.
static void fill_garbage(dhx_rt *rt) {
  for (uint32_t i = 0; i < rt->rank->nbuffers; i++)
    memset(dhx_rt_buffer(rt, (int32_t)i), 0xff, (size_t)rt->rank->buffers[i].nbytes);
}

// The state buffers of a plan whose parameters are "w" [7, 9] (normal), "b" [13] (ones) and
// "z" [5] (zeros), as ZeRO shard `index` of `parts` (parts 0: whole, no shard or padding;
// parts 1: whole, padded to 16 elements).
static dhx_plan *state_plan(uint32_t parts, uint32_t index) {
  static const char *names[3] = {"w", "b", "z"};
  static const dhx_init_kind inits[3] = {DHX_INIT_NORMAL, DHX_INIT_ONES, DHX_INIT_ZEROS};
  static const int64_t shapes[3][2] = {{7, 9}, {13, 1}, {5, 1}};
  dhx_plan *p = tb_new(1);
  for (int k = 0; k < 3; k++) {
    int ndim = k == 0 ? 2 : 1;
    if (parts) tb_sharded_param(p, names[k], ndim, shapes[k], inits[k], 0.5f, parts, index);
    else tb_param(p, names[k], ndim, shapes[k], inits[k], 0.5f, false);
  }
  return p;
}

// Element i of every state buffer of `part` is element whole_index(i) of the same buffer of
// `whole` (same ids), padding 0; moments too unless `fresh_moments` (then all 0).
static void check_part_of(const dhx_plan *part, const uint8_t *pa, const dhx_plan *whole,
                          const uint8_t *wa, bool fresh_moments) {
  const dhx_plan_rank *r = &part->ranks[0];
  for (uint32_t id = 0; id < r->nbuffers; id++) {
    const dhx_plan_buffer *b = &r->buffers[id];
    if (b->kind == DHX_BUF_GRAD) continue;
    const float *x = (const float *)(pa + b->offset);
    const float *w = (const float *)(wa + whole->ranks[0].buffers[id].offset);
    bool moment = b->kind != DHX_BUF_PARAM;
    for (int64_t i = 0; i < dhx_buffer_elems(b); i++) {
      int64_t at = dhx_buffer_whole_index(b, i);
      float want = at < 0 || (moment && fresh_moments) ? 0.0f : w[at];
      if (memcmp(&x[i], &want, sizeof want) != 0)
        fprintf(stderr, "'%s' element %" PRId64 " (whole %" PRId64 "): %g, want %g\n", b->name,
                i, at, (double)x[i], (double)want);
      CHECK(memcmp(&x[i], &want, sizeof want) == 0);
    }
  }
}

static void test_init_of_a_shard_matches_the_whole_init(void) {
  char err[1024];
  dhx_plan *whole = state_plan(0, 0);
  dhx_rt w;
  CHECK(dhx_rt_init(&w, whole, 0, "unused.so", 2, err, sizeof err));
  dhx_init_params(&w, 7);
  static const uint32_t layouts[][2] = {{1, 0}, {3, 0}, {3, 1}, {3, 2}, {8, 7}};
  for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++) {
    dhx_plan *p = state_plan(layouts[l][0], layouts[l][1]);
    CHECK(dhx_plan_validate(p, err, sizeof err));
    dhx_rt rt;
    CHECK(dhx_rt_init(&rt, p, 0, "unused.so", 2, err, sizeof err));
    fill_garbage(&rt);
    dhx_init_params(&rt, 7);
    for (uint32_t id = 0; id < p->ranks[0].nbuffers; id++)  // moments are not initialised
      if (p->ranks[0].buffers[id].kind != DHX_BUF_PARAM) memset(dhx_rt_buffer(&rt, (int32_t)id), 0,
                                                            (size_t)p->ranks[0].buffers[id].nbytes);
    check_part_of(p, rt.arena.base, whole, w.arena.base, true);
    dhx_rt_free(&rt);
    tb_free(p);
  }
  dhx_rt_free(&w);
  tb_free(whole);
}

static void test_checkpoint_fills_shards_and_padding(void) {
  char err[1024];
  dhx_plan *whole = state_plan(0, 0);
  dhx_rank_arena a, back;
  CHECK(dhx_rank_arena_init(&a, whole->ranks[0].arena_bytes, err, sizeof err));
  CHECK(dhx_rank_arena_init(&back, whole->ranks[0].arena_bytes, err, sizeof err));
  fill_state(whole, a.base, 1.0f);
  const char *ck = tl_path("whole.safetensors"), *again = tl_path("again.safetensors");
  CHECK(dhx_checkpoint_save(whole, 0, a.base, ck, 5, err, sizeof err));
  static const uint32_t layouts[][2] = {{1, 0}, {3, 0}, {3, 2}, {8, 7}};
  for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++) {
    dhx_plan *p = state_plan(layouts[l][0], layouts[l][1]);
    dhx_rank_arena s;
    CHECK(dhx_rank_arena_init(&s, p->ranks[0].arena_bytes, err, sizeof err));
    memset(s.base, 0xff, (size_t)p->ranks[0].arena_bytes);
    int64_t step = -1;
    CHECK(dhx_checkpoint_load(p, 0, s.base, ck, &step, err, sizeof err));
    CHECK(step == 5);
    check_part_of(p, s.base, whole, a.base, false);
    memset(s.base, 0xff, (size_t)p->ranks[0].arena_bytes);
    CHECK(dhx_checkpoint_load_weights(p, 0, s.base, ck, err, sizeof err));
    check_part_of(p, s.base, whole, a.base, true);
    if (layouts[l][0] == 1) {  // a padded whole tensor saves its elements, not its padding
      CHECK(dhx_checkpoint_load(p, 0, s.base, ck, &step, err, sizeof err));
      CHECK(dhx_checkpoint_save(p, 0, s.base, again, 6, err, sizeof err));
      CHECK(dhx_checkpoint_load(whole, 0, back.base, again, &step, err, sizeof err));
      CHECK(step == 6 && state_equal(whole, a.base, back.base));
    }
    dhx_rank_arena_free(&s);
    tb_free(p);
  }
  dhx_rank_arena_free(&a);
  dhx_rank_arena_free(&back);
  tb_free(whole);
}

// ---- pool -------------------------------------------------------------------------------------

static void mark(void *ctx, int64_t begin, int64_t end) {
  int *hits = ctx;
  for (int64_t i = begin; i < end; i++) __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

static void test_pool_covers_every_index_once(void) {
  for (int threads = 1; threads <= 4; threads++) {
    dhx_pool *pool = dhx_pool_new(threads);
    CHECK(pool && dhx_pool_threads(pool) == threads);
    for (int64_t n = 0; n < 300; n += 7) {
      int hits[300] = {0};
      dhx_pool_for(pool, n, 4, mark, hits);
      for (int64_t i = 0; i < 300; i++) CHECK(hits[i] == (i < n ? 1 : 0));
    }
    dhx_pool_free(pool);
  }
}

// ---- GEMM through the CPU backend ------------------------------------------------------------

typedef struct gemm_case {
  uint32_t ta, tb;
  int64_t m, n, k, pad, batch0, batch1;
} gemm_case;

// Stored element (row r, column c) of op(X) for a row-major X with row stride ld.
static double op_at(const float *x, bool trans, int64_t ld, int64_t r, int64_t c) {
  return trans ? x[c * ld + r] : x[r * ld + c];
}

// A plan of one GEMM per case in MICRO, operands padded by case.pad, alpha 0.5 and beta 0.25;
// ids[c] = the buffers of case c's A, B and C.
static dhx_plan *gemm_plan(const gemm_case *cases, int ncases, int32_t (*ids)[3]) {
  dhx_plan *p = tb_new(1);
  for (int c = 0; c < ncases; c++) {
    const gemm_case *g = &cases[c];
    int64_t nb = g->batch0 * g->batch1;
    int64_t arows = g->ta ? g->k : g->m, acols = (g->ta ? g->m : g->k) + g->pad;
    int64_t brows = g->tb ? g->n : g->k, bcols = (g->tb ? g->k : g->n) + g->pad;
    int64_t sa = arows * acols, sb = brows * bcols, sc = g->m * (g->n + g->pad);
    int64_t na = nb * sa, nbb = nb * sb, nc = nb * sc;
    char name[32];
    snprintf(name, sizeof name, "a%d", c);
    ids[c][0] = tb_buffer(p, name, DHX_BUF_ACT, DHX_F32, 1, &na);
    snprintf(name, sizeof name, "b%d", c);
    ids[c][1] = tb_buffer(p, name, DHX_BUF_ACT, DHX_F32, 1, &nbb);
    snprintf(name, sizeof name, "c%d", c);
    ids[c][2] = tb_buffer(p, name, DHX_BUF_ACT, DHX_F32, 1, &nc);
    dhx_plan_instr *in = tb_instr(p, DHX_PROG_MICRO, DHX_OP_GEMM, 0, "gemm");
    for (int j = 0; j < 3; j++) tb_arg_buf(in, ids[c][j], 0);
    *dhx_plan_own_gemm(p, in) = (dhx_plan_gemm){.trans_a = g->ta, .trans_b = g->tb, .m = g->m, .n = g->n,
                               .k = g->k, .lda = acols, .ldb = bcols, .ldc = g->n + g->pad,
                               .alpha = 0.5, .beta = 0.25, .batch = {g->batch0, g->batch1},
                               .stride_a = {g->batch1 * sa, sa}, .stride_b = {g->batch1 * sb, sb},
                               .stride_c = {g->batch1 * sc, sc}};
  }
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  return p;
}

// C of every case against a plain triple loop in double, from the arena before the run (c0).
static void check_gemms_against_reference(const dhx_plan *p, const dhx_rt *rt, const uint8_t *c0,
                                          int ncases, int32_t (*ids)[3]) {
  for (int c = 0; c < ncases; c++) {
    const dhx_plan_gemm *g = p->ranks[0].programs[DHX_PROG_MICRO].instrs[c].gemm;
    const float *a = dhx_rt_buffer(rt, ids[c][0]), *b = dhx_rt_buffer(rt, ids[c][1]);
    const float *cc = dhx_rt_buffer(rt, ids[c][2]);
    const float *cin = (const float *)(c0 + p->ranks[0].buffers[ids[c][2]].offset);
    for (int64_t t = 0; t < g->batch[0] * g->batch[1]; t++) {
      int64_t i0 = t / g->batch[1], i1 = t % g->batch[1];
      const float *at = a + i0 * g->stride_a[0] + i1 * g->stride_a[1];
      const float *bt = b + i0 * g->stride_b[0] + i1 * g->stride_b[1];
      int64_t co = i0 * g->stride_c[0] + i1 * g->stride_c[1];
      for (int64_t r = 0; r < g->m; r++)
        for (int64_t q = 0; q < g->n; q++) {
          double sum = 0;
          for (int64_t l = 0; l < g->k; l++)
            sum += op_at(at, g->trans_a, g->lda, r, l) * op_at(bt, g->trans_b, g->ldb, l, q);
          double want = g->alpha * sum + g->beta * cin[co + r * g->ldc + q];
          CHECK(fabs(cc[co + r * g->ldc + q] - want) <= 1e-4 * (1 + fabs(want)));
        }
    }
  }
}

// Runs MICRO of the plan on `threads` workers from a fixed arena; returns the arena after it.
// `blas_threaded`, when given, counts the shapes that ran on OpenBLAS's threads.
static uint8_t *run_gemms(const dhx_plan *p, int threads, bool check_reference, int ncases,
                          int32_t (*ids)[3], int *blas_threaded) {
  char err[1024];
  dhx_rt rt;
  CHECK(dhx_rt_init(&rt, p, 0, "unused.so", threads, err, sizeof err));
  size_t bytes = (size_t)p->ranks[0].arena_bytes;
  // Pseudo-random values, whose sums round differently in another order (a pattern of a few
  // eighths would sum exactly in any order and hide one).
  float *x = (float *)rt.arena.base;
  uint64_t v = 88172645463325252ull;
  for (size_t i = 0; i < bytes / 4; i++) {
    v ^= v << 13, v ^= v >> 7, v ^= v << 17;
    x[i] = (float)((double)(v >> 40) / (double)(1 << 24) * 2.0 - 1.0);
  }
  uint8_t *c0 = malloc(bytes);
  memcpy(c0, x, bytes);
  dhx_rt_run(&rt, DHX_PROG_MICRO);
  if (check_reference) check_gemms_against_reference(p, &rt, c0, ncases, ids);
  if (blas_threaded) *blas_threaded = dhx_blas_shapes_threaded(rt.blas);
  uint8_t *result = malloc(bytes);
  memcpy(result, rt.arena.base, bytes);
  free(c0);
  dhx_rt_free(&rt);
  return result;
}

// Row split (m >= n), column split (wide C) and batch split, with transposes, padded leading
// dimensions, alpha and beta: the results match a plain triple loop, and are bitwise the same
// with 1 and 3 worker threads.
static void test_gemm_splits_match_reference(void) {
  static const gemm_case cases[] = {
      {0, 0, 100, 70, 50, 3, 1, 1},  // rows of C split across workers
      {1, 1, 20, 130, 40, 5, 1, 1},  // columns
      {1, 0, 17, 9, 11, 2, 2, 3},    // batches
      {0, 1, 300, 64, 33, 0, 1, 1},
  };
  enum { ncases = sizeof cases / sizeof cases[0] };
  int32_t ids[ncases][3];
  dhx_plan *p = gemm_plan(cases, ncases, ids);
  uint8_t *one = run_gemms(p, 1, true, ncases, ids, NULL);
  uint8_t *three = run_gemms(p, 3, false, ncases, ids, NULL);
  CHECK(memcmp(one, three, (size_t)p->ranks[0].arena_bytes) == 0);
  free(one);
  free(three);
  tb_free(p);
}

// GEMMs large enough for OpenBLAS to thread, with depths that its threaded driver cuts into
// blocks as its single-threaded one does (128, 768) and depths it may cut otherwise (513, 1200,
// 2049): every product is bitwise the same with 1 worker and with 2, and at least one shape ran
// on OpenBLAS's threads (the others stay on the pool's split, which keeps the bits).
static void test_gemm_on_blas_threads_keeps_the_single_thread_bits(void) {
  static const gemm_case cases[] = {
      {0, 0, 512, 512, 128, 0, 1, 1}, {0, 1, 300, 700, 768, 4, 1, 1},
      {1, 0, 256, 384, 513, 0, 1, 1}, {1, 1, 384, 256, 1200, 3, 1, 1},
      {0, 0, 96, 320, 2049, 0, 1, 1},
  };
  enum { ncases = sizeof cases / sizeof cases[0] };
  int32_t ids[ncases][3];
  dhx_plan *p = gemm_plan(cases, ncases, ids);
  int threaded = -1;
  uint8_t *one = run_gemms(p, 1, false, ncases, ids, NULL);
  uint8_t *two = run_gemms(p, 2, false, ncases, ids, &threaded);
  CHECK(memcmp(one, two, (size_t)p->ranks[0].arena_bytes) == 0);
  printf("%d of %d shapes on OpenBLAS's threads\n", threaded, ncases);
  CHECK(threaded >= 1);
  free(one);
  free(two);
  tb_free(p);
}

// ---- main -------------------------------------------------------------------------------------

static const tl_test tests[] = {
    {"plan_roundtrip_preserves_every_field", test_plan_roundtrip_preserves_every_field},
    {"plan_rejects_truncated_file", test_plan_rejects_truncated_file},
    {"plan_rejects_corrupted_bytes", test_plan_rejects_corrupted_bytes},
    {"plan_validation_names_the_field", test_plan_validation_names_the_field},
    {"data_rejects_bad_shards", test_data_rejects_bad_shards},
    {"checkpoint_roundtrip_and_rejects_corruption", test_checkpoint_roundtrip_and_rejects_corruption},
    {"lr_schedule_warmup_and_cosine", test_lr_schedule_warmup_and_cosine},
    {"init_is_deterministic_and_normal", test_init_is_deterministic_and_normal},
    {"buffer_whole_index_maps_slices_shards_and_padding",
     test_buffer_whole_index_maps_slices_shards_and_padding},
    {"init_of_a_shard_matches_the_whole_init", test_init_of_a_shard_matches_the_whole_init},
    {"checkpoint_fills_shards_and_padding", test_checkpoint_fills_shards_and_padding},
    {"pool_covers_every_index_once", test_pool_covers_every_index_once},
    {"gemm_splits_match_reference", test_gemm_splits_match_reference},
    {"gemm_on_blas_threads_keeps_the_single_thread_bits",
     test_gemm_on_blas_threads_keeps_the_single_thread_bits},
};

int main(int argc, char **argv) {
  return tl_main("rt_tests", tests, sizeof tests / sizeof tests[0], argc, argv);
}
