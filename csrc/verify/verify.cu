// Acceptance (verify) kernels, the structure and arithmetic of triton_kernels/verify.py:
//   1. row_stats: one block per verification row reads the target logits once (the floor): argmax
//      (lowest id on ties), max, Z = sum exp2((l - max) * scale) over kept tokens, and sum w*z for the
//      entropy, with an online softmax so the row is read a single time.
//   2. walk: one block per request walks the tree. The scalar walk runs redundantly on every thread
//      (same loads, same values, uniform control flow, so __syncthreads inside it is safe); with draft
//      probabilities a rejected sibling that has a next sibling costs one block-wide pass building
//      max(p_res - q, 0); the last rejected sibling's subtraction is left to the (parallel) race.
//   3. race: B x splits blocks draw the correction / bonus token from the final row by an exponential
//      race, argmax_v log2 p(v) - log2 E_v. Each thread starts from the key of the row's argmax and skips
//      the random numbers of ids that cannot beat it (E >= E_min, so key <= z2 + 33): same result.
//   4. finalize: reduces the splits, writes the token, the count and the -1 padding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>

#include "verify/philox.cuh"
#include "verify/verify.h"

namespace verispec {
namespace {

constexpr int kStatsThreads = 512;
constexpr int kWalkThreads = 256;
constexpr int kRaceThreads = 256;
constexpr int kMaxExcluded = 64;
constexpr float kMaxNegLog2E = 33.0f;  // -log2(E_min), E_min = exponential(bits = 0) = 1.16e-10

constexpr int kGreedyDone = 1, kInScratch = 2, kExcludeChildren = 4;  // state[b][1] flags

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

struct Stats {
  float m;   // running max over all tokens
  int a;     // argmax (lowest id among maxima)
  float z;   // sum exp2((l - m) * c) over kept tokens
  float s1;  // sum w * z2 over kept tokens (entropy)
};

__device__ __forceinline__ Stats merge(const Stats& A, const Stats& B, float c, bool need_ent) {
  Stats r;
  r.m = fmaxf(A.m, B.m);
  r.a = A.m > B.m ? A.a : (B.m > A.m ? B.a : min(A.a, B.a));
  const float sa = A.z > 0.f ? exp2f((A.m - r.m) * c) : 0.f;
  const float sb = B.z > 0.f ? exp2f((B.m - r.m) * c) : 0.f;
  r.z = A.z * sa + B.z * sb;
  r.s1 = 0.f;
  if (need_ent) {
    // A scale that underflowed to 0 (a part whose max is a finfo.min mask) zeroes the part: the shift
    // (r.m - A.m) * c may have overflowed to inf, and 0 * inf would be NaN.
    const float pa = sa > 0.f ? sa * (A.s1 - (r.m - A.m) * c * A.z) : 0.f;
    const float pb = sb > 0.f ? sb * (B.s1 - (r.m - B.m) * c * B.z) : 0.f;
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

// Adds the chunk x[0..n) (ids i0.., ascending) to a thread's running stats.
template <int N>
__device__ __forceinline__ void accumulate(Stats& st, const float (&x)[N], int n, int i0, float c, float thr,
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
      const float s = exp2f((st.m - cm) * c);
      if (need_ent) st.s1 = s > 0.f ? s * (st.s1 - (cm - st.m) * c * st.z) : 0.f;  // see merge()
      st.z *= s;
    }
    st.m = cm;
    st.a = ca;
  }
  if (need_sum) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      // -inf logits (HF processors' masks) carry no mass; (-inf) - (-inf) would be NaN.
      if (j < n && x[j] >= thr && x[j] > -INFINITY) {
        const float z = (x[j] - st.m) * c;
        const float w = exp2f(z);
        st.z += w;
        if (need_ent && w > 0.f) st.s1 += w * z;  // z may be -inf for a finfo.min mask; w is 0 there
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kStatsThreads) row_stats_kernel(VerifyParams p) {
  const int r = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.stride_row;
  const int V = p.vocab;
  const float c = p.scale_rows[r];
  const float thr = p.threshold ? p.threshold[r] : -INFINITY;
  const bool need_sum = p.mode != VerifyMode::kGreedy;
  const bool need_ent = p.mode == VerifyMode::kTypical;
  Stats st{-INFINITY, INT_MAX, 0.f, 0.f};

  constexpr int kVec = 16 / sizeof(T);
  int start = 0;
  if (reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    // 16-byte loads: the row is read once at full width.
    const int nvec = V / kVec;
    const uint4* vrow = reinterpret_cast<const uint4*>(row);
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      uint4 raw = __ldg(vrow + i);
      const T* e = reinterpret_cast<const T*>(&raw);
      float x[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) x[j] = to_float(e[j]);
      accumulate<kVec>(st, x, kVec, i * kVec, c, thr, need_sum, need_ent);
    }
    start = nvec * kVec;
  }
  for (int i = start + threadIdx.x; i < V; i += blockDim.x) {
    float x[1] = {to_float(row[i])};
    accumulate<1>(st, x, 1, i, c, thr, need_sum, need_ent);
  }

#pragma unroll
  for (int d = 16; d > 0; d >>= 1) st = merge(st, shfl_down(st, d), c, need_ent);
  __shared__ Stats warp_stats[kStatsThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_stats[warp] = st;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = blockDim.x / 32;
    st = lane < nwarps ? warp_stats[lane] : Stats{-INFINITY, INT_MAX, 0.f, 0.f};
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) st = merge(st, shfl_down(st, d), c, need_ent);
    if (lane == 0) {
      p.row_max[r] = st.m;
      p.row_argmax[r] = st.a;
      p.row_sum[r] = st.z;
      // nats: H = ln Z - ln 2 * sum(w * z2) / Z
      p.row_entropy[r] = need_ent ? logf(st.z) - 0.69314718f * st.s1 / st.z : 0.f;
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

__device__ __forceinline__ bool better(float k, int i, float bk, int bi) { return k > bk || (k == bk && i < bi); }

template <typename T>
__global__ void __launch_bounds__(kWalkThreads) walk_kernel(VerifyParams p) {
  __shared__ float red[kWalkThreads / 32];
  const int b = blockIdx.x;
  const int V = p.vocab;
  const int D = p.max_depth;
  const int row0 = p.cu_rows[b];
  const int n0 = p.cu_nodes[b];
  const T* logits = static_cast<const T*>(p.logits);
  const float temp = p.mode == VerifyMode::kGreedy ? 0.f : p.temperature[b];
  const bool greedy = temp == 0.f;
  const float c = p.scale[b];
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
  int lazy = 0;  // 1 + flat node whose q the race subtracts (the last sibling was rejected), 0 = none
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
      p_row = keep ? exp2f((lx - m) * c) / zs : 0.f;
      if (p.mode == VerifyMode::kTypical) {
        ok = p_row > fminf(p.typical_epsilon, p.typical_delta * expf(-p.row_entropy[row]));
      } else {
        float qx = 1.f;
        if (p.draft_probs) {
          qx = p.draft_probs[static_cast<int64_t>(n0 + node) * p.stride_q + x];
          px = scr ? scratch[slot * V + x] / s_res : p_row;
        } else {
          // A token equal to an earlier (rejected) sibling has no residual mass left.
          bool dup = false;
          for (int ch = p.first_child[row]; ch < cand; ch = p.next_sibling[row0 + ch]) dup |= p.tokens[n0 + ch - 1] == x;
          px = dup ? 0.f : p_row / (1.f - mass);
        }
        float u;
        if (p.accept_uniforms) {
          u = p.accept_uniforms[n0 + node];
        } else {
          // word node % 4 of counter node / 4 (a select keeps the words in registers)
          const philox::Out4 r = philox::philox4x32_10(node >> 2, philox::kStreamAccept, off_lo, off_hi, seed);
          const int w = node & 3;
          u = philox::uniform_open0_closed1(w == 0 ? r.x[0] : w == 1 ? r.x[1] : w == 2 ? r.x[2] : r.x[3]);
        }
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
        if (p.draft_probs && p.next_sibling[row0 + cand] < 0) {
          lazy = n0 + node + 1;
        } else if (p.draft_probs) {
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
              pv = lv >= thr ? exp2f((lv - m) * c) / zs : 0.f;
            }
            const float w = fmaxf(pv - q[v], 0.f);
            scratch[new_slot * V + v] = w;
            local += w;
          }
          const float total = block_sum(local, red);
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
  if (threadIdx.x == 0) {
    const int row = row0 + cur;
    int flags = 0, last = slot;
    if (greedy) {
      flags |= kGreedyDone;
      last = p.row_argmax[row];
    }
    if (scr) flags |= kInScratch;
    if (exact && !p.draft_probs) flags |= kExcludeChildren;
    int32_t* st = p.state + static_cast<int64_t>(b) * 5;
    st[0] = row;
    st[1] = flags;
    st[2] = depth;
    st[3] = last;
    st[4] = lazy;
    p.state_f[b] = s_res;
  }
}

struct Best {
  float key = -INFINITY;
  int id = INT_MAX;
  __device__ void offer(float k, int i) {
    if (better(k, i, key, id)) {
      key = k;
      id = i;
    }
  }
};

// Block-wide best, written by thread 0 to part_key/part_idx[slot].
__device__ void write_block_best(Best best, float* red_k, int* red_i, float* part_key, int32_t* part_idx) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) best.offer(__shfl_down_sync(0xffffffffu, best.key, d), __shfl_down_sync(0xffffffffu, best.id, d));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // red_* may still be read by a previous call
  if (lane == 0) {
    red_k[warp] = best.key;
    red_i[warp] = best.id;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) best.offer(red_k[w], red_i[w]);
    *part_key = best.key;
    *part_idx = best.id;
  }
}

template <typename T>
__global__ void __launch_bounds__(kRaceThreads) race_kernel(VerifyParams p) {
  __shared__ int excluded[kMaxExcluded];
  __shared__ float red_k[kRaceThreads / 32];
  __shared__ int red_i[kRaceThreads / 32];
  const int s = blockIdx.x, b = blockIdx.y;
  const int32_t* st = p.state + static_cast<int64_t>(b) * 5;
  const int flags = st[1];
  // best: the draw. fallback: with a pending q subtraction, the draw from the residual before it, used
  // only when the subtraction leaves no mass (rounding), as the reference keeps the previous residual.
  Best best, fallback;
  if (!(flags & kGreedyDone)) {
    const int V = p.vocab;
    const int row = st[0], slot = st[3], lazy = st[4];
    const float s_res = p.state_f[b];
    const int row0 = p.cu_rows[b], n0 = p.cu_nodes[b];
    const float c = p.scale[b];
    const float m = p.row_max[row];
    const float zs = p.row_sum[row];
    const float thr = p.threshold ? p.threshold[row] : -INFINITY;
    const uint64_t seed = static_cast<uint64_t>(p.seed[b]);
    const uint64_t off = static_cast<uint64_t>(p.offset[b]);
    const uint32_t off_lo = static_cast<uint32_t>(off), off_hi = static_cast<uint32_t>(off >> 32);
    const bool in_scratch = flags & kInScratch;
    const bool exclude = (flags & kExcludeChildren) && !in_scratch;
    const T* lrow = static_cast<const T*>(p.logits) + static_cast<int64_t>(row) * p.stride_row;
    const float* wrow = in_scratch ? p.scratch + (static_cast<int64_t>(b) * 2 + slot) * V : nullptr;
    const float* qrow = lazy ? p.draft_probs + static_cast<int64_t>(lazy - 1) * p.stride_q : nullptr;
    int n_excl = 0;
    if (exclude) {
      for (int ch = p.first_child[row]; ch >= 0; ch = p.next_sibling[row0 + ch]) {
        if (n_excl < kMaxExcluded && threadIdx.x == 0) excluded[n_excl] = p.tokens[n0 + ch - 1];
        ++n_excl;
      }
    }
    __syncthreads();
    auto excluded_id = [&](int v) {
      for (int k = 0; k < min(n_excl, kMaxExcluded); ++k)
        if (excluded[k] == v) return true;
      if (n_excl > kMaxExcluded) {
        int k = 0;
        for (int ch = p.first_child[row]; ch >= 0; ch = p.next_sibling[row0 + ch], ++k)
          if (k >= kMaxExcluded && p.tokens[n0 + ch - 1] == v) return true;
      }
      return false;
    };
    // log2 of the current residual at v, up to a constant; -inf when v is not a candidate
    auto log_weight = [&](int v) -> float {
      if (in_scratch) {
        const float w = wrow[v];
        return w > 0.f ? log2f(w) : -INFINITY;
      }
      const float lv = to_float(lrow[v]);
      if (!(lv >= thr) || (exclude && excluded_id(v))) return -INFINITY;
      return (lv - m) * c;
    };
    // the current residual's probability at v (for a pending subtraction)
    auto prob = [&](int v) -> float {
      if (in_scratch) return wrow[v] / s_res;
      const float lv = to_float(lrow[v]);
      return lv >= thr ? exp2f((lv - m) * c) / zs : 0.f;
    };
    // word v % 4 of the group's Philox output; a select, not an indexed load, keeps it in registers
    auto exponential = [&](int v, const philox::Out4& bits) {
      if (p.exponentials) return p.exponentials[static_cast<int64_t>(b) * V + v];
      const int w = v & 3;
      const uint32_t x = w == 0 ? bits.x[0] : w == 1 ? bits.x[1] : w == 2 ? bits.x[2] : bits.x[3];
      return philox::exponential(x);
    };
    // Seed every thread with the row argmax when it is a candidate: most ids then cannot beat it.
    if (!in_scratch && !lazy) {
      const int a = p.row_argmax[row];
      const float la = log_weight(a);
      if (la > -INFINITY) {
        philox::Out4 bits{};
        if (!p.exponentials) bits = philox::philox4x32_10(a >> 2, philox::kStreamResidual, off_lo, off_hi, seed);
        best.offer(la - log2f(exponential(a, bits)), a);
      }
    }
    const int g_begin = s * (kRaceChunk / 4);
    const int g_end = min((s + 1) * (kRaceChunk / 4), (V + 3) / 4);
    for (int g = g_begin + threadIdx.x; g < g_end; g += blockDim.x) {
      float lw[4];
      float top = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int v = 4 * g + j;
        lw[j] = v < V ? log_weight(v) : -INFINITY;
        top = fmaxf(top, lw[j]);
      }
      // cannot win (E >= E_min): no random numbers needed. Never skipped with a pending subtraction.
      if (!lazy && (top == -INFINITY || top + kMaxNegLog2E < best.key)) continue;
      philox::Out4 bits{};
      if (!p.exponentials) bits = philox::philox4x32_10(g, philox::kStreamResidual, off_lo, off_hi, seed);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int v = 4 * g + j;
        if (v >= V) break;
        const float le = log2f(exponential(v, bits));
        if (!lazy) {
          if (lw[j] > -INFINITY) best.offer(lw[j] - le, v);
        } else {
          if (lw[j] > -INFINITY) fallback.offer(lw[j] - le, v);
          const float w = fmaxf(prob(v) - qrow[v], 0.f);
          if (w > 0.f) best.offer(log2f(w) - le, v);
        }
      }
    }
  }
  const int64_t base = static_cast<int64_t>(b) * 2 * p.splits;
  write_block_best(best, red_k, red_i, p.part_key + base + s, p.part_idx + base + s);
  write_block_best(fallback, red_k, red_i, p.part_key + base + p.splits + s, p.part_idx + base + p.splits + s);
}

// Best over a warp of the partials part[0..splits), returned to every lane.
__device__ Best warp_best(const float* key, const int32_t* idx, int splits) {
  Best best;
  for (int s = threadIdx.x; s < splits; s += 32) best.offer(key[s], idx[s]);
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) best.offer(__shfl_down_sync(0xffffffffu, best.key, d), __shfl_down_sync(0xffffffffu, best.id, d));
  best.key = __shfl_sync(0xffffffffu, best.key, 0);
  best.id = __shfl_sync(0xffffffffu, best.id, 0);
  return best;
}

__global__ void finalize_kernel(VerifyParams p) {
  const int b = blockIdx.x;
  const int D = p.max_depth;
  const int32_t* st = p.state + static_cast<int64_t>(b) * 5;
  const int row = st[0], flags = st[1], depth = st[2];
  int last = st[3];
  if (!(flags & kGreedyDone)) {
    const int64_t base = static_cast<int64_t>(b) * 2 * p.splits;
    const Best draw = warp_best(p.part_key + base, p.part_idx + base, p.splits);
    const Best fallback = warp_best(p.part_key + base + p.splits, p.part_idx + base + p.splits, p.splits);
    last = draw.key > -INFINITY ? draw.id : fallback.key > -INFINITY ? fallback.id : p.row_argmax[row];
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

#ifndef VERISPEC_CUDA_EMULATION  // the emulation test (tests/test_verify_cuda_emulated.py) launches the kernels itself
template <typename T>
cudaError_t launch_all(const VerifyParams& p, cudaStream_t stream) {
  if (p.rows > 0) {
    const int threads = p.vocab >= 8192 ? kStatsThreads : 128;
    row_stats_kernel<T><<<p.rows, threads, 0, stream>>>(p);
  }
  walk_kernel<T><<<p.batch, kWalkThreads, 0, stream>>>(p);
  if (p.mode != VerifyMode::kGreedy) race_kernel<T><<<dim3(p.splits, p.batch), kRaceThreads, 0, stream>>>(p);
  finalize_kernel<<<p.batch, 32, 0, stream>>>(p);
  return cudaGetLastError();
}

#endif  // VERISPEC_CUDA_EMULATION

}  // namespace

#ifndef VERISPEC_CUDA_EMULATION
cudaError_t verify_launch(const VerifyParams& p, cudaStream_t stream) {
  if (p.batch <= 0) return cudaSuccess;
  if (p.batch > 65535 && p.mode != VerifyMode::kGreedy) return cudaErrorInvalidConfiguration;  // grid.y limit
  switch (p.dtype) {
    case LogitsDtype::kFloat32: return launch_all<float>(p, stream);
    case LogitsDtype::kFloat16: return launch_all<__half>(p, stream);
    case LogitsDtype::kBFloat16: return launch_all<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

#endif  // VERISPEC_CUDA_EMULATION

}  // namespace verispec
