// Drafting from suffix-array segments: longest context-suffix match, then a draft tree grown
// best-first from exact continuation counts (or a single best path, or REST's published rule).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "datastore/segment.h"
#include "datastore/stop.h"

namespace verispec::ds {

enum class DraftMode : int { kTree = 0, kChain = 1, kRest = 2 };

// Bounds on draft parameters, checked where they enter from Python (bindings.cpp). They keep every
// query's work and memory bounded and the arithmetic on them (max_match + max_depth, ...) exact.
constexpr int64_t kMaxBudget = int64_t(1) << 20;    // draft nodes
constexpr int64_t kMaxDepth = int64_t(1) << 16;     // tokens along one path
constexpr int64_t kMaxMatch = int64_t(1) << 16;     // context tokens looked up
// REST reads rest_max_matches continuations of max_depth tokens into a trie: at most this many
// tokens (measured at the limit on a 2-core AMD EPYC VM, 2026-12-06: 0.17 s and 44 MB of peak memory;
// the published setting, 5000 x 12, is 60k).
constexpr int64_t kMaxRestWork = int64_t(1) << 20;

struct DraftParams {
  int64_t budget = 32;        // maximum number of draft nodes
  int64_t max_depth = 12;     // maximum node depth (children of the root have depth 1)
  int64_t max_match = 16;     // longest context suffix looked up
  int64_t min_count = 1;      // fallback: prefer the longest suffix occurring >= min_count times
  int64_t min_match = 1;      // never use a suffix shorter than this
  double min_score = 0.0;     // never propose a node whose score (count / root count, or the
                              // backoff mixture) is below this
  // Backoff mixture (tree mode): with backoff = K > 0, also take the longest shorter suffix u' that
  // occurs >= K times as often as the match u, and rank nodes by
  //   w p(x | u) + (1 - w) p(x | u'),  w = count(u) / (count(u) + backoff_prior),
  // so a long match seen a handful of times no longer gets the whole budget.
  int64_t backoff = 0;
  double backoff_prior = 2.0;
  DraftMode mode = DraftMode::kTree;
  int64_t rest_max_matches = 5000;  // REST mode: matches read, in suffix-array order
};

struct DraftResult {
  std::vector<int32_t> tokens;  // token ids (bit patterns: ids up to 2^32 - 2 travel as uint32)
  std::vector<int32_t> parents;
  std::vector<float> scores;
  int64_t match_len = 0;     // length of the context suffix the tree continues
  uint64_t match_count = 0;  // its number of occurrences (with a continuation, for a prompt index)
};

// Positions of a growing sequence that are not (yet) in a suffix array and are scanned linearly:
// starts in [start, n) of text[0..n). The sequence has no end markers; a match must leave at least
// one token after it (its continuation), so the trivial match at the very end never counts.
struct Tail {
  const uint32_t* text = nullptr;
  uint64_t n = 0;
  uint64_t start = 0;
};

// Everything one query searches: suffix-array segments plus an optional linear tail.
struct Source {
  std::vector<Segment> segments;
  const Tail* tail = nullptr;
};

// Memo of trees grown from frequent suffixes. A draft depends only on the matched suffix and the
// parameters, never on the rest of the context, so caching is exact; it pays off for short,
// frequent suffixes (thousands of occurrences, bushy trees) that recur constantly and dominate
// the latency tail. Two generations: when the current one fills up it becomes the old one.
class DraftCache {
 public:
  DraftCache(size_t capacity, uint64_t min_count) : capacity_(capacity), min_count_(min_count) {}
  bool wants(uint64_t match_count) const { return capacity_ > 0 && match_count >= min_count_; }
  bool get(const std::string& key, DraftResult& out);
  void put(const std::string& key, const DraftResult& r);
  void clear();
  void configure(size_t capacity, uint64_t min_count);
  size_t size();
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, DraftResult> cur_, old_;
  size_t capacity_;
  uint64_t min_count_;
  uint64_t hits_ = 0, misses_ = 0;
};

// ctx[0..len) are the last `len` context tokens (len <= max_match), already validated.
// `stop` (optional) makes long queries interruptible: they throw Interrupted once it is requested.
DraftResult draft(const Source& src, const uint32_t* ctx, uint64_t len, const DraftParams& p,
                  DraftCache* cache = nullptr, const Stop* stop = nullptr);

// Exact number of occurrences of pat[0..m) (tail: only those followed by another token).
uint64_t count_pattern(const Source& src, const uint32_t* pat, uint64_t m);

// Longest suffix of ctx that occurs (<= max_match) and its count.
void longest_match(const Source& src, const uint32_t* ctx, uint64_t len, int64_t& m, uint64_t& count);

// Next-token counts after pat[0..m): (token, count) sorted by token.
std::vector<std::pair<uint32_t, uint64_t>> continuations(const Source& src, const uint32_t* pat, uint64_t m);

}  // namespace verispec::ds
