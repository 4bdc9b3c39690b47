"""The CPU draft budget: forward cost per row count measured on this machine, and the budget it picks."""

from __future__ import annotations

import math

import pytest
from _generate_utils import tiny_model

from verispec.cli.generate import make_drafter
from verispec.cost import (
    ROWS,
    _Interpolated,
    cpu_row_cost,
    expected_tokens,
    gpu_row_cost,
    measure_row_cost,
    pick_budget,
)


def test_interpolation_between_and_past_the_measured_rows():
    cost = _Interpolated([(1, 1.0), (2, 2.0), (4, 2.0), (8, 3.0)])
    assert [cost(t) for t in (1, 2, 3, 4, 6, 8)] == [1.0, 2.0, 2.0, 2.0, 2.5, 3.0]
    assert cost(12) == pytest.approx(4.0) and cost(0) == 1.0


def test_budget_follows_the_cost_curve():
    # the Intel machine's curve (2-3 rows ~ free, a jump at 4) keeps the old budget of 2
    assert pick_budget(cpu_row_cost) == 2
    # a curve where 2-3 rows cost 2-3x but 4-8 rows ~2x (measured on an AMD EPYC with MKL) wants 7
    amd = _Interpolated([(1, 1.0), (2, 2.0), (3, 2.9), (4, 1.9), (5, 1.95), (6, 2.3), (8, 1.95), (12, 2.4), (16, 2.5)])
    assert pick_budget(amd) == 7
    # free rows (a GPU): the largest budget allowed
    assert pick_budget(gpu_row_cost, max_budget=15) == 15
    # the fit of the replayed acceptance (1.88 at 2 nodes, 2.36 at 6, 2.68 at 12) within 0.06 token
    for b, seen in ((2, 1.88), (6, 2.36), (12, 2.68)):
        assert abs(expected_tokens(b) - seen) < 0.06


def test_measured_on_a_real_model_here():
    model = tiny_model("llama")
    cost = measure_row_cost(model, rows=ROWS, repeats=2)
    values = [cost(t) for t in ROWS]
    assert values[0] == 1.0 and all(math.isfinite(v) and v > 0 for v in values)
    b = pick_budget(cost)
    assert 1 <= b <= 15
    drafter = make_drafter("prompt-lookup", None, None, None, None, "cpu", model=model)
    assert 1 <= drafter.budget <= 15 and drafter.num_tokens == min(drafter.budget, 5)
    # an explicit budget is kept, and without a model the CPU default stays 2
    assert make_drafter("prompt-lookup", None, None, 4, 3, "cpu", model=model).budget == 4
    assert make_drafter("prompt-lookup", None, None, None, None, "cpu").budget == 2


def test_a_model_without_linear_layers_is_refused():
    import torch

    with pytest.raises(ValueError, match="no linear layers"):
        measure_row_cost(torch.nn.Sequential(torch.nn.ReLU()))
