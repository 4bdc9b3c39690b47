"""commit_kv with block tables it must not trust (issue 15, item 5): a bad paged block id is refused by
name when validating, and without validation (no host sync) no backend reads or writes outside the pool.

Torch backend and the Triton kernel (interpreted on CPU, conftest); the emulated CUDA kernel is in
test_commit_kv_cuda_emulated.py (it shares `guarded_batch`)."""

from __future__ import annotations

import pytest
import torch

import verispec

pytestmark = pytest.mark.op("commit_kv")

BLOCK = 4


def guarded_batch(dtype=torch.float32, D: int = 16, far: int = 0):
    """Two requests in a paged pool of 7 blocks that sits inside a bigger buffer with one guard block on
    each side (a write through id -1 or num_blocks lands there). Block 6 of the pool is referenced by no
    request (torch indexing would wrap -1 onto it). Returns the pool views, the guarded buffers, prefix
    lengths, path rows, a valid table and one with bad ids where both requests' paths need them."""
    g = torch.Generator().manual_seed(0)
    bufs = [torch.randn(9, BLOCK, 2, D, generator=g).to(dtype) for _ in range(2)]
    pools = [b[1:-1] for b in bufs]
    prefix = torch.tensor([5, 2], dtype=torch.int32)
    rows = torch.tensor([[0, 2, 3], [0, 1, 3]], dtype=torch.int32)
    table = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    bad = table.clone()
    bad[0, 2] = 7 + far  # request 0 reads entry 8 (L 5 + row 3): block 2
    bad[1, 1] = -1 - far  # request 1 reads entry 5 (L 2 + row 3): block 1
    return pools, bufs, prefix, rows, table, bad


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("which", [(0, 2, "7"), (1, 1, "-1"), (1, 0, "-3")])
def test_bad_block_ids_are_refused_by_name(backend, which):
    pools, _, prefix, rows, table, _ = guarded_batch()
    b, i, value = which
    table[b, i] = int(value)
    with pytest.raises(ValueError, match=rf"block_table\[{b}, {i}\] = {value} is not a block of the pool "
                                         r"\(valid ids 0..6\)"):
        verispec.commit_kv(pools[0], pools[1], prefix, rows, block_table=table, backend=backend)


def test_unused_block_table_entries_are_not_checked():
    pools, _, prefix, rows, table, _ = guarded_batch()
    padded = torch.cat([table, torch.full((2, 2), -1, dtype=torch.int32)], dim=1)
    verispec.commit_kv(pools[0], pools[1], prefix, rows, block_table=padded, backend="torch")


def check_untouched(bufs, before, pools_ok_blocks=(6,)):
    """Guard blocks (outside the pool) and the pool's unreferenced block 6 are unchanged."""
    for buf, old in zip(bufs, before):
        assert torch.equal(buf[0], old[0]) and torch.equal(buf[-1], old[-1]), "wrote outside the pool"
        for blk in pools_ok_blocks:
            assert torch.equal(buf[1 + blk], old[1 + blk]), f"wrote into unreferenced block {blk} (a wrapped id)"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_unvalidated_bad_ids_stay_inside_the_pool(backend):
    """validate=False (what generate uses on a GPU): -1 used to wrap onto the pool's last block (torch)
    and num_blocks raised a bare IndexError (torch) or wrote past the pool (Triton). Moves touching a bad
    block are dropped; the valid moves of the same requests still happen."""
    pools, bufs, prefix, rows, table, bad = guarded_batch()
    before = [b.clone() for b in bufs]
    want = [p.clone() for p in pools]
    verispec.commit_kv([want[0]], [want[1]], prefix, rows, block_table=table, backend="torch")
    verispec.commit_kv([pools[0]], [pools[1]], prefix, rows, block_table=bad, backend=backend, validate=False)
    check_untouched(bufs, before)
    # Request 0: entry 7 (row 2, block 1) -> 6 still moves; 8 (block 2, bad) -> 7 is dropped.
    for got, exp, old in zip(pools, want, before):
        assert torch.equal(got[1, 2], exp[1, 2])  # entry 6 of request 0 = block 1 slot 2
        assert torch.equal(got[1, 3], old[2, 3])  # entry 7 kept its old value
