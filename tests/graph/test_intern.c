// The interned fused specs, GEMM descriptions and notes (compiler/ir/intern.c): equal values
// share one copy whatever their unused table entries hold, values that differ in a bit do not,
// a note keeps what a plan instruction's note holds, and threads interning at once agree.
#include <pthread.h>
#include <string.h>

#include "intern.h"
#include "testlib.h"

// out = in0 * 2 + in1[i % 8]: two loads, a constant, a multiply, an add.
static dhx_ew_spec scaled_bias(double scale) {
  dhx_ew_spec s;
  memset(&s, 0, sizeof s);
  s.nin = 2;
  s.nout = 1;
  s.in_mode[1] = DHX_EW_MOD;
  s.in_mod[1] = 8;
  s.nconsts = 1;
  s.consts[0] = scale;
  dhx_ew_node nodes[] = {{DHX_EW_LOAD, 0, 0}, {DHX_EW_CONST, 0, 0}, {DHX_EW_MUL, 0, 1},
                         {DHX_EW_LOAD, 1, 0}, {DHX_EW_ADD, 2, 3}};
  s.nnodes = 5;
  memcpy(s.nodes, nodes, sizeof nodes);
  s.out_node[0] = 4;
  return s;
}

static void equal_specs_share_one_copy(void) {
  dhx_ew_spec a = scaled_bias(2.0), b = scaled_bias(2.0);
  b.nodes[7].op = DHX_EW_EXP;  // past nnodes
  b.consts[5] = 3.0;           // past nconsts
  b.out_node[3] = 2;           // past nout
  const dhx_ew_spec *pa = dhx_intern_ew(&a), *pb = dhx_intern_ew(&b);
  CHECK(pa == pb);
  CHECK(pa != &a && memcmp(pa->nodes, a.nodes, 5 * sizeof *a.nodes) == 0);
  CHECK(pa->nodes[7].op == 0 && pa->consts[5] == 0.0);  // the stored copy keeps only what is used
  dhx_ew_spec c = scaled_bias(-0.0), d = scaled_bias(0.0);
  CHECK(dhx_intern_ew(&c) != dhx_intern_ew(&d));        // -0 is not 0
  CHECK(dhx_intern_ew(&c) == dhx_intern_ew(&c));
  dhx_ew_spec e = scaled_bias(2.0);
  e.in_mod[1] = 16;
  CHECK(dhx_intern_ew(&e) != pa);
  dhx_ew_spec f = scaled_bias(2.0);
  f.out_accumulate[0] = 1;
  CHECK(dhx_intern_ew(&f) != pa);
}

static dhx_plan_gemm gemm_of(int64_t m, double beta) {
  return (dhx_plan_gemm){.m = m, .n = 8, .k = 8, .lda = 8, .ldb = 8, .ldc = 8, .alpha = 1.0,
                         .beta = beta, .batch = {1, 1}};
}

static void equal_gemms_share_one_copy(void) {
  dhx_plan_gemm a = gemm_of(4, 0.0), b = gemm_of(4, 0.0);
  const dhx_plan_gemm *pa = dhx_intern_gemm(&a);
  CHECK(pa == dhx_intern_gemm(&b) && pa->m == 4 && pa->batch[1] == 1);
  b.beta = -0.0;
  CHECK(dhx_intern_gemm(&b) != pa);
  b = a;
  b.stride_c[1] = 64;
  CHECK(dhx_intern_gemm(&b) != pa);
  b = a;
  b.epilogue = DHX_GEMM_BIAS;
  CHECK(dhx_intern_gemm(&b) != pa);
}

static void notes_are_cut_where_a_plan_cuts_them(void) {
  char a[64] = "h.0.attn: softmax fwd", b[64] = "h.0.attn: softmax fwd";
  const char *pa = dhx_intern_note(a);
  CHECK(pa == dhx_intern_note(b) && pa != a && strcmp(pa, a) == 0);
  CHECK(dhx_intern_note("h.0.attn: softmax bwd") != pa);
  CHECK(strcmp(dhx_intern_note(NULL), "") == 0 && dhx_intern_note(NULL) == dhx_intern_note(""));
  char longer[200];
  memset(longer, 'x', sizeof longer - 1);
  longer[sizeof longer - 1] = 0;
  const char *cut = dhx_intern_note(longer);
  CHECK(strlen(cut) == DHX_NAME_MAX - 1);
  longer[DHX_NAME_MAX - 1] = 0;  // the same first DHX_NAME_MAX - 1 bytes: the same note
  CHECK(dhx_intern_note(longer) == cut);
}

#define THREADS 4
#define PER_THREAD 500

typedef struct worker {
  int id;
  const dhx_plan_gemm *got[PER_THREAD];
} worker;

// Each thread interns the same PER_THREAD GEMMs, in an order of its own.
static void *intern_many(void *arg) {
  worker *w = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    int k = w->id % 2 ? PER_THREAD - 1 - i : i;  // forwards or backwards
    dhx_plan_gemm g = gemm_of(1000 + k, 1.0);
    w->got[k] = dhx_intern_gemm(&g);
  }
  return NULL;
}

static void threads_interning_at_once_agree(void) {
  int before = dhx_intern_count();
  static worker ws[THREADS];
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    ws[i].id = i;
    CHECK(pthread_create(&t[i], NULL, intern_many, &ws[i]) == 0);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  CHECK(dhx_intern_count() == before + PER_THREAD);
  for (int k = 0; k < PER_THREAD; k++) {
    CHECK(ws[0].got[k]->m == 1000 + k);
    for (int i = 1; i < THREADS; i++) CHECK(ws[i].got[k] == ws[0].got[k]);
  }
}

int main(int argc, char **argv) {
  static const tl_test tests[] = {
      {"intern_equal_fused_specs_share_one_copy", equal_specs_share_one_copy},
      {"intern_equal_gemms_share_one_copy", equal_gemms_share_one_copy},
      {"intern_notes_are_cut_where_a_plan_cuts_them", notes_are_cut_where_a_plan_cuts_them},
      {"intern_threads_interning_at_once_agree", threads_interning_at_once_agree},
  };
  return tl_main("test_intern", tests, sizeof tests / sizeof tests[0], argc, argv);
}
