import pytest
import torch

import verispec
from verispec import _backends
from verispec._backends import BackendUnavailable, resolve, status


def test_backends_explains_every_backend():
    report = verispec.backends("cpu")
    assert set(report) == {"torch", "triton", "cuda"}
    for name, entry in report.items():
        assert isinstance(entry["available"], bool)
        assert entry["reason"], f"backend {name} gives no reason"
        for op, st in entry["ops"].items():
            assert st.reason, f"{op}/{name} gives no reason"


def test_cuda_backend_is_unavailable_for_cpu_tensors():
    for op in _backends.IMPLEMENTATIONS:
        st = status(op, "cuda", "cpu")
        assert not st.available
        # the reason is the device, not (say) a build without CUDA kernels
        assert "'cpu'" in st.reason and "CUDA device" in st.reason, st.reason


def test_auto_on_cpu_never_picks_an_unverified_or_interpreted_backend():
    checked = 0
    for op in _backends.IMPLEMENTATIONS:
        if not status(op, "torch", "cpu").available:
            continue  # op not implemented in this build
        name, fn = resolve(op, "auto", torch.device("cpu"))
        assert name == "torch"
        module, func = _backends.IMPLEMENTATIONS[op]["torch"].split(":")
        assert (fn.__module__, fn.__name__) == (module, func), fn
        checked += 1
    assert checked >= 1


def test_unknown_op_and_backend_are_clear_errors():
    with pytest.raises(ValueError, match="unknown op"):
        status("nope", "torch", "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        status("verify", "opencl", "cpu")


def test_asking_for_an_unavailable_backend_says_why():
    with pytest.raises(BackendUnavailable, match="cuda.*unavailable"):
        resolve("verify", "cuda", torch.device("cpu"))


def test_auto_on_a_gpu_picks_only_verified_backends(monkeypatch):
    # Simulate an sm_90 GPU with every backend importable, using a fake op whose implementations exist.
    fake = {"torch": "math:sqrt", "triton": "math:floor", "cuda": "math:ceil"}
    monkeypatch.setitem(_backends.IMPLEMENTATIONS, "fake_op", fake)
    monkeypatch.setattr(_backends, "_device_class", lambda device: "sm_90")
    monkeypatch.setattr(_backends, "_triton_problem", lambda: None)
    monkeypatch.setattr(_backends, "_cuda_problem", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("VERISPEC_ALLOW_UNVERIFIED", raising=False)
    gpu = torch.device("cuda", 0)

    monkeypatch.setattr(_backends, "VERIFIED", {})
    assert resolve("fake_op", "auto", gpu)[0] == "torch"
    st = status("fake_op", "triton", gpu)
    assert st.available and not st.verified and "not yet verified" in st.reason
    assert resolve("fake_op", "triton", gpu)[0] == "triton"  # explicit request is honoured

    monkeypatch.setattr(_backends, "VERIFIED", {("fake_op", "triton"): {"sm_90": "test run"}})
    assert resolve("fake_op", "auto", gpu)[0] == "triton"
    monkeypatch.setattr(_backends, "VERIFIED", {("fake_op", "triton"): {"sm_80": "test run"}})
    assert resolve("fake_op", "auto", gpu)[0] == "torch"  # verified on another class only

    monkeypatch.setenv("VERISPEC_ALLOW_UNVERIFIED", "1")
    assert resolve("fake_op", "auto", gpu)[0] == "cuda"


def test_backend_report_is_printable():
    text = verispec.backend_report("cpu")
    assert "torch" in text and "triton" in text and "cuda" in text


def test_info_cli_runs(capsys):
    from verispec.cli import main

    assert main(["info", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "native core" in out and "torch:" in out
