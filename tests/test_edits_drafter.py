"""SpeculativeEditsDrafter on hand-made token sequences: where it re-synchronises after inserted, deleted,
changed and repeated lines, and the C++ lookup it uses (PromptIndex locate) against a brute-force one.

Lines are short token lists ending in the newline token NL. A simulated greedy "model" emits a fixed
target output: each step it accepts the longest tree path agreeing with the target and emits the next
target token, exactly what `generate` does with a model whose greedy output is the target.
"""

from __future__ import annotations

import random

import pytest

from verispec.datastore import PromptIndex
from verispec.drafters.base import Accepted, Context
from verispec.drafters.edits import SpeculativeEditsDrafter

NL = 0
PROMPT = [900, 901, 902]


def line(*toks: int) -> list[int]:
    return [*toks, NL]


A, B, C, D, E = line(10, 11, 12), line(20, 21, 22, 23), line(30, 31), line(40, 41, 42), line(50, 51, 52, 53)


def paths(tree) -> list[list[int]]:
    """Every root-to-leaf token path of a DraftTree."""
    toks, par = tree.tokens.tolist(), tree.parents.tolist()
    leaves = set(range(len(toks))) - set(par)
    out = []
    for v in sorted(leaves):
        p = []
        while v >= 0:
            p.append(toks[v])
            v = par[v]
        out.append(p[::-1])
    return out


def accept(tree, target: list[int]) -> int:
    """Longest path of the tree agreeing with target[0:] (greedy verification)."""
    toks, par = tree.tokens.tolist(), tree.parents.tolist()
    node, k = -1, 0
    while k < len(target):
        nxt = [i for i, (t, p) in enumerate(zip(toks, par)) if p == node and t == target[k]]
        if not nxt:
            break
        node, k = nxt[0], k + 1
    return k


def simulate(drafter, target: list[int], prompt=PROMPT, prediction=None):
    """Run the drafter against a model whose output is ``target``; returns [(tree, k accepted)] per step."""
    drafter.begin([prompt], None if prediction is None else [prediction])
    seq, steps = list(prompt), []
    while len(seq) - len(prompt) < len(target):
        tree = drafter.propose([Context(0, seq)])[0]
        done = len(seq) - len(prompt)
        k = accept(tree, target[done:])
        new = target[done : done + k + 1]
        seq.extend(new)
        finished = len(seq) - len(prompt) >= len(target)
        drafter.update([Accepted(0, new, k, finished)])
        steps.append((tree, k))
    assert seq[len(prompt):] == target
    return steps


def next_tree(drafter, target_prefix: list[int], prediction: list[int]):
    """The tree proposed right after the model emitted ``target_prefix`` (run step by step to get there)."""
    simulate(drafter, target_prefix, prediction=prediction)
    return drafter.propose([Context(0, PROMPT + target_prefix)])[0]


def test_exact_copy_is_one_chain_per_step():
    pred = A + B + C + D + E
    steps = simulate(SpeculativeEditsDrafter(max_ngram=0, max_depth=8), pred, prediction=pred)
    assert [k for _, k in steps][:-1] == [8] * (len(steps) - 1)  # every chain accepted whole
    assert len(steps) == -(-len(pred) // 9)
    assert all(len(paths(t)) == 1 for t, _ in steps)


def test_inserted_line_resyncs_on_the_next_original_line():
    pred = A + B + C + D
    target = A + B + E + C + D  # E inserted
    d = SpeculativeEditsDrafter(max_ngram=0, max_depth=64)
    tree = next_tree(d, A + B + E, pred)
    assert paths(tree)[0] == C + D  # the pointer waited at C while the model wrote E
    steps = simulate(SpeculativeEditsDrafter(max_ngram=0), target, prediction=pred)
    assert sum(k for _, k in steps) >= len(A + B + C + D) - 2


def test_deleted_line_jumps_ahead():
    pred = A + B + C + D
    d = SpeculativeEditsDrafter(max_ngram=0)
    # The model skips B: the chain from the pointer (B C D) fails at B's first token, the model emits C's.
    tree = next_tree(d, A + C[:1], pred)
    assert paths(tree)[0] == C[1:] + D


def test_changed_line_resumes_after_it():
    pred = A + B + C + D
    changed = line(20, 21, 99, 98)  # B with its end rewritten
    d = SpeculativeEditsDrafter(max_ngram=0)
    tree = next_tree(d, A + changed, pred)
    assert paths(tree)[0] == C + D


def test_repeated_line_monotone_rule_picks_the_occurrence_ahead():
    pred = A + B + A + C  # A twice
    d = SpeculativeEditsDrafter(max_ngram=0)
    # Output A B then a changed line, then A: the second A (ahead of the pointer) wins, C follows.
    tree = next_tree(d, A + B[:2] + [77, NL] + A, pred)
    assert paths(tree)[0] == C


def test_equal_positions_give_a_tree_of_alternatives():
    code = B + A + C + A + D
    d = SpeculativeEditsDrafter(max_ngram=0)
    d.begin([[900] + code])  # the prompt is the prediction; no pointer yet
    # The output so far ends with a line that occurs twice, both times after a newline: two equal matches.
    tree = d.propose([Context(0, [900] + code + [77, NL] + A)])[0]
    ps = paths(tree)
    assert sorted(p[:2] for p in ps) == sorted([C[:2], D[:2]])  # two branches: what follows each A
    # The earlier occurrence scores higher (best-first order: node 0 belongs to it).
    assert tree.tokens[0].item() == C[0]
    assert tree.scores[0].item() > tree.scores[[t == D[0] for t in tree.tokens.tolist()].index(True)].item()


def test_match_behind_the_pointer_is_a_fallback():
    pred = A + B + C
    d = SpeculativeEditsDrafter(max_ngram=0)
    # The model copied A B C, then repeats A: nothing ahead (the prediction is used up), A is behind.
    tree = next_tree(d, A + B + C + A[:2], pred)
    assert paths(tree)[0][:2] == [A[2], NL]
    assert paths(tree)[0][2:4] == B[:2]


def test_prompt_is_the_prediction_without_one():
    code = A + B + C + D
    prompt = [900] + code + [901]
    d = SpeculativeEditsDrafter(max_ngram=0)
    d.begin([prompt])
    seq = prompt + A[:2]
    tree = d.propose([Context(0, seq)])[0]
    assert paths(tree)[0][:6] == (A[2:] + B)[:6]


def test_scores_are_acceptance_estimates():
    pred = A + B + C + D + E
    d = SpeculativeEditsDrafter(max_ngram=0, max_depth=10)
    steps = simulate(d, pred, prediction=pred)
    for tree, _ in steps:
        s = tree.scores.tolist()
        assert all(0.0 < x <= 1.0 for x in s)
        assert all(a >= b for a, b in zip(s, s[1:]))  # along a chain: path probabilities fall
    assert d.copy_rate(0) > 0.9  # a faithful copy raises the per-token estimate


def test_budget_and_depth_are_respected():
    pred = (A + B) * 20
    d = SpeculativeEditsDrafter(max_ngram=0, max_depth=5, budget=7, alternatives=4)
    for tree, _ in simulate(d, [77, NL] + A + B + A, prediction=pred):
        assert len(tree) <= 7
        par = tree.parents.tolist()
        depth = []
        for p in par:
            depth.append(1 if p < 0 else depth[p] + 1)
        assert max(depth, default=0) <= 5


def test_unrelated_prediction_drafts_little():
    pred = list(range(100, 160))
    target = list(range(300, 340))
    steps = simulate(SpeculativeEditsDrafter(max_ngram=0), target, prediction=pred)
    assert sum(k for _, k in steps) == 0
    assert all(len(t) == 0 for t, _ in steps[1:])  # only the opening guess from the pointer


def test_context_source_drafts_the_models_own_new_lines():
    # The model adds a line X the original does not have, then writes it again: the second time, the
    # context source (prompt + output) drafts the rest of X; the prediction cannot.
    X = line(60, 61, 62, 63, 64, 65)
    pred = A + B + C + D
    target = A + X + B + X + C + D
    tree = next_tree(SpeculativeEditsDrafter(), A + X + B + X[:2], pred)
    assert X[2:] in [p[: len(X) - 2] for p in paths(tree)]
    tree = next_tree(SpeculativeEditsDrafter(max_ngram=0), A + X + B + X[:2], pred)
    assert X[2:] not in [p[: len(X) - 2] for p in paths(tree)]
    with_ctx = sum(k for _, k in simulate(SpeculativeEditsDrafter(), target, prediction=pred))
    without = sum(k for _, k in simulate(SpeculativeEditsDrafter(max_ngram=0), target, prediction=pred))
    assert with_ctx > without


def test_estimates_fall_when_every_draft_fails():
    # Adversarial: the output never continues anything drafted. The learned estimates must fall far below
    # their priors, so a cost-aware sizer stops drafting (a forward over two rows costs more than one).
    rng = random.Random(0)
    pred = [rng.randrange(100, 140) for _ in range(400)]
    target = [rng.randrange(200, 240) for _ in range(300)]
    d = SpeculativeEditsDrafter()
    steps = simulate(d, target, prediction=pred)
    late = [t.scores.max().item() if len(t) else 0.0 for t, _ in steps[-50:]]
    assert max(late) < 0.35


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_depth"):
        SpeculativeEditsDrafter(max_depth=0)
    with pytest.raises(ValueError, match="2 predictions for a batch of 1"):
        SpeculativeEditsDrafter([[1], [2]]).begin([[5]])


# -- the C++ lookup ------------------------------------------------------------------------------------------
def brute_locate(text, ctx, max_match, pointer, max_pos, min_match):
    n = len(text)
    ctx = ctx[-max_match:]

    def occ(m):
        pat = ctx[len(ctx) - m:]
        return [s + m for s in range(n - m) if text[s : s + m] == pat]

    m_all = max((m for m in range(1, len(ctx) + 1) if occ(m)), default=0)
    if m_all < min_match:
        return 0, [], 0, []
    behind = sorted((e for e in occ(m_all) if e < pointer), reverse=True)[:max_pos]
    for m in range(m_all, min_match - 1, -1):
        ahead = sorted(e for e in occ(m) if e >= pointer)
        if ahead:
            return m_all, behind, m, ahead[:max_pos]
    return m_all, behind, 0, []


@pytest.mark.parametrize("n,alphabet,min_sorted", [(30, 2, 256), (300, 3, 16), (2000, 6, 256), (700, 40, 64)])
def test_locate_matches_brute_force(n, alphabet, min_sorted):
    rng = random.Random(n * alphabet)
    text = [rng.randrange(alphabet) for _ in range(n)]
    idx = PromptIndex(text, min_sorted=min_sorted)
    for _ in range(60):
        if rng.random() < 0.5:
            s = rng.randrange(n)
            ctx = text[max(0, s - 12) : s + 1] + [rng.randrange(alphabet) for _ in range(rng.randrange(3))]
        else:
            ctx = [rng.randrange(alphabet + 1) for _ in range(rng.randrange(1, 15))]
        max_match, pointer = rng.randrange(1, 16), rng.randrange(n + 1)
        max_pos, min_match = rng.randrange(1, 5), rng.randrange(1, 4)
        got = idx._core.locate(ctx, 0, max_match, pointer, max_pos, min_match)
        want = brute_locate(text, ctx, max_match, pointer, max_pos, min_match)
        assert tuple(got) == want, (ctx, max_match, pointer, max_pos, min_match)
