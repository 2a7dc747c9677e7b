// gpu_loader.c — opens the CUDA driver, NCCL and cuBLASLt with dlopen and fills their function
// tables (gpu_api.h). Every symbol a table lists is resolved when the library is loaded, so a
// library too old for the backend is refused at once, naming the missing function, rather
// than failing in the middle of a run. A library once loaded stays loaded for the life of the
// process (dlopen returns the same handle again): the vendors' initialisers allocate state
// that unloading would strand, and not all of them support being unloaded.
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_api.h"

typedef struct symbol {
  const char *name;
  size_t offset;  // of the function pointer in its table
} symbol;

#define SYM(table, fn) {#fn, offsetof(table, fn)}

static const symbol cuda_symbols[] = {
    SYM(dhx_cuda_api, cuInit),
    SYM(dhx_cuda_api, cuDriverGetVersion),
    SYM(dhx_cuda_api, cuDeviceGetCount),
    SYM(dhx_cuda_api, cuDeviceGet),
    SYM(dhx_cuda_api, cuDeviceGetName),
    SYM(dhx_cuda_api, cuDeviceTotalMem_v2),
    SYM(dhx_cuda_api, cuDeviceGetAttribute),
    SYM(dhx_cuda_api, cuDevicePrimaryCtxRetain),
    SYM(dhx_cuda_api, cuDevicePrimaryCtxRelease_v2),
    SYM(dhx_cuda_api, cuCtxSetCurrent),
    SYM(dhx_cuda_api, cuCtxSynchronize),
    SYM(dhx_cuda_api, cuGetErrorName),
    SYM(dhx_cuda_api, cuGetErrorString),
    SYM(dhx_cuda_api, cuModuleLoadDataEx),
    SYM(dhx_cuda_api, cuModuleGetFunction),
    SYM(dhx_cuda_api, cuModuleUnload),
    SYM(dhx_cuda_api, cuLaunchKernel),
    SYM(dhx_cuda_api, cuMemAlloc_v2),
    SYM(dhx_cuda_api, cuMemFree_v2),
    SYM(dhx_cuda_api, cuMemcpyHtoDAsync_v2),
    SYM(dhx_cuda_api, cuMemcpyDtoHAsync_v2),
    SYM(dhx_cuda_api, cuMemcpyDtoDAsync_v2),
    SYM(dhx_cuda_api, cuMemsetD8Async),
    SYM(dhx_cuda_api, cuMemHostAlloc),
    SYM(dhx_cuda_api, cuMemFreeHost),
    SYM(dhx_cuda_api, cuStreamCreate),
    SYM(dhx_cuda_api, cuStreamDestroy_v2),
    SYM(dhx_cuda_api, cuStreamSynchronize),
    SYM(dhx_cuda_api, cuStreamQuery),
    SYM(dhx_cuda_api, cuStreamWaitEvent),
    SYM(dhx_cuda_api, cuEventCreate),
    SYM(dhx_cuda_api, cuEventDestroy_v2),
    SYM(dhx_cuda_api, cuEventRecord),
    SYM(dhx_cuda_api, cuEventSynchronize),
    SYM(dhx_cuda_api, cuEventElapsedTime),
};

static const symbol nccl_symbols[] = {
    SYM(dhx_nccl_api, ncclGetVersion),
    SYM(dhx_nccl_api, ncclGetUniqueId),
    SYM(dhx_nccl_api, ncclCommInitRank),
    SYM(dhx_nccl_api, ncclCommDestroy),
    SYM(dhx_nccl_api, ncclCommAbort),
    SYM(dhx_nccl_api, ncclCommGetAsyncError),
    SYM(dhx_nccl_api, ncclGetErrorString),
    SYM(dhx_nccl_api, ncclAllReduce),
    SYM(dhx_nccl_api, ncclAllGather),
    SYM(dhx_nccl_api, ncclReduceScatter),
    SYM(dhx_nccl_api, ncclSend),
    SYM(dhx_nccl_api, ncclRecv),
    SYM(dhx_nccl_api, ncclGroupStart),
    SYM(dhx_nccl_api, ncclGroupEnd),
};

static const symbol cublaslt_symbols[] = {
    SYM(dhx_cublaslt_api, cublasLtGetVersion),
    SYM(dhx_cublaslt_api, cublasLtGetStatusString),
    SYM(dhx_cublaslt_api, cublasLtCreate),
    SYM(dhx_cublaslt_api, cublasLtDestroy),
    SYM(dhx_cublaslt_api, cublasLtMatmulDescCreate),
    SYM(dhx_cublaslt_api, cublasLtMatmulDescDestroy),
    SYM(dhx_cublaslt_api, cublasLtMatmulDescSetAttribute),
    SYM(dhx_cublaslt_api, cublasLtMatrixLayoutCreate),
    SYM(dhx_cublaslt_api, cublasLtMatrixLayoutDestroy),
    SYM(dhx_cublaslt_api, cublasLtMatrixLayoutSetAttribute),
    SYM(dhx_cublaslt_api, cublasLtMatmulPreferenceCreate),
    SYM(dhx_cublaslt_api, cublasLtMatmulPreferenceDestroy),
    SYM(dhx_cublaslt_api, cublasLtMatmulPreferenceSetAttribute),
    SYM(dhx_cublaslt_api, cublasLtMatmulAlgoGetHeuristic),
    SYM(dhx_cublaslt_api, cublasLtMatmul),
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

// Opens the library (env names a file to use instead of soname) and resolves `n` symbols into
// `table` (whose first member is the library handle).
static bool load(void *table, size_t table_size, const char *env, const char *soname,
                 const symbol *syms, size_t n, char *err, size_t errlen) {
  memset(table, 0, table_size);
  const char *path = getenv(env);
  if (!path || !*path) path = soname;
  dlerror();
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(err, errlen, "%s", why ? why : path);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    void *fn = dlsym(lib, syms[i].name);
    if (!fn) {
      snprintf(err, errlen, "%s has no function %s (too old a version?)", path, syms[i].name);
      dlclose(lib);  // nothing of it was used
      memset(table, 0, table_size);
      return false;
    }
    memcpy((char *)table + syms[i].offset, &fn, sizeof fn);  // a data pointer's bits, POSIX
  }
  memcpy(table, &lib, sizeof lib);
  return true;
}

bool dhx_load_cuda(dhx_cuda_api *api, char *err, size_t errlen) {
  return load(api, sizeof *api, "DHX_CUDA_LIBRARY", "libcuda.so.1", cuda_symbols,
              COUNT(cuda_symbols), err, errlen);
}

bool dhx_load_nccl(dhx_nccl_api *api, char *err, size_t errlen) {
  return load(api, sizeof *api, "DHX_NCCL_LIBRARY", "libnccl.so.2", nccl_symbols,
              COUNT(nccl_symbols), err, errlen);
}

bool dhx_load_cublaslt(dhx_cublaslt_api *api, char *err, size_t errlen) {
  return load(api, sizeof *api, "DHX_CUBLASLT_LIBRARY", "libcublasLt.so", cublaslt_symbols,
              COUNT(cublaslt_symbols), err, errlen);
}

// "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)", or the number.
static void cuda_error(const dhx_cuda_api *api, CUresult r, char *out, size_t len) {
  const char *name = NULL, *text = NULL;
  if (api->cuGetErrorName(r, &name) != 0) name = NULL;
  if (api->cuGetErrorString(r, &text) != 0) text = NULL;
  if (name)
    snprintf(out, len, "%s (%s)", name, text ? text : "no description");
  else if (r == DHX_CUDA_ERROR_STUB_LIBRARY)  // the stub cannot name its own errors
    snprintf(out, len, "CUDA_ERROR_STUB_LIBRARY (the toolkit's stub libcuda, not a driver)");
  else
    snprintf(out, len, "CUDA error %d", r);
}

int dhx_cuda_devices(char *err, size_t errlen) {
  dhx_cuda_api api;
  char why[512];
  if (!dhx_load_cuda(&api, why, sizeof why)) {
    snprintf(err, errlen, "no CUDA driver: %s", why);
    return 0;
  }
  int count = 0;
  CUresult r = api.cuInit(0);
  if (r == 0) r = api.cuDeviceGetCount(&count);
  if (r != 0) {
    cuda_error(&api, r, why, sizeof why);
    snprintf(err, errlen, "the CUDA driver finds no usable device: %s", why);
    count = 0;
  } else if (count == 0) {
    snprintf(err, errlen, "the CUDA driver reports no device");
  }
  return count;
}

// Writes "NAME major.minor.patch" of an integer version major*10000 + minor*100 + patch.
static int triple(char *out, size_t len, const char *name, long v) {
  return snprintf(out, len, "%s %ld.%ld.%ld\n", name, v / 10000, v / 100 % 100, v % 100);
}

void dhx_gpu_versions(char *out, size_t len) {
  char why[512];
  size_t n = 0;
  dhx_cuda_api cuda;
  int v = 0;
  if (dhx_load_cuda(&cuda, why, sizeof why)) {
    if (cuda.cuDriverGetVersion(&v) == 0)
      n += (size_t)snprintf(out + n, len - n, "CUDA driver API %d.%d\n", v / 1000, v % 1000 / 10);
    else
      n += (size_t)snprintf(out + n, len - n, "CUDA driver: loaded, version unknown\n");
  } else {
    n += (size_t)snprintf(out + n, len - n, "CUDA driver: not available (%s)\n", why);
  }
  dhx_nccl_api nccl;
  if (n < len && dhx_load_nccl(&nccl, why, sizeof why)) {
    if (nccl.ncclGetVersion(&v) == 0) n += (size_t)triple(out + n, len - n, "NCCL", v);
  } else if (n < len) {
    n += (size_t)snprintf(out + n, len - n, "NCCL: not available (%s)\n", why);
  }
  dhx_cublaslt_api lt;
  if (n < len && dhx_load_cublaslt(&lt, why, sizeof why)) {
    triple(out + n, len - n, "cuBLASLt", (long)lt.cublasLtGetVersion());
  } else if (n < len) {
    snprintf(out + n, len - n, "cuBLASLt: not available (%s)\n", why);
  }
}
