// recording_nccl.c — a stand-in libnccl that records the calls the CUDA backend makes, one line
// each, in the file FAKE_GPU_LOG names (recording_log.h), so the backend's communicators,
// collectives and groups are checked without a GPU. Communicators are numbered in the order
// this process creates them; a unique id is its maker's process id and a counter, so the log
// shows whether every member got the same one. With FAKE_NCCL_ASYNC_ERROR=CODE set,
// ncclCommGetAsyncError reports CODE on every communicator, as NCCL does after a peer fails.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recording_log.h"
#include "nccl_error_string.h"

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct comm { int index, nranks, rank; } comm;

static int made_ids, made_comms, group_depth;

int ncclGetVersion(int *v) { *v = 22809; return 0; }
const char *ncclGetErrorString(int r) { return nccl_error_string(r); }
int ncclGetUniqueId(ncclUniqueId *id) {
  memset(id, 0, sizeof *id);
  snprintf(id->internal, sizeof id->internal, "id-%ld-%d", (long)getpid(), made_ids++);
  logf_("ncclGetUniqueId %s", id->internal);
  return 0;
}
int ncclCommInitRank(comm **c, int nranks, ncclUniqueId id, int rank) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return 4;
  *c = calloc(1, sizeof **c);
  **c = (comm){made_comms++, nranks, rank};
  logf_("ncclCommInitRank comm=%d nranks=%d rank=%d id=%.32s grouped=%d", (*c)->index, nranks,
        rank, id.internal, group_depth > 0);
  return 0;
}
int ncclCommDestroy(comm *c) { logf_("ncclCommDestroy comm=%d", c->index); free(c); return 0; }
int ncclCommAbort(comm *c) { logf_("ncclCommAbort comm=%d", c->index); free(c); return 0; }
int ncclCommGetAsyncError(comm *c, int *error) {
  (void)c;
  const char *e = getenv("FAKE_NCCL_ASYNC_ERROR");
  *error = e && *e ? atoi(e) : 0;
  return 0;
}
int ncclGroupStart(void) { group_depth++; logf_("ncclGroupStart"); return 0; }
int ncclGroupEnd(void) {
  if (group_depth == 0) return 5;  // ncclInvalidUsage: no group open
  group_depth--;
  logf_("ncclGroupEnd");
  return 0;
}

// A collective's line: name, buffers, count, type, op (-1: none), communicator and stream.
static int collective(const char *name, const void *send, void *recv, size_t count, int type,
                      int op, comm *c, void *stream) {
  logf_("%s send=%llx recv=%llx count=%zu type=%d op=%d comm=%d stream=%lu", name,
        (unsigned long long)(uintptr_t)send, (unsigned long long)(uintptr_t)recv, count, type, op,
        c->index, (unsigned long)(uintptr_t)stream);
  return 0;
}
int ncclAllReduce(const void *s, void *r, size_t n, int t, int op, comm *c, void *st) {
  return collective("ncclAllReduce", s, r, n, t, op, c, st);
}
int ncclReduceScatter(const void *s, void *r, size_t n, int t, int op, comm *c, void *st) {
  return collective("ncclReduceScatter", s, r, n, t, op, c, st);
}
int ncclAllGather(const void *s, void *r, size_t n, int t, comm *c, void *st) {
  return collective("ncclAllGather", s, r, n, t, -1, c, st);
}
static int transfer(const char *name, const void *buf, size_t n, int t, int peer, comm *c,
                    void *st) {
  if (peer < 0 || peer >= c->nranks) return 4;
  logf_("%s buf=%llx count=%zu type=%d peer=%d comm=%d stream=%lu grouped=%d", name,
        (unsigned long long)(uintptr_t)buf, n, t, peer, c->index, (unsigned long)(uintptr_t)st,
        group_depth > 0);
  return 0;
}
int ncclSend(const void *b, size_t n, int t, int peer, comm *c, void *st) {
  return transfer("ncclSend", b, n, t, peer, c, st);
}
int ncclRecv(void *b, size_t n, int t, int peer, comm *c, void *st) {
  return transfer("ncclRecv", b, n, t, peer, c, st);
}
