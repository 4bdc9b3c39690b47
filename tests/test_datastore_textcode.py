"""Text codes (csrc/datastore/textcode.h): frequent tokens in narrow codes, the rest as exceptions
listed per block. Whatever the coding, the stored text, the suffix array, counts and drafts must be
exactly those of the plain text; a damaged code section must be reported, never crash; version 1
files (no codes) still open.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import pytest
from _datastore_header import header, reseal, rewrite_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verispec._native import native
from verispec.datastore import Datastore
from verispec.datastore import reference as ref

SETTINGS = settings(max_examples=int(os.environ.get("VERISPEC_DS_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def forced_codes(code_bits: int, block_shift: int):
    native()._datastore_force_text_codes(code_bits, block_shift)
    try:
        yield
    finally:
        native()._datastore_force_text_codes(0, 0)


def zipf_docs(seed=0, n_docs=40, vocab=4000, mean_len=2000, skew=1.5):
    """Token frequencies falling off like real text's, so a narrow code covers most positions."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** skew
    p /= p.sum()
    perm = rng.permutation(vocab)  # frequent ids spread over the id range
    return [perm[rng.choice(vocab, size=int(rng.integers(1, 2 * mean_len)), p=p)].astype(np.uint32)
            for _ in range(n_docs)]


def text_of(docs):
    out = []
    for d in docs:
        out += [int(t) for t in d] + [-1]
    return out


def test_skewed_corpus_is_coded_smaller_with_identical_answers(tmp_path):
    docs = zipf_docs()
    coded, direct = tmp_path / "coded.vsds", tmp_path / "direct.vsds"
    a = Datastore.build(docs, coded, vocab_size=4000, progress=False)
    with forced_codes(64, 0):  # no width below the stored one: plain text
        b = Datastore.build(docs, direct, vocab_size=4000, progress=False)
    h, hd = header(coded.read_bytes()), header(direct.read_bytes())
    assert hd["code_entries"] == 0 and hd["code_bits"] == hd["token_bits"]
    assert 2 <= h["code_bits"] < h["token_bits"] and 0 < h["code_entries"] <= 2 ** h["code_bits"] - 2
    assert 0 < h["exc_entries"] < h["num_tokens"] // 4
    assert os.path.getsize(coded) < os.path.getsize(direct)
    info = a.info()["file"]
    assert (info["code_bits"], info["code_entries"], info["exceptions"]) == (h["code_bits"], h["code_entries"],
                                                                            h["exc_entries"])
    a.verify()
    b.verify()
    assert a._core.text_slice(0, 0, 10**9) == text_of(docs)
    assert a._core.suffix_array(0) == b._core.suffix_array(0)
    rng = random.Random(3)
    flat = np.concatenate(docs)
    for _ in range(300):
        start = rng.randrange(flat.size - 12)
        ctx = flat[start:start + rng.randrange(1, 12)].tolist()
        if rng.random() < 0.2:
            ctx[-1] = rng.randrange(4000)  # rare ids: mostly exceptions
        x, y = a.draft_arrays(ctx, budget=16), b.draft_arrays(ctx, budget=16)
        assert x.tokens.tolist() == y.tokens.tolist() and x.parents.tolist() == y.parents.tolist()
        assert x.scores.tolist() == y.scores.tolist()
        assert a.count(ctx) == b.count(ctx)


docs_strategy = st.integers(1, 6).flatmap(
    lambda v: st.lists(st.lists(st.integers(0, v), min_size=0, max_size=60), min_size=1, max_size=5).filter(
        lambda ds: sum(map(len, ds)) > 0))


@SETTINGS
@given(docs=docs_strategy, data=st.data(), code_bits=st.sampled_from([2, 3]), block_shift=st.integers(1, 4),
       mode=st.sampled_from(["tree", "chain", "rest"]))
def test_forced_narrow_codes_match_reference(tmp_path, docs, data, code_bits, block_shift, mode):
    # 2-3 bit codes over up to 7 ids and tiny blocks: many exceptions, many blocks, empty blocks
    with forced_codes(code_bits, block_shift):
        mem = Datastore.from_documents(docs)
        path = tmp_path / f"f{code_bits}{block_shift}.vsds"
        f = Datastore.build(docs, path, progress=False)
    f.verify()
    assert mem._core.text_slice(0, 0, 10**9) == text_of(docs) == f._core.text_slice(0, 0, 10**9)
    v = max(max(d) for d in docs if d) + 1
    ctx = data.draw(st.lists(st.integers(0, v), min_size=1, max_size=8))
    kw = dict(budget=data.draw(st.integers(0, 16)), max_depth=data.draw(st.integers(1, 5)), max_match=8,
              min_count=data.draw(st.integers(1, 3)), mode=mode)
    want = ref.draft(docs, ctx, **kw)
    for ds in (mem, f):
        got = ds.draft_arrays(ctx, **kw)
        assert (got.tokens.tolist(), got.parents.tolist()) == (want[0], want[1])
        np.testing.assert_allclose(got.scores.tolist(), want[2], rtol=1e-6)
        assert ds.count(ctx[-2:]) == ref.count(docs, ctx[-2:])


def test_added_documents_and_save_with_codes(tmp_path):
    docs = zipf_docs(seed=1, n_docs=10, vocab=300, mean_len=300)
    with forced_codes(4, 3):
        ds = Datastore.from_documents(docs[:5], vocab_size=300)
        ds.add(docs[5:])
        ds.merge()
        saved = ds.save(tmp_path / "s.vsds")
    assert saved["code_bits"] == 4 and saved["exceptions"] > 0
    again = Datastore.open(tmp_path / "s.vsds", verify=True)
    assert again._core.text_slice(0, 0, 10**9) == text_of(docs)


@pytest.fixture
def coded_file(tmp_path):
    docs = zipf_docs(seed=2, n_docs=8, vocab=200, mean_len=400)
    path = tmp_path / "c.vsds"
    with forced_codes(3, 4):
        Datastore.build(docs, path, vocab_size=200, progress=False)
    return docs, path


def test_damaged_code_section_detected_and_never_crashes(coded_file):
    docs, path = coded_file
    raw = bytearray(path.read_bytes())
    h = header(raw)
    assert h["exc_entries"] > 0
    raw[h["extras_offset"]:] = b"\xff" * (len(raw) - h["extras_offset"])  # table, directory, exceptions
    path.write_bytes(bytes(raw))
    ds = Datastore.open(path)  # O(1) open does not read the body
    with pytest.raises(ValueError, match="extras section checksum mismatch"):
        ds.verify()
    with pytest.raises(RuntimeError, match="corrupt file"):
        for d in docs:
            for i in range(0, len(d) - 3, 7):
                ds.draft(d[i:i + 3].tolist(), budget=8)
                ds._core.text_slice(0, 0, 10**9)


def test_inconsistent_coding_fields_rejected(coded_file):
    _, path = coded_file
    h = header(path.read_bytes())
    bad = [dict(code_bits=h["token_bits"]), dict(code_entries=2 ** h["code_bits"] - 1), dict(block_shift=17),
           dict(block_shift=0), dict(exc_entries=h["num_tokens"] + 1), dict(version=1)]
    original = path.read_bytes()
    for fields in bad:
        path.write_bytes(original)
        rewrite_header(path, **fields)
        with pytest.raises(ValueError, match="inconsistent text coding fields|section offsets do not match"):
            Datastore.open(path)


def test_version_1_files_still_open(tmp_path):
    # A version 1 file is a later one without codes whose coding fields are zero (and with the
    # checksums of versions 1-2).
    rng = random.Random(4)
    docs = [[rng.randrange(50) for _ in range(rng.randrange(1, 200))] for _ in range(12)]
    path = tmp_path / "v1.vsds"
    new = Datastore.build(docs, path, vocab_size=50, progress=False)
    answers = [new.draft_arrays([t, (t * 7) % 50], budget=10).tokens.tolist() for t in range(50)]
    assert header(path.read_bytes())["code_entries"] == 0
    rewrite_header(path, version=1, code_bits=0)
    path.write_bytes(bytes(reseal(bytearray(path.read_bytes()))))
    old = Datastore.open(path, verify=True)
    assert old.info()["file"]["version"] == 1 and old.info()["file"]["code_bits"] == 6
    assert [old.draft_arrays([t, (t * 7) % 50], budget=10).tokens.tolist() for t in range(50)] == answers
    rewrite_header(path, code_bits=6)  # version 1 with a later version's field set
    with pytest.raises(ValueError, match="inconsistent text coding fields"):
        Datastore.open(path)


# ---------------------------------------------------------------------------------------------
# successor lists: children of one-token matches read from a table instead of probing


@contextlib.contextmanager
def successor_min_count(n: int):
    old = native()._datastore_successor_min_count(n)
    try:
        yield
    finally:
        native()._datastore_successor_min_count(old)


@SETTINGS
@given(docs=docs_strategy, data=st.data(), mode=st.sampled_from(["tree", "tree", "chain", "rest"]),
       min_heads=st.sampled_from([1, 2, 5]))
def test_successor_lists_match_reference(tmp_path, docs, data, mode, min_heads):
    with successor_min_count(min_heads):
        mem = Datastore.from_documents(docs)
        path = tmp_path / f"s{min_heads}.vsds"
        f = Datastore.build(docs, path, progress=False)
    counts = np.bincount(np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]))
    assert f.info()["file"]["successor_heads"] == int((counts >= min_heads).sum())
    f.verify()
    v = max(max(d) for d in docs if d) + 1
    ctx = data.draw(st.lists(st.integers(0, v), min_size=1, max_size=4))
    kw = dict(budget=data.draw(st.integers(0, 16)), max_depth=data.draw(st.integers(1, 5)), max_match=8,
              min_count=data.draw(st.integers(1, 3)), mode=mode)
    if mode == "tree" and data.draw(st.booleans()):
        kw.update(backoff=data.draw(st.integers(1, 4)), backoff_prior=2.0)  # a one-token backoff root too
    want = ref.draft(docs, ctx, **kw)
    for ds in (mem, f):
        got = ds.draft_arrays(ctx, **kw)
        assert (got.tokens.tolist(), got.parents.tolist()) == (want[0], want[1])
        np.testing.assert_allclose(got.scores.tolist(), want[2], rtol=1e-6)


def test_successor_lists_on_a_skewed_corpus(tmp_path):
    docs = zipf_docs(seed=5, n_docs=30, vocab=2000, mean_len=1500)
    with successor_min_count(500):
        a = Datastore.build(docs, tmp_path / "succ.vsds", vocab_size=2000, progress=False)
        a.add(docs[:3])  # an in-memory segment with its own lists
    with successor_min_count(1 << 62):
        b = Datastore.build(docs, tmp_path / "plain.vsds", vocab_size=2000, progress=False)
        b.add(docs[:3])
    fa, fb = a.info()["file"], b.info()["file"]
    assert fa["successor_heads"] > 3 and fa["successor_entries"] > fa["successor_heads"]
    assert fb["successor_heads"] == fb["successor_entries"] == 0
    a.verify()
    flat = np.concatenate(docs)
    heads = np.bincount(flat).argsort()[::-1][:20].tolist()
    rng = random.Random(6)
    for ctx in [[t] for t in heads] + [[rng.randrange(2000)] for _ in range(100)]:
        for kw in (dict(budget=24), dict(budget=8, mode="chain"), dict(budget=16, backoff=2)):
            x, y = a.draft_arrays(ctx, **kw), b.draft_arrays(ctx, **kw)
            assert x.tokens.tolist() == y.tokens.tolist() and x.parents.tolist() == y.parents.tolist()
            assert x.scores.tolist() == y.scores.tolist()
        assert a.continuations(ctx) == b.continuations(ctx)


def test_damaged_successor_lists_never_crash(tmp_path):
    docs = zipf_docs(seed=7, n_docs=6, vocab=100, mean_len=500)
    path = tmp_path / "d.vsds"
    with successor_min_count(50):
        Datastore.build(docs, path, vocab_size=100, progress=False)
    raw = bytearray(path.read_bytes())
    h = header(raw)
    assert h["succ_heads"] > 0 and h["code_entries"] == 0  # the extras hold only successor lists
    raw[h["extras_offset"]:] = bytes(b ^ 0xA5 for b in raw[h["extras_offset"]:])
    path.write_bytes(bytes(raw))
    ds = Datastore.open(path)
    with pytest.raises(ValueError, match="extras section checksum mismatch"):
        ds.verify()
    for t in range(100):  # wrong drafts or a clear error, never a crash or an out-of-bounds read
        with contextlib.suppress(RuntimeError):
            ds.draft_arrays([t], budget=8)
