// exec_cuda.h — the CUDA backend's host side: a rank's plan on one device through the driver
// API and cuBLASLt (exec_cuda.c), its collectives and transfers through NCCL (exec_nccl.c).
// It runs every instruction of a plan: kernels (grid-stride loops: an index per thread, four
// for a wide kernel, or a warp per row),
// memsets, GEMMs, the gradient norm (its grad_norm kernel: the norm and the clip scale stay in
// device memory), batch loading (page-locked copies on the instruction's stream) and, after
// dhx_cuda_connect, the collectives and transfers.
#ifndef DHX_EXEC_CUDA_H
#define DHX_EXEC_CUDA_H

#include "dhxrt.h"
#include "gpu_api.h"
#include "plan.h"

// Threads per block of a kernel launch. A multiple of 32 (DHX_PLAN_WARP), so the warps of
// warp-per-row kernels are whole.
#define DHX_CUDA_BLOCK 256
_Static_assert(DHX_CUDA_BLOCK % DHX_PLAN_WARP == 0, "a block must hold whole warps");
// Blocks per multiprocessor of the largest grid: two waves of 8 resident blocks of 256 threads
// (2048 threads, what one SM of sm_80 and sm_90 holds). The PTX entries loop over their index
// space with the grid's stride, so a capped grid still covers every index; larger grids would
// only add blocks that start, compute their indices and stop.
#define DHX_CUDA_BLOCKS_PER_SM 16

// The grid of a launch over n indices: ceil(n / indices_per_thread) · threads_per_index
// threads in blocks of DHX_CUDA_BLOCK, at most max_grid blocks (0: no cap but the driver's
// 2^31 - 1).
uint32_t dhx_cuda_grid(int64_t n, uint32_t threads_per_index, uint32_t indices_per_thread,
                       uint32_t max_grid);

typedef struct dhx_cuda dhx_cuda;

// A kernel instruction's launch: its typed parameter values (one 8-byte slot each, the index
// space n last) and pointers to them as cuLaunchKernel takes them, and the grid.
typedef struct dhx_cuda_launch {
  uint64_t slots[DHX_MAX_ARGS + 1];
  void *params[DHX_MAX_ARGS + 1];
  uint32_t nparams;
  uint32_t grid, block;
} dhx_cuda_launch;

// Marshals kernel instruction `in` (KERNEL, or GRAD_NORM's kernel) of `rank`'s plan for a device arena at `arena`: pointers
// become device addresses (arena + buffer offset + byte offset), i64 arguments 64-bit integers
// (an integer register's value when the argument reads one), f32 and f64 scalars floats and
// doubles (a register's value from regs), then n.
// The grid is dhx_cuda_grid's for the kernel with max_grid.
void dhx_cuda_marshal(const dhx_plan *plan, const dhx_plan_rank *rank, const dhx_plan_instr *in,
                      CUdeviceptr arena, const double *regs, uint32_t max_grid,
                      dhx_cuda_launch *out);

// The order in which one host thread issues a program's instructions so that every RECORD is
// issued before the WAITs on its event (a CUDA stream waits for the event's latest record at
// the time of the wait call): the streams run in turn, each until it reaches a WAIT whose
// RECORD has not been issued. order[i] is the index of the i-th instruction to issue. The
// plan validator has proved that this ends. Returns false only on a plan that would hang.
bool dhx_cuda_issue_order(const dhx_plan_program *p, uint32_t *order);

// Opens the backend for world rank `r` of `plan` on device `device`, with the PTX text of the
// plan's kernels: loads the driver and cuBLASLt, the module (with the JIT's error log in err on
// failure), the functions, the arena, the streams and events. NULL with err filled on failure.
dhx_cuda *dhx_cuda_open(const dhx_plan *plan, uint32_t r, int device, const char *ptx, char *err,
                        size_t errlen);
// Makes the NCCL communicators of the plan's communicators this rank belongs to (exec_nccl.h),
// with the unique ids broadcast over the MPI communicators of `comms` (dhx_comms_new).
// Collective over the members; needed before running a program with collectives or transfers.
bool dhx_cuda_connect(dhx_cuda *c, dhx_comms *comms, char *err, size_t errlen);
// Issues program `prog` on the device (regs: the step's registers) without waiting: its
// streams start after everything issued before (the previous program, the copies) and stream
// 0 ends after all of them, so programs and copies follow one another on the device while the
// host goes on.
bool dhx_cuda_issue_program(dhx_cuda *c, int prog, const double *regs, char *err,
                            size_t errlen);
// Waits until the device has done everything issued (polling NCCL's asynchronous errors).
bool dhx_cuda_wait(dhx_cuda *c, char *err, size_t errlen);
// Issues program `prog` and waits for it.
bool dhx_cuda_run(dhx_cuda *c, int prog, const double *regs, char *err, size_t errlen);
// A copy between host memory and the arena at byte `offset`, ordered after everything issued
// before, without waiting. A copy to the host lands only after dhx_cuda_wait and needs
// page-locked memory (dhx_cuda_host_alloc) to be asynchronous; a copy from pageable memory
// may reuse it at once (the driver stages it).
bool dhx_cuda_copy_async(dhx_cuda *c, uint64_t offset, void *host, size_t bytes, bool up,
                         char *err, size_t errlen);
void *dhx_cuda_host_alloc(dhx_cuda *c, size_t bytes, char *err, size_t errlen);
void dhx_cuda_host_free(dhx_cuda *c, void *host);
void dhx_cuda_close(dhx_cuda *c);

// LOAD_BATCH's source: fills micro-batch `micro` of the current step into host memory
// (micro_batch·seq tokens and targets), which the backend then copies to the device.
typedef void (*dhx_cuda_loader)(void *ctx, int64_t micro, int32_t *tokens, int32_t *targets);
void dhx_cuda_set_loader(dhx_cuda *c, dhx_cuda_loader loader, void *ctx);

// One instruction issued to its stream, without waiting (tools that step a program one
// instruction at a time, comparing it with the CPU backend); dhx_cuda_sync waits for every
// stream.
bool dhx_cuda_issue(dhx_cuda *c, const dhx_plan_instr *in, const double *regs, char *err,
                    size_t errlen);
bool dhx_cuda_sync(dhx_cuda *c, char *err, size_t errlen);

// Copies between host memory and the device arena at byte `offset`, waiting for them to finish
// (they run between programs: parameters in, checkpoints and losses out).
bool dhx_cuda_upload(dhx_cuda *c, uint64_t offset, const void *host, size_t bytes, char *err,
                     size_t errlen);
bool dhx_cuda_download(dhx_cuda *c, uint64_t offset, void *host, size_t bytes, char *err,
                       size_t errlen);

// The device of this process on its node: the launcher's local rank (OpenMPI's
// OMPI_COMM_WORLD_LOCAL_RANK, Slurm's SLURM_LOCALID, or LOCAL_RANK), modulo the device count;
// 0 when none is set.
int dhx_cuda_local_device(int devices);

// The compute capability's major number of `device` (8 for A100, 9 for H100/H200); 0 when the
// driver cannot tell.
int dhx_cuda_compute_major(int device);

// The datasheet peak FLOP/s (dense; f32 without tensor cores, or bf16) of the GPU the driver
// names `device_name`; 0 for a GPU not in the table (gpu_peaks.c).
double dhx_gpu_peak_flops(const char *device_name, bool bf16);

// For tools (bench/kernels_gpu). The device's name as the driver gives it.
bool dhx_cuda_device_name(dhx_cuda *c, char *name, size_t len, char *err, size_t errlen);
// Issues instruction `in` `reps` times back to back on its stream between two timing events
// and waits: *ms is the device's time for all of them (cuEventElapsedTime).
bool dhx_cuda_time_instr(dhx_cuda *c, const dhx_plan_instr *in, const double *regs, int reps,
                         double *ms, char *err, size_t errlen);
// The same for `reps` device-to-device copies of `bytes` between two buffers it allocates
// (and frees) for the purpose: the device's copy bandwidth.
bool dhx_cuda_time_copy(dhx_cuda *c, size_t bytes, int reps, double *ms, char *err,
                        size_t errlen);
// The text of a PTX file (kernels.ptx), NUL-terminated, to free; NULL with err filled when it
// cannot be read.
char *dhx_cuda_read_ptx(const char *path, char *err, size_t errlen);

#endif
