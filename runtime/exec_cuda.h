// exec_cuda.h — the CUDA backend's host side: a rank's plan on one device through the driver
// API and cuBLASLt (exec_cuda.c), its collectives and transfers through NCCL (exec_nccl.c).
// What runs today: module loading, the arena, a CUDA stream per plan stream, events, kernel
// launches, memsets, GEMMs, and (after dhx_cuda_connect) the collectives and transfers; batch
// loading and the gradient norm are refused by name until the backend grows them.
#ifndef DHX_EXEC_CUDA_H
#define DHX_EXEC_CUDA_H

#include "dhxrt.h"
#include "gpu_api.h"
#include "plan.h"

#define DHX_CUDA_BLOCK 256  // threads per block of a kernel launch; grid = ceil(n / block)

typedef struct dhx_cuda dhx_cuda;

// A kernel instruction's launch: its typed parameter values (one 8-byte slot each, the index
// space n last) and pointers to them as cuLaunchKernel takes them, and the grid.
typedef struct dhx_cuda_launch {
  uint64_t slots[DHX_MAX_ARGS + 1];
  void *params[DHX_MAX_ARGS + 1];
  uint32_t nparams;
  uint32_t grid, block;
} dhx_cuda_launch;

// Marshals kernel instruction `in` of `rank`'s plan for a device arena at `arena`: pointers
// become device addresses (arena + buffer offset + byte offset), i64 arguments 64-bit integers
// (an integer register's value when the argument reads one), f32 and f64 scalars floats and
// doubles (a register's value from regs), then n.
void dhx_cuda_marshal(const dhx_plan *plan, const dhx_plan_rank *rank, const dhx_plan_instr *in,
                      CUdeviceptr arena, const double *regs, dhx_cuda_launch *out);

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
// Issues program `prog` on the device (regs: the step's registers) and waits for it to finish,
// polling NCCL for asynchronous errors meanwhile: on one the communicators are aborted and the
// message names the world rank and the communicator.
bool dhx_cuda_run(dhx_cuda *c, int prog, const double *regs, char *err, size_t errlen);
void dhx_cuda_close(dhx_cuda *c);

// The device of this process on its node: the launcher's local rank (OpenMPI's
// OMPI_COMM_WORLD_LOCAL_RANK, Slurm's SLURM_LOCALID, or LOCAL_RANK), modulo the device count;
// 0 when none is set.
int dhx_cuda_local_device(int devices);

#endif
