"""Drafting with multi-token heads (Medusa): the heads read the hidden state of the last accepted
token, which `verispec.generate` hands over from the verification forward itself (``Context.hidden``;
no extra pass of the base model), and head ``d`` proposes the tokens at depth ``d`` of the tree.

Tree shape (``tree``):

* ``"joint"``: best-first by joint probability: a path of ranks ``(r_1 .. r_d)`` scores
  ``prod_i p_i(r_i-th token)``; the ``budget`` best paths form the tree (always closed under parents).
* ``"accuracy"``: Medusa's sparse tree: the same best-first search over rank paths, scored by the
  measured probability that head ``i``'s target is its ``r``-th token (``HeadsConfig.accuracy``, from
  ``verispec heads eval`` / training). The shape is fixed; each step fills in the tokens. Its scores
  are calibrated acceptance estimates, which `trim_to_cost` and merging with other drafters rely on.

Sampling (``temperature > 0``): each node's children are drawn without replacement from head ``d``'s
distribution ``softmax(logits / temperature)`` and every node carries the distribution it was drawn
from (``DraftTree.probs``: earlier siblings removed and renormalised), so `generate` verifies with
exact rejection sampling. With ``temperature = 0`` the tree holds the top-ranked tokens and carries no
probabilities (deterministic drafts are exact on their own, at any generation temperature).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Sequence
from typing import Callable, Optional

import torch

from verispec.tree import DraftTree

__all__ = ["HeadsDrafter", "best_first_ranks"]


def best_first_ranks(rank_scores: Sequence[Sequence[float]], budget: int) -> list[tuple[tuple[int, ...], float]]:
    """The ``budget`` best rank paths, best first: ``rank_scores[d][r]`` scores the ``r``-th choice at
    depth ``d + 1``; a path scores the product of its entries. Scores must not increase with ``r``, so
    a parent (a prefix) always comes before its children and a sibling before the next one."""
    depth = len(rank_scores)
    if depth == 0 or budget < 1 or not rank_scores[0]:
        return []
    out: list[tuple[tuple[int, ...], float]] = []
    heap = [(-rank_scores[0][0], (0,))]
    while heap and len(out) < budget:
        neg, path = heapq.heappop(heap)
        s = -neg
        out.append((path, s))
        d, r = len(path), path[-1]
        if d < depth and rank_scores[d]:
            heapq.heappush(heap, (-s * rank_scores[d][0], path + (0,)))
        row = rank_scores[d - 1]
        if r + 1 < len(row) and row[r] > 0:
            heapq.heappush(heap, (-s / row[r] * row[r + 1], path[:-1] + (r + 1,)))
    return out


class HeadsDrafter:
    """Draft trees from `verispec.heads.Heads` (see the module docstring).

    Parameters
    ----------
    heads : trained heads for the model `generate` runs (`verispec.heads.load`).
    budget : draft nodes per request and step (default: ``2 * num_heads``).
    tree : ``"accuracy"`` (default when the heads carry measured accuracies) or ``"joint"``.
    top_k : candidate tokens per head.
    temperature : 0 = deterministic top-ranked trees; > 0 = sampled trees with draft probabilities.
    row_cost : optional forward-cost model (see `verispec.drafters.trim_to_cost`): trees are cut to the
        prefix that maximises expected tokens per unit of cost.
    full_vocab : project through the whole LM head instead of the heads' vocabulary subset (when they
        have one): more accurate on rare tokens, costlier.
    seed : seed of the drafter's own sampling generator (never affects the output distribution).
    """

    wants_hidden = True

    def __init__(self, heads, budget: Optional[int] = None, tree: Optional[str] = None, top_k: int = 8,
                 temperature: float = 0.0, row_cost: Optional[Callable[[int], float]] = None,
                 full_vocab: bool = False, seed: int = 0):
        acc = heads.config.accuracy
        tree = tree or ("accuracy" if acc else "joint")
        if tree not in ("joint", "accuracy"):
            raise ValueError(f"HeadsDrafter: tree must be 'joint' or 'accuracy', got {tree!r}")
        if tree == "accuracy" and not acc:
            raise ValueError("HeadsDrafter: tree='accuracy' needs heads with measured accuracies (train or eval them)")
        if heads.adapter is not None:
            raise ValueError("HeadsDrafter: these are early-exit weights; use EarlyExitDrafter")
        if not temperature >= 0:
            raise ValueError(f"HeadsDrafter: temperature must be >= 0, got {temperature}")
        self.heads = heads.eval()
        if full_vocab and not heads.use_full_vocab:
            self.heads = copy.copy(heads)  # shares every weight; only this drafter's view projects fully
            self.heads.use_full_vocab = True
        self.budget = int(budget) if budget is not None else 2 * heads.num_heads
        if self.budget < 1 or top_k < 1:
            raise ValueError(f"HeadsDrafter: budget and top_k must be >= 1, got {self.budget}, {top_k}")
        self.tree, self.top_k = tree, min(int(top_k), heads.out_size)
        self.temperature = float(temperature)
        self.row_cost = row_cost
        self.vocab_size = heads.config.vocab_size
        self._seed = int(seed)
        self._gen: Optional[torch.Generator] = None
        self._static: Optional[list[tuple[tuple[int, ...], float]]] = None
        if tree == "accuracy":
            # P(target is exactly the r-th token) from the cumulative top-r hit rates.
            exact = [[max(0.0, row[r] - (row[r - 1] if r else 0.0)) for r in range(min(self.top_k, len(row)))]
                     for row in acc]
            exact = [sorted(e, reverse=True) for e in exact]  # ties and noise: keep it non-increasing
            self._static = best_first_ranks(exact, self.budget)

    def begin(self, prompts) -> None:
        pass

    def update(self, accepted) -> None:
        pass

    @torch.no_grad()
    def propose(self, contexts) -> list[DraftTree]:
        empty = DraftTree.empty()
        have = [i for i, c in enumerate(contexts) if getattr(c, "hidden", None) is not None]
        trees = [empty] * len(contexts)
        if not have:
            return trees
        h = torch.stack([contexts[i].hidden for i in have]).to(self.heads_device, self.heads_dtype)
        logits = self.heads(h).float()  # [n, K, V']
        if self.temperature > 0:
            logits = logits / self.temperature
        probs = torch.softmax(logits, dim=-1)
        top_p, top_c = probs.topk(self.top_k, dim=-1)  # [n, K, top_k]
        top_ids = self.heads.token_ids(top_c)
        top_p_l, top_ids_l = top_p.tolist(), top_ids.tolist()
        for j, i in enumerate(have):
            paths = self._static if self._static is not None else best_first_ranks(top_p_l[j], self.budget)
            if self.temperature > 0:
                tree = self._sampled(paths, probs[j])
            else:
                tree = _tree_from_paths(paths, top_ids_l[j])
            if self.row_cost is not None:
                from verispec.drafters.trees import trim_to_cost

                tree = trim_to_cost(tree, self.row_cost)
            trees[i] = tree
        return trees

    @property
    def heads_device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def heads_dtype(self) -> torch.dtype:
        return next(self.heads.parameters()).dtype

    def _sampled(self, paths, probs: torch.Tensor) -> DraftTree:
        """Same shape as the deterministic tree; each node's children drawn without replacement from the
        head's distribution, each row the distribution its token was drawn from."""
        if self._gen is None or self._gen.device != probs.device:
            self._gen = torch.Generator(device=probs.device).manual_seed(self._seed)
        V = self.vocab_size
        index = {(): -1}
        tokens, parents, scores, rows = [], [], [], []
        left: dict[tuple[int, ...], torch.Tensor] = {}  # parent path -> mass not yet drawn among its children
        for path, s in paths:
            parent = path[:-1]
            d = len(path) - 1
            q = left.get(parent)
            if q is None:
                q = probs[d].double()
            if float(q.sum()) <= 0:
                break  # nothing left to draw (tiny vocabulary): the tree ends here
            q = q / q.sum()
            c = int(torch.multinomial(q, 1, generator=self._gen))
            row = torch.zeros(V, dtype=torch.float32, device=probs.device)
            row[self.heads.token_ids(torch.arange(q.numel(), device=q.device))] = q.float()
            index[path] = len(tokens)
            tokens.append(int(self.heads.token_ids(torch.tensor(c, device=q.device))))
            parents.append(index[parent])
            scores.append(s)
            rows.append(row)
            nxt = q.clone()
            nxt[c] = 0.0
            left[parent] = nxt
        if not tokens:
            return DraftTree.empty()
        return DraftTree(tokens, parents, scores, probs=torch.stack(rows))

    def __repr__(self) -> str:
        return (f"HeadsDrafter({self.heads.num_heads} {self.heads.config.arch} heads, budget={self.budget}, "
                f"tree={self.tree!r}, temperature={self.temperature})")


def _tree_from_paths(paths, top_ids: list[list[int]]) -> DraftTree:
    """Rank paths -> a DraftTree whose node at depth ``d`` holds head ``d``'s token of that rank."""
    if not paths:
        return DraftTree.empty()
    index = {(): -1}
    tokens, parents, scores = [], [], []
    for path, s in paths:
        index[path] = len(tokens)
        tokens.append(top_ids[len(path) - 1][path[-1]])
        parents.append(index[path[:-1]])
        scores.append(s)
    return DraftTree(tokens, parents, scores, validate=False)
