"""Build the datastore core (csrc/datastore/*.cpp, without the Python bindings) plus a C++ driver
with sanitizers and run it. AddressSanitizer + UBSan: out-of-bounds reads, leaks and undefined
behaviour in suffix sorting, file handling, drafting, online segments and the prompt index.
ThreadSanitizer: data races in the threaded suffix sort (forced on at small sizes, 2-4 threads)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_and_run(tmp_path, sanitize_flags: list[str], env: dict, driver_args: list[str]) -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    sources = [s for s in glob.glob(os.path.join(ROOT, "csrc", "datastore", "*.cpp")) if not s.endswith("bindings.cpp")]
    exe = tmp_path / "driver"
    cmd = [cxx, "-std=c++17", "-O1", "-g", *sanitize_flags, "-fno-omit-frame-pointer", "-I", os.path.join(ROOT, "csrc"),
           *sources, os.path.join(ROOT, "csrc", "datastore", "asan_driver.cc"), "-o", str(exe), "-pthread"]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "cannot find" in build.stderr and ("san" in build.stderr):
        pytest.skip(f"sanitizer runtime not installed: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe), str(tmp_path), *driver_args], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, **env))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_datastore_core_under_asan_ubsan(tmp_path):
    out = _build_and_run(tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
                         {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}, [])
    assert "datastore sanitizer driver: ok" in out


@pytest.mark.slow
def test_threaded_suffix_sort_under_tsan(tmp_path):
    out = _build_and_run(tmp_path, ["-fsanitize=thread"], {"TSAN_OPTIONS": "halt_on_error=1:exitcode=66"},
                         ["sort-only"])
    assert "suffix sorting driver: ok" in out
    assert "WARNING: ThreadSanitizer" not in out
