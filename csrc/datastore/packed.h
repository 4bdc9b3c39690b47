// Fixed-width bit-packed unsigned integers, the storage form of datastore tokens and suffix-array
// offsets. Width w (1..57 bits) is chosen per file from the vocabulary and corpus sizes, which is
// how a 49k-vocabulary, 8M-token corpus costs 16 + 23 bits per token instead of 2 x 32.
#pragma once
#include <cstdint>
#include <cstring>

namespace verispec::ds {

// Readers always load 8 bytes, so every packed array is followed by 8 bytes of padding.
constexpr uint64_t kPackPad = 8;

inline uint64_t packed_bytes(uint64_t n, unsigned bits) { return (n * bits + 7) / 8 + kPackPad; }

inline unsigned bits_for(uint64_t max_value) {  // bits needed to store values 0..max_value
  unsigned b = 1;
  while (b < 64 && (max_value >> b) != 0) ++b;
  return b;
}

inline uint64_t packed_get(const uint8_t* base, uint64_t i, unsigned bits) {
  const uint64_t bit = i * bits;
  uint64_t w;
  std::memcpy(&w, base + (bit >> 3), 8);  // little-endian load; format is little-endian only
  return (w >> (bit & 7)) & ((uint64_t(1) << bits) - 1);
}

// OR-writes value v into a zero-initialised array. Touches only the bytes the value covers, so two
// threads packing disjoint index ranges that start at multiples of 8 never write the same byte.
inline void packed_put(uint8_t* base, uint64_t i, unsigned bits, uint64_t v) {
  const uint64_t bit = i * bits;
  uint8_t* p = base + (bit >> 3);
  const unsigned shift = unsigned(bit & 7);
  if (shift == 0 && (bits & 7) == 0) {
    std::memcpy(p, &v, bits >> 3);
    return;
  }
  const unsigned nbytes = (shift + bits + 7) / 8;  // <= 8 because bits <= 57
  const uint64_t x = v << shift;
  for (unsigned b = 0; b < nbytes; ++b) p[b] |= uint8_t(x >> (8 * b));
}

// Sequential packing: appends values to a zero-initialised array starting at a byte boundary.
// Much faster than packed_put for bulk writes: no read-modify-write, and values of up to 32 bits
// leave the accumulator four bytes at a time. Bytes past the last complete one are OR-written by
// finish(), so a writer whose range ends mid-byte shares that byte safely only with nobody.
class PackedWriter {
 public:
  PackedWriter(uint8_t* base, uint64_t first_index, unsigned bits)
      : p_(base + first_index * bits / 8), bits_(bits) {}  // first_index * bits must be a multiple of 8
  void put(uint64_t v) {
    acc_ |= v << fill_;  // fill_ < 32 and bits <= 32, or fill_ < 8 and bits <= 57: this fits
    fill_ += bits_;
    if (bits_ <= 32) {
      if (fill_ >= 32) {
        const uint32_t w = uint32_t(acc_);
        std::memcpy(p_, &w, 4);
        p_ += 4;
        acc_ >>= 32;
        fill_ -= 32;
      }
      return;
    }
    while (fill_ >= 8) {
      *p_++ = uint8_t(acc_);
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  void finish() {
    for (; fill_ > 0; fill_ = fill_ > 8 ? fill_ - 8 : 0, acc_ >>= 8) *p_++ |= uint8_t(acc_);
  }

 private:
  uint8_t* p_;
  uint64_t acc_ = 0;
  unsigned fill_ = 0;
  unsigned bits_;
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the datastore format is little-endian");

}  // namespace verispec::ds
