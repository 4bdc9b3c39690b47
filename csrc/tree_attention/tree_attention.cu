// Tree attention, CUDA hot path: fp16/bf16, D = 64/128/256, GQA-packed rows, contiguous or paged K/V,
// split-KV.
//
// A block owns 64 packed rows of one (request, KV head): packed row m is tree row m / G of query head
// h * G + m % G, so the G query heads sharing a KV head read each K/V tile once. Its four warps own 16
// rows each and run m16n8k16 tensor-core MMAs; the logits' accumulator fragment is re-packed in
// registers as the A operand of P @ V (no shared-memory round trip). K/V tiles of 64 keys (32 at D=256) stream
// through a two-stage cp.async pipeline. Keys come in two phases that share one loop: the block's
// chunk of the prefix (no mask stored or read, only bounds and the sliding window) and, for the last
// split only, the tree rows up to the tile's last row, masked by ancestor bits.
//
// UNVERIFIED ON GPU: compiled for sm_80/sm_90 but never run; tests/test_tree_attention_triton.py
// (marked gpu) checks it against the float64 oracle when a GPU is present.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tree_attention/tree_attention.h"

namespace verispec {
namespace {

constexpr int kBM = 64;
constexpr int kThreads = 128;

// Per head dim: keys per K/V tile (32 at D=256 keeps two stages of K and V within sm_80's shared
// memory) and the shared-memory row pitch (+16 bytes keeps the 8 rows of an ldmatrix on distinct banks).
template <int D>
struct Tile {
  static_assert(D % 16 == 0 && D >= 16, "head dim must be a multiple of 16");
  static constexpr int kBN = D >= 256 ? 32 : 64;
  static constexpr int kStride = D + 8;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static size_t smem_bytes(size_t elem) { return static_cast<size_t>(64 + 4 * kBN) * kStride * elem; }
};
constexpr int kMaxSplits = 64;
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
struct Pack;
template <>
struct Pack<__half> {
  static __device__ uint32_t two(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct Pack<__nv_bfloat16> {
  static __device__ uint32_t two(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

#ifdef VERISPEC_CUDA_EMULATION
// Tests run this file on a CPU: the PTX wrappers become the emulated warp collectives of
// testing/cuda_emulation.h (see tests/test_tree_attention_cuda_emulated.py).
template <typename T>
void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  emu::mma(c, a, b0, b1, std::is_same<T, __nv_bfloat16>::value);
}
inline void ldmatrix_x4(uint32_t r[4], const void* smem) { emu::ldmatrix(r, smem, false); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* smem) { emu::ldmatrix(r, smem, true); }
inline void cp_async16(void* smem, const void* gmem, bool pred) { emu::cp_async16(smem, gmem, pred); }
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
void cp_async_wait() {
  emu::cp_async_wait(N);
}
#else
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
  uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
  uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// 16-byte async copy; when !pred nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  int bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif  // VERISPEC_CUDA_EMULATION

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Where cache entry j of request b lives: its block (paged) or request (contiguous) and its slot there.
// False when j is outside the cache or its block id is not a block of the pool (the table lives on the
// device, unchecked without a sync): the entry is then zero-filled, never read from outside the pool.
// One lookup serves K and V (a second table read per chunk made the fp16 D=64 kernel spill on sm_90).
__device__ __forceinline__ bool kv_locate(const TreeAttentionParams& p, int b, int j, int64_t& row, int64_t& slot) {
  if (j < 0 || j >= p.capacity) return false;
  if (p.page_size > 0) {
    int blk = p.block_table[b * p.bt_stride + j / p.page_size];
    if (static_cast<unsigned>(blk) >= static_cast<unsigned>(p.num_blocks)) return false;  // also blk < 0
    row = blk;
    slot = j % p.page_size;
    return true;
  }
  row = b;
  slot = j;
  return true;
}

// Element offset of a located entry for KV head h, in a cache with strides st (row, head, slot).
__device__ __forceinline__ int64_t kv_at(const int64_t* st, int h, int64_t row, int64_t slot) {
  return row * st[0] + h * st[1] + slot * st[2];
}

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) tree_attention_kernel(const TreeAttentionParams p) {
  constexpr int kBN = Tile<kD>::kBN, kStride = Tile<kD>::kStride, kChunks = Tile<kD>::kChunks;
#ifdef VERISPEC_CUDA_EMULATION
  unsigned char* smem_raw = emu::dynamic_smem();
#else
  extern __shared__ __align__(16) unsigned char smem_raw[];
#endif
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBM * kStride;  // 2 stages
  T* sV = sK + 2 * kBN * kStride;

  const int tile = blockIdx.x, bh = blockIdx.y, split = blockIdx.z;
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int G = p.q_heads / p.kv_heads;
  // Lengths live on the device, so the glue cannot check them without a sync: out-of-range values are
  // clamped here. A bad length then gives wrong rows for its request, never a read outside q,
  // ancestors or positions (an unclamped tree length reads past T into the next row's mask words).
  const int L = max(p.prefix_lens[b], 0), n = min(max(p.tree_lens[b], 0), p.rows);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m0 = tile * kBM;
  const bool live = static_cast<int64_t>(m0) < static_cast<int64_t>(n) * G;
  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);

  // Q tile: 64 rows of 16-byte chunks; dead rows are zero-filled.
  for (int c = tid; c < kBM * kChunks; c += kThreads) {
    int r = c / kChunks, ch = c % kChunks, m = m0 + r, t = m / G, head = h * G + m % G;
    bool ok = live && t < n;
    const T* src = ok ? qg + b * p.q_stride[0] + head * p.q_stride[1] + t * p.q_stride[2] + ch * 8 : qg;
    cp_async16(sQ + r * kStride + ch * 8, src, ok);
  }
  cp_async_commit();

  // Prefix range: [lo, L), lo > 0 only with a sliding window; this split takes one chunk of it.
  const int t_last = live ? min(n - 1, (m0 + kBM - 1) / G) : -1;
  int hi = live ? L : 0;
  int lo = 0;
  if (p.window > 0 && live) {
    int min_pos = INT32_MAX;
    for (int t = m0 / G; t <= t_last; ++t) min_pos = min(min_pos, p.positions[b * p.pos_stride[0] + t * p.pos_stride[1]]);
    lo = max(0, min_pos - p.window + 1);
  }
  lo = min(lo, hi);
  const int chunk = ceil_div(ceil_div(hi - lo, p.num_splits), kBN) * kBN;
  const int c_lo = lo + split * chunk;
  const int c_hi = min(c_lo + chunk, hi);
  const int n_pre = c_hi > c_lo ? ceil_div(c_hi - c_lo, kBN) : 0;
  const int u_end = (split == p.num_splits - 1 && live) ? t_last + 1 : 0;
  const int n_tiles = n_pre + ceil_div(u_end, kBN);

  auto tile_keys = [&](int i, int& j0, int& jlim) {
    if (i < n_pre) {
      j0 = c_lo + i * kBN;
      jlim = c_hi;
    } else {
      j0 = L + (i - n_pre) * kBN;
      jlim = L + u_end;
    }
  };
  auto load_kv = [&](int i, int stage) {
    int j0, jlim;
    tile_keys(i, j0, jlim);
    T* dk = sK + stage * kBN * kStride;
    T* dv = sV + stage * kBN * kStride;
    for (int c = tid; c < kBN * kChunks; c += kThreads) {
      int r = c / kChunks, ch = c % kChunks, j = j0 + r;
      int64_t row = 0, slot = 0;
      const bool ok = j < jlim && kv_locate(p, b, j, row, slot);
      cp_async16(dk + r * kStride + ch * 8, ok ? kg + kv_at(p.k_stride, h, row, slot) + ch * 8 : kg, ok);
      cp_async16(dv + r * kStride + ch * 8, ok ? vg + kv_at(p.v_stride, h, row, slot) + ch * 8 : vg, ok);
    }
  };

  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<1>();  // the Q group has landed
  __syncthreads();

  // Per-thread rows of the MMA fragments: g and g + 8 of this warp's 16.
  const int g = lane / 4, tig = lane % 4;
  const int wr0 = warp * 16;
  const bool warp_live = live && (m0 + wr0) / G < n;
  int row_t[2];
  bool row_ok[2];
  int qpos[2] = {0, 0};
  const uint32_t* anc_row[2];
  for (int r = 0; r < 2; ++r) {
    int m = m0 + wr0 + g + 8 * r;
    row_t[r] = m / G;
    row_ok[r] = live && row_t[r] < n;
    int tt = row_ok[r] ? row_t[r] : 0;
    anc_row[r] = p.ancestors + b * p.anc_stride[0] + tt * p.anc_stride[1];
    if (p.window > 0 && row_ok[r]) qpos[r] = p.positions[b * p.pos_stride[0] + tt * p.pos_stride[1]];
  }

  // Q fragments live in registers up to D=128; at D=256 they would push the accumulators into spills,
  // so they are re-read from shared memory at every k-step instead.
  constexpr bool kQInRegs = kD <= 128;
  const T* q_frag_row = sQ + (wr0 + (lane % 8) + ((lane / 8) & 1) * 8) * kStride + (lane / 16) * 8;
  uint32_t qf[kQInRegs ? kD / 16 : 1][4];
  if constexpr (kQInRegs) {
    if (warp_live) {
      for (int kk = 0; kk < kD / 16; ++kk) ldmatrix_x4(qf[kk], q_frag_row + kk * 16);
    }
  }

  const float scale_log2 = p.scale * kLog2e;
  float m_i[2] = {-INFINITY, -INFINITY};
  float l_i[2] = {0.f, 0.f};
  float acc[kD / 8][4];
  for (int d = 0; d < kD / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) load_kv(i + 1, (i + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* Ks = sK + (i & 1) * kBN * kStride;
    const T* Vs = sV + (i & 1) * kBN * kStride;
    if (warp_live) {
      float s[kBN / 8][4];
      for (int nt = 0; nt < kBN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        uint32_t qs[4];
        const uint32_t* qa = qf[kQInRegs ? kk : 0];
        if constexpr (!kQInRegs) {
          ldmatrix_x4(qs, q_frag_row + kk * 16);
          qa = qs;
        }
#pragma unroll
        for (int np = 0; np < kBN / 16; ++np) {
          uint32_t kb[4];
          ldmatrix_x4(kb, Ks + (np * 16 + (lane % 8) + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) & 1) * 8);
          mma16816<T>(s[2 * np], qa, kb[0], kb[1]);
          mma16816<T>(s[2 * np + 1], qa, kb[2], kb[3]);
        }
      }
      int j0, jlim;
      tile_keys(i, j0, jlim);
      const bool tree = i >= n_pre;
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int j = j0 + nt * 8 + tig * 2 + (e & 1);
          float x = s[nt][e];
          x = p.softcap > 0.f ? p.softcap * tanhf(x * (p.scale / p.softcap)) * kLog2e : x * scale_log2;
          bool vis = row_ok[r] && j < jlim;
          int kpos = j;
          if (vis && tree) {
            int u = j - L;
            vis = (anc_row[r][u / 32] >> (u % 32)) & 1u;
            if (p.window > 0) kpos = p.positions[b * p.pos_stride[0] + u * p.pos_stride[1]];
          }
          if (p.window > 0) vis = vis && kpos > qpos[r] - p.window;
          s[nt][e] = vis ? x : -INFINITY;
        }
      }
      // Online softmax; the 4 lanes of a quad share rows, so row reductions are two shuffles.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = m_i[r];
        for (int nt = 0; nt < kBN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float ms = mx == -INFINITY ? 0.f : mx;  // nothing seen yet: exp2(-inf - 0) = 0, not NaN
        const float alpha = exp2f(m_i[r] - ms);
        m_i[r] = mx;
        float sum = 0.f;
        for (int nt = 0; nt < kBN / 8; ++nt) {
          s[nt][2 * r] = exp2f(s[nt][2 * r] - ms);
          s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - ms);
          sum += s[nt][2 * r] + s[nt][2 * r + 1];
        }
        l_i[r] = l_i[r] * alpha + sum;
        for (int d = 0; d < kD / 8; ++d) {
          acc[d][2 * r] *= alpha;
          acc[d][2 * r + 1] *= alpha;
        }
      }
      // P @ V: the logits fragments of key tiles 2ks, 2ks+1 are exactly the A operand of k-step ks.
#pragma unroll
      for (int ks = 0; ks < kBN / 16; ++ks) {
        uint32_t pa[4] = {Pack<T>::two(s[2 * ks][0], s[2 * ks][1]), Pack<T>::two(s[2 * ks][2], s[2 * ks][3]),
                          Pack<T>::two(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                          Pack<T>::two(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kD / 16; ++dp) {
          uint32_t vb[4];
          ldmatrix_x4_trans(vb, Vs + (ks * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * kStride + dp * 16 + (lane / 16) * 8);
          mma16816<T>(acc[2 * dp], pa, vb[0], vb[1]);
          mma16816<T>(acc[2 * dp + 1], pa, vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before the next prefetch overwrites it
  }
  cp_async_wait<0>();

  const int m_pad = p.m_tiles * kBM;
  for (int r = 0; r < 2; ++r) {
    float l = l_i[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const bool seen = row_ok[r] && l > 0.f;
    const float inv = seen ? 1.f / l : 0.f;  // padded rows come out as zeros
    const int m = m0 + wr0 + g + 8 * r;
    if (p.num_splits > 1) {
      const int64_t base = (static_cast<int64_t>(bh) * p.num_splits + split) * m_pad + m;
      if (tig == 0) p.lse_part[base] = seen ? m_i[r] + log2f(l) : -INFINITY;
      float* o = p.o_part + base * kD;
      for (int d = 0; d < kD / 8; ++d)
        *reinterpret_cast<float2*>(o + d * 8 + tig * 2) = make_float2(acc[d][2 * r] * inv, acc[d][2 * r + 1] * inv);
    } else if (row_t[r] < p.rows) {
      const int head = h * G + m % G;
      T* o = static_cast<T*>(p.out) + b * p.o_stride[0] + head * p.o_stride[1] + row_t[r] * p.o_stride[2];
      for (int d = 0; d < kD / 8; ++d)
        *reinterpret_cast<uint32_t*>(o + d * 8 + tig * 2) = Pack<T>::two(acc[d][2 * r] * inv, acc[d][2 * r + 1] * inv);
    }
  }
}

// Merge split partials: out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M), zeros for padded rows.
template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) tree_attention_combine_kernel(const TreeAttentionParams p) {
  __shared__ float w[kMaxSplits][kBM];
  const int tile = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int G = p.q_heads / p.kv_heads;
  const int n = min(max(p.tree_lens[b], 0), p.rows);  // clamped as in the main kernel
  const int m0 = tile * kBM, m_pad = p.m_tiles * kBM;
  const int64_t base0 = static_cast<int64_t>(bh) * p.num_splits * m_pad;
  if (threadIdx.x < kBM) {
    const int r = threadIdx.x, m = m0 + r;
    const bool ok = m / G < n;
    float mx = -INFINITY;
    for (int s = 0; s < p.num_splits; ++s) mx = ok ? fmaxf(mx, p.lse_part[base0 + s * m_pad + m]) : mx;
    const float ms = mx == -INFINITY ? 0.f : mx;
    float total = 0.f;
    for (int s = 0; s < p.num_splits; ++s) {
      const float ws = ok ? exp2f(p.lse_part[base0 + s * m_pad + m] - ms) : 0.f;
      w[s][r] = ws;
      total += ws;
    }
    const float inv = total > 0.f ? 1.f / total : 0.f;
    for (int s = 0; s < p.num_splits; ++s) w[s][r] *= inv;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kBM * (kD / 2); idx += kThreads) {
    const int r = idx / (kD / 2), d = (idx % (kD / 2)) * 2, m = m0 + r, t = m / G;
    if (t >= p.rows) continue;
    float a0 = 0.f, a1 = 0.f;
    for (int s = 0; s < p.num_splits; ++s) {
      const float ws = w[s][r];
      if (ws == 0.f) continue;  // also skips partials of padded rows, which are never initialised
      const float2 o = *reinterpret_cast<const float2*>(p.o_part + (base0 + s * m_pad + m) * kD + d);
      a0 += ws * o.x;
      a1 += ws * o.y;
    }
    const int head = h * G + m % G;
    T* out = static_cast<T*>(p.out) + b * p.o_stride[0] + head * p.o_stride[1] + t * p.o_stride[2];
    *reinterpret_cast<uint32_t*>(out + d) = Pack<T>::two(a0, a1);
  }
}

#ifndef VERISPEC_CUDA_EMULATION  // the emulation test launches the kernels itself
template <typename T, int D>
cudaError_t launch_typed(const TreeAttentionParams& p, cudaStream_t stream) {
  const size_t smem = Tile<D>::smem_bytes(sizeof(T));
  cudaError_t err = cudaFuncSetAttribute(tree_attention_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  dim3 grid(p.m_tiles, p.batch * p.kv_heads, p.num_splits);
  tree_attention_kernel<T, D><<<grid, kThreads, smem, stream>>>(p);
  err = cudaGetLastError();
  if (err != cudaSuccess || p.num_splits == 1) return err;
  tree_attention_combine_kernel<T, D><<<dim3(p.m_tiles, p.batch * p.kv_heads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_dim(const TreeAttentionParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 64: return launch_typed<T, 64>(p, stream);
    case 128: return launch_typed<T, 128>(p, stream);
    default: return launch_typed<T, 256>(p, stream);
  }
}
#endif  // VERISPEC_CUDA_EMULATION

}  // namespace

#ifndef VERISPEC_CUDA_EMULATION
cudaError_t tree_attention_launch(const TreeAttentionParams& p, cudaStream_t stream) {
  if ((p.head_dim != 64 && p.head_dim != 128 && p.head_dim != 256) || p.num_splits < 1 || p.num_splits > kMaxSplits || p.kv_heads < 1 ||
      p.q_heads % p.kv_heads != 0 || p.m_tiles < 1 || (p.num_splits > 1 && (!p.o_part || !p.lse_part)) ||
      (p.page_size > 0 && !p.block_table) || (p.window > 0 && !p.positions))
    return cudaErrorInvalidValue;
  if (p.batch == 0 || p.rows == 0) return cudaSuccess;
  return p.bf16 ? launch_dim<__nv_bfloat16>(p, stream) : launch_dim<__half>(p, stream);
}
#endif  // VERISPEC_CUDA_EMULATION

}  // namespace verispec
