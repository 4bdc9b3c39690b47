"""Calibrated scores for any drafter: node scores rewritten into acceptance estimates learned from what
the model emitted.

A drafter's scores are its own guess of how likely a node is (a datastore's continuation frequency, a
head's softmax). Merging drafters in one budget and sizing a tree against the forward's cost both read
scores as acceptance probabilities, and uncalibrated guesses are off by large factors (the datastore's
frequencies overestimate acceptance about 2x on code, far more on chat). `CalibratedDrafter` learns the
mapping instead: every node of a tree has a *conditional* score (its score over its parent's), binned;
after each step the emitted tokens (the model's own output, verified or not) say which tested nodes were
right: the children of the root and of every node on the path the output followed, down to the last
emitted token. Per bin, the hit rate (with half the drafter's own value as the prior) replaces the conditional,
and a node's score becomes the product along its path. The wrapped tree keeps its nodes and shape; only
the scores and their best-first order change.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from verispec.drafters.base import Accepted, Context
from verispec.drafters.trees import best_first
from verispec.tree import DraftTree

__all__ = ["CalibratedDrafter"]

# Upper edges of the conditional-score bins (the last bin takes everything above 0.9), kept apart for
# depth 1, 2 and deeper: a corpus's statistics predict the next token better than the third.
_EDGES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_DEPTHS = 3
_PRIOR_SCALE = 0.5  # a drafter's own scores overestimate: the datastore's frequencies about 2x on code


def _bin(conditional: float, depth: int) -> int:
    return (min(depth, _DEPTHS) - 1) * (len(_EDGES) + 1) + bisect.bisect_left(_EDGES, conditional)


class CalibratedDrafter:
    """Wraps ``drafter`` so its node scores are acceptance estimates (``calibrated = True``): what
    `verispec.cost.AdaptiveSizer` and merging with other calibrated drafters (`PredictionFirst`) need.

    Parameters
    ----------
    drafter : any deterministic drafter whose scores rank its nodes (higher = more likely).
    prior_weight : pseudo-trials of the drafter's own conditional per bin (how fast evidence overrides it).
    """

    calibrated = True

    def __init__(self, drafter: Any, prior_weight: float = 4.0):
        if not prior_weight > 0:
            raise ValueError(f"CalibratedDrafter: prior_weight must be > 0, got {prior_weight}")
        self.drafter = drafter
        self.prior_weight = float(prior_weight)
        self.vocab_size = getattr(drafter, "vocab_size", None)
        self.wants_hidden = bool(getattr(drafter, "wants_hidden", False))
        n = (len(_EDGES) + 1) * _DEPTHS
        self._hits, self._trials = [0.0] * n, [0.0] * n
        self._last: dict[int, tuple[list[int], list[int], list[int]]] = {}  # request -> tokens, parents, bins

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        self._last = {}
        if callable(getattr(self.drafter, "begin", None)):
            self.drafter.begin(prompts)

    def rate(self, conditional: float, depth: int = 1) -> float:
        """The learned acceptance of a node at ``depth`` whose drafter-given conditional score is
        ``conditional``."""
        b = _bin(conditional, depth)
        prior = _PRIOR_SCALE * min(conditional, 1.0)
        return (self._hits[b] + self.prior_weight * prior) / (self._trials[b] + self.prior_weight)

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        trees = self.drafter.propose(contexts)
        if len(trees) != len(contexts):
            raise ValueError(f"{type(self.drafter).__name__}.propose returned {len(trees)} trees for "
                             f"{len(contexts)} requests")
        out = []
        for ctx, tree in zip(contexts, trees):
            if tree.probs is not None:
                raise ValueError(f"CalibratedDrafter: {type(self.drafter).__name__} proposed a sampled tree (with "
                                 "probs); only deterministic drafts can be re-scored")
            out.append(self._rescore(ctx.request, tree))
        return out

    def _rescore(self, request: int, tree: DraftTree) -> DraftTree:
        if not len(tree):
            self._last.pop(request, None)
            return tree
        toks, pars, scores = tree.lists()
        bins, new, depth = [], [], []
        for s, p in zip(scores, pars):
            up = scores[p] if p >= 0 else 1.0
            cond = min(1.0, s / up) if up > 0 else 0.0
            depth.append(depth[p] + 1 if p >= 0 else 1)
            bins.append(_bin(cond, depth[-1]))
            new.append((new[p] if p >= 0 else 1.0) * self.rate(cond, depth[-1]))
        out = best_first(toks, pars, new)
        # The bins of the re-ordered tree's nodes, found by their token paths.
        where = {(p, t): i for i, (t, p) in enumerate(zip(toks, pars))}
        otoks, opars, _ = out.lists()
        old_of, obins = [], []
        for t, p in zip(otoks, opars):
            i = where[(old_of[p] if p >= 0 else -1, t)]
            old_of.append(i)
            obins.append(bins[i])
        self._last[request] = (otoks, opars, obins)
        return out

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            last = self._last.pop(a.request, None)
            if last is not None and a.tokens:
                self._learn(*last, a.tokens)
        self.drafter.update(accepted)

    def _learn(self, toks: list[int], pars: list[int], bins: list[int], emitted: list[int]) -> None:
        """Every child of the root and of the followed path is a trial at its depth: right when its token
        is the emitted one there."""
        children: dict[int, list[int]] = {}
        for i, p in enumerate(pars):
            children.setdefault(p, []).append(i)
        node = -1
        for t in emitted:
            nxt = None
            for c in children.get(node, ()):
                hit = toks[c] == t
                self._trials[bins[c]] += 1.0
                self._hits[bins[c]] += hit
                if hit:
                    nxt = c
            if nxt is None:
                break
            node = nxt

    def __repr__(self) -> str:
        return f"CalibratedDrafter({self.drafter!r})"

