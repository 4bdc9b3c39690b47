"""Drafters: where draft trees come from.

A drafter is any object with two methods (`Drafter`):

* ``propose(contexts) -> list[DraftTree]``: one tree per live request. ``contexts[i]`` is a `Context`:
  the request's index in the batch given to `verispec.generate` (``.request``) and every token it holds
  so far, prompt then generated (``.tokens``, a list of ints whose last entry is the *root*, the last
  accepted token the tree hangs below). An empty tree means "no guess": the step decodes one token.
* ``update(accepted)``: what the step accepted, one `Accepted` per live request (``.tokens`` the newly
  emitted tokens, ``.num_accepted`` how many draft nodes were accepted, ``.finished``).

Optional: ``begin(prompts)`` is called once per `generate` call with every request's prompt (list of
ints, index = request), and ``vocab_size`` (int) is checked against the model's vocabulary.

Drafters never influence *what* is generated, only how many tokens a step emits: `generate` verifies
every draft against the model, so a wrong guess only costs compute.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable

from verispec.tree import DraftTree

__all__ = [
    "Context",
    "Accepted",
    "Drafter",
    "NoDrafter",
    "PromptLookupDrafter",
    "RetrievalDrafter",
    "merge_trees",
    "trim_to_cost",
    "cpu_row_cost",
    "gpu_row_cost",
]


@dataclass
class Context:
    """The tokens of one live request. ``tokens`` is shared with `generate` (read it, never modify it)."""

    request: int
    tokens: list[int]


@dataclass
class Accepted:
    """What one step emitted for one request."""

    request: int
    tokens: list[int]
    num_accepted: int
    finished: bool


@runtime_checkable
class Drafter(Protocol):
    """Structural type of a drafter (see the module docstring)."""

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]: ...

    def update(self, accepted: Sequence[Accepted]) -> None: ...


class NoDrafter:
    """Proposes nothing: `generate` becomes plain one-token-per-step decoding (the baseline)."""

    vocab_size: Optional[int] = None

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        pass

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        return [_EMPTY for _ in contexts]

    def update(self, accepted: Sequence[Accepted]) -> None:
        pass

    def __repr__(self) -> str:
        return "NoDrafter()"


_EMPTY = DraftTree.empty()


# -- building trees from token paths ----------------------------------------------------------------------
class _Trie:
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
            return _EMPTY
        return DraftTree(
            [self.token[v] for v in picked],
            [index[self.parent[v]] for v in picked],
            [self.score[v] for v in picked],
            validate=False,
        )


def _tree_paths(tree: DraftTree) -> list[tuple[list[int], list[float]]]:
    """Root-to-node paths of every leaf of ``tree`` with per-node scores (1.0 when unscored)."""
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    scores = tree.scores.tolist() if tree.scores is not None else [1.0] * len(tokens)
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
    trie = _Trie()
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
        return _EMPTY
    return DraftTree(tree.tokens[:best_k], tree.parents[:best_k], tree.scores[:best_k], validate=False)


def cpu_row_cost(rows: int) -> float:
    """Cost of a CPU forward over ``rows`` rows relative to one row, measured for SmolLM2-135M on a
    2-core x86 CPU (fp32, MKL): up to 3 rows cost about one; 4..16 rows 1.45..2.0 (BLAS changes kernel at 4)."""
    if rows <= 3:
        return 1.0 + 0.025 * (rows - 1)
    return 1.45 + 0.045 * (rows - 4)


def gpu_row_cost(rows: int) -> float:
    """A GPU forward is memory-bound at these sizes: extra rows are nearly free."""
    return 1.0 + 0.004 * (rows - 1)


# -- prompt lookup / speculative edits -----------------------------------------------------------------------
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

    def continuations(self, num_tokens: int, max_matches: int) -> list[tuple[int, list[int]]]:
        """(matched n, continuation) for the most recent matches of the longest matching suffix."""
        toks = self.tokens
        for n in range(min(self.max_n, len(toks)), self.min_n - 1, -1):
            ends = self.table.get(tuple(toks[len(toks) - n:]))
            if not ends:
                continue
            out, seen = [], set()
            for e in reversed(ends):
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
                trees.append(_EMPTY)
            else:
                trie = _Trie()
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


# -- retrieval ------------------------------------------------------------------------------------------------
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
            own = self._prompt.propose(active) if self._prompt is not None else [_EMPTY] * len(active)
            for c, t_ds, t_own in zip(active, from_ds, own):
                tree = merge_trees([t_own, t_ds], self.budget, self.max_depth, weights=[1.0, self.datastore_weight])
                trees[c.request] = trim_to_cost(tree, self.row_cost) if self.row_cost else tree
        self._drafted = {r for r, t in trees.items() if len(t)}
        return [trees.get(c.request, _EMPTY) for c in contexts]

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
