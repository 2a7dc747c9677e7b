// recording_cuda.c — a stand-in libcuda that records the calls the CUDA backend makes, one line
// each, in the file FAKE_GPU_LOG names, and hands out made-up handles: one device, a 64-bit
// address space starting at 0x100000000 for allocations, streams and events numbered from 1.
// With it the backend's host side (what it loads, allocates, launches and orders) is checked
// on machines without a GPU.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recording_log.h"

typedef unsigned long long CUdeviceptr;

static CUdeviceptr next_address = 0x100000000ull;
static uintptr_t next_stream = 1, next_event = 1;

int cuInit(unsigned flags) { logf_("cuInit %u", flags); return 0; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGet(int *d, int ordinal) { logf_("cuDeviceGet %d", ordinal); *d = ordinal; return ordinal == 0 ? 0 : 101; }
int cuDeviceGetName(char *name, int len, int d) { (void)d; snprintf(name, (size_t)len, "Recording GPU"); return 0; }
int cuDeviceTotalMem_v2(size_t *b, int d) { (void)d; *b = 80ull << 30; return 0; }
int cuDeviceGetAttribute(int *v, int a, int d) { (void)a; (void)d; *v = 0; return 0; }
int cuDevicePrimaryCtxRetain(void **ctx, int d) { logf_("cuDevicePrimaryCtxRetain %d", d); *ctx = (void *)0x1; return 0; }
int cuDevicePrimaryCtxRelease_v2(int d) { logf_("cuDevicePrimaryCtxRelease %d", d); return 0; }
int cuCtxSetCurrent(void *ctx) { (void)ctx; logf_("cuCtxSetCurrent"); return 0; }
int cuCtxSynchronize(void) { return 0; }
int cuGetErrorName(int e, const char **s) { *s = e == 500 ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_UNKNOWN"; return 0; }
int cuGetErrorString(int e, const char **s) { *s = e == 500 ? "named symbol not found" : "unknown error"; return 0; }
int cuModuleLoadDataEx(void **m, const void *image, unsigned n, int *opts, void **vals) {
  (void)opts; (void)vals;
  logf_("cuModuleLoadDataEx bytes=%zu options=%u", strlen(image), n);
  *m = (void *)0x2;
  return 0;
}
int cuModuleGetFunction(void **fn, void *m, const char *name) {
  (void)m;
  logf_("cuModuleGetFunction %s", name);
  static char names[512][128];  // the handle is the name, which the launches print
  static int count;
  if (count == 512) return 500;
  snprintf(names[count], sizeof names[count], "%s", name);
  *fn = names[count++];
  return 0;
}
int cuModuleUnload(void *m) { (void)m; logf_("cuModuleUnload"); return 0; }
int cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
  uint64_t first;
  memcpy(&first, params[0], sizeof first);
  logf_("cuLaunchKernel %s grid=%u,%u,%u block=%u,%u,%u shared=%u stream=%lu arg0=%llx extra=%d",
        (const char *)fn, gx, gy, gz, bx, by, bz, shared, (unsigned long)(uintptr_t)stream,
        (unsigned long long)first, extra != NULL);
  return 0;
}
int cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  *p = next_address;
  logf_("cuMemAlloc %zu -> %llx", bytes, *p);
  next_address += (bytes + 0xffffull) & ~0xffffull;
  return 0;
}
int cuMemFree_v2(CUdeviceptr p) { logf_("cuMemFree %llx", p); return 0; }
int cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, void *st) { (void)s; (void)st; logf_("cuMemcpyHtoDAsync %llx %zu", d, n); return 0; }
int cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, void *st) { (void)d; (void)st; logf_("cuMemcpyDtoHAsync %llx %zu", s, n); return 0; }
int cuMemHostAlloc(void **p, size_t bytes, unsigned flags) {
  *p = calloc(1, bytes ? bytes : 1);  // the caller writes into it: real host memory
  logf_("cuMemHostAlloc %zu flags=%u", bytes, flags);
  return *p ? 0 : 2;
}
int cuMemFreeHost(void *p) { free(p); logf_("cuMemFreeHost"); return 0; }
int cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *st) {
  logf_("cuMemsetD8Async %llx %u %zu stream=%lu", d, v, n, (unsigned long)(uintptr_t)st);
  return 0;
}
int cuStreamCreate(void **s, unsigned flags) { *s = (void *)next_stream++; logf_("cuStreamCreate flags=%u", flags); return 0; }
int cuStreamDestroy_v2(void *s) { (void)s; return 0; }
int cuStreamSynchronize(void *s) { logf_("cuStreamSynchronize %lu", (unsigned long)(uintptr_t)s); return 0; }
// Every other query of a stream finds it still working, so the backend's wait loop polls.
int cuStreamQuery(void *s) {
  static unsigned queries[64];
  unsigned n = queries[(uintptr_t)s % 64]++;
  logf_("cuStreamQuery %lu", (unsigned long)(uintptr_t)s);
  return n % 2 == 0 ? 600 : 0;
}
int cuStreamWaitEvent(void *s, void *e, unsigned f) { (void)f; logf_("cuStreamWaitEvent stream=%lu event=%lu", (unsigned long)(uintptr_t)s, (unsigned long)(uintptr_t)e); return 0; }
int cuEventCreate(void **e, unsigned flags) { *e = (void *)next_event++; (void)flags; return 0; }
int cuEventDestroy_v2(void *e) { (void)e; return 0; }
int cuEventRecord(void *e, void *s) { logf_("cuEventRecord event=%lu stream=%lu", (unsigned long)(uintptr_t)e, (unsigned long)(uintptr_t)s); return 0; }
int cuEventSynchronize(void *e) { logf_("cuEventSynchronize event=%lu", (unsigned long)(uintptr_t)e); return 0; }
int cuEventElapsedTime(float *ms, void *start, void *end) { (void)start; (void)end; *ms = 1.0f; return 0; }
int cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) { (void)st; logf_("cuMemcpyDtoDAsync %llx %llx %zu", d, s, n); return 0; }
