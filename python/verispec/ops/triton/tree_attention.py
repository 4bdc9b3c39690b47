"""Triton tree attention: prefix without a mask, tree rows with ancestor bits, GQA-packed, split-KV.

One program owns a tile of BLOCK_M *packed rows* of one (request, KV head): packed row ``m`` is tree
row ``t = m // G`` of query head ``h * G + m % G`` (G = Hq // Hkv). Packing the G query heads that
share a KV head means every K/V tile is read once for all of them, which is what makes GQA/MQA
verification memory-bound instead of G times the traffic. Rows are t-major so a tile spans few tree
rows and the tree loop stops at the tile's last row (no row sees a later row).

A program walks keys in two phases:

1. prefix keys ``[lo, L)`` (``lo`` > 0 only with a sliding window): no mask bits are read at all; the
   range is cut into ``num_splits`` chunks, one per program along grid axis 2 (flash-decoding), so a
   single long request still fills the GPU;
2. tree keys ``L + u`` for ``u`` up to the tile's last row, masked by ``ancestors`` bits (only the last
   split does this; the tree is tiny next to the prefix).

With one split the program writes the normalised output; with several, each writes its partial
output and log-sum-exp (base 2) and `_combine_kernel` merges them.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from verispec.ops._launch import launches_on
from verispec.ops.tree_attention import (
    TreeAttentionProblem,
    check_lengths,
    output_buffer,
    sm_count,
    split_count,
)
from verispec.ops.triton._cache_layout import cache_offsets

LOG2E = 1.4426950408889634


@triton.jit
def _tanh(x):
    # tanh from exp2, exact at both saturated ends (exp2 overflow gives 1 - 0, underflow 1 - 2).
    return 1.0 - 2.0 / (tl.exp2(x * (2.0 * 1.4426950408889634)) + 1.0)


@triton.jit
def _logits(q, k_t, scale, scale_log2, softcap, SOFTCAP: tl.constexpr, PRECISION: tl.constexpr):
    """q @ k^T in fp32, scaled and soft-capped, in log2 units (ready for exp2)."""
    s = tl.dot(q, k_t, input_precision=PRECISION)
    if SOFTCAP:
        s = softcap * _tanh(s * (scale / softcap))
        s = s * 1.4426950408889634
    else:
        s = s * scale_log2
    return s


@triton.jit
def _online_softmax(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold one key tile (logits s [M, N] with -inf where hidden, values v [N, D]) into (m, l, acc)."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # Rows that have seen nothing yet keep m = -inf; shift them by 0 so exp2 gives 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


# Sizes that change every decoding step are not specialised on (no recompiles as trees grow and shrink).
@triton.jit(do_not_specialize=["T", "num_splits", "window", "capacity"])
def _tree_attention_kernel(
    Q, K, V, BT, PL, TL, ANC, POS, O, OPART, LPART,
    sqb, sqh, sqt, sqd,
    skb, skh, sks, skd,
    svb, svh, svs, svd,
    sbt, sab, sat, saw, spb, spt,
    sob, soh, sot, sod,
    Hkv, T, num_splits, PAGE, capacity, num_blocks,
    scale, scale_log2, softcap, window,
    G: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGED: tl.constexpr, SOFTCAP: tl.constexpr, WINDOW: tl.constexpr, SPLIT: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = pid_bh // Hkv
    h = pid_bh % Hkv
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    BT_row = BT + b64 * sbt
    # Device-side lengths are clamped (no host check without a sync): a bad length gives wrong rows for
    # its request, never a read of q, ancestors or positions beyond row T, nor of K/V beyond the cache.
    L = tl.minimum(tl.maximum(tl.load(PL + b), 0), capacity)
    n = tl.minimum(tl.maximum(tl.load(TL + b), 0), T)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    t = offs_m // G
    head = h * G + offs_m % G
    row_ok = t < n
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # A tile with no live row runs no loop: both key phases get empty ranges.
    tile_live = pid_m * BLOCK_M < n * G

    q_ptrs = Q + b64 * sqb + head[:, None].to(tl.int64) * sqh + t[:, None].to(tl.int64) * sqt + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    if WINDOW:
        qpos = tl.load(POS + b64 * spb + t * spt, mask=row_ok, other=2147483647)
        lo = tl.maximum(tl.min(qpos, 0) - window + 1, 0)
    else:
        qpos = tl.zeros([BLOCK_M], dtype=tl.int32)
        lo = 0
    hi = tl.where(tile_live, L, 0)
    lo = tl.minimum(lo, hi)
    chunk = tl.cdiv(tl.cdiv(hi - lo, num_splits), BLOCK_N) * BLOCK_N
    c_lo = lo + pid_s * chunk
    c_hi = tl.minimum(c_lo + chunk, hi)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)

    # Phase 1: the prefix. No mask is stored for it; only bounds (and the window) are checked.
    for start in range(c_lo, c_hi, BLOCK_N):
        j = start + offs_n
        j_ok = j < c_hi
        # A key whose block id is bad is hidden (k and v share the table, so one mask serves both).
        k_off, j_ok = cache_offsets(BT_row, b64, j, j_ok, h64, skb, skh, sks, PAGED, PAGE, num_blocks)
        v_off, _ = cache_offsets(BT_row, b64, j, j_ok, h64, svb, svh, svs, PAGED, PAGE, num_blocks)
        kv_mask = j_ok[:, None] & d_ok[None, :]
        k = tl.load(K + k_off[:, None] + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V + v_off[:, None] + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        s = _logits(q, tl.trans(k), scale, scale_log2, softcap, SOFTCAP, PRECISION)
        visible = j_ok[None, :]
        if WINDOW:
            visible = visible & (j[None, :] > qpos[:, None] - window)
        s = tl.where(visible, s, float("-inf"))
        m_i, l_i, acc = _online_softmax(s, v, m_i, l_i, acc, PRECISION)

    # Phase 2: the tree rows of this request, masked by ancestor bits; rows only see earlier rows.
    if pid_s == num_splits - 1:
        t_last = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, n - 1)
        u_end = tl.where(tile_live, t_last + 1, 0)
        for u0 in range(0, u_end, BLOCK_N):
            u = u0 + offs_n
            j = L + u
            u_ok = (u < u_end) & (j < capacity)
            k_off, u_ok = cache_offsets(BT_row, b64, j, u_ok, h64, skb, skh, sks, PAGED, PAGE, num_blocks)
            v_off, _ = cache_offsets(BT_row, b64, j, u_ok, h64, svb, svh, svs, PAGED, PAGE, num_blocks)
            kv_mask = u_ok[:, None] & d_ok[None, :]
            k = tl.load(K + k_off[:, None] + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
            v = tl.load(V + v_off[:, None] + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
            s = _logits(q, tl.trans(k), scale, scale_log2, softcap, SOFTCAP, PRECISION)
            pair_ok = row_ok[:, None] & u_ok[None, :]
            words = tl.load(ANC + b64 * sab + t[:, None] * sat + (u // 32)[None, :] * saw, mask=pair_ok, other=0)
            visible = pair_ok & (((words >> (u % 32)[None, :]) & 1) != 0)
            if WINDOW:
                kpos = tl.load(POS + b64 * spb + u * spt, mask=u_ok, other=0)
                visible = visible & (kpos[None, :] > qpos[:, None] - window)
            s = tl.where(visible, s, float("-inf"))
            m_i, l_i, acc = _online_softmax(s, v, m_i, l_i, acc, PRECISION)

    # Padded rows ran on zero queries through the prefix phase; they must come out as zeros.
    seen = row_ok & (l_i > 0.0)
    o = tl.where(seen[:, None], acc / tl.where(seen, l_i, 1.0)[:, None], 0.0)
    if SPLIT:
        # Partials of dead rows are never read by _combine; write them anyway for determinism.
        M_pad = tl.num_programs(0) * BLOCK_M
        base = (pid_bh.to(tl.int64) * num_splits + pid_s) * M_pad
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        tl.store(LPART + base + offs_m, lse)
        tl.store(OPART + (base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], o)
    else:
        o_ptrs = O + b64 * sob + head[:, None].to(tl.int64) * soh + t[:, None].to(tl.int64) * sot + offs_d[None, :] * sod
        tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=(t < T)[:, None] & d_ok[None, :])


@triton.jit(do_not_specialize=["T", "num_splits"])
def _combine_kernel(
    OPART, LPART, TL, O,
    sob, soh, sot, sod,
    Hkv, T, num_splits,
    G: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Merge the split partials of one tile: o = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // Hkv
    h = pid_bh % Hkv
    n = tl.minimum(tl.maximum(tl.load(TL + b), 0), T)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    t = offs_m // G
    head = h * G + offs_m % G
    row_ok = t < n
    offs_d = tl.arange(0, BLOCK_D)
    M_pad = tl.num_programs(0) * BLOCK_M

    m_run = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    w_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for s in range(0, num_splits):
        base = (pid_bh.to(tl.int64) * num_splits + s) * M_pad
        lse = tl.load(LPART + base + offs_m, mask=row_ok, other=float("-inf"))
        o_s = tl.load(OPART + (base + offs_m[:, None]) * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        m_new = tl.maximum(m_run, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_run - m_safe)
        w = tl.exp2(lse - m_safe)
        acc = acc * alpha[:, None] + w[:, None] * o_s
        w_sum = w_sum * alpha + w
        m_run = m_new
    o = acc / tl.where(w_sum > 0.0, w_sum, 1.0)[:, None]
    o_ptrs = O + b.to(tl.int64) * sob + head[:, None].to(tl.int64) * soh + t[:, None].to(tl.int64) * sot + offs_d[None, :] * sod
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=(t < T)[:, None] & (offs_d < D)[None, :])


def _pick_blocks(G: int, T: int, D: int, esize: int = 2) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps). BLOCK_M covers all packed rows of small trees, so each KV head's
    K/V is read once. The choices come from compiling every variant for sm_80 and sm_90 without a GPU:
    ptxas reports no spills for fp16/bf16 at D = 64, 128, 256 with these (BLOCK_M = 128 with 64-key
    tiles spills at D = 128, hence 32-key tiles there). fp32 uses exact (non-tf32) dots on FMA units and
    needs far more registers: small tiles, 8 warps, a few hundred bytes of spills (not a hot path).
    Untuned for speed: benchmarks pass ``config`` to sweep on a GPU.
    """
    block_d = triton.next_power_of_2(max(D, 16))
    rows = max(16, triton.next_power_of_2(G * max(T, 1)))
    if esize >= 4:
        return min(32, rows), 32, 8
    if block_d >= 256:
        return min(64, rows), 32, 8
    block_m = min(128, rows)
    if block_d >= 128 and block_m == 128:
        return block_m, 32, 8
    return block_m, 64, 8 if block_m >= 64 and block_d >= 128 or block_m == 128 else 4


def _num_splits(programs: int, capacity: int, rows_padded: int, block_n: int, device: torch.device) -> int:
    if device.type != "cuda":
        return 1 if capacity < 64 else 2  # the interpreter: exercise the split path at small sizes
    return split_count(programs, capacity, rows_padded, block_n, sm_count(device))


def tree_attention_fwd(p: TreeAttentionProblem, out: torch.Tensor, num_splits: int | None = None,
                       config: tuple[int, int, int, int] | None = None):
    """Launch the kernels for problem `p`, writing ``out`` (``p.out`` or a buffer standing in for it).

    ``num_splits`` and ``config = (BLOCK_M, BLOCK_N, num_warps, num_stages)`` override the heuristics
    (benchmarks sweep them on a GPU; BLOCK_M/BLOCK_N must be powers of two >= 16).
    """
    q, k, v, prefix_lens, tree_lens = p.q, p.k, p.v, p.prefix_lens, p.tree_lens
    ancestors, positions, block_table = p.ancestors, p.positions, p.block_table
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"verispec.tree_attention(backend='triton'): dtype {q.dtype} is not supported; "
                        "use float16, bfloat16 or float32 (the torch backend handles float64)")
    B, Hq, T, D = q.shape
    G = Hq // p.Hkv
    if B == 0 or T == 0 or Hq == 0 or D == 0:
        return out
    block_m, block_n, num_warps = _pick_blocks(G, T, D, q.element_size())
    num_stages = 2
    if config is not None:
        block_m, block_n, num_warps, num_stages = config
    block_d = triton.next_power_of_2(max(D, 16))
    m_tiles = triton.cdiv(G * T, block_m)
    if num_splits is None:
        num_splits = _num_splits(B * p.Hkv * m_tiles, p.capacity, m_tiles * block_m, block_n, q.device)
    anc = ancestors.view(torch.int32) if ancestors.dtype == torch.uint32 else ancestors
    pos = positions if positions is not None else prefix_lens  # never read without a window
    spb, spt = (pos.stride(0), pos.stride(1)) if positions is not None else (0, 0)
    if p.paged:
        # Paged k: [blocks, page, Hkv, D] -> (block, head, slot, dim) strides in the kernel's order.
        sk = (k.stride(0), k.stride(2), k.stride(1), k.stride(3))
        sv = (v.stride(0), v.stride(2), v.stride(1), v.stride(3))
        bt, sbt, page = block_table, block_table.stride(0), p.block_size
    else:
        sk, sv = k.stride(), v.stride()
        bt, sbt, page = prefix_lens, 0, 1
    split = num_splits > 1
    if split:
        opart = torch.empty(B * p.Hkv * num_splits * m_tiles * block_m * block_d, dtype=torch.float32, device=q.device)
        lpart = torch.empty(B * p.Hkv * num_splits * m_tiles * block_m, dtype=torch.float32, device=q.device)
    else:
        opart = lpart = out  # unused
    _tree_attention_kernel[(m_tiles, B * p.Hkv, num_splits)](
        q, k, v, bt, prefix_lens, tree_lens, anc, pos, out, opart, lpart,
        *q.stride(), *sk, *sv,
        sbt, anc.stride(0), anc.stride(1), anc.stride(2), spb, spt,
        *out.stride(),
        p.Hkv, T, num_splits, page, p.capacity, p.num_blocks if p.paged else 1,
        p.scale, p.scale * LOG2E, p.softcap if p.softcap else 1.0, p.window,
        G=G, D=D, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        PAGED=p.paged, SOFTCAP=bool(p.softcap), WINDOW=bool(p.window), SPLIT=split,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    if split:
        # The tile's accumulator and one partial are both live: at 16k elements 4 warps spill (ptxas).
        _combine_kernel[(m_tiles, B * p.Hkv)](
            opart, lpart, tree_lens, out, *out.stride(), p.Hkv, T, num_splits,
            G=G, D=D, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=8 if block_m * block_d > 8192 else 4,
        )
    return out


@launches_on(lambda p, **kwargs: p.q.device)
def tree_attention_triton(p: TreeAttentionProblem, *, num_splits: Optional[int] = None) -> torch.Tensor:
    """Triton tree attention (split-KV, GQA-packed), the main GPU path. See `tree_attention`
    (``num_splits`` overrides the split-KV heuristic, for benchmarks and tests). Unverified on GPU."""
    if p.q.device.type == "cpu":  # the length checks are free on the host; on a GPU they would sync
        check_lengths(p)
    result = output_buffer(p.out, p.q, p.k, p.v)  # None when out overlaps an input: compute aside, then copy
    if result is None:
        result = torch.empty_like(p.q, memory_format=torch.contiguous_format)
    tree_attention_fwd(p, result, num_splits=num_splits)
    if p.out is not None and result is not p.out:
        return p.out.copy_(result)
    return result
