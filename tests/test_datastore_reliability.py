"""Datastore faults a server meets in production: its file changed under it, a FIFO where a file
should be, builds killed or terminated, Ctrl-C during long native calls, absurd integers.

The process must survive (anything that could kill it runs in a subprocess here, so the test
fails instead of the test run), raise an exception that says what happened, and leave no litter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import verispec.datastore as vds
from verispec.datastore import Datastore, PromptIndex

DOCS = [[1, 2, 3, 1, 2, 4] * 40, [5, 6, 1, 2, 3] * 30, [7, 1, 2]]


def run_python(code: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def changed_error():
    # getattr: against a verispec without it these tests fail on their assertions, not on import
    return getattr(vds, "DatastoreChangedError", None)


# ---------------------------------------------------------------------------------------------
# 1. a mapped file changed in place


QUERIES = {
    "draft": lambda ds: ds.draft([1, 2], budget=8),
    "draft_arrays": lambda ds: ds.draft_arrays([1, 2], budget=8),
    "draft_batch": lambda ds: ds.draft_batch([[1, 2], [5]], budget=8),
    "draft_batch_packed": lambda ds: ds.draft_batch_packed([[1, 2], [5]], budget=8),
    "rest": lambda ds: ds.draft([1, 2], mode="rest"),
    "count": lambda ds: ds.count([1, 2]),
    "longest_match": lambda ds: ds.longest_match([9, 1, 2]),
    "continuations": lambda ds: ds.continuations([1]),
    "verify": lambda ds: ds.verify(),
    "prefetch": lambda ds: ds.prefetch(),
}


def test_truncated_file_raises_instead_of_sigbus(tmp_path):
    """os.truncate of an open datastore: the next query of every kind raises; nothing dies of
    SIGBUS. Run in a subprocess, since before the fix the process was killed."""
    path = tmp_path / "live.vsds"
    Datastore.build(DOCS, path, progress=False)
    names = sorted(QUERIES)
    res = run_python(f"""
        import os
        from verispec.datastore import Datastore
        import test_datastore_reliability as t
        ds = Datastore.open({str(path)!r})
        ds.prefetch()  # every page mapped: truncation must still not kill us
        before = ds.draft([1, 2], budget=8).tokens.tolist()
        os.truncate({str(path)!r}, 300)
        for name in {names!r}:
            try:
                t.QUERIES[name](ds)
                print(name, "no error")
            except RuntimeError as e:
                print(name, type(e).__name__, "changed in place" in str(e))
    """, cwd=os.path.dirname(__file__))
    assert res.returncode == 0, f"process died (rc {res.returncode}): {res.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert lines == {name: "DatastoreChangedError True" for name in names}


def test_rewritten_file_same_size_detected(tmp_path):
    """`cp other.vsds live.vsds` keeps the inode and, here, the size: the modification time tells."""
    path, other = tmp_path / "live.vsds", tmp_path / "other.vsds"
    Datastore.build(DOCS, path, vocab_size=8, progress=False)
    Datastore.build([[t % 7 + 1 for t in doc] for doc in DOCS], other, vocab_size=8, progress=False)  # ids permuted
    assert os.path.getsize(path) == os.path.getsize(other)
    os.utime(path, ns=(10**18, 10**18))  # an mtime the rewrite cannot share (clock ticks are coarse)
    ds = Datastore.open(path)
    ds.draft([1, 2])
    with open(path, "r+b") as f:  # in place, as cp does
        f.write(other.read_bytes())
    err = changed_error()
    assert err is not None and issubclass(err, RuntimeError)
    with pytest.raises(err, match="changed in place after it was opened"):
        ds.draft([1, 2])
    with pytest.raises(err):  # and it stays refused: the data no longer matches what was opened
        ds.count([1])
    Datastore.open(path).verify()  # reopening is the cure


def test_replacing_by_rename_is_safe_and_keeps_serving(tmp_path):
    """The documented way to update a live file: the open datastore keeps its (old) file."""
    path = tmp_path / "live.vsds"
    ds = Datastore.build(DOCS, path, progress=False)
    want = ds.draft([1, 2], budget=8).tokens.tolist()
    Datastore.build([[9, 9, 9]], path, progress=False)  # atomic rename over the live path
    assert ds.draft([1, 2], budget=8).tokens.tolist() == want
    ds.verify()
    assert Datastore.open(path).count([9, 9]) == 2


def test_load_mode_reads_private_memory(tmp_path):
    path = tmp_path / "live.vsds"
    Datastore.build(DOCS, path, progress=False)
    mapped = Datastore.open(path)
    loaded = Datastore.open(path, mode="load", verify=True)
    assert loaded.info()["file"]["loaded"] is True and mapped.info()["file"]["loaded"] is False
    ctxs = [[1, 2], [5], [3, 1], [7], [2, 3, 1, 2]]
    for mode in ("tree", "chain", "rest"):
        for c in ctxs:
            a, b = mapped.draft_arrays(c, budget=10, mode=mode), loaded.draft_arrays(c, budget=10, mode=mode)
            assert a.tokens.tolist() == b.tokens.tolist() and a.parents.tolist() == b.parents.tolist()
    want = [mapped.draft_arrays(c, budget=10).tokens.tolist() for c in ctxs]
    os.truncate(path, 0)
    with open(path, "wb") as f:
        f.write(b"garbage" * 100)
    assert [loaded.draft_arrays(c, budget=10).tokens.tolist() for c in ctxs] == want  # unaffected
    assert loaded.count([1, 2]) == 80 + 30 + 1
    loaded.verify()
    loaded.prefetch()
    with pytest.raises(ValueError, match="mode must be one of"):
        Datastore.open(path, mode="mmap-ish")


# ---------------------------------------------------------------------------------------------
# 6. hangs: FIFOs, long native loops


def test_open_fifo_fails_fast(tmp_path):
    fifo = tmp_path / "pipe.vsds"
    os.mkfifo(fifo)
    # a subprocess, so a blocking open fails the test by timeout instead of hanging the run
    try:
        res = run_python(f"""
            from verispec.datastore import Datastore
            try:
                Datastore.open({str(fifo)!r})
            except ValueError as e:
                print("ValueError:", e)
        """, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("Datastore.open blocked on a FIFO")
    assert "is a FIFO, not a regular file" in res.stdout, res.stdout + res.stderr[-2000:]


def test_non_regular_paths_refused(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not a regular file"):
        Datastore.open(tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(ValueError, match="is a character device, not a regular file"):
            Datastore.open("/dev/null")
    # writing: the atomic rename would have replaced a FIFO (or a device node) silently
    fifo = tmp_path / "out.vsds"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="exists and is not a regular file"):
        Datastore.build(DOCS, fifo, progress=False)
    with pytest.raises(ValueError, match="exists and is not a regular file"):
        Datastore.from_documents(DOCS).save(fifo)
    assert os.path.exists(fifo) and not os.path.isfile(fifo)


def test_rest_work_is_bounded():
    ds = Datastore.from_documents(DOCS)
    with pytest.raises(ValueError, match="rest_max_matches x max_depth"):
        ds.draft([1], mode="rest", rest_max_matches=2**20, max_depth=2**12)
    with pytest.raises(ValueError, match="rest_max_matches must be in"):
        ds.draft([1], mode="rest", rest_max_matches=2**40, max_depth=1)
    ds.draft([1], mode="rest", rest_max_matches=2**12, max_depth=256)  # at the limit: fine
    with pytest.raises(ValueError, match="rest_max_matches x max_depth"):
        PromptIndex([1, 2, 1, 2]).draft(mode="rest", rest_max_matches=2**12, max_depth=257)


HEAVY = """
    import os, signal, subprocess, time
    # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: restore it, as an interactive terminal would have it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    from verispec.datastore import Datastore, PromptIndex
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, 400_000)
    ds = Datastore.from_documents([tokens])  # [0] occurs ~100k times
    ds.set_cache(0)  # the second run must do the work again
    pi = PromptIndex(tokens)
    rest = dict(mode="rest", rest_max_matches=2**12, max_depth=256)  # at the work limit (2**20)
    big_tree = dict(budget=2**20, max_depth=2**16)
    def run():
        {call}
    t0 = time.perf_counter()
    run()
    full = time.perf_counter() - t0
    {interrupt}
"""

# Ctrl-C from outside, as a terminal sends it (a thread of ours could not run while a query holds the GIL).
# The sender notes the wall time at which it signals, and the calls repeat until the signal arrives, so a
# slow start of the sender on a loaded machine cannot let the work finish first: what is measured is the
# time from the signal to the KeyboardInterrupt, which must be a small part of one call.
INTERRUPT = """
    sent = {sent!r}
    subprocess.Popen(["sh", "-c", f"sleep {{full / 4:.3f}}; date +%s.%N > {{sent}}.tmp; kill -INT {{os.getpid()}}; "
                                  f"mv {{sent}}.tmp {{sent}}"])
    try:
        for i in range(100):
            {again}
        print("{what} finished", full, flush=True)
    except KeyboardInterrupt:
        now = time.time()
        while not os.path.exists(sent):  # the stamp is written before the signal, moved in place after it
            time.sleep(0.001)
        print("{what} interrupted", round(full, 3), round(now - float(open(sent).read()), 3), flush=True)
"""


def _interrupt(sent, what: str, again: str, indent: str) -> str:
    code = textwrap.dedent(INTERRUPT).format(sent=str(sent), what=what, again=again)
    return textwrap.indent(code, indent).strip()


@pytest.mark.parametrize("call", [
    "ds.draft_batch([[0]] * 32, **rest)",
    "ds.draft_batch([[0]] * 32, threads=1, **rest)",
    "ds.draft([0], **big_tree)",  # one query, GIL held
    "pi.draft_context([0], **big_tree)",
    "Datastore.from_documents([rng.integers(0, 50000, 4_000_000)])",  # suffix sorting in memory
])
def test_ctrl_c_interrupts_long_queries(call, tmp_path):
    """Interrupted during a call, it stops within a small part of the call's time."""
    code = HEAVY.format(call=call, interrupt=_interrupt(tmp_path / "sent", "query", "run()", "    "))
    res = run_python(code, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    name, what, *times = res.stdout.split()
    assert what == "interrupted", res.stdout + res.stderr[-2000:]
    full, latency = map(float, times)
    assert latency < 0.5 * full, res.stdout  # stopped by the signal, not at the end of the call


def test_ctrl_c_interrupts_verify_and_build(tmp_path):
    """The two long whole-file operations (a few seconds here) stop within a fraction of that."""
    path = tmp_path / "big.vsds"
    code = f"""
        import os, signal, subprocess, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # see HEAVY
        import numpy as np
        from verispec.datastore import Datastore
        rng = np.random.default_rng(0)
        docs = [rng.integers(0, 50000, 3_000_000)]
        ds = Datastore.build(docs, {str(path)!r}, vocab_size=50000, progress=False)
        out = [0]
        def build():  # a new file each time: a build never overwrites one in place
            out[0] += 1
            Datastore.build(docs * 2, {str(path)!r} + f".{{out[0]}}", vocab_size=50000, progress=False)
        for what, fn in [("verify", lambda: ds.verify(threads=1)), ("build", build)]:
            t0 = time.perf_counter()
            fn()
            full = time.perf_counter() - t0
            sent = {str(tmp_path)!r} + "/sent-" + what
            subprocess.Popen(["sh", "-c", f"sleep {{full / 4:.3f}}; date +%s.%N > {{sent}}.tmp; kill -INT {{os.getpid()}}; "
                                          f"mv {{sent}}.tmp {{sent}}"])
            try:
                for i in range(100):
                    fn()
                print(what, "finished", full, flush=True)
            except KeyboardInterrupt:
                now = time.time()
                while not os.path.exists(sent):
                    time.sleep(0.001)
                print(what, "interrupted", round(full, 2), round(now - float(open(sent).read()), 3), flush=True)
        print("files", sorted(f for f in os.listdir({str(tmp_path)!r}) if not f.startswith("sent")))
    """
    res = run_python(code, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    for line, what in zip(lines, ["verify", "build"]):
        name, outcome, full, latency = line.split()
        assert (name, outcome) == (what, "interrupted"), res.stdout
        assert float(latency) < 0.5 * float(full), res.stdout  # stopped by the signal, not at the end
    # The interrupted build (the second) left neither its file nor a temporary.
    assert lines[2] == "files ['big.vsds', 'big.vsds.1']", res.stdout


# ---------------------------------------------------------------------------------------------
# 7. temporaries of killed builds


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_removed_live_ones_kept(tmp_path):
    target = tmp_path / "c.vsds"
    stale = tmp_path / f"c.vsds.tmp-{dead_pid()}-0"
    stale.write_bytes(b"x" * 4096)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f"c.vsds.tmp-{sleeper.pid}-3"  # a build still running elsewhere
        alive.write_bytes(b"x")
        other = tmp_path / f"d.vsds.tmp-{dead_pid()}-0"  # another target's: not ours to judge
        other.write_bytes(b"x")
        odd = tmp_path / "c.vsds.tmp-notapid"
        odd.write_bytes(b"x")
        Datastore.build(DOCS, target, progress=False)
        assert not stale.exists()
        assert alive.exists() and other.exists() and odd.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_locked_temporary_of_vanished_pid_kept(tmp_path):
    """A temporary whose pid is gone but which someone holds locked (a build in another PID
    namespace sharing the directory) is left alone."""
    import fcntl

    tmp = tmp_path / f"c.vsds.tmp-{dead_pid()}-0"
    tmp.write_bytes(b"x")
    with open(tmp, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        Datastore.build(DOCS, tmp_path / "c.vsds", progress=False)
        assert tmp.exists()
    Datastore.build(DOCS, tmp_path / "c.vsds", progress=False)
    assert not tmp.exists()


BUILDER = """
    import numpy as np, sys
    from verispec.datastore import Datastore
    rng = np.random.default_rng(1)
    Datastore.build([rng.integers(0, 50000, 6_000_000)], sys.argv[1], vocab_size=50000, progress=False)
    print("built")
"""


def build_and_signal(tmp_path, sig) -> tuple[int, list[str]]:
    target = tmp_path / "c.vsds"
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUILDER), str(target)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(".tmp-" in n for n in os.listdir(tmp_path)):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            pytest.fail(f"the build never created its temporary file: {p.communicate()}")
        time.sleep(0.005)
    p.send_signal(sig)
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"the build did not stop on signal {sig}")
    return p.returncode, sorted(n for n in os.listdir(tmp_path) if ".tmp-" in n)


def test_sigterm_during_build_removes_temporary(tmp_path):
    rc, left = build_and_signal(tmp_path, signal.SIGTERM)
    assert rc == -signal.SIGTERM  # still ends by SIGTERM, as without a handler
    assert left == []
    assert not (tmp_path / "c.vsds").exists()


def test_sigkill_during_build_cleaned_by_next_build(tmp_path):
    rc, left = build_and_signal(tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL and len(left) == 1  # nothing can clean up after kill -9 ...
    Datastore.build(DOCS, tmp_path / "c.vsds", progress=False)
    assert not any(".tmp-" in n for n in os.listdir(tmp_path))  # ... but the next build does


# ---------------------------------------------------------------------------------------------
# 9. integers from Python: range-checked, clear errors


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "s.vsds"
    return Datastore.build(DOCS, path, progress=False)


BAD_INT_CALLS = {
    "budget": lambda ds, v: ds.draft([1], budget=v),
    "max_depth": lambda ds, v: ds.draft([1], max_depth=v),
    "max_match": lambda ds, v: ds.draft([1], max_match=v),
    "min_count": lambda ds, v: ds.draft([1], min_count=v),
    "min_match": lambda ds, v: ds.draft([1], min_match=v),
    "rest_max_matches": lambda ds, v: ds.draft([1], mode="rest", rest_max_matches=v),
    "backoff": lambda ds, v: ds.draft([1], backoff=v),
    "longest_match max_match": lambda ds, v: ds.longest_match([1], max_match=v),
    "set_cache capacity": lambda ds, v: ds.set_cache(capacity=v),
    "set_cache min_count": lambda ds, v: ds.set_cache(min_count=v),
    "verify threads": lambda ds, v: ds.verify(threads=v),
    "PromptIndex window": lambda ds, v: PromptIndex([1, 2, 3], window=v),
    "PromptIndex min_sorted": lambda ds, v: PromptIndex([1, 2, 3], min_sorted=v),
    "PromptIndex budget": lambda ds, v: PromptIndex([1, 2, 3]).draft(budget=v),
    "build vocab_size": lambda ds, v: Datastore.from_documents([[1]], vocab_size=v),
}


@pytest.mark.parametrize("value", [2**63, 2**64 + 5, -1, -(2**63) - 1])
@pytest.mark.parametrize("name", sorted(BAD_INT_CALLS))
def test_out_of_range_integers_raise_value_error(small, name, value):
    with pytest.raises(ValueError) as exc:
        BAD_INT_CALLS[name](small, value)
    msg = str(exc.value)
    assert "incompatible" not in msg and str(value) in msg, msg


@pytest.mark.parametrize("name", sorted(BAD_INT_CALLS))
def test_non_integers_raise_type_error(small, name):
    with pytest.raises(TypeError) as exc:
        BAD_INT_CALLS[name](small, 1.5)
    assert "incompatible" not in str(exc.value)


def test_huge_token_ids_reported_as_given(small):
    for ctx in ([1, 2**63], [1, 2**63 + 7], [1, 2**64], [1, 3 * 2**70]):
        bad = ctx[1]
        for call in (small.draft, small.draft_arrays, small.longest_match, small.count, small.continuations,
                     lambda c: small.draft_batch([c])):
            with pytest.raises(ValueError, match=f"position 1 has token id {bad} > 4294967294"):
                call(ctx)
        with pytest.raises(ValueError, match=f"position 1 has token id {bad} > 4294967294"):
            small.draft(tuple(ctx))
    with pytest.raises(ValueError, match=f"position 0 has negative token id {-(2**70)}"):
        small.draft([-(2**70)])
    with pytest.raises(ValueError, match=f"position 1 has token id {2**63} > "):
        PromptIndex([1, 2**63])
    with pytest.raises(ValueError, match=f"document 0: position 1 has token id {2**65} > "):
        Datastore.from_documents([[1, 2**65]])
