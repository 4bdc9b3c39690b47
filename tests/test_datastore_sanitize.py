"""Build the datastore core (csrc/datastore/*.cpp, without the Python bindings) plus a C++ driver
with AddressSanitizer + UBSan and run it: out-of-bounds reads, leaks and undefined behaviour in
suffix sorting, file handling, drafting, online segments and the prompt index fail this test."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_datastore_core_under_asan_ubsan(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    sources = [s for s in glob.glob(os.path.join(ROOT, "csrc", "datastore", "*.cpp")) if not s.endswith("bindings.cpp")]
    exe = tmp_path / "driver"
    cmd = [cxx, "-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer", "-I", os.path.join(ROOT, "csrc"), *sources,
           os.path.join(ROOT, "csrc", "datastore", "asan_driver.cc"), "-o", str(exe), "-pthread"]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "sanitizer" in build.stderr and "cannot find" in build.stderr:
        pytest.skip(f"sanitizer runtime not installed: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-4000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "ok" in run.stdout
