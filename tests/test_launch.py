"""The launch guard: GPU backends run with their tensors' device current."""

from __future__ import annotations

import contextlib

import torch

from verispec.ops import _launch


def test_launches_on_makes_the_tensors_device_current(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def fake_device(dev):
        entered.append(dev)
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)

    @_launch.launches_on(lambda x, **kw: x)
    def backend(x, **kw):
        return len(entered)

    assert backend(torch.device("cuda", 1)) == 1 and entered == [torch.device("cuda", 1)]
    assert backend(torch.device("cpu")) == 1  # CPU tensors: nothing to switch
    assert backend(None) == 1


def test_backends_are_guarded():
    """Every Triton/CUDA entry point carries the guard (functools.wraps keeps __wrapped__)."""
    from verispec import _backends

    for op, impls in _backends.IMPLEMENTATIONS.items():
        for backend in ("triton", "cuda"):
            fn = _backends._load(impls[backend])
            assert callable(fn), (op, backend, fn)
            assert hasattr(fn, "__wrapped__"), fn.__name__


def test_old_driver_is_reported(monkeypatch):
    """torch sees a GPU, but the driver is older than the CUDA runtime verispec links statically: the
    CUDA backend says why it is unavailable instead of failing at its first launch."""
    from types import SimpleNamespace

    from verispec import _backends

    fake = SimpleNamespace(cuda_device_count=lambda: 0, cuda_runtime_version=lambda: 13000,
                           cuda_driver_version=lambda: 12040)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_backends._native, "native", lambda: fake)

    def problem():
        _backends._cuda_driver_problem.cache_clear()
        try:
            return _backends._cuda_driver_problem()
        finally:
            _backends._cuda_driver_problem.cache_clear()

    msg = problem()
    assert "built with CUDA 13.0" in msg and "supports CUDA 12.4" in msg
    fake.cuda_driver_version = lambda: 13000  # a new enough driver: not blamed
    msg = problem()
    assert "sees none" in msg and "update the NVIDIA driver" not in msg
