"""Triton and CUDA verify against the per-request torch reference: integer outputs must be identical.

On a CPU-only machine the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set by conftest),
so sizes stay small there; the CUDA backend needs a GPU (tests marked gpu). Both backends use the same
Philox numbers as the reference, so exact modes are compared draw for draw.
"""

from __future__ import annotations

import random

import pytest
import torch
from _verify_inputs import max_draw_boost, peaked_logits, random_trees

import verispec
from verispec import DraftTree, _backends
from verispec.ops import _launch, _philox
from verispec.ops import verify as vmod

pytestmark = pytest.mark.op("verify")

HAS_GPU = torch.cuda.is_available()
BACKENDS = [
    pytest.param("triton", id="triton"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
]


def _dev():
    return torch.device("cuda" if HAS_GPU else "cpu")


def _random_trees(rng, B, V, max_nodes, dup=True):
    return random_trees(rng, B, V, max_nodes, token_range=min(V, 5) if dup else None)


def _capture(logits, trees, **kw):
    """verify()'s normalised problem, to feed the reference and a backend the very same inputs."""
    return vmod.verify_problem(logits, trees, **kw)


def _compare(backend, logits, trees, **kw):
    pr = _capture(logits, trees, **kw)
    ref = vmod.verify_reference(pr)
    fn = _backends._load(_backends.IMPLEMENTATIONS["verify"][backend])
    got = fn(pr)
    for name in ("tokens", "accepted_nodes", "num_accepted"):
        a, b = getattr(ref, name).cpu(), getattr(got, name).cpu()
        assert a.dtype == b.dtype == torch.int32, name
        assert torch.equal(a, b), f"{name}: reference {a.tolist()} vs {backend} {b.tolist()}"
    # the public entry point dispatches to the same backend
    res = verispec.verify(logits, trees, backend=backend, **kw)
    assert torch.equal(res.tokens.cpu(), ref.tokens.cpu())
    return ref


def _logits(trees, V, gen, scale, dtype=torch.float32):
    return peaked_logits(trees, V, gen, scale, max_draw_boost(V, scale)).to(dtype).to(_dev())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V,dtype", [(7, torch.float32), (111, torch.float16), (32000, torch.float32)])
def test_greedy_matches_reference(backend, V, dtype):
    rng, gen = random.Random(V), torch.Generator().manual_seed(V)
    trees = _random_trees(rng, 5, V, 8)
    # peaked rows whose argmax is often a drafted token, so paths go deep
    ref = _compare(backend, _logits(trees, V, gen, 4.0, dtype), trees, mode="greedy")
    assert int(ref.num_accepted.max()) >= 2, ref.num_accepted.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_golden(backend):
    trees = [DraftTree([7, 3, 5], [-1, 0, -1]), DraftTree.empty(), DraftTree.chain([2, 4, 6])]
    logits = torch.zeros(9, 111)
    for r, a in enumerate([7, 9, 0, 1, 4, 2, 4, 8, 3]):
        logits[r, a] = 5.0
    res = verispec.verify(logits.to(_dev()), trees, backend=backend)
    assert res.tokens.cpu().tolist() == [[7, 9, -1, -1], [4, -1, -1, -1], [2, 4, 8, -1]]
    assert res.accepted_nodes.cpu().tolist() == [[0, -1, -1], [-1, -1, -1], [0, 1, -1]]
    assert res.num_accepted.cpu().tolist() == [1, 0, 2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V", [7, 111])
def test_exact_deterministic_drafts(backend, V):
    rng, gen = random.Random(10 + V), torch.Generator().manual_seed(10 + V)
    for trial in range(3):
        trees = _random_trees(rng, 6, V, 9)
        temp = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0, 0.8])
        _compare(backend, _logits(trees, V, gen, 1.5), trees, mode="exact", temperature=temp,
                 seed=torch.arange(6) * 7 + trial, offset=11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V", [7, 111])
def test_exact_with_draft_probs(backend, V):
    rng, gen = random.Random(20 + V), torch.Generator().manual_seed(20 + V)
    for trial in range(3):
        trees = _random_trees(rng, 5, V, 8)
        N = sum(len(t) for t in trees)
        q = torch.softmax(torch.randn(N, V, generator=gen) * 2, dim=1)
        q[:, -1] = 0.0  # zero entries in the draft distribution (never a drafted token: those are < 5)
        q = q / q.sum(1, keepdim=True)
        _compare(backend, _logits(trees, V, gen, 1.0), trees, mode="exact", draft_probs=q.to(_dev()),
                 temperature=torch.tensor([1.0, 0.7, 1.0, 0.0, 1.2]), seed=trial, offset=torch.arange(5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.6), (5, 0.8), (1, None), (None, 1e-6)])
def test_exact_top_k_top_p(backend, top_k, top_p):
    rng, gen = random.Random(30), torch.Generator().manual_seed(30)
    trees = _random_trees(rng, 4, 50, 7)
    _compare(backend, _logits(trees, 50, gen, 1.0), trees, mode="exact", top_k=top_k, top_p=top_p,
             temperature=0.9, seed=5, offset=torch.arange(4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_typical(backend):
    rng, gen = random.Random(40), torch.Generator().manual_seed(40)
    trees = _random_trees(rng, 6, 111, 9)
    _compare(backend, _logits(trees, 111, gen, 2.5), trees, mode="typical", temperature=torch.tensor([1.0, 0.7, 0.0, 1.0, 0.5, 1.0]),
             seed=3, offset=1, typical_epsilon=0.2, typical_delta=0.4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniforms_hook(backend):
    rng, gen = random.Random(50), torch.Generator().manual_seed(50)
    trees = _random_trees(rng, 4, 20, 6)
    N = sum(len(t) for t in trees)
    u = (torch.randint(1, 2**24 + 1, (N,), generator=gen).float() * 2.0**-24).to(_dev())
    e = torch.empty(4, 20).exponential_(generator=gen).to(_dev())
    hook = vmod.VerifyUniforms(u, e)
    for draft_probs in (None, torch.softmax(torch.randn(N, 20, generator=gen), 1).to(_dev())):
        _compare(backend, _logits(trees, 20, gen, 1.0), trees, mode="exact", uniforms=hook, draft_probs=draft_probs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V", [pytest.param(128256, marks=pytest.mark.gpu), 151936])
def test_real_vocab_sizes(backend, V):
    rng, gen = random.Random(V), torch.Generator().manual_seed(V)
    trees = [DraftTree.chain([rng.randrange(V) for _ in range(3)]), DraftTree([1, 2, 1], [-1, -1, 0])]
    logits = _logits(trees, V, gen, 1.0)
    _compare(backend, logits, trees, mode="greedy")
    _compare(backend, logits, trees, mode="exact", seed=1, offset=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_fully_written(backend, monkeypatch):
    """Poison every buffer the kernels fill: a missing store shows up as -7777 or NaN."""
    def poisoned(*shape, dtype, device):
        t = torch.empty(*shape, dtype=dtype, device=device)
        return t.fill_(float("nan") if dtype.is_floating_point else -7777)

    monkeypatch.setattr(_launch, "workspace", poisoned)
    rng, gen = random.Random(60), torch.Generator().manual_seed(60)
    trees = _random_trees(rng, 5, 30, 6) + [DraftTree.empty()]
    for mode in ("greedy", "exact", "typical"):
        ref = _compare(backend, _logits(trees, 30, gen, 2.0), trees, mode=mode, seed=2, max_depth=9)
        assert ref.tokens.shape == (6, 10)


try:
    import triton
    import triton.language as tl

    from verispec.ops.triton.verify import _exponential, _uniform
except ImportError:  # pragma: no cover - triton is a test dependency
    triton = None

if triton is not None:
    _SA = tl.constexpr(_philox.STREAM_ACCEPT)
    _SR = tl.constexpr(_philox.STREAM_RESIDUAL)

    @triton.jit
    def _philox_probe(SEED, OFF, U, E, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        seed = tl.load(SEED)
        off = tl.load(OFF)
        lo = (off & 0xFFFFFFFF).to(tl.uint32)
        hi = ((off >> 32) & 0xFFFFFFFF).to(tl.uint32)
        z = i.to(tl.uint32) * 0
        a0, a1, a2, a3 = tl.philox(seed, (i // 4).to(tl.uint32), z + _SA, z + lo, z + hi)
        la = i % 4
        tl.store(U + i, _uniform(tl.where(la == 0, a0, tl.where(la == 1, a1, tl.where(la == 2, a2, a3)))), mask=ok)
        w0, w1, w2, w3 = tl.philox(seed, (i // 4).to(tl.uint32), z + _SR, z + lo, z + hi)
        lane = i % 4
        bits = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
        tl.store(E + i, _exponential(bits), mask=ok)


@pytest.mark.skipif(triton is None, reason="triton is not installed")
def test_triton_philox_bits_match_torch():
    dev = _dev()
    for seed, off in [(0, 0), (2**40 + 12345, 2**33 + 7), (2**63 - 1, 99)]:
        s = torch.tensor([seed], dtype=torch.int64, device=dev)
        o = torch.tensor([off], dtype=torch.int64, device=dev)
        n = 103
        u = torch.empty(n, device=dev)
        e = torch.empty(n, device=dev)
        _philox_probe[(1,)](s, o, u, e, n, BLOCK=128)
        ref_u = _philox.accept_uniforms(s, o, torch.arange(n, device=dev))
        ref_e = _philox.residual_exponentials(s, o, n)[0]
        assert torch.equal(u, ref_u)
        # log may differ by an ulp across libms (libdevice vs the CPU's), which the last rounding can
        # take to 2 ulp of a mantissa near 1 (2.4e-7); a wrong formula is off by far more.
        torch.testing.assert_close(e, ref_e, rtol=3e-7, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton", "cuda"])
@pytest.mark.parametrize("mode", ["greedy", "exact"])
def test_cuda_graph_capture(backend, mode):
    """With buffers, max_depth and validate=False the call has no host sync and replays in a graph."""
    from verispec import pack_trees
    from verispec.ops.tree_buffers import tree_buffers

    rng, gen = random.Random(70), torch.Generator().manual_seed(70)
    trees = _random_trees(rng, 8, 1000, 8)
    tokens, parents, cu = (t.cuda() for t in pack_trees(trees))
    buf = tree_buffers(parents, cu, max_rows=9, validate=False)
    logits = _logits(trees, 1000, gen, 2.0, torch.bfloat16)
    seed = torch.arange(8, device="cuda")
    offset = torch.zeros(8, dtype=torch.int64, device="cuda")
    kw = dict(mode=mode, buffers=buf, max_depth=8, validate=False, backend=backend, seed=seed, offset=offset)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        eager = verispec.verify(logits, (tokens, parents, cu), **kw)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = verispec.verify(logits, (tokens, parents, cu), **kw)
    offset.add_(3)  # a new step: the graph reads the updated offsets
    g.replay()
    fresh = verispec.verify(logits, (tokens, parents, cu), **kw)
    torch.cuda.synchronize()
    assert torch.equal(out.tokens, fresh.tokens)
    if mode == "greedy":
        assert torch.equal(out.tokens, eager.tokens)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_bf16_logits_gpu(backend):
    rng, gen = random.Random(80), torch.Generator().manual_seed(80)
    trees = _random_trees(rng, 16, 32000, 12)
    logits = _logits(trees, 32000, gen, 3.0, torch.bfloat16)
    _compare(backend, logits, trees, mode="greedy")
    _compare(backend, logits, trees, mode="exact", seed=4, offset=torch.arange(16), temperature=0.7)


def test_cuda_binding_rejects_bad_sizes():
    """The native wrapper re-checks sizes before any launch (runs without a GPU)."""
    from verispec import _native

    if not _native.built_with_cuda():
        pytest.skip("verispec built without CUDA")
    C = _native.native()
    args = dict(
        logits=1, dtype=2, stride_row=100, rows=3, batch=1, vocab=100, mode=1, tokens=1, cu_nodes=1, cu_rows=1,
        first_child=1, next_sibling=1, temperature=1, scale=1, scale_rows=1, threshold=0, typical_epsilon=0.1,
        typical_delta=0.3, draft_probs=0, stride_q=0, seed=1, offset=1, accept_uniforms=0, exponentials=0,
        row_max=1, row_sum=1, row_entropy=1, row_argmax=1, scratch=0, state=1, state_f=1, part_key=1, part_idx=1, splits=1,
        accepted_nodes=1, num_accepted=1, out_tokens=1, max_depth=2, stream=0,
    )
    for bad, match in [
        (dict(splits=3), "splits must be ceil"),
        (dict(stride_row=50), "row stride is smaller"),
        (dict(dtype=7), "dtype code"),
        (dict(draft_probs=1, stride_q=100), "need stride >= vocab and scratch"),
        (dict(accept_uniforms=1), "needs both accept and exponential"),
        (dict(row_max=0), "null pointer"),
        (dict(rows=0), "fewer logits rows than requests"),
    ]:
        with pytest.raises(ValueError, match=match):
            C.verify_cuda(**{**args, **bad})


@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
def test_empty_residual_keeps_previous(backend):
    """q >= p everywhere (q sums to 1.0005) and u = 1 rejects the draft: max(p - q, 0) has no mass, so
    the next token is drawn from p itself (the exponentials make token 0 win, not the argmax 3)."""
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    p = vmod.target_probs(logits[:1], torch.ones(1), None)
    q = p * 1.0005
    hook = vmod.VerifyUniforms(torch.ones(1), torch.tensor([[1e-3, 1.0, 1.0, 1.0]]))
    kw = dict(mode="exact", draft_probs=q.to(_dev()), uniforms=hook)
    trees = [DraftTree.chain([2])]
    if backend == "torch":
        res = verispec.verify(logits.to(_dev()), trees, backend="torch", **kw)
    else:
        res = _compare(backend, logits.to(_dev()), trees, **kw)
    assert res.tokens.cpu().tolist() == [[0, -1]]


@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
def test_strided_logits_rows(backend):
    """A slice of a padded vocabulary is read in place (row stride > V)."""
    rng, gen = random.Random(90), torch.Generator().manual_seed(90)
    trees = _random_trees(rng, 4, 100, 6)
    R = sum(len(t) + 1 for t in trees)
    padded = (torch.randn(R, 128, generator=gen) * 2).to(_dev())
    view = padded[:, :100]
    assert not view.is_contiguous()
    for mode in ("greedy", "exact"):
        want = verispec.verify(view.contiguous(), trees, mode=mode, seed=1, backend="torch")
        got = verispec.verify(view, trees, mode=mode, seed=1, backend=backend)
        assert torch.equal(want.tokens.cpu(), got.tokens.cpu())


def test_buffers_must_match_trees():
    from verispec import pack_trees
    from verispec.ops.tree_buffers import tree_buffers

    trees = [DraftTree.chain([1, 2]), DraftTree([3], [-1])]
    other = [DraftTree([1], [-1]), DraftTree.chain([3, 4])]
    _, par, cu = pack_trees(other)
    with pytest.raises(ValueError, match="different trees"):
        verispec.verify(torch.zeros(5, 9), trees, buffers=tree_buffers(par, cu), backend="torch")
    _, par, cu = pack_trees(trees[:1])
    with pytest.raises(ValueError, match="buffers describe 1 requests / 3 rows, the trees 2 / 5"):
        verispec.verify(torch.zeros(5, 9), trees, buffers=tree_buffers(par, cu), backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_tokens(backend):
    """Tokens masked with finfo.min (probability 0) in every row, tiny and normal temperatures."""
    rng, gen = random.Random(95), torch.Generator().manual_seed(95)
    trees = _random_trees(rng, 4, 40, 6)
    logits = _logits(trees, 40, gen, 1.5)
    logits[:, ::3] = torch.finfo(torch.float32).min
    for kw in (dict(mode="greedy"), dict(mode="exact", temperature=torch.tensor([1.0, 1e-30, 0.5, 2.0])),
               dict(mode="typical", temperature=0.8)):
        ref = _compare(backend, logits, trees, seed=3, **kw)
        assert (ref.tokens[ref.tokens >= 0] % 3 != 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask", ["finfo", "-inf"])
def test_typical_high_entropy_masked(backend, mask):
    """Typical acceptance where the bar is delta * exp(-H), not epsilon: near-flat rows (H about 3.7 nats)
    with every third id masked. A NaN entropy (0 * -inf from an overflowed finfo.min mask, or -inf - -inf)
    turns the bar into epsilon = 0.09 on a GPU and rejects drafts the reference accepts."""
    gen = torch.Generator().manual_seed(7)
    V = 64
    logits = torch.randn(3, V, generator=gen) * 0.3
    logits[:, ::3] = torch.finfo(torch.float32).min if mask == "finfo" else float("-inf")
    trees = [DraftTree.chain([1, 2])]
    for temperature in (0.5, 1.0):
        ref = _compare(backend, logits.to(_dev()), trees, mode="typical", temperature=temperature, seed=1)
        assert ref.tokens.tolist()[0][:2] == [1, 2], "the flat rows' drafts must pass the entropy bar"


@pytest.mark.parametrize("backend", BACKENDS)
def test_neg_inf_masks_over_whole_blocks(backend):
    """-inf over the first 2048-id block (and then some) of every row: (-inf) - (-inf) must not reach
    the running sums. Drafts sit on the row maxima, so greedy and exact accept them all."""
    gen = torch.Generator().manual_seed(9)
    V = 5000
    logits = torch.randn(4, V, generator=gen)
    logits[:, :4096] = float("-inf")
    logits[0, 4500] = logits[1, 4600] = logits[2, 4652] = logits[3, 4700] = 30.0
    trees = [DraftTree.chain([4500, 4600, 4652])]
    for kw in (dict(mode="greedy"), dict(mode="exact", temperature=1.0, seed=2), dict(mode="typical")):
        ref = _compare(backend, logits.to(_dev()), trees, **kw)
        assert ref.tokens.tolist()[0][:4] == [4500, 4600, 4652, 4700], kw
        torch_res = verispec.verify(logits.to(_dev()), trees, backend="torch", **kw)
        assert torch.equal(torch_res.tokens.cpu(), ref.tokens.cpu()), kw


def test_triton_split_race_matches_reference(monkeypatch):
    """The GPU's race splits a row into 4096-id chunks (one program each) and merges them; on CPU the
    launcher uses one chunk per row, so force the GPU chunking in the interpreter."""
    from verispec.ops.triton import verify as tk

    monkeypatch.setattr(tk, "_RACE_CHUNK", 4096)
    rng, gen = random.Random(31), torch.Generator().manual_seed(31)
    V = 9000
    trees = _random_trees(rng, 3, V, 5)
    logits = _logits(trees, V, gen, 2.0)
    N = sum(len(t.tokens) for t in trees)
    q = torch.softmax(torch.randn(N, V, generator=gen) * 2, dim=1)
    for tok, row in zip([x for t in trees for x in t.tokens], q):
        row[tok] += 0.5
    q = q / q.sum(1, keepdim=True)
    for kw in (dict(mode="exact", temperature=1.0), dict(mode="exact", temperature=0.7, top_k=50),
               dict(mode="exact", draft_probs=q.to(_dev()), temperature=1.0)):
        for seed in range(3):
            _compare("triton", logits.to(_dev()), trees, seed=seed, **kw)
