// watchdog.c — a run never hangs on a rank that died or stopped: after a timeout without
// progress every rank is stopped and the output names the rank that held the others up.
//
// Each rank marks its progress (step, phase) as it trains, and its watchdog thread sends a sign
// of life twice a second. Marks and signs of ranks 1..n-1 travel to rank 0 as small non-blocking
// messages on a communicator of their own; rank 0's watchdog thread collects them. When no rank
// has moved for `timeout` seconds, rank 0 names the ranks that went silent (a frozen or dead
// process), or else those furthest behind (the ones the others wait for), and MPI_Abort ends
// the job. If rank 0 itself is the one that stopped, its thread is frozen with it: the other
// ranks then give up on their own after twice the timeout, saying so.
//
// A rank killed outright (SIGKILL, a crash) is noticed sooner by mpirun, which ends the job and
// names the rank; the watchdog covers what mpirun cannot see: a rank that is alive but stuck.
#include <inttypes.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dhxrt.h"

#define SEND_SLOTS 256   // marks in flight from one rank; a mark is dropped when all are busy
#define POLL_SECONDS 0.1
#define PING_EVERY 5     // polls between two signs of life
#define FINAL_MARK (-1)  // "this rank is done": the last message a rank sends
#define PING_MARK (-2)   // a sign of life from the watchdog thread

struct dhx_watchdog {
  MPI_Comm comm;
  int rank, world;
  _Atomic double timeout;    // seconds without progress before the job is ended
  _Atomic int64_t progress;  // this rank's mark: step * 4 + phase
  _Atomic bool stop;
  _Atomic bool busy;         // in a long collective operation (a checkpoint): not stalled
  pthread_t thread;
  bool running;
  // ranks > 0: the marks being sent
  int64_t send_buf[SEND_SLOTS];
  MPI_Request send_req[SEND_SLOTS];
  int next_slot;
  int64_t ping_buf;  // the thread's sign of life
  MPI_Request ping_req;
  // rank 0: the latest mark of every rank, when it was last heard from, whether it finished
  int64_t *marks;
  double *heard;
  bool *finished;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_seconds(double s) {
  struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
  nanosleep(&ts, NULL);
}

static const char *phase_name(int64_t mark) {
  static const char *names[] = {"computing", "in the gradient all-reduce and update",
                                "evaluating", "finishing the step"};
  return names[mark & 3];
}

// Rank 0: receives every mark that has arrived; returns true if any rank moved.
static bool collect(dhx_watchdog *w) {
  bool moved = false;
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, 0, w->comm, &flag, &st);
    if (!flag) break;
    int64_t mark;
    MPI_Recv(&mark, 1, MPI_INT64_T, st.MPI_SOURCE, 0, w->comm, MPI_STATUS_IGNORE);
    w->heard[st.MPI_SOURCE] = now();
    if (mark == PING_MARK) {
      continue;
    } else if (mark == FINAL_MARK) {
      w->finished[st.MPI_SOURCE] = true;
    } else if (mark > w->marks[st.MPI_SOURCE]) {
      w->marks[st.MPI_SOURCE] = mark;
      moved = true;
    }
  }
  int64_t own = atomic_load(&w->progress);
  if (own > w->marks[0]) {
    w->marks[0] = own;
    moved = true;
  }
  return moved;
}

// Rank 0: the ranks not heard from for half the timeout (at least 2 s), as "1, 3"; 0 if none.
static int silent_ranks(const dhx_watchdog *w, char *names, size_t len) {
  double limit = atomic_load(&w->timeout) / 2 > 2 ? atomic_load(&w->timeout) / 2 : 2, t = now();
  int n = 0;
  size_t used = 0;
  names[0] = 0;
  for (int r = 1; r < w->world && used + 16 < len; r++)
    if (t - w->heard[r] > limit)
      used += (size_t)snprintf(names + used, len - used, "%s%d", n++ ? ", " : "", r);
  return n;
}

// Rank 0: names the ranks that went silent or are furthest behind, then ends the job.
static void report_stall(dhx_watchdog *w, double idle) {
  char silent[512];
  int nsilent = silent_ranks(w, silent, sizeof silent);
  if (nsilent) {
    fprintf(stderr, "dhxrun: error: rank%s %s stopped responding: no sign of life while the "
            "others wait in step %" PRId64 " (no progress for %.0f s); stopping all ranks\n",
            nsilent > 1 ? "s" : "", silent, w->marks[0] / 4 + 1, idle);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int64_t low = INT64_MAX, high = INT64_MIN;
  for (int r = 0; r < w->world; r++) {
    if (w->marks[r] < low) low = w->marks[r];
    if (w->marks[r] > high) high = w->marks[r];
  }
  char names[512] = "";
  size_t len = 0;
  int behind = 0;
  for (int r = 0; r < w->world && len + 16 < sizeof names; r++)
    if (w->marks[r] == low) {
      len += (size_t)snprintf(names + len, sizeof names - len, "%s%d", behind ? ", " : "", r);
      behind++;
    }
  if (low == high)
    fprintf(stderr, "dhxrun: error: no rank has made progress for %.0f s: every rank is %s in "
            "step %" PRId64 " (a collective that never completes?); stopping all ranks\n",
            idle, phase_name(low), low / 4 + 1);
  else
    fprintf(stderr, "dhxrun: error: rank%s %s stopped responding: %s in step %" PRId64
            " for %.0f s while the others wait in step %" PRId64 "; stopping all ranks\n",
            behind > 1 ? "s" : "", names, phase_name(low), low / 4 + 1, idle, high / 4 + 1);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

static bool all_finished(const dhx_watchdog *w) {
  for (int r = 1; r < w->world; r++)
    if (!w->finished[r]) return false;
  return true;
}

// Ranks > 0: a sign of life for rank 0, unless the previous one is still on its way.
static void ping(dhx_watchdog *w) {
  int done = 1;
  MPI_Test(&w->ping_req, &done, MPI_STATUS_IGNORE);
  if (!done) return;
  w->ping_buf = PING_MARK;
  MPI_Isend(&w->ping_buf, 1, MPI_INT64_T, 0, 0, w->comm, &w->ping_req);
}

static void *watch(void *arg) {
  dhx_watchdog *w = arg;
  double last_move = now(), stop_asked = 0;
  int64_t last_own = atomic_load(&w->progress);
  for (int poll = 0;; poll++) {
    bool stopping = atomic_load(&w->stop);
    if (w->rank == 0) {
      if (collect(w)) last_move = now();
      if (stopping && !stop_asked) stop_asked = now();
      // every rank sends its final mark; one that never does has failed, and MPI ends the job
      if (stopping && (all_finished(w) || now() - stop_asked > atomic_load(&w->timeout))) break;
      if (stopping) last_move = now();
    } else {
      int64_t own = atomic_load(&w->progress);
      if (own != last_own) last_move = now(), last_own = own;
      if (stopping) break;
      if (poll % PING_EVERY == 0) ping(w);
    }
    if (atomic_load(&w->busy)) last_move = now();
    double idle = now() - last_move;
    if (w->rank == 0 && idle > atomic_load(&w->timeout)) report_stall(w, idle);
    if (w->rank != 0 && idle > 2 * atomic_load(&w->timeout)) {
      int64_t own = atomic_load(&w->progress);
      fprintf(stderr, "dhxrun: error: rank %d: no progress for %.0f s (%s in step %" PRId64
              ") and rank 0, which watches the ranks, has not ended the run: rank 0 is probably "
              "the one that stopped; stopping all ranks\n", w->rank, idle, phase_name(own),
              own / 4 + 1);
      fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    sleep_seconds(POLL_SECONDS);
  }
  return NULL;
}

dhx_watchdog *dhx_watchdog_start(double timeout_s) {
  dhx_watchdog *w = calloc(1, sizeof *w);
  if (!w) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Comm_dup(MPI_COMM_WORLD, &w->comm);
  MPI_Comm_rank(w->comm, &w->rank);
  MPI_Comm_size(w->comm, &w->world);
  atomic_init(&w->timeout, timeout_s);
  atomic_init(&w->progress, 0);
  atomic_init(&w->stop, false);
  atomic_init(&w->busy, false);
  for (int i = 0; i < SEND_SLOTS; i++) w->send_req[i] = MPI_REQUEST_NULL;
  w->ping_req = MPI_REQUEST_NULL;
  w->marks = calloc((size_t)w->world, sizeof *w->marks);
  w->heard = calloc((size_t)w->world, sizeof *w->heard);
  w->finished = calloc((size_t)w->world, sizeof *w->finished);
  if (!w->marks || !w->heard || !w->finished) MPI_Abort(MPI_COMM_WORLD, 1);
  for (int r = 0; r < w->world; r++) w->heard[r] = now();
  w->running = pthread_create(&w->thread, NULL, watch, w) == 0;
  return w;
}

void dhx_watchdog_set_timeout(dhx_watchdog *w, double timeout_s) {
  if (w) atomic_store(&w->timeout, timeout_s);
}

void dhx_watchdog_busy(dhx_watchdog *w, bool busy) {
  if (w) atomic_store(&w->busy, busy);
}

static void send_mark(dhx_watchdog *w, int64_t mark) {
  int slot = w->next_slot, done = 1;
  MPI_Test(&w->send_req[slot], &done, MPI_STATUS_IGNORE);
  if (!done) return;  // rank 0 is far behind in reading; a later mark says more anyway
  w->send_buf[slot] = mark;
  MPI_Isend(&w->send_buf[slot], 1, MPI_INT64_T, 0, 0, w->comm, &w->send_req[slot]);
  w->next_slot = (slot + 1) % SEND_SLOTS;
}

void dhx_watchdog_mark(dhx_watchdog *w, int64_t step, int phase) {
  if (!w) return;
  int64_t mark = step * 4 + phase;
  atomic_store(&w->progress, mark);
  if (w->rank != 0) send_mark(w, mark);
}

void dhx_watchdog_stop(dhx_watchdog *w) {
  if (!w) return;
  atomic_store(&w->stop, true);
  if (w->rank != 0) {
    // The thread's pings end first, so the final mark is the last message (messages from one
    // rank arrive in order); rank 0 keeps reading until it has every rank's.
    if (w->running) pthread_join(w->thread, NULL);
    int slot = w->next_slot;
    MPI_Wait(&w->send_req[slot], MPI_STATUS_IGNORE);
    w->send_buf[slot] = FINAL_MARK;
    MPI_Isend(&w->send_buf[slot], 1, MPI_INT64_T, 0, 0, w->comm, &w->send_req[slot]);
  } else if (w->running) {
    pthread_join(w->thread, NULL);
  }
  MPI_Waitall(SEND_SLOTS, w->send_req, MPI_STATUSES_IGNORE);
  MPI_Wait(&w->ping_req, MPI_STATUS_IGNORE);
  MPI_Comm_free(&w->comm);
  free(w->marks);
  free(w->heard);
  free(w->finished);
  free(w);
}
