"""Compile Triton kernels for an H100 (sm_90) on a machine without a GPU, and read what ptxas says.

The interpreter accepts code the compiler rejects (loop-carried types, constexpr branches, dot shapes),
and a kernel that compiles can still fail at its first GPU launch for want of shared memory or run
slowly from register spills. Compiling ahead of time catches all three before a GPU session pays for
them. Runs only in a child process without TRITON_INTERPRET (the interpreter replaces the compiler).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Dynamic shared memory one block may opt into on sm_90 (227 KiB).
SM90_MAX_SHARED = 232448
# Spill bytes tolerated per fp16/bf16 kernel. ptxas 12.8 (bundled with Triton 3.6, the GPU image's)
# spills 8-16 bytes in three variants at 72-128 registers where ptxas 13 spills none: a few words of
# local memory, noise. Tiles that overflow the register file spilled 96 bytes and more.
SPILL_TOLERANCE = 32


@dataclass
class Compiled:
    name: str
    registers: int
    spill_bytes: int  # spill stores + spill loads
    shared: int  # Triton's dynamic shared memory, bytes


def _ptxas_report(ptx: str, arch: str) -> tuple[int, int]:
    from triton.backends.nvidia.compiler import get_ptxas  # the ptxas Triton itself uses for this arch

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        run = subprocess.run([get_ptxas(90).path, "-v", f"--gpu-name={arch}", str(src), "-o",
                              str(Path(tmp) / "k.o")], capture_output=True, text=True)
    text = run.stdout + run.stderr
    if run.returncode:
        raise RuntimeError(f"ptxas failed ({run.returncode}): {text[-2000:]}")
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return regs, spills


def compile_sm90(fn, params: list[tuple[str, str]], constexprs: dict, name: str = "", **options) -> Compiled:
    """Compile ``fn`` with runtime parameters ``params`` ([(name, type)]), ``constexprs`` and launch
    ``options`` (num_warps, num_stages; Triton's defaults where absent, as at a launch)."""
    return _compile(fn, params, constexprs, {}, name=name, **options)


def _compile(fn, params, constexprs, attrs, name="", **options) -> Compiled:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    assert "TRITON_INTERPRET" not in os.environ, "compile in a child process without the interpreter"
    sig = {p: ("constexpr" if p in constexprs else kind) for p, kind in params}
    sig.update({k: "constexpr" for k in constexprs})
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32),
                            options=options)
    regs, spills = _ptxas_report(kernel.asm["ptx"], "sm_90a")
    return Compiled(name or fn.__name__, regs, spills, int(kernel.metadata.shared))


def _compile_job(job: tuple[str, tuple]) -> Compiled:
    import importlib

    module, key = job
    return compile_specialized(getattr(importlib.import_module(module), key[0]), key)


def compile_many(jobs: list[tuple[str, tuple]]) -> list[Compiled]:
    """Compile ``(module, specialize() key)`` jobs in parallel processes (compiles are CPU-bound and
    single-threaded); results in job order."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        return list(pool.map(_compile_job, jobs))


def run_in_child(module: str, function: str, timeout: int = 900) -> str:
    """Run ``tests/<module>.py:<function>()`` in a fresh interpreter without TRITON_INTERPRET; return
    its stdout (the compile report), or fail with its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    here = Path(__file__).resolve().parent
    code = f"import sys; sys.path.insert(0, {str(here)!r}); import {module} as m; m.{function}()"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout


class Recorder:
    """Stands in for a ``@triton.jit`` kernel in its module: ``kernel[grid](*args, **kw)`` records the
    call instead of launching, so the real launcher code chooses blocks, flags and strides on CPU
    tensors and the compile below sees exactly the arguments a GPU launch would get."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def specialize(fn, args: tuple, kwargs: dict) -> tuple:
    """Specialise a recorded call's arguments the way Triton's launcher does (1 -> constexpr, multiples
    of 16 and 16-byte-aligned pointers -> divisibility hints, do_not_specialize honoured). Returns a
    hashable key: (params, constexprs, attrs, options) as tuples; equal keys compile to one kernel."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(fn.arg_names, args))
    values.update(kwargs)
    params, constexprs, attrs = [], {}, {}
    for i, kp in enumerate(fn.params):
        value = values[kp.name]
        if kp.is_constexpr:
            constexprs[kp.name] = value
            continue
        kind, spec = native_specialize_impl(BaseBackend, value, False, not kp.do_not_specialize,
                                            not kp.do_not_specialize_on_alignment)
        if kind == "constexpr":
            constexprs[kp.name] = spec
            continue
        params.append((kp.name, kind))
        if spec and "D" in spec:
            attrs[(i,)] = 16
    return (fn.__name__, tuple(params), tuple(sorted(constexprs.items())), tuple(sorted(attrs.items())),
            tuple(sorted(options.items())))


def compile_specialized(fn, key: tuple) -> Compiled:
    _, params, constexprs, attrs, options = key
    attrs = {k: [["tt.divisibility", v]] for k, v in attrs}
    return _compile(fn, list(params), dict(constexprs), attrs, **dict(options))
