"""Run the suite and report it: one markdown table per op, the JSON record, PNG plots, and the
regression check against an earlier JSON record."""

from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Optional

import torch

from verispec.bench import OPS
from verispec.bench._common import Context, commit_hash, cpu_name, device_info, now_utc, versions

# Ops whose work never touches the accelerator: their rows are CPU rows on any machine.
CPU_ONLY = {"datastore"}


def is_ours(name: str) -> bool:
    return name.startswith("verispec")


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_suite(ops: list[str], ctx: Context) -> dict[str, Any]:
    """Run each op's benchmark; an op that cannot run here (missing package or data) is recorded as
    skipped, one that fails as an error, and the others still run."""
    name, units = device_info(ctx.device)
    result: dict[str, Any] = {
        "verispec_bench": 1, "date": now_utc(), "commit": commit_hash(), "quick": ctx.quick,
        "device": {"type": ctx.device.type, "name": name, ("sms" if ctx.gpu else "cpus"): units,
                   "cpu": cpu_name(), "platform": platform.platform(),
                   "torch_threads": torch.get_num_threads(), "load_average": _loadavg()},
        "versions": versions(), "ops": {},
    }
    for op in ops:
        ctx.log(f"--- {op}")
        try:
            r = importlib.import_module(OPS[op]).run(ctx)
        except ImportError as exc:
            # another package missing: skipped; verispec's own import failing is a bug, reported as one
            ours = (exc.name or "").split(".")[0] == "verispec"
            r = {"op": op, ("error" if ours else "skipped"): f"{type(exc).__name__}: {exc}"}
        except FileNotFoundError as exc:  # data a package ships (the GGUF model, HumanEval) is missing
            r = {"op": op, "skipped": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # one broken op must not lose the others' numbers
            r = {"op": op, "error": f"{type(exc).__name__}: {exc}"}
        r["device"] = "CPU" if (op in CPU_ONLY or not ctx.gpu) else "GPU"
        result["ops"][op] = r
    if ctx._bandwidth is not None:
        result["device"]["copy_bandwidth_GBps"] = round(ctx._bandwidth, 1)
    return result


def _fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.4f}"


def best_ours(row: dict) -> Optional[float]:
    times = [e["ms"] for n, e in row["impls"].items() if is_ours(n) and "ms" in e]
    return min(times) if times else None


def op_table(op: str, r: dict, device: dict) -> list[str]:
    where = "CPU: " + device.get("cpu", "?") if r.get("device") == "CPU" else "GPU: " + device.get("name", "?")
    lines = [f"### {op} ({where})", ""]
    if "skipped" in r or "error" in r:
        return lines + [f"not run: {r.get('skipped') or r.get('error')}", ""]
    lines += ["| shape | implementation | median ms | time / best verispec | % of floor | notes |",
              "|---|---|---:|---:|---:|---|"]
    for row in r["rows"]:
        ref = best_ours(row)
        for name, e in row["impls"].items():
            if "ms" not in e:
                lines.append(f"| {row['shape']} | {name} | – | – | – | {e.get('skipped') or e.get('error')} |")
                continue
            ratio = f"{e['ms'] / ref:.2f}x" if ref else "–"
            pct = f"{e['pct_floor']:.1f}%" if "pct_floor" in e else "–"
            notes = ", ".join(f"{k} {v}" for k, v in e.get("extra", {}).items())
            if e.get("bound"):
                notes = "lower bound (causal, not the tree)" + (f", {notes}" if notes else "")
            lines.append(f"| {row['shape']} | {name} | {_fmt_ms(e['ms'])} | {ratio} | {pct} | {notes} |")
    lines.append("")
    if r.get("floor"):
        bw = device.get("copy_bandwidth_GBps")
        lines.append(f"Floor: {r['floor']}" + (f" ({bw:.0f} GB/s measured)" if bw else "") + ".")
    lines += [f"{n}." if not n.endswith(".") else n for n in r.get("notes", [])]
    lines.append("")
    return lines


def markdown(result: dict) -> str:
    d = result["device"]
    v = result["versions"]
    head = [f"## verispec bench{' --quick' if result['quick'] else ''}: {d['name']}", "",
            f"{result['date']}, commit {result['commit']}, verispec {v.get('verispec')}, torch {v.get('torch')}, "
            f"python {v.get('python')}, {d.get('torch_threads')} torch threads, load average at the start "
            f"{d.get('load_average')}" + (f"; copy bandwidth {d['copy_bandwidth_GBps']:.0f} GB/s"
                                           if d.get("copy_bandwidth_GBps") else ""),
            "time / best verispec: a peer's median over the fastest verispec implementation's on the same "
            "shape (above 1: verispec is faster); % of floor: the physical floor's time over the median.", ""]
    body = [line for op, r in result["ops"].items() for line in op_table(op, r, d)]
    return "\n".join(head + body)


def compare(result: dict, baseline: dict, tolerance: float) -> list[str]:
    """verispec implementations whose median is more than ``tolerance`` (a fraction) slower than in
    ``baseline``, matched by op, shape and implementation."""
    flags = []
    for op, r in result["ops"].items():
        old_rows = {row["shape"]: row for row in baseline.get("ops", {}).get(op, {}).get("rows", [])}
        for row in r.get("rows", []):
            old = old_rows.get(row["shape"])
            if old is None:
                continue
            for name, e in row["impls"].items():
                o = old["impls"].get(name, {})
                if not is_ours(name) or "ms" not in e or "ms" not in o or not o["ms"] > 0:
                    continue
                slower = e["ms"] / o["ms"] - 1
                if slower > tolerance:
                    flags.append(f"{op} {row['shape']} {name}: {_fmt_ms(e['ms'])} ms vs {_fmt_ms(o['ms'])} ms "
                                 f"(+{100 * slower:.0f}%, tolerance {100 * tolerance:.0f}%)")
    return flags


def baseline_warnings(result: dict, baseline: dict) -> list[str]:
    warn = []
    a, b = result["device"].get("name"), baseline.get("device", {}).get("name")
    if a != b:
        warn.append(f"the baseline ran on {b!r}, this run on {a!r}: differences are not regressions")
    if result.get("quick") != baseline.get("quick"):
        warn.append("one run is --quick and the other is not: only shapes present in both are compared")
    return warn


def load_baseline(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"baseline {path} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or "ops" not in data:
        raise ValueError(f"baseline {path} is not a `verispec bench --json` file (no 'ops')")
    return data


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                           "(or pip install 'verispec[plot]')") from None


def plot(result: dict, out_dir: str) -> list[Path]:
    """One PNG per op: horizontal bars of each implementation's median per shape, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for op, r in result["ops"].items():
        rows = [row for row in r.get("rows", []) if any("ms" in e for e in row["impls"].values())]
        if not rows:
            continue
        names = sorted({n for row in rows for n, e in row["impls"].items() if "ms" in e},
                       key=lambda n: (not is_ours(n), n))
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.28 * len(rows) * len(names) + 0.4 * len(rows)))
        height = 0.8 / len(names)
        cmap = plt.get_cmap("tab10")
        for j, name in enumerate(names):
            ys = [i + j * height for i, row in enumerate(rows) if "ms" in row["impls"].get(name, {})]
            xs = [row["impls"][name]["ms"] for row in rows if "ms" in row["impls"].get(name, {})]
            ax.barh(ys, xs, height=height, label=name, color=cmap(j % 10))
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
        ax.set_yticklabels([row["shape"] for row in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        # 1-2-5 ticks in plain numbers: a sweep often spans less than a decade, where decade labels say nothing
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("median ms (log scale; shorter is faster)")
        where = "CPU" if r.get("device") == "CPU" else result["device"]["name"]
        ax.set_title(f"{op} on {where} ({result['date'][:10]}, {result['commit']})", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out / f"{op}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
