// Suffix array construction by induced sorting (SA-IS; Nong, Zhang and Chan, "Two Efficient
// Algorithms for Linear Time Suffix Array Construction", 2009), written for verispec.
//
// The string s[0..n) holds symbols in [0, k) and ends in a *virtual* terminator smaller than every
// symbol, so callers need not append one. I is the index type; a symbol and its S/L type share one
// I word, so n and k must stay below 2^(bits of I - 1): uint32_t for texts below 2^31 entries,
// uint64_t beyond (the datastore picks the narrowest that fits, halving build memory for most
// corpora). The sort works in place in s (each word becomes (symbol << 1) | type) and restores it
// before returning; besides s and sa it allocates about n/2 words in all, the reduced problems
// living in sa.
//
// Threads: inputs of at least g_sais_parallel_min symbols use the cores this process may run on
// (at most 8) for the steps that split into independent ranges (types, bucket sizes, naming LMS
// substrings, the reduced string). The induction scans are sequential by nature, and their cost
// is the random read of st[v - 1] at each step; there, a second thread and the scanning thread
// itself read those words for blocks a little ahead of the scan, so the scan reads them
// sequentially. The output does not depend on the number of threads.
#pragma once
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

namespace verispec::ds {

// Inputs of at least this many symbols use several threads; tests lower it to 0 to run the
// threaded paths on small inputs.
inline std::atomic<uint64_t> g_sais_parallel_min{uint64_t(1) << 18};
// Upper bound on threads (0: the cores this process may use, at most 8).
inline std::atomic<unsigned> g_sais_max_threads{0};
// Test hook: pipelined scans give up their helper at the first wait, as under heavy load.
inline std::atomic<bool> g_sais_force_fallback{false};

namespace sais_detail {

inline unsigned usable_cores() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return unsigned(std::max(1, CPU_COUNT(&set)));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Wait until a >= target. Spinning is right while the other thread runs on its own core;
// yielding keeps an oversubscribed machine (more runnable threads than cores) moving. Returns
// whether it had to yield (the other thread was probably not running).
constexpr unsigned kSpins = 1024;
inline bool wait_at_least(const std::atomic<uint64_t>& a, uint64_t target) {
  unsigned spins = 0;
  for (; a.load(std::memory_order_acquire) < target; ++spins) {
    if (spins < kSpins) cpu_relax(); else std::this_thread::yield();
  }
  return spins > kSpins;
}

// fn(t, begin, end) for T nearly equal ranges of [0, n); the calling thread takes range 0, and
// any range whose thread cannot be started. fn must not throw.
template <class F>
void parallel_ranges(unsigned T, uint64_t n, const F& fn) {
  if (T <= 1) {
    fn(0u, uint64_t(0), n);
    return;
  }
  std::vector<std::thread> th;
  unsigned started = 1;
  try {
    th.reserve(T - 1);
    for (; started < T; ++started)
      th.emplace_back([&fn, t = started, T, n] { fn(t, n * t / T, n * (t + 1) / T); });
  } catch (...) {
  }
  fn(0u, uint64_t(0), n / T);
  for (unsigned t = started; t < T; ++t) fn(t, n * t / T, n * (t + 1) / T);
  for (auto& x : th) x.join();
}

// sa entries are read by one thread while the scanning thread writes others nearby.
template <class I>
inline I load(const I* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
template <class I>
inline void store(I* p, I v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

}  // namespace sais_detail

template <class I>
class SuffixSorter {
 public:
  // Sorts the suffixes of s[0..n) into sa[0..n). s is modified during the call and restored.
  // `progress` (optional) is told the approximate fraction done after each top-level step.
  static void sort(I* s, I* sa, I n, I k, const std::function<void(double)>* progress = nullptr) {
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
  // Symbol and type in one word, (s[i] << 1) | S-type bit (S: smaller than the suffix after it),
  // held in the caller's s: induced sorting reads both for a random position, and one cache miss
  // is cheaper than two.
  I* st_;
  I* sa_;
  I n_, k_;
  unsigned threads_ = 1;
  std::vector<I> bucket_end_;  // bucket_end_[c] = number of symbols <= c
  std::vector<I> head_;
  std::vector<I> lms_start_;   // LMS positions in text range t precede lms_start_[t] others
  const std::function<void(double)>* progress_ = nullptr;

  void tell(double f) const {
    if (progress_) (*progress_)(f);
  }

  SuffixSorter(I* s, I* sa, I n, I k) : st_(s), sa_(sa), n_(n), k_(k) {
    if (uint64_t(n) >= g_sais_parallel_min.load()) {
      // The scans are memory-bound: past a few threads, more only add bucket-count tables.
      const unsigned cap = g_sais_max_threads.load();
      threads_ = std::min(sais_detail::usable_cores(), cap ? cap : 8u);
    }
  }

  bool is_lms(I i) const { return i > 0 && (st_[i] & 1) && !(st_[i - 1] & 1); }
  uint64_t range_begin(unsigned t) const { return uint64_t(n_) * t / threads_; }

  // Type of position i from the symbols alone (s not yet rewritten there): S iff the first
  // different symbol after a run of equal ones is larger.
  bool stype_of_symbols(I i) const {
    I j = i;
    while (j + 1 < n_ && st_[j] == st_[j + 1]) ++j;
    return j + 1 < n_ && st_[j] < st_[j + 1];
  }

  // Rewrites s into st, counts bucket sizes, and fills lms_start_.
  void classify() {
    const I n = n_;
    const unsigned T = threads_;
    // What each range needs from its neighbours, read before any range is rewritten.
    std::vector<I> next_sym(T, 0);
    std::vector<uint8_t> next_s(T, 0), prev_l(T, 0);
    for (unsigned t = 0; t < T; ++t) {
      const uint64_t a = range_begin(t), b = range_begin(t + 1);
      if (b < n) {
        next_sym[t] = st_[b];
        next_s[t] = stype_of_symbols(I(b));
      }
      prev_l[t] = a > 0 && a < b && !stype_of_symbols(I(a - 1));
    }
    // Bucket sizes: one count table per thread while the tables are small next to the text, a
    // serial count otherwise (a recursion level can have nearly as many names as symbols).
    const bool count_in_threads = uint64_t(k_) * T <= uint64_t(n) / 2;
    std::vector<std::vector<I>> hist(count_in_threads ? T : 1);
    for (auto& h : hist) h.assign(std::size_t(k_), 0);
    std::vector<I> lms_count(T, 0);
    sais_detail::parallel_ranges(T, n, [&](unsigned t, uint64_t a, uint64_t b) {
      if (a == b) return;
      I* st = st_;
      I* h = count_in_threads ? hist[t].data() : nullptr;
      // The last symbol is L-type: the virtual terminator after it is smaller.
      bool after_s = next_s[t];
      I after = next_sym[t];
      I count = 0;
      for (uint64_t i = b; i-- > a;) {
        const I c = st[i];
        const bool is_s = i + 1 < n && (c < after || (c == after && after_s));
        st[i] = (c << 1) | I(is_s);
        if (h) ++h[c];
        count += I(after_s && !is_s && i + 1 < b);  // position i + 1 is LMS
        after_s = is_s;
        after = c;
      }
      // Position a is LMS when it is S and a - 1 (in the previous range) is L.
      lms_count[t] = count + I(after_s && prev_l[t]);
    });
    if (!count_in_threads)
      for (I i = 0; i < n; ++i) ++hist[0][st_[i] >> 1];
    bucket_end_ = std::move(hist[0]);
    for (std::size_t t = 1; t < hist.size(); ++t)
      for (I c = 0; c < k_; ++c) bucket_end_[c] += hist[t][c];
    hist.clear();
    I acc = 0;
    for (I c = 0; c < k_; ++c) {
      acc += bucket_end_[c];
      bucket_end_[c] = acc;
    }
    head_.resize(std::size_t(k_));
    lms_start_.assign(T + 1, 0);
    for (unsigned t = 0; t < T; ++t) lms_start_[t + 1] = lms_start_[t] + lms_count[t];
  }

  // fn(j, p) for every LMS position p, j = its index in text order; ranges run in parallel.
  template <class F>
  void for_each_lms(const F& fn) const {
    sais_detail::parallel_ranges(threads_, n_, [&](unsigned t, uint64_t a, uint64_t b) {
      I j = lms_start_[t];
      for (uint64_t p = std::max<uint64_t>(a, 1); p < b; ++p)
        if (is_lms(I(p))) fn(j++, I(p));
    });
  }

  void run() {
    const unsigned T = threads_;
    classify();
    const I m = lms_start_[T];
    // The one scratch array: LMS positions in text order, then in induced order, then the
    // reduced string, then the LMS positions again (text order) and finally sorted.
    std::unique_ptr<I[]> buf(new I[std::max<I>(m, 1)]);
    I* lms = buf.get();
    for_each_lms([lms](I j, I p) { lms[j] = p; });

    // Step 1: induce from the LMS positions in text order; this sorts the LMS *substrings*. The
    // final scan lists the LMS suffixes in their induced order (into buf, no longer needed).
    induce(lms, m, lms);
    tell(0.25);

    // Step 2: name the LMS substrings by rank. Comparing neighbours is independent work. LMS
    // positions are >= 2 apart, so slot p/2 of the output array can hold the name of position p.
    const I* sorted = lms;
    std::unique_ptr<uint8_t[]> differs(new uint8_t[std::max<I>(m, 1)]);
    differs[0] = 0;
    std::vector<I> rises(T + 1, 0);
    sais_detail::parallel_ranges(T, m, [&](unsigned t, uint64_t a, uint64_t b) {
      I count = 0;
      for (uint64_t j = std::max<uint64_t>(a, 1); j < b; ++j) {
        if (j + 8 < b) {
          __builtin_prefetch(st_ + sorted[j + 8]);
          __builtin_prefetch(st_ + sorted[j + 7]);
        }
        const bool d = !same_lms_substring(sorted[j - 1], sorted[j]);
        differs[j] = d;
        count += d;
      }
      rises[t + 1] = count;
    });
    for (unsigned t = 0; t < T; ++t) rises[t + 1] += rises[t];
    sais_detail::parallel_ranges(T, m, [&](unsigned t, uint64_t a, uint64_t b) {
      I name = rises[t];
      for (uint64_t j = a; j < b; ++j) {
        name += differs[j];
        sa_[sorted[j] / 2] = name;
      }
    });
    differs.reset();
    const I num_names = m ? rises[T] + 1 : 0;
    tell(0.4);

    // Step 3: sort the LMS suffixes, recursing when two LMS substrings share a name. The reduced
    // string goes to buf; its suffix array (the order of the LMS suffixes) to sa[0..m).
    I* reduced = buf.get();
    for_each_lms([this, reduced](I j, I p) { reduced[j] = sa_[p / 2]; });
    if (num_names < m) {
      SuffixSorter<I>::sort(reduced, sa_, m, num_names);
    } else {
      for (I j = 0; j < m; ++j) sa_[reduced[j]] = j;
    }
    // LMS positions in text order again, then sorted: sa[m + j] = lms[order[j]], copied to buf
    // (2m <= n: LMS positions are >= 2 apart and 0 is never one).
    for_each_lms([lms](I j, I p) { lms[j] = p; });
    sais_detail::parallel_ranges(T, m, [&](unsigned, uint64_t a, uint64_t b) {
      for (uint64_t j = a; j < b; ++j) {
        if (j + 16 < b) __builtin_prefetch(lms + sa_[j + 16]);
        sa_[m + j] = lms[sa_[j]];
      }
    });
    sais_detail::parallel_ranges(T, m, [&](unsigned, uint64_t a, uint64_t b) {
      std::copy(sa_ + m + a, sa_ + m + b, lms + a);
    });

    // Step 4: induce the full order from the sorted LMS suffixes.
    tell(0.75);
    induce(lms, m, nullptr);
    sais_detail::parallel_ranges(T, n_, [&](unsigned, uint64_t a, uint64_t b) {
      for (uint64_t i = a; i < b; ++i) st_[i] >>= 1;
    });
    tell(1.0);
  }

  bool same_lms_substring(I a, I b) const {
    const I* st = st_;
    for (I d = 0;; ++d) {
      const I ia = a + d, ib = b + d;
      if (ia == n_ || ib == n_) return false;  // only one substring runs into the terminator
      if (st[ia] != st[ib]) return false;  // same symbol and same type
      if (d > 0) {
        const bool ea = is_lms(ia), eb = is_lms(ib);
        if (ea || eb) return ea && eb;
      }
    }
  }

  // Induced sorting from the m LMS suffixes `lms`, placed at their bucket ends in the given order.
  // With `collect`, the LMS suffixes are written there in the order the final scan leaves them
  // (collect may be lms itself: placing is done before the scan starts).
  void induce(const I* lms, I m, I* collect) {
    I* sa = sa_;
    const I n = n_;
    const I* st = st_;
    sais_detail::parallel_ranges(threads_, n, [&](unsigned, uint64_t a, uint64_t b) {
      std::fill(sa + a, sa + b, kEmpty);
    });
    // LMS suffixes go to the ends of their buckets, keeping their given order.
    for (I c = 0; c < k_; ++c) head_[c] = bucket_end_[c];
    for (I j = m; j-- > 0;) {
      if (j >= 32) __builtin_prefetch(st + lms[j - 32]);  // random reads when lms is sorted
      sa[--head_[st[lms[j]] >> 1]] = lms[j];
    }
    // L-type suffixes, left to right. The suffix n-1 follows the terminator, so it comes first.
    for (I c = 0; c < k_; ++c) head_[c] = c ? bucket_end_[c - 1] : 0;
    sa[head_[st[n - 1] >> 1]++] = n - 1;
    Collect none;
    if (threads_ > 1) scan_pipelined<true, false>(none); else scan_serial<true, false>(none);
    // S-type suffixes, right to left; they overwrite the LMS placeholders.
    for (I c = 0; c < k_; ++c) head_[c] = bucket_end_[c];
    if (collect) {
      Collect col{collect, m, k_ - 1};
      if (threads_ > 1) scan_pipelined<false, true>(col); else scan_serial<false, true>(col);
      if (col.left != 0) throw std::logic_error("internal error: suffix sorting lost LMS suffixes");
    } else {
      if (threads_ > 1) scan_pipelined<false, false>(none); else scan_serial<false, false>(none);
    }
  }

  // LMS suffixes met by the right-to-left scan, written backwards from out + left. In that scan
  // the entry at i is S-type exactly when i lies in the part of its bucket the scan has already
  // filled with S-types (i >= head_[bucket]); it is LMS when the position before it is L-type,
  // which the word st[v - 1] read for the induction tells.
  struct Collect {
    I* out = nullptr;
    I left = 0;
    I bucket = 0;  // bucket holding the scan position
  };

  // One step of a scan: the entry v (neither empty nor 0) at position i, with x = st[v - 1].
  template <bool kLeft, bool kCollect>
  void visit(I i, I v, I x, Collect& col) {
    if (kCollect) {
      while (col.bucket > 0 && i < bucket_end_[col.bucket - 1]) --col.bucket;
      if (!(x & 1) && i >= head_[col.bucket]) col.out[--col.left] = v;
    }
    if (kLeft) {
      if (!(x & 1)) sais_detail::store(sa_ + head_[x >> 1]++, I(v - 1));
    } else {
      if (x & 1) sais_detail::store(sa_ + --head_[x >> 1], I(v - 1));
    }
  }

  // The scan alone. st[v - 1] is a random read: it is fetched a few entries ahead (an entry may
  // still change before the scan reaches it; then the hint is wasted).
  template <bool kLeft, bool kCollect>
  void scan_serial(Collect& col, I from = 0) {
    constexpr I kAhead = 32;
    const I n = n_;
    const I* st = st_;
    I* sa = sa_;
    for (I step = from; step < n; ++step) {
      const I i = kLeft ? step : n - 1 - step;
      if (step + kAhead < n) {
        const I w = sa[kLeft ? i + kAhead : i - kAhead];
        if (w != kEmpty && w > 0) __builtin_prefetch(st + w - 1);
      }
      const I v = sa[i];
      if (v != kEmpty && v > 0) visit<kLeft, kCollect>(i, v, st[v - 1], col);
    }
  }

  // The scan with the random reads taken out of it. Blocks of scan positions are "produced":
  // (sa[i], st[sa[i] - 1]) cached per position, a few blocks ahead of the scan. A second thread
  // produces two blocks in three; the scanning thread produces the third between consuming blocks
  // (producing costs far more than consuming). The scan uses a cached word only if sa[i]
  // still holds the cached value: entries the scan wrote after their block was produced (about
  // 1% of them) are read directly. The two threads run in lockstep, which only pays while each
  // has a core: when the scan keeps finding its helper descheduled (other work on the machine),
  // it finishes alone.
  template <bool kLeft, bool kCollect>
  void scan_pipelined(Collect& col) {
    constexpr uint64_t kBlock = 2048, kRing = 8, kAhead = 32;
    constexpr uint64_t kEvery = 3;  // the scanning thread produces every third block (measured best)
    const uint64_t n = n_;
    const uint64_t blocks = (n + kBlock - 1) / kBlock;
    const I* st = st_;
    I* sa = sa_;
    std::unique_ptr<I[]> cache_v(new I[kBlock * kRing]), cache_x(new I[kBlock * kRing]);
    std::atomic<uint64_t> helper_next{0}, consumed{0};
    std::atomic<bool> stop{false};
    auto index = [n](uint64_t step) { return kLeft ? step : n - 1 - step; };
    auto produce = [&](uint64_t blk) {
      I* cv = cache_v.get() + (blk % kRing) * kBlock;
      I* cx = cache_x.get() + (blk % kRing) * kBlock;
      const uint64_t s0 = blk * kBlock, s1 = std::min(n, s0 + kBlock);
      for (uint64_t step = s0; step < s1; ++step) {
        if (step + kAhead < s1) {
          const I w = sais_detail::load(sa + index(step + kAhead));
          if (w != kEmpty && w > 0) __builtin_prefetch(st + w - 1);
        }
        const I v = sais_detail::load(sa + index(step));
        cv[step - s0] = v;
        cx[step - s0] = v != kEmpty && v > 0 ? st[v - 1] : 0;
      }
    };
    auto consume = [&](uint64_t blk) {
      const I* cv = cache_v.get() + (blk % kRing) * kBlock;
      const I* cx = cache_x.get() + (blk % kRing) * kBlock;
      const uint64_t s0 = blk * kBlock, s1 = std::min(n, s0 + kBlock);
      for (uint64_t step = s0; step < s1; ++step) {
        const I i = I(index(step));
        const I v = sa[i];
        if (v == kEmpty || v == 0) continue;
        visit<kLeft, kCollect>(i, v, v == cv[step - s0] ? cx[step - s0] : st[v - 1], col);
      }
      consumed.store(blk + 1, std::memory_order_release);
    };
    std::thread helper;
    try {
      helper = std::thread([&] {
        for (uint64_t blk = 1; blk < blocks; ++blk) {
          if (blk % kEvery == 0) continue;
          // The slot is free once block blk - kRing is consumed.
          for (unsigned spins = 0; blk >= kRing && consumed.load(std::memory_order_acquire) < blk - kRing + 1; ++spins) {
            if (stop.load(std::memory_order_relaxed)) return;
            if (spins < sais_detail::kSpins) sais_detail::cpu_relax(); else std::this_thread::yield();
          }
          if (stop.load(std::memory_order_relaxed)) return;
          produce(blk);
          helper_next.store(blk + 1, std::memory_order_release);
        }
      });
    } catch (...) {  // no thread to be had
      scan_serial<kLeft, kCollect>(col);
      return;
    }
    produce(0);
    const bool force_fallback = g_sais_force_fallback.load();
    uint64_t stalls = 0;
    for (uint64_t blk = 0; blk < blocks; ++blk) {
      // Block blk + kEvery reuses the slot of a block consumed by now (kEvery < kRing).
      if (blk % kEvery == 0) {
        if (blk + kEvery < blocks) produce(blk + kEvery);
      } else if ((sais_detail::wait_at_least(helper_next, blk + 1) || force_fallback) &&
                 (force_fallback || ++stalls > 8 + blk / 32)) {
        stop.store(true, std::memory_order_relaxed);
        helper.join();
        consume(blk);  // produced: the wait returned
        scan_serial<kLeft, kCollect>(col, I(std::min(n, (blk + 1) * kBlock)));
        return;
      }
      consume(blk);
    }
    helper.join();
  }
};

}  // namespace verispec::ds
