// pybind11 wrapper of the KV commit launcher. Python (verispec/ops/commit_kv.py and
// ops/cuda/commit_kv.py) validates dtypes, devices, shapes, strides and alignment and passes raw pointers; this
// layer re-checks the sizes the kernels rely on and turns launch failures into Python exceptions.
#ifdef VERISPEC_WITH_CUDA
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>

#include "commit_kv/commit_kv.h"
#include "common/binding_utils.h"
#include "common/cuda_check.h"
#include "registry.h"

namespace py = pybind11;

namespace verispec {
namespace {

void commit_kv_cuda_binding(std::uintptr_t caches, int num_caches, std::uintptr_t prefix_lens,
                            std::uintptr_t path_rows, std::uintptr_t block_table, int batch, int path_len,
                            int kv_heads, int head_dim, int elem_size, std::array<int64_t, 4> stride,
                            std::array<int64_t, 2> rows_stride, int64_t bt_stride, int page_size, int64_t capacity,
                            int64_t num_blocks, std::uintptr_t stream) {
  constexpr Require require("verispec.commit_kv(backend='cuda')");
  require(num_caches >= 1 && kv_heads >= 1 && batch >= 0 && path_len >= 0, "bad sizes");
  require(static_cast<int64_t>(num_caches) * kv_heads <= 65535, "layers * 2 * Hkv must be <= 65535");
  require(head_dim * elem_size <= 1024, "a K/V row (head_dim * element size) must be <= 1024 bytes");
  require(elem_size == 2 || elem_size == 4 || elem_size == 8, "element size must be 2, 4 or 8");
  require(page_size == 0 || block_table != 0, "paged layout needs a block table");
  CommitKvParams p{};
  p.caches = ptr<const uint64_t>(caches);
  p.num_caches = num_caches;
  p.prefix_lens = ptr<const int32_t>(prefix_lens);
  p.path_rows = ptr<const int32_t>(path_rows);
  p.block_table = ptr<const int32_t>(block_table);
  p.batch = batch;
  p.path_len = path_len;
  p.kv_heads = kv_heads;
  p.head_dim = head_dim;
  p.elem_size = elem_size;
  for (int i = 0; i < 4; ++i) p.stride[i] = stride[i];
  p.rows_stride[0] = rows_stride[0];
  p.rows_stride[1] = rows_stride[1];
  p.bt_stride = bt_stride;
  p.page_size = page_size;
  p.capacity = capacity;
  p.num_blocks = num_blocks;
  check_cuda(commit_kv_launch(p, as_stream(stream)), "commit_kv");
}

void bind_commit_kv(py::module_& m) {
  m.def("commit_kv_cuda", &commit_kv_cuda_binding,
        "KV commit launcher (pointers as ints; see verispec.ops.cuda.commit_kv).", py::arg("caches"),
        py::arg("num_caches"), py::arg("prefix_lens"), py::arg("path_rows"), py::arg("block_table"),
        py::arg("batch"), py::arg("path_len"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("elem_size"),
        py::arg("stride"), py::arg("rows_stride"), py::arg("bt_stride"), py::arg("page_size"), py::arg("capacity"),
        py::arg("num_blocks"), py::arg("stream"));
}

}  // namespace

VERISPEC_REGISTER_OPS(commit_kv, bind_commit_kv);

}  // namespace verispec
#endif  // VERISPEC_WITH_CUDA
