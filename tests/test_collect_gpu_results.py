"""bench/collect_gpu_results.py on synthetic evidence: packing on the 'device', judging here.

Nothing here needs a GPU: the junit XML, benchmark JSON and logs are made up in the shapes that
bench/gpu_session.sh and the bench scripts write, and the source manifest is matched against a
throw-away git repository.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("collect_gpu_results", ROOT / "bench" / "collect_gpu_results.py")
cg = importlib.util.module_from_spec(_spec)
sys.modules["collect_gpu_results"] = cg
_spec.loader.exec_module(cg)

H100 = "NVIDIA H100 80GB HBM3"


def _case(cls, name, outcome="passed", message=""):
    tag = {"failed": "failure", "error": "error", "skipped": "skipped"}.get(outcome)
    inner = f'<{tag} message="{message}">{message} traceback</{tag}>' if tag else ""
    return f'<testcase classname="{cls}" name="{name}" time="0.1">{inner}</testcase>'


def _junit(cases):
    return ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest">'
            + "".join(cases) + "</testsuite></testsuites>")


GPU_CASES = [
    _case("tests.test_verify_backends", "test_real_vocab_sizes[128256-triton]"),
    _case("tests.test_verify_backends", "test_real_vocab_sizes[128256-cuda]"),
    _case("tests.test_verify_backends", "test_cuda_graph_capture[greedy-torch]"),
    _case("tests.test_verify_backends", "test_bf16_logits_gpu[cuda]"),
    _case("tests.test_tree_attention_triton",
          "test_gpu_matches_dense_mask[plain-contiguous-L[1000, 3000, 0, 17]-D128-32x8-dtype0-triton]"),
    _case("tests.test_tree_attention_triton",
          "test_gpu_matches_dense_mask[plain-paged-L[1000, 3000, 0, 17]-D128-32x8-dtype0-cuda]", "failed",
          "AssertionError: cuda paged: max abs err 0.3"),
    _case("tests.test_tree_attention_triton", "test_gpu_split_counts_agree[7]"),
    _case("tests.test_commit_kv", "test_gpu_commit_matches_reference[False-dtype0-triton]"),
    _case("tests.test_commit_kv", "test_gpu_commit_cuda_graph_replay[triton]", "skipped", "no reason"),
    _case("tests.test_commit_kv", "test_gpu_commit_matches_reference[True-dtype1-cuda]"),
]
BACKEND_CASES = [
    _case("tests.test_verify_backends", "test_greedy_golden[triton]"),
    _case("tests.test_verify_backends", "test_triton_philox_bits_match_torch"),
    _case("tests.test_tree_attention_triton", "test_triton_paged[16]", "failed",
          "ValueError: Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)"),
    _case("tests.test_commit_kv", "test_commit_strided_lengths_and_rows[triton]", "failed",
          "verispec._backends.BackendUnavailable: tensors are on the CPU and TRITON_INTERPRET is not set (no GPU)"),
    _case("bench.bench_tree_attention", "test_gpu_llama3_shape"),
]
BENCH_LOG = """\
bench/bench_verify.py::test_bench_verify[greedy-64-4-128256-cuda] PASSED                 [ 11%]
bench/bench_verify.py::test_bench_verify[greedy-64-4-128256-triton] PASSED               [ 22%]
"""
COMMIT_LOG = """\
device: NVIDIA H100 80GB HBM3, measured copy bandwidth 2950 GB/s
correctness against the torch reference: {'triton': 'ok', 'cuda': 'ok'}
{'B': 8, 'P': 8, 'layout': 'contiguous', 'bytes': 1000000, 'impls': {'verispec_triton': {'ms': 0.01, 'GBps': 100.0, 'pct_copy_bw': 3.4}, 'verispec_cuda': {'ms': 0.008, 'GBps': 125.0, 'pct_copy_bw': 4.2}, 'torch_loop': {'ms': 0.5, 'GBps': 2.0, 'pct_copy_bw': 0.1}}}
"""


def _verify_json():
    floor = 64 * 5 * 128256 * 2 / 2950e9 * 1e3
    rows = [{"case": "greedy", "B": 64, "K": 4, "V": 128256, "floor_ms": floor,
             "impls": {"verispec_cuda": {"ms": 1.3 * floor, "x_floor": 1.3},
                       "verispec_triton": {"ms": 1.8 * floor, "x_floor": 1.8},
                       "verispec_torch": {"ms": 20 * floor, "x_floor": 20}}},
            {"case": "exact_chain", "B": 64, "K": 4, "V": 128256, "floor_ms": floor,
             "impls": {"verispec_cuda": {"ms": 1.6 * floor, "x_floor": 1.6},
                       "verispec_triton": {"error": "RuntimeError: boom"}}}]
    return {"bench": "verify", "device": H100, "copy_bandwidth_GBps": 2950.0, "commit": "unknown",
            "date": "2026-11-23T10:00:00+00:00", "torch": "2.11.0", "logits": "bf16", "rows": rows}


def _tree_json():
    fb = 2 * 8 * (16384 + 64) * 128 * 2 * 8 + 2 * 8 * 32 * 64 * 128 * 2

    def e(ms):
        gbs = fb / (ms * 1e-3) / 1e9
        return {"max_abs_err": 0.01, "ms": ms, "GBps": gbs, "pct_copy_bw": 100 * gbs / 2950}

    row = {"B": 8, "L": 16384, "T": 64, "floor_bytes": fb,
           "impls": {"verispec_triton": e(0.070), "verispec_cuda": e(0.060), "sdpa_dense": e(0.5),
                     "flex": e(0.1), "flashinfer": {"error": "ModuleNotFoundError: No module named 'flashinfer'"},
                     "sdpa_causal": e(0.055)}}
    small = {"B": 1, "L": 1024, "T": 1, "floor_bytes": 10,
             "impls": {"verispec_triton": {"max_abs_err": 0.5, "error": "wrong output (max abs err 0.5)"},
                       "sdpa_causal": e(0.01)}}
    return {"bench": "tree_attention", "device": H100, "sms": 132, "copy_bandwidth_GBps": 2950.0,
            "commit": "unknown", "date": "2026-11-23T10:01:00+00:00", "torch": "2.11.0", "python": "3.12.3",
            "shape": "Llama-3-8B attention", "rows": [row, small], "targets": []}


def _pytest_benchmark_json():
    floor = 64 * 5 * 128256 * 2 / 2950e9 * 1e3
    return {"benchmarks": [
        {"name": "test_bench_verify[greedy-64-4-128256-cuda]",
         "params": {"case": "greedy", "B": 64, "K": 4, "V": 128256, "backend": "cuda"},
         "stats": {"median": 3 * floor / 1e3, "rounds": 20}, "extra_info": {"floor_ms": floor}}]}


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
    (r / "tests").mkdir()
    (r / "tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    _git(r, "init", "-q")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "one")
    return r


def make_work(tmp_path, repo, *, device_class="sm_90", gpu_xml=True, built_with_cuda=True):
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    env = {"date": "2026-11-23T09:59:00+00:00", "device": H100, "device_class": device_class, "sms": 132,
           "built_with_cuda": built_with_cuda, "cuda_archs": "90", "packages": {"torch": "2.11.0"},
           "manifest": cg.manifest(repo)}
    (work / "env.json").write_text(json.dumps(env))
    (work / "meta.json").write_text(json.dumps({"mode": "all", "budget_s": 540, "build_mode": "editable-cudaON"}))
    (work / "steps.tsv").write_text("build\tok\t0\t80\ttimeout 330s\ngpu_tests\tok\t1\t150\ttimeout 300s\n"
                                    "bench_tests\ttimeout\t124\t40\ttimeout 40s\ntree_b1\tskipped\t\t0\tbudget\n")
    if gpu_xml:
        (work / "gpu_tests.xml").write_text(_junit(GPU_CASES))
    else:
        (work / "logs" / "gpu_tests.log").write_text(
            "tests/test_verify_backends.py::test_real_vocab_sizes[128256-triton] PASSED   [ 1%]\n")
    (work / "backend_tests.xml").write_text(_junit(BACKEND_CASES))
    (work / "logs" / "bench_tests.log").write_text(BENCH_LOG)  # killed: no XML, only the log
    for step, name, data in [("verify_quick", "verify-x.json", _verify_json()),
                             ("tree_quick", "tree_attention-x.json", _tree_json()),
                             ("bench_tests", "pytest_benchmark.json", _pytest_benchmark_json())]:
        (work / "bench" / step).mkdir(parents=True)
        (work / "bench" / step / name).write_text(json.dumps(data))
    (work / "bench" / "commit_quick").mkdir()
    (work / "logs" / "commit_quick.log").write_text(COMMIT_LOG)
    return work


def test_names_map_to_op_and_backend():
    assert cg.backend_of("test_real_vocab_sizes[128256-cuda]") == "cuda"
    assert cg.backend_of("test_cuda_graph_capture[greedy-torch]") == "torch"
    assert cg.backend_of("test_gpu_matches_dense_mask[plain-paged-L[1000, 3000]-D128-32x8-dtype0-triton]") == "triton"
    assert cg.backend_of("test_triton_philox_bits_match_torch") == "triton"
    assert cg.backend_of("test_cuda_commit_arguments_match_the_binding") == "cuda"
    assert cg.backend_of("test_gpu_split_counts_agree[7]") == "triton"
    assert cg.backend_of("test_device_mismatch_and_int32_ancestors") == "any"
    assert cg.op_of("tests.test_tree_attention_triton", "test_cuda_commit_arguments_match_the_binding") == "commit_kv"
    assert cg.op_of("tests.test_tree_attention_triton", "test_triton_paged[1]") == "tree_attention"
    assert cg.op_of("bench.bench_verify", "test_bench_verify[greedy-64-4-128256-cuda]") == "verify"
    assert cg.op_of("tests.test_datastore", "test_x") == "other"


def test_manifest_uses_git_blob_ids(repo):
    files = cg.manifest(repo)
    assert set(files) == {"csrc/k.cu", "tests/test_x.py"}
    assert cg.git_manifest(repo, "HEAD") == files
    assert cg.match_commit(repo, files)["is_head"]


def test_pack_then_collect(tmp_path, repo):
    verified_before = (ROOT / "python" / "verispec" / "_verified.py").read_text()
    work = make_work(tmp_path, repo)
    out = tmp_path / "out"
    cg.pack(work, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bench_results.json", "junit.xml", "raw.tar.gz", "session.json", "summary.md"]
    suites = {s.get("name"): s for s in ET.parse(out / "junit.xml").getroot()}
    assert set(suites) == {"gpu_tests", "backend_tests", "bench_tests"}
    assert suites["bench_tests"].get("incomplete") == "true" and suites["gpu_tests"].get("incomplete") == "false"
    runs = json.loads((out / "bench_results.json").read_text())["runs"]
    by_step = {r["step"]: r for r in runs}
    assert by_step["commit_quick"]["source"] == "log" and by_step["commit_quick"]["data"]["correctness"]["cuda"] == "ok"
    assert by_step["bench_tests"]["kind"] == "pytest_benchmark"
    with tarfile.open(out / "raw.tar.gz") as tar:
        assert "logs/commit_quick.log" in tar.getnames()
    assert "Tests per op/backend" in (out / "summary.md").read_text()

    results = tmp_path / "results"
    report = cg.collect([out], results, repo=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert report["commit"] == head
    md = Path(report["results_md"])
    assert md.parent == results and md.name == f"gpu-2026-11-23-NVIDIA_H100_80GB_HBM3-{head[:7]}.md"
    assert md.with_suffix(".json").exists()
    ok = {(v["op"], v["backend"]) for v in cg.verdicts(report) if v["ok"]}
    # tree_attention/cuda failed a GPU test; commit_kv/triton had a skipped GPU test; tree_attention/triton
    # produced a wrong output in a benchmark; the n/a failures of CPU-tensor tests count for nothing.
    assert ok == {("verify", "triton"), ("verify", "cuda"), ("commit_kv", "cuda")}
    assert len(report["entries"]) == 3
    assert f'    ("verify", "cuda"): {{"sm_90": "{md} ({head[:7]}, 2026-11-23)"}},' in report["entries"]
    text = md.read_text()
    for needle in ["PASS [verify_quick] greedy B=64 K=4 V=128256: verispec_cuda 1.30x the floor",
                   "MISS [verify_quick] exact_chain B=64 K=4 V=128256: verispec_cuda 1.60x the floor",
                   "NOT MEASURED [verify_quick] exact_chain B=64 K=4 V=128256: FlashInfer chain",
                   "INFO [pytest-benchmark, host-synchronised, not judged] greedy",
                   "8.33x faster than sdpa_dense", "MISS [tree_quick] B=8 L=16384 T=64: 1.67x faster than flex",
                   "1.09x the causal bound", "match commit", "| commit_kv | cuda |",
                   "| verify: <= 1.5x the floor | 1 | 1 | 0 |", "than flashinfer (ModuleNotFoundError",
                   "benchmark correctness: tree_quick B=1 L=1024 T=1: wrong output"]:
        assert needle in text, needle
    assert (ROOT / "python" / "verispec" / "_verified.py").read_text() == verified_before


def test_unfinished_gpu_run_justifies_nothing(tmp_path, repo):
    out = tmp_path / "out"
    cg.pack(make_work(tmp_path, repo, gpu_xml=False), out)
    report = cg.collect([out], tmp_path / "results", repo=repo, write=False)
    assert report["entries"] == []
    v = {(x["op"], x["backend"]): x for x in cg.verdicts(report)}
    assert any("GPU-marked run did not finish" in r for r in v[("verify", "triton")]["reasons"])


def test_a_later_session_can_complete_the_evidence(tmp_path, repo):
    """Call 1 was cut short in the GPU tests, call 2 ran them: together they justify the pairs."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    cg.pack(make_work(first, repo, gpu_xml=False), first / "out")
    work = make_work(second, repo)
    (work / "backend_tests.xml").unlink()
    cg.pack(work, second / "out")
    alone = cg.collect([second / "out"], tmp_path / "results", repo=repo, write=False)
    assert alone["entries"] == []  # the backend test files did not run in call 2
    both = cg.collect([first / "out", second / "out"], tmp_path / "results", repo=repo, write=False)
    assert len(both["entries"]) == 3
    assert "[s2 verify_quick]" in both["text"]


def test_other_device_class_or_no_cuda_build(tmp_path, repo):
    out = tmp_path / "out"
    cg.pack(make_work(tmp_path, repo, device_class="sm_80", built_with_cuda=False), out)
    report = cg.collect([out], tmp_path / "results", repo=repo, write=False)
    assert report["entries"] == []
    v = {(x["op"], x["backend"]): x for x in cg.verdicts(report)}
    assert any("no CUDA kernels" in r for r in v[("verify", "cuda")]["reasons"])


def test_uncommitted_sources_are_not_tied_to_a_commit(tmp_path, repo):
    work = make_work(tmp_path, repo)
    (repo / "csrc" / "k.cu").write_text("__global__ void k() { /* edited */ }\n")
    env = json.loads((work / "env.json").read_text())
    env["manifest"] = cg.manifest(repo)
    (work / "env.json").write_text(json.dumps(env))
    out = tmp_path / "out"
    cg.pack(work, out)
    report = cg.collect([out], tmp_path / "results", repo=repo, write=False)
    assert report["commit"] == "uncommitted" and report["entries"] == []
    assert "csrc/k.cu" in report["text"]


def test_cli_dry_run_writes_nothing(tmp_path, repo, capsys):
    out = tmp_path / "out"
    cg.pack(make_work(tmp_path, repo), out)
    results = tmp_path / "results"
    assert cg.main(["collect", str(out), "--results", str(results), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert not results.exists()
    assert "verify          cuda    VERIFIED" in printed
    assert "tree_attention  cuda    not verified" in printed


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_session_script_parses():
    run = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_session.sh")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_sessions_on_different_sources_justify_nothing(tmp_path, repo):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    cg.pack(make_work(first, repo), first / "out")
    (repo / "csrc" / "k.cu").write_text("__global__ void k2() {}\n")
    cg.pack(make_work(second, repo), second / "out")
    report = cg.collect([first / "out", second / "out"], tmp_path / "results", repo=repo, write=False)
    assert report["entries"] == [] and "different kernel sources" in report["text"]
