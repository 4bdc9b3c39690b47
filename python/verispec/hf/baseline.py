"""Plain Hugging Face decoding as the baseline every comparison runs against (demo, benchmarks): one
timed ``model.generate`` call that also counts the model's forward calls (its decoding steps, prompt
lookup's verification forwards included)."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["hf_generate"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def hf_generate(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, pad_token_id: int = 0,
                **kwargs: Any) -> tuple[list[int], float, int]:
    """Greedy ``model.generate`` of one prompt: ``(prompt + new tokens, seconds, forward calls)``.
    Extra keyword arguments go to ``generate`` (e.g. ``prompt_lookup_num_tokens=10``)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad_token_id, **kwargs)
        _sync(device)
        seconds = time.perf_counter() - t0
    finally:
        handle.remove()
    return out[0].tolist(), seconds, calls[0]
