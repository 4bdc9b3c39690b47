"""What every GPU launch of the kernel backends needs, in one place.

* `launches_on`: kernels (CUDA and Triton alike) launch on the *current* device. With tensors on
  ``cuda:1`` and ``cuda:0`` current (normal under ``device_map="auto"``) a launch would fail or run on
  the wrong device, so each backend entry point makes the tensors' device current for its duration.
* `workspace`: every buffer a kernel backend fills is allocated through it, so tests can swap in a
  poisoning allocator and catch entries a kernel never writes (one hook for every backend).
* `device_table`: small device arrays derived from host integers (per-layer cache pointers or offsets).
  Copying them every call would synchronise the host and break CUDA-graph capture. A plain global LRU
  can evict a table (and its memory be reused) while a captured graph still reads it, so a table is
  owned by the tensor it describes (the first cache layer), a small LRU keyed by the values lets new
  view objects of the same memory reuse it (no copy), and a table used inside a capture is pinned for
  the life of the process (graphs are few; tables are a few hundred bytes).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable

import torch


def launches_on(device_of: Callable[..., Any]):
    """Decorator: run the wrapped backend with ``device_of(*args, **kwargs)`` as the current CUDA device."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            dev = device_of(*args, **kwargs)
            if isinstance(dev, torch.device) and dev.type == "cuda" and dev.index is not None:
                with torch.cuda.device(dev):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)

        return inner

    return wrap


def workspace(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised output/workspace buffer for a kernel launch (tests replace this function)."""
    return torch.empty(*shape, dtype=dtype, device=device)


_ATTR = "_verispec_device_tables"
_RECENT: OrderedDict = OrderedDict()  # (device, values) -> table, for new view objects of known memory
_RECENT_MAX = 64
_PINNED: dict[int, torch.Tensor] = {}  # tables a CUDA graph captured: never freed


def device_table(owner: torch.Tensor, values: tuple[int, ...], op: str) -> torch.Tensor:
    """int64 device copy of ``values``, made once per distinct ``values`` and device."""
    tables = getattr(owner, _ATTR, None)
    if tables is None:
        tables = {}
        setattr(owner, _ATTR, tables)
    key = (str(owner.device), values)
    capturing = owner.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    table = tables.get(values)
    if table is None:
        table = _RECENT.get(key)
        if table is None:
            if capturing:
                raise RuntimeError(
                    f"verispec.{op}: first call with these cache tensors is inside a CUDA graph capture; its "
                    "pointer table needs a host-to-device copy, which capture forbids. Call it once before "
                    "capturing (the usual warm-up run)."
                )
            table = torch.tensor(values, dtype=torch.int64).to(owner.device)
        tables[values] = table
    _RECENT[key] = table
    _RECENT.move_to_end(key)
    while len(_RECENT) > _RECENT_MAX:
        _RECENT.popitem(last=False)
    if capturing:
        _PINNED[id(table)] = table
    return table
