// interrupt.c — SIGINT, SIGTERM and SIGUSR1 ask a run to stop cleanly.
//
// The handler only records the signal. The training loop polls it once per step and the ranks
// agree on it (dhx_interrupt_agree), so every rank stops after the same step, writes the
// checkpoint and exits. A second SIGINT kills as usual: someone who presses Ctrl-C twice wants
// the process gone now. SIGTERM keeps its handler, since mpirun may deliver it more than once.
//
// mpirun turns a SIGINT or SIGTERM it receives into SIGCONT and SIGTERM for every rank and
// SIGKILLs them a little later (odls_base_sigkill_timeout, 1 s by default); SIGUSR1 and SIGUSR2
// it forwards and waits. docs/running.md says which to use when.
#include <mpi.h>
#include <signal.h>
#include <string.h>

#include "dhxrt.h"

static volatile sig_atomic_t received;  // the first stop signal, 0 when none

static void on_signal(int sig) {
  if (!received) {
    received = sig;
  } else if (sig == SIGINT) {
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
}

void dhx_interrupt_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: a rank blocked writing its log to a pipe nobody reads any more (mpirun
  // stops forwarding output when it is interrupted) must get out of that write, or it never
  // reaches the end of the step before mpirun's SIGKILL. MPI retries its own interrupted calls.
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  // mpirun stops forwarding output when it is interrupted: a step line written after that must
  // not kill the rank (SIGPIPE) before it has written its checkpoint. A failed write is harmless.
  signal(SIGPIPE, SIG_IGN);
}

int dhx_interrupt_pending(void) { return received; }

// The signal every rank acts on, and the lowest rank that received one (0 when none). A MAX
// all-reduce of (signal << 16 | (65535 - rank)) picks the highest signal number and, among the
// ranks with that signal, the lowest rank: both are the same on every rank.
int dhx_interrupt_agree(int world_rank, int *from_rank) {
  int mine = received ? (int)received << 16 | (65535 - (world_rank & 65535)) : 0, top = 0;
  MPI_Allreduce(&mine, &top, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  *from_rank = top ? 65535 - (top & 65535) : -1;
  return top >> 16;
}

const char *dhx_signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}
