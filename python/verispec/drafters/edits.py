"""Speculative edits: the original is the draft.

When a model rewrites a file, most of its output is the file itself. `SpeculativeEditsDrafter` keeps an
*alignment pointer* into each request's prediction (the expected output: the file being edited):

* **copying** (the last tokens the model emitted are the prediction's, up to the pointer): the draft is
  the next ``max_depth`` prediction tokens from the pointer, one long chain;
* **diverged** (the model wrote something the prediction does not have at the pointer): every step, the
  longest recent suffix of the output (up to ``max_match`` tokens) is looked up in the prediction through
  the C++ suffix-array index (`verispec.datastore.PromptIndex.locate`). The first occurrence at or after
  the pointer wins: the output and the original advance together, so an inserted line is skipped over
  (nothing ahead matches until the model returns to the original text), a deleted line is jumped
  (the next matching line lies ahead), a changed line resumes after its end. A match behind the pointer
  is only a fallback (the model repeats something it already copied). When several positions fit equally
  (a repeated line) the draft is a small tree of their continuations.

Without an explicit prediction the prompt is the prediction (the code the user pasted): prompt lookup
is the special case.

Node scores are acceptance estimates (the probability that the path to the node is accepted), so
`trim_to_cost` and the adaptive sizing in `generate` can cut a chain to what a forward pays for. They
come from running counts: per request, how often the model keeps copying token after token; for the
whole drafter, how often the first token after a resync of ``m`` matched tokens is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from verispec.drafters.base import EMPTY, Accepted, Context
from verispec.drafters.trees import Trie, merge_trees, trim_to_cost
from verispec.tree import DraftTree

__all__ = ["SpeculativeEditsDrafter", "PredictionFirst", "PredictionTally"]

# Match lengths are pooled into these buckets for the resync estimate: [1], [2], [3], [4, 5], [6, 9], [10, ...).
_BUCKETS = (1, 2, 3, 4, 6, 10)


def _bucket(m: int) -> int:
    return max(i for i, lo in enumerate(_BUCKETS) if m >= lo)


@dataclass
class _Branch:
    start: int  # prediction position of the branch's first draft token
    resync: bool  # came from a lookup (not from the pointer while copying)
    match_len: int  # suffix length the lookup matched (0 while copying)


@dataclass
class _Request:
    prediction: list[int]
    explicit: bool  # an explicit prediction (else: the prompt)
    pointer: int = 0  # the prediction position the output is expected to continue with
    copying: bool = False
    index: object = None  # PromptIndex over the prediction, built at the first lookup
    branches: list[_Branch] = field(default_factory=list)  # what the last proposal drafted from
    # Decayed counts of "the model copied the next prediction token" (hits) and "it did not" (misses)
    # while copying: the per-token acceptance of a copy chain.
    hits: float = 9.0
    misses: float = 1.0


class SpeculativeEditsDrafter:
    """Drafts each request's output from its prediction (speculative edits / predicted outputs).

    Parameters
    ----------
    predictions : one expected output per request (a list of token ids, or None: the prompt is the
        prediction), in the order of the batch given to `verispec.generate`; None = the prompt for all.
        `begin` can replace them per call.
    max_depth : longest chain drafted from the pointer (tree depth).
    budget : most draft nodes per request and step (default ``max_depth + 8``: a chain plus a few
        alternatives).
    max_match : longest output suffix looked up after a divergence.
    min_match : shortest suffix worth drafting from after a divergence.
    alternatives : most positions drafted side by side when several fit equally.
    row_cost : optional cost of a forward over ``T`` rows relative to one (see `trim_to_cost`); each
        tree is cut to the prefix that maximises expected tokens per unit of cost.
    decay : weight kept by the per-request copy counts at each step (recent behaviour counts more).
    """

    vocab_size: Optional[int] = None

    def __init__(self, predictions: Optional[Sequence[Optional[Sequence[int]]]] = None, *, max_depth: int = 64,
                 budget: Optional[int] = None, max_match: int = 32, min_match: int = 1, alternatives: int = 3,
                 row_cost: Optional[Callable[[int], float]] = None, decay: float = 0.97):
        if max_depth < 1 or max_match < 1 or min_match < 1 or alternatives < 1:
            raise ValueError(f"SpeculativeEditsDrafter: max_depth, max_match, min_match and alternatives must be >= 1, "
                             f"got {max_depth}, {max_match}, {min_match}, {alternatives}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"SpeculativeEditsDrafter: decay must be in (0, 1], got {decay}")
        self.max_depth, self.max_match, self.min_match = int(max_depth), int(max_match), int(min_match)
        self.budget = int(budget) if budget is not None else self.max_depth + 8
        if self.budget < 1:
            raise ValueError(f"SpeculativeEditsDrafter: budget must be >= 1, got {budget}")
        self.alternatives = int(alternatives)
        self.row_cost = row_cost
        self.decay = float(decay)
        self.predictions = None if predictions is None else [None if p is None else list(p) for p in predictions]
        self._req: dict[int, _Request] = {}
        self.last_trees: dict[int, DraftTree] = {}  # request -> the tree of the last propose
        # First-token outcomes after a resync, by match-length bucket: [hits, misses], prior m / (m + 2).
        self._resync = [[4.0 * lo / (lo + 2), 4.0 * 2 / (lo + 2)] for lo in _BUCKETS]

    # -- protocol ------------------------------------------------------------------------------------------
    def begin(self, prompts: Sequence[Sequence[int]], predictions: Optional[Sequence[Optional[Sequence[int]]]] = None
              ) -> None:
        """Start a `generate` call: ``predictions`` (one per request, None = the prompt) replace the
        constructor's for this call and later ones."""
        if predictions is not None:
            self.predictions = [None if p is None else list(p) for p in predictions]
        preds = self.predictions
        if preds is not None and len(preds) != len(prompts):
            raise ValueError(f"SpeculativeEditsDrafter: {len(preds)} predictions for a batch of {len(prompts)} requests")
        self._req, self.last_trees = {}, {}
        for b, prompt in enumerate(prompts):
            pred = preds[b] if preds is not None else None
            if pred is None:
                self._req[b] = _Request(list(prompt), explicit=False)
            else:
                # The output is expected to start with an explicit prediction: draft it from step one.
                self._req[b] = _Request(pred, explicit=True, pointer=0, copying=True)

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        trees = []
        for ctx in contexts:
            st = self._req.get(ctx.request)
            if st is None:  # generate called without begin (a bare loop): the prompt is the prediction
                st = self._req[ctx.request] = _Request(list(ctx.tokens), explicit=False)
            tree = self._propose_one(st, ctx.tokens)
            tree = trim_to_cost(tree, self.row_cost) if self.row_cost and len(tree) else tree
            self.last_trees[ctx.request] = tree
            trees.append(tree)
        return trees

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            st = self._req.get(a.request)
            if st is None:
                continue
            self._advance(st, a.tokens)
            if a.finished:
                st.branches = []

    def __repr__(self) -> str:
        return (f"SpeculativeEditsDrafter(max_depth={self.max_depth}, budget={self.budget}, "
                f"max_match={self.max_match}, alternatives={self.alternatives})")

    # -- drafting ----------------------------------------------------------------------------------------------
    def copy_rate(self, request: int) -> float:
        """Current estimate of the probability that the model copies the next prediction token."""
        st = self._req[request]
        return st.hits / (st.hits + st.misses)

    def _propose_one(self, st: _Request, tokens: list[int]) -> DraftTree:
        pred = st.prediction
        rate = st.hits / (st.hits + st.misses)
        st.branches = []
        if st.copying and st.pointer < len(pred):
            first = rate if st.pointer > 0 or not st.explicit else 0.5 * rate  # the output may open with a preamble
            st.branches = [_Branch(st.pointer, False, 0)]
            return self._chains(pred, [(st.pointer, first)], rate)
        st.copying = False
        cands = self._lookup(st, tokens)
        if not cands:
            return EMPTY
        st.branches = [b for b, _ in cands]
        return self._chains(pred, [(b.start, s) for b, s in cands], rate)

    def _lookup(self, st: _Request, tokens: list[int]) -> list[tuple[_Branch, float]]:
        """Resync candidates (branch, first-token acceptance estimate), best first."""
        if st.index is None:
            from verispec.datastore import PromptIndex

            st.index = PromptIndex(st.prediction)
        if len(st.index) < 2:
            return []
        match_len, behind, ahead_len, ahead = st.index._core.locate(
            tokens, 0, self.max_match, st.pointer, self.alternatives, self.min_match)
        out: list[tuple[_Branch, float]] = []
        if ahead_len:
            q = self._resync_rate(ahead_len)
            shares = _shares(len(ahead))
            out += [(_Branch(e, True, ahead_len), q * s) for e, s in zip(ahead, shares)]
        if behind and match_len > ahead_len:
            # Only a fallback: the output usually moves forward through the original. Half the estimate.
            q = 0.5 * self._resync_rate(match_len)
            shares = _shares(len(behind))
            out += [(_Branch(e, True, match_len), q * s) for e, s in zip(behind, shares)]
        out.sort(key=lambda x: -x[1])
        return out[: self.alternatives]

    def _resync_rate(self, m: int) -> float:
        h, f = self._resync[_bucket(m)]
        return h / (h + f)

    def _chains(self, pred: list[int], starts: list[tuple[int, float]], rate: float) -> DraftTree:
        trie = Trie()
        for start, first in starts:
            seg = pred[start : start + self.max_depth]
            s, scores = first, []
            for _ in seg:
                scores.append(s)
                s *= rate
            trie.add(seg, scores)
        return trie.to_tree(self.budget, self.max_depth)

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _advance(self, st: _Request, new: list[int]) -> None:
        """Move the pointer past the emitted tokens ``new``; learn from how far they followed the prediction."""
        pred = st.prediction
        if not new:
            return
        drafted = st.branches
        # Which branch did the output follow? The one agreeing longest with the emitted tokens.
        best, best_n = None, -1
        for b in drafted:
            n = _agree(pred, b.start, new)
            if n > best_n:
                best, best_n = b, n
        if best is None:  # nothing drafted: the output follows the pointer only while copying
            if not st.copying:
                return
            best, best_n = _Branch(st.pointer, False, 0), _agree(pred, st.pointer, new)
        if best.resync:
            # The first token tells how good a resync of this match length is; the rest is copying.
            self._resync[_bucket(best.match_len)][0 if best_n > 0 else 1] += 1.0
        if not best.resync or best_n > 0:
            copied = best_n - 1 if best.resync else best_n
            left = best_n < len(new) and best.start + best_n < len(pred)  # the prediction's end is no miss
            st.hits = st.hits * self.decay + copied
            st.misses = st.misses * self.decay + (1.0 if left else 0.0)
        if best_n == len(new):
            st.pointer, st.copying = best.start + best_n, True
        elif best_n > 0 or st.copying:
            # Diverged at pred[start + best_n]; look ahead from there.
            st.pointer, st.copying = best.start + best_n, False
        # else: a resync that missed at once; keep the old pointer.


def _agree(pred: list[int], start: int, new: list[int]) -> int:
    """How many of ``new`` equal ``pred[start:]``, from the first."""
    n = 0
    for t in new:
        if start + n >= len(pred) or pred[start + n] != t:
            break
        n += 1
    return n


def _shares(k: int) -> list[float]:
    """How a first-token estimate splits over ``k`` equally long matches, earliest first (halving)."""
    w = [0.5**i for i in range(k)]
    s = sum(w)
    return [x / s for x in w]


class PredictionFirst:
    """Drafts from the prediction and from another drafter; the trees merge under one root with the
    prediction's nodes first where scores tie. `generate` builds it for ``prediction=`` plus a drafter."""

    def __init__(self, edits: SpeculativeEditsDrafter, other):
        self.edits, self.other = edits, other
        self.vocab_size = getattr(other, "vocab_size", None)
        self.wants_hidden = bool(getattr(other, "wants_hidden", False))  # e.g. HeadsDrafter reads the hidden state

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        self.edits.begin(prompts)
        if callable(getattr(self.other, "begin", None)):
            self.other.begin(prompts)

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        mine = self.edits.propose(contexts)
        theirs = self.other.propose(contexts)
        if len(theirs) != len(contexts):
            raise ValueError(f"{type(self.other).__name__}.propose returned {len(theirs)} trees for "
                             f"{len(contexts)} requests")
        return [a if not len(b) else b if not len(a) else merge_trees([a, b], len(a) + len(b))
                for a, b in zip(mine, theirs)]

    def update(self, accepted: Sequence[Accepted]) -> None:
        self.edits.update(accepted)
        self.other.update(accepted)

    def __repr__(self) -> str:
        return f"PredictionFirst({self.edits!r}, {self.other!r})"


class PredictionTally:
    """OpenAI's usage counts per request: draft nodes that came from the prediction and were accepted,
    and those verified but not accepted. A node of a step's final tree (merged, sized) came from the
    prediction when its token path is a path of the tree the edits drafter proposed."""

    def __init__(self, batch_size: int):
        self.accepted = [0] * batch_size
        self.rejected = [0] * batch_size

    def record(self, requests: Sequence[int], trees: Sequence[DraftTree], own: dict[int, DraftTree],
               accepted: Sequence[Accepted]) -> None:
        for r, tree, a in zip(requests, trees, accepted):
            mine = own.get(r)
            if mine is None or not len(mine) or not len(tree):
                continue
            toks, pars, _ = tree.lists()
            mtoks, mpars, _ = mine.lists()
            child = {(p, t): i for i, (t, p) in enumerate(zip(mtoks, mpars))}
            where = []  # node -> its node in the prediction tree, or None
            for t, p in zip(toks, pars):
                up = -1 if p < 0 else where[p]
                where.append(None if up is None else child.get((up, t)))
            from_pred = sum(w is not None for w in where)
            # The accepted nodes: the path of the first num_accepted emitted tokens.
            node, hits = -1, 0
            for t in a.tokens[: a.num_accepted]:
                node = next((i for i in range(len(toks)) if pars[i] == node and toks[i] == t), None)
                if node is None:
                    break
                hits += where[node] is not None
            self.accepted[r] += hits
            self.rejected[r] += from_pred - hits
