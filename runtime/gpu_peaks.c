// gpu_peaks.c — the datasheet peak FLOP/s of the GPUs DHX knows, for the MFU of a run on the
// CUDA backend (docs/running.md). The f32 figure is the dense rate without tensor cores: the
// f32 plans' GEMMs compute in strict f32 (CUBLAS_COMPUTE_32F), and their kernels are SIMT.
#include <string.h>

#include "exec_cuda.h"

typedef struct gpu_peak {
  const char *name_has;  // a part of the name the driver gives (cuDeviceGetName)
  double f32, bf16;      // dense FLOP/s
} gpu_peak;

// Most specific names first: "H100 PCIe" before "H100".
static const gpu_peak PEAKS[] = {
    {"H200", 66.9e12, 989e12},  {"H100 PCIe", 51.2e12, 756e12}, {"H100", 66.9e12, 989e12},
    {"A800", 19.5e12, 312e12},  {"A100", 19.5e12, 312e12},       {"A40", 37.4e12, 149.7e12},
};

double dhx_gpu_peak_flops(const char *device_name, bool bf16) {
  for (size_t i = 0; device_name && i < sizeof PEAKS / sizeof PEAKS[0]; i++)
    if (strstr(device_name, PEAKS[i].name_has)) return bf16 ? PEAKS[i].bf16 : PEAKS[i].f32;
  return 0;
}
