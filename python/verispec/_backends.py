"""Backend registry: every op has a `torch` reference and optional `triton` and `cuda` implementations,
registered alike (``verispec/ops/<op>.py``, ``ops/triton/<op>.py``, ``ops/cuda/<op>.py``) and called
with one contract per op: each backend takes the op's checked problem object, built once by the public
function (`VerifyProblem` from `verify_problem`, `TreeAttentionProblem` from `tree_attention_problem`,
`CommitKVProblem` from `commit_kv_problem`).
`resolve(op, backend, device)` returns the implementation to call.

`backend="auto"` picks, in order cuda → triton → torch, the first implementation that is available
on the tensors' device *and* verified on this device class (see `_verified.py`). A GPU path that has
never passed its tests on a GPU is never chosen automatically; ask for it by name, or set
``VERISPEC_ALLOW_UNVERIFIED=1``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

from verispec import _native
from verispec._verified import VERIFIED

BACKENDS = ("cuda", "triton", "torch")

# op -> backend -> "module:function".
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "verify": {
        "torch": "verispec.ops.verify:verify_torch",
        "triton": "verispec.ops.triton.verify:verify_triton",
        "cuda": "verispec.ops.cuda.verify:verify_cuda",
    },
    "tree_attention": {
        "torch": "verispec.ops.tree_attention:tree_attention_torch",
        "triton": "verispec.ops.triton.tree_attention:tree_attention_triton",
        "cuda": "verispec.ops.cuda.tree_attention:tree_attention_cuda",
    },
    "commit_kv": {
        "torch": "verispec.ops.commit_kv:commit_kv_torch",
        "triton": "verispec.ops.triton.commit_kv:commit_kv_triton",
        "cuda": "verispec.ops.cuda.commit_kv:commit_kv_cuda",
    },
}


class BackendUnavailable(RuntimeError):
    """Raised when a backend asked for by name cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendStatus:
    op: str
    backend: str
    available: bool
    verified: bool
    reason: str

    def __str__(self) -> str:
        state = "available" if self.available else "unavailable"
        ver = ", verified" if self.verified else ""
        return f"{self.op}/{self.backend}: {state}{ver} ({self.reason})"


def _allow_unverified() -> bool:
    return os.environ.get("VERISPEC_ALLOW_UNVERIFIED", "") not in ("", "0", "false", "False")


@cache
def _triton_problem() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"triton is not importable ({type(exc).__name__}: {exc})"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


@cache
def _cuda_problem() -> str | None:
    if _native.native_error() is not None:
        return f"native core missing: {_native.native_error()}"
    if not _native.built_with_cuda():
        return "verispec was built without CUDA kernels (no nvcc at build time, or VERISPEC_CUDA=OFF)"
    return _cuda_driver_problem()


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


@cache
def _cuda_driver_problem() -> str | None:
    """The kernels link the CUDA runtime statically: a driver older than that runtime sees no device
    (every launch would fail with cudaErrorInsufficientDriver) although torch, built against an older
    CUDA, may see the GPU fine. Say so instead of failing at the first launch."""
    import torch

    if not torch.cuda.is_available():
        return None
    mod = _native.native()
    if mod.cuda_device_count() > 0:
        return None
    runtime, driver = mod.cuda_runtime_version(), mod.cuda_driver_version()
    if driver < runtime:
        return (f"verispec's CUDA kernels were built with CUDA {_cuda_version(runtime)}, but this machine's driver "
                f"supports CUDA {_cuda_version(driver)}: update the NVIDIA driver, or build verispec with a CUDA "
                "toolkit the driver supports (VERISPEC_CUDA=ON pip install ...)")
    return (f"torch sees a GPU but verispec's CUDA runtime ({_cuda_version(runtime)}, driver "
            f"{_cuda_version(driver)}) sees none (CUDA_VISIBLE_DEVICES, or a container without the device?)")


def _device_class(device: Any) -> str:
    """'cpu', or 'sm_XY' for a CUDA device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


@cache
def _load(target: str) -> Callable[..., Any] | str:
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"{module_name} is not importable ({exc})"
    fn = getattr(module, func_name, None)
    if fn is None:
        return f"{target} is not implemented"
    return fn


def status(op: str, backend: str, device: Any = None) -> BackendStatus:
    """Why `backend` can or cannot run `op` on `device` (None: this machine's best device)."""
    import torch

    if op not in IMPLEMENTATIONS:
        raise ValueError(f"unknown op {op!r}; known ops: {sorted(IMPLEMENTATIONS)}")
    if backend not in IMPLEMENTATIONS[op]:
        raise ValueError(f"unknown backend {backend!r} for {op}; choose one of {list(IMPLEMENTATIONS[op])}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    dclass = _device_class(dev) if dev.type != "cuda" or torch.cuda.is_available() else "cuda"

    def st(ok: bool, verified: bool, reason: str) -> BackendStatus:
        return BackendStatus(op, backend, ok, verified, reason)

    loaded = _load(IMPLEMENTATIONS[op][backend])
    if isinstance(loaded, str):
        return st(False, False, loaded)
    if backend == "torch":
        return st(True, True, "reference implementation, runs on every device")
    if backend == "triton":
        problem = _triton_problem()
        if problem:
            return st(False, False, problem)
        if dev.type == "cpu":
            if _interpreting():
                return st(True, False, "CPU tensors through the Triton interpreter (TRITON_INTERPRET=1): correctness only, slow")
            return st(False, False, "tensors are on the CPU and TRITON_INTERPRET is not set (no GPU)")
        if dev.type != "cuda":
            return st(False, False, f"no Triton support for device type {dev.type!r}")
    if backend == "cuda":
        problem = _cuda_problem()
        if problem:
            return st(False, False, problem)
        if dev.type != "cuda":
            return st(False, False, f"tensors are on {dev.type!r}, the CUDA kernels need a CUDA device")
    if dev.type == "cuda" and not torch.cuda.is_available():
        return st(False, False, "no CUDA GPU is visible to torch")
    verified_on = VERIFIED.get((op, backend), {})
    if dclass in verified_on:
        return st(True, True, f"verified on {dclass}: {verified_on[dclass]}")
    return st(True, False, f"not yet verified on a GPU of class {dclass}; pass backend={backend!r} to use it anyway")


def resolve(op: str, backend: str, device: Any) -> tuple[str, Callable[..., Any]]:
    """Pick the implementation of `op` to run on tensors living on `device`."""
    if backend == "auto":
        allow = _allow_unverified()
        for name in BACKENDS:
            if name not in IMPLEMENTATIONS[op]:
                continue
            s = status(op, name, device)
            # The interpreter is never an automatic choice: it exists for tests.
            if s.available and (s.verified or (allow and str(device) != "cpu")):
                return name, _load(IMPLEMENTATIONS[op][name])  # type: ignore[return-value]
        raise BackendUnavailable(f"verispec.{op}: no backend can run on {device}")  # torch always can
    s = status(op, backend, device)
    if not s.available:
        raise BackendUnavailable(f"verispec.{op}: backend {backend!r} is unavailable on {device}: {s.reason}")
    return backend, _load(IMPLEMENTATIONS[op][backend])  # type: ignore[return-value]


def backends(device: Any = None) -> dict[str, dict[str, Any]]:
    """What each backend can do here, and why not when it cannot.

    Returns ``{backend: {"available": bool, "reason": str, "ops": {op: BackendStatus}}}``; a backend
    is available when at least one op can run on it.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in reversed(BACKENDS):
        ops = {op: status(op, name, device) for op in IMPLEMENTATIONS if name in IMPLEMENTATIONS[op]}
        avail = [s for s in ops.values() if s.available]
        if avail:
            reason = "; ".join(sorted({s.reason for s in avail}))
        else:
            reason = "; ".join(sorted({s.reason for s in ops.values()}))
        report[name] = {"available": bool(avail), "reason": reason, "ops": ops}
    return report


def backend_report(device: Any = None) -> str:
    """Human-readable form of `backends()`, as printed by `verispec info`."""
    lines = []
    for name, entry in backends(device).items():
        lines.append(f"{name}: {'available' if entry['available'] else 'unavailable'}")
        for s in entry["ops"].values():
            flag = "ok " if s.available else "no "
            ver = "verified" if s.verified else "unverified"
            lines.append(f"  {flag}{s.op:<15} {ver:<10} {s.reason}")
    return "\n".join(lines)
