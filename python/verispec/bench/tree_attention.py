"""Tree attention benchmark inputs and implementations: verispec (Triton, CUDA; torch on CPU) beside
the ways people verify draft trees today.

Shapes are Llama-3-8B's attention (32 query heads, 8 KV heads, D = 128, bf16 on a GPU). Peers, timed
on the same inputs:

* ``sdpa_dense``   torch SDPA with a dense boolean [B, 1, T, L+T] mask (Medusa / HF 4D-mask path);
* ``flex``         FlexAttention (torch.compile on a GPU) with a tree block mask, kernel only;
* ``flex+mask``    the same plus rebuilding the block mask, as a new tree each step requires;
* ``flashinfer``   FlashInfer ragged prefill with a custom mask, when flashinfer imports;
* ``sdpa_causal``  SDPA with bottom-right causal masking at the same T and L: the practical lower
                   bound (no tree, no mask bits; another function, so only checked for finiteness).

The floor is moving the bytes that must move (K and V of L+T keys per KV head, Q in, O out) at the
measured copy bandwidth.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from verispec.bench._common import Context, entry, failure, gpu_timer
from verispec.ops.tree_attention import tree_attention, tree_attention_problem


@dataclass
class Problem:
    B: int
    L: int
    T: int
    Hq: int = 32
    Hkv: int = 8
    D: int = 128
    dtype: torch.dtype = torch.bfloat16
    tensors: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"B={self.B} L={self.L} T={self.T}"

    def floor_bytes(self) -> int:
        """Bytes any exact implementation must move: K/V of every visible key, Q in, O out."""
        e = torch.tensor([], dtype=self.dtype).element_size()
        kv = 2 * self.B * self.Hkv * (self.L + self.T) * self.D * e
        qo = 2 * self.B * self.Hq * self.T * self.D * e
        return kv + qo


def random_parents(n: int, rng: random.Random) -> list[int]:
    """A drafter-like tree: mostly extends a recent node, sometimes branches near the root."""
    parents = []
    for i in range(n):
        parents.append(-1 if i == 0 or rng.random() < 0.1 else rng.randrange(max(-1, i - 4), i))
    return parents


def build(pr: Problem, device: torch.device, seed: int = 0) -> Problem:
    rng = random.Random(seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    B, L, T, Hq, Hkv, D = pr.B, pr.L, pr.T, pr.Hq, pr.Hkv, pr.D
    S = L + T
    W = (T + 31) // 32
    anc = torch.zeros(B, T, W, dtype=torch.int64)
    pos = torch.zeros(B, T, dtype=torch.int32)
    dense = torch.zeros(B, T, S, dtype=torch.bool)
    dense[:, :, :L] = True
    for b in range(B):
        rp = [-1] + [p + 1 for p in random_parents(T - 1, rng)]
        for t in range(T):
            u, depth = t, -1
            while u >= 0:
                anc[b, t, u // 32] |= 1 << (u % 32)
                dense[b, t, L + u] = True
                u, depth = rp[u], depth + 1
            pos[b, t] = L + depth
    anc = torch.where(anc >= 2**31, anc - 2**32, anc).to(torch.int32).view(torch.uint32)
    q = torch.randn(B, Hq, T, D, generator=g).to(pr.dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(pr.dtype)
    v = torch.randn(B, Hkv, S, D, generator=g).to(pr.dtype)
    t = dict(q=q, k=k, v=v, prefix_lens=torch.full((B,), L, dtype=torch.int32),
             tree_lens=torch.full((B,), T, dtype=torch.int32), ancestors=anc, positions=pos, dense=dense)
    pr.tensors = {name: x.to(device) for name, x in t.items()}
    return pr


# Implementations: each takes a built Problem and returns a zero-argument callable producing
# [B, Hq, T, D] (or raises ImportError when its library is not installed).


def _args(pr: Problem):
    t = pr.tensors
    return t["q"], t["k"], t["v"], t["prefix_lens"], t["tree_lens"], t["ancestors"], t["positions"]


def impl_verispec(backend: str, num_splits: Optional[int] = None, config=None):
    def make(pr: Problem) -> Callable[[], torch.Tensor]:
        args = _args(pr)
        out = torch.empty_like(pr.tensors["q"])
        if backend == "triton" and (num_splits is not None or config is not None):
            from verispec.ops.triton.tree_attention import tree_attention_fwd

            p = tree_attention_problem(*args, out=out)
            return lambda: tree_attention_fwd(p, out, num_splits=num_splits, config=config)
        import verispec

        return lambda: verispec.tree_attention(*args, out=out, backend=backend)

    return make


TUNE_MIN_L = 16384  # where the bandwidth target is judged; each config is a ~2 s compile on the device
SM90_SHARED = 232448


def impl_triton_tuned(pr: Problem):
    """Best of a small sweep of Triton tile configs (tuning aid; not in the default peer list).
    The winning config is reported in the row's entry as ``config``. Shapes below ``TUNE_MIN_L`` are
    skipped (None), and configs whose Q tile plus K/V stages cannot fit an sm_90 block are not tried."""
    from verispec.ops.triton.tree_attention import _pick_blocks, tree_attention_fwd

    if pr.L < TUNE_MIN_L:
        return None
    args = _args(pr)
    out = torch.empty_like(pr.tensors["q"])
    p = tree_attention_problem(*args, out=out)
    block_m = _pick_blocks(pr.Hq // pr.Hkv, pr.T, pr.D)[0]
    best = None
    for block_n in (32, 64, 128):
        for warps in (4, 8):
            for stages in (2, 3):
                if (block_m + 2 * stages * block_n) * pr.D * 2 > SM90_SHARED:
                    continue
                cfg = (block_m, block_n, warps, stages)
                fn = lambda cfg=cfg: tree_attention_fwd(p, out, config=cfg)  # noqa: E731
                try:
                    ms = gpu_timer(fn, warmup=5, rep=20)
                except Exception:  # out of shared memory / registers for this config
                    continue
                if best is None or ms < best[0]:
                    best = (ms, cfg, fn)
    if best is None:
        raise RuntimeError("no Triton config ran")
    TUNED[pr.label] = best[1]
    return best[2]


TUNED: dict[str, tuple] = {}


def impl_sdpa_dense(pr: Problem):
    F = torch.nn.functional
    q, k, v = pr.tensors["q"], pr.tensors["k"], pr.tensors["v"]
    mask = pr.tensors["dense"][:, None]
    try:
        F.scaled_dot_product_attention(q[:1, :, :1], k[:1], v[:1], attn_mask=mask[:1, :, :1], enable_gqa=True)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    except (RuntimeError, TypeError):  # no GQA support: repeat K/V the way HF's repeat_kv does, inside the timing
        rep = pr.Hq // pr.Hkv
        return lambda: F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask)


def impl_sdpa_causal(pr: Problem):
    from torch.nn.attention.bias import causal_lower_right

    F = torch.nn.functional
    q, k, v = pr.tensors["q"], pr.tensors["k"], pr.tensors["v"]
    bias = causal_lower_right(pr.T, pr.L + pr.T)
    try:
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    except (RuntimeError, TypeError, ValueError):
        rep = pr.Hq // pr.Hkv
        kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)  # outside the timing: a bound
        return lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=bias)


_FLEX = {}


def _flex_parts(pr: Problem):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "fn" not in _FLEX:
        compiled = pr.tensors["q"].device.type == "cuda"
        if compiled:
            # One static compile per shape: a full sweep has dozens, past Dynamo's default limit of 8
            # (after which it silently runs flex eagerly and the timing means nothing).
            import torch._dynamo.config as dynamo_config

            for knob in ("recompile_limit", "cache_size_limit"):
                if hasattr(dynamo_config, knob):
                    setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 128))
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    dense = pr.tensors["dense"]

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[b, q_idx, kv_idx]

    def block_mask():
        return create_block_mask(mask_mod, pr.B, None, pr.T, pr.L + pr.T, device=dense.device)

    return _FLEX["fn"], block_mask


def impl_flex(rebuild: bool):
    def make(pr: Problem):
        fn, block_mask = _flex_parts(pr)
        q, k, v = pr.tensors["q"], pr.tensors["k"], pr.tensors["v"]
        if rebuild:
            return lambda: fn(q, k, v, block_mask=block_mask(), enable_gqa=True)
        bm = block_mask()
        return lambda: fn(q, k, v, block_mask=bm, enable_gqa=True)

    return make


def impl_flashinfer(pr: Problem):
    import flashinfer  # noqa: F401  (ImportError: reported as unavailable)

    B, T, S, Hq, Hkv, D = pr.B, pr.T, pr.L + pr.T, pr.Hq, pr.Hkv, pr.D
    dev = pr.tensors["q"].device
    q = pr.tensors["q"].transpose(1, 2).reshape(B * T, Hq, D).contiguous()
    k = pr.tensors["k"].transpose(1, 2).reshape(B * S, Hkv, D).contiguous()
    v = pr.tensors["v"].transpose(1, 2).reshape(B * S, Hkv, D).contiguous()
    ws = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=dev)
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(ws, "NHD")
    qo_indptr = torch.arange(0, B + 1, dtype=torch.int32, device=dev) * T
    kv_indptr = torch.arange(0, B + 1, dtype=torch.int32, device=dev) * S
    wrapper.plan(qo_indptr, kv_indptr, Hq, Hkv, D, custom_mask=pr.tensors["dense"].reshape(-1), q_data_type=pr.dtype)
    return lambda: wrapper.run(q, k, v)


# Output layout of each peer relative to verispec's [B, Hq, T, D].
def _as_bhtd(name: str, out: torch.Tensor, pr: Problem) -> torch.Tensor:
    if name == "flashinfer":
        return out.view(pr.B, pr.T, pr.Hq, pr.D).transpose(1, 2)
    return out


PEERS: dict[str, Callable] = {
    "verispec_triton": impl_verispec("triton"),
    "verispec_cuda": impl_verispec("cuda"),
    "sdpa_dense": impl_sdpa_dense,
    "flex": impl_flex(rebuild=False),
    "flex+mask": impl_flex(rebuild=True),
    "flashinfer": impl_flashinfer,
    "sdpa_causal": impl_sdpa_causal,
    "verispec_triton_tuned": impl_triton_tuned,  # opt in with --peers
    "verispec_torch": impl_verispec("torch"),  # the CPU stand-in; opt in with --peers on a GPU
}
DEFAULT_PEERS = [name for name in PEERS if name not in ("verispec_triton_tuned", "verispec_torch")]
# Peers that time a different computation on the same shapes: SDPA causal attention (the practical
# lower bound) sees a causal triangle, not the tree. Their output is checked for NaN/inf only.
BOUNDS = {"sdpa_causal"}

def reference(pr: Problem) -> torch.Tensor:
    """fp32 oracle on the device (the float64 comparison lives in tests/; this guards the benchmark)."""
    a = [x.float() if x.is_floating_point() else x for x in _args(pr)]
    return tree_attention(*a, backend="torch")


def shapes(gpu: bool, quick: bool) -> list[tuple[int, int, int]]:
    """(B, L, T) triples."""
    if gpu:
        if quick:
            return [(1, 32768, 16), (8, 16384, 64), (32, 4096, 128), (1, 1024, 1)]
        return [(B, L, T) for B in (1, 8, 32) for L in (1024, 4096, 16384, 32768) for T in (1, 16, 64, 128)]
    if quick:
        return [(1, 1024, 16), (4, 1024, 64)]
    return [(B, L, T) for B in (1, 4) for L in (1024, 4096) for T in (16, 64)]


def ours(gpu: bool) -> list[str]:
    # On CPU Triton runs in its interpreter (correct, far too slow to time): the torch backend stands in.
    return ["verispec_triton", "verispec_cuda"] if gpu else ["verispec_torch"]


def run(ctx: Context) -> dict:
    dims = {} if ctx.gpu else {"dtype": torch.float32}  # CPU SDPA has no fast bf16 path
    bw = ctx.bandwidth
    names = ours(ctx.gpu) + ["sdpa_dense", "flex", "flex+mask", "flashinfer", "sdpa_causal"]
    rows = []
    for B, L, T in shapes(ctx.gpu, ctx.quick):
        pr = build(Problem(B, L, T, **dims), ctx.device)
        want = reference(pr)
        floor_ms = pr.floor_bytes() / (bw * 1e9) * 1e3
        row = {"shape": pr.label, "params": {"B": B, "L": L, "T": T}, "floor_ms": floor_ms, "impls": {}}
        for name in names:
            try:
                fn = PEERS[name](pr)
                got = _as_bhtd(name, fn(), pr).float()
                if name not in BOUNDS:
                    err = float((got - want).abs().max())
                    if not (math.isfinite(err) and err <= 0.1):
                        row["impls"][name] = {"error": f"wrong output (max abs err {err:.3g})"}
                        continue
                elif not bool(torch.isfinite(got).all()):
                    row["impls"][name] = {"error": "non-finite output"}
                    continue
                row["impls"][name] = entry(ctx.time(fn), floor_ms, bound=name in BOUNDS)
            except ImportError as exc:
                row["impls"][name] = {"skipped": f"not installed ({exc.name or exc})"}
            except Exception as exc:  # a peer that cannot run here is reported, not fatal
                row["impls"][name] = failure(exc)
        rows.append(row)
        ctx.log(f"tree_attention {row['shape']}: " + ", ".join(
            f"{n} {e['ms']:.3f} ms" for n, e in row["impls"].items() if "ms" in e))
        del pr, want
    shape = "Llama-3-8B attention: Hq=32, Hkv=8, D=128, " + ("bf16" if ctx.gpu else "float32")
    notes = [shape, "sdpa_causal computes causal attention, not the tree: the practical lower bound"]
    if not ctx.gpu:
        notes.append("CPU: flex runs eagerly (torch.compile is GPU-only here); the torch backend stands in for ours")
    return {"op": "tree_attention", "rows": rows, "notes": notes,
            "floor": "move K/V of every visible key, Q in and O out once at the measured copy bandwidth"}
