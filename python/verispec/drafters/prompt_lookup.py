"""Prompt lookup: drafts from the request's own text (the tokens that followed earlier occurrences of
the context's suffix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional

from verispec.drafters.base import EMPTY, Accepted, Context
from verispec.drafters.trees import Trie, trim_to_cost
from verispec.tree import DraftTree

__all__ = ["PromptLookupDrafter"]

class _NgramIndex:
    """Positions of every n-gram (``min_n <= n <= max_n``) of one growing token list."""

    def __init__(self, tokens: list[int], min_n: int, max_n: int):
        self.tokens = tokens
        self.min_n, self.max_n = min_n, max_n
        self.table: dict[tuple[int, ...], list[int]] = {}
        self.indexed = 0  # n-grams ending before this position are in the table
        self.extend()

    def extend(self) -> None:
        toks = self.tokens
        # An n-gram ending at position e (exclusive) is indexed once the token after it exists, so
        # that a match always has a continuation.
        for e in range(max(self.indexed, 1), len(toks)):
            for n in range(self.min_n, self.max_n + 1):
                if e - n < 0:
                    break
                self.table.setdefault(tuple(toks[e - n:e]), []).append(e)
        self.indexed = max(self.indexed, len(toks))

    def continuations(self, num_tokens: int, max_matches: int, periodic: bool = False
                      ) -> list[tuple[int, list[int]]]:
        """(matched n, continuation) for the most recent matches of the longest matching suffix.

        ``periodic``: a continuation that runs into the end of the text goes on with its own tokens.
        A match ending ``p`` tokens before the end says "the text repeats with period p", so the
        continuation is ``p``-periodic, as long as asked for (the most recent match of a repeated
        pattern otherwise drafts only the ``p`` tokens before the end)."""
        toks = self.tokens
        L = len(toks)
        for n in range(min(self.max_n, L), self.min_n - 1, -1):
            ends = self.table.get(tuple(toks[L - n:]))
            if not ends:
                continue
            out, seen = [], set()
            for e in reversed(ends):
                if periodic and e + num_tokens > L:
                    period = toks[e:]
                    cont = tuple(period[i % len(period)] for i in range(num_tokens))
                else:
                    cont = tuple(toks[e:e + num_tokens])
                if cont and cont not in seen:
                    seen.add(cont)
                    out.append((n, list(cont)))
                    if len(out) >= max_matches:
                        break
            if out:
                return out
        return []


class PromptLookupDrafter:
    """Drafts from the request's own text (prompt lookup decoding, "speculative edits").

    The longest suffix of the context (``max_ngram`` down to ``min_ngram`` tokens) is looked up in the
    prompt and the tokens generated so far; the tokens that followed its most recent occurrences
    become the draft. Up to ``max_matches`` different continuations are merged into one tree, so a
    suffix that was followed by different text in different places still gets a useful guess.

    Parameters
    ----------
    num_tokens : longest continuation per match (the depth of the tree).
    max_ngram, min_ngram : suffix lengths tried, longest first.
    max_matches : distinct continuations merged into the tree.
    budget : maximum number of draft nodes.
    row_cost : optional cost model of a forward over ``T`` rows (see `trim_to_cost`); trees are cut to
        the size that maximises expected tokens per unit of cost.
    """

    vocab_size: Optional[int] = None

    def __init__(self, num_tokens: int = 8, max_ngram: int = 4, min_ngram: int = 1, max_matches: int = 2,
                 budget: Optional[int] = None, row_cost: Optional[Callable[[int], float]] = None):
        if num_tokens < 1 or min_ngram < 1 or max_ngram < min_ngram or max_matches < 1:
            raise ValueError(
                f"PromptLookupDrafter: need num_tokens >= 1, 1 <= min_ngram <= max_ngram and max_matches >= 1, "
                f"got num_tokens={num_tokens}, min_ngram={min_ngram}, max_ngram={max_ngram}, "
                f"max_matches={max_matches}"
            )
        self.num_tokens, self.max_ngram, self.min_ngram = num_tokens, max_ngram, min_ngram
        self.max_matches = max_matches
        self.budget = budget if budget is not None else num_tokens * max_matches
        self.row_cost = row_cost
        self._index: dict[int, _NgramIndex] = {}

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        self._index = {}

    def _get(self, ctx: Context) -> _NgramIndex:
        idx = self._index.get(ctx.request)
        if idx is None or idx.tokens is not ctx.tokens:
            idx = _NgramIndex(ctx.tokens, self.min_ngram, self.max_ngram)
            self._index[ctx.request] = idx
        return idx

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        trees = []
        for ctx in contexts:
            idx = self._get(ctx)
            idx.extend()
            conts = idx.continuations(self.num_tokens, self.max_matches)
            if not conts:
                trees.append(EMPTY)
            else:
                trie = Trie()
                for rank, (n, cont) in enumerate(conts):
                    # A rough acceptance estimate: longer matched suffixes predict better, deeper
                    # tokens less well, and older matches less than the most recent one.
                    first = n / (n + 1.5) / (rank + 1)
                    trie.add(cont, [first * 0.85**d for d in range(len(cont))])
                tree = trie.to_tree(self.budget, self.num_tokens)
                trees.append(trim_to_cost(tree, self.row_cost) if self.row_cost else tree)
        return trees

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            if a.finished:
                self._index.pop(a.request, None)

    def __repr__(self) -> str:
        return (f"PromptLookupDrafter(num_tokens={self.num_tokens}, max_ngram={self.max_ngram}, "
                f"min_ngram={self.min_ngram}, max_matches={self.max_matches}, budget={self.budget})")
