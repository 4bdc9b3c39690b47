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

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from verispec.drafters import Accepted, Context, NoDrafter
from verispec.hf.attention import TreeMeta
from verispec.hf.model import TreeModel
from verispec.ops.commit_kv import path_rows_from_accepted
from verispec.ops.tree_buffers import tree_buffers
from verispec.ops.verify import verify
from verispec.tree import DraftTree, pack_trees

__all__ = ["generate", "GenerateOutput", "GenerateStats"]

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
    time_s : seconds spent in ``prefill``, ``draft``, ``forward``, ``verify``, ``commit`` and ``total``.
    """

    steps: int = 0
    request_steps: int = 0
    new_tokens: int = 0
    accepted_hist: list[int] = field(default_factory=list)
    draft_nodes: int = 0
    time_s: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("prefill", "draft", "forward", "verify", "commit", "total"), 0.0)
    )

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
        parts = ", ".join(f"{k} {t[k]:.2f}s" for k in ("prefill", "draft", "forward", "verify", "commit"))
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
    """

    sequences: list[torch.Tensor]
    stats: GenerateStats
    prompt_lengths: list[int] = field(default_factory=list)

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
    """Accumulates wall time per phase; on CUDA it synchronises so phases are not blurred."""

    def __init__(self, stats: GenerateStats, device: torch.device):
        self.t = stats.time_s
        self.sync = device.type == "cuda"
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.t[phase] += now - self.last
        self.last = now


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
) -> GenerateOutput:
    """Generate with draft trees verified by the model: output identical to plain decoding.

    Parameters
    ----------
    model : a transformers decoder-only causal LM (Llama, Qwen2, GPT-2, Gemma 2, ...), any device/dtype.
    input_ids : int ``[B, L]`` tensor (with ``attention_mask`` when padded, left or right), a 1-D
        tensor, a list of token ids, or a list of per-request lists / 1-D tensors of any lengths.
    drafter : a `verispec.Drafter` (`NoDrafter`, `PromptLookupDrafter`, `RetrievalDrafter`, ...);
        None = `NoDrafter` (plain decoding).
    max_new_tokens : tokens to generate per request (fewer when it emits an EOS token first).
    temperature : 0 = greedy (token-identical to ``model.generate(do_sample=False)``); > 0 samples
        exactly from the softmax of ``logits / temperature`` restricted by ``top_k`` / ``top_p``.
    eos_token_id : int or list; None = the model's ``generation_config.eos_token_id``; ``[]`` = never stop.
    attention_mask : int/bool ``[B, L]``, 1 for real tokens (only with a padded ``input_ids`` tensor).
    streamer : an object with ``put(tensor)`` / ``end()`` (``transformers.TextStreamer`` works); receives
        the prompt, then each step's new tokens (batch size 1 only, as in transformers).
    seed : sampling seed (request ``b`` uses ``seed + b``); None draws one from torch's generator.
    attention : ``"auto"``, ``"tree"`` (verispec.tree_attention) or ``"mask"`` (4D-mask fallback).
    backend : op backend (``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"``).

    Returns
    -------
    GenerateOutput with ``.sequences`` (prompt + generated, per request) and ``.stats``.
    """
    t_start = time.perf_counter()
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    prompts = _prompts(input_ids, attention_mask)
    target = TreeModel(model, attention=attention, backend=backend)
    V = target.vocab_size
    for b, p in enumerate(prompts):
        bad = [x for x in p if not 0 <= x < V]
        if bad:
            raise ValueError(f"request {b}: token id {bad[0]} is outside the model's vocabulary of size {V}")
    drafter = NoDrafter() if drafter is None else drafter
    _check_drafter(drafter, V)
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"streamers take one request at a time (as in transformers); got a batch of {len(prompts)}")
    eos = _eos_set(model, eos_token_id)
    if seed is None and temperature > 0:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    dev = target.device

    stats = GenerateStats()
    clock = _Clock(stats, dev)
    B = len(prompts)
    seqs = [list(p) for p in prompts]  # prompt + generated; the last token is the next root
    cache = target.new_cache(B, max(len(p) for p in prompts) + max_new_tokens + 64)
    target.prefill(cache, prompts)
    if streamer is not None:
        streamer.put(torch.tensor([prompts[0]]))
    begin = getattr(drafter, "begin", None)
    if callable(begin):
        begin([list(p) for p in prompts])
    live = list(range(B))  # request ids, in cache row order
    clock.lap("prefill")

    while live:
        # 1. draft
        trees = drafter.propose([Context(r, seqs[r]) for r in live])
        if len(trees) != len(live):
            raise ValueError(f"{type(drafter).__name__}.propose returned {len(trees)} trees for {len(live)} requests")
        tokens, parents, cu_nodes = pack_trees(trees, device=dev, vocab_size=V)
        bufs = tree_buffers(parents, cu_nodes, validate=False)  # pack_trees validated every tree
        n = len(live)
        T = bufs.max_rows
        rows_req, rows_local = bufs.request.long(), bufs.local_rows()
        node_rows = torch.ones(bufs.num_rows, dtype=torch.bool, device=dev)
        node_rows[bufs.cu_rows[:-1].long()] = False
        roots = torch.tensor([seqs[r][-1] for r in live], dtype=torch.long, device=dev)
        ids = torch.zeros(n, T, dtype=torch.long, device=dev)
        ids[:, 0] = roots
        ids[rows_req[node_rows], rows_local[node_rows]] = tokens.long()
        meta = TreeMeta(
            prefix_lens=cache.prefix_lens,
            tree_lens=(cu_nodes[1:] - cu_nodes[:-1] + 1).to(torch.int32),
            ancestors=bufs.padded_ancestors(n, T),
            positions=(cache.prefix_lens.view(-1, 1) + bufs.padded_depths(n, T)).to(torch.int32),
            backend=backend,
        )
        clock.lap("draft")

        # 2. one forward over every tree row
        logits = target.forward_tree(cache, ids, meta)[rows_req, rows_local]  # [sum(n_b + 1), V]
        clock.lap("forward")

        # 3. verify
        offsets = torch.tensor([len(seqs[r]) - len(prompts[r]) for r in live], dtype=torch.int64, device=dev)
        q = _draft_probs(trees, tokens, V, dev) if temperature > 0 else None
        res = verify(
            logits, (tokens, parents, cu_nodes), mode="greedy" if temperature == 0 else "exact", draft_probs=q,
            temperature=temperature, top_k=top_k, top_p=top_p, offset=offsets,
            seed=None if seed is None else torch.tensor([seed + r for r in live], dtype=torch.int64, device=dev),
            buffers=bufs, backend=backend, validate=False,
        )
        num_acc = res.num_accepted.tolist()
        emitted = res.tokens.tolist()
        clock.lap("verify")

        # 4. commit the accepted path's K/V, then bookkeeping
        cache.commit(path_rows_from_accepted(res.accepted_nodes, res.num_accepted), backend=backend)
        accepted, keep = [], []
        for i, r in enumerate(live):
            k = num_acc[i]
            new = emitted[i][: k + 1]
            room = max_new_tokens - (len(seqs[r]) - len(prompts[r]))
            new = new[:room]
            stop = next((j for j, t in enumerate(new) if t in eos), None)
            if stop is not None:
                new = new[: stop + 1]
            seqs[r].extend(new)
            finished = stop is not None or len(new) == room
            accepted.append(Accepted(r, new, k, finished))
            if not finished:
                keep.append(i)
            while len(stats.accepted_hist) <= k:
                stats.accepted_hist.append(0)
            stats.accepted_hist[k] += 1
            stats.new_tokens += len(new)
        stats.steps += 1
        stats.request_steps += n
        stats.draft_nodes += int(tokens.numel())
        drafter.update(accepted)
        if streamer is not None and accepted[0].tokens:
            streamer.put(torch.tensor(accepted[0].tokens))
        if len(keep) != n:
            live = [live[i] for i in keep]
            if live:
                cache.select(keep)
        clock.lap("commit")

    if streamer is not None:
        streamer.end()
    stats.time_s["total"] = time.perf_counter() - t_start
    out_dev = input_ids.device if isinstance(input_ids, torch.Tensor) else torch.device("cpu")
    sequences = [torch.tensor(s, dtype=torch.long, device=out_dev) for s in seqs]
    return GenerateOutput(sequences, stats, [len(p) for p in prompts])
