"""Self-drafting through the model's own first layers (Kangaroo-style early exit): the first ``k``
decoder layers, a small trained adapter, the model's final norm and its LM head form a shallow draft
model that shares every weight with the target, so every user has it offline. It drafts a chain
autoregressively (with its own KV cache of ``k`` layers) and `generate` verifies the chain with the
full model. The adapter comes from ``verispec heads train --exit-layer k``.
"""

from __future__ import annotations

import copy

from torch import nn

from verispec.drafters.draft_model import DraftModelDrafter

__all__ = ["EarlyExitDrafter", "shallow_model"]

_LAYER_LISTS = ("layers", "h")  # Llama/Qwen/Gemma/Mistral ..., GPT-2


def shallow_model(model: nn.Module, exit_layer: int, adapter: nn.Module) -> nn.Module:
    """A view of ``model`` that runs its first ``exit_layer`` layers, then ``adapter``, the final norm
    and the LM head. Shares every parameter with ``model`` (nothing is copied, ``model`` is unchanged)."""
    from verispec.heads.train import final_norm

    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise ValueError(f"early exit needs a causal LM with a base model inside; {type(model).__name__} has none")
    name = next((n for n in _LAYER_LISTS if isinstance(getattr(base, n, None), nn.ModuleList)), None)
    if name is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} (looked for {_LAYER_LISTS})")
    norm = final_norm(model)
    norm_name = next(n for n, m in base.named_children() if m is norm)
    cfg = copy.copy(base.config)
    cfg.num_hidden_layers = exit_layer
    if hasattr(cfg, "n_layer"):
        cfg.n_layer = exit_layer
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types[:exit_layer])
    # Shallow copies with their own child tables: swapping children never touches the original modules.
    short = copy.copy(base)
    short._modules = dict(base._modules)
    short._modules[name] = nn.ModuleList(list(getattr(base, name))[:exit_layer])
    short._modules[norm_name] = nn.Sequential(adapter, norm)
    short.config = cfg
    top = copy.copy(model)
    top._modules = dict(model._modules)
    prefix = next(n for n, m in model.named_children() if m is base)
    top._modules[prefix] = short
    top.config = cfg
    return top


class EarlyExitDrafter(DraftModelDrafter):
    """Drafts a chain of ``num_tokens`` with the model's first layers + the trained adapter
    (`verispec.heads.load` of an ``--exit-layer`` training run). Sampling works as in
    `DraftModelDrafter` (``temperature > 0`` attaches the draft distributions)."""

    def __init__(self, model: nn.Module, heads, num_tokens: int = 3, temperature: float = 0.0, seed: int = 0):
        if heads.adapter is None or heads.config.exit_layer is None:
            raise ValueError("EarlyExitDrafter needs early-exit weights (trained with --exit-layer k)")
        self.exit_layer = int(heads.config.exit_layer)
        super().__init__(shallow_model(model, self.exit_layer, heads.adapter), num_tokens=num_tokens,
                         temperature=temperature, seed=seed)

    def __repr__(self) -> str:
        return f"EarlyExitDrafter(exit_layer={self.exit_layer}, num_tokens={self.num_tokens})"
