// cuda_host_tests.c — the CUDA backend's host side (runtime/exec_cuda.c) on plans dhxc wrote,
// without a GPU.
//   marshal PLAN_DIR   every kernel instruction's launch: a device address per pointer (arena +
//                      buffer offset + byte offset), the i64 and f32/f64 values (registers
//                      read), n last, ceil(n · threads per index / 256) blocks of 256: a warp
//                      (32 threads) per row for the row kernels, which the plan has
//   order PLAN_DIR     the issue order of every program: each instruction once, each stream's
//                      in order, every WAIT after a RECORD of its event
//   record PLAN_DIR LOG  with the recording driver and cuBLASLt (tests/gpu/recording_*.c): open,
//                      run BEGIN and MICRO, and check the calls in LOG against the plan (module,
//                      functions, arena, one launch per kernel with its grid and first argument,
//                      one memset per ZERO, events, GEMM descriptors); then STEP of the
//                      single-rank plan: the grad_norm kernel's launch for GRAD_NORM, and
//                      AdamW launches that read the clip scale where it wrote it
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_cuda.h"
#include "gpu_test.h"


#define ARENA 0x7000000000ull

static void load_plan(const char *dir, dhx_plan *plan) {
  char path[1024], err[1024];
  snprintf(path, sizeof path, "%s/plan.bin", dir);
  if (!dhx_plan_read(path, plan, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

static void test_marshal(const dhx_plan *plan) {
  double regs[DHX_REG_COUNT];
  for (int r = 0; r < DHX_REG_COUNT; r++) regs[r] = 0.25 * (r + 1);
  int launches = 0, warp_launches = 0, wide_launches = 0;
  for (uint32_t rk = 0; rk < plan->nranks; rk++) {
    const dhx_plan_rank *rank = &plan->ranks[rk];
    for (int p = 0; p < DHX_PROG_COUNT; p++)
      for (uint32_t i = 0; i < rank->programs[p].ninstrs; i++) {
        const dhx_plan_instr *in = &rank->programs[p].instrs[i];
        if (in->op != DHX_OP_KERNEL && in->op != DHX_OP_GRAD_NORM) continue;
        const dhx_plan_kernel *k = &plan->kernels[in->kernel];
        dhx_cuda_launch l;
        dhx_cuda_marshal(plan, rank, in, ARENA, regs, 0, &l);
        launches++;
        uint32_t tpi = k->threads_per_index, ipt = k->indices_per_thread;
        warp_launches += tpi == 32;
        wide_launches += ipt == 4;
        CHECK(tpi == 1 || tpi == 32, "%s: %u threads per index", k->name, tpi);
        CHECK(ipt == 1 || (ipt == 4 && tpi == 1), "%s: %u indices per thread", k->name, ipt);
        CHECK(l.nparams == k->nargs + 1 && l.block == 256 &&
              l.grid == (uint32_t)(((in->n + ipt - 1) / ipt * tpi + 255) / 256),
              "%s: %u params, grid %u block %u for n = %" PRId64 " at %u threads per index, %u "
              "indices per thread", k->name, l.nparams, l.grid, l.block, in->n, tpi, ipt);
        dhx_cuda_launch capped;
        dhx_cuda_marshal(plan, rank, in, ARENA, regs, 3, &capped);
        CHECK(capped.grid == (l.grid < 3 ? l.grid : 3), "%s: grid %u with a cap of 3 blocks "
              "(%u uncapped)", k->name, capped.grid, l.grid);
        for (uint32_t j = 0; j < k->nargs; j++) {
          const dhx_plan_arg *a = &in->args[j];
          CHECK(l.params[j] == &l.slots[j], "%s: parameter %u does not point at its slot", k->name, j);
          uint64_t want = 0;
          if (k->arg_types[j] == DHX_KARG_PTR) {
            want = ARENA + (uint64_t)rank->buffers[a->buf].offset + (uint64_t)a->i;
          } else if (k->arg_types[j] == DHX_KARG_I64) {
            int64_t v = a->kind == DHX_ARG_REG ? (int64_t)regs[a->i] : a->i;
            memcpy(&want, &v, sizeof v);
          } else if (k->arg_types[j] == DHX_KARG_F32) {
            float v = (float)(a->kind == DHX_ARG_REG ? regs[a->i] : a->f);
            memcpy(&want, &v, sizeof v);
          } else {
            double v = a->kind == DHX_ARG_REG ? regs[a->i] : a->f;
            memcpy(&want, &v, sizeof v);
          }
          CHECK(l.slots[j] == want, "%s argument %u: %" PRIx64 ", expected %" PRIx64, k->name, j,
                l.slots[j], want);
        }
        int64_t n;
        memcpy(&n, &l.slots[k->nargs], sizeof n);
        CHECK(n == in->n, "%s: the last parameter is %" PRId64 ", not n = %" PRId64, k->name, n,
              in->n);
      }
  }
  CHECK(launches > 0, "the plan has no kernel instructions");
  // A compiled training plan has layer norms, softmax and the loss: warp-per-row launches.
  CHECK(warp_launches > 0 && warp_launches < launches, "%d of %d launches are warp-per-row",
        warp_launches, launches);
  CHECK(wide_launches > 0 && wide_launches < launches, "%d of %d launches are wide",
        wide_launches, launches);
  printf("%d launches marshalled (%d a warp per row, %d wide)\n", launches, warp_launches,
         wide_launches);
}

static void test_order(const dhx_plan *plan) {
  int programs = 0;
  for (uint32_t rk = 0; rk < plan->nranks; rk++)
    for (int p = 0; p < DHX_PROG_COUNT; p++) {
      const dhx_plan_program *prog = &plan->ranks[rk].programs[p];
      uint32_t *order = malloc(sizeof(uint32_t) * (prog->ninstrs + 1));
      uint8_t *seen = calloc(prog->ninstrs + 1, 1), *rec = calloc(prog->nevents + 1, 1);
      CHECK(dhx_cuda_issue_order(prog, order), "rank %u program %d: no issue order", rk, p);
      uint32_t last[DHX_MAX_STREAMS];
      for (int s = 0; s < DHX_MAX_STREAMS; s++) last[s] = UINT32_MAX;
      for (uint32_t i = 0; i < prog->ninstrs; i++) {
        uint32_t x = order[i];
        const dhx_plan_instr *in = &prog->instrs[x];
        CHECK(x < prog->ninstrs && !seen[x], "rank %u program %d: instruction %u twice", rk, p, x);
        seen[x] = 1;
        CHECK(last[in->stream] == UINT32_MAX || last[in->stream] < x, "rank %u program %d: "
              "stream %u out of order at %u", rk, p, in->stream, x);
        last[in->stream] = x;
        if (dhx_instr_records(in)) rec[in->event] = 1;  // a RECORD, or a deferred collective
        if (in->op == DHX_OP_WAIT)
          CHECK(rec[in->event], "rank %u program %d: WAIT %u issued before a RECORD of event %d",
                rk, p, x, in->event);
      }
      programs += prog->nstreams > 1;
      free(order);
      free(seen);
      free(rec);
    }
  printf("%d programs with several streams ordered\n", programs);
}

// How many lines of the log begin with `prefix`.
static int count_lines(const char *log, const char *prefix) {
  int n = 0;
  size_t len = strlen(prefix);
  for (const char *l = log; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, prefix, len) == 0) n++;
  return n;
}

// The i-th line beginning with prefix (NULL when there are fewer).
static const char *nth_line(const char *log, const char *prefix, int i) {
  size_t len = strlen(prefix);
  for (const char *l = log; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, prefix, len) == 0 && i-- == 0) return l;
  return NULL;
}

// The calls of one stretch of the log against programs [first, last] of rank 0 in issue order:
// one launch per kernel instruction (GRAD_NORM: its kernel, one thread) with its grid and
// first argument, one memset per ZERO, events, GEMM descriptors; and no other calls of those
// kinds. AdamW launches read the clip scale GRAD_NORM writes (their last pointer argument).
static void check_calls(const char *log, const dhx_plan *plan, int first, int last,
                        const char *what) {
  const dhx_plan_rank *rank = &plan->ranks[0];
  const uint64_t arena = 0x100000000ull;
  char want[256];
  int launches = 0, zeros = 0, records = 0, waits = 0, matmuls = 0, norms = 0, adamws = 0;
  int bf16_gemms = 0, epilogues = 0;
  uint64_t scale_at = 0;  // where GRAD_NORM put the clip scale
  for (int p = first; p <= last; p++) {
    const dhx_plan_program *prog = &rank->programs[p];
    uint32_t *order = malloc(sizeof(uint32_t) * (prog->ninstrs + 1));
    dhx_cuda_issue_order(prog, order);
    for (uint32_t i = 0; i < prog->ninstrs; i++) {
      const dhx_plan_instr *in = &prog->instrs[order[i]];
      bool kernel = (in->op == DHX_OP_KERNEL || in->op == DHX_OP_GRAD_NORM) && in->n > 0;
      if (kernel) {
        const char *l = nth_line(log, "cuLaunchKernel ", launches++);
        uint64_t a0 = arena + (uint64_t)rank->buffers[in->args[0].buf].offset +
                      (uint64_t)in->args[0].i;
        snprintf(want, sizeof want, "cuLaunchKernel %s grid=%" PRId64 ",1,1 block=256,1,1 "
                 "shared=0 stream=%u arg0=%" PRIx64 " extra=0\n", plan->kernels[in->kernel].name,
                 (int64_t)dhx_cuda_grid(in->n, plan->kernels[in->kernel].threads_per_index,
                                        plan->kernels[in->kernel].indices_per_thread, 0),
                 in->stream + 1, a0);
        CHECK(l && strncmp(l, want, strlen(want)) == 0, "%s launch %d: %.*s, expected %s", what,
              launches - 1, l ? (int)strcspn(l, "\n") : 4, l ? l : "none", want);
      }
      if (in->op == DHX_OP_GRAD_NORM) {
        CHECK(in->n == 1 && strcmp(plan->kernels[in->kernel].name, "grad_norm_f32") == 0,
              "%s: GRAD_NORM launches %s over n = %" PRId64, what, plan->kernels[in->kernel].name,
              in->n);
        scale_at = arena + (uint64_t)rank->buffers[in->args[0].buf].offset + (uint64_t)in->args[0].i;
        norms++;
      } else if (kernel && strcmp(plan->kernels[in->kernel].name, "adamw_f32") == 0) {
        double regs[DHX_REG_COUNT] = {0};
        dhx_cuda_launch l;
        dhx_cuda_marshal(plan, rank, in, arena, regs, 0, &l);
        CHECK(scale_at != 0 && l.slots[11] == scale_at, "%s: AdamW '%s' reads its clip scale at "
              "%" PRIx64 ", GRAD_NORM wrote it at %" PRIx64, what, dhx_instr_note(in), l.slots[11], scale_at);
        adamws++;
      } else if (in->op == DHX_OP_ZERO) {
        zeros++;
      } else if (in->op == DHX_OP_RECORD) {
        records++;
      } else if (in->op == DHX_OP_WAIT) {
        waits++;
      } else if (in->op == DHX_OP_GEMM) {
        const dhx_plan_gemm *g = in->gemm;
        for (int64_t b = 0; b < g->batch[0]; b++) {
          const char *l = nth_line(log, "cublasLtMatmul ", matmuls++);
          snprintf(want, sizeof want, "cublasLtMatmul ta=%u tb=%u A=%" PRId64 "x%" PRId64
                   "/%" PRId64, g->trans_b, g->trans_a, g->trans_b ? g->k : g->n,
                   g->trans_b ? g->n : g->k, g->ldb);
          CHECK(l && strncmp(l, want, strlen(want)) == 0, "GEMM '%s': %.*s, expected %s",
                dhx_instr_note(in), l ? (int)strcspn(l, "\n") : 4, l ? l : "none", want);
          snprintf(want, sizeof want, " C=%" PRId64 "x%" PRId64 "/%" PRId64, g->n, g->m, g->ldc);
          CHECK(l && strstr(l, want) && strstr(l, want) < strchr(l, '\n'), "GEMM '%s': C is "
                "not %s", dhx_instr_note(in), want);
          // Each layout's type is its buffer's (cuBLASLt's "A" is the plan's B): 0 f32, 14 bf16.
          int types[3];
          for (int j = 0; j < 3; j++)
            types[j] = rank->buffers[in->args[j].buf].dtype == DHX_BF16 ? 14 : 0;
          const char *names[3] = {" B=", " A=", " C="};
          int want_type[3] = {types[0], types[1], types[2]};  // logged B, A, C
          for (int j = 0; j < 3; j++) {
            const char *at = l ? strstr(l, names[j]) : NULL;
            const char *colon = at ? strchr(at + 1, ':') : NULL;
            CHECK(colon && atoi(colon + 1) == want_type[j], "GEMM '%s': layout%s has type %d, "
                  "its buffer's is %d", dhx_instr_note(in), names[j], colon ? atoi(colon + 1) : -1,
                  want_type[j]);
          }
          bf16_gemms += types[0] == 14;
          // An epilogue: cuBLASLt's BIAS (4) or GELU_AUX_BIAS (164), the bias and the
          // pre-activation at the plan's addresses, the latter ldc apart.
          uint64_t bias = g->epilogue ? arena + (uint64_t)rank->buffers[in->args[3].buf].offset +
                                            (uint64_t)in->args[3].i : 0;
          uint64_t pre = g->epilogue == DHX_GEMM_BIAS_GELU
                             ? arena + (uint64_t)rank->buffers[in->args[4].buf].offset +
                                   (uint64_t)in->args[4].i : 0;
          snprintf(want, sizeof want, " epilogue=%u bias=%" PRIx64 " aux=%" PRIx64 " auxld=%"
                   PRId64, g->epilogue == DHX_GEMM_BIAS_GELU ? 164u : g->epilogue ? 4u : 0u,
                   bias, pre, g->epilogue == DHX_GEMM_BIAS_GELU ? g->ldc : (int64_t)0);
          CHECK(l && strstr(l, want) && strstr(l, want) < strchr(l, '\n'), "GEMM '%s': not %s",
                dhx_instr_note(in), want);
          epilogues += g->epilogue != 0;
        }
      }
    }
    free(order);
  }
  CHECK(count_lines(log, "cuLaunchKernel ") == launches, "%s: %d launches logged, %d expected",
        what, count_lines(log, "cuLaunchKernel "), launches);
  CHECK(count_lines(log, "cuMemsetD8Async ") == zeros, "%s: %d memsets for %d ZEROs", what,
        count_lines(log, "cuMemsetD8Async "), zeros);
  CHECK(count_lines(log, "cuEventRecord ") == records && count_lines(log, "cuStreamWaitEvent ") ==
        waits, "%s: events: %d records, %d waits logged; %d and %d expected", what,
        count_lines(log, "cuEventRecord "), count_lines(log, "cuStreamWaitEvent "), records, waits);
  CHECK(count_lines(log, "cublasLtMatmul ") == matmuls, "%s: %d matmuls logged, %d expected",
        what, count_lines(log, "cublasLtMatmul "), matmuls);
  if (last == DHX_PROG_STEP)
    CHECK(norms == 1 && adamws > 0, "%s: %d GRAD_NORM launches, %d AdamW launches", what, norms,
          adamws);
  printf("%s: %d launches (%d grad norm, %d AdamW), %d GEMM calls (%d on bf16 operands, %d with "
         "an epilogue), %d memsets, %d records, %d waits checked\n", what, launches, norms, adamws,
         matmuls, bf16_gemms, epilogues, zeros, records, waits);
}

static void test_record(const char *dir, const dhx_plan *plan, const char *log_path) {
  char path[1024], err[4096] = "";
  snprintf(path, sizeof path, "%s/kernels.ptx", dir);
  char *ptx = read_text(path);
  CHECK(ptx != NULL, "no %s", path);
  if (!ptx) return;
  remove(log_path);
  dhx_cuda *c = dhx_cuda_open(plan, 0, 0, ptx, err, sizeof err);
  CHECK(c != NULL, "open: %s", err);
  if (!c) return;
  double regs[DHX_REG_COUNT] = {1e-3, 0.1, 0.05, 1.0, 0.0};
  CHECK(dhx_cuda_run(c, DHX_PROG_BEGIN, regs, err, sizeof err), "BEGIN: %s", err);
  CHECK(dhx_cuda_run(c, DHX_PROG_MICRO, regs, err, sizeof err), "MICRO: %s", err);
  FILE *mark = fopen(log_path, "a");  // STEP's calls are checked apart
  if (mark) fputs("-- STEP\n", mark);
  if (mark) fclose(mark);
  // One rank: the gradient norm is a kernel on the device, so STEP runs through (a plan with
  // collectives would stop at its first one).
  CHECK(dhx_cuda_run(c, DHX_PROG_STEP, regs, err, sizeof err), "STEP: %s", err);
  // A second MICRO reuses every GEMM's descriptors and algorithm: matmuls, no new descriptors.
  mark = fopen(log_path, "a");
  if (mark) fputs("-- MICRO again\n", mark);
  if (mark) fclose(mark);
  CHECK(dhx_cuda_run(c, DHX_PROG_MICRO, regs, err, sizeof err), "MICRO again: %s", err);
  dhx_cuda_close(c);
  char *log = read_text(log_path);
  CHECK(log != NULL, "no log %s", log_path);
  if (!log) return;
  char want[256];
  snprintf(want, sizeof want, "cuModuleLoadDataEx bytes=%zu options=2", strlen(ptx));
  CHECK(count_lines(log, want) == 1, "the module is not the plan's PTX (%s)", want);
  for (uint32_t k = 0; k < plan->nkernels; k++) {
    snprintf(want, sizeof want, "cuModuleGetFunction %s\n", plan->kernels[k].name);
    CHECK(strstr(log, want), "no function %s", plan->kernels[k].name);
  }
  snprintf(want, sizeof want, "cuMemAlloc %" PRId64 " -> 100000000", plan->ranks[0].arena_bytes);
  CHECK(count_lines(log, want) == 1, "the arena is not allocated first (%s)", want);
  CHECK(count_lines(log, "cuMemFree ") == 2 && count_lines(log, "cuModuleUnload") == 1,
        "the arena, the workspace or the module is not released");
  char *again = strstr(log, "-- MICRO again\n");
  CHECK(again != NULL, "no second MICRO in the log");
  if (again) {
    *again = 0;
    const char *rerun = again + strlen("-- MICRO again\n");
    int matmuls = count_lines(rerun, "cublasLtMatmul ");
    CHECK(matmuls > 0 && count_lines(rerun, "cublasLtMatmulDescCreate") == 0,
          "MICRO again: %d matmuls and %d new descriptors (the first run's should be kept)",
          matmuls, count_lines(rerun, "cublasLtMatmulDescCreate"));
  }
  char *step_mark = strstr(log, "-- STEP\n");
  CHECK(step_mark != NULL, "no STEP mark in the log");
  if (step_mark) {
    *step_mark = 0;  // closing the backend after STEP logs none of the calls counted
    const char *step = step_mark + strlen("-- STEP\n");
    check_calls(log, plan, DHX_PROG_BEGIN, DHX_PROG_MICRO, "BEGIN and MICRO");
    check_calls(step, plan, DHX_PROG_STEP, DHX_PROG_STEP, "STEP");
  }
  free(log);
  free(ptx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: cuda_host_tests marshal|order|record PLAN_DIR [LOG]\n");
    return 2;
  }
  dhx_plan plan;
  load_plan(argv[2], &plan);
  if (strcmp(argv[1], "marshal") == 0) test_marshal(&plan);
  else if (strcmp(argv[1], "order") == 0) test_order(&plan);
  else if (strcmp(argv[1], "record") == 0 && argc > 3) test_record(argv[2], &plan, argv[3]);
  else fails++;
  dhx_plan_free(&plan);
  if (fails) fprintf(stderr, "%d checks failed\n", fails);
  return fails ? 1 : 0;
}
