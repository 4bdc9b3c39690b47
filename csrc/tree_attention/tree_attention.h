// Tree attention launcher: plain pointers, sizes and a stream (no torch headers).
// Semantics are those of verispec.tree_attention (python/verispec/ops/tree_attention.py).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace verispec {

struct TreeAttentionParams {
  const void* q;              // [B, Hq, T, D], unit stride along D
  const void* k;              // contiguous [B, Hkv, S, D] or paged [blocks, page, Hkv, D]; unit stride along D
  const void* v;
  void* out;                  // [B, Hq, T, D], unit stride along D
  const int32_t* prefix_lens; // [B]
  const int32_t* tree_lens;   // [B]
  const uint32_t* ancestors;  // [B, T, W], unit stride along W
  const int32_t* positions;   // [B, T]; read only when window > 0
  const int32_t* block_table; // [B, max_blocks]; null for the contiguous layout
  float* o_part;              // [B * Hkv, num_splits, m_tiles * 64, head_dim] when num_splits > 1
  float* lse_part;            // [B * Hkv, num_splits, m_tiles * 64]
  int batch, q_heads, kv_heads, rows, head_dim;
  int64_t q_stride[3];        // b, h, t
  int64_t k_stride[3];        // contiguous: b, h, s;  paged: block, h, slot
  int64_t v_stride[3];
  int64_t o_stride[3];
  int64_t anc_stride[2];      // b, t
  int64_t pos_stride[2];      // b, t
  int64_t bt_stride;          // block_table row stride
  int page_size;              // 0 = contiguous layout
  int64_t capacity;           // cache entries addressable per request (bounds every K/V read)
  int64_t num_blocks;         // paged: blocks in the pool; an entry whose block id is outside [0, num_blocks) reads nothing
  int num_splits;             // 1..64
  int m_tiles;                // ceil(Hq / Hkv * T / 64)
  float scale, softcap;       // softcap 0 = off
  int window;                 // 0 = off
  bool bf16;                  // else fp16
};

// Grid (m_tiles, B * Hkv, num_splits) + a combine pass when num_splits > 1. head_dim: 64, 128 or 256.
cudaError_t tree_attention_launch(const TreeAttentionParams& p, cudaStream_t stream);

}  // namespace verispec
