"""CUDA backend of `verispec.commit_kv`: the kernel in ``csrc/commit_kv/``, one launch per group of
same-shaped cache tensors, called through ``verispec._C`` with a device table of cache pointers."""

from __future__ import annotations

import torch

from verispec import _native
from verispec.ops._launch import device_table, launches_on
from verispec.ops.commit_kv import CommitKVProblem, _commit_groups, _fail

__all__ = ["commit_kv_cuda", "cuda_launch"]


def cuda_launch(group: list[torch.Tensor], prefix_lens, path_rows, block_table, capacity: int, stream: int,
                 launch) -> None:
    """Turn one group of same-shaped caches into the arguments of ``_C.commit_kv_cuda``."""
    B, P = path_rows.shape
    first = group[0]
    if block_table is not None:  # [blocks, page, Hkv, D] -> (block, head, slot, dim) strides
        _, page, Hkv, D = first.shape
        st = (first.stride(0), first.stride(2), first.stride(1), first.stride(3))
    else:
        _, Hkv, _, D = first.shape
        page, st = 0, first.stride()
    if D * first.element_size() > 1024:
        _fail(f"backend='cuda' moves rows of at most 1024 bytes, got head dim {D} of {first.dtype}")
    ptrs = device_table(first, tuple(t.data_ptr() for t in group), "commit_kv")
    launch(
        caches=ptrs.data_ptr(), num_caches=len(group), prefix_lens=prefix_lens.data_ptr(),
        path_rows=path_rows.data_ptr(), block_table=block_table.data_ptr() if block_table is not None else 0,
        batch=B, path_len=P, kv_heads=Hkv, head_dim=D, elem_size=first.element_size(), stride=st,
        rows_stride=path_rows.stride(), bt_stride=block_table.stride(0) if block_table is not None else 0,
        page_size=page, capacity=capacity, num_blocks=first.shape[0] if block_table is not None else 0, stream=stream,
    )


@launches_on(lambda problem: problem.device)
def commit_kv_cuda(problem: CommitKVProblem) -> torch.Tensor:
    """CUDA KV commit: one launch for all layers of one shape. See `commit_kv`. Unverified on GPU."""
    if problem.device.type != "cuda":
        _fail(f"backend='cuda' needs CUDA tensors, got {problem.device}")
    stream = _native.cuda_stream_handle(problem.device)

    def launch_group(group, lens, table):
        cuda_launch(group, lens, problem.path_rows, table, problem.capacity, stream, _native.native().commit_kv_cuda)

    return _commit_groups(problem, launch_group)
