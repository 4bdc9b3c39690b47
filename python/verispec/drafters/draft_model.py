"""Draft-model speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small causal LM that
shares the target's tokenizer proposes a chain of tokens; `verispec.generate` verifies the chain in
one target forward.

With ``temperature > 0`` the drafter samples its tokens and attaches the distribution each was drawn
from (``DraftTree.probs``); `generate` then accepts token ``x`` with probability ``min(1, p(x)/q(x))``
and draws a rejection from ``norm(max(p - q, 0))``, which keeps the target's sampling distribution
exactly. With ``temperature = 0`` it drafts the draft model's greedy chain (no probabilities needed:
greedy verification, or exact verification of deterministic drafts, is lossless on its own). Either
way the output distribution is the target's; the drafter only changes how many tokens a step emits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from verispec.drafters.base import Accepted, Context
from verispec.tree import DraftTree

__all__ = ["DraftModelDrafter"]


class _RequestState:
    """The draft model's KV cache for one request and the tokens it holds."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.tokens: list[int] = []


class DraftModelDrafter:
    """Drafts ``num_tokens`` tokens per step with a small Hugging Face causal LM.

    Parameters
    ----------
    model : the draft model (any decoder-only transformers causal LM with a KV cache), sharing the
        target's tokenizer; it may live on another device than the target.
    num_tokens : chain length per step.
    temperature : 0 = the draft model's greedy chain; > 0 = sample from ``softmax(logits / temperature)``
        and report it, for exact speculative sampling (use the target's temperature: the closer q is to
        the target's p, the more drafts are accepted).
    seed : seed of the drafter's own sampling generator (it never affects the output distribution).

    Each request keeps a KV cache of the draft model; a step feeds only the tokens the cache has not
    seen (usually the accepted tokens and the correction) after cropping what was rejected.
    """

    def __init__(self, model: torch.nn.Module, num_tokens: int = 4, temperature: float = 0.0, seed: int = 0):
        from verispec.hf.model import cache_kwarg, check_model, model_vocab_size

        check_model(model)
        if num_tokens < 1:
            raise ValueError(f"DraftModelDrafter: num_tokens must be >= 1, got {num_tokens}")
        if not temperature >= 0:
            raise ValueError(f"DraftModelDrafter: temperature must be >= 0, got {temperature}")
        self.model = model.eval()
        self.num_tokens = int(num_tokens)
        self.temperature = float(temperature)
        self.vocab_size = model_vocab_size(model)
        self._cache_arg = cache_kwarg(model)
        self._device = next(model.parameters()).device  # where input ids go (the embedding's device)
        self._seed = int(seed)
        self._gen: Optional[torch.Generator] = None  # made on the logits' device (device_map may split)
        self._states: dict[int, _RequestState] = {}

    # -- protocol ----------------------------------------------------------------------------------
    def begin(self, prompts: Sequence[list[int]]) -> None:
        self._states.clear()

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        return [self._draft(ctx.request, ctx.tokens) for ctx in contexts]

    def update(self, accepted: Sequence[Accepted]) -> None:
        for a in accepted:
            if a.finished:
                self._states.pop(a.request, None)

    # -- drafting ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _draft(self, request: int, tokens: list[int]) -> DraftTree:
        state = self._states.get(request)
        if state is None:
            state = self._states[request] = _RequestState(self._new_cache())
        keep = _common_prefix(state.tokens, tokens)
        keep = min(keep, len(tokens) - 1)  # the last token must be fed: its logits predict the first draft
        _crop(state.cache, len(state.tokens), keep)
        feed = tokens[keep:]
        drafted: list[int] = []
        rows: list[torch.Tensor] = []
        for _ in range(self.num_tokens):
            ids = torch.tensor([feed], dtype=torch.long, device=self._device)
            logits = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: state.cache}).logits[0, -1]
            x, q = self._pick(logits.float())
            drafted.append(x)
            if q is not None:
                rows.append(q)
            feed = [x]
        # The cache now holds the context and every drafted token but the last.
        state.tokens = list(tokens) + drafted[:-1]
        probs = torch.stack(rows) if rows else None
        return DraftTree.chain(drafted, probs=probs)

    def _pick(self, logits: torch.Tensor) -> tuple[int, Optional[torch.Tensor]]:
        if self.temperature == 0:
            return int(logits.argmax()), None
        q = torch.softmax(logits.double() / self.temperature, dim=-1)
        if self._gen is None or self._gen.device != q.device:
            self._gen = torch.Generator(device=q.device).manual_seed(self._seed)
        x = int(torch.multinomial(q, 1, generator=self._gen))
        # float32 rows are what verify reads; the sampled token keeps positive mass after rounding.
        return x, q.float()

    def _new_cache(self):
        # Without the config every layer keeps its full history: a config-built cache gives
        # sliding-window layers (Gemma 2/3, Mistral) that cannot be cropped once past the window,
        # while the model applies the window through its mask either way.
        from transformers import DynamicCache

        return DynamicCache()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _crop(cache: Any, held: int, keep: int) -> None:
    """Keep the first ``keep`` of the ``held`` cached tokens. A negative argument removes that many
    tokens in every transformers version (4.x reads a positive one as the length to keep, 5.x refuses it)."""
    if keep < held:
        cache.crop(keep - held)
