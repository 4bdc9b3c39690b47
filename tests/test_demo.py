"""`verispec generate` and `verispec demo` end to end: a tiny local model directory (fast), and the
real default (SmolLM2-135M-Instruct GGUF + standard-library datastore + HumanEval), marked slow."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _generate_utils import reference_greedy, tiny_model

from verispec.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny Llama with a word-level tokenizer ("w0" .. "w96"), plus a datastore for it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from verispec import Datastore

    d = tmp_path_factory.mktemp("tiny")
    vocab = {f"w{i}": i for i in range(97)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", pad_token="w0", eos_token="w96")
    tok.save_pretrained(d)
    model = tiny_model("llama")
    model.generation_config.eos_token_id = 96
    model.save_pretrained(d)
    g = torch.Generator().manual_seed(0)
    Datastore.build([torch.randint(0, 97, (300,), generator=g).tolist()], d / "tiny.vsds", vocab_size=97,
                    progress=False)
    return d


@pytest.mark.parametrize("drafter", ["retrieval", "prompt-lookup", "none"])
def test_generate_cli_tiny(tiny_dir, drafter, capsys):
    rc = main(["generate", "--model", str(tiny_dir), "--datastore", str(tiny_dir / "tiny.vsds"), "--drafter", drafter,
               "--prompt", "w1 w2 w3 w1 w2", "--prompt", "w5 w6", "--max-new-tokens", "8", "--check", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "=== request 1 ===" in out and out.count("w") > 10
    assert "tokens/step" in err and "identical to model.generate(do_sample=False): 2/2" in err


def test_generate_cli_streams_one_prompt(tiny_dir, tmp_path, capsys, monkeypatch):
    import verispec

    real_generate, streamers = verispec.generate, []

    def spy(*a, **kw):
        streamers.append(kw.get("streamer"))
        return real_generate(*a, **kw)

    monkeypatch.setattr(verispec, "generate", spy)
    f = tmp_path / "p.txt"
    f.write_text("w7 w8 w9 w7 w8")
    rc = main(["generate", "--model", str(tiny_dir), "--file", str(f), "--drafter", "prompt-lookup",
               "--max-new-tokens", "5", "--device", "cpu", "--check"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith("w7 w8 w9 w7 w8")
    # one prompt goes through a streamer, and what it printed is the greedy continuation
    assert len(streamers) == 1 and streamers[0] is not None
    assert "identical to model.generate(do_sample=False): 1/1" in err
    want = reference_greedy(tiny_model("llama"), [7, 8, 9, 7, 8], 5, [96])
    assert out.split() == [f"w{i}" for i in want]


def test_generate_cli_errors(tiny_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--device", "cpu"]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "  ", "--device", "cpu"]) == 2
    assert "prompt 0 is empty" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "nothing-here"), "--prompt", "w1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("x")
    assert main(["generate", "--model", str(tmp_path / "x.txt"), "--prompt", "w1"]) == 2
    assert "must be .gguf" in capsys.readouterr().err


def test_demo_tiny(tiny_dir, tmp_path, capsys):
    png = tmp_path / "chart.png"
    rc = main(["demo", "--model", str(tiny_dir), "--datastore", str(tiny_dir / "tiny.vsds"), "--prompts", "2",
               "--max-new-tokens", "6", "--device", "cpu", "--plot", str(png)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    for name in ("HF generate (greedy)", "HF prompt lookup", "verispec (retrieval)", "tokens/s", "tokens/step",
                 "speedup"):
        assert name in out
    assert "2/2" in out
    if importlib.util.find_spec("matplotlib"):
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "--plot needs matplotlib" in err


@pytest.mark.slow
def test_demo_quick_real_model(capsys):
    """The README's main job on its real defaults (a short run)."""
    rc = main(["demo", "--quick", "--prompts", "1", "--max-new-tokens", "24", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "verispec (retrieval)" in out and "1/1" in out


def test_generate_cli_draft_model(tiny_dir, capsys):
    """`--drafter draft-model`: the target drafts for itself here (the tiny directory is both), so every
    draft is accepted and the output is still checked against model.generate."""
    rc = main(["generate", "--model", str(tiny_dir), "--drafter", "draft-model", "--draft-model", str(tiny_dir),
               "--prompt", "w1 w2 w3", "--max-new-tokens", "8", "--check", "--device", "cpu", "--no-stream"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "identical to model.generate(do_sample=False): 1/1" in err
    rc = main(["generate", "--model", str(tiny_dir), "--drafter", "draft-model", "--prompt", "w1", "--device", "cpu"])
    assert rc == 2 and "needs --draft-model" in capsys.readouterr().err  # a user error: one line, status 2


def test_generate_cli_heads(tiny_dir, tmp_path, capsys):
    """`--drafter heads --heads DIR`: heads trained for the model (here: freshly initialised, so they
    predict what the LM head predicts) draft from its hidden state; output checked against model.generate."""
    from transformers import AutoModelForCausalLM

    from verispec.heads import init_heads

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    init_heads(model, num_heads=2).save(tmp_path / "heads")
    rc = main(["generate", "--model", str(tiny_dir), "--drafter", "heads", "--heads", str(tmp_path / "heads"),
               "--prompt", "w1 w2 w3", "--prompt", "w4", "--max-new-tokens", "12", "--check", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "identical to model.generate(do_sample=False): 2/2" in err and "HeadsDrafter" in err
    rc = main(["generate", "--model", str(tiny_dir), "--drafter", "heads", "--prompt", "w1", "--device", "cpu"])
    assert rc == 2 and "needs --heads" in capsys.readouterr().err
    rc = main(["generate", "--model", str(tiny_dir), "--drafter", "heads", "--heads", str(tmp_path), "--prompt", "w1",
               "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln]  # (transformers' loading bar is on stderr too)
    assert rc == 2 and len(errors) == 1 and "not a heads directory" in errors[0]
