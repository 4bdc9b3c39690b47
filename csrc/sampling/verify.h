// Launchers of the acceptance (verify) kernels: pointers, sizes and a stream in, cudaError_t out.
// The semantics are those of verispec/ops/verify.py (verify_reference); Python validates every tensor.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace verispec {

enum class LogitsDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class VerifyMode : int { kGreedy = 0, kExact = 1, kTypical = 2 };

struct RowStatsParams {
  const void* logits;      // [R, V] rows with stride stride_row (elements)
  LogitsDtype dtype;
  int64_t stride_row;
  int rows;                // R
  int vocab;               // V
  const float* temp_rows;  // [R]; 0 = greedy row (only the argmax is needed)
  const float* threshold;  // [R] logit threshold of top-k/top-p, or nullptr
  float* row_max;          // [R]
  float* row_sum;          // [R] sum exp((l - max) / T) over kept tokens (need_sum)
  float* row_entropy;      // [R] entropy of the row distribution (need_entropy)
  int32_t* row_argmax;     // [R] lowest id among the maxima
  bool need_sum;
  bool need_entropy;
};

struct WalkParams {
  const void* logits;
  LogitsDtype dtype;
  int64_t stride_row;
  int batch;  // B
  int vocab;  // V
  const int32_t* tokens;        // [N]
  const int32_t* cu_nodes;      // [B+1]
  const int32_t* cu_rows;       // [B+1]
  const int32_t* first_child;   // [R] local rows, -1 = none
  const int32_t* next_sibling;  // [R]
  const float* temperature;     // [B]
  const float* threshold;       // [R] or nullptr
  const float* row_max;
  const float* row_sum;
  const float* row_entropy;
  const int32_t* row_argmax;
  const float* draft_probs;  // [N, V] float32 with stride stride_q, or nullptr (deterministic drafts)
  int64_t stride_q;
  float* scratch;                // [B, 2, V] when draft_probs is given
  const int64_t* seed;           // [B]
  const int64_t* offset;         // [B]
  const float* accept_uniforms;  // [N] test hook, or nullptr (Philox)
  const float* exponentials;     // [B, V] test hook, or nullptr (Philox)
  int32_t* accepted_nodes;       // [B, D]
  int32_t* num_accepted;         // [B]
  int32_t* out_tokens;           // [B, D + 1]
  int max_depth;                 // D
  float typical_epsilon;
  float typical_delta;
  VerifyMode mode;
};

cudaError_t verify_row_stats(const RowStatsParams& p, cudaStream_t stream);
cudaError_t verify_walk(const WalkParams& p, cudaStream_t stream);

}  // namespace verispec
