"""DraftTree token ids and parents: non-integers are refused (never truncated), and out-of-range ids are
reported with their exact value, however large (issue 15, item 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verispec import DraftTree


@pytest.mark.parametrize("tokens", [[1.9], [1.0], [3, 1.5], np.array([2.7]), torch.tensor([1.9])])
def test_float_tokens_are_refused_not_truncated(tokens):
    with pytest.raises(TypeError, match="DraftTree.tokens must hold integers"):
        DraftTree(tokens, [-1] * len(tokens))


def test_float_parents_are_refused():
    with pytest.raises(TypeError, match="DraftTree.parents must hold integers"):
        DraftTree([1, 2], [-1, 0.5])


@pytest.mark.parametrize("value", [2**31, 2**62, 2**63, 2**63 + 5, 2**64, -(2**63) - 1, 10**30])
def test_huge_ids_are_reported_exactly(value):
    with pytest.raises(ValueError, match=rf"DraftTree.tokens\[1\] = {value} is outside int32"):
        DraftTree([4, value], [-1, 0])


def test_uint64_ids_above_int64_are_not_wrapped():
    with pytest.raises(ValueError, match=rf"= {2**63 + 1} is outside int32"):
        DraftTree(np.array([2**63 + 1], dtype=np.uint64), [-1])
    assert DraftTree(np.array([3], dtype=np.uint64), [-1]).tokens.tolist() == [3]


def test_ordinary_inputs_still_work():
    assert DraftTree([], []).tokens.dtype == torch.int32
    assert DraftTree(np.array([5], dtype=np.int8), [-1]).tokens.tolist() == [5]
    assert DraftTree(torch.tensor([7, 8], dtype=torch.int64), torch.tensor([-1, 0])).tokens.tolist() == [7, 8]
