"""Datastore files: layout, round trips, atomic writes, and every kind of bad input or bad file.

Bad input must raise a clear exception naming the problem; it must never crash the process and
never leave a partial file behind.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from _datastore_header import fnv1a64, header, rewrite_header

from verispec._native import native
from verispec.datastore import Datastore


def random_docs(seed=0, n_docs=20, vocab=50):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randrange(0, 300))] for _ in range(n_docs)]


@pytest.fixture
def built(tmp_path):
    docs = random_docs()
    path = tmp_path / "c.vsds"
    ds = Datastore.build(docs, path, vocab_size=50, progress=False)
    return docs, path, ds


def test_header_and_layout(built):
    docs, path, ds = built
    raw = path.read_bytes()
    h = header(raw)
    assert h["magic"] == b"VSPDSTOR" and h["version"] == 3 and h["header_bytes"] == 192
    n_tokens = sum(map(len, docs))
    assert h["token_bits"] == 6  # ids 0..49 plus the all-ones end marker 63
    # uniform ids: no narrower code pays for its exceptions, so the text holds the ids themselves
    assert h["code_bits"] == 6 and h["code_entries"] == h["exc_entries"] == h["extras_offset"] == 0
    assert h["map_entries"] == 0  # all 50 ids occur: ranks would need as many bits
    assert h["offset_bits"] == (n_tokens + len(docs) - 1).bit_length()
    assert (h["vocab_size"], h["num_tokens"], h["num_docs"]) == (50, n_tokens, len(docs))
    assert h["file_bytes"] == len(raw) == os.path.getsize(path)
    assert h["header_checksum"] == fnv1a64(raw[:184])
    assert all(h[k] % 64 == 0 for k in ("map_offset", "text_offset", "sa_offset", "docs_offset"))
    info = ds.info()
    assert info["file"]["token_bits"] == 6 and info["num_tokens"] == n_tokens == len(ds)
    # document table: starts of documents in the text (one end marker after each)
    off = h["docs_offset"]
    starts = np.frombuffer(raw[off:off + 8 * (len(docs) + 1)], dtype="<u8")
    assert starts.tolist() == list(np.cumsum([0] + [len(d) + 1 for d in docs]))
    text = ds._core.text_slice(0, 0, 10**9)
    want = []
    for d in docs:
        want += d + [-1]
    assert text == want
    ds.verify()


def test_token_map_when_few_ids_are_used(tmp_path):
    rng = random.Random(9)
    ids = [0, 7, 4000, 65535, 70000, 2**31 + 5]
    docs = [[rng.choice(ids) for _ in range(rng.randrange(1, 60))] for _ in range(9)]
    path = tmp_path / "m.vsds"
    ds = Datastore.build(docs, path, vocab_size=2**32 - 1, progress=False)
    h = header(path.read_bytes())
    assert h["map_entries"] == len(set(sum(docs, []))) and h["token_bits"] == 3  # 6 ranks + marker
    raw = path.read_bytes()
    stored = np.frombuffer(raw[h["map_offset"]:h["map_offset"] + 4 * h["map_entries"]], dtype="<u4")
    assert stored.tolist() == sorted(set(sum(docs, [])))
    ds.verify()
    mem = Datastore.from_documents(docs, vocab_size=2**32 - 1)
    for _ in range(40):
        ctx = [rng.choice(ids + [12345]) for _ in range(rng.randrange(1, 5))]
        a, b = ds.draft_arrays(ctx, budget=12), mem.draft_arrays(ctx, budget=12)
        assert a.tokens.tolist() == b.tokens.tolist() and a.parents.tolist() == b.parents.tolist()
        from verispec.datastore import reference as ref
        want = ref.draft(docs, ctx, budget=12, min_count=2)
        assert a.tokens.tolist() == want[0] and a.parents.tolist() == want[1]
    # online additions with ids the file never saw
    ds.add([[12345, 7, 12345, 4000]])
    assert ds.continuations([12345]) == {7: 1, 4000: 1}
    assert ds._core.text_slice(0, 0, 3) == docs[0][:3]


def test_file_round_trip_and_determinism(built, tmp_path):
    docs, path, ds = built
    mem = Datastore.from_documents(docs, vocab_size=50)
    rng = random.Random(5)
    for _ in range(50):
        ctx = [rng.randrange(50) for _ in range(rng.randrange(1, 5))]
        a, b = ds.draft(ctx, budget=10), mem.draft(ctx, budget=10)
        assert a.tokens.tolist() == b.tokens.tolist() and a.parents.tolist() == b.parents.tolist()
    again = tmp_path / "again.vsds"
    Datastore.build(docs, again, vocab_size=50, progress=False)
    assert again.read_bytes() == path.read_bytes()
    wide = tmp_path / "wide.vsds"
    native()._datastore_force_wide_index(True)
    try:
        Datastore.build(docs, wide, vocab_size=50, progress=False)
    finally:
        native()._datastore_force_wide_index(False)
    assert wide.read_bytes() == path.read_bytes()  # 64-bit sorter path, same file


def test_save_with_added_documents(built, tmp_path):
    docs, path, ds = built
    extra = [[1, 2, 3, 4], [49, 48]]
    ds.add(extra)
    out = tmp_path / "saved.vsds"
    header = ds.save(out)
    assert header["num_docs"] == len(docs) + 2
    re = Datastore.open(out, verify=True)
    assert len(re) == len(ds) and re.num_segments == 1
    built_direct = tmp_path / "direct.vsds"
    Datastore.build(docs + extra, built_direct, vocab_size=50, progress=False)
    assert out.read_bytes() == built_direct.read_bytes()
    # saving over the file that is open (mapped) replaces it atomically; the old mapping stays valid
    ds.save(path)
    assert ds.count([1, 2, 3, 4]) >= 1 and Datastore.open(path).count([1, 2, 3, 4]) >= 1


def test_progress_reporting(tmp_path, capsys):
    seen = []
    Datastore.build(random_docs(1), tmp_path / "p.vsds", progress=lambda phase, f: seen.append(phase))
    assert "sorting suffixes" in seen and seen[-1] == "done"
    Datastore.build(random_docs(1), tmp_path / "q.vsds", progress=True)
    err = capsys.readouterr().err
    assert "sorting suffixes" in err and "bytes/token" in err


# ---------------------------------------------------------------------------------------------
# bad files


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Datastore.open(tmp_path / "nope.vsds")
    with pytest.raises(ValueError, match="not a regular file"):
        Datastore.open(tmp_path)
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"PK\x03\x04" + bytes(500))
    with pytest.raises(ValueError, match="not a verispec datastore"):
        Datastore.open(foreign)
    empty = tmp_path / "empty.vsds"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="too short"):
        Datastore.open(empty)


@pytest.mark.parametrize("keep", [8, 64, 191, 192, 300, -1])
def test_truncated_files_rejected(built, tmp_path, keep):
    _, path, _ = built
    raw = path.read_bytes()
    cut = tmp_path / "cut.vsds"
    cut.write_bytes(raw[:keep] if keep >= 0 else raw[:keep])
    with pytest.raises(ValueError, match="truncated"):
        Datastore.open(cut)


def test_trailing_data_rejected(built):
    _, path, _ = built
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ValueError, match="trailing data"):
        Datastore.open(path)


def test_wrong_version_rejected(built):
    _, path, _ = built
    for v in (0, 4, 2**32 - 1):
        rewrite_header(path, version=v)
        with pytest.raises(ValueError, match=f"format version {v}, this verispec reads versions 1 to 3"):
            Datastore.open(path)


@pytest.mark.parametrize("offset", [12, 16, 20, 24, 32, 40, 48, 56, 80, 100, 120, 150, 183])
def test_corrupt_header_rejected(built, offset):
    _, path, _ = built
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Datastore.open(path)


def test_inconsistent_header_with_valid_checksum_rejected(built):
    _, path, _ = built
    rewrite_header(path, token_bits=40)
    with pytest.raises(ValueError, match="inconsistent header"):
        Datastore.open(path)


def test_corrupt_body_detected_and_never_crashes(built):
    docs, path, _ = built
    raw = bytearray(path.read_bytes())
    h = header(raw)
    sa_off, docs_off = h["sa_offset"], h["docs_offset"]
    raw[sa_off:docs_off - 64] = b"\xff" * (docs_off - 64 - sa_off)  # offsets past the text
    path.write_bytes(bytes(raw))
    ds = Datastore.open(path)  # O(1) open does not read the body
    with pytest.raises(ValueError, match="suffix array checksum mismatch"):
        ds.verify()
    with pytest.raises(ValueError, match="checksum mismatch"):
        Datastore.open(path, verify=True)
    with pytest.raises(RuntimeError, match="points outside the text"):
        for t in range(50):
            ds.draft([t, t], budget=8)


def test_corrupt_text_detected(built):
    _, path, _ = built
    raw = bytearray(path.read_bytes())
    raw[header(raw)["text_offset"] + 40] ^= 0x01
    path.write_bytes(bytes(raw))
    ds = Datastore.open(path)
    with pytest.raises(ValueError, match="text section checksum mismatch"):
        ds.verify()
    ds.draft([1, 2, 3])  # wrong answers are possible, a crash is not


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "docs, exc, match",
    [
        ([], ValueError, "empty corpus: docs yielded no documents"),
        ([[], []], ValueError, "empty corpus: all 2 documents are empty"),
        ([[1, 2], [3, -1]], ValueError, "document 1: position 1 has negative token id -1"),
        ([[1, 2**32 - 1]], ValueError, r"document 0: position 1 has token id 4294967295 > 4294967294"),
        ([[1.0, 2.0]], TypeError, "document 0 must hold integer token ids, got dtype float64"),
        ([torch.tensor([True, False])], TypeError, "dtype torch.bool"),
        ([np.zeros((2, 2), np.int64)], ValueError, "document 0 must be 1-D"),
        (np.arange(5), TypeError, "got a single 1-D array"),
        ("hello", TypeError, "tokenize it first"),
        ([["a", "b"]], TypeError, "document 0 must hold integer token ids"),
    ],
)
def test_bad_documents(tmp_path, docs, exc, match):
    path = tmp_path / "bad.vsds"
    with pytest.raises(exc, match=match):
        Datastore.build(docs, path, progress=False)
    assert os.listdir(tmp_path) == []


def test_bad_vocab_size(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary of size 5"):
        Datastore.build([[1, 2, 5]], tmp_path / "v.vsds", vocab_size=5, progress=False)
    with pytest.raises(ValueError, match=r"vocab_size must be in \[1, 2\*\*32 - 1\]"):
        Datastore.build([[1]], tmp_path / "v.vsds", vocab_size=0, progress=False)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        Datastore.build([[1]], tmp_path / "v.vsds", vocab_size=5.0, progress=False)
    assert os.listdir(tmp_path) == []


def test_bad_contexts_and_params(built):
    _, _, ds = built
    with pytest.raises(ValueError, match="context is empty"):
        ds.draft([])
    with pytest.raises(ValueError, match="context: position 2 has negative token id -3"):
        ds.draft([1, 2, -3])
    with pytest.raises(TypeError, match="context must hold integer token ids, got a tensor of dtype torch.float32"):
        ds.draft(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="context must be 1-D"):
        ds.draft(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="context must be a 1-D sequence"):
        ds.draft(5)
    with pytest.raises(ValueError, match="context 1 is empty"):
        ds.draft_batch([[1], []])
    with pytest.raises(ValueError, match="mode must be one of"):
        ds.draft([1], mode="beam")
    with pytest.raises(ValueError, match="budget and max_depth must be >= 0"):
        ds.draft([1], budget=-1)
    with pytest.raises(ValueError, match="min_score must be in"):
        ds.draft([1], min_score=2.0)
    with pytest.raises(TypeError, match="budget must be an int"):
        ds.draft([1], budget=3.5)
    # only the last max_match tokens are read, but positions refer to the whole context
    with pytest.raises(ValueError, match="position 99 has negative"):
        ds.draft(list(range(99)) + [-1])
    with pytest.raises(ValueError, match="position 40 has negative"):
        ds.draft(torch.tensor(list(range(40)) + [-1]))
    # lists and tuples are read by the core directly
    with pytest.raises(TypeError, match="context must hold integer token ids, got float at position 1"):
        ds.draft([1, 2.0])
    with pytest.raises(TypeError, match="got bool at position 0"):
        ds.draft((True, 2))
    with pytest.raises(ValueError, match="position 1 has token id .* > 4294967294"):
        ds.draft([1, 2**70])
    with pytest.raises(ValueError, match="position 0 has negative token id"):
        ds.draft([-(2**70)])
    same = ds.draft_arrays([np.int64(3), np.uint16(4)]).tokens.tolist()
    assert same == ds.draft_arrays(np.array([3, 4])).tokens.tolist() == ds.draft_arrays(range(3, 5)).tokens.tolist()


def test_unwritable_output_leaves_nothing(tmp_path):
    docs = random_docs(2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Datastore.build(docs, tmp_path / "missing-dir" / "x.vsds", progress=False)
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        Datastore.build(docs, tmp_path / "adir", progress=False)
    tokens = np.arange(10, dtype=np.uint32)
    offsets = np.array([0, 10], dtype=np.uint64)
    with pytest.raises(ValueError, match="cannot write datastore .*No such file or directory"):
        native().build_datastore_file(tokens, offsets, 10, str(tmp_path / "missing-dir" / "y.vsds"))
    # failure after the temporary file exists (the core re-checks ids): nothing is left behind and
    # an existing file at the destination is untouched
    dest = tmp_path / "keep.vsds"
    dest.write_bytes(b"old contents")
    with pytest.raises(ValueError, match="document 0, position 9: token id 9 is outside the vocabulary of size 9"):
        native().build_datastore_file(tokens, offsets, 9, str(dest))
    assert dest.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["adir", "keep.vsds"]


def test_failing_progress_callback_leaves_nothing(tmp_path):
    def boom(phase, fraction):
        if phase == "packing suffix array":
            raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        Datastore.build(random_docs(3), tmp_path / "x.vsds", progress=boom)
    assert os.listdir(tmp_path) == []


def test_prefetch_keeps_answers(built):
    docs, path, ds = built
    before = [ds.draft_arrays([t, t + 1], budget=6).tokens.tolist() for t in range(40)]
    ds.prefetch()
    Datastore.from_documents(docs).prefetch()  # no file: nothing to do
    assert [ds.draft_arrays([t, t + 1], budget=6).tokens.tolist() for t in range(40)] == before


def test_background_prefetch_at_open(built):
    docs, path, ds = built
    want = [ds.draft_arrays([t, t + 1], budget=6).tokens.tolist() for t in range(40)]
    for _ in range(20):  # queries while pages are being mapped, and closing before it finishes
        early = Datastore.open(path, prefetch=True)
        assert early.draft_arrays([3, 4], budget=6).tokens.tolist() == want[3]
        del early
    warm = Datastore.open(path, prefetch=True)
    warm.prefetch()  # a foreground prefetch while the background one may still run
    assert [warm.draft_arrays([t, t + 1], budget=6).tokens.tolist() for t in range(40)] == want
