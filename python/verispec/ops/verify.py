"""Acceptance (verify): which path of each draft tree survives, and which token comes next.

The target model has scored every verification row (root + nodes, see docs/architecture.md). For each
request the op walks the tree from the root. At the current row it tests the children in node order:

* ``greedy`` - a child is accepted iff its token is the argmax of the row (ties -> lowest id, as
  ``torch.argmax``). The emitted token after the path is the argmax of the last accepted row.
* ``exact`` - recursive rejection sampling; the output distribution is exactly the target's.
  With ``p_res`` the current residual (the target distribution of the row, tempered and filtered),
  child ``x`` drafted from ``q`` is accepted iff ``u * q(x) <= p_res(x)`` (``u`` uniform in (0, 1], so
  probability ``min(1, p_res(x)/q(x))`` and never for ``p_res(x) = 0``); on rejection
  ``p_res <- norm(max(p_res - q, 0))`` and the next sibling is tried; when none is left the next token is
  drawn from ``p_res``. Without draft probabilities (retrieval / prompt-lookup drafts) ``q`` is the point
  mass on ``x``: accept with probability ``p_res(x)``, on rejection zero ``x`` and renormalise, which also
  makes a duplicate sibling token a certain rejection. With draft probabilities ``q`` is the
  distribution the node was drawn from (one row per node): Leviathan/Chen for a chain, and for siblings
  drawn independently (i.i.d. from one ``q``, or from different ``q``) the SpecInfer/multi-draft
  recursive rejection, which is exact for independent drafts.
* ``typical`` (Medusa) - accept the first child with ``p(x) > min(eps, delta * exp(-H(p)))``; the next
  token is drawn from ``p``. **Lossy**: the output is not the target distribution.

``temperature`` (0 = greedy for that request), ``top_k`` and ``top_p`` shape the target distribution per
request inside the op. Random numbers come from a stateless Philox4x32-10 keyed by
``(seed, offset, index, stream)`` (``_philox.py``): accept tests and the residual draw use separate
streams; results do not depend on batch order. The residual draw is an exponential race
(``argmax_v log p_res(v) - log E_v``, ``E_v ~ Exp(1)``), one pass over the vocabulary with no prefix sum.

``verify_torch`` is the vectorised torch implementation (runs on any device, no host sync when
``max_depth`` is given); ``verify_reference`` is the plain per-request loop that is the oracle for it and
for the Triton and CUDA kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch

from verispec import _backends, _params
from verispec.ops import _philox
from verispec.ops.tree_buffers import TreeBuffers, tree_buffers
from verispec.tree import DraftTree, pack_trees, validate_packed

__all__ = [
    "verify",
    "verify_problem",
    "VerifyProblem",
    "VerifyResult",
    "VerifyUniforms",
    "verify_torch",
    "verify_reference",
    "filter_thresholds",
]

MODES = ("greedy", "exact", "typical")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify` for a batch of ``B`` requests (all on the logits' device).

    Attributes
    ----------
    accepted_nodes : torch.Tensor
        int32 ``[B, max_depth]``: request-local node indices along the accepted path, -1 padded.
    num_accepted : torch.Tensor
        int32 ``[B]``: number of accepted draft nodes.
    tokens : torch.Tensor
        int32 ``[B, max_depth + 1]``: the accepted draft tokens then the correction/bonus token, -1 padded
        (``num_accepted + 1`` valid entries per request).
    """

    accepted_nodes: torch.Tensor
    num_accepted: torch.Tensor
    tokens: torch.Tensor

    @property
    def next_tokens(self) -> torch.Tensor:
        """int32 ``[B]``: the correction/bonus token of every request (the last emitted one)."""
        return self.tokens.gather(1, self.num_accepted.long().unsqueeze(1)).squeeze(1)


class VerifyUniforms(NamedTuple):
    """Test hook replacing the Philox numbers: ``accept`` float32 ``[N]`` in (0, 1] (one per node, used
    when the node is tested) and ``exponential`` float32 ``[B, V]`` Exp(1) variates for the residual draw."""

    accept: torch.Tensor
    exponential: torch.Tensor


@dataclass(frozen=True)
class VerifyProblem:
    """Validated, normalised arguments of one `verify` call: what every backend receives
    (``backend(problem) -> VerifyResult``). Build one with `verify_problem`."""

    logits: torch.Tensor  # [R, V], any float dtype, contiguous rows
    tokens: torch.Tensor  # int32 [N]
    cu_nodes: torch.Tensor  # int32 [B+1]
    buffers: TreeBuffers
    mode: str
    draft_probs: Optional[torch.Tensor]  # float [N, V] or None
    temperature: torch.Tensor  # float32 [B]; 0 = greedy
    threshold: Optional[torch.Tensor]  # float32 [R] logit threshold from top-k/top-p, or None
    seed: torch.Tensor  # int64 [B]
    offset: torch.Tensor  # int64 [B]
    uniforms: Optional[VerifyUniforms]
    typical_epsilon: float
    typical_delta: float
    max_depth: int

    @property
    def B(self) -> int:
        return self.cu_nodes.numel() - 1

    @property
    def V(self) -> int:
        return self.logits.shape[1]


def _fail(msg: str, exc: type[Exception] = ValueError):
    raise exc(f"verispec.verify: {msg}")


# ----------------------------------------------------------------------------------------------------
# Target distribution: temperature, top-k, top-p
# ----------------------------------------------------------------------------------------------------


def filter_thresholds(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: Optional[torch.Tensor], top_p: Optional[torch.Tensor]
) -> torch.Tensor:
    """float32 ``[R]`` logit thresholds: a token survives top-k/top-p iff its logit is ``>= threshold``.

    top-k keeps every token whose logit is at least the k-th largest (ties are kept, so the result does
    not depend on sort stability); top-p is then applied to the renormalised top-k distribution and keeps
    the smallest set of most likely tokens whose mass reaches ``top_p`` (again with ties). Rows with
    neither filter get ``-inf``. ``top_k`` int ``[R]`` (``<= 0`` or ``>= V``: off), ``top_p`` float
    ``[R]`` (``>= 1``: off), ``temperature`` float32 ``[R]``. Sorts each row: costs more than the rest.
    """
    R, V = logits.shape
    thr = torch.full((R,), float("-inf"), dtype=torch.float32, device=logits.device)
    if top_k is None and top_p is None:
        return thr
    # About ten [rows, V] float32 temporaries per chunk: bounded to ~2^26 elements each, so B=256 x K=64
    # rows of a 151936-id vocabulary (2.5e9 logits) need ~2.7 GB by arithmetic, not ~100 GB. Host-known sizes: no sync.
    step = max(1, (1 << 26) // max(V, 1))
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        thr[r0:r1] = _filter_rows(logits[r0:r1], temperature[r0:r1], None if top_k is None else top_k[r0:r1],
                                  None if top_p is None else top_p[r0:r1])
    return thr


def _filter_rows(logits: torch.Tensor, temperature: torch.Tensor, top_k: Optional[torch.Tensor],
                 top_p: Optional[torch.Tensor]) -> torch.Tensor:
    R, V = logits.shape
    thr = torch.full((R,), float("-inf"), dtype=torch.float32, device=logits.device)
    l_sorted, _ = torch.sort(logits.float(), dim=1, descending=True)
    keep = torch.ones_like(l_sorted, dtype=torch.bool)
    if top_k is not None:
        k = top_k.long()
        k_on = (k > 0) & (k < V)
        kth = l_sorted.gather(1, (k.clamp(1, V) - 1).unsqueeze(1)).squeeze(1)
        thr_k = torch.where(k_on, kth, thr)
        keep = l_sorted >= thr_k.unsqueeze(1)
        thr = thr_k
    if top_p is not None:
        p_on = top_p < 1.0
        t = torch.where(temperature > 0, temperature, torch.ones_like(temperature)).unsqueeze(1)
        z = (l_sorted - l_sorted[:, :1]) / t
        w = torch.where(keep, torch.exp(z), torch.zeros_like(z))
        probs = w / w.sum(1, keepdim=True)
        exclusive = torch.cumsum(probs, 1) - probs
        # Last sorted position whose exclusive mass is still below top_p; everything >= its logit stays.
        below = (exclusive < top_p.unsqueeze(1)) & keep
        last = (below.long().cumsum(1) == below.long().sum(1, keepdim=True)).long().argmax(1)
        thr_p = l_sorted.gather(1, last.unsqueeze(1)).squeeze(1)
        thr = torch.where(p_on, torch.maximum(thr, thr_p), thr)
    return thr


LOG2E = 1.4426950408889634


def log2_scale(temperature: torch.Tensor) -> torch.Tensor:
    """float32 ``log2(e) / T`` per entry (1.0 where ``T == 0``). Every backend scales logits by this
    one tensor, computed here, so ``z2 = (l - max) * scale`` is the same float32 product everywhere."""
    t = temperature.float()
    # Tiny temperatures saturate instead of overflowing: (l - max) * scale stays 0 for the max, -inf below.
    safe = torch.where(t > 0, t.clamp(min=1e-20), torch.ones_like(t))
    return torch.full_like(t, LOG2E) / safe


def target_probs(logits: torch.Tensor, temperature: torch.Tensor, threshold: Optional[torch.Tensor]) -> torch.Tensor:
    """float32 ``[R, V]`` target distribution per row: ``w = exp2((l - max l) * log2(e)/T)`` over the
    tokens that pass the threshold, normalised; rows with ``T == 0`` are the point mass on the argmax
    (lowest id on ties).

    ``logits`` any float ``[R, V]``; ``temperature`` float32 ``[R]``; ``threshold`` float32 ``[R]`` or None.
    """
    l = logits.float()
    greedy = temperature == 0
    m = l.max(dim=1, keepdim=True).values
    w = torch.exp2((l - m) * log2_scale(temperature).unsqueeze(1))
    if threshold is not None:
        w = torch.where(l >= threshold.unsqueeze(1), w, torch.zeros_like(w))
    p = w / w.sum(dim=1, keepdim=True)
    onehot = torch.zeros_like(p).scatter_(1, l.argmax(dim=1, keepdim=True), 1.0)
    return torch.where(greedy.unsqueeze(1), onehot, p)


def _typical_threshold(p: torch.Tensor, eps: float, delta: float) -> torch.Tensor:
    """float32 ``[R]``: Medusa's typical-acceptance bar ``min(eps, delta * exp(-H(p)))`` per row."""
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    entropy = -plogp.sum(dim=1)
    return torch.minimum(torch.full_like(entropy, eps), delta * torch.exp(-entropy))


def _residual_step(p_res: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``norm(max(p_res - q, 0))`` over the last dim; keeps ``p_res`` where the residual has no mass
    (possible only through rounding, since then the rejection itself had probability 0)."""
    r = torch.clamp(p_res - q, min=0.0)
    s = r.sum(dim=-1, keepdim=True)
    return torch.where(s > 0, r / torch.where(s > 0, s, torch.ones_like(s)), p_res)


def _race(p_res: torch.Tensor, exponential: torch.Tensor) -> torch.Tensor:
    """Index drawn from ``p_res`` by the exponential race: ``argmax_v p(v) / E_v`` over ``p > 0``, taken
    in log2 units (``log2 p - log2 E``; the kernels use ``(l - max) * scale - log2 E``), lowest id on ties."""
    key = torch.where(p_res > 0, torch.log2(p_res) - torch.log2(exponential), torch.full_like(p_res, -math.inf))
    return key.argmax(dim=-1)


# ----------------------------------------------------------------------------------------------------
# The readable reference: one request at a time
# ----------------------------------------------------------------------------------------------------


def verify_reference(problem: VerifyProblem) -> VerifyResult:
    """Plain per-request walk (the oracle). Same arithmetic as `verify_torch`, one request at a time."""
    pr = problem
    buf = pr.buffers
    B, V, D = pr.B, pr.V, pr.max_depth
    dev = pr.logits.device
    temp_rows = pr.temperature[buf.request.long()]
    probs = target_probs(pr.logits, temp_rows, pr.threshold)  # [R, V]
    accepted = torch.full((B, D), -1, dtype=torch.int32, device=dev)
    out_tokens = torch.full((B, D + 1), -1, dtype=torch.int32, device=dev)
    num = torch.zeros(B, dtype=torch.int32, device=dev)
    cu_rows = buf.cu_rows.tolist()
    cu_nodes = pr.cu_nodes.tolist()
    first_child = buf.first_child.tolist()
    next_sibling = buf.next_sibling.tolist()
    tokens = pr.tokens.tolist()
    for b in range(B):
        greedy = pr.mode == "greedy" or float(pr.temperature[b]) == 0.0
        row0 = cu_rows[b]
        cur = 0
        p_res = probs[row0].clone()
        if pr.mode == "typical":
            bar = _typical_threshold(probs[row0 : row0 + 1], pr.typical_epsilon, pr.typical_delta)[0]
        cand = first_child[row0]
        depth = 0
        while cand != -1:
            node = cand - 1
            x = tokens[cu_nodes[b] + node]
            if greedy:
                ok = bool(p_res.argmax() == x)
            elif pr.mode == "typical":
                ok = bool(probs[row0 + cur, x] > bar)
            else:
                u = _accept_u(pr, b, node)
                qx = 1.0 if pr.draft_probs is None else pr.draft_probs[cu_nodes[b] + node, x].float()
                ok = bool(p_res[x] > 0) and bool(u * qx <= p_res[x])
            if ok:
                accepted[b, depth] = node
                out_tokens[b, depth] = x
                depth += 1
                cur = cand
                p_res = probs[row0 + cur].clone()
                if pr.mode == "typical":
                    bar = _typical_threshold(probs[row0 + cur : row0 + cur + 1], pr.typical_epsilon, pr.typical_delta)[0]
                cand = first_child[row0 + cur]
            else:
                if pr.mode == "exact" and not greedy:
                    if pr.draft_probs is None:
                        q = torch.zeros(V, dtype=torch.float32, device=dev)
                        q[x] = 1.0
                    else:
                        q = pr.draft_probs[cu_nodes[b] + node].float()
                    p_res = _residual_step(p_res, q)
                cand = next_sibling[row0 + cand]
        if greedy:
            last = int(p_res.argmax())
        else:
            last = int(_race(p_res, _exponentials(pr, b)))
        out_tokens[b, depth] = last
        num[b] = depth
    return VerifyResult(accepted, num, out_tokens)


def _accept_u(pr: VerifyProblem, b: int, node: int) -> torch.Tensor:
    if pr.uniforms is not None:
        return pr.uniforms.accept[int(pr.cu_nodes[b]) + node].float()
    idx = torch.tensor(node, dtype=torch.int64, device=pr.seed.device)
    return _philox.accept_uniforms(pr.seed[b], pr.offset[b], idx)


def _exponentials(pr: VerifyProblem, b: int) -> torch.Tensor:
    if pr.uniforms is not None:
        return pr.uniforms.exponential[b].float()
    return _philox.residual_exponentials(pr.seed[b : b + 1], pr.offset[b : b + 1], pr.V)[0]


# ----------------------------------------------------------------------------------------------------
# Vectorised torch backend: every request walks in lock step, one candidate test per step
# ----------------------------------------------------------------------------------------------------


def verify_torch(problem: VerifyProblem) -> VerifyResult:
    """Vectorised torch walk over all requests at once (any device; no host sync). Each loop step tests
    one candidate child per request, so ``max_rows - 1`` steps cover every tree."""
    pr = problem
    buf = pr.buffers
    B, V, D = pr.B, pr.V, pr.max_depth
    dev = pr.logits.device
    i64 = torch.int64
    sampling = pr.mode != "greedy"
    # Greedy requests only ever need the argmax of a row (ties -> lowest id, as torch.argmax). Every
    # backend compares float32 values (float64 logits are rounded first, as the kernels read them).
    lg = pr.logits.float() if pr.logits.dtype == torch.float64 else pr.logits  # bf16/fp16 -> fp32 is exact
    row_argmax = lg.argmax(dim=1)
    if sampling:
        probs = target_probs(pr.logits, pr.temperature[buf.request.long()], pr.threshold)  # [R, V]
        greedy = pr.temperature == 0
    else:
        probs = None
        greedy = torch.ones(B, dtype=torch.bool, device=dev)
    row0 = buf.cu_rows[:-1].long()
    node0 = pr.cu_nodes[:-1].long()
    first_child = buf.first_child.long()
    next_sibling = buf.next_sibling.long()
    bidx = torch.arange(B, device=dev)

    cur = torch.zeros(B, dtype=i64, device=dev)
    cand = first_child[row0]
    depth = torch.zeros(B, dtype=i64, device=dev)
    p_res = probs[row0].clone() if sampling else None
    if pr.mode == "typical":
        bar_rows = _typical_threshold(probs, pr.typical_epsilon, pr.typical_delta)
    accepted = torch.full((B, D + 1), -1, dtype=torch.int32, device=dev)  # one spare column for padding writes
    out_tokens = torch.full((B, D + 2), -1, dtype=torch.int32, device=dev)
    if pr.mode == "exact" and pr.uniforms is None:
        # One uniform per node, drawn up front: u for node j depends only on (seed, offset, j).
        req = _node_request(pr)
        nodes_local = torch.arange(pr.tokens.numel(), device=dev) - node0[req]
        u_nodes = _philox.accept_uniforms(pr.seed[req], pr.offset[req], nodes_local)
    elif pr.uniforms is not None:
        u_nodes = pr.uniforms.accept.float()
    else:
        u_nodes = None

    for _ in range(max(buf.max_rows - 1, 0)):
        active = cand >= 0
        node = torch.where(active, cand - 1, torch.zeros_like(cand))
        gnode = (node0 + node).clamp(max=max(pr.tokens.numel() - 1, 0))
        if pr.tokens.numel() == 0:
            break
        x = pr.tokens[gnode].long()
        ok_greedy = row_argmax[row0 + cur] == x
        if pr.mode == "typical":
            row = row0 + cur
            ok = torch.where(greedy, ok_greedy, probs[row, x] > bar_rows[row])
        elif pr.mode == "exact":
            px = p_res[bidx, x]
            qx = torch.ones_like(px) if pr.draft_probs is None else pr.draft_probs[gnode, x].float()
            ok = torch.where(greedy, ok_greedy, (px > 0) & (u_nodes[gnode] * qx <= px))
        else:
            ok = ok_greedy
        acc = active & ok
        rej = active & ~ok
        # Accepted: record, descend, reset the residual to the new row's distribution.
        col = torch.where(acc, depth, torch.full_like(depth, D))
        accepted[bidx, col] = torch.where(acc, node, -1).to(torch.int32)
        out_tokens[bidx, col] = torch.where(acc, x, -1).to(torch.int32)
        depth = depth + acc.long()
        cur = torch.where(acc, cand, cur)
        new_row = row0 + cur
        if sampling:
            p_res = torch.where(acc.unsqueeze(1), probs[new_row], p_res)
        # Rejected (exact, sampling requests): residual step, then the next sibling.
        if pr.mode == "exact":
            upd = rej & ~greedy
            if pr.draft_probs is None:
                q = torch.zeros_like(p_res).scatter_(1, x.unsqueeze(1), 1.0)
            else:
                q = pr.draft_probs[gnode].float()
            p_res = torch.where(upd.unsqueeze(1), _residual_step(p_res, q), p_res)
        sib = next_sibling[(row0 + cand).clamp(min=0)]
        cand = torch.where(acc, first_child[new_row], torch.where(rej, sib, cand))
    last_argmax = row_argmax[row0 + cur]
    if not sampling:
        last = last_argmax
    else:
        if pr.uniforms is not None:
            e = pr.uniforms.exponential.float()
        else:
            e = _philox.residual_exponentials(pr.seed, pr.offset, V)
        last = torch.where(greedy, last_argmax, _race(p_res, e))
    out_tokens[bidx, depth] = last.to(torch.int32)
    return VerifyResult(accepted[:, :D].contiguous(), depth.to(torch.int32), out_tokens[:, : D + 1].contiguous())


def _node_request(pr: VerifyProblem) -> torch.Tensor:
    n = torch.arange(pr.tokens.numel(), device=pr.cu_nodes.device)
    return torch.searchsorted(pr.cu_nodes[1:].long(), n, right=True)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------

TreesArg = Union[Sequence[DraftTree], tuple]


def _per_request(value, B: int, dtype: torch.dtype, dev, what: str, default) -> Optional[torch.Tensor]:
    if value is None:
        if default is None:
            return None
        value = default
    if isinstance(value, torch.Tensor):
        t = value.to(device=dev, dtype=dtype).reshape(-1)
        if t.numel() == 1:
            t = t.expand(B).contiguous()
        if t.numel() != B:
            _fail(f"{what} must be a scalar or have one entry per request ({B}), got {value.numel()}")
        return t
    return torch.full((B,), value, dtype=dtype, device=dev)


def _check_scalars(temperature, top_k, top_p, seed, offset, typical_epsilon, typical_delta):
    """Scalar sampling parameters checked at entry (no tensor is read, so no host sync): the same rules
    as `generate` and the CLI. Tensor parameters must have an integer (top_k, seed, offset) or floating
    (temperature, top_p) dtype; their values are checked with ``validate=True``."""
    try:
        if not isinstance(temperature, torch.Tensor) and temperature is not None:
            temperature = _params.check_temperature(temperature)
        if not isinstance(top_k, torch.Tensor):
            top_k = _params.check_top_k(top_k)
        if not isinstance(top_p, torch.Tensor):
            top_p = _params.check_top_p(top_p)
        if not isinstance(seed, torch.Tensor) and seed is not None:
            seed = _params.seed_to_int64(_params.check_seed(seed))
        if not isinstance(offset, torch.Tensor) and offset is not None:
            offset = _params.seed_to_int64(_params.check_int(offset, "offset", low=0, high=_params.SEED_MAX))
        typical_epsilon, typical_delta = _params.check_typical(typical_epsilon, typical_delta)
    except (TypeError, ValueError) as exc:
        _fail(str(exc), type(exc))
    for name, value, want_float in (("temperature", temperature, True), ("top_p", top_p, True),
                                    ("top_k", top_k, False), ("seed", seed, False), ("offset", offset, False)):
        # Integer-valued parameters must not be floats (1.5 would become 1); floats may come as ints.
        if isinstance(value, torch.Tensor) and (value.dtype.is_complex or value.dtype == torch.bool
                                                or (value.dtype.is_floating_point and not want_float)):
            kind = "floating-point" if want_float else "integer"
            _fail(f"{name} must be a {kind} tensor, got dtype {value.dtype}", TypeError)
    return temperature, top_k, top_p, seed, offset, typical_epsilon, typical_delta


def _seeds(seed, B: int, dev, mode: str) -> torch.Tensor:
    """int64 ``[B]`` Philox keys. A tensor with one entry per request is used as given (a request's
    numbers then do not depend on its batch position). One seed for the batch (an int, a 0-d tensor, or
    one entry for several requests) gives request ``b`` the key ``request_keys(seed, b)``: its own stream,
    so n samples of one prompt differ. Nothing is copied to the host."""
    if seed is None:
        if mode == "greedy":
            return torch.zeros(B, dtype=torch.int64, device=dev)
        # One seed per request from torch's generator for the logits' device: capturable in a CUDA graph
        # (torch's graph-safe generator gives every replay fresh seeds).
        return torch.randint(0, 2**62, (B,), dtype=torch.int64, device=dev)
    if isinstance(seed, torch.Tensor):
        t = seed.to(device=dev, dtype=torch.int64)
        if t.dim() == 1 and t.numel() == B:
            return t.contiguous()
        if t.numel() != 1:
            _fail(f"seed must be a scalar or have one entry per request ({B}), got {seed.numel()}")
        one = t.reshape(1)
    else:
        one = torch.full((1,), seed, dtype=torch.int64, device=dev)
    return _philox.request_keys(one, torch.arange(B, dtype=torch.int64, device=dev))


def verify_problem(
    logits: torch.Tensor,
    trees: TreesArg,
    *,
    mode: str = "greedy",
    draft_probs: Optional[torch.Tensor] = None,
    temperature: Union[float, torch.Tensor, None] = None,
    top_k: Union[int, torch.Tensor, None] = None,
    top_p: Union[float, torch.Tensor, None] = None,
    seed: Union[int, torch.Tensor, None] = None,
    offset: Union[int, torch.Tensor, None] = None,
    typical_epsilon: float = 0.09,
    typical_delta: float = 0.3,
    buffers: Optional[TreeBuffers] = None,
    max_depth: Optional[int] = None,
    uniforms: Optional[VerifyUniforms] = None,
    validate: bool = True,
) -> VerifyProblem:
    """Validate and normalise `verify`'s arguments into the `VerifyProblem` every backend takes.

    `verify` documents the arguments; this is its first half, public so other stacks (and tests) can
    hand one problem to several backends.

    Parameters
    ----------
    logits : torch.Tensor
        ``[R, V]`` any float dtype, ``R = sum_b (n_b + 1)``: per request the root row then its node rows.
    trees : list of DraftTree, or tuple ``(tokens, parents, cu_nodes)``
        the draft trees; the flat form is int32 ``[N]``, ``[N]``, ``[B+1]`` (see ``verispec.pack_trees``).
        ``DraftTree.probs`` is not read here: pass ``draft_probs`` (`generate` builds it from the trees).
    mode : {"greedy", "exact", "typical"}
        see the module docstring. ``typical`` is lossy.
    draft_probs : torch.Tensor, optional
        float ``[N, V]``: for ``exact``, the distribution each node's token was drawn from, given its
        earlier siblings (for siblings sampled without replacement: the draft distribution with those
        removed and renormalised). None means deterministic drafts (retrieval, prompt lookup).
    temperature, top_k, top_p : scalar or tensor ``[B]``, optional
        applied to the target logits per request; ``temperature=0`` makes that request greedy.
        Defaults: 1.0, off, off. Scalars are checked at entry: temperature finite and ``>= 0``, top_k an
        integer ``>= 1``, top_p in ``(0, 1]``. A top_k tensor must be integer (entries ``<= 0`` or
        ``>= V`` turn it off for that request); tensor values are checked with ``validate=True``.
    seed, offset : int in 0..2^64-1, or int64 tensor ``[B]``, optional
        Philox key and counter offset per request. Give every decoding step a fresh ``offset`` (e.g. the
        number of tokens generated so far). A tensor with one seed per request is used as the requests'
        keys (a request's numbers do not depend on its batch position); one seed for the batch (an int or
        a one-element tensor) gives request ``b`` its own key ``_philox.request_keys(seed, b)``, so
        identical requests draw different samples. ``seed=None`` draws one per request from torch's
        generator for the logits' device.
    typical_epsilon, typical_delta : float
        Medusa's posterior threshold (in [0, 1]) and alpha (finite, >= 0).
    buffers : TreeBuffers, optional
        precomputed ``tree_buffers`` of the batch (saves recomputing them).
    max_depth : int, optional
        width of the outputs (``>=`` deepest tree). Giving it, with ``buffers`` and ``validate=False``,
        makes the call free of host synchronisation (CUDA-graph capturable).
    uniforms : VerifyUniforms, optional
        test hook replacing the Philox numbers.
    validate : bool
        check trees, shapes, vocabulary and finiteness of the logits (host-synchronising).

    Returns
    -------
    VerifyProblem (`verify` runs it on a backend and returns a `VerifyResult`)

    """
    if mode not in MODES:
        _fail(f"mode must be one of {MODES}, got {mode!r}")
    temperature, top_k, top_p, seed, offset, typical_epsilon, typical_delta = _check_scalars(
        temperature, top_k, top_p, seed, offset, typical_epsilon, typical_delta)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        _fail(f"logits must be a 2-D tensor [rows, vocab], got {getattr(logits, 'shape', type(logits).__name__)}")
    if logits.dtype not in _FLOAT_DTYPES:
        _fail(f"logits must be floating point, got {logits.dtype}", TypeError)
    dev = logits.device
    V = logits.shape[1]
    if V == 0:
        _fail("logits has an empty vocabulary")
    if isinstance(trees, tuple) and len(trees) == 3 and all(isinstance(t, torch.Tensor) for t in trees):
        tokens, parents, cu_nodes = (t.to(dev).contiguous() for t in trees)
        for name, t in (("tokens", tokens), ("parents", parents), ("cu_nodes", cu_nodes)):
            if t.dtype != torch.int32 or t.dim() != 1:
                _fail(f"flat trees: {name} must be a 1-D int32 tensor, got {t.dtype} {tuple(t.shape)}", TypeError)
        if validate:
            try:
                validate_packed(tokens, parents, cu_nodes, vocab_size=V)
            except (ValueError, TypeError) as exc:
                _fail(str(exc), type(exc))
    else:
        if isinstance(trees, DraftTree):
            trees = [trees]
        try:
            tokens, parents, cu_nodes = pack_trees(list(trees), device=dev, vocab_size=V if validate else None)
        except (ValueError, TypeError) as exc:
            _fail(str(exc), type(exc))
    B = cu_nodes.numel() - 1
    N = tokens.numel()
    if logits.shape[0] != N + B:
        _fail(f"logits has {logits.shape[0]} rows but the trees need {N + B} (one root row per request plus one per node)")
    if buffers is None:
        buffers = tree_buffers(parents, cu_nodes, validate=False)
    elif buffers.num_rows != N + B or buffers.num_requests != B:
        _fail(f"buffers describe {buffers.num_requests} requests / {buffers.num_rows} rows, the trees {B} / {N + B}")
    elif validate and not torch.equal(buffers.cu_rows.to(dev), (cu_nodes.long() + torch.arange(B + 1, device=dev)).to(torch.int32)):
        _fail("buffers were computed for different trees (cu_rows do not match cu_nodes)")
    if max_depth is None:
        max_depth = int(buffers.depth.max()) if buffers.depth.numel() else 0
    if validate:
        # -inf is a mask (probability 0), as HF logits processors and vLLM write it; NaN and +inf are errors.
        bad = torch.isnan(logits) | (logits == float("inf"))
        if bool(bad.any()):
            r, v = (int(i) for i in bad.nonzero()[0])
            _fail(f"logits has a non-finite value ({float(logits[r, v])}) at row {r}, vocab id {v}")
        dead = (logits == float("-inf")).all(dim=1)
        if bool(dead.any()):
            _fail(f"logits row {int(dead.nonzero()[0])} is -inf everywhere: no token has any probability")
        deepest = int(buffers.depth.max()) if buffers.depth.numel() else 0
        if max_depth < deepest:
            _fail(f"max_depth={max_depth} is smaller than the deepest tree ({deepest})")
    if mode != "exact" and draft_probs is not None:
        _fail(f"draft_probs are only used by mode='exact', got mode={mode!r}")
    if draft_probs is not None:
        if not isinstance(draft_probs, torch.Tensor) or draft_probs.dtype not in _FLOAT_DTYPES:
            _fail("draft_probs must be a floating-point tensor [N, V]", TypeError)
        if tuple(draft_probs.shape) != (N, V):
            _fail(f"draft_probs must have shape [N, V] = [{N}, {V}], got {tuple(draft_probs.shape)}")
        draft_probs = draft_probs.to(dev)
        if validate and N:
            if bool(((draft_probs < 0) | ~torch.isfinite(draft_probs)).any()):
                _fail("draft_probs has negative or non-finite entries")
            # Rows must be distributions, and a drafted token must have been possible under its row.
            sums = draft_probs.sum(dim=1, dtype=torch.float64)  # no float64 copy of [N, V]
            tol = 1e-3 if draft_probs.dtype in (torch.float32, torch.float64) else 2e-2
            bad = (sums - 1).abs() > tol
            if bool(bad.any()):
                j = int(bad.nonzero()[0, 0])
                _fail(f"draft_probs row {j} (node {j} of the flat batch) sums to {float(sums[j]):.6g}, not 1")
            qx = draft_probs.gather(1, tokens.long().unsqueeze(1)).squeeze(1)
            if bool((qx <= 0).any()):
                j = int((qx <= 0).nonzero()[0, 0])
                _fail(
                    f"node {j} of the flat batch drafts token {int(tokens[j])}, which has probability 0 under its "
                    "draft_probs row: the draft did not come from that distribution"
                )
    temp = _per_request(temperature, B, torch.float32, dev, "temperature", 1.0)
    if validate and bool((temp < 0).any() | ~torch.isfinite(temp).all()):
        _fail("temperature must be finite and >= 0")
    k = _per_request(top_k, B, torch.int64, dev, "top_k", None)
    p = _per_request(top_p, B, torch.float32, dev, "top_p", None)
    if validate and p is not None and not bool(((p > 0) & (p <= 1)).all()):  # NaN fails both
        _fail(f"top_p must be in (0, 1], got {p[~((p > 0) & (p <= 1))][0].item()}")
    threshold = None
    if mode != "greedy" and (k is not None or p is not None):
        req = buffers.request.long()
        threshold = filter_thresholds(
            logits, temp[req], None if k is None else k[req], None if p is None else p[req]
        )
    seed_t = _seeds(seed, B, dev, mode)
    offset_t = _per_request(offset, B, torch.int64, dev, "offset", 0)
    if uniforms is not None:
        if tuple(uniforms.accept.shape) != (N,) or tuple(uniforms.exponential.shape) != (B, V):
            _fail(f"uniforms must be accept [N={N}] and exponential [B={B}, V={V}]")
        uniforms = VerifyUniforms(uniforms.accept.to(dev), uniforms.exponential.to(dev))
    if logits.stride(1) != 1:
        # Rows may be strided (e.g. a slice of a padded vocabulary); ids must be contiguous.
        logits = logits.contiguous()
    problem = VerifyProblem(
        logits=logits,
        tokens=tokens,
        cu_nodes=cu_nodes,
        buffers=buffers,
        mode=mode,
        draft_probs=draft_probs,
        temperature=temp if mode != "greedy" else torch.zeros_like(temp),
        threshold=threshold,
        seed=seed_t,
        offset=offset_t,
        uniforms=uniforms,
        typical_epsilon=float(typical_epsilon),
        typical_delta=float(typical_delta),
        max_depth=int(max_depth),
    )
    return problem


def verify(logits: torch.Tensor, trees: TreesArg, *, backend: str = "auto", **kwargs) -> VerifyResult:
    """Accept the longest valid prefix of every draft tree and emit the next token(s).

    Takes `verify_problem`'s arguments (documented there) plus ``backend``
    (``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``; see `verispec.backends()`).

    Returns
    -------
    VerifyResult: ``accepted_nodes`` int32 ``[B, max_depth]``, ``num_accepted`` int32 ``[B]``, ``tokens``
    int32 ``[B, max_depth + 1]``, all on the logits' device.

    Example
    -------
    Root argmax 7, then 9: the chain [7, 3] gets 7 accepted, 3 rejected and 9 emitted:
    ``tokens = [[7, 9, -1]]``, ``num_accepted = [1]``, ``accepted_nodes = [[0, -1]]``.
    """
    problem = verify_problem(logits, trees, **kwargs)
    _, fn = _backends.resolve("verify", backend, problem.logits.device)
    return fn(problem)
