"""`verispec.generate`: lossless speculative generation for any Hugging Face causal LM, batch >= 1.

One step, for every live request at once::

    drafter.propose  -> one DraftTree per request
    pack_trees, tree_buffers -> flat tokens / parents / cu_nodes, depth, ancestor bits
    model forward    -> logits of the root and every draft node (root = last emitted token,
                        positions = prefix_len + depth, attention through verispec.tree_attention)
    verify           -> accepted path + one correction/bonus token per request
    commit_kv        -> the accepted path's K/V moved right behind each request's prefix
    drafter.update   -> next step

Requests finish on their own (EOS, ``max_new_tokens``) and leave the batch. With `NoDrafter` every tree
is empty and a step is plain one-token decoding through the same code path: that is the baseline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from verispec import _params
from verispec.cost import AdaptiveSizer, forward_cost
from verispec.drafters.base import Accepted, Context, NoDrafter
from verispec.drafters.edits import PredictionFirst, PredictionTally, SpeculativeEditsDrafter
from verispec.hf.model import TreeModel
from verispec.ops import _philox
from verispec.ops.commit_kv import path_rows_from_accepted
from verispec.ops.tree_buffers import TreeBuffers, tree_buffers
from verispec.ops.verify import VerifyResult, verify
from verispec.tree import DraftTree, pack_trees

__all__ = ["generate", "GenerateOutput", "GenerateStats"]

PHASES = ("prefill", "draft", "pack", "forward", "verify", "commit", "update")

Prompts = Union[torch.Tensor, Sequence[int], Sequence[Sequence[int]], Sequence[torch.Tensor]]


@dataclass
class GenerateStats:
    """What a `generate` call did.

    Attributes
    ----------
    steps : decoding steps (model forwards after the prefill).
    request_steps : (request, step) pairs, i.e. the steps each request took, summed.
    new_tokens : tokens generated, all requests together.
    accepted_hist : ``accepted_hist[k]`` = request-steps that accepted ``k`` draft tokens.
    draft_nodes : draft nodes verified, all steps and requests together.
    time_s : seconds per phase: ``prefill``, ``draft`` (drafter.propose), ``pack`` (trees to device
        tensors), ``forward``, ``verify`` (acceptance and the step's one device-to-host copy), ``commit``
        (K/V of the accepted paths), ``update`` (bookkeeping, drafter.update, finished requests) and
        ``total``. Exact per phase on a GPU only with ``generate(..., profile=True)``.
    """

    steps: int = 0
    request_steps: int = 0
    new_tokens: int = 0
    accepted_hist: list[int] = field(default_factory=list)
    draft_nodes: int = 0
    time_s: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(PHASES + ("total",), 0.0)
    )

    def record(self, accepted: Sequence[Accepted], draft_nodes: int) -> None:
        """Count one step."""
        for a in accepted:
            while len(self.accepted_hist) <= a.num_accepted:
                self.accepted_hist.append(0)
            self.accepted_hist[a.num_accepted] += 1
            self.new_tokens += len(a.tokens)
        self.steps += 1
        self.request_steps += len(accepted)
        self.draft_nodes += draft_nodes

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens emitted per request per step, counted the Spec-Bench way (plain decoding = 1.0)."""
        return self.new_tokens / self.request_steps if self.request_steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        t = self.time_s["total"]
        return self.new_tokens / t if t > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft nodes / verified draft nodes."""
        acc = sum(k * n for k, n in enumerate(self.accepted_hist))
        return acc / self.draft_nodes if self.draft_nodes else 0.0

    def summary(self) -> str:
        t = self.time_s
        parts = ", ".join(f"{k} {t[k]:.2f}s" for k in PHASES)
        return (
            f"{self.new_tokens} tokens in {self.steps} steps: {self.tokens_per_step:.2f} tokens/step, "
            f"{self.tokens_per_second:.1f} tokens/s ({t['total']:.2f}s: {parts}); "
            f"accepted-length histogram {self.accepted_hist}"
        )


@dataclass
class GenerateOutput:
    """Result of `generate`.

    Attributes
    ----------
    sequences : list of int64 ``[L_b + n_b]`` tensors, prompt then generated tokens, one per request in
        input order (lengths differ: finished requests stop early).
    stats : `GenerateStats`.
    accepted_prediction_tokens, rejected_prediction_tokens : per request, draft nodes drafted from the
        prediction (``prediction=``, or the prompt for a `SpeculativeEditsDrafter`) that the model
        accepted / verified and did not accept (OpenAI's usage fields); zeros without one.
    """

    sequences: list[torch.Tensor]
    stats: GenerateStats
    prompt_lengths: list[int] = field(default_factory=list)
    accepted_prediction_tokens: list[int] = field(default_factory=list)
    rejected_prediction_tokens: list[int] = field(default_factory=list)

    @property
    def new_tokens(self) -> list[torch.Tensor]:
        """The generated part of each sequence."""
        return [s[n:] for s, n in zip(self.sequences, self.prompt_lengths)]

    def padded(self, pad_token_id: int, padding_side: str = "right") -> torch.Tensor:
        """int64 ``[B, max_len]``: the sequences padded with ``pad_token_id``."""
        n = max(len(s) for s in self.sequences)
        out = torch.full((len(self.sequences), n), pad_token_id, dtype=torch.long)
        for b, s in enumerate(self.sequences):
            if padding_side == "left":
                out[b, n - len(s):] = s.cpu()
            else:
                out[b, : len(s)] = s.cpu()
        return out


# -- input handling -------------------------------------------------------------------------------------------
def _prompts(input_ids: Prompts, attention_mask: Optional[torch.Tensor]) -> list[list[int]]:
    """Per-request token lists from a padded tensor (+ mask), a 1-D tensor, or ragged lists."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length] (or 1-D), got shape {tuple(input_ids.shape)}")
        rows = input_ids.tolist()
        if attention_mask is None:
            prompts = rows
        else:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                                 f"{tuple(input_ids.shape)}")
            prompts = []
            for b, (row, m) in enumerate(zip(rows, attention_mask.tolist())):
                keep = [i for i, x in enumerate(m) if x]
                if keep and keep[-1] - keep[0] + 1 != len(keep):
                    raise ValueError(f"request {b}: attention_mask has holes; only left or right padding is supported")
                prompts.append([row[i] for i in keep])
    else:
        if attention_mask is not None:
            raise ValueError("attention_mask only goes with a padded input_ids tensor; ragged lists need none")
        seq = list(input_ids)
        if seq and all(isinstance(x, int) for x in seq):
            seq = [seq]
        prompts = []
        for b, p in enumerate(seq):
            if isinstance(p, torch.Tensor):
                if p.dim() != 1:
                    raise ValueError(f"request {b}: prompt tensor must be 1-D, got shape {tuple(p.shape)}")
                p = p.tolist()
            prompts.append([int(x) for x in p])
    if not prompts:
        raise ValueError("verispec.generate: no prompts (empty batch)")
    for b, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"verispec.generate: request {b} has an empty prompt")
    return prompts


def _eos_set(model: torch.nn.Module, eos_token_id: Union[int, Sequence[int], None]) -> set[int]:
    if eos_token_id is None:
        gc = getattr(model, "generation_config", None)
        eos_token_id = getattr(gc, "eos_token_id", None)
        if eos_token_id is None:
            return set()
    if isinstance(eos_token_id, torch.Tensor):
        eos_token_id = eos_token_id.tolist()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(x) for x in eos_token_id}


def _with_prediction(drafter: Any, prediction: Optional[Sequence[Any]], B: int, V: int) -> tuple[Any, Any]:
    """The drafter `generate` runs and the `SpeculativeEditsDrafter` inside it (or None), after checking
    ``prediction``: one entry per request, each None or token ids inside the vocabulary."""
    edits = drafter if isinstance(drafter, SpeculativeEditsDrafter) else None
    if isinstance(drafter, PredictionFirst):
        edits = drafter.edits
    if prediction is None:
        return (NoDrafter() if drafter is None else drafter), edits
    if isinstance(prediction, torch.Tensor) or not isinstance(prediction, Sequence) or isinstance(prediction, str):
        raise TypeError(f"prediction must be a list with one entry per request (token ids or None), got "
                        f"{type(prediction).__name__}")
    if len(prediction) != B:
        raise ValueError(f"prediction has {len(prediction)} entries for a batch of {B} requests (one per request; "
                         "None for a request without one)")
    preds: list[Optional[list[int]]] = []
    for b, p in enumerate(prediction):
        if p is None:
            preds.append(None)
            continue
        if isinstance(p, torch.Tensor):
            if p.dim() != 1 or p.dtype.is_floating_point or p.dtype == torch.bool:
                raise ValueError(f"prediction for request {b} must be a 1-D integer tensor, got {p.dtype} "
                                 f"{tuple(p.shape)}")
            p = p.tolist()
        if isinstance(p, (str, bytes)) or not all(hasattr(x, "__index__") for x in p):
            raise TypeError(f"prediction for request {b} must hold integer token ids")
        p = [int(x) for x in p]
        bad = next((x for x in p if not 0 <= x < V), None)
        if bad is not None:
            raise ValueError(f"prediction for request {b}: token id {bad} is outside the model's vocabulary of size {V}")
        preds.append(p)
    if edits is None:
        edits = SpeculativeEditsDrafter()
    edits.predictions = preds
    if drafter is None or drafter is edits or isinstance(drafter, PredictionFirst):
        return (edits if drafter is None else drafter), edits
    return PredictionFirst(edits, drafter), edits


def _check_drafter(drafter: Any, vocab_size: int) -> None:
    if not (callable(getattr(drafter, "propose", None)) and callable(getattr(drafter, "update", None))):
        raise TypeError(f"drafter must have propose(contexts) and update(accepted) methods, got {type(drafter).__name__}")
    dv = getattr(drafter, "vocab_size", None)
    if dv is not None and int(dv) > vocab_size:
        raise ValueError(
            f"drafter {type(drafter).__name__} has vocabulary size {int(dv)} but the model's is {vocab_size}: "
            "they must share one tokenizer"
        )


def _draft_probs(trees: Sequence[DraftTree], tokens: torch.Tensor, V: int, dev) -> Optional[torch.Tensor]:
    """float32 ``[N, V]`` draft distributions for exact verification when any tree carries ``probs``
    (a draft model's samples), else None. Trees without ``probs`` get one-hot rows: accepting ``x``
    with probability ``p_res(x) / 1`` and continuing with ``norm(max(p_res - onehot(x), 0))`` is exactly
    the rule for deterministic drafts, so sampled and deterministic drafts mix in one batch."""
    if not any(t.probs is not None for t in trees):
        return None
    N = int(tokens.numel())
    q = torch.zeros(N, V, dtype=torch.float32, device=dev)
    q[torch.arange(N, device=dev), tokens.long()] = 1.0
    start = 0
    for b, t in enumerate(trees):
        n = len(t)
        if t.probs is not None and n:
            rows = t.probs.to(device=dev, dtype=torch.float32)
            if rows.shape[1] > V:
                if bool((rows[:, V:] != 0).any()):
                    raise ValueError(f"drafter: request {b}'s probs put mass on ids >= the model's vocabulary ({V})")
                rows = rows[:, :V]
            if not bool(torch.isfinite(rows).all()) or bool((rows < 0).any()):
                raise ValueError(f"drafter: request {b}'s probs have negative or non-finite entries")
            if bool(((rows.sum(dim=1, dtype=torch.float64) - 1).abs() > 1e-3).any()):
                raise ValueError(f"drafter: request {b}'s probs rows do not sum to 1")
            toks = tokens[start : start + n].long()
            if int(toks.max()) >= rows.shape[1]:
                raise ValueError(f"drafter: request {b} drafted token {int(toks.max())} outside its probs rows "
                                 f"(width {rows.shape[1]})")
            if bool((rows.gather(1, toks.view(-1, 1)) <= 0).any()):
                raise ValueError(f"drafter: request {b} drafted a token its own probs row gives probability 0")
            q[start : start + n] = 0.0
            q[start : start + n, : rows.shape[1]] = rows
        start += n
    return q


class _Clock:
    """Wall time per phase. Synchronises the device at every lap only when profiling (``profile=True``
    or ``VERISPEC_PROFILE=1``): otherwise GPU work is asynchronous and a phase's time is the host's,
    blurred into whichever later phase waits for the device; the total is exact either way."""

    def __init__(self, stats: GenerateStats, device: torch.device, profile: bool):
        self.t = stats.time_s
        self.sync = profile and device.type == "cuda"
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.t[phase] += now - self.last
        self.last = now


@dataclass
class _Batch:
    """One step's draft trees, packed: the flat ragged form for `verify`, the padded verification rows
    for the forward, and the sizes the host already knows (so nothing below asks the device for them)."""

    flat: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # tokens [N], parents [N], cu_nodes [B+1], int32
    ids: torch.Tensor  # int64 [B, T]: root then node tokens per request, 0-padded
    tree_lens: torch.Tensor  # int32 [B]: rows per request (root + nodes)
    buffers: TreeBuffers
    max_depth: int


def _pack(trees: Sequence[DraftTree], roots: Sequence[int], dev: torch.device, V: int) -> _Batch:
    """Pack on the host, then copy to the device once (plus the tree buffers, computed there)."""
    tokens, parents, cu_nodes = pack_trees(trees, device="cpu", vocab_size=V)
    T = 1 + max(len(t) for t in trees)
    ids = torch.zeros(len(trees), T, dtype=torch.long)
    ids[:, 0] = torch.tensor(roots, dtype=torch.long)
    for b, t in enumerate(trees):
        ids[b, 1 : 1 + len(t)] = t.tokens
    max_depth = max(t.max_depth() for t in trees)
    flat = tuple(x.to(dev, non_blocking=True) for x in (tokens, parents, cu_nodes))
    tree_lens = (cu_nodes[1:] - cu_nodes[:-1] + 1).to(dev, non_blocking=True)
    bufs = tree_buffers(flat[1], flat[2], max_rows=T, validate=False)  # pack_trees validated every tree
    return _Batch(flat, ids.to(dev, non_blocking=True), tree_lens, bufs, max_depth)


def _fetch(res: VerifyResult, finite: torch.Tensor) -> tuple[list[int], list[list[int]], list[bool]]:
    """The step's one device-to-host copy: per request the accepted count, the emitted tokens and
    whether its logits were all finite."""
    host = torch.cat([res.num_accepted.view(-1, 1), finite.view(-1, 1).to(torch.int32), res.tokens], dim=1).tolist()
    return [r[0] for r in host], [r[2:] for r in host], [bool(r[1]) for r in host]


# -- the loop -------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    input_ids: Prompts,
    drafter: Any = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eos_token_id: Union[int, Sequence[int], None] = None,
    attention_mask: Optional[torch.Tensor] = None,
    streamer: Any = None,
    seed: Optional[int] = None,
    *,
    attention: str = "auto",
    backend: str = "auto",
    profile: Optional[bool] = None,
    prediction: Optional[Sequence[Any]] = None,
    cost: Union[str, Callable[[int], float], None] = None,
) -> GenerateOutput:
    """Generate with draft trees verified by the model: output identical to plain decoding.

    Parameters
    ----------
    model : a transformers decoder-only causal LM (Llama, Qwen2, GPT-2, Gemma 2, ...), any device/dtype.
    input_ids : int ``[B, L]`` tensor (with ``attention_mask`` when padded, left or right), a 1-D
        tensor, a list of token ids, or a list of per-request lists / 1-D tensors of any lengths.
    drafter : a `verispec.Drafter` (`NoDrafter`, `PromptLookupDrafter`, `RetrievalDrafter`, ...);
        None = `NoDrafter` (plain decoding).
    max_new_tokens : tokens to generate per request, an integer >= 1 (fewer when it emits an EOS token first).
    temperature : 0 = greedy (token-identical to ``model.generate(do_sample=False)``); > 0 samples
        exactly from the softmax of ``logits / temperature`` restricted by ``top_k`` (None or an integer
        >= 1) / ``top_p`` (None or in (0, 1]). Non-finite values are rejected.
    eos_token_id : int or list; None = the model's ``generation_config.eos_token_id``; ``[]`` = never stop.
    attention_mask : int/bool ``[B, L]``, 1 for real tokens (only with a padded ``input_ids`` tensor).
    streamer : an object with ``put(tensor)`` / ``end()`` (``transformers.TextStreamer`` works); receives
        the prompt, then each step's new tokens (batch size 1 only, as in transformers).
    seed : sampling seed, 0..2^64-1; request ``b`` gets its own Philox stream keyed by
        ``request_keys(seed, b)``. None draws one from torch's generator.
    attention : ``"auto"``, ``"tree"`` (verispec.tree_attention) or ``"mask"`` (4D-mask fallback).
    backend : op backend (``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"``).
    profile : synchronise the device between phases so ``stats.time_s`` attributes GPU time exactly
        (slower); None = the ``VERISPEC_PROFILE`` environment variable.
    prediction : the expected output of each request (speculative edits, OpenAI's Predicted Outputs): a
        list with one entry per request, each a list / 1-D tensor of token ids or None (then the prompt is
        the prediction). Without a drafter, `generate` drafts from it (`SpeculativeEditsDrafter`); with
        one, both trees are merged, the prediction's first.
    cost : adaptive sizing of every step's trees per request (`verispec.cost.AdaptiveSizer`, any drafter):
        ``"auto"`` = from the whole forward over 1..64 rows, measured once per model (about a second on
        a CPU; the CLI and the demo use this), a callable ``T -> cost relative to one row``, or None
        (default) = verify every tree as drafted.

    Returns
    -------
    GenerateOutput with ``.sequences`` (prompt + generated, per request) and ``.stats``.
    """
    t_start = time.perf_counter()
    # Every scalar parameter is checked before any work (the model is not touched on a bad value).
    max_new_tokens = _params.check_max_new_tokens(max_new_tokens, "verispec.generate")
    temperature = _params.check_temperature(temperature, "verispec.generate")
    top_k = _params.check_top_k(top_k, "verispec.generate")
    top_p = _params.check_top_p(top_p, "verispec.generate")
    seed = _params.check_seed(seed, where="verispec.generate")
    prompts = _prompts(input_ids, attention_mask)
    target = TreeModel(model, attention=attention, backend=backend)
    V = target.vocab_size
    for b, p in enumerate(prompts):
        bad = [x for x in p if not 0 <= x < V]
        if bad:
            raise ValueError(f"request {b}: token id {bad[0]} is outside the model's vocabulary of size {V}")
    drafter, edits = _with_prediction(drafter, prediction, len(prompts), V)
    _check_drafter(drafter, V)
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"streamers take one request at a time (as in transformers); got a batch of {len(prompts)}")
    eos = _eos_set(model, eos_token_id)
    if seed is None and temperature > 0:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    # One Philox key per request, derived from (seed, request index) once, on the host: request r keeps
    # its stream whichever requests are still live, and no two requests share one.
    keys = [] if seed is None else _philox.request_keys(
        torch.tensor(_params.seed_to_int64(seed)), torch.arange(len(prompts))).tolist()
    if profile is None:
        profile = os.environ.get("VERISPEC_PROFILE", "") not in ("", "0")
    dev = target.device
    sizer = None
    if cost is not None and not isinstance(drafter, NoDrafter):
        if isinstance(cost, str) and cost != "auto":
            raise ValueError(f"cost must be 'auto', a callable or None, got {cost!r}")
        sizer = AdaptiveSizer(forward_cost(model) if cost == "auto" else cost,
                              calibrate=not getattr(drafter, "calibrated", False))
    tally = PredictionTally(len(prompts))

    stats = GenerateStats()
    clock = _Clock(stats, dev, profile)
    seqs = [list(p) for p in prompts]  # prompt + generated; the last token is the next root
    cache = target.new_cache(len(prompts), max(len(p) for p in prompts) + max_new_tokens + 64)
    # Drafters that read the model's hidden state (heads) get the final hidden state of the token before
    # each root: from the prefill, then from each step's own verification forward (no extra pass).
    want_hidden = bool(getattr(drafter, "wants_hidden", False))
    hidden = target.prefill(cache, prompts, hidden=want_hidden)  # [B, d] or None
    has_hidden = [len(p) > 1 for p in prompts]  # a one-token prompt has no token before its root
    if streamer is not None:
        streamer.put(torch.tensor([prompts[0]]))
    if callable(getattr(drafter, "begin", None)):
        drafter.begin([list(p) for p in prompts])
    live = list(range(len(prompts)))  # request ids, in cache row order
    clock.lap("prefill")

    while live:
        t_step = time.perf_counter()
        trees = drafter.propose([Context(r, seqs[r], hidden[i] if want_hidden and has_hidden[i] else None)
                                 for i, r in enumerate(live)])
        if len(trees) != len(live):
            raise ValueError(f"{type(drafter).__name__}.propose returned {len(trees)} trees for {len(live)} requests")
        if sizer is not None:
            trees = sizer.size(live, trees)
        clock.lap("draft")
        batch = _pack(trees, [seqs[r][-1] for r in live], dev, V)
        clock.lap("pack")
        out = target.forward_tree(cache, batch.ids, batch.tree_lens, batch.buffers, hidden=want_hidden)
        logits, row_hidden = out if want_hidden else (out, None)  # [rows, V], [B, T, d]
        clock.lap("forward")
        res = verify(logits, batch.flat, buffers=batch.buffers, max_depth=batch.max_depth, validate=False,
                     backend=backend, **_sampling(live, seqs, prompts, trees, batch, temperature, top_k, top_p, keys, V))
        num_acc, emitted, finite = _fetch(res, _finite_requests(logits, batch.buffers, len(live)))
        clock.lap("verify")
        _raise_if_not_finite(finite, live, stats.steps)
        path_rows = path_rows_from_accepted(res.accepted_nodes, res.num_accepted)
        cache.commit(path_rows, num_acc, backend=backend)
        if want_hidden:
            hidden, has_hidden = _last_accepted(row_hidden, path_rows, res.num_accepted), [True] * len(live)
        clock.lap("commit")
        accepted = [_emit(seqs[r], len(prompts[r]), emitted[i][: num_acc[i] + 1], num_acc[i], r, max_new_tokens, eos)
                    for i, r in enumerate(live)]
        stats.record(accepted, len(batch.flat[0]))
        if edits is not None:
            tally.record(live, trees, edits.last_trees, accepted)
        drafter.update(accepted)
        if streamer is not None and accepted[0].tokens:
            streamer.put(torch.tensor(accepted[0].tokens))
        if sizer is not None:
            sizer.observe(live, [a.tokens[: a.num_accepted] for a in accepted], batch.ids.shape[1],
                          time.perf_counter() - t_step)
        keep = [i for i, a in enumerate(accepted) if not a.finished]
        if len(keep) != len(live):
            live = [live[i] for i in keep]
            if live:
                cache.select(keep)
                hidden = hidden[torch.tensor(keep, device=dev)] if want_hidden else None
        clock.lap("update")

    if streamer is not None:
        streamer.end()
    stats.time_s["total"] = time.perf_counter() - t_start
    out_dev = input_ids.device if isinstance(input_ids, torch.Tensor) else torch.device("cpu")
    sequences = [torch.tensor(s, dtype=torch.long, device=out_dev) for s in seqs]
    return GenerateOutput(sequences, stats, [len(p) for p in prompts], tally.accepted, tally.rejected)


# -- the step's pieces --------------------------------------------------------------------------------------
def _sampling(live, seqs, prompts, trees, batch: _Batch, temperature, top_k, top_p, keys, V) -> dict[str, Any]:
    """`verify`'s mode and sampling arguments for this step (greedy needs none)."""
    if temperature == 0:
        return {"mode": "greedy"}
    dev = batch.ids.device
    return dict(
        mode="exact", temperature=temperature, top_k=top_k, top_p=top_p,
        draft_probs=_draft_probs(trees, batch.flat[0], V, dev),
        # Philox counters: request r's stream is keyed by keys[r] and advanced by its tokens so far, so
        # samples do not depend on batch order or on how many tokens earlier steps accepted.
        seed=torch.tensor([keys[r] for r in live], dtype=torch.int64).to(dev, non_blocking=True),
        offset=torch.tensor([len(seqs[r]) - len(prompts[r]) for r in live], dtype=torch.int64).to(dev, non_blocking=True),
    )


def _last_accepted(row_hidden: torch.Tensor, path_rows: torch.Tensor, num_accepted: torch.Tensor) -> torch.Tensor:
    """``[B, d]``: the hidden state of each request's last accepted row (the root when nothing was
    accepted): it predicted the correction/bonus token, the next step's root. No host synchronisation."""
    last = path_rows.gather(1, num_accepted.long().view(-1, 1)).view(-1).long()
    return row_hidden[torch.arange(row_hidden.shape[0], device=row_hidden.device), last]


def _finite_requests(logits: torch.Tensor, bufs: TreeBuffers, B: int) -> torch.Tensor:
    """bool ``[B]`` on the device: request ``b``'s rows hold no NaN or +inf and are not all -inf (a row's
    max propagates NaN, is +inf with any +inf and -inf only when every entry is)."""
    bad_rows = (~torch.isfinite(logits.amax(dim=1))).to(torch.int32)
    bad = torch.zeros(B, dtype=torch.int32, device=logits.device).index_add_(0, bufs.request.long(), bad_rows)
    return bad == 0


def _raise_if_not_finite(finite: list[bool], live: list[int], step: int) -> None:
    if not all(finite):
        r = live[finite.index(False)]
        raise FloatingPointError(
            f"verispec.generate: the model produced NaN or infinite logits for request {r} at step {step} "
            "(check the model's dtype and weights; nothing was emitted for that step)"
        )


def _emit(seq: list[int], prompt_len: int, new: list[int], num_accepted: int, request: int, max_new_tokens: int,
          eos: set[int]) -> Accepted:
    """Append one step's tokens to a request (cut at ``max_new_tokens`` and after an EOS token)."""
    new = new[: max_new_tokens - (len(seq) - prompt_len)]
    stop = next((j for j, t in enumerate(new) if t in eos), None)
    if stop is not None:
        new = new[: stop + 1]
    seq.extend(new)
    return Accepted(request, new, num_accepted, stop is not None or len(seq) - prompt_len == max_new_tokens)
