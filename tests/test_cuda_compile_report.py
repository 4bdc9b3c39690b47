"""The CUDA kernels compiled for the architectures the wheel ships (sm_80, sm_90): ptxas must report
no register spills and no stack frame for any kernel instance. No GPU needed, only nvcc; spills are a
silent slowdown that no CPU test of the emulated kernels can see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc").rglob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if Path(p).exists()), None)

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def ptxas_report(source: Path, arch: str, tmp_path: Path) -> dict[str, dict[str, int]]:
    """{kernel: {registers, stack, spill}} from ``nvcc -Xptxas -v`` with the build's CUDA flags."""
    run = subprocess.run([NVCC, "-std=c++17", "--expt-relaxed-constexpr", f"-arch={arch}", f"-I{ROOT / 'csrc'}",
                          "-c", str(source), "-o", str(tmp_path / "k.o"), "-Xptxas", "-v"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    kernels: dict[str, dict[str, int]] = {}
    name = None
    for line in run.stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for", line):
            name = m.group(1)
            kernels[name] = {}
        elif name and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                                      line)):
            kernels[name].update(stack=int(m.group(1)), spill=int(m.group(2)) + int(m.group(3)))
        elif name and (m := re.search(r"Used (\d+) registers", line)):
            kernels[name]["registers"] = int(m.group(1))
    return kernels


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_no_spills(source, arch, tmp_path):
    kernels = ptxas_report(source, arch, tmp_path)
    if "cuda_runtime_info" in source.name:
        return  # host-side queries only
    assert kernels, f"ptxas compiled no kernel from {source.name}"
    for name, info in kernels.items():
        assert set(info) == {"registers", "stack", "spill"}, (name, info)
        assert info["spill"] == 0 and info["stack"] == 0, f"{source.name} {arch}: {name} {info}"
        assert info["registers"] <= 255, (name, info)


def test_report_sees_a_stack_frame(tmp_path):
    """The parser is not blind: a kernel with a dynamically indexed local array gets a stack frame."""
    src = tmp_path / "local.cu"
    src.write_text("__global__ void local_array(int* out, int n) {\n"
                   "  int a[256];\n"
                   "  for (int i = 0; i < 256; ++i) a[i] = i * n;\n"
                   "  out[threadIdx.x] = a[(threadIdx.x * n) % 256];\n"
                   "}\n")
    (info,) = ptxas_report(src, "sm_90", tmp_path).values()
    assert info["stack"] > 0, info
