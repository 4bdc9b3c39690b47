"""Access to the compiled core `verispec._C`, with a clear error when it is missing."""

from __future__ import annotations

from types import ModuleType

try:
    from verispec import _C as _native_module  # type: ignore[attr-defined]

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - only on broken installs
    _native_module = None
    _IMPORT_ERROR = str(exc)


def native() -> ModuleType:
    """Return the compiled module or raise an ImportError that says how to get it."""
    if _native_module is None:
        raise ImportError(
            "verispec's native core (verispec._C) is not importable: "
            f"{_IMPORT_ERROR}. Reinstall verispec (pip install verispec, or `make build` in a checkout)."
        )
    return _native_module


def native_error() -> str | None:
    return _IMPORT_ERROR


def built_with_cuda() -> bool:
    return _native_module is not None and bool(_native_module.built_with_cuda)


def cuda_stream_handle(device) -> int:
    """The raw cudaStream_t (as an int) of torch's current stream on `device`."""
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)
