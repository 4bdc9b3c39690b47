// CPU emulation of the CUDA primitives used by tree_attention.cu and commit_kv.cu. TESTS ONLY: never
// part of the built module (it is a header, and only tests/test_tree_attention_cuda_emulated.py
// includes it). It lets the kernels' own source run on a machine without a GPU, so their index
// arithmetic, masking, softmax and fragment handling can be checked against the float64 oracle.
//
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread, scheduled round-robin; a
// barrier (__syncthreads, or the warp-wide exchange inside a collective) lets a fiber pass once every
// fiber of its group has arrived, and a schedule in which nobody can move reports a deadlock instead
// of hanging. Warp collectives follow the PTX ISA fragment layouts: mma.m16n8k16 (row.col, fp32
// accumulate), ldmatrix.x4 (optionally .trans) and shfl.xor. cp.async copies land at a random point
// between issue and the cp.async.wait_group that retires their commit group, so reading shared memory
// before the covering wait sees stale or poisoned (0xCD) bytes, and overwriting a buffer other warps
// still read shows up. Warps are randomly held back for whole scheduling rounds (a fixed-seed
// generator, so runs repeat), which lets them drift apart the way real warps do.
//
// Usage (a test driver): include <cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h>, then this header,
// then define VERISPEC_CUDA_EMULATION and include the .cu file; launch with emu::launch.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

using std::max;
using std::min;

namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

constexpr int kMaxThreads = 1024;

struct Lane {  // what one lane publishes to its warp for a collective
  uint32_t a[4], b[2];
  const void* addr;
  float f;
};

struct Copy {
  void* dst;
  const void* src;
  bool pred;
};

struct State {
  Dim3 block_idx, grid_dim, block_dim;
  int nthreads = 0, cur = 0;
  std::vector<ucontext_t> ctx;
  std::vector<std::vector<char>> stacks;
  std::vector<char> done;
  std::vector<long> block_epoch, warp_epoch;
  std::vector<Lane> lanes;
  std::vector<std::vector<Copy>> open_copies;                // per thread: issued, not yet committed
  std::vector<std::vector<std::vector<Copy>>> copy_groups;  // per thread: committed, not yet retired
  ucontext_t main_ctx;
  std::function<void()> body;
  bool progressed = false;
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  std::vector<unsigned char> smem;
};

inline State& st() {
  static State s;
  return s;
}

inline uint32_t random_u32() {  // xorshift64*: deterministic, good enough to perturb schedules
  uint64_t& x = st().rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return static_cast<uint32_t>((x * 0x2545F4914F6CDD1Dull) >> 32);
}

inline Dim3 thread_idx() {
  Dim3 d;
  d.x = static_cast<unsigned>(st().cur);
  return d;
}

inline void yield() { swapcontext(&st().ctx[st().cur], &st().main_ctx); }

// Pass the k-th barrier of a group once every live fiber of the group has reached its k-th.
inline void wait_group(std::vector<long>& epoch, int first, int count) {
  State& s = st();
  const long mine = ++epoch[s.cur];
  for (;;) {
    bool all = true;
    for (int i = first; i < first + count; ++i)
      if (!s.done[i] && epoch[i] < mine) all = false;
    if (all) break;
    yield();
  }
  s.progressed = true;
}

inline void syncthreads() { wait_group(st().block_epoch, 0, st().nthreads); }

inline void syncwarp() {
  const int w = st().cur / 32;
  wait_group(st().warp_epoch, w * 32, 32);
}

inline int lane_id() { return st().cur % 32; }
inline Lane& lane(int l) { return st().lanes[(st().cur / 32) * 32 + l]; }

// Every lane publishes v, then reads lane src's value (32-bit types); the shuffle variants pick src.
template <typename V>
V shfl_from(V v, int src) {
  static_assert(sizeof(V) == 4, "32-bit shuffles only");
  std::memcpy(&lane(lane_id()).f, &v, 4);
  syncwarp();
  V out;
  std::memcpy(&out, &lane(src).f, 4);
  syncwarp();
  return out;
}

template <typename V>
V shfl_xor(V v, int mask) {
  return shfl_from(v, lane_id() ^ mask);
}

inline float bits_to_float(uint16_t bits, bool bf16) {
  if (bf16) {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half_raw r;
  r.x = bits;
  return __half2float(__half(r));
}

inline uint16_t half_of(uint32_t reg, int which) { return static_cast<uint16_t>(which ? reg >> 16 : reg & 0xffff); }

// D = A(16x16) * B(16x8) + C per the PTX m16n8k16 fragment layouts (groupID = lane / 4, tig = lane % 4).
inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool bf16) {
  Lane& me = lane(lane_id());
  std::memcpy(me.a, a, sizeof(me.a));
  me.b[0] = b0;
  me.b[1] = b1;
  syncwarp();
  const int g = lane_id() / 4, tig = lane_id() % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = tig * 2 + (e & 1);
    float acc = c[e];
    for (int k = 0; k < 16; ++k) {
      const Lane& la = lane((row % 8) * 4 + (k % 8) / 2);
      const uint32_t areg = la.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
      const Lane& lb = lane(col * 4 + (k % 8) / 2);
      const uint32_t breg = lb.b[k >= 8 ? 1 : 0];
      acc += bits_to_float(half_of(areg, k % 2), bf16) * bits_to_float(half_of(breg, k % 2), bf16);
    }
    c[e] = acc;
  }
  syncwarp();
}

// ldmatrix.x4: lane l gives the address of row l % 8 of matrix l / 8 (8 x 16-bit each).
inline void ldmatrix(uint32_t r[4], const void* row_addr, bool trans) {
  lane(lane_id()).addr = row_addr;
  syncwarp();
  const int l = lane_id();
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* row = static_cast<const uint16_t*>(lane(i * 8 + l / 4).addr);
      lo = row[2 * (l % 4)];
      hi = row[2 * (l % 4) + 1];
    } else {
      lo = static_cast<const uint16_t*>(lane(i * 8 + 2 * (l % 4)).addr)[l / 4];
      hi = static_cast<const uint16_t*>(lane(i * 8 + 2 * (l % 4) + 1).addr)[l / 4];
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  syncwarp();
}

inline void land(const Copy& c) {
  if (c.pred)
    std::memcpy(c.dst, c.src, 16);
  else
    std::memset(c.dst, 0, 16);
}

inline void cp_async16(void* dst, const void* src, bool pred) {
  Copy c{dst, src, pred};
  if (random_u32() % 2)
    land(c);  // as early as hardware could
  else
    st().open_copies[st().cur].push_back(c);  // or as late as the kernel allows
}

inline void cp_async_commit() {
  State& s = st();
  s.copy_groups[s.cur].push_back(std::move(s.open_copies[s.cur]));
  s.open_copies[s.cur].clear();
}

// cp.async.wait_group n: every committed group but the n most recent has landed.
inline void cp_async_wait(int n) {
  auto& groups = st().copy_groups[st().cur];
  while (static_cast<int>(groups.size()) > n) {
    for (const Copy& c : groups.front()) land(c);
    groups.erase(groups.begin());
  }
}

inline unsigned char* dynamic_smem() { return st().smem.data(); }

inline void trampoline() {
  State& s = st();
  s.body();
  s.done[s.cur] = 1;
  s.progressed = true;
  swapcontext(&s.ctx[s.cur], &s.main_ctx);
}

// Run `body` as every thread of every block of the grid (blocks one after another). Returns false and
// prints where on a deadlock (a barrier some threads of the group never reach).
inline bool launch(Dim3 grid, int threads, size_t smem_bytes, std::function<void()> body) {
  State& s = st();
  s.grid_dim = grid;
  s.block_dim.x = static_cast<unsigned>(threads);
  s.nthreads = threads;
  s.body = std::move(body);
  s.rng = 0x9E3779B97F4A7C15ull;  // every launch replays the same schedule
  s.smem.assign(smem_bytes + 16, 0xCD);  // poisoned, like uninitialised shared memory
  s.ctx.resize(threads);
  s.stacks.resize(threads);
  s.lanes.assign(((threads + 31) / 32) * 32, Lane{});
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        s.block_idx = Dim3{x, y, z};
        s.done.assign(threads, 0);
        s.block_epoch.assign(threads, 0);
        s.warp_epoch.assign(threads, 0);
        s.open_copies.assign(threads, {});
        s.copy_groups.assign(threads, {});
        for (int t = 0; t < threads; ++t) {
          s.stacks[t].resize(256 * 1024);
          getcontext(&s.ctx[t]);
          s.ctx[t].uc_stack.ss_sp = s.stacks[t].data();
          s.ctx[t].uc_stack.ss_size = s.stacks[t].size();
          s.ctx[t].uc_link = nullptr;
          makecontext(&s.ctx[t], trampoline, 0);
        }
        for (;;) {
          bool all_done = true;
          s.progressed = false;
          std::vector<char> hold((threads + 31) / 32);
          for (auto& h : hold) h = random_u32() % 4 == 0;  // hold a warp back for this round
          bool held = false;
          for (int t = 0; t < threads; ++t) {
            if (s.done[t]) continue;
            all_done = false;
            if (hold[t / 32]) {
              held = true;
              continue;
            }
            s.cur = t;
            swapcontext(&s.main_ctx, &s.ctx[t]);
          }
          if (all_done) break;
          if (!s.progressed && !held) {
            std::fprintf(stderr, "emu: deadlock in block (%u, %u, %u)\n", x, y, z);
            return false;
          }
        }
      }
  return true;
}

}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::st().block_idx)
#define __syncthreads() ::emu::syncthreads()
#define __shfl_xor_sync(mask, v, m) ::emu::shfl_xor((v), (m))
