"""Speculative edits: the original is the draft.

When a model rewrites a file, most of its output is the file itself. `SpeculativeEditsDrafter` keeps an
*alignment pointer* into each request's prediction (the expected output: the file being edited) and
drafts from three sources, merged into one tree:

* **copy** (the last tokens the model emitted are the prediction's, up to the pointer): the next
  ``max_depth`` prediction tokens from the pointer, one long chain;
* **resync** (the model wrote something the prediction does not have at the pointer): the longest recent
  suffix of the output (up to ``max_match`` tokens) is looked up in the prediction through the C++
  suffix-array index (`verispec.datastore.PromptIndex.locate`). The first occurrence at or after the
  pointer wins: the output and the original advance together, so an inserted line is skipped over
  (nothing ahead matches until the model returns to the original text), a deleted line is jumped (the
  next matching line lies ahead), a changed line resumes after its end. A match behind the pointer is
  only a fallback (the model repeats something it already copied). When several positions fit equally
  (a repeated line) their continuations become a small tree;
* **context** (prompt lookup): the longest suffix of the output (up to ``max_ngram`` tokens) is looked up
  in everything the request holds, prompt and output, and the tokens that followed its most recent
  occurrences are drafted. A model that rewrites rather than copies repeats its own new lines (a renamed
  variable, an added type hint, a logging call), which the original does not have.

Without an explicit prediction the prompt is the prediction (the code the user pasted).

Node scores are acceptance estimates (the probability that the path to the node is accepted), learned
from what the model emitted: the emitted tokens are the model's own output whether or not a draft was
verified, so every branch is scored against them every step. The first token of a lookup is right with a
probability counted per source and matched length (for the whole drafter); each further token of a
chain with a per-request, per-source continuation rate (recent steps count more). The scores are
calibrated in this sense (``calibrated = True``), so `verispec.cost.AdaptiveSizer` (``generate(...,
cost=...)``) sizes every step's tree from them directly, and `trim_to_cost` can cut a chain to what a
forward pays for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from verispec.drafters.base import EMPTY, Accepted, Context
from verispec.drafters.prompt_lookup import _NgramIndex
from verispec.drafters.trees import Trie, exclusive_siblings, merge_trees, trim_to_cost
from verispec.tree import DraftTree

__all__ = ["SpeculativeEditsDrafter", "PredictionFirst", "PredictionTally"]

COPY, RESYNC, CONTEXT = 0, 1, 2

# Match lengths are pooled into these buckets for the first-token estimates: [1], [2], [3], [4, 5], [6, 9], [10, ...).
_BUCKETS = (1, 2, 3, 4, 6, 10)


# Prior of a lookup's first-token acceptance after matching m tokens: m / (m + k), worth w trials. Pessimistic:
# every branch is scored against the emitted tokens, verified or not, so evidence arrives at once, while
# an optimistic prior makes the first steps of every request pay for rows that are rejected.
_FIRST_PRIOR = (4.0, 8.0)


def _bucket(m: int) -> int:
    return max(i for i, lo in enumerate(_BUCKETS) if m >= lo)


@dataclass
class _Branch:
    source: int  # COPY, RESYNC or CONTEXT
    start: int  # prediction position of the first draft token (COPY, RESYNC); -1 for CONTEXT
    match_len: int  # suffix length the lookup matched (0 for COPY)
    draft: list[int]  # the drafted tokens


@dataclass
class _Request:
    prediction: list[int]
    explicit: bool  # an explicit prediction (else: the prompt)
    pointer: int = 0  # the prediction position the output is expected to continue with
    copying: bool = False
    index: object = None  # PromptIndex over the prediction, built at the first lookup
    ngrams: Optional[_NgramIndex] = None  # over the request's tokens (prompt + output)
    branches: list[_Branch] = field(default_factory=list)  # what the last proposal drafted from
    # Per source, decayed counts of "the next token of a chain was right" (hits) and "it was not" (misses)
    # after the chain's first token: the per-token acceptance of a chain.
    cont: list[list[float]] = field(default_factory=lambda: [[9.0, 1.0], [9.0, 1.0], [6.0, 2.0]])


class SpeculativeEditsDrafter:
    """Drafts each request's output from its prediction and its own text (speculative edits /
    predicted outputs; see the module docstring).

    Parameters
    ----------
    predictions : one expected output per request (a list of token ids, or None: the prompt is the
        prediction), in the order of the batch given to `verispec.generate`; None = the prompt for all.
        `begin` can replace them per call.
    max_depth : longest chain drafted (tree depth).
    budget : most draft nodes per request and step (default ``2 * max_depth + 8``: a chain, a context
        chain and a few alternatives; `generate(..., cost="auto")` cuts each tree to what pays).
    max_match : longest output suffix looked up in the prediction after a divergence.
    min_match : shortest suffix worth drafting from after a divergence.
    alternatives : most positions drafted side by side when several fit equally.
    max_ngram : longest output suffix looked up in the request's own text (0 = no context source).
    row_cost : optional cost of a forward over ``T`` rows relative to one (see `trim_to_cost`); each
        tree is cut to the prefix that maximises expected tokens per unit of cost.
    decay : weight kept by the per-request continuation counts at each step (recent behaviour counts more).
    """

    vocab_size: Optional[int] = None
    calibrated = True  # scores are acceptance estimates learned from the model's output

    def __init__(self, predictions: Optional[Sequence[Optional[Sequence[int]]]] = None, *, max_depth: int = 64,
                 budget: Optional[int] = None, max_match: int = 32, min_match: int = 1, alternatives: int = 3,
                 max_ngram: int = 8, row_cost: Optional[Callable[[int], float]] = None, decay: float = 0.97):
        if max_depth < 1 or max_match < 1 or min_match < 1 or alternatives < 1 or max_ngram < 0:
            raise ValueError(f"SpeculativeEditsDrafter: max_depth, max_match, min_match and alternatives must be >= 1 "
                             f"and max_ngram >= 0, got {max_depth}, {max_match}, {min_match}, {alternatives}, {max_ngram}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"SpeculativeEditsDrafter: decay must be in (0, 1], got {decay}")
        self.max_depth, self.max_match, self.min_match = int(max_depth), int(max_match), int(min_match)
        self.budget = int(budget) if budget is not None else 2 * self.max_depth + 8
        if self.budget < 1:
            raise ValueError(f"SpeculativeEditsDrafter: budget must be >= 1, got {budget}")
        self.alternatives, self.max_ngram = int(alternatives), int(max_ngram)
        self.row_cost = row_cost
        self.decay = float(decay)
        self.predictions = None if predictions is None else [None if p is None else list(p) for p in predictions]
        self._req: dict[int, _Request] = {}
        # request -> the prediction's part of the last proposal (its copy and resync branches): what
        # `PredictionTally` counts as accepted / rejected prediction tokens.
        self.last_trees: dict[int, DraftTree] = {}
        # First-token outcomes of lookups by source and match-length bucket: [hits, misses] (prior: _FIRST_PRIOR).
        w, k = _FIRST_PRIOR
        self._first = {src: [[w * lo / (lo + k), w * k / (lo + k)] for lo in _BUCKETS] for src in (RESYNC, CONTEXT)}

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
            tree, own = self._propose_one(st, ctx.tokens)
            tree = trim_to_cost(tree, self.row_cost) if self.row_cost and len(tree) else tree
            self.last_trees[ctx.request] = own
            trees.append(tree)
        return trees

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            st = self._req.get(a.request)
            if st is None:
                continue
            self._advance(st, a.tokens)
            if a.finished:
                st.branches, st.ngrams = [], None

    def __repr__(self) -> str:
        return (f"SpeculativeEditsDrafter(max_depth={self.max_depth}, budget={self.budget}, "
                f"max_match={self.max_match}, alternatives={self.alternatives}, max_ngram={self.max_ngram})")

    # -- drafting ----------------------------------------------------------------------------------------------
    def copy_rate(self, request: int) -> float:
        """Current estimate of the probability that the model copies the next prediction token."""
        return self._rate(self._req[request], COPY)

    def _rate(self, st: _Request, source: int) -> float:
        h, m = st.cont[source]
        return h / (h + m)

    def _first_rate(self, source: int, m: int) -> float:
        h, f = self._first[source][_bucket(m)]
        return h / (h + f)

    def _propose_one(self, st: _Request, tokens: list[int]) -> tuple[DraftTree, DraftTree]:
        """(the tree of every branch, the tree of the prediction's branches alone)."""
        pred = st.prediction
        st.branches = []
        scored: list[tuple[_Branch, float]] = []
        if st.copying and st.pointer < len(pred):
            rate = self._rate(st, COPY)
            first = rate if st.pointer > 0 or not st.explicit else 0.5 * rate  # the output may open with a preamble
            scored.append((_Branch(COPY, st.pointer, 0, pred[st.pointer : st.pointer + self.max_depth]), first))
        else:
            st.copying = False
            scored += self._resync(st, tokens)
        scored += self._context(st, tokens)
        if not scored:
            return EMPTY, EMPTY
        st.branches = [b for b, _ in scored]
        every, own = Trie(), Trie()
        for b, first in scored:
            rate = self._rate(st, b.source)
            s, scores = first, []
            for _ in b.draft:
                scores.append(s)
                s *= rate
            every.add(b.draft, scores)
            if b.source != CONTEXT:
                own.add(b.draft, scores)
        return every.to_tree(self.budget, self.max_depth), own.to_tree(self.budget, self.max_depth)

    def _resync(self, st: _Request, tokens: list[int]) -> list[tuple[_Branch, float]]:
        """Candidates from the prediction (branch, first-token acceptance estimate), best first."""
        if st.index is None:
            from verispec.datastore import PromptIndex

            st.index = PromptIndex(st.prediction)
        if len(st.index) < 2:
            return []
        match_len, behind, ahead_len, ahead = st.index._core.locate(
            tokens, 0, self.max_match, st.pointer, self.alternatives, self.min_match)
        pred, out = st.prediction, []
        if ahead_len:
            q = self._first_rate(RESYNC, ahead_len)
            out += [(_Branch(RESYNC, e, ahead_len, pred[e : e + self.max_depth]), q * s)
                    for e, s in zip(ahead, _shares(len(ahead)))]
        if behind and match_len > ahead_len:
            # Only a fallback: the output usually moves forward through the original. Half the estimate.
            q = 0.5 * self._first_rate(RESYNC, match_len)
            out += [(_Branch(RESYNC, e, match_len, pred[e : e + self.max_depth]), q * s)
                    for e, s in zip(behind, _shares(len(behind)))]
        out.sort(key=lambda x: -x[1])
        return out[: self.alternatives]

    def _context(self, st: _Request, tokens: list[int]) -> list[tuple[_Branch, float]]:
        """Candidates from the request's own text: what followed the most recent occurrences of the
        longest matching output suffix (up to two distinct continuations)."""
        if not self.max_ngram:
            return []
        if st.ngrams is None or st.ngrams.tokens is not tokens:
            st.ngrams = _NgramIndex(tokens, 1, self.max_ngram)
        st.ngrams.extend()
        conts = st.ngrams.continuations(self.max_depth, 2, periodic=True)
        return [(_Branch(CONTEXT, -1, n, cont), self._first_rate(CONTEXT, n) * (0.5 if rank else 1.0))
                for rank, (n, cont) in enumerate(conts)]

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _advance(self, st: _Request, new: list[int]) -> None:
        """Learn from how far each drafted branch agreed with the emitted tokens ``new`` (the model's own
        output, verified or not), then move the pointer past them."""
        if not new:
            return
        pred = st.prediction
        best, best_n = None, -1  # the prediction branch the output followed longest
        for b in st.branches:
            n = _agree(b.draft, new)
            self._learn(st, b, n, len(new))
            if b.source != CONTEXT and n > best_n:
                best, best_n = b, n
        if best is None:  # nothing drafted from the prediction: the output follows the pointer only while copying
            if not st.copying:
                return
            best, best_n = _Branch(COPY, st.pointer, 0, []), _agree(pred[st.pointer :], new)
        if best_n == len(new):
            st.pointer, st.copying = best.start + best_n, True
        elif best_n > 0 or st.copying:
            # Diverged at pred[start + best_n]; look ahead from there.
            st.pointer, st.copying = best.start + best_n, False
        # else: a resync that missed at once; keep the old pointer.

    def _learn(self, st: _Request, b: _Branch, n: int, emitted: int) -> None:
        """Count one branch's outcome: ``n`` of its tokens agreed with the ``emitted`` tokens."""
        if b.source != COPY:  # the first token of a lookup, by source and match length
            self._first[b.source][_bucket(b.match_len)][0 if n > 0 else 1] += 1.0
            if n == 0:
                return
        cont = st.cont[b.source]
        hits = n - 1 if b.source != COPY else n  # a copy chain's first token is a continuation too
        # A miss only where the branch had a token and the model emitted a different one.
        miss = 1.0 if n < emitted and n < len(b.draft) else 0.0
        cont[0] = cont[0] * self.decay + hits
        cont[1] = cont[1] * self.decay + miss


def _agree(draft: list[int], new: list[int]) -> int:
    """How many of ``new`` equal ``draft``, from the first."""
    n = 0
    for a, b in zip(draft, new):
        if a != b:
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
        self.calibrated = bool(getattr(other, "calibrated", False))

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
        return [a if not len(b) else b if not len(a) else exclusive_siblings(merge_trees([a, b], len(a) + len(b)))
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
