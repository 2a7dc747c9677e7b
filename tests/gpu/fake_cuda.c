// fake_cuda.c — a stand-in libcuda for the loader tests: every function of the runtime's
// driver table exists; cuInit reports CUDA_ERROR_NO_DEVICE, as a driver on a machine whose
// GPUs are gone would, and the error functions name it.
#include <stddef.h>

#define NO_DEVICE 100
#define FN(name) \
  int name(void) { return NO_DEVICE; }

int cuInit(unsigned flags) {
  (void)flags;
  return NO_DEVICE;
}
int cuDriverGetVersion(int *v) {
  *v = 12040;
  return 0;
}
int cuGetErrorName(int e, const char **s) {
  *s = e == NO_DEVICE ? "CUDA_ERROR_NO_DEVICE" : NULL;
  return *s ? 0 : 1;
}
int cuGetErrorString(int e, const char **s) {
  *s = e == NO_DEVICE ? "no CUDA-capable device is detected" : NULL;
  return *s ? 0 : 1;
}
FN(cuDeviceGetCount)
FN(cuDeviceGet)
FN(cuDeviceGetName)
FN(cuDeviceTotalMem_v2)
FN(cuDeviceGetAttribute)
FN(cuDevicePrimaryCtxRetain)
FN(cuDevicePrimaryCtxRelease_v2)
FN(cuCtxSetCurrent)
FN(cuCtxSynchronize)
FN(cuModuleLoadDataEx)
FN(cuModuleGetFunction)
FN(cuModuleUnload)
FN(cuLaunchKernel)
FN(cuMemAlloc_v2)
FN(cuMemFree_v2)
FN(cuMemcpyHtoDAsync_v2)
FN(cuMemcpyDtoHAsync_v2)
FN(cuMemcpyDtoDAsync_v2)
FN(cuMemsetD8Async)
FN(cuMemHostAlloc)
FN(cuMemFreeHost)
FN(cuStreamCreate)
FN(cuStreamDestroy_v2)
FN(cuStreamSynchronize)
FN(cuStreamQuery)
FN(cuStreamWaitEvent)
FN(cuEventCreate)
FN(cuEventDestroy_v2)
FN(cuEventRecord)
FN(cuEventSynchronize)
FN(cuEventElapsedTime)
