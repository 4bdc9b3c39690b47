"""Routing a stock Hugging Face model's attention through `verispec.tree_attention`.

Modern transformers models look their attention function up by name
(``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation)``) and pass every extra forward
keyword argument down to it. We register a function under the name ``"verispec"`` and, for the
duration of a verification forward, set the model's ``_attn_implementation`` to it: the model's own
projections, RoPE, norms and MLPs run unchanged, and only the score/softmax/value step is ours. The
tree metadata travels as the forward keyword argument ``verispec_tree`` (a `TreeMeta`).

No mask function is registered for ``"verispec"``, so ``create_causal_mask`` returns ``None`` early and
never builds an ``[B, 1, T, S]`` mask we would ignore.

Models whose attention does not go through that interface get `tree_mask_4d` instead: an additive
``[B, 1, T, S]`` mask (ancestors, prefix, padding, sliding window) handed to the model's own
eager/SDPA attention.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import AttentionInterface

from verispec.ops.tree_attention import tree_attention, tree_mask_bits

__all__ = ["ATTN_NAME", "TreeMeta", "verispec_attention_forward", "use_attention", "tree_mask_4d"]

ATTN_NAME = "verispec"

# Keyword arguments models pass to attention functions that carry no semantics we must honour.
_IGNORED = {"dropout", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k",
            "output_attentions", "use_cache", "cache_position", "is_causal", "layer_idx", "position_embeddings"}


@dataclass
class TreeMeta:
    """Tree metadata of one verification forward (all on the model's device).

    Attributes
    ----------
    prefix_lens : int32 ``[B]``, cached prefix length per request.
    tree_lens : int32 ``[B]``, verification rows per request (root + draft nodes).
    ancestors : uint32 ``[B, T, W]``, ancestor bits per padded row (see `verispec.tree_attention`).
    positions : int32 ``[B, T]``, ``prefix_lens + depth`` (root depth 0).
    backend : tree_attention backend name.
    """

    prefix_lens: torch.Tensor
    tree_lens: torch.Tensor
    ancestors: torch.Tensor
    positions: torch.Tensor
    backend: str = "auto"


def verispec_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The attention function registered as ``"verispec"``.

    query ``[B, Hq, T, D]``; key/value ``[B, Hkv, S, D]`` as returned by `RaggedCache.update` (row ``t``
    of request ``b`` already at index ``prefix_lens[b] + t``). Returns ``([B, T, Hq, D], None)``, the
    layout Hugging Face attention functions return.
    """
    meta: Optional[TreeMeta] = kwargs.pop("verispec_tree", None)
    name = type(module).__name__
    if meta is None:
        raise RuntimeError(
            f"{name}: attention implementation 'verispec' was called without tree metadata; it is only "
            "meant to run inside verispec.generate"
        )
    for k, v in kwargs.items():
        if k in _IGNORED or v is None:
            continue
        if k == "s_aux":
            raise NotImplementedError(f"{name}: attention sinks (s_aux) are not supported by verispec.tree_attention")
    if sliding_window is not None and sliding_window <= 0:
        sliding_window = None
    out = tree_attention(
        query, key, value, meta.prefix_lens, meta.tree_lens, meta.ancestors, meta.positions,
        scale=scaling, softcap=softcap or None, window=sliding_window, backend=meta.backend,
    )
    return out.transpose(1, 2), None


AttentionInterface.register(ATTN_NAME, verispec_attention_forward)


def _configs(model: torch.nn.Module) -> list[Any]:
    seen: dict[int, Any] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextmanager
def use_attention(model: torch.nn.Module, name: Optional[str]):
    """Temporarily set the attention implementation of every config in ``model`` (None: leave as is)."""
    if name is None:
        yield
        return
    configs = _configs(model)
    saved = [(c, c._attn_implementation_internal) for c in configs]
    try:
        for c in configs:
            c._attn_implementation_internal = name
        yield
    finally:
        for c, old in saved:
            c._attn_implementation_internal = old


def tree_mask_4d(
    meta: TreeMeta, kv_len: int, dtype: torch.dtype, window: Optional[int] = None
) -> torch.Tensor:
    """Additive mask ``[B, 1, T, kv_len]`` (0 = visible, dtype's min = hidden) for the fallback path.

    Request ``b``'s query row ``t`` sees cache indices ``j < prefix_lens[b]`` and tree rows that are ``t``
    or its ancestors (index ``prefix_lens[b] + u``), restricted to keys at positions ``> pos - window``.
    Padded rows see only themselves, so no softmax row is empty.
    """
    B, T = meta.positions.shape
    dev = meta.positions.device
    L = meta.prefix_lens.long().view(B, 1, 1)
    j = torch.arange(kv_len, device=dev).view(1, 1, kv_len)
    t = torch.arange(T, device=dev).view(1, T, 1)
    u = j - L  # tree row of cache index j
    anc = tree_mask_bits(meta.ancestors, T)  # [B, T, T]
    in_tree = (u >= 0) & (u < meta.tree_lens.long().view(B, 1, 1))
    anc_vis = torch.gather(anc, 2, u.clamp(0, T - 1).expand(B, T, kv_len))
    visible = (j < L) | (in_tree & anc_vis)
    if window is not None and window > 0:
        pos = meta.positions.long()
        kpos = torch.where(j < L, j, torch.gather(pos, 1, u.clamp(0, T - 1).view(B, kv_len)).view(B, 1, kv_len))
        visible &= kpos > pos.view(B, T, 1) - window
    padded = t >= meta.tree_lens.long().view(B, 1, 1)
    visible = torch.where(padded, j == L + t, visible)
    mask = torch.zeros((B, 1, T, kv_len), dtype=dtype, device=dev)
    return mask.masked_fill_(~visible.unsqueeze(1), torch.finfo(dtype).min)
