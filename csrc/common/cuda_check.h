// Host-side helpers for CUDA launchers: turn cudaError_t into a Python-visible exception at the
// binding layer. Kernels themselves return cudaError_t and never throw.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace verispec {

inline void check_cuda(cudaError_t err, const char* op) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("verispec.") + op + ": CUDA error: " + cudaGetErrorString(err));
  }
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace verispec
