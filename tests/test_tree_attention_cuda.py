"""The CUDA tree-attention backend on a machine without a GPU: the Python glue against the real pybind
binding (arguments converted and checked, nothing launched) and its errors. The kernel itself runs in
test_tree_attention_cuda_emulated.py (CPU emulator) and in the `gpu`-marked tests."""

from __future__ import annotations

import pytest
import torch
from test_tree_attention import Case

from verispec.ops.tree_attention import tree_attention_problem

pytestmark = [pytest.mark.op("tree_attention"), pytest.mark.backend("cuda")]

_native = pytest.importorskip("verispec._native")
_HAS_CUDA_BUILD = _native.built_with_cuda()


@pytest.mark.skipif(not _HAS_CUDA_BUILD, reason="verispec built without CUDA kernels")
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("window", [None, 5])
def test_cuda_arguments_match_the_binding(paged, window):
    """Call the real binding with the Python-built arguments and batch forced to 0: every argument is
    converted and checked, nothing is launched (so this runs on a CPU-only machine)."""
    from verispec.ops.cuda.tree_attention import cuda_launch as _cuda_launch

    case = Case([9, 20], [4, 7], 8, 2, 128, dtype=torch.float16, seed=1, window=window)
    args = list(case.args())
    table = None
    if paged:
        args[1], args[2], table = case.paged(16)
    out = torch.empty_like(case.q)
    p = tree_attention_problem(*args, window=window, block_table=table, out=out)
    seen = {}

    def launch(**kw):
        seen.update(kw)
        _native.native().tree_attention_cuda(**(kw | {"batch": 0}))

    _cuda_launch(p, out, 3, 0, launch)
    assert seen["page_size"] == (16 if paged else 0) and seen["head_dim"] == 128 and seen["num_splits"] == 3
    assert seen["window"] == (window or 0) and (seen["positions"] != 0) == bool(window)
    with pytest.raises(ValueError, match="head_dim must be 64, 128 or 256"):
        _native.native().tree_attention_cuda(**(seen | {"head_dim": 96}))


def test_cuda_backend_errors_on_cpu():
    from verispec.ops.cuda.tree_attention import tree_attention_cuda

    case = Case([3], [2], 2, 1, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        tree_attention_cuda(tree_attention_problem(*case.args()))
