// Self-registration of binding families, so each op family (datastore, verify, tree_attention, commit_kv) owns its
// own binding file and nobody edits a shared list. A family writes, at namespace scope:
//   static void bind_datastore(pybind11::module_& m) { ... }
//   VERISPEC_REGISTER_OPS(datastore, bind_datastore);
#pragma once
#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace verispec {

using BindFn = void (*)(pybind11::module_&);

// Function-local static: safe against static-initialisation order across translation units.
inline std::vector<std::pair<const char*, BindFn>>& registered_bindings() {
  static std::vector<std::pair<const char*, BindFn>> fns;
  return fns;
}

struct RegisterOps {
  RegisterOps(const char* family, BindFn fn) { registered_bindings().emplace_back(family, fn); }
};

}  // namespace verispec

#define VERISPEC_REGISTER_OPS(family, fn) \
  static ::verispec::RegisterOps verispec_register_##family(#family, fn)
