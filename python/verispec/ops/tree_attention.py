"""Tree attention: score every row of a draft tree in one forward pass.

For request ``b`` the cache holds a prefix of ``L_b = prefix_lens[b]`` tokens followed by the K/V of
the ``T_b = tree_lens[b]`` verification rows (row 0 is the root, the last accepted token; rows
``1..T_b-1`` are draft nodes, see docs/architecture.md). Tree row ``t`` attends to

* every prefix key ``j < L_b`` (no mask is stored or read for the prefix), and
* tree key ``u`` (cache index ``L_b + u``) iff bit ``u`` of ``ancestors[b, t]`` is set, i.e. ``u`` is
  ``t`` itself or one of its ancestors,

optionally restricted to a sliding window (a query at position ``p`` sees keys at positions
``> p - window``; prefix key ``j`` sits at position ``j``, tree row ``u`` at ``positions[b, u]``) and
with logit soft-capping (``softcap * tanh(s / softcap)``, applied to the scaled logits, as Gemma 2
does). Padded rows ``t >= T_b`` produce zeros.

Two cache layouts share one signature:

* contiguous (as Hugging Face caches hold it): ``k, v [B, Hkv, S, D]`` with any strides;
* paged (as vLLM / FlashInfer / SGLang hold it): ``k, v [num_blocks, block_size, Hkv, D]`` plus
  ``block_table [B, max_blocks]`` int32; cache index ``i`` of request ``b`` lives in block
  ``block_table[b, i // block_size]`` at slot ``i % block_size``.

``tree_attention_torch`` is the readable reference and the oracle for the Triton and CUDA kernels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from verispec import _backends
from verispec.ops import _paged

__all__ = [
    "TreeAttentionProblem",
    "tree_attention",
    "tree_attention_problem",
    "tree_attention_torch",
    "tree_mask_bits",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class TreeAttentionProblem:
    """`tree_attention`'s arguments, checked and normalised once by `tree_attention_problem`: what every
    backend takes. Lengths and block-table rows have unit stride (the kernels read them so); ``positions``
    is filled in when a sliding window needs it."""

    q: torch.Tensor  # [B, Hq, T, D]
    k: torch.Tensor  # [B, Hkv, S, D], or paged [num_blocks, block_size, Hkv, D]
    v: torch.Tensor  # like k
    prefix_lens: torch.Tensor  # int32 [B]
    tree_lens: torch.Tensor  # int32 [B]
    ancestors: torch.Tensor  # uint32 / int32 [B, T, W]
    positions: Optional[torch.Tensor]  # int32 [B, T]; None when no window reads it
    block_table: Optional[torch.Tensor]  # int32 [B, max_blocks]; None = contiguous layout
    out: Optional[torch.Tensor]  # the caller's output buffer, like q
    B: int
    Hq: int
    Hkv: int
    T: int
    D: int
    W: int
    paged: bool
    block_size: int  # 0 for the contiguous layout
    capacity: int  # cache entries addressable per request (S, or max_blocks * block_size)
    num_blocks: int  # paged: blocks in the pool (valid ids 0..num_blocks-1); 0 for the contiguous layout
    scale: float
    softcap: float  # 0.0 = off
    window: int  # 0 = off


def _fail(msg: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"verispec.tree_attention: {msg}")


def tree_attention_problem(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix_lens: torch.Tensor,
    tree_lens: torch.Tensor,
    ancestors: torch.Tensor,
    positions: Optional[torch.Tensor] = None,
    *,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
    block_table: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
) -> TreeAttentionProblem:
    """Check `tree_attention`'s arguments (shapes, dtypes, devices, options) into the
    `TreeAttentionProblem` every backend takes. Reads no tensor values (no host synchronisation): the
    length checks, which do, are `check_lengths`, run by the backends that can afford them."""
    named = {"q": q, "k": k, "v": v, "prefix_lens": prefix_lens, "tree_lens": tree_lens, "ancestors": ancestors}
    if positions is not None:
        named["positions"] = positions
    if block_table is not None:
        named["block_table"] = block_table
    if out is not None:
        named["out"] = out
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}", TypeError)
    dev = q.device
    for name, t in named.items():
        if t.device != dev:
            _fail(f"{name} is on {t.device} but q is on {dev}; all tensors must share one device")
    if q.dtype not in _FLOAT_DTYPES:
        _fail(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}", TypeError)
    for name in ("k", "v"):
        if named[name].dtype != q.dtype:
            _fail(f"{name} has dtype {named[name].dtype} but q has {q.dtype}; they must match", TypeError)
    if q.dim() != 4:
        _fail(f"q must be [B, Hq, T, D], got shape {tuple(q.shape)}")
    B, Hq, T, D = q.shape
    paged = block_table is not None
    if k.shape != v.shape:
        _fail(f"k has shape {tuple(k.shape)} but v has {tuple(v.shape)}")
    if k.dim() != 4:
        layout = "[num_blocks, block_size, Hkv, D] (paged)" if paged else "[B, Hkv, S, D]"
        _fail(f"k and v must be {layout}, got shape {tuple(k.shape)}")
    if paged:
        num_blocks, block_size, Hkv, Dk = k.shape
        if block_table.dtype != torch.int32:
            _fail(f"block_table must be int32, got {block_table.dtype}", TypeError)
        if block_table.dim() != 2 or block_table.shape[0] != B:
            _fail(f"block_table must be [B={B}, max_blocks], got shape {tuple(block_table.shape)}")
        if block_size < 1:
            _fail("paged k/v have block_size 0")
        capacity = block_table.shape[1] * block_size
        for name in ("k", "v"):
            if named[name].stride(-1) != 1:
                _fail(f"paged {name} must have unit stride along D, got strides {named[name].stride()}")
    else:
        Bk, Hkv, capacity, Dk = k.shape
        block_size = num_blocks = 0
        if Bk != B:
            _fail(f"k/v hold {Bk} requests but q holds {B}")
    if Dk != D:
        _fail(f"q has head dim {D} but k/v have {Dk}")
    if Hkv < 1 or Hq % Hkv != 0:
        _fail(f"q has {Hq} heads, which is not a multiple of the {Hkv} K/V heads (GQA/MQA need Hq % Hkv == 0)")
    for name, t in (("prefix_lens", prefix_lens), ("tree_lens", tree_lens)):
        if t.dtype != torch.int32:
            _fail(f"{name} must be int32, got {t.dtype}", TypeError)
        if t.shape != (B,):
            _fail(f"{name} must be [B={B}], got shape {tuple(t.shape)}")
    if ancestors.dtype not in (torch.uint32, torch.int32):
        _fail(f"ancestors must be uint32 (int32 with the same bits is accepted), got {ancestors.dtype}", TypeError)
    W = (T + 31) // 32
    if ancestors.dim() != 3 or ancestors.shape[0] != B or ancestors.shape[1] != T or ancestors.shape[2] < W:
        _fail(f"ancestors must be [B={B}, T={T}, W>={W}] (32 rows per uint32 word), got shape {tuple(ancestors.shape)}")
    if positions is not None:
        if positions.dtype != torch.int32:
            _fail(f"positions must be int32, got {positions.dtype}", TypeError)
        if positions.shape != (B, T):
            _fail(f"positions must be [B={B}, T={T}], got shape {tuple(positions.shape)}")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype):
        _fail(f"out must match q: shape {tuple(q.shape)} dtype {q.dtype}, got {tuple(out.shape)} {out.dtype}")
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D > 0 else 1.0
    scale = float(scale)
    if not math.isfinite(scale):
        _fail(f"scale must be finite, got {scale}")
    softcap = 0.0 if softcap is None else float(softcap)
    if softcap < 0 or not math.isfinite(softcap):
        _fail(f"softcap must be None, 0 (off) or a positive number, got {softcap}")
    if window is None:
        window = 0
    elif isinstance(window, bool) or int(window) != window or int(window) < 1:
        _fail(f"window must be None (off) or a positive integer, got {window!r}")
    window = int(window)
    if window and positions is None:
        positions = positions_from_ancestors(prefix_lens, ancestors)
    if block_table is not None and block_table.stride(-1) != 1:
        block_table = block_table.contiguous()
    return TreeAttentionProblem(
        q, k, v, prefix_lens.contiguous(), tree_lens.contiguous(), ancestors, positions, block_table, out,
        B, Hq, Hkv, T, D, int(ancestors.shape[2]), paged, block_size, capacity, num_blocks, scale, softcap, window,
    )


def check_lengths(p: TreeAttentionProblem) -> None:
    """Value checks that read lengths on the host; cheap, but they synchronise a GPU stream."""
    prefix_lens, tree_lens, block_table = p.prefix_lens, p.tree_lens, p.block_table
    if p.B == 0:
        return
    lo_p, lo_t = int(prefix_lens.min()), int(tree_lens.min())
    if lo_p < 0 or lo_t < 0:
        _fail(f"prefix_lens and tree_lens must be >= 0, got min {lo_p} and {lo_t}")
    if int(tree_lens.max()) > p.T:
        b = int(tree_lens.argmax())
        _fail(f"request {b} has tree_lens {int(tree_lens[b])} > T={p.T} rows of q")
    need = prefix_lens.long() + tree_lens.long()
    if int(need.max()) > p.capacity:
        b = int(need.argmax())
        what = "block_table covers" if p.paged else "k/v hold"
        _fail(f"request {b} needs {int(need[b])} cache entries (prefix {int(prefix_lens[b])} + tree "
              f"{int(tree_lens[b])}) but {what} only {p.capacity}")
    if block_table is not None:
        _paged.check_block_ids(block_table, need, p.block_size, p.num_blocks, _fail)


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors may share memory (same storage and intersecting byte ranges; conservative
    for interleaved strides). Host-only arithmetic on metadata: no sync."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t):
        lo = t.data_ptr()
        hi = lo + (sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if st > 0) + 1) * t.element_size()
        lo += sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if st < 0) * t.element_size()
        return lo, hi

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def output_buffer(out: Optional[torch.Tensor], *inputs: torch.Tensor) -> Optional[torch.Tensor]:
    """Where a backend may write its result: ``out`` itself, or None (make a fresh tensor, then copy into
    ``out``) when ``out`` shares memory with an input, which the kernels would read after writing."""
    if out is None or any(overlaps(out, t) for t in inputs):
        return None
    return out


def positions_from_ancestors(prefix_lens: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
    """int32 ``[B, T]``: ``prefix_lens[b] + depth(t)``, with depth = (number of set ancestor bits) - 1.

    The default ``positions`` when none are given (only sliding windows need them).
    """
    bits = ancestors.view(torch.int32) if ancestors.dtype == torch.uint32 else ancestors
    shifts = torch.arange(32, device=bits.device, dtype=torch.int32)
    count = ((bits.unsqueeze(-1) >> shifts) & 1).sum(dim=(-1, -2))
    return (prefix_lens.view(-1, 1).long() + count - 1).clamp_min(0).to(torch.int32)


def tree_mask_bits(ancestors: torch.Tensor, n: int) -> torch.Tensor:
    """bool ``[..., T, n]``: expand ancestor words to one flag per tree row ``u < n``.

    Parameters
    ----------
    ancestors : uint32 (or int32) ``[..., T, W]`` with ``W >= ceil(n / 32)``.
    n : number of tree rows to expand.
    """
    bits = ancestors.view(torch.int32) if ancestors.dtype == torch.uint32 else ancestors
    u = torch.arange(n, device=bits.device)
    words = bits.index_select(-1, u // 32)  # [..., T, n]
    # Arithmetic shift is fine: only the lowest bit survives the mask.
    return ((words >> (u % 32).to(words.dtype)) & 1).bool()


def _gather_request_kv(
    k: torch.Tensor, v: torch.Tensor, b: int, n: int, block_table: Optional[torch.Tensor], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V of cache entries ``0..n-1`` of request ``b`` as ``[Hkv, n, D]`` views or copies."""
    if block_table is None:
        return k[b, :, :n], v[b, :, :n]
    idx = torch.arange(n, device=k.device)
    blocks = block_table[b].long()[idx // block_size]
    slots = idx % block_size
    return k[blocks, slots].transpose(0, 1), v[blocks, slots].transpose(0, 1)


def tree_attention_torch(p: TreeAttentionProblem) -> torch.Tensor:
    """Reference tree attention in plain PyTorch (any device; float64 capable). See `tree_attention`.

    fp16/bf16 inputs are computed in fp32; fp32 and fp64 in their own precision, with the same
    operation order as Hugging Face's eager attention (scale, soft-cap, mask, fp32 softmax, @ v), so a
    model run through it in fp32 matches its own eager/sdpa output to rounding.
    """
    check_lengths(p)
    q, k, v, out = p.q, p.k, p.v, p.out
    compute = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    G = p.Hq // p.Hkv
    result = output_buffer(out, q, k, v)
    if result is None:
        result = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    else:
        result.zero_()
    plens, tlens = p.prefix_lens.tolist(), p.tree_lens.tolist()
    for b in range(p.B):
        L, n = plens[b], tlens[b]
        if n == 0:
            continue
        S = L + n
        kb, vb = _gather_request_kv(k, v, b, S, p.block_table, p.block_size)
        # GQA without copying K/V: the G query heads of one KV head form one [G * n, D] matrix.
        qb = q[b, :, :n].to(compute).reshape(p.Hkv, G * n, p.D)
        logits = torch.bmm(qb, kb.to(compute).transpose(1, 2)).view(p.Hkv, G, n, S) * p.scale
        if p.softcap:
            logits = torch.tanh(logits / p.softcap) * p.softcap
        visible = torch.ones(n, S, dtype=torch.bool, device=q.device)
        visible[:, L:] = tree_mask_bits(p.ancestors[b, :n], n)
        if p.window:
            qpos = p.positions[b, :n].long()
            kpos = torch.cat([torch.arange(L, device=q.device), qpos])
            visible &= kpos.view(1, S) > qpos.view(n, 1) - p.window
        logits = logits.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        # A row that sees nothing (malformed ancestors) yields zeros, not NaN.
        probs = probs.masked_fill(~visible.any(dim=-1, keepdim=True), 0.0)
        ob = torch.bmm(probs.view(p.Hkv, G * n, S), vb.to(compute))  # [Hkv, G * n, D]
        result[b, :, :n] = ob.reshape(p.Hq, n, p.D).to(q.dtype)
    if out is not None and result is not out:
        return out.copy_(result)
    return result


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached): the split heuristics size waves by it."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def split_count(programs: int, capacity: int, rows_padded: int, block_n: int, sms: int) -> int:
    """Split-KV chunks per (tile, request, KV head): enough for ~2 waves of programs, but

    * never chunks shorter than 4 key tiles, and
    * partials cheap next to K/V: each split writes and the combine reads ``rows_padded * D`` fp32
      per KV head, K/V cost ``capacity * D * 2 * 2`` bytes (16-bit), so ``splits <= capacity /
      (16 * rows_padded)`` keeps the extra traffic under 1/8 of the K/V traffic.

    ``capacity`` (cache entries per request) stands in for the prefix length, which lives on the device.
    """
    want = math.ceil(2 * sms / max(programs, 1))
    most = min(capacity // (4 * block_n), capacity // (16 * max(rows_padded, 1)), 64)
    return max(1, min(want, most))


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix_lens: torch.Tensor,
    tree_lens: torch.Tensor,
    ancestors: torch.Tensor,
    positions: Optional[torch.Tensor] = None,
    *,
    scale: Optional[float] = None,
    softcap: Optional[float] = None,
    window: Optional[int] = None,
    block_table: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of every draft-tree row to its request's cached prefix and its own ancestors.

    Parameters
    ----------
    q : float16 / bfloat16 / float32 / float64 ``[B, Hq, T, D]``
        Queries of the verification rows, ``T`` = the largest ``tree_lens`` (or more; padded rows
        produce zeros). Any strides.
    k, v : same dtype as ``q``.
        Contiguous layout ``[B, Hkv, S, D]`` (any strides; Hugging Face cache layout), or paged layout
        ``[num_blocks, block_size, Hkv, D]`` (unit stride along D) when ``block_table`` is given. The
        K/V of tree row ``t`` of request ``b`` must already be at cache index ``prefix_lens[b] + t``.
        ``Hq`` must be a multiple of ``Hkv`` (query head ``h`` reads K/V head ``h // (Hq // Hkv)``).
    prefix_lens : int32 ``[B]``
        Cached prefix length ``L_b`` per request (0 allowed).
    tree_lens : int32 ``[B]``
        Verification rows ``T_b <= T`` per request (0 allowed: the request's output is all zeros).
    ancestors : uint32 ``[B, T, W]``, ``W >= ceil(T / 32)``
        Bit ``u % 32`` of word ``u // 32`` of row ``t`` is set iff tree row ``u`` is ``t`` or an
        ancestor of ``t`` (`TreeBuffers.padded_ancestors`). int32 with the same bits is accepted.
    positions : int32 ``[B, T]``, optional
        Absolute position of each tree row, used only by sliding windows. Default:
        ``prefix_lens[b] + depth(t)`` with the depth read from the ancestor bits.
    scale : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    softcap : float, optional
        Logit soft-cap ``c``: logits become ``c * tanh(logits / c)`` (after scaling). None or 0 = off.
    window : int, optional
        Sliding window: a query at position ``p`` sees keys at positions ``> p - window``. None = off.
    block_table : int32 ``[B, max_blocks]``, optional
        Selects the paged layout; entry ``[b, i]`` is the block holding cache indices
        ``i * block_size ... (i + 1) * block_size - 1`` of request ``b``. Every entry a request reads
        must be a block of the pool (``0 <= id < num_blocks``): checked on the host where lengths are
        (torch backend, CPU); on a GPU the kernels treat a bad id as an empty block, never reading
        outside the pool.
    out : tensor like ``q``, optional
        Written in place and returned (any strides). It may share memory with ``q``, ``k`` or ``v``:
        the result is then computed into a temporary and copied in.
    backend : ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``
        See `verispec.backends()`; ``auto`` only picks GPU paths verified on this device class.

    Returns
    -------
    ``[B, Hq, T, D]`` tensor of ``q``'s dtype; rows ``t >= tree_lens[b]`` are zero.

    Example
    -------
    A root with two children ``a`` (row 1) and ``b`` (row 2): row 1 sees the prefix, row 0 and
    itself, so its ancestor word is ``0b011``; row 2's is ``0b101``; the root's is ``0b001``.
    """
    _, impl = _backends.resolve("tree_attention", backend, q.device if isinstance(q, torch.Tensor) else "cpu")
    return impl(tree_attention_problem(q, k, v, prefix_lens, tree_lens, ancestors, positions, scale=scale,
                                       softcap=softcap, window=window, block_table=block_table, out=out))
