"""generate refuses bad parameters before touching the model, raises on non-finite logits instead of
emitting garbage, and gives every request of a seeded batch its own random stream (issue 15, items 3, 4, 9)."""

from __future__ import annotations

import pytest
import torch
from _generate_utils import tiny_model

import verispec


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


class _Untouchable(torch.nn.Module):
    """A model whose every use fails loudly: a parameter check that runs after loading would hit it."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) before the parameters were checked")


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(max_new_tokens=1.5), TypeError, r"max_new_tokens must be an integer, got 1\.5"),
        (dict(max_new_tokens=None), TypeError, "max_new_tokens must be an integer, got None"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1, got 0"),
        (dict(max_new_tokens="8"), TypeError, "max_new_tokens"),
        (dict(temperature=float("nan")), ValueError, "temperature must be finite"),
        (dict(temperature=float("inf")), ValueError, "temperature must be finite"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(temperature=1.0, top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
        (dict(temperature=1.0, top_p=float("nan")), ValueError, "top_p"),
        (dict(temperature=1.0, top_k=1.5), TypeError, r"top_k must be an integer, got 1\.5"),
        (dict(temperature=1.0, top_k=0), ValueError, "top_k must be >= 1"),
        (dict(temperature=1.0, seed=2**64), ValueError, "seed must be in 0..18446744073709551615"),
        (dict(temperature=1.0, seed=-1), ValueError, "seed"),
    ],
)
def test_bad_parameters_are_refused_before_the_model_is_used(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        verispec.generate(_Untouchable(), [[1, 2]], **kwargs)


def test_sixty_four_bit_seed(model):
    out = verispec.generate(model, [[1, 2, 3]] * 2, max_new_tokens=3, temperature=1.0, eos_token_id=[], seed=2**63)
    again = verispec.generate(model, [[1, 2, 3]] * 2, max_new_tokens=3, temperature=1.0, eos_token_id=[], seed=2**63)
    assert [s.tolist() for s in out.sequences] == [s.tolist() for s in again.sequences]
    verispec.generate(model, [[1, 2, 3]], max_new_tokens=2, temperature=1.0, eos_token_id=[], seed=2**64 - 1)


def test_seeded_requests_do_not_replay_each_other(model):
    """Request 1 under seed s must not be request 0 under seed s + 1 (keys are derived, not seed + b)."""
    kw = dict(max_new_tokens=24, temperature=2.0, eos_token_id=[])
    a = verispec.generate(model, [[5, 6, 7]] * 2, seed=10, **kw).new_tokens
    b = verispec.generate(model, [[5, 6, 7]] * 2, seed=11, **kw).new_tokens
    assert a[1].tolist() != b[0].tolist()
    assert a[0].tolist() != a[1].tolist()


def _poisoned(model, value: float, layer_row: bool = False):
    """The tiny model with its output head made non-finite (every logit, or one vocabulary row)."""
    m = tiny_model("llama")
    with torch.no_grad():
        w = m.get_output_embeddings().weight
        if layer_row:
            w[5] = value
        else:
            w.fill_(value)
    return m


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("value, layer_row", [(float("nan"), False), (float("inf"), True), (float("nan"), True)])
def test_non_finite_logits_raise_with_request_and_step(model, temperature, value, layer_row):
    """NaN logits used to emit token 0 (greedy argmax of NaN, or an empty race at temperature > 0) at
    every step, silently. Now the step raises, naming the request and the step."""
    bad = _poisoned(model, value, layer_row)
    with pytest.raises(FloatingPointError, match=r"request 0 at step \d+"):
        verispec.generate(bad, [[1, 2, 3]], max_new_tokens=4, temperature=temperature, eos_token_id=[], seed=0)
