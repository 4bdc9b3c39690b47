"""Paged K/V caches: the block-table rule shared by the ops that read or write them (tree_attention,
commit_kv). A block table maps cache entry ``i`` of request ``b`` to block ``block_table[b, i //
block_size]`` of a pool of ``num_blocks`` blocks."""

from __future__ import annotations

import torch

__all__ = ["check_block_ids"]


def check_block_ids(block_table: torch.Tensor, entries: torch.Tensor, block_size: int, num_blocks: int, fail) -> None:
    """Host check that every block-table entry request ``b`` addresses (those holding its first
    ``entries[b]`` cache entries) names a block of the pool, ``0 <= id < num_blocks``: torch indexing
    would wrap -1 around to the last block or raise a bare IndexError. Unused entries are not read."""
    if block_table.numel() == 0:
        return
    used = (entries.view(-1, 1).to(block_table.device).long() + block_size - 1) // block_size
    cols = torch.arange(block_table.shape[1], device=block_table.device).view(1, -1)
    bad = (cols < used) & ((block_table < 0) | (block_table >= num_blocks))
    if bool(bad.any()):
        b, i = (int(x) for x in bad.nonzero()[0])
        fail(f"block_table[{b}, {i}] = {int(block_table[b, i])} is not a block of the pool (valid ids 0.."
             f"{num_blocks - 1}); request {b} uses cache entries up to index {int(entries[b]) - 1}")
