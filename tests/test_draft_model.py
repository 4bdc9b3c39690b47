"""Draft-model speculative decoding through `generate`: greedy identity and exact sampling.

The sampling oracle is the one of test_generate_sampling.py (transformers' own warpers chained over
the first two tokens); a drafter that misreports its distribution must fail the same test.
"""

from __future__ import annotations

import random

import pytest
import torch
from _generate_utils import VOCAB, reference_greedy, tiny_model
from test_generate_sampling import V, _exact_joint, joint_counts, pooled_pvalue

import verispec
from verispec import DraftModelDrafter, DraftTree
from verispec.drafters.base import Accepted, Context


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


def _draft(drafter, request, tokens):
    return drafter.propose([Context(request, tokens)])[0].tokens.tolist()


def test_draft_cache_follows_rejections():
    """After rejections the drafter's cache is cropped to the accepted context: its drafts equal
    those of a fresh drafter that sees the same context from scratch."""
    draft = tiny_model("llama", seed=8)
    d = DraftModelDrafter(draft, num_tokens=4)
    ctx = [5, 9, 2]
    first = _draft(d, 0, ctx)
    ctx2 = ctx + first[:1] + [(first[1] + 1) % VOCAB]  # one draft accepted, then a different token
    assert _draft(d, 0, ctx2) == _draft(DraftModelDrafter(draft, num_tokens=4), 0, ctx2)


def _greedy_chain(model, tokens, n):
    """The draft model's greedy continuation, one plain forward of the whole context per token (no
    cache, no padding, batch 1): what the drafter must draft."""
    ctx = list(tokens)
    with torch.no_grad():
        for _ in range(n):
            ctx.append(int(model(torch.tensor([ctx])).logits[0, -1].argmax()))
    return ctx[len(tokens):]


def _no_query_sees_only_padding(module, args, kwargs):
    """A query whose causal keys are all masked gets NaN from SDPA on CUDA (CPU returns 0, so the
    drafts alone would not show it), and 0 * NaN then spreads along its row: refuse such a forward."""
    if "attention_mask" not in kwargs:
        return  # the reference's plain forwards
    mask, q_len = kwargs["attention_mask"].bool(), kwargs["input_ids"].shape[1]
    seen = mask.cummax(dim=1).values[:, -q_len:]  # any valid key at or before each query's column
    assert seen.all(), "a query attends to padding only"


@pytest.mark.parametrize("arch,attn", [("llama", None), ("llama", "eager"), ("qwen2", None), ("gpt2", None),
                                       ("gemma2", None)])
def test_batched_drafts_equal_unbatched_greedy_chains(arch, attn):
    """One batched cache, ragged on every axis: request ids out of order, prompts of 1..10 tokens,
    different acceptance per request and step (0..all, so 1 or more tokens to feed), a request that
    finishes and one that joins late. Every draft equals the model's own greedy chain of that
    request's context. Wrong positions (GPT-2's learned ones, RoPE), a wrong mask or a stale cache
    row all fail this (checked by breaking each); a Gemma-2 window of 5 tests that padding never
    sits between a row's tokens. The random models' logits are peaked, so float noise from padding
    and batching cannot flip a near-tie here (4 architectures x 5 model seeds x 3 acceptance seeds, 1380
    proposals, all equal when written)."""
    model = tiny_model(arch, seed=1)
    if attn:  # None: the model's default (SDPA; eager for Gemma 2's soft-capping)
        model.config._attn_implementation = attn
    model.register_forward_pre_hook(_no_query_sees_only_padding, with_kwargs=True)
    n = 4
    d = DraftModelDrafter(model, num_tokens=n)
    rng = random.Random(0)
    live = {7: [5, 9, 2], 2: [1], 11: [3, 3, 8, 1, 4, 4, 6, 2, 9, 1], 5: [4, 4]}
    d.begin(list(live.values()))
    for step in range(6):
        contexts = [Context(r, t) for r, t in live.items()]
        trees = d.propose(contexts)
        accepted = []
        for c, tree in zip(contexts, trees):
            got = tree.tokens.tolist()
            assert got == _greedy_chain(model, c.tokens, n), (step, c.request)
            a = rng.randint(0, n)  # accepted drafts, then a correction (or the bonus token)
            new = got[:a] + [(got[a] + rng.randrange(1, VOCAB)) % VOCAB if a < n else rng.randrange(VOCAB)]
            c.tokens.extend(new)
            accepted.append(Accepted(c.request, new, a, finished=step == 2 and c.request == 2))
        d.update(accepted)
        if step == 2:
            del live[2]
        if step == 3:
            live[40] = [8, 1, 6]


def test_draft_model_greedy_identity_ragged_finishes():
    """Batch of 4 prompts of different lengths that stop at different steps (per-request EOS):
    token-identical to HF greedy with GPT-2 and Qwen2 drafting for a Llama target."""
    target = tiny_model("llama", seed=2)
    prompts = [[5, 9, 2], [7], [3, 3, 8, 1, 4, 4, 6, 2], [4, 1, 1, 9, 0]]
    free = reference_greedy(target, prompts[0], 16, None)
    eos = free[len(prompts[0]) + 6]  # request 0 emits it mid-way; the others may or may not
    want = [reference_greedy(target, p, 16, [eos]) for p in prompts]
    assert len(want[0]) < len(free)
    for arch in ("gpt2", "qwen2"):
        drafter = DraftModelDrafter(tiny_model(arch, seed=6), num_tokens=3)
        out = verispec.generate(target, prompts, drafter=drafter, max_new_tokens=16, eos_token_id=eos)
        assert [s.tolist() for s in out.sequences] == want, arch


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
    first = _draft(d, 0, ctx)
    ctx2 = ctx + first[:1] + [(first[1] + 1) % VOCAB]
    assert _draft(d, 0, ctx2) == _draft(DraftModelDrafter(draft, num_tokens=4), 0, ctx2)
    target = tiny_model("llama", seed=0)
    out = verispec.generate(target, [[5, 9, 2]], drafter=DraftModelDrafter(draft, num_tokens=4), max_new_tokens=20,
                            eos_token_id=[])
    assert out.sequences[0].tolist() == reference_greedy(target, [5, 9, 2], 20, None)
