"""Draft-model speculative decoding through `generate`: greedy identity and exact sampling.

The sampling oracle is the one of test_generate_sampling.py (transformers' own warpers chained over
the first two tokens); a drafter that misreports its distribution must fail the same test.
"""

from __future__ import annotations

import pytest
import torch
from _generate_utils import VOCAB, reference_greedy, tiny_model
from test_generate_sampling import V, _exact_joint, joint_counts, pooled_pvalue

import verispec
from verispec import DraftModelDrafter, DraftTree


def _flat(model):
    with torch.no_grad():  # flatter logits: every cell of the two-token joint gets mass
        for p in model.parameters():
            p.mul_(0.6)
    return model


def _joint_counts(target, drafter, n, temperature, prompt, seed):
    out = verispec.generate(target, [prompt] * n, drafter=drafter, max_new_tokens=2, temperature=temperature,
                            eos_token_id=[], seed=seed, attention="mask")
    return joint_counts(out.sequences, len(prompt), V), out.stats


_pvalue = pooled_pvalue


@pytest.mark.parametrize("temperature,draft_temperature", [(1.0, 1.0), (0.7, 1.3), (1.0, 0.0)])
def test_draft_model_sampling_matches_the_target(temperature, draft_temperature):
    """A different model drafts (sampled, or its greedy chain); the first two tokens still follow the
    target's distribution, and both accepted and rejected drafts occur."""
    target = _flat(tiny_model("llama", seed=3, vocab=V))
    draft = _flat(tiny_model("llama", seed=5, vocab=V))
    prompt, n = [1, 4, 2, 6], 3000
    drafter = DraftModelDrafter(draft, num_tokens=3, temperature=draft_temperature, seed=11)
    counts, stats = _joint_counts(target, drafter, n, temperature, prompt, seed=99)
    joint = _exact_joint(target, prompt, temperature, None, None)
    assert _pvalue(counts, joint, n) > 1e-3
    assert 0 < stats.acceptance_rate < 1, stats.acceptance_rate


class _LyingDrafter(DraftModelDrafter):
    """Samples from q at temperature 1 but reports a flattened q (temperature 3): rejection sampling
    with the wrong q is biased, so the goodness-of-fit test must catch it."""

    def _pick(self, logits):
        x, _ = super()._pick(logits)
        return x, torch.softmax(logits.double() / 3.0, dim=-1).float()


def test_misreported_draft_distribution_is_detected():
    target = _flat(tiny_model("llama", seed=3, vocab=V))
    draft = tiny_model("llama", seed=5, vocab=V)  # peaked: the lie is large
    prompt, n = [1, 4, 2, 6], 3000
    counts, _ = _joint_counts(target, _LyingDrafter(draft, num_tokens=3, temperature=1.0, seed=11), n, 1.0,
                              prompt, seed=99)
    assert _pvalue(counts, _exact_joint(target, prompt, 1.0, None, None), n) < 1e-6


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_draft_model_greedy_is_token_identical(temperature):
    """Greedy target, batch of 3 ragged prompts: identical to HF greedy whether the drafter drafts
    greedily or samples (sampled drafts are verified greedily), with the target itself as a perfect
    drafter (every draft accepted) and with another model."""
    target = tiny_model("llama", seed=0)
    prompts = [[5, 9, 2], [7], [3, 3, 8, 1, 4, 4]]
    want = [reference_greedy(target, p, 12, None) for p in prompts]
    for draft in (target, tiny_model("llama", seed=8)):
        drafter = DraftModelDrafter(draft, num_tokens=4, temperature=temperature, seed=2)
        out = verispec.generate(target, prompts, drafter=drafter, max_new_tokens=12, eos_token_id=[])
        assert [s.tolist() for s in out.sequences] == want
        if draft is target and temperature == 0:
            assert out.stats.acceptance_rate == 1.0 and out.stats.steps <= 3 * 3 + 3


def test_draft_cache_follows_rejections():
    """After rejections the drafter's cache is cropped to the accepted context: its drafts equal
    those of a fresh drafter that sees the same context from scratch."""
    draft = tiny_model("llama", seed=8)
    d = DraftModelDrafter(draft, num_tokens=4)
    ctx = [5, 9, 2]
    first = d._draft(0, ctx).tokens.tolist()
    ctx2 = ctx + first[:1] + [(first[1] + 1) % VOCAB]  # one draft accepted, then a different token
    again = d._draft(0, ctx2).tokens.tolist()
    fresh = DraftModelDrafter(draft, num_tokens=4)._draft(0, ctx2).tokens.tolist()
    assert again == fresh


def test_bad_draft_probs_are_refused():
    target = tiny_model("llama", seed=0)

    class Bad:
        vocab_size = VOCAB

        def __init__(self, probs):
            self.probs = probs

        def propose(self, contexts):
            return [DraftTree.chain([3], probs=self.probs) for _ in contexts]

        def update(self, accepted):
            pass

    half = torch.full((1, VOCAB), 0.5 / VOCAB)
    zero_at_token = torch.zeros(1, VOCAB)
    zero_at_token[0, 4] = 1.0
    for probs, match in ((half, "do not sum to 1"), (zero_at_token, "probability 0"),
                         (-zero_at_token, "negative")):
        with pytest.raises(ValueError, match=match):
            verispec.generate(target, [[1, 2]], drafter=Bad(probs), max_new_tokens=2, temperature=1.0,
                              eos_token_id=[])
    with pytest.raises(ValueError, match=r"probs must be \[n=1, V\]"):
        DraftTree.chain([3], probs=torch.ones(2, VOCAB) / VOCAB)


def test_sliding_window_draft_model():
    """A Gemma-2 draft (window 5) past its window with rejections: a config-built cache could not be
    cropped there. Drafts still equal a fresh drafter's, and generate stays token-identical."""
    draft = tiny_model("gemma2", seed=4)
    d = DraftModelDrafter(draft, num_tokens=4)
    ctx = [5, 9, 2, 7, 7, 1, 3, 8, 6]
    first = d._draft(0, ctx).tokens.tolist()
    ctx2 = ctx + first[:1] + [(first[1] + 1) % VOCAB]
    assert d._draft(0, ctx2).tokens.tolist() == DraftModelDrafter(draft, num_tokens=4)._draft(0, ctx2).tokens.tolist()
    target = tiny_model("llama", seed=0)
    out = verispec.generate(target, [[5, 9, 2]], drafter=DraftModelDrafter(draft, num_tokens=4), max_new_tokens=20,
                            eos_token_id=[])
    assert out.sequences[0].tolist() == reference_greedy(target, [5, 9, 2], 20, None)
