// dhxrun — runs a compiled plan: `mpirun -np N dhxrun PLAN_DIR [options]` (one rank without
// mpirun). See usage() for the options; train.c has the loop.
#include <errno.h>
#include <mpi.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "exec_cuda.h"
#include "sanitize.h"  // LSan defaults for OpenMPI under -DDHX_SANITIZE=ON

static const char *usage_text =
    "usage: dhxrun PLAN_DIR [options]          (mpirun -np N dhxrun PLAN_DIR for N ranks)\n"
    "\n"
    "Trains the plan that dhxc wrote to PLAN_DIR (plan.bin, kernels.so).\n"
    "\n"
    "  --train FILE|GLOB      training token shards, read in sorted order (default: the plan's\n"
    "                         data.train); paths are relative to the current directory\n"
    "  --val FILE|GLOB        validation token shards (default: the plan's data.val)\n"
    "  --steps N              stop after step N; the learning-rate schedule keeps the plan's\n"
    "                         length, so --steps 20 runs exactly the first 20 steps of the full run\n"
    "  --metrics FILE         write one JSON object per step and a summary line (rank 0); a\n"
    "                         resumed run keeps the earlier lines and appends\n"
    "  --threads N            worker threads per rank (default: cores / ranks on the node)\n"
    "  --save FILE            write a safetensors checkpoint at the end\n"
    "  --resume FILE|latest   load parameters, AdamW moments and the step from a checkpoint\n"
    "                         and continue from there (same losses as an uninterrupted run);\n"
    "                         latest: the newest complete checkpoint in the checkpoint directory\n"
    "  --init FILE            start a new run from the weights of a safetensors file (fresh\n"
    "                         optimizer state; see dhxc convert for Hugging Face files)\n"
    "  --checkpoint-dir DIR   write DIR/step_N.safetensors every train.checkpoint_every steps\n"
    "                         and on an interrupt (default: PLAN_DIR/checkpoints when\n"
    "                         train.checkpoint_every is set)\n"
    "  --step-timeout S       end the run, naming the rank, when no rank makes progress for S\n"
    "                         seconds (default: 20 x the slowest step, at least 300)\n"
    "  --trace FILE           write a timeline of every instruction on every rank and stream\n"
    "                         (Chrome trace JSON: open it in ui.perfetto.dev or chrome://tracing)\n"
    "  --trace-steps A:B      the steps the trace covers, A to B inclusive, or one step A\n"
    "                         (default: the first 2 steps this run takes)\n"
    "  --profile FILE         time every kind of instruction (alone, beside a collective, beside\n"
    "                         other compute) over the trace's steps (default: the steps after\n"
    "                         the first, up to 8) and write them as JSON for dhxc --simulate\n"
    "                         --profile FILE\n"
    "  --net-emulate BW,LAT   emulate this network instead of the plan's: each message waits\n"
    "                         LAT + bytes/BW before it leaves (as in 1GB/s,20us; units B/s,\n"
    "                         KB/s, MB/s, GB/s, TB/s and s, ms, us, ns), or off for none\n"
    "  --backend auto|cpu|cuda  where the plan runs (default $DHX_BACKEND, else auto: the GPU\n"
    "                         of this rank when each rank of the node has one, unless --trace,\n"
    "                         --profile or --net-emulate ask for the CPU; cuda says why it\n"
    "                         cannot run here)\n"
    "  --quiet                print nothing but errors\n"
    "  --version              dhxrun's version, OpenBLAS's and those of the GPU libraries it\n"
    "                         finds\n"
    "  --help                 this text\n"
    "\n"
    "SIGINT, SIGTERM or SIGUSR1 on any rank: every rank finishes its step, the checkpoint is\n"
    "written (checkpoint directory and --save), and dhxrun exits with 128 + the signal number.\n";

typedef enum { PARSE_OK, PARSE_ERROR, PARSE_HELP, PARSE_VERSION } parse_result;
typedef enum { BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA } backend_choice;
static backend_choice backend = BACKEND_AUTO;

static bool parse_int(const char *s, int64_t max, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || errno || v < 1 || v > max) return false;
  *out = v;
  return true;
}

// --trace-steps A:B (1 <= A <= B) or A (= A:A).
static bool parse_window(const char *s, int64_t *first, int64_t *last) {
  char a[32];
  const char *colon = strchr(s, ':');
  size_t n = colon ? (size_t)(colon - s) : strlen(s);
  if (n >= sizeof a) return false;
  memcpy(a, s, n);
  a[n] = 0;
  if (!parse_int(a, 1LL << 32, first)) return false;
  if (!colon) {
    *last = *first;
    return true;
  }
  return parse_int(colon + 1, 1LL << 32, last) && *first <= *last;
}

static bool parse_backend(const char *value, const char *source, char *err, size_t errlen) {
  if (strcmp(value, "auto") && strcmp(value, "cpu") && strcmp(value, "cuda")) {
    snprintf(err, errlen, "%s: '%s' is not one of auto, cpu, cuda", source, value);
    return false;
  }
  backend = value[0] == 'a' ? BACKEND_AUTO : value[1] == 'p' ? BACKEND_CPU : BACKEND_CUDA;
  return true;
}

// Options take their value as the next argument or after '=' (--steps 20, --steps=20).
// DHX_BACKEND in the environment is --backend's default.
static parse_result parse_args(int argc, char **argv, dhx_run_opts *o, char *err, size_t errlen) {
  static const char *with_value[] = {"--train", "--val", "--steps", "--metrics", "--threads",
                                     "--save", "--resume", "--checkpoint-dir", "--init",
                                     "--step-timeout", "--trace", "--trace-steps",
                                     "--net-emulate", "--profile", "--backend"};
  memset(o, 0, sizeof *o);
  o->cuda_device = -1;
  const char *env_backend = getenv("DHX_BACKEND");
  if (env_backend && *env_backend && !parse_backend(env_backend, "DHX_BACKEND", err, errlen))
    return PARSE_ERROR;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return PARSE_HELP;
    if (strcmp(a, "--version") == 0) return PARSE_VERSION;
    if (strcmp(a, "--quiet") == 0) {
      o->quiet = true;
      continue;
    }
    if (a[0] != '-') {
      if (o->plan_dir) {
        snprintf(err, errlen, "unexpected argument '%s' (one PLAN_DIR only)", a);
        return PARSE_ERROR;
      }
      o->plan_dir = a;
      continue;
    }
    const char *name = NULL, *value = NULL;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value && !name; k++) {
      size_t n = strlen(with_value[k]);
      if (strncmp(a, with_value[k], n) == 0 && (a[n] == 0 || a[n] == '=')) {
        name = with_value[k];
        value = a[n] == '=' ? a + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
      }
    }
    if (!name) {
      snprintf(err, errlen, "unknown option '%s' (see dhxrun --help)", a);
      return PARSE_ERROR;
    }
    if (!value || !*value) {
      snprintf(err, errlen, "%s needs a value", name);
      return PARSE_ERROR;
    }
    int64_t n = 0;
    if (strcmp(name, "--steps") == 0 || strcmp(name, "--threads") == 0) {
      bool steps = strcmp(name, "--steps") == 0;
      if (!parse_int(value, steps ? (1LL << 32) : 1024, &n)) {
        snprintf(err, errlen, "%s: '%s' is not a positive integer%s", name, value,
                 steps ? "" : " up to 1024");
        return PARSE_ERROR;
      }
      if (steps)
        o->steps = n;
      else
        o->threads = (int)n;
    } else if (strcmp(name, "--train") == 0) {
      o->train_path = value;
    } else if (strcmp(name, "--val") == 0) {
      o->val_path = value;
    } else if (strcmp(name, "--metrics") == 0) {
      o->metrics_path = value;
    } else if (strcmp(name, "--save") == 0) {
      o->save_path = value;
    } else if (strcmp(name, "--resume") == 0) {
      o->resume_path = value;
    } else if (strcmp(name, "--init") == 0) {
      o->init_path = value;
    } else if (strcmp(name, "--step-timeout") == 0) {
      char *end = NULL;
      double v = strtod(value, &end);
      if (*end || !(v > 0 && v <= 1e7)) {
        snprintf(err, errlen, "--step-timeout: '%s' is not a number of seconds", value);
        return PARSE_ERROR;
      }
      o->step_timeout = v;
    } else if (strcmp(name, "--net-emulate") == 0) {
      if (!dhx_parse_net_emulate(value, &o->net_bandwidth, &o->net_latency, err, errlen))
        return PARSE_ERROR;
      o->net_override = true;
    } else if (strcmp(name, "--backend") == 0) {
      if (!parse_backend(value, "--backend", err, errlen)) return PARSE_ERROR;
    } else if (strcmp(name, "--trace") == 0) {
      o->trace_path = value;
    } else if (strcmp(name, "--profile") == 0) {
      o->profile_path = value;
    } else if (strcmp(name, "--trace-steps") == 0) {
      if (!parse_window(value, &o->trace_first, &o->trace_last)) {
        snprintf(err, errlen, "--trace-steps: '%s' is not a window of steps FIRST:LAST (1 <= "
                 "FIRST <= LAST) or one step", value);
        return PARSE_ERROR;
      }
    } else {
      o->checkpoint_dir = value;
    }
  }
  if (!o->plan_dir) {
    snprintf(err, errlen, "missing PLAN_DIR (see dhxrun --help)");
    return PARSE_ERROR;
  }
  if (o->trace_first && !o->trace_path && !o->profile_path) {
    snprintf(err, errlen, "--trace-steps needs --trace FILE or --profile FILE");
    return PARSE_ERROR;
  }
  return PARSE_OK;
}

static void print_version(void) {
  char libs[2048], blas[512];
  dhx_gpu_versions(libs, sizeof libs);
  dhx_blas_version(blas, sizeof blas);
  printf("dhxrun (DHX) %s\n%s%s", DHX_VERSION, blas, libs);
}

// Options that act on the CPU backend's stream threads and communicators only.
static const char *cpu_only_option(const dhx_run_opts *o) {
  return o->trace_path ? "--trace" : o->profile_path ? "--profile"
       : o->net_override ? "--net-emulate" : NULL;
}

// Chooses the backend: `cuda` needs a device, `auto` takes one when every rank of this node
// gets a device of its own (NCCL takes one rank per device) and no option asks for the CPU
// backend's instruments. Sets o->cuda_device (the launcher's local rank, modulo the node's
// devices). Every rank reaches the same verdict; rank 0 speaks.
static bool choose_backend(int rank, dhx_run_opts *o) {
  if (backend == BACKEND_CPU) return true;
  int local = dhx_ranks_on_node();  // collective: before any verdict that may differ by node
  char why[1024] = "";
  int devices = dhx_cuda_devices(why, sizeof why);
  const char *cpu_only = cpu_only_option(o);
  if (backend == BACKEND_CUDA && devices == 0) {
    if (rank == 0) fprintf(stderr, "dhxrun: error: --backend cuda: %s\n", why);
    return false;
  }
  if (backend == BACKEND_CUDA && cpu_only) {
    if (rank == 0)
      fprintf(stderr, "dhxrun: error: --backend cuda: %s runs on the CPU backend only (use "
              "--backend cpu)\n", cpu_only);
    return false;
  }
  bool fits = backend == BACKEND_CUDA || local <= devices;
  if (devices > 0 && !cpu_only && fits) o->cuda_device = dhx_cuda_local_device(devices);
  if (rank == 0 && devices > 0 && !o->quiet)
    printf("dhxrun: %d CUDA device%s found; the plan runs on %s\n", devices,
           devices == 1 ? "" : "s", o->cuda_device >= 0 ? "the GPU"
           : cpu_only ? "the CPU (for the CPU-only options)"
                      : "the CPU (more ranks on this node than devices)");
  return true;
}

int main(int argc, char **argv) {
  dhx_blas_sleep_when_idle(argv);  // first, before MPI: OpenBLAS's idle threads sleep
  int provided = 0, rank = 0;
#ifdef __linux__
  // Sleeps end within a microsecond rather than Linux's default 50 us of slack: the emulated
  // network and the waits of comm.c sleep thousands of times a step (inherited by every thread).
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
#endif
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  dhx_run_opts opts;
  char err[1024] = "";
  int status;
  // Every rank parses the same arguments and reaches the same verdict; rank 0 speaks.
  parse_result parsed = parse_args(argc, argv, &opts, err, sizeof err);
  if (parsed == PARSE_HELP) {
    if (rank == 0) fputs(usage_text, stdout);
    status = 0;
  } else if (parsed == PARSE_ERROR) {
    if (rank == 0) fprintf(stderr, "dhxrun: error: %s\n", err);
    status = 1;
  } else if (parsed == PARSE_VERSION) {
    if (rank == 0) print_version();
    status = 0;
  } else if (!choose_backend(rank, &opts)) {
    status = 1;
  } else if (provided < MPI_THREAD_MULTIPLE) {
    // Streams all-reduce from their own threads, concurrently.
    if (rank == 0) fprintf(stderr, "dhxrun: error: the MPI library does not provide MPI_THREAD_MULTIPLE\n");
    status = 1;
  } else {
    status = dhx_train(&opts);
  }
  MPI_Finalize();
  return status;
}
