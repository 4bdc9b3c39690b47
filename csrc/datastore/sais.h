// Suffix array construction by induced sorting (SA-IS; Nong, Zhang and Chan, "Two Efficient
// Algorithms for Linear Time Suffix Array Construction", 2009), written for verispec.
//
// The string s[0..n) holds symbols in [0, k) and ends in a *virtual* terminator smaller than every
// symbol, so callers need not append one. I is the index type; a symbol and its S/L type share one
// I word, so n and k must stay below 2^(bits of I - 1): uint32_t for texts below 2^31 entries,
// uint64_t beyond (the datastore picks the narrowest that fits, halving build memory for most
// corpora).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace verispec::ds {

template <class I>
class SuffixSorter {
 public:
  // `progress` (optional) is told the approximate fraction done after each top-level step.
  static void sort(const I* s, I* sa, I n, I k, const std::function<void(double)>* progress = nullptr) {
    if (n == 0) return;
    if (n == 1) {
      sa[0] = 0;
      return;
    }
    SuffixSorter self(s, sa, n, k);
    self.progress_ = progress;
    self.run();
  }

 private:
  static constexpr I kEmpty = ~I(0);
  const I* s_;
  I* sa_;
  I n_, k_;
  // Symbol and type in one word, (s[i] << 1) | S-type bit (S: smaller than the suffix after it):
  // induced sorting reads both for a random position, and one cache miss is cheaper than two.
  std::vector<I> st_;
  std::vector<I> bucket_end_;   // bucket_end_[c] = number of symbols <= c
  std::vector<I> head_;
  const std::function<void(double)>* progress_ = nullptr;

  void tell(double f) const {
    if (progress_) (*progress_)(f);
  }

  SuffixSorter(const I* s, I* sa, I n, I k) : s_(s), sa_(sa), n_(n), k_(k) {}

  bool stype(I i) const { return st_[i] & 1; }
  bool is_lms(I i) const { return i > 0 && (st_[i] & 1) && !(st_[i - 1] & 1); }

  void run() {
    const I n = n_;
    st_.resize(n);
    // The last symbol is L-type: the virtual terminator after it is smaller.
    st_[n - 1] = s_[n - 1] << 1;
    for (I i = n - 1; i-- > 0;)
      st_[i] = (s_[i] << 1) | I(s_[i] < s_[i + 1] || (s_[i] == s_[i + 1] && (st_[i + 1] & 1)));
    bucket_end_.assign(std::size_t(k_), 0);
    for (I i = 0; i < n; ++i) ++bucket_end_[s_[i]];
    I acc = 0;
    for (I c = 0; c < k_; ++c) {
      acc += bucket_end_[c];
      bucket_end_[c] = acc;
    }
    head_.resize(std::size_t(k_));

    std::vector<I> lms;
    for (I i = 1; i < n; ++i)
      if (is_lms(i)) lms.push_back(i);
    const I m = I(lms.size());

    // Step 1: induce from the LMS positions in text order; this sorts the LMS *substrings*.
    induce(lms);
    tell(0.25);
    std::vector<I> sorted;
    sorted.reserve(m);
    for (I i = 0; i < n; ++i) {
      if (i + 32 < n) __builtin_prefetch(st_.data() + sa_[i + 32] - 1);
      if (is_lms(sa_[i])) sorted.push_back(sa_[i]);
    }

    // Step 2: name the LMS substrings by rank. Comparing neighbours is independent work, split
    // over two threads when it is big enough to pay for one. LMS positions are >= 2 apart, so
    // slot p/2 of the (now free) output array can hold the name of position p.
    std::vector<uint8_t> differs(m, 0);
    auto compare_range = [&](I a, I b) {
      for (I j = std::max<I>(a, 1); j < b; ++j) {
        if (j + 8 < b) {
          __builtin_prefetch(st_.data() + sorted[j + 8]);
          __builtin_prefetch(st_.data() + sorted[j + 7]);
        }
        differs[j] = !same_lms_substring(sorted[j - 1], sorted[j]);
      }
    };
    if (m > (I(1) << 20)) {
      std::thread t(compare_range, m / 2, m);
      compare_range(0, m / 2);
      t.join();
    } else {
      compare_range(0, m);
    }
    for (I i = 0; i < n; ++i) sa_[i] = kEmpty;
    I name = 0;
    for (I j = 0; j < m; ++j) {
      name += differs[j];
      sa_[sorted[j] / 2] = name;
    }
    std::vector<uint8_t>().swap(differs);
    const I num_names = m ? name + 1 : 0;

    tell(0.4);
    // Step 3: sort the LMS suffixes, recursing when two LMS substrings share a name.
    std::vector<I> order(m);
    {
      std::vector<I> reduced(m);
      for (I j = 0; j < m; ++j) reduced[j] = sa_[lms[j] / 2];
      if (num_names < m) {
        SuffixSorter<I>::sort(reduced.data(), order.data(), m, num_names);
      } else {
        for (I j = 0; j < m; ++j) order[reduced[j]] = j;
      }
    }
    for (I j = 0; j < m; ++j) sorted[j] = lms[order[j]];
    std::vector<I>().swap(lms);
    std::vector<I>().swap(order);

    // Step 4: induce the full order from the sorted LMS suffixes.
    tell(0.75);
    induce(sorted);
    tell(1.0);
  }

  bool same_lms_substring(I a, I b) const {
    for (I d = 0;; ++d) {
      const I ia = a + d, ib = b + d;
      if (ia == n_ || ib == n_) return false;  // only one substring runs into the terminator
      if (st_[ia] != st_[ib]) return false;  // same symbol and same type
      if (d > 0) {
        const bool ea = is_lms(ia), eb = is_lms(ib);
        if (ea || eb) return ea && eb;
      }
    }
  }

  void induce(const std::vector<I>& lms) {
    I* sa = sa_;
    const I n = n_;
    const I* st = st_.data();
    for (I i = 0; i < n; ++i) sa[i] = kEmpty;
    // LMS suffixes go to the ends of their buckets, keeping their given order.
    for (I c = 0; c < k_; ++c) head_[c] = bucket_end_[c];
    for (std::size_t j = lms.size(); j-- > 0;) sa[--head_[st[lms[j]] >> 1]] = lms[j];
    // L-type suffixes, left to right. The suffix n-1 follows the terminator, so it comes first.
    // The scan is sequential but st[v - 1] is a random read: fetch it a few entries ahead (an
    // entry may still change before the scan reaches it; then the hint is wasted).
    constexpr I kAhead = 32;
    for (I c = 0; c < k_; ++c) head_[c] = c ? bucket_end_[c - 1] : 0;
    sa[head_[st[n - 1] >> 1]++] = n - 1;
    for (I i = 0; i < n; ++i) {
      if (i + kAhead < n) {
        const I w = sa[i + kAhead];
        if (w != kEmpty && w > 0) __builtin_prefetch(st + w - 1);
      }
      const I v = sa[i];
      if (v != kEmpty && v > 0) {
        const I x = st[v - 1];
        if (!(x & 1)) sa[head_[x >> 1]++] = v - 1;
      }
    }
    // S-type suffixes, right to left; they overwrite the LMS placeholders.
    for (I c = 0; c < k_; ++c) head_[c] = bucket_end_[c];
    for (I i = n; i-- > 0;) {
      if (i >= kAhead) {
        const I w = sa[i - kAhead];
        if (w != kEmpty && w > 0) __builtin_prefetch(st + w - 1);
      }
      const I v = sa[i];
      if (v != kEmpty && v > 0) {
        const I x = st[v - 1];
        if (x & 1) sa[--head_[x >> 1]] = v - 1;
      }
    }
  }
};

}  // namespace verispec::ds
