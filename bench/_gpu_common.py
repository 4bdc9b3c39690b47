"""Helpers shared by the kernel benchmarks (bench_commit_kv.py, bench_tree_attention.py, bench_verify.py):
the stamped result files. The measured copy bandwidth, device facts and timers come from
``verispec.bench._common`` (shared with ``verispec bench``).

Imported as ``_gpu_common`` (the bench scripts' directory is on ``sys.path`` both when run as scripts and
under pytest).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Optional

import torch

from verispec.bench._common import commit_hash as _commit_hash
from verispec.bench._common import copy_bandwidth, device_info, wall_timer

__all__ = ["ROOT", "RESULTS", "announce_device", "commit_hash", "copy_bandwidth", "device_info", "result_header",
           "result_stem", "wall_timer", "write_json"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def commit_hash() -> str:
    """Short hash of the checkout's HEAD, or "unknown" outside git."""
    return _commit_hash(ROOT)


def announce_device(name: str, bandwidth: float, sms: Optional[int] = None) -> None:
    """The first line of every kernel bench's output: the device and the bandwidth it is judged against."""
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
