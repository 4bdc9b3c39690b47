"""The wheel users install (the only place the test suite builds one): build it here, install it into a fresh virtual environment whose PATH has
no compiler, then import it, run `verispec info` and a CPU smoke test of every op (tools/wheel_smoke.py).

Cost: the wheel is built with VERISPEC_CUDA=OFF (C++ only: the CUDA sources are compiled by the main
build of the same CI run, and compiling them again would double CI's longest step). The CUDA wheel
itself is built by cibuildwheel (pyproject.toml, .github/workflows/wheels.yml). torch, numpy, triton
and transformers come from the project's environment through a .pth line in the fresh environment (what
--system-site-packages gives a non-venv interpreter): nothing is downloaded, and the installed
verispec is the wheel's, which the test checks. Measured on the project's 2-core machine: see the
`wheel` marker in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++", "nvcc", "cmake", "ninja")
pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "VERISPEC_CUDA": "OFF"}
    t0 = time.perf_counter()
    # A persistent build dir keeps local reruns incremental; CI's fresh clone builds from scratch.
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", dist, ROOT,
          "-Cbuild-dir=build/wheel-test"], cwd=ROOT, env=env)
    print(f"wheel built in {time.perf_counter() - t0:.0f} s")
    wheels = list(dist.glob("verispec-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    """The native core inside the package, the Triton kernels as verispec.ops.triton (never a top-level
    `triton_kernels`, a name another project owns), the benchmark suite, and no sources."""
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("verispec/_C.") and n.endswith(".so") for n in names), "no native module"
    for op in ("verify", "tree_attention", "commit_kv"):
        assert f"verispec/ops/triton/{op}.py" in names and f"verispec/ops/cuda/{op}.py" in names
    for want in ("verispec/__init__.py", "verispec/cli/bench.py", "verispec/bench/report.py"):
        assert want in names, f"{want} missing from the wheel"
    leaked = [n for n in names if n.startswith(("tests/", "bench/", "csrc/", "triton_kernels/"))]
    assert not leaked, f"leaked into the wheel: {leaked[:5]}"


def test_auditwheel_show(wheel):
    """The native module needs nothing outside the manylinux policy (no libtorch, no libcudart). The tag
    it reports is this machine's glibc; the release wheels get theirs from the manylinux_2_28 image."""
    if shutil.which("auditwheel", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("auditwheel is not installed (make deps installs it)")
    out = " ".join(_run([Path(sys.executable).parent / "auditwheel", "show", wheel]).stdout.split())
    assert re.search(r'is consistent with the following platform tag: "manylinux_2_\d+_', out), out
    assert "external shared libraries" not in out, out  # everything it links is in the policy's list
    assert "libtorch" not in out and "libcudart" not in out, out


def test_wheel_installs_and_runs_without_compiler(wheel, tmp_path):
    t0 = time.perf_counter()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel])
    # Only now the project's packages become visible (before, pip would have seen the editable verispec
    # there and tried to replace it). A plain path line: its own .pth files (the editable hook) stay off.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CC", "CXX", "CUDA_HOME", "CUDA_PATH")}
    env.update(PATH=f"{venv / 'bin'}:{bare}", TRITON_INTERPRET="1", PYTHONNOUSERSITE="1")
    probe = _run([py, "-c", "import shutil, verispec; print(verispec.__file__); "
                  f"print([c for c in {COMPILERS!r} if shutil.which(c)])"], env=env, cwd=tmp_path).stdout.split("\n")
    assert probe[0].startswith(str(venv)), f"imported {probe[0]}, not the wheel installed in {venv}"
    assert probe[1] == "[]", f"compilers on PATH: {probe[1]}"
    info = _run([venv / "bin" / "verispec", "info"], env=env, cwd=tmp_path).stdout
    assert "native core: MISSING" not in info and "native core:" in info, info
    smoke = _run([py, ROOT / "tools" / "wheel_smoke.py"], env=env, cwd=tmp_path).stdout
    assert "smoke test passed" in smoke, smoke
    # the benchmark suite runs from the wheel alone (no bench/ folder of a checkout), CPU rows labelled
    table = _run([venv / "bin" / "verispec", "bench", "--op", "commit_kv", "--quick", "--threads", "1"],
                 env=env, cwd=tmp_path).stdout
    assert "### commit_kv (CPU: " in table and "| B=4 P=8 contiguous | torch loop |" in table, table
    print(f"install + info + smoke: {time.perf_counter() - t0:.0f} s")
