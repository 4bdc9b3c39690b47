"""Triton KV commit: one launch moves the accepted path's K/V in every layer of one cache shape.

Layers are addressed from the first layer's pointer plus a per-layer element offset (an int64 array),
so a list of separately allocated per-layer tensors (as Hugging Face caches hold them) needs no copy
and no per-layer launch. One program owns one (request, layer, KV head) and walks the request's path
in chunks of BLOCK_P rows: it loads a whole chunk into registers, waits for every thread of the
program, then stores it. Path rows strictly increase, so ``row_i >= i``: an entry never reads a slot
that an earlier chunk wrote, and within a chunk the barrier orders every read before any write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from verispec.ops._launch import device_table, launches_on
from verispec.ops.commit_kv import CommitKVProblem, _commit_groups
from verispec.ops.triton._cache_layout import cache_offsets


@triton.jit(do_not_specialize=["P", "capacity"])
def _commit_kv_kernel(
    C0, LAYER_OFFS, PL, ROWS, BT,
    sb, sh, ss, sd, srb, srp, sbt,
    Hkv, P, capacity, PAGE, num_blocks,
    D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, PAGED: tl.constexpr,
):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    layer = pid // Hkv
    h64 = (pid % Hkv).to(tl.int64)
    b64 = b.to(tl.int64)
    base = C0 + tl.load(LAYER_OFFS + layer)
    BT_row = BT + b64 * sbt
    L = tl.load(PL + b)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    for p0 in range(0, P, BLOCK_P):
        i = p0 + tl.arange(0, BLOCK_P)
        row = tl.load(ROWS + b64 * srb + i * srp, mask=i < P, other=-1)
        src = L + row
        dst = L + i
        # Only row > i moves (valid paths have row_i >= i; equal stays put). On a malformed path this keeps
        # every access inside the request's slots (0 <= dst < src < capacity) and the chunk order race-free.
        move = (row > i) & (dst >= 0) & (src < capacity)
        # A move whose source or destination block id is outside the pool is dropped.
        src_off, src_ok = cache_offsets(BT_row, b64, src, move, h64, sb, sh, ss, PAGED, PAGE, num_blocks)
        dst_off, dst_ok = cache_offsets(BT_row, b64, dst, move, h64, sb, sh, ss, PAGED, PAGE, num_blocks)
        move = src_ok & dst_ok
        m2 = move[:, None] & d_ok[None, :]
        vals = tl.load(base + src_off[:, None] + offs_d[None, :] * sd, mask=m2)
        tl.debug_barrier()
        tl.store(base + dst_off[:, None] + offs_d[None, :] * sd, vals, mask=m2)


def commit_kv_fwd(caches: list[torch.Tensor], prefix_lens, path_rows, block_table) -> None:
    """Launch one commit over caches that share shape, strides and dtype."""
    first = caches[0]
    esize = first.element_size()
    deltas = [t.data_ptr() - first.data_ptr() for t in caches]
    if any(d % esize for d in deltas):  # cannot happen for torch allocations; stay correct anyway
        for t in caches:
            commit_kv_fwd([t], prefix_lens, path_rows, block_table)
        return
    B, P = path_rows.shape
    if B == 0 or P == 0:
        return
    # Cached on the first layer: no host-to-device copy in steady state, CUDA-graph safe (ops/_launch.py).
    offs = device_table(first, tuple(d // esize for d in deltas), "commit_kv")
    if block_table is not None:
        _, page, Hkv, D = first.shape
        sb, ss, sh, sd = first.stride()
        capacity = block_table.shape[1] * page
        bt, sbt, num_blocks = block_table, block_table.stride(0), first.shape[0]
    else:
        _, Hkv, capacity, D = first.shape
        sb, sh, ss, sd = first.stride()
        page, bt, sbt, num_blocks = 1, prefix_lens, 0, 1
    if Hkv == 0 or D == 0:
        return
    block_d = triton.next_power_of_2(D)
    # Each element of a chunk holds a 64-bit source and destination address: 2048 elements per chunk
    # keeps 4 warps well inside the register file (32 rows of D = 256 spilled; ptxas, sm_90).
    block_p = max(1, min(32, triton.next_power_of_2(P), 2048 // block_d))
    _commit_kv_kernel[(B, len(caches) * Hkv)](
        first, offs, prefix_lens, path_rows, bt,
        sb, sh, ss, sd, path_rows.stride(0), path_rows.stride(1), sbt,
        Hkv, P, capacity, page, num_blocks,
        D=D, BLOCK_P=block_p, BLOCK_D=block_d, PAGED=block_table is not None,
        num_warps=4,
    )


@launches_on(lambda problem: problem.device)
def commit_kv_triton(problem: CommitKVProblem) -> torch.Tensor:
    """Triton KV commit: one launch for all layers of one shape. See `commit_kv`."""
    path_rows = problem.path_rows
    return _commit_groups(problem, lambda group, lens, table: commit_kv_fwd(group, lens, path_rows, table))
