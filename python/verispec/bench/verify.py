"""Acceptance (verify) benchmark inputs and implementations: verispec's backends beside FlashInfer's
chain kernel (when installed), against the floor of reading the target logits once.

Cases: ``greedy`` (chains, greedy acceptance), ``exact_chain`` (chains sampled from a draft model's
``draft_probs``, temperature 1: FlashInfer's ``chain_speculative_sampling`` workload) and ``exact_tree``
(deterministic retrieval drafts: four chains under the root).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from verispec.bench._common import Context, entry, failure

CASES = ("greedy", "exact_chain", "exact_tree")
BS, KS, VS = (1, 8, 64, 256), (4, 8, 16, 64), (32000, 128256, 151936)


def make_case(case: str, B: int, K: int, V: int, device, dtype=torch.bfloat16, seed: int = 0) -> dict:
    """Inputs for one benchmark case, generated on `device` (large shapes never touch host memory)."""
    from verispec.ops.tree_buffers import tree_buffers

    g = torch.Generator(device=device).manual_seed(seed)
    if case == "exact_tree":
        fan = min(4, K)
        parents = [-1] * fan + [j - fan for j in range(fan, K)]  # four interleaved chains
    else:
        parents = list(range(-1, K - 1))
    par = torch.tensor(parents, dtype=torch.int32).repeat(B).to(device)
    cu = (torch.arange(B + 1, dtype=torch.int32) * K).to(device)
    logits = torch.randn(B * (K + 1), V, generator=g, device=device).mul_(2).to(dtype)
    c = {"B": B, "K": K, "V": V, "case": case, "logits": logits, "parents": par, "cu": cu}
    if case == "exact_chain":
        q = torch.softmax(torch.randn(B * K, V, generator=g, device=device).mul_(2), dim=1)
        c["draft_probs"] = q
        c["tokens"] = torch.multinomial(q, 1, generator=g).squeeze(1).to(torch.int32)
    else:
        # drafts that often match the target's argmax so walks go deep
        rows = logits.view(B, K + 1, V)
        want = rows[:, :K].float().argmax(-1)
        noise = torch.randint(0, V, (B, K), generator=g, device=device)
        keep = torch.rand(B, K, generator=g, device=device) < 0.7
        c["tokens"] = torch.where(keep, want, noise).reshape(-1).to(torch.int32)
    c["buffers"] = tree_buffers(par, cu, max_rows=K + 1, validate=False)
    c["max_depth"] = K if case != "exact_tree" else (K + fan - 1) // fan
    c["seed"] = torch.arange(B, device=device)
    c["offset"] = torch.zeros(B, dtype=torch.int64, device=device)
    return c


def run_verispec(c: dict, backend: str) -> Callable:
    import verispec

    mode = "greedy" if c["case"] == "greedy" else "exact"
    kw = dict(mode=mode, buffers=c["buffers"], max_depth=c["max_depth"], validate=False, backend=backend,
              seed=c["seed"], offset=c["offset"], draft_probs=c.get("draft_probs"))
    flat = (c["tokens"], c["parents"], c["cu"])
    return lambda: verispec.verify(c["logits"], flat, **kw)


def run_flashinfer(c: dict, include_softmax: bool) -> Optional[Callable]:
    """FlashInfer's chain kernel on the same drafts (it takes float32 probabilities: timed from given
    probabilities, and including the softmax a caller must run first); None when not installed."""
    try:
        from flashinfer.sampling import chain_speculative_sampling
    except Exception:
        return None
    B, K, V = c["B"], c["K"], c["V"]
    q = c["draft_probs"].view(B, K, V)
    ids = c["tokens"].view(B, K)
    probs = torch.softmax(c["logits"].float(), dim=-1).view(B, K + 1, V)

    def fn():
        p = torch.softmax(c["logits"].float(), dim=-1).view(B, K + 1, V) if include_softmax else probs
        return chain_speculative_sampling(q, ids, p)

    return fn


def shapes(gpu: bool, quick: bool) -> list[tuple[str, int, int, int]]:
    if gpu:
        if quick:  # the target shape for every case, plus the smallest and largest
            return [(c, 64, 4, 128256) for c in CASES] + [("greedy", 1, 4, 32000), ("exact_chain", 256, 16, 151936)]
        return [(c, B, K, V) for c in CASES for B in BS for K in KS for V in VS if B * (K + 1) * V * 2 <= 12 * 2**30]
    if quick:
        return [(c, 8, 8, 32000) for c in CASES]
    return [(c, B, 8, V) for c in CASES for B in (1, 8) for V in (32000, 128256)]


def backends(gpu: bool) -> tuple[str, ...]:
    # On CPU Triton runs in its interpreter: correct, but timing it would mean nothing.
    return ("cuda", "triton", "torch") if gpu else ("torch",)


def run(ctx: Context) -> dict:
    dtype = torch.bfloat16 if ctx.gpu else torch.float32
    bw = ctx.bandwidth
    rows = []
    for case, B, K, V in shapes(ctx.gpu, ctx.quick):
        R = B * (K + 1)
        c = make_case(case, B, K, V, ctx.device, dtype=dtype)
        floor_ms = R * V * c["logits"].element_size() / (bw * 1e9) * 1e3
        impls: dict[str, Optional[Callable]] = {}
        for be in backends(ctx.gpu):
            if be == "torch" and ctx.gpu and R * V > 2**27:  # materialises float32 [R, V] tensors
                continue
            impls[f"verispec {be}"] = run_verispec(c, be)
        if case == "exact_chain":
            impls["flashinfer chain"] = run_flashinfer(c, include_softmax=False)
            impls["flashinfer chain+softmax"] = run_flashinfer(c, include_softmax=True)
        row = {"shape": f"{case} B={B} K={K} V={V}", "params": {"case": case, "B": B, "K": K, "V": V},
               "floor_ms": floor_ms, "impls": {}}
        for name, fn in impls.items():
            if fn is None:
                row["impls"][name] = {"skipped": "not installed"}
                continue
            try:
                row["impls"][name] = entry(ctx.time(fn), floor_ms)
            except Exception as exc:  # a backend that cannot run here is reported, not fatal
                row["impls"][name] = failure(exc)
        rows.append(row)
        ctx.log(f"verify {row['shape']}: " + ", ".join(
            f"{n} {e['ms']:.3f} ms" for n, e in row["impls"].items() if "ms" in e))
        del c
    return {"op": "verify", "rows": rows,
            "floor": f"read the {'bf16' if ctx.gpu else 'float32'} target logits once at the measured copy bandwidth",
            "notes": [] if ctx.gpu else ["CPU: the torch backend only (Triton would run in its interpreter)"]}
