// Text codes: how the datastore stores its text in fewer bits than a full token rank needs.
//
// Token frequencies in real corpora are skewed (in SmolLM2-tokenized Python the 4,094 most frequent
// of ~22k distinct tokens cover 95% of positions), so each position holds a code_bits-wide code:
// codes 0..code_entries-1 stand for the entries of a code table (the most frequent stored values),
// all-ones for the document end marker, all-ones - 1 for an exception. Exceptions keep their
// value in a side table, grouped by blocks of 2^block_shift positions with a directory of where
// each block's entries start (patched frame-of-reference, as in PFOR). Reads stay O(1): a code
// table lookup, or for an exception a directory read and a binary search within one block.
// The width is chosen per file to minimise its size, each exception charged a little extra for
// its slower read; code_entries == 0 means no coding (codes are the stored values themselves, as
// in format version 1).
#pragma once
#include <cstdint>
#include <vector>

#include "datastore/packed.h"
#include "datastore/segment.h"

namespace verispec::ds {

struct TextCoding {
  unsigned code_bits = 0;
  unsigned block_shift = 0;
  uint64_t code_entries = 0;  // 0: direct
  uint64_t exc_entries = 0;
  // Successor lists (segment.h): heads and entries; 0 heads: none.
  uint64_t succ_heads = 0, succ_entries = 0;
  // All-ones ends a document, coded or not (direct codes have the stored width); one below it
  // marks an exception.
  uint64_t marker_code() const { return (uint64_t(1) << code_bits) - 1; }
  uint64_t exception_code() const { return marker_code() - 1; }
};

// The code table, directory, exceptions and successor lists in one section ("extras"), each part
// 64-byte aligned; parts that are not there take no space.
struct ExtrasLayout {
  unsigned dir_bits = 1, exc_bits = 1;
  uint64_t num_blocks = 0;
  uint64_t table_bytes = 0, dir_offset = 0, dir_bytes = 0, exc_offset = 0, exc_bytes = 0;
  uint64_t heads_offset = 0, begin_offset = 0, stok_offset = 0, send_offset = 0;
  uint64_t total = 0;
};
ExtrasLayout extras_layout(const TextCoding& tc, uint64_t text_len, unsigned token_bits, unsigned offset_bits);

// Fills the coding and successor fields of a segment whose extras section starts at `extras`.
void attach_extras(Segment& s, const TextCoding& tc, const uint8_t* extras, unsigned token_bits);

// Stored values seen at least this often get a successor list (a one-token match on a rarer one
// probes its range quickly enough); tests lower it.
extern uint64_t g_successor_min_count;

// Test hook: force the code width and block size (0: choose by size).
extern unsigned g_force_code_bits, g_force_block_shift;

// The plan for one text: the coding, and per stored rank its code (exception_code() for values
// left out of the table). counts[r] = occurrences of rank r; stored_of_rank[r] is its stored value
// (monotone in r).
struct CodePlan {
  TextCoding coding;
  std::vector<uint32_t> table;     // stored values, ascending
  std::vector<uint32_t> code_of;   // per rank
};
CodePlan plan_codes(const std::vector<uint64_t>& counts, const std::vector<uint32_t>& stored_of_rank,
                    uint64_t text_len, uint64_t num_tokens, unsigned token_bits);

// Writes the directory and exceptions of the extras section (table already written by the
// caller). Exceptions come as (position, stored value) pairs sorted by position.
void write_exceptions(uint8_t* extras, const TextCoding& tc, uint64_t text_len, unsigned token_bits,
                      unsigned offset_bits, const std::vector<std::pair<uint64_t, uint32_t>>& exceptions);

// Successor lists built from the text as ranks: heads are the ranks with count >= the minimum
// (at most as many as keep heads x ranks table small), ascending.
struct Successors {
  std::vector<uint32_t> heads;       // stored values
  std::vector<uint64_t> begin;       // heads + 1
  std::vector<uint32_t> tokens;      // stored values
  std::vector<uint64_t> ends;        // running counts within each head
};
void write_successors(uint8_t* extras, const TextCoding& tc, uint64_t text_len, unsigned token_bits,
                      unsigned offset_bits, const Successors& succ);

}  // namespace verispec::ds
