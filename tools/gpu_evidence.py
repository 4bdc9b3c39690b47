"""GPU evidence for contributors: what a GPU run proved, per op and backend.

Tests declare their op and backend (``pytest.mark.op``, the ``backend`` parameter or
``pytest.mark.backend``; see tests/conftest.py) and ``pytest --evidence-json FILE`` writes each
outcome with the device. The benches write their own JSON (``verispec bench --json``, the
bench/bench_*.py result files) and print their own tables. This tool only reads those files::

    python tools/gpu_evidence.py env OUT.json          # on the GPU machine: device, build, source digest
    python tools/gpu_evidence.py summary DIR [DIR...]   # here: per op/backend verdicts, _verified.py entries

A pair (op, backend) is justified on a device class (sm_90, ...) when every test run finished, at least
one of its ``gpu``-marked tests passed there, none of its tests failed or errored, none of its ``gpu``-marked tests was skipped,
no benchmark saw a wrong output from it, for ``cuda`` the build had the CUDA kernels, and the device's
source files (csrc, python/verispec, CMakeLists.txt, pyproject.toml) are byte-identical
to ``--rev`` (default HEAD) of this checkout. The tool never edits python/verispec/_verified.py.
Standard library only: it also runs where torch is missing (``env`` imports torch when it can).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
CORE = ("csrc", "python/verispec", "CMakeLists.txt", "pyproject.toml")
GPU_BACKENDS = ("triton", "cuda")


def _git(*args: str, root: Path = ROOT) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _source(rel: str) -> bool:
    return "__pycache__" not in rel and not rel.endswith((".pyc", ".so", ".o"))


def digest(root: Path = ROOT) -> dict[str, str]:
    """{path: git blob id} of the source files the evidence is about (comparable with any commit)."""
    files = {}
    for top in CORE:
        base = root / top
        for p in [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []:
            rel = p.relative_to(root).as_posix()
            if p.is_file() and _source(rel):
                data = p.read_bytes()
                files[rel] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return files


def digest_at(rev: str, root: Path = ROOT) -> Optional[dict[str, str]]:
    out = _git("ls-tree", "-r", rev, "--", *CORE, root=root)
    if out is None:
        return None
    rows = (line.split("\t", 1) for line in out.splitlines())
    return {path: meta.split()[2] for meta, path in rows if meta.split()[1] == "blob" and _source(path)}


def env(out: Path) -> dict[str, Any]:
    """Where the evidence comes from: device, versions, build, source digest. Never raises."""
    info: dict[str, Any] = {"kind": "verispec-env", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "python": platform.python_version(), "platform": platform.platform(),
        "commit": (_git("rev-parse", "HEAD") or "").strip() or os.environ.get("VS_COMMIT"), "digest": digest()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["device_class"] = "sm_{}{}".format(*torch.cuda.get_device_capability(0))
        from verispec import _native

        info["built_with_cuda"] = _native.built_with_cuda()
        info["native_error"] = _native.native_error()
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    return info


def load(dirs: list[Path]) -> dict[str, list]:
    """Every JSON file under ``dirs``, sorted into env records, test evidence and bench results."""
    found: dict[str, list] = {"env": [], "tests": [], "bench": []}
    for d in dirs:
        for p in sorted(Path(d).rglob("*.json")):
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            kind = data.get("kind")
            if kind == "verispec-env":
                found["env"].append(data)
            elif kind == "verispec-test-evidence":
                found["tests"].append(data)
            elif "verispec_bench" in data or "bench" in data:
                data["_file"] = str(p)
                found["bench"].append(data)
    return found


def bench_problems(bench: list[dict]) -> dict[tuple[str, str], list[str]]:
    """(op, backend) -> wrong outputs or errors the benchmarks saw from verispec's implementations."""
    bad: dict[tuple[str, str], list[str]] = defaultdict(list)
    for b in bench:
        ops = b["ops"].items() if "ops" in b else [(b["bench"], b)]  # verispec bench / a bench script's file
        for op, r in ops:
            for row in r.get("rows", []):
                for name, e in row.get("impls", {}).items():
                    if name.startswith("verispec") and "error" in e:
                        be = name.replace("verispec", "").strip(" _")
                        bad[(op, be)].append(f"{row.get('shape', row)}: {e['error']}")
    return bad


def verdicts(found: dict[str, list]) -> list[dict]:
    tally: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    failures: dict[tuple, list[str]] = defaultdict(list)
    classes = set()
    cuda_built = all(t.get("built_with_cuda") for t in found["tests"]) if found["tests"] else False
    for run in found["tests"]:
        cls = run.get("device_class")
        if cls:
            classes.add(cls)
        for t in run["tests"]:
            if t["op"] == "-" or t["backend"] not in GPU_BACKENDS:
                continue
            key = (t["op"], t["backend"], cls)
            tally[key][("gpu " if t["gpu"] else "") + t["outcome"]] += 1
            if t["outcome"] in ("failed", "error"):
                failures[key].append(f"{t['id']}: {t['message']}")
    bench_bad = bench_problems(found["bench"])
    unfinished = [r.get("date") for r in found["tests"] if r.get("complete") is False]
    out = []
    for (op, be, cls), n in sorted(tally.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        why = []
        if not cls:
            why.append("no GPU")
        if not n["gpu passed"]:
            why.append("no gpu-marked test passed")
        if n["failed"] + n["error"] + n["gpu failed"] + n["gpu error"]:
            why.append(f"{n['failed'] + n['error'] + n['gpu failed'] + n['gpu error']} failed")
        if n["gpu skipped"]:
            why.append(f"{n['gpu skipped']} gpu-marked skipped")
        if bench_bad.get((op, be)):
            why.append(f"{len(bench_bad[(op, be)])} benchmark errors")
        if be == "cuda" and not cuda_built:
            why.append("built without the CUDA kernels")
        if unfinished:
            why.append(f"{len(unfinished)} test run(s) killed before the end")
        out.append({"op": op, "backend": be, "device_class": cls, "counts": dict(n), "blocked_by": why,
                    "failures": failures[(op, be, cls)][:5] + bench_bad.get((op, be), [])[:5]})
    return out


def summary(dirs: list[Path], rev: str = "HEAD", repo: Path = ROOT) -> tuple[str, list[str]]:
    """The markdown report and the _verified.py entries the evidence justifies."""
    found = load(dirs)
    lines = ["# GPU evidence", ""]
    envs = found["env"] or found["tests"]
    devices = sorted({f"{e.get('device')} ({e.get('device_class')})" for e in envs if e.get("device")})
    lines.append(f"- device: {', '.join(devices) or 'no GPU in this evidence'}")
    lines.append(f"- files: {len(found['tests'])} test runs, {len(found['bench'])} benchmark results, "
                 f"{len(found['env'])} env records")
    dev_digest = next((e["digest"] for e in found["env"] if e.get("digest")), None)
    ref = digest_at(rev, repo)
    if dev_digest is None or ref is None:
        source_ok, what = False, "no source digest (run `gpu_evidence.py env` on the device) or no git here"
    else:
        diff = sorted(p for p in set(dev_digest) | set(ref) if dev_digest.get(p) != ref.get(p))
        source_ok = not diff
        what = f"identical to {rev}" if source_ok else f"differs from {rev} in {len(diff)} files: {', '.join(diff[:8])}"
    lines += [f"- device sources: {what}", "",
              "| op | backend | device | gpu passed | failed | gpu skipped | other | verdict |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    entries = []
    date = datetime.date.today().isoformat()
    commit = (_git("rev-parse", "--short", rev, root=repo) or rev).strip()
    for v in verdicts(found):
        n = v["counts"]
        failed = sum(n.get(k, 0) for k in ("failed", "error", "gpu failed", "gpu error"))
        other = sum(c for k, c in n.items() if k in ("passed", "skipped"))
        blocked = v["blocked_by"] + ([] if source_ok else ["sources do not match"])
        lines.append(f"| {v['op']} | {v['backend']} | {v['device_class']} | {n.get('gpu passed', 0)} | {failed} | "
                     f"{n.get('gpu skipped', 0)} | {other} | {'justified' if not blocked else '; '.join(blocked)} |")
        if not blocked:
            entries.append(f'("{v["op"]}", "{v["backend"]}"): {{"{v["device_class"]}": "<results file> ({commit}, {date})"}},')
    fails = [f for v in verdicts(found) for f in v["failures"]]
    if fails:
        lines += ["", "Failures:"] + [f"- {f}" for f in fails]
    other = [f"{t['id']}: {t['message']}" for run in found["tests"] for t in run["tests"]
             if t["outcome"] in ("failed", "error") and (t["op"] == "-" or t["backend"] not in GPU_BACKENDS)]
    if other:  # tests that declare no GPU op/backend: no verdict depends on them, but nothing is hidden
        lines += ["", "Other failures (no GPU op/backend declared):"] + [f"- {f}" for f in other]
    for b in found["bench"]:
        lines.append(f"- benchmark file {Path(b['_file']).name}: {b.get('bench') or 'verispec bench'}, "
                     f"commit {b.get('commit')}, {b.get('date')}")
    return "\n".join(lines) + "\n", entries


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="on the device: device, versions, build and source digest as JSON")
    e.add_argument("out", type=Path)
    s = sub.add_parser("summary", help="here: verdicts per op/backend from fetched evidence folders")
    s.add_argument("dirs", type=Path, nargs="+")
    s.add_argument("--rev", default="HEAD", help="the commit the device's sources must equal (default HEAD)")
    s.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    if args.cmd == "env":
        print(json.dumps({k: v for k, v in env(args.out).items() if k != "digest"}))
        return 0
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"gpu_evidence: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    text, entries = summary(args.dirs, args.rev)
    print(text)
    if args.out:
        args.out.write_text(text)
    print("_verified.py entries the evidence justifies (copy by hand after reading the report):")
    print("\n".join(f"    {x}" for x in entries) if entries else "    none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
