"""CUDA backend of `verispec.tree_attention`: the kernels in ``csrc/tree_attention/``, called through
``verispec._C`` with device pointers, sizes and strides."""

from __future__ import annotations

from typing import Optional

import torch

from verispec import _native
from verispec.ops._launch import launches_on
from verispec.ops.tree_attention import TreeAttentionProblem, _fail, output_buffer, sm_count, split_count

__all__ = ["tree_attention_cuda", "cuda_launch"]


def _cuda_num_splits(programs: int, capacity: int, rows_padded: int, device: torch.device) -> int:
    """Same rule as the Triton launcher (`split_count`): ~2 waves, chunks >= 4 tiles of 64 keys, partials
    under 1/8 of the K/V traffic."""
    return split_count(programs, capacity, rows_padded, 64, sm_count(device))


def _cuda_ready(name: str, t: torch.Tensor, elems: int) -> None:
    """The CUDA kernel moves 16-byte (q/k/v) or 4-byte (out) vectors along D; say so when it cannot."""
    bad = t.stride(-1) != 1 or any(s % elems for s in t.stride()[:-1]) or t.data_ptr() % (elems * t.element_size())
    if bad:
        _fail(f"backend='cuda' needs {name} with unit stride along D, other strides multiples of {elems} "
              f"elements and a {elems * t.element_size()}-byte aligned start; got strides {t.stride()} "
              f"(use backend='triton' or 'torch' for arbitrary layouts)")


def cuda_launch(p: TreeAttentionProblem, result: torch.Tensor, num_splits: int, stream: int, launch) -> None:
    """Turn problem `p` (writing ``result``) into the pointer/size/stride arguments of ``_C.tree_attention_cuda``."""
    q, k, v, prefix_lens, tree_lens = p.q, p.k, p.v, p.prefix_lens, p.tree_lens
    ancestors, positions, block_table = p.ancestors, p.positions, p.block_table
    anc = ancestors if ancestors.stride(-1) == 1 else ancestors.contiguous()
    G = p.Hq // p.Hkv
    m_tiles = (G * p.T + 63) // 64
    if num_splits > 1:  # partial outputs and log-sum-exps of every split, merged by the combine kernel
        o_part = torch.empty(p.B * p.Hkv * num_splits * m_tiles * 64 * p.D, dtype=torch.float32, device=q.device)
        lse_part = torch.empty(p.B * p.Hkv * num_splits * m_tiles * 64, dtype=torch.float32, device=q.device)
        parts = (o_part.data_ptr(), lse_part.data_ptr())
    else:
        parts = (0, 0)
    if p.paged:  # [blocks, page, Hkv, D] -> (block, head, slot) strides, the kernel's order
        ks = (k.stride(0), k.stride(2), k.stride(1))
        vs = (v.stride(0), v.stride(2), v.stride(1))
        bt_ptr, bt_stride = block_table.data_ptr(), block_table.stride(0)
    else:
        ks, vs, bt_ptr, bt_stride = k.stride()[:3], v.stride()[:3], 0, 0
    use_pos = positions is not None and p.window > 0
    launch(
        q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=result.data_ptr(), prefix_lens=prefix_lens.data_ptr(),
        tree_lens=tree_lens.data_ptr(), ancestors=anc.data_ptr(), positions=positions.data_ptr() if use_pos else 0,
        block_table=bt_ptr, o_part=parts[0], lse_part=parts[1], batch=p.B, q_heads=p.Hq, kv_heads=p.Hkv,
        rows=p.T, head_dim=p.D, q_stride=q.stride()[:3], k_stride=ks, v_stride=vs, o_stride=result.stride()[:3],
        anc_stride=anc.stride()[:2], pos_stride=positions.stride() if use_pos else (0, 0), bt_stride=bt_stride,
        page_size=p.block_size, capacity=p.capacity, num_blocks=p.num_blocks, num_splits=num_splits, m_tiles=m_tiles, scale=p.scale,
        softcap=p.softcap, window=p.window, bf16=q.dtype == torch.bfloat16, stream=stream,
    )


@launches_on(lambda p, **kwargs: p.q.device)
def tree_attention_cuda(p: TreeAttentionProblem, *, num_splits: Optional[int] = None) -> torch.Tensor:
    """CUDA tree attention, the hot path: fp16/bf16, D = 64/128/256, GQA, both layouts. See
    `tree_attention` (``num_splits`` overrides the split-KV heuristic, for benchmarks and tests).
    Unverified on GPU."""
    q, out = p.q, p.out
    if q.device.type != "cuda":
        _fail(f"backend='cuda' needs CUDA tensors, got {q.device}")
    if q.dtype not in (torch.float16, torch.bfloat16):
        _fail(f"backend='cuda' supports float16 and bfloat16, got {q.dtype} (use backend='triton' or 'torch')",
              TypeError)
    if p.D not in (64, 128, 256):
        _fail(f"backend='cuda' supports head dims 64, 128 and 256, got {p.D} (use backend='triton')")
    for name, t in (("q", q), ("k", p.k), ("v", p.v)):
        _cuda_ready(name, t, 8)
    # The kernel writes out in place: a fresh buffer when out is unaligned or shares memory with q/k/v.
    result = output_buffer(out, q, p.k, p.v)
    if result is None or result.stride(-1) != 1 or any(s % 2 for s in result.stride()[:-1]) or result.data_ptr() % 4:
        result = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if p.B == 0 or p.T == 0 or p.Hq == 0:
        return result if out is None else out
    G = p.Hq // p.Hkv
    if num_splits is None:
        m_tiles = (G * p.T + 63) // 64
        num_splits = _cuda_num_splits(p.B * p.Hkv * m_tiles, p.capacity, m_tiles * 64, q.device)
    cuda_launch(p, result, num_splits, _native.cuda_stream_handle(q.device), _native.native().tree_attention_cuda)
    if out is not None and result is not out:
        out.copy_(result)
        return out
    return result
