"""Sampling is lossless: the joint distribution of the first generated tokens matches plain sampling.

The oracle is the exact distribution Hugging Face's sampling draws from: the model's logits passed
through transformers' own temperature / top-k / top-p warpers, chained over the first two tokens. A
chi-square goodness-of-fit test compares it with verispec samples drawn with drafters whose trees are
mostly wrong (rejections, residual draws) and sometimes right (acceptances).
"""

from __future__ import annotations

import random

import pytest
import torch
from _generate_utils import RandomTreeDrafter, tiny_model
from scipy.stats import chisquare

import verispec
from verispec import DraftTree

V = 7  # a small vocabulary keeps the joint of two tokens at 49 cells


class LikelyTreeDrafter:
    """Trees of the model's most likely tokens (so many drafts are accepted) plus random siblings."""

    def __init__(self, model, seed=0):
        self.model, self.rng = model, random.Random(seed)
        self.memo = {}

    def propose(self, contexts):
        trees = []
        for ctx in contexts:
            key = tuple(ctx.tokens)
            if key not in self.memo:
                with torch.no_grad():
                    self.memo[key] = self.model(torch.tensor([ctx.tokens])).logits[0, -1].topk(3).indices.tolist()
            top = self.memo[key]
            tokens = [top[0], self.rng.randrange(V), top[1]]
            parents = [-1, -1, 0]
            trees.append(DraftTree(tokens, parents))
        return trees

    def update(self, accepted):
        pass


def joint_counts(sequences, prompt_len: int, V: int) -> torch.Tensor:
    """float64 ``[V, V]``: how often each pair of first two generated tokens occurred."""
    counts = torch.zeros(V, V, dtype=torch.float64)
    for s in sequences:
        a, b = s[prompt_len:].tolist()
        counts[a, b] += 1
    return counts


def pooled_pvalue(counts: torch.Tensor, joint: torch.Tensor, n: int) -> float:
    """Chi-square p-value of ``counts`` against ``n`` draws from ``joint``, cells expecting < 5 pooled."""
    exp = joint.flatten() * n
    obs = counts.flatten()
    big = exp >= 5
    obs_k = torch.cat([obs[big], obs[~big].sum().view(1)])
    exp_k = torch.cat([exp[big], exp[~big].sum().view(1)])
    if exp_k[-1] == 0:
        obs_k, exp_k = obs_k[:-1], exp_k[:-1]
    return chisquare(obs_k.numpy(), exp_k.numpy()).pvalue


def flat_model():
    """The tiny Llama of these tests with vocabulary V and flattened logits: every cell of the joint gets mass."""
    model = tiny_model("llama", seed=3, vocab=V)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.6)
    return model


def _exact_joint(model, prompt, temperature, top_k, top_p):
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k is not None:
        procs.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        procs.append(TopPLogitsWarper(top_p))

    def dist(seq):
        with torch.no_grad():
            ids = torch.tensor([seq])
            scores = procs(ids, model(ids).logits[:, -1].double())
        return torch.softmax(scores, -1)[0]

    p1 = dist(prompt)
    joint = torch.zeros(V, V, dtype=torch.float64)
    for a in range(V):
        if p1[a] > 0:
            joint[a] = p1[a] * dist(prompt + [a])
    return joint


@pytest.mark.parametrize(
    "temperature,top_k,top_p,drafter",
    [(1.0, None, None, "random"), (0.7, None, None, "likely"), (1.3, 4, None, "likely"), (1.0, None, 0.8, "random")],
)
def test_first_two_tokens_match_plain_sampling(temperature, top_k, top_p, drafter):
    model = flat_model()
    prompt = [1, 4, 2, 6]
    n = 3000
    d = RandomTreeDrafter(V, budget=6, seed=1) if drafter == "random" else LikelyTreeDrafter(model, seed=2)
    out = verispec.generate(model, [prompt] * n, drafter=d, max_new_tokens=2, temperature=temperature, top_k=top_k,
                            top_p=top_p, eos_token_id=[], seed=1234, attention="mask")
    counts = torch.zeros(V, V, dtype=torch.float64)
    for s in out.sequences:
        a, b = s[len(prompt):].tolist()
        counts[a, b] += 1
    joint = _exact_joint(model, prompt, temperature, top_k, top_p)
    assert counts[joint == 0].sum() == 0, "sampled a token the warped distribution excludes"
    keep = joint > 0
    exp = joint[keep] * n
    # merge the rare cells so the chi-square approximation holds
    rare = exp < 5
    obs_k = torch.cat([counts[keep][~rare], counts[keep][rare].sum().view(1)])
    exp_k = torch.cat([exp[~rare], exp[rare].sum().view(1)])
    if exp_k[-1] == 0:
        obs_k, exp_k = obs_k[:-1], exp_k[:-1]
    res = chisquare(obs_k.numpy(), exp_k.numpy())
    assert res.pvalue > 1e-3, f"chi-square p={res.pvalue:.2e}"
    # both accept and reject paths were exercised (random trees over V = 7 still hit ~7% of the time)
    assert 0 < out.stats.acceptance_rate < 1, out.stats.acceptance_rate


def test_wrong_temperature_is_detected():
    """The goodness-of-fit check has teeth: samples at temperature 1.0 fail against 0.5."""
    model = flat_model()
    prompt = [1, 4, 2, 6]
    n = 3000
    out = verispec.generate(model, [prompt] * n, max_new_tokens=2, temperature=1.0, eos_token_id=[], seed=7,
                            attention="mask")
    counts = joint_counts(out.sequences, len(prompt), V)
    joint = _exact_joint(model, prompt, 0.5, None, None)
    assert pooled_pvalue(counts, joint, n) < 1e-6


def test_seeded_sampling_is_reproducible():
    model = tiny_model("qwen2", seed=1)
    prompts = [[3, 4, 5], [9, 8, 7, 6, 5], [1]]
    a = verispec.generate(model, prompts, drafter=RandomTreeDrafter(97, seed=1), max_new_tokens=12, temperature=1.0,
                          eos_token_id=[], seed=42)
    b = verispec.generate(model, prompts, drafter=RandomTreeDrafter(97, seed=1), max_new_tokens=12, temperature=1.0,
                          eos_token_id=[], seed=42)
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    c = verispec.generate(model, prompts, max_new_tokens=12, temperature=1.0, eos_token_id=[], seed=43)
    assert [s.tolist() for s in a.sequences] != [s.tolist() for s in c.sequences]
