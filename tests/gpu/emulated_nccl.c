// emulated_nccl.c — a stand-in libnccl that moves the data with MPI, for the emulated driver of
// emulated_cuda.c (device memory is host memory, work runs when it is issued): every rank of
// an mpirun runs the CUDA backend on the host, and the backend's NCCL calls move real data, so
// multi-rank training on the CUDA backend is checked against the CPU backend without a GPU.
// MPI is initialised by dhxrun (MPI_THREAD_MULTIPLE) before any call comes here.
//
// A unique id holds its maker's world rank and a counter of that process. ncclCommInitRank
// needs no collective over MPI_COMM_WORLD, which only the members call: the members send their
// (rank, world rank) to member 0 on a tag of the id, member 0 sends the full list back, and the
// members make an MPI communicator of the group. As the emulated device does its work at issue
// time, so does this library: calls inside ncclGroupStart/End wait for ncclGroupEnd and then run
// in call order — initialisations and collectives as blocking MPI calls on the communicator,
// sends and receives all posted before the one wait, so two peers that both send first meet.
// A call outside a group is a group of one. Only what the backend uses: f32 and the sum.
#include <limits.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_error_string.h"

enum { SUCCESS = 0, SYSTEM_ERROR = 2, INTERNAL_ERROR = 3, INVALID_ARGUMENT = 4, INVALID_USAGE = 5 };
enum { FLOAT32 = 7, SUM = 0 };
#define ID_MAGIC "dhxemu1"
#define ID_TAG_BASE 7000   // tags of the initialisations' messages on MPI_COMM_WORLD ...
#define ID_TAG_RANGE 20000  // ... below 32767, the least MPI_TAG_UB an MPI may have

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct id_fields {  // what this library writes into ncclUniqueId.internal
  char magic[8];
  int world_rank;  // the maker's, member 0 of the communicator
  int counter;
} id_fields;
typedef struct ncclComm {
  MPI_Comm comm;
  int nranks, rank;
} emu_comm;

typedef enum { OP_INIT, OP_ALL_REDUCE, OP_REDUCE_SCATTER, OP_ALL_GATHER, OP_SEND, OP_RECV } op_kind;
typedef struct op {
  op_kind kind;
  emu_comm **out;   // OP_INIT: where the communicator goes
  ncclUniqueId id;  // OP_INIT
  int nranks, rank;
  const void *send;
  void *recv;
  size_t count;  // elements: per member for the reduce-scatter's output and the all-gather's input
  int peer;
  emu_comm *comm;
} op;

// The calls of the group being built, per thread as in NCCL.
static _Thread_local struct {
  int depth;
  op *ops;
  size_t n, cap;
  int error;  // the first argument error of the group, returned by its ncclGroupEnd
} group;
static atomic_int ids_made;

int ncclGetVersion(int *v) {
  *v = 22809;
  return SUCCESS;
}

const char *ncclGetErrorString(int r) { return nccl_error_string(r); }

static int world_rank(void) {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int ncclGetUniqueId(ncclUniqueId *id) {
  id_fields f = {ID_MAGIC, world_rank(), atomic_fetch_add(&ids_made, 1)};
  memset(id, 0, sizeof *id);
  memcpy(id->internal, &f, sizeof f);
  return SUCCESS;
}

// ---- groups ------------------------------------------------------------------------------------

int ncclGroupEnd(void);

int ncclGroupStart(void) {
  group.depth++;
  return SUCCESS;
}

static void add(op o) {
  if (group.n == group.cap) {
    size_t cap = group.cap ? 2 * group.cap : 16;
    op *ops = realloc(group.ops, cap * sizeof *ops);
    if (!ops) {
      if (!group.error) group.error = SYSTEM_ERROR;
      return;
    }
    group.ops = ops;
    group.cap = cap;
  }
  group.ops[group.n++] = o;
}

// A call's operation, as a group of one outside a group; `error` refuses it (its arguments).
static int queue(op o, int error) {
  ncclGroupStart();
  if (error && !group.error) group.error = error;
  if (!error) add(o);
  int r = ncclGroupEnd();
  return error ? error : r;
}

static int mpi_ok(int rc) { return rc == MPI_SUCCESS ? SUCCESS : SYSTEM_ERROR; }

// ---- communicators -----------------------------------------------------------------------------

// Member 0 learns every member's world rank and sends back the list (`worlds`, by rank).
static int exchange_world_ranks(const op *o, int root, int tag, int *worlds) {
  int me = world_rank();
  if (o->rank != 0) {
    int pair[2] = {o->rank, me};
    int rc = MPI_Send(pair, 2, MPI_INT, root, tag, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS)
      rc = MPI_Recv(worlds, o->nranks, MPI_INT, root, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return mpi_ok(rc);
  }
  for (int i = 0; i < o->nranks; i++) worlds[i] = -1;
  worlds[0] = me;
  for (int i = 1; i < o->nranks; i++) {
    int pair[2];
    int rc = MPI_Recv(pair, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return SYSTEM_ERROR;
    if (pair[0] <= 0 || pair[0] >= o->nranks || worlds[pair[0]] != -1) return INVALID_USAGE;
    worlds[pair[0]] = pair[1];
  }
  for (int i = 1; i < o->nranks; i++) {
    int rc = MPI_Send(worlds, o->nranks, MPI_INT, worlds[i], tag, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return SYSTEM_ERROR;
  }
  return SUCCESS;
}

static int make_mpi_comm(const int *worlds, int nranks, int tag, MPI_Comm *comm) {
  MPI_Group world, members;
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  int rc = MPI_Group_incl(world, nranks, worlds, &members);
  if (rc == MPI_SUCCESS) {
    rc = MPI_Comm_create_group(MPI_COMM_WORLD, members, tag, comm);
    MPI_Group_free(&members);
  }
  MPI_Group_free(&world);
  return mpi_ok(rc);
}

static int init_comm(const op *o) {
  id_fields f;
  memcpy(&f, o->id.internal, sizeof f);
  if (memcmp(f.magic, ID_MAGIC, sizeof f.magic) != 0 || (o->rank == 0 && f.world_rank != world_rank()))
    return INVALID_ARGUMENT;  // not an id of this library, or member 0 is not its maker
  int tag = ID_TAG_BASE + f.counter % ID_TAG_RANGE;
  emu_comm *c = calloc(1, sizeof *c);
  int *worlds = calloc((size_t)o->nranks, sizeof *worlds);
  int r = c && worlds ? exchange_world_ranks(o, f.world_rank, tag, worlds) : SYSTEM_ERROR;
  if (r == SUCCESS) r = make_mpi_comm(worlds, o->nranks, tag, &c->comm);
  free(worlds);
  if (r != SUCCESS) {
    free(c);
    return r;
  }
  c->nranks = o->nranks;
  c->rank = o->rank;
  *o->out = c;
  return SUCCESS;
}

int ncclCommInitRank(emu_comm **comm, int nranks, ncclUniqueId id, int rank) {
  bool bad = !comm || nranks < 1 || rank < 0 || rank >= nranks;
  return queue((op){.kind = OP_INIT, .out = comm, .id = id, .nranks = nranks, .rank = rank},
               bad ? INVALID_ARGUMENT : SUCCESS);
}

static int free_comm(emu_comm *c) {
  if (!c) return INVALID_ARGUMENT;
  int rc = MPI_Comm_free(&c->comm);
  free(c);
  return mpi_ok(rc);
}

int ncclCommDestroy(emu_comm *c) { return free_comm(c); }
int ncclCommAbort(emu_comm *c) { return free_comm(c); }

int ncclCommGetAsyncError(emu_comm *c, int *error) {
  if (!c || !error) return INVALID_ARGUMENT;
  *error = SUCCESS;  // every operation finished when it was issued
  return SUCCESS;
}

// ---- collectives and transfers -----------------------------------------------------------------

// Whether [a, a+an) and [b, b+bn) share a byte.
static bool overlap(const void *a, size_t an, const void *b, size_t bn) {
  uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
  return x < y + bn && y < x + an;
}

// `bytes` of `src` in a buffer of their own, where they overlap an output MPI may not alias.
static const void *apart(const void *src, size_t bytes, void **copy) {
  *copy = malloc(bytes ? bytes : 1);
  if (*copy) memcpy(*copy, src, bytes);
  return *copy;
}

static int collective(const op *o) {
  MPI_Comm comm = o->comm->comm;
  int n = (int)o->count, size = o->comm->nranks;
  size_t part = o->count * sizeof(float), whole = part * (size_t)size;
  void *copy = NULL;
  const void *send = o->send;
  int rc;
  switch (o->kind) {
    case OP_ALL_REDUCE:
      if (send == o->recv) send = MPI_IN_PLACE;
      else if (overlap(send, part, o->recv, part)) send = apart(send, part, &copy);
      if (!send) return SYSTEM_ERROR;
      rc = MPI_Allreduce(send, o->recv, n, MPI_FLOAT, MPI_SUM, comm);
      break;
    case OP_REDUCE_SCATTER:
      if (overlap(send, whole, o->recv, part) && !(send = apart(send, whole, &copy)))
        return SYSTEM_ERROR;
      rc = MPI_Reduce_scatter_block(send, o->recv, n, MPI_FLOAT, MPI_SUM, comm);
      break;
    default:  // OP_ALL_GATHER: in place where the input is this member's block of the output
      if (send == (const char *)o->recv + (size_t)o->comm->rank * part) send = MPI_IN_PLACE;
      else if (overlap(send, part, o->recv, whole)) send = apart(send, part, &copy);
      if (!send) return SYSTEM_ERROR;
      rc = MPI_Allgather(send, n, MPI_FLOAT, o->recv, n, MPI_FLOAT, comm);
      break;
  }
  free(copy);
  return mpi_ok(rc);
}

// The arguments' error of a collective or transfer, SUCCESS where it can run.
static int check(size_t count, int type, int op, const emu_comm *c) {
  return !c || type != FLOAT32 || op != SUM || count > INT_MAX ? INVALID_ARGUMENT : SUCCESS;
}

static int check_transfer(size_t count, int type, int peer, const emu_comm *c) {
  int r = check(count, type, SUM, c);
  return r == SUCCESS && (peer < 0 || peer >= c->nranks) ? INVALID_ARGUMENT : r;
}

int ncclAllReduce(const void *s, void *r, size_t n, int t, int op_, emu_comm *c, void *stream) {
  (void)stream;
  return queue((op){.kind = OP_ALL_REDUCE, .send = s, .recv = r, .count = n, .comm = c},
               check(n, t, op_, c));
}

int ncclReduceScatter(const void *s, void *r, size_t n, int t, int op_, emu_comm *c,
                      void *stream) {
  (void)stream;
  return queue((op){.kind = OP_REDUCE_SCATTER, .send = s, .recv = r, .count = n, .comm = c},
               check(n, t, op_, c));
}

int ncclAllGather(const void *s, void *r, size_t n, int t, emu_comm *c, void *stream) {
  (void)stream;
  return queue((op){.kind = OP_ALL_GATHER, .send = s, .recv = r, .count = n, .comm = c},
               check(n, t, SUM, c));
}

int ncclSend(const void *b, size_t n, int t, int peer, emu_comm *c, void *stream) {
  (void)stream;
  return queue((op){.kind = OP_SEND, .send = b, .count = n, .peer = peer, .comm = c},
               check_transfer(n, t, peer, c));
}

int ncclRecv(void *b, size_t n, int t, int peer, emu_comm *c, void *stream) {
  (void)stream;
  return queue((op){.kind = OP_RECV, .recv = b, .count = n, .peer = peer, .comm = c},
               check_transfer(n, t, peer, c));
}

// Posts a send or receive; NCCL matches them in order per (communicator, peer), as one MPI tag.
static int post(const op *o, MPI_Request *req) {
  int rc = o->kind == OP_SEND
               ? MPI_Isend(o->send, (int)o->count, MPI_FLOAT, o->peer, 0, o->comm->comm, req)
               : MPI_Irecv(o->recv, (int)o->count, MPI_FLOAT, o->peer, 0, o->comm->comm, req);
  return mpi_ok(rc);
}

// Runs the group's operations in call order; the transfers finish together at the end.
static int run_group(void) {
  MPI_Request *reqs = calloc(group.n ? group.n : 1, sizeof *reqs);
  if (!reqs) return SYSTEM_ERROR;
  int nreqs = 0, r = SUCCESS;
  for (size_t i = 0; i < group.n && r == SUCCESS; i++) {
    const op *o = &group.ops[i];
    if (o->kind == OP_INIT) r = init_comm(o);
    else if (o->kind == OP_SEND || o->kind == OP_RECV) r = post(o, &reqs[nreqs++]);
    else r = collective(o);
  }
  int rc = MPI_Waitall(nreqs, reqs, MPI_STATUSES_IGNORE);
  free(reqs);
  return r != SUCCESS ? r : mpi_ok(rc);
}

int ncclGroupEnd(void) {
  if (group.depth == 0) return INVALID_USAGE;  // no group open
  if (--group.depth > 0) return SUCCESS;
  int r = group.error ? group.error : run_group();
  free(group.ops);
  group.ops = NULL;
  group.n = group.cap = 0;
  group.error = SUCCESS;
  return r;
}
