"""What every op's benchmark shares: the device, its measured copy bandwidth (the physical floor the
kernel benches judge against), timers, and the stamp (versions, commit, date) every result carries."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch


def commit_hash(where: Optional[Path] = None) -> str:
    """Short hash of the git checkout holding ``where`` (default: this package), or "unknown" when
    verispec runs from an installed wheel."""
    where = where or Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device) -> tuple[str, int]:
    """(name, SMs) of a CUDA device; (CPU model, CPU count) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.name, props.multi_processor_count
    return cpu_name(), os.cpu_count() or 1


def gpu_timer(fn: Callable, *, warmup: int = 10, rep: int = 50) -> float:
    """Median milliseconds of ``fn`` on the GPU: triton's do_bench (L2 flushed between runs) when
    triton imports, else CUDA events around each call."""
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    for _ in range(3):
        fn()
    times = []
    for _ in range(max(rep // 2, 5)):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(sorted(times)[len(times) // 2])


def cpu_timer(fn: Callable, *, budget_s: float = 0.5, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median wall milliseconds of ``fn`` over repeated calls (one warm-up), stopping after ``budget_s``
    once ``min_reps`` calls ran. On a shared machine the median is the robust choice."""
    fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def wall_timer(fn: Callable) -> float:
    """Milliseconds of one call: a stand-in for do_bench when the tests drive the sweeps on CPU."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def copy_bandwidth(device="cuda", *, nbytes: int = 1 << 30, timer: Optional[Callable[[Callable], float]] = None,
                   ) -> float:
    """Measured copy bandwidth in GB/s (bytes read + bytes written per second) of an ``nbytes``
    buffer on ``device``; ``timer(fn)`` gives milliseconds (default: gpu_timer with warmup 10, rep 200)."""
    if timer is None:
        def timer(fn):
            return gpu_timer(fn, warmup=10, rep=200)

    src = torch.empty(nbytes // 2, dtype=torch.int16, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def versions() -> dict[str, Optional[str]]:
    """Versions of verispec and of everything it is compared with (None: not installed)."""
    from importlib import metadata

    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("verispec", "torch", "triton", "transformers", "numpy", "draftretriever", "flashinfer-python"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch_cuda"] = torch.version.cuda
    return out


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, result: dict) -> Path:
    """Atomic: sweeps rewrite their file after every shape, and a run killed by a timeout must leave
    the previous complete file, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return path


@dataclass
class Context:
    """How one ``verispec bench`` run measures: the device, quick or full shapes, the timer, the copy
    bandwidth (measured once, lazily) and where progress lines go."""

    device: torch.device
    quick: bool = True
    timer: Optional[Callable[[Callable], float]] = None
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))
    _bandwidth: Optional[float] = None

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def time(self, fn: Callable) -> float:
        if self.timer is not None:
            return self.timer(fn)
        return gpu_timer(fn) if self.gpu else cpu_timer(fn)

    @property
    def bandwidth(self) -> float:
        if self._bandwidth is None:
            if self.gpu:
                self._bandwidth = copy_bandwidth(self.device)
            else:  # 256 MiB: past the caches of any CPU, small enough for a shared machine
                self._bandwidth = copy_bandwidth(self.device, nbytes=1 << 28, timer=cpu_timer)
        return self._bandwidth


def entry(ms: float, floor_ms: Optional[float] = None, **extra: Any) -> dict:
    """One timed implementation in a row: median ms and, where a floor exists, its % (floor / time)."""
    e: dict[str, Any] = {"ms": ms}
    if floor_ms is not None and ms > 0:
        e["pct_floor"] = 100.0 * floor_ms / ms
    e.update(extra)
    return e


def failure(exc: BaseException) -> dict:
    msg = str(exc).splitlines()[0][:160] if str(exc) else ""
    return {"error": f"{type(exc).__name__}: {msg}"}
