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

import inspect
from collections.abc import Sequence
from typing import Any, Optional

import torch

from verispec.drafters.base import Accepted, Context
from verispec.tree import DraftTree

__all__ = ["DraftModelDrafter"]


class DraftModelDrafter:
    """Drafts ``num_tokens`` tokens per step with a small Hugging Face causal LM, for every live
    request at once.

    Parameters
    ----------
    model : the draft model (any decoder-only transformers causal LM with a KV cache), sharing the
        target's tokenizer; it may live on another device than the target.
    num_tokens : chain length per step.
    temperature : 0 = the draft model's greedy chain; > 0 = sample from ``softmax(logits / temperature)``
        and report it, for exact speculative sampling (use the target's temperature: the closer q is to
        the target's p, the more drafts are accepted).
    seed : seed of the drafter's own sampling generator (it never affects the output distribution).

    All live requests share one batched KV cache of the draft model, so a step costs ``num_tokens``
    batched draft forwards whatever the batch size. Row ``r`` of the cache holds request
    ``self._rows[r]``'s tokens contiguously and *right-aligned* (left padding, masked out), because
    (1) every row's newest token is then the last column, so one ``logits[:, -1]`` serves all rows
    and a drafted token is one appended column for every row; (2) each row's tokens stay contiguous,
    so sliding-window masks (which count cache columns) see the same tokens as unpadded. Explicit
    ``position_ids`` give every token its unpadded position (GPT-2's learned absolute positions,
    RoPE). A step drops what each row must not keep (rejected drafts, finished or new requests) by
    re-gathering the cache into the new alignment, then feeds each request the tokens its row has not
    seen (the accepted tokens and the correction, usually 1 or 2). Rows needing fewer than the widest
    feed re-feed some already-cached tokens instead of padding: the forward costs the same and no
    padding enters the input. Only a context shorter than the feed (a short prompt beside a long one
    in the first step) is padded, on the right so that no query sees only masked keys; the cache is
    then re-gathered once to right-align it.
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
        # Only the last position's logits are read: skip the LM head elsewhere (long prompts) when the
        # model allows it.
        params = inspect.signature(model.forward).parameters
        self._last_only = "logits_to_keep" in params
        self._device = next(model.parameters()).device  # where input ids go (the embedding's device)
        self._seed = int(seed)
        self._gen: Optional[torch.Generator] = None  # made on the logits' device (device_map may split)
        self.begin(())

    # -- protocol ----------------------------------------------------------------------------------
    def begin(self, prompts: Sequence[list[int]]) -> None:
        self._cache: Any = None  # one transformers DynamicCache, [rows, heads, width, head_dim] per layer
        self._rows: list[int] = []  # request id of each cache row
        self._held: dict[int, list[int]] = {}  # the tokens in each request's row (the last ones of the row)

    @torch.no_grad()
    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        if not contexts:
            return []
        toks = [ctx.tokens for ctx in contexts]
        # Every row feeds its tokens after the common prefix with what it holds, and at least the last
        # token (its logits predict the first draft); the widest such feed sets the input width.
        feed = max(len(t) - min(_common_prefix(self._held.get(c.request, []), t), len(t) - 1)
                   for c, t in zip(contexts, toks))
        keep = [max(len(t) - feed, 0) for t in toks]  # cached tokens each row keeps (<= its common prefix)
        width = max(keep)
        old_width = self._cache.get_seq_length() if self._cache is not None else 0
        row_of = {req: r for r, req in enumerate(self._rows)}
        src = [row_of[c.request] if c.request in self._held else -1 for c in contexts]
        self._realign(src, [old_width - len(self._held.get(c.request, ())) for c in contexts], keep, width)

        B, dev = len(toks), self._device
        lens = torch.tensor([len(t) for t in toks], device=dev)
        fed = [len(t) - k for t, k in zip(toks, keep)]  # = min(len, feed): fewer only for short contexts
        keep_t, fed_t = torch.tensor(keep, device=dev).unsqueeze(1), torch.tensor(fed, device=dev).unsqueeze(1)
        # A short context is padded on the right: a left pad query would see no valid key at all, and
        # SDPA on CUDA returns NaN there, which 0 * NaN then spreads along the row.
        ids = torch.tensor([t[k:] + [0] * (feed - n) for t, k, n in zip(toks, keep, fed)], device=dev)
        mask = torch.cat([torch.arange(width, device=dev) >= width - keep_t,
                          torch.arange(feed, device=dev) < fed_t], dim=1).long()
        pos = keep_t + torch.arange(feed, device=dev)
        if min(fed) < feed:
            # Logits only at each row's last token: the distinct columns for all rows, then each row's own.
            cols = sorted({n - 1 for n in fed})
            keep_cols = torch.tensor(cols, device=dev) if self._last_only else 0
            which = [cols.index(n - 1) if self._last_only else n - 1 for n in fed]
            logits = self._forward(ids, mask, pos, keep_cols)
            logits = logits[torch.arange(B, device=logits.device), torch.tensor(which, device=logits.device)]
            # Drop the right padding again: each row's tokens end at the last column, so drafts append.
            top = max(len(t) for t in toks)
            self._realign(list(range(B)), [width - k for k in keep], [len(t) for t in toks], top)
            mask = (torch.arange(top, device=dev) >= top - lens.unsqueeze(1)).long()
        else:
            logits = self._forward(ids, mask, pos)[:, -1]
        xs, qs = [], []
        for j in range(self.num_tokens):
            if j:
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
                logits = self._forward(xs[-1].view(B, 1).to(dev), mask, (lens + j - 1).unsqueeze(1))[:, -1]
            x, q = self._pick(logits.float())
            xs.append(x)
            if q is not None:
                qs.append(q)
        drafted = torch.stack(xs, dim=1).tolist()  # the step's one device->host copy
        # The cache now holds each context and every drafted token but the last.
        self._rows = [c.request for c in contexts]
        self._held = {c.request: list(t) + d[:-1] for c, t, d in zip(contexts, toks, drafted)}
        probs = torch.stack(qs, dim=1) if qs else None  # [B, num_tokens, V]
        return [DraftTree.chain(d, probs=None if probs is None else probs[i]) for i, d in enumerate(drafted)]

    def update(self, accepted: Sequence[Accepted]) -> None:
        # A finished request's row is dropped at the next propose (it has no context there).
        for a in accepted:
            if a.finished:
                self._held.pop(a.request, None)

    # -- drafting ----------------------------------------------------------------------------------
    def _pick(self, logits: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next tokens ``[B]`` from logits ``[B, V]``, and the rows they were sampled from (None if greedy)."""
        if self.temperature == 0:
            return logits.argmax(dim=-1), None
        q = torch.softmax(logits.double() / self.temperature, dim=-1)
        if self._gen is None or self._gen.device != q.device:
            self._gen = torch.Generator(device=q.device).manual_seed(self._seed)
        x = torch.multinomial(q, 1, generator=self._gen).squeeze(1)
        # float32 rows are what verify reads; the sampled token keeps positive mass after rounding.
        return x, q.float()

    def _forward(self, ids, mask, pos, logits_to_keep=1):
        kw = {"logits_to_keep": logits_to_keep} if self._last_only else {}
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                          **{self._cache_arg: self._cache}, **kw).logits

    def _realign(self, src: list[int], start: list[int], keep: list[int], width: int) -> None:
        """New row ``r`` = old row ``src[r]``'s columns ``start[r] .. start[r] + keep[r] - 1``,
        right-aligned in ``width`` columns (``keep[r] = 0``: all padding, ``src[r]`` unused)."""
        if self._cache is None or width == 0:
            # Without the config every layer keeps its full history: a config-built cache gives
            # sliding-window layers (Gemma 2/3, Mistral) that cannot be cropped once past the window,
            # while the model applies the window through its mask either way.
            from transformers import DynamicCache

            self._cache = DynamicCache()
            return
        old_width = self._cache.get_seq_length()
        shift = [s - width + k for s, k in zip(start, keep)]  # new column c reads old column c + shift
        src = [r if k else 0 for r, k in zip(src, keep)]
        # Same rows, each dropping as many columns (e.g. all accepted equally): views, no copy.
        old_rows = next((layer.keys.shape[0] for layer in self._cache.layers if layer.is_initialized), 0)
        uniform = (src == list(range(old_rows)) and len(set(shift)) == 1 and shift[0] >= 0
                   and shift[0] + width <= old_width)
        for layer in self._cache.layers:
            if not layer.is_initialized:
                continue
            if uniform:
                layer.keys = layer.keys[:, :, shift[0]:shift[0] + width]
                layer.values = layer.values[:, :, shift[0]:shift[0] + width]
                continue
            dev = layer.keys.device  # device_map may spread layers over devices
            cols = torch.arange(width, device=dev) + torch.tensor(shift, device=dev).unsqueeze(1)
            cols = cols.clamp_(0, old_width - 1)  # padding columns read any old column; they stay masked
            rows = torch.tensor(src, device=dev).unsqueeze(1)
            # [B, width, heads, dim] -> [B, heads, width, dim]
            layer.keys = layer.keys[rows, :, cols].transpose(1, 2).contiguous()
            layer.values = layer.values[rows, :, cols].transpose(1, 2).contiguous()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
