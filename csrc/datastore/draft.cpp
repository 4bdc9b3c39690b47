// Draft construction. The tree rule, stated once:
//   1. m = the longest suffix of the context (<= max_match) that occurs; if it occurs fewer than
//      min_count times, the longest shorter suffix (>= min_match) that occurs >= min_count times.
//   2. Every continuation path x of the matched suffix u has count(u x), an exact number of
//      occurrences, obtained by refining suffix-array ranges (occurrences of u x t are a sub-range
//      of those of u x). score(x) = count(u x) / count(u).
//   3. Best-first: start with the children of the root in a max-heap keyed by
//      (count desc, parent's output index asc, token asc); pop `budget` nodes, pushing each popped
//      node's children (unless it is at max_depth). Counts never grow along a path, so the result
//      is the `budget` most probable nodes; the key makes it deterministic.
// Exactness at low cost: a node with count below tau (the budget-th largest count seen so far) can
// never be picked, so children are enumerated by probing the parent's range at a stride that
// finds every run of length >= max(tau, count / (2 budget)); a "pseudo" frontier entry stands for
// the children not looked for yet and refines the probe only if it reaches the top of the heap.
// With backoff (DraftParams::backoff) the key is a mixture of two roots' probabilities instead of
// the count; the same search runs on it (see Ranking).
#include "datastore/draft.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <queue>
#include <unordered_map>

namespace verispec::ds {
namespace {

struct Range {
  uint64_t lo = 0, hi = 0;
  uint64_t size() const { return hi - lo; }
};

// A path below the root. With a backoff root (see DraftParams::backoff) every node is tracked in
// two suffix-array contexts at once: after the primary match u (count) and after a shorter, more
// frequent suffix u' of u (count2); without one, count2 stays 0.
struct Node {
  uint64_t count;
  uint64_t count2;
  int32_t parent;  // output index of the parent, -1 for children of the root
  uint32_t token;
  int64_t depth;   // root 0
  uint64_t first_range;  // into ranges_: root r, segment s at first_range + r * S + s
  uint64_t tail_begin[2], tail_end[2];  // into tail_pos_, per root
};

class Index {
 public:
  Index(const Source& src, const Stop* stop = nullptr)
      : src_(src), segs_(src.segments), S_(src.segments.size()), ticker_(stop) {}

  // Long loops (a tail scan, REST's continuations, a big tree) call this: it throws Interrupted
  // when the caller asked to stop (Ctrl-C), checking every few thousand steps.
  void tick() { ticker_.tick(); }

  // --- matching ------------------------------------------------------------------------------
  // For every tail end e in [tail.start + 1, n - 1]: the longest l <= len with
  // text[e-l, e) == ctx[len-l, len) and e - l >= tail.start.
  void scan_tail(const uint32_t* ctx, uint64_t len) {
    // Segments that store ranks into a token map search with the context mapped the same way.
    mapped_.resize(S_);
    for (size_t s = 0; s < S_; ++s) {
      if (!segs_[s].token_map) continue;
      mapped_[s].resize(len);
      for (uint64_t i = 0; i < len; ++i) mapped_[s][i] = uint32_t(segs_[s].to_stored(ctx[i]));
    }
    tail_match_.clear();
    tail_max_ = 0;
    const Tail* t = src_.tail;
    if (!t || t->n < 2 || t->start + 1 > t->n - 1) return;
    tail_match_.resize(t->n - 1 - t->start);
    const uint32_t last = ctx[len - 1];
    for (uint64_t e = t->start + 1; e <= t->n - 1; ++e) {
      ticker_.tick();
      uint64_t l = 0;
      if (t->text[e - 1] == last) {
        const uint64_t lim = std::min<uint64_t>(len, e - t->start);
        while (l < lim && t->text[e - 1 - l] == ctx[len - 1 - l]) ++l;
      }
      tail_match_[e - 1 - t->start] = uint32_t(l);
      tail_max_ = std::max<uint64_t>(tail_max_, l);
    }
  }

  // The context as segment s stores tokens (see scan_tail).
  const uint32_t* pattern(size_t s, const uint32_t* ctx) const {
    return segs_[s].token_map ? mapped_[s].data() : ctx;
  }

  bool occurs(const uint32_t* ctx, uint64_t len, uint64_t m) const {
    if (m <= tail_max_) return true;
    for (size_t s = 0; s < S_; ++s)
      if (segs_[s].occurs(pattern(s, ctx) + len - m, m)) return true;
    return false;
  }

  // Occurrences of the length-m suffix of ctx; the ranges are kept for make_root(m).
  uint64_t count(const uint32_t* ctx, uint64_t len, uint64_t m) {
    uint64_t c = 0;
    counted_m_ = m;
    counted_.resize(S_);
    for (size_t s = 0; s < S_; ++s) {
      segs_[s].find(pattern(s, ctx) + len - m, m, counted_[s].lo, counted_[s].hi);
      c += counted_[s].size();
    }
    for (uint32_t l : tail_match_) c += l >= m;
    return c;
  }

  // --- nodes -----------------------------------------------------------------------------------
  // Root(s): the primary match of length m and, when m2 > 0, the backoff match of length m2 < m.
  uint64_t make_root(const uint32_t* ctx, uint64_t len, uint64_t m, uint64_t m2 = 0) {
    R_ = m2 ? 2 : 1;
    m_[0] = m;
    m_[1] = m2;
    nodes_.clear();
    ranges_.clear();
    tail_pos_.clear();
    Node root{0, 0, -1, 0, 0, 0, {0, 0}, {0, 0}};
    root_token_.resize(R_ * S_);
    for (size_t r = 0; r < R_; ++r) {
      uint64_t total = 0;
      for (size_t s = 0; s < S_; ++s) {
        Range q;
        if (counted_m_ == m_[r]) {
          q = counted_[s];
        } else {
          segs_[s].find(pattern(s, ctx) + len - m_[r], m_[r], q.lo, q.hi);
        }
        ranges_.push_back(q);
        total += q.size();
        // A one-token match: its children may come straight from the successor lists.
        root_token_[r * S_ + s] = m_[r] == 1 ? pattern(s, ctx)[len - 1] : uint64_t(-1);
      }
      root.tail_begin[r] = tail_pos_.size();
      if (src_.tail) {
        for (uint64_t j = 0; j < tail_match_.size(); ++j)
          if (tail_match_[j] >= m_[r]) tail_pos_.push_back(src_.tail->start + 1 + j - m_[r]);
      }
      root.tail_end[r] = tail_pos_.size();
      total += root.tail_end[r] - root.tail_begin[r];
      (r ? root.count2 : root.count) = total;
    }
    nodes_.push_back(root);
    return 0;
  }

  size_t roots() const { return R_; }

  // A run of suffixes sharing the child token: found in segment `seg` (S_ = the tail) of root
  // `root` at [lo, hi).
  struct Run {
    uint32_t token;
    uint32_t root;
    uint32_t seg;
    uint64_t lo, hi;
  };

  // Children of v: for each root r, every child with count >= D[r] under that root is found
  // (others may be too). Each segment's range is probed at a stride that cannot miss a run of
  // D[r] / (active segments) suffixes; a probe's run is delimited by galloping both ways, so found
  // runs cost O(log run). Output: runs sorted by (token, root, seg).
  void discover(uint64_t v, const uint64_t* D, std::vector<Run>& out) {
    out.clear();
    const Node& nd = nodes_[v];
    for (size_t r = 0; r < R_; ++r) {
      const uint64_t k = m_[r] + uint64_t(nd.depth);
      const uint64_t base = nd.first_range + r * S_;
      if (src_.tail) {
        const Tail& t = *src_.tail;
        for (uint64_t j = nd.tail_begin[r]; j < nd.tail_end[r]; ++j) {
          const uint64_t i = tail_pos_[j] + k;
          if (i < t.n) out.push_back({t.text[i], uint32_t(r), uint32_t(S_), 0, 0});
        }
      }
      uint64_t active = 0;
      for (size_t s = 0; s < S_; ++s) active += ranges_[base + s].size() > 0;
      const uint64_t stride = std::max<uint64_t>(1, D[r] / std::max<uint64_t>(1, active));
      for (size_t s = 0; s < S_; ++s) {
        const Segment& seg = segs_[s];
        const Range q = ranges_[base + s];
        uint64_t b = 0, e = 0;
        if (nd.depth == 0 && q.size() && seg.successors(root_token_[r * S_ + s], b, e)) {
          // Every run of the root's range is listed: take those a probe at this stride would find.
          for (uint64_t j = b, prev = 0; j < e; ++j) {
            const uint64_t end = seg.successor_end(j);
            if (end <= prev || end > q.size())
              throw CorruptError("datastore successor list entry " + std::to_string(j) + " is out of range (corrupt file?)");
            if (end - prev >= stride)
              out.push_back({seg.to_token(seg.successor_token(j)), uint32_t(r), uint32_t(s), q.lo + prev, q.lo + end});
            prev = end;
          }
          continue;
        }
        uint64_t g = q.lo, done = q.lo;  // [q.lo, done) is delimited already
        while (g < q.hi) {
          ticker_.tick();
          const uint64_t t = seg.tok_at(g, k);
          if (t == seg.end_marker) break;  // markers sort last: the rest of the range ended here
          const uint64_t lo = g == done ? g : seg.lower_from(done, g, k, t);
          const uint64_t hi = seg.upper_at(g, q.hi, k, t);
          out.push_back({seg.to_token(t), uint32_t(r), uint32_t(s), lo, hi});
          done = hi;
          g = q.lo + ((hi - q.lo + stride - 1) / stride) * stride;  // next probe at or after the run end
        }
      }
    }
    std::sort(out.begin(), out.end(), [](const Run& a, const Run& b) {
      if (a.token != b.token) return a.token < b.token;
      return a.root != b.root ? a.root < b.root : a.seg < b.seg;
    });
  }

  // The child of v for the token of runs[0, n) (all with that token, from discover): runs give
  // sub-ranges directly; other (root, segment) pairs get theirs by binary search, the tail by
  // filtering v's positions.
  uint64_t make_child(uint64_t v, const Run* runs, size_t n, int32_t parent_out) {
    const uint32_t t = runs[0].token;
    const Node pv = nodes_[v];
    Node c{0, 0, parent_out, t, pv.depth + 1, ranges_.size(), {0, 0}, {0, 0}};
    size_t j = 0;
    for (size_t r = 0; r < R_; ++r) {
      const uint64_t k = m_[r] + uint64_t(pv.depth);
      uint64_t total = 0;
      for (size_t s = 0; s < S_; ++s) {
        const Range q = ranges_[pv.first_range + r * S_ + s];
        Range w;
        while (j < n && (runs[j].root < r || (runs[j].root == r && runs[j].seg < s))) ++j;
        if (j < n && runs[j].root == r && runs[j].seg == s) {
          w.lo = runs[j].lo;
          w.hi = runs[j].hi;
        } else if (q.size()) {
          const uint64_t x = segs_[s].to_stored(t);
          if (x != segs_[s].end_marker) {
            w.lo = segs_[s].lower_at(q.lo, q.hi, k, x);
            w.hi = segs_[s].upper_at(w.lo, q.hi, k, x);
          }
        }
        ranges_.push_back(w);
        total += w.size();
      }
      c.tail_begin[r] = tail_pos_.size();
      if (src_.tail) {
        const Tail& tl = *src_.tail;
        for (uint64_t i = pv.tail_begin[r]; i < pv.tail_end[r]; ++i) {
          const uint64_t p = tail_pos_[i] + k;
          if (p < tl.n && tl.text[p] == t) tail_pos_.push_back(tail_pos_[i]);
        }
      }
      c.tail_end[r] = tail_pos_.size();
      total += c.tail_end[r] - c.tail_begin[r];
      (r ? c.count2 : c.count) = total;
    }
    nodes_.push_back(c);
    return nodes_.size() - 1;
  }

  const Node& node(uint64_t v) const { return nodes_[v]; }
  const std::vector<Segment>& segs() const { return segs_; }
  uint64_t tail_max() const { return tail_max_; }
  const std::vector<uint32_t>& tail_match() const { return tail_match_; }
  const Source& src() const { return src_; }
  const Range& range(uint64_t v, size_t s) const { return ranges_[nodes_[v].first_range + s]; }

 private:
  const Source& src_;
  const std::vector<Segment>& segs_;
  size_t S_;
  size_t R_ = 1;
  uint64_t m_[2] = {0, 0};
  std::vector<uint64_t> root_token_;  // per root and segment: the stored token of a one-token match
  std::vector<Node> nodes_;
  std::vector<Range> ranges_;
  std::vector<uint64_t> tail_pos_;
  std::vector<uint32_t> tail_match_;
  uint64_t tail_max_ = 0;
  std::vector<std::vector<uint32_t>> mapped_;  // per segment with a token map: the mapped context
  std::vector<Range> counted_;  // ranges of the last count() call, for pattern length counted_m_
  uint64_t counted_m_ = 0;
  StopTicker ticker_;
};

// Step 1 of the rule; returns 0 when nothing usable matches.
uint64_t choose_match(Index& ix, const uint32_t* ctx, uint64_t len, const DraftParams& p, uint64_t& count) {
  const uint64_t top = std::min<uint64_t>(len, uint64_t(std::max<int64_t>(p.max_match, 0)));
  uint64_t lo = std::min<uint64_t>(ix.tail_max(), top), hi = top;  // occurs(lo) holds; find the largest
  // Full-length matches are the most common single outcome on real text (a third of the queries
  // on the stdlib replay), so try that first: one search instead of log2(max_match).
  if (lo < hi) {
    if (ix.occurs(ctx, len, hi)) lo = hi; else --hi;
  }
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (ix.occurs(ctx, len, mid)) lo = mid; else hi = mid - 1;
  }
  uint64_t m = lo;
  const uint64_t min_match = uint64_t(std::max<int64_t>(p.min_match, 1));
  if (m < min_match) return 0;
  count = ix.count(ctx, len, m);
  if (count < uint64_t(std::max<int64_t>(p.min_count, 1))) {
    // counts never grow with m: binary search for the longest m' in [min_match, m) with enough.
    uint64_t a = min_match, b = m;  // answer in [a, b), or none
    uint64_t best = 0, best_count = 0;
    while (a < b) {
      const uint64_t mid = a + (b - a) / 2;
      const uint64_t c = ix.count(ctx, len, mid);
      if (c >= uint64_t(p.min_count)) {
        best = mid;
        best_count = c;
        a = mid + 1;
      } else {
        b = mid;
      }
    }
    if (best) {
      m = best;
      count = best_count;
    }
  }
  return m;
}

// Groups of runs with one token: calls fn(token, first run, number of runs) in token order.
template <class F>
void for_each_token(const std::vector<Index::Run>& runs, F&& fn) {
  for (size_t a = 0; a < runs.size();) {
    size_t b = a + 1;
    while (b < runs.size() && runs[b].token == runs[a].token) ++b;
    fn(runs[a].token, runs.data() + a, b - a);
    a = b;
  }
}

// A frontier entry: a real node, or a "pseudo" entry standing for the not-yet-discovered children
// of an expanded node (each of them has a key <= its key). Ordering: key desc, parent's output
// index asc, token asc (pseudo entries use token -1, so they come before any real sibling with an
// equal key: an undiscovered child might win that tie).
// The backoff suffix: the longest m2 in [min_match, m) occurring >= backoff * count(m) times;
// 0 when there is none. Counts never grow with the length, so this is a binary search.
uint64_t choose_backoff(Index& ix, const uint32_t* ctx, uint64_t len, uint64_t m, uint64_t count,
                        const DraftParams& p) {
  const uint64_t want = count * uint64_t(p.backoff);
  uint64_t a = uint64_t(std::max<int64_t>(p.min_match, 1)), b = m, best = 0;  // answer in [a, b)
  while (a < b) {
    const uint64_t mid = a + (b - a) / 2;
    if (ix.count(ctx, len, mid) >= want) {
      best = mid;
      a = mid + 1;
    } else {
      b = mid;
    }
  }
  return best;
}

struct HeapEntry {
  double key;
  int32_t parent;
  int64_t token;
  uint64_t node;
  double kd;  // pseudo entries: the children of `node` with key >= kd are already discovered
};
struct WorseFirst {  // std::priority_queue pops the "largest": make that the best entry
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    if (a.key != b.key) return a.key < b.key;
    if (a.parent != b.parent) return a.parent > b.parent;
    return a.token > b.token;
  }
};

void emit(DraftResult& out, const Node& n, float score) {
  out.tokens.push_back(int32_t(n.token));
  out.parents.push_back(n.parent);
  out.scores.push_back(score);
}

// How nodes are ranked. Without backoff the key is the count itself (integers, exact in a
// double); with it, the mixed probability w0 p(x|u) + w1 p(x|u').
struct Ranking {
  bool mix = false;
  double c0 = 1, c1 = 1, w0 = 1, w1 = 0;
  double key(const Node& n) const {
    return mix ? w0 * (double(n.count) / c0) + w1 * (double(n.count2) / c1) : double(n.count);
  }
  double score(const Node& n) const { return mix ? key(n) : double(n.count) / c0; }
  double key_of_score(double s) const { return mix ? s : s * c0; }

  // Discovery thresholds that find every child whose key is >= kd. `bound` caps the key of any
  // child left undiscovered (inclusive without backoff, exclusive with it); `complete`: none is.
  struct Thresholds {
    uint64_t D[2];
    double bound;
    bool complete;
  };
  static uint64_t at_least_one(double d) { return d < 1.0 ? 1 : d > 1e18 ? uint64_t(1e18) : uint64_t(d); }
  Thresholds thresholds(double kd) const {
    Thresholds t{{1, 1}, 0.0, true};
    if (!mix) {  // key = count: children with count >= ceil(kd)
      t.D[0] = at_least_one(std::ceil(kd));
      t.bound = double(t.D[0] - 1);
      t.complete = t.D[0] == 1;
      return t;
    }
    // key >= kd needs w0 p0 >= kd/2 or w1 p1 >= kd/2; round down so float error only adds work.
    t.D[0] = at_least_one(std::floor(kd / 2 * c0 / w0 * (1.0 - 1e-12)));
    t.D[1] = at_least_one(std::floor(kd / 2 * c1 / w1 * (1.0 - 1e-12)));
    t.bound = kd;
    t.complete = t.D[0] == 1 && t.D[1] == 1;
    return t;
  }
  // May an undiscovered child below `bound` still reach `need`?
  bool may_matter(double bound, double need) const { return mix ? bound > need : bound >= need; }
};

void draft_tree(Index& ix, const Ranking& rk, const DraftParams& p, DraftResult& out) {
  const uint64_t budget = uint64_t(p.budget);
  const auto keep = [&](const Node& n) {
    return (n.count > 0 || n.count2 > 0) && rk.score(n) >= p.min_score;
  };
  const double min_key = rk.key_of_score(p.min_score);
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, WorseFirst> heap;
  // tau: the budget-th largest key among real nodes found so far. A node below it can never be
  // picked (at least `budget` nodes at or above it exist, and keys never grow along a path).
  std::priority_queue<double, std::vector<double>, std::greater<double>> best_keys;
  const auto tau = [&]() -> double { return best_keys.size() < budget ? 0.0 : best_keys.top(); };
  const auto need = [&]() { return std::max(min_key, tau()); };
  std::unordered_map<uint64_t, std::vector<uint32_t>> known;  // expanded node -> discovered tokens
  std::vector<Index::Run> runs;
  std::vector<uint32_t> fresh, merged;

  // Discover v's children with key >= kd; those not seen before become candidates. If smaller
  // children might still matter, a pseudo entry (keyed by their bound) remembers where to go on.
  const auto expand = [&](uint64_t v, int32_t v_out, double kd) {
    const Ranking::Thresholds th = rk.thresholds(kd);
    ix.discover(v, th.D, runs);
    std::vector<uint32_t>& kn = known[v];
    fresh.clear();
    for_each_token(runs, [&](uint32_t t, const Index::Run* r, size_t n) {
      if (std::binary_search(kn.begin(), kn.end(), t)) return;
      fresh.push_back(t);
      const uint64_t c = ix.make_child(v, r, n, v_out);
      const Node& nd = ix.node(c);
      const double k = rk.key(nd);
      if (!keep(nd) || k < tau()) return;
      heap.push({k, nd.parent, int64_t(nd.token), c, kd});
      best_keys.push(k);
      if (best_keys.size() > budget) best_keys.pop();
    });
    merged.resize(kn.size() + fresh.size());
    std::merge(kn.begin(), kn.end(), fresh.begin(), fresh.end(), merged.begin());
    kn.swap(merged);
    if (!th.complete && rk.may_matter(th.bound, need())) heap.push({th.bound, v_out, -1, v, kd});
  };
  // First look at a node: only children holding >= 1/(2 budget) of its key; finer only if needed.
  const auto first_kd = [&](uint64_t v) {
    // (with backoff the discovery root is large by construction: look coarser first)
    const double share = rk.mix ? rk.key(ix.node(v)) / double(std::min<uint64_t>(2 * budget, 8))
                                : double(ix.node(v).count / (2 * budget));
    return std::max(need(), share);
  };

  expand(0, -1, first_kd(0));
  while (out.tokens.size() < budget && !heap.empty()) {
    ix.tick();
    const HeapEntry e = heap.top();
    heap.pop();
    if (e.token < 0) {  // pseudo: the best remaining candidate may be an undiscovered child
      if (!rk.may_matter(e.key, need())) continue;
      double kd = std::max(need(), e.kd / 8);
      if (!rk.mix && rk.thresholds(kd).D[0] >= rk.thresholds(e.kd).D[0]) kd = double(rk.thresholds(e.kd).D[0] - 1);
      expand(e.node, e.parent, kd);
      continue;
    }
    const int32_t me = int32_t(out.tokens.size());
    emit(out, ix.node(e.node), float(rk.score(ix.node(e.node))));
    if (ix.node(e.node).depth < p.max_depth) expand(e.node, me, first_kd(e.node));
  }
}

void draft_chain(Index& ix, uint64_t root_count, const DraftParams& p, DraftResult& out) {
  const uint64_t limit = uint64_t(std::min(p.budget, p.max_depth));
  const uint64_t lowest = std::max<uint64_t>(1, uint64_t(std::floor(p.min_score * double(root_count))));
  std::vector<Index::Run> runs;
  uint64_t v = 0;
  while (out.tokens.size() < limit) {
    uint64_t D = std::max(lowest, (ix.node(v).count + 1) / 2);
    uint64_t best = 0;
    bool have = false;
    const int32_t parent = int32_t(out.tokens.size()) - 1;
    for (;;) {
      const uint64_t Ds[2] = {D, D};
      ix.discover(v, Ds, runs);
      for_each_token(runs, [&](uint32_t, const Index::Run* r, size_t n) {
        const uint64_t c = ix.make_child(v, r, n, parent);
        const Node& nd = ix.node(c);
        if (nd.count == 0 || double(nd.count) / double(root_count) < p.min_score) return;
        // tokens arrive in increasing order, so ">" keeps the smallest token among equal counts
        if (!have || nd.count > ix.node(best).count) {
          best = c;
          have = true;
        }
      });
      // Every child with count >= D was found, so a found child with count >= D is the maximum.
      if ((have && ix.node(best).count >= D) || D == lowest) break;
      D = std::max(lowest, D / 4);
      have = false;
    }
    if (!have) break;
    emit(out, ix.node(best), float(double(ix.node(best).count) / double(root_count)));
    v = best;
  }
}

// REST (He et al., 2023) as published: the first span from 16 down that occurs, up to 5000 of its
// matches in suffix-array order, their continuations, and the `budget` most frequent prefixes.
void draft_rest(Index& ix, const uint32_t* ctx, uint64_t len, const DraftParams& p, DraftResult& out) {
  const Source& src = ix.src();
  const uint64_t top = std::min<uint64_t>(len, uint64_t(std::max<int64_t>(p.max_match, 0)));
  const uint64_t bottom = uint64_t(std::max<int64_t>(p.min_match, 1));
  uint64_t span = 0, total = 0;
  for (uint64_t s = top; s >= bottom && s > 0; --s) {
    total = ix.count(ctx, len, s);
    if (total) {
      span = s;
      break;
    }
  }
  if (!span) return;
  ix.make_root(ctx, len, span);
  out.match_len = int64_t(span);
  out.match_count = total;
  const uint64_t cap = uint64_t(std::max<int64_t>(p.rest_max_matches, 1));
  const uint64_t depth = uint64_t(std::max<int64_t>(p.max_depth, 0));
  std::vector<std::vector<uint32_t>> conts;
  int parts = 0;
  for (size_t s = 0; s < ix.segs().size() && conts.size() < cap; ++s) {
    const Segment& seg = ix.segs()[s];
    const Range r = ix.range(0, s);
    parts += r.size() > 0;
    for (uint64_t k = r.lo; k < r.hi && conts.size() < cap; ++k) {
      const uint64_t pos = seg.pos(k) + span;
      std::vector<uint32_t> c;
      for (uint64_t d = 0; d < depth; ++d) {
        ix.tick();
        const uint64_t t = seg.tok(pos + d);
        if (t == seg.end_marker) break;
        c.push_back(seg.to_token(t));
      }
      conts.push_back(std::move(c));
    }
  }
  if (src.tail && conts.size() < cap) {
    const Tail& t = *src.tail;
    const auto& tm = ix.tail_match();
    bool any = false;
    for (uint64_t j = 0; j < tm.size() && conts.size() < cap; ++j) {
      if (tm[j] < span) continue;
      any = true;
      const uint64_t pos = t.start + 1 + j;  // end of the match = start of the continuation
      std::vector<uint32_t> c;
      for (uint64_t d = 0; d < depth && pos + d < t.n; ++d) {
        ix.tick();
        c.push_back(t.text[pos + d]);
      }
      conts.push_back(std::move(c));
    }
    parts += any;
  }
  const uint64_t used = conts.size();
  if (parts > 1) std::sort(conts.begin(), conts.end());  // one range is already sorted
  // Prefix trie over sorted continuations: shared prefixes are adjacent, so a stack suffices.
  struct TNode {
    uint32_t token;
    int64_t parent;
    uint64_t count;
    uint64_t depth;
  };
  std::vector<TNode> trie;
  std::vector<int64_t> stack;
  const std::vector<uint32_t>* prev = nullptr;
  for (const auto& c : conts) {
    ix.tick();
    uint64_t l = 0;
    if (prev)
      while (l < c.size() && l < prev->size() && c[l] == (*prev)[l]) ++l;
    stack.resize(l);
    for (int64_t id : stack) trie[id].count++;
    for (uint64_t d = l; d < c.size(); ++d) {
      trie.push_back({c[d], d ? stack[d - 1] : -1, 1, d + 1});
      stack.push_back(int64_t(trie.size()) - 1);
    }
    prev = &c;
  }
  std::vector<int64_t> order(trie.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  const size_t k = std::min<size_t>(order.size(), size_t(std::max<int64_t>(p.budget, 0)));
  // Ties: shallower first (keeps parents before children), then lexicographic path order.
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    if (trie[a].count != trie[b].count) return trie[a].count > trie[b].count;
    if (trie[a].depth != trie[b].depth) return trie[a].depth < trie[b].depth;
    return a < b;
  });
  std::vector<int32_t> out_index(trie.size(), -1);
  for (size_t i = 0; i < k; ++i) {
    const TNode& n = trie[order[i]];
    out_index[order[i]] = int32_t(i);
    out.tokens.push_back(int32_t(n.token));
    out.parents.push_back(n.parent < 0 ? -1 : out_index[n.parent]);
    out.scores.push_back(float(double(n.count) / double(used)));
  }
}

}  // namespace

bool DraftCache::get(const std::string& key, DraftResult& out) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = cur_.find(key);
  if (it == cur_.end()) {
    auto jt = old_.find(key);
    if (jt == old_.end()) {
      ++misses_;
      return false;
    }
    it = cur_.emplace(key, std::move(jt->second)).first;  // promote
    old_.erase(jt);
  }
  ++hits_;
  out = it->second;
  return true;
}

void DraftCache::put(const std::string& key, const DraftResult& r) {
  std::lock_guard<std::mutex> lk(mu_);
  if (cur_.size() >= capacity_) {
    old_.swap(cur_);
    cur_.clear();
  }
  cur_.emplace(key, r);
}

void DraftCache::clear() {
  std::lock_guard<std::mutex> lk(mu_);
  cur_.clear();
  old_.clear();
}

void DraftCache::configure(size_t capacity, uint64_t min_count) {
  std::lock_guard<std::mutex> lk(mu_);
  capacity_ = capacity;
  min_count_ = min_count;
  cur_.clear();
  old_.clear();
}

size_t DraftCache::size() {
  std::lock_guard<std::mutex> lk(mu_);
  return cur_.size() + old_.size();
}

namespace {
std::string cache_key(const DraftParams& p, const uint32_t* suffix, uint64_t m) {
  std::string k;
  k.resize(sizeof(int64_t) * 5 + 2 * sizeof(double) + 4 * m);
  char* w = &k[0];
  const int64_t f[5] = {p.budget, p.max_depth, p.min_match, p.min_count, int64_t(p.mode) | (p.backoff << 8)};
  std::memcpy(w, f, sizeof f);
  const double g[2] = {p.min_score, p.backoff_prior};
  std::memcpy(w + sizeof f, g, sizeof g);
  std::memcpy(w + sizeof f + sizeof g, suffix, 4 * m);
  return k;
}
}  // namespace

DraftResult draft(const Source& src, const uint32_t* ctx, uint64_t len, const DraftParams& p, DraftCache* cache,
                  const Stop* stop) {
  DraftResult out;
  if (len == 0 || p.budget <= 0 || p.max_depth <= 0) return out;
  Index ix(src, stop);
  ix.scan_tail(ctx, len);
  if (p.mode == DraftMode::kRest) {
    draft_rest(ix, ctx, len, p, out);
    return out;
  }
  uint64_t count = 0;
  const uint64_t m = choose_match(ix, ctx, len, p, count);
  if (!m) return out;
  // choose_match counted m last unless it fell back without success; either way `count` is exact.
  std::string key;
  if (cache && cache->wants(count)) {
    key = cache_key(p, ctx + len - m, m);
    if (cache->get(key, out)) return out;
  }
  uint64_t m2 = 0;
  if (p.mode == DraftMode::kTree && p.backoff > 0) m2 = choose_backoff(ix, ctx, len, m, count, p);
  ix.make_root(ctx, len, m, m2);
  out.match_len = int64_t(m);
  out.match_count = ix.node(0).count;
  if (out.match_count == 0) return out;
  if (p.mode == DraftMode::kChain) {
    draft_chain(ix, out.match_count, p, out);
  } else {
    Ranking rk;
    rk.c0 = double(out.match_count);
    if (m2) {
      rk.mix = true;
      rk.c1 = double(ix.node(0).count2);
      rk.w0 = rk.c0 / (rk.c0 + p.backoff_prior);
      rk.w1 = 1.0 - rk.w0;
    }
    draft_tree(ix, rk, p, out);
  }
  if (!key.empty()) cache->put(key, out);
  return out;
}

uint64_t count_pattern(const Source& src, const uint32_t* pat, uint64_t m) {
  if (m == 0) return 0;
  Index ix(src);
  ix.scan_tail(pat, m);
  return ix.count(pat, m, m);
}

void longest_match(const Source& src, const uint32_t* ctx, uint64_t len, int64_t& m, uint64_t& count) {
  DraftParams p;
  p.max_match = int64_t(len);
  Index ix(src);
  ix.scan_tail(ctx, len);
  count = 0;
  m = int64_t(choose_match(ix, ctx, len, p, count));
  if (!m) count = 0;
}

std::vector<std::pair<uint32_t, uint64_t>> continuations(const Source& src, const uint32_t* pat, uint64_t m) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  if (m == 0) return out;
  Index ix(src);
  ix.scan_tail(pat, m);
  ix.make_root(pat, m, m);
  std::vector<Index::Run> runs;
  const uint64_t all[2] = {1, 1};
  ix.discover(0, all, runs);
  for_each_token(runs, [&](uint32_t t, const Index::Run* r, size_t n) {
    const uint64_t c = ix.make_child(0, r, n, -1);
    if (ix.node(c).count) out.emplace_back(t, ix.node(c).count);
  });
  return out;
}

}  // namespace verispec::ds
