"""tree_attention with caller buffers and block tables it must not trust (issue 15, item 5): ``out``
overlapping an input still gives the right answer; a bad paged block id is refused by name on the host
and, where nothing is checked on the host, never makes a kernel read outside the pool.

Torch backend and the Triton kernels (interpreted on CPU, conftest); the emulated CUDA kernel is in
test_tree_attention_cuda_emulated.py."""

from __future__ import annotations

import pytest
import torch
from test_tree_attention import TOL, Case, check_close

import verispec
from verispec.ops.tree_attention import tree_attention_problem

pytestmark = pytest.mark.op("tree_attention")
BACKENDS = ["torch", "triton"]


def _case(D: int = 16, dtype=torch.float32) -> Case:
    return Case([6, 3], [4, 5], 2, 2, D, dtype=dtype, seed=5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["q", "q_shifted", "k", "v"])
def test_out_overlapping_an_input(backend, where):
    """Before the fix the torch backend zeroed ``out`` (= q) first and attended with zero queries; the
    Triton kernel read queries that other programs had already overwritten."""
    case = _case()
    q, k, v, *rest = case.args()
    want = case.expected()
    numel = q.numel()
    if where in ("q", "q_shifted"):
        buf = torch.zeros(2 * numel, dtype=q.dtype)
        buf[:numel] = q.reshape(-1)
        q = buf[:numel].view(q.shape)
        out = q if where == "q" else buf[numel // 2 : numel // 2 + numel].view(q.shape)
    else:
        # out shares its first elements with k (or v): the kernels read k/v while writing out.
        src = k if where == "k" else v
        buf = torch.zeros(max(src.numel(), numel) + numel, dtype=q.dtype)
        buf[: src.numel()] = src.reshape(-1)
        view = buf[: src.numel()].view(src.shape)
        k, v = (view, v) if where == "k" else (k, view)
        out = buf[src.numel() // 3 : src.numel() // 3 + numel].view(q.shape)
    got = verispec.tree_attention(q, k, v, *rest, backend=backend, out=out, **case.kwargs())
    assert got.data_ptr() == out.data_ptr()
    check_close(got, want, TOL[torch.float32], what=f"{backend} out overlapping {where}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-1, -7, "num_blocks", 10**6])
def test_bad_block_ids_are_refused_by_name(backend, bad):
    """-1 used to wrap around to the last block (torch indexing) and an id past the pool raised a bare
    IndexError; the message now names the entry and the pool."""
    case = _case()
    q, k, v, *rest = case.args()
    kp, vp, table = case.paged(4)
    bad = kp.shape[0] if bad == "num_blocks" else bad
    table = table.clone()
    table[1, 1] = bad
    with pytest.raises(ValueError, match=rf"block_table\[1, 1\] = {bad} is not a block of the pool \(valid ids "
                                         rf"0..{kp.shape[0] - 1}\)"):
        verispec.tree_attention(q, kp, vp, *rest, block_table=table, backend=backend, **case.kwargs())


def test_unused_block_table_entries_are_not_checked():
    """Entries past what a request reads may hold anything (serving engines pad tables)."""
    case = _case()
    q, k, v, *rest = case.args()
    kp, vp, table = case.paged(4)
    table = torch.cat([table, torch.full((2, 3), -1, dtype=torch.int32)], dim=1)
    got = verispec.tree_attention(q, kp, vp, *rest, block_table=table, backend="torch", **case.kwargs())
    check_close(got, case.expected(), TOL[torch.float32], what="padded table")


def guarded_pool(case: Case, block_size: int, far: int = 0):
    """The paged cache inside a bigger buffer whose first and last blocks (just outside the pool) are
    NaN: a kernel that follows block id -1 or num_blocks reads NaN, which reaches the output. With
    ``far`` the bad ids are ``-far`` and ``num_blocks + far`` instead (unmapped memory)."""
    kp, vp, table = case.paged(block_size)
    n = kp.shape[0]
    pools = []
    for t in (kp, vp):
        big = torch.full((n + 2, *t.shape[1:]), float("nan"), dtype=t.dtype)
        big[1:-1] = t
        pools.append(big[1:-1])
    bad = table.clone()
    bad[1, 0] = -1 - far  # request 1's first block: prefix keys
    bad[1, 2] = n + far  # request 1's third block: tree keys (prefix 3 + tree rows 0..5 = entries 0..8)
    return pools[0], pools[1], bad


@pytest.mark.backend("triton")
def test_triton_kernel_never_reads_outside_the_pool():
    """No host check (as on a GPU): the kernel masks keys whose block id is bad, so request 1 is finite
    and request 0, whose table is intact, still matches the oracle. The interpreter hands the kernel a
    copy of each tensor, so the NaN guard blocks are not next to it: the ids point far away instead, and
    before the fix the process died (SIGSEGV) reading them."""
    from verispec.ops.triton.tree_attention import tree_attention_fwd

    case = _case()
    q, k, v, prefix_lens, tree_lens, anc, pos = case.args()
    kp, vp, bad = guarded_pool(case, 4, far=10**6)
    out = torch.full_like(q, float("nan"))
    p = tree_attention_problem(q, kp, vp, prefix_lens, tree_lens, anc, pos, scale=case.scale, softcap=case.softcap,
                               window=case.window, block_table=bad, out=out)
    tree_attention_fwd(p, out, num_splits=2)
    assert torch.isfinite(out).all(), "a bad block id made the kernel read outside the pool"
    check_close(out[:1], case.expected()[:1], TOL[torch.float32], what="request 0")
