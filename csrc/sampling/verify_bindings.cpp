// pybind11 wrappers of the verify launchers (csrc/sampling/verify.cu). Python (verispec/ops/verify.py,
// verify_cuda) validates dtypes, devices, shapes and contiguity and passes raw pointers; this layer
// re-checks the sizes the kernels index with and turns launch failures into Python exceptions.
#ifdef VERISPEC_WITH_CUDA
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/cuda_check.h"
#include "registry.h"
#include "sampling/verify.h"

namespace py = pybind11;

namespace verispec {
namespace {

template <typename T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error("verispec.verify(backend='cuda'): " + msg);
}

LogitsDtype to_dtype(int code) {
  require(code >= 0 && code <= 2, "logits dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16)");
  return static_cast<LogitsDtype>(code);
}

void row_stats_binding(std::uintptr_t logits, int dtype, int64_t stride_row, int rows, int vocab,
                       std::uintptr_t temp_rows, std::uintptr_t threshold, std::uintptr_t row_max,
                       std::uintptr_t row_sum, std::uintptr_t row_entropy, std::uintptr_t row_argmax, bool need_sum,
                       bool need_entropy, std::uintptr_t stream) {
  require(rows >= 0 && vocab >= 1, "need rows >= 0 and vocab >= 1");
  require(stride_row >= vocab, "logits row stride is smaller than the vocabulary");
  require(logits && temp_rows && row_max && row_argmax, "null pointer for logits / temperatures / outputs");
  require(!need_sum || row_sum, "row sums requested without a buffer");
  require(!need_entropy || row_entropy, "row entropies requested without a buffer");
  RowStatsParams p{};
  p.logits = ptr<const void>(logits);
  p.dtype = to_dtype(dtype);
  p.stride_row = stride_row;
  p.rows = rows;
  p.vocab = vocab;
  p.temp_rows = ptr<const float>(temp_rows);
  p.threshold = ptr<const float>(threshold);
  p.row_max = ptr<float>(row_max);
  p.row_sum = ptr<float>(row_sum);
  p.row_entropy = ptr<float>(row_entropy);
  p.row_argmax = ptr<int32_t>(row_argmax);
  p.need_sum = need_sum;
  p.need_entropy = need_entropy;
  check_cuda(verify_row_stats(p, as_stream(stream)), "verify (row stats)");
}

void walk_binding(std::uintptr_t logits, int dtype, int64_t stride_row, int batch, int vocab, std::uintptr_t tokens,
                  std::uintptr_t cu_nodes, std::uintptr_t cu_rows, std::uintptr_t first_child,
                  std::uintptr_t next_sibling, std::uintptr_t temperature, std::uintptr_t threshold,
                  std::uintptr_t row_max, std::uintptr_t row_sum, std::uintptr_t row_entropy,
                  std::uintptr_t row_argmax, std::uintptr_t draft_probs, int64_t stride_q, std::uintptr_t scratch,
                  std::uintptr_t seed, std::uintptr_t offset, std::uintptr_t accept_uniforms,
                  std::uintptr_t exponentials, std::uintptr_t accepted_nodes, std::uintptr_t num_accepted,
                  std::uintptr_t out_tokens, int max_depth, float typical_epsilon, float typical_delta, int mode,
                  std::uintptr_t stream) {
  require(batch >= 0 && vocab >= 1 && max_depth >= 0, "need batch >= 0, vocab >= 1, max_depth >= 0");
  require(mode >= 0 && mode <= 2, "mode code must be 0 (greedy), 1 (exact) or 2 (typical)");
  require(stride_row >= vocab, "logits row stride is smaller than the vocabulary");
  require(!draft_probs || (stride_q >= vocab && scratch), "draft probabilities need stride >= vocab and scratch");
  require(static_cast<int64_t>(vocab) * 2 * (batch > 0 ? batch : 1) < (int64_t{1} << 31) || !draft_probs,
          "scratch of B * 2 * V floats must stay below 2^31 entries");
  require((accept_uniforms == 0) == (exponentials == 0), "uniforms hook needs both accept and exponential");
  require(logits && tokens && cu_nodes && cu_rows && first_child && next_sibling && temperature && row_max &&
              row_sum && row_entropy && row_argmax && seed && offset && num_accepted && out_tokens,
          "null pointer among the walk inputs / outputs");
  WalkParams p{};
  p.logits = ptr<const void>(logits);
  p.dtype = to_dtype(dtype);
  p.stride_row = stride_row;
  p.batch = batch;
  p.vocab = vocab;
  p.tokens = ptr<const int32_t>(tokens);
  p.cu_nodes = ptr<const int32_t>(cu_nodes);
  p.cu_rows = ptr<const int32_t>(cu_rows);
  p.first_child = ptr<const int32_t>(first_child);
  p.next_sibling = ptr<const int32_t>(next_sibling);
  p.temperature = ptr<const float>(temperature);
  p.threshold = ptr<const float>(threshold);
  p.row_max = ptr<const float>(row_max);
  p.row_sum = ptr<const float>(row_sum);
  p.row_entropy = ptr<const float>(row_entropy);
  p.row_argmax = ptr<const int32_t>(row_argmax);
  p.draft_probs = ptr<const float>(draft_probs);
  p.stride_q = stride_q;
  p.scratch = ptr<float>(scratch);
  p.seed = ptr<const int64_t>(seed);
  p.offset = ptr<const int64_t>(offset);
  p.accept_uniforms = ptr<const float>(accept_uniforms);
  p.exponentials = ptr<const float>(exponentials);
  p.accepted_nodes = ptr<int32_t>(accepted_nodes);
  p.num_accepted = ptr<int32_t>(num_accepted);
  p.out_tokens = ptr<int32_t>(out_tokens);
  p.max_depth = max_depth;
  p.typical_epsilon = typical_epsilon;
  p.typical_delta = typical_delta;
  p.mode = static_cast<VerifyMode>(mode);
  check_cuda(verify_walk(p, as_stream(stream)), "verify (walk)");
}

void bind_sampling(py::module_& m) {
  m.def("verify_row_stats_cuda", &row_stats_binding,
        "Per-row argmax / max / softmax sum / entropy of target logits (verify pass 1). Pointers as ints.",
        py::arg("logits"), py::arg("dtype"), py::arg("stride_row"), py::arg("rows"), py::arg("vocab"),
        py::arg("temp_rows"), py::arg("threshold"), py::arg("row_max"), py::arg("row_sum"), py::arg("row_entropy"),
        py::arg("row_argmax"), py::arg("need_sum"), py::arg("need_entropy"), py::arg("stream"));
  m.def("verify_walk_cuda", &walk_binding,
        "Tree walk, accept tests and residual / bonus draw per request (verify pass 2). Pointers as ints.",
        py::arg("logits"), py::arg("dtype"), py::arg("stride_row"), py::arg("batch"), py::arg("vocab"),
        py::arg("tokens"), py::arg("cu_nodes"), py::arg("cu_rows"), py::arg("first_child"), py::arg("next_sibling"),
        py::arg("temperature"), py::arg("threshold"), py::arg("row_max"), py::arg("row_sum"),
        py::arg("row_entropy"), py::arg("row_argmax"), py::arg("draft_probs"), py::arg("stride_q"),
        py::arg("scratch"), py::arg("seed"), py::arg("offset"), py::arg("accept_uniforms"), py::arg("exponentials"),
        py::arg("accepted_nodes"), py::arg("num_accepted"), py::arg("out_tokens"), py::arg("max_depth"),
        py::arg("typical_epsilon"), py::arg("typical_delta"), py::arg("mode"), py::arg("stream"));
}

}  // namespace
}  // namespace verispec

VERISPEC_REGISTER_OPS(sampling, verispec::bind_sampling);
#endif  // VERISPEC_WITH_CUDA
