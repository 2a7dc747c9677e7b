// plan_slice.c — where a buffer's elements sit in the whole tensor it is part of: tensor
// parallelism gives each rank a slice of a parameter, and ZeRO cuts that slice into flat
// shards, one per data-parallel rank, padded at the end (plan.h describes both on the buffer).
// Initialisation and checkpoints work on whole tensors through this mapping, so they do not
// depend on the layout.
#include "plan_util.h"

int64_t dhx_buffer_global_index(const dhx_plan_buffer *b, int64_t i) {
  int32_t sd = b->split_dim;
  if (sd < 0) return i;
  int64_t inner = 1;
  for (uint32_t d = (uint32_t)sd + 1; d < b->ndim; d++) inner *= b->shape[d];
  int64_t local = b->shape[sd], whole = b->global_shape[sd];
  int64_t outer = i / (local * inner), rest = i % (local * inner);
  int64_t j = rest / inner, k = rest % inner;
  // j is in group j / per; within it, this buffer's slice starts at split_index * per.
  int64_t per = local / b->split_groups, group = j / per;
  int64_t gj = group * (whole / b->split_groups) + (int64_t)b->split_index * per + j % per;
  return (outer * whole + gj) * inner + k;
}

int64_t dhx_buffer_whole_index(const dhx_plan_buffer *b, int64_t i) {
  int64_t k = (int64_t)b->shard_index * dhx_buffer_elems(b) + i;  // the element of the slice
  return k < dhx_buffer_slice_elems(b) ? dhx_buffer_global_index(b, k) : -1;
}

int64_t dhx_buffer_elems(const dhx_plan_buffer *b) {
  int64_t size = dhx_dtype_size(b->dtype);
  return size ? b->nbytes / size : 0;
}

int64_t dhx_buffer_slice_elems(const dhx_plan_buffer *b) {
  int64_t n = 1;
  for (uint32_t d = 0; d < b->ndim; d++) n *= b->shape[d];
  return n;
}

bool dhx_buffer_is_slice(const dhx_plan_buffer *b) {
  return b->shard_parts == 1 && dhx_buffer_elems(b) == dhx_buffer_slice_elems(b);
}

int64_t dhx_buffer_global_elems(const dhx_plan_buffer *b) {
  int64_t n = 1;
  for (uint32_t d = 0; d < b->ndim; d++) n *= b->global_shape[d];
  return n;
}
