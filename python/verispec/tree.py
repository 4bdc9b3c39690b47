"""Draft trees: the value every drafter produces and every verifier consumes.

A tree hangs below the *root*, the last accepted token of a request. Node ``i`` carries a draft token
``tokens[i]`` and a parent ``parents[i]``: ``-1`` for a child of the root, otherwise an earlier node
(``parents[i] < i``), so node order is always topological. A batch of trees travels the way serving
engines pass ragged data: flat ``tokens`` and request-local ``parents`` plus offsets ``cu_nodes [B+1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

_INT32_MAX = 2**31 - 1


def _as_int32_vector(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        # No dtype is forced: as_tensor(..., dtype=int64) would truncate 1.9 to 1. Floats come out as a
        # floating dtype and are refused below; integers beyond int64 are named by the slow path.
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            _name_bad_element(x, what)
            raise TypeError(f"{what} must be a sequence of integers: {exc}") from None
        if x.numel() == 0 and x.dtype.is_floating_point:  # torch's dtype for [] is float32
            x = x.to(torch.int64)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{what} must hold integers, got dtype {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"{what} must be 1-D, got shape {tuple(x.shape)}")
    if x.numel():
        if x.dtype == torch.uint64:  # few torch ops take uint64; values above 2^63 must not wrap
            _name_bad_element(x.tolist(), what)
        else:
            w = x.to(torch.int64)  # compared in int64: a narrow dtype would wrap the bounds
            bad = ((w < -(2**31)) | (w > _INT32_MAX)).nonzero()
            if bad.numel():
                i = int(bad[0, 0])
                raise ValueError(f"{what}[{i}] = {x[i].item()} is outside int32")
    return x.to(torch.int32).contiguous()


def _name_bad_element(x, what: str) -> None:
    """Raise for the first element of a sequence that is not an integer in int32, by value (Python ints
    of any size print exactly; torch would only say "Overflow when unpacking long")."""
    try:
        items = list(x)
    except TypeError:
        return
    for i, v in enumerate(items):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{what}[{i}] must be an integer, got {v!r}")
        if not -(2**31) <= int(v) <= _INT32_MAX:
            raise ValueError(f"{what}[{i}] = {int(v)} is outside int32")


@dataclass(frozen=True)
class DraftTree:
    """A draft tree for one request.

    Attributes:
        tokens: int32 ``[n]`` draft token ids.
        parents: int32 ``[n]``; ``-1`` = child of the root, else an earlier node index.
        scores: optional float32 ``[n]``, the drafter's estimate of the probability that the path to
            the node is accepted (used for ordering and statistics, never for correctness).
        probs: optional float ``[n, V]``, for sampled drafts (a draft model): row ``i`` is the
            distribution node ``i``'s token was drawn from (given its earlier siblings). `generate`
            then verifies with Leviathan/Chen rejection sampling; without it drafts count as
            deterministic. Either way the output distribution is the target's.

    Example: the chain "a b" plus an alternative "c" after the root::

        DraftTree(tokens=[a, b, c], parents=[-1, 0, -1])
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    scores: Optional[torch.Tensor] = None
    probs: Optional[torch.Tensor] = None

    def __init__(self, tokens, parents, scores=None, *, probs=None, validate: bool = True):
        tokens = _as_int32_vector(tokens, "DraftTree.tokens")
        parents = _as_int32_vector(parents, "DraftTree.parents")
        if scores is not None:
            scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if probs is not None and (not isinstance(probs, torch.Tensor) or not probs.dtype.is_floating_point):
            raise TypeError("DraftTree.probs must be a floating-point tensor [n, V]")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "probs", probs)
        if validate:
            self.validate()

    # -- construction helpers -------------------------------------------------------------------------
    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> DraftTree:
        z = torch.zeros(0, dtype=torch.int32, device=device)
        return cls(z, z.clone())

    @classmethod
    def chain(cls, tokens, scores=None, probs=None) -> DraftTree:
        """A single path: node i is the child of node i-1."""
        tokens = _as_int32_vector(tokens, "DraftTree.chain tokens")
        parents = torch.arange(-1, tokens.numel() - 1, dtype=torch.int32, device=tokens.device)
        return cls(tokens, parents, scores, probs=probs)

    # -- properties -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.tokens.numel())

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def depths(self) -> torch.Tensor:
        """int32 ``[n]``: 1 for children of the root, parent's depth + 1 otherwise."""
        parents = self.parents.tolist()
        depth = [0] * len(parents)
        for i, p in enumerate(parents):
            depth[i] = 1 if p < 0 else depth[p] + 1
        return torch.tensor(depth, dtype=torch.int32, device=self.device)

    def max_depth(self) -> int:
        return int(self.depths().max()) if len(self) else 0

    def lists(self) -> tuple[list[int], list[int], list[float]]:
        """tokens, parents and scores (1.0 when unscored) as Python lists (host-side tree work)."""
        tokens = self.tokens.tolist()
        scores = self.scores.tolist() if self.scores is not None else [1.0] * len(tokens)
        return tokens, self.parents.tolist(), scores

    def head(self, k: int) -> DraftTree:
        """The first ``k`` nodes (closed under parents, since parents come before children)."""
        if k >= len(self):
            return self
        cut = lambda x: None if x is None else x[:k]  # noqa: E731
        return DraftTree(self.tokens[:k], self.parents[:k], cut(self.scores), probs=cut(self.probs), validate=False)

    def to(self, device) -> DraftTree:
        scores = None if self.scores is None else self.scores.to(device)
        probs = None if self.probs is None else self.probs.to(device)
        return DraftTree(self.tokens.to(device), self.parents.to(device), scores, probs=probs, validate=False)

    def validate(self, vocab_size: int | None = None, *, where: str = "tree") -> None:
        """Raise ValueError naming the first problem: sizes, parent order, token ids."""
        n = self.tokens.numel()
        if self.parents.numel() != n:
            raise ValueError(f"{where}: tokens has {n} nodes but parents has {self.parents.numel()}")
        if self.scores is not None and self.scores.numel() != n:
            raise ValueError(f"{where}: scores has {self.scores.numel()} entries for {n} nodes")
        if self.probs is not None and (self.probs.dim() != 2 or self.probs.shape[0] != n):
            raise ValueError(f"{where}: probs must be [n={n}, V], got shape {tuple(self.probs.shape)}")
        if self.parents.device != self.tokens.device:
            raise ValueError(f"{where}: tokens on {self.tokens.device} but parents on {self.parents.device}")
        if n == 0:
            return
        idx = torch.arange(n, device=self.parents.device, dtype=torch.int32)
        bad = (self.parents < -1) | (self.parents >= idx)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{where}: parent {int(self.parents[i])} of node {i} is not -1 or an earlier node"
            )
        if int(self.tokens.min()) < 0:
            i = int((self.tokens < 0).nonzero()[0, 0])
            raise ValueError(f"{where}: node {i} has negative token id {int(self.tokens[i])}")
        if vocab_size is not None and int(self.tokens.max()) >= vocab_size:
            i = int((self.tokens >= vocab_size).nonzero()[0, 0])
            raise ValueError(
                f"{where}: node {i} has token id {int(self.tokens[i])} outside the vocabulary of size {vocab_size}"
            )

    def __repr__(self) -> str:
        return f"DraftTree(tokens={self.tokens.tolist()}, parents={self.parents.tolist()})"


def pack_trees(
    trees: Sequence[DraftTree], device: torch.device | str | None = None, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten trees into the ragged batch form ``(tokens [N], parents [N], cu_nodes [B+1])``, int32.

    ``parents`` stay request-local (``-1`` = child of that request's root). Validates every tree and
    names the request in errors.
    """
    if len(trees) == 0:
        raise ValueError("pack_trees: empty batch (no trees)")
    for b, t in enumerate(trees):
        if not isinstance(t, DraftTree):
            raise TypeError(f"pack_trees: request {b} is {type(t).__name__}, expected verispec.DraftTree")
        t.validate(vocab_size, where=f"tree for request {b}")
    if device is None:
        device = trees[0].device
    counts = torch.tensor([len(t) for t in trees], dtype=torch.int32)
    cu = torch.zeros(len(trees) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(counts, 0)
    tokens = torch.cat([t.tokens.to(device) for t in trees])
    parents = torch.cat([t.parents.to(device) for t in trees])
    return tokens, parents, cu.to(device)


def validate_packed(
    tokens: torch.Tensor, parents: torch.Tensor, cu_nodes: torch.Tensor, vocab_size: int | None = None
) -> None:
    """Validate the flat ragged form (host-synchronising: use it at API boundaries, not in hot loops)."""
    for name, t in (("tokens", tokens), ("parents", parents), ("cu_nodes", cu_nodes)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if cu_nodes.numel() < 2:
        raise ValueError("cu_nodes must have B+1 >= 2 entries")
    if tokens.numel() != parents.numel():
        raise ValueError(f"tokens has {tokens.numel()} entries but parents has {parents.numel()}")
    cu = cu_nodes.tolist()
    if cu[0] != 0 or cu[-1] != tokens.numel() or any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"cu_nodes must rise from 0 to {tokens.numel()}, got {cu}")
    for b in range(len(cu) - 1):
        s, e = cu[b], cu[b + 1]
        DraftTree(tokens[s:e], parents[s:e], validate=False).validate(vocab_size, where=f"tree for request {b}")
