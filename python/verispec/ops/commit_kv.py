"""KV commit: after acceptance, keep the accepted path's K/V right after the prefix.

Verification wrote the K/V of request ``b``'s tree rows at cache indices ``L_b + 0 .. L_b + T_b - 1``
(``L_b = prefix_lens[b]``). Acceptance picks a path: the root (row 0) then the rows of the accepted
nodes (node ``j`` is row ``j + 1``). `commit_kv` moves, in every layer, the entry of the ``i``-th path
row to cache index ``L_b + i`` and returns the new lengths ``L_b + (number of path rows)``. Entries
past the new length are left as they are (the caller crops or overwrites them).

Rows along a path strictly increase (a parent always precedes its children), so ``row_i >= i``: every
entry moves towards the prefix or stays. Backends process a request's path in order (or stage it
through registers), which makes the in-place move safe even where sources and destinations overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch

from verispec import _backends
from verispec.ops import _paged

__all__ = ["CommitKVProblem", "commit_kv", "commit_kv_problem", "commit_kv_torch", "path_rows_from_accepted"]

Caches = Union[torch.Tensor, Sequence[torch.Tensor]]
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fail(msg: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"verispec.commit_kv: {msg}")


def _as_list(caches: Caches, name: str) -> list[torch.Tensor]:
    if isinstance(caches, torch.Tensor):
        return [caches]
    if not isinstance(caches, (list, tuple)):
        _fail(f"{name} must be a tensor or a list/tuple of per-layer tensors, got {type(caches).__name__}", TypeError)
    out = list(caches)
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}", TypeError)
    return out


def _check(
    k_cache: Caches,
    v_cache: Caches,
    prefix_lens: torch.Tensor,
    path_rows: torch.Tensor,
    block_table: Optional[torch.Tensor],
) -> tuple[list[torch.Tensor], int]:
    """Shape/dtype/device checks (no host sync). Returns all caches (K layers then V layers) and capacity."""
    ks, vs = _as_list(k_cache, "k_cache"), _as_list(v_cache, "v_cache")
    if len(ks) != len(vs):
        _fail(f"k_cache has {len(ks)} layers but v_cache has {len(vs)}")
    for name, t in (("prefix_lens", prefix_lens), ("path_rows", path_rows)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}", TypeError)
        if t.dtype != torch.int32:
            _fail(f"{name} must be int32, got {t.dtype}", TypeError)
    if prefix_lens.dim() != 1:
        _fail(f"prefix_lens must be [B], got shape {tuple(prefix_lens.shape)}")
    B = prefix_lens.shape[0]
    if path_rows.dim() != 2 or path_rows.shape[0] != B:
        _fail(f"path_rows must be [B={B}, P], got shape {tuple(path_rows.shape)}")
    dev = prefix_lens.device
    if path_rows.device != dev:
        _fail(f"path_rows is on {path_rows.device} but prefix_lens is on {dev}")
    paged = block_table is not None
    if paged:
        if not isinstance(block_table, torch.Tensor) or block_table.dtype != torch.int32:
            _fail("block_table must be an int32 tensor", TypeError)
        if block_table.dim() != 2 or block_table.shape[0] != B:
            _fail(f"block_table must be [B={B}, max_blocks], got shape {tuple(block_table.shape)}")
        if block_table.device != dev:
            _fail(f"block_table is on {block_table.device} but prefix_lens is on {dev}")
    capacity = None
    for kind, layers in (("k_cache", ks), ("v_cache", vs)):
        for i, t in enumerate(layers):
            where = f"{kind}[{i}]"
            if t.device != dev:
                _fail(f"{where} is on {t.device} but prefix_lens is on {dev}")
            if t.dtype not in _FLOAT_DTYPES:
                _fail(f"{where} has unsupported dtype {t.dtype}", TypeError)
            if t.dim() != 4:
                layout = "[num_blocks, block_size, Hkv, D]" if paged else "[B, Hkv, S, D]"
                _fail(f"{where} must be {layout}, got shape {tuple(t.shape)}")
            if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
                # An expanded tensor: several entries share memory, so an in-place move is ill-defined.
                _fail(f"{where} has a zero stride (an expanded view, shape {tuple(t.shape)}, strides "
                      f"{t.stride()}); pass the tensor that owns the memory")
            if paged:
                cap = block_table.shape[1] * t.shape[1]
            else:
                if t.shape[0] != B:
                    _fail(f"{where} holds {t.shape[0]} requests but prefix_lens has {B}")
                cap = t.shape[2]
            capacity = cap if capacity is None else min(capacity, cap)
    return ks + vs, (capacity or 0)


def _check_values(prefix_lens: torch.Tensor, path_rows: torch.Tensor, capacity: int,
                  block_table: Optional[torch.Tensor] = None, caches: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Host-side value checks (and, paged, that every block the paths touch is in the pool); returns the
    number of path rows per request (int64 [B])."""
    rows = path_rows.cpu().long()
    lens = prefix_lens.cpu().long()
    valid = rows >= 0
    count = valid.long().cumprod(dim=1).sum(dim=1)
    for b in range(rows.shape[0]):
        n = int(count[b])
        r = rows[b].tolist()
        if any(x >= 0 for x in r[n:]):
            _fail(f"request {b}: path_rows {r} has a row after the -1 padding")
        if int(lens[b]) < 0:
            _fail(f"request {b}: prefix_lens {int(lens[b])} is negative")
        if n == 0:
            continue
        if r[0] != 0:
            _fail(f"request {b}: path must start at the root row 0, got {r[:n]}")
        if any(b2 <= a for a, b2 in zip(r[:n], r[1:n])):
            _fail(f"request {b}: path rows must strictly increase (parents precede children), got {r[:n]}")
        if int(lens[b]) + r[n - 1] >= capacity:
            _fail(f"request {b}: row {r[n - 1]} sits at cache index {int(lens[b]) + r[n - 1]}, beyond the "
                  f"cache capacity {capacity}")
    if block_table is not None:
        last = rows.gather(1, (count - 1).clamp_min(0).view(-1, 1)).view(-1)
        entries = torch.where(count > 0, lens + last + 1, torch.zeros_like(lens))
        # Layers share the table: the smallest pool and block size bound every layer's addressing.
        block_size = max(min((t.shape[1] for t in caches), default=1), 1)
        num_blocks = min((t.shape[0] for t in caches), default=0)
        _paged.check_block_ids(block_table.cpu(), entries, block_size, num_blocks, _fail)
    return count


def path_rows_from_accepted(accepted_nodes: torch.Tensor, num_accepted: torch.Tensor) -> torch.Tensor:
    """int32 ``[B, 1 + max_depth]`` path rows from `verify`'s output (root row 0, then node ``j`` → row ``j+1``).

    Parameters
    ----------
    accepted_nodes : int32 ``[B, max_depth]``, node indices along the accepted path, -1 padded.
    num_accepted : int32 ``[B]``.
    """
    B, depth = accepted_nodes.shape
    col = torch.arange(depth, device=accepted_nodes.device).view(1, -1)
    keep = col < num_accepted.view(-1, 1).long()
    nodes = torch.where(keep, accepted_nodes + 1, torch.full_like(accepted_nodes, -1))
    root = torch.zeros(B, 1, dtype=torch.int32, device=accepted_nodes.device)
    return torch.cat([root, nodes.to(torch.int32)], dim=1)


@dataclass(frozen=True)
class CommitKVProblem:
    """`commit_kv`'s arguments, checked once by `commit_kv_problem`: what every backend takes."""

    caches: list[torch.Tensor]  # every layer's K, then every layer's V (as given: moved in place)
    prefix_lens: torch.Tensor  # int32 [B]
    path_rows: torch.Tensor  # int32 [B, P], -1 padded
    block_table: Optional[torch.Tensor]  # int32 [B, max_blocks]; None = contiguous layout
    capacity: int  # cache entries addressable per request (smallest over the layers)
    validate: bool  # the path rows' values were checked on the host

    @property
    def device(self) -> torch.device:
        return self.prefix_lens.device


def commit_kv_problem(
    k_cache: Caches,
    v_cache: Caches,
    prefix_lens: torch.Tensor,
    path_rows: torch.Tensor,
    *,
    block_table: Optional[torch.Tensor] = None,
    validate: bool = True,
) -> CommitKVProblem:
    """Check `commit_kv`'s arguments (shapes, dtypes, devices; with ``validate`` also the path rows'
    values, on the host) into the `CommitKVProblem` every backend takes."""
    caches, capacity = _check(k_cache, v_cache, prefix_lens, path_rows, block_table)
    if validate:
        _check_values(prefix_lens, path_rows, capacity, block_table, caches)
    return CommitKVProblem(caches, prefix_lens, path_rows, block_table, capacity, validate)


def commit_kv_torch(problem: CommitKVProblem) -> torch.Tensor:
    """Reference KV commit (a loop over layers, vectorised over requests). See `commit_kv`."""
    caches, capacity, block_table = problem.caches, problem.capacity, problem.block_table
    prefix_lens, path_rows = problem.prefix_lens, problem.path_rows
    B, P = path_rows.shape
    if B == 0 or P == 0 or capacity == 0:
        return _new_lengths(prefix_lens, path_rows)
    # Every request moves P entries, no host sync: entry i of the path goes from L + path_rows[i] to
    # L + i. Past the path's end (the -1 padding) entry i repeats the path's last move, so the extra
    # writes store the very value the real one stores (duplicate indices, one value: deterministic).
    count = (path_rows >= 0).to(torch.int64).cumprod(dim=1).sum(dim=1, keepdim=True)  # [B, 1]
    i = torch.arange(P, device=path_rows.device).view(1, P)
    last = torch.minimum(i, (count - 1).clamp_min(0))
    base = prefix_lens.long().view(B, 1)
    rows = torch.where(count > 0, path_rows.long().gather(1, last), 0)
    src = (base + rows).clamp(0, capacity - 1)
    dst = (base + last).clamp(0, capacity - 1)
    b_idx = torch.arange(B, device=path_rows.device).view(B, 1).expand(B, P)
    for cache in _unique(caches):
        # Advanced indexing gathers the sources into a new tensor before any write: overlap-safe.
        if block_table is None:
            cache[b_idx, :, dst] = cache[b_idx, :, src]
        else:
            bs = cache.shape[1]
            table = block_table.long()
            sb, db = table[b_idx, src // bs], table[b_idx, dst // bs]
            ss, ds = src % bs, dst % bs
            # Unchecked ids (validate=False) must not wrap (-1 is the last block) nor raise: a move whose
            # source or destination block is outside the pool is replaced by a copy of the first valid
            # move (the same value to the same slot: harmless), or by block 0 slot 0 onto itself when
            # there is none. Device-side, no sync.
            ok = (sb >= 0) & (sb < cache.shape[0]) & (db >= 0) & (db < cache.shape[0])
            if cache.shape[0] == 0:
                continue
            first = ok.reshape(-1).long().argmax()
            any_ok = ok.reshape(-1)[first]

            def fix(x, first=first, any_ok=any_ok, ok=ok):
                alt = torch.where(any_ok, x.reshape(-1)[first], torch.zeros_like(x.reshape(-1)[first]))
                return torch.where(ok, x, alt)

            cache[fix(db), fix(ds)] = cache[fix(sb), fix(ss)]
    return _new_lengths(prefix_lens, path_rows)


def _unique(caches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each cache once. A tensor listed twice (layers sharing their K/V) must move once: a second
    in-place pass would move the already moved path again, and two GPU blocks moving the same entries
    would race (one can read a slot the other already overwrote)."""
    seen: set[tuple] = set()
    out = []
    for t in caches:
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _grouped(caches: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Distinct caches sharing shape, strides and dtype, so each group is one kernel launch."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in _unique(caches):
        groups.setdefault((tuple(t.shape), t.stride(), t.dtype), []).append(t)
    return list(groups.values())


def _commit_groups(problem: CommitKVProblem, launch_group) -> torch.Tensor:
    """The kernel backends' glue: ``launch_group(group, prefix_lens, block_table)`` once per group of
    same-shaped caches, with the lengths and block-table rows at unit stride (the kernels read them so);
    returns the new lengths."""
    prefix_lens, block_table = problem.prefix_lens.contiguous(), problem.block_table
    block_table = block_table if block_table is None or block_table.stride(-1) == 1 else block_table.contiguous()
    for group in _grouped(problem.caches):
        launch_group(group, prefix_lens, block_table)
    return _new_lengths(prefix_lens, problem.path_rows)


def _new_lengths(prefix_lens: torch.Tensor, path_rows: torch.Tensor) -> torch.Tensor:
    count = (path_rows >= 0).to(torch.int32).cumprod(dim=1).sum(dim=1)
    return (prefix_lens + count).to(torch.int32)


def commit_kv(
    k_cache: Caches,
    v_cache: Caches,
    prefix_lens: torch.Tensor,
    path_rows: torch.Tensor,
    *,
    block_table: Optional[torch.Tensor] = None,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Move the accepted path's K/V right after each request's prefix, in every layer, in place.

    Parameters
    ----------
    k_cache, v_cache : one tensor or a list of per-layer tensors (float16/bfloat16/float32/float64)
        Contiguous layout ``[B, Hkv, S, D]`` (any strides), or paged ``[num_blocks, block_size, Hkv, D]``
        when ``block_table`` is given. Modified in place.
    prefix_lens : int32 ``[B]``
        Cached prefix length ``L_b``; tree row ``t``'s K/V sits at cache index ``L_b + t``.
    path_rows : int32 ``[B, P]``
        Per request the root row ``0`` then the rows of the accepted nodes in path order (node ``j`` is
        row ``j + 1``), padded with ``-1`` (`path_rows_from_accepted` builds it from `verify`'s
        output). A request whose first entry is ``-1`` is left alone.
    block_table : int32 ``[B, max_blocks]``, optional
        Selects the paged layout (see `tree_attention`).
    backend : ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``.
    validate : bool
        check the path rows' values on the host (it synchronises a GPU stream). With ``False`` the call
        is free of host synchronisation; malformed rows are then clamped into the cache, never written
        outside it.

    Returns
    -------
    int32 ``[B]``: the new lengths ``prefix_lens + (number of path rows)``.

    Example
    -------
    ``prefix_lens = [5]``, ``path_rows = [[0, 2, 5, -1]]`` (nodes 1 and 4 accepted): cache entries
    7 and 10 move to 6 and 7, entry 5 (the root) stays, and the new length is 8.
    """
    device = prefix_lens.device if isinstance(prefix_lens, torch.Tensor) else "cpu"
    _, impl = _backends.resolve("commit_kv", backend, device)
    return impl(commit_kv_problem(k_cache, v_cache, prefix_lens, path_rows, block_table=block_table,
                                  validate=validate))
