// rt.c — one rank's runtime: its arena, the kernels, the worker pool, the stream threads and
// the communicators, assembled from the plan.
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "dhxrt.h"

bool dhx_rt_init(dhx_rt *rt, const dhx_plan *plan, int world_rank, const char *so_path,
                 int threads, char *err, size_t errlen) {
  memset(rt, 0, sizeof *rt);
  rt->plan = plan;
  rt->world_rank = world_rank;
  rt->rank = &plan->ranks[world_rank];
  rt->threads = threads < 1 ? 1 : threads;
  rt->regs[DHX_REG_CLIP_SCALE] = 1.0;
  if (!dhx_rank_arena_init(&rt->arena, rt->rank->arena_bytes, err, errlen)) return false;
  if (!dhx_kernels_load(&rt->kernels, plan, so_path, err, errlen)) return false;
  rt->pool = dhx_pool_new(rt->threads);
  uint32_t nstreams = 1, nevents = 0;
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_plan_program *prog = &rt->rank->programs[p];
    if (prog->nstreams > nstreams) nstreams = prog->nstreams;
    if (prog->nevents > nevents) nevents = prog->nevents;
  }
  rt->streams = dhx_streams_new(nstreams, nevents, dhx_exec_cpu_post, dhx_exec_cpu_complete, rt);
  if (!rt->pool || !rt->streams) {
    snprintf(err, errlen, "cannot start the worker and stream threads");
    return false;
  }
  // OpenBLAS runs single-threaded unless a GEMM asks for its threads (blas_threads.c), which it
  // does while the pool runs nothing else: exec_cpu.c splits the other GEMMs across the same
  // worker pool as the kernels, so the cores this rank was given do one thing at a time.
  openblas_set_num_threads(1);
  rt->blas = dhx_blas_shapes_new(dhx_pool_threads(rt->pool));
  if (!rt->blas) {
    snprintf(err, errlen, "out of memory for the table of GEMM shapes");
    return false;
  }
  return true;
}

void dhx_rt_connect(dhx_rt *rt) { rt->comms = dhx_comms_new(rt->plan, rt->world_rank); }

void dhx_rt_free(dhx_rt *rt) {
  dhx_rt_leave_device(rt);
  dhx_streams_free(rt->streams);  // first: its threads use everything below
  dhx_pool_free(rt->pool);
  dhx_blas_shapes_free(rt->blas);
  dhx_comms_free(rt->comms);
  dhx_kernels_unload(&rt->kernels);
  dhx_rank_arena_free(&rt->arena);
  memset(rt, 0, sizeof *rt);
}

void *dhx_rt_buffer(const dhx_rt *rt, int32_t id) {
  return rt->arena.base + rt->rank->buffers[id].offset;
}

int32_t dhx_rt_find(const dhx_rt *rt, dhx_buf_kind kind) {
  for (uint32_t i = 0; i < rt->rank->nbuffers; i++)
    if (rt->rank->buffers[i].kind == (uint32_t)kind) return (int32_t)i;
  return -1;
}
