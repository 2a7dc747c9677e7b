// plan_slice.c — where a buffer's elements sit in the whole tensor it is a slice of (tensor
// parallelism gives each rank a slice of a parameter; plan.h describes it on the buffer).
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

int64_t dhx_buffer_global_elems(const dhx_plan_buffer *b) {
  int64_t n = 1;
  for (uint32_t d = 0; d < b->ndim; d++) n *= b->global_shape[d];
  return n;
}
