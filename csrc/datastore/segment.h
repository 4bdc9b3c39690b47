// A searchable suffix-array segment: bit-packed text (tokens, one end marker after each document)
// plus the suffix array over the token positions. Views only; the owner (a mapped file, an
// in-memory segment, a prompt index) keeps the bytes alive.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "datastore/packed.h"

namespace verispec::ds {

struct CorruptError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Segment {
  const uint8_t* text = nullptr;  // packed, text_len codes of code_bits (+ padding)
  const uint8_t* sa = nullptr;    // packed, num_suffixes entries (+ padding)
  unsigned code_bits = 32;
  unsigned offset_bits = 32;
  uint64_t text_len = 0;
  uint64_t num_suffixes = 0;
  uint64_t end_marker = 0;  // (1 << token_bits) - 1: document end, compares above every token
  // Stored values are ranks into token_map (sorted distinct ids) when it is set, else the ids.
  // The map is monotone, so suffix order is the same in both spaces.
  const uint32_t* token_map = nullptr;
  uint64_t map_entries = 0;
  // Text codes (docs/datastore.md, "Text codes"). Without a code table each code is the stored
  // value itself. With one, the most frequent stored values get the codes 0..code_entries-1,
  // all-ones is the end marker, and all-ones - 1 an exception: the value is listed, with its
  // position, among the exceptions of its block of 2^block_shift positions.
  const uint32_t* code_table = nullptr;
  uint64_t code_entries = 0;
  uint64_t marker_code = 0, exception_code = 0;
  const uint8_t* exc_dir = nullptr;  // packed dir_bits: index of each block's first exception, then the total
  const uint8_t* exc = nullptr;      // packed exc_bits: (value << block_shift) | position in block
  unsigned dir_bits = 1, exc_bits = 1, block_shift = 0;
  uint64_t exc_entries = 0;
  // Successor lists (docs/datastore.md, "Successor lists"): for the most frequent stored values
  // a (heads, ascending), every b that follows a somewhere, ascending, with the running count of
  // the suffixes "a b ..." up to and including b. Since those suffixes are sorted by b inside a's
  // range, child b of a one-token match a spans [lo + end(b-1), lo + end(b)) of it: no probing.
  const uint32_t* succ_heads = nullptr;
  const uint64_t* succ_begin = nullptr;  // succ_heads_n + 1 entry offsets
  const uint8_t* succ_tokens = nullptr;  // packed token_bits
  const uint8_t* succ_ends = nullptr;    // packed offset_bits
  uint64_t succ_heads_n = 0, succ_entries = 0;
  unsigned succ_token_bits = 1;

  // Stored value of token id t; end_marker (matches nothing) when t does not occur here.
  uint64_t to_stored(uint32_t t) const {
    if (!token_map) return t;
    const uint32_t* it = std::lower_bound(token_map, token_map + map_entries, t);
    return it != token_map + map_entries && *it == t ? uint64_t(it - token_map) : end_marker;
  }
  uint32_t to_token(uint64_t v) const {
    if (!token_map) return uint32_t(v);
    if (v >= map_entries) throw CorruptError("datastore text holds rank " + std::to_string(v) +
                                             " outside the token map (corrupt file?)");
    return token_map[v];
  }

  uint64_t tok(uint64_t i) const {
    const uint64_t c = packed_get(text, i, code_bits);
    if (!code_table) return c;
    if (c < code_entries) return code_table[c];
    if (c == marker_code) return end_marker;
    return exception_value(i);
  }

  // The value of the exception at text position i: a binary search among its block's entries,
  // which are sorted by position. Damage yields an exception, never a read out of bounds.
  uint64_t exception_value(uint64_t i) const {
    const uint64_t b = i >> block_shift, mask = (uint64_t(1) << block_shift) - 1, want = i & mask;
    uint64_t a = packed_get(exc_dir, b, dir_bits);
    const uint64_t end = packed_get(exc_dir, b + 1, dir_bits);
    if (a > end || end > exc_entries)
      throw CorruptError("datastore exception directory is damaged at block " + std::to_string(b) + " (corrupt file?)");
    uint64_t e = end;
    while (a < e) {
      const uint64_t mid = a + (e - a) / 2;
      if ((packed_get(exc, mid, exc_bits) & mask) < want) a = mid + 1; else e = mid;
    }
    const uint64_t x = a < end ? packed_get(exc, a, exc_bits) : 0;
    if (a == end || (x & mask) != want)
      throw CorruptError("datastore text position " + std::to_string(i) +
                         " is marked as an exception but has no entry (corrupt file?)");
    return x >> block_shift;
  }

  // Entries [b, e) of the successor list of stored value a; false when a has none.
  bool successors(uint64_t a, uint64_t& b, uint64_t& e) const {
    const uint32_t* it = std::lower_bound(succ_heads, succ_heads + succ_heads_n, a);
    if (it == succ_heads + succ_heads_n || *it != a) return false;
    const uint64_t lo = uint64_t(it - succ_heads);
    b = succ_begin[lo];
    e = succ_begin[lo + 1];
    if (b > e || e > succ_entries)
      throw CorruptError("datastore successor list of head " + std::to_string(lo) + " is out of bounds (corrupt file?)");
    return true;
  }
  uint64_t successor_token(uint64_t j) const { return packed_get(succ_tokens, j, succ_token_bits); }
  uint64_t successor_end(uint64_t j) const { return packed_get(succ_ends, j, offset_bits); }

  // Text position of the k-th smallest suffix. A damaged file must not turn into an
  // out-of-bounds read, so every offset is checked (one compare on a value already loaded).
  uint64_t pos(uint64_t k) const {
    const uint64_t p = packed_get(sa, k, offset_bits);
    if (p >= text_len) throw CorruptError("datastore suffix array entry " + std::to_string(k) +
                                          " points outside the text (corrupt file?)");
    return p;
  }

  // Token at offset d of the k-th suffix. Reads stop at end markers: callers never pass a d that
  // steps over one, and the text always ends with a marker.
  uint64_t tok_at(uint64_t k, uint64_t d) const { return tok(pos(k) + d); }

  // Compare the first m tokens of suffix k with pattern p: <0, 0 (p is a prefix), >0.
  template <class T>
  int compare(uint64_t k, const T* p, uint64_t m) const {
    const uint64_t s = pos(k);
    for (uint64_t d = 0; d < m; ++d) {
      const uint64_t a = tok(s + d);
      const uint64_t b = uint64_t(p[d]);
      // A marker never matches, even a context id equal to its value (ids >= vocab_size are
      // legal in contexts; they simply occur nowhere). Markers sort last, so this keeps order.
      if (a == end_marker) return 1;
      if (a != b) return a < b ? -1 : 1;
    }
    return 0;
  }

  // [lo, hi) of suffixes starting with pattern p[0..m). Probes that land above the pattern
  // during the first search also bound the second one.
  template <class T>
  void find(const T* p, uint64_t m, uint64_t& lo, uint64_t& hi) const {
    uint64_t a = 0, b = num_suffixes, ub = num_suffixes;
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      const int c = compare(mid, p, m);
      if (c < 0) {
        a = mid + 1;
      } else {
        if (c > 0) ub = mid;
        b = mid;
      }
    }
    lo = a;
    b = ub;
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      if (compare(mid, p, m) <= 0) a = mid + 1; else b = mid;
    }
    hi = a;
  }

  // Does pattern p[0..m) occur? Stops at the first probe inside the range.
  template <class T>
  bool occurs(const T* p, uint64_t m) const {
    uint64_t a = 0, b = num_suffixes;
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      const int c = compare(mid, p, m);
      if (c == 0) return true;
      if (c < 0) a = mid + 1; else b = mid;
    }
    return false;
  }

  // Within [lo, hi), where all suffixes share their first d tokens (so the token at offset d is
  // non-decreasing), the first index whose token at offset d is > t (upper) or >= t (lower).
  // Galloping from lo: cheap when the run is short, logarithmic when it is long.
  uint64_t upper_at(uint64_t lo, uint64_t hi, uint64_t d, uint64_t t) const {
    uint64_t a = lo, b, step = 1;  // invariant: every index in [lo, a) has token <= t
    for (;;) {
      b = lo + step - 1;
      if (b >= hi) {
        b = hi;
        break;
      }
      if (tok_at(b, d) > t) break;
      a = b + 1;
      step *= 2;
    }
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      if (tok_at(mid, d) <= t) a = mid + 1; else b = mid;
    }
    return a;
  }
  // First index in [lo, g] whose token at offset d is >= t, knowing token(g) == t: galloping
  // backwards from g, so a short run costs a probe or two.
  uint64_t lower_from(uint64_t lo, uint64_t g, uint64_t d, uint64_t t) const {
    uint64_t a = lo, b = g, step = 1;  // invariant: token(b) >= t
    while (g - lo >= step) {
      const uint64_t c = g - step;
      if (tok_at(c, d) < t) {
        a = c + 1;
        break;
      }
      b = c;
      step *= 2;
    }
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      if (tok_at(mid, d) < t) a = mid + 1; else b = mid;
    }
    return a;
  }
  uint64_t lower_at(uint64_t lo, uint64_t hi, uint64_t d, uint64_t t) const {
    uint64_t a = lo, b = hi;
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      if (tok_at(mid, d) < t) a = mid + 1; else b = mid;
    }
    return a;
  }
};

}  // namespace verispec::ds
