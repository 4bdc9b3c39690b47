// KV commit launcher: plain pointers, sizes and a stream (no torch headers).
// Semantics are those of verispec.commit_kv (python/verispec/ops/commit_kv.py).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace verispec {

struct CommitKvParams {
  const uint64_t* caches;     // [num_caches] device array of cache base pointers (same shape/strides)
  int num_caches;
  const int32_t* prefix_lens; // [B]
  const int32_t* path_rows;   // [B, P], -1 padded
  const int32_t* block_table; // [B, max_blocks] or null
  int batch, path_len, kv_heads, head_dim, elem_size;  // elem_size 2, 4 or 8 bytes
  int64_t stride[4];          // contiguous: b, h, s, d;  paged: block, h, slot, d
  int64_t rows_stride[2];     // path_rows b, p
  int64_t bt_stride;
  int page_size;              // 0 = contiguous
  int64_t capacity;
  int64_t num_blocks;         // paged: blocks in the pool; a move touching a block id outside [0, num_blocks) is dropped
};

// Grid (B, num_caches * Hkv): one block walks one request's path for one cache and head.
cudaError_t commit_kv_launch(const CommitKvParams& p, cudaStream_t stream);

}  // namespace verispec
