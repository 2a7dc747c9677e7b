// memplan_tests — no two buffers that may be live at the same time share bytes:
// `memplan_tests NAME [PLAN_DIR...]`.
//
// `memplan_arenas_of_compiled_plans_have_no_live_overlap DIR...` reads each DIR/plan.bin (as
// dhxrun reads it) and runs the memory verifier on it (then, to show the verifier sees such
// plans, moves one activation onto another that is live and expects a violation). The other tests build small plans in
// memory with tests/runtime/testlib, check that the verifier accepts the sharing that is safe
// (buffers used one after the other, or in different programs; windows over persistent state),
// then break one plan at a time and expect the verifier to name both buffers, their bytes and
// the instructions that conflict.
#include "testlib.h"
#include "verify_memory.h"

static int64_t g_n = 64;  // elements of every buffer in the hand-made plans

static void check_valid(const dhx_plan *p) {
  char err[1024];
  if (!dhx_plan_validate(p, err, sizeof err)) {
    fprintf(stderr, "the test plan itself is invalid: %s\n", err);
    exit(1);
  }
}

static void expect_verified(const dhx_plan *p, const char *what) {
  char err[2048];
  check_valid(p);
  if (!dhx_plan_verify_memory(p, err, sizeof err)) {
    fprintf(stderr, "%s: expected no violation, got: %s\n", what, err);
    exit(1);
  }
  printf("ok: %s verifies\n", what);
}

// The verifier must refuse `p` with a message containing every string of `want` (NULL-ended).
static void expect_violation(const dhx_plan *p, const char *const *want) {
  char err[2048];
  check_valid(p);
  CHECK_FAILS(dhx_plan_verify_memory(p, err, sizeof err), err, want[0]);
  for (int i = 1; want[i]; i++) CHECK_FAILS(false, err, want[i]);
  printf("ok: %s\n", err);
}

static int32_t act(dhx_plan *p, const char *name) {
  return tb_buffer(p, name, DHX_BUF_ACT, DHX_F32, 1, &g_n);
}

// Gives buffer `b` the bytes of buffer `onto` (both have g_n elements).
static void share(dhx_plan *p, int32_t b, int32_t onto) {
  p->ranks[0].buffers[b].offset = p->ranks[0].buffers[onto].offset;
}

static void fill(dhx_plan *p, dhx_prog_kind prog, uint32_t stream, int32_t y, const char *note) {
  dhx_plan_instr *in = tb_kernel_instr(p, prog, stream, "fill", "pf", g_n, note);
  tb_arg_buf(in, y, 0);
  tb_arg_f64(in, 1.0);
}

// y += x: reads x, writes y.
static void axpy(dhx_plan *p, dhx_prog_kind prog, uint32_t stream, int32_t y, int32_t x,
                 const char *note) {
  dhx_plan_instr *in = tb_kernel_instr(p, prog, stream, "axpy", "ppf", g_n, note);
  tb_arg_buf(in, y, 0);
  tb_arg_buf(in, x, 0);
  tb_arg_f64(in, 0.5);
}

// ---- compiled plans ---------------------------------------------------------------------------

// Puts two activations that one MICRO instruction uses in the same bytes on rank 0: the
// verifier must see the accesses of compiled plans (kernel descriptors, GEMMs), not only
// hand-made ones.
static void expect_overlap_caught(dhx_plan *p, const char *path) {
  dhx_plan_rank *r = &p->ranks[0];
  const dhx_plan_program *micro = &r->programs[DHX_PROG_MICRO];
  for (uint32_t i = 0; i < micro->ninstrs; i++) {
    const dhx_plan_instr *in = &micro->instrs[i];
    int32_t first = -1;
    for (uint32_t j = 0; j < in->nargs; j++) {
      int32_t b = in->args[j].buf;
      if (in->args[j].kind != DHX_ARG_BUF || r->buffers[b].kind != DHX_BUF_ACT) continue;
      if (first < 0) {
        first = b;
      } else if (b != first) {
        int64_t offset = r->buffers[b].offset;
        r->buffers[b].offset = r->buffers[first].offset;
        char err[2048];
        CHECK_FAILS(dhx_plan_verify_memory(p, err, sizeof err), err, r->buffers[b].name);
        printf("ok: %s with '%s' moved onto '%s' is refused\n", path, r->buffers[b].name,
               r->buffers[first].name);
        r->buffers[b].offset = offset;
        return;
      }
    }
  }
  fprintf(stderr, "%s: no MICRO instruction uses two activations\n", path);
  exit(1);
}

static void compiled_plans(int ndirs, char **dirs) {
  CHECK(ndirs > 0);
  for (int i = 0; i < ndirs; i++) {
    char path[4096], err[2048];
    snprintf(path, sizeof path, "%s/plan.bin", dirs[i]);
    dhx_plan p;
    if (!dhx_plan_read(path, &p, err, sizeof err)) {
      fprintf(stderr, "%s: %s\n", path, err);
      exit(1);
    }
    if (!dhx_plan_verify_memory(&p, err, sizeof err)) {
      fprintf(stderr, "%s: %s\n", path, err);
      exit(1);
    }
    uint32_t nbuf = p.ranks[0].nbuffers;
    printf("ok: %s (%u ranks, %u buffers per rank) has no live overlap\n", path, p.nranks, nbuf);
    expect_overlap_caught(&p, path);
    dhx_plan_free(&p);
  }
}

// ---- one stream -------------------------------------------------------------------------------

typedef struct chain {
  dhx_plan *p;
  int32_t a, b, c, out;
} chain;

// MICRO on stream 0: a = 1; b = 1; b += a/2; c = 1; out = 1; out += b/2; out += c/2.
// a dies at "b += a", b at "out += b"; c is written after both.
static chain one_stream_chain(void) {
  chain k = {.p = tb_new(1)};
  k.a = act(k.p, "a");
  k.b = act(k.p, "b");
  k.c = act(k.p, "c");
  k.out = act(k.p, "out");
  fill(k.p, DHX_PROG_MICRO, 0, k.a, "a = 1");
  fill(k.p, DHX_PROG_MICRO, 0, k.b, "b = 1");
  axpy(k.p, DHX_PROG_MICRO, 0, k.b, k.a, "b += a/2");
  fill(k.p, DHX_PROG_MICRO, 0, k.c, "c = 1");
  fill(k.p, DHX_PROG_MICRO, 0, k.out, "out = 1");
  axpy(k.p, DHX_PROG_MICRO, 0, k.out, k.b, "out += b/2");
  axpy(k.p, DHX_PROG_MICRO, 0, k.out, k.c, "out += c/2");
  return k;
}

static void catches_overlap_of_live_buffers(void) {
  chain k = one_stream_chain();
  expect_verified(k.p, "a chain with every buffer in its own bytes");
  share(k.p, k.c, k.a);  // c starts with a write after a's last use
  expect_verified(k.p, "c in the bytes of a, which is dead by then");
  tb_free(k.p);

  k = one_stream_chain();  // a act of EVAL may take the bytes of a live MICRO act
  int32_t e = act(k.p, "eval.e");
  fill(k.p, DHX_PROG_EVAL, 0, e, "e = 1");
  share(k.p, e, k.b);
  expect_verified(k.p, "an EVAL activation in the bytes of a MICRO activation");
  tb_free(k.p);

  k = one_stream_chain();
  share(k.p, k.b, k.a);  // "b += a/2" reads a and writes b: both live
  expect_violation(k.p, (const char *const[]){"rank 0: buffers 'a' (act, bytes [0, 256))",
                                              "'b' (act, bytes [0, 256))", "while both may be live",
                                              "MICRO instruction 1 'b = 1' (kernel, stream 0) and "
                                              "MICRO instruction 2 'b += a/2'", NULL});
  tb_free(k.p);

  k = one_stream_chain();
  share(k.p, k.c, k.b);  // c is written while b is still to be read by "out += b/2"
  expect_violation(k.p, (const char *const[]){"'b' (act, bytes [256, 512))",
                                              "'c' (act, bytes [256, 512))", "while both may be live",
                                              "MICRO instruction 3 'c = 1'",
                                              "MICRO instruction 5 'out += b/2'",
                                              "wrong order", NULL});
  tb_free(k.p);

  k = one_stream_chain();  // c's first write reads a from the same bytes
  dhx_plan_instr *c_first = &k.p->ranks[0].programs[DHX_PROG_MICRO].instrs[3];
  c_first->kernel = tb_kernel(k.p, "axpy", "ppf");
  c_first->nargs = 0;
  tb_arg_buf(c_first, k.c, 0);
  tb_arg_buf(c_first, k.a, 0);
  tb_arg_f64(c_first, 0.5);
  c_first->note = "c += a/2";
  share(k.p, k.c, k.a);
  expect_violation(k.p, (const char *const[]){"'a' (act", "'c' (act", "'c += a/2'",
                                              "(kernel, stream 0) uses both", NULL});
  tb_free(k.p);

  k = one_stream_chain();  // c takes a's bytes, but its first use reads them
  dhx_plan_instr *c_fill = &k.p->ranks[0].programs[DHX_PROG_MICRO].instrs[3];
  c_fill->kernel = tb_kernel(k.p, "axpy", "ppf");
  c_fill->nargs = 0;
  tb_arg_buf(c_fill, k.b, 0);
  tb_arg_buf(c_fill, k.c, 0);
  tb_arg_f64(c_fill, 0.5);
  c_fill->note = "b += c/2";
  share(k.p, k.c, k.a);
  expect_violation(k.p, (const char *const[]){"'a' (act", "'c' (act",
                                              "MICRO reads it before writing it", NULL});
  tb_free(k.p);
}

// ---- two streams ------------------------------------------------------------------------------

typedef struct two_streams {
  dhx_plan *p;
  int32_t t, prod, out;
} two_streams;

// Stream 0 uses t and is done with it; stream 1 produces `prod` into t's bytes and stream 0
// consumes it:
//   s0: t = 1; out = 1; out += t/2; RECORD e0   s1: WAIT e0; prod = 1; RECORD e1
//   s0: WAIT e1; out += prod/2
// Without e0 (`with_wait` false) nothing keeps "prod = 1" after "out += t/2".
static two_streams producer_consumer(bool with_wait) {
  two_streams k = {.p = tb_new(1)};
  k.t = act(k.p, "t");
  k.prod = act(k.p, "prod");
  k.out = act(k.p, "out");
  fill(k.p, DHX_PROG_MICRO, 0, k.t, "t = 1");
  fill(k.p, DHX_PROG_MICRO, 0, k.out, "out = 1");
  axpy(k.p, DHX_PROG_MICRO, 0, k.out, k.t, "out += t/2");
  if (with_wait) tb_event(k.p, DHX_PROG_MICRO, 0, 1, "t used");
  fill(k.p, DHX_PROG_MICRO, 1, k.prod, "prod = 1");
  tb_event(k.p, DHX_PROG_MICRO, 1, 0, "prod ready");
  axpy(k.p, DHX_PROG_MICRO, 0, k.out, k.prod, "out += prod/2");
  share(k.p, k.prod, k.t);
  return k;
}

static void catches_a_missing_event_between_streams(void) {
  two_streams k = producer_consumer(true);
  expect_verified(k.p, "a producer on stream 1 ordered after the last use of the bytes it takes");
  tb_free(k.p);

  k = producer_consumer(false);
  expect_violation(k.p, (const char *const[]){"'t' (act, bytes [0, 256))",
                                              "'prod' (act, bytes [0, 256))",
                                              "while both may be live",
                                              "'out += t/2' (kernel, stream 0)",
                                              "'prod = 1' (kernel, stream 1)",
                                              "may run at the same time", NULL});
  tb_free(k.p);

  // Without the consumer's WAIT, "out += prod/2" may read prod before "prod = 1" writes it,
  // so prod may read what t left in their bytes (the plan still validates: no WAIT, no hang).
  k = producer_consumer(true);
  dhx_plan_program *micro = &k.p->ranks[0].programs[DHX_PROG_MICRO];
  for (uint32_t i = 0; i < micro->ninstrs; i++)
    if (micro->instrs[i].op == DHX_OP_WAIT && micro->instrs[i].stream == 0) {
      memmove(&micro->instrs[i], &micro->instrs[i + 1],
              sizeof(dhx_plan_instr) * (micro->ninstrs - i - 1));
      micro->ninstrs--;
      break;
    }
  expect_violation(k.p, (const char *const[]){"'t' (act", "'prod' (act",
                                              "MICRO reads it before writing it",
                                              "'out += prod/2' (kernel, stream 0)", NULL});
  tb_free(k.p);
}

// ---- persistent buffers -----------------------------------------------------------------------

typedef struct stateful {
  dhx_plan *p;
  int32_t tokens, targets, losses, w, x, window;
} stateful;

// A parameter w (with gradient and moments), the inputs and losses, an activation x of MICRO,
// and "grads[all]", a window over the gradient that BEGIN zeroes.
static stateful stateful_plan(void) {
  stateful k = {.p = tb_new(1)};
  int64_t bt[2] = {k.p->train.micro_batch, k.p->train.seq}, rows = bt[0] * bt[1];
  k.tokens = tb_buffer(k.p, "tokens", DHX_BUF_TOKENS, DHX_I32, 2, bt);
  k.targets = tb_buffer(k.p, "targets", DHX_BUF_TARGETS, DHX_I32, 2, bt);
  k.losses = tb_buffer(k.p, "losses", DHX_BUF_LOSSES, DHX_F32, 1, &rows);
  k.w = tb_param(k.p, "w", 1, &g_n, DHX_INIT_ONES, 0, true);
  k.x = act(k.p, "x");
  int32_t grad = k.p->ranks[0].buffers[k.w].grad;
  k.window = tb_buffer(k.p, "grads[all]", DHX_BUF_SCRATCH, DHX_F32, 1, &g_n);
  share(k.p, k.window, grad);
  dhx_plan_instr *z = tb_instr(k.p, DHX_PROG_BEGIN, DHX_OP_ZERO, 0, "zero all gradients");
  tb_arg_buf(z, k.window, 0);
  tb_arg_i64(z, g_n * 4);
  fill(k.p, DHX_PROG_MICRO, 0, k.x, "x = 1");
  axpy(k.p, DHX_PROG_MICRO, 0, grad, k.x, "grad.w += x/2");
  return k;
}

static void catches_persistent_buffers_sharing_bytes(void) {
  stateful k = stateful_plan();
  expect_verified(k.p, "a window over the gradients");
  tb_free(k.p);

  k = stateful_plan();  // x is dead outside MICRO, but w is read by every program
  share(k.p, k.x, k.w);
  expect_violation(k.p, (const char *const[]){"'w' (param, bytes [192, 448))",
                                              "'x' (act, bytes [192, 448))",
                                              "'w' must keep them to itself (param buffers persist",
                                              "MICRO instruction 0 'x = 1'", NULL});
  tb_free(k.p);

  k = stateful_plan();  // the moments of w on its gradient
  const dhx_plan_buffer *w = &k.p->ranks[0].buffers[k.w];
  share(k.p, w->opt_m, w->grad);
  expect_violation(k.p, (const char *const[]){"'grad.w' (grad", "'adam_m.w' (opt_m",
                                              "persist across programs", NULL});
  tb_free(k.p);

  k = stateful_plan();  // the losses on the targets
  k.p->ranks[0].buffers[k.losses].offset = k.p->ranks[0].buffers[k.targets].offset;
  expect_violation(k.p, (const char *const[]){"'targets' (targets", "'losses' (losses",
                                              "persist across programs", NULL});
  tb_free(k.p);

  k = stateful_plan();  // a window that also covers an activation is no window
  k.p->ranks[0].buffers[k.x].offset = k.p->ranks[0].buffers[k.window].offset + 128;
  expect_violation(k.p, (const char *const[]){"'grads[all]' (scratch", "must keep them to itself",
                                              NULL});
  tb_free(k.p);

  k = stateful_plan();  // an activation both programs use keeps its bytes across them
  int32_t e = act(k.p, "eval.e");
  fill(k.p, DHX_PROG_EVAL, 0, e, "e = 1");
  axpy(k.p, DHX_PROG_EVAL, 0, e, k.x, "e += x/2");
  int32_t y = act(k.p, "y");
  fill(k.p, DHX_PROG_STEP, 0, y, "y = 1");
  share(k.p, y, k.x);
  expect_violation(k.p, (const char *const[]){"'x' (act", "'y' (act",
                                              "more than one program uses it", NULL});
  tb_free(k.p);
}

// Collectives and transfers are classified per argument: a reduce-scatter reads its input and
// only writes its output, an all-gather reads its chunk. In the collectives plan at 2 ranks
// (STEP stream 0: x -> part by reduce-scatter, part -> whole by all-gather), a buffer zeroed on
// rank 0 after the all-gather may take part's bytes (part starts with a write and is done by
// then), but not x's (x carries its value into the program).
static dhx_plan *collectives_then_zero(int32_t *late, collectives_bufs *b) {
  dhx_plan *p = collectives_plan(2, 2 * g_n, 3, 2, b);
  *late = tb_buffer(p, "late", DHX_BUF_ACT, DHX_F32, 1, &g_n);
  dhx_plan_instr *in = tb_rank_instr(p, 0, DHX_PROG_STEP, DHX_OP_ZERO, 0, "zero late");
  tb_arg_buf(in, *late, 0);
  tb_arg_i64(in, g_n * 4);
  return p;
}

static void classifies_collectives_and_transfers(void) {
  collectives_bufs b;
  int32_t late;
  dhx_plan *p = collectives_then_zero(&late, &b);
  share(p, late, b.part);
  expect_verified(p, "a buffer written after the all-gather over the reduce-scatter's output");
  tb_free(p);
  p = collectives_then_zero(&late, &b);
  share(p, late, b.x);
  expect_violation(p, (const char *const[]){"'late'", "'x'", NULL});
  tb_free(p);
}

// GRAD_NORM reads its partials and writes its clip scale and norm. STEP: x = 1; y = 1;
// y += x/2; GRAD_NORM(scale, norm into `out` from the partials y); z = 1; z += out/2. `out` may
// take x's bytes (x is done, and out starts with GRAD_NORM's write), not y's (GRAD_NORM reads
// y while it writes out).
static dhx_plan *grad_norm_plan(int32_t *x, int32_t *y, int32_t *out) {
  dhx_plan *p = tb_new(1);
  *x = act(p, "x"), *y = act(p, "y"), *out = act(p, "out");
  int32_t z = act(p, "z");
  fill(p, DHX_PROG_STEP, 0, *x, "x = 1");
  fill(p, DHX_PROG_STEP, 0, *y, "y = 1");
  axpy(p, DHX_PROG_STEP, 0, *y, *x, "y += x/2");
  dhx_plan_instr *in = tb_instr(p, DHX_PROG_STEP, DHX_OP_GRAD_NORM, 0, "norm of y");
  in->kernel = tb_kernel(p, "grad_norm_f32", "pppid");
  in->n = 1;
  tb_arg_buf(in, *out, 0);
  tb_arg_buf(in, *out, 4);
  tb_arg_buf(in, *y, 0);
  tb_arg_i64(in, g_n);
  tb_arg_f64(in, 1.0);
  fill(p, DHX_PROG_STEP, 0, z, "z = 1");
  axpy(p, DHX_PROG_STEP, 0, z, *out, "z += out/2");
  return p;
}

static void classifies_grad_norm(void) {
  int32_t x, y, out;
  dhx_plan *p = grad_norm_plan(&x, &y, &out);
  share(p, out, x);
  expect_verified(p, "the gradient norm's output in the bytes of a buffer done before it");
  tb_free(p);
  p = grad_norm_plan(&x, &y, &out);
  share(p, out, y);
  expect_violation(p, (const char *const[]){"'y' (act", "'out' (act", "while both may be live",
                                            "STEP instruction 3 'norm of y'", NULL});
  tb_free(p);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: memplan_tests NAME [PLAN_DIR...]\n");
    return 2;
  }
  const char *t = argv[1];
  if (strcmp(t, "memplan_arenas_of_compiled_plans_have_no_live_overlap") == 0)
    compiled_plans(argc - 2, argv + 2);
  else if (strcmp(t, "memplan_verifier_catches_overlap_of_live_buffers") == 0)
    catches_overlap_of_live_buffers();
  else if (strcmp(t, "memplan_verifier_catches_a_missing_event_between_streams") == 0)
    catches_a_missing_event_between_streams();
  else if (strcmp(t, "memplan_verifier_catches_persistent_buffers_sharing_bytes") == 0)
    catches_persistent_buffers_sharing_bytes();
  else if (strcmp(t, "memplan_verifier_classifies_collectives_and_transfers") == 0)
    classifies_collectives_and_transfers();
  else if (strcmp(t, "memplan_verifier_classifies_grad_norm") == 0)
    classifies_grad_norm();
  else {
    fprintf(stderr, "unknown test %s\n", t);
    return 2;
  }
  return 0;
}
