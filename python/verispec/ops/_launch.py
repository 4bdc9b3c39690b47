"""What every GPU launch of the kernel backends needs, in one place.

* `launches_on`: kernels (CUDA and Triton alike) launch on the *current* device. With tensors on
  ``cuda:1`` and ``cuda:0`` current (normal under ``device_map="auto"``) a launch would fail or run on
  the wrong device, so each backend entry point makes the tensors' device current for its duration.
* `device_table`: small device arrays derived from host integers (per-layer cache pointers or offsets).
  Copying them every call would synchronise the host and break CUDA-graph capture; caching them in a
  global LRU lets an entry be evicted and its memory reused while a captured graph still reads it. So
  a table lives exactly as long as the tensor that owns it (the first cache layer): a graph that
  replays a commit keeps the cache, and therefore the table, alive.
"""

from __future__ import annotations

import functools
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


_ATTR = "_verispec_device_tables"


def device_table(owner: torch.Tensor, values: tuple[int, ...], op: str) -> torch.Tensor:
    """int64 device copy of ``values``, cached on ``owner`` (made once per distinct ``values``)."""
    tables = getattr(owner, _ATTR, None)
    if tables is None:
        tables = {}
        setattr(owner, _ATTR, tables)
    table = tables.get(values)
    if table is None:
        if owner.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"verispec.{op}: first call with these cache tensors is inside a CUDA graph capture; its "
                "pointer table needs a host-to-device copy, which capture forbids. Call it once before "
                "capturing (the usual warm-up run)."
            )
        table = torch.tensor(values, dtype=torch.int64).to(owner.device)
        tables[values] = table
    return table
