"""Training heads on a frozen base model.

The base model never changes, so its hidden states are computed once (`encode`) and the heads are
trained on random batches of positions: a head reads one position's hidden state, so positions are
independent examples. Head ``i`` (1-based) at position ``t`` learns the token at ``t + 1 + i``; the
losses are weighted ``decay ** (i - 1)`` (Medusa uses 0.8). AdamW, lr 1e-3, cosine decay after a
linear warm-up over the first 10 % of the steps. Checkpoints hold the heads, the optimiser and the
step, so an interrupted run resumes where it stopped.

Early exit (``exit_layer = k``): the hidden state after ``k`` decoder layers goes through a trained
adapter, the model's final norm and its LM head, and learns the next token; the same loop trains it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from verispec.heads.model import Heads

__all__ = ["Encoded", "encode", "train_heads", "evaluate", "final_norm"]


@dataclass
class Encoded:
    """Positions of a corpus: ``hidden [P, d]`` (float16, CPU) and ``targets [P, K + 1]`` (int64; column
    ``j`` is the token ``j + 1`` positions ahead, -1 past the end of its sequence)."""

    hidden: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.hidden.shape[0])


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", None) or model


def final_norm(model: nn.Module) -> nn.Module:
    """The base model's final norm (``norm``, ``ln_f``, ``final_layernorm``), applied before its LM head."""
    base = _base(model)
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        m = getattr(base, name, None)
        if isinstance(m, nn.Module):
            return m
    raise ValueError(f"cannot find the final norm of {type(model).__name__} (early exit needs it)")


@torch.inference_mode()
def encode(model: nn.Module, seqs: Sequence[Sequence[int]], num_heads: int, exit_layer: Optional[int] = None,
           batch_tokens: int = 2048, progress: Optional[Callable[[int, int], None]] = None) -> Encoded:
    """Hidden states of every position of ``seqs`` under the frozen ``model``: the final hidden state
    (what the LM head reads), or the one after ``exit_layer`` layers."""
    dev = next(model.parameters()).device
    base = _base(model)
    seen: list[torch.Tensor] = []
    if exit_layer is not None:
        # Run only the first `exit_layer` layers: a shallow view whose final norm records its input.
        from verispec.drafters.early_exit import shallow_model

        base = _base(shallow_model(model, exit_layer, nn.Identity()))
        base.register_forward_pre_hook(lambda _m, _a: seen.clear())
        next(m for m in base.modules() if isinstance(m, nn.Sequential)).register_forward_pre_hook(
            lambda _m, args: seen.append(args[0]))
    hs, ts = [], []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    i = 0
    done = 0
    while i < len(order):
        L = len(seqs[order[i]])
        j = i
        while j < len(order) and len(seqs[order[j]]) == L and (j - i + 1) * L <= max(batch_tokens, L):
            j += 1
        group = [seqs[order[g]] for g in range(i, j)]
        ids = torch.tensor(group, dtype=torch.long, device=dev)
        h = base(input_ids=ids, use_cache=False).last_hidden_state
        if exit_layer is not None:
            h = seen[-1]
        hs.append(h.reshape(-1, h.shape[-1]).to("cpu", torch.float16))
        full = torch.full((len(group), L + num_heads + 1), -1, dtype=torch.long)
        full[:, :L] = ids.cpu()
        ts.append(torch.stack([full[:, 1 + k: 1 + k + L] for k in range(num_heads + 1)], dim=-1).reshape(-1, num_heads + 1))
        done += j - i
        i = j
        if progress:
            progress(done, len(seqs))
    return Encoded(torch.cat(hs), torch.cat(ts))


def _logits(heads: Heads, model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``[B, k, V']``: head logits, or (early exit) ``[B, 1, V]`` of adapter + final norm + LM head."""
    if heads.adapter is not None:
        return model.get_output_embeddings()(final_norm(model)(heads.adapter(h))).unsqueeze(1)
    return heads(h)


def _columns(heads: Heads, enc_targets: torch.Tensor) -> torch.Tensor:
    """Targets as output columns ``[B, k]`` (-1 = ignored: past the end, or outside the subset)."""
    t = enc_targets[:, :1] if heads.adapter is not None else enc_targets[:, 1: 1 + heads.num_heads]
    if heads.use_full_vocab:
        return t
    lut = torch.full((heads.config.vocab_size + 1,), -1, dtype=torch.long)
    lut[heads.vocab_ids.cpu()] = torch.arange(heads.vocab_ids.numel())
    return lut[t.clamp(min=-1)]  # -1 indexes the last entry, which is -1


def _schedule(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def train_heads(heads: Heads, model: nn.Module, data: Encoded, steps: int, *, batch_size: int = 256,
                lr: float = 1e-3, warmup: float = 0.1, decay: float = 0.8, checkpoint: Optional[Path] = None,
                checkpoint_every: int = 200, seed: int = 0, log_every: int = 20,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    """Train ``heads`` (in place) for ``steps`` batches of ``batch_size`` positions; returns the cost
    (``train_s``, ``steps``, ``final_loss``, ``running_top1``)."""
    for p in model.parameters():
        p.requires_grad_(False)
    heads.train()
    params = heads.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    dev = next(model.parameters()).device
    dtype = next(heads.parameters()).dtype
    cols = _columns(heads, data.targets)
    n_out = cols.shape[1]
    w = torch.tensor([decay**i for i in range(n_out)], dtype=torch.float32, device=dev)
    start, elapsed = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        heads.load_state_dict(ck["heads"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start, elapsed = int(ck["step"]), float(ck.get("elapsed", 0.0))
        log(f"resuming from {checkpoint} at step {start}/{steps}")
    gen = torch.Generator().manual_seed(seed + start)
    P = len(data)
    hits = torch.zeros(n_out)
    counts = torch.zeros(n_out)
    loss_avg = first_loss = None
    t0 = time.perf_counter() - elapsed
    t_resume = time.perf_counter()
    for step in range(start, steps):
        idx = torch.randint(0, P, (batch_size,), generator=gen)
        h = data.hidden[idx].to(dev, dtype)
        tgt = cols[idx].to(dev)
        logits = _logits(heads, model, h).float()
        losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-1,
                                             reduction="none").view_as(tgt)
        valid = (tgt >= 0).float()
        per_head = (losses * valid).sum(0) / valid.sum(0).clamp(min=1)
        loss = (per_head * w).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            hit = (logits.argmax(-1) == tgt).float() * valid
            hits = 0.98 * hits + hit.sum(0).cpu()
            counts = 0.98 * counts + valid.sum(0).cpu()
        loss = loss.detach()
        first_loss = float(loss) if first_loss is None else first_loss
        loss_avg = float(loss) if loss_avg is None else 0.95 * loss_avg + 0.05 * float(loss)
        done = step + 1
        if done % log_every == 0 or done == steps:
            el = time.perf_counter() - t0
            acc = " ".join(f"{float(a):.2f}" for a in hits / counts.clamp(min=1))
            eta = (time.perf_counter() - t_resume) / max(1, done - start) * (steps - done)
            log(f"step {done}/{steps} loss {loss_avg:.3f} top-1 per head [{acc}] lr {sched.get_last_lr()[0]:.2e} "
                f"{el:.0f}s elapsed, ~{eta:.0f}s left")
        if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"heads": heads.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": done, "elapsed": time.perf_counter() - t0}, tmp)
            tmp.replace(checkpoint)
    heads.eval()
    return {"train_s": round(time.perf_counter() - t0, 1), "steps": steps, "batch_size": batch_size,
            "first_loss": None if first_loss is None else round(first_loss, 4),
            "final_loss": None if loss_avg is None else round(loss_avg, 4),
            "running_top1": [round(float(a), 4) for a in hits / counts.clamp(min=1)]}


@torch.no_grad()
def evaluate(heads: Heads, model: nn.Module, data: Encoded, max_rank: int = 10, batch_size: int = 512) -> torch.Tensor:
    """float64 ``[k, max_rank]``: entry ``[i, r]`` = fraction of held-out positions where head ``i``'s
    target is among its top ``r + 1`` (Medusa's table: column 0 is top-1, column 4 top-5). Targets
    outside a vocabulary subset count as misses."""
    heads.eval()
    dev = next(model.parameters()).device
    dtype = next(heads.parameters()).dtype
    n_out = 1 if heads.adapter is not None else heads.num_heads
    raw = data.targets[:, :1] if heads.adapter is not None else data.targets[:, 1: 1 + n_out]
    hits = torch.zeros(n_out, max_rank, dtype=torch.float64)
    valid = torch.zeros(n_out, dtype=torch.float64)
    for s in range(0, len(data), batch_size):
        h = data.hidden[s: s + batch_size].to(dev, dtype)
        tgt = raw[s: s + batch_size].to(dev)
        logits = _logits(heads, model, h)
        top = logits.topk(max_rank, dim=-1).indices
        ids = top if heads.adapter is not None else heads.token_ids(top)
        first = (ids == tgt.unsqueeze(-1)).int().cumsum(-1).clamp(max=1)  # [B, k, R]: hit within top r+1
        ok = (tgt >= 0).unsqueeze(-1)
        hits += (first * ok).sum(0).double().cpu()
        valid += (tgt >= 0).sum(0).double().cpu()
    return hits / valid.clamp(min=1).unsqueeze(1)
