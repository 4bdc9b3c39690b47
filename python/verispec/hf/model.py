"""One stock Hugging Face causal LM seen as a verifier: ragged prefill and tree forwards.

`TreeModel` wraps the model without changing it. Prefill runs the prompts through the model's own
attention, grouped by length and never padded (so padding cannot corrupt anything), and places each
prompt's K/V at cache indices ``0..L-1`` of its own row. A tree forward runs ``T`` padded verification rows per request with
``position_ids = prefix_len + depth``, through `verispec.tree_attention` (``attention="tree"``) or
through the model's own attention with an additive 4D mask (``attention="mask"``).
"""

from __future__ import annotations

import inspect

import torch

from verispec.hf.attention import ATTN_NAME, TreeMeta, tree_mask_4d, use_attention
from verispec.hf.cache import RaggedCache
from verispec.ops.tree_buffers import TreeBuffers

__all__ = ["TreeModel", "check_model", "model_vocab_size"]

_NON_ATTENTION_LAYERS = {"linear_attention", "mamba", "conv", "hybrid", "hybrid_sliding", "recurrent"}


def _text_config(model: torch.nn.Module):
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def cache_kwarg(model: torch.nn.Module) -> str | None:
    """The forward argument that takes a key/value cache: ``cache`` (transformers >= 5.25, which
    deprecated the old name) or ``past_key_values`` (earlier versions); None when there is none."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def check_model(model: torch.nn.Module) -> None:
    """Raise a clear error when ``model`` cannot be driven by `verispec.generate`."""
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    if cfg is None or not isinstance(model, torch.nn.Module):
        raise TypeError(f"verispec.generate needs a transformers causal LM (a torch.nn.Module with .config), got {name}")
    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError(f"verispec.generate supports decoder-only causal LMs; {name} is an encoder-decoder model")
    if cache_kwarg(model) is None:
        raise ValueError(f"verispec.generate needs a model with a key/value cache; {name}.forward takes neither "
                         "cache nor past_key_values")
    if model.get_output_embeddings() is None:
        raise ValueError(f"verispec.generate needs a causal LM with a language-model head; {name} has none")
    layer_types = getattr(_text_config(model), "layer_types", None) or []
    odd = sorted(set(layer_types) & _NON_ATTENTION_LAYERS)
    if odd:
        raise ValueError(
            f"verispec.generate supports attention-only models; {name} has {', '.join(odd)} layers whose "
            "recurrent state cannot be rolled back per draft node"
        )


def model_vocab_size(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings()
    n = getattr(head, "out_features", None)
    if n is None and getattr(head, "weight", None) is not None:
        n = head.weight.shape[0]
    return int(n if n is not None else _text_config(model).vocab_size)


class TreeModel:
    """A Hugging Face causal LM driven by per-request caches and draft trees.

    Parameters
    ----------
    model : a transformers causal LM (decoder-only, with a key/value cache).
    attention : ``"tree"`` (`verispec.tree_attention` registered with transformers' AttentionInterface),
        ``"mask"`` (the model's own eager/SDPA attention with an additive 4D tree mask) or ``"auto"``:
        tree attention when the model's attention goes through the interface *and* a compiled
        tree-attention kernel runs on the model's device; otherwise the mask path, because SDPA beats
        the readable torch reference of tree attention. Both paths are exact and tested equal.
    backend : `verispec.tree_attention` / `verispec.commit_kv` backend.
    """

    def __init__(self, model: torch.nn.Module, attention: str = "auto", backend: str = "auto"):
        check_model(model)
        if attention not in ("auto", "tree", "mask"):
            raise ValueError(f"attention must be 'auto', 'tree' or 'mask', got {attention!r}")
        p = next(model.parameters())
        if attention == "auto":
            attention = "mask"
            if getattr(model, "_supports_attention_backend", False):
                from verispec._backends import resolve

                kernel, _ = resolve("tree_attention", backend, p.device)
                attention = "tree" if kernel != "torch" else "mask"
        elif attention == "tree" and not getattr(model, "_supports_attention_backend", False):
            raise ValueError(
                f"{type(model).__name__} does not route attention through transformers' AttentionInterface; "
                "use attention='mask' (or 'auto')"
            )
        self.model = model
        self.attention = attention
        self.backend = backend
        self.config = _text_config(model)
        self.vocab_size = model_vocab_size(model)
        self.device, self.dtype = p.device, p.dtype
        # The mask path needs an attention that reads 4D masks: flash-attention kernels do not.
        current = getattr(model.config, "_attn_implementation", None)
        if current in ("eager", "sdpa"):
            self._mask_impl = None
        else:
            self._mask_impl = "sdpa" if getattr(model, "_supports_sdpa", False) else "eager"
        self.num_layers = int(getattr(self.config, "num_hidden_layers", 0) or 0)
        self._base = getattr(model, "base_model", None) or model
        self._cache_kw = cache_kwarg(model)
        self._base_cache_kw = cache_kwarg(self._base) or self._cache_kw
        self._head = model.get_output_embeddings()
        self.hidden_size = int(self._head.weight.shape[1])  # what the LM head reads

    def new_cache(self, batch_size: int, capacity: int) -> RaggedCache:
        return RaggedCache(self.num_layers, batch_size, capacity, self.device)

    @torch.inference_mode()
    def prefill(self, cache: RaggedCache, prompts: list[list[int]], chunk: int = 64,
                hidden: bool = False) -> torch.Tensor | None:
        """Cache the K/V of every prompt but its last token (that token is the first step's root).

        Prompts of equal length run together (no padding exists, so none can leak into the cache);
        every other prompt runs on its own. With ``hidden``, returns ``[B, d]``: the final hidden state
        of each prompt's last cached token (zeros for one-token prompts, which cache nothing).
        """
        last = torch.zeros(len(prompts), self.hidden_size, device=self.device, dtype=self.dtype) if hidden else None
        by_len: dict[int, list[int]] = {}
        for b, prompt in enumerate(prompts):
            if len(prompt) > 1:
                by_len.setdefault(len(prompt) - 1, []).append(b)
        for n, rows in by_len.items():
            for i in range(0, len(rows), chunk):
                part = rows[i:i + chunk]
                ids = torch.tensor([prompts[b][:-1] for b in part], dtype=torch.long, device=self.device)
                cache.plan_prefill(part)
                # The base model (no LM head): the prefill's logits are never needed.
                out = self._base(input_ids=ids, position_ids=torch.arange(n, device=self.device).expand(len(part), n),
                                 use_cache=True, **{self._base_cache_kw: cache})
                cache.set_prefill_length(part, n)
                if last is not None:
                    last[torch.tensor(part, device=self.device)] = out.last_hidden_state[:, -1].to(last.dtype)
        cache.reset_plan()
        return last

    @torch.inference_mode()
    def forward_tree(self, cache: RaggedCache, input_ids: torch.Tensor, tree_lens: torch.Tensor,
                     buffers: TreeBuffers, hidden: bool = False):
        """Logits ``[R, V]`` of every verification row (`TreeBuffers` row order: per request the root,
        then its nodes) for the padded rows ``input_ids [B, T]`` (int64); no host synchronisation.

        With ``hidden``, returns ``(logits, hidden [B, T, d])``: the padded rows' final hidden states,
        read off the same forward (the LM head's input, by a hook), for drafters that need them."""
        seen: list[torch.Tensor] = []
        hook = self._head.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) if hidden else None
        try:
            logits = self._forward_tree(cache, input_ids, tree_lens, buffers)
        finally:
            if hook is not None:
                hook.remove()
        return (logits, seen[-1]) if hidden else logits

    def _forward_tree(self, cache: RaggedCache, input_ids: torch.Tensor, tree_lens: torch.Tensor,
                      buffers: TreeBuffers) -> torch.Tensor:
        B, T = input_ids.shape
        meta = TreeMeta(
            prefix_lens=cache.prefix_lens,
            tree_lens=tree_lens,
            ancestors=buffers.padded_ancestors(B, T),
            positions=(cache.prefix_lens.view(-1, 1) + buffers.padded_depths(B, T)).to(torch.int32),
            backend=self.backend,
        )
        cache.plan_tree(T)
        position_ids = meta.positions.long()
        if self.attention == "tree":
            with use_attention(self.model, ATTN_NAME):
                out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=True, verispec_tree=meta,
                                 **{self._cache_kw: cache})
        else:
            kv_len = cache._mask_sizes(T)[0]
            with use_attention(self.model, self._mask_impl):
                out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=True,
                                 attention_mask=self._masks(meta, kv_len), **{self._cache_kw: cache})
        return out.logits[buffers.request.long(), buffers.local_rows()]

    def _masks(self, meta: TreeMeta, kv_len: int):
        cfg = self.config
        window = getattr(cfg, "sliding_window", None)
        layer_types = getattr(cfg, "layer_types", None)
        if layer_types:
            # Models with per-layer mask types (Gemma 2, Qwen 2 ...) take a dict of prepared masks.
            masks = {}
            for kind in set(layer_types):
                w = window if kind in ("sliding_attention", "chunked_attention") else None
                masks[kind] = tree_mask_4d(meta, kv_len, self.dtype, w)
            return masks
        use_window = window if getattr(cfg, "use_sliding_window", True) else None
        return tree_mask_4d(meta, kv_len, self.dtype, use_window)
