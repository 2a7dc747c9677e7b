// kernels_gpu — the CUDA backend against the CPU backend, one instruction at a time, and the
// memory bandwidth each kernel reaches on the device.
//
//   kernels_gpu PLAN_DIR [--time | --time-only] [--tol REL] [--device N] [--ptx FILE]
//               [--copy-mib N]
//
// Parity: rank 0 of a single-rank plan is opened on the CPU backend (kernels.so, OpenBLAS) and
// on the CUDA backend (the PTX, cuBLASLt); parameters are initialised and TOKENS / TARGETS
// filled with a fixed batch on the CPU, and the whole arena is uploaded. Then every
// instruction of BEGIN, MICRO, STEP and EVAL, in the backend's issue order, runs on both; the
// regions it writes (its kernel's access descriptors, a GEMM's C, a ZERO's bytes) are
// downloaded and compared, over the elements that changed: norm-wise relative error
// ||gpu - cpu|| / ||cpu|| and the largest elementwise difference, against --tol (1e-5: fp32).
// Where they differ the CPU's values are uploaded, so each instruction starts from the same
// state; after each program the whole arena is compared (a write outside the declared regions
// would show there). An instruction the backend refuses as not run yet is reported as such
// (the CPU runs it and its result is uploaded); only a mismatch or an error makes the exit
// status 1.
//
// --time: the device's copy bandwidth (cuMemcpyDtoDAsync between two buffers of --copy-mib
// MiB, read and write counted), then every distinct KERNEL launch of MICRO and STEP repeated
// to at least a millisecond between two events: bytes moved (the compiler's cost model: each
// pointer argument's extent from the kernel's access descriptors) per second, and its share of
// the copy bandwidth. --time-only: that alone, without the parity (whose CPU side takes
// minutes on a GPT-2-sized plan).
//
// Output: a table for people and one JSON object per line starting {"kernels_gpu": for
// scripts (docs/gpu-validation.md).
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "exec_cuda.h"

typedef struct options {
  const char *plan_dir, *ptx_path;
  bool time, time_only;
  double tol;
  int device;  // -1: the launcher's local rank
  int64_t copy_mib;
} options;

typedef enum { ST_OK, ST_MISMATCH, ST_ERROR, ST_NOT_RUN } status;
static const char *status_text[] = {"ok", "MISMATCH", "ERROR", "not run by the CUDA backend yet"};
static const char *status_json[] = {"ok", "mismatch", "error", "not_run"};
static const char *program_names[DHX_PROG_COUNT] = {"BEGIN", "MICRO", "STEP", "EVAL"};

// The results of the instructions of one program that share a name (a kernel, a GEMM shape,
// an op).
typedef struct row {
  int prog;
  char name[160];
  int count;
  double max_rel, max_abs;
  status st;
} row;

typedef struct region {
  int64_t offset, bytes;
  uint32_t dtype;
} region;

#define MAX_REGIONS (DHX_MAX_ARGS + 1)

typedef struct checker {
  const options *opt;
  const dhx_plan *plan;
  dhx_rt rt;
  dhx_cuda *cuda;
  bool emulated;
  char device[128];
  uint8_t *before, *gpu;  // arena-sized scratch: the CPU's regions before, the device's after
  row *rows;
  int nrows, cap;
  int mismatches, errors;
} checker;

// what: the thing that failed, NULL when why names it already.
static void die(const char *what, const char *why) {
  fprintf(stderr, "kernels_gpu: error: %s%s%s\n", what ? what : "", what ? ": " : "", why);
  exit(1);
}

// ---- what an instruction writes ----------------------------------------------------------------

static region arg_region(const dhx_plan_rank *rank, const dhx_plan_arg *a, int64_t bytes) {
  const dhx_plan_buffer *b = &rank->buffers[a->buf];
  int64_t room = b->nbytes - a->i;
  return (region){b->offset + a->i, bytes < room ? bytes : room, b->dtype};
}

// The regions `in` writes; one region, the whole arena, for ops this tool does not model (the
// comparison counts only the elements that change, so that is exact, only slower).
static int written_regions(const dhx_plan *plan, const dhx_plan_rank *rank,
                           const dhx_plan_instr *in, region *out) {
  int n = 0;
  region arena = {0, rank->arena_bytes, DHX_F32};
  if (in->op == DHX_OP_KERNEL) {
    const dhx_plan_kernel *k = &plan->kernels[in->kernel];
    for (uint32_t j = 0; j < k->nargs; j++) {
      const dhx_plan_access *acc = &k->access[j];
      int64_t elems = 0;
      if (k->arg_types[j] != DHX_KARG_PTR || !(acc->flags & DHX_ACC_WRITES)) continue;
      if (!dhx_access_extent(acc, in, plan->train.vocab, &elems)) return out[0] = arena, 1;
      out[n++] = arg_region(rank, &in->args[j], elems * acc->elem_bytes);
    }
    return n;
  }
  if (in->op == DHX_OP_GEMM) {
    const dhx_plan_gemm *g = in->gemm;
    int64_t last = (g->batch[0] - 1) * g->stride_c[0] + (g->batch[1] - 1) * g->stride_c[1] +
                   (g->m - 1) * g->ldc + g->n;
    int64_t size = dhx_dtype_size(rank->buffers[in->args[2].buf].dtype);
    out[n++] = arg_region(rank, &in->args[2], last * size);
    if (g->epilogue == DHX_GEMM_BIAS_GELU) out[n++] = arg_region(rank, &in->args[4], last * size);
    return n;
  }
  if (in->op == DHX_OP_ZERO) {
    out[0] = arg_region(rank, &in->args[0], in->args[1].i);
    return 1;
  }
  if (in->op == DHX_OP_RECORD || in->op == DHX_OP_WAIT || in->op == DHX_OP_GRAD_NORM) return 0;
  out[0] = arena;
  return 1;
}

// ---- comparing -------------------------------------------------------------------------------

typedef struct diff {
  double diff2, ref2, max_abs;
} diff;

static double element(const uint8_t *p, uint32_t dtype, int64_t i) {
  if (dtype == DHX_F64) {
    double v;
    memcpy(&v, p + i * 8, 8);
    return v;
  }
  if (dtype == DHX_I32) {
    int32_t v;
    memcpy(&v, p + i * 4, 4);
    return v;
  }
  if (dtype == DHX_BF16) {
    uint16_t h;
    memcpy(&h, p + i * 2, 2);
    uint32_t u = (uint32_t)h << 16;
    float v;
    memcpy(&v, &u, 4);
    return v;
  }
  float v;
  memcpy(&v, p + i * 4, 4);
  return v;
}

// Over the elements the CPU changed or the device computed differently: the squared norms of
// the difference and of the CPU's values, and the largest difference (infinite where exactly
// one side is not finite, or both are but differ).
static void compare(const uint8_t *before, const uint8_t *cpu, const uint8_t *gpu, int64_t bytes,
                    uint32_t dtype, diff *d) {
  int64_t size = dhx_dtype_size(dtype);
  for (int64_t i = 0; i < bytes / size; i++) {
    bool same = memcmp(cpu + i * size, gpu + i * size, (size_t)size) == 0;
    if (same && memcmp(cpu + i * size, before + i * size, (size_t)size) == 0) continue;
    double c = element(cpu, dtype, i), g = element(gpu, dtype, i);
    double e = same ? 0 : isfinite(c) && isfinite(g) ? fabs(g - c) : INFINITY;
    d->diff2 += e * e;
    if (isfinite(c)) d->ref2 += c * c;
    if (e > d->max_abs) d->max_abs = e;
  }
}

static double relative(const diff *d) {
  if (d->diff2 == 0) return 0;
  return d->ref2 > 0 ? sqrt(d->diff2) / sqrt(d->ref2) : INFINITY;
}

// ---- the table -------------------------------------------------------------------------------

static row *row_of(checker *k, int prog, const char *name) {
  for (int i = 0; i < k->nrows; i++)
    if (k->rows[i].prog == prog && strcmp(k->rows[i].name, name) == 0) return &k->rows[i];
  if (k->nrows == k->cap) {
    k->cap = k->cap ? 2 * k->cap : 64;
    k->rows = realloc(k->rows, sizeof *k->rows * (size_t)k->cap);
    if (!k->rows) die("memory", "out of memory");
  }
  row *r = &k->rows[k->nrows++];
  memset(r, 0, sizeof *r);
  r->prog = prog;
  snprintf(r->name, sizeof r->name, "%s", name);
  return r;
}

// A kernel by its name, a GEMM by its shape, anything else by its op.
static void instr_name(const dhx_plan *plan, const dhx_plan_instr *in, char *out, size_t len) {
  if (in->op == DHX_OP_KERNEL) snprintf(out, len, "%s", plan->kernels[in->kernel].name);
  else if (in->op == DHX_OP_GEMM) dhx_instr_key(plan, 0, in, out, len);
  else snprintf(out, len, "%s", dhx_op_name(in->op));
}

static void note(checker *k, int prog, const dhx_plan_instr *in, status st, double rel,
                 double max_abs) {
  char name[160];
  instr_name(k->plan, in, name, sizeof name);
  row *r = row_of(k, prog, name);
  r->count++;
  if (st != ST_NOT_RUN) {
    if (rel > r->max_rel || isnan(rel)) r->max_rel = rel;
    if (max_abs > r->max_abs || isnan(max_abs)) r->max_abs = max_abs;
  }
  static const int severity[] = {[ST_OK] = 0, [ST_NOT_RUN] = 1, [ST_MISMATCH] = 2,
                                 [ST_ERROR] = 3};
  if (severity[st] > severity[r->st]) r->st = st;
  k->mismatches += st == ST_MISMATCH;
  k->errors += st == ST_ERROR;
}

// ---- one instruction on both backends -------------------------------------------------------

static bool upload(checker *k, const region *r, int n) {
  char err[1024];
  for (int i = 0; i < n; i++)
    if (!dhx_cuda_upload(k->cuda, (uint64_t)r[i].offset, k->rt.arena.base + r[i].offset,
                         (size_t)r[i].bytes, err, sizeof err)) {
      fprintf(stderr, "kernels_gpu: upload: %s\n", err);
      return false;
    }
  return true;
}

// Runs `in` on the device; ST_NOT_RUN when the backend says it does not run it yet.
static status run_on_device(checker *k, int prog, uint32_t pos, const dhx_plan_instr *in) {
  char err[1024];
  if (dhx_cuda_issue(k->cuda, in, k->rt.regs, err, sizeof err) &&
      dhx_cuda_sync(k->cuda, err, sizeof err))
    return ST_OK;
  bool not_yet = strstr(err, "does not run") != NULL;
  printf("%s %s #%u '%s': %s\n", program_names[prog], not_yet ? "not run by the CUDA backend yet:"
         : "ERROR", pos, dhx_instr_note(in), err);
  return not_yet ? ST_NOT_RUN : ST_ERROR;
}

static void check_instr(checker *k, int prog, uint32_t pos, const dhx_plan_instr *in) {
  region regs[MAX_REGIONS];
  int n = written_regions(k->plan, k->rt.rank, in, regs);
  for (int i = 0; i < n; i++)
    memcpy(k->before + regs[i].offset, k->rt.arena.base + regs[i].offset, (size_t)regs[i].bytes);
  if (in->op != DHX_OP_RECORD && in->op != DHX_OP_WAIT) dhx_exec_cpu(&k->rt, in);
  status st = run_on_device(k, prog, pos, in);
  if (st != ST_OK) {
    note(k, prog, in, st, 0, 0);
    if (!upload(k, regs, n)) k->errors++;  // the device goes on from the CPU's result
    return;
  }
  if (n == 0) return;  // nothing written to compare: RECORD, WAIT, GRAD_NORM's registers
  diff d = {0};
  char err[1024];
  for (int i = 0; i < n; i++) {
    uint8_t *g = k->gpu + regs[i].offset;
    if (!dhx_cuda_download(k->cuda, (uint64_t)regs[i].offset, g, (size_t)regs[i].bytes, err,
                           sizeof err))
      die("download", err);
    compare(k->before + regs[i].offset, k->rt.arena.base + regs[i].offset, g, regs[i].bytes,
            regs[i].dtype, &d);
  }
  double rel = relative(&d);
  bool ok = rel <= k->opt->tol;
  if (!ok) {
    char name[160];
    instr_name(k->plan, in, name, sizeof name);
    printf("%s MISMATCH #%u '%s' (%s): relative error %.3e, largest difference %.3e\n",
           program_names[prog], pos, dhx_instr_note(in), name, rel, d.max_abs);
  }
  note(k, prog, in, ok ? ST_OK : ST_MISMATCH, rel, d.max_abs);
  if (d.diff2 != 0 && !upload(k, regs, n)) k->errors++;  // the next one starts from the CPU's
}

// After a program: the whole arena, byte for byte (every difference inside an instruction's
// regions was overwritten with the CPU's values, so any left is a write outside them).
static void check_arena(checker *k, int prog) {
  char err[1024];
  int64_t bytes = k->rt.rank->arena_bytes, differ = 0;
  if (!dhx_cuda_download(k->cuda, 0, k->gpu, (size_t)bytes, err, sizeof err))
    die("download", err);
  if (memcmp(k->gpu, k->rt.arena.base, (size_t)bytes) == 0) return;
  for (int64_t i = 0; i < bytes; i++) differ += k->gpu[i] != k->rt.arena.base[i];
  printf("%s ERROR: after the program %" PRId64 " bytes of the device's arena differ from the "
         "CPU's outside what the instructions declare they write\n", program_names[prog], differ);
  k->errors++;
  region all = {0, bytes, DHX_F32};
  upload(k, &all, 1);
}

static void check_program(checker *k, int prog) {
  const dhx_plan_program *p = &k->rt.rank->programs[prog];
  if (p->ninstrs == 0) return;
  uint32_t *order = malloc(sizeof *order * p->ninstrs);
  if (!order || !dhx_cuda_issue_order(p, order)) die(program_names[prog], "no issue order");
  atomic_store(&k->rt.update_skipped, false);
  for (uint32_t i = 0; i < p->ninstrs; i++) check_instr(k, prog, order[i], &p->instrs[order[i]]);
  free(order);
  check_arena(k, prog);
}

static void print_parity(const checker *k) {
  printf("\nparity: %s against the CPU backend; tolerance %.1e (norm-wise relative error over "
         "the elements each instruction changes)\n", k->device, k->opt->tol);
  printf("%-7s %-52s %6s %11s %11s  %s\n", "program", "name", "instrs", "max_rel", "max_abs",
         "result");
  for (int i = 0; i < k->nrows; i++) {
    const row *r = &k->rows[i];
    if (r->st == ST_NOT_RUN)
      printf("%-7s %-52s %6d %11s %11s  %s\n", program_names[r->prog], r->name, r->count, "-",
             "-", status_text[r->st]);
    else
      printf("%-7s %-52s %6d %11.3e %11.3e  %s\n", program_names[r->prog], r->name, r->count,
             r->max_rel, r->max_abs, status_text[r->st]);
  }
  for (int i = 0; i < k->nrows; i++) {
    const row *r = &k->rows[i];
    printf("{\"kernels_gpu\":\"parity\",\"device\":");
    dhx_json_string(stdout, k->device);
    printf(",\"program\":\"%s\",\"name\":", program_names[r->prog]);
    dhx_json_string(stdout, r->name);
    printf(",\"instructions\":%d,\"result\":\"%s\"", r->count, status_json[r->st]);
    if (r->st != ST_NOT_RUN) {
      dhx_json_number(stdout, "max_rel", r->max_rel, "%.3e");
      dhx_json_number(stdout, "max_abs", r->max_abs, "%.3e");
    }
    printf("}\n");
  }
}

// ---- bandwidth -------------------------------------------------------------------------------

// Bytes a kernel launch moves as the compiler's cost model counts them (compiler/cost/cost.c):
// every pointer argument's extent, in its elements.
static int64_t kernel_bytes(const dhx_plan *plan, const dhx_plan_instr *in) {
  const dhx_plan_kernel *k = &plan->kernels[in->kernel];
  int64_t bytes = 0;
  for (uint32_t j = 0; j < k->nargs; j++) {
    int64_t elems = 0;
    if (k->arg_types[j] == DHX_KARG_PTR &&
        dhx_access_extent(&k->access[j], in, plan->train.vocab, &elems))
      bytes += elems * k->access[j].elem_bytes;
  }
  return bytes;
}

// Repetitions that take at least a millisecond, from one timed launch.
static int reps_for(double once_ms) {
  if (once_ms <= 0) return 1000;
  double reps = ceil(1.0 / once_ms);
  return reps > 100000 ? 100000 : reps < 1 ? 1 : (int)reps;
}

static double copy_bandwidth(checker *k) {
  char err[1024];
  size_t bytes = (size_t)k->opt->copy_mib << 20;
  double ms = 0;
  if (!dhx_cuda_time_copy(k->cuda, bytes, 1, &ms, err, sizeof err)) die("copy", err);
  int reps = reps_for(ms / 10);  // at least 10 ms
  if (!dhx_cuda_time_copy(k->cuda, bytes, reps, &ms, err, sizeof err)) die("copy", err);
  double gbs = 2.0 * (double)bytes * reps / (ms * 1e-3) / 1e9;
  printf("\nbandwidth: %s; copy %.1f GB/s (cuMemcpyDtoDAsync of %" PRId64 " MiB x %d, bytes "
         "read and written counted)\n", k->device, gbs, k->opt->copy_mib, reps);
  if (k->emulated)
    printf("the device is emulated on the host: these figures say nothing about a GPU\n");
  printf("{\"kernels_gpu\":\"copy\",\"device\":");
  dhx_json_string(stdout, k->device);
  printf(",\"bytes\":%zu,\"reps\":%d,\"gb_per_s\":%.3f,\"emulated\":%s}\n", bytes, reps, gbs,
         k->emulated ? "true" : "false");
  return gbs;
}

// Whether an earlier KERNEL instruction of the list did the same work (kernel, n, bytes).
static bool timed_before(const dhx_plan *plan, const dhx_plan_instr **done, int ndone,
                         const dhx_plan_instr *in) {
  for (int i = 0; i < ndone; i++)
    if (done[i]->kernel == in->kernel && done[i]->n == in->n &&
        kernel_bytes(plan, done[i]) == kernel_bytes(plan, in))
      return true;
  return false;
}

static void time_kernel(checker *k, int prog, const dhx_plan_instr *in, double copy_gbs,
                        FILE *json) {
  char err[1024];
  double ms = 0;
  if (!dhx_cuda_time_instr(k->cuda, in, k->rt.regs, 1, &ms, err, sizeof err) ||  // warm-up
      !dhx_cuda_time_instr(k->cuda, in, k->rt.regs, 1, &ms, err, sizeof err))
    die(dhx_instr_note(in), err);
  int reps = reps_for(ms);
  if (!dhx_cuda_time_instr(k->cuda, in, k->rt.regs, reps, &ms, err, sizeof err))
    die(dhx_instr_note(in), err);
  int64_t bytes = kernel_bytes(k->plan, in);
  double us = ms * 1e3 / reps, gbs = us > 0 ? (double)bytes / (us * 1e-6) / 1e9 : 0;
  const char *name = k->plan->kernels[in->kernel].name;
  printf("%-7s %-36s %10" PRId64 " %12" PRId64 " %7d %10.2f %9.1f %6.1f%%\n", program_names[prog],
         name, in->n, bytes, reps, us, gbs, 100.0 * gbs / copy_gbs);
  fprintf(json, "{\"kernels_gpu\":\"bandwidth\",\"program\":\"%s\",\"name\":",
          program_names[prog]);
  dhx_json_string(json, name);
  fprintf(json, ",\"n\":%" PRId64 ",\"bytes\":%" PRId64 ",\"bytes_source\":\"cost model\",\"reps\":%d,"
         "\"us\":%.3f,\"gb_per_s\":%.3f,\"pct_of_copy\":%.2f,\"emulated\":%s}\n", in->n, bytes,
         reps, us, gbs, 100.0 * gbs / copy_gbs, k->emulated ? "true" : "false");
}

static void time_kernels(checker *k) {
  double copy_gbs = copy_bandwidth(k);
  char *lines = NULL;
  size_t len = 0;
  FILE *json = open_memstream(&lines, &len);  // the JSON lines follow the table
  if (!json) die("memory", "out of memory");
  printf("bytes per launch: the cost model's (each pointer argument's extent from the kernel's "
         "access descriptors, compiler/cost/cost.c)\n");
  printf("%-7s %-36s %10s %12s %7s %10s %9s %7s\n", "program", "kernel", "n", "bytes", "reps",
         "us/launch", "GB/s", "%copy");
  for (int prog = DHX_PROG_MICRO; prog <= DHX_PROG_STEP; prog++) {
    const dhx_plan_program *p = &k->rt.rank->programs[prog];
    const dhx_plan_instr **done = malloc(sizeof *done * (p->ninstrs + 1));
    int ndone = 0;
    if (!done) die("memory", "out of memory");
    for (uint32_t i = 0; i < p->ninstrs; i++) {
      const dhx_plan_instr *in = &p->instrs[i];
      if (in->op != DHX_OP_KERNEL || in->n == 0 || timed_before(k->plan, done, ndone, in)) continue;
      done[ndone++] = in;
      time_kernel(k, prog, in, copy_gbs, json);
    }
    free(done);
  }
  fclose(json);
  fputs(lines, stdout);
  free(lines);
}

// ---- setting up ------------------------------------------------------------------------------

// A fixed batch: token ids below vocab, targets the next ids of the same sequence.
static void fill_batch(dhx_rt *rt) {
  int32_t tokens = dhx_rt_find(rt, DHX_BUF_TOKENS), targets = dhx_rt_find(rt, DHX_BUF_TARGETS);
  int64_t vocab = rt->plan->train.vocab;
  if (tokens >= 0) {
    int32_t *t = dhx_rt_buffer(rt, tokens);
    for (int64_t i = 0; i < rt->rank->buffers[tokens].nbytes / 4; i++)
      t[i] = (int32_t)((i * 31 + 7) % vocab);
  }
  if (targets >= 0) {
    int32_t *t = dhx_rt_buffer(rt, targets);
    for (int64_t i = 0; i < rt->rank->buffers[targets].nbytes / 4; i++)
      t[i] = (int32_t)(((i + 1) * 31 + 7) % vocab);
  }
}

// LOAD_BATCH's source on both backends (programs that load their own micro-batches: paired
// strands, pipelines): micro-batch m of a fixed stream of valid ids.
static void load_fixed(void *ctx, int64_t m, int32_t *tokens, int32_t *targets) {
  const dhx_plan_train *t = ctx;
  int64_t n = t->micro_batch * t->seq;
  for (int64_t i = 0; i < n; i++) {
    tokens[i] = (int32_t)(((m * n + i) * 31 + 7) % t->vocab);
    targets[i] = (int32_t)(((m * n + i + 1) * 31 + 7) % t->vocab);
  }
}

static void open_backends(checker *k, dhx_plan *plan) {
  char path[1024], err[4096];
  const options *o = k->opt;
  snprintf(path, sizeof path, "%s/plan.bin", o->plan_dir);
  if (!dhx_plan_read(path, plan, err, sizeof err)) die(NULL, err);
  if (plan->nranks != 1)
    die(path, "kernels_gpu checks single-rank plans (compile with dp, tp and pp 1)");
  k->plan = plan;
  snprintf(path, sizeof path, "%s/kernels.so", o->plan_dir);
  if (!dhx_rt_init(&k->rt, plan, 0, path, 2, err, sizeof err)) die("the CPU backend", err);
  dhx_init_params(&k->rt, plan->train.seed);
  fill_batch(&k->rt);
  k->rt.load_batch = load_fixed;
  k->rt.load_ctx = &plan->train;
  dhx_set_step_registers(&plan->train, 0, k->rt.regs);
  snprintf(path, sizeof path, "%s/kernels.ptx", o->plan_dir);
  const char *ptx_path = o->ptx_path ? o->ptx_path : path;
  char *ptx = dhx_cuda_read_ptx(ptx_path, err, sizeof err);
  if (!ptx) die("the PTX", err);
  int devices = dhx_cuda_devices(err, sizeof err);
  if (devices == 0) die("the CUDA backend", err);
  int device = o->device >= 0 ? o->device : dhx_cuda_local_device(devices);
  k->cuda = dhx_cuda_open(plan, 0, device, ptx, err, sizeof err);
  free(ptx);
  if (!k->cuda) die("the CUDA backend", err);
  dhx_cuda_set_loader(k->cuda, load_fixed, &plan->train);
  char name[96] = "";
  if (!dhx_cuda_device_name(k->cuda, name, sizeof name, err, sizeof err)) die("device", err);
  snprintf(k->device, sizeof k->device, "device %d '%s'", device, name);
  k->emulated = strstr(name, "emulated") != NULL;
  int64_t bytes = k->rt.rank->arena_bytes;
  k->before = malloc((size_t)bytes);
  k->gpu = malloc((size_t)bytes);
  if (!k->before || !k->gpu) die("memory", "out of memory");
  region all = {0, bytes, DHX_F32};
  if (!upload(k, &all, 1)) exit(1);
  printf("kernels_gpu: plan %s ('%s'), rank 0 of 1, %s%s\n", o->plan_dir, plan->train.model_name,
         k->device, k->emulated ? " (emulated: the host kernels run, not the PTX)" : "");
}

static double number(const char *opt, const char *v) {
  char *end = NULL;
  double x = v ? strtod(v, &end) : 0;
  if (!v || !*v || *end || !(x >= 0)) die(opt, "expects a non-negative number");
  return x;
}

#define USAGE "kernels_gpu PLAN_DIR [--time | --time-only] [--tol REL] [--device N] " \
              "[--ptx FILE] [--copy-mib N]"

static options parse(int argc, char **argv) {
  options o = {.tol = 1e-5, .device = -1, .copy_mib = 256};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--time") == 0) o.time = true;
    else if (strcmp(a, "--time-only") == 0) o.time = o.time_only = true;
    else if (strcmp(a, "--tol") == 0) o.tol = number(a, v), i++;
    else if (strcmp(a, "--device") == 0) o.device = (int)number(a, v), i++;
    else if (strcmp(a, "--copy-mib") == 0) o.copy_mib = (int64_t)number(a, v), i++;
    else if (strcmp(a, "--ptx") == 0 && v) o.ptx_path = v, i++;
    else if (a[0] != '-' && !o.plan_dir) o.plan_dir = a;
    else die(a, "usage: " USAGE);
  }
  if (!o.plan_dir) die("usage", USAGE);
  if (o.copy_mib < 1) die("--copy-mib", "expects at least 1");
  return o;
}

int main(int argc, char **argv) {
  options o = parse(argc, argv);
  checker k = {.opt = &o};
  dhx_plan plan;
  open_backends(&k, &plan);
  if (!o.time_only) {
    for (int prog = 0; prog < DHX_PROG_COUNT; prog++) check_program(&k, prog);
    print_parity(&k);
  }
  if (o.time) time_kernels(&k);
  printf("\nkernels_gpu: %d mismatches, %d errors\n", k.mismatches, k.errors);
  dhx_cuda_close(k.cuda);
  dhx_rt_free(&k.rt);
  dhx_plan_free(&plan);
  free(k.before);
  free(k.gpu);
  free(k.rows);
  return k.mismatches || k.errors ? 1 : 0;
}
