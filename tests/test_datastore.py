"""Datastore and PromptIndex drafting against the brute-force reference (verispec.datastore.reference).

Tiny vocabularies make matches frequent, so trees are bushy and ties are common: exactly where
counts, tie-breaks and the pruning of the best-first search can go wrong.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verispec
from verispec.datastore import Datastore, PromptIndex
from verispec.datastore import reference as ref

SETTINGS = settings(max_examples=int(__import__("os").environ.get("VERISPEC_DS_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

docs_strategy = st.integers(1, 4).flatmap(
    lambda v: st.lists(st.lists(st.integers(0, v), min_size=0, max_size=40), min_size=1, max_size=5).filter(
        lambda ds: sum(map(len, ds)) > 0
    )
)


def as_lists(tree):
    return tree.tokens.tolist(), tree.parents.tolist(), tree.scores.tolist()


def assert_same(got, want, what=""):
    gt, gp, gs = got
    wt, wp, ws = want[:3]
    assert gt == wt, f"{what} tokens {gt} != {wt}"
    assert gp == wp, f"{what} parents {gp} != {wp}"
    np.testing.assert_allclose(gs, ws, rtol=1e-6, err_msg=f"{what} scores")


def brute_suffix_array(docs):
    text = []
    for d in docs:
        text.extend(d)
        text.append(ref.MARK)
    pos = [i for i, t in enumerate(text) if t != ref.MARK]
    return sorted(pos, key=lambda i: text[i:])


@SETTINGS
@given(docs=docs_strategy)
def test_suffix_array_matches_brute_force(docs):
    ds = Datastore.from_documents(docs)
    assert ds._core.suffix_array(0) == brute_suffix_array(docs)
    assert len(ds) == sum(map(len, docs)) and ds.num_docs == len(docs)


@SETTINGS
@given(docs=docs_strategy, data=st.data())
def test_match_counts_and_continuations(docs, data):
    ds = Datastore.from_documents(docs)
    v = max(max(d) for d in docs if d) + 1
    ctx = data.draw(st.lists(st.integers(0, v), min_size=1, max_size=12))
    assert ds.longest_match(ctx, max_match=16) == ref.longest_match(docs, ctx, 16)
    for m in range(1, len(ctx) + 1):
        pat = ctx[len(ctx) - m:]
        assert ds.count(pat) == ref.count(docs, pat)
        want = {p[0]: c for p, c in ref.continuation_trie(docs, pat, 1).items()}
        assert ds.continuations(pat) == want


@SETTINGS
@given(
    docs=docs_strategy,
    data=st.data(),
    budget=st.integers(0, 24),
    max_depth=st.integers(1, 6),
    max_match=st.integers(1, 8),
    min_count=st.integers(1, 4),
    min_match=st.integers(1, 3),
    min_score=st.sampled_from([0.0, 0.0, 0.1, 0.34]),
    mode=st.sampled_from(["tree", "tree", "chain", "rest"]),
)
def test_draft_matches_reference(docs, data, budget, max_depth, max_match, min_count, min_match, min_score, mode):
    ds = Datastore.from_documents(docs)
    v = max(max(d) for d in docs if d) + 1
    ctx = data.draw(st.lists(st.integers(0, v), min_size=1, max_size=10))
    kw = dict(budget=budget, max_depth=max_depth, max_match=max_match, min_count=min_count, min_match=min_match,
              min_score=min_score, mode=mode)
    if mode == "rest":
        kw["rest_max_matches"] = data.draw(st.integers(1, 8))
    if mode == "tree" and data.draw(st.booleans()):
        kw["backoff"] = data.draw(st.integers(1, 4))
        kw["backoff_prior"] = data.draw(st.sampled_from([0.5, 2.0, 7.0]))
    got = ds.draft_arrays(ctx, **kw)
    want = ref.draft(docs, ctx, **kw)
    assert_same((got.tokens.tolist(), got.parents.tolist(), got.scores.tolist()), want, f"{kw}")
    if got.tokens.size:
        assert (got.match_len, got.match_count) == want[3:]
    tree = ds.draft(ctx, **kw)
    tree.validate()  # DraftTree invariants: parents earlier, ids >= 0
    assert tree.tokens.dtype == torch.int32 and tree.parents.dtype == torch.int32
    assert tree.scores.dtype == torch.float32


def test_best_first_worked_example():
    # after [1, 2]: 3 (x3), 4 (x1); after [1, 2, 3]: 7 (x2), end of document (x1)
    docs = [[1, 2, 3, 7], [1, 2, 3, 7, 5], [1, 2, 4], [0, 1, 2, 3]]
    ds = Datastore.from_documents(docs)
    tree = ds.draft([9, 1, 2], budget=3, max_depth=4)
    assert tree.tokens.tolist() == [3, 7, 4]
    assert tree.parents.tolist() == [-1, 0, -1]
    np.testing.assert_allclose(tree.scores.tolist(), [3 / 4, 2 / 4, 1 / 4])
    chain = ds.draft([9, 1, 2], budget=8, max_depth=4, mode="chain")
    assert chain.tokens.tolist() == [3, 7, 5] and chain.parents.tolist() == [-1, 0, 1]
    # continuations never cross a document: doc 0 ends after 7, doc 3 after 3
    assert ds.continuations([3, 7]) == {5: 1}
    assert ds.continuations([2, 3]) == {7: 2}


def test_fallback_to_shorter_suffix():
    docs = [[5, 1, 2, 9]] + [[1, 2, 3]] * 3
    ds = Datastore.from_documents(docs)
    assert ds.draft([5, 1, 2], budget=1, min_count=1).tokens.tolist() == [9]  # longest match [5, 1, 2], seen once
    assert ds.draft([5, 1, 2], budget=1).tokens.tolist() == [3]  # default min_count=2 falls back
    assert ds.draft([5, 1, 2], budget=1, min_count=2).tokens.tolist() == [3]  # [1, 2] seen 4 times
    assert ds.draft([5, 1, 2], budget=1, min_count=2, min_match=3).tokens.tolist() == [9]
    assert ds.draft_arrays([5, 1, 2], min_count=2).match_len == 2


def test_large_token_ids_and_wide_vocab():
    big = 2**32 - 2
    docs = [[big, 7, big - 1, 70000], [70000, big, 7]]
    ds = Datastore.from_documents(docs, vocab_size=2**32 - 1)
    assert ds.info()["vocab_size"] == 2**32 - 1
    assert ds.continuations([big]) == {7: 2}
    assert ds.draft([70000, big], budget=2, min_count=1).tokens.tolist() == [7]
    assert ds.draft_arrays([big, 7], budget=4, max_depth=4).tokens.tolist() == [big - 1, 70000]
    with pytest.raises(ValueError, match="does not fit DraftTree's int32"):
        ds.draft([big, 7], budget=4, max_depth=4)


def test_context_ids_outside_vocab_just_do_not_match():
    ds = Datastore.from_documents([[0, 1, 2, 3]], vocab_size=7)  # 3-bit tokens: the marker is 7
    assert len(ds.draft([7])) == 0 and ds.count([7]) == 0
    assert ds.draft([3, 7]).tokens.numel() == 0
    assert ds.longest_match([1, 2, 7, 1]) == (1, 1)


@pytest.mark.parametrize("threads", [None, 1])
def test_batch_equals_sequential(threads):  # and the packed form equals pack_trees of the trees
    rng = random.Random(0)
    docs = [[rng.randrange(6) for _ in range(rng.randrange(1, 200))] for _ in range(30)]
    ds = Datastore.from_documents(docs)
    ctxs = [[rng.randrange(6) for _ in range(rng.randrange(1, 20))] for _ in range(67)]
    seq = [as_lists(ds.draft(c, budget=20, max_depth=6)) for c in ctxs]
    for _ in range(3):
        bat = [as_lists(t) for t in ds.draft_batch(ctxs, budget=20, max_depth=6, threads=threads)]
        assert bat == seq
    trees = [ds.draft(c, budget=20, max_depth=6) for c in ctxs]
    want = verispec.pack_trees(trees)
    toks, pars, cu, scores = ds.draft_batch_packed(ctxs, budget=20, max_depth=6, threads=threads)
    for got, exp in zip((toks, pars, cu), want):
        assert got.dtype == torch.int32 and got.tolist() == exp.tolist()
    assert scores.tolist() == torch.cat([t.scores for t in trees]).tolist()


def test_deterministic_and_context_types():
    rng = random.Random(1)
    docs = [[rng.randrange(3) for _ in range(300)] for _ in range(5)]
    ds = Datastore.from_documents(docs)
    ctx = [rng.randrange(3) for _ in range(12)]
    first = as_lists(ds.draft(ctx, budget=40))
    for variant in (ctx, tuple(ctx), np.array(ctx, np.int64), np.array(ctx, np.uint16),
                    torch.tensor(ctx), torch.tensor(ctx, dtype=torch.int32), [99] * 50 + ctx):
        assert as_lists(ds.draft(variant, budget=40)) == first
    # a rebuilt index answers identically
    assert as_lists(Datastore.from_documents(docs).draft(ctx, budget=40)) == first


def test_online_add_and_merge_match_reference():
    rng = random.Random(2)
    docs = [[rng.randrange(4) for _ in range(rng.randrange(1, 60))] for _ in range(6)]
    ds = Datastore.from_documents(docs, vocab_size=10)
    all_docs = list(docs)
    for step in range(12):
        new = [[rng.randrange(10) for _ in range(rng.randrange(1, 30))] for _ in range(rng.randrange(1, 3))]
        ds.add(new)
        all_docs += new
        assert len(ds) == sum(map(len, all_docs)) and ds.num_docs == len(all_docs)
        for _ in range(5):
            ctx = [rng.randrange(10) for _ in range(rng.randrange(1, 6))]
            assert_same(as_lists(ds.draft(ctx, budget=12, max_depth=4)),
                        ref.draft(all_docs, ctx, budget=12, max_depth=4, min_count=2), f"after add {step}")
    assert ds.num_segments < 12  # merged as they grew
    ds.merge()
    assert ds.num_segments == 1
    ctx = all_docs[-1][:3]
    assert_same(as_lists(ds.draft(ctx, budget=12)), ref.draft(all_docs, ctx, budget=12, min_count=2))
    # generated outputs become findable at once
    ds.add([[9, 8, 7, 6, 5]])
    assert ds.draft([9, 8, 7], budget=2, mode="chain", min_count=1).tokens.tolist() == [6, 5]
    with pytest.raises(ValueError, match="outside the vocabulary of size 10"):
        ds.add([[1, 2, 10]])


def test_add_while_querying_from_threads():
    import threading

    rng = random.Random(3)
    ds = Datastore.from_documents([[rng.randrange(5) for _ in range(500)]], vocab_size=50)
    errors, queries = [], []
    stop, started = threading.Event(), threading.Event()

    def reader():
        try:
            while not stop.is_set():
                queries.append(ds.draft_batch([[1, 2], [3, 4, 0]], budget=8))
                started.set()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
            started.set()

    t = threading.Thread(target=reader)
    t.start()
    assert started.wait(30), "the reader thread never queried"
    n_before = len(queries)
    for _ in range(30):
        ds.add([[rng.randrange(50) for _ in range(50)]])
    stop.set()
    t.join()
    assert not errors
    assert len(ds) == 500 + 30 * 50
    assert len(queries) >= n_before >= 1  # the reader was already querying when the adds began
    assert all(len(batch) == 2 for batch in queries)


# ---------------------------------------------------------------------------------------------
# PromptIndex


@SETTINGS
@given(
    seq=st.integers(1, 3).flatmap(lambda v: st.lists(st.integers(0, v), min_size=1, max_size=120)),
    chunks=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    min_sorted=st.sampled_from([4, 16, 10**9]),
    budget=st.integers(1, 16),
    max_depth=st.integers(1, 5),
    max_match=st.integers(1, 6),
    min_count=st.integers(1, 3),
    mode=st.sampled_from(["tree", "chain"]),
    backoff=st.sampled_from([0, 0, 2]),
)
def test_prompt_index_matches_reference(seq, chunks, min_sorted, budget, max_depth, max_match, min_count, mode,
                                        backoff):
    kw = dict(budget=budget, max_depth=max_depth, max_match=max_match, min_count=min_count, mode=mode,
              backoff=backoff)
    cut = max(1, len(seq) // 2)
    pi = PromptIndex(seq[:cut], window=8, min_sorted=min_sorted)
    n = cut
    for c in chunks + [len(seq)]:
        pi.extend(seq[n:n + c])
        n = min(len(seq), n + c)
        cur = seq[:n]
        got = pi.draft_arrays(**kw)
        want = ref.draft([cur], cur, require_continuation=True, **kw)
        assert_same((got.tokens.tolist(), got.parents.tolist(), got.scores.tolist()), want,
                    f"n={n} sorted_until={pi.sorted_until}")
        if n == len(seq):
            break
    assert pi.tokens().tolist() == seq[:n]


def test_prompt_index_sorted_part_and_rebuild():
    rng = random.Random(4)
    seq = [rng.randrange(5) for _ in range(3000)]
    pi = PromptIndex(seq[:2000], vocab_size=5)
    assert pi.sorted_until == 2000 - 64
    for i in range(2000, 3000, 7):
        pi.extend(seq[i:i + 7])
        if (i - 2000) % 140 == 0:
            cur = seq[:i + 7]
            want = ref.draft([cur], cur, budget=10, max_depth=6, require_continuation=True)
            assert_same(as_lists(pi.draft(budget=10, max_depth=6)), want)
    assert pi.sorted_until > 2000 - 64  # re-sorted once the tail grew
    # a query needing a longer window re-sorts with it
    pi.draft(max_match=40, max_depth=40)
    assert pi.sorted_until == 3000 - 80
    cur = seq
    assert_same(as_lists(pi.draft(budget=10, max_depth=40, max_match=40)),
                ref.draft([cur], cur, budget=10, max_depth=40, max_match=40, require_continuation=True))


def test_prompt_index_draft_context_and_errors():
    pi = PromptIndex([1, 2, 3, 1, 2, 4], vocab_size=8)
    assert pi.draft_context([1, 2], budget=2).tokens.tolist() == [3, 4]
    assert pi.draft(budget=4).tokens.numel() == 0  # suffix [2, 4] never occurred earlier
    with pytest.raises(ValueError, match="outside the vocabulary of size 8"):
        pi.extend([8])
    with pytest.raises(ValueError, match="negative"):
        pi.extend([-1])
    with pytest.raises(TypeError, match="integer"):
        pi.extend([1.5])
    pi.extend(3)
    assert len(pi) == 7
    empty = PromptIndex()
    assert len(empty) == 0 and empty.draft().tokens.numel() == 0


def test_public_names():
    assert verispec.Datastore is Datastore and verispec.PromptIndex is PromptIndex


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("VERISPEC_DS_SEEDS", "6"))))
def test_pruned_search_on_large_ranges_and_segments(seed, tmp_path):
    # Ranges of thousands of suffixes make the stride probing skip runs; several segments make a
    # child's count a sum over parts. The result must still equal the exhaustive best-first tree.
    rng = random.Random(seed)
    v = rng.choice([2, 3, 5])
    weights = [rng.random() ** 2 + 0.01 for _ in range(v)]
    docs = [rng.choices(range(v), weights, k=rng.randrange(50, 800)) for _ in range(8)]
    ds = Datastore.build(docs[:5], tmp_path / "base.vsds", vocab_size=v, progress=False)
    ds.add(docs[5:7])
    ds.add(docs[7:])
    assert ds.num_segments >= 2
    for _ in range(8):
        ctx = rng.choices(range(v), k=rng.randrange(1, 4))
        kw = dict(budget=rng.choice([1, 5, 40]), max_depth=rng.choice([2, 5]), max_match=rng.choice([1, 2, 3]),
                  min_score=rng.choice([0.0, 0.05]), mode=rng.choice(["tree", "chain"]), min_count=rng.choice([1, 2, 5]))
        if kw["mode"] == "tree" and rng.random() < 0.5:
            kw["backoff"] = rng.choice([2, 4])
        assert_same(as_lists(ds.draft(ctx, **kw)), ref.draft(docs, ctx, **kw), f"{kw} ctx={ctx}")


def test_tree_cache_is_exact_and_cleared_by_add():
    rng = random.Random(11)
    docs = [[rng.randrange(4) for _ in range(rng.randrange(20, 300))] for _ in range(10)]
    ds = Datastore.from_documents(docs, vocab_size=8)
    ds.set_cache(capacity=3, min_count=1)  # tiny: exercises generation swaps too
    ctxs = [[rng.randrange(5) for _ in range(rng.randrange(1, 6))] for _ in range(40)]
    kws = [dict(budget=9, max_depth=5, min_count=2), dict(budget=4, max_depth=3, mode="chain", min_count=2),
           dict(budget=9, max_depth=5, min_count=1), dict(budget=9, max_depth=5, min_count=1, backoff=2)]
    for _ in range(3):
        for ctx in ctxs:
            for kw in kws:
                assert_same(as_lists(ds.draft(ctx, **kw)), ref.draft(docs, ctx, **kw), f"{kw} {ctx}")
    info = ds.cache_info()
    assert info["hits"] > 0 and info["entries"] <= 6
    ds.add([[1, 2, 3, 7, 7, 7]])
    docs = docs + [[1, 2, 3, 7, 7, 7]]
    for ctx in ctxs:
        assert_same(as_lists(ds.draft(ctx, budget=9, max_depth=5)), ref.draft(docs, ctx, budget=9, max_depth=5, min_count=2))
    ds.set_cache(0)
    assert ds.cache_info()["entries"] == 0
    with pytest.raises(ValueError, match="capacity must be"):
        ds.set_cache(-1)


def test_docstring_example(tmp_path):
    ds = Datastore.build([[1, 2, 3, 1, 2, 4]], tmp_path / "tiny.vsds", progress=False)
    tree = ds.draft([7, 1, 2], budget=4)
    assert tree.tokens.tolist() == [3, 4, 1, 2] and tree.parents.tolist() == [-1, -1, 0, 2]
    assert tree.scores.tolist() == [0.5] * 4
