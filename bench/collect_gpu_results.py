"""Evidence from a GPU session: captured and packed on the device, collected and judged here.

``bench/gpu_session.sh`` runs on the lent GPU machine and calls the device-side subcommands; this
file needs only the standard library (torch is imported lazily by ``env`` alone), so it also runs on a
machine without torch::

    python3 bench/collect_gpu_results.py env  OUT.json          # device: versions, GPU, build, source manifest
    python3 bench/collect_gpu_results.py pack WORK OUT          # device: WORK (raw files) -> OUT (<= 8 files)
    python3 bench/collect_gpu_results.py collect DIR [DIR ...]  # here: DIRs fetched from $OUT, one per call

``collect`` writes ``bench/results/gpu-<date>-<device>-<commit>.md`` (and ``.json``) with the device,
the commit, the per-test outcome for every op/backend pair and the benchmark tables (ratios against the
floor and the peers, the issue's targets), then prints the ``_verified.py`` entries the evidence
justifies. It never edits ``_verified.py``: a person copies the entries after reading the report.

A pair (op, backend) is justified only when, on an sm_90 device, at least one of its ``gpu``-marked
tests passed, none of its tests failed or errored in any GPU step (the GPU-marked run, the backend test
files, the benchmark correctness checks) and none of its GPU-marked tests was skipped, both test runs
finished in some session (junit XML written, not rebuilt from a log), the benchmarks saw no wrong
output from it, and for ``cuda`` the build had the CUDA kernels. The evidence is tied to the commit
whose kernel, glue and build files are byte-identical to the device's copy (HEAD or one of the 40
before it); with none, nothing is justified.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
OPS = ("verify", "tree_attention", "commit_kv")
GPU_BACKENDS = ("triton", "cuda")
# Source files whose content the evidence is about (kernels, glue, build). Tests and benches are
# recorded too but a difference there only earns a warning.
CORE_PATHS = ("csrc", "triton_kernels", "python/verispec", "CMakeLists.txt", "pyproject.toml")
AUX_PATHS = ("tests", "bench")
SKIP_PARTS = ("__pycache__", "bench/results")
SKIP_SUFFIXES = (".pyc", ".so", ".o")
# junit suites, in the order the session script writes them
SUITES = ("gpu_tests", "backend_tests", "bench_tests")
# A test that hands CPU tensors to Triton works on a CPU-only machine (conftest turns the interpreter
# on) and cannot on a GPU host, where the interpreter is off. Such failures say nothing about a backend.
NOT_APPLICABLE = (
    "TRITON_INTERPRET is not set",
    "cannot be accessed from Triton",
    "Pointer argument (at",
    "cpu tensor?",
)
TARGET_VERIFY = dict(B=64, K=4, V=128256)


# ---------------------------------------------------------------------------------------------------
# Source manifest (git blob ids, so it can be compared with any commit without the device's .git)
# ---------------------------------------------------------------------------------------------------


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _wanted(rel: str) -> bool:
    if any(part in rel for part in SKIP_PARTS) or rel.endswith(SKIP_SUFFIXES):
        return False
    return any(rel == p or rel.startswith(p + "/") for p in CORE_PATHS + AUX_PATHS)


def manifest(root: Path) -> dict[str, str]:
    """{relative path: git blob id} of every source file the evidence depends on."""
    files: dict[str, str] = {}
    for top in CORE_PATHS + AUX_PATHS:
        base = root / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for p in paths:
            rel = p.relative_to(root).as_posix()
            if _wanted(rel):
                files[rel] = blob_id(p.read_bytes())
    return files


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        run = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout if run.returncode == 0 else None


def git_manifest(root: Path, rev: str) -> Optional[dict[str, str]]:
    out = _git(root, "ls-tree", "-r", rev, "--", *(CORE_PATHS + AUX_PATHS))
    if out is None:
        return None
    files = {}
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob" and _wanted(path):
            files[path] = parts[2]
    return files


def manifest_diff(device: dict[str, str], other: dict[str, str]) -> dict[str, list[str]]:
    """Paths that differ between the device's copy and a commit, split into core and auxiliary."""
    diff = sorted(p for p in set(device) | set(other) if device.get(p) != other.get(p))
    core = [p for p in diff if any(p == c or p.startswith(c + "/") for c in CORE_PATHS)]
    return {"core": core, "aux": [p for p in diff if p not in core]}


def match_commit(root: Path, device_files: dict[str, str], depth: int = 40) -> dict[str, Any]:
    """Which local commit the device's sources were (core files identical), searching back from HEAD."""
    revs = (_git(root, "rev-list", f"--max-count={depth}", "HEAD") or "").split()
    head_diff = None
    for i, rev in enumerate(revs):
        files = git_manifest(root, rev)
        if files is None:
            continue
        diff = manifest_diff(device_files, files)
        if i == 0:
            head_diff = diff
        if not diff["core"]:
            return {"commit": rev, "is_head": i == 0, "aux_diff": diff["aux"], "head_diff": head_diff}
    return {"commit": None, "is_head": False, "aux_diff": [], "head_diff": head_diff}


# ---------------------------------------------------------------------------------------------------
# Device side: environment and packing
# ---------------------------------------------------------------------------------------------------


def _cmd(*args: str, timeout: int = 60) -> str:
    try:
        run = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
        return (run.stdout + run.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({type(exc).__name__}: {exc})"


def capture_env(root: Path) -> dict[str, Any]:
    """Everything the report needs to say where the evidence came from. Never raises."""
    import platform
    from importlib import metadata

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "nvidia_smi": _cmd("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                           "clocks.max.mem,power.limit,compute_cap", "--format=csv"),
        "nvcc": _cmd("nvcc", "--version").splitlines()[-1:] or [""],
        "vs_commit": os.environ.get("VS_COMMIT", ""),
        "git_head": (_git(root, "rev-parse", "HEAD") or "").strip(),
        "git_status": (_git(root, "status", "--porcelain") or "").splitlines()[:50],
        "packages": {},
    }
    for name in ("torch", "triton", "transformers", "pytest", "pytest-benchmark", "pytest-timeout",
                 "scikit-build-core", "pybind11", "cmake", "ninja", "numpy", "flashinfer-python", "verispec"):
        try:
            env["packages"][name] = metadata.version(name)
        except Exception:
            env["packages"][name] = None
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            major, minor = torch.cuda.get_device_capability(0)
            env.update(device=p.name, device_class=f"sm_{major}{minor}", sms=p.multi_processor_count,
                       memory_GiB=round(p.total_memory / 2**30, 1),
                       l2_MB=round(getattr(p, "L2_cache_size", 0) / 1e6, 1))
    except Exception as exc:
        env["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        from verispec import _native

        env["verispec_native_error"] = _native.native_error()
        env["built_with_cuda"] = _native.built_with_cuda()
        if _native.native_error() is None:
            env["cuda_archs"] = getattr(_native.native(), "cuda_archs", "")
        import verispec

        env["verispec_path"] = verispec.__file__
        from verispec._backends import backend_report

        env["backend_report"] = backend_report()
    except Exception as exc:
        env["verispec_error"] = f"{type(exc).__name__}: {exc}"
    env["manifest"] = manifest(root)
    return env


_VERBOSE_LINE = re.compile(r"^(?P<node>\S+\.py::\S.*?) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def junit_from_log(text: str, suite: str) -> ET.Element:
    """A junit suite rebuilt from pytest -v lines, for a run killed before it wrote its XML."""
    el = ET.Element("testsuite", name=suite, incomplete="true")
    seen = set()
    for line in text.splitlines():
        m = _VERBOSE_LINE.match(line.strip())
        if not m or m.group("node") in seen:
            continue
        seen.add(m.group("node"))
        path, _, name = m.group("node").partition("::")
        case = ET.SubElement(el, "testcase", classname=path[:-3].replace("/", "."), name=name)
        outcome = m.group("outcome")
        if outcome == "FAILED":  # XPASS (not strict) passes, as in pytest's own junit
            ET.SubElement(case, "failure", message="FAILED (from the log; the run did not finish)")
        elif outcome == "ERROR":
            ET.SubElement(case, "error", message="ERROR (from the log; the run did not finish)")
        elif outcome in ("SKIPPED", "XFAIL"):
            ET.SubElement(case, "skipped", message=outcome)
    return el


def _log_rows(step: str, text: str) -> Optional[dict]:
    """Rows a bench script printed before it was stopped (bench_verify/bench_commit_kv write their JSON
    only at the end)."""
    dev = re.search(r"^device: (.+?)(?: \(\d+ SMs\))?, measured copy bandwidth (\d+) GB/s", text, re.M)
    rows, correctness = [], None
    for line in text.splitlines():
        line = line.strip()
        try:
            if line.startswith('{"case"'):
                rows.append(json.loads(line))
            elif line.startswith("{'B'"):
                rows.append(ast.literal_eval(line))
            elif line.startswith("correctness against the torch reference:"):
                correctness = ast.literal_eval(line.split(":", 1)[1].strip())
        except (ValueError, SyntaxError):
            continue
    if not rows:
        return None
    bench = "verify" if "case" in rows[0] else "commit_kv"
    data = {"bench": bench, "device": dev.group(1) if dev else None,
            "copy_bandwidth_GBps": float(dev.group(2)) if dev else None, "rows": rows, "partial": True}
    if correctness is not None:
        data["correctness"] = correctness
    return data


def pack(work: Path, out: Path) -> None:
    """Turn the session's work folder into at most 8 files under OUT (session.log is written there by
    the shell script itself): session.json, junit.xml, bench_results.json, summary.md, raw.tar.gz."""
    out.mkdir(parents=True, exist_ok=True)
    steps = []
    if (work / "steps.tsv").exists():
        for line in (work / "steps.tsv").read_text().splitlines():
            f = line.split("\t")
            if len(f) >= 5:
                steps.append(dict(name=f[0], status=f[1], rc=int(f[2]) if f[2].lstrip("-").isdigit() else None,
                                  seconds=int(f[3]) if f[3].isdigit() else None, note="\t".join(f[4:])))
    env = json.loads((work / "env.json").read_text()) if (work / "env.json").exists() else {}
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").exists() else {}
    session = {"meta": meta, "env": env, "steps": steps}
    (out / "session.json").write_text(json.dumps(session, indent=1))

    suites = ET.Element("testsuites", name="verispec gpu session")
    for suite in SUITES:
        xml, log = work / f"{suite}.xml", work / "logs" / f"{suite}.log"
        el = None
        if xml.exists():
            try:
                root = ET.parse(xml).getroot()
                el = root if root.tag == "testsuite" else root.find("testsuite")
                if el is not None:
                    el.set("name", suite)
                    el.set("incomplete", "false")
            except ET.ParseError:
                el = None
        if el is None and log.exists():
            el = junit_from_log(log.read_text(errors="replace"), suite)
        if el is not None:
            suites.append(el)
    ET.ElementTree(suites).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)

    runs = []
    bench_dir = work / "bench"
    order = {st["name"]: i for i, st in enumerate(steps)}
    step_dirs = sorted((p for p in bench_dir.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, 999), p.name)) \
        if bench_dir.is_dir() else []
    for step_dir in step_dirs:
        found = False
        for f in sorted(step_dir.glob("*.json")):
            try:
                data = json.loads(f.read_text())
            except ValueError:
                continue
            kind = "pytest_benchmark" if "benchmarks" in data else data.get("bench", "unknown")
            runs.append({"step": step_dir.name, "kind": kind, "source": f.name, "data": data})
            found = True
        log = work / "logs" / f"{step_dir.name}.log"
        if not found and log.exists():
            data = _log_rows(step_dir.name, log.read_text(errors="replace"))
            if data:
                runs.append({"step": step_dir.name, "kind": data["bench"], "source": "log", "data": data})
    (out / "bench_results.json").write_text(json.dumps({"runs": runs}, indent=1))

    try:
        report = load([out])
        (out / "summary.md").write_text(render(report, results_name="(device summary)", match=None))
    except Exception as exc:  # the summary must never cost the evidence
        (out / "summary.md").write_text(f"# summary failed: {type(exc).__name__}: {exc}\n")

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(work.rglob("*")):
            rel = p.relative_to(work).parts
            if rel[0] != "site" and p.is_file() and p.stat().st_size <= 8 * 2**20:  # site/: a fallback install
                tar.add(p, arcname=p.relative_to(work).as_posix())
    if buf.tell() <= 15 * 2**20:
        (out / "raw.tar.gz").write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------------
# Reading the evidence
# ---------------------------------------------------------------------------------------------------


def op_of(classname: str, name: str) -> str:
    mod = classname.rsplit(".", 1)[-1]
    func = name.split("[", 1)[0]
    if "commit" in mod or "commit" in func:
        return "commit_kv"
    if "tree_attention" in mod:
        return "tree_attention"
    if "verify" in mod:
        return "verify"
    return "other"


# tests whose backend is neither in their parameters nor in their name
_BACKEND_OF = {"test_gpu_split_counts_agree": "triton", "test_gpu_llama3_shape": "triton"}


def backend_of(name: str) -> str:
    func, _, params = name.partition("[")
    tokens = set(re.split(r"[-\[\]\s,]+", params))
    for be in ("cuda", "triton", "torch"):
        if be in tokens:
            return be
    if func in _BACKEND_OF:
        return _BACKEND_OF[func]
    for be in ("triton", "cuda", "torch"):  # name before "cuda": test_triton_cuda_* does not exist
        if re.search(rf"(^|_){be}(_|$)", func):
            return be
    return "any"


def read_junit(data: bytes) -> list[dict]:
    cases = []
    root = ET.fromstring(data)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        sname = suite.get("name", "")
        incomplete = suite.get("incomplete") == "true"
        for tc in suite.iter("testcase"):
            cls, name = tc.get("classname", ""), tc.get("name", "")
            status, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = tc.find(tag)
                if el is not None:
                    status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message = (el.get("message") or "") + "\n" + (el.text or "")
                    break
            if sname == "backend_tests" and status in ("failed", "error") and any(s in message for s in NOT_APPLICABLE):
                status = "n/a"
            cases.append(dict(suite=sname, incomplete=incomplete, classname=cls, name=name,
                              op=op_of(cls, name), backend=backend_of(name), status=status,
                              message=message.strip().splitlines()[0][:200] if message.strip() else "",
                              time=float(tc.get("time") or 0)))
    return cases


def _read_dir(d: Path) -> dict[str, bytes]:
    """The fetched files of one device call; members of raw.tar.gz fill in what is missing."""
    files: dict[str, bytes] = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            files[p.name] = p.read_bytes()
    if "raw.tar.gz" in files:
        with tarfile.open(fileobj=io.BytesIO(files["raw.tar.gz"]), mode="r:gz") as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    files.setdefault("raw/" + m.name, f.read())
    return files


def load(dirs: list[Path]) -> dict[str, Any]:
    """Merge the evidence of one or more device calls (e.g. a tests call and a bench call)."""
    report: dict[str, Any] = {"sessions": [], "cases": [], "runs": [], "problems": []}
    for d in dirs:
        files = _read_dir(Path(d))
        if not files:
            report["problems"].append(f"{d}: no files")
            continue
        session = json.loads(files["session.json"]) if "session.json" in files else {}
        session["dir"] = str(d)
        report["sessions"].append(session)
        if "junit.xml" in files:
            report["cases"] += [dict(c, session=len(report["sessions"]) - 1) for c in read_junit(files["junit.xml"])]
        else:
            report["problems"].append(f"{d}: no junit.xml")
        if "bench_results.json" in files:
            tag = f"s{len(report['sessions'])} " if len(dirs) > 1 else ""
            report["runs"] += [dict(r, step=tag + r["step"]) for r in json.loads(files["bench_results.json"]).get("runs", [])]
    envs = [s.get("env", {}) for s in report["sessions"]]
    classes = sorted({e.get("device_class") for e in envs if e.get("device_class")})
    report["device_class"] = classes[0] if len(classes) == 1 else None
    if len(classes) > 1:
        report["problems"].append(f"evidence from several device classes {classes}: collect them separately")
    report["device"] = next((e.get("device") for e in envs if e.get("device")), None)
    report["date"] = next((e.get("date", "")[:10] for e in envs if e.get("date")), "")
    return report


# ---------------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------------


def verdicts(report: dict[str, Any]) -> list[dict]:
    """One row per (op, GPU backend): counts per step and whether an _verified.py entry is justified."""
    out = []
    envs = {i: s.get("env", {}) for i, s in enumerate(report["sessions"])}
    complete = {c["suite"] for c in report["cases"] if not c["incomplete"]}
    ran = {c["suite"] for c in report["cases"]}
    for op in OPS:
        for be in GPU_BACKENDS:
            cases = [c for c in report["cases"] if c["op"] == op and c["backend"] == be]
            counts: dict[str, dict[str, int]] = {}
            for c in cases:
                counts.setdefault(c["suite"], {}).setdefault(c["status"], 0)
                counts[c["suite"]][c["status"]] += 1
            reasons = []
            gpu = counts.get("gpu_tests", {})
            if report["device_class"] != "sm_90":
                reasons.append(f"device class is {report['device_class']}, not sm_90")
            for suite, what in (("gpu_tests", "the GPU-marked run"), ("backend_tests", "the backend test files")):
                if suite not in ran:
                    reasons.append(f"{what} did not run")
                elif suite not in complete:
                    reasons.append(f"{what} did not finish (results rebuilt from its log)")
            if not gpu.get("passed"):
                reasons.append("no GPU-marked test of this pair passed")
            bad = [c for c in cases if c["status"] in ("failed", "error")]
            if bad:
                reasons.append(f"{len(bad)} failed/errored: " + ", ".join(sorted({c['name'] for c in bad}))[:300])
            skipped = [c for c in cases if c["status"] == "skipped" and c["suite"] == "gpu_tests"]
            if skipped:
                reasons.append(f"{len(skipped)} GPU-marked tests skipped ({skipped[0]['message'][:80]})")
            if be == "cuda" and cases and not all(envs.get(c["session"], {}).get("built_with_cuda") for c in cases):
                reasons.append("a session's build had no CUDA kernels")
            bench_bad = bench_failures(report, op, be)
            if bench_bad:
                reasons.append("benchmark correctness: " + "; ".join(bench_bad)[:300])
            out.append(dict(op=op, backend=be, counts=counts, ok=not reasons, reasons=reasons))
    return out


def bench_failures(report: dict[str, Any], op: str, be: str) -> list[str]:
    """Wrong outputs or failed checks that a benchmark saw for verispec's `be` backend of `op`."""
    name = f"verispec_{be}"
    msgs = []
    for run in report["runs"]:
        data = run["data"]
        if run["kind"] != op:
            continue
        if op == "commit_kv" and data.get("correctness", {}).get(be, "ok") != "ok":
            msgs.append(f"{run['step']}: {data['correctness'][be]}")
        for row in data.get("rows", []):
            err = row.get("impls", {}).get(name, {}).get("error", "")
            if err.startswith("wrong output"):
                msgs.append(f"{run['step']} {_row_label(row)}: {err}")
    return msgs


def _row_label(row: dict) -> str:
    keys = [k for k in ("case", "B", "K", "V", "L", "T", "P", "layout") if k in row]
    return " ".join(f"{k}={row[k]}" if k not in ("case", "layout") else str(row[k]) for k in keys)


def _fmt_ms(ms: Optional[float]) -> str:
    if ms is None:
        return "–"
    return f"{ms * 1e3:.1f} µs" if ms < 1 else f"{ms:.2f} ms"


def _best(impls: dict, names) -> Optional[tuple[str, dict]]:
    have = [(n, impls[n]) for n in names if "ms" in impls.get(n, {})]
    return min(have, key=lambda x: x[1]["ms"]) if have else None


def target_summary(lines: list[str]) -> list[str]:
    """PASS/MISS counts per target kind, and the worst line of each."""
    kinds = [("verify: <= 1.5x the floor", "the floor"), ("verify: >= 2x FlashInfer chain", "FlashInfer chain"),
             ("tree: >= 70% of copy bandwidth at L >= 8k", "of copy bandwidth"),
             ("tree: >= 2x SDPA dense mask", "than sdpa_dense"), ("tree: >= 2x FlexAttention", "than flex "),
             ("tree: >= 2x FlashInfer", "than flashinfer"), ("tree: <= 1.2x causal SDPA", "the causal bound")]
    rows = []
    for title, key in kinds:
        mine = [t for t in lines if key in t and not t.startswith("INFO")]
        npass = sum(t.startswith("PASS") for t in mine)
        nmiss = sum(t.startswith("MISS") for t in mine)
        misses = [t for t in mine if t.startswith("MISS")]
        rows.append([title, str(npass), str(nmiss), str(len(mine) - npass - nmiss),
                     misses[0].split(" ", 1)[1] if misses else "–"])
    return _table(["target", "PASS", "MISS", "not measured", "first miss"], rows) + [""]


def verify_targets(report: dict[str, Any]) -> list[str]:
    lines = []
    for run in report["runs"]:
        if run["kind"] != "verify":
            continue
        for row in run["data"].get("rows", []):
            if any(row.get(k) != v for k, v in TARGET_VERIFY.items()):
                continue
            best = _best(row["impls"], ("verispec_cuda", "verispec_triton"))
            label = f"[{run['step']}] {row['case']} B=64 K=4 V=128256"
            if best is None:
                lines.append(f"NOT MEASURED {label}: no verispec GPU backend timed")
                continue
            x = best[1]["ms"] / row["floor_ms"]
            lines.append(f"{'PASS' if x <= 1.5 else 'MISS'} {label}: {best[0]} {x:.2f}x the floor (target <= 1.5x)")
            if row["case"] == "exact_chain":
                fi = row["impls"].get("flashinfer_chain", {})
                if "ms" in fi:
                    r = fi["ms"] / best[1]["ms"]
                    lines.append(f"{'PASS' if r >= 2 else 'MISS'} {label}: {r:.2f}x faster than FlashInfer chain "
                                 "(target >= 2x)")
                else:
                    lines.append(f"NOT MEASURED {label}: FlashInfer chain (flashinfer not installed on the device)")
    for run in report["runs"]:
        if run["kind"] != "pytest_benchmark":
            continue
        for b in run["data"].get("benchmarks", []):
            p, floor = b.get("params", {}), b.get("extra_info", {}).get("floor_ms")
            if floor and all(p.get(k) == v for k, v in TARGET_VERIFY.items()) and p.get("backend") in GPU_BACKENDS:
                x = b["stats"]["median"] * 1e3 / floor
                lines.append(f"INFO [pytest-benchmark, host-synchronised, not judged] {p.get('case')} "
                             f"B=64 K=4 V=128256: verispec_{p['backend']} {x:.2f}x the floor")
    return lines


def tree_targets(report: dict[str, Any]) -> list[str]:
    lines = []
    for run in report["runs"]:
        if run["kind"] != "tree_attention":
            continue
        for row in run["data"].get("rows", []):
            best = _best(row["impls"], ("verispec_cuda", "verispec_triton"))
            if best is None:
                continue
            label = f"[{run['step']}] B={row['B']} L={row['L']} T={row['T']}"
            if row["L"] >= 8192:
                pct = best[1]["pct_copy_bw"]
                lines.append(f"{'PASS' if pct >= 70 else 'MISS'} {label}: {best[0]} {pct:.0f}% of copy bandwidth "
                             "(target >= 70%)")
            for peer in ("sdpa_dense", "flex", "flashinfer"):
                e = row["impls"].get(peer, {})
                if "ms" in e:
                    r = e["ms"] / best[1]["ms"]
                    lines.append(f"{'PASS' if r >= 2 else 'MISS'} {label}: {r:.2f}x faster than {peer} (target >= 2x)")
                elif peer in row["impls"]:  # attempted, did not run (e.g. flashinfer not installed)
                    lines.append(f"NOT MEASURED {label}: than {peer} ({e.get('error', '?')[:80]})")
            e = row["impls"].get("sdpa_causal", {})
            if "ms" in e:
                r = best[1]["ms"] / e["ms"]
                lines.append(f"{'PASS' if r <= 1.2 else 'MISS'} {label}: {r:.2f}x the causal bound (target <= 1.2x)")
    return lines


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(report: dict[str, Any], results_name: str, match: Optional[dict]) -> str:
    lines = [f"# GPU session: {report.get('device') or 'unknown device'} ({report.get('device_class')}), "
             f"{report.get('date') or 'unknown date'}", ""]
    for i, s in enumerate(report["sessions"]):
        e, m = s.get("env", {}), s.get("meta", {})
        pk = e.get("packages", {})
        lines += [f"## Session {i + 1}: mode `{m.get('mode', '?')}` ({s.get('dir', '')})", "",
                  f"- device: {e.get('device')} ({e.get('device_class')}, {e.get('sms')} SMs, {e.get('memory_GiB')} GiB, "
                  f"L2 {e.get('l2_MB')} MB); nvidia-smi: {' / '.join(str(e.get('nvidia_smi', '')).splitlines()[1:2])}",
                  f"- python {e.get('python')}, torch {pk.get('torch')} (CUDA {e.get('torch_cuda')}), triton "
                  f"{pk.get('triton')}, nvcc {' '.join(e.get('nvcc') or [])}, flashinfer {pk.get('flashinfer-python')}",
                  f"- verispec build: CUDA kernels {e.get('built_with_cuda')} (archs {e.get('cuda_archs')}), "
                  f"native error {e.get('verispec_native_error')}, build mode {m.get('build_mode', '?')}",
                  f"- git on device: {e.get('git_head') or 'no .git'}; VS_COMMIT {e.get('vs_commit') or '–'}; "
                  f"started {e.get('date')}, budget {m.get('budget_s')} s", ""]
        steps = s.get("steps", [])
        if steps:
            lines += _table(["step", "status", "rc", "s", "note"],
                            [[st["name"], st["status"], str(st["rc"]), str(st["seconds"]), st["note"][:120]]
                             for st in steps]) + [""]
    if match is not None:
        if match.get("commit"):
            where = "HEAD" if match["is_head"] else "an earlier commit than HEAD"
            lines += [f"Sources on the device match commit `{match['commit'][:12]}` ({where}) in every kernel, glue "
                      "and build file."]
            if match["aux_diff"]:
                lines += [f"Tests/benches differed from it in: {', '.join(match['aux_diff'][:20])}."]
        else:
            hd = (match.get("head_diff") or {}).get("core", [])
            lines += [f"**Sources on the device match no recent commit**; against HEAD they differ in: "
                      f"{', '.join(hd[:30]) or 'unknown'}. Evidence is for uncommitted code."]
        lines += [""]
    for p in report["problems"]:
        lines.append(f"**Problem:** {p}")

    lines += ["## Tests per op/backend", "",
              "Counts per step: gpu = `pytest -m gpu tests`, files = the unmarked tests that use the GPU when "
              "one is visible (tests/test_verify_backends.py and a few more; n/a: CPU tensors handed to Triton, "
              "which needs the interpreter a GPU host does not turn on), bench = the pytest-benchmark "
              "correctness checks.", ""]
    rows = []
    for v in verdicts(report):
        def cnt(suite, v=v):
            c = v["counts"].get(suite, {})
            return " ".join(f"{k} {n}" for k, n in sorted(c.items())) or "–"
        rows.append([v["op"], v["backend"], cnt("gpu_tests"), cnt("backend_tests"), cnt("bench_tests"),
                     "**verified**" if v["ok"] else "no: " + "; ".join(v["reasons"])])
    lines += _table(["op", "backend", "gpu", "files", "bench", "verdict"], rows) + [""]
    failing = [c for c in report["cases"] if c["status"] in ("failed", "error")]
    if failing:
        lines += ["### Failures", ""] + [f"- [{c['suite']}] {c['classname']}::{c['name']}: {c['message']}"
                                         for c in failing[:80]] + [""]
    other = [c for c in report["cases"] if c["op"] == "other" or c["backend"] == "any"]
    if other:
        st: dict[str, int] = {}
        for c in other:
            st[c["status"]] = st.get(c["status"], 0) + 1
        lines += [f"Tests of no single GPU op/backend: {st}.", ""]

    lines += ["## Targets (issue, H100)", ""]
    tl = verify_targets(report) + tree_targets(report)
    lines += target_summary(tl) + [f"- {t}" for t in tl] if tl else ["- nothing measured"]
    lines += [""] + render_benches(report)
    lines += ["", f"Report: {results_name}. Produced by bench/collect_gpu_results.py."]
    return "\n".join(lines) + "\n"


def render_benches(report: dict[str, Any]) -> list[str]:
    lines = ["## Benchmarks", ""]
    for run in report["runs"]:
        lines += _render_run(run)
    return lines


def _time_cell(e: dict, detail) -> str:
    """One implementation's cell in a sweep table: ``time (detail(e))`` when it was timed, ``err`` when it
    failed, ``–`` when it did not run."""
    return f"{_fmt_ms(e['ms'])} ({detail(e)})" if "ms" in e else ("err" if "error" in e else "–")


def _pct_copy_bw(e: dict) -> str:
    return f"{e['pct_copy_bw']:.0f}%"


def _render_run(run: dict) -> list[str]:
    lines: list[str] = []
    d, kind = run["data"], run["kind"]
    names = sorted({n for r in d.get("rows", []) for n in r.get("impls", {})})  # columns of the sweep tables
    head = (f"### {kind} — step `{run['step']}` ({run['source']}{', partial' if d.get('partial') else ''}); "
            f"{d.get('device')}, copy bandwidth {d.get('copy_bandwidth_GBps') or 0:.0f} GB/s")
    if kind == "verify":
        rows = []
        for r in d["rows"]:
            best = _best(r["impls"], ("verispec_cuda", "verispec_triton"))
            cells = [_time_cell(r["impls"].get(n, {}), lambda e, r=r: f"{e['ms'] / r['floor_ms']:.2f}x")
                     for n in names]
            fi = r["impls"].get("flashinfer_chain", {})
            vs_fi = f"{fi['ms'] / best[1]['ms']:.2f}x" if best and "ms" in fi else "–"
            vs_torch = (f"{r['impls']['verispec_torch']['ms'] / best[1]['ms']:.1f}x"
                        if best and "ms" in r["impls"].get("verispec_torch", {}) else "–")
            rows.append([r["case"], str(r["B"]), str(r["K"]), str(r["V"]), _fmt_ms(r["floor_ms"])] + cells
                        + [vs_torch, vs_fi])
        lines += [head, "", "Cells: median time (× the floor: the logits read once at copy bandwidth). "
                  "Speed-ups of the best verispec GPU backend.", ""]
        lines += _table(["case", "B", "K", "V", "floor"] + names + ["vs torch", "vs FlashInfer"], rows) + [""]
    elif kind == "tree_attention":
        rows = []
        for r in d["rows"]:
            best = _best(r["impls"], ("verispec_cuda", "verispec_triton"))
            cells = []
            for n in names:
                e = r["impls"].get(n, {})
                cell = _time_cell(e, _pct_copy_bw)
                if "config" in e:
                    cell += f" cfg {tuple(e['config'])}"
                cells.append(cell)
            ratios = []
            for peer in ("sdpa_dense", "flex", "flex+mask", "flashinfer"):
                e = r["impls"].get(peer, {})
                ratios.append(f"{e['ms'] / best[1]['ms']:.2f}x" if best and "ms" in e else "–")
            c = r["impls"].get("sdpa_causal", {})
            ratios.append(f"{best[1]['ms'] / c['ms']:.2f}x" if best and "ms" in c else "–")
            rows.append([str(r["B"]), str(r["L"]), str(r["T"])] + cells + ratios)
        lines += [head, "", "Cells: median time (% of copy bandwidth over the bytes that must move). Ratios: "
                  "peer time / best verispec GPU backend; last column best verispec / causal SDPA.", ""]
        lines += _table(["B", "L", "T"] + names + ["vs sdpa_dense", "vs flex", "vs flex+mask", "vs flashinfer",
                                                     "/ causal"], rows) + [""]
    elif kind == "commit_kv":
        rows = []
        for r in d["rows"]:
            best = _best(r["impls"], ("verispec_cuda", "verispec_triton"))
            cells = [_time_cell(r["impls"].get(n, {}), _pct_copy_bw) for n in names]
            loop = r["impls"].get("torch_loop", {})
            rows.append([str(r["B"]), str(r["P"]), r["layout"]] + cells
                        + [f"{loop['ms'] / best[1]['ms']:.1f}x" if best and "ms" in loop else "–"])
        lines += [head, f"correctness: {d.get('correctness')}", "",
                  "Cells: median time (% of copy bandwidth over the bytes moved).", ""]
        lines += _table(["B", "P", "layout"] + names + ["vs torch loop"], rows) + [""]
    elif kind == "pytest_benchmark":
        rows = []
        for b in d.get("benchmarks", []):
            floor = b.get("extra_info", {}).get("floor_ms")
            med = b["stats"]["median"] * 1e3
            rows.append([b["name"], _fmt_ms(med), _fmt_ms(floor) if floor else "–",
                         f"{med / floor:.2f}x" if floor else "–", str(b["stats"].get("rounds"))])
        lines += [f"### pytest-benchmark — step `{run['step']}`", "",
                  "Median per call including a host synchronisation (the sweep tables use CUDA events).", ""]
        lines += _table(["test", "median", "floor", "x floor", "rounds"], rows) + [""]
    errors = sorted({(n, e["error"]) for r in d.get("rows", []) for n, e in r.get("impls", {}).items() if "error" in e})
    if errors:
        lines += ["Errors:"] + [f"- {n}: {msg}" for n, msg in errors] + [""]
    return lines


def verified_entries(report: dict[str, Any], results_rel: str, commit: str) -> list[str]:
    date = report.get("date") or ""
    return [f'    ("{v["op"]}", "{v["backend"]}"): {{"{report["device_class"]}": "{results_rel} ({commit[:7]}, {date})"}},'
            for v in verdicts(report) if v["ok"]]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text or "unknown").strip("_")


def collect(dirs: list[Path], results: Path, repo: Path = ROOT, write: bool = True) -> dict[str, Any]:
    report = load(dirs)
    envs = [s.get("env", {}) for s in report["sessions"]]
    match = None
    device_files = next((e.get("manifest") for e in envs if e.get("manifest")), None)
    mixed = False
    if device_files:
        match = match_commit(repo, device_files)
        for e in envs[1:]:
            if e.get("manifest") and manifest_diff(e["manifest"], device_files)["core"]:
                mixed = True
                report["problems"].append("the sessions ran different kernel sources: collect them separately")
    commit = (match or {}).get("commit") or next((e.get("git_head") or e.get("vs_commit") for e in envs
                                                  if e.get("git_head") or e.get("vs_commit")), "") or "unknown"
    if match is not None and not match.get("commit"):
        commit = "uncommitted"
    short = commit[:7] if re.fullmatch(r"[0-9a-f]{40}", commit) else commit
    name = f"gpu-{report['date'] or 'undated'}-{_slug(report.get('device') or '')}-{short}"
    results_md = results / f"{name}.md"
    try:
        rel = results_md.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        rel = results_md.as_posix()
    text = render(report, rel, match)
    if write:
        results.mkdir(parents=True, exist_ok=True)
        results_md.write_text(text)
        evidence = {"device": report["device"], "device_class": report["device_class"], "date": report["date"],
                    "commit": commit, "match": match, "sessions": [dict(s, env={k: v for k, v in s.get("env", {}).items()
                                                                                 if k != "manifest"})
                                                                    for s in report["sessions"]],
                    "verdicts": verdicts(report), "tests": report["cases"], "bench": report["runs"]}
        results_md.with_suffix(".json").write_text(json.dumps(evidence, indent=1))
    entries = verified_entries(report, rel, commit) if commit not in ("unknown", "uncommitted") and not mixed else []
    report.update(results_md=str(results_md), text=text, entries=entries, commit=commit, match=match)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="device: write versions, GPU, build and the source manifest as JSON")
    e.add_argument("out", type=Path)
    p = sub.add_parser("pack", help="device: WORK folder -> OUT folder (at most 8 files)")
    p.add_argument("work", type=Path)
    p.add_argument("out", type=Path)
    c = sub.add_parser("collect", help="here: fetched OUT folders -> bench/results/gpu-*.md + _verified.py entries")
    c.add_argument("dirs", type=Path, nargs="+")
    c.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    c.add_argument("--dry-run", action="store_true", help="print the report, write nothing")
    args = ap.parse_args(argv)
    if args.cmd == "env":
        env = capture_env(ROOT)
        args.out.write_text(json.dumps(env, indent=1))
        print(json.dumps({k: v for k, v in env.items() if k not in ("manifest", "backend_report")}, indent=1))
        print(env.get("backend_report", ""))
        return 0
    if args.cmd == "pack":
        pack(args.work, args.out)
        return 0
    report = collect(args.dirs, args.results, write=not args.dry_run)
    if args.dry_run:
        print(report["text"])
    else:
        print(f"wrote {report['results_md']} (+ .json)")
    print()
    for v in verdicts(report):
        print(f"{v['op']:<15} {v['backend']:<7} {'VERIFIED' if v['ok'] else 'not verified: ' + '; '.join(v['reasons'])}")
    print()
    for problem in report["problems"]:
        print(f"Problem: {problem}")
    if report["entries"]:
        print("Entries the evidence justifies (copy into VERIFIED in python/verispec/_verified.py by hand):")
        print("\n".join(report["entries"]))
    elif report["commit"] in ("unknown", "uncommitted"):
        print(f"No entries: the evidence is tied to no commit ({report['commit']}).")
    else:
        print("No entries: no op/backend pair is justified by this evidence.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
