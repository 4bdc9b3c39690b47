"""verify's sampling parameters: every bad value is refused at entry by name, and one seed for a batch
gives every request its own random stream (issue 15, items 3, 4 and 9)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

import verispec
from verispec import DraftTree


def _batch(B: int, V: int = 8, seed: int = 0):
    """B identical requests with empty trees: one root row each, the same logits."""
    g = torch.Generator().manual_seed(seed)
    row = torch.randn(1, V, generator=g)
    return row.repeat(B, 1), [DraftTree.empty()] * B


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(temperature=float("inf")), ValueError, "temperature"),
        (dict(temperature=-0.5), ValueError, "temperature"),
        (dict(temperature="1"), TypeError, "temperature"),
        (dict(top_p=1.5), ValueError, "top_p"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_p=float("nan")), ValueError, "top_p"),
        (dict(top_k=1.5), TypeError, "top_k"),
        (dict(top_k=2.0), TypeError, "top_k"),
        (dict(top_k=0), ValueError, "top_k"),
        (dict(top_k=-3), ValueError, "top_k"),
        (dict(top_k=True), TypeError, "top_k"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**64), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(offset=-1), ValueError, "offset"),
        (dict(top_k=torch.tensor([1.5, 2.0])), TypeError, "top_k"),
        (dict(seed=torch.tensor([1.0, 2.0])), TypeError, "seed"),
    ],
)
def test_bad_sampling_parameters_are_named(kwargs, exc, words):
    logits, trees = _batch(2)
    for validate in (True, False):  # scalar checks cost no sync, so they hold without validation too
        with pytest.raises(exc, match=words):
            verispec.verify(logits, trees, mode="exact", backend="torch", validate=validate, **kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(typical_epsilon=float("nan")), "typical_epsilon"),
        (dict(typical_epsilon=1.5), "typical_epsilon"),
        (dict(typical_epsilon=-0.1), "typical_epsilon"),
        (dict(typical_delta=float("nan")), "typical_delta"),
        (dict(typical_delta=float("inf")), "typical_delta"),
        (dict(typical_delta=-1.0), "typical_delta"),
    ],
)
def test_bad_typical_parameters_are_named(kwargs, words):
    logits, trees = _batch(2)
    with pytest.raises(ValueError, match=words):
        verispec.verify(logits, trees, mode="typical", backend="torch", **kwargs)


def test_top_p_tensor_values_are_checked():
    logits, trees = _batch(2)
    for bad in (1.5, float("nan"), 0.0):
        with pytest.raises(ValueError, match="top_p must be in"):
            verispec.verify(logits, trees, mode="exact", top_p=torch.tensor([0.5, bad]), seed=0, backend="torch")


def test_sixty_four_bit_seeds_work():
    """The docs promise 64-bit seeds: 2^63 and 2^64 - 1 must run (as the int64 key with the same bits)."""
    logits, trees = _batch(3)
    for seed in (2**63, 2**64 - 1, 2**63 - 1, 0):
        res = verispec.verify(logits, trees, mode="exact", seed=seed, backend="torch")
        assert res.tokens.shape == (3, 1)
    # 2^64 - 1 and the int64 -1 are the same 64 bits, hence the same key.
    a = verispec.verify(logits, trees, mode="exact", seed=2**64 - 1, offset=3, backend="torch").tokens
    b = verispec.verify(logits, trees, mode="exact", seed=torch.tensor(-1), offset=3, backend="torch").tokens
    assert torch.equal(a, b)


def test_one_seed_gives_each_request_its_own_stream():
    """n samples of one prompt with one seed are n independent draws from the target: chi-square of the
    tokens of 4000 identical requests against softmax(logits). Before the fix every request drew the
    same number, so all 4000 tokens were equal."""
    V, B = 8, 4000
    logits, trees = _batch(B, V, seed=1)
    p = torch.softmax(logits[0].double(), 0)
    for seed in (0, 12345, 2**63 + 7, torch.tensor(99)):
        tok = verispec.verify(logits, trees, mode="exact", seed=seed, offset=0, backend="torch").tokens[:, 0]
        counts = torch.bincount(tok.long(), minlength=V).double()
        assert chisquare(counts.numpy(), (p * B).numpy()).pvalue > 1e-4, counts


def test_one_seed_requests_are_pairwise_independent():
    """Request 0 and request 1 of one batch, over 3000 seeds: their joint token counts match the product
    of the marginals (chi-square of independence on a 3 x 3 table)."""
    V, n = 3, 3000
    logits, trees = _batch(2, V, seed=2)
    p = torch.softmax(logits[0].double(), 0)
    # The keys verify derives, replayed through its own exponential race (one call per seed is slow).
    from verispec.ops import _philox
    from verispec.ops.verify import _race

    keys = _philox.request_keys(torch.arange(n).view(n, 1), torch.arange(2).view(1, 2)).reshape(-1)
    e = _philox.residual_exponentials(keys, torch.full_like(keys, 5), V)
    tok = _race(p.float().expand(2 * n, V), e).view(n, 2)
    for s in (0, 1, n - 1):  # the replay is what verify does
        got = verispec.verify(logits, trees, mode="exact", seed=s, offset=5, backend="torch").tokens[:, 0]
        assert got.tolist() == tok[s].tolist()
    joint = torch.zeros(V, V, dtype=torch.float64)
    joint.index_put_((tok[:, 0], tok[:, 1]), torch.ones(n, dtype=torch.float64), accumulate=True)
    expected = torch.outer(p, p) * n
    assert chisquare(joint.flatten().numpy(), expected.flatten().numpy()).pvalue > 1e-4, joint


def test_per_request_seed_tensors_keep_position_independence():
    """A tensor with one seed per request is used as given: a request's draw does not depend on its
    position in the batch or on the batch size."""
    logits, trees = _batch(4, 16, seed=3)
    seeds = torch.tensor([7, 2**62 + 1, -5, 40])
    full = verispec.verify(logits, trees, mode="exact", seed=seeds, offset=2, backend="torch").tokens[:, 0]
    perm = [2, 0, 3, 1]
    moved = verispec.verify(logits, trees, mode="exact", seed=seeds[perm], offset=2, backend="torch").tokens[:, 0]
    assert torch.equal(full[perm], moved)
    alone = verispec.verify(logits[:1], trees[:1], mode="exact", seed=seeds[1:2], offset=2, backend="torch").tokens[0, 0]
    assert int(alone) == int(full[1])


def test_one_seed_streams_agree_with_triton():
    """The derived keys are part of the problem, so the Triton kernels (interpreted on CPU, conftest) draw
    the same tokens as the torch backend."""
    pytest.importorskip("triton")
    from verispec.ops.triton.verify import verify_triton
    from verispec.ops.verify import verify_problem

    logits, trees = _batch(6, 8, seed=4)
    ref = verispec.verify(logits, trees, mode="exact", seed=77, offset=1, backend="torch").tokens
    got = verify_triton(verify_problem(logits, trees, mode="exact", seed=77, offset=1)).tokens
    assert torch.equal(ref, got)
    assert len(set(ref[:, 0].tolist())) > 1
