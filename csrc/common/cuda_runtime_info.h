#pragma once
namespace verispec {
int cuda_runtime_version();
int cuda_device_count();
}  // namespace verispec
