// KV commit: move the accepted path's K/V next to the prefix, for every layer in one launch.
//
// Block (b, cache * Hkv + h) walks request b's path in chunks of kChunk rows: it copies the chunk's
// source rows into shared memory, synchronises, then writes them to their destinations. Path rows
// strictly increase, so row_i >= i: no source read in a later chunk was written by an earlier chunk,
// and inside a chunk the barrier puts every read before any write. Entries that would break that
// argument or leave the request's slots are skipped (see moves()).
//
// UNVERIFIED ON GPU: compiled, never run; tests/test_commit_kv.py runs it when a GPU is present.
#include <cuda_runtime.h>

#include <cstdint>

#include "commit_kv/commit_kv.h"

namespace verispec {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 16;
constexpr int kMaxRowBytes = 1024;  // D * elem_size; checked by the launcher

// Element offset of cache entry idx of request b, head h; -1 when its block id is not a block of the pool
// (the table lives on the device, unchecked without a sync): such a move is dropped, never done outside it.
template <typename E>
__device__ __forceinline__ int64_t slot_offset(const CommitKvParams& p, int b, int h, int idx) {
  if (p.page_size > 0) {
    int blk = p.block_table[b * p.bt_stride + idx / p.page_size];
    if (blk < 0 || blk >= p.num_blocks) return -1;
    return blk * p.stride[0] + h * p.stride[1] + static_cast<int64_t>(idx % p.page_size) * p.stride[2];
  }
  return b * p.stride[0] + h * p.stride[1] + static_cast<int64_t>(idx) * p.stride[2];
}

// Only entries with row > i move. A valid path has row_i >= i (equal: stays put), so this drops
// nothing valid; on a malformed path (lengths and rows live on the device, unchecked without a sync)
// it keeps every access inside the request's own slots [L, capacity): src = L + row < capacity and
// dst = L + i < src. It also keeps the in-place argument sound: a later chunk's source L + row_j
// (row_j > j) is never an earlier chunk's destination.
__device__ __forceinline__ bool moves(int row, int i, int L, int64_t src, int64_t capacity) {
  return row > i && L >= 0 && src < capacity;
}

template <typename E>
__global__ void __launch_bounds__(kThreads) commit_kv_kernel(const CommitKvParams p) {
  __shared__ __align__(16) unsigned char staged_raw[kChunk * kMaxRowBytes];
  E* staged = reinterpret_cast<E*>(staged_raw);
  const int b = blockIdx.x;
  const int cache = blockIdx.y / p.kv_heads, h = blockIdx.y % p.kv_heads;
  E* base = reinterpret_cast<E*>(p.caches[cache]);
  const int L = p.prefix_lens[b];
  const int D = p.head_dim;
  for (int c0 = 0; c0 < p.path_len; c0 += kChunk) {
    const int rows = min(kChunk, p.path_len - c0);
    for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
      const int i = c0 + idx / D, d = idx % D;
      const int row = p.path_rows[b * p.rows_stride[0] + i * p.rows_stride[1]];
      const int64_t src = static_cast<int64_t>(L) + row;
      if (moves(row, i, L, src, p.capacity)) {
        const int64_t so = slot_offset<E>(p, b, h, static_cast<int>(src));
        if (so >= 0 && slot_offset<E>(p, b, h, L + i) >= 0) staged[idx] = base[so + d * p.stride[3]];
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
      const int i = c0 + idx / D, d = idx % D;
      const int row = p.path_rows[b * p.rows_stride[0] + i * p.rows_stride[1]];
      const int64_t src = static_cast<int64_t>(L) + row;
      if (moves(row, i, L, src, p.capacity)) {
        const int64_t dst_off = slot_offset<E>(p, b, h, L + i);
        if (dst_off >= 0 && slot_offset<E>(p, b, h, static_cast<int>(src)) >= 0)
          base[dst_off + d * p.stride[3]] = staged[idx];
      }
    }
    __syncthreads();  // the next chunk reuses the staging buffer
  }
}

}  // namespace

#ifndef VERISPEC_CUDA_EMULATION  // the emulation test launches the kernel itself
cudaError_t commit_kv_launch(const CommitKvParams& p, cudaStream_t stream) {
  if (p.num_caches < 1 || p.kv_heads < 1 || p.head_dim < 1 || p.head_dim * p.elem_size > kMaxRowBytes ||
      (p.page_size > 0 && !p.block_table))
    return cudaErrorInvalidValue;
  if (p.batch == 0 || p.path_len == 0) return cudaSuccess;
  dim3 grid(p.batch, p.num_caches * p.kv_heads);
  switch (p.elem_size) {
    case 2: commit_kv_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(p); break;
    case 4: commit_kv_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(p); break;
    case 8: commit_kv_kernel<uint64_t><<<grid, kThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
#endif  // VERISPEC_CUDA_EMULATION

}  // namespace verispec
