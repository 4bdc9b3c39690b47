// Philox4x32-10, bit-identical to verispec/ops/_philox.py (torch) and tl.philox (Triton): key = the
// 64-bit seed (low word first), counter = (index, stream, offset_lo, offset_hi).
#pragma once
#include <cstdint>

namespace verispec {
namespace philox {

constexpr uint32_t kStreamAccept = 0x0ACC;
constexpr uint32_t kStreamResidual = 0x0D2A;

struct Out4 {
  uint32_t x[4];
};

__device__ __forceinline__ Out4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int i = 0; i < 10; ++i) {
    if (i) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Out4{{c0, c1, c2, c3}};
}

// (0, 1], exact in float32: a zero-probability token can never pass u * q <= p.
__device__ __forceinline__ float uniform_open0_closed1(uint32_t bits) {
  return static_cast<float>((bits >> 8) + 1u) * 5.9604644775390625e-08f;
}

// Exp(1) as -log1p(-s), s = (bits + 0.5) * 2^-32 clamped below 1; log1p in Kahan's form with the same
// float operations as the torch and Triton versions.
__device__ __forceinline__ float exponential(uint32_t bits) {
  float s = (__uint2float_rn(bits) + 0.5f) * 2.3283064365386963e-10f;
  s = fminf(s, 0.99999994f);
  const float y = 1.0f - s;
  const float den = y - 1.0f;
  const float l1p = den == 0.0f ? -s : logf(y) * (-s) / den;
  return -l1p;
}

}  // namespace philox
}  // namespace verispec
