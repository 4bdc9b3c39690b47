"""Addressing shared by the Triton kernels that read or write the K/V cache (tree attention, KV commit)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def cache_offsets(BT_row, b64, idx, ok, h64, sb, sh, ss, PAGED: tl.constexpr, PAGE, num_blocks):
    """Element offsets of cache entries ``idx`` (masked by ``ok``) of request ``b``, KV head ``h``, in
    either layout: contiguous ``[B, Hkv, S, D]`` (strides sb, sh, ss) or paged ``[blocks, PAGE, Hkv, D]``
    (block, head, slot strides sb, sh, ss) through the request's block-table row ``BT_row``.

    Returns ``(offsets, ok)``: paged entries whose block id is not a block of the pool
    (``0 <= id < num_blocks``; the table lives on the device, unchecked without a sync) drop out of
    ``ok`` and get offset 0, so a bad id never reads or writes outside the pool."""
    if PAGED:
        blk = tl.load(BT_row + idx // PAGE, mask=ok, other=0).to(tl.int64)
        ok = ok & (blk >= 0) & (blk < num_blocks)
        blk = tl.where(ok, blk, 0)
        return blk * sb + (idx % PAGE).to(tl.int64) * ss + h64 * sh, ok
    return b64 * sb + idx.to(tl.int64) * ss + h64 * sh, ok
