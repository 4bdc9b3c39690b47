// Python bindings of the datastore family (verispec._C): DatastoreCore, PromptIndexCore and
// build_datastore_file. Python (verispec/datastore.py) validates and converts inputs; arrays
// arrive as C-contiguous uint32/uint64 numpy arrays, results leave as numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>

#include "datastore/pool.h"
#include "datastore/store.h"
#include "registry.h"

namespace py = pybind11;
using namespace verispec::ds;

namespace {

using U32 = py::array_t<uint32_t, py::array::c_style>;
using U64 = py::array_t<uint64_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

// Every integer that crosses from Python goes through here: a TypeError for non-integers and a
// ValueError naming the argument and its range otherwise (pybind's own conversion would answer
// 2**63 or -1 for an unsigned parameter with an "incompatible function arguments" wall).
int64_t int_arg(py::handle o, const char* name, int64_t lo, int64_t hi) {
  if (PyBool_Check(o.ptr()) || !PyIndex_Check(o.ptr()))
    throw py::type_error(std::string(name) + " must be an int, got " + Py_TYPE(o.ptr())->tp_name);
  py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(o.ptr()));
  if (!idx) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
  if (overflow || v < lo || v > hi)
    throw py::value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "], got " + std::string(py::str(idx)));
  return int64_t(v);
}

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();

// Signals reach Python code only between bytecodes: while a long native call runs, Ctrl-C (and
// SIGTERM, which datastore/store.py turns into KeyboardInterrupt during builds) would wait for it to end.
// A PyStop polls for them from the calling thread (taking the GIL if it was released, at most
// every 20 ms); when a handler raises, the native loops stop and the exception is re-raised.
struct PyStop {
  std::unique_ptr<py::error_already_set> error;
  Stop stop{[this] {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() == 0) return false;
    error = std::make_unique<py::error_already_set>();
    return true;
  }};

  template <class F>
  auto run(F&& f) -> decltype(f(static_cast<const Stop*>(nullptr))) {
    try {
      return f(&stop);
    } catch (const Interrupted&) {
      if (error) throw py::error_already_set(*error);
      throw;
    }
  }
};

// Contexts arrive either as int64 numpy arrays (Python converted and sliced them; `offset` = index of
// element 0 in the caller's context) or as Python lists / tuples, read here directly (cheaper than
// a numpy round trip for the few tokens a query needs): only the last `keep` elements, and
// `offset` is then added to their positions. Range checks happen here, where they cost nanoseconds.
void check_id(int64_t v, int64_t pos, const std::string& what) {
  if (v < 0)
    throw std::invalid_argument(what + ": position " + std::to_string(pos) + " has negative token id " + std::to_string(v));
  if (v > int64_t(0xFFFFFFFE))
    throw std::invalid_argument(what + ": position " + std::to_string(pos) + " has token id " + std::to_string(v) +
                                " > 4294967294 (the largest storable id)");
}

std::vector<uint32_t> context_ids(py::handle obj, int64_t offset, int64_t keep, const std::string& what) {
  std::vector<uint32_t> out;
  if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) {
    const bool is_list = PyList_Check(obj.ptr());
    const Py_ssize_t n = is_list ? PyList_GET_SIZE(obj.ptr()) : PyTuple_GET_SIZE(obj.ptr());
    if (n == 0) throw std::invalid_argument(what + " is empty: drafting needs at least one token");
    const Py_ssize_t start = std::max<Py_ssize_t>(0, n - Py_ssize_t(std::max<int64_t>(keep, 1)));
    out.resize(size_t(n - start));
    for (Py_ssize_t i = start; i < n; ++i) {
      PyObject* item = is_list ? PyList_GET_ITEM(obj.ptr(), i) : PyTuple_GET_ITEM(obj.ptr(), i);
      const int64_t pos = int64_t(i) + offset;
      if (PyBool_Check(item) || !(PyLong_Check(item) || PyIndex_Check(item)))
        throw py::type_error(what + " must hold integer token ids, got " + std::string(Py_TYPE(item)->tp_name) +
                             " at position " + std::to_string(pos));
      int overflow = 0;
      int64_t v;
      if (PyLong_Check(item)) {
        v = PyLong_AsLongLongAndOverflow(item, &overflow);
      } else {  // numpy integer scalars and other __index__ types
        py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(item));
        if (!idx) throw py::error_already_set();
        v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
      }
      if (overflow)  // beyond int64: report the number itself
        throw py::value_error(what + ": position " + std::to_string(pos) +
                              (overflow < 0 ? " has negative token id " + std::string(py::str(item))
                                            : " has token id " + std::string(py::str(item)) +
                                                  " > 4294967294 (the largest storable id)"));
      check_id(v, pos, what);
      out[size_t(i - start)] = uint32_t(v);
    }
    return out;
  }
  const I64 a = py::cast<I64>(obj);
  if (a.ndim() != 1) throw std::invalid_argument(what + " must be 1-D");
  if (a.size() == 0) throw std::invalid_argument(what + " is empty: drafting needs at least one token");
  out.resize(size_t(a.size()));
  const int64_t* p = a.data();
  for (size_t i = 0; i < out.size(); ++i) {
    check_id(p[i], int64_t(i) + offset, what);
    out[i] = uint32_t(p[i]);
  }
  return out;
}

DraftParams make_params(py::handle budget, py::handle max_depth, py::handle max_match, py::handle min_count,
                        py::handle min_match, double min_score, py::handle mode, py::handle rest_max_matches,
                        py::handle backoff, double backoff_prior) {
  DraftParams p;
  p.budget = int_arg(budget, "budget", 0, kMaxBudget);
  p.max_depth = int_arg(max_depth, "max_depth", 0, kMaxDepth);
  p.max_match = int_arg(max_match, "max_match", 1, kMaxMatch);
  p.min_count = int_arg(min_count, "min_count", 1, kI64Max);
  p.min_match = int_arg(min_match, "min_match", 1, kI64Max);
  if (!(min_score >= 0.0 && min_score <= 1.0))
    throw py::value_error("min_score must be in [0, 1], got " + std::to_string(min_score));
  p.min_score = min_score;
  p.mode = DraftMode(int_arg(mode, "mode", 0, 2));
  p.rest_max_matches = int_arg(rest_max_matches, "rest_max_matches", 1, kMaxRestWork);
  if (p.mode == DraftMode::kRest && p.rest_max_matches * std::max<int64_t>(p.max_depth, 1) > kMaxRestWork)
    throw py::value_error("REST drafting reads rest_max_matches x max_depth tokens; " + std::to_string(p.rest_max_matches) +
                          " x " + std::to_string(p.max_depth) + " is above the limit of " + std::to_string(kMaxRestWork));
  p.backoff = int_arg(backoff, "backoff", 0, kI64Max);
  if (!(backoff_prior > 0) || !std::isfinite(backoff_prior))
    throw py::value_error("backoff_prior must be finite and > 0, got " + std::to_string(backoff_prior));
  p.backoff_prior = backoff_prior;
  return p;
}

py::tuple to_python(const DraftResult& r) {
  const py::ssize_t n = py::ssize_t(r.tokens.size());
  // Token ids go out as uint32 (a datastore holds ids up to 2^32 - 2); the largest one tells
  // Python whether they fit DraftTree's int32 without a scan.
  py::array_t<uint32_t> tokens(n);
  py::array_t<int32_t> parents(n);
  py::array_t<float> scores(n);
  uint32_t max_token = 0;
  if (n) {
    std::memcpy(tokens.mutable_data(), r.tokens.data(), size_t(n) * 4);
    std::memcpy(parents.mutable_data(), r.parents.data(), size_t(n) * 4);
    std::memcpy(scores.mutable_data(), r.scores.data(), size_t(n) * 4);
    for (int32_t t : r.tokens) max_token = std::max(max_token, uint32_t(t));
  }
  return py::make_tuple(tokens, parents, scores, r.match_len, r.match_count, max_token);
}

Corpus corpus_of(const U32& tokens, const U64& offsets, uint64_t vocab) {
  if (offsets.ndim() != 1 || offsets.shape(0) < 2) throw std::invalid_argument("offsets must be 1-D with >= 2 entries");
  Corpus c;
  c.tokens = tokens.data();
  c.num_tokens = uint64_t(tokens.size());
  c.offsets = offsets.data();
  c.num_docs = uint64_t(offsets.shape(0) - 1);
  c.vocab_size = vocab;
  return c;
}

Progress wrap_progress(py::object cb) {
  if (cb.is_none()) return nullptr;
  return [cb](const std::string& phase, double f) {
    py::gil_scoped_acquire gil;
    cb(phase, f);
  };
}

py::dict header_dict(const FileHeader& h) {
  py::dict d;
  d["version"] = h.version;
  d["token_bits"] = h.token_bits;
  const TextCoding tc = coding_of(h);
  d["code_bits"] = tc.code_bits;
  d["code_entries"] = tc.code_entries;
  d["exceptions"] = tc.exc_entries;
  d["successor_heads"] = tc.succ_heads;
  d["successor_entries"] = tc.succ_entries;
  d["offset_bits"] = h.offset_bits;
  d["vocab_size"] = h.vocab_size;
  d["num_tokens"] = h.num_tokens;
  d["num_docs"] = h.num_docs;
  d["text_len"] = h.text_len;
  d["file_bytes"] = h.file_bytes;
  return d;
}

void bind_datastore(py::module_& m) {
  m.def(
      "build_datastore_file",
      [](const U32& tokens, const U64& offsets, py::handle vocab, const std::string& path, py::object progress) {
        const Corpus c = corpus_of(tokens, offsets, uint64_t(int_arg(vocab, "vocab_size", 1, 0xFFFFFFFFll)));
        const Progress p = wrap_progress(progress);
        PyStop ps;
        const FileHeader h = ps.run([&](const Stop* stop) {
          py::gil_scoped_release nogil;
          return build_file(c, path, p, stop);
        });
        return header_dict(h);
      },
      py::arg("tokens"), py::arg("offsets"), py::arg("vocab_size"), py::arg("path"), py::arg("progress") = py::none(),
      "Build a datastore file from flat uint32 tokens and uint64 document offsets (atomic write).");

  py::class_<Datastore, std::shared_ptr<Datastore>>(m, "DatastoreCore")
      .def_static(
          "open",
          [](const std::string& path, bool prefetch, bool load) {
            py::gil_scoped_release nogil;
            auto d = Datastore::open(path, load);
            if (prefetch) d->file()->populate_in_background();
            return d;
          },
          py::arg("path"), py::arg("prefetch") = false, py::arg("load") = false)
      .def_static(
          "in_memory",
          [](const U32& tokens, const U64& offsets, py::handle vocab) {
            const Corpus c = corpus_of(tokens, offsets, uint64_t(int_arg(vocab, "vocab_size", 1, 0xFFFFFFFFll)));
            PyStop ps;
            return ps.run([&](const Stop* stop) {
              py::gil_scoped_release nogil;
              return Datastore::in_memory(c, stop);
            });
          },
          py::arg("tokens"), py::arg("offsets"), py::arg("vocab_size"))
      .def(
          "draft",
          [](const Datastore& d, py::object ctx, int64_t offset, const DraftParams& p) {
            const std::vector<uint32_t> ids = context_ids(ctx, offset, p.max_match, "context");
            d.check_file();
            // A single query takes microseconds: releasing the GIL would cost more than it frees.
            PyStop ps;
            return to_python(ps.run([&](const Stop* stop) { return d.draft(ids.data(), ids.size(), p, stop); }));
          })
      .def(
          "draft_batch",
          [](const Datastore& d, py::list ctxs, const std::vector<int64_t>& offsets, const DraftParams& p,
             int64_t threads, bool packed) {
            if (offsets.size() != ctxs.size()) throw std::invalid_argument("one offset per context");
            std::vector<std::vector<uint32_t>> in;
            in.reserve(ctxs.size());
            for (size_t b = 0; b < ctxs.size(); ++b)
              in.push_back(context_ids(ctxs[b], offsets[b], p.max_match, "context " + std::to_string(b)));
            std::vector<DraftResult> out(in.size());
            d.check_file();
            PyStop ps;
            ps.run([&](const Stop* stop) {
              py::gil_scoped_release nogil;
              // Each query checks first: on the calling thread that polls for Ctrl-C (every 20 ms).
              auto one = [&](size_t i) {
                stop->check();
                out[i] = d.draft(in[i].data(), in[i].size(), p, stop);
              };
              if (threads == 1) {
                for (size_t i = 0; i < in.size(); ++i) one(i);
              } else {
                ThreadPool::instance().parallel_for(in.size(), one);
              }
            });
            if (packed) {  // one ragged batch: flat tokens / parents / scores + cu_nodes [B+1]
              std::vector<int32_t> cu(out.size() + 1, 0);
              for (size_t b = 0; b < out.size(); ++b) cu[b + 1] = cu[b] + int32_t(out[b].tokens.size());
              const py::ssize_t n = cu.back();
              py::array_t<uint32_t> tokens(n);
              py::array_t<int32_t> parents(n), cu_nodes(py::ssize_t(cu.size()));
              py::array_t<float> scores(n);
              uint32_t max_token = 0;
              for (size_t b = 0; b < out.size(); ++b) {
                const size_t k = out[b].tokens.size();
                if (!k) continue;
                std::memcpy(tokens.mutable_data() + cu[b], out[b].tokens.data(), k * 4);
                std::memcpy(parents.mutable_data() + cu[b], out[b].parents.data(), k * 4);
                std::memcpy(scores.mutable_data() + cu[b], out[b].scores.data(), k * 4);
                for (int32_t t : out[b].tokens) max_token = std::max(max_token, uint32_t(t));
              }
              std::memcpy(cu_nodes.mutable_data(), cu.data(), cu.size() * 4);
              return py::object(py::make_tuple(tokens, parents, scores, cu_nodes, max_token));
            }
            py::list res;
            for (const auto& r : out) res.append(to_python(r));
            return py::object(res);
          })
      .def("count",
           [](const Datastore& d, const U32& pat) {
             d.check_file();
             return d.count(pat.data(), uint64_t(pat.size()));
           })
      .def("longest_match",
           [](const Datastore& d, py::object ctx, int64_t offset, py::handle keep_arg) {
             int64_t m;
             uint64_t c;
             const int64_t keep = int_arg(keep_arg, "max_match", 1, kMaxMatch);
             const std::vector<uint32_t> ids = context_ids(ctx, offset, keep, "context");
             d.check_file();
             d.longest_match(ids.data(), ids.size(), m, c);
             return py::make_tuple(m, c);
           })
      .def("continuations",
           [](const Datastore& d, const U32& pat) {
             py::dict out;
             d.check_file();
             for (const auto& [t, c] : d.continuations(pat.data(), uint64_t(pat.size()))) out[py::int_(t)] = c;
             return out;
           })
      .def("add",
           [](Datastore& d, const U32& tokens, const U64& offsets) {
             const Corpus c = corpus_of(tokens, offsets, d.vocab_size());
             PyStop ps;
             ps.run([&](const Stop* stop) {
               py::gil_scoped_release nogil;
               d.add(c, stop);
             });
           })
      .def("merge",
           [](Datastore& d) {
             PyStop ps;
             ps.run([&](const Stop* stop) {
               py::gil_scoped_release nogil;
               d.merge(stop);
             });
           })
      .def(
          "save",
          [](const Datastore& d, const std::string& path, py::object progress) {
            const Progress p = wrap_progress(progress);
            d.check_file();
            PyStop ps;
            const FileHeader h = ps.run([&](const Stop* stop) {
              py::gil_scoped_release nogil;
              return d.save(path, p, stop);
            });
            return header_dict(h);
          },
          py::arg("path"), py::arg("progress") = py::none())
      .def("populate",
           [](const Datastore& d) {
             d.check_file();
             bool ok = true;
             {
               py::gil_scoped_release nogil;
               if (d.file()) ok = d.file()->populate();
             }
             if (!ok) d.check_file();  // the kernel refused a page: raise if the file changed
           })
      .def(
          "verify",
          [](const Datastore& d, py::handle threads_arg, py::object progress) {
            const int threads = int(int_arg(threads_arg, "threads", 1, 256));
            if (!d.file()) return;
            const Progress p = wrap_progress(progress);
            PyStop ps;
            ps.run([&](const Stop* stop) {
              py::gil_scoped_release nogil;
              d.file()->verify(threads, p, stop);
            });
          },
          py::arg("threads"), py::arg("progress") = py::none())
      .def("info",
           [](const Datastore& d) {
             py::dict info;
             info["vocab_size"] = d.vocab_size();
             info["num_tokens"] = d.num_tokens();
             info["num_docs"] = d.num_docs();
             info["num_segments"] = d.num_segments();
             if (d.file()) {
               py::dict f = header_dict(d.file()->header());
               f["path"] = d.file()->path();
               f["loaded"] = d.file()->loaded();
               info["file"] = f;
             } else {
               info["file"] = py::none();
             }
             return info;
           })
      .def("set_cache",
           [](const Datastore& d, py::handle capacity, py::handle min_count) {
             d.cache().configure(size_t(int_arg(capacity, "capacity", 0, int64_t(1) << 32)),
                                 uint64_t(int_arg(min_count, "min_count", 1, kI64Max)));
           })
      .def("cache_info",
           [](const Datastore& d) {
             py::dict i;
             i["entries"] = d.cache().size();
             i["hits"] = d.cache().hits();
             i["misses"] = d.cache().misses();
             return i;
           })
      .def_property_readonly("vocab_size", &Datastore::vocab_size)
      .def_property_readonly("num_tokens", &Datastore::num_tokens)
      .def_property_readonly("num_docs", &Datastore::num_docs)
      .def_property_readonly("num_segments", &Datastore::num_segments)
      .def("text_slice",
           [](const Datastore& d, py::handle seg, py::handle begin, py::handle end) {
             d.check_file();
             return d.text_slice(uint64_t(int_arg(seg, "segment", 0, kI64Max)), uint64_t(int_arg(begin, "begin", 0, kI64Max)),
                                 uint64_t(int_arg(end, "end", 0, kI64Max)));
           })
      .def("suffix_array", [](const Datastore& d, py::handle seg) {
        d.check_file();
        return d.suffix_array(uint64_t(int_arg(seg, "segment", 0, kI64Max)));
      });

  py::class_<PromptIndex>(m, "PromptIndexCore")
      .def(py::init([](const U32& tokens, py::handle vocab, py::handle window, py::handle min_sorted) {
             return new PromptIndex(tokens.data(), uint64_t(tokens.size()),
                                    uint64_t(int_arg(vocab, "vocab_size", 0, 0xFFFFFFFFll)),
                                    uint64_t(int_arg(window, "window", 1, 2 * kMaxMatch + kMaxDepth)),
                                    uint64_t(int_arg(min_sorted, "min_sorted", 0, kI64Max)));
           }),
           py::arg("tokens"), py::arg("vocab_size"), py::arg("window"), py::arg("min_sorted"))
      .def("extend", [](PromptIndex& p, const U32& t) { p.extend(t.data(), uint64_t(t.size())); })
      .def("draft",
           [](PromptIndex& pi, const DraftParams& p) {
             PyStop ps;
             return to_python(ps.run([&](const Stop* stop) { return pi.draft(p, stop); }));
           })
      .def("draft_context",
           [](PromptIndex& pi, py::object ctx, int64_t offset, const DraftParams& p) {
             const std::vector<uint32_t> ids = context_ids(ctx, offset, p.max_match, "context");
             PyStop ps;
             return to_python(ps.run([&](const Stop* stop) { return pi.draft_context(ids.data(), ids.size(), p, stop); }));
           })
      .def("locate",
           [](const PromptIndex& pi, py::object ctx, int64_t offset, int64_t max_match, uint64_t pointer,
              uint64_t max_positions, uint64_t min_match) {
             if (max_match < 1) throw std::invalid_argument("max_match must be >= 1");
             const std::vector<uint32_t> ids = context_ids(ctx, offset, max_match, "context");
             Located r = pi.locate(ids.data(), ids.size(), pointer, max_positions, min_match);
             return py::make_tuple(r.match_len, r.behind, r.ahead_len, r.ahead);
           },
           py::arg("context"), py::arg("offset"), py::arg("max_match"), py::arg("pointer"), py::arg("max_positions"),
           py::arg("min_match"))
      .def("rebuild", [](PromptIndex& pi, py::handle window) {
        pi.rebuild(uint64_t(int_arg(window, "window", 1, 2 * kMaxMatch + kMaxDepth)));
      })
      .def("__len__", &PromptIndex::size)
      .def_property_readonly("sorted_until", &PromptIndex::sorted_until)
      .def_property_readonly("vocab_size", &PromptIndex::vocab_size)
      .def("tokens", [](const PromptIndex& p) {
        py::array_t<uint32_t> a(py::ssize_t(p.size()));
        if (p.size()) std::memcpy(a.mutable_data(), p.data(), p.size() * 4);
        return a;
      });

  py::class_<DraftParams>(m, "DraftParamsCore")
      .def(py::init(&make_params), py::arg("budget"), py::arg("max_depth"), py::arg("max_match"), py::arg("min_count"),
           py::arg("min_match"), py::arg("min_score"), py::arg("mode"), py::arg("rest_max_matches"), py::arg("backoff"),
           py::arg("backoff_prior"))
      .def_readonly("max_match", &DraftParams::max_match)
      .def_readonly("budget", &DraftParams::budget);

  py::register_exception<FileChanged>(m, "DatastoreChangedError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const Interrupted&) {  // a stop without a Python exception behind it (not expected)
      PyErr_SetString(PyExc_KeyboardInterrupt, "interrupted");
    }
  });
  m.def("_datastore_force_wide_index", [](bool on) { g_force_wide_index = on; });
  m.def("_datastore_successor_min_count", [](uint64_t n) {
    const uint64_t old = g_successor_min_count;
    g_successor_min_count = n;
    return old;
  });
  m.def("_datastore_force_text_codes", [](unsigned code_bits, unsigned block_shift) {
    if (block_shift > 16) throw std::invalid_argument("block_shift must be <= 16");
    g_force_code_bits = code_bits;
    g_force_block_shift = block_shift;
  });
  m.def("datastore_threads", [] { return ThreadPool::instance().workers() + 1; });
}

}  // namespace

VERISPEC_REGISTER_OPS(datastore, bind_datastore);
