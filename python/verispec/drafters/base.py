"""Drafters: where draft trees come from.

A drafter is any object with two methods (`Drafter`):

* ``propose(contexts) -> list[DraftTree]``: one tree per live request. ``contexts[i]`` is a `Context`:
  the request's index in the batch given to `verispec.generate` (``.request``) and every token it holds
  so far, prompt then generated (``.tokens``, a list of ints whose last entry is the *root*, the last
  accepted token the tree hangs below). An empty tree means "no guess": the step decodes one token.
* ``update(accepted)``: what the step accepted, one `Accepted` per live request (``.tokens`` the newly
  emitted tokens, ``.num_accepted`` how many draft nodes were accepted, ``.finished``).

Optional: ``begin(prompts)`` is called once per `generate` call with every request's prompt (list of
ints, index = request), and ``vocab_size`` (int) is checked against the model's vocabulary.

Drafters never influence *what* is generated, only how many tokens a step emits: `generate` verifies
every draft against the model, so a wrong guess only costs compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

from verispec.tree import DraftTree

__all__ = ["Context", "Accepted", "Drafter", "NoDrafter", "EMPTY"]


@dataclass
class Context:
    """The tokens of one live request. ``tokens`` is shared with `generate` (read it, never modify it).

    ``hidden`` is filled only for drafters with ``wants_hidden = True`` (multi-token heads): the model's
    final hidden state ``[d]`` (what its LM head reads) at the token before the root, from the prefill
    or the step's own verification forward; None when there is none (a one-token prompt's first step)."""

    request: int
    tokens: list[int]
    hidden: Optional[Any] = None


@dataclass
class Accepted:
    """What one step emitted for one request."""

    request: int
    tokens: list[int]
    num_accepted: int
    finished: bool


@runtime_checkable
class Drafter(Protocol):
    """Structural type of a drafter (see the module docstring)."""

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]: ...

    def update(self, accepted: Sequence[Accepted]) -> None: ...


class NoDrafter:
    """Proposes nothing: `generate` becomes plain one-token-per-step decoding (the baseline)."""

    vocab_size: Optional[int] = None

    def begin(self, prompts: Sequence[Sequence[int]]) -> None:
        pass

    def propose(self, contexts: Sequence[Context]) -> list[DraftTree]:
        return [EMPTY for _ in contexts]

    def update(self, accepted: Sequence[Accepted]) -> None:
        pass

    def __repr__(self) -> str:
        return "NoDrafter()"


EMPTY = DraftTree.empty()
