"""`verispec bench` and its report (verispec.bench): the suite's bookkeeping on CPU with a fake timer,
the tables, the JSON record, the regression check against a baseline, plots, and the CLI's errors."""

from __future__ import annotations

import json

import pytest
import torch

from verispec.bench import report
from verispec.bench._common import Context

FAKE_MS = 2.0


def fake_ctx() -> Context:
    """CPU, quick shapes, each implementation called once and reported as FAKE_MS."""
    def timer(fn):
        fn()
        return FAKE_MS

    ctx = Context(torch.device("cpu"), quick=True, timer=timer, log=lambda s: None)
    ctx._bandwidth = 10.0
    return ctx


@pytest.fixture(scope="module")
def kernels_result():
    return report.run_suite(["verify", "commit_kv"], fake_ctx())


def test_suite_rows_labelled_and_floors(kernels_result):
    r = kernels_result
    assert r["device"]["type"] == "cpu" and r["versions"]["torch"] == torch.__version__
    assert r["commit"] and r["date"]
    v = r["ops"]["verify"]
    assert v["device"] == "CPU" and len(v["rows"]) == 3
    for row in v["rows"]:
        e = row["impls"]["verispec torch"]
        assert e["ms"] == FAKE_MS and e["pct_floor"] == pytest.approx(100 * row["floor_ms"] / FAKE_MS)
    chain = next(row for row in v["rows"] if row["params"]["case"] == "exact_chain")
    assert chain["impls"]["flashinfer chain"] == {"skipped": "not installed"}
    c = r["ops"]["commit_kv"]
    assert c["correctness"] == {"torch": "ok"}
    assert set(c["rows"][0]["impls"]) == {"verispec torch", "torch loop"}  # contiguous: the loop peer too


def test_markdown_has_one_table_per_op_with_ratio_and_floor(kernels_result):
    md = report.markdown(kernels_result)
    assert "### verify (CPU: " in md and "### commit_kv (CPU: " in md
    assert md.count("| shape | implementation | median ms | time / best verispec | % of floor | notes |") == 2
    assert "| greedy B=8 K=8 V=32000 | verispec torch | 2.00 | 1.00x |" in md
    assert "| exact_chain B=8 K=8 V=32000 | flashinfer chain | – | – | – | not installed |" in md


def test_regressions_against_a_baseline(kernels_result):
    base = json.loads(json.dumps(kernels_result))
    assert report.compare(kernels_result, base, 0.10) == []
    row = base["ops"]["verify"]["rows"][0]
    row["impls"]["verispec torch"]["ms"] = FAKE_MS / 1.5  # we are 50% slower than the baseline
    base["ops"]["commit_kv"]["rows"][0]["impls"]["torch loop"]["ms"] = 0.1  # a peer: never our regression
    flags = report.compare(kernels_result, base, 0.10)
    assert len(flags) == 1 and flags[0].startswith(f"verify {row['shape']} verispec torch") and "+50%" in flags[0]
    assert report.compare(kernels_result, base, 0.6) == []
    base["device"]["name"] = "another machine"
    assert "another machine" in report.baseline_warnings(kernels_result, base)[0]


def test_baseline_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.load_baseline(str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        report.load_baseline(str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a `verispec bench --json` file"):
        report.load_baseline(str(tmp_path / "other.json"))


def test_failing_op_is_recorded_and_the_others_still_run(monkeypatch):
    import verispec.bench.verify as bv

    def boom(ctx):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(bv, "run", boom)
    r = report.run_suite(["verify", "commit_kv"], fake_ctx())
    assert r["ops"]["verify"]["error"] == "RuntimeError: kernel exploded"
    assert r["ops"]["commit_kv"]["rows"]
    assert "not run: RuntimeError: kernel exploded" in report.markdown(r)


@pytest.mark.parametrize("missing, key", [("draftretriever", "skipped"), ("verispec.ops.renamed", "error")])
def test_missing_peer_skips_but_a_broken_verispec_import_is_an_error(monkeypatch, missing, key):
    import verispec.bench.verify as bv

    def run(ctx):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(bv, "run", run)
    r = report.run_suite(["verify"], fake_ctx())["ops"]["verify"]
    assert set(r) == {"op", key, "device"} and missing in r[key]


def test_plots(kernels_result, tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.plot(kernels_result, str(tmp_path))
    assert sorted(p.name for p in paths) == ["commit_kv.png", "verify.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(RuntimeError, match="--plot needs matplotlib.*pip install matplotlib"):
        report.require_matplotlib()


def test_cli_quick_commit_kv_json_and_regression_exit(tmp_path, capsys):
    from verispec.cli import main

    out = tmp_path / "r.json"
    assert main(["bench", "--op", "commit_kv", "--quick", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "### commit_kv (CPU: " in text and "| B=4 P=8 paged | verispec torch |" in text
    data = json.loads(out.read_text())
    assert set(data["ops"]) == {"commit_kv"} and data["quick"] and data["device"]["torch_threads"] == 1
    for row in data["ops"]["commit_kv"]["rows"]:  # a baseline 100x faster than anything real
        for e in row["impls"].values():
            e["ms"] = e["ms"] / 100
    out.write_text(json.dumps(data))
    assert main(["bench", "--op", "commit_kv", "--quick", "--threads", "1", "--baseline", str(out)]) == 1
    assert "REGRESSION commit_kv B=4 P=8" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--baseline", "/nonexistent.json"], "baseline /nonexistent.json does not exist"),
    (["--tolerance", "-1"], "--tolerance must be >= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_cli_user_errors_exit_2(argv, msg, capsys):
    from verispec.cli import main

    assert main(["bench", "--op", "verify", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_cli_module_is_cheap_to_import():
    import subprocess
    import sys

    code = "import sys, verispec.cli.bench; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
