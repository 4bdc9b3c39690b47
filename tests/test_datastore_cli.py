"""`verispec datastore build | info | query` end to end with a tiny word-level tokenizer."""

from __future__ import annotations

import json

import pytest

from verispec.cli import main


@pytest.fixture
def tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    words = ["[UNK]", "def", "return", "x", "y", "(", ")", ":", "+", "1", "self", "print"]
    tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_build_info_query(tmp_path, tokenizer_json, capsys):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("def x ( y ) : return y + 1\n")
    (src / "pkg" / "b.py").write_text("def x ( y ) : print ( y )\n")
    (src / "notes.txt").write_text("self self self\n")
    (src / "bin.py").write_bytes(b"\xff\xfe\x00binary")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"text": "def y ( x ) : return x"}) + "\n" + json.dumps("return 1") + "\n")
    out = tmp_path / "store.vsds"
    rc = main(["datastore", "build", "--tokenizer", str(tokenizer_json), "--input", str(src), str(jsonl),
               "--ext", "py", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "4 documents (3 files, 1 skipped as not UTF-8)" in captured.out
    assert "sorting suffixes" in captured.err

    assert main(["datastore", "info", str(out), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_docs"] == 4 and info["vocab_size"] == 12 and info["version"] == 3

    assert main(["datastore", "query", str(out), "--text", "def x ( y )", "--tokenizer", str(tokenizer_json),
                 "--json", "--budget", "4"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["match_len"] == 5 and q["match_count"] == 2
    assert q["tokens"][0] == 7  # ':' follows "def x ( y )" in both .py files
    assert main(["datastore", "query", str(out), "--ids", "1,3", "--tokenizer", str(tokenizer_json)]) == 0
    assert "'('" in capsys.readouterr().out


def test_cli_errors(tmp_path, tokenizer_json, capsys):
    assert main(["datastore", "info", str(tmp_path / "missing.vsds")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.vsds"
    bad.write_bytes(b"not a datastore at all")
    assert main(["datastore", "info", str(bad)]) == 2
    assert "not a verispec datastore" in capsys.readouterr().err
    assert main(["datastore", "build", "--tokenizer", str(tmp_path / "nope.json"), "--input", str(tmp_path),
                 "--out", str(tmp_path / "o.vsds")]) == 2
    assert "tokenizer" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["datastore", "build", "--tokenizer", str(tokenizer_json), "--input", str(empty),
                 "--out", str(tmp_path / "o.vsds")]) == 2
    assert "empty corpus" in capsys.readouterr().err
    assert not (tmp_path / "o.vsds").exists()
