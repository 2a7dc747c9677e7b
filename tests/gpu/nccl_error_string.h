// nccl_error_string.h — NCCL's words for its result codes, shared by the NCCL stand-ins
// (recording_nccl.c, emulated_nccl.c), which answer ncclGetErrorString as NCCL does.
#ifndef DHX_NCCL_ERROR_STRING_H
#define DHX_NCCL_ERROR_STRING_H

static const char *nccl_error_string(int r) {
  static const char *names[] = {"no error", "unhandled cuda error", "unhandled system error",
                                "internal error", "invalid argument", "invalid usage",
                                "remote process exited or there was a network error",
                                "operation in progress"};
  return r >= 0 && r < (int)(sizeof names / sizeof names[0]) ? names[r] : "unknown result code";
}

#endif
