"""`verispec edit` end to end on a tiny local model directory (word-level tokenizer, no chat template)."""

from __future__ import annotations

import pytest
from _generate_utils import tiny_model

from verispec.cli import main
from verispec.cli.edit import strip_fence


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny_edit")
    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(97)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", pad_token="w0", eos_token="w96").save_pretrained(d)
    model = tiny_model("llama")
    model.generation_config.eos_token_id = 96
    model.save_pretrained(d)
    return d


def test_edit_cli_check_and_out(tiny_dir, tmp_path, capsys):
    src = tmp_path / "f.txt"
    src.write_text("w5 w6 w7 w8 w5 w6 w7 w8 w9\n")
    out = tmp_path / "new.txt"
    rc = main(["edit", str(src), "--instruction", "w3 w4", "--model", str(tiny_dir), "--device", "cpu",
               "--max-new-tokens", "24", "--out", str(out), "--raw", "--check"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "prediction tokens:" in err and "accepted" in err and "output identical" in err
    assert out.read_text().strip()


def test_edit_cli_user_errors(tiny_dir, tmp_path, capsys):
    assert main(["edit", str(tmp_path / "missing.py"), "-i", "x", "--model", str(tiny_dir)]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "e.py"
    empty.write_text("  \n")
    assert main(["edit", str(empty), "-i", "x", "--model", str(tiny_dir)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_strip_fence():
    assert strip_fence("Sure:\n```python\ndef f():\n    pass\n```\nDone.") == "def f():\n    pass\n"
    assert strip_fence("no fence") == "no fence"
