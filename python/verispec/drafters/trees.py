"""Building draft trees from scored token paths: merging several drafters' trees under one root and
cutting a tree to the size a forward's cost pays for."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Callable, Optional

from verispec.drafters.base import EMPTY
from verispec.tree import DraftTree

__all__ = ["Trie", "merge_trees", "trim_to_cost", "exclusive_siblings", "best_first"]

class Trie:
    """Token trie that turns scored paths into a `DraftTree` (best-first, at most ``budget`` nodes)."""

    def __init__(self) -> None:
        self.children: list[dict[int, int]] = [{}]  # node 0 is the root
        self.token: list[int] = [-1]
        self.parent: list[int] = [-1]
        self.score: list[float] = [1.0]

    def add(self, path: Sequence[int], scores: Sequence[float]) -> None:
        u = 0
        for tok, s in zip(path, scores):
            v = self.children[u].get(tok)
            if v is None:
                v = len(self.token)
                self.children[u][tok] = v
                self.token.append(tok)
                self.parent.append(u)
                self.score.append(s)
                self.children.append({})
            else:
                self.score[v] = max(self.score[v], s)
            u = v

    def to_tree(self, budget: int, max_depth: int) -> DraftTree:
        # Best-first expansion keeps the tree closed under parents (a child is only reachable
        # through its parent) and picks the highest-scoring frontier node each time.
        picked: list[int] = []
        index = {0: -1}
        depth = {0: 0}
        heap = [(-self.score[c], c) for c in self.children[0].values()]
        heapq.heapify(heap)
        while heap and len(picked) < budget:
            _, v = heapq.heappop(heap)
            p = self.parent[v]
            d = depth[p] + 1
            if d > max_depth:
                continue
            index[v] = len(picked)
            depth[v] = d
            picked.append(v)
            for c in self.children[v].values():
                heapq.heappush(heap, (-self.score[c], c))
        if not picked:
            return EMPTY
        return DraftTree(
            [self.token[v] for v in picked],
            [index[self.parent[v]] for v in picked],
            [self.score[v] for v in picked],
            validate=False,
        )


def _tree_paths(tree: DraftTree) -> list[tuple[list[int], list[float]]]:
    """Root-to-node paths of every leaf of ``tree`` with per-node scores (1.0 when unscored)."""
    tokens, parents, scores = tree.lists()
    has_child = [False] * len(tokens)
    for p in parents:
        if p >= 0:
            has_child[p] = True
    out = []
    for leaf in range(len(tokens)):
        if has_child[leaf]:
            continue
        path, u = [], leaf
        while u >= 0:
            path.append(u)
            u = parents[u]
        path.reverse()
        out.append(([tokens[i] for i in path], [scores[i] for i in path]))
    return out


def merge_trees(trees: Sequence[DraftTree], budget: int, max_depth: int = 1 << 30,
                weights: Optional[Sequence[float]] = None) -> DraftTree:
    """Union of several trees below the same root (shared prefixes merged), trimmed best-first to
    ``budget`` nodes by score (times the tree's weight)."""
    trie = Trie()
    for i, tree in enumerate(trees):
        w = 1.0 if weights is None else float(weights[i])
        for path, scores in _tree_paths(tree):
            trie.add(path, [s * w for s in scores])
    return trie.to_tree(budget, max_depth)


def trim_to_cost(tree: DraftTree, row_cost: Callable[[int], float]) -> DraftTree:
    """Keep the best-first prefix of ``tree`` that maximises expected tokens per unit of forward cost.

    Node scores are read as acceptance probabilities of the paths to the nodes, so a step verifying
    the first ``k`` nodes is expected to emit ``1 + sum(scores[:k])`` tokens, at cost
    ``row_cost(k + 1)`` (relative to a one-row forward). ``tree`` must be in best-first order (parents
    before children, scores non-increasing), as `merge_trees` and the datastore produce it.
    """
    n = len(tree)
    if n == 0 or tree.scores is None:
        return tree
    scores = tree.scores.tolist()
    best_k, best, gain = 0, 1.0 / row_cost(1), 1.0
    for k in range(1, n + 1):
        gain += scores[k - 1]
        r = gain / row_cost(k + 1)
        if r > best:
            best_k, best = k, r
    if best_k == n:
        return tree
    if best_k == 0:
        return EMPTY
    return DraftTree(tree.tokens[:best_k], tree.parents[:best_k], tree.scores[:best_k], validate=False)


def exclusive_siblings(tree: DraftTree) -> DraftTree:
    """Scores that respect that siblings exclude each other: the model emits one token after a node, so
    the conditional acceptances of a node's children sum to at most 1. Merged trees break this (two
    drafters each 60 % sure of a different next token); such a group is scaled down to sum 1 and the
    path scores recomputed. The tree is returned in best-first order."""
    if not len(tree) or tree.scores is None:
        return tree
    toks, pars, scores = tree.lists()
    cond = [min(1.0, s / scores[p]) if p >= 0 and scores[p] > 0 else (min(1.0, s) if p < 0 else 0.0)
            for s, p in zip(scores, pars)]
    total: dict[int, float] = {}
    for c, p in zip(cond, pars):
        total[p] = total.get(p, 0.0) + c
    if all(t <= 1.0 for t in total.values()):
        return tree
    new: list[float] = []
    for c, p in zip(cond, pars):
        c = c / max(1.0, total[p])
        new.append((new[p] if p >= 0 else 1.0) * c)
    return best_first(toks, pars, new)


def best_first(tokens: Sequence[int], parents: Sequence[int], scores: Sequence[float]) -> DraftTree:
    """The tree with these nodes and new path scores, reordered best-first (parents before children)."""
    trie = Trie()
    for path, ss in _tree_paths(DraftTree(tokens, parents, scores, validate=False)):
        trie.add(path, ss)
    return trie.to_tree(len(tokens), 1 << 30)
