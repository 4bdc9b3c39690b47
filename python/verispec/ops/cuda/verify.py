"""CUDA backend of `verispec.verify`: the kernels in ``csrc/verify/verify.cu``, called through
``verispec._C`` with device pointers (the native module never sees a torch tensor)."""

from __future__ import annotations

import torch

from verispec import _native
from verispec.ops import _launch
from verispec.ops.verify import VerifyProblem, VerifyResult, log2_scale

__all__ = ["verify_cuda", "verify_cuda_launch"]

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_MODE_CODES = {"greedy": 0, "exact": 1, "typical": 2}


@_launch.launches_on(lambda problem: problem.logits.device)
def verify_cuda(problem: VerifyProblem) -> VerifyResult:
    """CUDA kernels (``csrc/verify/verify.cu``) through ``verispec._C``: row stats over the logits,
    the walk (one block per request), the residual / bonus race and the outputs. No host synchronisation."""
    dev = problem.logits.device
    if dev.type != "cuda":
        raise ValueError(f"verispec.verify: backend='cuda' needs CUDA tensors, got logits on {dev}")
    return verify_cuda_launch(problem, _native.native(), _native.cuda_stream_handle(dev))


def verify_cuda_launch(pr: VerifyProblem, C, stream: int) -> VerifyResult:
    """Workspaces, outputs and the one call into ``C.verify_cuda`` (``C`` is ``verispec._C``, or the
    CPU emulation of the kernels in tests/test_verify_cuda_emulated.py)."""
    logits = pr.logits
    dev = logits.device
    if logits.dtype == torch.float64:
        logits = logits.float()  # the kernels read float32 / float16 / bfloat16
    buf = pr.buffers
    R, V = logits.shape
    B, D = pr.B, pr.max_depth
    f32, i32 = torch.float32, torch.int32
    chunk = int(C.verify_race_chunk)
    splits = (V + chunk - 1) // chunk
    scale = log2_scale(pr.temperature).contiguous()
    scale_rows = scale[buf.request.long()].contiguous()
    thr = pr.threshold.float().contiguous() if pr.threshold is not None else None
    q = pr.draft_probs.float().contiguous() if pr.draft_probs is not None else None
    hook_u = pr.uniforms.accept.float().contiguous() if pr.uniforms is not None else None
    hook_e = pr.uniforms.exponential.float().contiguous() if pr.uniforms is not None else None
    temp = pr.temperature.float().contiguous()
    seed, offset = pr.seed.contiguous(), pr.offset.contiguous()
    work = {
        "row_max": _launch.workspace(R, dtype=f32, device=dev),
        "row_sum": _launch.workspace(R, dtype=f32, device=dev),
        "row_entropy": _launch.workspace(R, dtype=f32, device=dev),
        "row_argmax": _launch.workspace(R, dtype=i32, device=dev),
        "state": _launch.workspace(B, 5, dtype=i32, device=dev),
        "state_f": _launch.workspace(B, dtype=f32, device=dev),
        "part_key": _launch.workspace(B, 2, splits, dtype=f32, device=dev),
        "part_idx": _launch.workspace(B, 2, splits, dtype=i32, device=dev),
    }
    scratch = torch.empty(B * 2 * V, dtype=f32, device=dev) if q is not None else None
    acc = _launch.workspace(B, D, dtype=i32, device=dev)
    num = _launch.workspace(B, dtype=i32, device=dev)
    tok = _launch.workspace(B, D + 1, dtype=i32, device=dev)
    ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    C.verify_cuda(
        logits.data_ptr(), _DTYPE_CODES[logits.dtype], logits.stride(0), R, B, V, _MODE_CODES[pr.mode],
        pr.tokens.data_ptr(), pr.cu_nodes.data_ptr(), buf.cu_rows.data_ptr(), buf.first_child.data_ptr(),
        buf.next_sibling.data_ptr(), temp.data_ptr(), scale.data_ptr(), scale_rows.data_ptr(), ptr(thr),
        pr.typical_epsilon, pr.typical_delta, ptr(q), q.stride(0) if q is not None else 0, seed.data_ptr(),
        offset.data_ptr(), ptr(hook_u), ptr(hook_e), *(work[k].data_ptr() for k in ("row_max", "row_sum", "row_entropy", "row_argmax")),
        ptr(scratch), work["state"].data_ptr(), work["state_f"].data_ptr(), work["part_key"].data_ptr(),
        work["part_idx"].data_ptr(), splits,
        acc.data_ptr() if D else 0, num.data_ptr(), tok.data_ptr(), D, stream,
    )
    return VerifyResult(acc, num, tok)
