# mpirun_wait.sh — sourced by the test scripts that start mpirun in the background and stop
# it: the pid of a rank, and waiting for mpirun to end despite Open MPI 4.1's shutdown race.
# Sets $rc (ends_within).

# rank_pid MPIRUN_PID RANK: the pid of that rank (a child of mpirun)
rank_pid() {
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"; return 0
    fi
  done
  echo "no rank $2 under mpirun $1" >&2; return 1
}

# ended_ranks_status MPIRUN_PID: when every rank under mpirun has ended but mpirun has not yet
# reaped them (they are zombies), the first non-zero exit status among them as mpirun would
# report it (128 + signal for a killed rank; 0 when all exited 0); fails while any still runs.
ended_ranks_status() {
  local p f w status=0 n=0
  for p in $(pgrep -P "$1"); do
    read -ra f <<< "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null)" || return 1
    [ "${f[0]:-}" = Z ] || return 1
    w=${f[49]}  # the exit status in waitpid's form (proc(5), field 52)
    if ((w & 0x7f)); then w=$((128 + (w & 0x7f))); else w=$(((w >> 8) & 0xff)); fi
    if [ "$status" = 0 ]; then status=$w; fi
    n=$((n + 1))
  done
  ((n > 0)) && echo "$status"
}

# ends_within SECONDS PID: the mpirun started as background job PID exits within SECONDS; its
# status goes to $rc. OpenMPI 4.1's mpirun now and then deadlocks in its own shutdown
# (PMIx_server_finalize) after every rank has ended, more often on a loaded machine. The ranks
# did their part then, so when all of them have ended and mpirun is still there 10 s later,
# their own exit statuses stand for mpirun's and mpirun is killed. A rank still running after
# SECONDS fails the case.
ends_within() {
  local i ended_for=0 status
  for ((i = 0; i < $1 * 10; i++)); do
    if ! kill -0 "$2" 2>/dev/null; then rc=0; wait "$2" || rc=$?; return 0; fi
    if status=$(ended_ranks_status "$2"); then ended_for=$((ended_for + 1)); else ended_for=0; fi
    if ((ended_for >= 100)); then
      echo "faults: mpirun hung 10 s after its ranks ended (status $status); killing it"
      kill -9 "$2"; wait "$2" || true
      rc=$status; return 0
    fi
    sleep 0.1
  done
  echo "still running after $1 s"; kill -9 "$2"; exit 1
}
