"""Helpers shared by the kernel benchmarks (bench_commit_kv.py, bench_tree_attention.py, bench_verify.py):
the measured copy bandwidth they judge against, device facts, and the stamped result files.

Imported as ``_gpu_common`` (the bench scripts' directory is on ``sys.path`` both when run as scripts and
under pytest).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def commit_hash() -> str:
    """Short hash of the checkout's HEAD, or "unknown" outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def copy_bandwidth(device="cuda", *, nbytes: int = 1 << 30, timer: Optional[Callable[[Callable], float]] = None,
                   ) -> float:
    """Measured device-to-device copy bandwidth in GB/s (bytes read + bytes written per second) of an
    ``nbytes`` buffer; ``timer(fn)`` gives milliseconds (default: triton's do_bench median, warmup 10, rep 200)."""
    if timer is None:
        from triton.testing import do_bench

        def timer(fn):
            return do_bench(fn, warmup=10, rep=200, return_mode="median")

    src = torch.empty(nbytes // 2, dtype=torch.int16, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def device_info(device) -> tuple[str, int]:
    """(name, SMs) of a CUDA device; (processor, CPU count) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.name, props.multi_processor_count
    return platform.processor() or "cpu", os.cpu_count()


def announce_device(name: str, bandwidth: float, sms: Optional[int] = None) -> None:
    """The line collect_gpu_results.py reads device and bandwidth back from when a run is cut short."""
    print(f"device: {name}{f' ({sms} SMs)' if sms is not None else ''}, measured copy bandwidth {bandwidth:.0f} GB/s")


def result_header(bench: str, device: str, bandwidth: float) -> dict:
    """The fields every result file starts with: bench, device, copy bandwidth, commit, UTC date, torch."""
    return {"bench": bench, "device": device, "copy_bandwidth_GBps": bandwidth, "commit": commit_hash(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__}


def result_stem(out_dir: Path, result: dict, *, minutes: bool = True) -> Path:
    """``out_dir/<bench>-<device>-<date>-<commit>`` (no suffix), creating ``out_dir``; the date is
    YYYY-MM-DDTHHMM, or YYYY-MM-DD with ``minutes=False``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    date = result["date"][:16].replace(":", "") if minutes else result["date"][:10]
    return out_dir / f"{result['bench']}-{result['device'].replace(' ', '_')}-{date}-{result['commit']}"


def write_json(stem: Path, result: dict) -> Path:
    """Atomic: sweeps rewrite their file after every shape, and a step killed by its timeout must leave
    the previous complete file, never half of a new one."""
    path = Path(f"{stem}.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return path


def wall_timer(fn: Callable) -> float:
    """Milliseconds of one call: a stand-in for do_bench when the tests drive the sweeps on CPU."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3
