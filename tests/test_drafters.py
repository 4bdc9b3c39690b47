"""Drafters: prompt lookup, retrieval, tree merging, and the protocol generate relies on."""

from __future__ import annotations

import pytest
import torch

from verispec import DraftTree, NoDrafter, PromptLookupDrafter, RetrievalDrafter
from verispec.drafters import Accepted, Context, Drafter, merge_trees


def _paths(tree: DraftTree) -> set[tuple[int, ...]]:
    toks, par = tree.tokens.tolist(), tree.parents.tolist()
    out = set()
    for i in range(len(toks)):
        p, u = [], i
        while u >= 0:
            p.append(toks[u])
            u = par[u]
        out.add(tuple(reversed(p)))
    return out


def test_protocol_and_no_drafter():
    d = NoDrafter()
    assert isinstance(d, Drafter)
    trees = d.propose([Context(0, [1, 2]), Context(3, [4])])
    assert [len(t) for t in trees] == [0, 0]


def test_prompt_lookup_continues_the_latest_match():
    d = PromptLookupDrafter(num_tokens=3, max_ngram=2, max_matches=1)
    toks = [5, 6, 7, 8, 9, 1, 5, 6]
    (tree,) = d.propose([Context(0, toks)])
    assert tree.tokens.tolist() == [7, 8, 9] and tree.parents.tolist() == [-1, 0, 1]


def test_prompt_lookup_prefers_longer_ngrams_and_merges_matches():
    d = PromptLookupDrafter(num_tokens=2, max_ngram=3, max_matches=3)
    # "1 2" is followed by 3 and by 4; "0 1 2" only by 4: the 3-gram wins, one continuation.
    (t,) = d.propose([Context(0, [1, 2, 3, 9, 0, 1, 2, 4, 7, 0, 1, 2])])
    assert _paths(t) == {(4,), (4, 7)}
    # Without the 3-gram, both continuations of "1 2" are merged into one tree.
    d2 = PromptLookupDrafter(num_tokens=2, max_ngram=2, max_matches=3)
    (t2,) = d2.propose([Context(0, [1, 2, 3, 9, 8, 1, 2, 4, 7, 5, 1, 2])])
    assert _paths(t2) == {(4,), (4, 7), (3,), (3, 9)}
    # the most recent match ranks first
    assert t2.tokens[0].item() == 4


def test_prompt_lookup_no_match_and_growth():
    d = PromptLookupDrafter(num_tokens=4)
    ctx = Context(0, [1, 2, 3])
    assert len(d.propose([ctx])[0]) == 0
    ctx.tokens.extend([1, 2])  # generate appends to the shared list
    (t,) = d.propose([ctx])
    assert t.tokens.tolist() == [3, 1, 2]
    d.update([Accepted(0, [3], 0, True)])  # finished requests are forgotten
    assert 0 not in d._index


def test_prompt_lookup_budget_and_bad_args():
    d = PromptLookupDrafter(num_tokens=6, max_matches=3, budget=4)
    (t,) = d.propose([Context(0, [1, 2, 3, 4, 5, 6, 7, 1, 2, 9, 9, 9, 9, 1, 2])])
    assert 0 < len(t) <= 4
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDrafter(min_ngram=3, max_ngram=2)


def test_merge_trees_union_budget_and_closure():
    a = DraftTree([1, 2, 3], [-1, 0, 1], [0.9, 0.8, 0.1])
    b = DraftTree([1, 4], [-1, 0], [0.5, 0.6])
    m = merge_trees([a, b], budget=10)
    assert _paths(m) == {(1,), (1, 2), (1, 2, 3), (1, 4)}
    m3 = merge_trees([a, b], budget=3)
    assert _paths(m3) == {(1,), (1, 2), (1, 4)}  # best-first by score: 0.9, 0.8, 0.6
    m.validate()
    m2 = merge_trees([a, b], budget=10, max_depth=2)
    assert max(len(p) for p in _paths(m2)) == 2
    assert len(merge_trees([DraftTree.empty()], budget=4)) == 0


def test_retrieval_drafter_uses_the_datastore_and_the_prompt(tmp_path):
    from verispec import Datastore

    ds = Datastore.build([[10, 11, 12, 13, 14], [10, 11, 15]], tmp_path / "d.vsds", vocab_size=50, progress=False)
    d = RetrievalDrafter(str(tmp_path / "d.vsds"), budget=6, max_depth=3, prompt_lookup=False)
    assert d.vocab_size == 50
    (t,) = d.propose([Context(0, [1, 10, 11])])
    assert _paths(t) >= {(12,), (12, 13), (15,)}
    # with prompt lookup, the prompt's own continuation joins the tree
    d2 = RetrievalDrafter(ds, budget=8, max_depth=3)
    d2.begin([[20, 10, 11, 30, 31, 10, 11]])
    (t2,) = d2.propose([Context(0, [20, 10, 11, 30, 31, 10, 11])])
    assert (30,) in _paths(t2) and (12,) in _paths(t2)
    assert len(t2) <= 8
    assert d2.propose([]) == []


def test_retrieval_drafter_bad_args(tmp_path):
    from verispec import Datastore

    ds = Datastore.from_documents([[1, 2, 3]])
    with pytest.raises(ValueError, match="budget"):
        RetrievalDrafter(ds, budget=0)
    with pytest.raises(FileNotFoundError):
        RetrievalDrafter(str(tmp_path / "missing.vsds"))


def test_draft_trees_are_valid_for_random_contexts():
    g = torch.Generator().manual_seed(0)
    d = PromptLookupDrafter(num_tokens=5, max_matches=4)
    for i in range(50):
        toks = torch.randint(0, 6, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g).tolist()
        (t,) = d.propose([Context(i, toks)])
        t.validate(vocab_size=6)
        # every path is a real continuation somewhere in the context
        for p in _paths(t):
            s = toks + [-1]
            assert any(toks[j:j + len(p)] == list(p) for j in range(1, len(s)))


def test_trim_to_cost_keeps_the_best_prefix():
    from verispec.cost import cpu_row_cost, gpu_row_cost
    from verispec.drafters import trim_to_cost

    t = DraftTree([1, 2, 3, 4, 5], [-1, 0, 1, 2, 3], [0.9, 0.8, 0.7, 0.1, 0.05])
    flat = lambda rows: 1.0  # noqa: E731  extra rows free: keep everything
    assert len(trim_to_cost(t, flat)) == 5
    steep = lambda rows: float(rows)  # noqa: E731  every row costs a forward: drafting never pays
    assert len(trim_to_cost(t, steep)) == 0
    # CPU: 3 rows cost ~1, 4+ rows ~1.45: the first two nodes are kept, the rest do not pay
    kept = trim_to_cost(t, cpu_row_cost)
    assert kept.tokens.tolist() == [1, 2]
    assert len(trim_to_cost(t, gpu_row_cost)) == 5
    assert len(trim_to_cost(DraftTree([1], [-1]), steep)) == 1  # unscored trees are left alone


def test_retrieval_drafter_with_row_cost():
    from verispec import Datastore
    from verispec.cost import cpu_row_cost

    ds = Datastore.from_documents([[10, 11, 12, 13, 14, 15, 16]] * 3, vocab_size=50)
    full = RetrievalDrafter(ds, budget=6, max_depth=6, prompt_lookup=False).propose([Context(0, [10, 11])])[0]
    cut = RetrievalDrafter(ds, budget=6, max_depth=6, prompt_lookup=False, row_cost=cpu_row_cost)
    assert "row_cost=cpu_row_cost" in repr(cut)
    t = cut.propose([Context(0, [10, 11])])[0]
    assert len(full) == 5 and 0 < len(t) <= len(full)
    assert t.tokens.tolist() == full.tokens.tolist()[: len(t)]


def test_retrieval_drafter_backs_off_when_drafts_keep_failing():
    from verispec import Datastore

    ds = Datastore.from_documents([[10, 11, 12, 13]], vocab_size=50)
    d = RetrievalDrafter(ds, budget=2, max_depth=2, prompt_lookup=False, backoff=2)
    d.begin([[10, 11]])
    ctx = Context(0, [10, 11])
    sizes = []
    for _ in range(9):
        sizes.append(len(d.propose([ctx])[0]))
        d.update([Accepted(0, [40], 0, False)])  # every draft rejected
    # two misses, then 1 step off, a probe, 2 off, a probe, 4 off
    assert sizes == [2, 2, 0, 2, 0, 0, 2, 0, 0]
    d.propose([ctx])
    d.update([Accepted(0, [12, 13], 1, False)])  # ... until something is accepted again
    assert d._misses[0] == 0
    never = RetrievalDrafter(ds, budget=2, max_depth=2, prompt_lookup=False, backoff=0)
    for _ in range(5):
        assert len(never.propose([ctx])[0]) == 2
        never.update([Accepted(0, [40], 0, False)])
