"""commit_kv: accepted path rows move right after the prefix, in every layer, both cache layouts."""

from __future__ import annotations

import random

import pytest
import torch

import verispec
import verispec._backends as verispec_backends
from verispec.ops.commit_kv import path_rows_from_accepted

pytestmark = pytest.mark.op("commit_kv")

BACKENDS = ["torch", "triton"]


def random_path(rng: random.Random, n_rows: int, max_len: int) -> list[int]:
    """A strictly increasing row path starting at the root row 0 (as an accepted tree path is)."""
    if n_rows == 0:
        return []
    k = rng.randint(0, min(max_len - 1, n_rows - 1))
    return [0] + sorted(rng.sample(range(1, n_rows), k))


def make_batch(prefix, tree, P, rng):
    paths = [random_path(rng, tree[b], P) for b in range(len(prefix))]
    rows = torch.full((len(prefix), P), -1, dtype=torch.int32)
    for b, p in enumerate(paths):
        rows[b, : len(p)] = torch.tensor(p, dtype=torch.int32)
    return paths, rows


def expected_contiguous(cache, prefix, paths):
    exp = cache.clone()
    for b, p in enumerate(paths):
        for i, r in enumerate(p):
            exp[b, :, prefix[b] + i] = cache[b, :, prefix[b] + r]
    return exp


def to_paged(cache: torch.Tensor, block_size: int, perm: torch.Tensor):
    B, H, S, D = cache.shape
    per = (S + block_size - 1) // block_size
    paged = torch.full((B * per + 1, block_size, H, D), -7777.0, dtype=cache.dtype)
    table = perm[: B * per].view(B, per).to(torch.int32)
    for b in range(B):
        for i in range(per):
            lo, hi = i * block_size, min(S, (i + 1) * block_size)
            paged[table[b, i], : hi - lo] = cache[b, :, lo:hi].transpose(0, 1)
    return paged, table


def from_paged(paged, table, S):
    B, per = table.shape
    H, D = paged.shape[2], paged.shape[3]
    out = torch.empty(B, H, per * paged.shape[1], D, dtype=paged.dtype)
    for b in range(B):
        out[b] = paged[table[b].long()].reshape(-1, H, D).transpose(0, 1)
    return out[:, :, :S]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_commit_contiguous_all_layers(backend, dtype, seed):
    rng = random.Random(seed)
    prefix, tree, P = [5, 0, 12, 3], [9, 1, 40, 0], 8
    B, H, D, layers = len(prefix), 2, 16, 3
    S = max(p + t for p, t in zip(prefix, tree)) + 2
    paths, rows = make_batch(prefix, tree, P, rng)
    ks = [torch.randn(B, H, S, D).to(dtype) for _ in range(layers)]
    vs = [torch.randn(B, H, S, D).to(dtype) for _ in range(layers)]
    want_k = [expected_contiguous(c, prefix, paths) for c in ks]
    want_v = [expected_contiguous(c, prefix, paths) for c in vs]
    lens = verispec.commit_kv(ks, vs, torch.tensor(prefix, dtype=torch.int32), rows, backend=backend)
    assert lens.dtype == torch.int32
    assert lens.tolist() == [p + len(path) for p, path in zip(prefix, paths)]
    for got, want in zip(ks + vs, want_k + want_v):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_commit_paged(backend, block_size):
    rng = random.Random(block_size)
    prefix, tree, P = [7, 30, 0], [12, 6, 20], 6
    B, H, D = len(prefix), 2, 8
    S = max(p + t for p, t in zip(prefix, tree)) + 1
    paths, rows = make_batch(prefix, tree, P, rng)
    dense = [torch.randn(B, H, S, D) for _ in range(2)]
    per = (S + block_size - 1) // block_size
    perm = torch.randperm(B * per + 1, generator=torch.Generator().manual_seed(block_size))
    paged = [to_paged(c, block_size, perm) for c in dense]
    table = paged[0][1]
    spare = perm[B * per]  # the block no request owns must stay untouched
    lens = verispec.commit_kv([paged[0][0]], [paged[1][0]], torch.tensor(prefix, dtype=torch.int32), rows,
                              block_table=table, backend=backend)
    assert lens.tolist() == [p + len(path) for p, path in zip(prefix, paths)]
    for (pg, _), c in zip(paged, dense):
        assert torch.equal(from_paged(pg, table, S), expected_contiguous(c, prefix, paths))
        assert (pg[spare] == -7777.0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_commit_strided_cache_and_long_overlapping_path(backend):
    """A transposed (HF-style view) cache, and a path whose sources and destinations overlap heavily."""
    B, H, S, D, L = 1, 3, 80, 8, 4
    base = torch.randn(B, S, H, D)
    cache = base.transpose(1, 2)  # [B, H, S, D] view with non-standard strides
    path = [0] + list(range(2, 70, 2))  # row 2i moves to L+i: most destinations were sources of earlier entries
    rows = torch.tensor([path], dtype=torch.int32)
    want = expected_contiguous(cache.clone(), [L], [path])
    other = cache.clone()
    lens = verispec.commit_kv(cache, other, torch.tensor([L], dtype=torch.int32), rows, backend=backend)
    assert lens.tolist() == [L + len(path)]
    assert torch.equal(cache, want)
    assert torch.equal(other, want)


def test_path_rows_from_accepted():
    acc = torch.tensor([[2, 5, -1], [-1, -1, -1], [0, 1, 4]], dtype=torch.int32)
    num = torch.tensor([2, 0, 3], dtype=torch.int32)
    rows = path_rows_from_accepted(acc, num)
    assert rows.tolist() == [[0, 3, 6, -1], [0, -1, -1, -1], [0, 1, 2, 5]]


def test_round_trip_with_tree_attention():
    """After commit, attending over the committed path as a chain gives what the tree rows gave before."""
    torch.manual_seed(0)
    L, H, D = 6, 2, 8
    parents = [-1, 0, -1, 1, 2, 3]  # node j is row j+1; rows 0-1-2-4-6 form a root-to-leaf path
    rp = [-1] + [p + 1 for p in parents]
    T = len(rp)
    anc = torch.zeros(1, T, 1, dtype=torch.int64)
    depth = []
    for t in range(T):
        u, d = t, 0
        while u >= 0:
            anc[0, t, 0] |= 1 << u
            u, d = rp[u], d + 1
        depth.append(d - 1)
    anc = anc.to(torch.int32).view(torch.uint32)
    k, v = torch.randn(1, H, L + T, D, dtype=torch.float64), torch.randn(1, H, L + T, D, dtype=torch.float64)
    q = torch.randn(1, H, T, D, dtype=torch.float64)
    pl, tl = torch.tensor([L], dtype=torch.int32), torch.tensor([T], dtype=torch.int32)
    before = verispec.tree_attention(q, k, v, pl, tl, anc, backend="torch")
    path = [0, 1, 2, 4, 6]
    verispec.commit_kv(k, v, pl, torch.tensor([path], dtype=torch.int32), backend="torch")
    n = len(path)
    chain = torch.tensor([[[(1 << (t + 1)) - 1] for t in range(n)]], dtype=torch.int32).view(torch.uint32)
    after = verispec.tree_attention(q[:, :, path], k, v, pl, torch.tensor([n], dtype=torch.int32), chain,
                                    backend="torch")
    torch.testing.assert_close(after, before[:, :, path], atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "rows, match",
    [
        ([[1, 2, -1]], "start at the root"),
        ([[0, 3, 2]], "strictly increase"),
        ([[0, -1, 4]], "after the -1 padding"),
        ([[0, 30, -1]], "beyond the cache capacity"),
    ],
)
def test_commit_value_errors(rows, match):
    cache = torch.zeros(1, 1, 12, 4)
    with pytest.raises(ValueError, match=match):
        verispec.commit_kv(cache, cache.clone(), torch.tensor([4], dtype=torch.int32),
                           torch.tensor(rows, dtype=torch.int32), backend="torch")


def test_commit_shape_errors():
    cache = torch.zeros(2, 1, 12, 4)
    pl, rows = torch.tensor([1, 2], dtype=torch.int32), torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match="k_cache has 2 layers but v_cache has 1"):
        verispec.commit_kv([cache, cache], [cache], pl, rows, backend="torch")
    with pytest.raises(TypeError, match="path_rows must be int32"):
        verispec.commit_kv(cache, cache, pl, rows.long(), backend="torch")
    with pytest.raises(ValueError, match=r"v_cache\[0\] holds 3 requests"):
        verispec.commit_kv(cache, torch.zeros(3, 1, 12, 4), pl, rows, backend="torch")
    with pytest.raises(ValueError, match=r"path_rows must be \[B=2, P\]"):
        verispec.commit_kv(cache, cache, pl, rows[0], backend="torch")
    with pytest.raises(TypeError, match="k_cache must be a tensor or a list"):
        verispec.commit_kv("k", cache, pl, rows, backend="torch")


def test_cuda_backend_is_refused_on_cpu_tensors():
    cache = torch.zeros(1, 1, 4, 8)
    with pytest.raises(verispec_backends.BackendUnavailable, match="cuda"):
        verispec.commit_kv(cache, cache, torch.tensor([1], dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                           backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("paged", [False, True])
def test_gpu_commit_matches_reference(backend, dtype, paged):
    """32 layers of Llama-3-8B-shaped caches, 8 requests, paths up to 20 rows, in one call."""
    rng = random.Random(7)
    B, H, D, layers, P = 8, 8, 128, 32, 20
    prefix = [rng.randint(0, 3000) for _ in range(B)]
    tree = [rng.randint(1, 64) for _ in range(B)]
    S = max(p + t for p, t in zip(prefix, tree)) + 5
    paths, rows = make_batch(prefix, tree, P, rng)
    pl = torch.tensor(prefix, dtype=torch.int32)
    kwargs = {}
    if paged:
        bs = 16
        per = (S + bs - 1) // bs
        perm = torch.randperm(B * per + 1, generator=torch.Generator().manual_seed(3))
        table = perm[: B * per].view(B, per).to(torch.int32)
        ks = [torch.randn(B * per + 1, bs, H, D, device="cuda").to(dtype) for _ in range(layers)]
        vs = [torch.randn(B * per + 1, bs, H, D, device="cuda").to(dtype) for _ in range(layers)]
        ref_k, ref_v = [t.clone() for t in ks], [t.clone() for t in vs]
        verispec.commit_kv(ref_k, ref_v, pl.cuda(), rows.cuda(), block_table=table.cuda(), backend="torch")
        kwargs["block_table"] = table.cuda()
    else:
        ks = [torch.randn(B, H, S, D, device="cuda").to(dtype) for _ in range(layers)]
        vs = [torch.randn(B, H, S, D, device="cuda").to(dtype) for _ in range(layers)]
        ref_k = [expected_contiguous(t.cpu(), prefix, paths).cuda() for t in ks]
        ref_v = [expected_contiguous(t.cpu(), prefix, paths).cuda() for t in vs]
    lens = verispec.commit_kv(ks, vs, pl.cuda(), rows.cuda(), backend=backend, **kwargs)
    torch.cuda.synchronize()
    assert lens.cpu().tolist() == [p + len(path) for p, path in zip(prefix, paths)]
    for got, want in zip(ks + vs, ref_k + ref_v):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_commit_strided_lengths_and_rows(backend):
    rng = random.Random(5)
    prefix, tree = [3, 8], [10, 6]
    paths, rows = make_batch(prefix, tree, 5, rng)
    cache = torch.randn(2, 2, 20, 4)
    want = expected_contiguous(cache, prefix, paths)
    pl = torch.tensor([[prefix[0], 99], [prefix[1], 99]], dtype=torch.int32)[:, 0]
    rows_t = rows.t().contiguous().t()  # column-major view
    lens = verispec.commit_kv(cache, cache.clone(), pl, rows_t, backend=backend)
    assert lens.tolist() == [p + len(x) for p, x in zip(prefix, paths)]
    assert torch.equal(cache, want)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_commit_cuda_graph_replay(backend):
    """Captured once (after a warm-up that caches the layer table), replayed with new paths."""
    B, H, S, D, layers = 4, 8, 300, 128, 4
    ks = [torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(layers)]
    vs = [torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(layers)]
    pl = torch.tensor([10, 0, 100, 7], dtype=torch.int32, device="cuda")
    rows = torch.full((B, 6), -1, dtype=torch.int32, device="cuda")
    verispec.commit_kv(ks, vs, pl, rows, backend=backend)  # warm-up: compiles, caches the layer table
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        lens = verispec.commit_kv(ks, vs, pl, rows, backend=backend)
    rng = random.Random(9)
    for _ in range(2):
        paths, new_rows = make_batch([10, 0, 100, 7], [30, 5, 60, 1], 6, rng)
        rows.copy_(new_rows.cuda())
        want = [expected_contiguous(c.cpu(), [10, 0, 100, 7], paths) for c in ks + vs]
        graph.replay()
        torch.cuda.synchronize()
        assert lens.cpu().tolist() == [p + len(x) for p, x in zip([10, 0, 100, 7], paths)]
        for got, exp in zip(ks + vs, want):
            assert torch.equal(got.cpu(), exp)


@pytest.mark.parametrize("rows,L", [
    ([[0, -1, 0]], 9),        # root, padding, then a row again: nothing moves (row_i <= i)
    ([[0, 5]], 8),            # source 13 beyond the capacity 10
    ([[0, 1, 1, 2]], 6),      # rows equal to or below their index stay put
])
def test_triton_kernel_malformed_paths_touch_nothing(rows, L):
    """On a GPU, lengths and rows are not checked on the host (that would sync): the kernel itself must
    keep malformed paths inside the request's slots. Every entry listed here must leave the cache alone
    (an unchecked destination L + i would land in the next head's memory)."""
    from verispec.ops.triton.commit_kv import commit_kv_fwd

    cache = torch.randn(1, 2, 10, 16)
    before = cache.clone()
    commit_kv_fwd([cache], torch.tensor([L], dtype=torch.int32), torch.tensor(rows, dtype=torch.int32), None)
    assert torch.equal(cache, before)


def test_triton_kernel_malformed_path_moves_only_safe_rows():
    """[0, 2, 1, 5] at L = 2: row 2 > 1 moves to 3, row 1 < 2 stays, row 5 > 3 moves to 5; nothing else."""
    from verispec.ops.triton.commit_kv import commit_kv_fwd

    cache = torch.randn(1, 1, 10, 4)
    want = cache.clone()
    want[0, 0, 3] = cache[0, 0, 4]
    want[0, 0, 5] = cache[0, 0, 7]
    commit_kv_fwd([cache], torch.tensor([2], dtype=torch.int32), torch.tensor([[0, 2, 1, 5]], dtype=torch.int32), None)
    assert torch.equal(cache, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_listed_twice_moves_once(backend):
    """Layers sharing one K/V tensor: moving it twice in place would race on a GPU (and a second pass
    over an already moved path would move it again)."""
    from verispec.ops.commit_kv import _grouped

    rng = random.Random(5)
    prefix, tree, P = [3, 1], [9, 6], 5
    paths, rows = make_batch(prefix, tree, P, rng)
    shared = torch.randn(2, 2, 16, 8)
    other = torch.randn(2, 2, 16, 8)
    want_shared, want_other = expected_contiguous(shared, prefix, paths), expected_contiguous(other, prefix, paths)
    assert len(_grouped([shared, other, shared])[0]) == 2
    verispec.commit_kv([shared, shared], [other, shared], torch.tensor(prefix, dtype=torch.int32), rows,
                       backend=backend)
    assert torch.equal(shared, want_shared) and torch.equal(other, want_other)


def test_expanded_cache_is_refused():
    cache = torch.randn(1, 1, 8, 4).expand(2, 2, 8, 4)
    with pytest.raises(ValueError, match=r"k_cache\[0\] has a zero stride"):
        verispec.commit_kv(cache, torch.randn(2, 2, 8, 4), torch.zeros(2, dtype=torch.int32),
                           torch.zeros(2, 1, dtype=torch.int32))


def test_pointer_table_lives_on_the_first_layer():
    """The per-layer offset table is made once per layer list and owned by the first layer (no global
    cache whose eviction could free a table a captured CUDA graph still reads)."""
    from verispec.ops._launch import _ATTR
    from verispec.ops.commit_kv import commit_kv_problem
    from verispec.ops.triton.commit_kv import commit_kv_triton

    layers = [torch.randn(1, 1, 8, 4) for _ in range(4)]
    lens, rows = torch.tensor([2], dtype=torch.int32), torch.tensor([[0, 3]], dtype=torch.int32)
    commit_kv_triton(commit_kv_problem(layers[:2], layers[2:], lens, rows))
    tables = getattr(layers[0], _ATTR)
    (first,) = tables.values()
    commit_kv_triton(commit_kv_problem(layers[:2], layers[2:], lens, rows))
    assert len(tables) == 1 and next(iter(tables.values())) is first
    assert first.tolist() == [(t.data_ptr() - layers[0].data_ptr()) // 4 for t in layers]
    # New view objects of the same memory (a caller slicing its cache every step) reuse it: no copy.
    views = [t[:] for t in layers]
    commit_kv_triton(commit_kv_problem(views[:2], views[2:], lens, rows))
    assert next(iter(getattr(views[0], _ATTR).values())) is first
