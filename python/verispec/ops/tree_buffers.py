"""Tree buffers: everything the attention and acceptance kernels derive from a ragged batch of trees.

A batch of draft trees arrives flat (``tokens``, request-local ``parents``, ``cu_nodes [B+1]``, see
``verispec/tree.py``). Verification runs one *row* per root plus one per node: request ``b`` owns rows
``cu_rows[b] .. cu_rows[b+1]-1`` with ``cu_rows[b] = cu_nodes[b] + b``; local row 0 is the root and local
row ``j+1`` is node ``j``. For every row this module computes

* ``depth`` int32 ``[R]`` - 0 for the root, parent's depth + 1 otherwise (the position offset of the row
  after the cached prefix);
* ``ancestors`` uint32 ``[R, W]``, ``W = ceil(max_rows / 32)`` - bit ``u % 32`` of word ``u // 32`` is set
  iff local row ``u`` is the row itself or one of its ancestors (the root is an ancestor of every row).
  Any tree size works: the words simply grow;
* ``parent`` int32 ``[R]`` - local row of the parent (``-1`` for the root);
* ``first_child`` / ``next_sibling`` int32 ``[R]`` - local rows (``-1`` for none), siblings in node order;
  this is all the acceptance walk needs;
* ``request`` int32 ``[R]`` - which request a row belongs to, and ``cu_rows`` int32 ``[B+1]``.

``tree_buffers`` is vectorised torch (pointer jumping, a stable sort; no Python loop over rows and no
host synchronisation when ``max_rows`` is given), so it runs on the GPU inside a CUDA graph.
``tree_buffers_reference`` is the readable per-row loop it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from verispec.tree import validate_packed

__all__ = ["TreeBuffers", "tree_buffers", "tree_buffers_reference"]


@dataclass(frozen=True)
class TreeBuffers:
    """Per-row buffers of a ragged batch of draft trees (see the module docstring for the layout).

    Attributes
    ----------
    depth, parent, first_child, next_sibling, request : torch.Tensor
        int32 ``[R]`` with ``R = N + B`` verification rows (roots included).
    ancestors : torch.Tensor
        uint32 ``[R, W]`` packed ancestor-or-self bits of local rows.
    cu_rows : torch.Tensor
        int32 ``[B+1]`` row offsets, ``cu_rows[b] = cu_nodes[b] + b``.
    max_rows : int
        capacity in rows of the largest request (``>= max_b(n_b + 1)``); ``W = ceil(max_rows / 32)``.
    """

    depth: torch.Tensor
    ancestors: torch.Tensor
    parent: torch.Tensor
    first_child: torch.Tensor
    next_sibling: torch.Tensor
    request: torch.Tensor
    cu_rows: torch.Tensor
    max_rows: int

    @property
    def num_requests(self) -> int:
        return self.cu_rows.numel() - 1

    @property
    def num_rows(self) -> int:
        return self.depth.numel()

    @property
    def words(self) -> int:
        return self.ancestors.shape[1]

    def local_rows(self) -> torch.Tensor:
        """int64 ``[R]``: the row index inside its own request (0 = root)."""
        r = torch.arange(self.num_rows, device=self.depth.device)
        return r - self.cu_rows.long()[self.request.long()]

    def _scatter_padded(self, values: torch.Tensor, B: Optional[int], T: Optional[int], fill) -> torch.Tensor:
        B = self.num_requests if B is None else B
        T = self.max_rows if T is None else T
        if self.num_requests > B:
            raise ValueError(f"padded form: B={B} is smaller than the batch ({self.num_requests} requests)")
        if self.max_rows > T:
            raise ValueError(f"padded form: T={T} is smaller than max_rows={self.max_rows}")
        # index_put has no uint32 kernel: move the bits as int32 and reinterpret.
        raw = values.view(torch.int32) if values.dtype == torch.uint32 else values
        out = torch.full((B, T, *values.shape[1:]), fill, dtype=raw.dtype, device=values.device)
        out[self.request.long(), self.local_rows()] = raw
        return out.view(values.dtype)

    def padded_ancestors(self, B: Optional[int] = None, T: Optional[int] = None) -> torch.Tensor:
        """uint32 ``[B, T, ceil(T/32)]`` ancestor bits per (request, local row); padded rows are 0."""
        T = self.max_rows if T is None else T
        W = max(1, math.ceil(T / 32))
        anc = self.ancestors
        if anc.shape[1] < W:
            pad = torch.zeros(anc.shape[0], W - anc.shape[1], dtype=anc.dtype, device=anc.device)
            anc = torch.cat([anc, pad], dim=1)
        elif anc.shape[1] > W:
            anc = anc[:, :W].contiguous()  # T >= max_rows, so the dropped words are all zero
        return self._scatter_padded(anc, B, T, 0)

    def padded_depths(self, B: Optional[int] = None, T: Optional[int] = None) -> torch.Tensor:
        """int32 ``[B, T]`` depth (position offset) per (request, local row); padded rows are 0."""
        return self._scatter_padded(self.depth, B, T, 0)


def _check_inputs(parents: torch.Tensor, cu_nodes: torch.Tensor) -> None:
    for name, t in (("parents", parents), ("cu_nodes", cu_nodes)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"verispec.tree_buffers: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int32 or t.dim() != 1:
            raise TypeError(f"verispec.tree_buffers: {name} must be 1-D int32, got {t.dtype} {tuple(t.shape)}")
    if parents.device != cu_nodes.device:
        raise ValueError(f"verispec.tree_buffers: parents on {parents.device} but cu_nodes on {cu_nodes.device}")
    if cu_nodes.numel() < 2:
        raise ValueError("verispec.tree_buffers: cu_nodes must have B+1 >= 2 entries")


def tree_buffers(
    parents: torch.Tensor,
    cu_nodes: torch.Tensor,
    *,
    max_rows: Optional[int] = None,
    validate: bool = True,
) -> TreeBuffers:
    """Derive depth, packed ancestor bits and walk links for a ragged batch of trees, on its device.

    Parameters
    ----------
    parents : torch.Tensor
        int32 ``[N]``, request-local parent of every node (``-1`` = child of the root), topological.
    cu_nodes : torch.Tensor
        int32 ``[B+1]`` node offsets.
    max_rows : int, optional
        rows of the largest request (``max_b n_b + 1``) or any larger capacity. Giving it avoids the
        one host synchronisation this function otherwise needs, so the call can be CUDA-graph captured.
    validate : bool
        check the trees first (host-synchronising); errors name the request and node.

    Returns
    -------
    TreeBuffers
    """
    _check_inputs(parents, cu_nodes)
    dev = parents.device
    B = cu_nodes.numel() - 1
    N = parents.numel()
    if validate:
        dummy_tokens = torch.zeros(N, dtype=torch.int32, device=dev)
        try:
            validate_packed(dummy_tokens, parents, cu_nodes)
        except ValueError as exc:
            raise ValueError(f"verispec.tree_buffers: {exc}") from None
    if max_rows is None:
        max_rows = int((cu_nodes[1:] - cu_nodes[:-1]).max()) + 1 if B > 0 else 1
    if max_rows < 1:
        raise ValueError(f"verispec.tree_buffers: max_rows must be >= 1, got {max_rows}")
    W = max(1, math.ceil(max_rows / 32))
    R = N + B
    cu_nodes64 = cu_nodes.long()
    b_idx = torch.arange(B, device=dev)
    cu_rows = (cu_nodes64 + torch.arange(B + 1, device=dev)).to(torch.int32)

    # Row -> request: roots sit at cu_rows[b]; node n of request b sits at row n + b + 1.
    node = torch.arange(N, device=dev)
    node_req = torch.searchsorted(cu_nodes64[1:], node, right=True)
    request = torch.empty(R, dtype=torch.long, device=dev)
    root_rows = cu_rows.long()[:-1]
    node_rows = node + node_req + 1
    request[root_rows] = b_idx
    request[node_rows] = node_req
    local = torch.empty(R, dtype=torch.long, device=dev)
    local[root_rows] = 0
    local[node_rows] = node - cu_nodes64[node_req] + 1
    # Global parent row; the root points at itself so pointer jumping stays put there.
    jump = torch.empty(R, dtype=torch.long, device=dev)
    jump[root_rows] = root_rows
    jump[node_rows] = root_rows[node_req] + parents.long() + 1
    parent_local = torch.full((R,), -1, dtype=torch.long, device=dev)
    parent_local[node_rows] = parents.long() + 1

    # Pointer jumping: after i rounds each row has OR-ed the bits of its 2^i nearest ancestors and
    # added up the distance to them, so ceil(log2(max_rows)) rounds cover every path.
    bits = torch.zeros(R, W, dtype=torch.long, device=dev)
    bits.scatter_(1, (local // 32).unsqueeze(1), torch.bitwise_left_shift(torch.ones_like(local), local % 32).unsqueeze(1))
    depth = torch.ones(R, dtype=torch.long, device=dev)
    depth[root_rows] = 0
    for _ in range(max(1, math.ceil(math.log2(max_rows))) if max_rows > 1 else 0):
        bits = bits | bits[jump]
        depth = depth + depth[jump]
        jump = jump[jump]

    # Walk links. first_child: smallest child row of each parent. next_sibling: the next row with the
    # same parent, found by a stable sort on the parent row.
    big = torch.iinfo(torch.long).max
    first_child = torch.full((R,), big, dtype=torch.long, device=dev)
    parent_rows = root_rows[node_req] + parents.long() + 1
    first_child.scatter_reduce_(0, parent_rows, local[node_rows], reduce="amin")
    first_child = torch.where(first_child == big, -1, first_child)
    next_sibling = torch.full((R,), -1, dtype=torch.long, device=dev)
    if N > 1:
        _, order = torch.sort(parent_rows, stable=True)
        same = parent_rows[order[1:]] == parent_rows[order[:-1]]
        nxt = torch.where(same, local[node_rows[order[1:]]], -1)
        next_sibling[node_rows[order[:-1]]] = nxt

    i32 = torch.int32
    return TreeBuffers(
        depth=depth.to(i32),
        ancestors=bits.to(torch.uint32),
        parent=parent_local.to(i32),
        first_child=first_child.to(i32),
        next_sibling=next_sibling.to(i32),
        request=request.to(i32),
        cu_rows=cu_rows,
        max_rows=int(max_rows),
    )


def tree_buffers_reference(parents: torch.Tensor, cu_nodes: torch.Tensor) -> TreeBuffers:
    """Readable per-row loop computing the same buffers as `tree_buffers` (the oracle; CPU speed)."""
    _check_inputs(parents, cu_nodes)
    dev = parents.device
    par = parents.tolist()
    cu = cu_nodes.tolist()
    B = len(cu) - 1
    max_rows = max((cu[b + 1] - cu[b] + 1 for b in range(B)), default=1)
    W = max(1, math.ceil(max_rows / 32))
    depth, ancestors, parent, first_child, next_sibling, request = [], [], [], [], [], []
    for b in range(B):
        n = cu[b + 1] - cu[b]
        local_parent = [-1] + [par[cu[b] + j] + 1 for j in range(n)]  # local rows
        for r in range(n + 1):
            chain, u = [], r
            while u != -1:
                chain.append(u)
                u = local_parent[u]
            depth.append(len(chain) - 1)
            words = [0] * W
            for u in chain:
                words[u // 32] |= 1 << (u % 32)
            ancestors.append(words)
            parent.append(local_parent[r])
            children = [c for c in range(1, n + 1) if local_parent[c] == r]
            first_child.append(children[0] if children else -1)
            if r == 0:
                next_sibling.append(-1)
            else:
                sibs = [c for c in range(1, n + 1) if local_parent[c] == local_parent[r] and c > r]
                next_sibling.append(sibs[0] if sibs else -1)
            request.append(b)

    def i32(x):
        return torch.tensor(x, dtype=torch.int32, device=dev)

    return TreeBuffers(
        depth=i32(depth),
        ancestors=torch.tensor(ancestors, dtype=torch.long, device=dev).reshape(-1, W).to(torch.uint32),
        parent=i32(parent),
        first_child=i32(first_child),
        next_sibling=i32(next_sibling),
        request=i32(request),
        cu_rows=i32([cu[b] + b for b in range(B + 1)]),
        max_rows=max_rows,
    )
