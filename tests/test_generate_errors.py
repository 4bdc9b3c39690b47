"""Bad input to verispec.generate fails with errors that say what and where."""

from __future__ import annotations

import pytest
import torch
from _generate_utils import VOCAB, tiny_model

import verispec
from verispec import DraftTree, NoDrafter


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_encoder_decoder_is_rejected_by_name():
    from transformers import T5Config, T5ForConditionalGeneration

    m = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    with pytest.raises(ValueError, match="T5ForConditionalGeneration is an encoder-decoder"):
        verispec.generate(m, [[1, 2]], max_new_tokens=2)


def test_model_without_cache_is_rejected_by_name():
    class NoCacheLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Cfg", (), {"is_encoder_decoder": False})()
            self.lm = torch.nn.Linear(4, 4)

        def forward(self, input_ids):
            return self.lm(input_ids)

        def get_output_embeddings(self):
            return self.lm

    with pytest.raises(ValueError, match="NoCacheLM.forward takes neither cache nor past_key_values"):
        verispec.generate(NoCacheLM(), [[1, 2]], max_new_tokens=2)


def test_not_a_model():
    with pytest.raises(TypeError, match="causal LM"):
        verispec.generate(object(), [[1]], max_new_tokens=2)


def test_empty_prompts(model):
    with pytest.raises(ValueError, match="request 1 has an empty prompt"):
        verispec.generate(model, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="no prompts"):
        verispec.generate(model, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="request 0 has an empty prompt"):
        verispec.generate(model, torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]),
                          max_new_tokens=2)


def test_token_outside_vocab_and_bad_shapes(model):
    with pytest.raises(ValueError, match=f"request 0: token id {VOCAB} is outside the model's vocabulary"):
        verispec.generate(model, [[1, VOCAB]], max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask has holes"):
        verispec.generate(model, torch.ones(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 0, 1]]),
                          max_new_tokens=2)
    with pytest.raises(TypeError, match="integer token ids"):
        verispec.generate(model, torch.ones(1, 3), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        verispec.generate(model, [[1]], max_new_tokens=0)


def test_vocab_mismatch_between_drafter_and_model(model):
    class Big(NoDrafter):
        vocab_size = VOCAB + 100

    with pytest.raises(ValueError, match=f"vocabulary size {VOCAB + 100} but the model's is {VOCAB}"):
        verispec.generate(model, [[1, 2]], drafter=Big(), max_new_tokens=2)

    class OutOfVocab(NoDrafter):
        def propose(self, contexts):
            return [DraftTree([VOCAB + 3], [-1]) for _ in contexts]

    with pytest.raises(ValueError, match="request 0.*outside the vocabulary"):
        verispec.generate(model, [[1, 2]], drafter=OutOfVocab(), max_new_tokens=2)


def test_bad_drafters(model):
    with pytest.raises(TypeError, match="propose"):
        verispec.generate(model, [[1, 2]], drafter=object(), max_new_tokens=2)

    class TooFew(NoDrafter):
        def propose(self, contexts):
            return []

    with pytest.raises(ValueError, match="returned 0 trees for 2 requests"):
        verispec.generate(model, [[1, 2], [3]], drafter=TooFew(), max_new_tokens=2)

    class Broken(NoDrafter):
        def propose(self, contexts):
            return [DraftTree([1, 2], [1, -1], validate=False) for _ in contexts]

    with pytest.raises(ValueError, match="tree for request 0: parent 1 of node 0"):
        verispec.generate(model, [[1, 2]], drafter=Broken(), max_new_tokens=2)


def test_streamer_needs_batch_one(model):
    class S:
        def put(self, v):
            pass

        def end(self):
            pass

    with pytest.raises(ValueError, match="batch of 2"):
        verispec.generate(model, [[1], [2]], streamer=S(), max_new_tokens=2)


def test_attention_argument(model):
    with pytest.raises(ValueError, match="attention must be"):
        verispec.generate(model, [[1]], max_new_tokens=2, attention="flash")


def test_model_state_is_restored(model):
    """generate leaves the model as it found it: same attention implementation, same outputs."""
    before = model.config._attn_implementation
    verispec.generate(model, [[1, 2, 3]], max_new_tokens=3, attention="tree")
    assert model.config._attn_implementation == before
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
