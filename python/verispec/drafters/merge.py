"""Several drafters in one budget: every drafter proposes for every request, the trees are merged below
the shared root (common prefixes become one node) and trimmed best-first by score.

Scores are read as acceptance estimates, so they should be calibrated across drafters: wrap each in
`CalibratedDrafter` (then the merge is ``calibrated`` too), or rescale with ``weights``. Siblings from
different drafters are scaled so their conditional acceptances sum to at most one (`exclusive_siblings`).
Sampled trees (with ``DraftTree.probs``) cannot be merged: a merged node
would no longer have been drawn from its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

from verispec.tree import DraftTree

__all__ = ["MergedDrafter"]


class MergedDrafter:
    """Union of ``drafters``' trees per request, at most ``budget`` nodes (see the module docstring).

    Parameters
    ----------
    drafters : drafters to ask (e.g. a `HeadsDrafter` and a `RetrievalDrafter`).
    budget : draft nodes per request and step, all drafters together.
    weights : factor on each drafter's scores (default 1).
    max_depth : deepest node kept.
    row_cost : optional forward-cost model: the merged tree is cut where expected tokens per cost peak.
    """

    def __init__(self, drafters: Sequence[Any], budget: int = 8, weights: Optional[Sequence[float]] = None,
                 max_depth: int = 1 << 30, row_cost: Optional[Callable[[int], float]] = None):
        if not drafters:
            raise ValueError("MergedDrafter: no drafters")
        if weights is not None and len(weights) != len(drafters):
            raise ValueError(f"MergedDrafter: {len(weights)} weights for {len(drafters)} drafters")
        if budget < 1:
            raise ValueError(f"MergedDrafter: budget must be >= 1, got {budget}")
        self.drafters = list(drafters)
        self.weights = [1.0] * len(drafters) if weights is None else [float(w) for w in weights]
        self.budget, self.max_depth, self.row_cost = int(budget), int(max_depth), row_cost
        self.wants_hidden = any(getattr(d, "wants_hidden", False) for d in drafters)
        # Learned acceptance estimates stay so through a merge (siblings are made exclusive below).
        self.calibrated = all(getattr(d, "calibrated", False) for d in drafters)
        sizes = [getattr(d, "vocab_size", None) for d in drafters]
        sizes = [int(s) for s in sizes if s is not None]
        self.vocab_size = max(sizes) if sizes else None

    def begin(self, prompts) -> None:
        for d in self.drafters:
            begin = getattr(d, "begin", None)
            if callable(begin):
                begin(prompts)

    def propose(self, contexts) -> list[DraftTree]:
        from verispec.drafters.trees import exclusive_siblings, merge_trees, trim_to_cost

        per = [d.propose(contexts) for d in self.drafters]
        out = []
        for i in range(len(contexts)):
            trees = [p[i] for p in per]
            for d, t in zip(self.drafters, trees):
                if t.probs is not None:
                    raise ValueError(f"MergedDrafter: {type(d).__name__} proposed a sampled tree (with probs); "
                                     "merge only deterministic drafters (e.g. HeadsDrafter with temperature=0)")
            tree = exclusive_siblings(merge_trees(trees, self.budget, self.max_depth, weights=self.weights))
            out.append(trim_to_cost(tree, self.row_cost) if self.row_cost else tree)
        return out

    def update(self, accepted) -> None:
        for d in self.drafters:
            d.update(accepted)

    def __repr__(self) -> str:
        return f"MergedDrafter({self.drafters!r}, budget={self.budget}, weights={self.weights})"
