// checkpoint_gather.c — a checkpoint of the whole model from ranks that each hold part of it.
//
// Checkpoints are always in the global layout (every tensor whole, under its own name), so a
// run may resume on any other layout. With tensor parallelism a parameter's slices live on
// the ranks of a tensor-parallel group: one data-parallel replica (dp_rank 0) sends its pieces
// to rank 0, which places each element by dhx_buffer_whole_index and writes the file with
// dhx_checkpoint_save. Whole tensors, the same on every tensor rank, come from tensor rank 0.
// With sharded optimizer state (zero >= 1) a parameter's moments come from its owner, and a
// buffer cut into ZeRO shards (plan.h: shard_parts) from every data-parallel rank, each placing
// its piece by dhx_buffer_whole_index.
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "safetensors.h"

// Which ranks send a part of a parameter's tensor (the parameter or a moment, buffer x): a ZeRO
// shard (shard_parts > 1) comes from every data-parallel rank, each holding its piece; a whole
// slice from one replica, dp_rank 0 (a moment of sharded optimizer state, zero >= 1, from its
// owner, on any dp_rank). Whole tensors, the same on every tensor rank, come from tensor rank 0.
static bool sends(const dhx_plan *plan, const dhx_plan_rank *r, const dhx_plan_buffer *x) {
  bool moment = x->kind == DHX_BUF_OPT_M || x->kind == DHX_BUF_OPT_V || x->kind == DHX_BUF_MASTER;
  return (x->split_dim >= 0 || r->tp_rank == 0) &&
         (r->dp_rank == 0 || x->shard_parts > 1 || (moment && plan->train.zero >= 1));
}

// The buffers rank section r sends for its buffer `self` (in this order: the parameter, then
// its moments and qWD master); none for buffers that are not parameters.
static int pieces_of(const dhx_plan *plan, const dhx_plan_rank *r, int32_t self, int32_t ids[4]) {
  const dhx_plan_buffer *b = &r->buffers[self];
  if (b->kind != DHX_BUF_PARAM) return 0;
  int32_t parts[4] = {self, b->opt_m, b->opt_v, b->master};
  int n = 0;
  for (int k = 0; k < 4; k++)
    if (parts[k] >= 0 && sends(plan, r, &r->buffers[parts[k]])) ids[n++] = parts[k];
  return n;
}

typedef struct whole {
  dhx_plan *plan;      // one rank holding every tensor whole
  uint8_t *arena;
} whole;

static int32_t find_buffer(const dhx_plan_rank *r, const char *name) {
  for (uint32_t i = 0; i < r->nbuffers; i++)
    if (strcmp(r->buffers[i].name, name) == 0) return (int32_t)i;
  return -1;
}

// A whole-tensor buffer like b (same name, kind, global shape) appended to r.
static int32_t add_whole(dhx_plan_rank *r, const dhx_plan_buffer *b, int64_t *at) {
  dhx_plan_buffer *w = &r->buffers[r->nbuffers];
  *w = *b;
  memcpy(w->shape, b->global_shape, sizeof w->shape);
  w->split_dim = -1;
  w->split_groups = w->split_parts = 1;
  w->split_index = 0;
  w->shard_parts = 1;  // no shard, no padding
  w->shard_index = 0;
  w->nbytes = 4 * dhx_buffer_global_elems(b);
  w->offset = *at;
  w->grad = w->opt_m = w->opt_v = w->master = -1;
  *at += (w->nbytes + DHX_ALIGN - 1) / DHX_ALIGN * DHX_ALIGN;
  return (int32_t)r->nbuffers++;
}

// Rank 0: the layout of the whole model, from every contributing buffer of every rank.
static bool plan_whole(const dhx_plan *plan, whole *w) {
  uint32_t cap = 0;
  for (uint32_t h = 0; h < plan->nranks; h++) cap += plan->ranks[h].nbuffers;
  w->plan = calloc(1, sizeof *w->plan);
  dhx_plan_rank *r = calloc(1, sizeof *r);
  if (!w->plan || !r) return false;
  w->plan->train = plan->train;
  w->plan->nranks = 1;
  w->plan->ranks = r;
  r->buffers = calloc(cap + 1, sizeof *r->buffers);
  if (!r->buffers) return false;
  int64_t at = 0;
  for (uint32_t h = 0; h < plan->nranks; h++) {
    const dhx_plan_rank *src = &plan->ranks[h];
    for (uint32_t i = 0; i < src->nbuffers; i++) {
      int32_t ids[4];
      int n = pieces_of(plan, src, (int32_t)i, ids);
      for (int k = 0; k < n; k++)
        if (find_buffer(r, src->buffers[ids[k]].name) < 0) add_whole(r, &src->buffers[ids[k]], &at);
    }
  }
  for (uint32_t i = 0; i < r->nbuffers; i++) {  // each parameter then its moments in the file
    dhx_plan_buffer *p = &r->buffers[i];
    if (p->kind != DHX_BUF_PARAM) continue;
    char name[DHX_NAME_MAX + 8];
    snprintf(name, sizeof name, "adam_m.%s", p->name);
    p->opt_m = find_buffer(r, name);
    snprintf(name, sizeof name, "adam_v.%s", p->name);
    p->opt_v = find_buffer(r, name);
    snprintf(name, sizeof name, "master.%s", p->name);
    p->master = find_buffer(r, name);
  }
  r->arena_bytes = at;
  w->arena = calloc((size_t)at + 1, 1);
  return w->arena != NULL;
}

static void free_whole(whole *w) {
  if (w->plan) {
    if (w->plan->ranks) free(w->plan->ranks[0].buffers);
    free(w->plan->ranks);
  }
  free(w->plan);
  free(w->arena);
}

// Places the elements of b, a slice or shard (data in `from`), into its whole tensor in w;
// padding has no place.
static void place(whole *w, const dhx_plan_buffer *b, const float *from) {
  dhx_plan_rank *r = &w->plan->ranks[0];
  const dhx_plan_buffer *to = &r->buffers[find_buffer(r, b->name)];
  float *dst = (float *)(w->arena + to->offset);
  int64_t n = dhx_buffer_elems(b);
  for (int64_t i = 0; i < n; i++) {
    int64_t at = dhx_buffer_whole_index(b, i);
    if (at >= 0) dst[at] = from[i];
  }
}

// Rank 0 receives every rank's pieces in the order they send them: rank by rank, buffer by
// buffer, each parameter then its moments.
static bool gather_pieces(const dhx_plan *plan, const uint8_t *arena, whole *w, MPI_Comm comm) {
  int64_t most = 0;
  for (uint32_t h = 0; h < plan->nranks; h++)
    for (uint32_t i = 0; i < plan->ranks[h].nbuffers; i++)
      if (plan->ranks[h].buffers[i].nbytes > most) most = plan->ranks[h].buffers[i].nbytes;
  float *tmp = malloc((size_t)most + 4);
  if (!tmp) return false;
  for (uint32_t h = 0; h < plan->nranks; h++) {
    const dhx_plan_rank *src = &plan->ranks[h];
    for (uint32_t i = 0; i < src->nbuffers; i++) {
      int32_t ids[4];
      int n = pieces_of(plan, src, (int32_t)i, ids);
      for (int k = 0; k < n; k++) {
        const dhx_plan_buffer *b = &src->buffers[ids[k]];
        const float *data = (const float *)(arena + b->offset);
        if (h != 0) {
          MPI_Recv(tmp, (int)(b->nbytes / 4), MPI_FLOAT, (int)h, 0, comm, MPI_STATUS_IGNORE);
          data = tmp;
        }
        place(w, b, data);
      }
    }
  }
  free(tmp);
  return true;
}

static void send_pieces(const dhx_plan *plan, const dhx_plan_rank *r, const uint8_t *arena,
                        MPI_Comm comm) {
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    int32_t ids[4];
    int n = pieces_of(plan, r, (int32_t)i, ids);
    for (int k = 0; k < n; k++) {
      const dhx_plan_buffer *b = &r->buffers[ids[k]];
      MPI_Send(arena + b->offset, (int)(b->nbytes / 4), MPI_FLOAT, 0, 0, comm);
    }
  }
}

// Whether some rank holds a ZeRO shard of a tensor rather than all of it.
static bool has_shards(const dhx_plan *plan) {
  for (uint32_t h = 0; h < plan->nranks; h++)
    for (uint32_t i = 0; i < plan->ranks[h].nbuffers; i++)
      if (plan->ranks[h].buffers[i].shard_parts > 1) return true;
  return false;
}

bool dhx_checkpoint_save_all(const dhx_plan *plan, uint32_t rank, const uint8_t *arena,
                             const char *path, int64_t step, char *err, size_t errlen) {
  if (plan->train.tp == 1 && plan->train.pp == 1 &&
      (plan->train.zero == 0 || plan->train.dp == 1) && !has_shards(plan))
    // rank 0 holds every tensor whole (maybe padded)
    return rank != 0 || dhx_checkpoint_save(plan, 0, arena, path, step, err, errlen);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);  // keeps these messages apart from any others
  bool ok = true;
  if (rank == 0) {
    whole w = {0};
    ok = plan_whole(plan, &w) && gather_pieces(plan, arena, &w, comm);
    if (!ok) dhx_st_fail(path, err, errlen, "out of memory assembling the checkpoint");
    else ok = dhx_checkpoint_save(w.plan, 0, w.arena, path, step, err, errlen);
    free_whole(&w);
  } else {
    send_pieces(plan, &plan->ranks[rank], arena, comm);
  }
  MPI_Comm_free(&comm);
  return ok;
}
