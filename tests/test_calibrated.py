"""CalibratedDrafter (scores become acceptance rates learned from the emitted tokens), exclusive sibling
scores in merged trees, and the default CLI drafter (own text + calibrated datastore) in `generate`."""

from __future__ import annotations

import pytest
from _generate_utils import tiny_model
from test_drafters import _paths

import verispec
from verispec import DraftTree
from verispec.drafters import (
    Accepted,
    CalibratedDrafter,
    Context,
    PredictionFirst,
    PromptLookupDrafter,
    SpeculativeEditsDrafter,
)
from verispec.drafters.trees import exclusive_siblings


class Fixed:
    """Proposes the same scored tree every step."""

    def __init__(self, tree: DraftTree):
        self.tree = tree

    def propose(self, contexts):
        return [self.tree for _ in contexts]

    def update(self, accepted):
        pass


def _conditionals(tree: DraftTree) -> list[float]:
    toks, par, s = tree.lists()
    return [x / (s[p] if p >= 0 else 1.0) for x, p in zip(s, par)]


@pytest.mark.parametrize("truth", ["right", "wrong"])
def test_scores_learn_the_hit_rate(truth):
    # Two children of the root scored 0.5 / 0.3 and a grandchild: the model always emits 7 then 8.
    tree = DraftTree([7, 9, 8], [-1, -1, 0], [0.5, 0.3, 0.45])
    d = CalibratedDrafter(Fixed(tree))
    emitted = [7, 8, 1] if truth == "right" else [1]
    for _ in range(200):
        (t,) = d.propose([Context(0, [1, 2])])
        assert _paths(t) == _paths(tree)  # same nodes, only scores (and order) change
        d.update([Accepted(0, emitted, 2 if truth == "right" else 0, False)])
    (t,) = d.propose([Context(0, [1, 2])])
    score = dict(zip(t.tokens.tolist(), t.scores.tolist()))
    if truth == "right":
        assert score[7] > 0.95 and score[8] > 0.9 and score[9] < 0.05
    else:
        assert max(score.values()) < 0.05


def test_sampled_trees_are_refused():
    import torch

    tree = DraftTree.chain([1, 2], probs=torch.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="sampled tree"):
        CalibratedDrafter(Fixed(tree)).propose([Context(0, [3])])


def test_exclusive_siblings():
    ok = DraftTree([1, 2, 3], [-1, -1, 0], [0.5, 0.4, 0.45])
    assert exclusive_siblings(ok) is ok
    merged = DraftTree([1, 2, 3, 4], [-1, -1, 0, 0], [0.8, 0.6, 0.7, 0.6])  # 0.8 + 0.6 > 1; 7/8 + 6/8 > 1
    out = exclusive_siblings(merged)
    assert _paths(out) == _paths(merged)
    toks, par, _ = out.lists()
    cond = _conditionals(out)
    sums: dict[int, float] = {}
    for c, p in zip(cond, par):
        sums[p] = sums.get(p, 0.0) + c
    assert all(v <= 1.0 + 1e-6 for v in sums.values())
    assert out.scores.tolist() == sorted(out.scores.tolist(), reverse=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_default_cli_drafter_keeps_greedy_identity(arch):
    model = tiny_model(arch)
    prompts = [[5, 6, 7, 5, 6, 7, 5, 6], [1, 2, 3, 1, 2, 3, 4], [9]]
    plain = verispec.generate(model, prompts, max_new_tokens=30, eos_token_id=[])
    for cost in (None, lambda t: 1.0 + 0.05 * (t - 1)):
        drafter = PredictionFirst(SpeculativeEditsDrafter(max_depth=8),
                                  CalibratedDrafter(PromptLookupDrafter(num_tokens=4, max_matches=3)))
        out = verispec.generate(model, prompts, drafter=drafter, max_new_tokens=30, eos_token_id=[], cost=cost)
        assert [s.tolist() for s in out.sequences] == [s.tolist() for s in plain.sequences]
        # With a prediction too: generate reuses the edits drafter inside PredictionFirst.
        out = verispec.generate(model, prompts, drafter=drafter, max_new_tokens=30, eos_token_id=[], cost=cost,
                                prediction=[plain.new_tokens[0].tolist(), None, [3, 3, 3]])
        assert [s.tolist() for s in out.sequences] == [s.tolist() for s in plain.sequences]
        assert out.accepted_prediction_tokens[0] >= 15
