"""Shared harness of the CUDA-emulation tests: build driver sources with g++ against
csrc/testing/cuda_emulation.h and the CUDA headers, and load the result with ctypes.

Used by test_tree_attention_cuda_emulated.py and test_verify_cuda_emulated.py; each keeps its own
C++ driver (the extern "C" entry points) and the Python side that calls it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMULATION_HEADER = ROOT / "csrc" / "testing" / "cuda_emulation.h"


def cuda_include() -> Path | None:
    """The CUDA include directory holding cuda_fp16.h ($CUDA_HOME, $CUDA_PATH, /usr/local/cuda, nvcc's), or None."""
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and (Path(base) / "include" / "cuda_fp16.h").exists():
            return Path(base) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = Path(nvcc).resolve().parent.parent / "include"
        if (inc / "cuda_fp16.h").exists():
            return inc
    return None


def build_emulated(tmp_path_factory, dirname: str, sources: dict[str, str], lib_name: str) -> ctypes.CDLL:
    """Write `sources` (file name -> C++ text) to a fresh temporary directory, compile them into one
    shared library and load it. Skips the calling test when there is no C++ compiler, no CUDA headers or
    no emulation header; a failing compile is a test failure."""
    inc = cuda_include()
    cxx = shutil.which("g++") or shutil.which("c++")
    if inc is None or cxx is None or not EMULATION_HEADER.exists():
        pytest.skip("needs a C++ compiler, the CUDA headers (cuda_fp16.h) and csrc/testing/cuda_emulation.h "
                    "to emulate the kernels")
    d = tmp_path_factory.mktemp(dirname)
    srcs = []
    for name, text in sources.items():
        (d / name).write_text(text)
        srcs.append(str(d / name))
    lib = d / lib_name
    cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", f"-I{ROOT / 'csrc'}", f"-I{inc}", *srcs, "-o", str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulation build failed:\n{res.stderr[-4000:]}"
    return ctypes.CDLL(str(lib))
