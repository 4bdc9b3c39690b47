"""Evidence of what each test and bench checks, for every pytest run in this checkout (tests/ and
bench/; the test set-up itself lives in tests/conftest.py).

A test module (or test) declares its op with ``pytestmark = pytest.mark.op("verify")``; the backend is
the test's ``backend`` parameter when it has one, else a ``pytest.mark.backend("triton")`` marker. Both
go into the junit XML as properties, and ``--evidence-json FILE`` writes every test's outcome with
them and the device, which tools/gpu_evidence.py reads. Nothing is inferred from test names.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def pytest_addoption(parser):
    parser.addoption("--evidence-json", default=None, metavar="FILE",
                     help="write each test's op, backend, gpu mark and outcome, with the device, as JSON")


def _declared(item) -> tuple:
    op = item.get_closest_marker("op")
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("backend")
    if backend is None:
        marker = item.get_closest_marker("backend")
        backend = marker.args[0] if marker else None
    return (op.args[0] if op else None), (str(backend) if backend is not None else None)


def pytest_collection_finish(session):
    for item in session.items:
        op, backend = _declared(item)
        item.user_properties += [("op", op or "-"), ("backend", backend or "-")]


_EVIDENCE: list = []
_STATE: dict = {"path": None, "written": 0.0, "header": None}


def pytest_configure(config):
    _STATE["path"] = config.getoption("--evidence-json", default=None)


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":  # setup/teardown only when they did not pass
        props = dict(report.user_properties)
        message = ""
        if report.outcome != "passed" and report.longrepr is not None:
            crash = getattr(report.longrepr, "reprcrash", None)  # failures: the exception line
            message = crash.message if crash else (report.longrepr[2] if isinstance(report.longrepr, tuple)
                                                   else str(report.longrepr))  # skips: (path, line, reason)
            message = " ".join(message.split())[:300]
        _EVIDENCE.append({"id": report.nodeid, "op": props.get("op", "-"), "backend": props.get("backend", "-"),
                          "gpu": "gpu" in report.keywords, "when": report.when,
                          "outcome": "error" if report.failed and report.when != "call" else report.outcome,
                          "duration_s": round(report.duration, 3), "message": message})
        if _STATE["path"] and time.monotonic() - _STATE["written"] > 2:
            _write(complete=False)  # a run killed by a timeout still leaves what it saw


def _header() -> dict:
    import torch

    gpu = torch.cuda.is_available()
    try:
        from verispec import _native

        built_with_cuda = _native.built_with_cuda()
    except Exception:
        built_with_cuda = None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        head = ""
    return {"kind": "verispec-test-evidence",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(0) if gpu else None,
            "device_class": "sm_{}{}".format(*torch.cuda.get_device_capability(0)) if gpu else None,
            "built_with_cuda": built_with_cuda, "torch": torch.__version__, "python": platform.python_version(),
            "commit": head or os.environ.get("VS_COMMIT") or None}


def _write(complete: bool, exitstatus=None) -> None:
    """Atomic rewrite: readers never see half a file."""
    if _STATE["header"] is None:
        _STATE["header"] = _header()
    path = Path(_STATE["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {**_STATE["header"], "complete": complete, "exitstatus": exitstatus, "tests": _EVIDENCE}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    _STATE["written"] = time.monotonic()


def pytest_sessionfinish(session, exitstatus):
    if _STATE["path"]:
        _write(complete=True, exitstatus=int(exitstatus))
