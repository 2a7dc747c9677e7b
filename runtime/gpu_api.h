// gpu_api.h — the CUDA driver, NCCL and cuBLASLt as tables of function pointers, filled with
// dlopen/dlsym when a GPU run asks for them (gpu_loader.c), so dhxrun links against none of
// them and runs on machines without a GPU. The types are declared here, as far as the calls
// need them (opaque handles, integer status codes), rather than taken from the vendors'
// headers, so the runtime builds where they are not installed.
#ifndef DHX_GPU_API_H
#define DHX_GPU_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- CUDA driver API (libcuda.so.1) ------------------------------------------------------------
typedef int CUresult;  // 0 = CUDA_SUCCESS
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

#define DHX_CUDA_ERROR_NO_DEVICE 100
#define DHX_CUDA_ERROR_STUB_LIBRARY 34
#define DHX_CUDA_ERROR_NOT_READY 600

typedef struct dhx_cuda_api {
  void *lib;
  CUresult (*cuInit)(unsigned flags);
  CUresult (*cuDriverGetVersion)(int *version);
  CUresult (*cuDeviceGetCount)(int *count);
  CUresult (*cuDeviceGet)(CUdevice *dev, int ordinal);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*cuDeviceTotalMem_v2)(size_t *bytes, CUdevice dev);
  CUresult (*cuDeviceGetAttribute)(int *value, int attribute, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice dev);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxSynchronize)(void);
  CUresult (*cuGetErrorName)(CUresult error, const char **name);
  CUresult (*cuGetErrorString)(CUresult error, const char **text);
  CUresult (*cuModuleLoadDataEx)(CUmodule *module, const void *image, unsigned nopts,
                                 int *opts, void **values);
  CUresult (*cuModuleGetFunction)(CUfunction *fn, CUmodule module, const char *name);
  CUresult (*cuModuleUnload)(CUmodule module);
  CUresult (*cuLaunchKernel)(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                             unsigned by, unsigned bz, unsigned shared, CUstream stream,
                             void **params, void **extra);
  CUresult (*cuMemAlloc_v2)(CUdeviceptr *ptr, size_t bytes);
  CUresult (*cuMemFree_v2)(CUdeviceptr ptr);
  CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr dst, const void *src, size_t bytes, CUstream s);
  CUresult (*cuMemcpyDtoHAsync_v2)(void *dst, CUdeviceptr src, size_t bytes, CUstream s);
  CUresult (*cuMemcpyDtoDAsync_v2)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s);
  CUresult (*cuMemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t n, CUstream s);
  CUresult (*cuMemHostAlloc)(void **host, size_t bytes, unsigned flags);  // page-locked
  CUresult (*cuMemFreeHost)(void *host);
  CUresult (*cuStreamCreate)(CUstream *stream, unsigned flags);
  CUresult (*cuStreamDestroy_v2)(CUstream stream);
  CUresult (*cuStreamSynchronize)(CUstream stream);
  CUresult (*cuStreamQuery)(CUstream stream);  // 0 done, DHX_CUDA_ERROR_NOT_READY still working
  CUresult (*cuStreamWaitEvent)(CUstream stream, CUevent event, unsigned flags);
  CUresult (*cuEventCreate)(CUevent *event, unsigned flags);
  CUresult (*cuEventDestroy_v2)(CUevent event);
  CUresult (*cuEventRecord)(CUevent event, CUstream stream);
  CUresult (*cuEventSynchronize)(CUevent event);
  // Milliseconds between two recorded events created without CU_EVENT_DISABLE_TIMING.
  CUresult (*cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
} dhx_cuda_api;

// ---- NCCL (libnccl.so.2) -----------------------------------------------------------------------
typedef int ncclResult_t;  // 0 = ncclSuccess
typedef struct ncclComm *ncclComm_t;
typedef struct {
  char internal[128];
} ncclUniqueId;

typedef struct dhx_nccl_api {
  void *lib;
  ncclResult_t (*ncclGetVersion)(int *version);
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId *id);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t comm);
  ncclResult_t (*ncclCommAbort)(ncclComm_t comm);
  ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t comm, ncclResult_t *error);
  const char *(*ncclGetErrorString)(ncclResult_t result);
  ncclResult_t (*ncclAllReduce)(const void *send, void *recv, size_t count, int dtype, int op,
                                ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclAllGather)(const void *send, void *recv, size_t count, int dtype,
                                ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclReduceScatter)(const void *send, void *recv, size_t count, int dtype,
                                    int op, ncclComm_t comm, CUstream stream);
  ncclResult_t (*ncclSend)(const void *buf, size_t count, int dtype, int peer, ncclComm_t comm,
                           CUstream stream);
  ncclResult_t (*ncclRecv)(void *buf, size_t count, int dtype, int peer, ncclComm_t comm,
                           CUstream stream);
  ncclResult_t (*ncclGroupStart)(void);
  ncclResult_t (*ncclGroupEnd)(void);
} dhx_nccl_api;

// ---- cuBLASLt (libcublasLt.so) -----------------------------------------------------------------
typedef int cublasStatus_t;  // 0 = CUBLAS_STATUS_SUCCESS
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque_st *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque_st *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque_st *cublasLtMatmulPreference_t;

typedef struct dhx_cublaslt_api {
  void *lib;
  size_t (*cublasLtGetVersion)(void);
  const char *(*cublasLtGetStatusString)(cublasStatus_t status);
  cublasStatus_t (*cublasLtCreate)(cublasLtHandle_t *handle);
  cublasStatus_t (*cublasLtDestroy)(cublasLtHandle_t handle);
  cublasStatus_t (*cublasLtMatmulDescCreate)(cublasLtMatmulDesc_t *desc, int compute, int scale);
  cublasStatus_t (*cublasLtMatmulDescDestroy)(cublasLtMatmulDesc_t desc);
  cublasStatus_t (*cublasLtMatmulDescSetAttribute)(cublasLtMatmulDesc_t desc, int attr,
                                                   const void *buf, size_t size);
  cublasStatus_t (*cublasLtMatrixLayoutCreate)(cublasLtMatrixLayout_t *layout, int dtype,
                                               uint64_t rows, uint64_t cols, int64_t ld);
  cublasStatus_t (*cublasLtMatrixLayoutDestroy)(cublasLtMatrixLayout_t layout);
  cublasStatus_t (*cublasLtMatrixLayoutSetAttribute)(cublasLtMatrixLayout_t layout, int attr,
                                                     const void *buf, size_t size);
  cublasStatus_t (*cublasLtMatmulPreferenceCreate)(cublasLtMatmulPreference_t *pref);
  cublasStatus_t (*cublasLtMatmulPreferenceDestroy)(cublasLtMatmulPreference_t pref);
  cublasStatus_t (*cublasLtMatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t pref,
                                                         int attr, const void *buf, size_t size);
  // The algorithm and result structs are opaque byte blocks to the runtime (their sizes are
  // the vendor's, 64 and 96 bytes).
  cublasStatus_t (*cublasLtMatmulAlgoGetHeuristic)(cublasLtHandle_t handle,
                                                   cublasLtMatmulDesc_t op,
                                                   cublasLtMatrixLayout_t a,
                                                   cublasLtMatrixLayout_t b,
                                                   cublasLtMatrixLayout_t c,
                                                   cublasLtMatrixLayout_t d,
                                                   cublasLtMatmulPreference_t pref, int requested,
                                                   void *results, int *returned);
  cublasStatus_t (*cublasLtMatmul)(cublasLtHandle_t handle, cublasLtMatmulDesc_t op,
                                   const void *alpha, const void *a, cublasLtMatrixLayout_t adesc,
                                   const void *b, cublasLtMatrixLayout_t bdesc, const void *beta,
                                   const void *c, cublasLtMatrixLayout_t cdesc, void *d,
                                   cublasLtMatrixLayout_t ddesc, const void *algo,
                                   void *workspace, size_t workspace_bytes, CUstream stream);
} dhx_cublaslt_api;

// ---- loading -----------------------------------------------------------------------------------
// Each loader opens its library (the file an environment variable names — DHX_CUDA_LIBRARY,
// DHX_NCCL_LIBRARY, DHX_CUBLASLT_LIBRARY — or the usual soname) and resolves every symbol of
// its table. On failure it fills err with the reason (the library that did not open, or the
// first symbol missing from it), leaves the table empty and returns false.
bool dhx_load_cuda(dhx_cuda_api *api, char *err, size_t errlen);
bool dhx_load_nccl(dhx_nccl_api *api, char *err, size_t errlen);
bool dhx_load_cublaslt(dhx_cublaslt_api *api, char *err, size_t errlen);

// The driver's view of this machine: loads libcuda, cuInit, counts the devices. Returns the
// device count (0 where there is no driver or no device, with the reason in err).
int dhx_cuda_devices(char *err, size_t errlen);

// One line per library for `dhxrun --version`: its version, or why it is not available.
void dhx_gpu_versions(char *out, size_t len);

#endif
