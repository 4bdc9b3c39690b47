// Launcher of the acceptance (verify) kernels: pointers, sizes and a stream in, cudaError_t out.
// The semantics are those of verispec/ops/verify.py (verify_reference); Python validates every tensor.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace verispec {

enum class LogitsDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class VerifyMode : int { kGreedy = 0, kExact = 1, kTypical = 2 };

// Race splits: one block per (request, chunk of kRaceChunk vocabulary ids).
constexpr int kRaceChunk = 4096;

struct VerifyParams {
  // target logits [R, V], row stride in elements
  const void* logits;
  LogitsDtype dtype;
  int64_t stride_row;
  int rows;   // R = N + B
  int batch;  // B
  int vocab;  // V
  VerifyMode mode;
  // trees and their buffers (tree_buffers); local rows, -1 = none
  const int32_t* tokens;        // [N]
  const int32_t* cu_nodes;      // [B+1]
  const int32_t* cu_rows;       // [B+1]
  const int32_t* first_child;   // [R]
  const int32_t* next_sibling;  // [R]
  // sampling parameters
  const float* temperature;  // [B]; 0 = greedy request
  const float* scale;        // [B] log2(e) / T
  const float* scale_rows;   // [R] the same per row
  const float* threshold;    // [R] logit threshold of top-k/top-p, or nullptr
  float typical_epsilon;
  float typical_delta;
  const float* draft_probs;  // [N, V] float32 rows with stride stride_q, or nullptr (deterministic drafts)
  int64_t stride_q;
  const int64_t* seed;           // [B]
  const int64_t* offset;         // [B]
  const float* accept_uniforms;  // [N] test hook, or nullptr (Philox)
  const float* exponentials;     // [B, V] test hook, or nullptr (Philox)
  // workspaces
  float* row_max;       // [R]
  float* row_sum;       // [R]
  float* row_entropy;   // [R]
  int32_t* row_argmax;  // [R]
  float* scratch;       // [B, 2, V] when draft_probs is given
  int32_t* state;       // [B, 5] final row, flags, depth, last token | scratch slot, 1 + pending q node
  float* state_f;       // [B] sum of the scratch residual
  float* part_key;      // [B, 2, splits] best key per split: the draw, and the fallback draw
  int32_t* part_idx;    // [B, 2, splits]
  int splits;           // ceil(V / kRaceChunk)
  // outputs
  int32_t* accepted_nodes;  // [B, D]
  int32_t* num_accepted;    // [B]
  int32_t* out_tokens;      // [B, D + 1]
  int max_depth;            // D
};

// Four launches on `stream`: row stats, walk, race (B x splits blocks), finalize. No host sync.
cudaError_t verify_launch(const VerifyParams& p, cudaStream_t stream);

}  // namespace verispec
