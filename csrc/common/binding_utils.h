// Helpers shared by the pybind11 wrappers of the CUDA launchers (attention_bindings.cpp,
// verify_bindings.cpp): tensors cross from Python as integer data pointers, and the wrappers re-check
// the sizes the kernels rely on, raising ValueError with the op's own prefix.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace verispec {

// A data pointer passed from Python as an int (0 for an absent optional tensor).
template <typename T>
inline T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// `require(ok, msg)` raises ValueError("<where>: <msg>") unless ok; `where` names the op, e.g.
// "verispec.verify(backend='cuda')".
class Require {
 public:
  explicit constexpr Require(const char* where) : where_(where) {}
  void operator()(bool ok, const std::string& msg) const {
    if (!ok) throw pybind11::value_error(std::string(where_) + ": " + msg);
  }

 private:
  const char* where_;
};

}  // namespace verispec
