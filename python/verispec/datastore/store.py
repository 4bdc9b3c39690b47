"""Suffix-array datastore and retrieval drafting (REST-style, with exact counts).

`Datastore` indexes documents of token ids in one memory-mapped file (see docs/datastore.md for
the format) and proposes draft trees: it finds the longest suffix of the context that occurs in
the corpus and grows a tree from what followed it, best-first by empirical probability.
`PromptIndex` does the same over a single growing sequence (prompt + generated tokens), for
prompt-lookup and speculative-edits drafting.

The work happens in C++ (`csrc/datastore/`); this module validates inputs, converts them to the
uint32 arrays the core reads, and wraps results as `verispec.DraftTree`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
import torch

from verispec._native import native
from verispec.tree import DraftTree

__all__ = ["Datastore", "PromptIndex", "DraftArrays", "DatastoreChangedError", "MAX_TOKEN_ID"]

try:
    #: Raised by queries on a datastore whose file was changed in place (truncated, overwritten)
    #: after it was opened. A RuntimeError; reopen the file (docs/datastore.md, "Replacing a live file").
    DatastoreChangedError: type = native().DatastoreChangedError
except ImportError:  # pragma: no cover - broken install: every native call raises anyway
    class DatastoreChangedError(RuntimeError):  # type: ignore[no-redef]
        pass

#: Largest token id a datastore can hold; 2**32 - 1 marks document ends in the file.
MAX_TOKEN_ID = 2**32 - 2

_MODES = {"tree": 0, "chain": 1, "rest": 2}

TokenIds = Union[Sequence[int], np.ndarray, torch.Tensor]
ProgressArg = Union[bool, Callable[[str, float], Any], None]


class DraftArrays(NamedTuple):
    """A draft as numpy arrays (what `draft_arrays` returns; `draft` wraps it as a DraftTree).

    tokens: uint32 ``[n]`` (ids up to 2**32 - 2); parents: int32 ``[n]`` (-1 = child of the root);
    scores: float32 ``[n]``;
    match_len: length of the context suffix the draft continues (0 = no match);
    match_count: occurrences of that suffix.
    """

    tokens: np.ndarray
    parents: np.ndarray
    scores: np.ndarray
    match_len: int
    match_count: int


# ---------------------------------------------------------------------------------------------
# input conversion


def _ids(x: Any, what: str, vocab_size: Optional[int] = None, *, offset: int = 0,
         defer_unsigned: bool = False) -> np.ndarray:
    """Token ids -> C-contiguous uint32 array, or a TypeError/ValueError naming `what`.

    `offset` is added to reported positions (used when only the tail of a context is converted).
    `defer_unsigned`: skip the range check for unsigned arrays of at most 32 bits (their values
    survive the conversion unchanged); the caller checks them all at once (`_check_range`).
    """
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{what} must hold integer token ids, got a tensor of dtype {x.dtype}")
        if x.dim() != 1:
            raise ValueError(f"{what} must be 1-D, got shape {tuple(x.shape)}")
        arr = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} must be a sequence of integer token ids: {exc}") from None
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu" and arr.ndim == 1:
            _check_big_ids(x, what, offset)  # numpy made floats or objects of ints beyond 64 bits
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if defer_unsigned and arr.dtype.kind == "u" and arr.dtype.itemsize <= 4:
        return np.ascontiguousarray(arr, dtype=np.uint32)
    if arr.size:
        if arr.dtype.kind == "i":
            lo = int(arr.min())
            if lo < 0:
                i = int(np.argmax(arr < 0))
                raise ValueError(f"{what}: position {i + offset} has negative token id {int(arr[i])}")
        limit = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
        hi = int(arr.max())
        if hi > limit:
            i = int(np.argmax(arr > limit))
            if vocab_size is None:
                raise ValueError(f"{what}: position {i + offset} has token id {int(arr[i])} > {MAX_TOKEN_ID} (the largest storable id)")
            raise ValueError(f"{what}: position {i + offset} has token id {int(arr[i])}, outside the vocabulary of size {vocab_size}")
    return np.ascontiguousarray(arr, dtype=np.uint32)


def _check_big_ids(seq: Sequence[Any], what: str, offset: int) -> None:
    """Python ints beyond int64 make numpy fall back to float64 or object arrays: report the
    first one out of range as it is (not rounded, wrapped or clamped)."""
    for i, v in enumerate(seq):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return  # the caller's dtype check reports it
        if v < 0:
            raise ValueError(f"{what}: position {i + offset} has negative token id {v}")
        if v > MAX_TOKEN_ID:
            raise ValueError(f"{what}: position {i + offset} has token id {v} > {MAX_TOKEN_ID} (the largest storable id)")


def _context(ctx: Any, keep: int) -> tuple[Any, int]:
    """(the context or its last `keep` tokens, index of that part's first token in `ctx`).

    Lists and tuples go to the core as they are (it reads only their last `keep` items); tensors
    are cut to that tail first, other inputs become int64 numpy arrays. The core range-checks the
    ids. Ids >= the datastore's vocab_size are allowed (a model's vocabulary may be larger than
    the ids its corpus used); they occur nowhere, so they simply end matches.
    """
    if type(ctx) is list or type(ctx) is tuple:
        return ctx, 0
    if isinstance(ctx, torch.Tensor):
        if ctx.dtype.is_floating_point or ctx.dtype.is_complex or ctx.dtype == torch.bool:
            raise TypeError(f"context must hold integer token ids, got a tensor of dtype {ctx.dtype}")
        if ctx.dim() != 1:
            raise ValueError(f"context must be 1-D, got shape {tuple(ctx.shape)}")
        start = max(0, ctx.shape[0] - keep)
        return ctx[start:].tolist(), start
    if not isinstance(ctx, np.ndarray):
        try:
            len(ctx)
        except TypeError:
            raise TypeError(f"context must be a 1-D sequence of token ids, got {type(ctx).__name__}") from None
        seq, ctx = ctx, np.asarray(ctx)
        if ctx.size == 0:
            return [], 0
        if ctx.dtype.kind not in "iu" and ctx.ndim == 1:
            start = max(0, ctx.shape[0] - keep)
            _check_big_ids([seq[i] for i in range(start, ctx.shape[0])], "context", start)
    if ctx.dtype.kind not in "iu":
        raise TypeError(f"context must hold integer token ids, got dtype {ctx.dtype}")
    if ctx.ndim != 1:
        raise ValueError(f"context must be 1-D, got shape {ctx.shape}")
    start = max(0, ctx.shape[0] - keep)
    tail = ctx[start:]
    if tail.dtype == np.uint64 and tail.size and int(tail.max()) > MAX_TOKEN_ID:
        i = int(np.argmax(tail > MAX_TOKEN_ID))
        raise ValueError(f"context: position {i + start} has token id {int(tail[i])} > {MAX_TOKEN_ID} "
                         "(the largest storable id)")
    return np.ascontiguousarray(tail, dtype=np.int64), start


def _params(*args: Any) -> Any:
    """Validated core arguments; cached, since drafters call with the same few settings."""
    try:
        return _params_cached(*args)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _check_params(*args)  # raises the descriptive error


def _check_params(budget: int, max_depth: int, max_match: int, min_count: int, min_match: int, min_score: float,
                  mode: str, rest_max_matches: int, backoff: int = 0, backoff_prior: float = 2.0) -> Any:
    for name, v in (("budget", budget), ("max_depth", max_depth), ("max_match", max_match),
                    ("min_count", min_count), ("min_match", min_match), ("rest_max_matches", rest_max_matches)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if budget < 0 or max_depth < 0:
        raise ValueError(f"budget and max_depth must be >= 0, got {budget} and {max_depth}")
    if max_match < 1 or min_match < 1 or min_count < 1 or rest_max_matches < 1:
        raise ValueError("max_match, min_match, min_count and rest_max_matches must be >= 1, got "
                         f"{max_match}, {min_match}, {min_count}, {rest_max_matches}")
    if not (0.0 <= float(min_score) <= 1.0):
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, np.integer)):
        raise TypeError(f"backoff must be an int, got {type(backoff).__name__}")
    if backoff < 0:
        raise ValueError(f"backoff must be an int >= 0, got {backoff!r}")
    if not float(backoff_prior) > 0:
        raise ValueError(f"backoff_prior must be > 0, got {backoff_prior}")
    # One native object per setting: crossing into C++ with it costs one argument instead of ten.
    return native().DraftParamsCore(int(budget), int(max_depth), int(max_match), int(min_count), int(min_match),
                                    float(min_score), _MODES[mode], int(rest_max_matches), int(backoff),
                                    float(backoff_prior))


_params_cached = functools.lru_cache(maxsize=256, typed=True)(_check_params)


def _tree(raw: tuple) -> DraftTree:
    if raw[5] > 2**31 - 1:
        raise ValueError(f"draft holds token id {raw[5]}, which does not fit DraftTree's int32 tokens "
                         "(use draft_arrays for ids >= 2**31)")
    # The core guarantees the DraftTree invariants (parents earlier, ids in range; tested against a
    # brute-force reference), so skip DraftTree.__init__'s re-validation on the hot path.
    tree = DraftTree.__new__(DraftTree)
    object.__setattr__(tree, "tokens", torch.from_numpy(raw[0].view(np.int32)))
    object.__setattr__(tree, "parents", torch.from_numpy(raw[1]))
    object.__setattr__(tree, "scores", torch.from_numpy(raw[2]))
    return tree


def _arrays(raw: tuple) -> DraftArrays:
    return DraftArrays(*raw[:5])


class _Reporter:
    """Progress on stderr (progress=True), a user callback, or nothing."""

    def __init__(self, progress: ProgressArg, label: str):
        self.cb = progress if callable(progress) else None
        self.show = progress is True
        self.label = label
        self.t0 = time.perf_counter()
        self.last_phase: Optional[str] = None
        self.last_print = 0.0
        self.tty = sys.stderr.isatty()
        self.open_line = False

    def __call__(self, phase: str, fraction: float) -> None:
        if self.cb is not None:
            self.cb(phase, fraction)
        if not self.show:
            return
        now = time.perf_counter()
        group = phase.split(":")[0]
        same = group == self.last_phase
        if same and fraction < 1.0 and now - self.last_print < (0.2 if self.tty else 5.0):
            return
        self.last_print = now
        line = f"[{self.label} {now - self.t0:6.1f}s] {phase}"
        if self.tty:  # one self-updating line per phase
            if self.open_line and not same:
                sys.stderr.write("\n")
            sys.stderr.write("\r\033[K" + line)
            self.open_line = fraction < 1.0
            if not self.open_line:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        self.last_phase = group
        sys.stderr.flush()


def _collect(docs: Iterable[TokenIds], vocab_size: Optional[int], report: _Reporter) -> tuple[np.ndarray, np.ndarray, int]:
    if isinstance(docs, (np.ndarray, torch.Tensor)) and docs.ndim == 1:
        raise TypeError("docs must be an iterable of documents (sequences of token ids), got a single 1-D array; "
                        "wrap it in a list for a one-document corpus")
    if isinstance(docs, (str, bytes)):
        raise TypeError("docs must be an iterable of token-id sequences, got text; tokenize it first")
    arrays: list[np.ndarray] = []
    lengths: list[int] = []
    total = 0
    t_last = time.perf_counter()
    for d, doc in enumerate(docs):
        arr = _ids(doc, f"document {d}", vocab_size, defer_unsigned=True)
        arrays.append(arr)
        lengths.append(arr.size)
        total += arr.size
        if report.show or report.cb:
            now = time.perf_counter()
            if now - t_last > 0.5:
                t_last = now
                report(f"reading documents: {d + 1:,} documents, {total:,} tokens", 0.0)
    if not arrays:
        raise ValueError("empty corpus: docs yielded no documents")
    if total == 0:
        raise ValueError(f"empty corpus: all {len(arrays)} documents are empty")
    tokens = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(np.asarray(lengths, dtype=np.uint64), out=offsets[1:])
    # One pass over all tokens instead of one per document (unsigned documents were deferred).
    limit = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
    if int(tokens.max()) > limit:
        i = int(np.argmax(tokens > limit))
        d = int(np.searchsorted(offsets, i, side="right")) - 1
        _ids(tokens[offsets[d]:offsets[d + 1]], f"document {d}", vocab_size)  # raises with the position
    vocab = int(vocab_size) if vocab_size is not None else int(tokens.max()) + 1
    report(f"read {len(arrays):,} documents, {total:,} tokens (vocab_size {vocab:,})", 1.0)
    return np.ascontiguousarray(tokens, dtype=np.uint32), offsets, vocab


def _check_vocab(vocab_size: Optional[int]) -> None:
    if vocab_size is None:
        return
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size must be an int or None, got {type(vocab_size).__name__}")
    if not (1 <= vocab_size <= MAX_TOKEN_ID + 1):
        raise ValueError(f"vocab_size must be in [1, 2**32 - 1], got {vocab_size}")


def _check_out_path(path: str) -> str:
    path = os.fspath(path)
    if not path:
        raise ValueError("output path is empty")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write datastore {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write datastore {path}: it is a directory")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        # the atomic rename would silently replace a FIFO, socket or device node
        raise ValueError(f"cannot write datastore {path}: it exists and is not a regular file")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write datastore {path}: directory {parent} is not writable")
    return path


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While a file is being written: SIGTERM stops the build the way Ctrl-C does (the native
    loops notice it, the temporary file is removed), then the process ends by SIGTERM as it would
    have without us. Only a default SIGTERM disposition, and only on the main thread (where Python
    runs signal handlers), is taken over; an application's own handler is left alone."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    class _Terminated(KeyboardInterrupt):
        pass

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise  # only if SIGTERM is blocked in this thread
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_OPEN_MODES = ("mmap", "load")


# ---------------------------------------------------------------------------------------------


class Datastore:
    """A suffix-array index over documents of token ids, answering draft queries.

    Create with `Datastore.build` (writes a file and opens it), `Datastore.open` (memory-maps an
    existing file in O(1)), or `Datastore.from_documents` (in memory only). Queries are thread-safe;
    `add` may run concurrently with queries.

    Example::

        ds = Datastore.build([[1, 2, 3, 1, 2, 4]], "tiny.vsds", progress=False)
        ds.draft([7, 1, 2], budget=4)
        # [1, 2] occurs twice, followed once by 3 (then 1, 2) and once by 4 (then the document ends):
        # DraftTree(tokens=[3, 4, 1, 2], parents=[-1, -1, 0, 2]), scores all 0.5
    """

    def __init__(self, core: Any, path: Optional[str] = None):
        self._core = core
        self._path = path

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Iterable[TokenIds], path: Union[str, os.PathLike], vocab_size: Optional[int] = None,
              progress: ProgressArg = True) -> Datastore:
        """Index `docs` into a new datastore file at `path` and open it.

        Parameters
        ----------
        docs : iterable of documents; each a list / tuple / 1-D integer numpy array / 1-D integer
            torch tensor of token ids, shape ``[len_d]``. Continuations never cross documents.
        path : output file; written atomically (temporary file + rename), never half-written.
        vocab_size : ids must be ``< vocab_size`` (<= 2**32 - 1). None: ``max id + 1``.
        progress : True prints phases to stderr; a callable receives ``(phase: str, fraction: float)``.
        """
        _check_vocab(vocab_size)
        path = _check_out_path(path)
        report = _Reporter(progress, "datastore build")
        tokens, offsets, vocab = _collect(docs, vocab_size, report)
        t0 = time.perf_counter()
        with _terminate_cleanly():
            info = native().build_datastore_file(tokens, offsets, vocab, path,
                                                 report if (report.show or report.cb) else None)
        if report.show:
            secs = time.perf_counter() - t0
            report(f"wrote {path}: {info['num_tokens']:,} tokens, {info['file_bytes'] / info['num_tokens']:.2f} "
                   f"bytes/token, index built in {secs:.2f} s", 1.0)
        return cls.open(path)

    @classmethod
    def open(cls, path: Union[str, os.PathLike], verify: bool = False, prefetch: bool = False,
             mode: str = "mmap") -> Datastore:
        """Open an existing datastore file.

        `mode="mmap"` (default) memory-maps it in O(1) (only the header is read and checked); pages
        are shared by every process mapping the file. Such a file must never be changed in place
        while open (replace it by renaming a new file over it): every query first checks that its
        size and modification time are unchanged and raises `DatastoreChangedError` otherwise,
        but a change in the middle of a query cannot be caught and kills the process (SIGBUS).
        `mode="load"` reads the whole file into private memory instead (O(file) time and memory):
        nothing done to the file afterwards can affect the datastore.
        `verify=True` also runs `verify()` (O(corpus)).
        `prefetch=True` (mmap mode) maps every page on a background thread (as `prefetch()`,
        without waiting: about 20 ms for a 300 MB file here), so early queries do not pay page
        faults; use it when the file fits in memory and queries start right away.
        Raises FileNotFoundError, or ValueError naming the problem for truncated, corrupt, foreign
        or wrong-version files and for paths that are not regular files (FIFOs are not opened).
        """
        path = os.fspath(path)
        if mode not in _OPEN_MODES:
            raise ValueError(f"mode must be one of {_OPEN_MODES}, got {mode!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"datastore {path} does not exist")
        ds = cls(native().DatastoreCore.open(path, bool(prefetch) and mode == "mmap", mode == "load"), path)
        if verify:
            ds.verify()
        return ds

    @classmethod
    def from_documents(cls, docs: Iterable[TokenIds], vocab_size: Optional[int] = None) -> Datastore:
        """An in-memory datastore (no file); `save` writes one."""
        _check_vocab(vocab_size)
        tokens, offsets, vocab = _collect(docs, vocab_size, _Reporter(False, ""))
        return cls(native().DatastoreCore.in_memory(tokens, offsets, vocab))

    # -- updates ----------------------------------------------------------------------------------
    def add(self, docs: Iterable[TokenIds]) -> None:
        """Add documents online (e.g. generated outputs). They are searchable when this returns.

        Added documents live in memory segments (merged as they grow; `merge()` forces one); the
        file is untouched until `save`.
        """
        tokens, offsets, _ = _collect(docs, self.vocab_size, _Reporter(False, ""))
        self._core.add(tokens, offsets)

    def merge(self) -> None:
        """Merge all in-memory segments into one (queries touch one range per segment)."""
        self._core.merge()

    def save(self, path: Union[str, os.PathLike], progress: ProgressArg = False) -> dict:
        """Write the whole datastore (file + added documents) as one file; returns its header fields."""
        path = _check_out_path(path)
        report = _Reporter(progress, "datastore save")
        with _terminate_cleanly():
            return self._core.save(path, report if (report.show or report.cb) else None)

    def prefetch(self) -> None:
        """Map every page of the file now (O(file size), GIL released), so the first queries do
        not pay page faults. Opening stays O(1); `open(path, prefetch=True)` does this on a
        background thread, for a warm index without delaying start-up."""
        self._core.populate()

    def set_cache(self, capacity: int = 4096, min_count: int = 256) -> None:
        """Memoise trees grown from suffixes with >= `min_count` occurrences (`capacity` 0: off).

        A draft depends only on the matched suffix and the parameters, so the cache is exact; it
        removes most of the latency tail, which comes from short, frequent suffixes (bushy trees)
        that recur all the time. On by default (4096 trees, cleared by `add`/`merge`).
        """
        self._core.set_cache(capacity, min_count)  # type and range checked there

    def cache_info(self) -> dict:
        """{"entries", "hits", "misses"} of the tree cache."""
        return dict(self._core.cache_info())

    def verify(self, threads: int = 2, progress: ProgressArg = False) -> None:
        """Check the file: section checksums, header, document table, text values, and that the
        suffix array is a permutation of the token positions in suffix order (every neighbouring
        pair compared; linear time, extra memory about the size of the suffix array section).
        ValueError naming the first problem when corrupt. `threads` (1..256) hash the sections;
        `progress` as in `build`. Ctrl-C interrupts it."""
        report = _Reporter(progress, "datastore verify")
        self._core.verify(threads, report if (report.show or report.cb) else None)

    # -- queries ----------------------------------------------------------------------------------
    def draft_arrays(self, context: TokenIds, *, budget: int = 32, max_depth: int = 12, max_match: int = 16,
                     min_count: int = 2, min_match: int = 1, min_score: float = 0.0, mode: str = "tree",
                     rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0) -> DraftArrays:
        """`draft` as numpy arrays plus the match length and count (no torch objects)."""
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        return _arrays(self._core.draft(*_context(context, p.max_match), p))

    def draft(self, context: TokenIds, *, budget: int = 32, max_depth: int = 12, max_match: int = 16,
              min_count: int = 2, min_match: int = 1, min_score: float = 0.0, mode: str = "tree",
              rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0) -> DraftTree:
        """Draft tree continuing `context`.

        Parameters
        ----------
        context : token ids, shape ``[L]`` (L >= 1; only the last `max_match` are read).
        budget : maximum number of nodes. max_depth : maximum depth (children of the root: 1).
        max_match : longest context suffix looked up.
        min_count, min_match : fallback rule. If the longest matching suffix occurs fewer than
            `min_count` times, use the longest shorter suffix occurring >= `min_count` times,
            provided it is >= `min_match` tokens; no suffix shorter than `min_match` is ever used.
            The default 2 avoids spending the budget on one long match seen once when a slightly
            shorter context has real statistics (on the stdlib replay: +0.04 tokens/step at the
            same draft size; bench/results/datastore_cpu.md).
        min_score : never propose a node whose score (probability estimate) is below this.
        mode : "tree" (best-first), "chain" (most frequent path), "rest" (REST's rule: first span
            16..min_match that occurs, first `rest_max_matches` matches in suffix-array order,
            continuations of max_depth tokens, the `budget` most frequent prefixes).
        backoff, backoff_prior : tree mode only. With ``backoff=K > 0`` the tree also draws on the
            longest shorter suffix u' that occurs >= K times as often as the match u, ranking nodes
            by ``w p(x|u) + (1 - w) p(x|u')`` with ``w = count(u) / (count(u) + backoff_prior)``
            (scores are then that mixture). Off by default: on the stdlib replay it adds about 2%
            tokens/step at the same budget but costs ~3x the query time (bench/results/datastore_cpu.md).

        Returns
        -------
        DraftTree with ``tokens`` int32 ``[n]``, ``parents`` int32 ``[n]`` (-1 = child of the last
        context token), ``scores`` float32 ``[n]`` = count(matched suffix + path) / count(matched suffix).
        """
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        return _tree(self._core.draft(*_context(context, p.max_match), p))

    def draft_batch(self, contexts: Sequence[TokenIds], *, budget: int = 32, max_depth: int = 12, max_match: int = 16,
                    min_count: int = 2, min_match: int = 1, min_score: float = 0.0, mode: str = "tree",
                    rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0,
                    threads: Optional[int] = None) -> list[DraftTree]:
        """`draft` for many contexts on the core's thread pool, GIL released; identical results.

        `threads=1` runs sequentially on the calling thread.
        """
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        conv = [_context(c, p.max_match) for c in contexts]
        raws = self._core.draft_batch([c[0] for c in conv], [c[1] for c in conv], p, 1 if threads == 1 else 0,
                                      False)
        return [_tree(r) for r in raws]

    def draft_batch_packed(self, contexts: Sequence[TokenIds], *, budget: int = 32, max_depth: int = 12,
                           max_match: int = 16, min_count: int = 2, min_match: int = 1, min_score: float = 0.0,
                           mode: str = "tree", rest_max_matches: int = 5000, backoff: int = 0,
                           backoff_prior: float = 2.0, threads: Optional[int] = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`draft_batch` in the flat ragged form of `verispec.pack_trees`, without per-tree objects.

        Returns ``(tokens, parents, cu_nodes, scores)``: int32 ``[N]``, int32 ``[N]`` (request-local,
        -1 = child of that request's root), int32 ``[B+1]``, float32 ``[N]`` (CPU tensors).
        Identical to ``pack_trees(draft_batch(...))`` plus the concatenated scores.
        """
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        conv = [_context(c, p.max_match) for c in contexts]
        if not conv:
            raise ValueError("draft_batch_packed: empty batch (no contexts)")
        toks, pars, scores, cu, max_token = self._core.draft_batch(
            [c[0] for c in conv], [c[1] for c in conv], p, 1 if threads == 1 else 0, True)
        if max_token > 2**31 - 1:
            raise ValueError(f"draft holds token id {max_token}, which does not fit int32 tokens")
        return (torch.from_numpy(toks.view(np.int32)), torch.from_numpy(pars), torch.from_numpy(cu),
                torch.from_numpy(scores))

    def count(self, pattern: TokenIds) -> int:
        """Exact number of occurrences of a token sequence (within documents)."""
        pat = _ids(pattern, "pattern")
        return int(self._core.count(pat)) if pat.size else 0

    def longest_match(self, context: TokenIds, max_match: int = 16) -> tuple[int, int]:
        """(length, occurrences) of the longest context suffix (<= max_match) found in the corpus."""
        return tuple(self._core.longest_match(*_context(context, max_match), max_match))  # type: ignore[return-value]

    def continuations(self, pattern: TokenIds) -> dict[int, int]:
        """Next-token counts after `pattern`: {token: count} (document ends are not counted)."""
        pat = _ids(pattern, "pattern")
        return dict(self._core.continuations(pat)) if pat.size else {}

    # -- facts ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._core.num_tokens)

    @property
    def num_docs(self) -> int:
        return int(self._core.num_docs)

    @property
    def vocab_size(self) -> int:
        return int(self._core.vocab_size)

    @property
    def num_segments(self) -> int:
        return int(self._core.num_segments)

    @property
    def path(self) -> Optional[str]:
        return self._path

    def info(self) -> dict:
        """Sizes, file header fields (token/offset bits, bytes) and segment count."""
        return dict(self._core.info())

    def __repr__(self) -> str:
        where = self._path or "in memory"
        return f"Datastore({where}: {len(self):,} tokens, {self.num_docs:,} docs, vocab {self.vocab_size:,})"


class PromptIndex:
    """Per-request index over one growing token sequence (prompt, then generated tokens).

    Building is a suffix sort of the prompt (well under 1 ms for 10k tokens); `extend` appends in
    O(new tokens); the newest positions are scanned linearly and re-sorted in bulk once they pass
    a quarter of the sorted part. `draft` continues the sequence's own end: matches are earlier
    occurrences of its suffix (the trivial one at the end never counts). Not thread-safe: one
    request, one index.

    Parameters
    ----------
    tokens : initial token ids, shape ``[n]`` (may be empty).
    vocab_size : optional bound checked on every token.
    window : suffixes are compared on at most this many tokens; raised automatically when a query
        needs ``max_match + max_depth`` more.
    min_sorted : sequences shorter than this are only scanned, never sorted.
    """

    def __init__(self, tokens: TokenIds = (), vocab_size: Optional[int] = None, *, window: int = 64,
                 min_sorted: int = 256):
        _check_vocab(vocab_size)
        arr = _ids(tokens, "PromptIndex tokens", vocab_size) if len(tokens) else np.zeros(0, np.uint32)
        self._vocab = vocab_size
        self._core = native().PromptIndexCore(arr, vocab_size or 0, window, min_sorted)  # range-checked there

    def extend(self, tokens: TokenIds) -> None:
        """Append token ids (shape ``[k]``)."""
        if isinstance(tokens, (int, np.integer)):
            tokens = [int(tokens)]
        if len(tokens):
            self._core.extend(_ids(tokens, "PromptIndex.extend tokens", self._vocab, offset=len(self)))

    def draft_arrays(self, *, budget: int = 16, max_depth: int = 8, max_match: int = 16, min_count: int = 1,
                     min_match: int = 1, min_score: float = 0.0, mode: str = "tree",
                     rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0) -> DraftArrays:
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        return _arrays(self._core.draft(p))

    def draft(self, *, budget: int = 16, max_depth: int = 8, max_match: int = 16, min_count: int = 1,
              min_match: int = 1, min_score: float = 0.0, mode: str = "tree", rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0) -> DraftTree:
        """Draft tree continuing the indexed sequence; same rule and output as `Datastore.draft`."""
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        return _tree(self._core.draft(p))

    def draft_context(self, context: TokenIds, *, budget: int = 16, max_depth: int = 8, max_match: int = 16,
                      min_count: int = 1, min_match: int = 1, min_score: float = 0.0, mode: str = "tree",
                      rest_max_matches: int = 5000, backoff: int = 0, backoff_prior: float = 2.0) -> DraftTree:
        """Draft continuing an arbitrary `context` from the occurrences in this sequence."""
        p = _params(budget, max_depth, max_match, min_count, min_match, min_score, mode, rest_max_matches, backoff,
                    backoff_prior)
        return _tree(self._core.draft_context(*_context(context, p.max_match), p))

    def tokens(self) -> np.ndarray:
        """The indexed sequence, uint32 ``[len]`` (a copy)."""
        return self._core.tokens()

    @property
    def sorted_until(self) -> int:
        """Positions before this are served by the suffix array, the rest by the linear scan."""
        return int(self._core.sorted_until)

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return f"PromptIndex({len(self)} tokens, sorted until {self.sorted_until})"
