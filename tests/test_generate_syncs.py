"""Host synchronisations per `generate` step.

On a GPU every device-to-host read (``.item()``, ``.tolist()``, ``.cpu()``, ``bool(t)``, ``nonzero``,
boolean-mask indexing ...) stalls the host until the device catches up. A step with CPU drafters needs
exactly one: the emitted tokens and counts, in one copy. On CPU the same calls are visible through a
TorchFunctionMode, so this test counts them for the whole step (model forward, verify, commit, cache
bookkeeping) and fails above the bound. Host-side work on the drafters' own trees (propose/update and the
validation of the trees they return) is not device work and is not counted.
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
from _generate_utils import tiny_model
from torch.overrides import TorchFunctionMode

import verispec
from verispec.drafters import NoDrafter, PromptLookupDrafter

_T = torch.Tensor
_SYNCING = {
    _T.item, _T.tolist, _T.cpu, _T.numpy, _T.__bool__, _T.__int__, _T.__float__, _T.__index__, _T.nonzero,
    torch.nonzero, _T.masked_select, torch.masked_select, torch.equal, _T.unique, torch.unique,
    _T.repeat_interleave, torch.repeat_interleave, torch.argwhere,
}
_HOST_SIDE = (os.path.join("verispec", "tree.py"),)


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else None
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class SyncCounter(TorchFunctionMode):
    """Counts host-synchronising tensor calls while ``on``; records where each came from."""

    def __init__(self):
        super().__init__()
        self.on = False
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on:
            syncing = func in _SYNCING
            if func in (_T.__getitem__, _T.__setitem__, _T.index_put_, _T.index_put) and _bool_index(args):
                syncing = True
            if syncing:
                stack = traceback.extract_stack()[:-1]
                if not any(f.filename.endswith(_HOST_SIDE) for f in stack):
                    where = next((f"{f.filename.split('python/')[-1]}:{f.lineno}" for f in reversed(stack)
                                  if "verispec" in f.filename or "transformers" in f.filename), "?")
                    self.calls.append(f"{getattr(func, '__name__', func)} at {where}")
        return func(*args, **kwargs)


class CountingDrafter:
    """Wraps a drafter: counting starts after `begin` (prefill is done) and pauses inside the drafter."""

    def __init__(self, inner, counter: SyncCounter):
        self.inner, self.counter = inner, counter
        self.vocab_size = getattr(inner, "vocab_size", None)
        self.wants_hidden = getattr(inner, "wants_hidden", False)

    def begin(self, prompts):
        if callable(getattr(self.inner, "begin", None)):
            self.inner.begin(prompts)
        self.counter.on = True

    def propose(self, contexts):
        self.counter.on = False
        try:
            return self.inner.propose(contexts)
        finally:
            self.counter.on = True

    def update(self, accepted):
        self.counter.on = False
        try:
            self.inner.update(accepted)
        finally:
            self.counter.on = True


def _syncs_per_step(model, drafter, **kw) -> tuple[float, list[str], int]:
    counter = SyncCounter()
    prompts = [[5, 6, 7, 5, 6, 7, 5, 6], [1, 2, 3, 1, 2, 3], [9, 8, 9, 8, 9, 8, 9, 8, 9, 8]]
    with counter:
        out = verispec.generate(model, prompts, drafter=CountingDrafter(drafter, counter), max_new_tokens=12,
                                eos_token_id=[], **kw)
    counter.on = False
    return len(counter.calls) / out.stats.steps, counter.calls, out.stats.steps


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("drafter", ["none", "prompt-lookup"])
def test_one_host_sync_per_step(arch, temperature, drafter):
    # The 4D-mask attention path: on CPU the tree-attention path runs the torch reference, which reads
    # lengths on the host by design (it is the readable oracle); the Triton/CUDA kernels do not.
    model = tiny_model(arch)
    d = NoDrafter() if drafter == "none" else PromptLookupDrafter(num_tokens=4)
    per_step, calls, steps = _syncs_per_step(model, d, temperature=temperature, seed=3, attention="mask")
    assert steps > 1
    assert per_step <= 1, f"{per_step:.1f} host syncs per step (bound 1):\n" + "\n".join(calls[:40])


def test_the_counter_sees_a_sync():
    """The instrument itself: a step that reads a device value must be counted."""
    counter = SyncCounter()
    with counter:
        counter.on = True
        t = torch.arange(4)
        t.sum().item()
        t[t > 1]
        bool(t.any())
        counter.on = False
    assert len(counter.calls) == 3, counter.calls
