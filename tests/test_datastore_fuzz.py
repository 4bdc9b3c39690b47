"""Damaged datastore files: `verify` must find damage the checksums cannot see (a suffix array
rewritten behind valid checksums), and no truncation or flipped byte may crash the process.

The fuzzing runs the damaged files through one long-lived worker process, so a crash (SIGBUS,
SIGSEGV, abort) or a hang fails the test with the damage that caused it instead of killing the run.
VERISPEC_FUZZ_EXAMPLES=N runs N examples per fuzz test instead of the quick default.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _datastore_header import header, reseal, sections, suffix_array, write_suffix_array
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verispec._native import native
from verispec.cli import main as cli_main
from verispec.datastore import Datastore

FUZZ = int(os.environ.get("VERISPEC_FUZZ_EXAMPLES", "150"))

# ---------------------------------------------------------------------------------------------
# files of every layout: ids stored as themselves, ranks into a token map, text codes with
# exceptions, successor lists; empty documents and repeated documents (long common prefixes)


@contextlib.contextmanager
def hooks(code_bits=0, block_shift=0, successor_min=None):
    n = native()
    n._datastore_force_text_codes(code_bits, block_shift)
    old = n._datastore_successor_min_count(successor_min) if successor_min is not None else None
    try:
        yield
    finally:
        n._datastore_force_text_codes(0, 0)
        if old is not None:
            n._datastore_successor_min_count(old)


def corpus(kind: str) -> tuple[list[list[int]], int]:
    rng = random.Random(kind)
    if kind == "map":  # few ids from a huge vocabulary: ranks into a token map
        ids = [0, 7, 4000, 65535, 2**31 + 5]
        return [[rng.choice(ids) for _ in range(rng.randrange(0, 40))] for _ in range(12)], 2**32 - 1
    docs = [[rng.randrange(30) for _ in range(rng.randrange(0, 120))] for _ in range(10)]
    docs += [docs[1], [], docs[1][:50], [3] * 40]  # a repeated document, an empty one, runs
    if kind == "coded":  # skewed, so a narrow code covers most positions
        docs = [[min(int(rng.paretovariate(1.2)) - 1, 29) for _ in range(len(d))] for d in docs]
    return docs, 30


KINDS = {"plain": {}, "map": {}, "coded": {"code_bits": 3, "block_shift": 3, "successor_min": 5}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    out = {}
    for kind, hk in KINDS.items():
        docs, vocab = corpus(kind)
        path = d / f"{kind}.vsds"
        with hooks(**hk):
            Datastore.build(docs, path, vocab_size=vocab, progress=False)
        h = header(path.read_bytes())
        if kind == "coded":
            assert h["code_entries"] and h["exc_entries"] and h["succ_heads"], h
        if kind == "map":
            assert h["map_entries"], h
        out[kind] = (path, docs)
    return out


# ---------------------------------------------------------------------------------------------
# the suffix array behind valid checksums


def damaged(path, tmp_path, edit) -> str:
    raw = bytearray(path.read_bytes())
    sa = suffix_array(raw)
    edit(sa)
    out = tmp_path / "damaged.vsds"
    out.write_bytes(bytes(write_suffix_array(raw, sa)))
    return str(out)


def swap(i, j):
    def f(sa):
        sa[i], sa[j] = sa[j], sa[i]
    return f


def text_end_marker(path) -> int:
    ds = Datastore.open(path)
    return ds._core.text_slice(0, 0, 10**9).index(-1)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_verify_reports_suffix_array_damage(files, tmp_path, kind):
    path, docs = files[kind]
    n = sum(map(len, docs))
    Datastore.open(path).verify()
    cases = {
        "swapped neighbours": (swap(5, 6), "are out of order"),
        "swapped far apart": (swap(3, n - 4), "are out of order"),
        "first and last": (swap(0, n - 1), "are out of order"),
        "duplicate": (lambda sa: sa.__setitem__(7, sa[8]), "repeats text position"),
        "one value repeated": (lambda sa: sa.__setitem__(slice(10, 30), [sa[10]] * 20), "repeats text position"),
        "a marker": (lambda sa: sa.__setitem__(2, text_end_marker(path)), "points at a marker"),
    }
    h = header(path.read_bytes())
    if (1 << h["offset_bits"]) - 1 >= h["text_len"]:  # a value the width can hold, past the text
        cases["outside the text"] = (lambda sa: sa.__setitem__(2, (1 << h["offset_bits"]) - 1), "points outside the text")
    for edit, match in cases.values():
        bad = damaged(path, tmp_path, edit)
        ds = Datastore.open(bad)  # O(1) open cannot see it ...
        with pytest.raises(ValueError, match=match):  # ... verify must
            ds.verify()
        with pytest.raises(ValueError, match=match):
            Datastore.open(bad, verify=True, mode="load")


def test_swap_within_identical_documents_reported(tmp_path):
    """Two identical documents: their suffixes agree up to the document end, so a swap changes no
    count -- but the file is not what the builder writes, and verify says so."""
    path = tmp_path / "twins.vsds"
    Datastore.build([[1, 2, 3], [1, 2, 3]], path, progress=False)
    sa = suffix_array(path.read_bytes())
    assert sa[:2] in ([0, 4], [4, 0])
    bad = damaged(path, tmp_path, swap(0, 1))
    with pytest.raises(ValueError, match="entries 0 and 1 are out of order"):
        Datastore.open(bad).verify()


def test_damaged_suffix_array_gives_wrong_counts_and_cli_reports_it(files, tmp_path, capsys):
    """Why it matters: counts from the damaged array are wrong, and `info --verify` (which used to
    say OK) fails with the reason."""
    path, docs = files["plain"]
    bad = damaged(path, tmp_path, lambda sa: sa.__setitem__(slice(0, 40), sorted(sa[:40], reverse=True)))
    good, broken = Datastore.open(path), Datastore.open(bad)
    pats = [[t] for t in range(30)] + [[3, 3], [docs[1][0], docs[1][1]]]
    assert any(good.count(p) != broken.count(p) for p in pats)
    assert cli_main(["datastore", "info", bad, "--verify"]) == 2
    err = capsys.readouterr().err
    assert "out of order" in err and err.count("\n") == 1


def test_verify_reports_progress(files):
    path, _ = files["coded"]
    seen = []
    Datastore.open(path).verify(progress=lambda phase, f: seen.append(phase))
    assert seen[0] == "checksums" and "suffix array: positions" in seen and "suffix array: order" in seen
    assert seen[-1] == "done"


@settings(max_examples=max(FUZZ // 3, 20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)))
def test_any_change_to_the_suffix_array_is_reported(files, tmp_path, data, kind):
    """The suffix array of a text is unique, so verify must reject every other array: any swap,
    any changed entry, behind valid checksums."""
    path, docs = files[kind]
    raw = bytearray(path.read_bytes())
    sa = suffix_array(raw)
    n, bits = len(sa), header(raw)["offset_bits"]
    k = data.draw(st.integers(0, n - 1))
    if data.draw(st.booleans()):
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != k))
        sa[k], sa[j] = sa[j], sa[k]
    else:
        sa[k] ^= 1 << data.draw(st.integers(0, bits - 1))
    out = tmp_path / "changed.vsds"
    out.write_bytes(bytes(write_suffix_array(raw, sa)))
    with pytest.raises(ValueError, match="suffix array"):
        Datastore.open(out).verify()


# ---------------------------------------------------------------------------------------------
# truncations and byte flips, through a worker process

WORKER = textwrap.dedent("""
    import json, sys
    from verispec.datastore import Datastore

    def outcome(fn):
        try:
            fn()
            return "ok"
        except (ValueError, RuntimeError) as e:  # RuntimeError: damage met by a query
            return type(e).__name__ + ": " + str(e)
        except Exception as e:
            return "UNEXPECTED " + type(e).__name__ + ": " + str(e)

    for line in sys.stdin:
        job = json.loads(line)
        res = {}
        ds = []
        res["open"] = outcome(lambda: ds.append(Datastore.open(job["path"], mode=job["mode"])))
        if ds:
            d = ds[0]
            q = []
            for ctx in ([1], [3, 3], [0, 7], [2**31 + 5], [5, 1, 2]):
                for mode in ("tree", "chain", "rest"):
                    q.append(outcome(lambda: d.draft_arrays(ctx, budget=16, mode=mode)))
                q.append(outcome(lambda: d.count(ctx)))
                q.append(outcome(lambda: d.continuations(ctx)))
                q.append(outcome(lambda: d.longest_match(ctx)))
            q.append(outcome(lambda: d.draft_batch([[1], [3]], budget=8)))
            res["queries"] = q
            res["verify"] = outcome(lambda: d.verify(threads=1))
        print(json.dumps(res), flush=True)
""")


class Worker:
    def __init__(self):
        self.p = None

    def run(self, path: str, mode: str, timeout: float = 60) -> dict:
        if self.p is None or self.p.poll() is not None:
            self.p = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.p.stdin.write(json.dumps({"path": path, "mode": mode}) + "\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            self.p.kill()
            self.p = None
            raise AssertionError(f"hang: no answer within {timeout} s")
        line = self.p.stdout.readline()
        if not line:
            rc = self.p.wait()
            err = self.p.stderr.read()[-2000:]
            self.p = None
            raise AssertionError(f"the process died (exit status {rc}): {err}")
        return json.loads(line)

    def close(self):
        if self.p is not None and self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def checked_regions(raw: bytes) -> list[tuple[int, int]]:
    """Bytes some checksum covers: the header, and each section (padding included)."""
    return [(0, 192)] + [(off, off + size) for off, size, _ in sections(header(raw)).values() if size]


def no_unexpected(res: dict) -> None:
    everything = [res["open"], res.get("verify", "")] + res.get("queries", [])
    assert not any(o.startswith("UNEXPECTED") for o in everything), res


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)), mode=st.sampled_from(["mmap", "load"]))
def test_byte_flips_never_crash_and_checked_flips_are_reported(files, worker, tmp_path, data, kind, mode):
    path, _ = files[kind]
    raw = bytearray(path.read_bytes())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), min_size=1, max_size=4))
    for pos, mask in flips:
        raw[pos] ^= mask
    original = path.read_bytes()
    changed = [i for i in range(len(raw)) if raw[i] != original[i]]  # flips of one byte may cancel
    sealed = data.draw(st.booleans())
    if sealed:  # behind valid checksums: only the structural checks stand in the way
        raw = reseal(raw)
    out = tmp_path / f"flipped-{os.getpid()}.vsds"
    out.write_bytes(bytes(raw))
    res = worker.run(str(out), mode)
    no_unexpected(res)
    if not changed or sealed:
        return
    in_checked = any(a <= pos < b for pos in changed for a, b in checked_regions(original))
    if in_checked:
        assert res["open"] != "ok" or res["verify"] != "ok", (flips, res)


@settings(max_examples=max(FUZZ // 3, 20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)), mode=st.sampled_from(["mmap", "load"]))
def test_truncations_rejected_at_open(files, worker, tmp_path, data, kind, mode):
    path, _ = files[kind]
    raw = path.read_bytes()
    keep = data.draw(st.integers(0, len(raw) - 1))
    out = tmp_path / f"cut-{os.getpid()}.vsds"
    out.write_bytes(raw[:keep])
    res = worker.run(str(out), mode)
    no_unexpected(res)
    assert res["open"].startswith("ValueError"), res


def test_worker_reports_a_crash(tmp_path):
    """The harness itself: a process that dies mid-job is reported, not waited for."""
    w = Worker()
    w.p = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.readline(); os.abort()"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(AssertionError, match="the process died"):
        w.run(str(tmp_path / "x"), "mmap")


def test_forged_absurd_header_fields_rejected(files, tmp_path):
    """Header fields no build writes, with the header checksum recomputed: open refuses them
    (verify too, since it opens first)."""
    from _datastore_header import rewrite_header

    path, _ = files["map"]
    for fields in ({"vocab_size": 2**63}, {"vocab_size": 2**32}, {"vocab_size": 2**64 - 1},
                   {"num_tokens": 2**63, "text_len": 2**63 + header(path.read_bytes())["num_docs"]},
                   {"num_docs": 2**64 - 1}, {"map_entries": 2**40}, {"offset_bits": 64}, {"token_bits": 0}):
        bad = tmp_path / "forged.vsds"
        bad.write_bytes(path.read_bytes())
        rewrite_header(bad, **fields)
        for mode in ("mmap", "load"):
            with pytest.raises(ValueError, match="inconsistent header fields|section offsets|file is"):
                Datastore.open(bad, verify=True, mode=mode)


def test_reseal_helper_matches_the_builder(files):
    for path, _ in files.values():
        raw = path.read_bytes()
        assert bytes(reseal(bytearray(raw))) == raw
    assert np.array_equal(suffix_array(raw), Datastore.open(path)._core.suffix_array(0))


def test_checksums_see_every_bit_of_a_section_end(files, tmp_path):
    """Version 2 checksums OR-folded the last (< 32) bytes of each section into one word, so some
    flips there went unseen (the fuzz test above found one); version 3 hashes them as words. Every
    single-bit flip in those bytes must now fail verify."""
    for path, _ in files.values():
        raw = path.read_bytes()
        assert header(raw)["version"] == 3
        for off, size, _field in sections(header(raw)).values():
            for pos in range(off + size - size % 32, off + size):
                for bit in range(8):
                    bad = bytearray(raw)
                    bad[pos] ^= 1 << bit
                    out = tmp_path / "bit.vsds"
                    out.write_bytes(bytes(bad))
                    with pytest.raises(ValueError, match="checksum mismatch|corrupt file"):
                        Datastore.open(out).verify()  # (open's O(1) checks may see it first)


def test_version_2_files_still_verify(files, tmp_path):
    """Same layout, the old checksums: still read and verified."""
    for path, _docs in files.values():
        raw = bytearray(path.read_bytes())
        raw[8:12] = (2).to_bytes(4, "little")
        old = tmp_path / "v2.vsds"
        old.write_bytes(bytes(reseal(raw)))
        a, b = Datastore.open(old, verify=True), Datastore.open(path)
        assert a.info()["file"]["version"] == 2
        for ctx in ([1], [3, 3], [0, 7]):
            assert a.draft_arrays(ctx).tokens.tolist() == b.draft_arrays(ctx).tokens.tolist()
        raw = bytearray(path.read_bytes())  # v3 checksums under a v2 header: rejected
        raw[8:12] = (2).to_bytes(4, "little")
        old.write_bytes(bytes(raw))
        from _datastore_header import rewrite_header

        rewrite_header(old)
        with pytest.raises(ValueError, match="checksum mismatch"):
            Datastore.open(old).verify()


def test_document_table_pointing_past_the_text(files, worker, tmp_path):
    """A document start far past the text, behind valid checksums: verify read the text there
    (SIGSEGV, found by the fuzz test); now it reports the document."""
    path, _ = files["coded"]
    raw = bytearray(path.read_bytes())
    off = header(raw)["docs_offset"]
    raw[off + 8 * 3:off + 8 * 4] = (2**40).to_bytes(8, "little")
    out = tmp_path / "far.vsds"
    out.write_bytes(bytes(reseal(raw)))
    res = worker.run(str(out), "mmap")
    no_unexpected(res)
    assert res["open"] == "ok" and "document 2 is malformed" in res["verify"], res
