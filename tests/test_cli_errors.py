"""User errors on the command line: one line on stderr naming the path or value, exit status 2, no
traceback, and nothing loaded first (issue 15, item 8). A closed stdout (``| head``) ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _generate_utils import tiny_model

from verispec.cli import main

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _run_main(capsys, argv) -> tuple[int, str]:
    """main()'s exit status (also for usage errors: main returns argparse's status) and its stderr."""
    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    notok = d / "notok"
    tiny_model("llama").save_pretrained(notok)  # weights and config, no tokenizer files
    bad = d / "badcfg"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    return {"notok": notok, "badcfg": bad}


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
        (["--max-new-tokens", "1.5"], "argument --max-new-tokens: must be an integer, got '1.5'"),
        (["--temperature", "nan"], "argument --temperature: must be finite and >= 0"),
        (["--temperature", "inf"], "argument --temperature: must be finite and >= 0"),
        (["--top-p", "1.5"], "argument --top-p: must be in (0, 1]"),
        (["--top-p", "nan"], "argument --top-p: must be in (0, 1]"),
        (["--top-k", "1.5"], "argument --top-k: must be an integer, got '1.5'"),
        (["--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
        (["--seed", str(2**64)], "argument --seed: must be in 0..18446744073709551615"),
        (["--budget", "-2"], "argument --budget: must be >= 1, got -2"),
    ],
)
def test_bad_values_are_refused_at_parse_time(capsys, args, words):
    # The model does not exist: a check that ran after loading would report that instead.
    code, err = _run_main(capsys, ["generate", "--model", "/nonexistent/model", "--prompt", "x", *args])
    assert code == 2
    line = _one_line(err)
    assert words in line and line.startswith("verispec generate: error:"), line


def test_out_naming_a_directory(capsys, tmp_path):
    code, err = _run_main(capsys, ["datastore", "build", "--tokenizer", "/nonexistent", "--input", str(tmp_path),
                                   "--out", str(tmp_path)])
    assert code == 2
    assert f"argument --out: {tmp_path}: is a directory" in _one_line(err)


def test_out_in_a_missing_directory(capsys, tmp_path):
    target = tmp_path / "no" / "such" / "x.vsds"
    code, err = _run_main(capsys, ["datastore", "build", "--tokenizer", "x", "--input", str(tmp_path), "--out", str(target)])
    assert code == 2
    assert f"directory {target.parent} does not exist" in _one_line(err)


@pytest.mark.skipif(AS_ROOT, reason="root writes anywhere")
def test_out_in_an_unwritable_directory(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _run_main(capsys, ["datastore", "build", "--tokenizer", "x", "--input", str(tmp_path),
                                       "--out", str(ro / "x.vsds")])
    finally:
        ro.chmod(0o700)
    assert code == 2
    assert f"directory {ro} is not writable" in _one_line(err)


def test_unreadable_input_files(capsys, tmp_path):
    code, err = _run_main(capsys, ["generate", "--file", str(tmp_path / "missing.txt")])
    assert code == 2 and f"argument --file: {tmp_path / 'missing.txt'}: does not exist" in _one_line(err)
    code, err = _run_main(capsys, ["generate", "--file", str(tmp_path)])
    assert code == 2 and "is a directory" in _one_line(err)
    code, err = _run_main(capsys, ["datastore", "info", str(tmp_path / "missing.vsds")])
    assert code == 2 and "missing.vsds: does not exist" in _one_line(err)
    if not AS_ROOT:
        f = tmp_path / "secret.txt"
        f.write_text("x")
        f.chmod(0)
        code, err = _run_main(capsys, ["generate", "--file", str(f)])
        assert code == 2 and f"{f}: not readable" in _one_line(err)


def test_invalid_config_json_names_the_file(capsys, model_dirs):
    code, err = _run_main(capsys, ["generate", "--model", str(model_dirs["badcfg"]), "--prompt", "x", "--device", "cpu"])
    assert code == 2
    line = _one_line(err)
    assert f"{model_dirs['badcfg'] / 'config.json'} is not valid JSON (line 1" in line, line


def test_model_without_tokenizer_files_names_the_directory(capsys, model_dirs):
    code, err = _run_main(capsys, ["generate", "--model", str(model_dirs["notok"]), "--prompt", "x", "--device", "cpu"])
    assert code == 2
    line = _one_line(err)
    assert f"{model_dirs['notok']} has no tokenizer files" in line, line


def test_datastore_tokenizer_failure_names_the_path(capsys, model_dirs, tmp_path):
    (tmp_path / "doc.txt").write_text("hello")
    code, err = _run_main(capsys, ["datastore", "build", "--tokenizer", str(model_dirs["notok"]), "--input",
                                   str(tmp_path / "doc.txt"), "--out", str(tmp_path / "x.vsds"), "--quiet"])
    assert code == 2
    assert f"--tokenizer {model_dirs['notok']}: cannot load a tokenizer" in _one_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(capsys, model_dirs):
    code, err = _run_main(capsys, ["generate", "--model", str(model_dirs["notok"]), "--prompt", "x", "--device", "cuda"])
    assert code == 2
    assert "--device cuda: CUDA is not available here" in _one_line(err)


def test_bad_device_name(capsys):
    code, err = _run_main(capsys, ["generate", "--model", "/nonexistent", "--prompt", "x", "--device", "tpu9"])
    assert code == 2
    assert "--device 'tpu9' is not a device" in _one_line(err)


def test_draft_model_flag_mistakes_exit_2(capsys):
    code, err = _run_main(capsys, ["generate", "--prompt", "x", "--draft-model", "/m"])
    assert code == 2 and "--draft-model needs --drafter draft-model" in _one_line(err)
    code, err = _run_main(capsys, ["generate", "--prompt", "x", "--check", "--temperature", "0.5"])
    assert code == 2 and "--check compares greedy outputs" in _one_line(err)


def test_broken_pipe_ends_quietly():
    """The reader of stdout is gone before the command writes (``verispec info | head -c0``): no traceback,
    no 'Exception ignored' at exit, status 141 (128 + SIGPIPE, as coreutils)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    p = subprocess.Popen([sys.executable, "-m", "verispec", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd=ROOT)
    p.stdout.close()  # the pipe's read end is gone: every write fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
