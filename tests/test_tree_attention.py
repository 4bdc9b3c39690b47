"""tree_attention against an independent float64 dense-mask reference.

The reference here never looks at ancestor bits: it walks parent lists to decide what each row sees,
builds a dense [T, S] mask and runs plain softmax attention with K/V heads repeated (HF repeat_kv).
Inputs carry NaN wherever no backend may read (padded query rows, cache entries past each request's
tree), and outputs are poisoned before the call, so unwritten or over-read elements fail.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

import verispec
from verispec.ops.tree_attention import tree_attention_problem

pytestmark = [pytest.mark.op("tree_attention"), pytest.mark.backend("torch")]

# ---------------------------------------------------------------------------------------------------
# Case construction (independent of verispec's own helpers)
# ---------------------------------------------------------------------------------------------------


def make_parents(kind: str, n: int, rng: random.Random) -> list[int]:
    """Parents of n draft nodes (-1 = child of the root), node order topological."""
    if kind == "chain":
        return [i - 1 for i in range(n)]
    if kind == "star":
        return [-1] * n
    if kind == "deep":  # a long chain with a few side branches
        return [i - 1 if i % 7 else max(-1, i - 3) for i in range(n)]
    if kind == "binary":
        return [(i - 1) // 2 if i else -1 for i in range(n)]
    return [rng.randrange(-1, i) for i in range(n)]


def row_parents(parents: list[int]) -> list[int]:
    """Parent row of every verification row (row 0 = root has none)."""
    return [-1] + [p + 1 for p in parents]


def visible_rows(rp: list[int], t: int) -> list[int]:
    seen = []
    while t >= 0:
        seen.append(t)
        t = rp[t]
    return seen


class Case:
    """A ragged batch: cache, queries, ancestor words, positions and the dense float64 answer."""

    def __init__(self, prefix: list[int], nodes: list[int], Hq: int, Hkv: int, D: int, *, kinds=None,
                 T: int | None = None, dtype=torch.float32, seed: int = 0, softcap=None, window=None,
                 scale=None, extra_slack: int = 3, words: int | None = None):
        rng = random.Random(seed)
        g = torch.Generator().manual_seed(seed)
        B = len(prefix)
        kinds = kinds or ["random"] * B
        self.parents = [make_parents(kinds[b], nodes[b], rng) if nodes[b] >= 0 else [] for b in range(B)]
        tl = [0 if nodes[b] < 0 else nodes[b] + 1 for b in range(B)]  # nodes=-1 means T_b = 0
        T = T if T is not None else max(max(tl), 1)
        W = words if words is not None else max(1, (T + 31) // 32)
        S = max(prefix[b] + tl[b] for b in range(B)) + extra_slack
        self.B, self.Hq, self.Hkv, self.D, self.T, self.S = B, Hq, Hkv, D, T, S
        self.prefix, self.tl = prefix, tl
        self.softcap, self.window = softcap, window
        self.scale = scale if scale is not None else 1.0 / math.sqrt(D)

        q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
        k = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
        v = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
        self.q64, self.k64, self.v64 = q.clone(), k.clone(), v.clone()
        for b in range(B):  # poison what no backend may read
            q[b, :, tl[b]:] = float("nan")
            k[b, :, prefix[b] + tl[b]:] = float("nan")
            v[b, :, prefix[b] + tl[b]:] = float("nan")
        self.q, self.k, self.v = q.to(dtype), k.to(dtype), v.to(dtype)
        # Inputs as the kernels see them, rounded to dtype, for the float64 oracle.
        self.qr, self.kr, self.vr = (x.to(dtype).to(torch.float64) for x in (self.q64, self.k64, self.v64))

        anc = torch.zeros(B, T, W, dtype=torch.int64)
        pos = torch.zeros(B, T, dtype=torch.int32)
        self.rp = []
        for b in range(B):
            rp = row_parents(self.parents[b]) if tl[b] else []
            self.rp.append(rp)
            for t in range(tl[b]):
                vis = visible_rows(rp, t)
                for u in vis:
                    anc[b, t, u // 32] |= 1 << (u % 32)
                pos[b, t] = prefix[b] + len(vis) - 1
        # Two's-complement reinterpretation of the 32-bit words, then the uint32 view the API takes.
        anc = torch.where(anc >= 2**31, anc - 2**32, anc).to(torch.int32)
        self.ancestors = anc.view(torch.uint32)
        self.positions = pos
        self.prefix_lens = torch.tensor(prefix, dtype=torch.int32)
        self.tree_lens = torch.tensor(tl, dtype=torch.int32)

    def expected(self) -> torch.Tensor:
        out = torch.zeros(self.B, self.Hq, self.T, self.D, dtype=torch.float64)
        rep = self.Hq // self.Hkv
        for b in range(self.B):
            L, n = self.prefix[b], self.tl[b]
            if n == 0:
                continue
            S = L + n
            mask = torch.zeros(n, S, dtype=torch.bool)
            for t in range(n):
                mask[t, :L] = True
                for u in visible_rows(self.rp[b], t):
                    mask[t, L + u] = True
            if self.window:  # positions come from walking parents (see __init__), not from ancestor bits
                qpos = self.positions[b, :n].long()
                kpos = torch.cat([torch.arange(L), qpos])
                mask &= kpos.view(1, S) > qpos.view(n, 1) - self.window
            k = self.kr[b, :, :S].repeat_interleave(rep, dim=0)
            v = self.vr[b, :, :S].repeat_interleave(rep, dim=0)
            s = torch.einsum("htd,hsd->hts", self.qr[b, :, :n], k) * self.scale
            if self.softcap:
                s = self.softcap * torch.tanh(s / self.softcap)
            s = s + torch.where(mask, 0.0, float("-inf"))
            out[b, :, :n] = torch.einsum("hts,hsd->htd", torch.softmax(s, dim=-1), v)
        return out

    def kwargs(self) -> dict:
        return dict(scale=self.scale, softcap=self.softcap, window=self.window)

    def args(self):
        return (self.q, self.k, self.v, self.prefix_lens, self.tree_lens, self.ancestors, self.positions)

    def paged(self, block_size: int, seed: int = 1):
        """The same cache in paged form, blocks shuffled and padded with NaN-filled spares."""
        g = torch.Generator().manual_seed(seed)
        per = (self.S + block_size - 1) // block_size
        nblocks = self.B * per + 2
        perm = torch.randperm(nblocks, generator=g)
        kp = torch.full((nblocks, block_size, self.Hkv, self.D), float("nan"), dtype=self.k.dtype)
        vp = kp.clone()
        table = torch.zeros(self.B, per, dtype=torch.int32)
        for b in range(self.B):
            for i in range(per):
                blk = int(perm[b * per + i])
                table[b, i] = blk
                lo, hi = i * block_size, min((i + 1) * block_size, self.S)
                kp[blk, : hi - lo] = self.k[b, :, lo:hi].transpose(0, 1)
                vp[blk, : hi - lo] = self.v[b, :, lo:hi].transpose(0, 1)
        return kp, vp, table


def check_close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0, what: str = "") -> None:
    got64 = got.to(torch.float64)
    assert not torch.isnan(got64).any(), f"{what}: output has {int(torch.isnan(got64).sum())} NaN elements"
    err = (got64 - want).abs()
    bad = err > atol + rtol * want.abs()
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())} elements off, max err {float(err.max()):.3g}; first at "
                             f"{idx}: got {float(got64[idx])}, want {float(want[idx])}")


TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def run(case: Case, backend: str, *, paged_block: int = 0, poison: bool = True, **extra) -> torch.Tensor:
    kw = case.kwargs() | extra
    args = list(case.args())
    if paged_block:
        kp, vp, table = case.paged(paged_block)
        args[1], args[2] = kp, vp
        kw["block_table"] = table
    if poison:
        kw["out"] = torch.full_like(case.q, float("nan"))
    return verispec.tree_attention(*args, backend=backend, **kw)


# ---------------------------------------------------------------------------------------------------
# The torch reference (the other backends reuse these tests in test_tree_attention_triton.py)
# ---------------------------------------------------------------------------------------------------

SHAPES = [
    # prefix lens, node counts, Hq, Hkv, D, kinds
    ([0], [0], 1, 1, 8, ["chain"]),
    ([5, 0, 17], [3, 6, 0], 4, 1, 16, ["chain", "star", "random"]),
    ([33, 12], [40, 9], 8, 2, 32, ["deep", "binary"]),
    ([7, 100, 1], [70, -1, 130], 8, 1, 16, ["random", "chain", "binary"]),  # T > 128: 5 words
    ([2000, 300], [15, 63], 4, 4, 64, ["star", "random"]),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s[0]}-n{s[1]}-{s[2]}x{s[3]}-D{s[4]}")
def test_reference_matches_dense_mask(shape, dtype):
    prefix, nodes, Hq, Hkv, D, kinds = shape
    case = Case(prefix, nodes, Hq, Hkv, D, kinds=kinds, dtype=dtype, seed=len(prefix) + D)
    check_close(run(case, "torch"), case.expected(), TOL[dtype], what="torch")


@pytest.mark.parametrize("opts", [dict(softcap=5.0), dict(window=9), dict(window=1), dict(softcap=2.0, window=20),
                                  dict(scale=0.3)])
def test_reference_softcap_window_scale(opts):
    case = Case([30, 4], [20, 11], 8, 2, 16, kinds=["random", "deep"], dtype=torch.float64, seed=3, **opts)
    check_close(run(case, "torch"), case.expected(), 1e-10, what=str(opts))


@pytest.mark.parametrize("block_size", [1, 16])
def test_reference_paged(block_size):
    case = Case([30, 0, 51], [9, 4, 33], 4, 2, 16, dtype=torch.float64, seed=5, window=25)
    check_close(run(case, "torch", paged_block=block_size), case.expected(), 1e-10, what="paged")


def test_reference_low_precision_inputs():
    for dtype in (torch.float16, torch.bfloat16):
        case = Case([20, 3], [12, 5], 4, 2, 32, dtype=dtype, seed=2)
        got = run(case, "torch")
        assert got.dtype == dtype
        check_close(got, case.expected(), TOL[dtype], what=str(dtype))


def test_strided_inputs_and_output():
    """HF hands q and caches as views (e.g. a transposed [B, S, H, D] buffer); strides must be honoured."""
    case = Case([9, 14], [5, 8], 4, 2, 16, seed=7)
    q = case.q.transpose(1, 2).contiguous().transpose(1, 2)
    k = case.k.transpose(1, 2).contiguous().transpose(1, 2)
    v = torch.cat([case.v, case.v], dim=-1)[..., : case.D]
    out = torch.full((case.B, case.T, case.Hq, case.D), float("nan")).transpose(1, 2)
    got = verispec.tree_attention(q, k, v, case.prefix_lens, case.tree_lens, case.ancestors, case.positions,
                                  out=out, backend="torch")
    assert got.data_ptr() == out.data_ptr()
    check_close(out, case.expected(), TOL[torch.float32], what="strided")


def test_default_positions_and_scale():
    """positions default to prefix + depth (read from the ancestor bits); scale to 1/sqrt(D)."""
    case = Case([25, 6], [30, 12], 2, 1, 16, seed=11, window=7)
    got = verispec.tree_attention(case.q, case.k, case.v, case.prefix_lens, case.tree_lens, case.ancestors,
                                  window=7, backend="torch")
    check_close(got, case.expected(), TOL[torch.float32], what="defaults")


def test_matches_sdpa_causal_on_a_chain_in_fp32():
    """A chain is plain causal attention; fp32 must agree with SDPA to ~1e-6 (what the HF glue needs)."""
    L, n, H, D = 37, 9, 4, 32
    case = Case([L], [n], H, H, D, kinds=["chain"], seed=13, extra_slack=0)
    got = run(case, "torch", poison=False)
    T = n + 1
    mask = torch.ones(T, L + T, dtype=torch.bool).tril(diagonal=L)
    want = torch.nn.functional.scaled_dot_product_attention(case.q, case.k, case.v, attn_mask=mask)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


def test_nan_in_a_visible_key_propagates():
    """NaN never passes silently: a NaN the rows really read must show up in the output."""
    case = Case([4], [3], 1, 1, 8, seed=1)
    case.k[0, 0, 2, 0] = float("nan")  # a prefix key: every row sees it
    got = run(case, "torch", poison=False)
    assert torch.isnan(got[0, 0, :4]).all()
    with pytest.raises(AssertionError, match="NaN"):
        check_close(got, case.expected(), 1.0)


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def _good():
    case = Case([3, 2], [2, 1], 4, 2, 8, seed=0)
    return case, list(case.args())


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda a: a.__setitem__(0, a[0].double()), TypeError, "k has dtype"),
        (lambda a: a.__setitem__(0, a[0][:, :3]), ValueError, "not a multiple"),
        (lambda a: a.__setitem__(0, a[0][..., :4]), ValueError, "head dim"),
        (lambda a: a.__setitem__(3, a[3].long()), TypeError, "prefix_lens must be int32"),
        (lambda a: a.__setitem__(4, a[4][:1]), ValueError, r"tree_lens must be \[B=2\]"),
        (lambda a: a.__setitem__(5, a[5].view(torch.int32).float()), TypeError, "ancestors must be uint32"),
        (lambda a: a.__setitem__(5, a[5][:, :, :0]), ValueError, "ancestors must be"),
        (lambda a: a.__setitem__(6, a[6][:, :1]), ValueError, "positions must be"),
        (lambda a: a.__setitem__(4, torch.tensor([3, 9], dtype=torch.int32)), ValueError, "request 1 has tree_lens 9"),
        (lambda a: a.__setitem__(3, torch.tensor([3, 90], dtype=torch.int32)), ValueError, "request 1 needs 92"),
        (lambda a: a.__setitem__(3, torch.tensor([-1, 0], dtype=torch.int32)), ValueError, ">= 0"),
        (lambda a: a.__setitem__(0, "q"), TypeError, "q must be a torch.Tensor"),
    ],
)
def test_errors_name_what_and_where(mutate, exc, match):
    _, args = _good()
    mutate(args)
    with pytest.raises(exc, match=match):
        verispec.tree_attention(*args, backend="torch")


def test_option_errors():
    _, args = _good()
    with pytest.raises(ValueError, match="window"):
        verispec.tree_attention(*args, window=0, backend="torch")
    with pytest.raises(ValueError, match="softcap"):
        verispec.tree_attention(*args, softcap=-1.0, backend="torch")
    with pytest.raises(ValueError, match="block_table must be"):
        verispec.tree_attention(*args[:1], args[1].permute(0, 2, 1, 3), args[2].permute(0, 2, 1, 3), *args[3:],
                                block_table=torch.zeros(3, 1, dtype=torch.int32), backend="torch")
    with pytest.raises(ValueError, match="out must match"):
        verispec.tree_attention(*args, out=torch.empty(1), backend="torch")


def test_device_mismatch_and_int32_ancestors():
    case, args = _good()
    args[0] = args[0].to("meta")
    with pytest.raises(ValueError, match="k is on cpu but q is on meta"):
        verispec.tree_attention(*args, backend="torch")
    # int32 words with the same bits as the uint32 ones are accepted and give the same answer.
    a = list(case.args())
    a[5] = a[5].view(torch.int32)
    check_close(verispec.tree_attention(*a, backend="torch"), case.expected(), TOL[torch.float32], what="int32 bits")


@pytest.mark.parametrize("seed", range(12))
def test_reference_random_sweep(seed):
    """Random ragged batches: group sizes 1/4/8, prefixes 0..3000, trees 0..150 rows, options mixed."""
    import random as _r

    rng = _r.Random(seed)
    B = rng.randint(1, 3)
    Hkv = rng.choice([1, 2])
    G = rng.choice([1, 4, 8])
    opts = rng.choice([{}, dict(softcap=rng.uniform(1, 30)), dict(window=rng.randint(1, 300)),
                       dict(softcap=4.0, window=rng.randint(1, 50))])
    case = Case([rng.choice([0, 1, rng.randint(2, 3000)]) for _ in range(B)],
                [rng.choice([-1, 0, rng.randint(1, 150)]) for _ in range(B)], Hkv * G, Hkv,
                rng.choice([8, 16, 64]), kinds=[rng.choice(["chain", "star", "deep", "binary", "random"]) for _ in range(B)],
                dtype=torch.float64, seed=seed, **opts)
    check_close(run(case, "torch"), case.expected(), 1e-10, what=f"seed {seed} {opts}")


def test_split_count_rule():
    from verispec.ops.tree_attention import split_count

    # One request, 8 KV heads, 16 rows x 4 heads: ~2 waves want 33 splits, partial traffic allows 32.
    assert split_count(8, 32768, 64, 64, 132) == 32
    # 128 packed rows in 2 tiles: partials would dominate beyond 8 splits.
    assert split_count(16, 32768, 256, 64, 132) == 8
    # Plenty of programs already, or a short cache: no split.
    assert split_count(512, 32768, 64, 64, 132) == 1
    assert split_count(1, 200, 16, 64, 132) == 1


def hostile_lengths(case: Case, paged_block: int = 0):
    """``(args, block_table, out, problem)`` for a kernel launcher, with device-side lengths a GPU
    backend cannot check without a sync: request 0's tree length runs 8 rows past T, request 1's prefix
    length lies far beyond the cache. q and the ancestor words are views into larger buffers whose
    hidden tails (NaN queries, all-ones masks) would leak into request 0's rows if a kernel read past
    row T. Request 0 must still match the oracle."""

    args = list(case.args())
    q_big = torch.full((case.B, case.Hq, case.T + 8, case.D), float("nan"), dtype=case.q.dtype)
    q_big[:, :, : case.T] = case.q
    words = case.ancestors.view(torch.int32)
    anc_big = torch.full((case.B, case.T + 8, words.shape[2]), -1, dtype=torch.int32)
    anc_big[:, : case.T] = words
    args[0], args[5] = q_big[:, :, : case.T], anc_big[:, : case.T].view(torch.uint32)
    args[3] = torch.tensor([case.prefix[0], case.S + 1000] + case.prefix[2:], dtype=torch.int32)
    args[4] = case.tree_lens.clone()
    args[4][0] += 8
    table = None
    if paged_block:
        args[1], args[2], table = case.paged(paged_block)
    out = torch.full_like(case.q, float("nan"))
    return args, table, out, tree_attention_problem(*args, scale=case.scale, block_table=table, out=out)
