"""Retrieval drafts (REST-style): continuations of the context's suffix found in a `verispec.Datastore`,
merged with prompt-lookup drafts from the request's own text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

from verispec.drafters.base import EMPTY, Accepted, Context
from verispec.drafters.prompt_lookup import PromptLookupDrafter
from verispec.drafters.trees import merge_trees, trim_to_cost
from verispec.tree import DraftTree

__all__ = ["RetrievalDrafter"]

class RetrievalDrafter:
    """Drafts from a `verispec.Datastore` (REST-style retrieval), merged with drafts from the request's
    own text (prompt lookup), which catch identifiers and phrases the corpus has never seen.

    Parameters
    ----------
    datastore : a `verispec.Datastore`, or a path to open one.
    budget : maximum number of draft nodes per request and step (verification rows minus one).
    max_depth : maximum depth of a draft node.
    prompt_lookup : also draft from the request's own text and merge the two trees.
    datastore_weight : factor applied to the datastore's scores (empirical continuation frequencies,
        which overestimate acceptance by about 2x on code) before merging with prompt-lookup scores.
    row_cost : optional cost model of a forward over ``T`` rows relative to one row (`cpu_row_cost`,
        `gpu_row_cost`, or your own); each tree is cut to the best-first prefix that maximises
        expected tokens per unit of cost, so a step never pays for drafts it is unlikely to use.
    backoff : after ``backoff`` steps in a row whose drafts were all rejected, a request stops drafting
        for 1, 2, 4 ... (at most 16) steps, then tries again; any accepted draft resets it. On text no
        draft predicts, decoding then costs what plain decoding costs. 0 = never back off.
    draft_kwargs : passed to ``datastore.draft_batch`` (``max_match``, ``min_count``, ``mode`` ...).
    """

    def __init__(self, datastore: Any, budget: int = 8, max_depth: int = 6, prompt_lookup: bool = True,
                 datastore_weight: float = 0.5, row_cost: Optional[Callable[[int], float]] = None,
                 backoff: int = 6, **draft_kwargs: Any):
        if isinstance(datastore, (str, bytes)) or hasattr(datastore, "__fspath__"):
            from verispec.datastore import Datastore

            datastore = Datastore.open(datastore)
        if budget < 1 or max_depth < 1:
            raise ValueError(f"RetrievalDrafter: budget and max_depth must be >= 1, got {budget}, {max_depth}")
        self.datastore = datastore
        self.budget, self.max_depth = int(budget), int(max_depth)
        self.datastore_weight = float(datastore_weight)
        self.row_cost = row_cost
        self.draft_kwargs = draft_kwargs
        self._prompt = PromptLookupDrafter(num_tokens=self.max_depth, budget=self.budget) if prompt_lookup else None
        self.vocab_size = getattr(datastore, "vocab_size", None)
        self.backoff = int(backoff)
        self._misses: dict[int, int] = {}  # request -> steps in a row with every draft rejected
        self._skip: dict[int, int] = {}  # request -> steps left without drafting
        self._drafted: set[int] = set()

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        self._misses, self._skip, self._drafted = {}, {}, set()
        if self._prompt is not None:
            self._prompt.begin(prompts)

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        if not contexts:
            return []
        active = [c for c in contexts if self._skip.get(c.request, 0) == 0]
        for c in contexts:
            if self._skip.get(c.request, 0) > 0:
                self._skip[c.request] -= 1
        trees: dict[int, DraftTree] = {}
        if active:
            from_ds = self.datastore.draft_batch(
                [c.tokens for c in active], budget=self.budget, max_depth=self.max_depth, **self.draft_kwargs
            )
            own = self._prompt.propose(active) if self._prompt is not None else [EMPTY] * len(active)
            for c, t_ds, t_own in zip(active, from_ds, own):
                tree = merge_trees([t_own, t_ds], self.budget, self.max_depth, weights=[1.0, self.datastore_weight])
                trees[c.request] = trim_to_cost(tree, self.row_cost) if self.row_cost else tree
        self._drafted = {r for r, t in trees.items() if len(t)}
        return [trees.get(c.request, EMPTY) for c in contexts]

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            if a.finished:
                self._misses.pop(a.request, None)
                self._skip.pop(a.request, None)
            elif a.num_accepted > 0:
                self._misses[a.request] = 0
            elif self.backoff and a.request in self._drafted:
                m = self._misses.get(a.request, 0) + 1
                self._misses[a.request] = m
                if m >= self.backoff:
                    self._skip[a.request] = min(16, 2 ** (m - self.backoff))
        if self._prompt is not None:
            self._prompt.update(accepted)

    def __repr__(self) -> str:
        cost = f", row_cost={getattr(self.row_cost, '__name__', self.row_cost)}" if self.row_cost else ""
        return f"RetrievalDrafter({self.datastore!r}, budget={self.budget}, max_depth={self.max_depth}{cost})"
