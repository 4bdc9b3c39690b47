"""verispec drafts inside vLLM: proposers for ``speculative_config={"method": "custom_class", ...}``.

vLLM (>= 0.32) builds a ``custom_class`` proposer with its ``VllmConfig``, calls ``load_model(model)``
once, then after every step ``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)``:

* ``sampled_token_ids[i]``: the tokens row ``i`` of the batch emitted this step (accepted drafts plus
  one sampled token; empty while the request is still prefilling);
* ``token_ids_cpu[i, :num_tokens_no_spec[i]]``: that request's prompt and output so far, sampled tokens
  included;

and expects one chain of draft token ids per row, which vLLM verifies with its own rejection sampler
(so output stays exactly the model's). Two proposers:

* `RetrievalProposer`: drafts from a `verispec.Datastore` merged with drafts from the request's own
  tokens (`verispec.RetrievalDrafter`); the datastore is queried for the whole batch in one call that
  releases the GIL in C++.
* `EditsProposer`: the request's prompt is the prediction of its output (speculative edits / fast
  apply): long chains while the model copies, a resync through the prompt's suffix index after it edits.

Both turn verispec's draft trees into chains: the most likely path of the tree, cut per request to the
length its recent acceptance pays for (`ChainPolicy`), at most ``num_speculative_tokens``.

Settings come from ``additional_config={"verispec": {...}}`` (``--additional-config`` on ``vllm serve``)
or from ``VERISPEC_<NAME>`` environment variables (``VERISPEC_DATASTORE=/path/corpus.vsds``); the config
wins. Unknown names, a missing datastore or a datastore built with another tokenizer fail at start-up.
See docs/vllm.md. This module never imports vLLM: it only reads attributes of the config it is given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["RetrievalProposer", "EditsProposer", "ChainPolicy", "VerispecProposer", "best_chain", "read_options"]

log = logging.getLogger(__name__)

# Every setting a proposer understands: name -> (type, default). Defaults that depend on
# num_speculative_tokens are None here and filled in by the proposer.
_OPTIONS: dict[str, tuple[type, Any]] = {
    "datastore": (str, None),  # RetrievalProposer: path of a verispec datastore (.vsds)
    "budget": (int, None),  # nodes of the tree a drafter grows before the chain is picked (default 2k)
    "min_accept": (float, 0.3),  # ChainPolicy: keep a draft token while its acceptance estimate is >= this
    "prompt_lookup": (bool, True),  # RetrievalProposer: merge drafts from the request's own tokens
    "datastore_weight": (float, 0.5),  # RetrievalProposer: weight of datastore scores in the merge
    "check_tokenizer": (bool, True),  # RetrievalProposer: refuse a datastore of another tokenizer
}


def _parse(name: str, raw: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"verispec option {name!r} from {where} must be true or false, got {raw!r}")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"verispec option {name!r} from {where} must be {kind.__name__}, got {raw!r}") from None


def read_options(additional_config: Any = None, environ: Optional[dict] = None) -> dict[str, Any]:
    """verispec settings: ``additional_config["verispec"]`` over ``VERISPEC_<NAME>`` variables over defaults.

    Raises ValueError naming the setting for unknown names and values of the wrong type.
    """
    environ = os.environ if environ is None else environ
    given = {}
    if additional_config:
        section = additional_config.get("verispec") if isinstance(additional_config, dict) else None
        if section is not None and not isinstance(section, dict):
            raise ValueError(f"additional_config['verispec'] must be a dict of verispec options, got {section!r}")
        given = dict(section or {})
    unknown = sorted(set(given) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown verispec option(s) {unknown} in additional_config['verispec']; "
                         f"known: {sorted(_OPTIONS)}")
    out = {}
    for name, (kind, default) in _OPTIONS.items():
        env = f"VERISPEC_{name.upper()}"
        if name in given and given[name] is not None:
            out[name] = _parse(name, given[name], kind, "additional_config['verispec']")
        elif environ.get(env):
            out[name] = _parse(name, environ[env], kind, f"${env}")
        else:
            out[name] = default
    if not 0.0 <= out["min_accept"] <= 1.0:
        raise ValueError(f"verispec option 'min_accept' must be in [0, 1], got {out['min_accept']}")
    if out["budget"] is not None and out["budget"] < 1:
        raise ValueError(f"verispec option 'budget' must be >= 1, got {out['budget']}")
    return out


# -- trees to chains ------------------------------------------------------------------------------------------
def best_chain(tree: Any) -> tuple[list[int], list[float]]:
    """The most likely root-to-leaf path of a `DraftTree`: from the root, always the child with the
    highest score (node scores estimate the probability that the path to the node is accepted).
    Returns ``(tokens, scores)`` along the path; an unscored tree counts every node as 1."""
    n = len(tree)
    if n == 0:
        return [], []
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    scores = tree.scores.tolist() if tree.scores is not None else [1.0] * n
    best_child: dict[int, int] = {}  # parent (-1 = root) -> its highest-scoring child
    for v, p in enumerate(parents):
        c = best_child.get(p)
        if c is None or scores[v] > scores[c]:
            best_child[p] = v
    out_t, out_s = [], []
    v = best_child.get(-1)
    while v is not None:
        out_t.append(tokens[v])
        out_s.append(scores[v])
        v = best_child.get(v)
    return out_t, out_s


class ChainPolicy:
    """How long a chain each request gets, from how much of its recent drafts vLLM accepted.

    Per request, a decayed count of accepted draft tokens (``hits``) and of rejections (``misses``, one
    per step whose chain was cut short by the model) gives a per-token acceptance rate ``p``, starting at
    the prior ``prior_hits / (prior_hits + prior_misses)``. The ``j``-th token of a chain is accepted with
    about ``p**j``, and with at most how far the drafter's own score fell along the path (``score_j /
    score_1``: a branch point in the corpus, an old match). A chain keeps its tokens while the smaller of
    the two is at least ``min_accept``:
    a request whose drafts keep being rejected drafts one token or none, one that copies gets long chains.
    While a request drafts nothing its counts decay towards the prior, so it tries again later.
    """

    def __init__(self, min_accept: float = 0.3, prior_hits: float = 1.2, prior_misses: float = 0.8,
                 decay: float = 0.9):
        self.min_accept, self.decay = float(min_accept), float(decay)
        self.prior_hits, self.prior_misses = float(prior_hits), float(prior_misses)

    def rate(self, hits: float, misses: float) -> float:
        return (hits + self.prior_hits) / (hits + misses + self.prior_hits + self.prior_misses)

    def length(self, scores: Sequence[float], hits: float, misses: float, limit: int) -> int:
        """Tokens of a chain with drafter scores ``scores`` worth verifying (at most ``limit``)."""
        if not scores or limit <= 0:
            return 0
        p = self.rate(hits, misses)
        first = scores[0] if scores[0] > 0 else 1.0
        est, n = 1.0, 0
        for s in scores[:limit]:
            est *= p
            if min(est, s / first) < self.min_accept:
                break
            n += 1
        return n

    def observe(self, hits: float, misses: float, drafted: int, accepted: int) -> tuple[float, float]:
        """Counts after a step that verified ``drafted`` tokens and accepted ``accepted`` of them."""
        hits, misses = hits * self.decay, misses * self.decay
        if drafted:
            hits += accepted
            misses += 1.0 if accepted < drafted else 0.0
        return hits, misses


# -- vLLM's batch rows to verispec requests ----------------------------------------------------------------------
@dataclass
class _Request:
    rid: int  # id given to the drafter (never reused)
    tokens: list  # prompt + output so far; the drafter's Context.tokens (extended in place)
    prompt_len: int
    head: np.ndarray  # first tokens, to recognise the request when vLLM moves it to another row
    drafted: int = 0  # chain length proposed at the last step
    hits: float = 0.0
    misses: float = 0.0
    idle: int = 0  # calls since the request was last in the batch


_HEAD = 16


def _same(st: _Request, row: np.ndarray, n: int, new: Sequence[int]) -> bool:
    """Is batch row ``row`` (``n`` tokens, the last ``len(new)`` just sampled) request ``st``?"""
    m = len(st.tokens)
    if m + len(new) != n or m == 0:
        return False
    h = len(st.head)
    return bool(np.array_equal(row[:h], st.head)) and int(row[m - 1]) == st.tokens[-1]


class VerispecProposer:
    """vLLM ``custom_class`` proposer around a verispec drafter (see the module docstring).

    Subclasses implement ``make_drafter(options, vllm_config)`` returning an object with verispec's
    drafter protocol (``propose(contexts) -> trees``, ``update(accepted)``). The constructor takes
    vLLM's ``VllmConfig`` and raises at start-up for bad settings.
    """

    #: calls a request may be absent from the batch (preempted) before its drafter state is dropped
    keep_idle = 64

    def __init__(self, vllm_config: Any):
        spec = getattr(vllm_config, "speculative_config", None)
        k = getattr(spec, "num_speculative_tokens", None)
        if not k or k < 1:
            raise ValueError(f"{type(self).__name__}: speculative_config.num_speculative_tokens must be >= 1, got {k}")
        self.k = int(k)
        model_config = getattr(vllm_config, "model_config", None)
        self.max_model_len = int(getattr(model_config, "max_model_len", 0) or 1 << 62)
        self.vocab_size = int(model_config.get_vocab_size()) if model_config is not None else None
        self.options = read_options(getattr(vllm_config, "additional_config", None))
        self.policy = ChainPolicy(min_accept=self.options["min_accept"])
        self.drafter = self.make_drafter(self.options, vllm_config)
        self._rows: dict[int, _Request] = {}  # batch row -> request seen there at the last call
        self._idle: list[_Request] = []  # requests absent from the last batch
        self._next_rid = 0
        self.stats = {"steps": 0, "drafted": 0, "accepted": 0}

    def make_drafter(self, options: dict, vllm_config: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """vLLM hands over the target model here; verispec's drafters do not need it."""

    # -- the step ----------------------------------------------------------------------------------------
    def propose(self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: Any, token_ids_cpu: Any,
                slot_mappings: Any = None, **_: Any) -> list[list[int]]:
        """One chain of draft token ids per batch row (empty: no draft)."""
        from verispec.drafters import Accepted, Context

        num_tokens = np.asarray(num_tokens_no_spec)
        rows = len(sampled_token_ids)
        previous, self._rows = self._rows, {}
        claimed: set[int] = set()
        accepted: list[Any] = []
        live: list[tuple[int, _Request]] = []
        for i in range(rows):
            new = list(sampled_token_ids[i])
            n = int(num_tokens[i])
            row = token_ids_cpu[i]
            st = previous.get(i)
            if st is None or id(st) in claimed or not _same(st, row, n, new):
                st = self._find(previous, claimed, row, n, new)
            if st is None:
                if not new:
                    continue  # still prefilling: nothing to draft from yet
                st = _Request(self._next_rid, row[:n].tolist(), n - len(new), np.array(row[:min(n, _HEAD)]))
                self._next_rid += 1
            else:
                if new:
                    # What vLLM accepted of the chain we proposed last time: all emitted tokens but the last.
                    got = min(len(new) - 1, st.drafted)
                    st.hits, st.misses = self.policy.observe(st.hits, st.misses, st.drafted, got)
                    self.stats["accepted"] += got
                    accepted.append(Accepted(st.rid, new, got, False))
                    st.tokens.extend(new)
                st.drafted = 0
            claimed.add(id(st))
            st.idle = 0
            self._rows[i] = st
            if new and n < self.max_model_len:
                live.append((i, st))
        self._retire(previous, claimed, accepted)
        if accepted:
            self.drafter.update(accepted)
            self._forget([a.request for a in accepted if a.finished])
        out: list[list[int]] = [[] for _ in range(rows)]
        if not live:
            return out
        trees = self.drafter.propose([Context(st.rid, st.tokens) for _, st in live])
        for (i, st), tree in zip(live, trees):
            chain, scores = best_chain(tree)
            limit = min(self.k, self.max_model_len - len(st.tokens))
            n = self.policy.length(scores, st.hits, st.misses, limit)
            st.drafted = n
            out[i] = chain[:n]
            self.stats["drafted"] += n
        self.stats["steps"] += 1
        return out

    def _find(self, previous: dict[int, _Request], claimed: set[int], row: np.ndarray, n: int,
              new: Sequence[int]) -> Optional[_Request]:
        """The known request now in this row (vLLM compacts its batch when requests finish)."""
        for st in list(previous.values()) + self._idle:
            if id(st) not in claimed and _same(st, row, n, new):
                if st in self._idle:
                    self._idle.remove(st)
                return st
        return None

    def _forget(self, rids: list[int]) -> None:
        """Drop finished requests' state in drafters that keep it after ``finished`` (a server runs for
        days; `generate` starts every call afresh, so drafters need not)."""
        if not rids:
            return
        forget = getattr(self.drafter, "forget", None)
        if callable(forget):
            forget(rids)
            return
        state = getattr(self.drafter, "_req", None)  # SpeculativeEditsDrafter's per-request state
        if isinstance(state, dict):
            for r in rids:
                state.pop(r, None)

    def _retire(self, previous: dict[int, _Request], claimed: set[int], accepted: list) -> None:
        """Requests missing from this batch wait ``keep_idle`` calls (preemption), then are finished."""
        from verispec.drafters import Accepted

        for st in previous.values():
            if id(st) not in claimed and st not in self._idle:
                self._idle.append(st)
        keep = []
        for st in self._idle:
            if id(st) in claimed:
                continue
            st.idle += 1
            if st.idle > self.keep_idle:
                accepted.append(Accepted(st.rid, [], 0, True))
            else:
                keep.append(st)
        self._idle = keep


# -- the two proposers ------------------------------------------------------------------------------------------
class RetrievalProposer(VerispecProposer):
    """Drafts from a verispec datastore plus the request's own tokens (`verispec.RetrievalDrafter`).

    Settings (``additional_config={"verispec": {...}}`` or ``VERISPEC_*``): ``datastore`` (required),
    ``budget``, ``prompt_lookup``, ``datastore_weight``, ``min_accept``, ``check_tokenizer``.
    """

    def make_drafter(self, options: dict, vllm_config: Any) -> Any:
        from verispec.datastore import Datastore
        from verispec.drafters import RetrievalDrafter

        path = options["datastore"]
        if not path:
            raise ValueError(
                "verispec RetrievalProposer needs a datastore: pass additional_config={'verispec': "
                "{'datastore': '/path/corpus.vsds'}} (vllm serve: --additional-config) or set VERISPEC_DATASTORE; "
                "build one with `verispec datastore build --tokenizer <the served model>`")
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"verispec RetrievalProposer: datastore {path} does not exist")
        ds = Datastore.open(path)
        check_vocab(ds, self.vocab_size, path)
        if options["check_tokenizer"]:
            tokenizer = _load_tokenizer(vllm_config)
            if tokenizer is not None:
                check_tokenizer(ds, tokenizer, path)
        budget = options["budget"] or 2 * self.k
        return RetrievalDrafter(ds, budget=budget, max_depth=self.k, prompt_lookup=options["prompt_lookup"],
                                datastore_weight=options["datastore_weight"], backoff=0)


class EditsProposer(VerispecProposer):
    """The request's prompt is the prediction of its output (speculative edits, fast apply).

    Uses `verispec.drafters.edits.SpeculativeEditsDrafter` (alignment pointer into the prompt, resync
    through the prompt's suffix index after an edit). Settings: ``budget``, ``min_accept``.
    """

    def make_drafter(self, options: dict, vllm_config: Any) -> Any:
        budget = options["budget"] or self.k + 8
        return make_edits_drafter(max_depth=self.k, budget=budget)


def make_edits_drafter(max_depth: int, budget: int) -> Any:
    """The speculative-edits drafter with the prompt as the prediction."""
    from verispec.drafters.edits import SpeculativeEditsDrafter

    return SpeculativeEditsDrafter(max_depth=max_depth, budget=budget)


# -- start-up checks ------------------------------------------------------------------------------------------
def check_vocab(ds: Any, vocab_size: Optional[int], path: str) -> None:
    """A datastore holding ids the served model cannot produce was built with another tokenizer."""
    if vocab_size is not None and ds.vocab_size > vocab_size:
        raise ValueError(f"verispec: datastore {path} has vocab_size {ds.vocab_size:,} but the served model's "
                         f"vocabulary has {vocab_size:,} tokens: it was built with another tokenizer; rebuild it "
                         "with `verispec datastore build --tokenizer <the served model>`")


def check_tokenizer(ds: Any, tokenizer: Any, path: str, samples: int = 32, span: int = 64,
                    min_round_trip: float = 0.5) -> float:
    """Refuse a datastore whose token ids come from another tokenizer than the served model's.

    Spans of the corpus are decoded with the served tokenizer and encoded again. Text a tokenizer
    segmented comes back as the same ids; ids of another tokenizer decode to fragments that merge
    differently somewhere in a long span (measured on the stdlib with SmolLM2's tokenizer: 1.0 of
    64-token spans for its own ids, at most 8 of 32 for permuted or shifted ids). Returns the fraction
    that came back.
    """
    total = len(ds)
    tried = same = 0
    for j in range(samples if total >= 2 * span else 0):
        start = (total - span) * j // max(1, samples - 1)
        # Segment 0 holds the file's documents; added documents live in later segments.
        ids = ds._core.text_slice(0, start, start + span)
        pieces, cur = [], []  # pieces inside one document (-1 marks document ends)
        for t in ids:
            if t < 0:
                pieces.append(cur)
                cur = []
            else:
                cur.append(int(t))
        pieces.append(cur)
        piece = max(pieces, key=len)[1:-1]  # the span may start or end inside a word
        if len(piece) < 16:
            continue
        try:
            text = tokenizer.decode(piece, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            again = list(tokenizer.encode(text, add_special_tokens=False))
        except Exception:  # ids outside the tokenizer: not its ids
            again = None
        tried += 1
        same += again == piece
    if tried == 0:
        return 1.0
    rate = same / tried
    if rate < min_round_trip:
        raise ValueError(
            f"verispec: datastore {path} does not look tokenized with the served model's tokenizer: of {tried} corpus "
            f"spans decoded and encoded again with it, {same} came back as the same ids; rebuild it with `verispec "
            "datastore build --tokenizer <the served model>` (or set the verispec option check_tokenizer to false "
            "if you are sure)")
    return rate


def _load_tokenizer(vllm_config: Any) -> Any:
    """The served model's tokenizer (transformers), or None when it cannot be loaded here."""
    mc = getattr(vllm_config, "model_config", None)
    name = getattr(mc, "tokenizer", None)
    if not name or getattr(mc, "skip_tokenizer_init", False):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, revision=getattr(mc, "tokenizer_revision", None),
                                             trust_remote_code=bool(getattr(mc, "trust_remote_code", False)))
    except Exception as exc:  # the check is a safety net, not a requirement
        log.warning("verispec: tokenizer check skipped, cannot load tokenizer %s: %s", name, exc)
        return None
