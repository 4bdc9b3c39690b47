// Acceptance (verify) kernels. Same two-pass structure and arithmetic as triton_kernels/verify.py:
//   1. verify_row_stats: one block per verification row reads the target logits once (the floor):
//      argmax (lowest id on ties), max, Z = sum exp((l - max)/T) over kept tokens, and sum w*z for the
//      entropy, with an online softmax so the row is read a single time.
//   2. verify_walk: one block per request walks the tree. The scalar walk runs redundantly on every
//      thread (same loads, same values, uniform control flow, so __syncthreads inside it is safe);
//      whole-vocabulary passes (residual of a rejected draft with draft probabilities, final
//      exponential-race draw) are spread over the block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>

#include "sampling/philox.cuh"
#include "sampling/verify.h"

namespace verispec {
namespace {

constexpr int kStatsThreads = 512;
constexpr int kWalkThreads = 256;
constexpr int kMaxExcluded = 64;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

struct Stats {
  float m;   // running max over all tokens
  int a;     // argmax (lowest id among maxima)
  float z;   // sum exp((l - m)/t) over kept tokens
  float s1;  // sum w * z over kept tokens (entropy)
};

__device__ __forceinline__ Stats merge(const Stats& A, const Stats& B, float t, bool need_ent) {
  Stats r;
  r.m = fmaxf(A.m, B.m);
  r.a = A.m > B.m ? A.a : (B.m > A.m ? B.a : min(A.a, B.a));
  const float sa = A.z > 0.f ? expf((A.m - r.m) / t) : 0.f;
  const float sb = B.z > 0.f ? expf((B.m - r.m) / t) : 0.f;
  r.z = A.z * sa + B.z * sb;
  r.s1 = 0.f;
  if (need_ent) {
    const float pa = A.z > 0.f ? sa * (A.s1 - (r.m - A.m) / t * A.z) : 0.f;
    const float pb = B.z > 0.f ? sb * (B.s1 - (r.m - B.m) / t * B.z) : 0.f;
    r.s1 = pa + pb;
  }
  return r;
}

__device__ __forceinline__ Stats shfl_down(const Stats& s, int delta) {
  Stats o;
  o.m = __shfl_down_sync(0xffffffffu, s.m, delta);
  o.a = __shfl_down_sync(0xffffffffu, s.a, delta);
  o.z = __shfl_down_sync(0xffffffffu, s.z, delta);
  o.s1 = __shfl_down_sync(0xffffffffu, s.s1, delta);
  return o;
}

// Adds the chunk x[0..n) (ids i0..i0+n-1, ascending) to a thread's running stats.
template <int N>
__device__ __forceinline__ void accumulate(Stats& st, const float (&x)[N], int n, int i0, float t, float thr,
                                           bool need_sum, bool need_ent) {
  float cm = -INFINITY;
  int ca = INT_MAX;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (j < n && x[j] > cm) {
      cm = x[j];
      ca = i0 + j;
    }
  }
  if (cm > st.m) {
    if (need_sum && st.z > 0.f) {
      const float s = expf((st.m - cm) / t);
      if (need_ent) st.s1 = s * (st.s1 - (cm - st.m) / t * st.z);
      st.z *= s;
    }
    st.m = cm;
    st.a = ca;
  }
  if (need_sum) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (j < n && x[j] >= thr) {
        const float z = (x[j] - st.m) / t;
        const float w = expf(z);
        st.z += w;
        if (need_ent) st.s1 += w * z;
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kStatsThreads) row_stats_kernel(RowStatsParams p) {
  const int r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.stride_row;
  const int V = p.vocab;
  const float temp = p.temp_rows[r];
  const float t = temp > 0.f ? temp : 1.f;
  const float thr = p.threshold ? p.threshold[r] : -INFINITY;
  const bool need_sum = p.need_sum && temp > 0.f;
  const bool need_ent = p.need_entropy && need_sum;
  Stats st{-INFINITY, INT_MAX, 0.f, 0.f};

  constexpr int kVec = 16 / sizeof(T);
  const bool aligned = (reinterpret_cast<uintptr_t>(row) % 16 == 0);
  int start = 0;
  if (aligned) {
    // 16-byte loads: the row is read once at full width.
    const int nvec = V / kVec;
    const uint4* vrow = reinterpret_cast<const uint4*>(row);
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      uint4 raw = __ldg(vrow + i);
      const T* e = reinterpret_cast<const T*>(&raw);
      float x[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) x[j] = to_float(e[j]);
      accumulate<kVec>(st, x, kVec, i * kVec, t, thr, need_sum, need_ent);
    }
    start = nvec * kVec;
  }
  for (int i = start + threadIdx.x; i < V; i += blockDim.x) {
    float x[1] = {to_float(row[i])};
    accumulate<1>(st, x, 1, i, t, thr, need_sum, need_ent);
  }

  // Block reduction: warps by shuffles, then the warp leaders through shared memory.
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) st = merge(st, shfl_down(st, d), t, need_ent);
  __shared__ Stats warp_stats[kStatsThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_stats[warp] = st;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = blockDim.x / 32;
    st = lane < nwarps ? warp_stats[lane] : Stats{-INFINITY, INT_MAX, 0.f, 0.f};
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) st = merge(st, shfl_down(st, d), t, need_ent);
    if (lane == 0) {
      p.row_max[r] = st.m;
      p.row_argmax[r] = st.a;
      if (p.need_sum) p.row_sum[r] = st.z;
      if (p.need_entropy) p.row_entropy[r] = logf(st.z) - st.s1 / st.z;
    }
  }
}

// Sum over the block, returned to every thread (all threads must call it).
__device__ float block_sum(float v, float* red) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) s += red[w];
  return s;
}

// Best (key, id) over the block: larger key, then lower id. Result returned to every thread.
__device__ int block_argmax(float key, int id, float* red_k, int* red_i) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) {
    const float ok = __shfl_down_sync(0xffffffffu, key, d);
    const int oi = __shfl_down_sync(0xffffffffu, id, d);
    if (ok > key || (ok == key && oi < id)) {
      key = ok;
      id = oi;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) {
    red_k[warp] = key;
    red_i[warp] = id;
  }
  __syncthreads();
  float bk = red_k[0];
  int bi = red_i[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (red_k[w] > bk || (red_k[w] == bk && red_i[w] < bi)) {
      bk = red_k[w];
      bi = red_i[w];
    }
  }
  return bi;
}

template <typename T>
__global__ void __launch_bounds__(kWalkThreads) walk_kernel(WalkParams p) {
  __shared__ float red_f[kWalkThreads / 32];
  __shared__ int red_i[kWalkThreads / 32];
  __shared__ int excluded[kMaxExcluded];
  const int b = blockIdx.x;
  const int V = p.vocab;
  const int D = p.max_depth;
  const int row0 = p.cu_rows[b];
  const int n0 = p.cu_nodes[b];
  const T* logits = static_cast<const T*>(p.logits);
  const float temp = p.mode == VerifyMode::kGreedy ? 0.f : p.temperature[b];
  const bool greedy = temp == 0.f;
  const float t = greedy ? 1.f : temp;
  const uint64_t seed = static_cast<uint64_t>(p.seed[b]);
  const uint64_t off = static_cast<uint64_t>(p.offset[b]);
  const uint32_t off_lo = static_cast<uint32_t>(off), off_hi = static_cast<uint32_t>(off >> 32);
  float* scratch = p.scratch ? p.scratch + static_cast<int64_t>(b) * 2 * V : nullptr;
  const bool exact = p.mode == VerifyMode::kExact;

  int cur = 0, cand = p.first_child[row0], depth = 0;
  float mass = 0.f;  // deterministic drafts: target mass of the distinct rejected siblings
  bool scr = false;  // draft probabilities: the residual lives in scratch slot `slot`, sum s_res
  int slot = 0;
  float s_res = 1.f;
  while (cand >= 0) {
    const int node = cand - 1;
    const int x = p.tokens[n0 + node];
    const int row = row0 + cur;
    const T* lrow = logits + static_cast<int64_t>(row) * p.stride_row;
    bool ok;
    float m = 0.f, zs = 1.f, p_row = 0.f, px = 0.f;
    if (greedy) {
      ok = x == p.row_argmax[row];
    } else {
      m = p.row_max[row];
      zs = p.row_sum[row];
      const float lx = to_float(lrow[x]);
      const bool keep = !p.threshold || lx >= p.threshold[row];
      p_row = keep ? expf((lx - m) / t) / zs : 0.f;
      if (p.mode == VerifyMode::kTypical) {
        const float bar = fminf(p.typical_epsilon, p.typical_delta * expf(-p.row_entropy[row]));
        ok = p_row > bar;
      } else {
        float qx = 1.f;
        if (p.draft_probs) {
          qx = p.draft_probs[static_cast<int64_t>(n0 + node) * p.stride_q + x];
          px = scr ? scratch[slot * V + x] / s_res : p_row;
        } else {
          // A token equal to an earlier (rejected) sibling has no residual mass left.
          bool dup = false;
          for (int c = p.first_child[row]; c < cand; c = p.next_sibling[row0 + c]) dup |= p.tokens[n0 + c - 1] == x;
          px = dup ? 0.f : p_row / (1.f - mass);
        }
        const float u = p.accept_uniforms
                            ? p.accept_uniforms[n0 + node]
                            : philox::uniform_open0_closed1(
                                  philox::philox4x32_10(node, philox::kStreamAccept, off_lo, off_hi, seed).x[0]);
        ok = px > 0.f && u * qx <= px;
      }
    }
    if (ok) {
      if (threadIdx.x == 0) {
        p.accepted_nodes[static_cast<int64_t>(b) * D + depth] = node;
        p.out_tokens[static_cast<int64_t>(b) * (D + 1) + depth] = x;
      }
      ++depth;
      cur = cand;
      cand = p.first_child[row0 + cur];
      mass = 0.f;
      scr = false;
      s_res = 1.f;
    } else {
      if (exact && !greedy) {
        if (p.draft_probs) {
          // residual <- max(residual - q, 0), written to the other slot so a zero-mass result
          // (rounding only) can keep the previous residual, as the reference does.
          const int new_slot = 1 - slot;
          const float* q = p.draft_probs + static_cast<int64_t>(n0 + node) * p.stride_q;
          const float thr = p.threshold ? p.threshold[row] : -INFINITY;
          float local = 0.f;
          for (int v = threadIdx.x; v < V; v += blockDim.x) {
            float pv;
            if (scr) {
              pv = scratch[slot * V + v] / s_res;
            } else {
              const float lv = to_float(lrow[v]);
              pv = lv >= thr ? expf((lv - m) / t) / zs : 0.f;
            }
            const float w = fmaxf(pv - q[v], 0.f);
            scratch[new_slot * V + v] = w;
            local += w;
          }
          const float total = block_sum(local, red_f);
          if (total > 0.f) {
            scr = true;
            slot = new_slot;
            s_res = total;
          }
        } else if (px > 0.f) {
          mass += p_row;
        }
      }
      cand = p.next_sibling[row0 + cand];
    }
  }

  const int row = row0 + cur;
  int last;
  if (greedy) {
    last = p.row_argmax[row];
  } else {
    const float m = p.row_max[row];
    const T* lrow = logits + static_cast<int64_t>(row) * p.stride_row;
    const float thr = p.threshold ? p.threshold[row] : -INFINITY;
    // Deterministic drafts: every child of the final row was rejected and has no residual mass.
    int n_excl = 0;
    const bool exclude = exact && !p.draft_probs && !scr;
    if (exclude) {
      for (int c = p.first_child[row]; c >= 0; c = p.next_sibling[row0 + c]) {
        if (n_excl < kMaxExcluded && threadIdx.x == 0) excluded[n_excl] = p.tokens[n0 + c - 1];
        ++n_excl;
      }
    }
    __syncthreads();
    float best = -INFINITY;
    int best_id = INT_MAX;
    const int groups = (V + 3) / 4;
    for (int g = threadIdx.x; g < groups; g += blockDim.x) {
      philox::Out4 bits{};
      if (!p.exponentials) bits = philox::philox4x32_10(g, philox::kStreamResidual, off_lo, off_hi, seed);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int v = 4 * g + j;
        if (v >= V) break;
        float logp;
        if (scr) {
          const float w = scratch[slot * V + v];
          logp = w > 0.f ? logf(w) : -INFINITY;
        } else {
          const float lv = to_float(lrow[v]);
          bool keep = lv >= thr;
          if (exclude && keep) {
            for (int k = 0; k < min(n_excl, kMaxExcluded); ++k) keep &= excluded[k] != v;
            if (n_excl > kMaxExcluded) {
              int k = 0;
              for (int c = p.first_child[row]; c >= 0; c = p.next_sibling[row0 + c], ++k)
                if (k >= kMaxExcluded) keep &= p.tokens[n0 + c - 1] != v;
            }
          }
          logp = keep ? (lv - m) / t : -INFINITY;
        }
        if (logp == -INFINITY) continue;
        const float e = p.exponentials ? p.exponentials[static_cast<int64_t>(b) * V + v] : philox::exponential(bits.x[j]);
        const float key = logp - logf(e);
        if (key > best) {  // ids ascend per thread: ties keep the lowest
          best = key;
          best_id = v;
        }
      }
    }
    last = block_argmax(best, best_id, red_f, red_i);
    if (last == INT_MAX) last = p.row_argmax[row];
  }
  if (threadIdx.x == 0) {
    p.out_tokens[static_cast<int64_t>(b) * (D + 1) + depth] = last;
    p.num_accepted[b] = depth;
  }
  for (int j = threadIdx.x; j <= D; j += blockDim.x) {
    if (j < D && j >= depth) p.accepted_nodes[static_cast<int64_t>(b) * D + j] = -1;
    if (j > depth) p.out_tokens[static_cast<int64_t>(b) * (D + 1) + j] = -1;
  }
}

}  // namespace

cudaError_t verify_row_stats(const RowStatsParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  const int threads = p.vocab >= 8192 ? kStatsThreads : 128;
  switch (p.dtype) {
    case LogitsDtype::kFloat32: row_stats_kernel<float><<<p.rows, threads, 0, stream>>>(p); break;
    case LogitsDtype::kFloat16: row_stats_kernel<__half><<<p.rows, threads, 0, stream>>>(p); break;
    case LogitsDtype::kBFloat16: row_stats_kernel<__nv_bfloat16><<<p.rows, threads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t verify_walk(const WalkParams& p, cudaStream_t stream) {
  if (p.batch <= 0) return cudaSuccess;
  switch (p.dtype) {
    case LogitsDtype::kFloat32: walk_kernel<float><<<p.batch, kWalkThreads, 0, stream>>>(p); break;
    case LogitsDtype::kFloat16: walk_kernel<__half><<<p.batch, kWalkThreads, 0, stream>>>(p); break;
    case LogitsDtype::kBFloat16: walk_kernel<__nv_bfloat16><<<p.batch, kWalkThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace verispec
