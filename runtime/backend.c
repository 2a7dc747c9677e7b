// backend.c — where a rank's programs run: the CPU backend (stream threads over the host arena)
// or the CUDA backend (exec_cuda.c), with the host arena as the device arena's mirror (dhxrt.h).
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "exec_cuda.h"
#include "plan_util.h"

// The loader the CUDA backend calls for LOAD_BATCH: the training loop's.
static void load_batch(void *ctx, int64_t micro, int32_t *tokens, int32_t *targets) {
  dhx_rt *rt = ctx;
  rt->load_batch(rt->load_ctx, micro, tokens, targets);
}

bool dhx_rt_use_cuda(dhx_rt *rt, int device, const char *plan_dir, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/kernels.sm_90.ptx", plan_dir);
  FILE *sm90 = dhx_cuda_compute_major(device) >= 9 ? fopen(path, "rb") : NULL;
  if (sm90)
    fclose(sm90);
  else
    snprintf(path, sizeof path, "%s/kernels.ptx", plan_dir);
  char *ptx = dhx_cuda_read_ptx(path, err, errlen);
  if (!ptx) return false;
  rt->cuda = dhx_cuda_open(rt->plan, (uint32_t)rt->world_rank, device, ptx, err, errlen);
  free(ptx);
  if (rt->cuda && rt->load_batch) dhx_cuda_set_loader(rt->cuda, load_batch, rt);
  return rt->cuda != NULL;
}

bool dhx_rt_connect_device(dhx_rt *rt, char *err, size_t errlen) {
  return !rt->cuda || dhx_cuda_connect(rt->cuda, rt->comms, err, errlen);
}

bool dhx_rt_on_device(const dhx_rt *rt) { return rt->cuda != NULL; }

void dhx_rt_leave_device(dhx_rt *rt) {
  dhx_cuda_close(rt->cuda);
  rt->cuda = NULL;
}

// A device error leaves the ranks' states apart: the run cannot go on, and no rank may wait
// for this one in a collective.
static void device_failed(const dhx_rt *rt, const char *what, const char *why) {
  fprintf(stderr, "dhxrun: error: rank %d: %s on the CUDA device: %s\n", rt->world_rank, what,
          why);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

void dhx_rt_run(dhx_rt *rt, dhx_prog_kind prog) {
  atomic_store(&rt->update_skipped, false);
  if (!rt->cuda) {
    dhx_streams_run(rt->streams, &rt->rank->programs[prog]);
    return;
  }
  char err[4096];
  if (!dhx_cuda_issue_program(rt->cuda, (int)prog, rt->regs, err, sizeof err))
    device_failed(rt, dhx_prog_name(prog), err);
  const dhx_plan_program *p = &rt->rank->programs[prog];
  for (uint32_t i = 0; i < p->ninstrs; i++)
    dhx_comms_count_instr(rt->comms, rt->plan, rt->rank, &p->instrs[i]);
}

static void copy(dhx_rt *rt, int64_t offset, int64_t bytes, bool up) {
  if (!rt->cuda || bytes <= 0) return;
  char err[1024];
  uint8_t *host = rt->arena.base + offset;
  bool ok = up ? dhx_cuda_upload(rt->cuda, (uint64_t)offset, host, (size_t)bytes, err, sizeof err)
               : dhx_cuda_download(rt->cuda, (uint64_t)offset, host, (size_t)bytes, err,
                                   sizeof err);
  if (!ok) device_failed(rt, up ? "copying to the device" : "copying from the device", err);
}

// From pageable memory the driver stages the bytes before it returns: no wait is needed.
void dhx_rt_upload(dhx_rt *rt, int32_t buf) {
  if (buf < 0 || !rt->cuda) return;
  char err[1024];
  const dhx_plan_buffer *b = &rt->rank->buffers[buf];
  if (!dhx_cuda_copy_async(rt->cuda, (uint64_t)b->offset, rt->arena.base + b->offset,
                           (size_t)b->nbytes, true, err, sizeof err))
    device_failed(rt, "copying to the device", err);
}

void dhx_rt_download(dhx_rt *rt, int32_t buf) {
  if (buf >= 0) copy(rt, rt->rank->buffers[buf].offset, rt->rank->buffers[buf].nbytes, false);
}

void dhx_rt_upload_all(dhx_rt *rt) { copy(rt, 0, rt->rank->arena_bytes, true); }
void dhx_rt_download_all(dhx_rt *rt) { copy(rt, 0, rt->rank->arena_bytes, false); }

void dhx_rt_stash(dhx_rt *rt, int32_t buf, int64_t offset, int64_t bytes, void *dst) {
  const uint8_t *src = rt->arena.base + rt->rank->buffers[buf].offset + offset;
  if (!rt->cuda) {
    memcpy(dst, src, (size_t)bytes);
    return;
  }
  char err[1024];
  if (!dhx_cuda_copy_async(rt->cuda, (uint64_t)(src - rt->arena.base), dst, (size_t)bytes, false,
                           err, sizeof err))
    device_failed(rt, "copying from the device", err);
}

void dhx_rt_finish(dhx_rt *rt) {
  char err[4096];
  if (rt->cuda && !dhx_cuda_wait(rt->cuda, err, sizeof err))
    device_failed(rt, "waiting for the device", err);
}

void *dhx_rt_host_alloc(dhx_rt *rt, size_t bytes) {
  char err[1024];
  void *p = rt->cuda ? dhx_cuda_host_alloc(rt->cuda, bytes, err, sizeof err)
                     : calloc(1, bytes ? bytes : 1);
  if (!p) device_failed(rt, "allocating page-locked host memory", rt->cuda ? err : "out of memory");
  return p;
}

void dhx_rt_host_free(dhx_rt *rt, void *p) {
  if (rt->cuda)
    dhx_cuda_host_free(rt->cuda, p);
  else
    free(p);
}

// A mixed-precision plan (any bf16 buffer) runs its GEMMs on bf16 operands, on tensor cores:
// its MFU is against the bf16 peak, an f32 plan's against the f32 one.
static bool stores_bf16(const dhx_plan_rank *rank) {
  for (uint32_t b = 0; b < rank->nbuffers; b++)
    if (rank->buffers[b].dtype == DHX_BF16) return true;
  return false;
}

double dhx_rt_device_peak(dhx_rt *rt, char *source, size_t len) {
  char name[256] = "", err[256];
  if (rt->cuda && !dhx_cuda_device_name(rt->cuda, name, sizeof name, err, sizeof err))
    snprintf(name, sizeof name, "unnamed device");
  bool bf16 = stores_bf16(rt->rank);
  double peak = dhx_gpu_peak_flops(name, bf16);
  if (peak > 0)
    snprintf(source, len, "datasheet dense %s peak of the %s: %.1f TFLOP/s per GPU",
             bf16 ? "bf16" : "f32", name, peak / 1e12);
  else
    snprintf(source, len, "no datasheet peak for '%s' (runtime/gpu_peaks.c)", name);
  return peak;
}
