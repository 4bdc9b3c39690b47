import random

import pytest
import torch

from verispec import DraftTree, pack_trees
from verispec.ops.tree_buffers import tree_buffers, tree_buffers_reference

pytestmark = [pytest.mark.op("tree_buffers"), pytest.mark.backend("torch")]

FIELDS = ("depth", "parent", "first_child", "next_sibling", "request", "cu_rows")


def _random_tree(rng: random.Random, n: int) -> DraftTree:
    parents = [rng.randrange(-1, i) for i in range(n)]
    return DraftTree([rng.randrange(100) for _ in range(n)], parents)


def _assert_same(a, b):
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.ancestors.dtype == torch.uint32 and b.ancestors.dtype == torch.uint32
    assert torch.equal(a.ancestors.long(), b.ancestors.long())
    assert a.max_rows == b.max_rows


def test_golden_two_requests():
    # request 0: root -> a(0) -> b(1); root -> c(2) -> d(3); a -> e(4).   request 1: single chain x(0) -> y(1)
    trees = [DraftTree([10, 11, 12, 13, 14], [-1, 0, -1, 2, 0]), DraftTree.chain([20, 21])]
    _, parents, cu = pack_trees(trees)
    buf = tree_buffers(parents, cu)
    assert buf.cu_rows.tolist() == [0, 6, 9]
    assert buf.depth.tolist() == [0, 1, 2, 1, 2, 2, 0, 1, 2]
    assert buf.parent.tolist() == [-1, 0, 1, 0, 3, 1, -1, 0, 1]
    assert buf.first_child.tolist() == [1, 2, -1, 4, -1, -1, 1, 2, -1]
    assert buf.next_sibling.tolist() == [-1, 3, 5, -1, -1, -1, -1, -1, -1]
    assert buf.request.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    # bit u of row r: u is r or an ancestor of r (local rows)
    assert buf.ancestors[:, 0].long().tolist() == [0b1, 0b11, 0b111, 0b1001, 0b11001, 0b100011, 0b1, 0b11, 0b111]
    assert buf.ancestors.shape == (9, 1)
    pad = buf.padded_ancestors()
    assert pad.shape == (2, 6, 1) and pad.dtype == torch.uint32
    assert pad[1, :, 0].long().tolist() == [1, 3, 7, 0, 0, 0]
    assert buf.padded_depths(3, 8).tolist()[1] == [0, 1, 2, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("sizes", [[0], [0, 0, 3], [1, 7, 0, 31], [32], [33, 5], [99, 0, 64, 65]])
def test_vectorised_matches_reference(sizes):
    rng = random.Random(sum(sizes) + len(sizes))
    trees = [_random_tree(rng, n) for n in sizes]
    _, parents, cu = pack_trees(trees)
    _assert_same(tree_buffers(parents, cu), tree_buffers_reference(parents, cu))


def test_deep_chain_uses_many_words():
    n = 130
    _, parents, cu = pack_trees([DraftTree.chain(list(range(n)))])
    buf = tree_buffers(parents, cu)
    assert buf.ancestors.shape == (n + 1, 5)  # 131 rows -> 5 words
    last = buf.ancestors[-1].long().tolist()
    assert last == [2**32 - 1] * 4 + [0b111]
    assert buf.depth[-1] == n


def test_max_rows_capacity_without_sync():
    _, parents, cu = pack_trees([DraftTree([1, 2], [-1, 0]), DraftTree([3], [-1])])
    buf = tree_buffers(parents, cu, max_rows=40, validate=False)
    assert buf.ancestors.shape == (5, 2) and buf.max_rows == 40
    ref = tree_buffers_reference(parents, cu)
    assert torch.equal(buf.depth, ref.depth) and torch.equal(buf.ancestors[:, :1].long(), ref.ancestors.long())
    assert buf.padded_ancestors().shape == (2, 40, 2)


@pytest.mark.parametrize(
    "parents,cu,match",
    [
        ([-1, 1], [0, 2], "request 0: parent 1 of node 1 is not -1 or an earlier node"),
        ([-1, -1, 5], [0, 1, 3], "request 1: parent 5 of node 1"),
        ([-1, 0], [0, 3], "cu_nodes must rise from 0 to 2"),
    ],
)
def test_bad_trees_name_the_problem(parents, cu, match):
    with pytest.raises(ValueError, match=match):
        tree_buffers(torch.tensor(parents, dtype=torch.int32), torch.tensor(cu, dtype=torch.int32))


def test_wrong_dtype():
    with pytest.raises(TypeError, match="parents must be 1-D int32"):
        tree_buffers(torch.tensor([-1]), torch.tensor([0, 1], dtype=torch.int32))


def test_padded_too_small():
    _, parents, cu = pack_trees([DraftTree([1, 2], [-1, 0])])
    with pytest.raises(ValueError, match="smaller than max_rows"):
        tree_buffers(parents, cu).padded_ancestors(1, 2)
