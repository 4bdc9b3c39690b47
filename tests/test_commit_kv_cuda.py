"""The CUDA KV-commit backend on a machine without a GPU: the Python glue against the real pybind binding
(arguments converted and checked, nothing launched). The kernel itself runs in
test_commit_kv_cuda_emulated.py (CPU emulator) and in the `gpu`-marked tests of test_commit_kv.py."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.op("commit_kv"), pytest.mark.backend("cuda")]

_native = pytest.importorskip("verispec._native")
_HAS_CUDA_BUILD = _native.built_with_cuda()


@pytest.mark.skipif(not _HAS_CUDA_BUILD, reason="verispec built without CUDA kernels")
def test_cuda_commit_arguments_match_the_binding():
    from verispec.ops.cuda.commit_kv import cuda_launch as _cuda_launch

    caches = [torch.zeros(2, 3, 10, 8, dtype=torch.bfloat16) for _ in range(4)]
    pl = torch.tensor([1, 2], dtype=torch.int32)
    rows = torch.tensor([[0, 2], [0, -1]], dtype=torch.int32)

    def launch(**kw):
        assert kw["num_caches"] == 4 and kw["stride"] == caches[0].stride() and kw["elem_size"] == 2
        _native.native().commit_kv_cuda(**(kw | {"batch": 0}))  # converts and checks everything, launches nothing

    _cuda_launch(caches, pl, rows, None, 10, 0, launch)
    with pytest.raises(ValueError, match="element size must be 2, 4 or 8"):
        _native.native().commit_kv_cuda(0, 1, 0, 0, 0, 0, 1, 1, 8, 3, (0, 0, 0, 1), (1, 1), 0, 0, 10, 0, 0)
