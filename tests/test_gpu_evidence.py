"""tools/gpu_evidence.py and the --evidence-json plugin (conftest.py), on CPU: a real pytest run
writes the evidence, then synthetic GPU evidence is judged against a throw-away git repository."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_evidence", ROOT / "tools" / "gpu_evidence.py")
ge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ge)


def test_plugin_records_declared_op_and_backend(tmp_path):
    """Op from the module's marker, backend from the parameter or the marker; outcomes as they happened."""
    t = tmp_path / "test_x.py"
    t.write_text(
        "import pytest\n"
        "pytestmark = [pytest.mark.op('verify'), pytest.mark.backend('triton')]\n"
        "@pytest.mark.parametrize('backend', ['torch', 'cuda'])\n"
        "def test_param(backend):\n    assert backend != 'cuda', 'boom'\n"
        "@pytest.mark.gpu\ndef test_marked():\n    pass\n")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n  gpu: x\n  op(name): x\n  backend(name): x\n")
    out = tmp_path / "ev.json"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(t), f"--evidence-json={out}",
                    f"--junitxml={tmp_path / 'j.xml'}"], cwd=tmp_path, capture_output=True)
    ev = json.loads(out.read_text())
    assert ev["kind"] == "verispec-test-evidence" and ev["complete"] is True
    got = {(x["id"].split("::")[1], x["op"], x["backend"], x["gpu"], x["outcome"]) for x in ev["tests"]}
    assert got == {("test_param[torch]", "verify", "torch", False, "passed"),
                   ("test_param[cuda]", "verify", "cuda", False, "failed"),
                   ("test_marked", "verify", "triton", True, "passed")}
    assert "boom" in next(x["message"] for x in ev["tests"] if x["outcome"] == "failed")
    assert 'name="op" value="verify"' in (tmp_path / "j.xml").read_text()


def test_plugin_leaves_evidence_when_pytest_dies(tmp_path):
    """A run killed mid-way (a step's timeout) keeps the tests it finished, marked incomplete."""
    t = tmp_path / "test_y.py"
    t.write_text("import os, pytest\npytestmark = pytest.mark.op('commit_kv')\n"
                 "def test_a():\n    pass\ndef test_b():\n    os._exit(3)\n")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n  op(name): x\n")
    out = tmp_path / "ev.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(t),
                          f"--evidence-json={out}"], cwd=tmp_path, capture_output=True)
    assert run.returncode == 3
    ev = json.loads(out.read_text())
    assert ev["complete"] is False and [x["id"].split("::")[1] for x in ev["tests"]] == ["test_a"]


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    r = tmp_path / "repo"
    (r / "csrc").mkdir(parents=True)
    (r / "csrc" / "k.cu").write_text("__global__ void k() {}\n")
    _git(r, "init", "-q")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "one")
    return r


def _evidence(d: Path, repo: Path, tests: list[tuple], built_with_cuda=True, cls="sm_90", bench_error=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "env.json").write_text(json.dumps({"kind": "verispec-env", "device": "H100", "device_class": cls,
                                            "digest": ge.digest(repo)}))
    rows = [{"id": f"t{i}", "op": op, "backend": be, "gpu": gpu, "outcome": outcome, "message": "m"}
            for i, (op, be, gpu, outcome) in enumerate(tests)]
    (d / "gpu_tests.json").write_text(json.dumps({"kind": "verispec-test-evidence", "device": "H100",
                                                  "device_class": cls, "built_with_cuda": built_with_cuda,
                                                  "tests": rows}))
    impls = {"verispec_triton": {"error": bench_error} if bench_error else {"ms": 1.0}}
    (d / "bench.json").write_text(json.dumps({"bench": "verify", "rows": [{"shape": "s", "impls": impls}]}))
    return d


def test_justified_only_with_clean_evidence(tmp_path, repo):
    d = _evidence(tmp_path / "ev", repo, [("verify", "triton", True, "passed"), ("verify", "triton", False, "passed"),
                                          ("verify", "cuda", True, "passed"), ("verify", "cuda", True, "failed"),
                                          ("commit_kv", "triton", True, "skipped"),
                                          ("commit_kv", "triton", True, "passed"), ("-", "-", False, "failed")])
    text, entries = ge.summary([d], repo=repo)
    assert len(entries) == 1 and entries[0].startswith('("verify", "triton"): {"sm_90"')
    assert "| verify | cuda | sm_90 | 1 | 1 |" in text and "1 failed" in text
    assert "1 gpu-marked skipped" in text and "identical to HEAD" in text
    assert "Other failures (no GPU op/backend declared):\n- t6: m" in text


def test_source_mismatch_bench_error_and_cpu_build_block(tmp_path, repo):
    d = _evidence(tmp_path / "ev", repo, [("verify", "triton", True, "passed"), ("verify", "cuda", True, "passed")],
                  built_with_cuda=False, bench_error="wrong output (max abs err 0.5)")
    _, entries = ge.summary([d], repo=repo)
    assert entries == []
    text, _ = ge.summary([d], repo=repo)
    assert "1 benchmark errors" in text and "built without the CUDA kernels" in text
    (repo / "csrc" / "k.cu").write_text("changed\n")
    d2 = _evidence(tmp_path / "ev2", repo, [("verify", "triton", True, "passed")])
    text, entries = ge.summary([d2], repo=repo)
    assert entries == [] and "differs from HEAD in 1 files: csrc/k.cu" in text


def test_a_run_killed_before_the_end_blocks_every_verdict(tmp_path, repo):
    d = _evidence(tmp_path / "ev", repo, [("verify", "triton", True, "passed")])
    run = json.loads((d / "gpu_tests.json").read_text())
    run["complete"] = False  # what the plugin leaves when pytest is killed mid-run
    (d / "gpu_tests.json").write_text(json.dumps(run))
    text, entries = ge.summary([d], repo=repo)
    assert entries == [] and "1 test run(s) killed before the end" in text


def test_cli_summary_and_missing_folder(tmp_path, repo, capsys):
    assert ge.main(["summary", str(tmp_path / "nope")]) == 2
    assert ge.main(["env", str(tmp_path / "env.json")]) == 0
    assert json.loads((tmp_path / "env.json").read_text())["kind"] == "verispec-env"
    assert ge.main(["summary", str(tmp_path), "--out", str(tmp_path / "s.md")]) == 0
    assert "none" in capsys.readouterr().out and (tmp_path / "s.md").is_file()
