import pytest
import torch

from verispec import DraftTree, pack_trees
from verispec.tree import validate_packed


def test_chain_and_depths():
    t = DraftTree.chain([5, 6, 7])
    assert t.parents.tolist() == [-1, 0, 1]
    assert t.depths().tolist() == [1, 2, 3]
    assert t.tokens.dtype == torch.int32 and len(t) == 3 and t.max_depth() == 3


def test_tree_depths_with_siblings():
    t = DraftTree([1, 2, 3, 4, 5], [-1, 0, -1, 0, 2])
    assert t.depths().tolist() == [1, 2, 1, 2, 2]


def test_empty_tree():
    t = DraftTree.empty()
    assert len(t) == 0 and t.max_depth() == 0


@pytest.mark.parametrize(
    "tokens,parents,match",
    [
        ([1, 2], [-1, 1], "parent 1 of node 1 is not -1 or an earlier node"),
        ([1, 2], [-1, 5], "parent 5 of node 1"),
        ([1, 2], [-2, 0], "parent -2 of node 0"),
        ([1, 2, 3], [-1, 0], "tokens has 3 nodes but parents has 2"),
        ([1, -4], [-1, 0], "node 1 has negative token id -4"),
    ],
)
def test_bad_trees_name_the_problem(tokens, parents, match):
    with pytest.raises(ValueError, match=match):
        DraftTree(tokens, parents)


def test_bad_dtypes_are_rejected():
    with pytest.raises(TypeError, match="integers"):
        DraftTree(torch.tensor([1.0, 2.0]), [-1, 0])
    with pytest.raises(ValueError, match="1-D"):
        DraftTree(torch.zeros(2, 2, dtype=torch.int64), [-1, 0])


def test_vocab_check_names_request_and_node():
    trees = [DraftTree.chain([1, 2]), DraftTree([3, 111], [-1, -1])]
    with pytest.raises(ValueError, match="request 1: node 1 has token id 111 outside the vocabulary of size 111"):
        pack_trees(trees, vocab_size=111)


def test_pack_trees_ragged_with_empty():
    trees = [DraftTree.chain([1, 2]), DraftTree.empty(), DraftTree([7, 8, 9], [-1, -1, 1])]
    tokens, parents, cu = pack_trees(trees)
    assert tokens.tolist() == [1, 2, 7, 8, 9]
    assert parents.tolist() == [-1, 0, -1, -1, 1]
    assert cu.tolist() == [0, 2, 2, 5]
    assert tokens.dtype == parents.dtype == cu.dtype == torch.int32
    validate_packed(tokens, parents, cu, vocab_size=10)


def test_validate_packed_rejects_bad_offsets_and_dtypes():
    tokens, parents, cu = pack_trees([DraftTree.chain([1, 2])])
    with pytest.raises(ValueError, match="cu_nodes must rise"):
        validate_packed(tokens, parents, torch.tensor([0, 3], dtype=torch.int32))
    with pytest.raises(TypeError, match="int32"):
        validate_packed(tokens.long(), parents, cu)
    with pytest.raises(ValueError, match="request 0: parent 1 of node 1"):
        validate_packed(tokens, torch.tensor([-1, 1], dtype=torch.int32), cu)


def test_pack_trees_rejects_non_trees():
    with pytest.raises(TypeError, match="request 0 is list"):
        pack_trees([[1, 2]])
    with pytest.raises(ValueError, match="empty batch"):
        pack_trees([])
