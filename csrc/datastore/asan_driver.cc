// Stand-alone driver for the datastore core, built with -fsanitize=address,undefined by
// tests/test_datastore_sanitize.py (a .cc file so the module's *.cpp glob never picks it up).
// It exercises suffix sorting, file build/open, every draft mode, online segments, the prompt
// index and damaged files, and checks results against simple brute force.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "datastore/sais.h"
#include "datastore/store.h"
#include "datastore/textcode.h"

using namespace verispec::ds;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "CHECK failed at line %d: %s\n", __LINE__, #cond); \
      std::exit(1);                                                   \
    }                                                                 \
  } while (0)

static uint64_t brute_count(const std::vector<std::vector<uint32_t>>& docs, const std::vector<uint32_t>& pat) {
  uint64_t c = 0;
  for (const auto& d : docs)
    for (size_t i = 0; i + pat.size() <= d.size(); ++i) c += std::equal(pat.begin(), pat.end(), d.begin() + i);
  return c;
}

// Sorts random texts (length 1..n_max, alphabet 1..k_max, runs of repeats mixed in so LMS
// substrings recurse) with both index widths and checks the result against direct comparisons.
static void check_suffix_sorting(std::mt19937& rng, int iterations, uint32_t n_max, uint32_t k_max) {
  for (int it = 0; it < iterations; ++it) {
    const uint32_t n = rng() % n_max + 1, k = rng() % k_max + 1;
    std::vector<uint32_t> s(n), sa(n);
    for (uint32_t i = 0; i < n; ++i) s[i] = rng() % k;
    // Copy earlier stretches forward: long repeats make the reduced problem recurse.
    for (uint32_t r = 0; n > 64 && r < 4; ++r) {
      const uint32_t len = rng() % std::min<uint32_t>(n / 4, 300), from = rng() % (n - len), to = rng() % (n - len);
      std::copy(s.begin() + from, s.begin() + from + len, s.begin() + to);
    }
    std::vector<uint64_t> s64(s.begin(), s.end()), sa64(n);
    const std::vector<uint32_t> before = s;
    SuffixSorter<uint32_t>::sort(s.data(), sa.data(), n, k);
    SuffixSorter<uint64_t>::sort(s64.data(), sa64.data(), n, k);
    CHECK(s == before);  // the sorter works in place and must restore its input
    for (uint32_t i = 0; i < n; ++i) CHECK(s64[i] == before[i]);
    auto less = [&](uint32_t a, uint32_t b) {
      return std::lexicographical_compare(s.begin() + a, s.end(), s.begin() + b, s.end());
    };
    // A permutation whose neighbours are in strictly increasing order is the suffix array.
    std::vector<uint8_t> seen(n, 0);
    for (uint32_t i = 0; i < n; ++i) {
      CHECK(sa[i] < n && !seen[sa[i]]);
      seen[sa[i]] = 1;
      CHECK(sa64[i] == sa[i]);
      if (i > 0) CHECK(less(sa[i - 1], sa[i]));
    }
  }
}

// Load mode, change detection, suffix-array damage behind valid checksums, interrupted builds and
// verification, stale temporaries (issue 15).
static void check_reliability(const std::string& dir, const std::string& path, const Corpus& c, const std::string& bytes) {
  auto mapped = Datastore::open(path);
  auto loaded = Datastore::open(path, true);
  CHECK(loaded->file()->loaded() && !mapped->file()->loaded());
  loaded->file()->verify(1);
  for (uint32_t t = 0; t < 4; ++t) {
    DraftParams p;
    const DraftResult a = mapped->draft(&t, 1, p), b = loaded->draft(&t, 1, p);
    CHECK(a.tokens == b.tokens && a.parents == b.parents);
  }
  // two suffix-array entries swapped, checksums recomputed: only the order check can see it
  FileHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  std::string bad = bytes;
  uint8_t* sa = reinterpret_cast<uint8_t*>(&bad[h.sa_offset]);
  const uint64_t a = packed_get(sa, 3, h.offset_bits), b = packed_get(sa, 9, h.offset_bits);
  for (uint64_t k : {uint64_t(3), uint64_t(9)})  // clear, then OR-write the other value
    for (unsigned bit = 0; bit < h.offset_bits; ++bit) {
      const uint64_t at = k * h.offset_bits + bit;
      sa[at >> 3] &= uint8_t(~(1u << (at & 7)));
    }
  packed_put(sa, 3, h.offset_bits, b);
  packed_put(sa, 9, h.offset_bits, a);
  h.sa_checksum = section_checksum(sa, packed_bytes(h.num_tokens, h.offset_bits));
  h.header_checksum = fnv1a64(&h, offsetof(FileHeader, header_checksum));
  std::memcpy(&bad[0], &h, sizeof h);
  const std::string swapped = dir + "/swapped.vsds";
  std::ofstream(swapped, std::ios::binary).write(bad.data(), std::streamsize(bad.size()));
  bool caught = false;
  try {
    Datastore::open(swapped)->file()->verify(1);
  } catch (const std::invalid_argument& e) {
    caught = std::strstr(e.what(), "out of order") != nullptr;
  }
  CHECK(caught);
  unlink(swapped.c_str());
  // a stop requested before the work: verify and build end at their first check, leaving nothing
  Stop stop;
  stop.request();
  int stopped = 0;
  try {
    mapped->file()->verify(1, nullptr, &stop);
  } catch (const Interrupted&) {
    ++stopped;
  }
  const std::string target = dir + "/stopped.vsds";
  try {
    build_file(c, target, nullptr, &stop);
  } catch (const Interrupted&) {
    ++stopped;
  }
  CHECK(stopped == 2 && access(target.c_str(), F_OK) != 0);
  // the temporary of a build whose process is gone is removed by the next build of that path
  const std::string stale = target + ".tmp-999999999-0";
  std::ofstream(stale) << "x";
  build_file(c, target, nullptr);
  CHECK(access(stale.c_str(), F_OK) != 0);
  unlink(target.c_str());
  // a mapped file changed in place is refused before any read; the loaded copy is unaffected
  const std::string live = dir + "/live.vsds";
  std::ofstream(live, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  auto victim = Datastore::open(live);
  CHECK(truncate(live.c_str(), 100) == 0);
  caught = false;
  try {
    victim->check_file();
  } catch (const FileChanged&) {
    caught = true;
  }
  CHECK(caught);
  unlink(live.c_str());
  uint32_t t = 1;
  CHECK(loaded->count(&t, 1) == mapped->count(&t, 1));
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/tmp";
  std::mt19937 rng(7);
  // 1. suffix sorting against std::sort, both index widths: sequential on tiny inputs, then the
  // threaded paths (forced on at any size) with 2-4 threads, with and without the pipelined scan
  // giving up its helper; inputs span many 2048-entry scan blocks so the block ring wraps.
  // 0. bit packing: every width, written by two writers split at a multiple of 8 entries
  for (unsigned bits = 1; bits <= 57; ++bits) {
    const uint64_t n = rng() % 300 + 1, mid = (n / 2) & ~uint64_t(7);
    std::vector<uint64_t> vals(n);
    for (auto& v : vals) v = ((uint64_t(rng()) << 32) | rng()) & ((uint64_t(1) << bits) - 1);
    std::vector<uint8_t> buf(packed_bytes(n, bits), 0);
    PackedWriter a(buf.data(), 0, bits), b(buf.data(), mid, bits);
    for (uint64_t i = 0; i < mid; ++i) a.put(vals[i]);
    for (uint64_t i = mid; i < n; ++i) b.put(vals[i]);
    a.finish();
    b.finish();
    for (uint64_t i = 0; i < n; ++i) CHECK(packed_get(buf.data(), i, bits) == vals[i]);
  }
  const bool sort_only = argc > 2 && std::string(argv[2]) == "sort-only";  // the ThreadSanitizer run
  const int rounds = sort_only ? 8 : 40;
  check_suffix_sorting(rng, 3000, 60, 5);
  g_sais_parallel_min = 0;
  for (unsigned threads : {2u, 3u, 4u}) {
    g_sais_max_threads = threads;
    check_suffix_sorting(rng, rounds, 40000, 6);
    check_suffix_sorting(rng, rounds, 40000, 3000);
    g_sais_force_fallback = true;
    check_suffix_sorting(rng, rounds / 4, 40000, 6);
    g_sais_force_fallback = false;
  }
  g_sais_parallel_min = uint64_t(1) << 18;
  g_sais_max_threads = 0;
  if (sort_only) {
    std::puts("suffix sorting driver: ok");
    return 0;
  }
  // 2. build a file, open it, query every mode, compare counts with brute force
  std::vector<std::vector<uint32_t>> docs(40);
  std::vector<uint32_t> flat;
  std::vector<uint64_t> offsets{0};
  for (auto& d : docs) {
    d.resize(rng() % 200);
    for (auto& t : d) t = rng() % 4;
    flat.insert(flat.end(), d.begin(), d.end());
    offsets.push_back(flat.size());
  }
  Corpus c{flat.data(), flat.size(), offsets.data(), docs.size(), 4};
  const std::string path = dir + "/asan.vsds";
  build_file(c, path, nullptr);
  for (int i = 0; i < 5; ++i) Datastore::open(path)->file()->populate_in_background();  // closed while mapping
  auto ds = Datastore::open(path);
  ds->file()->populate_in_background();
  ds->file()->verify(2);
  for (int q = 0; q < 300; ++q) {
    std::vector<uint32_t> ctx(rng() % 8 + 1);
    for (auto& t : ctx) t = rng() % 5;  // 4 is outside the vocabulary: never matches
    for (int mode = 0; mode < 3; ++mode) {
      DraftParams p;
      p.mode = DraftMode(mode);
      p.budget = rng() % 40;
      p.max_depth = rng() % 8 + 1;
      p.min_count = rng() % 3 + 1;
      p.rest_max_matches = rng() % 50 + 1;
      const DraftResult r = ds->draft(ctx.data(), ctx.size(), p);
      CHECK(r.tokens.size() <= size_t(p.budget));
      for (size_t i = 0; i < r.tokens.size(); ++i) CHECK(r.parents[i] < int32_t(i) && r.parents[i] >= -1);
    }
    const uint64_t m = rng() % ctx.size() + 1;
    std::vector<uint32_t> pat(ctx.end() - m, ctx.end());
    CHECK(ds->count(pat.data(), m) == brute_count(docs, pat));
  }
  // 2b. text codes forced narrow (many exceptions, 8-position blocks): same counts; a code section
  // damaged behind a valid checksum fails verify() and never reads out of bounds
  {
    g_force_code_bits = 2;
    g_force_block_shift = 3;
    const uint64_t old_succ = g_successor_min_count;
    g_successor_min_count = 1;  // every token gets a successor list
    const std::string cpath = dir + "/asan-coded.vsds";
    build_file(c, cpath, nullptr);
    g_force_code_bits = g_force_block_shift = 0;
    g_successor_min_count = old_succ;
    auto coded = Datastore::open(cpath);
    const FileHeader ch = coded->file()->header();
    CHECK(ch.code_bits == 2 && ch.code_entries == 2 && ch.exc_entries > 0 && ch.succ_heads == 4);
    coded->file()->verify(2);
    for (int q = 0; q < 200; ++q) {
      std::vector<uint32_t> pat(rng() % 5 + 1);
      for (auto& t : pat) t = rng() % 4;
      CHECK(coded->count(pat.data(), pat.size()) == brute_count(docs, pat));
    }
    std::string body;
    {
      std::ifstream f(cpath, std::ios::binary);
      body.assign(std::istreambuf_iterator<char>(f), {});
    }
    for (uint32_t t = 0; t < 4; ++t) {  // one-token matches: children from the successor lists
      DraftParams p;
      p.budget = 12;
      const DraftResult r = coded->draft(&t, 1, p);
      CHECK(r.match_len == 1);
      for (size_t i = 0; i < r.tokens.size(); ++i)
        if (r.parents[i] == -1) {
          const std::vector<uint32_t> pat{t, r.tokens[i]};
          CHECK(uint64_t(std::llround(double(r.scores[i]) * double(r.match_count))) == brute_count(docs, pat));
        }
    }
    const ExtrasLayout x = extras_layout(coding_of(ch), ch.text_len, ch.token_bits, ch.offset_bits);
    for (uint64_t at : {x.dir_offset + 1, x.exc_offset, x.exc_offset + x.exc_bytes / 2, uint64_t(0), x.heads_offset,
                        x.begin_offset + 8, x.stok_offset, x.send_offset + 1}) {
      std::string broken = body;
      broken[ch.extras_offset + at] = char(broken[ch.extras_offset + at] ^ 0x5a);
      FileHeader bh = ch;  // checksums made valid again, so the structural checks are what fails
      bh.extras_checksum = section_checksum(reinterpret_cast<const uint8_t*>(broken.data()) + ch.extras_offset, x.total);
      bh.header_checksum = fnv1a64(&bh, offsetof(FileHeader, header_checksum));
      std::memcpy(&broken[0], &bh, sizeof bh);
      std::ofstream(dir + "/bad-coded.vsds", std::ios::binary).write(broken.data(), std::streamsize(broken.size()));
      auto bad = Datastore::open(dir + "/bad-coded.vsds");
      bool threw = false;
      try {
        bad->file()->verify(1);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      CHECK(threw);
      for (uint32_t t = 0; t < 4; ++t) {
        try {
          DraftParams p;
          bad->draft(&t, 1, p);
        } catch (const CorruptError&) {
        }
      }
    }
    unlink(cpath.c_str());
    unlink((dir + "/bad-coded.vsds").c_str());
  }
  // 3. online segments
  for (int a = 0; a < 10; ++a) {
    std::vector<uint32_t> t(rng() % 50 + 1);
    for (auto& x : t) x = rng() % 4;
    std::vector<uint64_t> o{0, t.size()};
    ds->add(Corpus{t.data(), t.size(), o.data(), 1, 4});
    docs.push_back(t);
  }
  for (int q = 0; q < 50; ++q) {
    std::vector<uint32_t> pat(rng() % 4 + 1);
    for (auto& t : pat) t = rng() % 4;
    CHECK(ds->count(pat.data(), pat.size()) == brute_count(docs, pat));
  }
  ds->save(dir + "/asan2.vsds", nullptr);
  // 4. prompt index with growth and rebuilds
  std::vector<uint32_t> seq(300);
  for (auto& t : seq) t = rng() % 3;
  PromptIndex pi(seq.data(), 100, 3, 8, 16);
  for (size_t n = 100; n < seq.size(); n += 7) {
    pi.extend(seq.data() + n, std::min<size_t>(7, seq.size() - n));
    DraftParams p;
    p.budget = 16;
    p.max_depth = 6;
    const DraftResult r = pi.draft(p);
    for (size_t i = 0; i < r.tokens.size(); ++i) CHECK(r.parents[i] < int32_t(i));
  }
  // 5. damaged files: every open must throw, never crash
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  int rejected = 0;
  for (size_t cut : {size_t(0), size_t(7), size_t(100), bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(dir + "/bad.vsds", std::ios::binary).write(bytes.data(), std::streamsize(cut));
    try {
      Datastore::open(dir + "/bad.vsds");
    } catch (const std::exception&) {
      ++rejected;
    }
  }
  CHECK(rejected == 5);
  // suffix array overwritten with large offsets: queries must throw, not read out of bounds
  const FileHeader& h = ds->file()->header();
  std::string broken = bytes;
  std::memset(&broken[h.sa_offset], 0xff, h.docs_offset - h.sa_offset - 64);
  std::ofstream(dir + "/bad.vsds", std::ios::binary).write(broken.data(), std::streamsize(broken.size()));
  auto bad = Datastore::open(dir + "/bad.vsds");
  int threw = 0;
  for (uint32_t t = 0; t < 4; ++t) {
    try {
      DraftParams p;
      bad->draft(&t, 1, p);
    } catch (const CorruptError&) {
      ++threw;
    }
  }
  CHECK(threw > 0);
  check_reliability(dir, path, c, bytes);
  unlink(path.c_str());
  unlink((dir + "/asan2.vsds").c_str());
  unlink((dir + "/bad.vsds").c_str());
  std::puts("datastore sanitizer driver: ok");
  return 0;
}
