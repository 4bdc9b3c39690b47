// The datastore file (little-endian), documented in docs/datastore.md:
//   [0, 192)           header (FileHeader), ending in an FNV-1a 64 checksum of its first 184 bytes
//   [map_offset, ..)   token map: map_entries sorted uint32 token ids (the distinct ids of the
//                      corpus), present only when storing ranks into it takes fewer bits than
//                      storing ids (map_entries == 0: tokens are stored as themselves)
//   [text_offset, ..)  text: text_len packed code_bits-wide codes; each document is followed by
//                      an end marker (textcode.h: without a code table the codes are the stored
//                      values and the marker has all token_bits set)
//   [sa_offset, ..)    suffix array: num_tokens packed offset_bits-wide text positions, the
//                      suffixes starting at tokens (never at markers) in lexicographic order
//   [docs_offset, ..)  num_docs + 1 uint64 text positions where documents start (last = text_len)
//   [extras_offset, ..) (version >= 2, only with text codes or successor lists) code table,
//                      exception directory, exceptions, successor lists (textcode.h)
// Sections start at 64-byte boundaries; packed sections carry 8 bytes of padding.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <string>

#include "datastore/segment.h"
#include "datastore/stop.h"
#include "datastore/textcode.h"

namespace verispec::ds {

constexpr char kMagic[8] = {'V', 'S', 'P', 'D', 'S', 'T', 'O', 'R'};
// Written: 3. Still read: 2 (the same layout, checksums that could miss some changes in the last
// bytes of a section) and 1 (no text codes).
constexpr uint32_t kFormatVersion = 3;
constexpr uint32_t kHeaderBytes = 192;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint32_t token_bits;
  uint32_t offset_bits;
  uint64_t vocab_size;
  uint64_t num_tokens;
  uint64_t num_docs;
  uint64_t text_len;
  uint64_t map_entries;
  uint64_t map_offset;
  uint64_t text_offset;
  uint64_t sa_offset;
  uint64_t docs_offset;
  uint64_t file_bytes;
  uint64_t map_checksum;
  uint64_t text_checksum;
  uint64_t sa_checksum;
  uint64_t docs_checksum;
  // Version 2 (zero in version 1 files, where they were reserved).
  uint32_t code_bits;
  uint32_t block_shift;
  uint64_t code_entries;
  uint64_t exc_entries;
  uint64_t extras_offset;
  uint64_t extras_checksum;
  uint32_t succ_heads;    // successor lists (textcode.h)
  uint32_t succ_entries;
  uint64_t header_checksum;
};
static_assert(sizeof(FileHeader) == kHeaderBytes, "header layout");

uint64_t fnv1a64(const void* data, uint64_t bytes);
// Checksum of a section: 16 MiB chunks hashed independently (so verification can use threads),
// folded in order. `version`: the file's format version (below 3: the old, weaker chunk tails).
uint64_t section_checksum(const uint8_t* data, uint64_t bytes, int threads = 1, uint32_t version = kFormatVersion);

struct Layout {
  uint64_t map_offset, map_bytes, text_offset, text_bytes, sa_offset, sa_bytes, docs_offset, docs_bytes,
      extras_offset, extras_bytes, file_bytes;
};
Layout layout_for(uint64_t map_entries, uint64_t text_len, unsigned token_bits, const TextCoding& codes,
                  uint64_t num_tokens, unsigned offset_bits, uint64_t num_docs);
// The text coding a header describes (version 1: direct).
TextCoding coding_of(const FileHeader& h);

// The file a mapped datastore reads was changed in place (truncated, rewritten) after it was
// opened: reading it could kill the process with SIGBUS, and its data no longer matches the header.
struct FileChanged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A datastore file mapped read-only (or, with load = true, read into private memory). Opening
// reads and checks the header only, so mapping costs the same for any corpus size; pages come in
// on demand and are shared by every process mapping it. A mapping breaks when the file is changed
// in place, so check_unchanged() runs before every batch of queries (docs/datastore.md, "Replacing
// a live file").
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path, bool load = false);
  const FileHeader& header() const { return header_; }
  Segment segment() const;
  const uint64_t* doc_starts() const { return reinterpret_cast<const uint64_t*>(base_ + header_.docs_offset); }
  const uint32_t* token_map() const {
    return header_.map_entries ? reinterpret_cast<const uint32_t*>(base_ + header_.map_offset) : nullptr;
  }
  const uint8_t* base() const { return base_; }
  const std::string& path() const { return path_; }
  bool loaded() const { return loaded_; }
  // Throws FileChanged when the mapped file's size or modification time differ from when it was
  // opened (one fstat; nothing to check for a loaded file).
  void check_unchanged() const;
  // Full check: section checksums, document table, the suffix array (a permutation of the token
  // positions, in suffix order), successor lists. O(corpus) time; extra memory one packed array
  // the size of the suffix array. `progress` hears (phase, fraction); `stop` interrupts it.
  void verify(int threads, const std::function<void(const std::string&, double)>& progress = nullptr,
              const Stop* stop = nullptr) const;
  // Map every page now (MADV_POPULATE_READ, or touching each page on older kernels), so first
  // queries do not pay page faults. O(file); optional. False when the kernel reported that the
  // file shrank under the mapping (no page is touched then).
  bool populate() const;
  // The same on a background thread (queries may run meanwhile); the destructor waits for it.
  // A second call while one runs does nothing.
  void populate_in_background();
  ~MappedFile();

 private:
  MappedFile() = default;
  void verify_checked(int threads, const std::function<void(const std::string&, double)>& progress,
                      const Stop* stop) const;
  std::string path_;
  FileHeader header_{};
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool loaded_ = false;
  int fd_ = -1;  // kept open (mapped files only) for check_unchanged
  struct timespec mtime_{};
  std::mutex populate_mu_;
  std::thread populate_thread_;
};

}  // namespace verispec::ds
