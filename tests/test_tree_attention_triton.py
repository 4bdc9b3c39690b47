"""Triton tree attention against the float64 dense-mask oracle.

On CPU the kernels run in the Triton interpreter (TRITON_INTERPRET=1 from conftest) at small sizes in
fp32/fp16 (the interpreter mishandles bf16 math). The `gpu` tests run the same checks at real sizes
in bf16/fp16 when a CUDA device is present.
"""

from __future__ import annotations

import pytest
import torch
from test_tree_attention import TOL, Case, check_close, run

from verispec.ops.tree_attention import tree_attention_problem
from verispec.ops.triton.tree_attention import tree_attention_fwd

pytestmark = [pytest.mark.op("tree_attention"), pytest.mark.backend("triton")]

CPU_SHAPES = [
    # prefix lens, node counts, Hq, Hkv, D, kinds
    ([0], [0], 1, 1, 16, ["chain"]),
    ([5, 0, 17], [3, 6, -1], 4, 1, 16, ["chain", "star", "random"]),  # T_b = 0 for request 2
    ([33, 70], [40, 9], 8, 2, 32, ["deep", "binary"]),  # 41 rows: two ancestor words
    ([3], [0], 4, 4, 64, ["chain"]),  # D = 64, a lone root
]


def triton_run(case: Case, *, num_splits=None, paged_block=0, dtype=None):
    """Call the kernel launcher directly so tests can force the number of splits."""
    args = list(case.args())
    block_table = None
    if paged_block:
        args[1], args[2], block_table = case.paged(paged_block)
    out = torch.full_like(case.q, float("nan"))
    p = tree_attention_problem(*args, scale=case.scale, softcap=case.softcap, window=case.window, block_table=block_table, out=out)
    return tree_attention_fwd(p, out, num_splits=num_splits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", CPU_SHAPES, ids=lambda s: f"L{s[0]}-n{s[1]}-{s[2]}x{s[3]}-D{s[4]}")
def test_triton_matches_dense_mask(shape, dtype):
    prefix, nodes, Hq, Hkv, D, kinds = shape
    case = Case(prefix, nodes, Hq, Hkv, D, kinds=kinds, dtype=dtype, seed=len(prefix) + D)
    check_close(run(case, "triton"), case.expected(), TOL[dtype], what="triton")


@pytest.mark.parametrize("num_splits", [1, 3])
def test_triton_split_kv(num_splits):
    """Split-KV partials merged by the combine kernel; splits with empty ranges must be harmless."""
    case = Case([150, 2], [5, 12], 4, 2, 16, seed=4)
    check_close(triton_run(case, num_splits=num_splits), case.expected(), TOL[torch.float32], what=f"splits={num_splits}")


def test_triton_tree_beyond_128_rows():
    """T = 140: five ancestor words, several packed-row tiles, rows that see many tree keys."""
    case = Case([20], [139], 2, 1, 16, kinds=["deep"], seed=8)
    check_close(triton_run(case, num_splits=1), case.expected(), TOL[torch.float32], what="T=140")


@pytest.mark.parametrize("opts", [dict(softcap=5.0), dict(window=9), dict(softcap=3.0, window=30)])
def test_triton_softcap_window(opts):
    case = Case([40, 3], [20, 11], 4, 2, 16, kinds=["random", "deep"], seed=3, **opts)
    check_close(triton_run(case, num_splits=2), case.expected(), TOL[torch.float32], what=str(opts))


@pytest.mark.parametrize("block_size", [1, 16])
def test_triton_paged(block_size):
    case = Case([30, 0, 51], [9, 4, 20], 4, 2, 16, seed=5, window=40)
    check_close(triton_run(case, paged_block=block_size, num_splits=2), case.expected(), TOL[torch.float32],
                what=f"paged bs={block_size}")


def test_triton_strided_output_and_inputs():
    case = Case([9, 14], [5, 8], 4, 2, 16, seed=7)
    q = case.q.transpose(1, 2).contiguous().transpose(1, 2)
    k = case.k.transpose(1, 2).contiguous().transpose(1, 2)
    out = torch.full((case.B, case.T, case.Hq, case.D), float("nan")).transpose(1, 2)
    import verispec

    verispec.tree_attention(q, k, case.v, case.prefix_lens, case.tree_lens, case.ancestors, case.positions,
                            out=out, backend="triton")
    check_close(out, case.expected(), TOL[torch.float32], what="strided")


def test_triton_rejects_float64():
    case = Case([3], [2], 1, 1, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        run(case, "triton")


# ---------------------------------------------------------------------------------------------------
# GPU: real sizes, bf16/fp16 (skipped without a CUDA device)
# ---------------------------------------------------------------------------------------------------


def _to(case: Case, device) -> Case:
    for name in ("q", "k", "v", "prefix_lens", "tree_lens", "ancestors", "positions"):
        setattr(case, name, getattr(case, name).to(device))
    return case


def _paged_to(case: Case, block_size: int, device):
    kp, vp, table = case.paged(block_size)
    return kp.to(device), vp.to(device), table.to(device)


GPU_SHAPES = [
    ([1000, 3000, 0, 17], [15, 63, 127, 0], 32, 8, 128, ["star", "random", "deep", "chain"]),
    ([4000], [127], 32, 8, 128, ["binary"]),
    ([513, 2048], [40, 7], 16, 2, 64, ["random", "chain"]),
    ([700, 90], [33, 129], 8, 1, 256, ["random", "deep"]),  # MQA, D=256, 5 words
]


_ORACLE: dict = {}


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: f"L{s[0]}-D{s[4]}-{s[2]}x{s[3]}")
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("opts", [{}, dict(softcap=50.0, window=512)], ids=["plain", "softcap+window"])
def test_gpu_matches_dense_mask(backend, dtype, shape, layout, opts):
    prefix, nodes, Hq, Hkv, D, kinds = shape
    case = Case(prefix, nodes, Hq, Hkv, D, kinds=kinds, dtype=dtype, seed=D + len(prefix), **opts)
    # The float64 oracle costs seconds at these prefixes; backends and layouts share it.
    key = (repr(shape), dtype, repr(sorted(opts.items())))
    want = _ORACLE.get(key)
    if want is None:
        want = _ORACLE[key] = case.expected()
    _to(case, "cuda")
    extra = {}
    args = list(case.args())
    if layout == "paged":
        args[1], args[2], extra["block_table"] = _paged_to(case, 16, "cuda")
    import verispec

    out = torch.full_like(case.q, float("nan"))
    verispec.tree_attention(*args, backend=backend, out=out, **case.kwargs(), **extra)
    torch.cuda.synchronize()
    check_close(out.cpu(), want, TOL[dtype], rtol=TOL[dtype], what=f"{backend} {layout}")


@pytest.mark.gpu
@pytest.mark.parametrize("num_splits", [1, 2, 7, 32])
def test_gpu_split_counts_agree(num_splits):
    case = Case([8000], [64], 32, 8, 128, kinds=["random"], dtype=torch.bfloat16, seed=1)
    want = case.expected()
    _to(case, "cuda")
    out = torch.full_like(case.q, float("nan"))
    p = tree_attention_problem(*case.args(), scale=case.scale, out=out)
    tree_attention_fwd(p, out, num_splits=num_splits)
    torch.cuda.synchronize()
    check_close(out.cpu(), want, TOL[torch.bfloat16], rtol=TOL[torch.bfloat16], what=f"splits={num_splits}")


def test_triton_long_prefix_gqa8():
    """A few thousand prefix keys through split-KV in the interpreter; 8 query heads per KV head."""
    case = Case([2500, 37], [6, 0], 8, 1, 16, kinds=["random", "chain"], seed=21)
    check_close(triton_run(case, num_splits=3), case.expected(), TOL[torch.float32], what="L=2500")


@pytest.mark.parametrize("seed", range(4))
def test_triton_random_sweep(seed):
    import random as _r

    rng = _r.Random(100 + seed)
    B = rng.randint(1, 2)
    G = rng.choice([1, 4, 8])
    opts = rng.choice([{}, dict(softcap=7.0), dict(window=rng.randint(1, 60))])
    case = Case([rng.choice([0, rng.randint(1, 200)]) for _ in range(B)],
                [rng.choice([-1, 0, rng.randint(1, 40)]) for _ in range(B)], G, 1, 16,
                dtype=rng.choice([torch.float32, torch.float16]), seed=seed, **opts)
    check_close(triton_run(case, num_splits=rng.choice([1, 2])), case.expected(), TOL[case.q.dtype],
                what=f"seed {seed} {opts}")


# ---------------------------------------------------------------------------------------------------
# CUDA glue without a GPU: the Python side builds exactly the arguments the pybind launcher takes
# ---------------------------------------------------------------------------------------------------

def test_triton_strided_lengths_and_block_table():
    """Lengths and block tables that are views with non-unit strides (e.g. a column of a bigger table)."""
    case = Case([30, 7], [9, 12], 4, 2, 16, seed=12)
    kp, vp, table = case.paged(8)
    wide = torch.zeros(case.B, table.shape[1], 2, dtype=torch.int32)
    wide[:, :, 0] = table
    pl = torch.stack([case.prefix_lens, torch.zeros_like(case.prefix_lens)], 1)[:, 0]
    tl_ = torch.stack([case.tree_lens, torch.zeros_like(case.tree_lens)], 1)[:, 0]
    assert pl.stride(0) == 2 and wide[:, :, 0].stride(1) == 2
    import verispec

    got = verispec.tree_attention(case.q, kp, vp, pl, tl_, case.ancestors, case.positions,
                                  block_table=wide[:, :, 0], backend="triton")
    check_close(got, case.expected(), TOL[torch.float32], what="strided lengths")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_paged_hnd_cache_as_a_view(backend):
    """An HND paged cache ([blocks, Hkv, page, D], FlashInfer's other layout) passes as a transposed view."""
    case = Case([21, 5], [6, 10], 4, 2, 16, seed=14)
    kp, vp, table = case.paged(8)
    k_hnd, v_hnd = kp.transpose(1, 2).contiguous(), vp.transpose(1, 2).contiguous()
    import verispec

    got = verispec.tree_attention(case.q, k_hnd.transpose(1, 2), v_hnd.transpose(1, 2), case.prefix_lens,
                                  case.tree_lens, case.ancestors, case.positions, block_table=table, backend=backend)
    check_close(got, case.expected(), TOL[torch.float32], what="HND view")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_cuda_graph_replay(backend):
    """Captured once, replayed with new lengths, trees and K/V: no host sync inside, results follow."""
    import verispec

    first = Case([700, 1500], [20, 40], 32, 8, 128, dtype=torch.bfloat16, seed=1)
    second = Case([900, 1200], [33, 5], 32, 8, 128, dtype=torch.bfloat16, seed=2, T=first.T)
    assert second.S <= first.S
    _to(first, "cuda")
    static = {name: getattr(first, name).clone() for name in ("q", "k", "v", "prefix_lens", "tree_lens", "ancestors")}
    out = torch.empty_like(static["q"])
    args = [static[n] for n in ("q", "k", "v", "prefix_lens", "tree_lens", "ancestors")]
    verispec.tree_attention(*args, out=out, backend=backend)  # compile / warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        verispec.tree_attention(*args, out=out, backend=backend)
    for case in (first, second):
        want = case.expected()
        for name in ("q", "prefix_lens", "tree_lens", "ancestors"):
            static[name].copy_(getattr(case, name).to("cuda"))
        static["k"].zero_()[:, :, : case.S].copy_(case.k.to("cuda"))
        static["v"].zero_()[:, :, : case.S].copy_(case.v.to("cuda"))
        graph.replay()
        torch.cuda.synchronize()
        check_close(out.cpu(), want, TOL[torch.bfloat16], rtol=TOL[torch.bfloat16], what=f"graph {backend}")


@pytest.mark.parametrize("shape", [
    ([70, 5], [12, 3], 8, 2, 128),   # Llama-style D=128, BLOCK_M 64
    ([40], [40], 8, 2, 128),         # 41 rows x G=4: BLOCK_M 128 with 32-key tiles
    ([33], [9], 4, 2, 256),          # Gemma-style D=256, 32-key tiles
    ([20], [6], 2, 1, 96),           # a head dim that is not a power of two (BLOCK_D 128, masked)
], ids=["D128", "D128-M128", "D256", "D96"])
def test_triton_real_head_dims_fp16(shape):
    prefix, nodes, Hq, Hkv, D = shape
    case = Case(prefix, nodes, Hq, Hkv, D, dtype=torch.float16, seed=D, softcap=30.0)
    check_close(triton_run(case), case.expected(), TOL[torch.float16], what=f"D={D}")


@pytest.mark.parametrize("paged_block", [0, 4])
def test_triton_clamps_device_side_lengths(paged_block):
    """Lengths past T or past the cache (unchecked on a GPU) never make the kernel read beyond row T
    or beyond the cache: the request with valid rows still matches the oracle exactly as before."""
    from test_tree_attention import hostile_lengths

    case = Case([8, 5], [31, 20], 2, 1, 16, seed=11)  # T = 32, one mask word
    args, table, out, p = hostile_lengths(case, paged_block)
    tree_attention_fwd(p, out, num_splits=2)
    check_close(out[:1], case.expected()[:1], TOL[torch.float32], what="request 0 beside hostile lengths")
