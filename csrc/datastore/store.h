// The datastore (a mapped base file plus in-memory segments added online) and the per-request
// prompt index. Both answer draft queries through draft.h.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "datastore/draft.h"
#include "datastore/format.h"

namespace verispec::ds {

using Progress = std::function<void(const std::string& phase, double fraction)>;

// Test hook: build with 64-bit suffix-sorting indices even for small corpora (the path corpora
// beyond 2^32 tokens take), to check that both index widths produce identical files.
extern bool g_force_wide_index;

// Documents as one flat token array plus offsets: document d is tokens[offsets[d], offsets[d+1]).
struct Corpus {
  const uint32_t* tokens = nullptr;
  uint64_t num_tokens = 0;
  const uint64_t* offsets = nullptr;
  uint64_t num_docs = 0;
  uint64_t vocab_size = 0;  // every token id must be < vocab_size
};

// Build a datastore file atomically: written to "<path>.tmp-<pid>-<n>", then renamed over path.
// On any failure (or `stop`) the temporary file is removed and nothing exists at path that was not
// there before. Temporaries of earlier builds of the same path whose process is gone (killed
// mid-build) are removed first.
FileHeader build_file(const Corpus& c, const std::string& path, const Progress& progress, const Stop* stop = nullptr);

// Removes "<path>.tmp-<pid>-<n>" files left by builds whose process no longer exists and which no
// process holds locked (a build holds its temporary locked). Returns how many it removed.
int remove_stale_temporaries(const std::string& path);

// An in-memory segment (documents added online).
struct MemSegment {
  std::vector<uint8_t> text, sa, extras;
  std::vector<uint32_t> token_map;  // empty: text stores ids
  unsigned token_bits = 0, offset_bits = 0;
  TextCoding codes;
  uint64_t text_len = 0, num_tokens = 0, num_docs = 0;
  Segment view() const;
};
// `stop`: interrupts it between the steps of the suffix sort (throws Interrupted).
std::shared_ptr<MemSegment> build_mem_segment(const Corpus& c, const Stop* stop = nullptr);

// Token ids of all documents of a segment, appended to tokens/offsets (offsets[0] preset by caller).
void unpack_documents(const Segment& s, std::vector<uint32_t>& tokens, std::vector<uint64_t>& offsets);

class Datastore {
 public:
  // load: read the file into private memory instead of mapping it (MappedFile::open).
  static std::shared_ptr<Datastore> open(const std::string& path, bool load = false);
  static std::shared_ptr<Datastore> in_memory(const Corpus& c, const Stop* stop = nullptr);

  // Throws FileChanged when the mapped file was changed in place since it was opened; the
  // bindings call it before every batch of queries.
  void check_file() const {
    if (file_) file_->check_unchanged();
  }
  DraftResult draft(const uint32_t* ctx, uint64_t len, const DraftParams& p, const Stop* stop = nullptr) const;
  uint64_t count(const uint32_t* pat, uint64_t m) const;
  void longest_match(const uint32_t* ctx, uint64_t len, int64_t& m, uint64_t& count) const;
  std::vector<std::pair<uint32_t, uint64_t>> continuations(const uint32_t* pat, uint64_t m) const;

  // Online update: the documents become a new in-memory segment, searchable on return. Small
  // segments are merged with their predecessor when they reach half its size, so a stream of
  // additions keeps O(log) segments at O(log) rebuilds per token.
  void add(const Corpus& c, const Stop* stop = nullptr);
  // Merge all in-memory segments into one.
  void merge(const Stop* stop = nullptr);
  // Write everything (base + added documents) as one file.
  FileHeader save(const std::string& path, const Progress& progress, const Stop* stop = nullptr) const;

  uint64_t vocab_size() const { return vocab_size_; }
  uint64_t num_tokens() const;
  uint64_t num_docs() const;
  size_t num_segments() const;
  std::shared_ptr<MappedFile> file() const { return file_; }
  // Token ids of text positions [begin, end) of a segment; -1 marks document ends.
  std::vector<int64_t> text_slice(uint64_t seg, uint64_t begin, uint64_t end) const;
  std::vector<uint64_t> suffix_array(uint64_t seg) const;
  DraftCache& cache() const { return cache_; }

 private:
  Source source_locked() const;
  std::shared_ptr<MappedFile> file_;
  std::vector<std::shared_ptr<MemSegment>> mem_;
  uint64_t vocab_size_ = 0;
  mutable std::shared_mutex mu_;  // queries share, add/merge swap the segment list exclusively
  mutable DraftCache cache_{4096, 256};  // trees of suffixes with >= 256 occurrences
  std::mutex writer_mu_;          // one writer at a time builds new segments outside mu_
};

// Where a context suffix occurs in a prompt index, relative to a pointer into it (speculative edits
// re-aligning the output with its original). A position is a continuation start: the index right after
// an occurrence, always < size() (an occurrence must leave a token to draft).
struct Located {
  int64_t match_len = 0;       // longest suffix of the context occurring anywhere
  std::vector<int64_t> behind;  // its positions < pointer, nearest the pointer first
  int64_t ahead_len = 0;       // longest suffix occurring at a position >= pointer (0: none >= min_match)
  std::vector<int64_t> ahead;   // its positions >= pointer, ascending
};

// Index over one growing sequence (a prompt, then the generated tokens). Suffixes whose first
// `window` tokens lie in the sorted part come from a suffix array; the newest positions are
// scanned linearly until they are many enough to be worth re-sorting.
class PromptIndex {
 public:
  PromptIndex(const uint32_t* tokens, uint64_t n, uint64_t vocab_size, uint64_t window, uint64_t min_sorted);
  void extend(const uint32_t* tokens, uint64_t n);
  DraftResult draft(const DraftParams& p, const Stop* stop = nullptr);
  DraftResult draft_context(const uint32_t* ctx, uint64_t len, const DraftParams& p, const Stop* stop = nullptr);
  // ctx[0..len): the last len context tokens. At most max_positions positions per list.
  Located locate(const uint32_t* ctx, uint64_t len, uint64_t pointer, uint64_t max_positions,
                 uint64_t min_match) const;
  uint64_t size() const { return n_; }
  uint64_t sorted_until() const { return sa_count_ ? sa_limit_ : 0; }
  const uint32_t* data() const { return text_.data(); }
  void rebuild(uint64_t window);
  uint64_t vocab_size() const { return vocab_size_; }

 private:
  Source source(Tail& tail) const;
  void maybe_rebuild(const DraftParams& p);
  // Continuation starts of every occurrence of p[0..m) that leaves a token after it.
  void occurrences(const uint32_t* p, uint64_t m, std::vector<int64_t>& out) const;
  bool occurs_with_continuation(const uint32_t* p, uint64_t m) const;
  std::vector<uint32_t> text_;  // n_ tokens + 2 zero words of padding for packed reads
  uint64_t n_ = 0;
  std::vector<uint32_t> sa_;    // suffixes starting before sa_limit_, sorted; + padding
  uint64_t sa_count_ = 0, sa_limit_ = 0, built_len_ = 0, window_ = 0;
  uint64_t vocab_size_ = 0, min_sorted_ = 0;
};

}  // namespace verispec::ds
