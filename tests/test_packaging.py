"""`pip wheel .` must produce an installable wheel with the native core inside the package and the Triton
kernels as verispec.ops.triton (never a top-level `triton_kernels`, a name another project owns)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_wheel_builds_an_installable_wheel(tmp_path):
    env = dict(os.environ, VERISPEC_CUDA="OFF")  # the CUDA build is covered by the main build
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path),
         "-Cbuild-dir=" + str(tmp_path / "build"), str(ROOT)],
        check=True, env=env, timeout=1200,
    )
    (wheel,) = tmp_path.glob("verispec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("verispec/_C.") and n.endswith(".so") for n in names), names
    for op in ("verify", "tree_attention", "commit_kv"):
        assert f"verispec/ops/triton/{op}.py" in names and f"verispec/ops/cuda/{op}.py" in names
    assert "verispec/__init__.py" in names
    assert not [n for n in names if n.startswith("triton_kernels/")], "triton_kernels leaked to top level"
    # Install into a throwaway target dir and import from there, away from the checkout.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    code = (
        "import verispec, verispec._C as C, verispec.ops.triton as tk;"
        f"assert verispec.__file__.startswith({str(target)!r}), verispec.__file__;"
        "print(C.op_families)"
    )
    # -S: no site-packages, so the checkout's editable install cannot shadow the wheel.
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)))
    assert out.returncode == 0, out.stderr
