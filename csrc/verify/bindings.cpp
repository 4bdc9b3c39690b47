// pybind11 wrappers of the verify launchers (csrc/verify/verify.cu). Python (verispec/ops/verify.py,
// verify_cuda) validates dtypes, devices, shapes and contiguity and passes raw pointers; this layer
// re-checks the sizes the kernels index with and turns launch failures into Python exceptions.
#ifdef VERISPEC_WITH_CUDA
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/binding_utils.h"
#include "common/cuda_check.h"
#include "registry.h"
#include "verify/verify.h"

namespace py = pybind11;

namespace verispec {
namespace {

constexpr Require require("verispec.verify(backend='cuda')");

LogitsDtype to_dtype(int code) {
  require(code >= 0 && code <= 2, "logits dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16)");
  return static_cast<LogitsDtype>(code);
}

// One call launches the four kernels (row stats, walk, race, finalize); see csrc/verify/verify.h for
// the meaning and shape of every pointer. 0 stands for an absent optional tensor.
void verify_binding(std::uintptr_t logits, int dtype, int64_t stride_row, int rows, int batch, int vocab, int mode,
                    std::uintptr_t tokens, std::uintptr_t cu_nodes, std::uintptr_t cu_rows,
                    std::uintptr_t first_child, std::uintptr_t next_sibling, std::uintptr_t temperature,
                    std::uintptr_t scale, std::uintptr_t scale_rows, std::uintptr_t threshold, float typical_epsilon,
                    float typical_delta, std::uintptr_t draft_probs, int64_t stride_q, std::uintptr_t seed,
                    std::uintptr_t offset, std::uintptr_t accept_uniforms, std::uintptr_t exponentials,
                    std::uintptr_t row_max, std::uintptr_t row_sum, std::uintptr_t row_entropy,
                    std::uintptr_t row_argmax, std::uintptr_t scratch, std::uintptr_t state, std::uintptr_t state_f,
                    std::uintptr_t part_key,
                    std::uintptr_t part_idx, int splits, std::uintptr_t accepted_nodes, std::uintptr_t num_accepted,
                    std::uintptr_t out_tokens, int max_depth, std::uintptr_t stream) {
  require(batch >= 0 && vocab >= 1 && max_depth >= 0, "need batch >= 0, vocab >= 1, max_depth >= 0");
  require(rows >= batch, "fewer logits rows than requests");
  require(mode >= 0 && mode <= 2, "mode code must be 0 (greedy), 1 (exact) or 2 (typical)");
  require(stride_row >= vocab, "logits row stride is smaller than the vocabulary");
  require(splits == (vocab + kRaceChunk - 1) / kRaceChunk,
          "splits must be ceil(vocab / " + std::to_string(kRaceChunk) + "), got " + std::to_string(splits));
  require(mode == 0 || batch <= 65535, "at most 65535 requests per sampling call");
  require(!draft_probs || (stride_q >= vocab && scratch), "draft probabilities need stride >= vocab and scratch");
  require(!draft_probs || static_cast<int64_t>(vocab) * 2 * batch < (int64_t{1} << 31),
          "scratch of B * 2 * V floats must stay below 2^31 entries");
  require((accept_uniforms == 0) == (exponentials == 0), "uniforms hook needs both accept and exponential");
  require(logits && tokens && cu_nodes && cu_rows && first_child && next_sibling && temperature && scale &&
              scale_rows && seed && offset && row_max && row_sum && row_entropy && row_argmax && state && state_f &&
              part_key && part_idx && num_accepted && out_tokens && (accepted_nodes || max_depth == 0),
          "null pointer among the required inputs / workspaces / outputs");
  VerifyParams p{};
  p.logits = ptr<const void>(logits);
  p.dtype = to_dtype(dtype);
  p.stride_row = stride_row;
  p.rows = rows;
  p.batch = batch;
  p.vocab = vocab;
  p.mode = static_cast<VerifyMode>(mode);
  p.tokens = ptr<const int32_t>(tokens);
  p.cu_nodes = ptr<const int32_t>(cu_nodes);
  p.cu_rows = ptr<const int32_t>(cu_rows);
  p.first_child = ptr<const int32_t>(first_child);
  p.next_sibling = ptr<const int32_t>(next_sibling);
  p.temperature = ptr<const float>(temperature);
  p.scale = ptr<const float>(scale);
  p.scale_rows = ptr<const float>(scale_rows);
  p.threshold = ptr<const float>(threshold);
  p.typical_epsilon = typical_epsilon;
  p.typical_delta = typical_delta;
  p.draft_probs = ptr<const float>(draft_probs);
  p.stride_q = stride_q;
  p.seed = ptr<const int64_t>(seed);
  p.offset = ptr<const int64_t>(offset);
  p.accept_uniforms = ptr<const float>(accept_uniforms);
  p.exponentials = ptr<const float>(exponentials);
  p.row_max = ptr<float>(row_max);
  p.row_sum = ptr<float>(row_sum);
  p.row_entropy = ptr<float>(row_entropy);
  p.row_argmax = ptr<int32_t>(row_argmax);
  p.scratch = ptr<float>(scratch);
  p.state = ptr<int32_t>(state);
  p.state_f = ptr<float>(state_f);
  p.part_key = ptr<float>(part_key);
  p.part_idx = ptr<int32_t>(part_idx);
  p.splits = splits;
  p.accepted_nodes = ptr<int32_t>(accepted_nodes);
  p.num_accepted = ptr<int32_t>(num_accepted);
  p.out_tokens = ptr<int32_t>(out_tokens);
  p.max_depth = max_depth;
  check_cuda(verify_launch(p, as_stream(stream)), "verify");
}

void bind_verify(py::module_& m) {
  m.attr("verify_race_chunk") = kRaceChunk;
  m.def("verify_cuda", &verify_binding,
        "Acceptance (verify): row stats, tree walk, residual / bonus race and outputs, four launches on one "
        "stream. Tensors as data pointers (ints); see csrc/verify/verify.h.",
        py::arg("logits"), py::arg("dtype"), py::arg("stride_row"), py::arg("rows"), py::arg("batch"),
        py::arg("vocab"), py::arg("mode"), py::arg("tokens"), py::arg("cu_nodes"), py::arg("cu_rows"),
        py::arg("first_child"), py::arg("next_sibling"), py::arg("temperature"), py::arg("scale"),
        py::arg("scale_rows"), py::arg("threshold"), py::arg("typical_epsilon"), py::arg("typical_delta"),
        py::arg("draft_probs"), py::arg("stride_q"), py::arg("seed"), py::arg("offset"),
        py::arg("accept_uniforms"), py::arg("exponentials"), py::arg("row_max"), py::arg("row_sum"),
        py::arg("row_entropy"), py::arg("row_argmax"), py::arg("scratch"), py::arg("state"), py::arg("state_f"),
        py::arg("part_key"),
        py::arg("part_idx"), py::arg("splits"), py::arg("accepted_nodes"), py::arg("num_accepted"),
        py::arg("out_tokens"), py::arg("max_depth"), py::arg("stream"));
}

}  // namespace
}  // namespace verispec

VERISPEC_REGISTER_OPS(verify, verispec::bind_verify);
#endif  // VERISPEC_WITH_CUDA
