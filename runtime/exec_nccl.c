// exec_nccl.c — the CUDA backend's collectives and transfers through NCCL (exec_nccl.h).
//
// The communicators mirror comm.c's MPI ones: one per (plan communicator, stream), members in
// the plan's order, so a member's NCCL rank is its index in the plan's list, the peers of
// SEND/RECV are NCCL peers as they are, and each stream's operations meet the same sequence
// on every member (the plan validator's guarantee) without the streams' interleaving, which
// differs from rank to rank, mattering. NCCL has no tags: a SEND meets the peer's next RECV
// from this rank on the same communicator, which is the order the validator checked.
//
// Pipeline stages send activations one way and gradients the other on streams of their own,
// so the communicators of the two directions differ and both sides sending first does not
// deadlock; transfers one stream issues back to back still go in one NCCL group, so that two
// members whose stream each sends and then receives on one communicator still meet.
//
// Elements are f32 or bf16 (nccl_type is the one place that maps the plan's element types).
#include "exec_nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCCL_FLOAT32 7      // ncclDataType_t ncclFloat32
#define NCCL_BFLOAT16 9     // ncclDataType_t ncclBfloat16
#define NCCL_SUM 0          // ncclRedOp_t ncclSum
#define NCCL_IN_PROGRESS 7  // ncclResult_t ncclInProgress: not an error

typedef struct nccl_comm {
  ncclComm_t comm;  // NULL where this rank has none
  int size, rank;   // members, and this rank's index among them
} nccl_comm;

struct dhx_nccl {
  dhx_nccl_api api;
  uint32_t world_rank;
  uint32_t n;                           // plan communicators
  nccl_comm (*comms)[DHX_MAX_STREAMS];  // [plan communicator][stream]
  bool aborted;  // after an asynchronous error: no communicator is usable
};

// ---- errors ------------------------------------------------------------------------------------

static bool nccl_ok(const dhx_nccl *n, ncclResult_t r, const char *call, const char *what,
                    char *err, size_t errlen) {
  if (r == 0) return true;
  const char *s = n->api.ncclGetErrorString ? n->api.ncclGetErrorString(r) : NULL;
  snprintf(err, errlen, "world rank %u: %s failed%s%s: %s (NCCL error %d)", n->world_rank, call,
           what[0] ? " for " : "", what, s ? s : "no description", r);
  return false;
}

// ---- communicators -----------------------------------------------------------------------------

// Whether rank `r`'s programs exchange over plan communicator `comm` on `stream`.
static bool exchanges_on(const dhx_plan_rank *r, int32_t comm, uint32_t stream) {
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++) {
      const dhx_plan_instr *in = &r->programs[p].instrs[i];
      if (dhx_op_on_comm(in->op) && in->stream == stream && dhx_rank_comm(r, in->comm) == comm)
        return true;
    }
  return false;
}

// This rank's place in (comm, stream), from comm.c, or a communicator of its own where the
// plan communicator has it as its only member and its programs use it: size 0 where it has none.
static nccl_comm place_in(const dhx_plan *plan, uint32_t world_rank, dhx_comms *comms,
                          uint32_t c, uint32_t s) {
  nccl_comm m = {0};
  m.size = dhx_comms_members(comms, (int)c, (int)s, &m.rank);
  const dhx_plan_comm *pc = &plan->comms[c];
  if (m.size == 0 && pc->nranks == 1 && pc->ranks[0] == (int32_t)world_rank &&
      exchanges_on(&plan->ranks[world_rank], (int32_t)c, s))
    m = (nccl_comm){.size = 1, .rank = 0};
  return m;
}

// Member 0 makes the unique id of every communicator and broadcasts it over its MPI
// communicator; every rank walks (communicator, stream) in the same ascending order, as comm.c
// created them, so the broadcasts of overlapping communicators meet.
static bool share_ids(dhx_nccl *n, dhx_comms *comms, ncclUniqueId *ids, char *err,
                      size_t errlen) {
  for (uint32_t c = 0; c < n->n; c++)
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
      nccl_comm *m = &n->comms[c][s];
      if (m->size == 0) continue;
      ncclUniqueId *id = &ids[c * DHX_MAX_STREAMS + s];
      if (m->rank == 0 && !nccl_ok(n, n->api.ncclGetUniqueId(id), "ncclGetUniqueId", "", err,
                                   errlen))
        return false;
      if (m->size > 1) dhx_comms_bcast(comms, (int)c, (int)s, id, (int)sizeof *id);
    }
  return true;
}

// One group for all: NCCL requires it when one thread initialises several communicators of
// overlapping members, each init waiting for the others' members otherwise.
static bool init_all(dhx_nccl *n, const ncclUniqueId *ids, char *err, size_t errlen) {
  if (!nccl_ok(n, n->api.ncclGroupStart(), "ncclGroupStart", "", err, errlen)) return false;
  bool ok = true;
  char what[64];
  for (uint32_t c = 0; c < n->n && ok; c++)
    for (uint32_t s = 0; s < DHX_MAX_STREAMS && ok; s++) {
      nccl_comm *m = &n->comms[c][s];
      if (m->size == 0) continue;
      snprintf(what, sizeof what, "communicator %u stream %u", c, s);
      ok = nccl_ok(n, n->api.ncclCommInitRank(&m->comm, m->size, ids[c * DHX_MAX_STREAMS + s],
                                              m->rank),
                   "ncclCommInitRank", what, err, errlen);
    }
  ncclResult_t end = n->api.ncclGroupEnd();
  return ok && nccl_ok(n, end, "ncclGroupEnd", "the communicators' initialisation", err, errlen);
}

dhx_nccl *dhx_nccl_open(const dhx_plan *plan, uint32_t world_rank, dhx_comms *comms, char *err,
                        size_t errlen) {
  dhx_nccl *n = calloc(1, sizeof *n);
  ncclUniqueId *ids = calloc((size_t)plan->ncomms * DHX_MAX_STREAMS + 1, sizeof *ids);
  if (n) n->comms = calloc(plan->ncomms ? plan->ncomms : 1, sizeof *n->comms);
  if (!n || !ids || !n->comms) {
    snprintf(err, errlen, "world rank %u: out of memory for the NCCL communicators", world_rank);
    free(ids);
    dhx_nccl_close(n);
    return NULL;
  }
  n->world_rank = world_rank;
  n->n = plan->ncomms;
  uint32_t needed = 0;  // without communicators to make, NCCL need not even be installed
  for (uint32_t c = 0; c < n->n; c++)
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
      n->comms[c][s] = place_in(plan, world_rank, comms, c, s);
      needed += n->comms[c][s].size > 0;
    }
  char why[512];
  bool ok = needed == 0 || dhx_load_nccl(&n->api, why, sizeof why);
  if (!ok) snprintf(err, errlen, "world rank %u: no NCCL: %s", world_rank, why);
  if (ok && needed > 0) ok = share_ids(n, comms, ids, err, errlen) && init_all(n, ids, err, errlen);
  free(ids);
  if (!ok) {
    dhx_nccl_close(n);
    return NULL;
  }
  return n;
}

void dhx_nccl_close(dhx_nccl *n) {
  if (!n) return;
  for (uint32_t c = 0; c < n->n && n->comms; c++)
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++)
      if (n->comms[c][s].comm) n->api.ncclCommDestroy(n->comms[c][s].comm);
  free(n->comms);
  free(n);
}

bool dhx_nccl_check(dhx_nccl *n, char *err, size_t errlen) {
  if (!n || n->aborted) return true;
  for (uint32_t c = 0; c < n->n; c++)
    for (uint32_t s = 0; s < DHX_MAX_STREAMS; s++) {
      ncclComm_t comm = n->comms[c][s].comm;
      ncclResult_t async = 0;
      if (!comm) continue;
      char what[64];
      snprintf(what, sizeof what, "communicator %u stream %u", c, s);
      ncclResult_t r = n->api.ncclCommGetAsyncError(comm, &async);
      if (r == 0 && (async == 0 || async == NCCL_IN_PROGRESS)) continue;
      if (r == 0) nccl_ok(n, async, "an operation", what, err, errlen);
      else nccl_ok(n, r, "ncclCommGetAsyncError", what, err, errlen);
      n->aborted = true;
      size_t len = strlen(err);
      if (len < errlen) snprintf(err + len, errlen - len, "; its communicators were aborted");
      for (uint32_t a = 0; a < n->n; a++)  // abort also destroys: nothing is left to close
        for (uint32_t t = 0; t < DHX_MAX_STREAMS; t++)
          if (n->comms[a][t].comm) {
            n->api.ncclCommAbort(n->comms[a][t].comm);
            n->comms[a][t].comm = NULL;
          }
      return false;
    }
  return true;
}

// ---- instructions ------------------------------------------------------------------------------

// The NCCL type and size of a plan element type: the one place a new type (bf16) goes.
static bool nccl_type(uint32_t dtype, int *type, size_t *bytes) {
  if (dtype == DHX_BF16) {
    *type = NCCL_BFLOAT16;
    *bytes = 2;
    return true;
  }
  if (dtype != DHX_F32) return false;
  *type = NCCL_FLOAT32;
  *bytes = 4;
  return true;
}

static bool is_transfer(uint32_t op) { return op == DHX_OP_SEND || op == DHX_OP_RECV; }

static size_t elem_bytes(uint32_t dtype) {
  int type;
  size_t bytes = 4;
  return nccl_type(dtype, &type, &bytes) ? bytes : 4;
}

// Whether two transfers of one group touch the same bytes with one of them receiving: issued
// together they would run in no fixed order, so the second waits for the next group.
static bool conflict(const dhx_plan_instr *a, const dhx_plan_instr *b) {
  const dhx_plan_arg *x = &a->args[0], *y = &b->args[0];
  int64_t xn = a->args[1].i * (int64_t)elem_bytes(a->dtype);
  int64_t yn = b->args[1].i * (int64_t)elem_bytes(b->dtype);
  return (a->op == DHX_OP_RECV || b->op == DHX_OP_RECV) && x->buf == y->buf && x->i < y->i + yn &&
         y->i < x->i + xn;
}

uint32_t dhx_nccl_group_length(const dhx_plan_program *p, const uint32_t *order, uint32_t i,
                               uint32_t n) {
  const dhx_plan_instr *first = &p->instrs[order[i]];
  if (!dhx_op_on_comm(first->op)) return 0;
  if (!is_transfer(first->op)) return 1;
  uint32_t k = 1;
  for (; i + k < n; k++) {
    const dhx_plan_instr *in = &p->instrs[order[i + k]];
    if (!is_transfer(in->op) || in->stream != first->stream) break;
    bool conflicts = false;
    for (uint32_t j = 0; j < k; j++)
      conflicts = conflicts || conflict(&p->instrs[order[i + j]], in);
    if (conflicts) break;
  }
  return k;
}

typedef struct call_site {
  dhx_nccl *n;
  const dhx_plan_rank *rank;
  CUdeviceptr arena;
  CUstream s;
} call_site;

static void *region(const call_site *at, const dhx_plan_arg *a) {
  return (void *)(uintptr_t)(at->arena + (CUdeviceptr)at->rank->buffers[a->buf].offset +
                             (CUdeviceptr)a->i);
}

// The NCCL calls of one instruction on its communicator m (element type `type` of `bytes`).
static ncclResult_t call(const call_site *at, const dhx_plan_instr *in, const nccl_comm *m,
                         int type, size_t bytes, const char **name) {
  const dhx_nccl_api *api = &at->n->api;
  size_t count = (size_t)in->args[dhx_op_count_arg(in->op)].i, part = count / (size_t)m->size;
  char *in0 = region(at, &in->args[0]);
  switch (in->op) {
    case DHX_OP_ALLREDUCE:
      *name = "ncclAllReduce";
      return api->ncclAllReduce(in0, in0, count, type, NCCL_SUM, m->comm, at->s);
    case DHX_OP_REDUCE_SCATTER:
      *name = "ncclReduceScatter";
      return api->ncclReduceScatter(in0, region(at, &in->args[1]), part, type, NCCL_SUM, m->comm,
                                    at->s);
    case DHX_OP_ALL_GATHER:
      *name = "ncclAllGather";
      return api->ncclAllGather(in0, region(at, &in->args[1]), part, type, m->comm, at->s);
    case DHX_OP_SEND:
      *name = "ncclSend";
      return api->ncclSend(in0, count, type, (int)in->args[2].i, m->comm, at->s);
    case DHX_OP_RECV:
      *name = "ncclRecv";
      return api->ncclRecv(in0, count, type, (int)in->args[2].i, m->comm, at->s);
    default: {  // ALL_TO_ALL: block j to member j, member j's block i here (self included)
      char *out = region(at, &in->args[1]);
      ncclResult_t r = 0;
      *name = "ncclSend/ncclRecv of an all-to-all";
      for (int j = 0; j < m->size && r == 0; j++) {
        r = api->ncclSend(in0 + (size_t)j * part * bytes, part, type, j, m->comm, at->s);
        if (r == 0)
          r = api->ncclRecv(out + (size_t)j * part * bytes, part, type, j, m->comm, at->s);
      }
      return r;
    }
  }
}

// Issues one instruction (inside the caller's group).
static bool issue_one(const call_site *at, const dhx_plan_instr *in, char *err, size_t errlen) {
  dhx_nccl *n = at->n;
  int32_t c = dhx_rank_comm(at->rank, in->comm);
  char what[DHX_NAME_MAX + 64];
  snprintf(what, sizeof what, "'%s' (communicator %d stream %u)", dhx_instr_note(in), c, in->stream);
  const nccl_comm *m = c >= 0 && (uint32_t)c < n->n ? &n->comms[c][in->stream] : NULL;
  if (!m || !m->comm) {
    snprintf(err, errlen, "world rank %u: no NCCL communicator for %s%s", n->world_rank, what,
             n->aborted ? ": they were aborted after an error" : "");
    return false;
  }
  int type = 0;
  size_t bytes = 0;
  if (!nccl_type(in->dtype, &type, &bytes)) {
    snprintf(err, errlen, "world rank %u: NCCL has no element type %u for %s", n->world_rank,
             in->dtype, what);
    return false;
  }
  const char *name = "NCCL";
  ncclResult_t r = call(at, in, m, type, bytes, &name);
  return nccl_ok(n, r, name, what, err, errlen);
}

bool dhx_nccl_issue(dhx_nccl *n, const dhx_plan_rank *rank, CUdeviceptr arena,
                    const dhx_plan_instr *instrs, const uint32_t *order, uint32_t k, CUstream s,
                    char *err, size_t errlen) {
  if (!n) {
    snprintf(err, errlen, "'%s' exchanges over a communicator, but the CUDA backend was opened "
             "without NCCL communicators (dhx_cuda_connect)", dhx_instr_note(&instrs[order[0]]));
    return false;
  }
  call_site at = {n, rank, arena, s};
  if (!nccl_ok(n, n->api.ncclGroupStart(), "ncclGroupStart", "", err, errlen)) return false;
  bool ok = true;
  for (uint32_t j = 0; j < k && ok; j++) ok = issue_one(&at, &instrs[order[j]], err, errlen);
  ncclResult_t end = n->api.ncclGroupEnd();  // closed even after an error, as NCCL requires
  return ok && nccl_ok(n, end, "ncclGroupEnd", dhx_instr_note(&instrs[order[0]]), err, errlen);
}
