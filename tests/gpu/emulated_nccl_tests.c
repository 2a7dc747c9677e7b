// emulated_nccl_tests.c — the emulated NCCL (emulated_nccl.c) against sums worked out here,
// under mpirun with 2 or more ranks: communicators made in one group (the world, and one of
// the even world ranks), the all-reduce in place and apart, the reduce-scatter, the all-gather
// in place and apart, a ring of sends and receives where every rank sends first (one group),
// and the refusals: another type or op, a peer outside the communicator, a group end without
// a start. Prints one line per failure and exits non-zero.
#include <mpi.h>
#include <stdio.h>
#include <string.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct ncclComm *ncclComm_t;
int ncclGetUniqueId(ncclUniqueId *id);
int ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
int ncclCommDestroy(ncclComm_t comm);
int ncclCommGetAsyncError(ncclComm_t comm, int *error);
int ncclAllReduce(const void *s, void *r, size_t n, int t, int op, ncclComm_t c, void *st);
int ncclReduceScatter(const void *s, void *r, size_t n, int t, int op, ncclComm_t c, void *st);
int ncclAllGather(const void *s, void *r, size_t n, int t, ncclComm_t c, void *st);
int ncclSend(const void *b, size_t n, int t, int peer, ncclComm_t c, void *st);
int ncclRecv(void *b, size_t n, int t, int peer, ncclComm_t c, void *st);
int ncclGroupStart(void);
int ncclGroupEnd(void);

enum { F32 = 7, SUM = 0, INVALID_ARGUMENT = 4, INVALID_USAGE = 5 };
static int failures, me;

static void expect(int ok, const char *what) {
  if (!ok) {
    printf("world rank %d: %s\n", me, what);
    failures++;
  }
}

// Every element of x[0..n) equals want[i] exactly (small integers: sums are exact in f32).
static int equal(const float *x, const float *want, int n) {
  for (int i = 0; i < n; i++)
    if (x[i] != want[i]) return 0;
  return 1;
}

// A communicator of `members` (world ranks, ascending) for this rank, at index `rank`.
static void id_of(ncclUniqueId *id, int root, MPI_Comm among) {
  if (me == root) ncclGetUniqueId(id);
  MPI_Bcast(id, (int)sizeof *id, MPI_BYTE, 0, among);
}

static void collectives(ncclComm_t c, int rank, int n) {
  float x[4] = {1, 2, 3, 4}, sum[4];
  for (int i = 0; i < 4; i++) x[i] += (float)rank;  // member r holds i + 1 + r
  for (int i = 0; i < 4; i++) sum[i] = (float)(n * (i + 1) + n * (n - 1) / 2);
  float y[4];
  expect(ncclAllReduce(x, y, 4, F32, SUM, c, NULL) == 0 && equal(y, sum, 4),
         "all-reduce apart is not the sum");
  expect(ncclAllReduce(x, x, 4, F32, SUM, c, NULL) == 0 && equal(x, sum, 4),
         "all-reduce in place is not the sum");
  float whole[2 * 8], part[2];  // 2 elements per member, n <= 8
  for (int i = 0; i < 2 * n; i++) whole[i] = (float)(i + rank);
  float want[2] = {(float)(n * 2 * rank + n * (n - 1) / 2),
                   (float)(n * (2 * rank + 1) + n * (n - 1) / 2)};
  expect(ncclReduceScatter(whole, part, 2, F32, SUM, c, NULL) == 0 && equal(part, want, 2),
         "reduce-scatter's part is not this member's block of the sum");
  float gathered[2 * 8], mine[2] = {(float)(10 * rank), (float)(10 * rank + 1)}, all[2 * 8];
  for (int r = 0; r < n; r++) all[2 * r] = (float)(10 * r), all[2 * r + 1] = (float)(10 * r + 1);
  expect(ncclAllGather(mine, gathered, 2, F32, c, NULL) == 0 && equal(gathered, all, 2 * n),
         "all-gather apart is not every member's block in order");
  memset(gathered, 0, sizeof gathered);
  memcpy(gathered + 2 * rank, mine, sizeof mine);
  expect(ncclAllGather(gathered + 2 * rank, gathered, 2, F32, c, NULL) == 0 &&
             equal(gathered, all, 2 * n),
         "all-gather in place is not every member's block in order");
}

// Every member sends to the next and receives from the previous, sends issued first.
static void ring(ncclComm_t c, int rank, int n) {
  float out[3] = {(float)rank, (float)rank + 0.5f, -1}, in[3] = {0};
  int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  ncclGroupStart();
  int r = ncclSend(out, 3, F32, next, c, NULL);
  r = r ? r : ncclRecv(in, 3, F32, prev, c, NULL);
  r = ncclGroupEnd() || r;
  float want[3] = {(float)prev, (float)prev + 0.5f, -1};
  expect(r == 0 && equal(in, want, 3), "the ring's receive is not the previous member's send");
}

static void refusals(ncclComm_t c, int n) {
  float x[2] = {0};
  expect(ncclAllReduce(x, x, 2, 9, SUM, c, NULL) == INVALID_ARGUMENT, "f64 was not refused");
  expect(ncclAllReduce(x, x, 2, F32, 2, c, NULL) == INVALID_ARGUMENT, "max was not refused");
  expect(ncclSend(x, 2, F32, n, c, NULL) == INVALID_ARGUMENT,
         "a peer outside the communicator was not refused");
  expect(ncclGroupEnd() == INVALID_USAGE, "a group end without a start was not refused");
  int async = -1;
  expect(ncclCommGetAsyncError(c, &async) == 0 && async == 0, "an asynchronous error reported");
}

int main(int argc, char **argv) {
  int provided, n;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (n < 2 || n > 8) {
    if (me == 0) printf("needs 2 to 8 ranks, not %d\n", n);
    MPI_Finalize();
    return 2;
  }
  MPI_Comm evens;  // the ids of the second communicator go round its members only
  MPI_Comm_split(MPI_COMM_WORLD, me % 2, me, &evens);
  ncclUniqueId world_id, even_id;
  id_of(&world_id, 0, MPI_COMM_WORLD);
  if (me % 2 == 0) id_of(&even_id, 0, evens);
  ncclComm_t world = NULL, even = NULL;
  int neven = (n + 1) / 2;
  ncclGroupStart();
  int r = ncclCommInitRank(&world, n, world_id, me);
  if (me % 2 == 0 && r == 0) r = ncclCommInitRank(&even, neven, even_id, me / 2);
  expect((ncclGroupEnd() || r) == 0 && world, "the communicators were not made");
  if (world) {
    collectives(world, me, n);
    ring(world, me, n);
    refusals(world, n);
  }
  if (even) collectives(even, me / 2, neven);  // a member's rank is not its world rank here
  if (world) ncclCommDestroy(world);
  if (even) ncclCommDestroy(even);
  MPI_Comm_free(&evens);
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (me == 0) printf("emulated NCCL: %d failure(s) over %d ranks\n", total, n);
  MPI_Finalize();
  return total != 0;
}
