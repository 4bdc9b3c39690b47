#include <cuda_runtime.h>

#include "common/cuda_runtime_info.h"

namespace verispec {

int cuda_runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int cuda_driver_version() {
  int v = 0;  // 0: no driver installed
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int cuda_device_count() {
  int n = 0;
  // No driver or no GPU is a normal state on CPU machines, not an error: report 0 and clear it.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace verispec
