#include "datastore/textcode.h"

#include <algorithm>
#include <cstring>

namespace verispec::ds {

unsigned g_force_code_bits = 0, g_force_block_shift = 0;
uint64_t g_successor_min_count = uint64_t(1) << 16;

namespace {
constexpr unsigned kBlockShift = 8;  // 256 positions: ~0.1 bit/position of directory
// What an exception is charged when choosing the width, in bytes on top of its storage: reading
// one costs a directory and an entry read besides the code. On SmolLM2-tokenized stdlib x7 (62M
// tokens), queries after one-token matches (the heaviest) took 450 us with 12-bit codes (4.8%
// exceptions), 350 us with 13-bit codes (1.3%) and 350 us uncoded; this price picks 13 bits
// there, at 4.93 instead of 4.90 bytes/token.
constexpr uint64_t kExceptionPrice = 2;
uint64_t align64(uint64_t x) { return (x + 63) & ~uint64_t(63); }
}  // namespace

ExtrasLayout extras_layout(const TextCoding& tc, uint64_t text_len, unsigned token_bits, unsigned offset_bits) {
  ExtrasLayout l;
  uint64_t at = 0;
  if (tc.code_entries) {
    l.num_blocks = (text_len + (uint64_t(1) << tc.block_shift) - 1) >> tc.block_shift;
    l.dir_bits = bits_for(tc.exc_entries);
    l.exc_bits = tc.block_shift + token_bits;
    l.table_bytes = tc.code_entries * 4;
    l.dir_offset = align64(l.table_bytes);
    l.dir_bytes = packed_bytes(l.num_blocks + 1, l.dir_bits);
    l.exc_offset = align64(l.dir_offset + l.dir_bytes);
    l.exc_bytes = packed_bytes(tc.exc_entries, l.exc_bits);
    at = l.exc_offset + l.exc_bytes;
  }
  if (tc.succ_heads) {
    l.heads_offset = align64(at);
    l.begin_offset = align64(l.heads_offset + tc.succ_heads * 4);
    l.stok_offset = align64(l.begin_offset + (tc.succ_heads + 1) * 8);
    l.send_offset = align64(l.stok_offset + packed_bytes(tc.succ_entries, token_bits));
    at = l.send_offset + packed_bytes(tc.succ_entries, offset_bits);
  }
  l.total = at;
  return l;
}

void attach_extras(Segment& s, const TextCoding& tc, const uint8_t* extras, unsigned token_bits) {
  s.code_bits = tc.code_bits;
  const ExtrasLayout l = extras_layout(tc, s.text_len, token_bits, s.offset_bits);
  if (tc.succ_heads) {
    s.succ_heads = reinterpret_cast<const uint32_t*>(extras + l.heads_offset);
    s.succ_begin = reinterpret_cast<const uint64_t*>(extras + l.begin_offset);
    s.succ_tokens = extras + l.stok_offset;
    s.succ_ends = extras + l.send_offset;
    s.succ_heads_n = tc.succ_heads;
    s.succ_entries = tc.succ_entries;
    s.succ_token_bits = token_bits;
  }
  if (tc.code_entries == 0) return;
  s.code_table = reinterpret_cast<const uint32_t*>(extras);
  s.code_entries = tc.code_entries;
  s.marker_code = tc.marker_code();
  s.exception_code = tc.exception_code();
  s.exc_dir = extras + l.dir_offset;
  s.exc = extras + l.exc_offset;
  s.dir_bits = l.dir_bits;
  s.exc_bits = l.exc_bits;
  s.block_shift = tc.block_shift;
  s.exc_entries = tc.exc_entries;
}

CodePlan plan_codes(const std::vector<uint64_t>& counts, const std::vector<uint32_t>& stored_of_rank,
                    uint64_t text_len, uint64_t num_tokens, unsigned token_bits) {
  CodePlan p;
  p.coding.code_bits = token_bits;
  std::vector<uint32_t> order;
  for (uint32_t r = 0; r < counts.size(); ++r)
    if (counts[r]) order.push_back(r);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return counts[a] != counts[b] ? counts[a] > counts[b] : a < b;
  });
  std::vector<uint64_t> covered(order.size() + 1, 0);  // positions held by the i most frequent
  for (size_t i = 0; i < order.size(); ++i) covered[i + 1] = covered[i] + counts[order[i]];
  const unsigned shift = g_force_block_shift ? g_force_block_shift : kBlockShift;
  auto coding_for = [&](unsigned c) {
    TextCoding tc;
    tc.code_bits = c;
    tc.block_shift = shift;
    tc.code_entries = std::min<uint64_t>((uint64_t(1) << c) - 2, order.size());
    tc.exc_entries = num_tokens - covered[tc.code_entries];
    return tc;
  };
  // Two codes are reserved (marker, exception), so a table needs at least 2 bits.
  unsigned best = token_bits;
  if (g_force_code_bits) {
    if (g_force_code_bits >= 2 && g_force_code_bits < token_bits) best = g_force_code_bits;
  } else {
    uint64_t best_cost = packed_bytes(text_len, token_bits);
    for (unsigned c = 2; c < token_bits; ++c) {
      const TextCoding tc = coding_for(c);
      const uint64_t cost = packed_bytes(text_len, c) + extras_layout(tc, text_len, token_bits, 1).total +
                            kExceptionPrice * tc.exc_entries;
      if (cost < best_cost) {
        best_cost = cost;
        best = c;
      }
    }
  }
  if (best == token_bits) return p;  // direct
  p.coding = coding_for(best);
  std::vector<uint32_t> chosen(order.begin(), order.begin() + int64_t(p.coding.code_entries));
  std::sort(chosen.begin(), chosen.end());  // ascending ranks: the table is ascending in stored value
  p.code_of.assign(counts.size(), uint32_t(p.coding.exception_code()));
  p.table.resize(chosen.size());
  for (size_t j = 0; j < chosen.size(); ++j) {
    p.code_of[chosen[j]] = uint32_t(j);
    p.table[j] = stored_of_rank[chosen[j]];
  }
  return p;
}

void write_exceptions(uint8_t* extras, const TextCoding& tc, uint64_t text_len, unsigned token_bits,
                      unsigned offset_bits, const std::vector<std::pair<uint64_t, uint32_t>>& exceptions) {
  const ExtrasLayout l = extras_layout(tc, text_len, token_bits, offset_bits);
  PackedWriter dir(extras + l.dir_offset, 0, l.dir_bits);
  uint64_t j = 0;
  for (uint64_t b = 0; b <= l.num_blocks; ++b) {
    while (j < exceptions.size() && (exceptions[j].first >> tc.block_shift) < b) ++j;
    dir.put(j);
  }
  dir.finish();
  const uint64_t mask = (uint64_t(1) << tc.block_shift) - 1;
  PackedWriter w(extras + l.exc_offset, 0, l.exc_bits);
  for (const auto& [pos, value] : exceptions) w.put((uint64_t(value) << tc.block_shift) | (pos & mask));
  w.finish();
}

void write_successors(uint8_t* extras, const TextCoding& tc, uint64_t text_len, unsigned token_bits,
                      unsigned offset_bits, const Successors& succ) {
  if (!tc.succ_heads) return;
  const ExtrasLayout l = extras_layout(tc, text_len, token_bits, offset_bits);
  std::memcpy(extras + l.heads_offset, succ.heads.data(), succ.heads.size() * 4);
  std::memcpy(extras + l.begin_offset, succ.begin.data(), succ.begin.size() * 8);
  PackedWriter t(extras + l.stok_offset, 0, token_bits), e(extras + l.send_offset, 0, offset_bits);
  for (uint64_t j = 0; j < succ.tokens.size(); ++j) {
    t.put(succ.tokens[j]);
    e.put(succ.ends[j]);
  }
  t.finish();
  e.finish();
}

}  // namespace verispec::ds
