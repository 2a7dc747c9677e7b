// fake_nccl_old.c — a libnccl too old for the runtime: it has ncclGetVersion and little else,
// so the loader must refuse it naming the first function it lacks.
int ncclGetVersion(int *v) {
  *v = 20301;
  return 0;
}
