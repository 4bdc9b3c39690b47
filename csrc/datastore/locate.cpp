// PromptIndex::locate: where the recent output sits in the original (speculative edits). The suffix
// array of the sorted part answers "where does this pattern occur" in O(m log n) plus the number of
// occurrences; the unsorted tail is scanned.
#include <algorithm>

#include "datastore/store.h"

namespace verispec::ds {

namespace {

// Compare the suffix of text[0..n) at s with p[0..m) on their first m tokens: <0, 0 (p is a prefix), >0.
// A suffix shorter than m that agrees on its whole length sorts before p (as in the suffix array).
int compare_at(const uint32_t* text, uint64_t n, uint64_t s, const uint32_t* p, uint64_t m) {
  const uint64_t lim = std::min<uint64_t>(m, n - s);
  for (uint64_t d = 0; d < lim; ++d)
    if (text[s + d] != p[d]) return text[s + d] < p[d] ? -1 : 1;
  return lim < m ? -1 : 0;
}

}  // namespace

void PromptIndex::occurrences(const uint32_t* p, uint64_t m, std::vector<int64_t>& out) const {
  out.clear();
  if (m == 0 || m >= n_) return;
  const uint32_t* t = text_.data();
  // Sorted part: [lo, hi) of the suffix array, the suffixes starting with p.
  uint64_t a = 0, b = sa_count_;
  while (a < b) {
    const uint64_t mid = a + (b - a) / 2;
    if (compare_at(t, n_, sa_[mid], p, m) < 0) a = mid + 1; else b = mid;
  }
  const uint64_t lo = a;
  b = sa_count_;
  while (a < b) {
    const uint64_t mid = a + (b - a) / 2;
    if (compare_at(t, n_, sa_[mid], p, m) <= 0) a = mid + 1; else b = mid;
  }
  for (uint64_t k = lo; k < a; ++k)
    if (sa_[k] + m < n_) out.push_back(int64_t(sa_[k] + m));
  // Unsorted tail: every start from sorted_until() on.
  for (uint64_t s = sorted_until(); s + m < n_; ++s)
    if (t[s] == p[0] && compare_at(t, n_, s, p, m) == 0) out.push_back(int64_t(s + m));
}

bool PromptIndex::occurs_with_continuation(const uint32_t* p, uint64_t m) const {
  std::vector<int64_t> tmp;
  occurrences(p, m, tmp);
  return !tmp.empty();
}

Located PromptIndex::locate(const uint32_t* ctx, uint64_t len, uint64_t pointer, uint64_t max_positions,
                            uint64_t min_match) const {
  Located r;
  min_match = std::max<uint64_t>(min_match, 1);
  if (len == 0 || n_ < 2 || max_positions == 0) return r;
  // Longest suffix that occurs: occurrence is monotone in the suffix length (the length-m suffix at
  // s contains the length-(m-1) one at s+1), so binary search on m.
  uint64_t a = 0, b = std::min<uint64_t>(len, n_ - 1);  // invariant: length a occurs (0 trivially)
  while (a < b) {
    const uint64_t mid = a + (b - a + 1) / 2;
    if (occurs_with_continuation(ctx + len - mid, mid)) a = mid; else b = mid - 1;
  }
  if (a < min_match) return r;
  r.match_len = int64_t(a);
  std::vector<int64_t> pos;
  occurrences(ctx + len - a, a, pos);
  std::vector<int64_t> behind, ahead;
  for (int64_t e : pos) (uint64_t(e) >= pointer ? ahead : behind).push_back(e);
  std::sort(behind.begin(), behind.end(), std::greater<int64_t>());
  if (behind.size() > max_positions) behind.resize(max_positions);
  r.behind = std::move(behind);
  // Longest suffix with a position at or after the pointer: the same monotonicity (a position e of
  // the longer suffix is one of the shorter), walked down from the longest match.
  for (uint64_t m = a; m >= min_match; --m) {
    if (m != a) {
      occurrences(ctx + len - m, m, pos);
      ahead.clear();
      for (int64_t e : pos)
        if (uint64_t(e) >= pointer) ahead.push_back(e);
    }
    if (!ahead.empty()) {
      const size_t k = std::min<size_t>(ahead.size(), max_positions);
      std::partial_sort(ahead.begin(), ahead.begin() + k, ahead.end());
      ahead.resize(k);
      r.ahead_len = int64_t(m);
      r.ahead = std::move(ahead);
      break;
    }
    if (m == min_match) break;
  }
  return r;
}

}  // namespace verispec::ds
