"""Readable pure-Python reference of the datastore's drafting rules (the oracle for the C++ core).

Brute force over lists of documents: every occurrence is found by direct comparison, every count
by enumeration. Quadratic and slow; meant for small corpora in tests and for reading.
`require_continuation=True` gives the PromptIndex semantics (an occurrence counts only if at least
one token follows it, so a sequence's own end never matches itself).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

MARK = 2**32 - 1  # document end marker; larger than every token id


def occurrences(docs: Sequence[Sequence[int]], pattern: Sequence[int], require_continuation: bool = False
                ) -> list[tuple[int, int]]:
    """(doc, start) of every occurrence of `pattern` inside a document."""
    m = len(pattern)
    pat = list(pattern)
    out = []
    for d, doc in enumerate(docs):
        last = len(doc) - m - (1 if require_continuation else 0)
        for i in range(0, last + 1):
            if list(doc[i:i + m]) == pat:
                out.append((d, i))
    return out


def count(docs, pattern, require_continuation: bool = False) -> int:
    return len(occurrences(docs, pattern, require_continuation)) if len(pattern) else 0


def longest_match(docs, context, max_match: int = 16, require_continuation: bool = False) -> tuple[int, int]:
    best = (0, 0)
    for m in range(1, min(max_match, len(context)) + 1):
        c = count(docs, context[len(context) - m:], require_continuation)
        if c == 0:
            break
        best = (m, c)
    return best


def choose_match(docs, context, max_match=16, min_count=1, min_match=1, require_continuation=False) -> int:
    """The suffix length the tree grows from (0: none). See docs/datastore.md, "fallback"."""
    m, c = longest_match(docs, context, max_match, require_continuation)
    if m < min_match:
        return 0
    if c >= min_count:
        return m
    for shorter in range(m - 1, min_match - 1, -1):
        if count(docs, context[len(context) - shorter:], require_continuation) >= min_count:
            return shorter
    return m


def continuation_trie(docs, pattern, max_depth: int, require_continuation=False) -> dict[tuple, int]:
    """{path: count} for every continuation path (length 1..max_depth) of `pattern`."""
    counts: dict[tuple, int] = {}
    m = len(pattern)
    for d, i in occurrences(docs, pattern, require_continuation):
        doc = docs[d]
        path: tuple = ()
        for j in range(i + m, min(len(doc), i + m + max_depth)):
            path = path + (int(doc[j]),)
            counts[path] = counts.get(path, 0) + 1
    return counts


def draft(docs, context, budget=32, max_depth=12, max_match=16, min_count=1, min_match=1, min_score=0.0,
          mode="tree", rest_max_matches=5000, require_continuation=False, backoff=0, backoff_prior=2.0):
    """(tokens, parents, scores, match_len, match_count) exactly as the C++ core computes them."""
    context = [int(t) for t in context]
    if not context or budget <= 0 or max_depth <= 0:
        return [], [], [], 0, 0
    if mode == "rest":
        return _draft_rest(docs, context, budget, max_depth, max_match, min_match, rest_max_matches,
                           require_continuation)
    m = choose_match(docs, context, max_match, min_count, min_match, require_continuation)
    if m == 0:
        return [], [], [], 0, 0
    pattern = context[len(context) - m:]
    root = count(docs, pattern, require_continuation)
    trie = continuation_trie(docs, pattern, max_depth, require_continuation)

    def keep(c):
        return c > 0 and c / root >= min_score

    def children(path):
        return sorted((p[-1], c) for p, c in trie.items() if len(p) == len(path) + 1 and p[:-1] == path)

    tokens, parents, scores = [], [], []
    if mode == "chain":
        path: tuple = ()
        while len(tokens) < min(budget, max_depth):
            kids = [(t, c) for t, c in children(path) if keep(c)]
            if not kids:
                break
            t, c = max(kids, key=lambda tc: (tc[1], -tc[0]))  # most frequent, then smallest id
            tokens.append(t)
            parents.append(len(tokens) - 2)
            scores.append(c / root)
            path = path + (t,)
        return tokens, parents, scores, m, root

    # Backoff: the longest shorter suffix seen >= backoff times as often; nodes are then ranked by
    # the mixture w p(x | u) + (1 - w) p(x | u'), w = count(u) / (count(u) + backoff_prior).
    m2 = 0
    if backoff > 0:
        for shorter in range(m - 1, max(min_match, 1) - 1, -1):
            if count(docs, context[len(context) - shorter:], require_continuation) >= backoff * root:
                m2 = shorter
                break
    if m2:
        root2 = count(docs, context[len(context) - m2:], require_continuation)
        trie2 = continuation_trie(docs, context[len(context) - m2:], max_depth, require_continuation)
        w0 = root / (root + backoff_prior)
        w1 = 1.0 - w0

        def key(path):
            return w0 * (trie.get(path, 0) / root) + w1 * (trie2.get(path, 0) / root2)

        def kids(path):  # every continuation of u is one of u' (u' is a suffix of u)
            return sorted(p[-1] for p in trie2 if len(p) == len(path) + 1 and p[:-1] == path)

        def ok(path):
            return key(path) >= min_score
    else:

        def key(path):
            return float(trie[path])

        def kids(path):
            return [t for t, _ in children(path)]

        def ok(path):
            return keep(trie[path])

    # Best-first: heap of (-key, parent output index, token, path).
    heap = [(-key((t,)), -1, t, (t,)) for t in kids(()) if ok((t,))]
    heapq.heapify(heap)
    while heap and len(tokens) < budget:
        negk, parent, t, path = heapq.heappop(heap)
        me = len(tokens)
        tokens.append(t)
        parents.append(parent)
        scores.append(-negk if m2 else -negk / root)
        if len(path) < max_depth:
            for u in kids(path):
                if ok(path + (u,)):
                    heapq.heappush(heap, (-key(path + (u,)), me, u, path + (u,)))
    return tokens, parents, scores, m, root


def suffix_order_key(docs, d: int, i: int) -> tuple:
    """Sort key of the suffix at (doc d, position i) in the datastore's concatenated text."""
    text: list[int] = []
    for dd in range(d, len(docs)):
        text.extend(int(x) for x in (docs[dd][i:] if dd == d else docs[dd]))
        text.append(MARK)
    return tuple(text)


def _draft_rest(docs, context, budget, max_depth, max_match, min_match, cap, require_continuation):
    span = 0
    for s in range(min(max_match, len(context)), max(min_match, 1) - 1, -1):
        if count(docs, context[len(context) - s:], require_continuation):
            span = s
            break
    if span == 0:
        return [], [], [], 0, 0
    pattern = context[len(context) - span:]
    occ = occurrences(docs, pattern, require_continuation)
    total = len(occ)
    # One segment: matches are read in suffix-array order.
    occ.sort(key=lambda di: suffix_order_key(docs, *di))
    occ = occ[:cap]
    conts = [[int(t) for t in docs[d][i + span:i + span + max_depth]] for d, i in occ]
    # Trie with counts; node ids in order of first appearance (the core's tie-break).
    ids: dict[tuple, int] = {}
    cnt: dict[tuple, int] = {}
    for c in conts:
        for k in range(1, len(c) + 1):
            p = tuple(c[:k])
            if p not in ids:
                ids[p] = len(ids)
            cnt[p] = cnt.get(p, 0) + 1
    order = sorted(ids, key=lambda p: (-cnt[p], len(p), ids[p]))[:budget]
    out_index = {p: j for j, p in enumerate(order)}
    tokens = [p[-1] for p in order]
    parents = [-1 if len(p) == 1 else out_index[p[:-1]] for p in order]
    scores = [cnt[p] / len(conts) for p in order]
    return tokens, parents, scores, span, total
