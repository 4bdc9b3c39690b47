"""The prompt as the prediction of the output, with an alignment pointer and resync (speculative edits).

A small drafter for `EditsProposer` where `verispec.drafters.edits.SpeculativeEditsDrafter` is not
installed (it is the full version: explicit predictions, trees of equally good resync positions,
learned resync estimates). Per request:

* **copying**: the last emitted tokens continued the prompt at the pointer, so the draft is the next
  ``max_depth`` prompt tokens from the pointer;
* **diverged**: the longest suffix of the output (``max_match`` down to ``min_match`` tokens) is looked
  up in the prompt, first at or after the pointer (the rewrite moves forward through the original, so an
  inserted line is passed over and a deleted one jumped), with a byte search over the prompt's int32
  ids (C speed); failing that, anywhere, through the prompt's C++ suffix index (`PromptIndex`).

Scores are ``rate**j`` for the ``j``-th token, ``rate`` a decayed per-request count of how often the
model kept copying, so `ChainPolicy` cuts chains where the request's copying usually stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["PromptEditsDrafter"]


@dataclass
class _State:
    pred: list  # the prediction (the prompt)
    raw: bytes  # pred as int32 bytes, for the forward search
    index: Any = None  # PromptIndex over pred, built at the first fallback lookup
    pointer: int = 0  # prediction position the output is expected to continue with
    copying: bool = False
    start: Optional[int] = None  # prediction position the last draft came from (None: no draft)
    hits: float = 4.0
    misses: float = 1.0


class PromptEditsDrafter:
    """Drafts each request's output from its prompt (see the module docstring); verispec drafter protocol."""

    def __init__(self, max_depth: int = 16, max_match: int = 32, min_match: int = 2, decay: float = 0.95):
        if max_depth < 1 or max_match < min_match or min_match < 1:
            raise ValueError(f"PromptEditsDrafter: need max_depth >= 1 and 1 <= min_match <= max_match, got "
                             f"{max_depth}, {min_match}, {max_match}")
        self.max_depth, self.max_match, self.min_match, self.decay = max_depth, max_match, min_match, decay
        self._req: dict[int, _State] = {}

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        self._req = {}

    def forget(self, requests: Sequence[int]) -> None:
        for r in requests:
            self._req.pop(r, None)

    def propose(self, contexts: Sequence[Any]) -> list:
        from verispec.drafters import EMPTY
        from verispec.tree import DraftTree

        trees = []
        for ctx in contexts:
            st = self._req.get(ctx.request)
            if st is None:  # first sight: everything before the first emitted token is the prompt
                pred = list(ctx.tokens[:-1])
                st = self._req[ctx.request] = _State(pred, np.asarray(pred, dtype=np.int32).tobytes())
            if not st.copying:
                at = self._resync(st, ctx.tokens)
                if at is not None:
                    st.pointer, st.copying = at, True
            start = st.pointer if st.copying else None
            st.start = start
            if start is None:
                trees.append(self._fallback(st, ctx.tokens))
                continue
            seg = st.pred[start:start + self.max_depth]
            if not seg:
                trees.append(EMPTY)
                continue
            rate = st.hits / (st.hits + st.misses)
            trees.append(DraftTree(seg, list(range(-1, len(seg) - 1)), [rate ** (j + 1) for j in range(len(seg))],
                                   validate=False))
        return trees

    def update(self, accepted: Sequence[Any]) -> None:
        for a in accepted:
            st = self._req.get(a.request)
            if st is None:
                continue
            if a.finished:
                self._req.pop(a.request, None)
                continue
            if st.start is None or not a.tokens:
                st.copying = False
                continue
            n = 0  # emitted tokens that continued the prediction from where the draft started
            while n < len(a.tokens) and st.start + n < len(st.pred) and st.pred[st.start + n] == a.tokens[n]:
                n += 1
            st.hits = st.hits * self.decay + max(0, n - 1)
            st.misses = st.misses * self.decay + (1.0 if n < len(a.tokens) else 0.0)
            st.pointer = st.start + n
            st.copying = n == len(a.tokens)

    def _resync(self, st: _State, tokens: Sequence[int]) -> Optional[int]:
        """Prediction position after the longest output suffix found at or after the pointer."""
        raw, lo = st.raw, 4 * st.pointer
        for m in range(min(self.max_match, len(tokens) - 1), self.min_match - 1, -1):
            pat = np.asarray(tokens[len(tokens) - m:], dtype=np.int32).tobytes()
            at = raw.find(pat, lo)
            while at >= 0 and at % 4:  # a match must start on a token boundary
                at = raw.find(pat, at + 1)
            if at >= 0:
                return at // 4 + m
        return None

    def _fallback(self, st: _State, tokens: Sequence[int]) -> Any:
        """Nothing at or after the pointer: the most frequent continuation anywhere in the prompt."""
        from verispec.datastore import PromptIndex

        if st.index is None:
            st.index = PromptIndex(st.pred)
        if len(st.index) < 2:
            from verispec.drafters import EMPTY

            return EMPTY
        return st.index.draft_context(list(tokens[-self.max_match:]), budget=self.max_depth, max_depth=self.max_depth,
                                      max_match=self.max_match, min_match=self.min_match, mode="chain")
