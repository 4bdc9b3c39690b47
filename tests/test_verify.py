"""verify: golden cases, the vectorised torch backend against the per-request loop, errors."""

import random

import pytest
import torch
from _verify_inputs import peaked_logits, random_trees

import verispec
from verispec import DraftTree, pack_trees
from verispec.ops import verify as vmod
from verispec.ops.tree_buffers import tree_buffers

pytestmark = pytest.mark.op("verify")


def _logits_with_argmax(argmaxes, V, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(len(argmaxes), V, generator=g)
    for r, a in enumerate(argmaxes):
        l[r, a] = 20.0
    return l.to(dtype)


def _problem(logits, trees, **kw):
    """The normalised problem verify() hands to backends."""
    return vmod.verify_problem(logits, trees, **kw)


def test_greedy_golden_two_requests():
    # request 0: root -> 7 -> 3, root -> 5.  Root argmax 7 (accept node 0), row of node 0 argmax 9:
    # node 1 (token 3) rejected, emit 9.  Request 1: chain 2 -> 4 -> 6, argmaxes 2, 4, 8: two accepted, emit 8.
    trees = [DraftTree([7, 3, 5], [-1, 0, -1]), DraftTree.chain([2, 4, 6])]
    logits = _logits_with_argmax([7, 9, 0, 1, 2, 4, 8, 3], V=111)
    res = verispec.verify(logits, trees, mode="greedy", backend="torch")
    assert res.accepted_nodes.tolist() == [[0, -1, -1], [0, 1, -1]]
    assert res.num_accepted.tolist() == [1, 2]
    assert res.tokens.tolist() == [[7, 9, -1, -1], [2, 4, 8, -1]]
    assert res.next_tokens.tolist() == [9, 8]
    for t in (res.accepted_nodes, res.num_accepted, res.tokens):
        assert t.dtype == torch.int32


def test_greedy_second_sibling_and_bonus_token():
    # Root argmax 5 matches the second child; its child (token 1) is its argmax; leaf -> bonus argmax 6.
    trees = [DraftTree([7, 5, 1], [-1, -1, 1])]
    logits = _logits_with_argmax([5, 0, 1, 6], V=32)
    res = verispec.verify(logits, trees, backend="torch")
    assert res.accepted_nodes.tolist() == [[1, 2]]
    assert res.tokens.tolist() == [[5, 1, 6]]


def test_greedy_ties_take_lowest_id():
    trees = [DraftTree([4, 2], [-1, -1])]
    logits = torch.zeros(3, 8)
    logits[0, [2, 4]] = 3.0  # tie between 2 and 4: argmax is 2, node 1 accepted
    res = verispec.verify(logits, trees, backend="torch")
    assert res.tokens[0, :2].tolist() == [2, 0]
    assert res.accepted_nodes[0, 0] == 1


def test_ragged_with_empty_trees_and_flat_form():
    trees = [DraftTree.empty(), DraftTree.chain([3]), DraftTree.empty()]
    logits = _logits_with_argmax([1, 3, 4, 2], V=16)
    res = verispec.verify(logits, trees, backend="torch")
    assert res.tokens.tolist() == [[1, -1], [3, 4], [2, -1]]
    assert res.num_accepted.tolist() == [0, 1, 0]
    flat = pack_trees(trees)
    res2 = verispec.verify(logits, flat, backend="torch")
    assert torch.equal(res.tokens, res2.tokens)


def test_all_empty_batch():
    res = verispec.verify(_logits_with_argmax([3, 5], V=9), [DraftTree.empty(), DraftTree.empty()], backend="torch")
    assert res.tokens.tolist() == [[3], [5]] and res.accepted_nodes.shape == (2, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_greedy_dtypes(dtype):
    trees = [DraftTree.chain([3, 4])]
    logits = _logits_with_argmax([3, 4, 5], V=111, dtype=dtype)
    assert verispec.verify(logits, trees, backend="torch").tokens.tolist() == [[3, 4, 5]]


def test_max_depth_pads_outputs():
    res = verispec.verify(_logits_with_argmax([3, 1], V=9), [DraftTree.chain([3])], backend="torch", max_depth=4)
    assert res.tokens.tolist() == [[3, 1, -1, -1, -1]]
    assert res.accepted_nodes.tolist() == [[0, -1, -1, -1]]


def _random_batch(rng, B, V, max_nodes, dup=False):
    return random_trees(rng, B, V, max_nodes, token_range=min(V, 6) if dup else None)


def _peaked_logits(trees, V, gen, scale=3.0):
    return peaked_logits(trees, V, gen, scale, boost=2.0 * scale + 2.0)


@pytest.mark.parametrize("mode", ["greedy", "exact", "typical"])
@pytest.mark.parametrize("V", [7, 111])
def test_vectorised_matches_loop_reference(mode, V):
    rng = random.Random(V)
    gen = torch.Generator().manual_seed(V)
    accepted = []
    for trial in range(4):
        trees = _random_batch(rng, B=5, V=V, max_nodes=9, dup=True)
        logits = _peaked_logits(trees, V, gen, scale=1.0 if mode != "greedy" else 3.0)
        kw = {}
        if mode != "greedy":
            kw = dict(seed=torch.arange(5) + 100 * trial, offset=7, temperature=torch.tensor([1.0, 0.7, 0.0, 1.3, 1.0]))
        p = _problem(logits, trees, mode=mode, **kw)
        a = vmod.verify_torch(p)
        b = vmod.verify_reference(p)
        assert torch.equal(a.tokens, b.tokens), (trial, a.tokens, b.tokens)
        assert torch.equal(a.accepted_nodes, b.accepted_nodes)
        assert torch.equal(a.num_accepted, b.num_accepted)
        accepted += a.num_accepted.tolist()
    # the comparison is not vacuous: drafts were accepted, some walks went at least two deep
    assert sum(accepted) > 0 and max(accepted) >= 2, accepted


def test_invariants_random_trees():
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    trees = _random_batch(rng, B=20, V=50, max_nodes=12, dup=True)
    logits = _peaked_logits(trees, 50, gen, scale=0.5)
    res = verispec.verify(logits, trees, mode="exact", seed=1, offset=0, backend="torch")
    # the path checks below only bite where something was accepted
    assert int(res.num_accepted.sum()) > 0 and int(res.num_accepted.max()) >= 2, res.num_accepted.tolist()
    _, parents, cu = pack_trees(trees)
    for b, t in enumerate(trees):
        k = int(res.num_accepted[b])
        path = res.accepted_nodes[b, :k].tolist()
        # each accepted node is a child of the previous one, and tokens are the drafted ones
        prev = -1
        for node in path:
            assert int(t.parents[node]) == prev
            prev = node
        assert res.tokens[b, :k].tolist() == [int(t.tokens[j]) for j in path]
        assert 0 <= int(res.tokens[b, k]) < 50
        assert (res.tokens[b, k + 1 :] == -1).all() and (res.accepted_nodes[b, k:] == -1).all()


# ---- errors -------------------------------------------------------------------------------------


def test_nan_logits_named():
    logits = _logits_with_argmax([1, 2], V=9)
    logits[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at row 1, vocab id 4"):
        verispec.verify(logits, [DraftTree.chain([1])], backend="torch")
    logits[1, 4] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        verispec.verify(logits, [DraftTree.chain([1])], backend="torch")
    logits[1] = float("-inf")
    with pytest.raises(ValueError, match="row 1 is -inf everywhere"):
        verispec.verify(logits, [DraftTree.chain([1])], backend="torch")


def test_token_outside_vocab():
    with pytest.raises(ValueError, match="node 1 has token id 9 outside the vocabulary of size 9"):
        verispec.verify(torch.zeros(3, 9), [DraftTree.chain([1, 9])], backend="torch")


def test_row_count_mismatch():
    with pytest.raises(ValueError, match="logits has 4 rows but the trees need 3"):
        verispec.verify(torch.zeros(4, 9), [DraftTree.chain([1, 2])], backend="torch")


def test_bad_tree_in_flat_form():
    flat = (torch.tensor([1, 2], dtype=torch.int32), torch.tensor([-1, 3], dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="request 0: parent 3 of node 1"):
        verispec.verify(torch.zeros(3, 9), flat, backend="torch")


def test_draft_probs_shape_and_mode():
    trees = [DraftTree.chain([1, 2])]
    with pytest.raises(ValueError, match=r"draft_probs must have shape \[N, V\] = \[2, 9\]"):
        verispec.verify(torch.zeros(3, 9), trees, mode="exact", draft_probs=torch.ones(2, 8) / 8, backend="torch")
    with pytest.raises(ValueError, match="only used by mode='exact'"):
        verispec.verify(torch.zeros(3, 9), trees, draft_probs=torch.ones(2, 9) / 9, backend="torch")


def test_bad_mode_and_logits():
    with pytest.raises(ValueError, match="mode must be one of"):
        verispec.verify(torch.zeros(2, 9), [DraftTree.chain([1])], mode="nucleus")
    with pytest.raises(TypeError, match="floating point"):
        verispec.verify(torch.zeros(2, 9, dtype=torch.int32), [DraftTree.chain([1])])


def test_tree_buffers_reused():
    trees = [DraftTree([7, 3, 5], [-1, 0, -1])]
    _, parents, cu = pack_trees(trees)
    buf = tree_buffers(parents, cu)
    logits = _logits_with_argmax([7, 3, 0, 1], V=11)
    res = verispec.verify(logits, trees, buffers=buf, max_depth=2, validate=False, backend="torch")
    assert res.tokens.tolist() == [[7, 3, 0]]


# ---- typical (Medusa) -------------------------------------------------------------------------


def test_typical_golden():
    # Root distribution [0.5, 0.3, 0.15, 0.05]: H = 1.142, so with eps=0.1, delta=1 the bar is
    # min(0.1, e^-H = 0.319) = 0.1. Child 0 (token 3, p=0.05) fails, child 1 (token 1, p=0.3) passes.
    root = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    leaf = torch.tensor([30.0, 0.0, 0.0, 0.0])  # the bonus draw is token 0 with probability 1 - 3e-13
    other = torch.zeros(4)
    logits = torch.stack([root, other, leaf])
    trees = [DraftTree([3, 1], [-1, -1])]
    res = verispec.verify(logits, trees, mode="typical", typical_epsilon=0.1, typical_delta=1.0, seed=0, backend="torch")
    assert res.accepted_nodes.tolist() == [[1]]
    assert res.tokens.tolist() == [[1, 0]]
    # a stricter bar (eps=0.4) rejects both: the next token is drawn from the root distribution
    res = verispec.verify(logits, trees, mode="typical", typical_epsilon=0.4, typical_delta=2.0, seed=0, backend="torch")
    assert res.num_accepted.tolist() == [0]


def test_typical_temperature_zero_is_greedy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(7, 40, generator=gen) * 3
    trees = [DraftTree([1, 2, 3], [-1, 0, 1]), DraftTree([4, 5], [-1, -1])]
    a = verispec.verify(logits, trees, mode="greedy", backend="torch")
    b = verispec.verify(logits, trees, mode="typical", temperature=0.0, backend="torch")
    assert torch.equal(a.tokens, b.tokens)


# ---- randomness ----------------------------------------------------------------------------------


def test_batch_order_independence_and_reproducibility():
    rng = random.Random(7)
    gen = torch.Generator().manual_seed(7)
    trees = _random_batch(rng, B=6, V=30, max_nodes=6, dup=True)
    sizes = [len(t) + 1 for t in trees]
    logits = torch.randn(sum(sizes), 30, generator=gen)
    rows = list(torch.split(logits, sizes))
    seeds = torch.tensor([11, 12, 13, 14, 15, 16])
    offsets = torch.tensor([0, 5, 9, 2, 2, 100])
    q_rows = [torch.softmax(torch.randn(len(t), 30, generator=gen), 1) for t in trees]
    for dp in (None, q_rows):
        kw = dict(mode="exact", temperature=0.8, backend="torch")
        a = verispec.verify(logits, trees, seed=seeds, offset=offsets, draft_probs=None if dp is None else torch.cat(dp), **kw)
        a2 = verispec.verify(logits, trees, seed=seeds, offset=offsets, draft_probs=None if dp is None else torch.cat(dp), **kw)
        assert torch.equal(a.tokens, a2.tokens)
        perm = [3, 0, 5, 1, 4, 2]
        b = verispec.verify(
            torch.cat([rows[i] for i in perm]), [trees[i] for i in perm], seed=seeds[perm], offset=offsets[perm],
            draft_probs=None if dp is None else torch.cat([dp[i] for i in perm]), **kw,
        )
        assert torch.equal(a.tokens[perm], b.tokens) and torch.equal(a.accepted_nodes[perm], b.accepted_nodes)


def test_offsets_change_the_draw():
    logits = torch.zeros(1, 1000)  # uniform target: the draw is pure randomness
    trees = [DraftTree.empty()]
    draws = {int(verispec.verify(logits, trees, mode="exact", seed=5, offset=o, backend="torch").tokens[0, 0]) for o in range(20)}
    assert len(draws) > 15


def test_zero_probability_draft_never_accepted():
    # top_k=2 removes token 5 from the target's support: a draft of it is always rejected
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0, 0.0, 1.0]] * 2)
    trees = [DraftTree([5], [-1])] * 64
    res = verispec.verify(logits.repeat(64, 1), trees, mode="exact", top_k=2, seed=torch.arange(64), backend="torch")
    assert (res.num_accepted == 0).all()
    assert set(res.tokens[:, 0].tolist()) <= {0, 1}


def test_philox_known_answers():
    """Random123's Philox4x32-10 known-answer vectors (counter, key -> output)."""
    from verispec.ops._philox import philox4x32

    m = 0xFFFFFFFF
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((m, m, m, m), (m, m), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for ctr, key, want in cases:
        got = philox4x32(*(torch.tensor([c]) for c in ctr), *(torch.tensor([k]) for k in key))
        assert tuple(int(g) for g in got) == want


def test_draft_probs_must_be_distributions_covering_the_drafts():
    trees = [DraftTree.chain([1, 2])]
    logits = torch.zeros(3, 5)
    q = torch.full((2, 5), 0.2)
    with pytest.raises(ValueError, match="draft_probs row 1 .* sums to 1.5"):
        verispec.verify(logits, trees, mode="exact", draft_probs=torch.cat([q[:1], q[1:] * 1.5]), backend="torch")
    q0 = q.clone()
    q0[1] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="node 1 of the flat batch drafts token 2, which has probability 0"):
        verispec.verify(logits, trees, mode="exact", draft_probs=q0, backend="torch")
    with pytest.raises(ValueError, match="negative or non-finite"):
        verispec.verify(logits, trees, mode="exact", draft_probs=-q, backend="torch")


@pytest.mark.parametrize("V", [7, 111])
def test_vectorised_matches_loop_reference_draft_probs_and_filters(V):
    rng = random.Random(100 + V)
    gen = torch.Generator().manual_seed(100 + V)
    accepted = []
    for trial in range(4):
        trees = _random_batch(rng, B=6, V=V, max_nodes=9, dup=True)
        N = sum(len(t) for t in trees)
        logits = _peaked_logits(trees, V, gen, scale=1.0)
        q = torch.softmax(torch.randn(N, V, generator=gen) * 2, dim=1)
        kw = dict(seed=torch.arange(6) + trial, offset=3, temperature=torch.tensor([1.0, 0.7, 0.0, 1.3, 1.0, 0.9]))
        for extra in (dict(draft_probs=q), dict(top_k=torch.tensor([0, 3, 5, 1, 2, 4])), dict(top_p=0.6, top_k=4)):
            p = _problem(logits, trees, mode="exact", **kw, **extra)
            a, b = vmod.verify_torch(p), vmod.verify_reference(p)
            assert torch.equal(a.tokens, b.tokens), (trial, extra.keys(), a.tokens, b.tokens)
            assert torch.equal(a.accepted_nodes, b.accepted_nodes)
            accepted += a.num_accepted.tolist()
    assert sum(accepted) > 0 and max(accepted) >= 2, accepted


def test_masked_tokens_and_tiny_temperatures():
    """finfo.min masks a token exactly; temperatures down to denormals stay finite (argmax)."""
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    logits[0, 1] = torch.finfo(torch.float32).min
    trees = [DraftTree([1], [-1])] * 32
    res = verispec.verify(logits.repeat(32, 1), trees, mode="exact", seed=torch.arange(32), backend="torch")
    assert (res.num_accepted == 0).all() and (res.tokens[:, 0] != 1).all()
    for t in (1e-30, 1e-45):
        res = verispec.verify(logits[:1], [DraftTree.empty()], mode="exact", temperature=t, seed=0, backend="torch")
        assert res.tokens.tolist() == [[2]]
