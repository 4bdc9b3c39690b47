"""Random draft trees and logits that favour them, shared by the verify test files."""

from __future__ import annotations

import math
import random

import torch

from verispec import DraftTree


def random_trees(rng: random.Random, B: int, V: int, max_nodes: int, token_range: int | None = None) -> list[DraftTree]:
    """B random trees of 0..max_nodes nodes; tokens drawn from ``range(token_range or V)`` (a small range
    makes duplicate siblings frequent)."""
    trees = []
    for _ in range(B):
        n = rng.randrange(0, max_nodes + 1)
        parents = [rng.randrange(-1, i) for i in range(n)]
        toks = [rng.randrange(token_range or V) for _ in range(n)]
        trees.append(DraftTree(toks, parents))
    return trees


def max_draw_boost(V: int, scale: float) -> float:
    """About the largest of V normal draws of std ``scale``: a boost that competes with the row's maximum."""
    return scale * math.sqrt(2 * math.log(V)) + 1.0


def peaked_logits(trees: list[DraftTree], V: int, gen: torch.Generator, scale: float, boost: float) -> torch.Tensor:
    """float32 ``[Σ(n+1), V]`` normal logits with each drafted token boosted in its parent's row (row 0 of a
    request is the root, row j + 1 node j), so drafts are accepted and walks go deep instead of every
    request rejecting at the root."""
    R = sum(len(t) + 1 for t in trees)
    logits = torch.randn(R, V, generator=gen) * scale
    row0 = 0
    for t in trees:
        for tok, par in zip(t.tokens.tolist(), t.parents.tolist()):
            logits[row0 + par + 1, tok] += boost
        row0 += len(t) + 1
    return logits
