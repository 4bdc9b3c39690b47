// pybind11 wrapper of the tree attention launcher. Python (verispec/ops/tree_attention.py and
// ops/cuda/tree_attention.py) validates dtypes, devices, shapes, strides and alignment and passes raw pointers; this
// layer re-checks the sizes the kernels rely on and turns launch failures into Python exceptions.
#ifdef VERISPEC_WITH_CUDA
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tree_attention/tree_attention.h"
#include "common/binding_utils.h"
#include "common/cuda_check.h"
#include "registry.h"

namespace py = pybind11;

namespace verispec {
namespace {

void tree_attention_cuda_binding(std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t out,
                                 std::uintptr_t prefix_lens, std::uintptr_t tree_lens, std::uintptr_t ancestors,
                                 std::uintptr_t positions, std::uintptr_t block_table, std::uintptr_t o_part,
                                 std::uintptr_t lse_part, int batch, int q_heads, int kv_heads, int rows,
                                 int head_dim, std::array<int64_t, 3> q_stride, std::array<int64_t, 3> k_stride,
                                 std::array<int64_t, 3> v_stride, std::array<int64_t, 3> o_stride,
                                 std::array<int64_t, 2> anc_stride, std::array<int64_t, 2> pos_stride,
                                 int64_t bt_stride, int page_size, int64_t capacity, int64_t num_blocks, int num_splits, int m_tiles,
                                 float scale, float softcap, int window, bool bf16, std::uintptr_t stream) {
  constexpr Require require("verispec.tree_attention(backend='cuda')");
  require(head_dim == 64 || head_dim == 128 || head_dim == 256,
          "head_dim must be 64, 128 or 256, got " + std::to_string(head_dim));
  require(kv_heads >= 1 && q_heads % kv_heads == 0, "q heads must be a multiple of the K/V heads");
  require(num_splits >= 1 && num_splits <= 64, "num_splits must be in 1..64");
  require(m_tiles * 64LL >= static_cast<int64_t>(q_heads / kv_heads) * rows, "m_tiles too small");
  require(batch * static_cast<int64_t>(kv_heads) <= 65535, "B * Hkv must be <= 65535");
  require(page_size >= 0 && (page_size == 0 || block_table != 0), "paged layout needs a block table");
  require(window == 0 || positions != 0, "a sliding window needs positions");
  require(num_splits == 1 || (o_part != 0 && lse_part != 0), "split-KV needs workspaces");
  TreeAttentionParams p{};
  p.q = ptr<const void>(q);
  p.k = ptr<const void>(k);
  p.v = ptr<const void>(v);
  p.out = ptr<void>(out);
  p.prefix_lens = ptr<const int32_t>(prefix_lens);
  p.tree_lens = ptr<const int32_t>(tree_lens);
  p.ancestors = ptr<const uint32_t>(ancestors);
  p.positions = ptr<const int32_t>(positions);
  p.block_table = ptr<const int32_t>(block_table);
  p.o_part = ptr<float>(o_part);
  p.lse_part = ptr<float>(lse_part);
  p.batch = batch;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.rows = rows;
  p.head_dim = head_dim;
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = q_stride[i];
    p.k_stride[i] = k_stride[i];
    p.v_stride[i] = v_stride[i];
    p.o_stride[i] = o_stride[i];
  }
  for (int i = 0; i < 2; ++i) {
    p.anc_stride[i] = anc_stride[i];
    p.pos_stride[i] = pos_stride[i];
  }
  p.bt_stride = bt_stride;
  p.page_size = page_size;
  p.capacity = capacity;
  p.num_blocks = num_blocks;
  p.num_splits = num_splits;
  p.m_tiles = m_tiles;
  p.scale = scale;
  p.softcap = softcap;
  p.window = window;
  p.bf16 = bf16;
  check_cuda(tree_attention_launch(p, as_stream(stream)), "tree_attention");
}

void bind_tree_attention(py::module_& m) {
  m.def("tree_attention_cuda", &tree_attention_cuda_binding,
        "Tree attention launcher (pointers as ints; see verispec.ops.cuda.tree_attention).",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("prefix_lens"), py::arg("tree_lens"),
        py::arg("ancestors"), py::arg("positions"), py::arg("block_table"), py::arg("o_part"), py::arg("lse_part"),
        py::arg("batch"), py::arg("q_heads"), py::arg("kv_heads"), py::arg("rows"), py::arg("head_dim"),
        py::arg("q_stride"), py::arg("k_stride"), py::arg("v_stride"), py::arg("o_stride"), py::arg("anc_stride"),
        py::arg("pos_stride"), py::arg("bt_stride"), py::arg("page_size"), py::arg("capacity"),
        py::arg("num_blocks"), py::arg("num_splits"), py::arg("m_tiles"), py::arg("scale"), py::arg("softcap"), py::arg("window"),
        py::arg("bf16"), py::arg("stream"));
}

}  // namespace

VERISPEC_REGISTER_OPS(tree_attention, bind_tree_attention);

}  // namespace verispec
#endif  // VERISPEC_WITH_CUDA
