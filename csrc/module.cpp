// The verispec._C module: build facts plus whatever the op families registered (csrc/registry.h).
#include <algorithm>
#include <cstring>
#include <string>

#include "registry.h"

#ifdef VERISPEC_WITH_CUDA
#include "common/cuda_runtime_info.h"
#endif

#ifndef VERISPEC_VERSION
#define VERISPEC_VERSION "0.0.0"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "verispec native core (no torch dependency: pointers, sizes and streams only)";
  m.attr("__version__") = VERISPEC_VERSION;
#ifdef VERISPEC_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.attr("cuda_archs") = VERISPEC_CUDA_ARCHS_STR;
  m.def("cuda_runtime_version", &verispec::cuda_runtime_version,
        "CUDA runtime version the module was linked against (e.g. 13000).");
  m.def("cuda_device_count", &verispec::cuda_device_count,
        "Number of CUDA devices the static runtime sees (0 without a driver or GPU).");
  m.def("cuda_driver_version", &verispec::cuda_driver_version,
        "Newest CUDA version the installed driver supports (e.g. 13000; 0 without a driver).");
#else
  m.attr("built_with_cuda") = false;
  m.attr("cuda_archs") = "";
#endif
  // Registration order depends on link order; sort so the module is identical across builds.
  auto fns = verispec::registered_bindings();
  std::sort(fns.begin(), fns.end(),
            [](const auto& a, const auto& b) { return std::strcmp(a.first, b.first) < 0; });
  py::list families;
  for (const auto& [family, fn] : fns) {
    fn(m);
    families.append(family);
  }
  m.attr("op_families") = families;
}
