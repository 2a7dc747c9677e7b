// nccl_host_tests.c — the CUDA backend's NCCL path (runtime/exec_nccl.c) on plans dhxc wrote,
// without a GPU: run under mpirun, one process per rank of the plan, with the recording
// driver, cuBLASLt and NCCL (tests/gpu/recording_*.c), each rank logging to LOG_PREFIX.RANK.
//   record PLAN_DIR LOG_PREFIX  open, connect, run every program; then check each rank's log
//                      against the plan: one ncclCommInitRank per (communicator, stream) with
//                      the member count and this rank's index, all in one group, the unique id
//                      the same on every member; every collective and transfer in issue order
//                      with its count, type, op, peer, buffers, communicator and CUDA stream,
//                      transfers inside a group; and across the ranks, that the members of each
//                      NCCL communicator issue matching operations in the same order (a send
//                      for each receive, group by group: nothing waits for what never comes),
//                      and come to their communicators in the same order
//   async PLAN_DIR LOG_PREFIX  rank 1's stand-in reports an asynchronous error: its run fails
//                      naming the rank and the error after aborting every communicator, and
//                      its next run with a collective is refused; rank 0 runs as usual
//   groups             (one process) how transfers one stream issues back to back are grouped
// The programs' LOAD_BATCH and GRAD_NORM instructions (data loading and the norm, no part of
// the NCCL path) are dropped before opening.
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_cuda.h"
#include "exec_nccl.h"
#include "gpu_test.h"

static int me, nranks;

#define ARENA 0x100000000ull  // the recording driver's first allocation
#define MAX_CALLS 4096
#define MAX_COMMS 64


// Drops the instructions of rank r's programs that are not this test's.
static void keep_only_tested(dhx_plan_rank *r) {
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    dhx_plan_program *prog = &r->programs[p];
    uint32_t n = 0;
    for (uint32_t i = 0; i < prog->ninstrs; i++)
      if (prog->instrs[i].op != DHX_OP_LOAD_BATCH && prog->instrs[i].op != DHX_OP_GRAD_NORM)
        prog->instrs[n++] = prog->instrs[i];
    prog->ninstrs = n;
  }
}

// ---- the log -----------------------------------------------------------------------------------

typedef struct call {
  char name[32];
  unsigned long long buf, recv;
  size_t count;
  int type, op, peer, comm, grouped, group, program;
  unsigned long stream;
} call;

typedef struct init {
  int comm, nranks, rank, grouped;
  char id[64];
} init;

typedef struct log_calls {
  call calls[MAX_CALLS];
  int ncalls;
  init inits[MAX_COMMS];
  int ninits, destroyed, aborted, groups_open, unbalanced;
} log_calls;

// Reads one rank's log: its NCCL calls, numbered by group and program ("-- program N" marks).
static void parse(const char *text, log_calls *l) {
  memset(l, 0, sizeof *l);
  int group = 0, program = -1;
  for (const char *s = text; s && *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL) {
    call c = {.op = -1, .peer = -1, .program = program};
    init in = {0};
    if (sscanf(s, "-- program %d", &program) == 1) continue;
    if (strncmp(s, "ncclGroupStart", 14) == 0) {
      l->groups_open++;
      group++;
    } else if (strncmp(s, "ncclGroupEnd", 12) == 0) {
      if (--l->groups_open < 0) l->unbalanced++;
    } else if (sscanf(s, "ncclCommInitRank comm=%d nranks=%d rank=%d id=%63s grouped=%d", &in.comm,
                      &in.nranks, &in.rank, in.id, &in.grouped) == 5 && l->ninits < MAX_COMMS) {
      l->inits[l->ninits++] = in;
    } else if (strncmp(s, "ncclCommDestroy", 15) == 0) {
      l->destroyed++;
    } else if (strncmp(s, "ncclCommAbort", 13) == 0) {
      l->aborted++;
    } else if (l->ncalls < MAX_CALLS &&
               (sscanf(s, "%31s send=%llx recv=%llx count=%zu type=%d op=%d comm=%d stream=%lu",
                       c.name, &c.buf, &c.recv, &c.count, &c.type, &c.op, &c.comm,
                       &c.stream) == 8 ||
                sscanf(s, "%31s buf=%llx count=%zu type=%d peer=%d comm=%d stream=%lu grouped=%d",
                       c.name, &c.buf, &c.count, &c.type, &c.peer, &c.comm, &c.stream,
                       &c.grouped) == 8)) {
      c.group = l->groups_open > 0 ? group : 0;
      l->calls[l->ncalls++] = c;
    }
  }
}

// ---- what the plan asks for --------------------------------------------------------------------

typedef struct comm_key { int comm, stream, size, rank; } comm_key;

// Whether `rank`'s programs exchange over plan communicator c on stream s.
static bool uses(const dhx_plan *plan, int rank, uint32_t c, int s) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  for (int p = 0; p < DHX_PROG_COUNT; p++)
    for (uint32_t i = 0; i < r->programs[p].ninstrs; i++) {
      const dhx_plan_instr *in = &r->programs[p].instrs[i];
      if (dhx_op_on_comm(in->op) && (int)in->stream == s &&
          dhx_rank_comm(r, in->comm) == (int32_t)c)
        return true;
    }
  return false;
}

// World rank `who`'s NCCL communicators in the order it makes them: (plan communicator,
// stream) ascending, where comm.c has an MPI communicator (the same streams on every member:
// this rank's answer holds for the other, a member of every communicator of two ranks) or the
// plan communicator has `who` alone and its programs use it.
static int expected_comms(const dhx_plan *plan, dhx_comms *comms, int who, comm_key *out) {
  int n = 0;
  for (uint32_t c = 0; c < plan->ncomms; c++)
    for (int s = 0; s < DHX_MAX_STREAMS; s++) {
      const dhx_plan_comm *pc = &plan->comms[c];
      int rank = 0, size = dhx_comms_members(comms, (int)c, s, &rank);
      for (uint32_t i = 0; i < pc->nranks; i++)
        if (pc->ranks[i] == who) rank = (int)i;
      if (pc->nranks == 1 && pc->ranks[0] == who && uses(plan, who, c, s)) size = 1;
      if (size > 0 && n < MAX_COMMS) out[n++] = (comm_key){(int)c, s, size, rank};
    }
  return n;
}

static int comm_index(const comm_key *keys, int n, int comm, int stream) {
  for (int i = 0; i < n; i++)
    if (keys[i].comm == comm && keys[i].stream == stream) return i;
  return -1;
}

static unsigned long long address(const dhx_plan_rank *r, const dhx_plan_arg *a) {
  return ARENA + (unsigned long long)r->buffers[a->buf].offset + (unsigned long long)a->i;
}

// The calls instruction `in` must make: one, or two per member for an all-to-all.
static int expected_calls(const dhx_plan_rank *r, const dhx_plan_instr *in, int comm,
                          const comm_key *key, call *out) {
  int64_t count = in->args[dhx_op_count_arg(in->op)].i;
  // ncclFloat32 (7), or ncclBfloat16 (9) for mixed precision's bf16 collectives
  bool bf16 = in->dtype == DHX_BF16;
  unsigned long long size = bf16 ? 2 : 4;
  call c = {.type = bf16 ? 9 : 7, .op = -1, .peer = -1, .comm = comm, .stream = in->stream + 1,
            .buf = address(r, &in->args[0])};
  size_t part = (size_t)count / (size_t)key->size;
  switch (in->op) {
    case DHX_OP_ALLREDUCE:
      snprintf(c.name, sizeof c.name, "ncclAllReduce");
      c.count = (size_t)count;
      c.op = 0;
      c.recv = c.buf;  // in place
      break;
    case DHX_OP_REDUCE_SCATTER:
    case DHX_OP_ALL_GATHER:
      snprintf(c.name, sizeof c.name, "%s",
               in->op == DHX_OP_REDUCE_SCATTER ? "ncclReduceScatter" : "ncclAllGather");
      c.count = part;
      c.op = in->op == DHX_OP_REDUCE_SCATTER ? 0 : -1;
      c.recv = address(r, &in->args[1]);
      break;
    case DHX_OP_SEND:
    case DHX_OP_RECV:
      snprintf(c.name, sizeof c.name, in->op == DHX_OP_SEND ? "ncclSend" : "ncclRecv");
      c.count = (size_t)count;
      c.peer = (int)in->args[2].i;
      break;
    default: {  // all-to-all
      unsigned long long out_base = address(r, &in->args[1]);
      for (int j = 0; j < key->size; j++) {
        out[2 * j] = c;
        snprintf(out[2 * j].name, sizeof c.name, "ncclSend");
        out[2 * j].buf = c.buf + (unsigned long long)j * part * size;
        out[2 * j].count = part;
        out[2 * j].peer = j;
        out[2 * j + 1] = out[2 * j];
        snprintf(out[2 * j + 1].name, sizeof c.name, "ncclRecv");
        out[2 * j + 1].buf = out_base + (unsigned long long)j * part * size;
      }
      return 2 * key->size;
    }
  }
  out[0] = c;
  return 1;
}

static bool same_call(const call *a, const call *b) {
  bool p2p = a->peer >= 0;
  return strcmp(a->name, b->name) == 0 && a->buf == b->buf && a->count == b->count &&
         a->type == b->type && a->op == b->op && a->peer == b->peer && a->comm == b->comm &&
         a->stream == b->stream && (p2p ? b->grouped == 1 : a->recv == b->recv);
}

// Every program's collectives and transfers, in issue order, against the log's calls.
static void check_calls(const dhx_plan *plan, const log_calls *l, const comm_key *keys, int nkeys) {
  const dhx_plan_rank *r = &plan->ranks[me];
  int at = 0, checked = 0;
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    const dhx_plan_program *prog = &r->programs[p];
    uint32_t *order = malloc(sizeof(uint32_t) * (prog->ninstrs + 1));
    dhx_cuda_issue_order(prog, order);
    for (uint32_t i = 0; i < prog->ninstrs; i++) {
      const dhx_plan_instr *in = &prog->instrs[order[i]];
      if (!dhx_op_on_comm(in->op)) continue;
      int k = comm_index(keys, nkeys, dhx_rank_comm(r, in->comm), (int)in->stream);
      CHECK(k >= 0, "'%s': no communicator for it", dhx_instr_note(in));
      if (k < 0) continue;
      call want[2 * 64];
      int n = expected_calls(r, in, k, &keys[k], want);
      for (int j = 0; j < n; j++, at++) {
        const call *got = at < l->ncalls ? &l->calls[at] : NULL;
        CHECK(got && got->program == p && same_call(&want[j], got), "program %d '%s': call %d "
              "is %s count=%zu peer=%d comm=%d stream=%lu buf=%llx, expected %s count=%zu "
              "peer=%d comm=%d stream=%lu buf=%llx", p, dhx_instr_note(in), at, got ? got->name : "none",
              got ? got->count : 0, got ? got->peer : 0, got ? got->comm : 0,
              got ? got->stream : 0, got ? got->buf : 0, want[j].name, want[j].count,
              want[j].peer, want[j].comm, want[j].stream, want[j].buf);
        checked++;
      }
    }
    free(order);
  }
  CHECK(at == l->ncalls, "%d NCCL calls logged, %d expected", l->ncalls, at);
  CHECK(l->groups_open == 0 && l->unbalanced == 0, "ncclGroupStart and ncclGroupEnd unpaired");
  printf("rank %d: %d NCCL calls checked on %d communicators\n", me, checked, nkeys);
}

static void check_inits(const log_calls *l, const comm_key *keys, int nkeys, const log_calls *other,
                        const comm_key *other_keys, int nother) {
  CHECK(l->ninits == nkeys && nkeys > 0, "%d ncclCommInitRank, %d expected", l->ninits, nkeys);
  for (int i = 0; i < l->ninits && i < nkeys; i++) {
    const init *in = &l->inits[i];
    CHECK(in->comm == i && in->nranks == keys[i].size && in->rank == keys[i].rank && in->grouped,
          "communicator %d (plan communicator %d stream %d): nranks=%d rank=%d grouped=%d, "
          "expected nranks=%d rank=%d in a group", i, keys[i].comm, keys[i].stream, in->nranks,
          in->rank, in->grouped, keys[i].size, keys[i].rank);
    int j = comm_index(other_keys, nother, keys[i].comm, keys[i].stream);
    if (j >= 0 && keys[i].size > 1)
      CHECK(j < other->ninits && strcmp(in->id, other->inits[j].id) == 0,
            "communicator %d: unique id %s here, %s on the other rank", i, in->id,
            j < other->ninits ? other->inits[j].id : "none");
  }
  CHECK(l->destroyed == nkeys, "%d communicators destroyed, %d made", l->destroyed, nkeys);
}

// ---- matching across the members --------------------------------------------------------------
//
// The two members of a communicator each issue a sequence of groups (a collective alone, or
// transfers together). An operation completes once its counterpart (the other's collective of
// the same ordinal; for the k-th send to a member, that member's k-th receive from the sender)
// is in the group the other member is running; a group ends when all its operations have
// completed, and the next starts. The communicator cannot deadlock when both members get
// through all their groups this way.

typedef struct side {
  const call *ops[MAX_CALLS];
  int n, other[MAX_CALLS];  // counterpart's index in the other side's ops, -1 if none
  bool done[MAX_CALLS];
} side;

// The ordinal of ops[i] among the ops of its kind (collectives; sends; receives).
static int ordinal(const side *s, int i) {
  int k = 0;
  for (int j = 0; j < i; j++) k += strcmp(s->ops[j]->name, s->ops[i]->name) == 0;
  return k;
}

static const char *counterpart_name(const char *name) {
  return strcmp(name, "ncclSend") == 0 ? "ncclRecv" : strcmp(name, "ncclRecv") == 0 ? "ncclSend"
                                                                                     : name;
}

// Pairs each operation of a with its counterpart in b (the same count); false if one has none.
static bool pair_up(side *a, const side *b) {
  for (int i = 0; i < a->n; i++) {
    const char *want = counterpart_name(a->ops[i]->name);
    int k = ordinal(a, i);
    a->other[i] = -1;
    for (int j = 0; j < b->n && a->other[i] < 0; j++)
      if (strcmp(b->ops[j]->name, want) == 0 && k-- == 0) a->other[i] = j;
    if (a->other[i] < 0 || b->ops[a->other[i]]->count != a->ops[i]->count) return false;
  }
  return true;
}

// The end of the group that starts at i (ops of one group are consecutive).
static int group_end(const side *s, int i) {
  int j = i + 1;
  while (j < s->n && s->ops[i]->group > 0 && s->ops[j]->group == s->ops[i]->group) j++;
  return j;
}

// Runs both members' groups as NCCL would; true when both finish.
static bool runs_through(side *s) {
  int head[2] = {0, 0};
  for (bool progress = true; progress;) {
    progress = false;
    for (int x = 0; x < 2; x++) {
      side *me_ = &s[x], *them = &s[1 - x];
      if (head[x] == me_->n) continue;
      int end = group_end(me_, head[x]), their_end = head[1 - x] < them->n
                                                          ? group_end(them, head[1 - x])
                                                          : head[1 - x];
      for (int i = head[x]; i < end; i++) {
        int j = me_->other[i];
        if (!me_->done[i] && j >= head[1 - x] && j < their_end) {
          me_->done[i] = them->done[j] = true;
          progress = true;
        }
      }
      bool finished = true;
      for (int i = head[x]; i < end; i++) finished = finished && me_->done[i];
      if (finished) head[x] = end, progress = true;
    }
  }
  return head[0] == s[0].n && head[1] == s[1].n;
}

// The shared communicators (their index in `keys`) in the order of their first operation in
// log l, whose communicator indices are those of `lkeys`.
static int first_uses(const log_calls *l, const comm_key *lkeys, int nl, const comm_key *keys,
                      int nkeys, int *out) {
  int n = 0;
  for (int i = 0; i < l->ncalls; i++) {
    int c = l->calls[i].comm;
    int k = c >= 0 && c < nl ? comm_index(keys, nkeys, lkeys[c].comm, lkeys[c].stream) : -1;
    bool seen = false;
    for (int j = 0; j < n; j++) seen = seen || out[j] == k;
    if (k >= 0 && keys[k].size == 2 && !seen) out[n++] = k;
  }
  return n;
}

// NCCL may connect a communicator's members at its first operation, holding the calling thread
// until the peer gets there: both members must come to their communicators in the same order.
static void check_first_uses(const log_calls *mine, const comm_key *keys, int nkeys,
                             const log_calls *theirs, const comm_key *their_keys, int ntheirs) {
  int a[MAX_COMMS], b[MAX_COMMS];
  int na = first_uses(mine, keys, nkeys, keys, nkeys, a);
  int nb = first_uses(theirs, their_keys, ntheirs, keys, nkeys, b);
  bool same = na == nb;
  for (int i = 0; i < na && same; i++) same = a[i] == b[i];
  CHECK(same, "the two members come to their communicators in different orders");
}

// Every two-member communicator of this rank and the other: the calls pair up and run through.
static void check_pairing(const log_calls *mine, const comm_key *keys, int nkeys,
                          const log_calls *theirs, const comm_key *their_keys, int ntheirs) {
  static side sides[2];
  int checked = 0;
  for (int k = 0; k < nkeys; k++) {
    int j = comm_index(their_keys, ntheirs, keys[k].comm, keys[k].stream);
    if (j < 0 || keys[k].size != 2) continue;
    memset(sides, 0, sizeof sides);
    for (int i = 0; i < mine->ncalls; i++)
      if (mine->calls[i].comm == k) sides[0].ops[sides[0].n++] = &mine->calls[i];
    for (int i = 0; i < theirs->ncalls; i++)
      if (theirs->calls[i].comm == j) sides[1].ops[sides[1].n++] = &theirs->calls[i];
    bool paired = pair_up(&sides[0], &sides[1]) && pair_up(&sides[1], &sides[0]);
    CHECK(paired, "communicator %d (plan %d stream %d): the members' calls do not pair up", k,
          keys[k].comm, keys[k].stream);
    CHECK(!paired || runs_through(sides), "communicator %d (plan %d stream %d): the members' "
          "groups deadlock", k, keys[k].comm, keys[k].stream);
    checked += sides[0].n;
  }
  printf("rank %d: %d calls meet the other member's without a deadlock\n", me, checked);
}

// ---- the cases ---------------------------------------------------------------------------------

static dhx_cuda *open_rank(const char *dir, dhx_plan *plan, dhx_comms **comms) {
  char path[1024], err[4096] = "";
  snprintf(path, sizeof path, "%s/kernels.ptx", dir);
  char *ptx = read_text(path);
  CHECK(ptx != NULL, "no %s", path);
  if (!ptx) return NULL;
  *comms = dhx_comms_new(plan, me);
  keep_only_tested(&plan->ranks[me]);
  dhx_cuda *c = dhx_cuda_open(plan, (uint32_t)me, 0, ptx, err, sizeof err);
  CHECK(c != NULL, "open: %s", err);
  free(ptx);
  if (c && !dhx_cuda_connect(c, *comms, err, sizeof err)) {
    CHECK(false, "connect: %s", err);
    dhx_cuda_close(c);
    c = NULL;
  }
  return c;
}

static void mark(const char *log, int program) {
  FILE *f = fopen(log, "a");
  if (f) fprintf(f, "-- program %d\n", program);
  if (f) fclose(f);
}

static void test_record(const char *dir, dhx_plan *plan, const char *log, const char *other_log) {
  dhx_comms *comms = NULL;
  dhx_cuda *c = open_rank(dir, plan, &comms);
  if (!c) return;
  double regs[DHX_REG_COUNT] = {1e-3, 0.1, 0.05, 1.0, 0.0};
  char err[4096] = "";
  for (int p = 0; p < DHX_PROG_COUNT; p++) {
    mark(log, p);
    CHECK(dhx_cuda_run(c, p, regs, err, sizeof err), "program %d: %s", p, err);
  }
  dhx_cuda_close(c);
  MPI_Barrier(MPI_COMM_WORLD);  // both logs complete
  static log_calls mine, theirs;
  char *text = read_text(log), *other = read_text(other_log);
  CHECK(text && other, "no log %s or %s", log, other_log);
  if (text && other) {
    parse(text, &mine);
    parse(other, &theirs);
    comm_key keys[MAX_COMMS], their_keys[MAX_COMMS];
    int nkeys = expected_comms(plan, comms, me, keys);
    int nother = expected_comms(plan, comms, 1 - me, their_keys);
    check_inits(&mine, keys, nkeys, &theirs, their_keys, nother);
    check_calls(plan, &mine, keys, nkeys);
    check_pairing(&mine, keys, nkeys, &theirs, their_keys, nother);
    check_first_uses(&mine, keys, nkeys, &theirs, their_keys, nother);
  }
  free(text);
  free(other);
  dhx_comms_free(comms);
}

static void test_async(const char *dir, dhx_plan *plan, const char *log) {
  dhx_comms *comms = NULL;
  dhx_cuda *c = open_rank(dir, plan, &comms);
  if (!c) return;
  double regs[DHX_REG_COUNT] = {1e-3, 0.1, 0.05, 1.0, 0.0};
  char err[4096] = "";
  if (me == 1) setenv("FAKE_NCCL_ASYNC_ERROR", "6", 1);  // ncclRemoteError
  bool ran = dhx_cuda_run(c, DHX_PROG_BEGIN, regs, err, sizeof err);
  if (me == 1) {
    printf("rank 1: %s\n", err);
    CHECK(!ran && strstr(err, "world rank 1:") &&
          strstr(err, "remote process exited or there was a network error") &&
          strstr(err, "communicator 0 stream"), "the failed run says: %s", ran ? "nothing" : err);
    bool again = dhx_cuda_run(c, DHX_PROG_STEP, regs, err, sizeof err);
    CHECK(!again && strstr(err, "world rank 1: no NCCL communicator") &&
          strstr(err, "aborted after an error"), "the run after the abort says: %s",
          again ? "nothing" : err);
  } else {
    CHECK(ran, "BEGIN: %s", err);
  }
  dhx_cuda_close(c);
  static log_calls l;
  char *text = read_text(log);
  if (text) parse(text, &l);
  comm_key keys[MAX_COMMS];
  int nkeys = expected_comms(plan, comms, me, keys);
  if (me == 1)
    CHECK(l.aborted == nkeys && l.destroyed == 0, "%d aborted, %d destroyed of %d communicators",
          l.aborted, l.destroyed, nkeys);
  else
    CHECK(l.aborted == 0 && l.destroyed == nkeys, "%d aborted, %d destroyed of %d communicators",
          l.aborted, l.destroyed, nkeys);
  free(text);
  dhx_comms_free(comms);
}

// A transfer instruction on `stream`: `count` floats at byte `at` of buffer `buf`.
static dhx_plan_instr transfer(uint32_t op, uint32_t stream, int32_t buf, int64_t at,
                               int64_t count) {
  dhx_plan_instr in = {.op = op, .stream = stream, .comm = 0, .dtype = DHX_F32, .nargs = 4};
  in.args[0] = (dhx_plan_arg){.kind = DHX_ARG_BUF, .buf = buf, .i = at};
  in.args[1] = (dhx_plan_arg){.kind = DHX_ARG_I64, .i = count};
  in.args[2] = (dhx_plan_arg){.kind = DHX_ARG_I64, .i = 1};
  return in;
}

// The groups of a made-up program: transfers on one stream back to back go together, until
// one touches what another of the group receives into; another stream, a kernel or a
// collective ends a group; a collective is a group of its own; the rest is not NCCL's. And
// without communicators a collective is refused by name.
static void test_groups(void) {
  dhx_plan_instr ins[] = {
      transfer(DHX_OP_RECV, 0, 1, 0, 16),   // 0: a group of 2
      transfer(DHX_OP_SEND, 0, 2, 0, 16),   // 1
      transfer(DHX_OP_SEND, 0, 1, 32, 16),  // 2: sends what 0 receives into: a group of 3
      transfer(DHX_OP_RECV, 0, 3, 0, 16),   // 3
      transfer(DHX_OP_SEND, 0, 4, 0, 16),   // 4
      transfer(DHX_OP_RECV, 0, 4, 60, 4),   // 5: receives into what 4 sends: a group of 1
      transfer(DHX_OP_SEND, 1, 5, 0, 16),   // 6: another stream; a group of 1 before a kernel
      {.op = DHX_OP_KERNEL, .stream = 1, .kernel = 0, .comm = -1},  // 7: not NCCL's
      transfer(DHX_OP_ALLREDUCE, 1, 5, 0, 16),  // 8: a group of its own
      transfer(DHX_OP_SEND, 1, 6, 0, 16),       // 9: the last, a group of 1
  };
  dhx_plan_program p = {.nstreams = 2, .ninstrs = 10, .instrs = ins};
  uint32_t order[10], want[10] = {2, 0, 3, 0, 0, 1, 1, 0, 1, 1};  // at each group's start
  for (uint32_t i = 0; i < 10; i++) order[i] = i;
  for (uint32_t i = 0, k; i < 10; i += k ? k : 1) {  // as dhx_cuda_run walks a program
    k = dhx_nccl_group_length(&p, order, i, 10);
    CHECK(k == want[i], "group length at %u: %u, expected %u", i, k, want[i]);
  }
  char err[512] = "";
  ins[8].note = "gradient sum";
  CHECK(!dhx_nccl_issue(NULL, NULL, 0, ins, order + 8, 1, NULL, err, sizeof err) &&
        strstr(err, "'gradient sum' exchanges over a communicator"), "without NCCL: %s", err);
  CHECK(dhx_nccl_check(NULL, err, sizeof err), "no communicators, yet an error");
  printf("transfer groups checked\n");
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "groups") == 0) {  // no MPI needed
    test_groups();
    return fails ? 1 : 0;
  }
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  check_rank = me;
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (argc < 4 || nranks != 2) {
    fprintf(stderr, "usage: nccl_host_tests groups | mpirun -np 2 nccl_host_tests "
            "record|async PLAN_DIR LOG_PREFIX\n");
    MPI_Finalize();
    return 2;
  }
  char log[1024], other_log[1024], err[1024];
  snprintf(log, sizeof log, "%s.%d", argv[3], me);
  snprintf(other_log, sizeof other_log, "%s.%d", argv[3], 1 - me);
  remove(log);
  setenv("FAKE_GPU_LOG", log, 1);
  dhx_plan plan;
  char path[1024];
  snprintf(path, sizeof path, "%s/plan.bin", argv[2]);
  if (!dhx_plan_read(path, &plan, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);  // every old log removed
  if (strcmp(argv[1], "record") == 0) test_record(argv[2], &plan, log, other_log);
  else if (strcmp(argv[1], "async") == 0) test_async(argv[2], &plan, log);
  else fails++;
  dhx_plan_free(&plan);
  if (fails) fprintf(stderr, "rank %d: %d checks failed\n", me, fails);
  int any = 0;
  MPI_Allreduce(&fails, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Finalize();
  return any ? 1 : 0;
}
