#pragma once
namespace verispec {
int cuda_runtime_version();
int cuda_device_count();
int cuda_driver_version();
}  // namespace verispec
