#include "datastore/format.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace verispec::ds {

uint64_t fnv1a64(const void* data, uint64_t bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

namespace {
constexpr uint64_t kChunk = uint64_t(16) << 20;

inline uint64_t mix(uint64_t x) {  // a 64-bit finaliser (splitmix64)
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One lane step: a bijection of the lane for a fixed word and of the word for a fixed lane, so a
// change confined to one word always changes the result.
inline uint64_t lane_step(uint64_t h, uint64_t w) {
  h ^= w * 0x9e3779b97f4a7c15ull;
  return ((h << 31) | (h >> 33)) * 0xff51afd7ed558ccdull;
}

uint64_t chunk_hash(const uint8_t* p, uint64_t bytes, bool legacy_tail) {
  // Four independent lanes keep the multiply latency off the critical path.
  uint64_t h[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
  uint64_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] = lane_step(h[l], w);
    }
  }
  uint64_t tail = 0;
  if (legacy_tail) {
    // Versions 1-2 OR-folded the last (< 32) bytes into one word: bytes 8 apart shared bits, so
    // a change there could go unseen (found by tests/test_datastore_fuzz.py). Kept to read them.
    for (uint64_t j = 0; i + j < bytes; ++j) tail |= uint64_t(p[i + j]) << (8 * (j & 7));
  } else {
    for (int l = 0; i < bytes; i += 8, ++l) {  // whole (zero-padded) words, one per lane
      uint64_t w = 0;
      std::memcpy(&w, p + i, std::min<uint64_t>(8, bytes - i));
      h[l] = lane_step(h[l], w);
    }
  }
  return mix(h[0] ^ mix(h[1] ^ mix(h[2] ^ mix(h[3] ^ tail ^ bytes))));
}
}  // namespace

uint64_t section_checksum(const uint8_t* data, uint64_t bytes, int threads, uint32_t version) {
  const bool legacy = version < 3;
  const uint64_t nchunks = (bytes + kChunk - 1) / kChunk;
  std::vector<uint64_t> hs(nchunks);
  auto work = [&](int t, int nt) {
    for (uint64_t c = uint64_t(t); c < nchunks; c += uint64_t(nt))
      hs[c] = chunk_hash(data + c * kChunk, std::min(kChunk, bytes - c * kChunk), legacy);
  };
  if (threads > 1 && nchunks > 1) {
    std::vector<std::thread> ts;
    for (int t = 1; t < threads; ++t) ts.emplace_back(work, t, threads);
    work(0, threads);
    for (auto& t : ts) t.join();
  } else {
    work(0, 1);
  }
  uint64_t h = mix(bytes ^ 0x5851f42d4c957f2dull);
  for (uint64_t x : hs) h = mix(h ^ x);
  return h;
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~uint64_t(63); }

TextCoding coding_of(const FileHeader& h) {
  TextCoding tc;
  tc.code_bits = h.version == 1 ? h.token_bits : h.code_bits;
  if (h.version == 1) return tc;
  tc.block_shift = h.block_shift;
  tc.code_entries = h.code_entries;
  tc.exc_entries = h.exc_entries;
  tc.succ_heads = h.succ_heads;
  tc.succ_entries = h.succ_entries;
  return tc;
}

Layout layout_for(uint64_t map_entries, uint64_t text_len, unsigned token_bits, const TextCoding& codes,
                  uint64_t num_tokens, unsigned offset_bits, uint64_t num_docs) {
  Layout l{};
  l.map_offset = kHeaderBytes;
  l.map_bytes = map_entries * 4;
  l.text_offset = align64(l.map_offset + l.map_bytes);
  l.text_bytes = packed_bytes(text_len, codes.code_bits);
  l.sa_offset = align64(l.text_offset + l.text_bytes);
  l.sa_bytes = packed_bytes(num_tokens, offset_bits);
  l.docs_offset = align64(l.sa_offset + l.sa_bytes);
  l.docs_bytes = (num_docs + 1) * 8;
  l.extras_bytes = extras_layout(codes, text_len, token_bits, offset_bits).total;
  l.extras_offset = l.extras_bytes ? align64(l.docs_offset + l.docs_bytes) : 0;
  l.file_bytes = l.extras_bytes ? l.extras_offset + l.extras_bytes : l.docs_offset + l.docs_bytes;
  return l;
}

namespace {

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}

// Reads exactly `bytes` at `offset`; false on a short read (the file shrank).
bool read_fully(int fd, uint8_t* dst, uint64_t bytes, uint64_t offset) {
  while (bytes) {
    const ssize_t r = pread(fd, dst, std::min<uint64_t>(bytes, uint64_t(1) << 30), off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(std::string("read failed: ") + std::strerror(errno));
    if (r == 0) return false;
    dst += r;
    offset += uint64_t(r);
    bytes -= uint64_t(r);
  }
  return true;
}

bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, bool load) {
  // The type is checked before opening: open() on a FIFO blocks until a writer appears.
  struct stat pre{};
  if (::stat(path.c_str(), &pre) != 0) {
    const int e = errno;
    throw std::runtime_error("cannot open datastore " + path + ": " + std::strerror(e));
  }
  if (!S_ISREG(pre.st_mode))
    throw std::invalid_argument("datastore " + path + " is " + file_kind(pre.st_mode) + ", not a regular file");
  // O_NONBLOCK: should the path turn into a FIFO between stat and open, open still returns.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    const std::string msg = "cannot open datastore " + path + ": " + std::strerror(e);
    throw std::runtime_error(msg);
  }
  struct FdGuard {
    int fd;
    ~FdGuard() {
      if (fd >= 0) ::close(fd);
    }
  } guard{fd};
  struct stat st{};
  if (fstat(fd, &st) != 0) throw std::runtime_error("cannot stat " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw std::invalid_argument("datastore " + path + " is " + file_kind(st.st_mode) + ", not a regular file");
  const uint64_t size = uint64_t(st.st_size);
  const std::string where = "datastore " + path + ": ";
  FileHeader h{};
  if (size < sizeof(kMagic)) throw std::invalid_argument(where + "file too short to be a verispec datastore (" + std::to_string(size) + " bytes)");
  if (pread(fd, &h, std::min<uint64_t>(size, sizeof h), 0) < 0)
    throw std::runtime_error(where + "read failed: " + std::strerror(errno));
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
    throw std::invalid_argument(where + "not a verispec datastore (bad magic bytes)");
  if (size < kHeaderBytes) throw std::invalid_argument(where + "truncated inside the header (" + std::to_string(size) + " bytes)");
  if (h.version < 1 || h.version > kFormatVersion)
    throw std::invalid_argument(where + "format version " + std::to_string(h.version) + ", this verispec reads versions 1 to " +
                                std::to_string(kFormatVersion) + " (rebuild the datastore or upgrade verispec)");
  if (fnv1a64(&h, offsetof(FileHeader, header_checksum)) != h.header_checksum)
    throw std::invalid_argument(where + "header checksum mismatch (corrupt header)");
  // Stored values (ids, or ranks into the token map) must leave the all-ones marker free, and
  // ids are 32-bit with all-ones reserved: a larger vocab_size cannot come from a build.
  const uint64_t max_stored = h.map_entries ? h.map_entries : h.vocab_size;
  if (h.header_bytes != kHeaderBytes || h.token_bits < 1 || h.token_bits > 32 || h.offset_bits < 1 || h.offset_bits > 57 ||
      h.text_len != h.num_tokens + h.num_docs || h.num_docs == 0 || h.num_tokens == 0 || h.vocab_size == 0 ||
      h.vocab_size > (uint64_t(1) << 32) - 1 || h.num_tokens > h.text_len ||
      h.map_entries > h.vocab_size || h.map_entries > h.num_tokens || max_stored >= (uint64_t(1) << h.token_bits) ||
      (h.text_len - 1) >> h.offset_bits)
    throw std::invalid_argument(where + "inconsistent header fields (corrupt file)");
  const TextCoding tc = coding_of(h);
  // With a table: codes narrower than stored values, two codes reserved, at most one exception
  // per token. Without: codes are stored values and nothing else is set.
  const bool coded_ok = tc.code_entries ? tc.code_bits >= 2 && tc.code_bits < h.token_bits &&
                                              tc.code_entries <= (uint64_t(1) << tc.code_bits) - 2 &&
                                              tc.block_shift >= 1 && tc.block_shift <= 16 && tc.exc_entries <= h.num_tokens
                                        : tc.code_bits == h.token_bits && tc.exc_entries == 0 && tc.block_shift == 0;
  if (!coded_ok || (h.version == 1 && (h.code_bits || h.block_shift || h.code_entries || h.exc_entries ||
                                       h.extras_offset || h.extras_checksum || h.succ_heads || h.succ_entries)))
    throw std::invalid_argument(where + "inconsistent text coding fields in the header (corrupt file)");
  if (h.succ_heads > h.num_tokens || h.succ_entries > h.num_tokens || (h.succ_heads == 0 && h.succ_entries != 0))
    throw std::invalid_argument(where + "inconsistent successor list fields in the header (corrupt file)");
  const Layout l = layout_for(h.map_entries, h.text_len, h.token_bits, tc, h.num_tokens, h.offset_bits, h.num_docs);
  if (l.map_offset != h.map_offset || l.text_offset != h.text_offset || l.sa_offset != h.sa_offset ||
      l.docs_offset != h.docs_offset || l.extras_offset != h.extras_offset || l.file_bytes != h.file_bytes)
    throw std::invalid_argument(where + "section offsets do not match the header (corrupt file)");
  if (size != h.file_bytes)
    throw std::invalid_argument(where + "file is " + std::to_string(size) + " bytes but the header says " +
                                std::to_string(h.file_bytes) + (size < h.file_bytes ? " (truncated)" : " (trailing data)"));
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->header_ = h;
  f->size_ = size;
  if (load) {
    // Private memory: nothing that happens to the file later can reach the queries. The file is
    // read in full and then checked to be the one whose header was read (same size and time).
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error(where + "cannot allocate " + std::to_string(size) + " bytes to load it: " + std::strerror(errno));
    f->base_ = static_cast<const uint8_t*>(p);
    f->loaded_ = true;
    struct stat after{};
    if (!read_fully(fd, static_cast<uint8_t*>(p), size, 0) || fstat(fd, &after) != 0 || uint64_t(after.st_size) != size ||
        !same_time(after.st_mtim, st.st_mtim) || std::memcmp(p, &h, sizeof h) != 0)
      throw FileChanged(where + "the file changed while it was being loaded");
    mprotect(p, size, PROT_READ);  // read-only from here on, like a mapped file
  } else {
    void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error(where + "mmap failed: " + std::strerror(errno));
    f->base_ = static_cast<const uint8_t*>(p);
    f->fd_ = fd;
    guard.fd = -1;  // the file keeps it, for check_unchanged
    f->mtime_ = st.st_mtim;
    // The header was read before mapping: the file must still be that one before any page is read.
    f->check_unchanged();
    if (std::memcmp(p, &h, sizeof h) != 0) throw FileChanged(where + "the file changed while it was being opened");
  }
  // Queries touch a few cache lines at scattered places: read-ahead would only waste memory.
  // (no MADV_RANDOM: it also disables fault-around, making every first touch of a page its own fault)
  // O(1) structural checks that keep every later read in bounds: the text ends with a marker
  // (so scans stop), and the document table spans the text.
  const Segment s = f->segment();
  uint64_t last = 0;
  try {
    last = s.tok(h.text_len - 1);
  } catch (const CorruptError& e) {  // an exception code without its entry
    throw std::invalid_argument(where + e.what());
  }
  if (last != s.end_marker)
    throw std::invalid_argument(where + "text does not end with a document end marker (corrupt file)");
  if (f->doc_starts()[0] != 0 || f->doc_starts()[h.num_docs] != h.text_len)
    throw std::invalid_argument(where + "document table does not span the text (corrupt file)");
  return f;
}

MappedFile::~MappedFile() {
  if (populate_thread_.joinable()) populate_thread_.join();  // it reads the mapping
  if (base_) munmap(const_cast<uint8_t*>(base_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::check_unchanged() const {
  if (loaded_) return;
  struct stat st{};
  if (fstat(fd_, &st) != 0) throw FileChanged("datastore " + path_ + ": cannot stat the open file: " + std::strerror(errno));
  if (uint64_t(st.st_size) != size_ || !same_time(st.st_mtim, mtime_))
    throw FileChanged("datastore " + path_ + " was changed in place after it was opened (now " +
                      std::to_string(uint64_t(st.st_size)) + " bytes, was " + std::to_string(size_) +
                      "); its mapping is no longer safe to read. Reopen it, and replace live datastore files by "
                      "renaming a new file over them (or open with mode=\"load\")");
}

void MappedFile::populate_in_background() {
  std::lock_guard<std::mutex> lk(populate_mu_);
  if (populate_thread_.joinable()) return;
  try {
    populate_thread_ = std::thread([this] { populate(); });
  } catch (const std::system_error&) {
    // no thread to be had: pages simply fault in as queries touch them
  }
}

Segment MappedFile::segment() const {
  Segment s;
  s.text = base_ + header_.text_offset;
  s.sa = base_ + header_.sa_offset;
  s.offset_bits = header_.offset_bits;
  s.text_len = header_.text_len;
  s.num_suffixes = header_.num_tokens;
  s.end_marker = (uint64_t(1) << header_.token_bits) - 1;
  s.token_map = token_map();
  s.map_entries = header_.map_entries;
  attach_extras(s, coding_of(header_), base_ + header_.extras_offset, header_.token_bits);
  return s;
}

bool MappedFile::populate() const {
  if (loaded_) return true;
#ifdef MADV_POPULATE_READ
  if (madvise(const_cast<uint8_t*>(base_), size_, MADV_POPULATE_READ) == 0) return true;
  // EFAULT: a page lies past the end of a file that shrank; touching it would raise SIGBUS.
  if (errno != EINVAL) return false;
#endif
  // Older kernels: touch every page (after one more look at the file, the best we can do there).
  struct stat st{};
  if (fstat(fd_, &st) != 0 || uint64_t(st.st_size) != size_) return false;
  madvise(const_cast<uint8_t*>(base_), size_, MADV_WILLNEED);
  volatile uint8_t sink = 0;
  for (uint64_t off = 0; off < size_; off += 4096) sink ^= base_[off];
  (void)sink;
  return true;
}

namespace {

// The suffix array is a permutation of the token positions in increasing suffix order (markers
// are the largest symbol, all equal; the end of the text is smaller than any symbol). Checked in
// linear time as Burkhardt and Kaerkkaeinen check suffix arrays: with rank[p] = 1 + the index of
// text position p in the array (0 for markers), entries are distinct iff no rank is set twice, and
// neighbours at positions i, j are in order iff t[i] < t[j], or t[i] == t[j] and the suffix at
// i + 1 precedes the one at j + 1, which the ranks decide (skipping markers both suffixes share).
// Comparing neighbours token by token instead could cost the square of a repeated document's
// length. Extra memory: the ranks, packed like the suffix array.
template <class Tell>
void verify_suffix_array(const Segment& s, const std::string& where, const Tell& tell, StopTicker& ticker) {
  const uint64_t n = s.num_suffixes, text_len = s.text_len;
  const unsigned rank_bits = bits_for(n);
  std::vector<uint8_t> rank(packed_bytes(text_len, rank_bits), 0);
  const uint64_t step = std::max<uint64_t>(n / 100, 1 << 16);
  tell("suffix array: positions", 0.0);
  for (uint64_t k = 0; k < n; ++k) {
    ticker.tick();
    if (k % step == 0 && k) tell("suffix array: positions", double(k) / double(n));
    const uint64_t p = packed_get(s.sa, k, s.offset_bits);
    if (p >= text_len)
      throw std::invalid_argument(where + "suffix array entry " + std::to_string(k) + " points outside the text (corrupt file)");
    if (s.tok(p) == s.end_marker)
      throw std::invalid_argument(where + "suffix array entry " + std::to_string(k) + " points at a marker (corrupt file)");
    if (packed_get(rank.data(), p, rank_bits) != 0)
      throw std::invalid_argument(where + "suffix array entry " + std::to_string(k) + " repeats text position " +
                                  std::to_string(p) + " (not a permutation; corrupt file)");
    packed_put(rank.data(), p, rank_bits, k + 1);
  }
  // n distinct token positions out of the n the text holds: a permutation.
  const auto rank_of = [&](uint64_t p) { return packed_get(rank.data(), p, rank_bits); };
  // Does the suffix at p sort before the one at q (p != q, both in [0, text_len])?
  const auto before = [&](uint64_t p, uint64_t q) {
    for (;; ++p, ++q) {
      ticker.tick();
      if (p == text_len) return true;
      if (q == text_len) return false;
      const uint64_t rp = rank_of(p), rq = rank_of(q);
      if (rp && rq) return rp < rq;
      if (rp || rq) return rp != 0;  // a token sorts before a marker
    }
  };
  tell("suffix array: order", 0.0);
  for (uint64_t k = 0; k + 1 < n; ++k) {
    ticker.tick();
    if (k % step == 0 && k) tell("suffix array: order", double(k) / double(n));
    const uint64_t i = packed_get(s.sa, k, s.offset_bits), j = packed_get(s.sa, k + 1, s.offset_bits);
    const uint64_t a = s.tok(i), b = s.tok(j);
    if (a > b || (a == b && !before(i + 1, j + 1)))
      throw std::invalid_argument(where + "suffix array entries " + std::to_string(k) + " and " + std::to_string(k + 1) +
                                  " are out of order (corrupt file)");
  }
  tell("suffix array", 1.0);
}

}  // namespace

void MappedFile::verify(int threads, const std::function<void(const std::string&, double)>& progress,
                        const Stop* stop) const {
  try {
    verify_checked(threads, progress, stop);
  } catch (const CorruptError& e) {  // damage met by a read the checks had not yet ruled out
    throw std::invalid_argument("datastore " + path_ + ": " + e.what());
  }
}

void MappedFile::verify_checked(int threads, const std::function<void(const std::string&, double)>& progress,
                                const Stop* stop) const {
  check_unchanged();
  const FileHeader& h = header_;
  const std::string where = "datastore " + path_ + ": ";
  StopTicker ticker(stop);
  const auto tell = [&](const char* phase, double f) {
    ticker.check();
    if (progress) progress(phase, f);
  };
  tell("checksums", 0.0);
  const TextCoding tc = coding_of(h);
  const Layout l = layout_for(h.map_entries, h.text_len, h.token_bits, tc, h.num_tokens, h.offset_bits, h.num_docs);
  if (section_checksum(base_ + l.map_offset, l.map_bytes, threads, h.version) != h.map_checksum)
    throw std::invalid_argument(where + "token map checksum mismatch (corrupt file)");
  const uint32_t* map = token_map();
  for (uint64_t i = 0; i < h.map_entries; ++i)
    if (map[i] >= h.vocab_size || (i && map[i] <= map[i - 1]))
      throw std::invalid_argument(where + "token map is not sorted ids below vocab_size (corrupt file)");
  if (section_checksum(base_ + l.text_offset, l.text_bytes, threads, h.version) != h.text_checksum)
    throw std::invalid_argument(where + "text section checksum mismatch (corrupt file)");
  if (section_checksum(base_ + l.sa_offset, l.sa_bytes, threads, h.version) != h.sa_checksum)
    throw std::invalid_argument(where + "suffix array checksum mismatch (corrupt file)");
  if (section_checksum(base_ + l.docs_offset, l.docs_bytes, threads, h.version) != h.docs_checksum)
    throw std::invalid_argument(where + "document table checksum mismatch (corrupt file)");
  if (l.extras_bytes && section_checksum(base_ + l.extras_offset, l.extras_bytes, threads, h.version) != h.extras_checksum)
    throw std::invalid_argument(where + "extras section checksum mismatch (corrupt file)");
  const Segment s = segment();
  // Stored values must be ranks into the map (or ids below vocab_size), and never the marker.
  const uint64_t max_stored = h.map_entries ? h.map_entries : h.vocab_size;
  if (tc.code_entries) {
    for (uint64_t c = 0; c < tc.code_entries; ++c)
      if (s.code_table[c] >= max_stored || (c && s.code_table[c] <= s.code_table[c - 1]))
        throw std::invalid_argument(where + "code table is not sorted stored values (corrupt file)");
    // Exceptions: one entry per exception code, in text order, each in its block's directory range.
    const uint64_t mask = (uint64_t(1) << tc.block_shift) - 1;
    const ExtrasLayout x = extras_layout(tc, h.text_len, h.token_bits, h.offset_bits);
    if (packed_get(s.exc_dir, 0, x.dir_bits) != 0 || packed_get(s.exc_dir, x.num_blocks, x.dir_bits) != tc.exc_entries)
      throw std::invalid_argument(where + "exception directory does not span the exceptions (corrupt file)");
    uint64_t j = 0;
    for (uint64_t b = 0; b < x.num_blocks; ++b) {
      const uint64_t a = packed_get(s.exc_dir, b, x.dir_bits), e = packed_get(s.exc_dir, b + 1, x.dir_bits);
      if (a != j || e < a || e > tc.exc_entries)
        throw std::invalid_argument(where + "exception directory is damaged at block " + std::to_string(b) + " (corrupt file)");
      const uint64_t end = std::min(h.text_len, (b + 1) << tc.block_shift);
      for (uint64_t i = b << tc.block_shift; i < end; ++i) {
        if (packed_get(s.text, i, tc.code_bits) != s.exception_code) continue;
        const uint64_t v = j < e ? packed_get(s.exc, j, x.exc_bits) : 0;
        if (j >= e || (v & mask) != (i & mask) || (v >> tc.block_shift) >= max_stored)
          throw std::invalid_argument(where + "exception table does not match the text at position " + std::to_string(i) +
                                      " (corrupt file)");
        ++j;
      }
      if (j != e)
        throw std::invalid_argument(where + "exception table lists positions that are no exceptions in block " +
                                    std::to_string(b) + " (corrupt file)");
    }
  }
  tell("text", 0.0);
  const uint64_t* d = doc_starts();
  for (uint64_t i = 0; i < h.num_docs; ++i) {
    ticker.tick();
    if (d[i + 1] <= d[i] || d[i + 1] > h.text_len || s.tok(d[i + 1] - 1) != s.end_marker)  // bounds before the read
      throw std::invalid_argument(where + "document " + std::to_string(i) + " is malformed (corrupt file)");
  }
  uint64_t markers = 0;
  for (uint64_t i = 0; i < h.text_len; ++i) {
    ticker.tick();
    const uint64_t t = s.tok(i);
    markers += t == s.end_marker;
    if (t != s.end_marker && t >= max_stored)
      throw std::invalid_argument(where + "text position " + std::to_string(i) + " holds a value outside the " +
                                  (h.map_entries ? "token map" : "vocabulary") + " (corrupt file)");
  }
  if (markers != h.num_docs)
    throw std::invalid_argument(where + "text holds " + std::to_string(markers) + " document end markers for " +
                                std::to_string(h.num_docs) + " documents (corrupt file)");
  verify_suffix_array(s, where, tell, ticker);
  // Successor lists against the suffix array: inside a head's range the second tokens are sorted,
  // so runs whose first and last entries hold the listed token and which tile the range up to the
  // suffixes "a <end>" (sorted last) are exactly the listed counts.
  const std::string bad_succ = where + "successor lists do not match the suffix array";
  for (uint64_t j = 0; j < tc.succ_heads; ++j) {
    const uint64_t a = s.succ_heads[j];
    if (a >= max_stored || (j && a <= s.succ_heads[j - 1]) || s.succ_begin[j] > s.succ_begin[j + 1] ||
        (j == 0 && s.succ_begin[0] != 0) || s.succ_begin[j + 1] > tc.succ_entries)
      throw std::invalid_argument(bad_succ + " (head " + std::to_string(j) + ", corrupt file)");
    uint64_t lo = 0, hi = 0, prev_end = 0;
    const uint32_t pat = uint32_t(a);
    s.find(&pat, 1, lo, hi);
    for (uint64_t e = s.succ_begin[j]; e < s.succ_begin[j + 1]; ++e) {
      const uint64_t b = s.successor_token(e), end = s.successor_end(e);
      if (end <= prev_end || lo + end > hi || (e > s.succ_begin[j] && b <= s.successor_token(e - 1)) ||
          s.tok_at(lo + prev_end, 1) != b || s.tok_at(lo + end - 1, 1) != b)
        throw std::invalid_argument(bad_succ + " (head " + std::to_string(j) + ", entry " + std::to_string(e) +
                                    ", corrupt file)");
      prev_end = end;
    }
    if (lo + prev_end < hi && s.tok_at(lo + prev_end, 1) != s.end_marker)
      throw std::invalid_argument(bad_succ + " (head " + std::to_string(j) + " misses successors, corrupt file)");
  }
  if (tc.succ_heads && s.succ_begin[tc.succ_heads] != tc.succ_entries)
    throw std::invalid_argument(bad_succ + " (entry count, corrupt file)");
  tell("done", 1.0);
}

}  // namespace verispec::ds
