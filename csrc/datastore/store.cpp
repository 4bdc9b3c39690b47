#include "datastore/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "datastore/sais.h"

namespace verispec::ds {

bool g_force_wide_index = false;

namespace {

constexpr uint64_t kMaxTokenId = 0xFFFFFFFEull;  // 2^32 - 1 marks document ends

void report(const Progress& p, const char* phase, double f) {
  if (p) p(phase, f);
}

void check_corpus(const Corpus& c) {
  if (c.num_docs == 0) throw std::invalid_argument("empty corpus: no documents");
  if (c.num_tokens == 0) throw std::invalid_argument("empty corpus: the documents hold no tokens");
  if (c.vocab_size == 0 || c.vocab_size > kMaxTokenId + 1)
    throw std::invalid_argument("vocab_size must be in [1, 2^32 - 1], got " + std::to_string(c.vocab_size));
  if (c.offsets[0] != 0 || c.offsets[c.num_docs] != c.num_tokens)
    throw std::invalid_argument("document offsets must run from 0 to the number of tokens");
  for (uint64_t d = 0; d < c.num_docs; ++d)
    if (c.offsets[d + 1] < c.offsets[d])
      throw std::invalid_argument("document offsets decrease at document " + std::to_string(d));
}

// Everything decided before the output is allocated: suffix-sorting symbols (dense ranks of the
// distinct ids, the document end as the largest symbol, so it sorts last exactly like its stored
// all-ones value), the distinct ids, and the stored widths.
template <class I>
struct Prepared {
  std::unique_ptr<I[]> sym;  // text_len symbols, written before read (no zero fill of ~n words)
  uint64_t text_len = 0;
  std::vector<uint32_t> distinct;  // sorted distinct token ids
  I k = 0;                         // alphabet size: distinct + 1 (the marker)
  bool compact = false;            // store ranks into `distinct` rather than ids
  unsigned token_bits = 0, offset_bits = 0;
  CodePlan codes;                  // how the text is stored (textcode.h)
  Successors succ;                 // successor lists of the most frequent values (textcode.h)
  uint64_t stored(I r) const { return compact ? uint64_t(r) : uint64_t(distinct[r]); }
};

[[noreturn]] void bad_token(const Corpus& c, uint64_t i) {
  const uint64_t d = uint64_t(std::upper_bound(c.offsets, c.offsets + c.num_docs + 1, i) - c.offsets) - 1;
  throw std::invalid_argument("document " + std::to_string(d) + ", position " + std::to_string(i - c.offsets[d]) +
                              ": token id " + std::to_string(c.tokens[i]) + " is outside the vocabulary of size " +
                              std::to_string(c.vocab_size));
}

// Successor lists for the ranks seen at least g_successor_min_count times: one pass over the
// symbols on two threads, counting into a dense heads x ranks table per thread (the most frequent
// heads only, if the table would be large).
template <class I>
void find_successors(Prepared<I>& p, const std::vector<uint64_t>& counts) {
  const uint64_t D = counts.size();
  std::vector<uint32_t> heads;
  for (uint64_t r = 0; r < D; ++r)
    if (counts[r] >= std::max<uint64_t>(g_successor_min_count, 1)) heads.push_back(uint32_t(r));
  constexpr uint64_t kMaxCells = uint64_t(1) << 22;  // table cells per thread
  const uint64_t max_heads = kMaxCells / (D + 1) > 1 ? kMaxCells / (D + 1) - 1 : 0;
  if (heads.size() > max_heads) {
    std::stable_sort(heads.begin(), heads.end(), [&](uint32_t a, uint32_t b) { return counts[a] > counts[b]; });
    heads.resize(max_heads);
    std::sort(heads.begin(), heads.end());
  }
  if (heads.empty()) return;
  const uint64_t H = heads.size();
  // Row 0 and column D (the marker) collect what is not counted, so the loop has no branch.
  const uint64_t W = D + 1;
  std::vector<uint32_t> row_of(D + 1, 0);
  for (uint64_t h = 0; h < H; ++h) row_of[heads[h]] = uint32_t(h + 1);
  const I* sym = p.sym.get();
  // Counts in the index type: below 2^32 positions, 4-byte cells keep more of the table in cache.
  std::vector<I> table[2] = {std::vector<I>((H + 1) * W, 0), std::vector<I>((H + 1) * W, 0)};
  auto work = [&](int t, uint64_t a, uint64_t b) {
    I* cells = table[t].data();
    for (uint64_t i = a; i < b; ++i) ++cells[uint64_t(row_of[sym[i]]) * W + sym[i + 1]];  // text ends with a marker
  };
  const uint64_t n = p.text_len - 1, mid = n / 2;
  std::thread th(work, 1, mid, n);
  work(0, 0, mid);
  th.join();
  Successors& out = p.succ;
  for (uint64_t h = 0; h < H; ++h) {
    out.heads.push_back(uint32_t(p.stored(I(heads[h]))));
    out.begin.push_back(out.tokens.size());
    uint64_t cum = 0;
    for (uint64_t b = 0; b < D; ++b) {
      const uint64_t c = uint64_t(table[0][(h + 1) * W + b]) + table[1][(h + 1) * W + b];
      if (!c) continue;
      cum += c;
      out.tokens.push_back(uint32_t(p.stored(I(b))));
      out.ends.push_back(cum);
    }
  }
  out.begin.push_back(out.tokens.size());
  p.codes.coding.succ_heads = H;
  p.codes.coding.succ_entries = out.tokens.size();
}

template <class I>
void prepare(const Corpus& c, Prepared<I>& p) {
  const uint64_t text_len = c.num_tokens + c.num_docs;
  // Distinct ids: a presence bitmap for ordinary vocabularies, sorting for enormous ones.
  std::vector<uint32_t> rank;  // id -> rank lookup, when the vocabulary is small enough
  if (c.vocab_size <= (uint64_t(1) << 26)) {
    std::vector<uint64_t> present((c.vocab_size + 63) / 64, 0);
    for (uint64_t i = 0; i < c.num_tokens; ++i) {
      const uint32_t t = c.tokens[i];
      if (t >= c.vocab_size) bad_token(c, i);
      present[t >> 6] |= uint64_t(1) << (t & 63);
    }
    rank.resize(c.vocab_size);
    for (uint64_t w = 0; w < present.size(); ++w)
      for (uint64_t bits = present[w]; bits; bits &= bits - 1) {
        const uint32_t t = uint32_t(w * 64 + uint64_t(__builtin_ctzll(bits)));
        rank[t] = uint32_t(p.distinct.size());
        p.distinct.push_back(t);
      }
  } else {
    for (uint64_t i = 0; i < c.num_tokens; ++i)
      if (c.tokens[i] >= c.vocab_size) bad_token(c, i);
    p.distinct.assign(c.tokens, c.tokens + c.num_tokens);
    std::sort(p.distinct.begin(), p.distinct.end());
    p.distinct.erase(std::unique(p.distinct.begin(), p.distinct.end()), p.distinct.end());
  }
  // Ranks cost fewer bits whenever the corpus uses under half of the id range (all-ones stays free).
  p.compact = bits_for(p.distinct.size()) < bits_for(c.vocab_size);
  p.token_bits = p.compact ? bits_for(p.distinct.size()) : bits_for(c.vocab_size);
  p.offset_bits = bits_for(text_len - 1);
  const I marker = I(p.distinct.size());
  p.k = marker + 1;
  p.text_len = text_len;
  p.sym.reset(new I[text_len]);
  // Occurrences of each rank, one table per thread, for choosing the text codes.
  std::vector<uint64_t> counts[2] = {std::vector<uint64_t>(p.distinct.size(), 0), std::vector<uint64_t>(p.distinct.size(), 0)};
  auto fill = [&](uint64_t d0, uint64_t d1) {
    uint64_t* count = counts[d0 == 0 ? 0 : 1].data();
    for (uint64_t d = d0; d < d1; ++d) {
      I* out = p.sym.get() + c.offsets[d] + d;  // d markers precede this document
      for (uint64_t i = c.offsets[d]; i < c.offsets[d + 1]; ++i) {
        const uint32_t t = c.tokens[i];
        const I r = rank.empty() ? I(std::lower_bound(p.distinct.begin(), p.distinct.end(), t) - p.distinct.begin())
                                 : I(rank[t]);
        ++count[r];
        *out++ = r;
      }
      *out = marker;
    }
  };
  // Two threads, split by tokens rather than documents so one huge document does not idle a core.
  uint64_t mid = uint64_t(std::upper_bound(c.offsets, c.offsets + c.num_docs + 1, c.num_tokens / 2) - c.offsets);
  mid = std::min<uint64_t>(std::max<uint64_t>(mid, 1), c.num_docs);
  std::thread t1(fill, mid, c.num_docs);
  fill(0, mid);
  t1.join();
  for (size_t r = 0; r < counts[0].size(); ++r) counts[0][r] += counts[1][r];
  std::vector<uint32_t> stored_of_rank(p.distinct.size());
  for (size_t r = 0; r < stored_of_rank.size(); ++r) stored_of_rank[r] = uint32_t(p.stored(I(r)));
  p.codes = plan_codes(counts[0], stored_of_rank, text_len, c.num_tokens, p.token_bits);
  find_successors(p, counts[0]);
}

// The text as codes (textcode.h), the code table and the exceptions. Two threads, split at a
// multiple of 8 entries so the halves never share a byte; each lists its own exceptions, in order.
template <class I>
void pack_text(const Prepared<I>& p, uint8_t* dst, uint8_t* extras) {
  const CodePlan& plan = p.codes;
  const bool coded = plan.coding.code_entries != 0;
  const unsigned bits = plan.coding.code_bits;
  const uint64_t marker = plan.coding.marker_code(), exception = plan.coding.exception_code();
  const I sym_marker = p.k - 1;
  const I* sym = p.sym.get();
  std::vector<std::pair<uint64_t, uint32_t>> exceptions[2];
  auto work = [&](int t, uint64_t a, uint64_t b) {
    PackedWriter w(dst, a, bits);
    auto& exc = exceptions[t];
    exc.reserve(uint64_t(double(plan.coding.exc_entries) * double(b - a) / double(p.text_len) * 1.125));
    for (uint64_t i = a; i < b; ++i) {
      const I r = sym[i];
      if (r == sym_marker) {
        w.put(marker);
      } else if (!coded) {
        w.put(p.stored(r));
      } else {
        const uint32_t code = plan.code_of[r];
        if (code == exception) exc.emplace_back(i, uint32_t(p.stored(r)));
        w.put(code);
      }
    }
    w.finish();
  };
  const uint64_t mid = (p.text_len / 2) & ~uint64_t(7);
  std::thread th(work, 1, mid, p.text_len);
  work(0, 0, mid);
  th.join();
  if (!coded) return;
  std::memcpy(extras, plan.table.data(), plan.table.size() * 4);
  exceptions[0].insert(exceptions[0].end(), exceptions[1].begin(), exceptions[1].end());
  if (exceptions[0].size() != plan.coding.exc_entries) throw std::logic_error("internal error: exception count changed");
  write_exceptions(extras, plan.coding, p.text_len, p.token_bits, p.offset_bits, exceptions[0]);
}

template <class I>
void pack_sa(const I* sa, const Prepared<I>& p, uint64_t n, uint8_t* dst) {
  // Document ends are the largest symbol, so their suffixes are exactly the last entries; checking
  // those few (not every entry, a random read each) proves no marker suffix is among the first n.
  for (uint64_t k = n; k < p.text_len; ++k)
    if (p.sym[sa[k]] != p.k - 1) throw std::logic_error("internal error: a document end sorted before a token suffix");
  // Split at a multiple of 8 entries: the halves then start on byte boundaries and never share a byte.
  const uint64_t mid = (n / 2) & ~uint64_t(7);
  auto work = [&](uint64_t a, uint64_t b) {
    PackedWriter w(dst, a, p.offset_bits);
    for (uint64_t k = a; k < b; ++k) w.put(uint64_t(sa[k]));
    w.finish();
  };
  std::thread t(work, mid, n);
  work(0, mid);
  t.join();
}

// Output regions, zeroed, laid out by layout_for / packed_bytes.
struct Output {
  uint8_t* map;
  uint8_t* text;
  uint8_t* sa;
  uint8_t* extras;
};

// The suffix sort (which uses every core), then the text and the suffix array, packed by two
// threads each.
template <class I>
void build_into(const Corpus& c, Prepared<I>& p, const Output& o, const Progress& progress) {
  if (p.compact && o.map) std::memcpy(o.map, p.distinct.data(), p.distinct.size() * 4);
  report(progress, "sorting suffixes", 0.0);
  std::unique_ptr<I[]> sa(new I[p.text_len]);
  const std::function<void(double)> tell = [&](double f) {
    if (f < 1.0) report(progress, "sorting suffixes", f);
  };
  SuffixSorter<I>::sort(p.sym.get(), sa.get(), I(p.text_len), p.k, progress ? &tell : nullptr);
  report(progress, "packing text", 0.0);
  pack_text<I>(p, o.text, o.extras);
  write_successors(o.extras, p.codes.coding, p.text_len, p.token_bits, p.offset_bits, p.succ);
  report(progress, "packing suffix array", 0.0);
  pack_sa<I>(sa.get(), p, c.num_tokens, o.sa);
}

// 32-bit sorter indices halve the build memory. The sorter packs (symbol << 1 | type) into an
// index word and symbols can reach the text length, so 32 bits serve texts below 2^31 positions.
bool wide_index(const Corpus& c) {
  return g_force_wide_index || c.num_tokens + c.num_docs >= (uint64_t(1) << 31);
}

std::atomic<uint64_t> g_tmp_counter{0};

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

namespace {

template <class I>
FileHeader build_file_impl(const Corpus& c, const std::string& path, const Progress& progress_in, const Stop* stop) {
  // Every phase report (on this thread, including the suffix sorter's) is also where a requested
  // stop takes effect: the temporary file is then removed like after any other failure.
  const Progress progress = [&](const std::string& phase, double f) {
    if (stop) stop->check();
    if (progress_in) progress_in(phase, f);
  };
  report(progress, "preparing symbols", 0.0);
  Prepared<I> prep;
  prepare(c, prep);
  const uint64_t text_len = c.num_tokens + c.num_docs;
  const uint64_t map_entries = prep.compact ? prep.distinct.size() : 0;
  const TextCoding& tc = prep.codes.coding;
  const Layout l = layout_for(map_entries, text_len, prep.token_bits, tc, c.num_tokens, prep.offset_bits, c.num_docs);

  const std::string tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(g_tmp_counter++);
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::invalid_argument("cannot write datastore " + path + ": " + std::strerror(errno) +
                                " (creating a temporary file in " + parent_dir(path) + ")");
  uint8_t* base = nullptr;
  bool fd_open = true;
  try {
    // Held until the file is closed: tells remove_stale_temporaries that this one is in use.
    flock(fd, LOCK_EX | LOCK_NB);
    // Reserve the blocks now: a full disk must fail here, not as SIGBUS on a mapped write.
    if (int e = posix_fallocate(fd, 0, off_t(l.file_bytes)))
      throw std::runtime_error("cannot write datastore " + path + ": " + std::strerror(e) + " (reserving " +
                               std::to_string(l.file_bytes) + " bytes)");
    void* mp = mmap(nullptr, l.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mp == MAP_FAILED) throw std::runtime_error("cannot map " + tmp + ": " + std::strerror(errno));
    base = static_cast<uint8_t*>(mp);
    build_into<I>(c, prep, Output{base + l.map_offset, base + l.text_offset, base + l.sa_offset, base + l.extras_offset},
                  progress);
    uint64_t* docs = reinterpret_cast<uint64_t*>(base + l.docs_offset);
    for (uint64_t d = 0; d <= c.num_docs; ++d) docs[d] = c.offsets[d] + d;
    report(progress, "checksums", 0.0);
    FileHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kFormatVersion;
    h.header_bytes = kHeaderBytes;
    h.token_bits = prep.token_bits;
    h.offset_bits = prep.offset_bits;
    h.vocab_size = c.vocab_size;
    h.num_tokens = c.num_tokens;
    h.num_docs = c.num_docs;
    h.text_len = text_len;
    h.map_entries = map_entries;
    h.map_offset = l.map_offset;
    h.text_offset = l.text_offset;
    h.sa_offset = l.sa_offset;
    h.docs_offset = l.docs_offset;
    h.file_bytes = l.file_bytes;
    h.code_bits = tc.code_bits;
    if (tc.code_entries) {
      h.block_shift = tc.block_shift;
      h.code_entries = tc.code_entries;
      h.exc_entries = tc.exc_entries;
    }
    h.succ_heads = uint32_t(tc.succ_heads);
    h.succ_entries = uint32_t(tc.succ_entries);
    if (l.extras_bytes) {
      h.extras_offset = l.extras_offset;
      h.extras_checksum = section_checksum(base + l.extras_offset, l.extras_bytes);
    }
    std::thread th([&] { h.text_checksum = section_checksum(base + l.text_offset, l.text_bytes); });
    h.sa_checksum = section_checksum(base + l.sa_offset, l.sa_bytes);
    th.join();
    h.map_checksum = section_checksum(base + l.map_offset, l.map_bytes);
    h.docs_checksum = section_checksum(base + l.docs_offset, l.docs_bytes);
    h.header_checksum = fnv1a64(&h, offsetof(FileHeader, header_checksum));
    std::memcpy(base, &h, sizeof h);
    report(progress, "writing", 0.0);
    munmap(base, l.file_bytes);
    base = nullptr;
    if (fsync(fd) != 0) throw std::runtime_error("cannot write datastore " + path + ": fsync: " + std::strerror(errno));
    fd_open = false;
    if (::close(fd) != 0) throw std::runtime_error("cannot write datastore " + path + ": close: " + std::strerror(errno));
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::invalid_argument("cannot write datastore " + path + ": rename: " + std::strerror(errno));
    report(progress, "done", 1.0);
    return h;
  } catch (...) {
    if (base) munmap(base, l.file_bytes);
    if (fd_open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

template <class I>
std::shared_ptr<MemSegment> build_mem_impl(const Corpus& c, const Stop* stop) {
  Prepared<I> prep;
  prepare(c, prep);
  auto m = std::make_shared<MemSegment>();
  m->token_bits = prep.token_bits;
  m->offset_bits = prep.offset_bits;
  m->codes = prep.codes.coding;
  m->text_len = c.num_tokens + c.num_docs;
  m->num_tokens = c.num_tokens;
  m->num_docs = c.num_docs;
  m->text.assign(packed_bytes(m->text_len, m->codes.code_bits), 0);
  m->sa.assign(packed_bytes(m->num_tokens, m->offset_bits), 0);
  m->extras.assign(extras_layout(m->codes, m->text_len, m->token_bits, m->offset_bits).total, 0);
  if (prep.compact) m->token_map = prep.distinct;
  Progress check;
  if (stop) check = [stop](const std::string&, double) { stop->check(); };
  build_into<I>(c, prep, Output{nullptr, m->text.data(), m->sa.data(), m->extras.data()}, check);
  return m;
}

}  // namespace

FileHeader build_file(const Corpus& c, const std::string& path, const Progress& progress, const Stop* stop) {
  check_corpus(c);
  remove_stale_temporaries(path);
  return wide_index(c) ? build_file_impl<uint64_t>(c, path, progress, stop)
                       : build_file_impl<uint32_t>(c, path, progress, stop);
}

int remove_stale_temporaries(const std::string& path) {
  const std::string dir = parent_dir(path);
  const auto slash = path.find_last_of('/');
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp-";
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // "<pid>-<counter>", digits only
    const std::string rest = name.substr(prefix.size());
    const auto dash = rest.find('-');
    if (dash == std::string::npos || dash == 0 || dash + 1 == rest.size() || dash > 9 ||
        rest.find_first_not_of("0123456789-") != std::string::npos || rest.find('-', dash + 1) != std::string::npos)
      continue;
    const long pid = std::stol(rest.substr(0, dash));
    if (pid <= 0 || pid == long(getpid())) continue;
    if (kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to signal)
    const std::string full = dir + "/" + name;
    const int fd = ::open(full.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st{};
    // A lock held means a live build (perhaps in another PID namespace): leave it.
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        ::unlink(full.c_str()) == 0)
      ++removed;
    ::close(fd);
  }
  closedir(d);
  return removed;
}

Segment MemSegment::view() const {
  Segment s;
  s.text = text.data();
  s.sa = sa.data();
  s.offset_bits = offset_bits;
  s.text_len = text_len;
  s.num_suffixes = num_tokens;
  s.end_marker = (uint64_t(1) << token_bits) - 1;
  s.token_map = token_map.empty() ? nullptr : token_map.data();
  s.map_entries = token_map.size();
  attach_extras(s, codes, extras.data(), token_bits);
  return s;
}

std::shared_ptr<MemSegment> build_mem_segment(const Corpus& c, const Stop* stop) {
  check_corpus(c);
  return wide_index(c) ? build_mem_impl<uint64_t>(c, stop) : build_mem_impl<uint32_t>(c, stop);
}

void unpack_documents(const Segment& s, std::vector<uint32_t>& tokens, std::vector<uint64_t>& offsets) {
  tokens.reserve(tokens.size() + s.text_len);
  for (uint64_t i = 0; i < s.text_len; ++i) {
    const uint64_t t = s.tok(i);
    if (t == s.end_marker) {
      offsets.push_back(tokens.size());
    } else {
      tokens.push_back(s.to_token(t));
    }
  }
}

// ---------------------------------------------------------------------------------------------
std::shared_ptr<Datastore> Datastore::open(const std::string& path, bool load) {
  auto d = std::make_shared<Datastore>();
  d->file_ = MappedFile::open(path, load);
  d->vocab_size_ = d->file_->header().vocab_size;
  return d;
}

std::shared_ptr<Datastore> Datastore::in_memory(const Corpus& c, const Stop* stop) {
  auto d = std::make_shared<Datastore>();
  d->mem_.push_back(build_mem_segment(c, stop));
  d->vocab_size_ = c.vocab_size;
  return d;
}

Source Datastore::source_locked() const {
  Source s;
  if (file_) s.segments.push_back(file_->segment());
  for (const auto& m : mem_) s.segments.push_back(m->view());
  return s;
}

DraftResult Datastore::draft(const uint32_t* ctx, uint64_t len, const DraftParams& p, const Stop* stop) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return ds::draft(source_locked(), ctx, len, p, &cache_, stop);
}

uint64_t Datastore::count(const uint32_t* pat, uint64_t m) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return count_pattern(source_locked(), pat, m);
}

void Datastore::longest_match(const uint32_t* ctx, uint64_t len, int64_t& m, uint64_t& count) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  ds::longest_match(source_locked(), ctx, len, m, count);
}

std::vector<std::pair<uint32_t, uint64_t>> Datastore::continuations(const uint32_t* pat, uint64_t m) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return ds::continuations(source_locked(), pat, m);
}

static std::shared_ptr<MemSegment> merge_two(const MemSegment& a, const MemSegment& b, uint64_t vocab,
                                             const Stop* stop) {
  std::vector<uint32_t> tokens;
  std::vector<uint64_t> offsets{0};
  unpack_documents(a.view(), tokens, offsets);
  unpack_documents(b.view(), tokens, offsets);
  Corpus c{tokens.data(), tokens.size(), offsets.data(), offsets.size() - 1, vocab};
  return build_mem_segment(c, stop);
}

void Datastore::add(const Corpus& c, const Stop* stop) {
  std::lock_guard<std::mutex> writer(writer_mu_);
  Corpus cc = c;
  cc.vocab_size = vocab_size_;
  auto seg = build_mem_segment(cc, stop);
  std::vector<std::shared_ptr<MemSegment>> list;
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    list = mem_;
  }
  list.push_back(seg);
  while (list.size() >= 2 && list.back()->num_tokens * 2 >= list[list.size() - 2]->num_tokens) {
    auto merged = merge_two(*list[list.size() - 2], *list.back(), vocab_size_, stop);
    list.pop_back();
    list.back() = merged;
  }
  std::unique_lock<std::shared_mutex> lk(mu_);
  mem_.swap(list);
  cache_.clear();  // counts changed; no query runs while we hold the lock
}

void Datastore::merge(const Stop* stop) {
  std::lock_guard<std::mutex> writer(writer_mu_);
  std::vector<std::shared_ptr<MemSegment>> list;
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    list = mem_;
  }
  while (list.size() >= 2) {
    auto merged = merge_two(*list[list.size() - 2], *list.back(), vocab_size_, stop);
    list.pop_back();
    list.back() = merged;
  }
  std::unique_lock<std::shared_mutex> lk(mu_);
  mem_.swap(list);
  cache_.clear();  // counts changed; no query runs while we hold the lock
}

FileHeader Datastore::save(const std::string& path, const Progress& progress, const Stop* stop) const {
  std::vector<uint32_t> tokens;
  std::vector<uint64_t> offsets{0};
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    report(progress, "collecting documents", 0.0);
    for (const Segment& s : source_locked().segments) unpack_documents(s, tokens, offsets);
  }
  Corpus c{tokens.data(), tokens.size(), offsets.data(), offsets.size() - 1, vocab_size_};
  return build_file(c, path, progress, stop);
}

uint64_t Datastore::num_tokens() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  uint64_t n = file_ ? file_->header().num_tokens : 0;
  for (const auto& m : mem_) n += m->num_tokens;
  return n;
}

uint64_t Datastore::num_docs() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  uint64_t n = file_ ? file_->header().num_docs : 0;
  for (const auto& m : mem_) n += m->num_docs;
  return n;
}

size_t Datastore::num_segments() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return (file_ ? 1 : 0) + mem_.size();
}

std::vector<int64_t> Datastore::text_slice(uint64_t seg, uint64_t begin, uint64_t end) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  const Source s = source_locked();
  if (seg >= s.segments.size()) throw std::out_of_range("segment " + std::to_string(seg) + " does not exist");
  const Segment& g = s.segments[seg];
  end = std::min(end, g.text_len);
  std::vector<int64_t> out;
  for (uint64_t i = begin; i < end; ++i) {
    const uint64_t t = g.tok(i);
    out.push_back(t == g.end_marker ? -1 : int64_t(g.to_token(t)));
  }
  return out;
}

std::vector<uint64_t> Datastore::suffix_array(uint64_t seg) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  const Source s = source_locked();
  if (seg >= s.segments.size()) throw std::out_of_range("segment " + std::to_string(seg) + " does not exist");
  const Segment& g = s.segments[seg];
  std::vector<uint64_t> out(g.num_suffixes);
  for (uint64_t k = 0; k < g.num_suffixes; ++k) out[k] = g.pos(k);
  return out;
}

// ---------------------------------------------------------------------------------------------
PromptIndex::PromptIndex(const uint32_t* tokens, uint64_t n, uint64_t vocab_size, uint64_t window, uint64_t min_sorted)
    : vocab_size_(vocab_size), min_sorted_(min_sorted) {
  window_ = std::max<uint64_t>(window, 2);
  text_.assign(2, 0);
  extend(tokens, n);
  if (n_ >= min_sorted_) rebuild(window_);
}

void PromptIndex::extend(const uint32_t* tokens, uint64_t n) {
  const uint64_t limit = vocab_size_ ? vocab_size_ : kMaxTokenId + 1;
  for (uint64_t i = 0; i < n; ++i)
    if (tokens[i] >= limit)
      throw std::invalid_argument("token " + std::to_string(i) + " has id " + std::to_string(tokens[i]) +
                                  (vocab_size_ ? ", outside the vocabulary of size " + std::to_string(vocab_size_)
                                               : ", above the largest allowed id 2^32 - 2"));
  text_.resize(n_ + n + 2);
  std::memcpy(text_.data() + n_, tokens, n * sizeof(uint32_t));
  n_ += n;
  text_[n_] = text_[n_ + 1] = 0;
}

void PromptIndex::rebuild(uint64_t window) {
  window_ = std::max<uint64_t>(window, 2);
  built_len_ = n_;
  sa_limit_ = n_ > window_ ? n_ - window_ : 0;
  sa_count_ = 0;
  sa_.assign(2, 0);
  if (sa_limit_ == 0) return;
  // Symbols: ids themselves when the id range is small enough for the sorter's buckets,
  // otherwise dense ranks (same order).
  uint32_t mx = 0;
  for (uint64_t i = 0; i < n_; ++i) mx = std::max(mx, text_[i]);
  // (The sorter works in place, so it gets a copy.)
  std::vector<uint32_t> sym(text_.begin(), text_.begin() + n_);
  uint64_t k = uint64_t(mx) + 1;
  if (k > std::max<uint64_t>(uint64_t(1) << 18, 4 * n_)) {
    std::vector<uint32_t> ranks(sym);
    std::sort(ranks.begin(), ranks.end());
    ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
    for (uint64_t i = 0; i < n_; ++i) sym[i] = uint32_t(std::lower_bound(ranks.begin(), ranks.end(), text_[i]) - ranks.begin());
    k = ranks.size();
  }
  if (n_ >= (uint64_t(1) << 31)) throw std::invalid_argument("PromptIndex holds at most 2^31 - 1 tokens");
  std::vector<uint32_t> sa(n_);
  SuffixSorter<uint32_t>::sort(sym.data(), sa.data(), uint32_t(n_), uint32_t(k));
  sa_.clear();
  sa_.reserve(sa_limit_ + 2);
  for (uint32_t p : sa)
    if (p < sa_limit_) sa_.push_back(p);
  sa_count_ = sa_.size();
  sa_.push_back(0);
  sa_.push_back(0);
}

void PromptIndex::maybe_rebuild(const DraftParams& p) {
  const uint64_t need = uint64_t(std::max<int64_t>(p.max_match, 1) + std::max<int64_t>(p.max_depth, 1));
  if (need > window_ && sa_count_) {
    rebuild(need);
    return;
  }
  window_ = std::max(window_, need);
  if (n_ >= min_sorted_ && n_ - built_len_ > std::max(min_sorted_, built_len_ / 4)) rebuild(window_);
}

Source PromptIndex::source(Tail& tail) const {
  Source src;
  if (sa_count_) {
    Segment s;
    s.text = reinterpret_cast<const uint8_t*>(text_.data());
    s.sa = reinterpret_cast<const uint8_t*>(sa_.data());
    s.code_bits = 32;
    s.offset_bits = 32;
    s.text_len = built_len_;
    s.num_suffixes = sa_count_;
    s.end_marker = 0xFFFFFFFFull;
    src.segments.push_back(s);
  }
  tail.text = text_.data();
  tail.n = n_;
  tail.start = sa_count_ ? sa_limit_ : 0;
  src.tail = &tail;
  return src;
}

DraftResult PromptIndex::draft(const DraftParams& p, const Stop* stop) {
  maybe_rebuild(p);
  Tail tail;
  const Source src = source(tail);
  const uint64_t len = std::min<uint64_t>(n_, uint64_t(std::max<int64_t>(p.max_match, 1)));
  return ds::draft(src, text_.data() + n_ - len, len, p, nullptr, stop);
}

DraftResult PromptIndex::draft_context(const uint32_t* ctx, uint64_t len, const DraftParams& p, const Stop* stop) {
  maybe_rebuild(p);
  Tail tail;
  const Source src = source(tail);
  return ds::draft(src, ctx, len, p, nullptr, stop);
}

}  // namespace verispec::ds
